//! Standard base64 (RFC 4648 §4), for bytes carried in JSON: the encoding
//! the Protobuf JSON mapping uses for `bytes` fields.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends the padded base64 form of `input` to `out`.
pub(crate) fn encode(input: &[u8], out: &mut Vec<u8>) {
    let sym = |i: u32| ALPHABET.get((i & 63) as usize).copied().unwrap_or(b'=');
    out.reserve(input.len().div_ceil(3) * 4);
    let mut chunks = input.chunks_exact(3);
    for c in &mut chunks {
        let &[a, b, c] = c else { continue };
        let n = u32::from(a) << 16 | u32::from(b) << 8 | u32::from(c);
        out.extend_from_slice(&[sym(n >> 18), sym(n >> 12), sym(n >> 6), sym(n)]);
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend_from_slice(&[sym(n >> 18), sym(n >> 12), b'=', b'=']);
        }
        [a, b] => {
            let n = u32::from(a) << 16 | u32::from(b) << 8;
            out.extend_from_slice(&[sym(n >> 18), sym(n >> 12), sym(n >> 6), b'=']);
        }
        _ => {}
    }
}

fn value(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    }))
}

/// Decodes standard base64, with or without trailing `=` padding, into
/// `out` (cleared first). Returns `None` for any other character, a
/// misplaced `=`, an impossible length or non-zero trailing bits.
pub(crate) fn decode(input: &[u8], out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    let body = match input {
        [rest @ .., b'=', b'='] if input.len().is_multiple_of(4) => rest,
        [rest @ .., b'='] if input.len().is_multiple_of(4) => rest,
        _ => input,
    };
    if body.len() % 4 == 1 {
        return None;
    }
    out.reserve(body.len() / 4 * 3 + 2);
    let mut chunks = body.chunks_exact(4);
    for c in &mut chunks {
        let &[a, b, c, d] = c else { continue };
        let n = value(a)? << 18 | value(b)? << 12 | value(c)? << 6 | value(d)?;
        out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
    }
    match *chunks.remainder() {
        [a, b] => {
            let n = value(a)? << 18 | value(b)? << 12;
            if n & 0xffff != 0 {
                return None;
            }
            out.push((n >> 16) as u8);
        }
        [a, b, c] => {
            let n = value(a)? << 18 | value(b)? << 12 | value(c)? << 6;
            if n & 0xff != 0 {
                return None;
            }
            out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8]);
        }
        _ => {}
    }
    Some(())
}

/// Appends the URL-safe, unpadded base64 form of `input` (RFC 4648 §5, as
/// in JSON Web Tokens) to `out`.
pub(crate) fn encode_url(input: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    encode(input, out);
    while out.last() == Some(&b'=') {
        out.pop();
    }
    for c in out.get_mut(start..).unwrap_or_default() {
        *c = match *c {
            b'+' => b'-',
            b'/' => b'_',
            other => other,
        };
    }
}

/// Decodes URL-safe, unpadded base64 into `out` (cleared first); `None`
/// for anything else (padding, `+` or `/` included).
pub(crate) fn decode_url(input: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut standard = Vec::with_capacity(input.len());
    for &c in input {
        standard.push(match c {
            b'-' => b'+',
            b'_' => b'/',
            b'+' | b'/' | b'=' => return None,
            other => other,
        });
    }
    decode(&standard, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = Vec::new();
            encode(plain.as_bytes(), &mut out);
            assert_eq!(out, coded.as_bytes());
            decode(coded.as_bytes(), &mut out).unwrap();
            assert_eq!(out, plain.as_bytes());
            decode(coded.trim_end_matches('=').as_bytes(), &mut out).unwrap();
            assert_eq!(out, plain.as_bytes());
        }
    }

    #[test]
    fn rejects_bad_input() {
        let mut out = Vec::new();
        for bad in ["Z", "Zg=", "Z===", "Zh==", "Zm9v!", "Zm=v", "====", "Zg==Zg=="] {
            assert_eq!(decode(bad.as_bytes(), &mut out), None, "{bad}");
        }
    }

    #[test]
    fn url_safe_has_no_padding_nor_plus_or_slash() {
        let mut out = Vec::new();
        encode_url(&[0xfb, 0xff], &mut out);
        assert_eq!(out, b"-_8");
        let mut back = Vec::new();
        decode_url(&out, &mut back).unwrap();
        assert_eq!(back, [0xfb, 0xff]);
        for bad in ["+_8", "-/8", "-_8="] {
            assert_eq!(decode_url(bad.as_bytes(), &mut back), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn url_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut coded = Vec::new();
            encode_url(&bytes, &mut coded);
            let mut back = Vec::new();
            prop_assert_eq!(decode_url(&coded, &mut back), Some(()));
            prop_assert_eq!(back, bytes);
        }

        #[test]
        fn round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut coded = Vec::new();
            encode(&bytes, &mut coded);
            let mut back = Vec::new();
            prop_assert_eq!(decode(&coded, &mut back), Some(()));
            prop_assert_eq!(back, bytes);
        }
    }
}

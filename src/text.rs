//! Small text helpers shared by the formats.

use core::fmt;

/// An `f64` written so that it reads back exactly and stays short: the
/// plain shortest digits (`250`, `0.30000000000000004`) when they fit in
/// 24 characters, else with an exponent (`1e300`, `5e-324`). No heap
/// allocation.
pub(crate) struct ShortF64(pub(crate) f64);

/// A 24-byte buffer that refuses to grow.
struct Small {
    bytes: [u8; 24],
    len: usize,
}

impl fmt::Write for Small {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl fmt::Display for ShortF64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut small = Small { bytes: [0; 24], len: 0 };
        if fmt::Write::write_fmt(&mut small, format_args!("{}", self.0)).is_ok() {
            f.write_str(core::str::from_utf8(small.bytes.get(..small.len).unwrap_or_default()).unwrap_or_default())
        } else {
            write!(f, "{:e}", self.0)
        }
    }
}

/// Byte-string equality tuned for the short strings labels (and the runs
/// of fields that hold them) are: overlapping word loads instead of a call
/// to `memcmp`, up to 64 bytes.
#[inline]
pub(crate) fn short_eq(a: &[u8], b: &[u8]) -> bool {
    fn word<const N: usize>(s: &[u8], at: usize) -> Option<[u8; N]> {
        s.get(at..at + N).and_then(|w| w.try_into().ok())
    }
    // 16 bytes as one integer: compared in a register, never by a call.
    fn wide(s: &[u8], at: usize) -> u128 {
        word::<16>(s, at).map_or(0, u128::from_le_bytes)
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        1..=3 => a.first() == b.first() && a.get(n / 2) == b.get(n / 2) && a.last() == b.last(),
        4..=7 => word::<4>(a, 0) == word::<4>(b, 0) && word::<4>(a, n - 4) == word::<4>(b, n - 4),
        8..=16 => word::<8>(a, 0) == word::<8>(b, 0) && word::<8>(a, n - 8) == word::<8>(b, n - 8),
        17..=32 => wide(a, 0) == wide(b, 0) && wide(a, n - 16) == wide(b, n - 16),
        // The first 32 bytes and the last 32, which overlap.
        33..=64 => {
            wide(a, 0) == wide(b, 0)
                && wide(a, 16) == wide(b, 16)
                && wide(a, n - 32) == wide(b, n - 32)
                && wide(a, n - 16) == wide(b, n - 16)
        }
        _ => a == b,
    }
}

/// The last `n` bytes of `bytes` (`n` at most 8 and at most its length) as
/// a little-endian word, zero-extended: one load of the last eight bytes,
/// shifted down, when there are eight; a copy otherwise. The tail word of
/// a hash over whole words.
#[inline]
pub(crate) fn tail_word(bytes: &[u8], n: usize) -> u64 {
    let n = n.min(8).min(bytes.len());
    if n == 0 {
        return 0;
    }
    match bytes.last_chunk::<8>() {
        Some(last) => u64::from_le_bytes(*last) >> (8 * (8 - n)),
        None => {
            let mut word = [0u8; 8];
            for (dst, src) in word.iter_mut().zip(bytes.get(bytes.len() - n..).unwrap_or_default()) {
                *dst = *src;
            }
            u64::from_le_bytes(word)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ShortF64, short_eq, tail_word};

    #[test]
    fn tail_words_are_zero_extended() {
        let bytes: Vec<u8> = (1..=12).collect();
        for len in 0..=12 {
            let b = &bytes[..len];
            for n in 0..=len.min(8) {
                let mut want = [0u8; 8];
                want[..n].copy_from_slice(&b[len - n..]);
                assert_eq!(tail_word(b, n), u64::from_le_bytes(want), "{len} {n}");
            }
        }
    }

    #[test]
    fn short_and_exact() {
        for (v, text) in
            [(250.0, "250"), (0.1 + 0.2, "0.30000000000000004"), (1e300, "1e300"), (5e-324, "5e-324"), (-0.0, "-0")]
        {
            assert_eq!(ShortF64(v).to_string(), text);
            assert_eq!(text.parse::<f64>().unwrap().to_bits(), v.to_bits());
        }
    }

    #[test]
    fn short_string_equality_sees_every_byte() {
        for len in 0..80usize {
            let a: Vec<u8> = (0..len as u8).collect();
            assert!(short_eq(&a, &a.clone()));
            for i in 0..len {
                let mut b = a.clone();
                b[i] ^= 0x20;
                assert!(!short_eq(&a, &b), "len {len}, byte {i}");
            }
            assert!(!short_eq(&a, &[a.as_slice(), b"x"].concat()));
        }
    }
}

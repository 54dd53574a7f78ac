//! Signed tokens: interoperable with other JWT implementations, strict on
//! everything else.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

use edgestream::auth::{AuthError, Claims, Keys, MAX_TOKEN_LEN, Mode};
use edgestream::time::{Span, Timestamp};
use proptest::prelude::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-python";

fn t(secs: i64) -> Timestamp {
    Timestamp::from_secs(secs).unwrap()
}

fn keys() -> Keys {
    let mut k = Keys::new();
    k.add("py", SECRET).unwrap();
    k
}

/// Made by Python's `hmac` and `hashlib`, not by this crate; it carries
/// claims we ignore (`sub`, `iss`).
const PYTHON_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InB5In0.eyJ0ZW5hbnQiOiJhY21lIiwidG9waWNzIjpbIm1ldHJpY3MiLCJhbGVydHMiXSwibW9kZXMiOlsiZGVsdGFzIl0sImluZ2VzdCI6dHJ1ZSwiZXhwIjoxNzk1ODQyMDAwLCJpYXQiOjE3OTU4Mzg0MDAsInN1YiI6InVzZXItNyIsImlzcyI6InB5dGhvbiJ9.guujyNtHkLJzlgXNg3AFiNprAB1Z28CGiWTi05e_w6w";

#[test]
fn a_token_from_another_implementation_verifies() {
    let claims = keys().verify(PYTHON_TOKEN, t(1_795_840_000)).unwrap();
    assert_eq!(claims.tenant, "acme");
    assert!(claims.ingest);
    assert!(claims.allows("alerts", Mode::Deltas));
    assert!(!claims.allows("alerts", Mode::Full));
    assert!(!claims.allows("events", Mode::Deltas));
    assert_eq!(keys().verify(PYTHON_TOKEN, t(1_795_842_000)), Err(AuthError::Expired { exp: 1_795_842_000 }));
}

#[test]
fn the_rfc_7515_example_signature_checks() {
    // RFC 7515, appendix A.1: its signature verifies with its key; its
    // claims are not ours, so it fails only after the signature.
    let key = [
        3, 35, 53, 75, 43, 15, 165, 188, 131, 126, 6, 101, 119, 123, 166, 143, 90, 179, 40, 230, 240, 84, 201, 40, 169,
        15, 132, 178, 210, 80, 46, 191, 211, 251, 90, 146, 210, 6, 71, 239, 150, 138, 180, 195, 119, 98, 61, 34, 61,
        46, 33, 114, 5, 46, 79, 8, 192, 205, 154, 245, 103, 208, 128, 163,
    ];
    let mut k = Keys::new();
    k.add("rfc", &key).unwrap();
    let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    assert!(matches!(k.verify(token, t(0)), Err(AuthError::Malformed(m)) if m.contains("tenant")));
    let forged = token.replace("dBjf", "dBjg");
    assert_eq!(k.verify(&forged, t(0)), Err(AuthError::Signature));
}

#[test]
fn keys_rotate_by_id() {
    let mut k = Keys::new();
    k.add("old", &[1; 32]).unwrap();
    let claims = Claims::new("acme", t(2_000)).topics(["*"]);
    let old = k.sign("old", &claims).unwrap();
    k.add("new", &[2; 32]).unwrap();
    let new = k.sign("new", &claims).unwrap();
    assert!(k.verify(&old, t(1_000)).is_ok() && k.verify(&new, t(1_000)).is_ok());
    k.remove("old");
    assert_eq!(k.verify(&old, t(1_000)), Err(AuthError::UnknownKey("old".into())));
    assert!(k.verify(&new, t(1_000)).unwrap().allows("anything", Mode::Full));
    assert!(matches!(k.add("short", &[0; 16]), Err(AuthError::Key(_))));
    assert!(matches!(k.sign("nope", &claims), Err(AuthError::UnknownKey(_))));
}

#[test]
fn none_and_other_algorithms_are_refused() {
    // {"alg":"none"} with the Python claims and no signature.
    let claims_part = PYTHON_TOKEN.split('.').nth(1).unwrap();
    let none = format!("eyJhbGciOiJub25lIn0.{claims_part}.");
    assert_eq!(keys().verify(&none, t(1_795_840_000)), Err(AuthError::Algorithm("none".into())));
    // {"alg":"HS512","kid":"py"}
    let hs512 = format!("eyJhbGciOiJIUzUxMiIsImtpZCI6InB5In0.{claims_part}.AAAA");
    assert_eq!(keys().verify(&hs512, t(1_795_840_000)), Err(AuthError::Algorithm("HS512".into())));
}

#[test]
fn leeway_and_not_before() {
    let mut k = Keys::new().with_leeway(Span::from_secs(30));
    k.add("k", &[7; 32]).unwrap();
    let mut claims = Claims::new("acme", t(1_000));
    claims.nbf = Some(900);
    let token = k.sign("k", &claims).unwrap();
    assert!(k.verify(&token, t(1_020)).is_ok(), "within the leeway after expiry");
    assert!(k.verify(&token, t(1_030)).is_err());
    assert!(k.verify(&token, t(871)).is_ok(), "within the leeway before nbf");
    assert_eq!(k.verify(&token, t(869)), Err(AuthError::NotYetValid { nbf: 900 }));
}

#[test]
fn oversized_and_garbage_tokens_are_typed_errors() {
    let k = keys();
    assert_eq!(k.verify(&"a".repeat(MAX_TOKEN_LEN + 1), t(0)), Err(AuthError::TooLong));
    for bad in ["", ".", "..", "a.b.c", "a.b.c.d", "eyJ9.eyJ9.", "!!!.???.***"] {
        assert!(matches!(k.verify(bad, t(0)), Err(AuthError::Malformed(_))), "{bad:?}");
    }
}

proptest! {
    #[test]
    fn signed_claims_round_trip(
        tenant in "[a-z0-9-]{1,20}",
        topics in proptest::collection::vec("[a-z*]{1,8}", 0..4),
        ingest in any::<bool>(),
        exp in 1i64..4_000_000_000,
    ) {
        let mut k = Keys::new();
        k.add("k", &[9; 40]).unwrap();
        let mut claims = Claims::new(tenant, t(exp)).topics(topics).modes([Mode::Aggregates]);
        claims.ingest = ingest;
        let token = k.sign("k", &claims).unwrap();
        prop_assert_eq!(k.verify(&token, t(exp - 1)), Ok(claims));
    }

    #[test]
    fn any_changed_byte_is_refused(position in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = PYTHON_TOKEN.as_bytes().to_vec();
        let i = position.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let token = String::from_utf8_lossy(&bytes);
        prop_assert!(keys().verify(&token, t(1_795_840_000)).is_err());
    }
}

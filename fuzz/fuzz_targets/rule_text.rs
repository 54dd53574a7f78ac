#![no_main]
// The text form of alert rules. Any text gives a rule or a typed error
// with a position inside the text, never a panic; a rule that parses
// prints back to text that parses to the same rule.

use edgestream::alert::{MAX_RULE_TEXT, Rule, RuleError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Rule::parse("fuzz", text) {
        Ok(rule) => {
            let printed = rule.to_string();
            // Quoting can make the printed form longer than the parser takes.
            if printed.len() <= MAX_RULE_TEXT {
                let again = Rule::parse("fuzz", &printed).expect("a printed rule parses");
                assert_eq!(again, rule, "{printed}");
            }
        }
        Err(RuleError::Parse(e)) => assert!(e.offset <= text.len(), "error past the end: {e}"),
        Err(_) => {}
    }
});

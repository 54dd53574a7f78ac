#![no_main]
// Rule files and rule-test files, in YAML and JSON. Any text gives a
// typed error or a file, never a panic or runaway memory.

use edgestream::alert::RuleFile;
use edgestream::alert::testing::TestFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(file) = RuleFile::from_yaml_str(text) {
        // A loaded file survives a JSON round trip.
        let json = serde_json::to_string(&file).expect("a rule file serializes");
        assert_eq!(RuleFile::from_json_str(&json).expect("and reads back"), file);
    }
    let _ = RuleFile::from_json_str(text);
    let _ = TestFile::from_yaml_str(text);
});

//! Runs rule tests offline, like `promtool test rules`:
//!
//! ```text
//! cargo run --example alert_test -- examples/alerts/rules.yaml examples/alerts/tests.yaml
//! ```
//!
//! Prints PASS or FAIL per case (with what differed) and exits with status 1
//! if any case failed, 2 if a file could not be read or parsed.

use std::process::ExitCode;

use edgestream::alert::RuleFile;
use edgestream::alert::testing::TestFile;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [rules_path, tests_path] = args.as_slice() else {
        eprintln!("usage: alert_test <rules.yaml> <tests.yaml>");
        return ExitCode::from(2);
    };
    let read = |path: &str| std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"));
    let rules =
        read(rules_path).and_then(|text| RuleFile::from_yaml_str(&text).map_err(|e| format!("{rules_path}: {e}")));
    let tests =
        read(tests_path).and_then(|text| TestFile::from_yaml_str(&text).map_err(|e| format!("{tests_path}: {e}")));
    let (rules, tests) = match (rules, tests) {
        (Ok(rules), Ok(tests)) => (rules, tests),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let report = tests.run(&rules.rules);
    println!("{report}");
    if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

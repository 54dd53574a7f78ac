//! Rule files (YAML, TOML, JSON) and the offline rule tests, including
//! the example rules and tests shipped in `examples/alerts/`.

#![cfg(feature = "yaml")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use edgestream::alert::testing::{TestFile, expand_values};
use edgestream::alert::{ConfigError, RuleFile};

fn shipped(name: &str) -> String {
    std::fs::read_to_string(format!("{}/examples/alerts/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn the_shipped_rules_pass_their_tests() {
    let rules = RuleFile::from_yaml_str(&shipped("rules.yaml")).unwrap();
    assert_eq!(rules.rules.len(), 6);
    let tests = TestFile::from_yaml_str(&shipped("tests.yaml")).unwrap();
    let report = tests.run(&rules.rules);
    println!("{report}");
    assert!(report.passed(), "{report}");
    assert_eq!(report.cases.len(), 6);
}

#[test]
fn a_failing_case_says_what_differed() {
    let rules = RuleFile::from_yaml_str(&shipped("rules.yaml")).unwrap();
    let tests = TestFile::from_yaml_str(
        r#"
tests:
  - name: wrong expectations
    interval: 1m
    stream: http
    input_series:
      - {labels: {region: eu}, field: latency_ms, values: "300x3"}
    alert_rule_test:
      - eval_time: 3m
        alertname: high_latency
        exp_alerts: [{labels: {region: us, severity: critical}}]
      - {eval_time: 4m, alertname: no_such_rule}
"#,
    )
    .unwrap();
    let report = tests.run(&rules.rules);
    assert!(!report.passed());
    let text = report.to_string();
    assert!(text.starts_with("FAIL wrong expectations"), "{text}");
    assert!(
        text.contains(
            r#"expected Firing alert with labels {"region": "us", "severity": "critical"}; got Firing {"region": "eu""#
        ),
        "{text}"
    );
    assert!(text.contains(r#"unexpected Firing alert with labels {"region": "eu""#), "{text}");
    assert!(text.contains(r#"no rule is named "no_such_rule""#), "{text}");
    assert!(text.ends_with("0 of 1 cases passed"), "{text}");
}

#[test]
fn value_notation() {
    assert_eq!(expand_values("1 2 _ 3").unwrap(), [Some(1.0), Some(2.0), None, Some(3.0)]);
    assert_eq!(expand_values("1+2x3").unwrap(), [Some(1.0), Some(3.0), Some(5.0), Some(7.0)]);
    assert_eq!(
        expand_values("10-5x2 _x2 7x1").unwrap(),
        [Some(10.0), Some(5.0), Some(0.0), None, None, Some(7.0), Some(7.0)]
    );
    assert_eq!(expand_values("-1.5e2 -3").unwrap(), [Some(-150.0), Some(-3.0)]);
    assert_eq!(expand_values("1e-1+1e-1x1").unwrap(), [Some(0.1), Some(0.2)]);
    for bad in ["x", "1x", "1xa", "1+2", "abc", "1x99999999999", "_x2000000", "inf"] {
        assert!(expand_values(bad).is_err(), "{bad}");
    }
}

#[test]
fn yaml_toml_and_json_give_the_same_rules() {
    let yaml = RuleFile::from_yaml_str(
        r#"
rules:
  - name: slow
    rule: avg(latency_ms) by (region) > 250 for 2m
    labels: {team: edge}
  - name: quiet
    absent: true
    by: [host]
    for: 5m
"#,
    )
    .unwrap();
    let json = RuleFile::from_json_str(
        r#"{"rules": [
            {"name": "slow", "expr": "avg(latency_ms)", "by": ["region"], "op": ">", "threshold": 250, "for": "2m", "labels": {"team": "edge"}},
            {"name": "quiet", "rule": "absent() by (host) for 5m"}
        ]}"#,
    )
    .unwrap();
    assert_eq!(yaml, json);
    #[cfg(feature = "toml")]
    {
        let toml = RuleFile::from_toml_str(
            r#"
[[rules]]
name = "slow"
rule = "avg(latency_ms) by (region) > 250 for 2m team=edge"

[[rules]]
name = "quiet"
absent = true
by = ["host"]
for = "5m"
"#,
        )
        .unwrap();
        assert_eq!(toml, yaml);
    }
}

#[test]
fn bad_files_give_located_errors() {
    let err = RuleFile::from_yaml_str("rules:\n  - name: a\n    rule: avg(x) >> 1\n").unwrap_err();
    assert!(err.to_string().contains("at column 9"), "{err}");
    let err = RuleFile::from_yaml_str("rules:\n  - name: a\n    rule: avg(x) > 1\n    bogus: 1\n").unwrap_err();
    assert!(err.to_string().contains("line 2") || err.to_string().contains("bogus"), "{err}");
    let err = RuleFile::from_yaml_str("rules:\n  - name: a\n    rule: avg(x) > 1\n  - name: a\n    rule: avg(x) > 2\n")
        .unwrap_err();
    assert_eq!(err, ConfigError::DuplicateRule("a".into()));
    let err = RuleFile::from_yaml_str("rules: [\n").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { format: "yaml", .. }), "{err}");
    let big = "#".repeat(edgestream::alert::MAX_CONFIG_BYTES + 1);
    assert_eq!(RuleFile::from_yaml_str(&big).unwrap_err(), ConfigError::TooLarge);
    // An alias bomb stays small and fails fast.
    let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n";
    assert!(RuleFile::from_yaml_str(bomb).is_err());
    assert!(TestFile::from_yaml_str("tests: [{interval: 1m}]").is_err());
}

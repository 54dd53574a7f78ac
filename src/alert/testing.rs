//! Rule tests that run offline, in the spirit of `promtool test rules`.
//!
//! A test file lists cases; each case gives input series per group (one
//! value per window, in a compact notation), evaluation times, and the
//! alerts expected at each:
//!
//! ```yaml
//! tests:
//!   - name: latency alert fires after two slow minutes
//!     interval: 1m                 # the window size
//!     tenant: acme                 # default "default"
//!     stream: http                 # default "default"
//!     input_series:
//!       - labels: {region: eu}
//!         field: latency_ms        # `count` for the window's event count
//!         values: "100 300x3 _ 150"
//!     alert_rule_test:
//!       - eval_time: 4m
//!         alertname: high_latency
//!         exp_alerts:
//!           - labels: {region: eu, severity: critical}
//!             state: firing        # or pending; firing by default
//!             annotations: {summary: "eu latency is 300 ms"}   # optional
//! ```
//!
//! **Values**: one per window, separated by spaces: a number; `_` for a
//! window with no data; `a+bxn` for `n + 1` windows `a, a+b, …, a+n·b`
//! (`b` may be negative: `a-bxn`); `axn` for `n + 1` windows of `a`;
//! `_xn` for `n` windows without data. Value `i` is window
//! `[i·interval, (i+1)·interval)`, and every aggregate of the field reads
//! it (mean, sum, min, max, last, any quantile).
//!
//! **Checks**: at `eval_time`, every window that ended by then has been
//! evaluated; the pending and firing alerts of `alertname` must be exactly
//! `exp_alerts` (an empty list: none). Labels compare exactly, without
//! `alertname`, with the rule's labels and `severity` included.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use smallvec::SmallVec;

#[cfg(feature = "yaml")]
use super::config::{ConfigError, MAX_CONFIG_BYTES};
use super::eval::{AlertState, EvalConfig, Evaluator};
use super::rule::{Agg, Rule};
use crate::time::{Span, Timestamp};
use crate::window::agg::Scalar;
use crate::window::{FieldResult, GroupKey, WindowResult};

/// Most windows one input series, and all of a case's series together, may expand to.
pub const MAX_SERIES_WINDOWS: usize = 1_000_000;

/// A rule test file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The cases.
    pub tests: Vec<TestCase>,
}

/// One test case.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// Shown in the report.
    #[serde(default)]
    pub name: String,
    /// The window size.
    pub interval: Span,
    /// The tenant of every series.
    #[serde(default = "default_name")]
    pub tenant: String,
    /// The stream of every series.
    #[serde(default = "default_name")]
    pub stream: String,
    /// The input.
    pub input_series: Vec<InputSeries>,
    /// The checks.
    #[serde(default)]
    pub alert_rule_test: Vec<AlertCheck>,
}

fn default_name() -> String {
    "default".to_owned()
}

/// One group's series of window values.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSeries {
    /// The group's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The field the values are, or `count` for the window's event count.
    pub field: String,
    /// The values, in the notation of the [module documentation](self).
    pub values: String,
}

/// The alerts expected at one time.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertCheck {
    /// Time since the epoch of the first window.
    pub eval_time: Span,
    /// The rule.
    pub alertname: String,
    /// The pending and firing alerts expected.
    #[serde(default)]
    pub exp_alerts: Vec<ExpectedAlert>,
}

/// One expected alert.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedAlert {
    /// Its labels (see the module documentation).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `firing` (default) or `pending`.
    #[serde(default = "default_state")]
    pub state: ExpectedState,
    /// If given, the rendered annotations, exactly.
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The state an [`ExpectedAlert`] is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExpectedState {
    /// Pending.
    Pending,
    /// Firing.
    Firing,
}

fn default_state() -> ExpectedState {
    ExpectedState::Firing
}

/// The outcome of one case.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CaseReport {
    /// The case's name.
    pub name: String,
    /// What did not match; empty when the case passed.
    pub failures: Vec<String>,
}

impl CaseReport {
    /// Whether the case passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The outcome of a test file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TestReport {
    /// One per case, in order.
    pub cases: Vec<CaseReport>,
}

impl TestReport {
    /// Whether every case passed.
    pub fn passed(&self) -> bool {
        self.cases.iter().all(CaseReport::passed)
    }
}

impl fmt::Display for TestReport {
    /// One line per case (`PASS` / `FAIL`), the failures indented under it,
    /// and a summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for case in &self.cases {
            writeln!(f, "{} {}", if case.passed() { "PASS" } else { "FAIL" }, case.name)?;
            for failure in &case.failures {
                writeln!(f, "    {failure}")?;
            }
        }
        let passed = self.cases.iter().filter(|c| c.passed()).count();
        write!(f, "{passed} of {} cases passed", self.cases.len())
    }
}

impl TestFile {
    /// Parses a YAML test file.
    #[cfg(feature = "yaml")]
    pub fn from_yaml_str(text: &str) -> Result<TestFile, ConfigError> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge);
        }
        serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Syntax { format: "yaml", message: e.to_string() })
    }

    /// Runs every case against `rules`.
    ///
    /// ```
    /// # #[cfg(feature = "yaml")] {
    /// use edgestream::alert::{Rule, testing::TestFile};
    ///
    /// let rules = [Rule::parse("high_latency", "avg(latency_ms) by (region) > 250 for 2m")?];
    /// let tests = TestFile::from_yaml_str(r#"
    /// tests:
    ///   - name: fires after two slow minutes
    ///     interval: 1m
    ///     input_series:
    ///       - {labels: {region: eu}, field: latency_ms, values: "100 300x3"}
    ///     alert_rule_test:
    ///       - {eval_time: 1m, alertname: high_latency}
    ///       - eval_time: 2m
    ///         alertname: high_latency
    ///         exp_alerts: [{labels: {region: eu, severity: warning}, state: pending}]
    ///       - eval_time: 3m
    ///         alertname: high_latency
    ///         exp_alerts: [{labels: {region: eu, severity: warning}}]
    /// "#)?;
    /// let report = tests.run(&rules);
    /// assert!(report.passed(), "{report}");
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run(&self, rules: &[Rule]) -> TestReport {
        TestReport { cases: self.tests.iter().map(|case| case.run(rules)).collect() }
    }
}

/// Expands the value notation: `None` for a window without data.
pub fn expand_values(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for token in text.split_whitespace() {
        let (base, times) = match token.split_once('x') {
            Some((base, n)) => {
                let n: usize =
                    n.parse().map_err(|_| format!("`{token}`: the count after `x` must be a whole number"))?;
                (base, Some(n))
            }
            None => (token, None),
        };
        let room = MAX_SERIES_WINDOWS.saturating_sub(out.len());
        if base == "_" {
            let n = times.unwrap_or(1);
            if n > room {
                return Err(format!("more than {MAX_SERIES_WINDOWS} windows"));
            }
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        // `a+b` or `a-b` (a sign after the first character), else `a`.
        let split = base
            .char_indices()
            .skip(1)
            .find(|&(i, c)| (c == '+' || c == '-') && !matches!(base.as_bytes().get(i - 1), Some(b'e' | b'E')));
        let (a, step) = match split {
            Some((i, _)) => (base.get(..i).unwrap_or_default(), base.get(i..).unwrap_or_default()),
            None => (base, "0"),
        };
        let a: f64 = a.parse().map_err(|_| format!("`{token}` is not a value"))?;
        let step: f64 = step.parse().map_err(|_| format!("`{token}` has a bad step"))?;
        if !a.is_finite() || !step.is_finite() {
            return Err(format!("`{token}` is not finite"));
        }
        match times {
            None if split.is_some() => return Err(format!("`{token}`: a step needs a count (`a+bxn`)")),
            None => out.push(Some(a)),
            Some(n) => {
                if n >= room {
                    return Err(format!("more than {MAX_SERIES_WINDOWS} windows"));
                }
                out.extend((0..=n).map(|k| Some(a + step * k as f64)));
            }
        }
    }
    Ok(out)
}

impl TestCase {
    fn run(&self, rules: &[Rule]) -> CaseReport {
        let mut report = CaseReport { name: self.name.clone(), failures: Vec::new() };
        let quantiles: Vec<f64> = rules
            .iter()
            .filter_map(|r| match r.expr().map(|e| e.selector().agg) {
                Some(Agg::Quantile(q)) => Some(q),
                _ => None,
            })
            .collect();
        if !self.interval.is_positive() {
            report.failures.push(format!("interval {} must be positive", self.interval));
            return report;
        }
        let mut results: Vec<WindowResult> = Vec::new();
        for series in &self.input_series {
            if results.len() >= MAX_SERIES_WINDOWS {
                report.failures.push(format!("the input series have more than {MAX_SERIES_WINDOWS} windows in all"));
                break;
            }
            let values = match expand_values(&series.values) {
                Ok(v) => v,
                Err(e) => {
                    report.failures.push(format!("input series {:?}: {e}", series.labels));
                    continue;
                }
            };
            let group = Arc::new(GroupKey {
                tenant: Arc::from(self.tenant.as_str()),
                stream: Arc::from(self.stream.as_str()),
                labels: series.labels.iter().map(|(k, v)| (Arc::from(k.as_str()), Arc::from(v.as_str()))).collect(),
                overflow: false,
            });
            for (i, value) in values.into_iter().enumerate() {
                let Some(value) = value else { continue };
                let Some(result) = window(&group, self.interval, i, value, &series.field, &quantiles) else {
                    report.failures.push("a window is outside the timestamp range".to_owned());
                    break;
                };
                results.push(result);
            }
        }
        if !report.failures.is_empty() {
            return report;
        }
        results.sort_by_key(|r| r.end);
        let mut evaluator = match Evaluator::new(rules.to_vec(), EvalConfig::default()) {
            Ok(e) => e,
            Err(e) => {
                report.failures.push(e.to_string());
                return report;
            }
        };
        let mut checks: Vec<&AlertCheck> = self.alert_rule_test.iter().collect();
        checks.sort_by_key(|c| c.eval_time);
        let mut pushed = 0;
        let mut events = Vec::new();
        for check in checks {
            let at = Timestamp::UNIX_EPOCH.saturating_add(check.eval_time);
            while let Some(r) = results.get(pushed).filter(|r| r.end <= at) {
                evaluator.push(r);
                pushed += 1;
            }
            evaluator.advance(at, &mut events);
            if !rules.iter().any(|r| r.name == check.alertname) {
                report.failures.push(format!("at {}: no rule is named {:?}", check.eval_time, check.alertname));
                continue;
            }
            compare(&evaluator, rules, check, &mut report.failures);
        }
        report
    }
}

fn window(
    group: &Arc<GroupKey>,
    interval: Span,
    index: usize,
    value: f64,
    field: &str,
    quantiles: &[f64],
) -> Option<WindowResult> {
    let index = i64::try_from(index).ok()?;
    let start = Timestamp::UNIX_EPOCH.checked_add(Span::from_nanos(interval.as_nanos().checked_mul(index)?))?;
    let end = start.checked_add(interval)?;
    let mut fields = SmallVec::new();
    let count = if field == "count" {
        value
    } else {
        let mut scalar = Scalar::new();
        scalar.record(value, 1.0, start);
        fields.push(FieldResult {
            field: Arc::from(field),
            scalar,
            quantiles: quantiles.iter().map(|&q| (q, value)).collect(),
            sketch: None,
        });
        1.0
    };
    Some(WindowResult { group: Arc::clone(group), start, end, revision: 0, is_final: true, events: 1, count, fields })
}

/// An alert found at a check: labels, state, annotations.
type Seen = (BTreeMap<String, String>, ExpectedState, Vec<(String, String)>);

fn compare(evaluator: &Evaluator, rules: &[Rule], check: &AlertCheck, failures: &mut Vec<String>) {
    let severity = rules.iter().find(|r| r.name == check.alertname).map(|r| r.severity.as_str()).unwrap_or_default();
    let mut got: Vec<Seen> = Vec::new();
    for alert in evaluator.alerts().filter(|a| *a.rule == *check.alertname) {
        let mut labels: BTreeMap<String, String> =
            alert.labels.iter().filter(|(k, _)| k != "alertname").cloned().collect();
        labels.entry("severity".to_owned()).or_insert_with(|| severity.to_owned());
        let state = if alert.state == AlertState::Pending { ExpectedState::Pending } else { ExpectedState::Firing };
        got.push((labels, state, alert.annotations.clone()));
    }
    let mut unmatched: Vec<bool> = vec![true; got.len()];
    for exp in &check.exp_alerts {
        let mut labels = exp.labels.clone();
        labels.remove("alertname");
        let found = got.iter().zip(unmatched.iter_mut()).find(|((l, s, annotations), free)| {
            **free
                && *l == labels
                && *s == exp.state
                && exp.annotations.as_ref().is_none_or(|want| {
                    want.len() == annotations.len()
                        && want.iter().all(|(k, v)| annotations.iter().any(|(ak, av)| ak == k && av == v))
                })
        });
        match found {
            Some((_, free)) => *free = false,
            None => failures.push(format!(
                "at {}: {}: expected {:?} alert with labels {:?}{}{}",
                check.eval_time,
                check.alertname,
                exp.state,
                labels,
                exp.annotations.as_ref().map(|a| format!(" and annotations {a:?}")).unwrap_or_default(),
                describe(&got)
            )),
        }
    }
    for ((labels, state, _), free) in got.iter().zip(&unmatched) {
        if *free {
            failures.push(format!(
                "at {}: {}: unexpected {state:?} alert with labels {labels:?}",
                check.eval_time, check.alertname
            ));
        }
    }
}

fn describe(got: &[Seen]) -> String {
    if got.is_empty() {
        return "; got none".to_owned();
    }
    let list: Vec<String> = got.iter().map(|(l, s, a)| format!("{s:?} {l:?} {a:?}")).collect();
    format!("; got {}", list.join(", "))
}

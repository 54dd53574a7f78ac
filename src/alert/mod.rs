//! Alert rules over window results: thresholds, rates of change, absence
//! of data, spikes and geo clusters; `for` durations, recovery thresholds,
//! `keep_firing_for`; escalation, grouping, silences and acknowledgements;
//! notification payloads; and rule tests that run offline.
//!
//! Two stages, both sans-IO:
//!
//! - [`Evaluator`] runs one state machine per (rule, tenant, group),
//!   inactive → pending → firing → resolved, on **event time** (the ends of
//!   the windows it is given), and emits an [`AlertEvent`] per transition.
//!   Same results in, same events out, however the input is split.
//! - [`Notifier`] turns alert events into notifications on the **host's
//!   time**: grouping and batching (group wait, group interval, repeat
//!   interval, as in Alertmanager), escalation steps, acknowledgements and
//!   silences. [`payload`] builds the bodies (Alertmanager-compatible
//!   webhook JSON, Slack blocks, email) for the host to send.
//!
//! # The text form
//!
//! ```text
//! rule    := head clause*
//! head    := expr [by] op number            threshold (rate of change, spike)
//!          | "absent" "(" ")" [by]          no data for a group
//!          | "geo_cluster" "(" expr op number "," "min_cells" "=" int ["," "label" "=" name] ")" [by]
//! expr    := agg "(" [field] ")"            count() sum() min() max() avg() mean() last() p50() p99() p999() …
//!          | "change" "(" agg(field) "," n ")" | "pct_change" "(" agg(field) "," n ")"
//!          | "spike" "(" agg(field) ["," alpha=0.1] ["," warmup=10] ["," min_dev=0] ")"
//! clause  := "by" "(" label, … ")" | "for" span | "keep_firing_for" span | "recover" op number
//!          | severity=info|warning|error|critical | missing=ok|keep|alerting
//!          | tenant=… | stream=… | window=span | notify=channel | label=value
//! ```
//!
//! Names are identifiers (`[A-Za-z_][A-Za-z0-9_.-]*`) or double-quoted
//! strings; spans are an integer and a unit (`250ms`, `10s`, `2m`, `1h`,
//! `1d`). Errors give the column:
//!
//! ```
//! use edgestream::alert::Rule;
//!
//! let err = Rule::parse("r", "avg(latency_ms) by (region) >> 250").unwrap_err();
//! assert_eq!(err.to_string(), "at column 30: expected a threshold, found `>`");
//! ```

mod config;
mod eval;
mod geo_cluster;
mod notify;
mod parse;
pub mod payload;
mod rule;
mod template;
pub mod testing;

pub use config::{ConfigError, MAX_CONFIG_BYTES, RuleFile};
pub use eval::{ActiveAlert, AlertEvent, AlertState, AlertStats, EvalConfig, Evaluator, Fingerprint, SnapshotError};
pub use notify::{
    Channel, Matcher, Notification, NotifiedAlert, Notifier, NotifierConfig, NotifyError, NotifyStats, Route, Silence,
};
pub use parse::{MAX_RULE_TEXT, ParseError};
pub use rule::{
    Agg, Compare, Condition, DEFAULT_CELL_LABEL, Escalation, Expr, MAX_CHANGE_WINDOWS, Missing, Op, Rule, RuleError,
    Selector, Severity,
};

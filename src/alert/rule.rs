//! The typed alert rule, its serde form and its text form.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::parse::{self, ParseError};
use crate::text::ShortF64;
use crate::time::Span;

/// The longest `change(…, n)` look-back a rule may ask for, in windows.
pub const MAX_CHANGE_WINDOWS: u32 = 1_024;

/// The aggregate a rule reads from a window result.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Agg {
    /// The weighted event count: of the window (`count()`), or of the
    /// events that carried the field (`count(field)`).
    Count,
    /// Weighted sum.
    Sum,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Weighted mean (`avg` or `mean`).
    Avg,
    /// The value with the latest event time.
    Last,
    /// A quantile `q` in `[0, 1]`, written `p50`, `p99`, `p999` (0.999) or
    /// `p99.9`; read from the window's quantiles, which must include it.
    Quantile(f64),
}

impl Agg {
    /// Parses `count`, `sum`, `min`, `max`, `avg`, `mean`, `last` or `pNN`.
    pub fn from_name(name: &str) -> Option<Agg> {
        Some(match name {
            "count" => Agg::Count,
            "sum" => Agg::Sum,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "avg" | "mean" => Agg::Avg,
            "last" => Agg::Last,
            _ => {
                let digits = name.strip_prefix('p')?;
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                    return None;
                }
                let q = if digits == "100" {
                    1.0
                } else if let Some((whole, frac)) = digits.split_once('.') {
                    // A percentage: p99.9 → 0.999, p5.5 → 0.055, shifted in
                    // the text so that no rounding creeps in.
                    if whole.len() > 2 || frac.contains('.') {
                        return None;
                    }
                    format!("0.{whole:0>2}{frac}").parse::<f64>().ok()?
                } else {
                    // p50 → 0.50, p999 → 0.999: the digits are the decimals.
                    format!("0.{digits}").parse::<f64>().ok()?
                };
                return (0.0..=1.0).contains(&q).then_some(Agg::Quantile(q));
            }
        })
    }
}

impl fmt::Display for Agg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Agg::Count => f.write_str("count"),
            Agg::Sum => f.write_str("sum"),
            Agg::Min => f.write_str("min"),
            Agg::Max => f.write_str("max"),
            Agg::Avg => f.write_str("avg"),
            Agg::Last => f.write_str("last"),
            Agg::Quantile(q) if *q >= 1.0 => f.write_str("p100"),
            Agg::Quantile(q) => {
                // The decimals of q, at least two: 0.5 → p50, 0.999 → p999.
                let text = q.to_string();
                let digits = text.strip_prefix("0.").unwrap_or("0");
                write!(f, "p{digits:0<2}")
            }
        }
    }
}

/// An aggregate of a field: `avg(latency_ms)`, or `count()` for the
/// window's event count.
#[derive(Clone, Debug, PartialEq)]
pub struct Selector {
    /// The aggregate.
    pub agg: Agg,
    /// The field it reads; `None` only for `count()`.
    pub field: Option<String>,
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.agg)?;
        if let Some(field) = &self.field {
            parse::write_ident(f, field)?;
        }
        f.write_str(")")
    }
}

/// What a rule computes from each window of a group.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Expr {
    /// The aggregate itself.
    Value(Selector),
    /// The change of the aggregate versus `windows` windows earlier:
    /// `change(avg(x), 5)` is absolute, `pct_change(avg(x), 5)` is in
    /// percent of the earlier value. No data when the earlier window is
    /// missing (or zero, for a percentage).
    Change {
        /// The aggregate.
        of: Selector,
        /// How many windows back (1 to [`MAX_CHANGE_WINDOWS`]).
        windows: u32,
        /// Percent of the earlier value instead of the difference.
        percent: bool,
    },
    /// How unusual the aggregate is for this group: `(x − mean) / dev`,
    /// with `mean` and `dev` an exponentially weighted moving mean and
    /// standard deviation of the group's earlier windows. Compare it with
    /// `k`: `spike(avg(x)) > 3` fires when a value is 3 deviations above
    /// its baseline. No data until `warmup` windows have been seen.
    Spike {
        /// The aggregate.
        of: Selector,
        /// Weight of each new window in the baseline, in `(0, 1]`.
        alpha: f64,
        /// Windows to see before scoring.
        warmup: u32,
        /// Floor for the deviation, so that a flat baseline does not turn
        /// every small wiggle into an infinite score.
        min_dev: f64,
    },
}

impl Expr {
    /// Default [`Expr::Spike::alpha`].
    pub const DEFAULT_ALPHA: f64 = 0.1;
    /// Default [`Expr::Spike::warmup`].
    pub const DEFAULT_WARMUP: u32 = 10;

    /// The aggregate the expression reads.
    pub fn selector(&self) -> &Selector {
        match self {
            Expr::Value(s) | Expr::Change { of: s, .. } | Expr::Spike { of: s, .. } => s,
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Value(s) => write!(f, "{s}"),
            Expr::Change { of, windows, percent } => {
                write!(f, "{}({of}, {windows})", if *percent { "pct_change" } else { "change" })
            }
            Expr::Spike { of, alpha, warmup, min_dev } => {
                write!(f, "spike({of}")?;
                if *alpha != Expr::DEFAULT_ALPHA {
                    write!(f, ", alpha={}", ShortF64(*alpha))?;
                }
                if *warmup != Expr::DEFAULT_WARMUP {
                    write!(f, ", warmup={warmup}")?;
                }
                if *min_dev != 0.0 {
                    write!(f, ", min_dev={}", ShortF64(*min_dev))?;
                }
                f.write_str(")")
            }
        }
    }
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    /// Parses `>`, `>=`, `<`, `<=`, `==` or `!=`.
    pub fn from_symbol(s: &str) -> Option<Op> {
        Some(match s {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            _ => return None,
        })
    }

    /// The operator's symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    /// `lhs op rhs`; false when either side is NaN (except for `!=`).
    pub fn holds(self, lhs: f64, rhs: f64) -> bool {
        match self {
            Op::Gt => lhs > rhs,
            Op::Ge => lhs >= rhs,
            Op::Lt => lhs < rhs,
            Op::Le => lhs <= rhs,
            Op::Eq => lhs == rhs,
            Op::Ne => lhs != rhs,
        }
    }
}

impl Serialize for Op {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.symbol())
    }
}

impl<'de> Deserialize<'de> for Op {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Op::from_symbol(s.trim()).ok_or_else(|| serde::de::Error::custom(format!("unknown operator {s:?}")))
    }
}

/// `op value`: a threshold.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    /// The operator.
    pub op: Op,
    /// The threshold (finite).
    pub threshold: f64,
}

impl Compare {
    /// Whether `value op threshold` holds.
    pub fn holds(&self, value: f64) -> bool {
        self.op.holds(value, self.threshold)
    }
}

impl fmt::Display for Compare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.symbol(), ShortF64(self.threshold))
    }
}

/// What a rule watches for.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Condition {
    /// `expr op threshold`, per group.
    Threshold {
        /// The value computed per window.
        expr: Expr,
        /// The condition on it.
        compare: Compare,
    },
    /// A group that stops reporting: true from the first window with no
    /// result for the group; `for` sets how long the silence must last.
    /// A group silent for [`EvalConfig::idle_ttl`](super::EvalConfig::idle_ttl)
    /// is forgotten and its alert resolved: set that longer than absence
    /// alerts should stay firing.
    Absent,
    /// `expr op threshold` per geo cell, reported when at least `min_cells`
    /// cells that neighbour one another hold it in the same window: one
    /// alert per group of the other `by` labels, carrying the cluster's
    /// cells. The cell is the group label `label` (`geohash` for windows
    /// with [`geo_cell`](crate::window::WindowSpec::geo_cell)).
    GeoCluster {
        /// The value computed per window and cell.
        expr: Expr,
        /// The condition on it.
        compare: Compare,
        /// Fewest neighbouring cells that make a cluster (≥ 1).
        min_cells: u32,
        /// The group label holding the geohash.
        label: String,
    },
}

/// How a window with no result for a group (a gap in its data) counts for
/// threshold and cluster rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Missing {
    /// As a window where the condition is false: a pending alert resets, a
    /// firing one starts to recover (see `keep_firing_for`).
    #[default]
    Ok,
    /// As if it did not exist: the state stays as it was.
    Keep,
    /// As a window where the condition holds.
    Alerting,
}

impl Missing {
    /// The lowercase name, as in `missing=keep`.
    pub fn as_str(self) -> &'static str {
        match self {
            Missing::Ok => "ok",
            Missing::Keep => "keep",
            Missing::Alerting => "alerting",
        }
    }
}

/// How urgent an alert is; ordered from `Info` to `Critical`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Severity {
    /// For information.
    Info,
    /// Needs a look.
    #[default]
    Warning,
    /// Something is broken.
    Error,
    /// Wake someone up.
    Critical,
}

impl Severity {
    /// The lowercase name, as in the `severity` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    /// Parses a lowercase name.
    pub fn from_name(name: &str) -> Option<Severity> {
        Some(match name {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "error" => Severity::Error,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

/// One escalation step: when an alert has been firing for `after` without
/// being acknowledged, raise its severity and notify more channels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    /// Time since the alert started firing (host time, as the notifier sees it).
    pub after: Span,
    /// The severity from this step on, if it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// Channels notified from this step on, in addition to the rule's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
}

/// An alert rule: what to watch, per which groups, and how to report it.
///
/// Build one from its text form with [`Rule::parse`], or deserialize it
/// (YAML, TOML, JSON); both give the same value. The serde form takes the
/// text form's condition either as `rule: "<text>"` or field by field:
///
/// ```
/// use edgestream::alert::Rule;
///
/// let text = Rule::parse("high_latency", "avg(latency_ms) by (region) > 250 for 2m recover < 200 severity=critical")?;
/// let json: Rule = serde_json::from_str(r#"{
///     "name": "high_latency", "expr": "avg(latency_ms)", "by": ["region"],
///     "op": ">", "threshold": 250, "for": "2m",
///     "recover": {"op": "<", "threshold": 200}, "severity": "critical"
/// }"#)?;
/// assert_eq!(text, json);
/// assert_eq!(text.to_string(), "avg(latency_ms) by (region) > 250 for 2m recover < 200 severity=critical");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RuleDef", into = "RuleDef")]
#[non_exhaustive]
pub struct Rule {
    /// The rule's name (the `alertname` label).
    pub name: String,
    /// Only results of this tenant; `None` for every tenant (each tenant
    /// still has its own alerts).
    pub tenant: Option<String>,
    /// Only results of this stream.
    pub stream: Option<String>,
    /// Only results of windows of this size.
    pub window: Option<Span>,
    /// What to watch for.
    pub condition: Condition,
    /// The group labels that make an alert instance; results of finer
    /// groups are merged (exactly for counts, sums, extremes, means and
    /// last values; within the sketch's precision for quantiles). Empty:
    /// one instance per tenant.
    pub by: Vec<String>,
    /// How long the condition must hold before the alert fires.
    pub for_: Span,
    /// How long a firing alert stays firing once its condition stops holding.
    pub keep_firing_for: Span,
    /// A firing alert recovers only when this holds (hysteresis); `None`:
    /// when the condition stops holding.
    pub recover: Option<Compare>,
    /// How windows with no data count.
    pub missing: Missing,
    /// Severity of the alert when it fires.
    pub severity: Severity,
    /// Labels added to every alert of the rule.
    pub labels: BTreeMap<String, String>,
    /// Annotations, templated: `{{labels.region}}`, `{{value}}`,
    /// `{{rule}}`, `{{severity}}`, `{{tenant}}`, `{{cells}}`.
    pub annotations: BTreeMap<String, String>,
    /// Channels notified (names from the notifier's config).
    pub channels: Vec<String>,
    /// Escalation steps, by increasing `after`.
    pub escalate: Vec<Escalation>,
}

impl Rule {
    /// A threshold rule `expr op threshold` with defaults for the rest.
    pub fn threshold(name: impl Into<String>, expr: Expr, op: Op, threshold: f64) -> Result<Rule, RuleError> {
        let def = RuleDef {
            name: Some(name.into()),
            expr: Some(expr.to_string()),
            op: Some(op),
            threshold: Some(threshold),
            ..RuleDef::default()
        };
        Rule::try_from(def)
    }

    /// Parses the text form, for example
    /// `avg(latency_ms) by (region) > 250 for 2m recover < 200 severity=critical`.
    /// See the [module documentation](super#the-text-form) for the grammar.
    pub fn parse(name: &str, text: &str) -> Result<Rule, RuleError> {
        let mut def = parse::parse_rule(text)?;
        def.name = Some(name.to_owned());
        Rule::try_from(def)
    }

    /// The value a group's window is compared with, for threshold and
    /// cluster rules.
    pub fn expr(&self) -> Option<&Expr> {
        match &self.condition {
            Condition::Threshold { expr, .. } | Condition::GeoCluster { expr, .. } => Some(expr),
            Condition::Absent => None,
        }
    }
}

impl fmt::Display for Rule {
    /// The text form (without the name) of everything the text form can
    /// say: [`Rule::parse`] reads it back to this rule, less its
    /// annotations and escalation steps, which only the serde form carries.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.condition {
            Condition::Threshold { expr, compare } => {
                write!(f, "{expr}")?;
                write_by(f, &self.by)?;
                write!(f, " {compare}")?;
            }
            Condition::Absent => {
                f.write_str("absent()")?;
                write_by(f, &self.by)?;
            }
            Condition::GeoCluster { expr, compare, min_cells, label } => {
                write!(f, "geo_cluster({expr} {compare}, min_cells={min_cells}")?;
                if label != DEFAULT_CELL_LABEL {
                    f.write_str(", label=")?;
                    parse::write_ident(f, label)?;
                }
                f.write_str(")")?;
                write_by(f, &self.by)?;
            }
        }
        if self.for_ != Span::ZERO {
            write!(f, " for {}", self.for_)?;
        }
        if self.keep_firing_for != Span::ZERO {
            write!(f, " keep_firing_for {}", self.keep_firing_for)?;
        }
        if let Some(recover) = &self.recover {
            write!(f, " recover {recover}")?;
        }
        if self.missing != Missing::Ok {
            write!(f, " missing={}", self.missing.as_str())?;
        }
        if self.severity != Severity::Warning {
            write!(f, " severity={}", self.severity.as_str())?;
        }
        if let Some(tenant) = &self.tenant {
            f.write_str(" tenant=")?;
            parse::write_value(f, tenant)?;
        }
        if let Some(stream) = &self.stream {
            f.write_str(" stream=")?;
            parse::write_value(f, stream)?;
        }
        if let Some(window) = &self.window {
            write!(f, " window={window}")?;
        }
        for channel in &self.channels {
            f.write_str(" notify=")?;
            parse::write_value(f, channel)?;
        }
        for (k, v) in &self.labels {
            f.write_str(" ")?;
            parse::write_ident(f, k)?;
            f.write_str("=")?;
            parse::write_value(f, v)?;
        }
        Ok(())
    }
}

fn write_by(f: &mut fmt::Formatter<'_>, by: &[String]) -> fmt::Result {
    if by.is_empty() {
        return Ok(());
    }
    f.write_str(" by (")?;
    for (i, label) in by.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        parse::write_ident(f, label)?;
    }
    f.write_str(")")
}

/// The group label that holds the geohash in windows grouped by geo cell.
pub const DEFAULT_CELL_LABEL: &str = "geohash";

/// Why a rule was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// The text form did not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A required setting is missing.
    #[error("rule {rule:?}: {what} is required")]
    Missing {
        /// The rule.
        rule: String,
        /// What is missing.
        what: &'static str,
    },
    /// A setting was given both in `rule` text and as a field.
    #[error("rule {rule:?}: `{field}` is set both in the rule text and as a field")]
    Conflict {
        /// The rule.
        rule: String,
        /// The setting.
        field: &'static str,
    },
    /// A limit of the evaluator or the notifier is out of range.
    #[error("configuration: {0}")]
    Config(String),
    /// A setting is out of range or inconsistent.
    #[error("rule {rule:?}: {reason}")]
    Invalid {
        /// The rule.
        rule: String,
        /// What is wrong.
        reason: String,
    },
}

/// The serde form of a [`Rule`]: every setting optional, a `rule` text
/// that may give the condition and the clauses, checked and merged by
/// `TryFrom`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleDef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// The text form of the condition and clauses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) window: Option<Span>,
    /// The expression (not for absence rules, which set `absent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) expr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) op: Option<Op>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) absent: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) geo_cluster: Option<GeoClusterDef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) by: Option<Vec<String>>,
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub(crate) for_: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) keep_firing_for: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) recover: Option<Compare>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) missing: Option<Missing>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) channels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) escalate: Vec<Escalation>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GeoClusterDef {
    pub(crate) min_cells: u32,
    #[serde(default = "default_cell_label")]
    pub(crate) label: String,
}

fn default_cell_label() -> String {
    DEFAULT_CELL_LABEL.to_owned()
}

macro_rules! merge_opt {
    ($rule:expr, $into:expr, $from:expr, $($field:ident => $name:literal),* $(,)?) => {
        $(
            if $from.$field.is_some() {
                if $into.$field.is_some() {
                    return Err(RuleError::Conflict { rule: $rule.clone(), field: $name });
                }
                $into.$field = $from.$field.take();
            }
        )*
    };
}

impl TryFrom<RuleDef> for Rule {
    type Error = RuleError;

    fn try_from(mut def: RuleDef) -> Result<Rule, RuleError> {
        let name = def.name.take().unwrap_or_default();
        if name.is_empty() {
            return Err(RuleError::Missing { rule: name, what: "`name`" });
        }
        if let Some(text) = def.rule.take() {
            let mut parsed = parse::parse_rule(&text)?;
            merge_opt!(name, def, parsed,
                tenant => "tenant", stream => "stream", window => "window", expr => "expr", op => "op",
                threshold => "threshold", absent => "absent", geo_cluster => "geo_cluster", by => "by",
                for_ => "for", keep_firing_for => "keep_firing_for", recover => "recover",
                missing => "missing", severity => "severity");
            for (k, v) in std::mem::take(&mut parsed.labels) {
                if def.labels.insert(k, v).is_some() {
                    return Err(RuleError::Conflict { rule: name, field: "labels" });
                }
            }
            def.channels.append(&mut parsed.channels);
        }
        let invalid = |reason: String| RuleError::Invalid { rule: name.clone(), reason };

        let expr = match &def.expr {
            Some(text) => Some(parse::parse_expr(text)?),
            None => None,
        };
        let compare = match (def.op, def.threshold) {
            (Some(op), Some(threshold)) => Some(Compare { op, threshold }),
            (None, None) => None,
            _ => return Err(invalid("`op` and `threshold` go together".into())),
        };
        let condition = match (def.absent.unwrap_or(false), def.geo_cluster.take(), expr, compare) {
            (true, None, None, None) => Condition::Absent,
            (true, ..) => return Err(invalid("an absence rule takes no expression, threshold or cluster".into())),
            (false, Some(geo), Some(expr), Some(compare)) => {
                if geo.min_cells == 0 {
                    return Err(invalid("`min_cells` must be at least 1".into()));
                }
                Condition::GeoCluster { expr, compare, min_cells: geo.min_cells, label: geo.label }
            }
            (false, None, Some(expr), Some(compare)) => Condition::Threshold { expr, compare },
            (false, _, None, _) => return Err(RuleError::Missing { rule: name, what: "an expression (`expr`)" }),
            (false, _, Some(_), None) => {
                return Err(RuleError::Missing { rule: name, what: "a threshold (`op` and `threshold`)" });
            }
        };
        if let Some(expr) = match &condition {
            Condition::Threshold { expr, .. } | Condition::GeoCluster { expr, .. } => Some(expr),
            Condition::Absent => None,
        } {
            check_expr(expr).map_err(&invalid)?;
        }
        for compare in match &condition {
            Condition::Threshold { compare, .. } | Condition::GeoCluster { compare, .. } => Some(compare),
            Condition::Absent => None,
        }
        .into_iter()
        .chain(def.recover.as_ref())
        {
            if !compare.threshold.is_finite() {
                return Err(invalid(format!("threshold {} is not finite", compare.threshold)));
            }
        }
        if def.recover.is_some() && matches!(condition, Condition::Absent) {
            return Err(invalid("an absence rule recovers when data returns; it takes no `recover`".into()));
        }
        let for_ = def.for_.unwrap_or(Span::ZERO);
        let keep_firing_for = def.keep_firing_for.unwrap_or(Span::ZERO);
        if for_ < Span::ZERO || keep_firing_for < Span::ZERO {
            return Err(invalid("`for` and `keep_firing_for` cannot be negative".into()));
        }
        if let Some(window) = def.window
            && !window.is_positive()
        {
            return Err(invalid("`window` must be positive".into()));
        }
        let by = def.by.unwrap_or_default();
        if by.iter().chain(def.labels.keys()).any(|l| l == "alertname") {
            return Err(invalid("`alertname` is the rule's name; it cannot be a `by` label or a rule label".into()));
        }
        for (i, label) in by.iter().enumerate() {
            if by.iter().take(i).any(|l| l == label) {
                return Err(invalid(format!("label {label:?} is twice in `by`")));
            }
        }
        if let Condition::GeoCluster { label, .. } = &condition
            && by.contains(label)
        {
            return Err(invalid(format!("the cell label {label:?} cannot also be in `by`")));
        }
        let mut last = Span::ZERO;
        for step in &def.escalate {
            if step.after < last {
                return Err(invalid("escalation steps must be in increasing `after` order".into()));
            }
            last = step.after;
        }
        for (key, text) in &def.annotations {
            super::template::check(text).map_err(|e| invalid(format!("annotation {key:?}: {e}")))?;
        }
        Ok(Rule {
            name,
            tenant: def.tenant,
            stream: def.stream,
            window: def.window,
            condition,
            by,
            for_,
            keep_firing_for,
            recover: def.recover,
            missing: def.missing.unwrap_or_default(),
            severity: def.severity.unwrap_or_default(),
            labels: def.labels,
            annotations: def.annotations,
            channels: def.channels,
            escalate: def.escalate,
        })
    }
}

fn check_expr(expr: &Expr) -> Result<(), String> {
    let selector = expr.selector();
    if selector.field.is_none() && selector.agg != Agg::Count {
        return Err(format!("{} needs a field", selector.agg));
    }
    if let Agg::Quantile(q) = selector.agg
        && !(0.0..=1.0).contains(&q)
    {
        return Err(format!("quantile {q} is not in [0, 1]"));
    }
    match expr {
        Expr::Value(_) => Ok(()),
        Expr::Change { windows, .. } => {
            if (1..=MAX_CHANGE_WINDOWS).contains(windows) {
                Ok(())
            } else {
                Err(format!("change look-back must be 1 to {MAX_CHANGE_WINDOWS} windows, not {windows}"))
            }
        }
        Expr::Spike { alpha, min_dev, .. } => {
            if !(*alpha > 0.0 && *alpha <= 1.0) {
                Err(format!("spike alpha must be in (0, 1], not {alpha}"))
            } else if !(min_dev.is_finite() && *min_dev >= 0.0) {
                Err(format!("spike min_dev must be finite and ≥ 0, not {min_dev}"))
            } else {
                Ok(())
            }
        }
    }
}

impl From<Rule> for RuleDef {
    fn from(rule: Rule) -> RuleDef {
        let (expr, compare, absent, geo_cluster) = match rule.condition {
            Condition::Threshold { expr, compare } => (Some(expr.to_string()), Some(compare), None, None),
            Condition::Absent => (None, None, Some(true), None),
            Condition::GeoCluster { expr, compare, min_cells, label } => {
                (Some(expr.to_string()), Some(compare), None, Some(GeoClusterDef { min_cells, label }))
            }
        };
        RuleDef {
            name: Some(rule.name),
            rule: None,
            tenant: rule.tenant,
            stream: rule.stream,
            window: rule.window,
            expr,
            op: compare.map(|c| c.op),
            threshold: compare.map(|c| c.threshold),
            absent,
            geo_cluster,
            by: (!rule.by.is_empty()).then_some(rule.by),
            for_: (rule.for_ != Span::ZERO).then_some(rule.for_),
            keep_firing_for: (rule.keep_firing_for != Span::ZERO).then_some(rule.keep_firing_for),
            recover: rule.recover,
            missing: (rule.missing != Missing::Ok).then_some(rule.missing),
            severity: Some(rule.severity),
            labels: rule.labels,
            annotations: rule.annotations,
            channels: rule.channels,
            escalate: rule.escalate,
        }
    }
}

//! The rule evaluator: one state machine per (rule, group), driven by
//! window results in event time.
//!
//! How the state is laid out, for the per-result and per-window paths:
//! - Rules that read results alike (stream, tenant and window filters,
//!   selector, `by` labels) form a *reading*. `push` reads a result once
//!   per reading and stages it under its instance key (tenant and `by`
//!   values) in a *pending group*, merging the results of finer groups
//!   that share a key.
//! - A reading's *members* are the instance keys its rules have instances
//!   for, with one row per member holding each rule's instance slot:
//!   `advance` finds a staged key's member once and reaches every rule's
//!   instance from the row. Each rule keeps its instances in its own slab
//!   (a rule's instances sit together, and `advance` sweeps them rule by
//!   rule); an instance names its member instead of holding the key.
//! - Timers (gap transitions, `for` and `keep_firing_for` ends, idle
//!   expiry) are kept by time, most of them at window ends.

use std::collections::{BTreeMap, HashMap, VecDeque, btree_map};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use hashbrown::HashTable;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::geo_cluster;
use super::rule::{Agg, Compare, Condition, Expr, Missing, Rule, RuleError, Selector, Severity};
use super::template::{self, Context};
use crate::sample::stable_hash;
use crate::time::{Span, Timestamp};
use crate::window::agg::Quantiles;
use crate::window::{GroupKey, WindowResult};

/// Limits of an [`Evaluator`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Most alert instances (groups) per rule; results of further groups
    /// are skipped and counted in [`AlertStats::instances_capped`].
    pub max_instances_per_rule: usize,
    /// Most alert instances per tenant, over all rules; counted likewise.
    pub max_instances_per_tenant: usize,
    /// An instance that has seen no data for this long is forgotten (a
    /// firing one is resolved first), so groups that went away do not
    /// hold memory for ever.
    pub idle_ttl: Span,
    /// Most window results held between two [`Evaluator::advance`] calls;
    /// more are skipped and counted in [`AlertStats::buffer_full`].
    pub max_buffered: usize,
    /// Most geo cells whose baseline a cluster rule keeps per instance
    /// (cells idle for `idle_ttl` are forgotten first); further cells are
    /// skipped and counted in [`AlertStats::cells_capped`].
    pub max_cells_per_instance: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            max_instances_per_rule: 100_000,
            max_instances_per_tenant: 100_000,
            idle_ttl: Span::from_days(1),
            max_buffered: 1_000_000,
            max_cells_per_instance: 10_000,
        }
    }
}

/// The state of an alert instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AlertState {
    /// The condition does not hold.
    Inactive,
    /// The condition holds, for less than the rule's `for`.
    Pending,
    /// The condition has held for `for`.
    Firing,
    /// A firing alert recovered (after `keep_firing_for`); the instance is
    /// inactive again.
    Resolved,
}

impl AlertState {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// A stable identity of an alert instance: a hash of the rule name, the
/// tenant and the group labels, the same on every platform. Shown as 16
/// hex digits, like Alertmanager's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub u64);

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Fingerprint {
    /// The fingerprint of `rule` for `tenant` and the group labels `(key, value)`.
    pub fn of<'a>(rule: &str, tenant: &str, labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Fingerprint {
        let mut bytes = Vec::with_capacity(64);
        for part in [rule, tenant] {
            bytes.extend_from_slice(part.as_bytes());
            bytes.push(0xff);
        }
        for (k, v) in labels {
            bytes.extend_from_slice(k.as_bytes());
            bytes.push(0xfe);
            bytes.extend_from_slice(v.as_bytes());
            bytes.push(0xff);
        }
        Fingerprint(stable_hash(0x616c_6572_7473, &bytes))
    }
}

/// A state change of one alert instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AlertEvent {
    /// The rule's name.
    pub rule: Arc<str>,
    /// The tenant.
    pub tenant: Arc<str>,
    /// The instance's labels: `alertname`, the rule's labels, and the
    /// group's `by` labels, sorted by key.
    pub labels: Vec<(String, String)>,
    /// The new state.
    pub state: AlertState,
    /// The state before.
    pub previous: AlertState,
    /// The rule's severity.
    pub severity: Severity,
    /// The value that caused the change: the expression's value, the
    /// largest cluster's size for a cluster rule, none for a gap in the data.
    pub value: Option<f64>,
    /// Event time of the change: the end of the window that caused it.
    pub at: Timestamp,
    /// When the condition started to hold (start of the first window):
    /// for `Resolved`, of the episode that just ended.
    pub since: Timestamp,
    /// The instance's identity.
    pub fingerprint: Fingerprint,
    /// For a cluster rule, the geohash cells of the clusters, sorted.
    pub cells: Vec<String>,
    /// The rule's annotations, rendered for this event.
    pub annotations: Vec<(String, String)>,
}

impl AlertEvent {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// An instance that is pending or firing, as [`Evaluator::alerts`] lists it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ActiveAlert {
    /// The rule's name.
    pub rule: Arc<str>,
    /// The tenant.
    pub tenant: Arc<str>,
    /// Labels as in [`AlertEvent::labels`].
    pub labels: Vec<(String, String)>,
    /// `Pending` or `Firing`.
    pub state: AlertState,
    /// The latest value.
    pub value: Option<f64>,
    /// When the condition started to hold.
    pub since: Timestamp,
    /// The instance's identity.
    pub fingerprint: Fingerprint,
    /// The rule's annotations, rendered with the latest value.
    pub annotations: Vec<(String, String)>,
}

/// What an [`Evaluator`] did with its input.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AlertStats {
    /// (Result, rule) pairs evaluated; results that merged into one staged
    /// entry (of one instance, window and cell, arriving together) count
    /// once.
    pub evaluated: u64,
    /// Partial results (`is_final: false`) skipped: rules read closed windows.
    pub partials_skipped: u64,
    /// Results of a group's window that already had a final result (late
    /// corrections, repeats), before or after its evaluation: skipped, the
    /// first one counts. Counted per (result, rule), like `evaluated`.
    pub stale: u64,
    /// Results that lacked what the rule reads (the field, or the quantile
    /// and a sketch to merge): counted as no data.
    pub no_value: u64,
    /// Results skipped because their group would exceed an instance cap,
    /// counted per rule and per staged entry, like `evaluated`.
    pub instances_capped: u64,
    /// Results skipped because the buffer between two `advance` calls was full.
    pub buffer_full: u64,
    /// Instances forgotten after `idle_ttl` without data.
    pub expired: u64,
    /// Cell windows of cluster rules skipped at `max_cells_per_instance`.
    pub cells_capped: u64,
    /// Alert events emitted.
    pub events: u64,
    /// Alert instances held now.
    pub instances: u64,
}

/// A rule's running value per group, where the expression needs history.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
enum History {
    #[default]
    None,
    /// `(window end, value)` of recent windows, oldest first.
    Change(VecDeque<(Timestamp, f64)>),
    /// Exponentially weighted mean and variance, and windows seen.
    Spike { mean: f64, var: f64, seen: u32 },
}

impl History {
    fn for_expr(expr: Option<&Expr>) -> History {
        match expr {
            Some(Expr::Change { .. }) => History::Change(VecDeque::new()),
            Some(Expr::Spike { .. }) => History::Spike { mean: 0.0, var: 0.0, seen: 0 },
            _ => History::None,
        }
    }

    /// The expression's value for a window with aggregate `x`, updating
    /// the history; `None` when it cannot be computed yet.
    fn eval(&mut self, expr: &Expr, start: Timestamp, end: Timestamp, x: f64) -> Option<f64> {
        match (expr, self) {
            (Expr::Value(_), _) => Some(x),
            (Expr::Change { windows, percent, .. }, History::Change(past)) => {
                let size = end.saturating_since(start);
                let back = Span::from_nanos(size.as_nanos().saturating_mul(i64::from(*windows)));
                let then = end.saturating_sub(back);
                while past.front().is_some_and(|&(t, _)| t < then) {
                    past.pop_front();
                }
                let earlier = past.front().filter(|&&(t, _)| t == then).map(|&(_, v)| v);
                past.push_back((end, x));
                let earlier = earlier?;
                if *percent {
                    (earlier != 0.0).then(|| (x - earlier) / earlier.abs() * 100.0)
                } else {
                    Some(x - earlier)
                }
            }
            (Expr::Spike { alpha, warmup, min_dev, .. }, History::Spike { mean, var, seen }) => {
                let score = (*seen >= *warmup && *seen > 0).then(|| {
                    let dev = var.sqrt().max(*min_dev);
                    if dev > 0.0 {
                        (x - *mean) / dev
                    } else if x == *mean {
                        0.0
                    } else {
                        f64::INFINITY.copysign(x - *mean)
                    }
                });
                if *seen == 0 {
                    *mean = x;
                    *var = 0.0;
                } else {
                    let diff = x - *mean;
                    let incr = alpha * diff;
                    *mean += incr;
                    *var = (1.0 - alpha) * (*var + diff * incr);
                }
                *seen = seen.saturating_add(1);
                score
            }
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
enum Phase {
    Inactive,
    Pending { since: Timestamp },
    Firing { since: Timestamp, recovering: Option<Timestamp> },
}

/// One alert instance: a (rule, tenant, group) state machine. Its key
/// (tenant and `by` values) is its [`Member`] of the rule's reading,
/// shared by the instances the reading's other rules have for it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Instance {
    /// Its member in its reading's [`Members`] (not in snapshots, which
    /// hold the key: a restore finds the member again).
    #[serde(skip)]
    member: u32,
    phase: Phase,
    /// End of the last window processed (with data or as a gap).
    cursor: Timestamp,
    /// End of the last window with data.
    last_data: Timestamp,
    /// Window size, learned from the results.
    size: Span,
    value: Option<f64>,
    history: History,
    /// A cluster rule's per-cell state (boxed: other rules do not need it).
    geo: Option<Box<GeoState>>,
    /// When [`Evaluator::advance`] must look at this instance next (the
    /// time of its entry in the timer heap; it may be earlier than needed).
    deadline: Option<Timestamp>,
    /// Tells this instance from others that held its slot: timer entries
    /// and version-1 snapshots name instances by it.
    generation: u32,
}

/// An instance as snapshots hold it: its key, then its state. Postcard
/// writes a nested struct's fields in line, so these are the bytes
/// snapshots held when instances carried their keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SavedInstance {
    tenant: Arc<str>,
    values: SmallVec<[Arc<str>; 2]>,
    state: Instance,
}

impl SavedInstance {
    fn of(inst: &Instance, key: Labels<'_>) -> SavedInstance {
        SavedInstance {
            tenant: Arc::clone(key.tenant),
            values: key.values.iter().cloned().collect(),
            state: inst.clone(),
        }
    }
}

/// An instance key: the tenant and the values of the rule's `by` labels
/// (shared with the window results' group keys, so lookups mostly compare
/// pointers).
#[derive(Clone, Copy)]
struct Labels<'a> {
    tenant: &'a Arc<str>,
    values: &'a [Arc<str>],
}

/// The per-cell state of a geo-cluster instance.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct GeoState {
    /// Per-cell histories (for expressions that have one), with the end
    /// of the cell's last window.
    cells: HashMap<Arc<str>, (Timestamp, History)>,
    /// Cells of the clusters found in the latest window, sorted.
    cluster: Vec<String>,
}

impl Instance {
    fn cluster(&self) -> &[String] {
        self.geo.as_ref().map_or(&[], |g| &g.cluster)
    }
}

/// No entry in a staged list.
const NONE: u32 = u32::MAX;

fn no_entry() -> u32 {
    NONE
}

/// The part of a window result a rule reads, merged over the groups that
/// share an instance: only what its aggregate needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(from = "AccRepr", into = "AccRepr")]
enum Acc {
    /// Counts and sums.
    Add(f64),
    /// Weighted sum and weight, for a mean.
    Mean {
        sum: f64,
        weight: f64,
    },
    Min(f64),
    Max(f64),
    /// The latest value and its event time.
    Last(Timestamp, f64),
    /// The quantile of one part (NaN until it is read from the sketch:
    /// a part that will be merged never needs its own), and, when parts
    /// may merge, the sketches of the parts merged so far. They are kept
    /// as they are and read together ([`Quantiles::merged_quantile`]):
    /// the sketches of short windows are lists of values, and selecting
    /// over them costs a fraction of building the merge's histograms.
    Quantile {
        value: f64,
        parts: Parts,
    },
}

/// The sketches of the parts of a quantile, in the order they came.
type Parts = SmallVec<[Arc<Quantiles>; 2]>;

/// Exact sketches a quantile reading holds before they are merged for
/// real, so that a reading over many groups holds a bounded number of
/// them (at most 2 KB each).
const MAX_PARTS: usize = 64;

/// The quantile `q` of the merge of `parts`.
fn quantile_of(parts: &[Arc<Quantiles>], q: f64) -> Option<f64> {
    match parts {
        [one] => one.quantile(q),
        _ => {
            let parts: SmallVec<[&Quantiles; 8]> = parts.iter().map(|p| &**p).collect();
            Quantiles::merged_quantile(&parts, q)
        }
    }
}

/// Merges `parts` into one sketch, in order: into the first, in place
/// when nothing else holds it (after a first collapse), else into a copy.
fn collapse(parts: &mut Parts) {
    if parts.len() < 2 {
        return;
    }
    let mut rest = core::mem::take(parts).into_iter();
    let Some(mut merged) = rest.next() else { return };
    let sketch = Arc::make_mut(&mut merged);
    rest.for_each(|p| sketch.merge(&p));
    parts.push(merged);
}

/// `parts` merged into one sketch, in order (the parts stay as they were).
fn merge_parts(parts: &[Arc<Quantiles>]) -> Option<Arc<Quantiles>> {
    let mut merged: Parts = parts.iter().cloned().collect();
    collapse(&mut merged);
    merged.pop()
}

/// The serialized form of an [`Acc`] (that of snapshot versions 1 and 2):
/// the parts of a quantile are written merged into one sketch.
#[derive(Serialize, Deserialize)]
enum AccRepr {
    Add(f64),
    Mean { sum: f64, weight: f64 },
    Min(f64),
    Max(f64),
    Last(Timestamp, f64),
    Quantile { value: f64, sketch: Option<Arc<Quantiles>>, merged: bool },
}

impl From<Acc> for AccRepr {
    fn from(acc: Acc) -> Self {
        match acc {
            Acc::Add(v) => AccRepr::Add(v),
            Acc::Mean { sum, weight } => AccRepr::Mean { sum, weight },
            Acc::Min(v) => AccRepr::Min(v),
            Acc::Max(v) => AccRepr::Max(v),
            Acc::Last(t, v) => AccRepr::Last(t, v),
            Acc::Quantile { value, parts } => {
                AccRepr::Quantile { value, sketch: merge_parts(&parts), merged: parts.len() > 1 }
            }
        }
    }
}

impl From<AccRepr> for Acc {
    fn from(repr: AccRepr) -> Self {
        match repr {
            AccRepr::Add(v) => Acc::Add(v),
            AccRepr::Mean { sum, weight } => Acc::Mean { sum, weight },
            AccRepr::Min(v) => Acc::Min(v),
            AccRepr::Max(v) => Acc::Max(v),
            AccRepr::Last(t, v) => Acc::Last(t, v),
            // A merged sketch's value is read from it, not from the first part.
            AccRepr::Quantile { value, sketch, merged } => {
                Acc::Quantile { value: if merged { f64::NAN } else { value }, parts: sketch.into_iter().collect() }
            }
        }
    }
}

/// Quantiles read during one `advance`: the rules of a reading read the
/// same staged parts, so each quantile of them is read once. Keyed by the
/// parts' addresses, which the kept `Arc`s stop from being reused until
/// the memo is cleared.
#[derive(Default)]
struct QuantileMemo {
    values: HashMap<(SmallVec<[usize; 8]>, u64), Option<f64>, foldhash::fast::RandomState>,
    kept: Vec<Arc<Quantiles>>,
}

impl QuantileMemo {
    fn quantile(&mut self, parts: &[Arc<Quantiles>], q: f64) -> Option<f64> {
        let key = (parts.iter().map(|p| Arc::as_ptr(p) as usize).collect(), q.to_bits());
        if let Some(&value) = self.values.get(&key) {
            return value;
        }
        let value = quantile_of(parts, q);
        self.values.insert(key, value);
        self.kept.extend(parts.iter().cloned());
        value
    }

    fn clear(&mut self) {
        if !self.kept.is_empty() {
            self.values.clear();
            self.kept.clear();
        }
    }
}

impl Acc {
    fn read(result: &WindowResult, selector: &Selector, keep_sketch: bool) -> Option<Acc> {
        let field = match &selector.field {
            None => return Some(Acc::Add(result.count)),
            Some(name) => result.field(name)?,
        };
        let s = &field.scalar;
        match selector.agg {
            Agg::Count => Some(Acc::Add(s.count())),
            Agg::Sum => s.sum().filter(|_| !s.is_empty()).map(Acc::Add),
            Agg::Avg => s.mean().map(|_| Acc::Mean { sum: s.total(), weight: s.count() }),
            Agg::Min => s.min().map(Acc::Min),
            Agg::Max => s.max().map(Acc::Max),
            Agg::Last => s.last().map(|(t, v)| Acc::Last(t, v)),
            Agg::Quantile(q) => {
                // The window computed its configured quantiles once: read
                // them rather than walk the sketch again.
                let computed = field.quantiles.iter().find(|(fq, _)| (fq - q).abs() < 1e-9).map(|&(_, v)| v);
                let parts: Parts = field.sketch.iter().filter(|_| keep_sketch).cloned().collect();
                let value = match (computed, parts.is_empty(), &field.sketch) {
                    (Some(v), ..) => v,
                    // Read when needed, if this part stays alone.
                    (None, false, _) => f64::NAN,
                    (None, true, Some(own)) => own.quantile(q)?,
                    (None, true, None) => return None,
                };
                Some(Acc::Quantile { value, parts })
            }
        }
    }

    /// Folds in `other`; false when they cannot merge (quantiles without
    /// sketches).
    fn merge(&mut self, other: Acc) -> bool {
        match (self, other) {
            (Acc::Add(a), Acc::Add(b)) => *a += b,
            (Acc::Mean { sum, weight }, Acc::Mean { sum: s, weight: w }) => {
                *sum += s;
                *weight += w;
            }
            (Acc::Min(a), Acc::Min(b)) => *a = a.min(b),
            (Acc::Max(a), Acc::Max(b)) => *a = a.max(b),
            // The later one; at the same time the larger, as `Scalar` does.
            (Acc::Last(t, v), Acc::Last(u, w)) => (*t, *v) = crate::window::agg::later((*t, *v), (u, w)),
            (Acc::Quantile { parts: a, value }, Acc::Quantile { parts: b, .. }) if !a.is_empty() && !b.is_empty() => {
                // A merged reading reads its parts, never the first part's
                // own quantile.
                *value = f64::NAN;
                a.extend(b);
                // Sketches holding histograms are merged at once: selection
                // cannot read them, and they are large to keep.
                if a.len() > MAX_PARTS || a.iter().any(|p| !p.is_exact()) {
                    collapse(a);
                }
            }
            _ => return false,
        }
        true
    }

    /// The aggregate's value. Quantiles of sketches go through `memo`
    /// when others may read the same sketches (`None` for a private copy).
    fn value(&self, agg: Agg, memo: Option<&mut QuantileMemo>) -> Option<f64> {
        match (self, agg) {
            (Acc::Add(v) | Acc::Min(v) | Acc::Max(v) | Acc::Last(_, v), _) => Some(*v),
            (Acc::Mean { sum, weight }, _) => (*weight > 0.0).then(|| sum / weight),
            (Acc::Quantile { value, parts }, Agg::Quantile(q))
                if parts.len() > 1 || (value.is_nan() && !parts.is_empty()) =>
            {
                match memo {
                    Some(memo) => memo.quantile(parts, q),
                    None => quantile_of(parts, q),
                }
            }
            (Acc::Quantile { value, .. }, _) => (!value.is_nan()).then_some(*value),
        }
    }
}

/// What a reading took from a window result, waiting for
/// [`Evaluator::advance`]: merged per (instance key, window, cell) as
/// results come, and linked per [`Pending`] group.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Staged {
    start: Timestamp,
    end: Timestamp,
    cell: Option<Arc<str>>,
    /// `None` for absence rules, which read no value.
    acc: Option<Acc>,
    /// Parts that could not be merged (quantiles without sketches) met.
    unmergeable: bool,
    /// The next entry of the same pending group, or [`NONE`].
    #[serde(skip, default = "no_entry")]
    next: u32,
}

/// The parts of a rule that `push` reads for every result, kept small and
/// together so that a thousand rules stay in cache.
struct Plan {
    tenant: Option<Arc<str>>,
    window: Option<Span>,
    /// The group label holding the cell, for cluster rules.
    cell_label: Option<Arc<str>>,
    /// Whether the rule reads one stream only.
    fixed_stream: bool,
    /// What it reads; `None` for absence rules.
    selector: Option<Selector>,
}

impl Plan {
    fn of(rule: &Rule) -> Plan {
        Plan {
            tenant: rule.tenant.as_deref().map(Arc::from),
            window: rule.window,
            cell_label: match &rule.condition {
                Condition::GeoCluster { label, .. } => Some(Arc::from(label.as_str())),
                _ => None,
            },
            fixed_stream: rule.stream.is_some(),
            selector: rule.expr().map(|e| e.selector().clone()),
        }
    }
}

/// Rules that read results alike: the same stream, tenant and window
/// filters, the same selector and the same `by` labels (rules that differ
/// only in their threshold, durations, severity or labels, such as a
/// warning and a critical rule on one metric). A result is read, merged
/// and staged once per reading, and each of its rules evaluates the
/// staged windows with its own instance.
struct Reading {
    plan: Plan,
    /// What makes rules alike; staged entries are snapshotted under it.
    key: ReadingKey,
    /// Readings with the same `by` list share an id, so a result's instance
    /// key is worked out once for all of them.
    by_id: u32,
    /// Its rules, in the order given.
    rules: SmallVec<[u32; 4]>,
    /// The instance keys its rules have instances for.
    members: Members,
}

/// An instance key (tenant and `by` values) of a [`Reading`], shared by
/// the instances its rules have for it: a window staged for the key finds
/// the instances of all the reading's rules with one lookup, where an
/// index per rule took one per rule (and a cache miss in each).
struct Member {
    tenant: Arc<str>,
    values: SmallVec<[Arc<str>; 2]>,
}

impl Member {
    fn labels(&self) -> Labels<'_> {
        Labels { tenant: &self.tenant, values: &self.values }
    }
}

/// The members of a reading: a slab with an index by key, and the instance
/// slot each rule of the reading has in each member.
struct Members {
    list: Vec<Option<Member>>,
    /// Per member, the instance slot of each rule of the reading (by
    /// position) or [`NONE`]: `rules` entries from `rules * member`.
    slots: Vec<u32>,
    rules: usize,
    free: Vec<u32>,
    /// Members by [`hash_key`] of their key.
    index: HashTable<u32>,
    /// Hashes keys as `Evaluator::hasher` does (both [`key_hasher`]): the
    /// hashes `find` is given come from that one.
    hasher: foldhash::fast::FixedState,
}

impl Members {
    /// Members of a reading of `rules` rules, hashing keys with `hasher`.
    fn new(rules: usize, hasher: foldhash::fast::FixedState) -> Members {
        Members { list: Vec::new(), slots: Vec::new(), rules, free: Vec::new(), index: HashTable::new(), hasher }
    }

    /// The key of member `id`.
    fn labels(&self, id: u32) -> Option<Labels<'_>> {
        self.list.get(id as usize).and_then(Option::as_ref).map(Member::labels)
    }

    /// The member of the key `tenant`, `values` (of hash `hash`), if any.
    fn find(&self, tenant: &Arc<str>, values: &[Option<&Arc<str>>], hash: u64) -> Option<u32> {
        let list = &self.list;
        self.index
            .find(hash, |&i| {
                list.get(i as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|m| key_is(&m.tenant, &m.values, tenant, values))
            })
            .copied()
    }

    /// The member of a key, added (with no instances) if new.
    fn find_or_add(&mut self, tenant: &Arc<str>, values: &[Option<&Arc<str>>], hash: u64) -> u32 {
        if let Some(id) = self.find(tenant, values, hash) {
            return id;
        }
        let member = Member { tenant: Arc::clone(tenant), values: owned_values(values) };
        let id = match self.free.pop() {
            Some(id) => {
                if let Some(place) = self.list.get_mut(id as usize) {
                    *place = Some(member);
                }
                id
            }
            None => {
                self.list.push(Some(member));
                self.slots.extend(core::iter::repeat_n(NONE, self.rules));
                (self.list.len() - 1) as u32
            }
        };
        let Members { index, list, hasher, .. } = self;
        index.insert_unique(hash, id, |&i| member_hash(hasher, list, i));
        id
    }

    /// The instance slot rule `k` of the reading has in member `id`.
    fn slot(&self, id: u32, k: usize) -> u32 {
        self.slots.get(id as usize * self.rules + k).copied().unwrap_or(NONE)
    }

    /// Sets rule `k`'s slot in member `id` (to [`NONE`] when its instance
    /// goes); a member left without instances is removed.
    fn set_slot(&mut self, id: u32, k: usize, slot: u32) {
        if let Some(place) = self.slots.get_mut(id as usize * self.rules + k) {
            *place = slot;
        }
        if slot == NONE {
            self.remove_if_empty(id);
        }
    }

    /// Removes member `id` if none of the rules has an instance in it.
    fn remove_if_empty(&mut self, id: u32) {
        let from = id as usize * self.rules;
        let empty = self.slots.get(from..from + self.rules).is_some_and(|s| s.iter().all(|&s| s == NONE));
        if !empty || self.labels(id).is_none() {
            return;
        }
        let hash = member_hash(&self.hasher, &self.list, id);
        if let Ok(entry) = self.index.find_entry(hash, |&i| i == id) {
            entry.remove();
        }
        if let Some(place) = self.list.get_mut(id as usize) {
            *place = None;
        }
        self.free.push(id);
    }
}

/// [`hash_key`] of the key of member `id` of `list`.
fn member_hash(hasher: &foldhash::fast::FixedState, list: &[Option<Member>], id: u32) -> u64 {
    let key = list.get(id as usize).and_then(Option::as_ref);
    key.map_or(0, |k| hash_key(hasher, &k.tenant, k.values.iter().map(|v| &**v)))
}

/// What rules of one [`Reading`] have in common, in plain data: the key
/// readings are found by when rules are given, and staged entries in a
/// snapshot are restored under (a rule that changed what it reads finds
/// another reading, or none, and does not take entries read for others).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct ReadingKey {
    stream: Option<String>,
    tenant: Option<String>,
    window: Option<Span>,
    /// The cell label of a cluster rule.
    cell: Option<String>,
    /// The selector's text (`None` for absence rules).
    selector: Option<String>,
    by: Vec<String>,
}

impl ReadingKey {
    fn of(rule: &Rule) -> ReadingKey {
        ReadingKey {
            stream: rule.stream.clone(),
            tenant: rule.tenant.clone(),
            window: rule.window,
            cell: match &rule.condition {
                Condition::GeoCluster { label, .. } => Some(label.clone()),
                _ => None,
            },
            selector: rule.expr().map(|e| e.selector().to_string()),
            by: rule.by.clone(),
        }
    }
}

/// The entries staged for one reading and one instance key (tenant and
/// `by` values) until the next `advance`, which evaluates them for each
/// rule of the reading.
struct Pending {
    reading: u32,
    tenant: Arc<str>,
    /// The `by` values (empty for a label the group lacks).
    values: SmallVec<[Arc<str>; 2]>,
    /// [`hash_key`] of tenant and values: the rules' instance hash.
    hash: u64,
    /// First and last of its entries in `Evaluator::staging`.
    head: u32,
    tail: u32,
}

/// A window of a pending group that [`Evaluator::advance`] evaluates: its
/// staged entries are `from..to` of that call's sorted entries.
struct Due {
    reading: u32,
    group: usize,
    from: usize,
    to: usize,
}

/// A result's instance key for the readings sharing one `by` list.
struct Key<'a> {
    by_id: u32,
    /// The `by` labels' values; `None` for a label the group lacks (read as empty).
    values: SmallVec<[Option<&'a Arc<str>>; 4]>,
    hash: u64,
    /// The result's labels that are not in `by`.
    others: SmallVec<[&'a str; 4]>,
}

/// A staged entry in a version-1 snapshot, with the rule instance it was
/// staged for (version 1 staged every result once per rule).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Buffered {
    rule: u32,
    slot: u32,
    generation: u32,
    staged: Staged,
}

struct RuleSlot {
    rule: Arc<Rule>,
    name: Arc<str>,
    /// Its reading, and its position among the reading's rules: its
    /// instances are indexed by the reading's [`Members`].
    reading: u32,
    position: u32,
    /// Instance slots (`None` when free).
    instances: Vec<Option<Instance>>,
    free: Vec<u32>,
    live: usize,
}

/// Evaluates alert rules over window results.
///
/// Push each window result the windows emit ([`Evaluator::push`]), then
/// call [`Evaluator::advance`] with the windows' watermark: it evaluates
/// every buffered result whose window ended by then, in event-time order,
/// and the gaps in each group's data, and appends the state changes.
///
/// **Time is event time.** A rule's `for`, `keep_firing_for` and absence
/// durations are measured on window ends, never on the host's clock, so
/// replaying a day of data gives the alerts it gave live, and splitting the
/// same results over any number of `advance` calls gives the same events
/// (as long as every result of a window is pushed before an `advance` past
/// its end, which is how [`Windows`](crate::window::Windows) emits them).
/// A quiet stream still moves on: the windows' watermark advances on the
/// host's time after their idle timeout.
///
/// A group's results are expected in window order, as `Windows` emits
/// them; a result that arrives after a later window of its instance was
/// evaluated, or a second final result of a window (a correction), is
/// skipped and counted in [`AlertStats::stale`].
///
/// ```
/// use edgestream::alert::{AlertState, EvalConfig, Evaluator, Rule};
/// use edgestream::event::{decode, Limits};
/// use edgestream::time::{Span, Timestamp};
/// use edgestream::window::{FieldSpec, WindowSpec, Windows};
///
/// let rule = Rule::parse("hot", "avg(temp_c) by (room) > 30 for 2m")?;
/// let mut alerts = Evaluator::new(vec![rule], EvalConfig::default())?;
/// let spec = WindowSpec::new(Span::from_mins(1)).group_by(["room"]).field(FieldSpec::new("temp_c"))
///     .out_of_orderness(Span::ZERO);
/// let mut windows = Windows::new(spec)?;
///
/// let mut events = Vec::new();
/// for (minute, temp) in [(0, 31.0), (1, 32.0), (2, 33.0), (3, 20.0), (4, 21.0)] {
///     let body = format!(r#"{{"tenant":"t","stream":"s","ts":"{}","dims":{{"room":"a"}},"fields":{{"temp_c":{temp}}}}}"#,
///         Timestamp::from_secs(60 * minute).unwrap());
///     let now = Timestamp::from_secs(60 * minute + 61).unwrap();
///     let batch = decode("application/json", body, &Limits::default())?;
///     windows.push(&batch, now, &mut Vec::new());
///     windows.advance(now);
///     while let Some(result) = windows.poll_result() {
///         alerts.push(&result);
///     }
///     alerts.advance(windows.watermark(), &mut events);
/// }
/// let states: Vec<_> = events.iter().map(|e| (e.state, e.at.as_secs())).collect();
/// assert_eq!(states, [(AlertState::Pending, 60), (AlertState::Firing, 120), (AlertState::Resolved, 240)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Evaluator {
    rules: Vec<RuleSlot>,
    readings: Vec<Reading>,
    /// Readings by the stream their rules name, and those of rules that
    /// read every stream.
    by_stream: HashMap<String, Vec<u32>>,
    any_stream: Vec<u32>,
    config: EvalConfig,
    /// Staged entries, linked per pending group; cleared by each `advance`.
    staging: Vec<Staged>,
    /// Groups with staged entries, in the order they were first staged.
    pending: Vec<Pending>,
    /// `pending` by reading and instance key.
    pending_index: HashTable<u32>,
    /// Events waiting for the `advance` whose watermark passes them (the
    /// resolutions of a restore's dropped rules, and the events a version-1
    /// snapshot held).
    held: Vec<AlertEvent>,
    /// Quantiles of sketches read by an `advance`; emptied after it.
    quantile_memo: QuantileMemo,
    /// The (group, window end) of every result staged and not yet
    /// evaluated: a second result for one of them (a correction) is stale.
    seen: hashbrown::HashSet<(Arc<GroupKey>, Timestamp, Timestamp), foldhash::fast::FixedState>,
    /// The instances' deadlines.
    timers: Timers,
    per_tenant: HashMap<Arc<str>, usize>,
    hasher: foldhash::fast::FixedState,
    next_generation: u32,
    stats: AlertStats,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("rules", &self.rules.len())
            .field("staged", &self.staging.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The hasher of instance keys (seeded alike in every run, so that runs
/// repeat exactly).
fn key_hasher() -> foldhash::fast::FixedState {
    foldhash::fast::FixedState::with_seed(0x5eed)
}

fn hash_key<'a>(hasher: &foldhash::fast::FixedState, tenant: &str, values: impl Iterator<Item = &'a str>) -> u64 {
    let mut h = hasher.build_hasher();
    tenant.hash(&mut h);
    for v in values {
        v.hash(&mut h);
    }
    h.finish()
}

/// Whether the instance key `tenant`, `values` is `other_tenant`,
/// `others` (where `None`, a label the group lacks, reads as empty).
fn key_is(tenant: &Arc<str>, values: &[Arc<str>], other_tenant: &Arc<str>, others: &[Option<&Arc<str>>]) -> bool {
    (Arc::ptr_eq(tenant, other_tenant) || tenant == other_tenant)
        && values.len() == others.len()
        && values.iter().zip(others).all(|(a, b)| match b {
            Some(b) => Arc::ptr_eq(a, b) || a == *b,
            None => a.is_empty(),
        })
}

/// The values of an instance key, a missing label as empty.
fn owned_values(values: &[Option<&Arc<str>>]) -> SmallVec<[Arc<str>; 2]> {
    values.iter().map(|v| v.map_or_else(|| Arc::from(""), Arc::clone)).collect()
}

/// The indexes of a list of staged entries, from its head.
fn entries_from(staging: &[Staged], head: u32) -> impl Iterator<Item = (u32, &Staged)> {
    let mut next = head;
    core::iter::from_fn(move || {
        let i = next;
        let entry = staging.get(i as usize)?;
        next = entry.next;
        Some((i, entry))
    })
}

/// The hash of a pending group in `Evaluator::pending_index`.
fn pending_hash(reading: u32, key_hash: u64) -> u64 {
    key_hash ^ u64::from(reading).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl Evaluator {
    /// An evaluator of `rules`; rule names must be unique, `idle_ttl`
    /// positive and the limits at least 1.
    pub fn new(rules: Vec<Rule>, config: EvalConfig) -> Result<Evaluator, RuleError> {
        if !config.idle_ttl.is_positive() {
            return Err(RuleError::Config("`idle_ttl` must be positive".into()));
        }
        if config.max_instances_per_rule == 0
            || config.max_instances_per_tenant == 0
            || config.max_buffered == 0
            || config.max_cells_per_instance == 0
        {
            return Err(RuleError::Config("the `max_*` limits must be at least 1".into()));
        }
        let mut by_stream: HashMap<String, Vec<u32>> = HashMap::new();
        let mut any_stream = Vec::new();
        let mut slots = Vec::with_capacity(rules.len());
        let mut readings: Vec<Reading> = Vec::new();
        let mut reading_of: HashMap<ReadingKey, u32> = HashMap::new();
        let mut by_lists: Vec<Vec<String>> = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, rule) in rules.into_iter().enumerate() {
            if !names.insert(rule.name.clone()) {
                return Err(RuleError::Invalid { rule: rule.name, reason: "two rules have this name".into() });
            }
            let too_many = || RuleError::Invalid { rule: rule.name.clone(), reason: "too many rules".into() };
            let id = u32::try_from(i).map_err(|_| too_many())?;
            let by_id = match by_lists.iter().position(|b| *b == rule.by) {
                Some(i) => i,
                None => {
                    by_lists.push(rule.by.clone());
                    by_lists.len() - 1
                }
            } as u32;
            let key = ReadingKey::of(&rule);
            let reading = match reading_of.get(&key) {
                Some(&r) => r,
                None => {
                    let r = u32::try_from(readings.len()).map_err(|_| too_many())?;
                    match &rule.stream {
                        Some(stream) => by_stream.entry(stream.clone()).or_default().push(r),
                        None => any_stream.push(r),
                    }
                    readings.push(Reading {
                        plan: Plan::of(&rule),
                        key: key.clone(),
                        by_id,
                        rules: SmallVec::new(),
                        members: Members::new(0, key_hasher()),
                    });
                    reading_of.insert(key, r);
                    r
                }
            };
            let mut position = 0;
            if let Some(r) = readings.get_mut(reading as usize) {
                position = r.rules.len() as u32;
                r.rules.push(id);
            }
            slots.push(RuleSlot {
                name: Arc::from(rule.name.as_str()),
                rule: Arc::new(rule),
                reading,
                position,
                instances: Vec::new(),
                free: Vec::new(),
                live: 0,
            });
        }
        for r in &mut readings {
            // Each member holds a slot per rule of its reading.
            r.members.rules = r.rules.len();
        }
        Ok(Evaluator {
            rules: slots,
            readings,
            by_stream,
            any_stream,
            config,
            staging: Vec::new(),
            pending: Vec::new(),
            pending_index: HashTable::new(),
            held: Vec::new(),
            quantile_memo: QuantileMemo::default(),
            seen: hashbrown::HashSet::with_hasher(key_hasher()),
            timers: Timers::default(),
            per_tenant: HashMap::new(),
            hasher: key_hasher(),
            next_generation: 0,
            stats: AlertStats::default(),
        })
    }

    /// The rules, in the order given.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|s| &*s.rule)
    }

    /// What the evaluator did so far.
    pub fn stats(&self) -> &AlertStats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &EvalConfig {
        &self.config
    }

    /// Buffers a window result for the rules that read it (by tenant,
    /// stream and window size); it is evaluated by the next
    /// [`advance`](Evaluator::advance) at or after its window's end.
    pub fn push(&mut self, result: &WindowResult) {
        if !result.is_final {
            add(&mut self.stats.partials_skipped, 1);
            return;
        }
        let stream = &*result.group.stream;
        let readings: SmallVec<[u32; 16]> =
            self.by_stream.get(stream).into_iter().flatten().chain(self.any_stream.iter()).copied().collect();
        if readings.is_empty() {
            return;
        }
        if self.seen.len() >= self.config.max_buffered {
            let rules = readings.iter().map(|&r| self.rules_of(r)).sum();
            add(&mut self.stats.buffer_full, rules);
            return;
        }
        if !self.seen.insert((Arc::clone(&result.group), result.start, result.end)) {
            // The first final result of a group's window is the one evaluated.
            let rules = readings.iter().map(|&r| self.rules_of(r)).sum();
            add(&mut self.stats.stale, rules);
            return;
        }
        let mut keys: SmallVec<[Key<'_>; 2]> = SmallVec::new();
        for reading_id in readings {
            let Some(reading) = self.readings.get(reading_id as usize) else { continue };
            let by_id = reading.by_id;
            let key = match keys.iter().position(|k| k.by_id == by_id) {
                Some(i) => i,
                None => {
                    let by = &reading.key.by;
                    let values: SmallVec<[Option<&Arc<str>>; 4]> = by
                        .iter()
                        .map(|k| result.group.labels.iter().find(|(l, _)| **l == **k).map(|(_, v)| v))
                        .collect();
                    let hash =
                        hash_key(&self.hasher, &result.group.tenant, values.iter().map(|v| v.map_or("", |v| &**v)));
                    let others =
                        result.group.labels.iter().map(|(k, _)| &**k).filter(|k| !by.iter().any(|b| b == k)).collect();
                    keys.push(Key { by_id, values, hash, others });
                    keys.len() - 1
                }
            };
            if let Some(key) = keys.get(key) {
                self.push_for(reading_id, result, key);
            }
        }
    }

    /// The number of rules of a reading, for counters kept per rule.
    fn rules_of(&self, reading: u32) -> u64 {
        self.readings.get(reading as usize).map_or(0, |r| r.rules.len() as u64)
    }

    fn push_for(&mut self, reading_id: u32, result: &WindowResult, key: &Key<'_>) {
        let Some(reading) = self.readings.get(reading_id as usize) else { return };
        let rules = reading.rules.len() as u64;
        let plan = &reading.plan;
        if plan.tenant.as_ref().is_some_and(|t| *t != result.group.tenant)
            || plan.window.is_some_and(|w| w != result.end.saturating_since(result.start))
        {
            return;
        }
        let cell_label = plan.cell_label.as_deref();
        let cell = match cell_label {
            Some(label) => match result.group.label(label) {
                Some(cell) => Some(cell),
                None => {
                    add(&mut self.stats.no_value, rules);
                    return;
                }
            },
            None => None,
        };
        // No cap here: staged entries are at most one per reading for each
        // result `push` took, and `push` caps those at `max_buffered`.
        // Results of finer groups than `by` (or of several streams) merge
        // into one instance: quantile rules then need the sketches.
        let merges = key.others.iter().any(|&k| Some(k) != cell_label);
        let acc = match &plan.selector {
            None => None,
            Some(selector) => match Acc::read(result, selector, merges || !plan.fixed_stream) {
                Some(acc) => Some(acc),
                None => {
                    add(&mut self.stats.no_value, rules);
                    return;
                }
            },
        };
        let staged = Staged {
            start: result.start,
            end: result.end,
            cell: cell.map(Arc::from),
            acc,
            unmergeable: false,
            next: NONE,
        };
        let pending = self.pending_group(reading_id, &result.group.tenant, &key.values, key.hash);
        self.stage(pending, staged);
    }

    /// The pending group of (`reading`, `tenant`, `values`), added if new;
    /// a value `None` (a label the group lacks) reads as empty. `hash` is
    /// [`hash_key`] of tenant and values.
    fn pending_group(&mut self, reading: u32, tenant: &Arc<str>, values: &[Option<&Arc<str>>], hash: u64) -> u32 {
        let Evaluator { pending, pending_index, .. } = self;
        let slot_hash = pending_hash(reading, hash);
        let found = pending_index.find(slot_hash, |&i| {
            pending
                .get(i as usize)
                .is_some_and(|p| p.reading == reading && p.hash == hash && key_is(&p.tenant, &p.values, tenant, values))
        });
        if let Some(&i) = found {
            return i;
        }
        let id = pending.len() as u32;
        let values = owned_values(values);
        pending.push(Pending { reading, tenant: Arc::clone(tenant), values, hash, head: NONE, tail: NONE });
        pending_index
            .insert_unique(slot_hash, id, |&i| pending.get(i as usize).map_or(0, |p| pending_hash(p.reading, p.hash)));
        id
    }

    /// Adds an entry to a pending group's list, merging it into the last
    /// one when it is of the same window (and cell).
    fn stage(&mut self, pending: u32, mut staged: Staged) {
        let Some(group) = self.pending.get_mut(pending as usize) else { return };
        if let Some(last) = self.staging.get_mut(group.tail as usize)
            && (last.start, last.end) == (staged.start, staged.end)
            && last.cell == staged.cell
        {
            if let (Some(a), Some(b)) = (&mut last.acc, staged.acc) {
                last.unmergeable |= !a.merge(b);
            }
            last.unmergeable |= staged.unmergeable;
            return;
        }
        let Ok(index) = u32::try_from(self.staging.len()) else { return };
        staged.next = NONE;
        self.staging.push(staged);
        match self.staging.get_mut(group.tail as usize) {
            Some(last) => last.next = index,
            None => group.head = index,
        }
        group.tail = index;
    }

    /// The instance rule `rule_id` has in member `member` of its reading,
    /// created if it has none and the caps allow.
    fn instance(&mut self, rule_id: u32, member: u32) -> Option<u32> {
        let slot = self.rules.get_mut(rule_id as usize)?;
        let reading = self.readings.get_mut(slot.reading as usize)?;
        let k = slot.position as usize;
        let found = reading.members.slot(member, k);
        if found != NONE {
            return Some(found);
        }
        let tenant = reading.members.labels(member)?.tenant;
        let tenant_count = self.per_tenant.get(tenant).copied().unwrap_or(0);
        if slot.live >= self.config.max_instances_per_rule || tenant_count >= self.config.max_instances_per_tenant {
            return None;
        }
        let tenant = Arc::clone(tenant);
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let instance = fresh_instance(&slot.rule, member, generation);
        let id = match slot.free.pop() {
            Some(id) => {
                if let Some(place) = slot.instances.get_mut(id as usize) {
                    *place = Some(instance);
                }
                id
            }
            None => {
                slot.instances.push(Some(instance));
                u32::try_from(slot.instances.len() - 1).ok()?
            }
        };
        reading.members.set_slot(member, k, id);
        slot.live += 1;
        *self.per_tenant.entry(tenant).or_insert(0) += 1;
        add(&mut self.stats.instances, 1);
        Some(id)
    }

    /// When `advance` has work next: the end of the earliest buffered
    /// window, or the earliest gap or timer of an instance. It may be early
    /// (a timer that was cancelled); calling `advance` then is harmless.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let buffered = self.staging.iter().map(|b| b.end).chain(self.held.iter().map(|e| e.at)).min();
        let timer = self.timers.first();
        buffered.into_iter().chain(timer).min()
    }

    /// Evaluates, in event-time order, every buffered result whose window
    /// ended at or before `watermark`, and every gap in a group's data up
    /// to it; appends the state changes to `out`.
    pub fn advance(&mut self, watermark: Timestamp, out: &mut Vec<AlertEvent>) {
        let first = out.len();
        if !self.held.is_empty() {
            let (due, later): (Vec<AlertEvent>, Vec<AlertEvent>) =
                std::mem::take(&mut self.held).into_iter().partition(|e| e.at <= watermark);
            out.extend(due);
            self.held = later;
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_index.clear();
        let mut staging = std::mem::take(&mut self.staging);
        let mut carry: Vec<(u32, Staged)> = Vec::new();
        // Each group's entries in event-time order, and its windows that
        // are due as ranges of them.
        let mut entries: Vec<u32> = Vec::new();
        let mut due: Vec<Due> = Vec::new();
        for (group_id, group) in pending.iter().enumerate() {
            let base = entries.len();
            entries.extend(entries_from(&staging, group.head).map(|(i, _)| i));
            let key = |i: &u32| staging.get(*i as usize).map(|e| (e.end, e.cell.clone()));
            if let Some(own) = entries.get_mut(base..)
                && !own.is_sorted_by_key(key)
            {
                own.sort_by_key(key);
            }
            // One window (every cell of it) at a time.
            let mut at = base;
            while let Some(end) = entries.get(at).and_then(|&i| staging.get(i as usize)).map(|e| e.end) {
                let rest = entries.get(at..).unwrap_or_default();
                let n = rest.iter().take_while(|&&i| staging.get(i as usize).is_some_and(|e| e.end == end)).count();
                if end <= watermark {
                    due.push(Due { reading: group.reading, group: group_id, from: at, to: at + n });
                } else {
                    for &i in rest.get(..n).unwrap_or_default() {
                        if let Some(e) = staging.get_mut(i as usize) {
                            let kept = Staged { cell: e.cell.take(), acc: e.acc.take(), next: NONE, ..*e };
                            carry.push((group_id as u32, kept));
                        }
                    }
                }
                at += n;
            }
        }
        // Rule by rule: a rule's instances sit together, so one sweep over
        // them all misses the cache far less than visiting every rule's
        // instance of one group in turn. An instance still sees its
        // windows in event-time order (the sort is stable), and instances
        // are independent of each other.
        due.sort_by_key(|d| d.reading);
        let values: Vec<SmallVec<[Option<&Arc<str>>; 4]>> =
            pending.iter().map(|g| g.values.iter().map(Some).collect()).collect();
        let mut rest = due.as_slice();
        // The merged value of each due window of a reading: the same for
        // all its rules, so worked out once (by the first that needs it).
        let mut merged: Vec<Option<Option<f64>>> = Vec::new();
        let mut slots: Vec<Option<Option<u32>>> = Vec::new();
        let mut members: Vec<Option<u32>> = Vec::new();
        while let Some(reading) = rest.first().map(|d| d.reading) {
            let n = rest.iter().take_while(|d| d.reading == reading).count();
            let (of_reading, tail) = rest.split_at(n);
            rest = tail;
            merged.clear();
            merged.resize(n, None);
            let rule = |ev: &Self, k: usize| ev.readings.get(reading as usize)?.rules.get(k).copied();
            // The member of each due window's key, found once for all rules.
            members.clear();
            if let Some(r) = self.readings.get_mut(reading as usize) {
                members.extend(of_reading.iter().map(|d| match (pending.get(d.group), values.get(d.group)) {
                    (Some(group), Some(values)) => Some(r.members.find_or_add(&group.tenant, values, group.hash)),
                    _ => None,
                }));
            }
            let mut k = 0;
            while let Some(rule_id) = rule(self, k) {
                k += 1;
                // Every instance first, then every evaluation: the lookups
                // are independent, so their cache misses (the instances are
                // cold after a batch) overlap, where looking each up just
                // before evaluating it would wait on each in turn.
                // Evaluating creates or frees no instance, so this finds
                // and creates the same ones in the same order.
                slots.clear();
                // `None`: no such member (never so); `Some(None)`: capped.
                slots.extend(members.iter().map(|m| m.map(|m| self.instance(rule_id, m))));
                for ((d, merged), &slot) in of_reading.iter().zip(&mut merged).zip(&slots) {
                    let window = entries.get(d.from..d.to).unwrap_or_default();
                    match slot {
                        Some(Some(slot_id)) => self.evaluate(rule_id, slot_id, &staging, window, merged, out),
                        Some(None) => add(&mut self.stats.instances_capped, window.len() as u64),
                        None => {}
                    }
                }
            }
            // Keys whose every rule was capped got no instance.
            if let Some(r) = self.readings.get_mut(reading as usize) {
                for &m in members.iter().flatten() {
                    r.members.remove_if_empty(m);
                }
            }
        }
        staging.clear();
        self.staging = staging;
        self.seen.retain(|(_, _, end)| *end > watermark);
        for (group_id, staged) in carry {
            if let Some(group) = pending.get(group_id as usize) {
                let values: SmallVec<[Option<&Arc<str>>; 4]> = group.values.iter().map(Some).collect();
                let id = self.pending_group(group.reading, &group.tenant, &values, group.hash);
                self.stage(id, staged);
            }
        }
        // Timers an `on_timer` sets at this same time are taken by the
        // next turn of the loop.
        while let Some((t, mut due)) = self.timers.take_due(watermark) {
            for (rule, slot, generation) in due.drain(..) {
                self.on_timer(t, rule, slot, generation, out);
            }
            self.timers.recycle(due);
        }
        // Instances are independent, so the order they were visited in is
        // immaterial; the events go out in one canonical order. Keys taken
        // once and the events moved once: an advance where every instance
        // changes state emits thousands of events of some 150 bytes.
        if let Some(new) = out.get_mut(first..) {
            new.sort_by_cached_key(|e| (e.at, Arc::clone(&e.rule), e.fingerprint));
        }
        add(&mut self.stats.events, (out.len() - first) as u64);
        self.quantile_memo.clear();
        self.compact_timers();
    }

    /// Rebuilds the timers when cancelled ones (an instance whose deadline
    /// moved earlier leaves its old entry behind) outnumber the live ones,
    /// so flapping groups cannot grow them without bound.
    fn compact_timers(&mut self) {
        if self.timers.len <= 2 * self.stats.instances as usize + 1_024 {
            return;
        }
        self.timers.clear();
        for (rule_id, slot) in self.rules.iter().enumerate() {
            for (slot_id, inst) in slot.instances.iter().enumerate() {
                if let Some(inst) = inst
                    && let Some(t) = inst.deadline
                {
                    self.timers.set(t, (rule_id as u32, slot_id as u32, inst.generation));
                }
            }
        }
    }

    /// The pending and firing instances.
    pub fn alerts(&self) -> impl Iterator<Item = ActiveAlert> + '_ {
        self.rules.iter().flat_map(move |slot| {
            let members = self.readings.get(slot.reading as usize).map(|r| &r.members);
            slot.instances.iter().flatten().filter_map(move |inst| {
                let (state, since) = match inst.phase {
                    Phase::Inactive => return None,
                    Phase::Pending { since } => (AlertState::Pending, since),
                    Phase::Firing { since, .. } => (AlertState::Firing, since),
                };
                let key = members?.labels(inst.member)?;
                let labels = labels_of(&slot.rule, key);
                let annotations = annotations_of(&slot.rule, key, &labels, inst.value, inst.cluster());
                Some(ActiveAlert {
                    rule: Arc::clone(&slot.name),
                    tenant: Arc::clone(key.tenant),
                    labels,
                    state,
                    value: inst.value,
                    since,
                    fingerprint: fingerprint_of(&slot.rule, key),
                    annotations,
                })
            })
        })
    }

    /// Evaluates one window of an instance: `window` indexes its staged
    /// entries (all of one end, sorted by cell), `merged` caches their
    /// merged value for the other rules of the reading.
    fn evaluate(
        &mut self,
        rule_id: u32,
        slot_id: u32,
        staging: &[Staged],
        window: &[u32],
        merged: &mut Option<Option<f64>>,
        out: &mut Vec<AlertEvent>,
    ) {
        let Some((start, end)) = window.first().and_then(|&i| staging.get(i as usize)).map(|e| (e.start, e.end)) else {
            return;
        };
        let ttl = self.config.idle_ttl;
        let Some(slot) = self.rules.get_mut(rule_id as usize) else { return };
        let (rule, name) = (&*slot.rule, &slot.name);
        let Some(inst) = slot.instances.get_mut(slot_id as usize).and_then(Option::as_mut) else { return };
        let Some(key) = self.readings.get(slot.reading as usize).and_then(|r| r.members.labels(inst.member)) else {
            return;
        };
        if end <= inst.cursor {
            add(&mut self.stats.stale, window.len() as u64);
            return;
        }
        add(&mut self.stats.evaluated, window.len() as u64);
        // Silent for longer than the idle TTL: the instance had expired (as
        // the timer would have found), and this data starts it afresh.
        if let Some(expiry) = expired_by(inst, ttl, start) {
            process_gap(rule, name, key, inst, expiry, out);
            expire(rule, name, key, inst, expiry, out);
            *inst = Instance { deadline: inst.deadline, ..fresh_instance(rule, inst.member, inst.generation) };
            add(&mut self.stats.expired, 1);
        }
        let size = end.saturating_since(start);
        if size.is_positive() {
            inst.size = size;
        }
        // The gap before this window, as missing windows.
        process_gap(rule, name, key, inst, start, out);
        let memo = &mut self.quantile_memo;
        match judge_window(rule, inst, staging, window, merged, start, end, &self.config, &mut self.stats, memo) {
            Some((holds, recovered, value)) => {
                inst.value = value;
                step(rule, name, key, inst, start, end, holds, recovered, value, out);
                inst.cursor = end;
            }
            None => add(&mut self.stats.no_value, 1),
        }
        // A window without a usable value still shows the group is alive.
        inst.last_data = inst.last_data.max(end);
        arm(&mut self.timers, rule, inst, ttl, (rule_id, slot_id, inst.generation));
    }

    fn on_timer(&mut self, t: Timestamp, rule_id: u32, slot_id: u32, generation: u32, out: &mut Vec<AlertEvent>) {
        let Some(slot) = self.rules.get_mut(rule_id as usize) else { return };
        let Some(inst) = slot.instances.get_mut(slot_id as usize).and_then(Option::as_mut) else { return };
        if inst.generation != generation || inst.deadline != Some(t) {
            return;
        }
        let Some(key) = self.readings.get(slot.reading as usize).and_then(|r| r.members.labels(inst.member)) else {
            return;
        };
        inst.deadline = None;
        process_gap(&slot.rule, &slot.name, key, inst, t, out);
        if expired_by(inst, self.config.idle_ttl, t).is_some() {
            expire(&slot.rule, &slot.name, key, inst, t, out);
            add(&mut self.stats.expired, 1);
            // Results carried to a later `advance` start a fresh instance.
            self.remove(rule_id, slot_id);
            return;
        }
        arm(&mut self.timers, &slot.rule, inst, self.config.idle_ttl, (rule_id, slot_id, generation));
    }

    fn remove(&mut self, rule_id: u32, slot_id: u32) {
        let Some(slot) = self.rules.get_mut(rule_id as usize) else { return };
        let Some(inst) = slot.instances.get_mut(slot_id as usize).and_then(Option::take) else { return };
        if let Some(members) = self.readings.get_mut(slot.reading as usize).map(|r| &mut r.members) {
            if let Some(key) = members.labels(inst.member)
                && let Some(n) = self.per_tenant.get_mut(key.tenant)
            {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_tenant.remove(key.tenant);
                }
            }
            members.set_slot(inst.member, slot.position as usize, NONE);
        }
        slot.free.push(slot_id);
        slot.live = slot.live.saturating_sub(1);
        self.stats.instances = self.stats.instances.saturating_sub(1);
    }
}

/// Schedules the instance's next look: its next gap transition, or its
/// expiry. A look already scheduled earlier is kept (it finds nothing to
/// do and schedules again) unless it falls at or before the instance's
/// cursor: such a look could only schedule again (no gap ends by then, and
/// the expiry is at least a window past the last data), so it is replaced
/// now and its timer is skipped when it comes due. An instance fed every
/// window thus costs one timer per window, not also a look.
fn arm(timers: &mut Timers, rule: &Rule, inst: &mut Instance, ttl: Span, timer: Timer) {
    let next = match next_gap_change(rule, inst) {
        // The expiry is no earlier than `last_data + ttl`: no need to work
        // it out (a division) when the gap's change comes first.
        Some(change) if inst.last_data.saturating_add(ttl) >= change => Some(change),
        change => change.into_iter().chain(expiry_at(inst, ttl)).min(),
    };
    let Some(next) = next else { return };
    if inst.deadline.is_none_or(|scheduled| scheduled > next || scheduled <= inst.cursor) {
        inst.deadline = Some(next);
        timers.set(next, timer);
    }
}

/// A timer: the `(rule, slot, generation)` of the instance it looks at.
type Timer = (u32, u32, u32);

/// The instances' timers by deadline, live or cancelled (a cancelled one
/// is skipped when it comes due). Many instances share a deadline (window
/// ends), so taking every timer due at one time is one map operation; and
/// the instances of one `advance` mostly set the same next deadline one
/// after the other, so the latest deadline's timers gather apart, without
/// a search of the map each.
#[derive(Default)]
struct Timers {
    /// Every timer but those of `latest`.
    by_time: BTreeMap<Timestamp, Vec<Timer>>,
    /// The deadline last set and the timers set for it since it changed.
    latest: (Timestamp, Vec<Timer>),
    /// Timers, live or cancelled.
    len: usize,
}

impl Timers {
    fn set(&mut self, at: Timestamp, timer: Timer) {
        if at != self.latest.0 {
            self.settle();
            self.latest.0 = at;
        }
        self.latest.1.push(timer);
        self.len += 1;
    }

    /// Files the latest deadline's timers with the rest, after any set for
    /// that time before them.
    fn settle(&mut self) {
        if self.latest.1.is_empty() {
            return;
        }
        let (at, timers) = &mut self.latest;
        match self.by_time.entry(*at) {
            btree_map::Entry::Vacant(v) => {
                v.insert(core::mem::take(timers));
            }
            btree_map::Entry::Occupied(mut o) => o.get_mut().append(timers),
        }
    }

    fn first(&self) -> Option<Timestamp> {
        let latest = (!self.latest.1.is_empty()).then_some(self.latest.0);
        self.by_time.first_key_value().map(|(t, _)| *t).into_iter().chain(latest).min()
    }

    /// The earliest deadline at or before `watermark` with its timers, in
    /// the order they were set.
    fn take_due(&mut self, watermark: Timestamp) -> Option<(Timestamp, Vec<Timer>)> {
        self.settle();
        let entry = self.by_time.first_entry().filter(|e| *e.key() <= watermark)?;
        let (t, due) = entry.remove_entry();
        self.len = self.len.saturating_sub(due.len());
        Some((t, due))
    }

    /// Keeps the buffer of timers taken (and now emptied) for the next
    /// deadline's, when it holds more.
    fn recycle(&mut self, mut spent: Vec<Timer>) {
        if self.latest.1.is_empty() && spent.capacity() > self.latest.1.capacity() {
            spent.clear();
            self.latest.1 = spent;
        }
    }

    fn clear(&mut self) {
        self.by_time.clear();
        self.latest.1.clear();
        self.len = 0;
    }
}

/// Adds to a counter, saturating (counters may come from a snapshot).
fn add(counter: &mut u64, n: u64) {
    *counter = counter.saturating_add(n);
}

/// When an instance that has had no data since `last_data` expires: the
/// first window end at or after `last_data + ttl` on its grid, so where
/// the watermark happens to land does not change the outcome. `None` for
/// an instance that has not seen a window yet.
fn expiry_at(inst: &Instance, ttl: Span) -> Option<Timestamp> {
    if inst.last_data == Timestamp::MIN {
        return None;
    }
    let at = inst.last_data.saturating_add(ttl);
    Some(if inst.size.is_positive() { grid_end(inst.last_data, inst.size, at) } else { at })
}

/// The instance's expiry if it falls at or before `t`; worked out (a
/// division) only when it may: it is no earlier than `last_data + ttl`.
fn expired_by(inst: &Instance, ttl: Span, t: Timestamp) -> Option<Timestamp> {
    if inst.last_data.saturating_add(ttl) > t {
        return None;
    }
    expiry_at(inst, ttl).filter(|expiry| *expiry <= t)
}

/// Emits the end of an instance that has seen no data for the idle TTL.
fn expire(rule: &Rule, name: &Arc<str>, key: Labels<'_>, inst: &Instance, t: Timestamp, out: &mut Vec<AlertEvent>) {
    let (previous, since) = match inst.phase {
        Phase::Inactive => return,
        Phase::Pending { since } => (AlertState::Pending, since),
        Phase::Firing { since, .. } => (AlertState::Firing, since),
    };
    let state = if previous == AlertState::Firing { AlertState::Resolved } else { AlertState::Inactive };
    out.push(event(rule, name, key, inst, state, previous, None, t, since));
}

/// The history a rule's instances start with.
fn fresh_history(rule: &Rule) -> History {
    match &rule.condition {
        Condition::Threshold { expr, .. } => History::for_expr(Some(expr)),
        _ => History::None,
    }
}

/// The resolution of a firing instance whose rule went away in a restore.
fn dropped_event(name: &Arc<str>, by: &[String], inst: &SavedInstance, since: Timestamp) -> AlertEvent {
    let pairs = by.iter().map(String::as_str).zip(inst.values.iter().map(|v| &**v));
    let mut labels: Vec<(String, String)> = vec![("alertname".to_owned(), name.to_string())];
    labels.extend(pairs.clone().map(|(k, v)| (k.to_owned(), v.to_owned())));
    labels.sort();
    AlertEvent {
        rule: Arc::clone(name),
        tenant: Arc::clone(&inst.tenant),
        labels,
        state: AlertState::Resolved,
        previous: AlertState::Firing,
        severity: Severity::default(),
        value: None,
        at: inst.state.cursor,
        since,
        fingerprint: Fingerprint::of(name, &inst.tenant, pairs),
        cells: Vec::new(),
        annotations: Vec::new(),
    }
}

/// A new, inactive instance.
fn fresh_instance(rule: &Rule, member: u32, generation: u32) -> Instance {
    Instance {
        member,
        phase: Phase::Inactive,
        cursor: Timestamp::MIN,
        last_data: Timestamp::MIN,
        size: Span::ZERO,
        value: None,
        history: fresh_history(rule),
        geo: None,
        deadline: None,
        generation,
    }
}

/// (holds, recovered, value) of a threshold on `v`.
fn judge(compare: &Compare, recover: Option<&Compare>, v: Option<f64>) -> (bool, bool, Option<f64>) {
    match v {
        Some(v) => {
            let holds = compare.holds(v);
            let recovered = recover.map_or(!holds, |r| r.holds(v));
            (holds, recovered, Some(v))
        }
        // Not computable yet (warm-up, no earlier window): does not hold.
        None => (false, true, None),
    }
}

/// How a window without data counts: `Some(true)` as holding,
/// `Some(false)` as not holding, `None` as if it were not there.
fn gap_holds(rule: &Rule) -> Option<bool> {
    match (&rule.condition, rule.missing) {
        (Condition::Absent, _) => Some(true),
        (_, Missing::Ok) => Some(false),
        (_, Missing::Alerting) => Some(true),
        (_, Missing::Keep) => None,
    }
}

/// The first window end at or after `at` on the grid `cursor + k·size`, k ≥ 1.
#[inline]
fn grid_end(cursor: Timestamp, size: Span, at: Timestamp) -> Timestamp {
    let first = cursor.saturating_add(size);
    if at <= first {
        return first;
    }
    // `at` is after `cursor`, so the gap fits a u64 (no i128 division: this
    // runs for every instance at every window).
    let s = size.as_nanos().max(1).unsigned_abs();
    let gap = at.as_nanos().abs_diff(cursor.as_nanos());
    let step = gap.div_ceil(s).checked_mul(s);
    Timestamp::from_nanos(step.map_or(i64::MAX, |step| cursor.as_nanos().saturating_add_unsigned(step)))
}

/// The end of the next missing window after the instance's cursor at which
/// a gap would change its emitted state; `None` if a gap changes nothing.
#[inline]
fn next_gap_change(rule: &Rule, inst: &Instance) -> Option<Timestamp> {
    if inst.cursor == Timestamp::MIN || !inst.size.is_positive() {
        return None;
    }
    let holds = gap_holds(rule)?;
    let first = inst.cursor.saturating_add(inst.size);
    match (inst.phase, holds) {
        (Phase::Inactive, true) | (Phase::Pending { .. }, false) => Some(first),
        (Phase::Pending { since }, true) => Some(grid_end(inst.cursor, inst.size, since.saturating_add(rule.for_))),
        (Phase::Firing { recovering, .. }, false) => {
            let from = recovering.unwrap_or(inst.cursor);
            Some(grid_end(inst.cursor, inst.size, from.saturating_add(rule.keep_firing_for)))
        }
        (Phase::Inactive, false) | (Phase::Firing { .. }, true) => None,
    }
}

/// Processes the missing windows between the instance's cursor and `until`
/// (those ending at or before it). Usually there are none (a window follows
/// the last one): that is told here, inline, before the call that steps
/// through them.
#[inline]
fn process_gap(
    rule: &Rule,
    name: &Arc<str>,
    key: Labels<'_>,
    inst: &mut Instance,
    until: Timestamp,
    out: &mut Vec<AlertEvent>,
) {
    if inst.cursor.saturating_add(inst.size) <= until {
        step_through_gap(rule, name, key, inst, until, out);
    }
}

fn step_through_gap(
    rule: &Rule,
    name: &Arc<str>,
    key: Labels<'_>,
    inst: &mut Instance,
    until: Timestamp,
    out: &mut Vec<AlertEvent>,
) {
    if inst.cursor == Timestamp::MIN || !inst.size.is_positive() {
        return;
    }
    let Some(holds) = gap_holds(rule) else { return };
    loop {
        let (start, end) = (inst.cursor, inst.cursor.saturating_add(inst.size));
        if end > until || end <= start {
            break;
        }
        step(rule, name, key, inst, start, end, holds, !holds, None, out);
        inst.cursor = end;
        // The first missing window sets what the whole gap keeps (pending
        // since, recovering since); later ones matter only where a
        // duration runs out: jump there, or to the end of the gap.
        match next_gap_change(rule, inst) {
            // At the end of the time range a jump may not move forward: stop.
            Some(next) if next <= until && next.saturating_sub(inst.size) >= inst.cursor => {
                inst.cursor = next.saturating_sub(inst.size);
            }
            _ => {
                inst.cursor = grid_floor(inst.cursor, inst.size, until);
                break;
            }
        }
    }
}

/// The last window end at or before `at` on the grid `cursor + k·size`, k ≥ 0.
fn grid_floor(cursor: Timestamp, size: Span, at: Timestamp) -> Timestamp {
    if at <= cursor {
        return cursor;
    }
    let s = size.as_nanos().max(1).unsigned_abs();
    let gap = at.as_nanos().abs_diff(cursor.as_nanos());
    // At most `at`: no overflow.
    Timestamp::from_nanos(cursor.as_nanos().saturating_add_unsigned(gap / s * s))
}

/// (holds, recovered, value) of one window's staged entries (sorted by
/// cell), updating the instance's histories; `None` when the window has
/// no usable value. `merged` caches the entries' merged value (threshold
/// rules read it whole).
#[allow(clippy::too_many_arguments)]
fn judge_window(
    rule: &Rule,
    inst: &mut Instance,
    staging: &[Staged],
    window: &[u32],
    merged: &mut Option<Option<f64>>,
    start: Timestamp,
    end: Timestamp,
    limits: &EvalConfig,
    stats: &mut AlertStats,
    memo: &mut QuantileMemo,
) -> Option<(bool, bool, Option<f64>)> {
    match &rule.condition {
        Condition::Absent => Some((false, true, None)),
        Condition::Threshold { expr, compare } => {
            let x = match *merged {
                Some(x) => x,
                None => *merged.insert(merged_value(expr, staging, window, memo)),
            }?;
            let v = inst.history.eval(expr, start, end, x);
            Some(judge(compare, rule.recover.as_ref(), v))
        }
        Condition::GeoCluster { expr, compare, min_cells, .. } => {
            let mut hot: Vec<String> = Vec::new();
            let mut any = false;
            let mut rest = window;
            while let Some(cell) = rest.first().and_then(|&i| staging.get(i as usize)).and_then(|e| e.cell.clone()) {
                let n = rest
                    .iter()
                    .take_while(|&&i| staging.get(i as usize).is_some_and(|e| e.cell.as_ref() == Some(&cell)))
                    .count();
                let (same, tail) = rest.split_at(n.max(1));
                rest = tail;
                let Some(x) = merged_value(expr, staging, same, memo) else { continue };
                any = true;
                let v = if let Expr::Value(_) = expr {
                    Some(x)
                } else {
                    let geo = inst.geo.get_or_insert_with(Box::default);
                    if geo.cells.len() >= limits.max_cells_per_instance && !geo.cells.contains_key(&cell) {
                        geo.cells.retain(|_, (seen, _)| seen.saturating_add(limits.idle_ttl) > end);
                        if geo.cells.len() >= limits.max_cells_per_instance {
                            add(&mut stats.cells_capped, 1);
                            continue;
                        }
                    }
                    let (seen, history) =
                        geo.cells.entry(Arc::clone(&cell)).or_insert_with(|| (end, History::for_expr(Some(expr))));
                    *seen = end;
                    history.eval(expr, start, end, x)
                };
                if v.is_some_and(|v| compare.holds(v)) {
                    hot.push(cell.to_string());
                }
            }
            if !any {
                return None;
            }
            let clusters = geo_cluster::clusters(&hot, *min_cells as usize);
            let largest = clusters.iter().map(Vec::len).max().unwrap_or(0);
            let geo = inst.geo.get_or_insert_with(Box::default);
            geo.cluster = clusters.into_iter().flatten().collect();
            geo.cluster.sort_unstable();
            let holds = largest > 0;
            let recovered = rule.recover.as_ref().map_or(!holds, |r| r.holds(largest as f64));
            Some((holds, recovered, Some(largest as f64)))
        }
    }
}

/// The aggregate of the staged entries `parts`, merged. The entries are
/// shared by every rule of a reading, so they are read, not taken: one
/// part (the usual case: entries of a window and cell merge as they are
/// staged) is read in place, several are merged into a copy.
fn merged_value(expr: &Expr, staging: &[Staged], parts: &[u32], memo: &mut QuantileMemo) -> Option<f64> {
    let agg = expr.selector().agg;
    let mut accs = parts.iter().map(|&i| staging.get(i as usize).filter(|e| !e.unmergeable).map(|e| e.acc.as_ref()));
    let first = loop {
        match accs.next() {
            None => return None,
            Some(None) => return None, // unmergeable
            Some(Some(None)) => {}
            Some(Some(Some(acc))) => break acc,
        }
    };
    let mut merged: Option<Acc> = None;
    for acc in accs {
        if let Some(acc) = acc?
            && !merged.get_or_insert_with(|| first.clone()).merge(acc.clone())
        {
            return None;
        }
    }
    match &merged {
        // A copy only this rule reads, dropped on return.
        Some(copy) => copy.value(agg, None),
        None => first.value(agg, Some(memo)),
    }
}

/// One window of the state machine.
#[allow(clippy::too_many_arguments)]
fn step(
    rule: &Rule,
    name: &Arc<str>,
    key: Labels<'_>,
    inst: &mut Instance,
    start: Timestamp,
    end: Timestamp,
    holds: bool,
    recovered: bool,
    value: Option<f64>,
    out: &mut Vec<AlertEvent>,
) {
    match inst.phase {
        Phase::Inactive => {
            if holds {
                if end.saturating_since(start) >= rule.for_ {
                    inst.phase = Phase::Firing { since: start, recovering: None };
                    out.push(event(rule, name, key, inst, AlertState::Firing, AlertState::Inactive, value, end, start));
                } else {
                    inst.phase = Phase::Pending { since: start };
                    out.push(event(
                        rule,
                        name,
                        key,
                        inst,
                        AlertState::Pending,
                        AlertState::Inactive,
                        value,
                        end,
                        start,
                    ));
                }
            }
        }
        Phase::Pending { since } => {
            if !holds {
                inst.phase = Phase::Inactive;
                out.push(event(rule, name, key, inst, AlertState::Inactive, AlertState::Pending, value, end, since));
            } else if end.saturating_since(since) >= rule.for_ {
                inst.phase = Phase::Firing { since, recovering: None };
                out.push(event(rule, name, key, inst, AlertState::Firing, AlertState::Pending, value, end, since));
            }
        }
        Phase::Firing { since, recovering } => {
            if recovered && !holds {
                let from = recovering.unwrap_or(start);
                if end.saturating_since(from) >= rule.keep_firing_for {
                    inst.phase = Phase::Inactive;
                    out.push(event(rule, name, key, inst, AlertState::Resolved, AlertState::Firing, value, end, since));
                } else {
                    inst.phase = Phase::Firing { since, recovering: Some(from) };
                }
            } else {
                inst.phase = Phase::Firing { since, recovering: None };
            }
        }
    }
}

fn labels_of(rule: &Rule, key: Labels<'_>) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = Vec::with_capacity(1 + rule.labels.len() + rule.by.len());
    labels.push(("alertname".to_owned(), rule.name.clone()));
    for (k, v) in rule.by.iter().zip(key.values) {
        labels.push((k.clone(), v.to_string()));
    }
    for (k, v) in &rule.labels {
        match labels.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.clone(),
            None => labels.push((k.clone(), v.clone())),
        }
    }
    labels.sort();
    labels
}

fn fingerprint_of(rule: &Rule, key: Labels<'_>) -> Fingerprint {
    Fingerprint::of(&rule.name, key.tenant, rule.by.iter().map(String::as_str).zip(key.values.iter().map(|v| &**v)))
}

fn annotations_of(
    rule: &Rule,
    key: Labels<'_>,
    labels: &[(String, String)],
    value: Option<f64>,
    cells: &[String],
) -> Vec<(String, String)> {
    let ctx = Context { rule: &rule.name, tenant: key.tenant, severity: rule.severity.as_str(), value, labels, cells };
    rule.annotations.iter().map(|(k, t)| (k.clone(), template::render(t, &ctx))).collect()
}

#[allow(clippy::too_many_arguments)]
fn event(
    rule: &Rule,
    name: &Arc<str>,
    key: Labels<'_>,
    inst: &Instance,
    state: AlertState,
    previous: AlertState,
    value: Option<f64>,
    at: Timestamp,
    since: Timestamp,
) -> AlertEvent {
    let labels = labels_of(rule, key);
    let cells = if matches!(rule.condition, Condition::GeoCluster { .. }) && state != AlertState::Resolved {
        inst.cluster().to_vec()
    } else {
        Vec::new()
    };
    let annotations = annotations_of(rule, key, &labels, value, &cells);
    AlertEvent {
        rule: Arc::clone(name),
        tenant: Arc::clone(key.tenant),
        fingerprint: fingerprint_of(rule, key),
        labels,
        state,
        previous,
        severity: rule.severity,
        value,
        at,
        since,
        cells,
        annotations,
    }
}

/// The snapshot format version written by [`Evaluator::snapshot`].
const SNAPSHOT_VERSION: u32 = 2;

/// Why an alert snapshot could not be restored.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The bytes are not a snapshot (truncated, corrupted, or not one).
    #[error("not an alert snapshot: {0}")]
    Malformed(String),
    /// A snapshot from another version of the format.
    #[error("alert snapshot version {0} is not supported (this build reads versions 1 and 2)")]
    Version(u32),
    /// The snapshot's parts do not fit together.
    #[error("inconsistent alert snapshot: {0}")]
    Inconsistent(&'static str),
    /// The rules given to restore are invalid.
    #[error(transparent)]
    Rule(#[from] RuleError),
}

/// Version 2: staged entries per pending group.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    rules: Vec<RuleSnapshot>,
    /// The readings the pending groups of `buffer` belong to.
    readings: Vec<ReadingKey>,
    buffer: Vec<PendingSnapshot>,
    held: Vec<AlertEvent>,
    seen: Vec<(GroupKey, Timestamp, Timestamp)>,
    stats: AlertStats,
    next_generation: u32,
}

/// Version 1: staged entries per rule instance.
#[derive(Deserialize)]
struct SnapshotV1 {
    #[serde(rename = "version")]
    _version: u32,
    rules: Vec<RuleSnapshot>,
    buffer: Vec<Buffered>,
    held: Vec<AlertEvent>,
    seen: Vec<(GroupKey, Timestamp, Timestamp)>,
    stats: AlertStats,
    next_generation: u32,
}

/// A pending group in a snapshot: its reading (an index in the snapshot's
/// `readings`), its instance key and its entries in staging order.
#[derive(Serialize, Deserialize)]
struct PendingSnapshot {
    reading: u32,
    tenant: Arc<str>,
    values: Vec<Arc<str>>,
    staged: Vec<Staged>,
}

impl SnapshotV1 {
    /// The same state in version 2: each rule instance's entries become a
    /// pending group of the rule's reading (a restore keeps one group per
    /// reading and key, so the copies the other rules of a reading held
    /// drop out).
    fn upgrade(self) -> Snapshot {
        // The reading of each rule, from its text.
        let mut readings: Vec<ReadingKey> = Vec::new();
        let reading_of: Vec<Option<u32>> = self
            .rules
            .iter()
            .map(|r| {
                let key = ReadingKey::of(&Rule::parse(&r.name, &r.text).ok()?);
                let i = readings.iter().position(|k| *k == key).unwrap_or_else(|| {
                    readings.push(key);
                    readings.len() - 1
                });
                Some(i as u32)
            })
            .collect();
        let mut buffer: Vec<PendingSnapshot> = Vec::new();
        let mut last: Option<(u32, u32)> = None;
        for b in self.buffer {
            let inst =
                self.rules.get(b.rule as usize).and_then(|r| r.instances.get(b.slot as usize)).and_then(Option::as_ref);
            let Some(inst) = inst.filter(|i| i.state.generation == b.generation) else { continue };
            let Some(Some(reading)) = reading_of.get(b.rule as usize).copied() else { continue };
            // Entries were written instance by instance.
            match buffer.last_mut() {
                Some(group) if last == Some((b.rule, b.slot)) => group.staged.push(b.staged),
                _ => buffer.push(PendingSnapshot {
                    reading,
                    tenant: Arc::clone(&inst.tenant),
                    values: inst.values.to_vec(),
                    staged: vec![b.staged],
                }),
            }
            last = Some((b.rule, b.slot));
        }
        Snapshot {
            version: SNAPSHOT_VERSION,
            rules: self.rules,
            readings,
            buffer,
            held: self.held,
            seen: self.seen,
            stats: self.stats,
            next_generation: self.next_generation,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct RuleSnapshot {
    name: String,
    /// The rule's text form, to tell whether it changed.
    text: String,
    by: Vec<String>,
    instances: Vec<Option<SavedInstance>>,
}

impl Evaluator {
    /// The staged entries, pending group by pending group.
    fn staged_entries(&self) -> Vec<PendingSnapshot> {
        self.pending
            .iter()
            .map(|group| {
                let staged = entries_from(&self.staging, group.head).map(|(_, e)| e.clone()).collect();
                PendingSnapshot {
                    reading: group.reading,
                    tenant: Arc::clone(&group.tenant),
                    values: group.values.to_vec(),
                    staged,
                }
            })
            .collect()
    }

    /// Appends the whole state (every instance with its phase, timers and
    /// baselines, the buffered results, the counters) to `out` in a
    /// compact, versioned binary form, for [`Evaluator::restore`].
    pub fn snapshot(&self, out: &mut Vec<u8>) {
        let snap = Snapshot {
            version: SNAPSHOT_VERSION,
            rules: self
                .rules
                .iter()
                .map(|slot| {
                    let members = self.readings.get(slot.reading as usize).map(|r| &r.members);
                    let save = |inst: &Instance| Some(SavedInstance::of(inst, members?.labels(inst.member)?));
                    RuleSnapshot {
                        name: slot.rule.name.clone(),
                        text: slot.rule.to_string(),
                        by: slot.rule.by.clone(),
                        instances: slot.instances.iter().map(|i| i.as_ref().and_then(save)).collect(),
                    }
                })
                .collect(),
            readings: self.readings.iter().map(|r| r.key.clone()).collect(),
            buffer: self.staged_entries(),
            held: self.held.clone(),
            seen: self.seen.iter().map(|(g, start, end)| ((**g).clone(), *start, *end)).collect(),
            stats: self.stats.clone(),
            next_generation: self.next_generation,
        };
        // Serializing plain data into a Vec cannot fail.
        if let Ok(bytes) = postcard::to_allocvec(&snap) {
            out.extend_from_slice(&bytes);
        }
    }

    /// An evaluator of `rules` that continues from a snapshot: pending
    /// `for` timers, `keep_firing_for`, absence timers and baselines carry
    /// on as if there had been no restart. Rules are matched by name: the
    /// instances of a rule no longer given are dropped, and a rule whose
    /// definition changed keeps its instances' states but restarts their
    /// baselines (or drops them, if its `by` labels changed).
    pub fn restore(rules: Vec<Rule>, config: EvalConfig, bytes: &[u8]) -> Result<Evaluator, SnapshotError> {
        let version = postcard::take_from_bytes::<u32>(bytes).map_err(|e| SnapshotError::Malformed(e.to_string()))?.0;
        let malformed = |e: postcard::Error| SnapshotError::Malformed(e.to_string());
        let snap: Snapshot = match version {
            1 => postcard::from_bytes::<SnapshotV1>(bytes).map_err(malformed)?.upgrade(),
            SNAPSHOT_VERSION => postcard::from_bytes(bytes).map_err(malformed)?,
            _ => return Err(SnapshotError::Version(version)),
        };
        let mut ev = Evaluator::new(rules, config)?;
        ev.stats = snap.stats;
        ev.stats.instances = 0;
        ev.held = snap.held.into_iter().filter(|e| ev.rules.iter().any(|s| s.name == e.rule)).collect();
        ev.seen = snap.seen.into_iter().map(|(g, start, end)| (Arc::new(g), start, end)).collect();
        ev.next_generation = snap.next_generation;
        let mut restored = Vec::new();
        for saved in snap.rules {
            let position = ev.rules.iter().position(|s| s.rule.name == saved.name && s.rule.by == saved.by);
            let Some(new) = position else {
                // Its rule is gone (or groups differently now): the firing
                // alerts it held resolve at the next `advance`.
                let name: Arc<str> = Arc::from(saved.name.as_str());
                for inst in saved.instances.iter().flatten() {
                    if let Phase::Firing { since, .. } = inst.state.phase {
                        ev.held.push(dropped_event(&name, &saved.by, inst, since));
                    }
                }
                continue;
            };
            let Some(slot) = ev.rules.get_mut(new) else { continue };
            let changed = slot.rule.to_string() != saved.text;
            let fresh = fresh_history(&slot.rule);
            let Some(members) = ev.readings.get_mut(slot.reading as usize).map(|r| &mut r.members) else { continue };
            for (id, inst) in saved.instances.into_iter().enumerate() {
                let id = u32::try_from(id).map_err(|_| SnapshotError::Inconsistent("too many instances"))?;
                match inst {
                    Some(mut inst) => {
                        if inst.values.len() != slot.rule.by.len() {
                            return Err(SnapshotError::Inconsistent("an instance has the wrong number of labels"));
                        }
                        if changed {
                            inst.state.history = fresh.clone();
                            inst.state.geo = None;
                        }
                        // Timers are scheduled afresh: the rule may have changed.
                        inst.state.deadline = None;
                        let member = {
                            let values: SmallVec<[Option<&Arc<str>>; 4]> = inst.values.iter().map(Some).collect();
                            let hash = hash_key(&ev.hasher, &inst.tenant, inst.values.iter().map(|v| &**v));
                            members.find_or_add(&inst.tenant, &values, hash)
                        };
                        if members.slot(member, slot.position as usize) != NONE {
                            return Err(SnapshotError::Inconsistent("two instances of a rule have one key"));
                        }
                        members.set_slot(member, slot.position as usize, id);
                        restored.push((new as u32, id));
                        *ev.per_tenant.entry(Arc::clone(&inst.tenant)).or_insert(0) += 1;
                        slot.live += 1;
                        add(&mut ev.stats.instances, 1);
                        slot.instances.push(Some(Instance { member, ..inst.state }));
                    }
                    None => {
                        slot.instances.push(None);
                        slot.free.push(id);
                    }
                }
            }
        }
        // Staged entries go to the reading that reads alike now, if any: a
        // rule that changed what it reads does not take them, and a rule
        // added alike to others reads them as they would have.
        let reading_of: HashMap<&ReadingKey, u32> =
            ev.readings.iter().enumerate().map(|(i, r)| (&r.key, i as u32)).collect();
        let now: Vec<Option<u32>> = snap.readings.iter().map(|k| reading_of.get(k).copied()).collect();
        for group in snap.buffer {
            let Some(Some(reading)) = now.get(group.reading as usize).copied() else { continue };
            let Some(by) = ev.readings.get(reading as usize).map(|r| r.key.by.len()) else { continue };
            if by != group.values.len() {
                return Err(SnapshotError::Inconsistent("a staged result has the wrong number of labels"));
            }
            let values: SmallVec<[Option<&Arc<str>>; 4]> = group.values.iter().map(Some).collect();
            let hash = hash_key(&ev.hasher, &group.tenant, group.values.iter().map(|v| &**v));
            let known = ev.pending.len();
            let id = ev.pending_group(reading, &group.tenant, &values, hash);
            if (id as usize) < known {
                // A version-1 snapshot's copy of another rule of this reading.
                continue;
            }
            for staged in group.staged {
                ev.stage(id, staged);
            }
        }
        let ttl = ev.config.idle_ttl;
        for (rule_id, slot_id) in restored {
            if let Some(slot) = ev.rules.get_mut(rule_id as usize)
                && let Some(inst) = slot.instances.get_mut(slot_id as usize).and_then(Option::as_mut)
            {
                arm(&mut ev.timers, &slot.rule, inst, ttl, (rule_id, slot_id, inst.generation));
            }
        }
        Ok(ev)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use proptest::prelude::*;

    use std::collections::BTreeMap;

    use super::{Span, Timer, Timers, Timestamp, grid_end, grid_floor};

    /// The grid arithmetic in 128 bits, as it was written first.
    fn reference(cursor: i64, size: i64, at: i64) -> (i64, i64) {
        let s = i128::from(size.max(1));
        let (c, a) = (i128::from(cursor), i128::from(at));
        let first = i128::from(cursor.saturating_add(size));
        let end = if a <= first { first } else { c + (a - c + s - 1) / s * s };
        let floor = if a <= c { c } else { c + (a - c) / s * s };
        let clamp = |x: i128| i64::try_from(x).unwrap_or(i64::MAX);
        (clamp(end), clamp(floor))
    }

    fn check(cursor: i64, size: i64, at: i64) {
        let (c, s, a) = (Timestamp::from_nanos(cursor), Span::from_nanos(size), Timestamp::from_nanos(at));
        let (end, floor) = reference(cursor, size, at);
        assert_eq!(grid_end(c, s, a).as_nanos(), end, "grid_end({cursor}, {size}, {at})");
        assert_eq!(grid_floor(c, s, a).as_nanos(), floor, "grid_floor({cursor}, {size}, {at})");
    }

    #[test]
    fn grid_arithmetic_at_the_ends_of_time() {
        for (cursor, size, at) in [
            (i64::MIN + 1, 1, i64::MAX),
            (i64::MIN + 1, i64::MAX, i64::MAX),
            (i64::MIN + 1, 3, i64::MAX),
            (-7, 10, i64::MAX),
            (i64::MAX - 5, 10, i64::MAX),
            (0, 1_000_000_000, 2_500_000_000),
            (0, 1_000_000_000, 3_000_000_000),
            (-1_500, 1_000, -2_000),
        ] {
            check(cursor, size, at);
        }
    }

    proptest! {
        #[test]
        fn grid_arithmetic_agrees_with_128_bit_arithmetic(
            cursor in any::<i64>(),
            size in prop_oneof![1i64..1_000_000, 1i64..=i64::MAX],
            at in any::<i64>(),
        ) {
            check(cursor, size, at);
        }

        /// Timers come due as one map of deadlines to timers in the order
        /// set would give them, however the deadlines set interleave.
        #[test]
        fn timers_come_due_in_deadline_then_set_order(
            ops in proptest::collection::vec((0i64..6, any::<bool>()), 0..60),
        ) {
            let mut timers = Timers::default();
            let mut model: BTreeMap<i64, Vec<Timer>> = BTreeMap::new();
            for (i, (at, take)) in ops.into_iter().enumerate() {
                if take {
                    let watermark = Timestamp::from_nanos(at);
                    let due = timers.take_due(watermark);
                    let expected = model.first_key_value().filter(|(t, _)| **t <= at).map(|(t, _)| *t);
                    let expected = expected.and_then(|t| model.remove_entry(&t));
                    prop_assert_eq!(due.clone().map(|(t, d)| (t.as_nanos(), d)), expected);
                    if let Some((_, spent)) = due {
                        timers.recycle(spent);
                    }
                } else {
                    let timer = (i as u32, 0, 0);
                    timers.set(Timestamp::from_nanos(at), timer);
                    model.entry(at).or_default().push(timer);
                }
                prop_assert_eq!(timers.first().map(Timestamp::as_nanos), model.first_key_value().map(|(t, _)| *t));
                prop_assert_eq!(timers.len, model.values().map(Vec::len).sum::<usize>());
            }
        }
    }
}

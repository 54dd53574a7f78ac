//! Rollups: coarser tiers (1 min, 1 h, 1 day) built by merging finished
//! base windows, each kept for its retention, and range queries over them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::agg::{Quantiles, Scalar};
use super::{GroupKey, WindowResult};
use crate::time::{Span, Timestamp};

/// One tier: windows of `size`, kept for `retention` behind the latest
/// window end seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierSpec {
    /// Window size of the tier.
    pub size: Span,
    /// How long its windows are kept.
    pub retention: Span,
}

/// The tiers of a [`Rollup`], finest first. The first is the base: the
/// size of the [`Windows`](super::Windows) whose results are pushed. Each
/// size is a multiple of the one before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RollupSpec {
    /// The tiers, finest first.
    pub tiers: Vec<TierSpec>,
    /// Shift of every tier's boundaries from the epoch, as
    /// [`WindowSpec::offset`](super::WindowSpec::offset): `-3h` makes days
    /// start at 21:00 UTC (midnight in UTC+3).
    #[serde(default)]
    pub offset: Span,
}

impl RollupSpec {
    /// These tiers, boundaries aligned to the epoch.
    pub fn new(tiers: Vec<TierSpec>) -> Self {
        RollupSpec { tiers, offset: Span::ZERO }
    }

    /// Shifts every tier's boundaries by `offset`.
    pub fn with_offset(mut self, offset: Span) -> Self {
        self.offset = offset;
        self
    }
}

impl Default for RollupSpec {
    /// 1 s for 15 min, 1 min for 48 h, 1 h for 90 days, 1 day for 3 years.
    fn default() -> Self {
        let tier = |size, retention| TierSpec { size, retention };
        RollupSpec::new(vec![
            tier(Span::from_secs(1), Span::from_mins(15)),
            tier(Span::from_mins(1), Span::from_hours(48)),
            tier(Span::from_hours(1), Span::from_days(90)),
            tier(Span::from_days(1), Span::from_days(3 * 365)),
        ])
    }
}

/// Why a [`RollupSpec`] or a [`Query`] cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RollupError {
    /// No tiers, a size or retention that is not positive, or a size that
    /// is not a multiple of the previous tier's.
    #[error("invalid rollup tiers: {0}")]
    Tiers(&'static str),
    /// The query asks for a resolution no tier has.
    #[error("no tier has resolution {0}")]
    Resolution(Span),
    /// `from` is after `to`.
    #[error("`from` is after `to`")]
    Range,
}

/// A group's labels, `(key, value)`.
type Labels = Vec<(Arc<str>, Arc<str>)>;

/// A query's output group: labels after re-grouping, and whether it is an
/// overflow group.
type OutGroup = (Labels, bool);

/// A group: tenant, stream and labels.
type Key = Arc<GroupKey>;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Agg {
    revision: u32,
    events: u64,
    count: f64,
    fields: Vec<(Arc<str>, Scalar, Option<Quantiles>)>,
}

impl Agg {
    fn from_result(r: &WindowResult) -> Self {
        Agg {
            revision: r.revision,
            events: r.events,
            count: r.count,
            fields: r.fields.iter().map(|f| (f.field.clone(), f.scalar, f.sketch.as_deref().cloned())).collect(),
        }
    }

    fn empty_like(other: &Agg) -> Self {
        Agg {
            revision: 0,
            events: 0,
            count: 0.0,
            fields: other
                .fields
                .iter()
                .map(|(name, _, q)| (name.clone(), Scalar::new(), q.as_ref().map(|q| Quantiles::new(q.config()))))
                .collect(),
        }
    }

    /// Merges field by field, matched by name: results from operators
    /// whose specs list the fields in another order (or only some of
    /// them) still merge correctly.
    ///
    /// A field keeps a quantile sketch only while every part merged into
    /// it had one: a sketch covering some parts only would disagree with
    /// the counts.
    fn merge(&mut self, other: &Agg) {
        self.events = self.events.saturating_add(other.events);
        self.count += other.count;
        for (name, os, oq) in &other.fields {
            match self.fields.iter_mut().find(|(n, _, _)| n == name) {
                Some((_, s, q)) => {
                    s.merge(os);
                    match (q.as_mut(), oq) {
                        (Some(q), Some(oq)) => q.merge(oq),
                        (Some(_), None) => *q = None,
                        _ => {}
                    }
                }
                None => self.fields.push((name.clone(), *os, oq.clone())),
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Tier {
    spec: TierSpec,
    /// Per group, its windows by start: a correction or a query reads one
    /// group's range without scanning the others.
    series: BTreeMap<Key, BTreeMap<Timestamp, Agg>>,
    /// Window start → the groups with a window there, for expiry in time
    /// order.
    by_start: BTreeMap<Timestamp, Vec<Key>>,
    /// Windows held.
    len: usize,
    /// End of the latest window dropped past its retention: a coarser
    /// window starting before it can no longer be rebuilt from this tier.
    expired_until: Option<Timestamp>,
}

impl Tier {
    fn new(spec: TierSpec) -> Self {
        Tier { spec, series: BTreeMap::new(), by_start: BTreeMap::new(), len: 0, expired_until: None }
    }

    fn get_mut(&mut self, start: Timestamp, key: &Key) -> Option<&mut Agg> {
        self.series.get_mut(key)?.get_mut(&start)
    }

    /// The window of `key` at `start`, created by `init` if absent.
    fn entry(&mut self, start: Timestamp, key: &Key, init: impl FnOnce() -> Agg) -> &mut Agg {
        let windows = self.series.entry(key.clone()).or_default();
        let by_start = &mut self.by_start;
        let len = &mut self.len;
        windows.entry(start).or_insert_with(|| {
            by_start.entry(start).or_default().push(key.clone());
            *len += 1;
            init()
        })
    }

    /// Drops the windows that ended `retention` or more before `latest`;
    /// returns how many.
    fn expire(&mut self, latest: Timestamp) -> u64 {
        let mut dropped = 0;
        while let Some(entry) = self.by_start.first_entry() {
            let start = *entry.key();
            if start.saturating_add(self.spec.size).saturating_add(self.spec.retention) > latest {
                break;
            }
            let end = start.saturating_add(self.spec.size);
            self.expired_until = Some(self.expired_until.map_or(end, |e| e.max(end)));
            for key in entry.remove() {
                if let Some(windows) = self.series.get_mut(&key) {
                    dropped += u64::from(windows.remove(&start).is_some());
                    if windows.is_empty() {
                        self.series.remove(&key);
                    }
                }
            }
        }
        self.len = self.len.saturating_sub(dropped as usize);
        dropped
    }
}

/// Counters of a [`Rollup`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RollupStats {
    /// Final results merged.
    pub results: u64,
    /// Corrections applied (the tiers above were rebuilt from the tier
    /// below).
    pub corrections: u64,
    /// Results ignored: partial (not final), of another window size, or
    /// older than the base tier's retention.
    pub ignored: u64,
    /// Tier windows dropped past their retention.
    pub expired: u64,
    /// Corrections that could not reach a coarser tier because the finer
    /// tier had already dropped part of that coarser window.
    pub corrections_not_propagated: u64,
}

/// Tiers of aggregates built from final window results, with retention,
/// answering range queries at any tier's resolution.
///
/// ```
/// use edgestream::event::{Event, EventBatch};
/// use edgestream::time::{Span, Timestamp};
/// use edgestream::window::{FieldSpec, Query, Rollup, RollupSpec, WindowSpec, Windows};
///
/// let mut windows = Windows::new(WindowSpec::new(Span::from_secs(1)).field(FieldSpec::new("temp")).idle_timeout(None))?;
/// let mut rollup = Rollup::new(RollupSpec::default())?;
/// let t0 = Timestamp::from_secs(1_795_838_400).unwrap();
/// let mut batch = EventBatch::new();
/// for s in 0..120 {
///     batch.push(&Event::new("acme", "metrics", t0.saturating_add(Span::from_secs(s))).with_field("temp", s as f64));
/// }
/// windows.push(&batch, t0, &mut Vec::new());
/// windows.advance(t0);
/// while let Some(result) = windows.poll_result() {
///     rollup.push(&result);
/// }
/// let mut query = Query::new("acme", "metrics", t0, t0.saturating_add(Span::from_mins(2)));
/// query.resolution = Some(Span::from_mins(1));
/// let answer = rollup.query(&query)?;
/// let first_minute = &answer.series[0].points[0];
/// assert_eq!((first_minute.count, first_minute.max), (60.0, Some(59.0)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// It serializes (with serde) as its whole state, for snapshots.
#[derive(Serialize, Deserialize)]
pub struct Rollup {
    tiers: Vec<Tier>,
    offset: Span,
    latest_end: Option<Timestamp>,
    stats: RollupStats,
}

impl core::fmt::Debug for Rollup {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Rollup")
            .field("tiers", &self.tiers.iter().map(|t| (t.spec, t.len)).collect::<Vec<_>>())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Rollup {
    /// A rollup with these tiers.
    pub fn new(spec: RollupSpec) -> Result<Self, RollupError> {
        let first = spec.tiers.first().ok_or(RollupError::Tiers("no tiers"))?;
        if !first.size.is_positive() {
            return Err(RollupError::Tiers("sizes must be positive"));
        }
        for pair in spec.tiers.windows(2) {
            let [a, b] = pair else { continue };
            if !b.size.is_positive() || b.size.as_nanos() % a.size.as_nanos() != 0 || b.size <= a.size {
                return Err(RollupError::Tiers("each size must be a larger multiple of the previous one"));
            }
        }
        if spec.tiers.iter().any(|t| !t.retention.is_positive()) {
            return Err(RollupError::Tiers("retentions must be positive"));
        }
        if spec.tiers.windows(2).any(|p| matches!(p, [a, b] if a.retention < b.size)) {
            return Err(RollupError::Tiers("each tier must be retained at least as long as the next tier's size"));
        }
        Ok(Rollup {
            offset: spec.offset,
            tiers: spec.tiers.into_iter().map(Tier::new).collect(),
            latest_end: None,
            stats: RollupStats::default(),
        })
    }

    /// The tiers and offset it was built with.
    pub fn spec(&self) -> RollupSpec {
        RollupSpec { tiers: self.tiers.iter().map(|t| t.spec).collect(), offset: self.offset }
    }

    /// Counters.
    pub fn stats(&self) -> &RollupStats {
        &self.stats
    }

    /// Windows held in each tier, finest first.
    pub fn len_per_tier(&self) -> Vec<usize> {
        self.tiers.iter().map(|t| t.len).collect()
    }

    /// Merges a final result of the base window size into every tier; a
    /// correction (a higher revision of a window already pushed) replaces
    /// it and rebuilds the tiers above from the tier below. Partial results
    /// are ignored. Then drops windows past their tier's retention.
    pub fn push(&mut self, result: &WindowResult) {
        let Some(base) = self.tiers.first() else { return };
        let base_size = base.spec.size;
        if !result.is_final || result.end.saturating_since(result.start) != base_size {
            self.stats.ignored = self.stats.ignored.saturating_add(1);
            return;
        }
        if let Some(latest) = self.latest_end
            && result.end.saturating_add(base.spec.retention) <= latest
        {
            self.stats.ignored = self.stats.ignored.saturating_add(1);
            return;
        }
        let key: Key = result.group.clone();
        let agg = Agg::from_result(result);
        let Some(tier0) = self.tiers.first_mut() else { return };
        match tier0.get_mut(result.start, &key) {
            Some(existing) if existing.revision >= agg.revision => {
                self.stats.ignored = self.stats.ignored.saturating_add(1);
                return;
            }
            Some(existing) => {
                *existing = agg;
                self.stats.corrections = self.stats.corrections.saturating_add(1);
                self.rebuild_above(result.start, &key);
            }
            None => {
                for tier in self.tiers.iter_mut().skip(1) {
                    let Some(start) = floor(result.start, tier.spec.size, self.offset) else { continue };
                    tier.entry(start, &key, || Agg::empty_like(&agg)).merge(&agg);
                }
                if let Some(tier0) = self.tiers.first_mut() {
                    tier0.entry(result.start, &key, || agg);
                }
            }
        }
        self.stats.results = self.stats.results.saturating_add(1);
        self.latest_end = Some(self.latest_end.map_or(result.end, |l| l.max(result.end)));
        self.expire();
    }

    /// Recomputes, tier by tier, the windows containing `start` for `key`
    /// from the tier below.
    fn rebuild_above(&mut self, start: Timestamp, key: &Key) {
        let offset = self.offset;
        for i in 1..self.tiers.len() {
            let (below, above) = self.tiers.split_at_mut(i);
            let (Some(lower), Some(upper)) = (below.last(), above.first_mut()) else { continue };
            let Some(bucket) = floor(start, upper.spec.size, offset) else { continue };
            let end = bucket.saturating_add(upper.spec.size);
            // Rebuilding from a partly expired finer tier would lose data:
            // leave this tier (and those above) as they are, and say so.
            if lower.expired_until.is_some_and(|e| e > bucket) {
                self.stats.corrections_not_propagated = self.stats.corrections_not_propagated.saturating_add(1);
                return;
            }
            let mut merged: Option<Agg> = None;
            for agg in lower.series.get(key).into_iter().flat_map(|w| w.range(bucket..end)).map(|(_, agg)| agg) {
                merged.get_or_insert_with(|| Agg::empty_like(agg)).merge(agg);
            }
            if let Some(merged) = merged {
                let empty = Agg::empty_like(&merged);
                *upper.entry(bucket, key, || empty) = merged;
            }
        }
    }

    fn expire(&mut self) {
        let Some(latest) = self.latest_end else { return };
        for tier in &mut self.tiers {
            self.stats.expired = self.stats.expired.saturating_add(tier.expire(latest));
        }
    }

    /// Answers a range query: one series per group (after re-grouping by
    /// [`Query::group_by`]) and field, with a point per tier window that
    /// starts in `from..to` and has data.
    pub fn query(&self, q: &Query) -> Result<QueryResult, RollupError> {
        if q.from > q.to {
            return Err(RollupError::Range);
        }
        let tier = match q.resolution {
            Some(r) => self.tiers.iter().find(|t| t.spec.size == r).ok_or(RollupError::Resolution(r))?,
            // The finest tier that still holds `from`.
            None => {
                let latest = self.latest_end.unwrap_or(q.from);
                self.tiers
                    .iter()
                    .find(|t| q.from.saturating_add(t.spec.retention) >= latest)
                    .or(self.tiers.last())
                    .ok_or(RollupError::Tiers("no tiers"))?
            }
        };
        let from = floor(q.from, tier.spec.size, self.offset).unwrap_or(q.from);
        // (labels, start) → merged aggregates, in label then time order.
        let mut merged: BTreeMap<(OutGroup, Timestamp), Agg> = BTreeMap::new();
        // The tenant's and stream's groups are adjacent in key order.
        let first = Arc::new(GroupKey {
            tenant: Arc::from(q.tenant.as_str()),
            stream: Arc::from(q.stream.as_str()),
            labels: Box::default(),
            overflow: false,
        });
        for (key, windows) in tier.series.range(first..) {
            if *key.tenant != *q.tenant || *key.stream != *q.stream {
                break;
            }
            let labels = &key.labels;
            let matches = q.filters.iter().all(|(k, v)| labels.iter().any(|(lk, lv)| **lk == **k && **lv == **v));
            if !matches {
                continue;
            }
            let kept: Labels = match &q.group_by {
                Some(keys) => labels.iter().filter(|(k, _)| keys.iter().any(|g| **g == **k)).cloned().collect(),
                None => labels.to_vec(),
            };
            for (start, agg) in windows.range(from..q.to.max(from)) {
                merged.entry(((kept.clone(), key.overflow), *start)).or_insert_with(|| Agg::empty_like(agg)).merge(agg);
            }
        }
        let mut series: BTreeMap<(OutGroup, Arc<str>), Vec<Point>> = BTreeMap::new();
        for ((labels, start), agg) in merged {
            for (name, scalar, sketch) in &agg.fields {
                if !q.fields.is_empty() && !q.fields.iter().any(|f| **f == **name) {
                    continue;
                }
                let quantiles = match sketch {
                    Some(s) => q.quantiles.iter().filter_map(|&p| s.quantile(p).map(|v| (p, v))).collect(),
                    None => Vec::new(),
                };
                series.entry((labels.clone(), name.clone())).or_default().push(Point {
                    start,
                    events: agg.events,
                    count: scalar.count(),
                    sum: scalar.sum(),
                    min: scalar.min(),
                    max: scalar.max(),
                    mean: scalar.mean(),
                    last: scalar.last().map(|(_, v)| v),
                    quantiles,
                });
            }
        }
        Ok(QueryResult {
            resolution: tier.spec.size,
            series: series
                .into_iter()
                .map(|(((labels, overflow), field), points)| Series {
                    labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    overflow,
                    field: field.to_string(),
                    points,
                })
                .collect(),
        })
    }
}

fn floor(ts: Timestamp, size: Span, offset: Span) -> Option<Timestamp> {
    crate::time::Tumbling::with_offset(size, offset).ok()?.start(ts)
}

/// A range query over a [`Rollup`], the shape of
/// `GET /api/metrics?from=&to=&agg=minute&stream=&group_by=`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Query {
    /// Tenant.
    pub tenant: String,
    /// Stream.
    pub stream: String,
    /// Start of the range (inclusive; rounded down to the resolution).
    pub from: Timestamp,
    /// End of the range (exclusive).
    pub to: Timestamp,
    /// A tier's window size, or `None` for the finest tier that still holds
    /// `from`.
    #[serde(default)]
    pub resolution: Option<Span>,
    /// Only groups with these label values.
    #[serde(default)]
    pub filters: Vec<(String, String)>,
    /// Re-group by this subset of the labels (merging the groups that share
    /// it); `None` keeps every label.
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    /// Only these fields; empty for all.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Quantiles to compute from the sketches of fields that have them.
    #[serde(default)]
    pub quantiles: Vec<f64>,
}

impl Query {
    /// Every group and field of `tenant`/`stream` in `from..to`, at the
    /// finest resolution that covers it.
    pub fn new(tenant: impl Into<String>, stream: impl Into<String>, from: Timestamp, to: Timestamp) -> Self {
        Query {
            tenant: tenant.into(),
            stream: stream.into(),
            from,
            to,
            resolution: None,
            filters: Vec::new(),
            group_by: None,
            fields: Vec::new(),
            quantiles: Vec::new(),
        }
    }
}

/// The answer to a [`Query`], ready to serialize as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryResult {
    /// The tier's window size the points have.
    pub resolution: Span,
    /// One series per group and field.
    pub series: Vec<Series>,
}

/// The points of one field for one group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The group's labels (after re-grouping).
    pub labels: Vec<(String, String)>,
    /// Whether this is the tenant's overflow group (whose labels all read
    /// `__overflow__`), never merged with a real group of those labels.
    #[serde(default)]
    pub overflow: bool,
    /// The field.
    pub field: String,
    /// Points in time order.
    pub points: Vec<Point>,
}

/// The aggregates of one tier window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Window start.
    pub start: Timestamp,
    /// Events in the window (of any field).
    pub events: u64,
    /// Weighted count of the field's values.
    pub count: f64,
    /// Weighted sum, if the field keeps it ([`FieldSpec::aggregates`](super::FieldSpec::aggregates)).
    pub sum: Option<f64>,
    /// Minimum, if kept and any value.
    pub min: Option<f64>,
    /// Maximum, if kept and any value.
    pub max: Option<f64>,
    /// Weighted mean, if kept and any value.
    pub mean: Option<f64>,
    /// Value with the latest event time, if kept and any value.
    pub last: Option<f64>,
    /// The requested quantiles, `(q, value)`.
    pub quantiles: Vec<(f64, f64)>,
}

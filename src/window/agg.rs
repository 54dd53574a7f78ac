//! Mergeable aggregate states: what a window keeps per (group, field).
//!
//! Every state here has `record` (one value, with its sample weight and event
//! time) and `merge` (fold in the state of another part of the input). Merging
//! the states of any partition of the input gives the state of the whole
//! input, so several Durable Objects or threads can pre-aggregate and one of
//! them merges:
//!
//! - [`Scalar`]: weighted count, sum, min, max, mean and last value by event
//!   time (or the subset of them an [`Aggregates`] set names). Count, min,
//!   max and last are exact under any partition and order. The sum is exact
//!   whenever the partial sums are representable (integers below 2^53,
//!   values with few binary digits); otherwise it is compensated (the exact
//!   rounding error of each addition is kept apart), so its error stays
//!   near one rounding of the result rather than growing with the number
//!   of values.
//! - [`Quantiles`]: a two-sided HDR histogram (negative and positive values)
//!   answering any quantile within a configured number of significant digits.
//!
//! ```
//! use edgestream::time::Timestamp;
//! use edgestream::window::agg::Scalar;
//!
//! let t = Timestamp::from_secs;
//! let (mut a, mut b) = (Scalar::new(), Scalar::new());
//! a.record(21.5, 1.0, t(1).unwrap());
//! b.record(23.5, 1.0, t(3).unwrap());
//! b.record(19.0, 2.0, t(2).unwrap()); // a sampled event standing for two
//! a.merge(&b);
//! assert_eq!((a.count(), a.sum(), a.min(), a.max()), (4.0, Some(83.0), Some(19.0), Some(23.5)));
//! assert_eq!(a.last(), Some((t(3).unwrap(), 23.5)));
//! ```

use core::cmp::Ordering;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::time::Timestamp;

/// A set of the scalar aggregates of one field: which ones a window keeps
/// (see [`FieldSpec::aggregates`](super::FieldSpec::aggregates)) and which
/// ones a [`Scalar`] answers.
///
/// The count is always kept, so every set holds it: it costs one number,
/// every other aggregate needs it to tell an empty state, and the mean
/// divides by it. Sum and mean share their state, so keeping either costs
/// the same.
///
/// In human-readable formats (JSON, YAML, TOML) a set is a list of names,
/// `["count", "sum", "min", "max", "mean", "last"]`; in binary ones a byte.
///
/// ```
/// use edgestream::window::agg::Aggregates;
///
/// let set = Aggregates::SUM | Aggregates::MAX;
/// assert!(set.contains(Aggregates::COUNT), "the count is always in");
/// assert!(!set.contains(Aggregates::LAST));
/// let parsed: Aggregates = serde_json::from_str(r#"["max", "sum"]"#)?;
/// assert_eq!(parsed, set);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aggregates(u8);

impl Aggregates {
    /// The bit of the count, in every set.
    const COUNT_BIT: u8 = 1;
    /// The weighted count (alone).
    pub const COUNT: Aggregates = Aggregates(Self::COUNT_BIT);
    /// The weighted sum (and the count).
    pub const SUM: Aggregates = Aggregates(Self::COUNT_BIT | 1 << 1);
    /// The smallest value (and the count).
    pub const MIN: Aggregates = Aggregates(Self::COUNT_BIT | 1 << 2);
    /// The largest value (and the count).
    pub const MAX: Aggregates = Aggregates(Self::COUNT_BIT | 1 << 3);
    /// The weighted mean (and the count).
    pub const MEAN: Aggregates = Aggregates(Self::COUNT_BIT | 1 << 4);
    /// The value with the latest event time (and the count).
    pub const LAST: Aggregates = Aggregates(Self::COUNT_BIT | 1 << 5);
    /// Every scalar aggregate (the default).
    pub const ALL: Aggregates = Aggregates((1 << 6) - 1);

    /// The names, in bit order, as they read in configs.
    const NAMES: [(&'static str, Aggregates); 6] = [
        ("count", Aggregates::COUNT),
        ("sum", Aggregates::SUM),
        ("min", Aggregates::MIN),
        ("max", Aggregates::MAX),
        ("mean", Aggregates::MEAN),
        ("last", Aggregates::LAST),
    ];

    /// Whether every aggregate of `other` is in `self`.
    pub const fn contains(self, other: Aggregates) -> bool {
        self.0 & other.0 == other.0
    }

    /// The aggregates in both.
    pub const fn intersection(self, other: Aggregates) -> Aggregates {
        Aggregates(self.0 & other.0)
    }

    /// Whether the sum (and so the mean) needs keeping.
    pub(crate) const fn sums(self) -> bool {
        self.contains(Aggregates::SUM) || self.contains(Aggregates::MEAN)
    }

    /// The names of the aggregates in the set, in the order count, sum,
    /// min, max, mean, last.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Aggregates::NAMES.into_iter().filter(move |&(_, a)| self.contains(a)).map(|(n, _)| n)
    }

    /// The aggregate called `name`, if any.
    pub fn from_name(name: &str) -> Option<Aggregates> {
        Aggregates::NAMES.iter().find(|(n, _)| *n == name).map(|&(_, a)| a)
    }
}

impl core::ops::BitOr for Aggregates {
    type Output = Aggregates;

    /// The union.
    fn bitor(self, other: Aggregates) -> Aggregates {
        Aggregates(self.0 | other.0)
    }
}

impl Default for Aggregates {
    fn default() -> Self {
        Aggregates::ALL
    }
}

impl core::fmt::Debug for Aggregates {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Serialize for Aggregates {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.collect_seq(self.names()) } else { s.serialize_u8(self.0) }
    }
}

impl<'de> Deserialize<'de> for Aggregates {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        if d.is_human_readable() {
            let names = Vec::<std::borrow::Cow<'de, str>>::deserialize(d)?;
            names.iter().try_fold(Aggregates::COUNT, |set, name| {
                Aggregates::from_name(name)
                    .map(|a| set | a)
                    .ok_or_else(|| D::Error::unknown_variant(name, &["count", "sum", "min", "max", "mean", "last"]))
            })
        } else {
            let bits = u8::deserialize(d)?;
            if bits & !Aggregates::ALL.0 != 0 {
                return Err(D::Error::custom(format!("aggregate set {bits:#x} has unknown bits")));
            }
            Ok(Aggregates(bits | Aggregates::COUNT_BIT))
        }
    }
}

/// Count, sum, min, max, mean and last value of one field, weighted by the
/// events' sample weights; see the [module docs](self) for what is exact.
/// A state may keep only some of them ([`Scalar::kept`]): the others read
/// as `None`. Serializes with `min`, `max` and `last` absent when empty, so
/// JSON (which has no infinities) round-trips it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(into = "ScalarRepr", from = "ScalarRepr")]
pub struct Scalar {
    /// Σ weight (positive for every recorded value, so zero means empty).
    count: f64,
    /// Σ weight·value, with `sum_err` its running compensation.
    sum: f64,
    sum_err: f64,
    min: f64,
    max: f64,
    last: f64,
    last_ts: Timestamp,
    /// The aggregates it answers.
    kept: Aggregates,
}

/// The serialized form of a [`Scalar`]: only what it answers, so that two
/// states giving the same answers serialize (and compare) alike.
#[derive(Clone, Copy, PartialEq, Serialize, Deserialize)]
struct ScalarRepr {
    count: f64,
    sum: f64,
    sum_err: f64,
    min: Option<f64>,
    max: Option<f64>,
    last: Option<(Timestamp, f64)>,
    #[serde(default)]
    kept: Aggregates,
}

impl From<Scalar> for ScalarRepr {
    fn from(s: Scalar) -> Self {
        let (sum, sum_err) = if s.kept.sums() { (s.sum, s.sum_err) } else { (0.0, 0.0) };
        ScalarRepr { count: s.count, sum, sum_err, min: s.min(), max: s.max(), last: s.last(), kept: s.kept }
    }
}

/// Equal when they answer the same aggregates alike (what a state does not
/// keep does not count).
impl PartialEq for Scalar {
    fn eq(&self, other: &Scalar) -> bool {
        ScalarRepr::from(*self) == ScalarRepr::from(*other)
    }
}

impl From<ScalarRepr> for Scalar {
    fn from(r: ScalarRepr) -> Self {
        let empty = Scalar::new();
        let (last_ts, last) = r.last.unwrap_or((empty.last_ts, empty.last));
        Scalar {
            count: r.count,
            sum: r.sum,
            sum_err: r.sum_err,
            min: r.min.unwrap_or(empty.min),
            max: r.max.unwrap_or(empty.max),
            last,
            last_ts,
            kept: r.kept,
        }
    }
}

impl Default for Scalar {
    fn default() -> Self {
        Scalar::new()
    }
}

impl Scalar {
    /// An empty state keeping every aggregate.
    pub const fn new() -> Self {
        Scalar::keeping(Aggregates::ALL)
    }

    /// An empty state answering only the aggregates in `kept` (and the
    /// count, always).
    pub const fn keeping(kept: Aggregates) -> Self {
        Scalar {
            count: 0.0,
            sum: 0.0,
            sum_err: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last: f64::NEG_INFINITY,
            last_ts: Timestamp::MIN,
            kept,
        }
    }

    /// A state from its parts, as [`Windows`](super::Windows) keeps them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) const fn from_parts(
        kept: Aggregates,
        count: f64,
        (sum, sum_err): (f64, f64),
        min: f64,
        max: f64,
        (last_ts, last): (Timestamp, f64),
    ) -> Self {
        Scalar { count, sum, sum_err, min, max, last, last_ts, kept }
    }

    /// The parts [`Scalar::from_parts`] takes.
    pub(crate) const fn parts(&self) -> (f64, (f64, f64), f64, f64, (Timestamp, f64)) {
        (self.count, (self.sum, self.sum_err), self.min, self.max, (self.last_ts, self.last))
    }

    /// Records `value` at event time `ts`, standing for `weight` events (1
    /// for an unsampled event, 1/p for one kept with probability p). A
    /// weight that is not positive (or NaN) records nothing.
    #[inline]
    pub fn record(&mut self, value: f64, weight: f64, ts: Timestamp) {
        if weight.is_nan() || weight <= 0.0 {
            return;
        }
        self.count += weight;
        self.sum = add_compensated(self.sum, &mut self.sum_err, value * weight);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        (self.last_ts, self.last) = later((self.last_ts, self.last), (ts, value));
    }

    /// Folds `other` into `self`: afterwards `self` is the state of both
    /// inputs together, answering the aggregates both answer.
    pub fn merge(&mut self, other: &Scalar) {
        self.count += other.count;
        self.sum = add_compensated(self.sum, &mut self.sum_err, other.sum);
        self.sum_err += other.sum_err;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if !other.is_empty() {
            (self.last_ts, self.last) = later((self.last_ts, self.last), (other.last_ts, other.last));
        }
        self.kept = self.kept.intersection(other.kept);
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.count <= 0.0
    }

    /// The aggregates this state answers.
    pub fn kept(&self) -> Aggregates {
        self.kept
    }

    /// The weighted count: the estimated number of events before sampling.
    pub fn count(&self) -> f64 {
        self.count
    }

    /// The weighted sum (0 when empty), if kept.
    pub fn sum(&self) -> Option<f64> {
        self.kept.contains(Aggregates::SUM).then(|| self.total())
    }

    /// The weighted sum, kept or not (the mean's numerator).
    pub(crate) fn total(&self) -> f64 {
        if self.sum.is_finite() { self.sum + self.sum_err } else { self.sum }
    }

    /// The smallest value, if kept and any.
    pub fn min(&self) -> Option<f64> {
        (self.kept.contains(Aggregates::MIN) && !self.is_empty()).then_some(self.min)
    }

    /// The largest value, if kept and any.
    pub fn max(&self) -> Option<f64> {
        (self.kept.contains(Aggregates::MAX) && !self.is_empty()).then_some(self.max)
    }

    /// The weighted mean, if kept and the weighted count is positive.
    pub fn mean(&self) -> Option<f64> {
        (self.kept.contains(Aggregates::MEAN) && self.count > 0.0).then(|| self.total() / self.count)
    }

    /// The value with the latest event time, and that time, if kept and any.
    pub fn last(&self) -> Option<(Timestamp, f64)> {
        (self.kept.contains(Aggregates::LAST) && !self.is_empty()).then_some((self.last_ts, self.last))
    }
}

/// Compensated addition of `x` to `sum`, whose running compensation is
/// `err`: returns the new sum. The rounding error of each addition is
/// found exactly by Knuth's branch-free TwoSum, the same error Neumaier's
/// method finds after comparing magnitudes, in fewer instructions.
#[inline]
pub(crate) fn add_compensated(sum: f64, err: &mut f64, x: f64) -> f64 {
    let t = sum + x;
    if !t.is_finite() {
        // Overflow to ±inf (or a NaN input): compensation is meaningless.
        return t;
    }
    let x_part = t - sum;
    *err += (sum - (t - x_part)) + (x - x_part);
    t
}

/// Of two (event time, value) pairs, the later; at equal times the one
/// with the greater value, so the result does not depend on arrival order.
#[inline]
pub(crate) fn later(a: (Timestamp, f64), b: (Timestamp, f64)) -> (Timestamp, f64) {
    let b_wins = match b.0.cmp(&a.0) {
        Ordering::Greater => true,
        Ordering::Equal => b.1.total_cmp(&a.1) == Ordering::Greater,
        Ordering::Less => false,
    };
    if b_wins { b } else { a }
}

/// How a [`Quantiles`] state trades memory for precision.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct QuantileConfig {
    /// Significant decimal digits kept (1 to 3): 2 means quantiles within
    /// 1 % of the true value. Memory grows tenfold per digit: a histogram
    /// spanning the whole default range takes at most about 37 KB at 2
    /// digits and 300 KB at 3, and only as much of that as the largest
    /// value recorded needs.
    pub sigfig: u8,
    /// Values closer to zero than this count as zero; magnitudes are
    /// recorded in units of it.
    pub resolution: f64,
    /// Magnitudes above this are recorded as this and counted in
    /// [`Quantiles::clamped`].
    pub max_abs: f64,
}

impl QuantileConfig {
    /// Default for [`QuantileConfig::sigfig`].
    pub const DEFAULT_SIGFIG: u8 = 2;
    /// Default for [`QuantileConfig::resolution`].
    pub const DEFAULT_RESOLUTION: f64 = 1e-3;
    /// Default for [`QuantileConfig::max_abs`].
    pub const DEFAULT_MAX_ABS: f64 = 1e12;
}

impl Default for QuantileConfig {
    fn default() -> Self {
        QuantileConfig {
            sigfig: Self::DEFAULT_SIGFIG,
            resolution: Self::DEFAULT_RESOLUTION,
            max_abs: Self::DEFAULT_MAX_ABS,
        }
    }
}

/// A quantile sketch for any real values. Values are kept as they are, and
/// quantiles over them are exact, while the sketch holds at most
/// [`Quantiles::EXACT_EVENTS`] events (most groups of a short window never
/// see more; a list of them is smaller than the smallest histogram), or
/// however many events of at most [`Quantiles::EXACT`] distinct values.
/// Beyond that the values move into an HDR histogram of the magnitudes of
/// negative values, a count of zeros, and an HDR histogram of positive
/// values; each histogram is allocated on first use and grows only to the
/// largest magnitude it has seen. Whether the sketch is exact depends only
/// on the multiset of values, so merging gives what one pass gives.
///
/// Weights are rounded to whole events (at least one) for quantiles.
///
/// Serializes as its recorded values (bucket, count), so a restored sketch
/// answers exactly as the original.
#[derive(Clone, Debug)]
pub struct Quantiles {
    config: QuantileConfig,
    /// Exact (value, events) pairs until promoted: as recorded while they
    /// hold at most [`Quantiles::EXACT_EVENTS`] events, then merged by value
    /// (at most [`Quantiles::EXACT`] of them).
    exact: SmallVec<[(f64, u64); Quantiles::EXACT]>,
    /// Events in `exact`.
    exact_events: u64,
    /// Whether the values live in the histograms (then `exact` is empty).
    promoted: bool,
    neg: Option<Box<Histogram<u64>>>,
    zero: u64,
    pos: Option<Box<Histogram<u64>>>,
    clamped: u64,
}

impl Quantiles {
    /// An empty sketch. An out-of-range `sigfig` is brought into 1..=3, and
    /// a resolution or maximum that is not finite and positive takes its
    /// default.
    pub fn new(config: QuantileConfig) -> Self {
        let positive = |v: f64, default: f64| if v.is_finite() && v > 0.0 { v } else { default };
        let config = QuantileConfig {
            sigfig: config.sigfig.clamp(1, 3),
            resolution: positive(config.resolution, QuantileConfig::DEFAULT_RESOLUTION),
            max_abs: positive(config.max_abs, QuantileConfig::DEFAULT_MAX_ABS),
        };
        Quantiles {
            config,
            exact: SmallVec::new(),
            exact_events: 0,
            promoted: false,
            neg: None,
            zero: 0,
            pos: None,
            clamped: 0,
        }
    }

    /// How many events are kept exactly, whatever their values, before the
    /// histograms take over (unless they have few distinct values: see
    /// [`Quantiles::EXACT`]).
    pub const EXACT_EVENTS: u64 = 128;

    /// How many distinct values are kept exactly, however many events they
    /// stand for, before the histograms take over.
    pub const EXACT: usize = 8;

    /// The configuration in force.
    pub fn config(&self) -> QuantileConfig {
        self.config
    }

    /// Records `value` standing for `weight` events. NaN is ignored (and
    /// never reaches here from a validated batch).
    #[inline]
    pub fn record(&mut self, value: f64, weight: f64) {
        if value.is_nan() {
            return;
        }
        // Below 1.5 (an unsampled event, or one kept at a rate above 2/3)
        // a weight rounds to one event; NaN compares false and is one too.
        let n = if weight < 1.5 { 1 } else { events_of_weight(weight) };
        // The common case, inline: a list of exact values with room left.
        let events = self.exact_events.saturating_add(n);
        if !self.promoted && events <= Self::EXACT_EVENTS && self.exact.len() < self.exact.capacity() {
            self.exact.push((value, n));
            self.exact_events = events;
            return;
        }
        self.record_n(value, n);
    }

    /// Records `value` (not NaN) standing for `n` events.
    #[inline(never)]
    fn record_n(&mut self, value: f64, n: u64) {
        if !self.promoted {
            if self.record_exact(value, n) {
                return;
            }
            self.promote();
        }
        self.record_in_histograms(value, n);
    }

    /// Keeps `value` (`n` events) among the exact values if the sketch
    /// stays exact with it: false when it must be promoted first.
    fn record_exact(&mut self, value: f64, n: u64) -> bool {
        let events = self.exact_events.saturating_add(n);
        if events <= Self::EXACT_EVENTS {
            if self.exact.len() == self.exact.capacity() {
                self.reserve_exact_values(self.exact.len() + 1);
            }
            self.exact.push((value, n));
            self.exact_events = events;
            return true;
        }
        if self.exact_events <= Self::EXACT_EVENTS {
            // Past the event budget for the first time: merge equal values,
            // and stay exact only if there are few distinct ones (usually
            // known after a few entries).
            let mut merged = SmallVec::new();
            if !self.exact.iter().all(|&(v, n)| add_distinct(&mut merged, v, n)) {
                return false;
            }
            self.exact = merged;
        }
        if !add_distinct(&mut self.exact, value, n) {
            return false;
        }
        self.exact_events = events;
        true
    }

    /// Makes room for `n` exact values, in the steps the list grows by as
    /// values come: to 32 and then to the most it holds, rather than
    /// doubling four times from the inline 8. Given the number a window
    /// needed before ([`Quantiles::exact_need`]), a sketch takes its room
    /// at once instead of reallocating as it fills.
    pub(crate) fn reserve_exact_values(&mut self, n: usize) {
        if self.promoted || n <= self.exact.capacity() {
            return;
        }
        let target = if n <= 32 { 32 } else { Self::EXACT_EVENTS as usize };
        self.exact.reserve_exact(target.saturating_sub(self.exact.len()));
    }

    /// The room for exact values this sketch needed: as many as it holds,
    /// or the most a list holds once it was promoted to histograms.
    pub(crate) fn exact_need(&self) -> usize {
        if self.promoted { Self::EXACT_EVENTS as usize } else { self.exact.len() }
    }

    /// The room for exact values held now.
    #[cfg(test)]
    pub(crate) fn exact_capacity(&self) -> usize {
        self.exact.capacity()
    }

    /// Moves the exact values into the histograms, each side's created at
    /// the size its largest value needs: grown one value at a time, an
    /// auto-resizing histogram reallocates and copies its counts at every
    /// new power of two, which cost most of the time of a window's first
    /// dozen values.
    fn promote(&mut self) {
        self.promoted = true;
        self.exact_events = 0;
        let exact = core::mem::take(&mut self.exact);
        let limit = self.limit();
        let sigfig = self.config.sigfig;
        // Each value's magnitude, computed once for sizing and recording.
        let magnitudes: SmallVec<[(bool, Magnitude, u64); Quantiles::EXACT_EVENTS as usize]> =
            exact.iter().map(|&(v, n)| (v < 0.0, magnitude(v, self.config.resolution, limit), n)).collect();
        for (negative, side) in [(true, &mut self.neg), (false, &mut self.pos)] {
            let top = magnitudes.iter().filter(|e| e.0 == negative).filter_map(|e| e.1.map(|(m, _)| m)).max();
            if let Some(top) = top.filter(|&t| t >= 2)
                && side.is_none()
            {
                *side = Histogram::new_with_max(top, sigfig).ok().map(|mut h| {
                    h.auto(true);
                    Box::new(h)
                });
            }
        }
        for (negative, m, n) in magnitudes {
            self.record_magnitude(negative, m, n);
        }
    }

    fn record_in_histograms(&mut self, value: f64, n: u64) {
        let m = magnitude(value, self.config.resolution, self.limit());
        self.record_magnitude(value < 0.0, m, n);
    }

    /// Records `n` events of a value of sign `negative` and of magnitude
    /// `m` (as [`magnitude`] gives it).
    fn record_magnitude(&mut self, negative: bool, m: Magnitude, n: u64) {
        let Some((m, clamped)) = m else {
            self.zero = self.zero.saturating_add(n);
            return;
        };
        if clamped {
            self.clamped = self.clamped.saturating_add(n);
        }
        let side = if negative { &mut self.neg } else { &mut self.pos };
        // Auto-resizing histograms accept any value up to i64::MAX / 2, far
        // above `limit`; the error arm only keeps the no-panic promise.
        let recorded = histogram(side, self.config.sigfig).is_some_and(|h| h.record_n(m, n).is_ok());
        if !recorded {
            self.clamped = self.clamped.saturating_add(n);
        }
    }

    /// Folds `other` into `self`. Both should share a configuration; if the
    /// resolutions differ, `other`'s values are counted in
    /// [`Quantiles::clamped`] and not merged.
    pub fn merge(&mut self, other: &Quantiles) {
        if self.config.resolution != other.config.resolution {
            self.clamped = self.clamped.saturating_add(other.len());
            return;
        }
        let limit = self.limit();
        for &(value, n) in &other.exact {
            if self.promoted {
                // `limit` computed once for all of them.
                self.record_magnitude(value < 0.0, magnitude(value, self.config.resolution, limit), n);
            } else {
                self.record_n(value, n);
            }
        }
        if !other.promoted {
            return;
        }
        if !self.promoted {
            self.promote();
        }
        self.zero = self.zero.saturating_add(other.zero);
        self.clamped = self.clamped.saturating_add(other.clamped);
        let sigfig = self.config.sigfig;
        for (mine, theirs) in [(&mut self.neg, &other.neg), (&mut self.pos, &other.pos)] {
            if let Some(theirs) = theirs
                && histogram(mine, sigfig).is_none_or(|h| h.add(theirs.as_ref()).is_err())
            {
                self.clamped = self.clamped.saturating_add(theirs.len());
            }
        }
    }

    fn limit(&self) -> u64 {
        // max_abs / resolution is at most ~1.8e308 / tiny: cap at 2^52 so the
        // histogram stays well inside its range.
        (self.config.max_abs / self.config.resolution).min((1u64 << 52) as f64).max(1.0) as u64
    }

    /// Events recorded (whole, after rounding weights).
    pub fn len(&self) -> u64 {
        [
            self.exact_events,
            self.neg.as_ref().map_or(0, |h| h.len()),
            self.zero,
            self.pos.as_ref().map_or(0, |h| h.len()),
        ]
        .into_iter()
        .fold(0u64, u64::saturating_add)
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the sketch still keeps its values exactly (no histograms):
    /// see the type's documentation.
    pub fn is_exact(&self) -> bool {
        !self.promoted
    }

    /// Events whose magnitude was above [`QuantileConfig::max_abs`] (recorded
    /// as that maximum) or that could not be merged.
    pub fn clamped(&self) -> u64 {
        self.clamped
    }

    /// The value at quantile `q` (0.0 ..= 1.0, clamped): the smallest
    /// recorded value such that a fraction `q` of the events are at most it,
    /// within the configured precision. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.len();
        if total == 0 {
            return None;
        }
        let rank = rank_of(q, total);
        if !self.promoted {
            if self.exact_events == self.exact.len() as u64 {
                // One event per entry (unweighted, as recorded): the rank-th
                // smallest value by selection, without sorting them all.
                let mut keys: SmallVec<[i64; Quantiles::EXACT_EVENTS as usize]> =
                    self.exact.iter().map(|e| order_key(e.0)).collect();
                return nth_smallest(&mut keys, rank).map(from_order_key);
            }
            let mut sorted = self.exact.clone();
            sorted.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            let mut seen = 0u64;
            return sorted
                .iter()
                .find(|e| {
                    seen = seen.saturating_add(e.1);
                    seen >= rank
                })
                .map(|e| e.0);
        }
        let negatives = self.neg.as_ref().map_or(0, |h| h.len());
        let scale = self.config.resolution;
        if rank <= negatives {
            // The rank-th smallest value is the (negatives - rank + 1)-th
            // smallest magnitude among the negatives, negated.
            let h = self.neg.as_deref()?;
            return magnitude_at(h, negatives - rank + 1).map(|m| -(m as f64) * scale);
        }
        if rank <= negatives.saturating_add(self.zero) {
            return Some(0.0);
        }
        let h = self.pos.as_deref()?;
        magnitude_at(h, rank - negatives - self.zero).map(|m| m as f64 * scale)
    }
}

impl Quantiles {
    /// The value at quantile `q` of the merge of `parts`: bit for bit what
    /// merging them in order into a copy of the first and reading
    /// [`Quantiles::quantile`] gives, but without building the merge when
    /// no part holds histograms (the parts of short windows, which rarely
    /// hold more than [`Quantiles::EXACT_EVENTS`] events each): the answer
    /// is then the rank-th smallest of the parts' values, found by
    /// selection, and rounded to its histogram bucket when the merge would
    /// have left the exact form. An alert reading the p99 of a region over
    /// the groups of that region reads it this way. `None` when the parts
    /// hold no events.
    ///
    /// ```
    /// use edgestream::window::agg::{QuantileConfig, Quantiles};
    ///
    /// let mut a = Quantiles::new(QuantileConfig::default());
    /// let mut b = Quantiles::new(QuantileConfig::default());
    /// (0..100).for_each(|i| a.record(f64::from(i), 1.0));
    /// (100..200).for_each(|i| b.record(f64::from(i), 1.0));
    /// let mut merged = a.clone();
    /// merged.merge(&b);
    /// assert_eq!(Quantiles::merged_quantile(&[&a, &b], 0.99), merged.quantile(0.99));
    /// ```
    pub fn merged_quantile(parts: &[&Quantiles], q: f64) -> Option<f64> {
        let first = parts.first()?;
        let resolution = first.config.resolution;
        // Histograms, another resolution (which the merge counts as clamped)
        // or a NaN from a hand-written snapshot (looked for below, in the
        // pass that reads the values): merge for real.
        if !parts.iter().all(|p| !p.promoted && p.config.resolution == resolution) {
            return merged_copy(parts)?.quantile(q);
        }
        // The values in `f64::total_cmp` order as integers: one event per
        // entry (unweighted) is the usual case.
        let (value, total, few) = if parts.iter().all(|p| p.exact_events == p.exact.len() as u64) {
            let mut keys: Vec<i64> = Vec::with_capacity(parts.iter().map(|p| p.exact.len()).sum());
            let mut nan = false;
            for p in parts {
                keys.extend(p.exact.iter().map(|e| {
                    nan |= e.0.is_nan();
                    order_key(e.0)
                }));
            }
            if nan {
                return merged_copy(parts)?.quantile(q);
            }
            let total = keys.len() as u64;
            let key = nth_smallest(&mut keys, rank_of(q, total.max(1)))?;
            // (Selection reordered the keys, or negated them all: the
            // number of distinct ones is the same.)
            (from_order_key(key), total, few_distinct(keys.iter().copied()))
        } else {
            if parts.iter().any(|p| p.exact.iter().any(|e| e.0.is_nan())) {
                return merged_copy(parts)?.quantile(q);
            }
            let mut values: Vec<(i64, u64)> =
                parts.iter().flat_map(|p| p.exact.iter().map(|e| (order_key(e.0), e.1))).collect();
            let total = values.iter().fold(0u64, |t, e| t.saturating_add(e.1));
            let rank = rank_of(q, total.max(1));
            values.sort_unstable_by_key(|e| e.0);
            let mut seen = 0u64;
            let key = values.iter().find(|e| {
                seen = seen.saturating_add(e.1);
                seen >= rank
            })?;
            (from_order_key(key.0), total, few_distinct(values.iter().map(|e| e.0)))
        };
        // Counts that saturate make the histograms' own totals differ from
        // the values' (rare: weights near 2^64 events): merge for real.
        if total == u64::MAX {
            return merged_copy(parts)?.quantile(q);
        }
        // Whether the merge stays exact depends only on the multiset of
        // values (see the type's documentation).
        if total <= Self::EXACT_EVENTS || few {
            return Some(value);
        }
        // The histograms would hold it in its magnitude's bucket, and answer
        // the bucket's middle (see `magnitude_at`).
        Some(match magnitude(value, resolution, first.limit()) {
            None => 0.0,
            Some((m, _)) => {
                let middle = bucket_middle(m, first.config.sigfig) as f64;
                if value < 0.0 { -middle * resolution } else { middle * resolution }
            }
        })
    }
}

/// `parts` merged in order into a copy of the first.
fn merged_copy(parts: &[&Quantiles]) -> Option<Quantiles> {
    let (first, rest) = parts.split_first()?;
    let mut merged = (*first).clone();
    rest.iter().for_each(|p| merged.merge(p));
    Some(merged)
}

/// `v`'s bits as an integer that orders as [`f64::total_cmp`] orders the
/// values (negative values' magnitude bits flipped).
fn order_key(v: f64) -> i64 {
    flip_negative(v.to_bits() as i64)
}

/// The value of an [`order_key`] (the flip is its own inverse).
fn from_order_key(key: i64) -> f64 {
    f64::from_bits(flip_negative(key) as u64)
}

fn flip_negative(bits: i64) -> i64 {
    bits ^ (((bits >> 63) as u64) >> 1) as i64
}

/// Whether `keys` hold at most [`Quantiles::EXACT`] distinct values.
fn few_distinct(keys: impl IntoIterator<Item = i64>) -> bool {
    let mut distinct: SmallVec<[i64; Quantiles::EXACT]> = SmallVec::new();
    keys.into_iter().all(|k| {
        distinct.contains(&k)
            || (distinct.len() < Quantiles::EXACT && {
                distinct.push(k);
                true
            })
    })
}

/// The `rank`-th smallest of `keys` (1-based), which it may reorder or
/// change. The ends are a minimum or a maximum; ranks near either end (a
/// p99, a p1) keep the few smallest or largest keys seen, one comparison
/// per key; others select in place.
fn nth_smallest(keys: &mut [i64], rank: u64) -> Option<i64> {
    const NEAR: usize = 32;
    /// The `k`-th smallest of `keys` (`k` ≤ `keys.len()`), keeping the `k`
    /// smallest seen in order.
    fn near(keys: &[i64], k: usize) -> Option<i64> {
        let (head, tail) = keys.split_at_checked(k)?;
        let mut best: SmallVec<[i64; NEAR]> = SmallVec::from_slice(head);
        best.sort_unstable();
        let mut top = *best.last()?;
        for &key in tail {
            if key < top {
                best.pop();
                best.insert(best.partition_point(|&b| b <= key), key);
                top = *best.last()?;
            }
        }
        Some(top)
    }
    let rank = usize::try_from(rank).ok().filter(|&r| (1..=keys.len()).contains(&r))?;
    let from_top = keys.len() - rank + 1;
    // The ends (a p99 of fewer than 100 values is the largest) without a
    // branch per key: a new extreme is where the loop below mispredicts.
    if rank == 1 {
        keys.iter().min().copied()
    } else if from_top == 1 {
        keys.iter().max().copied()
    } else if rank <= NEAR {
        near(keys, rank)
    } else if from_top <= NEAR {
        // `!` reverses the order of integers.
        keys.iter_mut().for_each(|k| *k = !*k);
        near(keys, from_top).map(|k| !k)
    } else {
        Some(*keys.select_nth_unstable(rank - 1).1)
    }
}

/// The 1-based rank, in ascending order, of the event at quantile `q` (NaN
/// read as 0, clamped to 0..=1) among `total` > 0 events.
fn rank_of(q: f64, total: u64) -> u64 {
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    ((q * total as f64).ceil() as u64).clamp(1, total)
}

/// The middle of the bucket an HDR histogram of `sigfig` significant
/// digits (and lowest discernible value 1, as ours) records magnitude `m`
/// in: its lowest equivalent value plus half its equivalent range, the
/// arithmetic of `hdrhistogram`'s `lowest_equivalent` and
/// `equivalent_range` without a histogram to ask.
fn bucket_middle(m: u64, sigfig: u8) -> u64 {
    // log2 of the sub-bucket count: the power of two at or above 2·10^sigfig.
    let magnitude = match sigfig {
        0 | 1 => 5,
        2 => 8,
        _ => 11,
    };
    let mask = (1u64 << magnitude) - 1;
    let bucket = (64 - magnitude) - (m | mask).leading_zeros();
    let lowest = (m >> bucket) << bucket;
    lowest.saturating_add((1u64 << bucket) / 2)
}

/// Adds `n` events of `value` to a list of distinct values (by bits): false,
/// leaving it as it was, when it is full with other values.
fn add_distinct(list: &mut SmallVec<[(f64, u64); Quantiles::EXACT]>, value: f64, n: u64) -> bool {
    if let Some(entry) = list.iter_mut().find(|e| e.0.to_bits() == value.to_bits()) {
        entry.1 = entry.1.saturating_add(n);
    } else if list.len() < Quantiles::EXACT {
        list.push((value, n));
    } else {
        return false;
    }
    true
}

/// The serialized form of a [`Quantiles`].
#[derive(Serialize, Deserialize)]
struct QuantilesRepr {
    config: QuantileConfig,
    exact: Vec<(f64, u64)>,
    promoted: bool,
    zero: u64,
    clamped: u64,
    neg: Vec<(u64, u64)>,
    pos: Vec<(u64, u64)>,
}

fn recorded(h: &Option<Box<Histogram<u64>>>) -> Vec<(u64, u64)> {
    h.as_deref()
        .map(|h| h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect())
        .unwrap_or_default()
}

impl Serialize for Quantiles {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        QuantilesRepr {
            config: self.config,
            exact: self.exact.to_vec(),
            promoted: self.promoted,
            zero: self.zero,
            clamped: self.clamped,
            neg: recorded(&self.neg),
            pos: recorded(&self.pos),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Quantiles {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = QuantilesRepr::deserialize(d)?;
        let mut q = Quantiles::new(r.config);
        // Replayed rather than taken as they are, so that a sketch written
        // by hand (or by another version) keeps the limits on exact values.
        for (value, n) in r.exact {
            if !value.is_nan() && n > 0 {
                q.record_n(value, n);
            }
        }
        // Values in the histograms (or the zero count) mean promoted,
        // whatever the flag says: an exact sketch never counts them.
        let promoted = r.promoted || r.zero > 0 || !r.neg.is_empty() || !r.pos.is_empty();
        if promoted && !q.promoted {
            q.promote();
        }
        q.zero = q.zero.saturating_add(r.zero);
        q.clamped = q.clamped.saturating_add(r.clamped);
        let sigfig = q.config.sigfig;
        let limit = q.limit();
        for (side, values) in [(&mut q.neg, r.neg), (&mut q.pos, r.pos)] {
            for (value, count) in values {
                // Buckets reach at most about twice the limit; anything above
                // cannot come from `record`: refuse to grow a histogram for
                // it. The bound is checked on the bucket's top too, which is
                // what a snapshot writes back, so restoring is idempotent.
                let bound = limit.saturating_mul(2);
                let recorded = value <= bound
                    && histogram(side, sigfig)
                        .is_some_and(|h| h.highest_equivalent(value) <= bound && h.record_n(value, count).is_ok());
                if !recorded {
                    q.clamped = q.clamped.saturating_add(count);
                }
            }
        }
        Ok(q)
    }
}

/// A value's magnitude in units of the resolution and whether it was
/// clamped to the limit; `None` for a value that counts as zero.
type Magnitude = Option<(u64, bool)>;

/// The magnitude `value` is recorded at: `|value| / resolution` rounded,
/// at most `limit` (then with `true`: clamped); `None` when it rounds to zero.
#[inline]
fn magnitude(value: f64, resolution: f64, limit: u64) -> Magnitude {
    let magnitude = round_non_negative(value.abs() / resolution);
    if magnitude < 1.0 {
        None
    } else if magnitude > limit as f64 {
        Some((limit, true))
    } else {
        Some((magnitude as u64, false))
    }
}

/// The whole events a weight stands for in a sketch: at least one.
fn events_of_weight(weight: f64) -> u64 {
    if weight.is_finite() && weight >= 1.0 { round_non_negative(weight) as u64 } else { 1 }
}

/// `x.round()` for `x` ≥ 0 (and NaN, returned as is), without the library
/// call `round` is on targets without a rounding instruction (x86-64's
/// baseline, wasm32 has one): it ran once per recorded weight and value.
/// Below 2^52 the fraction `x - trunc(x)` is exact, so comparing it with ½
/// rounds halves away from zero as `round` does; from 2^52 up every value
/// is an integer already.
#[inline]
fn round_non_negative(x: f64) -> f64 {
    const INTEGRAL: f64 = (1u64 << 52) as f64;
    if x < INTEGRAL {
        let whole = (x as i64) as f64;
        if x - whole >= 0.5 { whole + 1.0 } else { whole }
    } else {
        x
    }
}

/// The histogram of one side, created on first use. Creation cannot fail
/// for `sigfig` in 1..=3 (which `Quantiles::new` ensures); if it ever did,
/// the caller counts the values as clamped.
fn histogram(side: &mut Option<Box<Histogram<u64>>>, sigfig: u8) -> Option<&mut Histogram<u64>> {
    if side.is_none() {
        *side = Histogram::new(sigfig).ok().map(Box::new);
    }
    side.as_deref_mut()
}

/// The magnitude of the `rank`-th smallest recorded value (1-based), at the
/// middle of its bucket.
fn magnitude_at(h: &Histogram<u64>, rank: u64) -> Option<u64> {
    let total = h.len();
    if rank == 0 || rank > total {
        return None;
    }
    // `value_at_quantile` scans the counts for the first bucket whose
    // running total reaches ⌈q · total⌉ (a tight loop, unlike the generic
    // iterator). With q = (rank − ½) / total that is exactly `rank` while
    // the float error stays far below ½, which it does below 2^50 events.
    let value = if total < 1 << 50 {
        h.value_at_quantile((rank as f64 - 0.5) / total as f64)
    } else {
        bucket_top_by_iter(h, rank)?
    };
    Some(h.lowest_equivalent(value).saturating_add(h.equivalent_range(value) / 2))
}

/// The top of the bucket holding the `rank`-th smallest value, walking the
/// recorded buckets one by one.
fn bucket_top_by_iter(h: &Histogram<u64>, rank: u64) -> Option<u64> {
    let mut seen = 0u64;
    let bucket = h.iter_recorded().find(|v| {
        seen = seen.saturating_add(v.count_at_value());
        seen >= rank
    })?;
    Some(bucket.value_iterated_to())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_nanos(s)
    }

    #[test]
    fn rounding_matches_round_at_the_edges() {
        let half_below = 0.5f64.next_down();
        let big = (1u64 << 52) as f64;
        for x in [
            0.0,
            0.5,
            half_below,
            1.5,
            2.5,
            1.0 - f64::EPSILON,
            big - 0.5,
            big - 1.5,
            big,
            big + 1.0,
            1e300,
            f64::INFINITY,
            f64::MIN_POSITIVE,
            4.499_999_999_999_999,
        ] {
            assert_eq!(round_non_negative(x).to_bits(), x.round().to_bits(), "{x}");
        }
        assert!(round_non_negative(f64::NAN).is_nan());
    }

    /// A NaN among the exact values (only a hand-written snapshot can hold
    /// one) sends the merged quantile to a real merge, weighted or not.
    #[test]
    fn merged_quantile_with_a_nan_value_is_the_merges() {
        let config = QuantileConfig::default();
        for weight in [1.0, 3.0] {
            let (mut a, mut b) = (Quantiles::new(config), Quantiles::new(config));
            // More than the exact events together, as the merge holds them.
            (1..=40).for_each(|v| a.record(f64::from(v), weight));
            (101..=200).for_each(|v| b.record(f64::from(v), 1.0));
            a.exact.push((f64::NAN, 1));
            a.exact_events += 1;
            let mut merged = a.clone();
            merged.merge(&b);
            for q in [0.0, 0.5, 0.99, 1.0] {
                assert_eq!(
                    Quantiles::merged_quantile(&[&a, &b], q).map(f64::to_bits),
                    merged.quantile(q).map(f64::to_bits),
                    "weight {weight}, q {q}"
                );
            }
        }
    }

    #[test]
    fn merged_quantile_of_saturated_counts_is_the_merges() {
        let config = QuantileConfig::default();
        let (mut a, mut b) = (Quantiles::new(config), Quantiles::new(config));
        a.record(-10.0, 1e20);
        b.record(-5.0, 1e20);
        (1..=7).for_each(|v| b.record(f64::from(v), 1.0));
        let mut merged = a.clone();
        merged.merge(&b);
        for q in [0.0, 0.5, 1.0] {
            assert_eq!(Quantiles::merged_quantile(&[&a, &b], q), merged.quantile(q), "q {q}");
        }
    }

    proptest! {
        #[test]
        fn rounding_matches_round(bits in 0u64..0x7ff0_0000_0000_0000, small in 0.0f64..1e6) {
            let x = f64::from_bits(bits);
            prop_assert_eq!(round_non_negative(x).to_bits(), x.round().to_bits());
            prop_assert_eq!(round_non_negative(small).to_bits(), small.round().to_bits());
        }
    }

    #[test]
    fn scalar_fits_a_cache_line() {
        assert!(core::mem::size_of::<Scalar>() <= 64);
    }

    #[test]
    fn empty_scalar_has_no_values() {
        let s = Scalar::new();
        assert!(s.is_empty());
        assert_eq!((s.min(), s.max(), s.mean(), s.last()), (None, None, None, None));
        assert_eq!((s.count(), s.sum()), (0.0, Some(0.0)));
    }

    #[test]
    fn a_scalar_answers_only_what_it_keeps() {
        let mut s = Scalar::keeping(Aggregates::MAX | Aggregates::MEAN);
        s.record(2.0, 1.0, t(1));
        s.record(4.0, 3.0, t(2));
        assert_eq!(s.kept(), Aggregates::COUNT | Aggregates::MAX | Aggregates::MEAN);
        assert_eq!((s.count(), s.max(), s.mean()), (4.0, Some(4.0), Some(3.5)));
        assert_eq!((s.sum(), s.min(), s.last()), (None, None, None));
        // Merged, a state answers what both parts answer.
        let mut all = Scalar::new();
        all.record(10.0, 1.0, t(3));
        all.merge(&s);
        assert_eq!((all.count(), all.max(), all.mean(), all.min()), (5.0, Some(10.0), Some(4.8), None));
    }

    #[test]
    fn states_keeping_some_aggregates_round_trip_and_compare_by_their_answers() {
        let keep = Aggregates::SUM | Aggregates::MAX;
        let mut recorded = Scalar::keeping(keep);
        recorded.record(3.0, 2.0, t(1));
        recorded.record(-1.0, 1.0, t(2));
        // The same answers, built from parts with nothing in the lanes not kept.
        let built = Scalar::from_parts(keep, 3.0, (5.0, 0.0), f64::INFINITY, 3.0, (Timestamp::MIN, f64::NEG_INFINITY));
        assert_eq!(recorded, built);
        for s in [recorded, built] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<Scalar>(&json).unwrap(), s, "{json}");
            let bytes = postcard::to_allocvec(&s).unwrap();
            assert_eq!(postcard::from_bytes::<Scalar>(&bytes).unwrap(), s);
        }
        let mut all = Scalar::new();
        all.record(3.0, 2.0, t(1));
        all.record(-1.0, 1.0, t(2));
        assert_ne!(recorded, all, "the same values, but other answers");
    }

    #[test]
    fn weights_that_are_not_positive_record_nothing() {
        let mut s = Scalar::new();
        for w in [0.0, -1.0, f64::NAN] {
            s.record(5.0, w, t(1));
        }
        assert!(s.is_empty());
        assert_eq!(s.max(), None);
    }

    #[test]
    fn aggregate_sets_read_and_write_as_names_or_a_byte() {
        let set = Aggregates::MIN | Aggregates::LAST;
        assert_eq!(serde_json::to_string(&set).unwrap(), r#"["count","min","last"]"#);
        assert_eq!(serde_json::from_str::<Aggregates>(r#"["last","min"]"#).unwrap(), set);
        assert_eq!(serde_json::from_str::<Aggregates>("[]").unwrap(), Aggregates::COUNT);
        assert!(serde_json::from_str::<Aggregates>(r#"["median"]"#).unwrap_err().to_string().contains("median"));
        let bytes = postcard::to_allocvec(&set).unwrap();
        assert_eq!(postcard::from_bytes::<Aggregates>(&bytes).unwrap(), set);
        assert!(postcard::from_bytes::<Aggregates>(&[0x80]).is_err(), "unknown bits are refused");
    }

    #[test]
    fn last_is_by_event_time_then_value() {
        let mut s = Scalar::new();
        s.record(1.0, 1.0, t(5));
        s.record(2.0, 1.0, t(3));
        assert_eq!(s.last(), Some((t(5), 1.0)));
        s.record(0.5, 1.0, t(5));
        s.record(7.0, 1.0, t(5));
        assert_eq!(s.last(), Some((t(5), 7.0)), "ties go to the greater value");
        let mut early = Scalar::new();
        early.record(-1.0, 1.0, Timestamp::MIN);
        assert_eq!(early.last(), Some((Timestamp::MIN, -1.0)));
    }

    #[test]
    fn overflowing_sums_are_infinite_not_nan() {
        let mut s = Scalar::new();
        s.record(1e308, 1.0, t(0));
        s.record(1e308, 1.0, t(0));
        assert_eq!(s.sum(), Some(f64::INFINITY));
        let mut q = Quantiles::new(QuantileConfig::default());
        q.record(1.0, f64::MAX); // rounds to u64::MAX events
        q.record(2.0, 1.0);
        assert_eq!(q.len(), u64::MAX);
        assert!(q.quantile(1.0).is_some(), "saturated counts answer without panicking");
    }

    #[test]
    fn scalars_round_trip_through_json_empty_or_not() {
        let mut full = Scalar::new();
        full.record(-2.5, 1.0, t(3));
        for s in [Scalar::new(), full] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<Scalar>(&json).unwrap(), s, "{json}");
        }
    }

    #[test]
    fn regression_restoring_a_restored_sketch_is_idempotent() {
        // Found by fuzzing: a recorded value under the restore bound whose
        // bucket top is over it was kept once, then clamped on the next
        // restore, so snapshot(restore(snapshot)) changed.
        // max_abs 1.0 at resolution 0.001: limit 1000, restore bound 2000.
        for value in [1_500u64, 1_999, 2_000, 2_001, 10_000] {
            let json = format!(
                r#"{{"config":{{"sigfig":2,"resolution":0.001,"max_abs":1.0}},"exact":[],"promoted":true,"zero":0,"clamped":0,"neg":[],"pos":[[{value},3]]}}"#
            );
            let once: Quantiles = serde_json::from_str(&json).unwrap();
            let again: Quantiles = serde_json::from_str(&serde_json::to_string(&once).unwrap()).unwrap();
            assert_eq!(serde_json::to_string(&again).unwrap(), serde_json::to_string(&once).unwrap(), "value {value}");
            assert!(matches!((once.len(), once.clamped()), (3, 0) | (0, 3)), "value {value}: counted either way");
        }
    }

    #[test]
    fn compensated_sum_beats_naive_summation() {
        let mut s = Scalar::new();
        let mut naive = 0.0;
        for v in [1e16, 1.0, -1e16, 1.0].iter().cycle().take(4_000) {
            s.record(*v, 1.0, t(0));
            naive += v;
        }
        assert_eq!(s.sum(), Some(2_000.0));
        assert_ne!(naive, 2_000.0);
    }

    #[test]
    fn quantiles_of_mixed_signs() {
        let mut q = Quantiles::new(QuantileConfig::default());
        for v in -50..=50 {
            q.record(f64::from(v), 1.0);
        }
        assert_eq!(q.len(), 101);
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() <= b.abs() * 0.01 + 1e-3);
        assert!(close(q.quantile(0.0), -50.0), "{:?}", q.quantile(0.0));
        assert!(close(q.quantile(0.5), 0.0), "{:?}", q.quantile(0.5));
        assert!(close(q.quantile(1.0), 50.0), "{:?}", q.quantile(1.0));
        assert!(close(q.quantile(0.25), -25.0), "{:?}", q.quantile(0.25));
        assert!(close(q.quantile(0.99), 49.0), "{:?}", q.quantile(0.99));
        assert_eq!(Quantiles::new(QuantileConfig::default()).quantile(0.5), None);
    }

    #[test]
    fn few_values_are_exact_and_many_are_promoted() {
        let mut q = Quantiles::new(QuantileConfig::default());
        for v in [3.25, -1.5, 3.25, 1e-9, 7.0] {
            q.record(v, 1.0);
        }
        assert_eq!(q.quantile(0.0), Some(-1.5));
        assert_eq!(q.quantile(0.4), Some(1e-9), "exact: below the histogram resolution too");
        assert_eq!(q.quantile(0.8), Some(3.25));
        assert_eq!(q.quantile(1.0), Some(7.0));
        // Up to EXACT_EVENTS events stay exact whatever their values: 1e-9,
        // the second smallest, reads as itself, not as the histogram's zero.
        let more = Quantiles::EXACT_EVENTS - 5;
        for v in 0..more {
            q.record(v as f64 + 10.0, 1.0);
        }
        let second = |q: &Quantiles| q.quantile(2.0 / q.len() as f64);
        assert_eq!((q.len(), second(&q)), (Quantiles::EXACT_EVENTS, Some(1e-9)));
        q.record(1e6, 1.0);
        assert_eq!((q.len(), second(&q)), (Quantiles::EXACT_EVENTS + 1, Some(0.0)), "promoted");
        assert!(q.quantile(1.0).is_some_and(|v| (v - 1e6).abs() < 1e4));
        // Many events of few distinct values stay exact, merged or not.
        let mut few = Quantiles::new(QuantileConfig::default());
        let mut other = Quantiles::new(QuantileConfig::default());
        for i in 0..1_000 {
            few.record(if i % 2 == 0 { 1e-9 } else { 7.0 }, 1.0);
            other.record(-1e-9 * f64::from(i % 3), 2.0);
        }
        assert_eq!(few.quantile(0.5), Some(1e-9));
        few.merge(&other);
        assert_eq!((few.len(), few.quantile(0.0), few.quantile(0.7)), (3_000, Some(-2e-9), Some(1e-9)));
    }

    #[test]
    fn quantiles_clamp_and_count_extremes() {
        let config = QuantileConfig { max_abs: 100.0, ..QuantileConfig::default() };
        let mut q = Quantiles::new(config);
        // As many distinct values as stay exact: the next ones promote.
        for v in 0..Quantiles::EXACT_EVENTS {
            q.record(v as f64 / 10.0, 0.0);
        }
        q.record(1e9, 3.0);
        q.record(f64::NEG_INFINITY, 1.0);
        q.record(f64::NAN, 1.0);
        assert_eq!((q.len(), q.clamped()), (4 + Quantiles::EXACT_EVENTS, 4));
        assert!(q.quantile(1.0).is_some_and(|v| (v - 100.0).abs() < 1.0));
        assert!(q.quantile(0.0).is_some_and(|v| (v + 100.0).abs() < 1.0));
    }

    fn values() -> impl Strategy<Value = Vec<(f64, f64, i64)>> {
        proptest::collection::vec(
            (
                prop_oneof![(-1_000_000i64..1_000_000).prop_map(|v| v as f64), (-1e6..1e6f64)],
                prop_oneof![Just(1.0), Just(2.0), Just(10.0)],
                -5i64..5,
            ),
            0..60,
        )
    }

    /// Any finite f64, by its bits: every magnitude, both signs, subnormals.
    fn any_finite() -> impl Strategy<Value = f64> {
        any::<u64>().prop_map(f64::from_bits).prop_filter("finite", |v| v.is_finite())
    }

    proptest! {
        /// TwoSum's error is the exact rounding error of the addition,
        /// the one Neumaier's magnitude comparison finds (bit for bit).
        #[test]
        fn the_compensation_is_the_exact_rounding_error(
            sum in prop_oneof![any_finite(), -1e6..1e6f64],
            x in prop_oneof![any_finite(), -1e6..1e6f64],
            err in -1.0..1.0f64,
        ) {
            let mut two_sum = err;
            let t = add_compensated(sum, &mut two_sum, x);
            prop_assert_eq!(t.to_bits(), (sum + x).to_bits());
            let neumaier = if !t.is_finite() {
                err
            } else if sum.abs() >= x.abs() {
                err + ((sum - t) + x)
            } else {
                err + ((x - t) + sum)
            };
            prop_assert_eq!(two_sum.to_bits(), neumaier.to_bits());
        }

        #[test]
        fn restoring_any_sketch_keeps_the_exact_limits_and_is_stable(
            exact in proptest::collection::vec(
                (prop_oneof![-3.0..3.0f64, Just(0.0), Just(-0.0), Just(1.0), Just(f64::NAN)], 0u64..300),
                0..200,
            ),
            promoted in any::<bool>(),
            zero in 0u64..3,
        ) {
            let repr = QuantilesRepr {
                config: QuantileConfig::default(),
                exact: exact.clone(),
                promoted,
                zero,
                clamped: 0,
                neg: Vec::new(),
                pos: Vec::new(),
            };
            // Postcard, as snapshots are: JSON has no NaN.
            let once: Quantiles = postcard::from_bytes(&postcard::to_allocvec(&repr).unwrap()).unwrap();
            let events: u64 = exact.iter().filter(|e| !e.0.is_nan()).map(|e| e.1).sum::<u64>() + zero;
            prop_assert_eq!(once.len(), events);
            prop_assert!(once.exact.len() as u64 <= Quantiles::EXACT_EVENTS);
            prop_assert!(once.exact_events <= Quantiles::EXACT_EVENTS || once.exact.len() <= Quantiles::EXACT);
            prop_assert!(!once.promoted || once.exact.is_empty());
            let bytes = postcard::to_allocvec(&once).unwrap();
            let again: Quantiles = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(postcard::to_allocvec(&again).unwrap(), bytes);
        }

        #[test]
        fn scalar_merge_of_any_partition_equals_one_pass(
            values in values(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let mut whole = Scalar::new();
            for &(v, w, ts) in &values {
                whole.record(v, w, t(ts));
            }
            let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(values.len() + 1)).collect();
            bounds.sort_unstable();
            let mut merged = Scalar::new();
            let mut start = 0;
            for end in bounds.into_iter().chain([values.len()]) {
                let mut part = Scalar::new();
                for &(v, w, ts) in values.get(start..end).unwrap_or_default().iter().rev() {
                    part.record(v, w, t(ts));
                }
                merged.merge(&part);
                start = end;
            }
            prop_assert_eq!(merged.count(), whole.count());
            prop_assert_eq!(merged.min(), whole.min());
            prop_assert_eq!(merged.max(), whole.max());
            prop_assert_eq!(merged.last(), whole.last());
            let exact = values.iter().all(|(v, _, _)| v.fract() == 0.0);
            if exact {
                prop_assert_eq!(merged.sum(), whole.sum());
            } else {
                let (merged, whole) = (merged.sum().unwrap_or(f64::NAN), whole.sum().unwrap_or(f64::NAN));
                prop_assert!((merged - whole).abs() <= 1e-9 * (1.0 + whole.abs()));
            }
        }

        #[test]
        fn rank_lookup_finds_the_bucket_the_iterator_finds(
            recorded in proptest::collection::vec((1u64..1_000_000_000, 1u64..10_000), 1..100),
        ) {
            let mut h = Histogram::<u64>::new(2).unwrap();
            for &(value, n) in &recorded {
                h.record_n(value, n).unwrap();
            }
            // The first and the last rank of every bucket, and one between.
            let mut below = 0;
            for bucket in h.iter_recorded() {
                let top = bucket.value_iterated_to();
                let mid = h.lowest_equivalent(top) + h.equivalent_range(top) / 2;
                let n = bucket.count_at_value();
                for rank in [below + 1, below + n.div_ceil(2), below + n] {
                    prop_assert_eq!(bucket_top_by_iter(&h, rank), Some(top));
                    prop_assert_eq!(magnitude_at(&h, rank), Some(mid), "rank {} of {}", rank, h.len());
                }
                below += n;
            }
            prop_assert_eq!(magnitude_at(&h, 0), None);
            prop_assert_eq!(magnitude_at(&h, below + 1), None);
        }

        #[test]
        fn bucket_middle_is_hdrhistograms(sigfig in 1u8..=3, m in 1u64..(1 << 53), small in 1u64..5000) {
            let h = Histogram::<u64>::new(sigfig).unwrap();
            for m in [m, small] {
                prop_assert_eq!(bucket_middle(m, sigfig), h.lowest_equivalent(m) + h.equivalent_range(m) / 2);
            }
        }

        #[test]
        fn nth_smallest_is_the_sorted_rank(values in proptest::collection::vec(any::<f64>(), 1..300), pick in any::<prop::sample::Index>()) {
            let keys: Vec<i64> = values.iter().map(|&v| order_key(v)).collect();
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let mut sorted_keys = keys.clone();
            sorted_keys.sort_unstable();
            prop_assert_eq!(sorted_keys.iter().map(|&k| from_order_key(k).to_bits()).collect::<Vec<_>>(),
                sorted.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            // Ranks near both ends and in the middle.
            let n = keys.len();
            for rank in [1, 2, n / 2 + 1, n.saturating_sub(1).max(1), n, pick.index(n) + 1] {
                prop_assert_eq!(nth_smallest(&mut keys.clone(), rank as u64), sorted_keys.get(rank - 1).copied());
            }
            prop_assert_eq!(nth_smallest(&mut keys.clone(), 0), None);
            prop_assert_eq!(nth_smallest(&mut keys.clone(), n as u64 + 1), None);
        }

        #[test]
        fn merged_quantile_is_the_merges_quantile(
            parts in proptest::collection::vec(
                (
                    proptest::collection::vec(
                        prop_oneof![
                            // Few distinct values (merges that stay exact),
                            // wide ones of both signs, near-zero and clamped.
                            (0u8..6).prop_map(f64::from),
                            -1e4..1e4f64,
                            -2e-3..2e-3f64,
                            Just(5e12),
                            Just(-0.0),
                        ],
                        0..80,
                    ),
                    prop_oneof![3 => Just(1.0), 1 => 0.5..6.0f64],
                ),
                1..6,
            ),
            sigfig in 1u8..=3,
            q in prop_oneof![Just(0.0), Just(1.0), 0.0..=1.0f64],
        ) {
            let config = QuantileConfig { sigfig, ..QuantileConfig::default() };
            let sketches: Vec<Quantiles> = parts
                .iter()
                .map(|(values, weight)| {
                    let mut s = Quantiles::new(config);
                    values.iter().for_each(|&v| s.record(v, *weight));
                    s
                })
                .collect();
            let refs: Vec<&Quantiles> = sketches.iter().collect();
            let mut merged = sketches[0].clone();
            sketches[1..].iter().for_each(|s| merged.merge(s));
            prop_assert_eq!(
                Quantiles::merged_quantile(&refs, q).map(f64::to_bits),
                merged.quantile(q).map(f64::to_bits),
                "promoted {}", merged.promoted
            );
        }

        #[test]
        fn quantile_merge_equals_one_pass_and_is_accurate(
            values in proptest::collection::vec(-1e5..1e5f64, 1..200),
            cut in any::<prop::sample::Index>(),
            q in 0.0..=1.0f64,
        ) {
            let config = QuantileConfig::default();
            let mut whole = Quantiles::new(config);
            for &v in &values {
                whole.record(v, 1.0);
            }
            let (left, right) = values.split_at(cut.index(values.len() + 1));
            let (mut a, mut b) = (Quantiles::new(config), Quantiles::new(config));
            left.iter().for_each(|&v| a.record(v, 1.0));
            right.iter().for_each(|&v| b.record(v, 1.0));
            a.merge(&b);
            prop_assert_eq!(a.quantile(q), whole.quantile(q));
            // Against the exact order statistic: within 1 % (2 significant
            // digits) plus the resolution.
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            let exact = sorted[rank - 1];
            let got = whole.quantile(q).unwrap();
            prop_assert!((got - exact).abs() <= exact.abs() * 0.01 + 2e-3, "q {} got {} exact {}", q, got, exact);
        }
    }
}

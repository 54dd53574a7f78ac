//! Adaptive per-key sampling towards a target rate.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::event::EventBatch;
use crate::sample::{Rng, SampleError, SampleStats, Sampled};
use crate::time::{Span, Timestamp};

/// A key whose smoothed volume falls below this many events per interval
/// is forgotten.
const EXPIRE_BELOW: f64 = 0.01;

/// Configuration of an [`AdaptiveSampler`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Kept events per second to aim at (default 100).
    pub target_rate: f64,
    /// How often the per-key rates are recomputed (default 10 s).
    pub interval: Span,
    /// Weight of the newest interval in each key's moving average of
    /// volume, in (0, 1] (default 0.5).
    pub smoothing: f64,
    /// Keys tracked one by one (default 10,000); keys beyond share one
    /// overflow volume and rate, and are still sampled and counted.
    pub max_keys: usize,
    /// Seed of the sampling draws.
    pub seed: u64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig { target_rate: 100.0, interval: Span::from_secs(10), smoothing: 0.5, max_keys: 10_000, seed: 0 }
    }
}

/// Counters of an [`AdaptiveSampler`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AdaptiveStats {
    /// Events seen, kept and sampled out (nested in JSON, so that the
    /// stats also encode in formats without self-description, as
    /// snapshots do).
    pub decisions: SampleStats,
    /// Events whose key was beyond `max_keys` (included in `decisions`).
    pub overflow_seen: u64,
    /// Of those, events kept.
    pub overflow_kept: u64,
    /// Keys forgotten after their volume decayed.
    pub keys_expired: u64,
    /// Intervals completed.
    pub intervals: u64,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Volume {
    /// Moving average of events per interval.
    ewma: f64,
    /// Events in the current interval.
    count: u64,
}

impl Volume {
    /// Closes `periods` intervals, the first with `count` events and the
    /// rest empty.
    fn roll(&mut self, alpha: f64, periods: i64) {
        let first = alpha * self.count as f64 + (1.0 - alpha) * self.ewma;
        let quiet = i32::try_from(periods - 1).unwrap_or(i32::MAX);
        self.ewma = first * (1.0 - alpha).powi(quiet);
        self.count = 0;
    }

    /// The volume to size this key's rate on: its average, or more if the
    /// current interval is already busier.
    fn estimate(&self) -> f64 {
        self.ewma.max(self.count as f64).max(1.0)
    }
}

/// Samples events towards a target rate of kept events per second, sharing
/// the budget out between keys (routes, devices, customers…) so that rare
/// keys are kept whole and frequent keys are sampled harder.
///
/// Each interval, every key's volume is smoothed (exponential moving
/// average) and the interval's budget, `target_rate × interval`, is
/// water-filled: a level `c` such that `Σ min(volume, c) = budget`; a key
/// is then kept with probability `min(1, c / volume)` (`c` is at most the
/// budget, even while all volume fits it). Within an interval,
/// a key that is already busier than its average (or new) is sized on its
/// count so far, so a sudden flood is throttled before the interval ends.
/// Every kept event carries weight `1 / p`; since `p` is fixed before the
/// draw, weighted counts are unbiased.
///
/// Until the first interval ends no volume is known: each key is sized on
/// its own count against the whole budget `B`, so a key with `N` events
/// keeps about `B × (1 + ln(N / B))` of them and the first interval may
/// keep more than the target.
///
/// One sampler serves one budget: keep one per tenant for per-tenant
/// targets. Memory is bounded by `max_keys`; keys beyond it share one
/// overflow volume, are sampled at its rate and counted in
/// [`AdaptiveStats::overflow_seen`].
///
/// ```
/// use edgestream::sample::{AdaptiveConfig, AdaptiveSampler};
/// use edgestream::time::{Span, Timestamp};
///
/// let config = AdaptiveConfig { target_rate: 10.0, interval: Span::from_secs(1), ..AdaptiveConfig::default() };
/// let mut sampler = AdaptiveSampler::new(config)?;
/// let t0 = Timestamp::from_secs(1_795_838_400).unwrap();
/// for second in 0..10 {
///     let now = t0.saturating_add(Span::from_secs(second));
///     for i in 0..1_000 {
///         sampler.sample("/health", now); // a flood
///         if i % 500 == 0 {
///             assert!(sampler.sample("/checkout", now).is_kept()); // rare: always kept
///         }
///     }
/// }
/// assert!(sampler.stats().decisions.kept < 200);
/// # Ok::<(), edgestream::sample::SampleError>(())
/// ```
///
/// It serializes (with serde) as its whole state, for snapshots: a
/// restored sampler decides exactly as the original would have.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(serialize = "K: Serialize + Hash + Eq", deserialize = "K: Deserialize<'de> + Hash + Eq"))]
pub struct AdaptiveSampler<K> {
    config: AdaptiveConfig,
    /// Kept events per interval.
    budget: f64,
    keys: HashMap<K, Volume, foldhash::fast::RandomState>,
    overflow: Volume,
    /// The water level `c`; infinite when everything fits the budget.
    level: f64,
    start: Option<Timestamp>,
    rng: Rng,
    stats: AdaptiveStats,
}

impl<K: Hash + Eq> AdaptiveSampler<K> {
    /// A sampler with no history: until the first interval ends, every key
    /// is sized as if it were alone.
    pub fn new(config: AdaptiveConfig) -> Result<Self, SampleError> {
        if !(config.target_rate.is_finite() && config.target_rate > 0.0) {
            return Err(SampleError::Target(config.target_rate));
        }
        if !config.interval.is_positive() {
            return Err(SampleError::Interval);
        }
        if !(config.smoothing > 0.0 && config.smoothing <= 1.0) {
            return Err(SampleError::Smoothing(config.smoothing));
        }
        let budget = config.target_rate * config.interval.as_nanos() as f64 / 1e9;
        Ok(AdaptiveSampler {
            rng: Rng::new(config.seed),
            budget,
            keys: HashMap::default(),
            overflow: Volume::default(),
            level: budget,
            start: None,
            stats: AdaptiveStats::default(),
            config,
        })
    }

    /// Decides on one event of `key` at `now`, and counts the decision.
    pub fn sample<Q>(&mut self, key: &Q, now: Timestamp) -> Sampled
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.roll(now);
        let level = self.level;
        let keep_p = |volume: &mut Volume| {
            volume.count = volume.count.saturating_add(1);
            // At least the smallest normal number, so the weight is finite.
            (level / volume.estimate()).clamp(f64::MIN_POSITIVE, 1.0)
        };
        let room = self.keys.len() < self.config.max_keys;
        let (p, overflow) = match self.keys.get_mut(key) {
            Some(volume) => (keep_p(volume), false),
            None if room => {
                let mut volume = Volume::default();
                let p = keep_p(&mut volume);
                self.keys.insert(key.to_owned(), volume);
                (p, false)
            }
            None => (keep_p(&mut self.overflow), true),
        };
        let decision = Sampled::from_draw(p, self.rng.next_f64());

        self.stats.decisions.count(decision);
        if overflow {
            self.stats.overflow_seen += 1;
            self.stats.overflow_kept += u64::from(decision.is_kept());
        }
        decision
    }

    /// Keys tracked one by one.
    pub fn tracked_keys(&self) -> usize {
        self.keys.len()
    }

    /// The current water level: the most events per interval any one key
    /// keeps (the whole budget while all volume fits it).
    pub fn level(&self) -> f64 {
        self.level
    }

    /// Counters.
    pub fn stats(&self) -> &AdaptiveStats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &AdaptiveConfig {
        &self.config
    }

    /// Closes the intervals that ended by `now` and recomputes the level.
    fn roll(&mut self, now: Timestamp) {
        let Some(start) = self.start else {
            self.start = Some(now);
            return;
        };
        let interval = self.config.interval.as_nanos();
        let elapsed = now.saturating_since(start).as_nanos();
        if elapsed < interval {
            return;
        }
        let periods = elapsed / interval;
        let alpha = self.config.smoothing;
        let before = self.keys.len();
        // A key is forgotten once quiet for a whole interval and its
        // average has decayed (not in the interval it first shows up).
        self.keys.retain(|_, v| {
            let quiet = v.count == 0;
            v.roll(alpha, periods);
            !quiet || v.ewma >= EXPIRE_BELOW
        });
        self.stats.keys_expired += (before - self.keys.len()) as u64;
        self.overflow.roll(alpha, periods);
        self.start = Some(start.saturating_add(Span::from_nanos(periods.saturating_mul(interval))));
        self.stats.intervals = self.stats.intervals.saturating_add(periods as u64);

        let mut volumes: Vec<f64> = self.keys.values().map(|v| v.ewma).collect();
        if self.overflow.ewma >= EXPIRE_BELOW {
            volumes.push(self.overflow.ewma);
        }
        // While everything fits, no key may still keep more than the whole
        // budget: a sudden flood is throttled by its own count.
        self.level = water_level(&mut volumes, self.budget).min(self.budget);
    }
}

impl AdaptiveSampler<String> {
    /// Writes one weight per event of `batch` into `weights` (cleared
    /// first), keyed by the value of dim `dim` (events without it share
    /// the key `""`): `1 / p` for a kept event, 0 for one sampled out.
    pub fn weigh_batch_by_dim(&mut self, batch: &EventBatch, dim: &str, now: Timestamp, weights: &mut Vec<f64>) {
        weights.clear();
        weights.extend(batch.iter().map(|event| self.sample(event.dim(dim).unwrap_or(""), now).weight()));
    }
}

/// The level `c` with `Σ min(v, c) = budget`, or infinity when
/// `Σ v <= budget`. Sorts `volumes`.
fn water_level(volumes: &mut [f64], budget: f64) -> f64 {
    volumes.sort_unstable_by(f64::total_cmp);
    let mut remaining = budget;
    let n = volumes.len();
    for (i, &v) in volumes.iter().enumerate() {
        let share = remaining / (n - i) as f64;
        if v > share {
            return share;
        }
        remaining -= v;
    }
    f64::INFINITY
}

#[cfg(test)]
mod tests {
    use super::water_level;

    #[test]
    fn water_level_shares_the_budget_out() {
        assert_eq!(water_level(&mut [1.0, 2.0, 3.0], 10.0), f64::INFINITY);
        // 1 + 2 fit; the two big keys share the remaining 7.
        assert_eq!(water_level(&mut [100.0, 1.0, 2.0, 50.0], 10.0), 3.5);
        assert_eq!(water_level(&mut [], 10.0), f64::INFINITY);
    }
}

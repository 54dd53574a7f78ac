//! GCRA rate limiting: a single limiter and a keyed one with a bounded key
//! store.

use std::collections::HashMap;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::time::{Span, Timestamp};

/// Sub-nanosecond resolution of the theoretical arrival time, so that rates
/// that do not divide a second (3 per second) neither drift nor round in
/// the sender's favour.
const SCALE: i128 = 1 << 20;

/// A rate and a burst: `cells` per `per`, and up to `burst` cells at once
/// after a quiet period.
///
/// Over any interval of length `t`, a limiter with this quota admits at
/// most `burst + cells × t / per` cells. `cells == 0` or `burst == 0`
/// admits nothing.
///
/// ```
/// use edgestream::flow::Quota;
/// use edgestream::time::Span;
///
/// let q: Quota = serde_json::from_str(r#"{"cells": 100, "per": "1s", "burst": 200}"#)?;
/// assert_eq!(q, Quota::per_second(100).with_burst(200));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Cells replenished per `per`.
    pub cells: u64,
    /// The period `cells` refer to.
    pub per: Span,
    /// Most cells admitted at once (the bucket size).
    pub burst: u64,
}

impl Quota {
    /// `cells` per second, with a burst of the same size.
    pub fn per_second(cells: u64) -> Self {
        Quota { cells, per: Span::from_secs(1), burst: cells }
    }

    /// `cells` per minute, with a burst of the same size.
    pub fn per_minute(cells: u64) -> Self {
        Quota { cells, per: Span::from_mins(1), burst: cells }
    }

    /// Sets the burst.
    pub fn with_burst(mut self, burst: u64) -> Self {
        self.burst = burst;
        self
    }

    /// The emission interval (time per cell) in scaled units, or `None`
    /// when the quota admits nothing.
    fn interval(&self) -> Option<i128> {
        let per = i128::from(self.per.as_nanos());
        if self.cells == 0 || self.burst == 0 || per <= 0 {
            return None;
        }
        // Rounded up: the limiter is never more generous than the quota.
        let cells = i128::from(self.cells);
        Some((per * SCALE + cells - 1) / cells)
    }
}

/// The answer to a request for cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Admitted; the cells are charged.
    Allow,
    /// Refused; nothing is charged. The same request would be admitted
    /// after `retry_after` (for an HTTP `Retry-After`), if nothing else is
    /// charged meanwhile.
    Deny {
        /// How long to wait.
        retry_after: Span,
    },
    /// Refused, and it never will be: the request costs more than the
    /// burst, or the quota admits nothing.
    Exceeds,
}

impl Decision {
    /// Whether the request was admitted.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// A generic cell rate algorithm limiter: one theoretical arrival time,
/// 16 bytes, no clock (the caller passes `now`).
///
/// Time going backwards is harmless: an earlier `now` only makes the
/// limiter stricter for that call. Changing the quota keeps the state (no
/// reset, no free burst).
///
/// ```
/// use edgestream::flow::{Decision, Gcra, Quota};
/// use edgestream::time::{Span, Timestamp};
///
/// let quota = Quota::per_second(10).with_burst(2);
/// let mut limiter = Gcra::new();
/// let t = Timestamp::from_secs(1_795_838_400).unwrap();
/// assert_eq!(limiter.check(&quota, t, 2), Decision::Allow);
/// assert_eq!(limiter.check(&quota, t, 1), Decision::Deny { retry_after: Span::from_millis(100) });
/// assert_eq!(limiter.check(&quota, t, 3), Decision::Exceeds);
/// assert!(limiter.check(&quota, t.saturating_add(Span::from_millis(100)), 1).is_allowed());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gcra {
    /// Theoretical arrival time of the next cell, in ns × `SCALE`.
    tat: i128,
}

impl Default for Gcra {
    fn default() -> Self {
        Gcra::new()
    }
}

impl Gcra {
    /// A limiter with its whole burst available.
    pub fn new() -> Self {
        Gcra { tat: i128::MIN }
    }

    /// Asks for `cost` cells at `now` (a batch of N events costs N). A
    /// cost of 0 is always admitted and charges nothing.
    pub fn check(&mut self, quota: &Quota, now: Timestamp, cost: u64) -> Decision {
        if cost == 0 {
            return Decision::Allow;
        }
        let Some(interval) = quota.interval() else { return Decision::Exceeds };
        if cost > quota.burst {
            return Decision::Exceeds;
        }
        // Saturating: extreme quotas (huge periods, bursts near u64::MAX)
        // clamp instead of overflowing.
        let now = i128::from(now.as_nanos()) * SCALE;
        let tolerance = interval.saturating_mul(i128::from(quota.burst));
        let new_tat = self.tat.max(now).saturating_add(interval.saturating_mul(i128::from(cost)));
        let wait = new_tat.saturating_sub(now).saturating_sub(tolerance);
        if wait <= 0 {
            self.tat = new_tat;
            return Decision::Allow;
        }
        // Round the wait up to whole nanoseconds: retrying after it succeeds.
        let nanos = wait.saturating_add(SCALE - 1) / SCALE;
        Decision::Deny { retry_after: Span::from_nanos(i64::try_from(nanos).unwrap_or(i64::MAX)) }
    }

    /// Whether the limiter is back to its full burst at `now`, so that its
    /// state can be dropped without changing any later decision.
    pub fn is_idle(&self, now: Timestamp) -> bool {
        self.tat <= i128::from(now.as_nanos()) * SCALE
    }
}

/// Counters of a [`RateLimiter`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RateStats {
    /// Requests admitted.
    pub allowed: u64,
    /// Cells charged by admitted requests.
    pub allowed_cells: u64,
    /// Requests refused (`Deny` or `Exceeds`).
    pub denied: u64,
    /// Cells of refused requests.
    pub denied_cells: u64,
    /// Keys dropped because they were idle (back to a full burst: no
    /// decision changes).
    pub evicted_idle: u64,
    /// Keys dropped at the cap while not idle: each such key gets its full
    /// burst back early.
    pub evicted_active: u64,
}

/// Per-key GCRA limiters (per tenant, or any key) with a bounded key store.
///
/// A key's state is one [`Gcra`]; a key back to its full burst is idle and
/// dropped without changing any decision. At `max_keys`, the store first
/// drops idle keys and, if too few are idle, the keys closest to idle
/// (counted in [`RateStats::evicted_active`]), so memory stays at about
/// `max_keys × (size_of::<K>() + 24)` bytes plus the hash table's slack.
///
/// ```
/// use edgestream::flow::{Quota, RateLimiter};
/// use edgestream::time::Timestamp;
///
/// let mut limits = RateLimiter::new(Quota::per_second(1_000), 100_000);
/// limits.set_quota("big-tenant", Quota::per_second(50_000));
/// let now = Timestamp::from_secs(1_795_838_400).unwrap();
/// assert!(limits.check(&"small-tenant", now, 1_000).is_allowed());
/// assert!(!limits.check(&"small-tenant", now, 1).is_allowed());
/// assert!(limits.check(&"big-tenant", now, 40_000).is_allowed());
/// assert_eq!(limits.stats().denied, 1);
/// ```
///
/// It serializes (with serde) as its whole state, quotas and counters
/// included, for snapshots.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(serialize = "K: Serialize + Hash + Eq", deserialize = "K: Deserialize<'de> + Hash + Eq"))]
pub struct RateLimiter<K> {
    default: Quota,
    quotas: HashMap<K, Quota, foldhash::fast::RandomState>,
    state: HashMap<K, Gcra, foldhash::fast::RandomState>,
    max_keys: usize,
    stats: RateStats,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter giving every key `default` unless [`RateLimiter::set_quota`]
    /// says otherwise, tracking at most `max_keys` keys (at least 1).
    pub fn new(default: Quota, max_keys: usize) -> Self {
        RateLimiter {
            default,
            quotas: HashMap::default(),
            state: HashMap::default(),
            max_keys: max_keys.max(1),
            stats: RateStats::default(),
        }
    }

    /// Gives `key` its own quota. Its state is kept: the change applies
    /// from the next check on, without a reset.
    pub fn set_quota(&mut self, key: K, quota: Quota) {
        self.quotas.insert(key, quota);
    }

    /// Changes the quota of keys without their own. State is kept.
    pub fn set_default_quota(&mut self, quota: Quota) {
        self.default = quota;
    }

    /// The quota `key` is held to.
    pub fn quota(&self, key: &K) -> Quota {
        self.quotas.get(key).copied().unwrap_or(self.default)
    }

    /// Asks for `cost` cells for `key` at `now`.
    pub fn check(&mut self, key: &K, now: Timestamp, cost: u64) -> Decision {
        let quota = self.quota(key);
        let decision = match self.state.get_mut(key) {
            Some(gcra) => gcra.check(&quota, now, cost),
            None => {
                let mut gcra = Gcra::new();
                let decision = gcra.check(&quota, now, cost);
                // A refused first request leaves the state idle: no entry.
                if !gcra.is_idle(now) {
                    if self.state.len() >= self.max_keys {
                        self.make_room(now);
                    }
                    self.state.insert(key.clone(), gcra);
                }
                decision
            }
        };
        if decision.is_allowed() {
            self.stats.allowed = self.stats.allowed.saturating_add(1);
            self.stats.allowed_cells = self.stats.allowed_cells.saturating_add(cost);
        } else {
            self.stats.denied = self.stats.denied.saturating_add(1);
            self.stats.denied_cells = self.stats.denied_cells.saturating_add(cost);
        }
        decision
    }

    /// Drops idle keys; if that frees less than an eighth of the cap, also
    /// the keys closest to idle, down to seven eighths. One O(n) sweep per
    /// eighth of the cap of new keys keeps inserts amortized O(1).
    fn make_room(&mut self, now: Timestamp) {
        let before = self.state.len();
        self.state.retain(|_, g| !g.is_idle(now));
        let idle = before - self.state.len();
        self.stats.evicted_idle = self.stats.evicted_idle.saturating_add(idle as u64);
        let target = self.max_keys - self.max_keys.div_ceil(8);
        if self.state.len() <= target {
            return;
        }
        let excess = self.state.len() - target;
        let mut tats: Vec<i128> = self.state.values().map(|g| g.tat).collect();
        let (_, &mut cutoff, _) = tats.select_nth_unstable(excess - 1);
        let mut dropped = 0;
        self.state.retain(|_, g| {
            let drop = dropped < excess && g.tat <= cutoff;
            dropped += usize::from(drop);
            !drop
        });
        self.stats.evicted_active = self.stats.evicted_active.saturating_add(dropped as u64);
    }

    /// Carries the per-key state and the counters of `saved` (a limiter
    /// restored from a snapshot) into this one, which keeps its own
    /// quotas and key cap: a restart with new quotas neither resets nor
    /// forgives what keys have used. Beyond the cap, the keys closest to
    /// idle are dropped.
    pub fn resume_from(&mut self, saved: RateLimiter<K>, now: Timestamp) {
        self.state = saved.state.into_iter().collect();
        self.stats = saved.stats;
        if self.state.len() > self.max_keys {
            self.make_room(now);
        }
    }

    /// Keys with state (not idle when last checked).
    pub fn tracked_keys(&self) -> usize {
        self.state.len()
    }

    /// Counters.
    pub fn stats(&self) -> &RateStats {
        &self.stats
    }
}

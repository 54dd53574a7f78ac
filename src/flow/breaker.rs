//! A circuit breaker for a downstream sink.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::time::{Span, Timestamp};

/// Buckets of the rolling failure window.
const BUCKETS: usize = 10;
/// Transitions kept until [`CircuitBreaker::drain_transitions`] takes them.
const MAX_PENDING_TRANSITIONS: usize = 16;

/// When a [`CircuitBreaker`] opens and how it recovers.
///
/// ```
/// use edgestream::flow::BreakerConfig;
///
/// let config: BreakerConfig = serde_json::from_str(r#"{"failure_ratio": 0.25, "cooldown": "1m"}"#)?;
/// assert_eq!(config.min_calls, BreakerConfig::default().min_calls);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Opens when at least this fraction of the calls in the window failed
    /// (default 0.5)…
    pub failure_ratio: f64,
    /// …and the window holds at least this many calls (default 10).
    pub min_calls: u32,
    /// The rolling window the ratio is measured over (default 30 s), in
    /// ten buckets.
    pub window: Span,
    /// How long the breaker stays open before trial calls (default 10 s).
    pub cooldown: Span,
    /// Trial calls let through when half-open; all must succeed for the
    /// breaker to close, one failure opens it again (default 3).
    pub trial_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_ratio: 0.5,
            min_calls: 10,
            window: Span::from_secs(30),
            cooldown: Span::from_secs(10),
            trial_calls: 3,
        }
    }
}

/// A [`BreakerConfig`] that cannot work.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BreakerError {
    /// The failure ratio must be in (0, 1].
    #[error("failure ratio must be in (0, 1], got {0}")]
    FailureRatio(f64),
    /// The window and the cooldown must be positive.
    #[error("the window and the cooldown must be positive")]
    Span,
    /// At least one trial call is needed to close again.
    #[error("trial_calls must be at least 1")]
    TrialCalls,
}

/// The state of a [`CircuitBreaker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls are refused until the cooldown ends.
    Open,
    /// A few trial calls go through to test the sink.
    HalfOpen,
}

/// A change of [`BreakerState`], for the admin view and the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// When it happened.
    pub at: Timestamp,
    /// The state left.
    pub from: BreakerState,
    /// The state entered.
    pub to: BreakerState,
    /// Calls in the window when the breaker opened from closed (0
    /// otherwise).
    pub calls: u64,
    /// Failed calls among them.
    pub failures: u64,
}

/// Counters of a [`CircuitBreaker`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BreakerStats {
    /// Calls let through.
    pub allowed: u64,
    /// Calls refused while open (or half-open with all trials out).
    pub rejected: u64,
    /// Successes recorded.
    pub successes: u64,
    /// Failures recorded.
    pub failures: u64,
    /// Times the breaker opened.
    pub opened: u64,
    /// Times it closed again after trials.
    pub closed: u64,
    /// Results of calls permitted before the last state change, counted
    /// but not acted on.
    pub stale_results: u64,
    /// Transitions dropped from the pending list because nobody drained it.
    pub transitions_dropped: u64,
}

/// Permission to make one call, from [`CircuitBreaker::acquire`]; hand it
/// back with the call's result to [`CircuitBreaker::record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "record the call's outcome with this permit"]
pub struct Permit {
    /// The breaker's state generation when the permit was given.
    generation: u64,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Index of the bucket's time slice (`now / width`).
    slice: i64,
    ok: u64,
    failed: u64,
}

const EMPTY: Bucket = Bucket { slice: i64::MIN, ok: 0, failed: 0 };

#[derive(Clone, Copy, Debug)]
enum State {
    Closed,
    Open { until: Timestamp },
    HalfOpen { started: u32, succeeded: u32, deadline: Timestamp },
}

/// Closed / open / half-open circuit breaker with a rolling failure ratio
/// and a cooldown, so a failing sink is given a rest instead of every
/// request, and recovers through a few trial calls.
///
/// Every permitted call gets a [`Permit`]; a result recorded with a permit
/// from before the last state change (a slow call that outlived it) is
/// counted in [`BreakerStats::stale_results`] and changes nothing. Trials
/// that have not all succeeded within a cooldown of the breaker half-opening
/// (a trial that never reports) open it again.
///
/// Clock-free: calls take `now`, and the breaker's time is the latest
/// `now` seen, so time going backwards is read as no time passing (and a
/// `now` far in the future is believed).
///
/// ```
/// use edgestream::flow::{BreakerConfig, BreakerState, CircuitBreaker};
/// use edgestream::time::{Span, Timestamp};
///
/// let config = BreakerConfig { min_calls: 4, trial_calls: 1, ..BreakerConfig::default() };
/// let mut sink = CircuitBreaker::new(config)?;
/// let t = Timestamp::from_secs(1_795_838_400).unwrap();
/// for _ in 0..4 {
///     let permit = sink.acquire(t).unwrap();
///     sink.record(t, permit, false);
/// }
/// assert_eq!(sink.state(), BreakerState::Open);
/// assert_eq!(sink.acquire(t), Err(config.cooldown)); // retry after
///
/// let later = t.saturating_add(config.cooldown);
/// let trial = sink.acquire(later).unwrap();
/// sink.record(later, trial, true);
/// assert_eq!(sink.state(), BreakerState::Closed);
/// let states: Vec<_> = sink.drain_transitions().map(|t| t.to).collect();
/// assert_eq!(states, [BreakerState::Open, BreakerState::HalfOpen, BreakerState::Closed]);
/// # Ok::<(), edgestream::flow::BreakerError>(())
/// ```
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: State,
    /// Bumped at every state change; permits carry it.
    generation: u64,
    buckets: [Bucket; BUCKETS],
    /// Latest `now` seen.
    clock: Timestamp,
    pending: VecDeque<Transition>,
    stats: BreakerStats,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Result<Self, BreakerError> {
        if !(config.failure_ratio > 0.0 && config.failure_ratio <= 1.0) {
            return Err(BreakerError::FailureRatio(config.failure_ratio));
        }
        if !config.window.is_positive() || !config.cooldown.is_positive() {
            return Err(BreakerError::Span);
        }
        if config.trial_calls == 0 {
            return Err(BreakerError::TrialCalls);
        }
        Ok(CircuitBreaker {
            config,
            state: State::Closed,
            generation: 0,
            buckets: [EMPTY; BUCKETS],
            clock: Timestamp::MIN,
            pending: VecDeque::new(),
            stats: BreakerStats::default(),
        })
    }

    /// Asks to call the sink at `now`: a permit, or how long to wait (for
    /// an HTTP `Retry-After`).
    pub fn acquire(&mut self, now: Timestamp) -> Result<Permit, Span> {
        let now = self.tick(now);
        if let State::Open { until } = self.state {
            if now < until {
                self.stats.rejected += 1;
                return Err(until.saturating_since(now));
            }
            let deadline = now.saturating_add(self.config.cooldown);
            self.transition(now, State::HalfOpen { started: 0, succeeded: 0, deadline }, 0, 0);
        }
        if let State::HalfOpen { started, deadline, .. } = self.state {
            if now >= deadline {
                // A trial never reported: read it as a failure.
                self.open(now, 0, 0);
                self.stats.rejected += 1;
                return Err(self.config.cooldown);
            }
            if started >= self.config.trial_calls {
                self.stats.rejected += 1;
                return Err(deadline.saturating_since(now));
            }
            if let State::HalfOpen { started, .. } = &mut self.state {
                *started += 1;
            }
        }
        self.stats.allowed += 1;
        Ok(Permit { generation: self.generation })
    }

    /// Records the outcome of the call `permit` allowed.
    pub fn record(&mut self, now: Timestamp, permit: Permit, success: bool) {
        let now = self.tick(now);
        if success {
            self.stats.successes += 1;
        } else {
            self.stats.failures += 1;
        }
        if permit.generation != self.generation {
            self.stats.stale_results += 1;
            return;
        }
        match self.state {
            State::Closed => {
                self.count(now, success);
                if success {
                    return;
                }
                let (calls, failures) = self.window_counts(now);
                let tripped = calls >= u64::from(self.config.min_calls)
                    && failures as f64 >= self.config.failure_ratio * calls as f64;
                if tripped {
                    self.open(now, calls, failures);
                }
            }
            State::HalfOpen { started, succeeded, deadline } => {
                if !success {
                    self.open(now, 0, 0);
                    return;
                }
                let succeeded = succeeded + 1;
                self.state = State::HalfOpen { started, succeeded, deadline };
                if succeeded >= self.config.trial_calls {
                    self.buckets = [EMPTY; BUCKETS];
                    self.stats.closed += 1;
                    self.transition(now, State::Closed, 0, 0);
                }
            }
            State::Open { .. } => {}
        }
    }

    /// The current state (an open breaker past its cooldown reads `Open`
    /// until the next [`CircuitBreaker::acquire`]).
    pub fn state(&self) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Takes the transitions since the last call (at most 16 are kept;
    /// older ones are counted in [`BreakerStats::transitions_dropped`]).
    pub fn drain_transitions(&mut self) -> impl Iterator<Item = Transition> + '_ {
        self.pending.drain(..)
    }

    /// Counters.
    pub fn stats(&self) -> &BreakerStats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    fn tick(&mut self, now: Timestamp) -> Timestamp {
        self.clock = self.clock.max(now);
        self.clock
    }

    fn width(&self) -> i64 {
        (self.config.window.as_nanos() / BUCKETS as i64).max(1)
    }

    fn count(&mut self, now: Timestamp, success: bool) {
        let slice = now.as_nanos().div_euclid(self.width());
        let index = slice.rem_euclid(BUCKETS as i64) as usize;
        if let Some(bucket) = self.buckets.get_mut(index) {
            if bucket.slice != slice {
                *bucket = Bucket { slice, ok: 0, failed: 0 };
            }
            if success {
                bucket.ok += 1;
            } else {
                bucket.failed += 1;
            }
        }
    }

    /// Calls and failures in the window ending at `now`.
    fn window_counts(&self, now: Timestamp) -> (u64, u64) {
        let current = now.as_nanos().div_euclid(self.width());
        let live =
            self.buckets.iter().filter(|b| b.slice <= current && current.saturating_sub(b.slice) < BUCKETS as i64);
        live.fold((0, 0), |(calls, failed), b| (calls + b.ok + b.failed, failed + b.failed))
    }

    fn open(&mut self, now: Timestamp, calls: u64, failures: u64) {
        self.stats.opened += 1;
        self.transition(now, State::Open { until: now.saturating_add(self.config.cooldown) }, calls, failures);
    }

    fn transition(&mut self, at: Timestamp, to: State, calls: u64, failures: u64) {
        let from = self.state();
        self.state = to;
        self.generation += 1;
        if self.pending.len() >= MAX_PENDING_TRANSITIONS {
            self.pending.pop_front();
            self.stats.transitions_dropped += 1;
        }
        self.pending.push_back(Transition { at, from, to: self.state(), calls, failures });
    }
}

//! Load-driven degradation: a load signal from the host's measurements
//! picks a fidelity level, with hysteresis and a minimum dwell time.

use serde::{Deserialize, Serialize};

use crate::time::{Span, Timestamp};

/// How much of the incoming data a pipeline processes in full.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "level", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fidelity {
    /// Every event.
    Full,
    /// A sample of the events, kept with probability `rate` and weighted
    /// `1 / rate` (see [`crate::sample`]).
    Sampled {
        /// Probability of keeping an event, in (0, 1].
        rate: f64,
    },
    /// Window aggregates only: no raw events, no per-event outputs.
    AggregatesOnly,
}

/// The host's measurements, each optional. The load is the largest of the
/// ratios given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadInputs {
    /// Fill ratio of the ingest queue, 0 to 1 (for example
    /// [`crate::flow::LocalQueue::fill_ratio`]).
    pub queue_fill: Option<f64>,
    /// Events per second arriving, compared with
    /// [`LadderConfig::capacity`].
    pub ingest_rate: Option<f64>,
    /// Processing time of the last batch, compared with
    /// [`LadderConfig::batch_budget`].
    pub batch_time: Option<Span>,
}

/// Which measurement set the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadSignal {
    /// [`LoadInputs::queue_fill`].
    QueueFill,
    /// [`LoadInputs::ingest_rate`] over the capacity.
    IngestRate,
    /// [`LoadInputs::batch_time`] over the budget.
    BatchTime,
}

/// One step down from full fidelity: entered when the load reaches
/// `enter`, left when it falls below `exit`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rung {
    /// The fidelity on this rung.
    pub fidelity: Fidelity,
    /// Load at or above which the ladder climbs to this rung.
    pub enter: f64,
    /// Load below which the ladder steps down from it (at most `enter`:
    /// the gap is the hysteresis).
    pub exit: f64,
}

/// The ladder's configuration.
///
/// The default: capacity 10,000 events/s, a batch budget of 50 ms,
/// `Sampled { rate: 0.1 }` from load 0.8 (back below 0.6), `AggregatesOnly`
/// from 0.95 (back below 0.75), at least 30 s on a rung before stepping
/// down, no smoothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LadderConfig {
    /// Events per second handled at full fidelity (load 1 for
    /// [`LoadInputs::ingest_rate`]).
    pub capacity: f64,
    /// Processing time per batch that counts as load 1.
    pub batch_budget: Span,
    /// The rungs above [`Fidelity::Full`], by increasing `enter`.
    pub rungs: Vec<Rung>,
    /// Least time on a rung before stepping down from it. Climbing is
    /// immediate: an overload is answered at once, and the hysteresis
    /// keeps the ladder from climbing back and forth.
    pub min_dwell: Span,
    /// Weight of the newest load reading in an exponential moving average,
    /// in (0, 1]; 1 uses each reading as is.
    pub smoothing: f64,
}

impl Default for LadderConfig {
    fn default() -> Self {
        LadderConfig {
            capacity: 10_000.0,
            batch_budget: Span::from_millis(50),
            rungs: vec![
                Rung { fidelity: Fidelity::Sampled { rate: 0.1 }, enter: 0.8, exit: 0.6 },
                Rung { fidelity: Fidelity::AggregatesOnly, enter: 0.95, exit: 0.75 },
            ],
            min_dwell: Span::from_secs(30),
            smoothing: 1.0,
        }
    }
}

/// A [`LadderConfig`] that cannot work.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LadderError {
    /// Capacity must be positive and finite.
    #[error("capacity must be a positive number of events per second, got {0}")]
    Capacity(f64),
    /// The batch budget must be positive.
    #[error("batch budget must be positive")]
    BatchBudget,
    /// Smoothing must be in (0, 1].
    #[error("smoothing must be in (0, 1], got {0}")]
    Smoothing(f64),
    /// A rung's thresholds are not finite, or `exit` is above `enter`.
    #[error("rung {rung}: thresholds must be finite with exit <= enter")]
    Thresholds {
        /// Index of the rung.
        rung: usize,
    },
    /// Rungs must be listed by strictly increasing `enter`.
    #[error("rung {rung}: enter must be above the previous rung's")]
    Order {
        /// Index of the rung.
        rung: usize,
    },
    /// A sampled rung's rate must be in (0, 1].
    #[error("rung {rung}: sample rate must be in (0, 1]")]
    Rate {
        /// Index of the rung.
        rung: usize,
    },
}

/// A fidelity change, for the admin view and the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LevelChange {
    /// When it happened.
    pub at: Timestamp,
    /// The fidelity left.
    pub from: Fidelity,
    /// The fidelity entered.
    pub to: Fidelity,
    /// The (smoothed) load that caused it.
    pub load: f64,
    /// The measurement that set the load.
    pub signal: LoadSignal,
}

/// Picks a [`Fidelity`] from the load: climbs at once to the highest rung
/// whose `enter` the load reaches, steps down one rung at a time when the
/// load is below the rung's `exit` and the ladder has been on it for
/// `min_dwell`.
///
/// ```
/// use edgestream::flow::{Fidelity, FidelityLadder, LadderConfig, LoadInputs};
/// use edgestream::time::{Span, Timestamp};
///
/// let mut ladder = FidelityLadder::new(LadderConfig::default())?;
/// let t = Timestamp::from_secs(1_795_838_400).unwrap();
/// let busy = LoadInputs { queue_fill: Some(0.85), ..LoadInputs::default() };
/// let change = ladder.observe(t, busy).unwrap();
/// assert_eq!(change.to, Fidelity::Sampled { rate: 0.1 });
///
/// // Calm again, but not for long enough yet.
/// let calm = LoadInputs { queue_fill: Some(0.1), ..LoadInputs::default() };
/// assert!(ladder.observe(t.saturating_add(Span::from_secs(5)), calm).is_none());
/// let change = ladder.observe(t.saturating_add(Span::from_secs(30)), calm).unwrap();
/// assert_eq!(change.to, Fidelity::Full);
/// # Ok::<(), edgestream::flow::LadderError>(())
/// ```
///
/// It serializes (with serde) as its whole state, for snapshots.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FidelityLadder {
    config: LadderConfig,
    /// 0 is full fidelity, `i + 1` is `rungs[i]`.
    level: usize,
    /// When the current level was entered.
    since: Option<Timestamp>,
    load: Option<(f64, LoadSignal)>,
    changes: u64,
}

impl FidelityLadder {
    /// A ladder at full fidelity.
    pub fn new(config: LadderConfig) -> Result<Self, LadderError> {
        if !(config.capacity.is_finite() && config.capacity > 0.0) {
            return Err(LadderError::Capacity(config.capacity));
        }
        if !config.batch_budget.is_positive() {
            return Err(LadderError::BatchBudget);
        }
        if !(config.smoothing > 0.0 && config.smoothing <= 1.0) {
            return Err(LadderError::Smoothing(config.smoothing));
        }
        let mut previous = f64::NEG_INFINITY;
        for (rung, r) in config.rungs.iter().enumerate() {
            if !(r.enter.is_finite() && r.exit.is_finite() && r.exit <= r.enter) {
                return Err(LadderError::Thresholds { rung });
            }
            if r.enter <= previous {
                return Err(LadderError::Order { rung });
            }
            if let Fidelity::Sampled { rate } = r.fidelity
                && !(rate > 0.0 && rate <= 1.0)
            {
                return Err(LadderError::Rate { rung });
            }
            previous = r.enter;
        }
        Ok(FidelityLadder { config, level: 0, since: None, load: None, changes: 0 })
    }

    /// Feeds the host's measurements at `now`; returns the change of
    /// fidelity they cause, if any. Measurements that are all absent (or
    /// NaN) change nothing.
    pub fn observe(&mut self, now: Timestamp, inputs: LoadInputs) -> Option<LevelChange> {
        let (reading, signal) = self.reading(inputs)?;
        let alpha = self.config.smoothing;
        let load = match self.load {
            Some((previous, _)) => alpha * reading + (1.0 - alpha) * previous,
            None => reading,
        };
        self.load = Some((load, signal));
        let since = *self.since.get_or_insert(now);

        let climb = self.config.rungs.iter().rposition(|r| load >= r.enter).map_or(0, |i| i + 1);
        let target = if climb > self.level {
            climb
        } else {
            let current = self.level.checked_sub(1).and_then(|i| self.config.rungs.get(i));
            let dwelt = now.saturating_since(since) >= self.config.min_dwell;
            match current {
                Some(rung) if load < rung.exit && dwelt => self.level - 1,
                _ => self.level,
            }
        };
        if target == self.level {
            return None;
        }
        let from = self.fidelity();
        self.level = target;
        self.since = Some(now);
        self.changes += 1;
        Some(LevelChange { at: now, from, to: self.fidelity(), load, signal })
    }

    /// The current fidelity.
    pub fn fidelity(&self) -> Fidelity {
        self.level.checked_sub(1).and_then(|i| self.config.rungs.get(i)).map_or(Fidelity::Full, |r| r.fidelity)
    }

    /// The last (smoothed) load and the measurement that set it.
    pub fn load(&self) -> Option<(f64, LoadSignal)> {
        self.load
    }

    /// Fidelity changes so far.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The configuration.
    pub fn config(&self) -> &LadderConfig {
        &self.config
    }

    /// The largest of the given ratios, ignoring absent ones and NaN (an
    /// infinite ratio is an overload).
    fn reading(&self, inputs: LoadInputs) -> Option<(f64, LoadSignal)> {
        let budget = self.config.batch_budget.as_nanos() as f64;
        [
            inputs.queue_fill.map(|f| (f, LoadSignal::QueueFill)),
            inputs.ingest_rate.map(|r| (r / self.config.capacity, LoadSignal::IngestRate)),
            inputs.batch_time.map(|t| (t.as_nanos() as f64 / budget, LoadSignal::BatchTime)),
        ]
        .into_iter()
        .flatten()
        .filter(|(ratio, _)| !ratio.is_nan())
        .max_by(|a, b| a.0.total_cmp(&b.0))
    }
}

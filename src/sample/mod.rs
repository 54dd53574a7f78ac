//! Sampling policies: which events to keep, and with what weight.
//!
//! Every kept event carries its weight, `1 / p` for a keep probability `p`,
//! so that weighted counts and sums ([`Windows::push_weighted`]) estimate
//! the unsampled totals without bias. Every decision is counted.
//!
//! - [`HashSampler`]: deterministic. An event is kept iff the [`stable_hash`]
//!   of its id (or of a chosen dim) is under a threshold, so every replica
//!   and every replay makes the same decision.
//! - [`Reservoir`]: a uniform sample of `k` events out of a stream of
//!   unknown length (Algorithm L), for "example events" per window or key.
//! - [`AdaptiveSampler`]: a target rate of kept events per second, shared
//!   out between keys so that rare keys are kept whole and frequent keys
//!   are sampled harder.
//!
//! # Sampling a batch
//!
//! The batch helpers write one weight per event (0 for an event sampled
//! out) without changing the batch, so the host can still archive every
//! event; [`EventBatch::retain_sampled`] then drops the sampled-out events
//! and their weights, ready for [`Windows::push_weighted`].
//!
//! ```
//! use edgestream::event::{Event, EventBatch};
//! use edgestream::sample::{HashKey, HashSampler};
//! use edgestream::time::Timestamp;
//!
//! let ts = Timestamp::from_secs(1_795_838_400).unwrap();
//! let mut batch = EventBatch::new();
//! for i in 0..1_000 {
//!     batch.push(&Event::new("acme", "clicks", ts).with_id(format!("evt-{i}")));
//! }
//! let mut sampler = HashSampler::new(0.25, HashKey::Id)?;
//! let mut weights = Vec::new();
//! sampler.weigh_batch(&batch, &mut weights);
//! let sampled_out = batch.retain_sampled(&mut weights).unwrap();
//! assert_eq!(batch.len(), weights.len());
//! assert_eq!(sampler.stats().kept, batch.len() as u64);
//! assert_eq!(sampler.stats().dropped, sampled_out as u64);
//! // Each kept event stands for four.
//! let estimate: f64 = weights.iter().sum();
//! assert!((estimate - 1_000.0).abs() < 150.0);
//! # Ok::<(), edgestream::sample::SampleError>(())
//! ```
//!
//! [`Windows::push_weighted`]: crate::window::Windows::push_weighted
//! [`EventBatch::retain_sampled`]: crate::event::EventBatch::retain_sampled

mod adaptive;
mod hash;
mod reservoir;

pub use adaptive::{AdaptiveConfig, AdaptiveSampler, AdaptiveStats};
pub use hash::{HashKey, HashSampler, stable_hash};
pub use reservoir::Reservoir;

use serde::{Deserialize, Serialize};

/// A sampling decision.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Sampled {
    /// Keep the event; it stands for `weight` events (`1 / p`, at least 1).
    Keep {
        /// The event's sample weight.
        weight: f64,
    },
    /// The event is sampled out (and counted).
    Drop,
}

impl Sampled {
    /// The decision for keep probability `p`, given a uniform draw in
    /// `[0, 1)`.
    fn from_draw(p: f64, draw: f64) -> Sampled {
        if p >= 1.0 {
            Sampled::Keep { weight: 1.0 }
        } else if draw < p {
            Sampled::Keep { weight: 1.0 / p }
        } else {
            Sampled::Drop
        }
    }

    /// The weight to give the event: `1 / p` if kept, 0 if sampled out.
    pub fn weight(&self) -> f64 {
        match *self {
            Sampled::Keep { weight } => weight,
            Sampled::Drop => 0.0,
        }
    }

    /// Whether the event is kept.
    pub fn is_kept(&self) -> bool {
        matches!(self, Sampled::Keep { .. })
    }
}

/// Counters of a sampler.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SampleStats {
    /// Events decided on.
    pub seen: u64,
    /// Events kept.
    pub kept: u64,
    /// Events sampled out.
    pub dropped: u64,
}

impl SampleStats {
    /// Counts `seen` decisions of which `kept` kept.
    pub(crate) fn count_many(&mut self, seen: u64, kept: u64) {
        self.seen += seen;
        self.kept += kept;
        self.dropped += seen - kept;
    }

    pub(crate) fn count(&mut self, decision: Sampled) {
        self.seen += 1;
        if decision.is_kept() {
            self.kept += 1;
        } else {
            self.dropped += 1;
        }
    }
}

/// A sampler configuration that cannot work.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SampleError {
    /// A probability outside [0, 1] (or not a number).
    #[error("sample rate must be in [0, 1], got {0}")]
    Rate(f64),
    /// A target rate that is not a positive number.
    #[error("target rate must be a positive number of events per second, got {0}")]
    Target(f64),
    /// An interval that is not positive.
    #[error("the adaptation interval must be positive")]
    Interval,
    /// Smoothing outside (0, 1].
    #[error("smoothing must be in (0, 1], got {0}")]
    Smoothing(f64),
}

/// SplitMix64: a small, seedable generator that is the same on every
/// platform (samplers must replay identically).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `(0, 1]`: safe to take the logarithm of.
    pub(crate) fn next_open_f64(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`n > 0`), by Lemire's multiply-shift (the bias is
    /// below 2^-32 for the reservoir sizes used here).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

//! Deterministic hash sampling and the stable hash it is built on.

use serde::{Deserialize, Serialize};

use crate::event::{EventBatch, EventRef};
use crate::sample::{SampleError, SampleStats, Sampled};

const P1: u64 = 0x9E37_79B9_7F4A_7C15;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;

/// A 64-bit hash of `bytes` that is the same on every platform, in every
/// build and in every version of this crate (it is part of the sampling
/// contract: changing it would change which events replicas keep).
///
/// The algorithm, for anyone reimplementing it (all arithmetic wrapping
/// on u64):
///
/// 1. `h = seed ^ P3 ^ (len × P1)`;
/// 2. for each 8-byte word `w` of `bytes`, read little-endian, the last one
///    zero-padded: `h = rotl(h ^ (rotl(w × P2, 31) × P1), 27) × P1 + P3`;
/// 3. finish with MurmurHash3's `fmix64`: `h ^= h >> 33; h ×= 0xff51afd7ed558ccd;
///    h ^= h >> 33; h ×= 0xc4ceb9fe1a85ec53; h ^= h >> 33`;
///
/// with `P1 = 0x9E3779B97F4A7C15`, `P2 = 0xC2B2AE3D27D4EB4F`,
/// `P3 = 0x165667B19E3779F9`.
///
/// ```
/// use edgestream::sample::stable_hash;
///
/// assert_eq!(stable_hash(0, b"evt-1"), 0xa3b7_a19a_2f56_f560);
/// ```
#[inline]
pub fn stable_hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed ^ P3 ^ (bytes.len() as u64).wrapping_mul(P1);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = round(h, u64::from_le_bytes(word));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let word = crate::text::tail_word(bytes, rest.len());
        h = round(h, word);
    }
    fmix64(h)
}

fn round(h: u64, word: u64) -> u64 {
    let k = word.wrapping_mul(P2).rotate_left(31).wrapping_mul(P1);
    (h ^ k).rotate_left(27).wrapping_mul(P1).wrapping_add(P3)
}

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// What a [`HashSampler`] hashes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    /// The event id: each event is decided on its own, and a retried event
    /// gets the same decision.
    #[default]
    Id,
    /// A dim's value: all events of one device (user, session…) are kept or
    /// dropped together.
    Dim(String),
}

/// Keeps an event iff its [`stable_hash`] is under a threshold: probability
/// `rate` (to 2^-53), weight its inverse, and the same decision on every
/// replica.
///
/// Precisely: keep iff `stable_hash(seed, key) >> 11 < round(rate × 2^53)`.
/// An event without the chosen key (no id, or no such dim) is decided on a
/// hash of its content (tenant, stream, time, dims, fields), so a
/// duplicate of it still gets the same decision.
///
/// ```
/// use edgestream::sample::{HashKey, HashSampler};
///
/// let mut a = HashSampler::new(0.1, HashKey::Id)?;
/// let b = HashSampler::new(0.1, HashKey::Id)?;
/// let decision = a.sample(b"evt-42");
/// assert_eq!(decision.is_kept(), b.keeps(b"evt-42"));
/// assert_eq!(a.stats().seen, 1);
/// # Ok::<(), edgestream::sample::SampleError>(())
/// ```
///
/// It serializes (with serde) with its counters, for snapshots.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HashSampler {
    rate: f64,
    threshold: u64,
    /// `2^53 / threshold`: the inverse of the exact keep probability.
    weight: f64,
    seed: u64,
    key: HashKey,
    stats: SampleStats,
}

impl HashSampler {
    /// Keeps a fraction `rate` (in [0, 1]) of events, hashing `key`, with
    /// seed 0.
    pub fn new(rate: f64, key: HashKey) -> Result<Self, SampleError> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(SampleError::Rate(rate));
        }
        let scale = (1u64 << 53) as f64;
        let threshold = (rate * scale).round() as u64;
        let weight = if threshold == 0 { f64::INFINITY } else { scale / threshold as f64 };
        Ok(HashSampler { rate, threshold, weight, seed: 0, key, stats: SampleStats::default() })
    }

    /// Uses another seed: samplers with different seeds keep independent
    /// subsets, samplers with the same seed keep nested ones (every event
    /// kept at rate 0.1 is also kept at 0.2).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The keep probability.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Whether the event with this key is kept; counts nothing.
    pub fn keeps(&self, key: &[u8]) -> bool {
        self.keeps_hash(stable_hash(self.seed, key))
    }

    /// Decides on the event with this key, and counts the decision.
    pub fn sample(&mut self, key: &[u8]) -> Sampled {
        let decision = self.decision(self.keeps(key));
        self.stats.count(decision);
        decision
    }

    /// Decides on an event by its [`HashKey`], and counts the decision.
    pub fn sample_event(&mut self, event: &EventRef<'_>) -> Sampled {
        let decision = self.decision(self.keeps_hash(self.event_hash(event)));
        self.stats.count(decision);
        decision
    }

    /// The hash an event is decided on.
    #[inline]
    fn event_hash(&self, event: &EventRef<'_>) -> u64 {
        let key = match &self.key {
            HashKey::Id => event.id_bytes(),
            HashKey::Dim(name) => event.dim(name).map(str::as_bytes),
        };
        match key {
            Some(key) => stable_hash(self.seed, key),
            None => content_hash(self.seed, event),
        }
    }

    /// Writes one weight per event of `batch` into `weights` (cleared
    /// first): `1 / rate` for a kept event, 0 for one sampled out.
    pub fn weigh_batch(&mut self, batch: &EventBatch, weights: &mut Vec<f64>) {
        weights.clear();
        // Counted once for the batch: the events' hashes are independent,
        // and nothing else carries from one to the next.
        let mut kept = 0;
        weights.extend(batch.iter().map(|event| {
            let keep = self.keeps_hash(self.event_hash(&event));
            kept += u64::from(keep);
            self.decision(keep).weight()
        }));
        self.stats.count_many(batch.len() as u64, kept);
    }

    /// Counters.
    pub fn stats(&self) -> &SampleStats {
        &self.stats
    }

    fn keeps_hash(&self, hash: u64) -> bool {
        hash >> 11 < self.threshold
    }

    fn decision(&self, keep: bool) -> Sampled {
        // A kept event implies a threshold above 0, so a finite weight.
        if keep { Sampled::Keep { weight: self.weight } } else { Sampled::Drop }
    }
}

/// A hash of what an event says, for events without the sampling key. Dims
/// and fields are combined in any order (a sum of per-pair hashes), so the
/// same event decoded with its keys in another order hashes alike. Out of
/// line: events with their key (an id, most often) never come here.
#[inline(never)]
fn content_hash(seed: u64, event: &EventRef<'_>) -> u64 {
    let mut h = stable_hash(seed, event.tenant().as_bytes());
    h = stable_hash(h, event.stream().as_bytes());
    h = stable_hash(h, &event.ts().as_nanos().to_le_bytes());
    let mut pairs = 0u64;
    for (key, value) in event.dims() {
        pairs = pairs.wrapping_add(stable_hash(stable_hash(h, key.as_bytes()), value.as_bytes()));
    }
    for (name, value) in event.fields() {
        pairs = pairs.wrapping_add(stable_hash(stable_hash(!h, name.as_bytes()), &value.to_bits().to_le_bytes()));
    }
    stable_hash(h, &pairs.to_le_bytes())
}

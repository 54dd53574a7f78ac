//! Counters of what happened to every event that reached the library.
//!
//! Nothing is lost silently: each event a decoder produced is either
//! accepted or rejected with a counted reason, and each body that could not
//! be decoded at all is counted as malformed. Later stages (rate limits,
//! sampling, late events, drops) add their own counters here.

use core::fmt;
use core::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::event::{DecodeError, DecodeErrorKind, RejectKind, ValidationReport};

/// Ingest counters, cheap to update and to merge.
///
/// Invariants: `received == accepted + rejected.total()`, and
/// `batches_malformed == malformed.total()`.
///
/// ```
/// use edgestream::event::{decode, DecodeErrorKind, Limits};
/// use edgestream::stats::IngestStats;
/// use edgestream::time::Timestamp;
///
/// let limits = Limits::default();
/// let now = Timestamp::from_millis(1_795_838_400_000).unwrap();
/// let mut stats = IngestStats::default();
///
/// let body = r#"[{"tenant":"acme","stream":"m","ts":1795838400000,"fields":{"t":1}},
///                {"tenant":"","stream":"m","ts":1795838400000}]"#;
/// let mut batch = decode("application/json", body, &limits).unwrap();
/// stats.record_batch(body.len(), &limits.validate(&mut batch, now));
///
/// match decode("application/json", "{oops", &limits) {
///     Ok(_) => unreachable!(),
///     Err(e) => stats.record_malformed(5, &e),
/// }
/// assert_eq!((stats.received, stats.accepted, stats.rejected.total()), (2, 1, 1));
/// assert_eq!(stats.malformed.get(DecodeErrorKind::Json), 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct IngestStats {
    /// Bodies that decoded into a batch.
    pub batches: u64,
    /// Bodies rejected whole because they could not be decoded (malformed,
    /// too large, too many events, unsupported content type). Their events
    /// were never counted as received.
    pub batches_malformed: u64,
    /// Malformed bodies by kind of error.
    pub malformed: Counts<DecodeErrorKind>,
    /// Bytes of every body seen, decoded or not.
    pub bytes: u64,
    /// Events decoded.
    pub received: u64,
    /// Events that passed validation.
    pub accepted: u64,
    /// Events rejected by validation, by reason.
    pub rejected: Counts<RejectKind>,
}

impl IngestStats {
    /// Counts a decoded body of `bytes` bytes and the outcome of its validation.
    pub fn record_batch(&mut self, bytes: usize, report: &ValidationReport) {
        self.batches += 1;
        self.bytes = self.bytes.saturating_add(bytes as u64);
        self.received += report.received as u64;
        self.accepted += report.accepted() as u64;
        for r in &report.rejected {
            self.rejected.add(r.reason.kind(), 1);
        }
    }

    /// Counts a body of `bytes` bytes that could not be decoded.
    pub fn record_malformed(&mut self, bytes: usize, error: &DecodeError) {
        self.batches_malformed += 1;
        self.malformed.add(error.kind(), 1);
        self.bytes = self.bytes.saturating_add(bytes as u64);
    }

    /// Adds every counter of `other` to `self` (to sum shards or tenants).
    /// Counters saturate rather than wrap, so stats restored from untrusted
    /// storage cannot make this panic.
    pub fn merge(&mut self, other: &IngestStats) {
        self.batches = self.batches.saturating_add(other.batches);
        self.batches_malformed = self.batches_malformed.saturating_add(other.batches_malformed);
        self.malformed.merge(&other.malformed);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.received = self.received.saturating_add(other.received);
        self.accepted = self.accepted.saturating_add(other.accepted);
        self.rejected.merge(&other.rejected);
    }
}

/// A fieldless enum whose values key a [`Counts`]: every reason something
/// was rejected, dropped or refused. Implemented by the crate's reason kinds
/// ([`RejectKind`], [`DecodeErrorKind`], …) and sealed, so that every
/// implementation is known to fit a [`Counts`].
pub trait CountKey: Copy + Eq + fmt::Debug + sealed::Sealed + 'static {
    /// Every value, in the order of [`CountKey::index`].
    const ALL: &'static [Self];
    /// A dense index in `0..ALL.len()`.
    fn index(self) -> usize;
    /// The snake_case name used in stats output.
    fn name(self) -> &'static str;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::event::RejectKind {}
    impl Sealed for crate::event::DecodeErrorKind {}
}

/// How many values a [`CountKey`] may have.
const MAX_KEYS: usize = 32;

/// Counters by reason: a small fixed array indexed by a [`CountKey`].
/// Serializes as a map from the reason's name to its count, leaving out
/// zeros; unknown names are refused when deserializing.
pub struct Counts<K> {
    counts: [u64; MAX_KEYS],
    key: PhantomData<K>,
}

impl<K: CountKey> Counts<K> {
    /// The count for `key`.
    pub fn get(&self, key: K) -> u64 {
        self.counts.get(key.index()).copied().unwrap_or(0)
    }

    /// Adds `n` to the count for `key`.
    pub fn add(&mut self, key: K, n: u64) {
        // Kinds have at most MAX_KEYS values (checked by a test per kind).
        if let Some(c) = self.counts.get_mut(key.index()) {
            *c = c.saturating_add(n);
        }
    }

    /// The sum over every key.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0, |sum, &n| sum.saturating_add(n))
    }

    /// The non-zero counts, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (K, u64)> + '_ {
        K::ALL.iter().map(|&k| (k, self.get(k))).filter(|&(_, n)| n > 0)
    }

    /// Adds every count of `other` to `self`.
    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
    }
}

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Counts { counts: [0; MAX_KEYS], key: PhantomData }
    }
}

impl<K> Clone for Counts<K> {
    fn clone(&self) -> Self {
        Counts { counts: self.counts, key: PhantomData }
    }
}

impl<K> PartialEq for Counts<K> {
    fn eq(&self, other: &Self) -> bool {
        self.counts == other.counts
    }
}

impl<K> Eq for Counts<K> {}

impl<K: CountKey> fmt::Debug for Counts<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter().map(|(k, n)| (k.name(), n))).finish()
    }
}

impl<K: CountKey> Serialize for Counts<K> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // With its length up front, so that formats that need it (postcard,
        // for snapshots) can write it.
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.iter().count()))?;
        for (k, n) in self.iter() {
            map.serialize_entry(k.name(), &n)?;
        }
        map.end()
    }
}

impl<'de, K: CountKey> Deserialize<'de> for Counts<K> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<String, u64>::deserialize(d)?;
        let mut counts = Counts::default();
        for (name, n) in map {
            let key = K::ALL
                .iter()
                .find(|k| k.name() == name)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown counter {name:?}")))?;
            counts.add(*key, n);
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{RejectReason, Rejection};

    #[test]
    fn counts_merge_and_serialize() {
        let report = ValidationReport {
            received: 3,
            rejected: vec![Rejection { index: 2, reason: RejectReason::TooManyDims { count: 40, max: 32 } }],
        };
        let mut a = IngestStats::default();
        a.record_batch(100, &report);
        let mut b = a.clone();
        b.merge(&a);
        assert_eq!((b.batches, b.received, b.accepted, b.bytes), (2, 6, 4, 200));
        assert_eq!(b.rejected.get(RejectKind::TooManyDims), 2);
        let json = serde_json::to_string(&b).unwrap();
        assert!(json.contains(r#""rejected":{"too_many_dims":2}"#), "{json}");
        assert_eq!(serde_json::from_str::<IngestStats>(&json).unwrap(), b);
        assert!(serde_json::from_str::<Counts<RejectKind>>(r#"{"nope":1}"#).is_err());
    }

    #[test]
    fn malformed_bodies_are_counted_by_kind() {
        let mut stats = IngestStats::default();
        stats.record_malformed(0, &DecodeError::EmptyBody);
        stats.record_malformed(9, &DecodeError::TooManyEvents { max: 1 });
        stats.record_malformed(9, &DecodeError::TooManyEvents { max: 1 });
        assert_eq!(stats.batches_malformed, stats.malformed.total());
        assert_eq!(stats.malformed.get(DecodeErrorKind::TooManyEvents), 2);
        assert_eq!(format!("{:?}", stats.malformed), r#"{"empty_body": 1, "too_many_events": 2}"#);
    }

    #[test]
    fn every_kind_fits_and_is_dense() {
        fn check<K: CountKey + Serialize>() {
            assert!(K::ALL.len() <= MAX_KEYS);
            for (i, k) in K::ALL.iter().enumerate() {
                assert_eq!(k.index(), i, "{k:?}");
                assert_eq!(serde_json::to_string(k).unwrap(), format!("\"{}\"", k.name()), "serde and stats agree");
            }
        }
        check::<RejectKind>();
        check::<DecodeErrorKind>();
    }
}

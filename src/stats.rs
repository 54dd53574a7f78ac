//! Counters of what happened to every event that reached the library.
//!
//! Nothing is lost silently: each event a decoder produced is either
//! accepted or rejected with a counted reason, and each body that could not
//! be decoded at all is counted as malformed. Later stages (rate limits,
//! sampling, late events, drops) add their own counters here.

use serde::{Deserialize, Serialize};

use crate::event::{DecodeError, RejectKind, ValidationReport};

/// Ingest counters, cheap to update and to merge.
///
/// Invariant: `received == accepted + rejected.total()`.
///
/// ```
/// use edgestream::event::{decode, Limits};
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
/// assert_eq!(stats.batches_malformed, 1);
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
    /// Bytes of every body seen, decoded or not.
    pub bytes: u64,
    /// Events decoded.
    pub received: u64,
    /// Events that passed validation.
    pub accepted: u64,
    /// Events rejected by validation, by reason.
    pub rejected: RejectCounts,
}

impl IngestStats {
    /// Counts a decoded body of `bytes` bytes and the outcome of its validation.
    pub fn record_batch(&mut self, bytes: usize, report: &ValidationReport) {
        self.batches += 1;
        self.bytes += bytes as u64;
        self.received += report.received as u64;
        self.accepted += report.accepted() as u64;
        for r in &report.rejected {
            self.rejected.add(r.reason.kind(), 1);
        }
    }

    /// Counts a body of `bytes` bytes that could not be decoded.
    pub fn record_malformed(&mut self, bytes: usize, _error: &DecodeError) {
        self.batches_malformed += 1;
        self.bytes += bytes as u64;
    }

    /// Adds every counter of `other` to `self` (to sum shards or tenants).
    pub fn merge(&mut self, other: &IngestStats) {
        self.batches += other.batches;
        self.batches_malformed += other.batches_malformed;
        self.bytes += other.bytes;
        self.received += other.received;
        self.accepted += other.accepted;
        for kind in RejectKind::ALL {
            self.rejected.add(kind, other.rejected.get(kind));
        }
    }
}

/// Rejected events counted by [`RejectKind`]. Serializes as a map from the
/// kind's snake_case name to its count, leaving out zeros.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RejectCounts([u64; RejectKind::ALL.len()]);

impl RejectCounts {
    /// The count for `kind`.
    pub fn get(&self, kind: RejectKind) -> u64 {
        self.0.get(kind.index()).copied().unwrap_or(0)
    }

    /// Adds `n` to the count for `kind`.
    pub fn add(&mut self, kind: RejectKind, n: u64) {
        if let Some(c) = self.0.get_mut(kind.index()) {
            *c += n;
        }
    }

    /// The sum over every kind.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The non-zero counts.
    pub fn iter(&self) -> impl Iterator<Item = (RejectKind, u64)> + '_ {
        RejectKind::ALL.into_iter().map(|k| (k, self.get(k))).filter(|&(_, n)| n > 0)
    }
}

impl Serialize for RejectCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for RejectCounts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<RejectKind, u64>::deserialize(d)?;
        let mut counts = RejectCounts::default();
        for (kind, n) in map {
            counts.add(kind, n);
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
    }
}

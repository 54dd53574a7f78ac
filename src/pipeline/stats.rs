//! What the pipeline did, per tenant and in total.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::alert::{AlertStats, NotifyStats};
use crate::flow::Fidelity;
use crate::sink::SinkStats;
use crate::stats::IngestStats;
use crate::time::Timestamp;
use crate::window::WindowStats;
use crate::window::agg::{QuantileConfig, Quantiles};

/// One tenant's counters.
///
/// **Nothing is lost silently**: every event decoded from a tenant's bodies
/// is in exactly one of `admitted`, `ingest.rejected`, `rate_limited`,
/// `duplicates` and `sampled_out`, so at all times
/// `ingest.received == admitted + ingest.rejected.total() + rate_limited + duplicates + sampled_out`
/// ([`TenantStats::is_balanced`]). Bodies that could not be decoded at all
/// are in `ingest.batches_malformed`, by kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TenantStats {
    /// Decoding and validation: bodies, bytes, events received, accepted
    /// by validation, rejected by reason (a foreign tenant included).
    pub ingest: IngestStats,
    /// Valid events refused by the tenant's rate limit.
    pub rate_limited: u64,
    /// Bodies refused (whole) by the rate limit.
    pub batches_rate_limited: u64,
    /// Valid events dropped as duplicates of a recent id.
    pub duplicates: u64,
    /// Valid events sampled out (by the configured sampler or the fidelity
    /// ladder); the kept ones carry their weight.
    pub sampled_out: u64,
    /// Events admitted: aggregated by every window operator (or handed back
    /// as late) and archived.
    pub admitted: u64,
    /// Admitted events too late for a window operator, summed over the
    /// operators; each is in [`Outputs::late`](super::Outputs::late).
    pub late: u64,
    /// Of those, events not handed back because the late buffer (of
    /// [`RawConfig::max_buffered`](super::RawConfig::max_buffered) events)
    /// was full.
    pub late_dropped: u64,
    /// Admitted events not copied to [`Outputs::raw`](super::Outputs::raw):
    /// the raw buffer was full, or the fidelity was aggregates-only.
    pub raw_dropped: u64,
    /// Admitted events per second, an exponential moving average over
    /// `advance` calls.
    pub events_per_second: f64,
}

impl TenantStats {
    /// Whether every received event is accounted for (see the type's
    /// documentation). Always true; tests check it.
    pub fn is_balanced(&self) -> bool {
        let outcomes =
            [self.admitted, self.ingest.rejected.total(), self.rate_limited, self.duplicates, self.sampled_out];
        outcomes.iter().try_fold(0u64, |sum, &n| sum.checked_add(n)) == Some(self.ingest.received)
            && self.ingest.accepted == self.ingest.received.saturating_sub(self.ingest.rejected.total())
    }

    /// Adds every counter of `other` (rates add too).
    pub fn merge(&mut self, other: &TenantStats) {
        self.ingest.merge(&other.ingest);
        let add = |a: &mut u64, b: u64| *a = a.saturating_add(b);
        add(&mut self.rate_limited, other.rate_limited);
        add(&mut self.batches_rate_limited, other.batches_rate_limited);
        add(&mut self.duplicates, other.duplicates);
        add(&mut self.sampled_out, other.sampled_out);
        add(&mut self.admitted, other.admitted);
        add(&mut self.late, other.late);
        add(&mut self.late_dropped, other.late_dropped);
        add(&mut self.raw_dropped, other.raw_dropped);
        self.events_per_second += other.events_per_second;
    }
}

/// The pipeline's health, for an admin view (`/api/health`): per tenant,
/// in total, and per stage. Serializes to JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PipelineStats {
    /// When these were taken (the `now` of the last call).
    pub at: Option<Timestamp>,
    /// The sum over tenants, retired ones included.
    pub total: TenantStats,
    /// Per tenant.
    pub tenants: BTreeMap<String, TenantStats>,
    /// Bodies refused because the tenant cap was reached (no tenant idle).
    pub tenants_refused: u64,
    /// Tenants retired at the cap to make room (their counters stay in
    /// `total`).
    pub tenants_retired: u64,
    /// Each window operator's counters, its watermark, live groups and
    /// windows, by name.
    pub windows: BTreeMap<String, WindowHealth>,
    /// Tile boards held, and tiles on them.
    pub boards: usize,
    /// Tiles on all boards.
    pub tiles: usize,
    /// Board updates refused (a non-finite value, a full board).
    pub board_errors: u64,
    /// The alert evaluator's counters.
    pub alerts: Option<AlertStats>,
    /// The notifier's counters.
    pub notifications: Option<NotifyStats>,
    /// The archive's counters.
    pub archive: Option<SinkStats>,
    /// Archive writes that failed (their events are counted, the error is
    /// in [`Outputs::errors`](super::Outputs::errors)).
    pub archive_errors: u64,
    /// The current fidelity.
    pub fidelity: Option<Fidelity>,
    /// Errors not kept for [`Outputs::errors`](super::Outputs::errors)
    /// because more than 1,000 waited for an `advance`.
    pub errors_dropped: u64,
    /// Open subscriptions.
    pub subscribers: usize,
    /// Frames dropped for subscribers: their queue was full, or they left
    /// with frames still queued.
    pub subscriber_frames_dropped: u64,
    /// Subscribers evicted for staying too slow.
    pub subscribers_evicted: u64,
    /// Latency per stage, in milliseconds of the host's clock:
    /// `ingest_to_advance` (per event), `window_to_result` (from a
    /// window's end in event time to its result), `window_to_alert`.
    pub latency: BTreeMap<String, LatencySummary>,
    /// Raw events held for the next `advance`.
    pub raw_buffered: usize,
    /// Audit events dropped because more than 10,000 waited for an
    /// `advance`.
    pub audit_dropped: u64,
}

/// One window operator's health.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WindowHealth {
    /// Its counters.
    pub stats: WindowStats,
    /// Its watermark.
    pub watermark: Option<Timestamp>,
    /// How far the watermark is behind the host's clock.
    pub watermark_lag_ms: Option<i64>,
    /// Live groups.
    pub groups: usize,
    /// Live windows.
    pub windows: usize,
}

/// How long data waits, per stage, in milliseconds on the host's clock:
/// recorded by the pipeline, summarized in [`PipelineStats::latency`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Latency {
    /// From ingest to the `advance` that processes it, per event.
    ingest_to_advance: Quantiles,
    /// From a window's end (event time) to the `advance` that emits its
    /// result, per result: watermark delay plus the host's tick.
    window_to_result: Quantiles,
    /// From a window's end to the alert event it causes, per alert event.
    window_to_alert: Quantiles,
}

impl Default for Latency {
    fn default() -> Self {
        let config = QuantileConfig { sigfig: 2, resolution: 0.1, max_abs: 1e10 };
        Latency {
            ingest_to_advance: Quantiles::new(config),
            window_to_result: Quantiles::new(config),
            window_to_alert: Quantiles::new(config),
        }
    }
}

/// Milliseconds from `from` to `to`, at least 0 (clocks may disagree).
fn ms(from: Timestamp, to: Timestamp) -> f64 {
    (to.saturating_since(from).as_nanos().max(0) as f64) / 1e6
}

impl Latency {
    pub(super) fn ingest(&mut self, since: Timestamp, now: Timestamp, events: u64) {
        if events > 0 {
            self.ingest_to_advance.record(ms(since, now), events as f64);
        }
    }

    pub(super) fn result(&mut self, end: Timestamp, now: Timestamp) {
        self.window_to_result.record(ms(end, now), 1.0);
    }

    pub(super) fn alert(&mut self, at: Timestamp, now: Timestamp) {
        self.window_to_alert.record(ms(at, now), 1.0);
    }

    pub(super) fn summaries(&self) -> BTreeMap<String, LatencySummary> {
        [
            ("ingest_to_advance", &self.ingest_to_advance),
            ("window_to_result", &self.window_to_result),
            ("window_to_alert", &self.window_to_alert),
        ]
        .into_iter()
        .map(|(name, q)| (name.to_owned(), LatencySummary::of(q)))
        .collect()
    }
}

/// Quantiles of one stage's latency, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LatencySummary {
    /// Samples (events for ingest, results, alert events).
    pub count: u64,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

impl LatencySummary {
    fn of(q: &Quantiles) -> Self {
        LatencySummary {
            count: q.len(),
            p50: q.quantile(0.5),
            p90: q.quantile(0.9),
            p99: q.quantile(0.99),
            max: q.quantile(1.0),
        }
    }
}

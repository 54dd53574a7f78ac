//! One engine that hosts drive: decode → validate → rate limit → dedup →
//! sample → windows → rollups, tile boards, alerts, archive.
//!
//! A [`Pipeline`] is built from a [`PipelineConfig`] (serde: JSON, YAML,
//! TOML) or with [`Pipeline::builder`]. Two sans-IO calls drive it:
//!
//! - [`Pipeline::ingest`]`(tenant, content_type, body, now)` decodes and
//!   admits one body, and answers with a [`Receipt`] that accounts for every
//!   event in it (accepted, rejected with reasons and indexes, rate-limited
//!   with a retry-after, dropped as duplicates, sampled out);
//! - [`Pipeline::advance`]`(now, &mut outputs)` closes windows and hands
//!   back what is due in [`Outputs`]: window results, tile deltas per
//!   tenant and topic, alert events and notifications, finished archive
//!   files, raw and late events, fidelity changes.
//!
//! [`Pipeline::next_deadline`] says when `advance` is due next, so a host
//! arms one timer (a tokio sleep, a Durable Object's alarm); calling early
//! or twice is harmless.
//!
//! ```
//! use edgestream::pipeline::{Outputs, Pipeline, WindowConfig};
//! use edgestream::time::{Span, Timestamp};
//! use edgestream::window::{FieldSpec, WindowSpec};
//!
//! let spec = WindowSpec::new(Span::from_secs(10)).group_by(["region"]).field(FieldSpec::new("temp_c"));
//! let mut pipeline = Pipeline::builder().window(WindowConfig::new("10s", spec).board("metrics")).build()?;
//!
//! let t0: Timestamp = "2026-11-28T04:00:00Z".parse()?;
//! let body = r#"{"tenant":"acme","stream":"sensors","ts":"2026-11-28T04:00:01Z","dims":{"region":"eu"},"fields":{"temp_c":21.5}}
//! {"tenant":"acme","stream":"sensors","ts":"2026-11-28T04:00:02Z","dims":{"region":"eu"},"fields":{"temp_c":"NaN"}}"#;
//! let receipt = pipeline.ingest("acme", "application/x-ndjson", body, t0)?;
//! assert_eq!((receipt.accepted, receipt.rejected.len()), (1, 1));
//!
//! // Later, the window has closed on an idle stream.
//! let mut out = Outputs::default();
//! pipeline.advance(t0.saturating_add(Span::from_secs(60)), &mut out);
//! assert_eq!(out.results[0].result.count, 1.0);
//! assert_eq!(&*out.deltas[0].tenant, "acme");
//! assert!(pipeline.stats().total.is_balanced());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod access;
pub(crate) mod config;
mod snapshot;
mod stats;
mod subscribe;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

pub use access::{AuditAction, AuditEvent, AuthConfig, KeyConfig};
pub use config::{
    ArchiveConfig, ArchiveFormat, DedupConfig, MAX_CONFIG_BYTES, PipelineConfig, RawConfig, SamplingConfig,
    TenantConfig, WindowConfig,
};
pub use stats::{LatencySummary, PipelineStats, TenantStats, WindowHealth};
pub use subscribe::{
    EvictReason, SubscribeConfig, SubscribeError, SubscriberId, SubscriberStats, Subscription, WireFormat,
};

use crate::alert::{Agg, AlertEvent, Condition, Evaluator, Notification, Notifier, Rule, RuleFile};
use crate::delta::board::{BoardConfig, Delta, TileBoard};
use crate::event::{DecodeError, Event, EventBatch, Format, Rejection};
use crate::flow::{Decision, Fidelity, FidelityLadder, LevelChange, LoadInputs, Quota, RateLimiter};
use crate::sample::{AdaptiveSampler, HashKey, HashSampler};
use crate::sink::{EventSink, FinishedFile, SinkError};
use crate::time::{Span, Timestamp};
use crate::window::agg::Aggregates;
use crate::window::{Rollup, WindowResult, Windows};

/// Why a pipeline could not be built.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The configuration text is not valid, or a setting is out of range.
    #[error("configuration: {0}")]
    Config(String),
    /// A window operator's spec is invalid.
    #[error("window {name:?}: {message}")]
    Window {
        /// The operator.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The alert rules or the notifier are invalid.
    #[error("alerts: {0}")]
    Alerts(String),
    /// The archive's configuration is invalid.
    #[error("archive: {0}")]
    Archive(#[from] SinkError),
    /// A snapshot could not be restored: damaged, of another version, or
    /// inconsistent with itself.
    #[error("snapshot: {0}")]
    Snapshot(String),
}

/// Why a body was refused whole. Each maps onto an HTTP status: see the
/// variants.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The body could not be decoded (HTTP 400; 413 for
    /// [`DecodeError::TooLarge`], 415 for an unsupported content type).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The pipeline already holds the most tenants it may (HTTP 503).
    #[error("the pipeline holds its maximum of {max} tenants")]
    TooManyTenants {
        /// [`TenantConfig::max_tenants`].
        max: usize,
    },
    /// The tenant name is empty.
    #[error("the tenant is empty")]
    EmptyTenant,
    /// The token was refused (HTTP 401), or does not grant ingest (403,
    /// [`AuthError::Forbidden`](crate::auth::AuthError::Forbidden)).
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
}

/// What became of each event of one body.
///
/// `received == accepted + rejected.len() + rate_limited + duplicates + sampled_out`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Receipt {
    /// Events decoded from the body.
    pub received: usize,
    /// Events admitted into the windows and the archive.
    pub accepted: usize,
    /// Events rejected by validation, with their index in the body and the reason.
    pub rejected: Vec<Rejection>,
    /// Valid events refused by the tenant's rate limit (the whole rest of the body).
    pub rate_limited: usize,
    /// When the same events would be admitted (HTTP `Retry-After`); `None`
    /// with `rate_limited > 0` means never: the body is larger than the
    /// tenant's burst and must be split.
    pub retry_after: Option<Span>,
    /// Valid events dropped as duplicates of recently seen ids.
    pub duplicates: usize,
    /// Valid events sampled out (the kept ones carry their weight).
    pub sampled_out: usize,
    /// Admitted events too late for a window operator (summed over
    /// operators); they come back in [`Outputs::late`].
    pub late: usize,
}

/// A window result and the operator it came from.
#[derive(Clone, Debug)]
pub struct NamedResult {
    /// [`WindowConfig::name`].
    pub window: Arc<str>,
    /// The result.
    pub result: WindowResult,
}

/// A tile delta of one tenant's board.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantDelta {
    /// The tenant.
    pub tenant: Arc<str>,
    /// The delta; its `topic` is the board's.
    pub delta: Delta,
}

/// Admitted events a window operator could not aggregate (too late, even
/// for its allowed lateness), for the host to archive.
#[derive(Clone, Debug, PartialEq)]
pub struct LateEvent {
    /// [`WindowConfig::name`].
    pub window: Arc<str>,
    /// The event.
    pub event: Event,
}

/// What one [`Pipeline::advance`] hands back. Reuse one value across calls
/// ([`Outputs::clear`]) to keep its allocations.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Outputs {
    /// Window results (corrections and partial updates included), in the
    /// order the operators emitted them.
    pub results: Vec<NamedResult>,
    /// Tile deltas, per tenant and topic.
    pub deltas: Vec<TenantDelta>,
    /// Alert state changes.
    pub alerts: Vec<AlertEvent>,
    /// Notifications to send.
    pub notifications: Vec<Notification>,
    /// Finished archive files to store.
    pub files: Vec<FinishedFile>,
    /// Admitted raw events, one batch per body, when
    /// [`RawConfig::enabled`]; with their sample weights (1 unless sampled).
    pub raw: Vec<RawBatch>,
    /// Events too late for a window operator.
    pub late: Vec<LateEvent>,
    /// Fidelity changes.
    pub fidelity: Vec<LevelChange>,
    /// Sensitive actions, for the audit log.
    pub audit: Vec<AuditEvent>,
    /// Subscribers with frames to take ([`Pipeline::take_frames`]).
    pub ready: Vec<SubscriberId>,
    /// Subscribers disconnected, and why: the host closes their sockets.
    pub evicted: Vec<(SubscriberId, EvictReason)>,
    /// Errors of stages that do not stop the pipeline (an archive file that
    /// could not be encoded), as text; each is also counted in the stats.
    pub errors: Vec<String>,
}

impl Outputs {
    /// Empties every list, keeping the allocations.
    pub fn clear(&mut self) {
        self.results.clear();
        self.deltas.clear();
        self.alerts.clear();
        self.notifications.clear();
        self.files.clear();
        self.raw.clear();
        self.late.clear();
        self.fidelity.clear();
        self.audit.clear();
        self.ready.clear();
        self.evicted.clear();
        self.errors.clear();
    }

    /// Whether every list is empty.
    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
            && self.deltas.is_empty()
            && self.alerts.is_empty()
            && self.notifications.is_empty()
            && self.files.is_empty()
            && self.raw.is_empty()
            && self.late.is_empty()
            && self.fidelity.is_empty()
            && self.audit.is_empty()
            && self.ready.is_empty()
            && self.evicted.is_empty()
            && self.errors.is_empty()
    }
}

/// Admitted events of one body, as the host may stream or archive them.
#[derive(Clone, Debug, PartialEq)]
pub struct RawBatch {
    /// The tenant.
    pub tenant: Arc<str>,
    /// The events.
    pub events: EventBatch,
    /// One sample weight per event.
    pub weights: Vec<f64>,
}

/// Builds a [`Pipeline`] step by step; every setting has a default.
#[derive(Clone, Debug, Default)]
pub struct PipelineBuilder {
    config: PipelineConfig,
}

impl PipelineBuilder {
    /// Body, batch and event limits.
    pub fn limits(mut self, limits: crate::event::Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// The rate limit of every tenant without a quota of its own.
    pub fn rate_limit(mut self, quota: Quota) -> Self {
        self.config.tenants.rate = Some(quota);
        self
    }

    /// The rate limit of one tenant.
    pub fn tenant_quota(mut self, tenant: impl Into<String>, quota: Quota) -> Self {
        self.config.tenants.quotas.insert(tenant.into(), quota);
        self
    }

    /// Most tenants held.
    pub fn max_tenants(mut self, n: usize) -> Self {
        self.config.tenants.max_tenants = n;
        self
    }

    /// Sampling.
    pub fn sampling(mut self, sampling: SamplingConfig) -> Self {
        self.config.sampling = sampling;
        self
    }

    /// Load-driven degradation.
    pub fn fidelity(mut self, ladder: crate::flow::LadderConfig) -> Self {
        self.config.fidelity = Some(ladder);
        self
    }

    /// Adds a window operator.
    pub fn window(mut self, window: WindowConfig) -> Self {
        self.config.windows.push(window);
        self
    }

    /// Tile board settings.
    pub fn boards(mut self, boards: BoardConfig) -> Self {
        self.config.boards = boards;
        self
    }

    /// Alert rules, notifier and evaluator limits.
    pub fn alerts(mut self, alerts: RuleFile) -> Self {
        self.config.alerts = alerts;
        self
    }

    /// Archives admitted raw events.
    pub fn archive(mut self, archive: ArchiveConfig) -> Self {
        self.config.archive = Some(archive);
        self
    }

    /// Hands admitted raw events back in [`Outputs::raw`].
    pub fn raw(mut self, raw: RawConfig) -> Self {
        self.config.raw = raw;
        self
    }

    /// Drops duplicate event ids.
    pub fn dedup(mut self, dedup: DedupConfig) -> Self {
        self.config.dedup = Some(dedup);
        self
    }

    /// The longest wait for an `advance` after events arrive.
    pub fn tick(mut self, tick: Span) -> Self {
        self.config.tick = tick;
        self
    }

    /// The configuration built so far.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// Builds the pipeline.
    pub fn build(self) -> Result<Pipeline, PipelineError> {
        Pipeline::new(self.config)
    }
}

/// One window operator and where its results go.
struct Stage {
    name: Arc<str>,
    windows: Windows,
    board: Option<Arc<str>>,
    alerts: bool,
    rollup: Option<Rollup>,
}

/// The configured sampler.
enum Sampler {
    None,
    Hash(HashSampler),
    Adaptive { by: String, sampler: Box<AdaptiveSampler<String>>, key: String },
}

/// The ids a tenant sent most recently, oldest first, as 128-bit keys
/// ([`id_key`]): a fixed 32 bytes or so per id whatever its length.
#[derive(Default)]
struct Dedup {
    order: VecDeque<u128>,
    seen: HashSet<u128>,
}

impl Dedup {
    fn contains(&self, key: u128) -> bool {
        self.seen.contains(&key)
    }

    /// Remembers `key`, forgetting the oldest beyond `cap`.
    fn remember(&mut self, key: u128, cap: usize) {
        if cap == 0 || !self.seen.insert(key) {
            return;
        }
        self.order.push_back(key);
        while self.order.len() > cap {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }
}

/// An event id as two independent 64-bit hashes: telling two ids apart
/// fails only on a 128-bit collision.
fn id_key(id: &[u8]) -> u128 {
    let hash = |seed| crate::sample::stable_hash(seed, id);
    u128::from(hash(0x6964_5f61)) << 64 | u128::from(hash(0x6964_5f62))
}

/// A tenant's state.
struct Tenant {
    stats: TenantStats,
    /// Host time of its last body or subscription.
    last_seen: Timestamp,
    dedup: Dedup,
    /// Events admitted since the last `advance`, for the rate estimate.
    admitted_since: u64,
}

impl Default for Tenant {
    fn default() -> Self {
        Tenant { stats: TenantStats::default(), last_seen: Timestamp::MIN, dedup: Dedup::default(), admitted_since: 0 }
    }
}

/// The engine: see the [module documentation](self).
pub struct Pipeline {
    config: PipelineConfig,
    /// The batch bodies decode into, reused (`None` only during `ingest`).
    batch: Option<EventBatch>,
    weights: Vec<f64>,
    late: Vec<usize>,
    keep: Vec<bool>,
    /// Keys of the new ids of the body being ingested, in order, and as a set.
    id_keys: Vec<u128>,
    body_ids: HashSet<u128>,
    limiter: Option<RateLimiter<Arc<str>>>,
    sampler: Sampler,
    ladder: Option<FidelityLadder>,
    /// The sampler of the ladder's `Sampled` rung, while on it.
    ladder_sampler: Option<HashSampler>,
    load: LoadInputs,
    stages: Vec<Stage>,
    boards: BTreeMap<(Arc<str>, Arc<str>), TileBoard>,
    board_errors: u64,
    evaluator: Option<Evaluator>,
    notifier: Option<Notifier>,
    archive: Option<EventSink>,
    archive_errors: u64,
    tenants: BTreeMap<Arc<str>, Tenant>,
    tenants_refused: u64,
    /// The counters of tenants retired at the cap, and how many.
    retired: TenantStats,
    tenants_retired: u64,
    /// Raw batches held for the next `advance`, and their event count.
    raw: Vec<RawBatch>,
    raw_held: usize,
    late_out: Vec<LateEvent>,
    /// Archive files finished during ingest, for the next `advance`.
    files: Vec<FinishedFile>,
    errors: Vec<String>,
    errors_dropped: u64,
    /// The first ingest since the last `advance`.
    pending_since: Option<Timestamp>,
    last_advance: Option<Timestamp>,
    last_now: Option<Timestamp>,
    alert_scratch: Vec<AlertEvent>,
    /// The token verifier, if auth is configured.
    keys: Option<crate::auth::Keys>,
    /// Audit events for the next `advance`, and those dropped beyond the bound.
    audit: VecDeque<AuditEvent>,
    audit_dropped: u64,
    subscribers: subscribe::Subscribers,
    latency: stats::Latency,
    /// Events admitted since the last `advance`.
    admitted_pending: u64,
}

impl core::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pipeline")
            .field("tenants", &self.tenants.len())
            .field("windows", &self.stages.iter().map(|s| &*s.name).collect::<Vec<_>>())
            .field("boards", &self.boards.len())
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A builder with every setting at its default.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    /// A pipeline for `config`, checked as a whole.
    pub fn new(config: PipelineConfig) -> Result<Pipeline, PipelineError> {
        let invalid = |m: &str| PipelineError::Config(m.to_owned());
        if config.tenants.max_tenants == 0 {
            return Err(invalid("`tenants.max_tenants` must be positive"));
        }
        if !config.tick.is_positive() {
            return Err(invalid("`tick` must be positive"));
        }
        if config.dedup.as_ref().is_some_and(|d| d.ids_per_tenant == 0) {
            return Err(invalid("`dedup.ids_per_tenant` must be positive"));
        }
        let limiter = match (config.tenants.rate, config.tenants.quotas.is_empty()) {
            (None, true) => None,
            (default, _) => {
                // Without a default quota only the listed tenants are
                // limited (see `admit`); the default is then never used.
                let mut limiter = RateLimiter::new(default.unwrap_or(Quota::per_second(1)), config.tenants.max_tenants);
                for (tenant, quota) in &config.tenants.quotas {
                    limiter.set_quota(Arc::from(tenant.as_str()), *quota);
                }
                Some(limiter)
            }
        };
        let sampler = match &config.sampling {
            SamplingConfig::None => Sampler::None,
            SamplingConfig::Hash { rate, key, seed } => Sampler::Hash(
                HashSampler::new(*rate, key.clone())
                    .map_err(|e| PipelineError::Config(format!("sampling: {e}")))?
                    .with_seed(*seed),
            ),
            SamplingConfig::Adaptive { by, config } => Sampler::Adaptive {
                by: by.clone(),
                sampler: Box::new(
                    AdaptiveSampler::new(config.clone())
                        .map_err(|e| PipelineError::Config(format!("sampling: {e}")))?,
                ),
                key: String::new(),
            },
        };
        let ladder = match &config.fidelity {
            Some(ladder) => {
                Some(FidelityLadder::new(ladder.clone()).map_err(|e| PipelineError::Config(format!("fidelity: {e}")))?)
            }
            None => None,
        };
        let mut names = HashSet::new();
        let mut topics = HashSet::new();
        let mut stages = Vec::with_capacity(config.windows.len());
        for w in &config.windows {
            let refuse = |message: &str| PipelineError::Window { name: w.name.clone(), message: message.into() };
            if !names.insert(w.name.as_str()) {
                return Err(refuse("the name is used twice"));
            }
            // Tiles of two operators on one board would overwrite each other.
            if let Some(topic) = &w.board
                && !topics.insert(topic.as_str())
            {
                return Err(refuse("its board topic is another operator's"));
            }
            let reserved = |n: &str| n == "alerts" || n == "events";
            if reserved(&w.name) || w.board.as_deref().is_some_and(reserved) {
                return Err(refuse("`alerts` and `events` are reserved topic names"));
            }
            let window_error = |message: String| PipelineError::Window { name: w.name.clone(), message };
            let windows = Windows::new(w.spec.clone()).map_err(|e| window_error(e.to_string()))?;
            let rollup = match &w.rollup {
                Some(spec) => Some(Rollup::new(spec.clone()).map_err(|e| window_error(e.to_string()))?),
                None => None,
            };
            stages.push(Stage {
                name: Arc::from(w.name.as_str()),
                windows,
                board: w.board.as_deref().map(Arc::from),
                alerts: w.alerts,
                rollup,
            });
        }
        let alerts = config.alerts.clone().validate().map_err(|e| PipelineError::Alerts(e.to_string()))?;
        check_rules_read_kept(&stages, &alerts.rules)?;
        let (evaluator, notifier) = if alerts.rules.is_empty() {
            (None, None)
        } else {
            let evaluator = Evaluator::new(alerts.rules.clone(), alerts.limits)
                .map_err(|e| PipelineError::Alerts(e.to_string()))?;
            (Some(evaluator), Some(Notifier::new(alerts.notifier.clone(), &alerts.rules)))
        };
        let keys = match &config.auth {
            Some(auth) => Some(auth.keys().map_err(|e| PipelineError::Config(format!("auth: {e}")))?),
            None => None,
        };
        let archive = match &config.archive {
            None => None,
            Some(a) => Some(match &a.format {
                ArchiveFormat::Csv => EventSink::csv(a.sink.clone())?,
                #[cfg(feature = "parquet")]
                ArchiveFormat::Parquet { options } => EventSink::parquet(a.sink.clone(), *options)?,
            }),
        };
        Ok(Pipeline {
            config,
            batch: Some(EventBatch::new()),
            weights: Vec::new(),
            late: Vec::new(),
            keep: Vec::new(),
            id_keys: Vec::new(),
            body_ids: HashSet::new(),
            limiter,
            sampler,
            ladder,
            ladder_sampler: None,
            load: LoadInputs::default(),
            stages,
            boards: BTreeMap::new(),
            board_errors: 0,
            evaluator,
            notifier,
            archive,
            archive_errors: 0,
            tenants: BTreeMap::new(),
            tenants_refused: 0,
            retired: TenantStats::default(),
            tenants_retired: 0,
            raw: Vec::new(),
            raw_held: 0,
            late_out: Vec::new(),
            files: Vec::new(),
            errors: Vec::new(),
            errors_dropped: 0,
            pending_since: None,
            last_advance: None,
            last_now: None,
            alert_scratch: Vec::new(),
            keys,
            audit: VecDeque::new(),
            audit_dropped: 0,
            subscribers: subscribe::Subscribers::default(),
            latency: stats::Latency::default(),
            admitted_pending: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// Decodes one body of `tenant`'s events (format by `content_type`,
    /// as [`Format::from_content_type`]), validates them (an event naming
    /// another tenant is rejected), applies the tenant's rate limit, drops
    /// duplicate ids, samples, and aggregates and archives what is
    /// admitted. `now` is the host's clock.
    ///
    /// A body that cannot be decoded is refused whole with an error (and
    /// counted); otherwise the [`Receipt`] accounts for every event.
    pub fn ingest(
        &mut self,
        tenant: &str,
        content_type: &str,
        body: impl Into<Bytes>,
        now: Timestamp,
    ) -> Result<Receipt, IngestError> {
        let body: Bytes = body.into();
        self.last_now = Some(now);
        let tenant = self.tenant_key(tenant)?;
        // Taken out of `self` for the call (an `Option`, so that taking it
        // leaves no fresh batch to build and drop).
        let mut batch = self.batch.take().unwrap_or_default();
        let result = self.ingest_batch(&tenant, content_type, &body, now, &mut batch);
        self.batch = Some(batch);
        result
    }

    /// The tenant's interned name, creating its state within the cap.
    fn tenant_key(&mut self, tenant: &str) -> Result<Arc<str>, IngestError> {
        if tenant.is_empty() {
            return Err(IngestError::EmptyTenant);
        }
        let now = self.last_now.unwrap_or(Timestamp::MIN);
        if let Some(state) = self.tenants.get_mut(tenant) {
            state.last_seen = state.last_seen.max(now);
        }
        if let Some((key, _)) = self.tenants.get_key_value(tenant) {
            return Ok(Arc::clone(key));
        }
        if self.tenants.len() >= self.config.tenants.max_tenants && !self.retire_idle_tenant(now) {
            self.tenants_refused = self.tenants_refused.saturating_add(1);
            return Err(IngestError::TooManyTenants { max: self.config.tenants.max_tenants });
        }
        let key: Arc<str> = Arc::from(tenant);
        self.tenants.insert(Arc::clone(&key), Tenant { last_seen: now, ..Tenant::default() });
        Ok(key)
    }

    /// Frees the place of the tenant idle longest (past `idle_ttl`, with
    /// no subscriber): its counters go to the totals, its remembered ids
    /// and tile boards are dropped. Whether one was found.
    fn retire_idle_tenant(&mut self, now: Timestamp) -> bool {
        let ttl = self.config.tenants.idle_ttl;
        let idle = self
            .tenants
            .iter()
            .filter(|(name, t)| now.saturating_since(t.last_seen) >= ttl && self.subscribers.of_tenant(name) == 0)
            .min_by_key(|(_, t)| t.last_seen)
            .map(|(name, _)| Arc::clone(name));
        let Some(name) = idle else { return false };
        if let Some(state) = self.tenants.remove(&name) {
            self.retired.merge(&state.stats);
            self.tenants_retired = self.tenants_retired.saturating_add(1);
        }
        self.boards.retain(|(tenant, _), _| *tenant != name);
        true
    }

    fn ingest_batch(
        &mut self,
        tenant: &Arc<str>,
        content_type: &str,
        body: &Bytes,
        now: Timestamp,
        batch: &mut EventBatch,
    ) -> Result<Receipt, IngestError> {
        // `tenant_key` made the state (within the cap) just before.
        let state = self.tenants.entry(Arc::clone(tenant)).or_default();
        let decoded =
            Format::from_content_type(content_type).and_then(|f| f.decode_into(body, &self.config.limits, batch));
        if let Err(e) = decoded {
            state.stats.ingest.record_malformed(body.len(), &e);
            return Err(e.into());
        }
        let report = self.config.limits.validate_for(batch, now, tenant);
        state.stats.ingest.record_batch(body.len(), &report);
        let mut receipt = Receipt { received: report.received, rejected: report.rejected, ..Receipt::default() };
        let valid = batch.len();
        if valid == 0 {
            return Ok(receipt);
        }

        // Duplicate ids, within the body and against the tenant's recent
        // ones: found first, so that a retried body is not charged to the
        // rate limit, and remembered only once the body is admitted.
        let mut duplicates = 0;
        if self.config.dedup.is_some() {
            self.keep.clear();
            self.id_keys.clear();
            self.body_ids.clear();
            for event in batch.iter() {
                let key = event.id_bytes().map(id_key);
                // Seen before, or earlier in this body.
                let duplicate = key.is_some_and(|k| state.dedup.contains(k) || !self.body_ids.insert(k));
                if let (Some(k), false) = (key, duplicate) {
                    self.id_keys.push(k);
                }
                self.keep.push(!duplicate);
            }
            duplicates = self.keep.iter().filter(|k| !**k).count();
            receipt.duplicates = duplicates;
            state.stats.duplicates = state.stats.duplicates.saturating_add(duplicates as u64);
        }
        let fresh = valid - duplicates;

        // Rate limit: the body's new valid events, admitted or refused whole.
        let limited = self.config.tenants.rate.is_some() || self.config.tenants.quotas.contains_key(&**tenant);
        if let (Some(limiter), true, true) = (&mut self.limiter, limited, fresh > 0) {
            let refused = match limiter.check(tenant, now, fresh as u64) {
                Decision::Allow => None,
                Decision::Deny { retry_after } => Some(Some(retry_after)),
                Decision::Exceeds => Some(None),
            };
            if let Some(retry_after) = refused {
                let action = AuditAction::QuotaHit { events: fresh as u64, retry_after };
                let event = AuditEvent { at: now, tenant: Some(tenant.to_string()), action };
                access::push_audit(&mut self.audit, &mut self.audit_dropped, event);
                receipt.rate_limited = fresh;
                receipt.retry_after = retry_after;
                state.stats.rate_limited = state.stats.rate_limited.saturating_add(fresh as u64);
                state.stats.batches_rate_limited = state.stats.batches_rate_limited.saturating_add(1);
                return Ok(receipt);
            }
        }
        if let Some(dedup) = &self.config.dedup {
            for &k in &self.id_keys {
                state.dedup.remember(k, dedup.ids_per_tenant);
            }
            if duplicates > 0 {
                let keep = &self.keep;
                batch.retain_indexed(|i| keep.get(i).copied().unwrap_or(true));
            }
        }

        // Sampling: one weight per event, 0 for those sampled out.
        let sampled = weigh(&mut self.sampler, self.ladder_sampler.as_mut(), tenant, batch, now, &mut self.weights);
        if sampled {
            let before = batch.len();
            if batch.retain_sampled(&mut self.weights).is_none() {
                // One weight per event is this module's own invariant.
                record_error(&mut self.errors, &mut self.errors_dropped, "sampling: weights do not match".into());
            }
            let out = before - batch.len();
            receipt.sampled_out = out;
            state.stats.sampled_out = state.stats.sampled_out.saturating_add(out as u64);
        }
        let admitted = batch.len();
        receipt.accepted = admitted;
        state.stats.admitted = state.stats.admitted.saturating_add(admitted as u64);
        state.admitted_since = state.admitted_since.saturating_add(admitted as u64);
        self.admitted_pending = self.admitted_pending.saturating_add(admitted as u64);
        if admitted == 0 {
            return Ok(receipt);
        }
        self.pending_since.get_or_insert(now);

        // Windows; events too late for one come back to the host.
        let late_cap = self.config.raw.max_buffered;
        for stage in &mut self.stages {
            self.late.clear();
            if sampled {
                if let Err(e) = stage.windows.push_weighted(batch, &self.weights, now, &mut self.late) {
                    // Weights are 1/p for p in (0, 1]: this is a bug, and
                    // it is reported rather than hidden.
                    record_error(&mut self.errors, &mut self.errors_dropped, format!("window {}: {e}", stage.name));
                }
            } else {
                stage.windows.push(batch, now, &mut self.late);
            }
            receipt.late += self.late.len();
            state.stats.late = state.stats.late.saturating_add(self.late.len() as u64);
            for &i in &self.late {
                if self.late_out.len() >= late_cap {
                    state.stats.late_dropped = state.stats.late_dropped.saturating_add(1);
                } else if let Some(event) = batch.get(i) {
                    self.late_out.push(LateEvent { window: Arc::clone(&stage.name), event: event.to_event() });
                }
            }
        }

        // Raw events: archived and handed back, unless the load says
        // aggregates only.
        let aggregates_only = self.ladder.as_ref().is_some_and(|l| l.fidelity() == Fidelity::AggregatesOnly);
        if aggregates_only {
            if self.archive.is_some() || self.config.raw.enabled {
                state.stats.raw_dropped = state.stats.raw_dropped.saturating_add(admitted as u64);
            }
            return Ok(receipt);
        }
        if let Some(archive) = &mut self.archive
            && let Err(e) = archive.push(batch, now, &mut self.files)
        {
            self.archive_errors = self.archive_errors.saturating_add(1);
            record_error(&mut self.errors, &mut self.errors_dropped, format!("archive: {e}"));
        }
        if self.config.raw.enabled {
            if self.raw_held.saturating_add(admitted) > self.config.raw.max_buffered {
                state.stats.raw_dropped = state.stats.raw_dropped.saturating_add(admitted as u64);
            } else {
                self.raw_held += admitted;
                let weights = if sampled { self.weights.clone() } else { vec![1.0; admitted] };
                self.raw.push(RawBatch { tenant: Arc::clone(tenant), events: batch.clone(), weights });
            }
        }
        Ok(receipt)
    }

    /// Load measured by the host (queue fill, batch time, ingest rate),
    /// read by the fidelity ladder at the next `advance`. The pipeline
    /// measures the ingest rate itself when the host gives none.
    pub fn observe_load(&mut self, inputs: LoadInputs) {
        self.load = inputs;
    }

    /// The current fidelity ([`Fidelity::Full`] without a ladder).
    pub fn fidelity(&self) -> Fidelity {
        self.ladder.as_ref().map_or(Fidelity::Full, FidelityLadder::fidelity)
    }

    /// Closes the windows that are due, and appends to `out` everything
    /// that follows: results, rollups, tile deltas, alert events,
    /// notifications, finished files, raw and late events, fidelity
    /// changes. `now` is the host's clock; calling again at the same time
    /// does nothing new.
    pub fn advance(&mut self, now: Timestamp, out: &mut Outputs) {
        self.advance_inner(now, out, false);
    }

    /// Ends the stream: every window closes now with its final result
    /// (whatever the watermark), everything that follows is handed out as
    /// by [`advance`](Pipeline::advance), and every open archive file is
    /// finished. For a graceful shutdown: every admitted event is then in
    /// a window result and in a finished file. Events that arrive later
    /// for those windows are late.
    pub fn close(&mut self, now: Timestamp, out: &mut Outputs) {
        self.advance_inner(now, out, true);
        self.flush_archive(out);
    }

    fn advance_inner(&mut self, now: Timestamp, out: &mut Outputs, close: bool) {
        self.last_now = Some(now);
        let firsts = (out.results.len(), out.deltas.len(), out.alerts.len(), out.raw.len());
        let elapsed = self.last_advance.map(|t| now.saturating_since(t));
        if let Some(since) = self.pending_since {
            self.latency.ingest(since, now, self.admitted_pending);
        }
        self.admitted_pending = 0;
        self.measure_rates(elapsed);
        self.step_ladder(now, elapsed, out);

        for stage in &mut self.stages {
            if close {
                stage.windows.close_all(now);
            } else {
                stage.windows.advance(now);
            }
            while let Some(result) = stage.windows.poll_result() {
                if let (Some(rollup), true) = (&mut stage.rollup, result.is_final) {
                    rollup.push(&result);
                }
                if let Some(topic) = &stage.board {
                    let key = (Arc::clone(&result.group.tenant), Arc::clone(topic));
                    let board = self
                        .boards
                        .entry(key)
                        .or_insert_with(|| TileBoard::new(Arc::clone(topic), self.config.boards.clone()));
                    if board.set_result(&result).is_err() {
                        self.board_errors = self.board_errors.saturating_add(1);
                    }
                }
                if let (Some(evaluator), true) = (&mut self.evaluator, stage.alerts) {
                    evaluator.push(&result);
                }
                self.latency.result(result.end, now);
                out.results.push(NamedResult { window: Arc::clone(&stage.name), result });
            }
        }

        if let Some(evaluator) = &mut self.evaluator {
            // Alerts run on event time, as far as every operator that
            // feeds them has closed its windows.
            let watermark =
                self.stages.iter().filter(|s| s.alerts).map(|s| s.windows.watermark()).min().unwrap_or(Timestamp::MIN);
            self.alert_scratch.clear();
            evaluator.advance(watermark, &mut self.alert_scratch);
            if let Some(notifier) = &mut self.notifier {
                for event in &self.alert_scratch {
                    notifier.push(event, now);
                }
                notifier.advance(now, &mut out.notifications);
            }
            for event in &self.alert_scratch {
                self.latency.alert(event.at, now);
            }
            out.alerts.append(&mut self.alert_scratch);
        }

        for ((tenant, _), board) in &mut self.boards {
            if let Some(delta) = board.commit() {
                out.deltas.push(TenantDelta { tenant: Arc::clone(tenant), delta });
            }
        }

        if let Some(archive) = &mut self.archive
            && let Err(e) = archive.advance(now, &mut self.files)
        {
            self.archive_errors = self.archive_errors.saturating_add(1);
            record_error(&mut self.errors, &mut self.errors_dropped, format!("archive: {e}"));
        }
        self.move_pending(out);
        let (results, deltas, alerts, raw) = firsts;
        self.fan_out(
            now,
            out.results.get(results..).unwrap_or_default(),
            out.deltas.get(deltas..).unwrap_or_default(),
            out.alerts.get(alerts..).unwrap_or_default(),
            out.raw.get(raw..).unwrap_or_default(),
        );
        self.hand_over(out);
        self.pending_since = None;
        self.last_advance = Some(now);
    }

    /// Moves what ingest left for the next `advance` (files, raw and late
    /// events, errors, audit events) into `out`.
    fn move_pending(&mut self, out: &mut Outputs) {
        out.files.append(&mut self.files);
        out.raw.append(&mut self.raw);
        self.raw_held = 0;
        out.late.append(&mut self.late_out);
        out.errors.append(&mut self.errors);
        out.audit.extend(self.audit.drain(..));
    }

    /// Hands out what is pending outside an `advance` (before a
    /// snapshot): raw events also go to the `full` subscribers.
    fn hand_out_pending(&mut self, out: &mut Outputs) {
        let first_raw = out.raw.len();
        self.move_pending(out);
        let now = self.last_now.unwrap_or(Timestamp::MIN);
        self.fan_out(now, &[], &[], &[], out.raw.get(first_raw..).unwrap_or_default());
        self.hand_over(out);
    }

    /// Each tenant's admitted events per second since the last `advance`,
    /// into its moving average.
    fn measure_rates(&mut self, elapsed: Option<Span>) {
        let Some(secs) = elapsed.map(|e| e.as_nanos() as f64 / 1e9).filter(|s| *s > 0.0) else { return };
        for state in self.tenants.values_mut() {
            let rate = state.admitted_since as f64 / secs;
            let ewma = &mut state.stats.events_per_second;
            *ewma = if *ewma == 0.0 { rate } else { *ewma + RATE_ALPHA * (rate - *ewma) };
            state.admitted_since = 0;
        }
    }

    /// Feeds the ladder (the host's load, or the measured ingest rate) and
    /// follows its level.
    fn step_ladder(&mut self, now: Timestamp, elapsed: Option<Span>, out: &mut Outputs) {
        let Some(ladder) = &mut self.ladder else { return };
        let mut inputs = self.load;
        if inputs.ingest_rate.is_none() && elapsed.is_some() {
            inputs.ingest_rate = Some(self.tenants.values().map(|t| t.stats.events_per_second).sum());
        }
        if let Some(change) = ladder.observe(now, inputs) {
            self.ladder_sampler = match change.to {
                // The rate was checked by the ladder's configuration.
                Fidelity::Sampled { rate } => {
                    HashSampler::new(rate, HashKey::Id).ok().map(|s| s.with_seed(LADDER_SEED))
                }
                Fidelity::Full | Fidelity::AggregatesOnly => None,
            };
            let action = AuditAction::FidelityChanged { from: change.from, to: change.to };
            access::push_audit(&mut self.audit, &mut self.audit_dropped, AuditEvent { at: now, tenant: None, action });
            out.fidelity.push(change);
        }
    }

    /// When [`advance`](Pipeline::advance) is due next, on the host's
    /// clock: events waiting (at most [`PipelineConfig::tick`] after the
    /// first), a window to close on an idle stream, a file to roll, a
    /// notification or escalation to send, an alert timer. `None` when
    /// nothing is pending. It may be early; calling then is harmless.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let tick = self.config.tick;
        let pending = self.pending_since.map(|t| t.saturating_add(tick));
        let windows = self.stages.iter().filter_map(|s| s.windows.next_deadline());
        let notifier = self.notifier.as_ref().and_then(Notifier::next_deadline);
        let archive = self.archive.as_ref().and_then(EventSink::next_deadline);
        // Alert timers are in event time: on a quiet stream the watermark
        // reaches them an idle timeout later on the host's clock.
        let alert = self.evaluator.as_ref().and_then(Evaluator::next_deadline).and_then(|at| {
            let mut idle = self.stages.iter().filter(|s| s.alerts).map(|s| s.windows.spec().idle_timeout);
            let slowest = idle.try_fold(Span::ZERO, |max, i| i.map(|i| max.max(i)))?;
            Some(at.saturating_add(slowest))
        });
        // Off full fidelity, the ladder is fed once per tick to step down.
        let ladder =
            (self.fidelity() != Fidelity::Full).then(|| self.last_advance.map(|t| t.saturating_add(tick))).flatten();
        pending.into_iter().chain(windows).chain(notifier).chain(archive).chain(alert).chain(ladder).min()
    }

    /// Finishes every open archive file into `out.files` (at shutdown, or
    /// before a snapshot that must not lose buffered rows).
    pub fn flush_archive(&mut self, out: &mut Outputs) {
        if let Some(archive) = &mut self.archive
            && let Err(e) = archive.flush(&mut out.files)
        {
            self.archive_errors = self.archive_errors.saturating_add(1);
            out.errors.push(format!("archive: {e}"));
        }
    }

    /// The tile board of `tenant` and `topic`, for a snapshot to a new
    /// subscriber.
    pub fn board(&self, tenant: &str, topic: &str) -> Option<&TileBoard> {
        self.boards.iter().find(|((t, b), _)| **t == *tenant && **b == *topic).map(|(_, board)| board)
    }

    /// The rollup tiers of window operator `window`, for range queries.
    pub fn rollup(&self, window: &str) -> Option<&Rollup> {
        self.stages.iter().find(|s| *s.name == *window).and_then(|s| s.rollup.as_ref())
    }

    /// Replaces the alert rules (and the notifier's channels and routes)
    /// while running: instances of rules kept by name carry on (pending
    /// timers, firing alerts, baselines; a changed rule restarts its
    /// baselines), firing alerts of removed rules resolve at the next
    /// `advance`. The change is audited, and [`config`](Pipeline::config)
    /// shows it: restore later snapshots with that configuration.
    pub fn set_alerts(&mut self, alerts: RuleFile, now: Timestamp) -> Result<(), PipelineError> {
        let alerts = alerts.validate().map_err(|e| PipelineError::Alerts(e.to_string()))?;
        check_rules_read_kept(&self.stages, &alerts.rules)?;
        let alert_error = |e: &dyn core::fmt::Display| PipelineError::Alerts(e.to_string());
        let evaluator = match &self.evaluator {
            Some(old) => {
                let mut bytes = Vec::new();
                old.snapshot(&mut bytes);
                Evaluator::restore(alerts.rules.clone(), alerts.limits, &bytes).map_err(|e| alert_error(&e))?
            }
            None => Evaluator::new(alerts.rules.clone(), alerts.limits).map_err(|e| alert_error(&e))?,
        };
        let notifier = match &self.notifier {
            Some(old) => {
                let mut bytes = Vec::new();
                old.snapshot(&mut bytes);
                Notifier::restore(alerts.notifier.clone(), &alerts.rules, &bytes).map_err(|e| alert_error(&e))?
            }
            None => Notifier::new(alerts.notifier.clone(), &alerts.rules),
        };
        let before: BTreeMap<&str, String> =
            self.config.alerts.rules.iter().map(|r| (r.name.as_str(), r.to_string())).collect();
        let after: BTreeMap<&str, String> = alerts.rules.iter().map(|r| (r.name.as_str(), r.to_string())).collect();
        let names = |f: &dyn Fn(&str, &String) -> bool, from: &BTreeMap<&str, String>| -> Vec<String> {
            from.iter().filter(|(n, t)| f(n, t)).map(|(n, _)| (*n).to_owned()).collect()
        };
        let action = access::AuditAction::RulesChanged {
            added: names(&|n, _| !before.contains_key(n), &after),
            removed: names(&|n, _| !after.contains_key(n), &before),
            changed: names(&|n, t| before.get(n).is_some_and(|old| old != t), &after),
        };
        self.evaluator = Some(evaluator);
        self.notifier = Some(notifier);
        self.config.alerts = alerts;
        self.audit(now, None, action);
        Ok(())
    }

    /// The alert notifier, to acknowledge alerts and manage silences.
    pub fn notifier_mut(&mut self) -> Option<&mut Notifier> {
        self.notifier.as_mut()
    }

    /// The alert evaluator, to list active alerts.
    pub fn evaluator(&self) -> Option<&Evaluator> {
        self.evaluator.as_ref()
    }

    /// One tenant's counters.
    pub fn tenant_stats(&self, tenant: &str) -> Option<&TenantStats> {
        self.tenants.get(tenant).map(|t| &t.stats)
    }

    /// A snapshot of every counter, per tenant and per stage.
    pub fn stats(&self) -> PipelineStats {
        let mut total = self.retired.clone();
        let mut tenants = BTreeMap::new();
        for (name, state) in &self.tenants {
            total.merge(&state.stats);
            tenants.insert(name.to_string(), state.stats.clone());
        }
        let now = self.last_now;
        let windows = self
            .stages
            .iter()
            .map(|s| {
                let watermark = Some(s.windows.watermark()).filter(|w| *w > Timestamp::MIN);
                let lag = now.zip(watermark).map(|(n, w)| n.saturating_since(w).as_nanos() / 1_000_000);
                let health = WindowHealth {
                    stats: s.windows.stats().clone(),
                    watermark,
                    watermark_lag_ms: lag,
                    groups: s.windows.groups(),
                    windows: s.windows.live_windows(),
                };
                (s.name.to_string(), health)
            })
            .collect();
        PipelineStats {
            at: now,
            total,
            tenants,
            tenants_refused: self.tenants_refused,
            tenants_retired: self.tenants_retired,
            windows,
            boards: self.boards.len(),
            tiles: self.boards.values().map(TileBoard::len).sum(),
            board_errors: self.board_errors,
            alerts: self.evaluator.as_ref().map(|e| e.stats().clone()),
            notifications: self.notifier.as_ref().map(|n| n.stats().clone()),
            archive: self.archive.as_ref().map(|a| a.stats().clone()),
            archive_errors: self.archive_errors,
            fidelity: self.ladder.as_ref().map(FidelityLadder::fidelity),
            audit_dropped: self.audit_dropped,
            errors_dropped: self.errors_dropped,
            subscribers: self.subscribers.len(),
            subscriber_frames_dropped: self.subscribers.frames_dropped,
            subscribers_evicted: self.subscribers.evictions,
            latency: self.latency.summaries(),
            raw_buffered: self.raw_held,
        }
    }
}

/// Errors held between two `advance` calls; beyond, they are counted only.
const MAX_ERRORS: usize = 1_000;

fn record_error(errors: &mut Vec<String>, dropped: &mut u64, message: String) {
    if errors.len() < MAX_ERRORS {
        errors.push(message);
    } else {
        *dropped = dropped.saturating_add(1);
    }
}

/// Weight of the newest reading in the events-per-second averages.
const RATE_ALPHA: f64 = 0.3;

/// Seed of the ladder's sampler, apart from any configured one.
const LADDER_SEED: u64 = 0x6c61_6464_6572;

/// Writes one weight per event of `batch` into `weights`: the configured
/// sampler's, times the ladder's while it samples. Returns whether any
/// sampling happened (otherwise every weight is 1 and `weights` may be
/// left empty).
fn weigh(
    sampler: &mut Sampler,
    ladder: Option<&mut HashSampler>,
    tenant: &str,
    batch: &EventBatch,
    now: Timestamp,
    weights: &mut Vec<f64>,
) -> bool {
    weights.clear();
    match sampler {
        Sampler::None => {
            if ladder.is_none() {
                return false;
            }
            weights.resize(batch.len(), 1.0);
        }
        Sampler::Hash(s) => s.weigh_batch(batch, weights),
        Sampler::Adaptive { by, sampler, key } => {
            for event in batch.iter() {
                key.clear();
                key.push_str(tenant);
                key.push('\0');
                key.push_str(event.dim(by).unwrap_or(""));
                weights.push(sampler.sample(key.as_str(), now).weight());
            }
        }
    }
    if let Some(ladder) = ladder {
        for (event, w) in batch.iter().zip(weights.iter_mut()) {
            if *w > 0.0 {
                *w *= ladder.sample_event(&event).weight();
            }
        }
    }
    true
}

/// Refuses a rule that reads an aggregate of a field which the operators
/// feeding the alerts aggregate, but none of them keeps (see
/// [`FieldSpec::aggregates`](crate::window::FieldSpec::aggregates)): it
/// would never see a value. A field no operator aggregates is not checked
/// here (its rule sees no data, as for any unknown field).
fn check_rules_read_kept(stages: &[Stage], rules: &[Rule]) -> Result<(), PipelineError> {
    for rule in rules {
        let (Condition::Threshold { expr, .. } | Condition::GeoCluster { expr, .. }) = &rule.condition else {
            continue;
        };
        let selector = expr.selector();
        let wanted = match selector.agg {
            Agg::Sum => Aggregates::SUM,
            Agg::Min => Aggregates::MIN,
            Agg::Max => Aggregates::MAX,
            Agg::Avg => Aggregates::MEAN,
            Agg::Last => Aggregates::LAST,
            _ => continue,
        };
        let Some(field) = &selector.field else { continue };
        let feeding = |s: &&Stage| s.alerts && rule.window.is_none_or(|size| s.windows.spec().size == size);
        let specs = stages.iter().filter(feeding).flat_map(|s| &s.windows.spec().fields);
        let mut aggregated = specs.filter(|f| f.field == *field).peekable();
        if aggregated.peek().is_some() && !aggregated.any(|f| f.aggregates.contains(wanted)) {
            return Err(PipelineError::Alerts(format!(
                "rule `{}` reads {selector}, but no window operator feeding the alerts keeps that aggregate of `{field}`",
                rule.name
            )));
        }
    }
    Ok(())
}

//! The pipeline's configuration: one serde type, loadable from JSON, YAML
//! (feature `yaml`) or TOML (feature `toml`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::alert::RuleFile;
use crate::delta::board::BoardConfig;
use crate::event::Limits;
use crate::flow::{LadderConfig, Quota};
use crate::sample::{AdaptiveConfig, HashKey};
#[cfg(feature = "parquet")]
use crate::sink::ParquetOptions;
use crate::sink::SinkConfig;
use crate::time::Span;
use crate::window::{RollupSpec, WindowSpec};

/// The largest configuration text the loaders read.
pub const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;

/// Everything a [`Pipeline`](super::Pipeline) does, as data.
///
/// Every part has a default, so `{}` is a valid (if idle) configuration:
/// decoding and validation with [`Limits::default`], no rate limits, no
/// sampling, no windows, no alerts, no archive.
///
/// ```
/// use edgestream::pipeline::PipelineConfig;
///
/// let config = PipelineConfig::from_json_str(r#"{
///     "tenants": {"rate": {"cells": 10000, "per": "1s", "burst": 20000}},
///     "windows": [{"name": "1m", "spec": {"size": "1m", "group_by": ["region"],
///                  "fields": [{"field": "latency_ms", "quantiles": [0.99]}]},
///                  "board": "metrics"}],
///     "alerts": {"rules": [{"name": "slow", "rule": "avg(latency_ms) by (region) > 250"}]}
/// }"#)?;
/// assert_eq!(config.windows[0].board.as_deref(), Some("metrics"));
/// # Ok::<(), edgestream::pipeline::PipelineError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PipelineConfig {
    /// Body, batch and event limits for decoding and validation.
    pub limits: Limits,
    /// Tenants: how many, and their rate limits.
    pub tenants: TenantConfig,
    /// Sampling of admitted events (weights keep counts unbiased).
    pub sampling: SamplingConfig,
    /// Load-driven degradation; `None` stays at full fidelity.
    pub fidelity: Option<LadderConfig>,
    /// Window operators, each fed every admitted event.
    pub windows: Vec<WindowConfig>,
    /// Configuration of every tile board.
    pub boards: BoardConfig,
    /// Alert rules, the notifier and the evaluator's limits.
    pub alerts: RuleFile,
    /// Archive of admitted raw events; `None` archives nothing.
    pub archive: Option<ArchiveConfig>,
    /// Raw events handed to the host in [`Outputs::raw`](super::Outputs::raw).
    pub raw: RawConfig,
    /// Idempotent ingest: duplicate event ids are dropped and counted.
    pub dedup: Option<DedupConfig>,
    /// Signed tokens for ingest and subscriptions; `None`: the host
    /// authenticates by other means.
    pub auth: Option<super::AuthConfig>,
    /// Limits on subscribers.
    pub subscribers: super::SubscribeConfig,
    /// After events arrive, the longest the pipeline waits for an
    /// `advance` ([`Pipeline::next_deadline`](super::Pipeline::next_deadline)),
    /// so results, deltas and alerts follow ingest closely. Default 250 ms.
    pub tick: Span,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            limits: Limits::default(),
            tenants: TenantConfig::default(),
            sampling: SamplingConfig::default(),
            fidelity: None,
            windows: Vec::new(),
            boards: BoardConfig::default(),
            alerts: RuleFile::default(),
            archive: None,
            raw: RawConfig::default(),
            dedup: None,
            auth: None,
            subscribers: super::SubscribeConfig::default(),
            tick: Span::from_millis(250),
        }
    }
}

impl PipelineConfig {
    /// Parses a JSON configuration.
    pub fn from_json_str(text: &str) -> Result<PipelineConfig, super::PipelineError> {
        check_size(text)?;
        serde_json::from_str(text).map_err(|e| syntax("json", e))
    }

    /// Parses a YAML configuration.
    #[cfg(feature = "yaml")]
    pub fn from_yaml_str(text: &str) -> Result<PipelineConfig, super::PipelineError> {
        check_size(text)?;
        serde_yaml_ng::from_str(text).map_err(|e| syntax("yaml", e))
    }

    /// Parses a TOML configuration.
    #[cfg(feature = "toml")]
    pub fn from_toml_str(text: &str) -> Result<PipelineConfig, super::PipelineError> {
        check_size(text)?;
        toml::from_str(text).map_err(|e| syntax("toml", e))
    }
}

pub(crate) fn check_size(text: &str) -> Result<(), super::PipelineError> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(super::PipelineError::Config(format!("the configuration is larger than {MAX_CONFIG_BYTES} bytes")));
    }
    Ok(())
}

fn syntax(format: &str, e: impl core::fmt::Display) -> super::PipelineError {
    super::PipelineError::Config(format!("{format}: {e}"))
}

/// Tenants and their rate limits.
///
/// A tenant's quota is in events: a batch costs its valid events, and is
/// admitted whole or refused whole with a retry-after.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TenantConfig {
    /// Most tenants the pipeline keeps state for (default 10,000). At the
    /// cap, a new tenant takes the place of the one idle longest (no body
    /// and no subscription for `idle_ttl`), whose counters are kept in the
    /// totals; with none idle, it is refused
    /// ([`IngestError::TooManyTenants`](super::IngestError::TooManyTenants)).
    pub max_tenants: usize,
    /// How long a tenant must be idle before a new one may take its place
    /// at the cap (default 1 h).
    pub idle_ttl: Span,
    /// The quota of every tenant without one of its own; `None`: no limit.
    pub rate: Option<Quota>,
    /// Quotas of particular tenants.
    pub quotas: BTreeMap<String, Quota>,
}

impl Default for TenantConfig {
    fn default() -> Self {
        TenantConfig { max_tenants: 10_000, idle_ttl: Span::from_hours(1), rate: None, quotas: BTreeMap::new() }
    }
}

/// How admitted events are sampled. A kept event carries the weight
/// `1 / p`, so window counts and sums stay unbiased; events sampled out are
/// counted ([`TenantStats::sampled_out`](super::TenantStats::sampled_out)).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum SamplingConfig {
    /// Every event is kept.
    #[default]
    None,
    /// Deterministic hash sampling ([`crate::sample::HashSampler`]).
    Hash {
        /// Keep probability, in (0, 1].
        rate: f64,
        /// What is hashed.
        #[serde(default)]
        key: HashKey,
        /// Seed of the hash.
        #[serde(default)]
        seed: u64,
    },
    /// Adaptive per-key sampling ([`crate::sample::AdaptiveSampler`]),
    /// keyed by tenant and the value of one dim.
    Adaptive {
        /// The dim whose value (with the tenant) is the key.
        by: String,
        /// The sampler.
        #[serde(default)]
        config: AdaptiveConfig,
    },
}

/// One window operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WindowConfig {
    /// The operator's name, in [`NamedResult::window`](super::NamedResult::window).
    pub name: String,
    /// The windows.
    pub spec: WindowSpec,
    /// The tile board topic its results go to (per tenant), if any.
    #[serde(default)]
    pub board: Option<String>,
    /// Whether the alert rules read its results (default true).
    #[serde(default = "yes")]
    pub alerts: bool,
    /// Rollup tiers built from its final results, if any.
    #[serde(default)]
    pub rollup: Option<RollupSpec>,
}

fn yes() -> bool {
    true
}

impl WindowConfig {
    /// An operator named `name` over `spec`, feeding alerts, with no board
    /// and no rollup.
    pub fn new(name: impl Into<String>, spec: WindowSpec) -> Self {
        WindowConfig { name: name.into(), spec, board: None, alerts: true, rollup: None }
    }

    /// Sends the results to the tile board `topic` of their tenant.
    pub fn board(mut self, topic: impl Into<String>) -> Self {
        self.board = Some(topic.into());
        self
    }

    /// Builds rollup tiers from the final results.
    pub fn rollup(mut self, spec: RollupSpec) -> Self {
        self.rollup = Some(spec);
        self
    }

    /// Keeps the results away from the alert rules.
    pub fn without_alerts(mut self) -> Self {
        self.alerts = false;
        self
    }
}

/// The archive of raw events: a partitioned, rolled-over file sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ArchiveConfig {
    /// File format.
    pub format: ArchiveFormat,
    /// Columns, paths, rollover and memory bounds.
    #[serde(default)]
    pub sink: SinkConfig,
}

impl ArchiveConfig {
    /// An archive in `format` with the sink settings `sink`.
    pub fn new(format: ArchiveFormat, sink: SinkConfig) -> Self {
        ArchiveConfig { format, sink }
    }
}

/// The archive's file format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum ArchiveFormat {
    /// RFC 4180 CSV.
    Csv,
    /// Parquet (feature `parquet`).
    #[cfg(feature = "parquet")]
    Parquet {
        /// Codec, row groups, pages, bloom filter.
        #[serde(default)]
        options: ParquetOptions,
    },
}

/// Raw events handed to the host (for a `full` subscription, or an archive
/// of its own).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// Whether admitted events are copied to [`Outputs::raw`](super::Outputs::raw).
    pub enabled: bool,
    /// Most events held between two `advance` calls; more are counted in
    /// [`TenantStats::raw_dropped`](super::TenantStats::raw_dropped) and
    /// not copied (they are still aggregated and archived).
    pub max_buffered: usize,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig { enabled: false, max_buffered: 100_000 }
    }
}

/// Idempotent ingest: the ids seen most recently, per tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedupConfig {
    /// How many of a tenant's most recent ids are remembered; an event
    /// whose id is among them is dropped as a duplicate. Events without an
    /// id are never duplicates.
    pub ids_per_tenant: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig { ids_per_tenant: 100_000 }
    }
}

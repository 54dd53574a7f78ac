//! Embeddable, sans-IO stream processing for realtime dashboards.
//!
//! edgestream turns bodies of telemetry events into validated, counted
//! batches, and (as the crate grows) into event-time window aggregates,
//! rollups, dashboard deltas, alerts and Parquet files. The same code runs in
//! a Cloudflare Worker (`wasm32-unknown-unknown`) and in a multi-core server.
//!
//! **The core performs no I/O, reads no clock and spawns no thread.** Bytes
//! and the current time come in as arguments; results go out as values.
//! That makes every behaviour deterministic, testable and replayable, and is
//! what lets the core run on the edge, where reading the system clock panics and
//! there are no threads.
//!
//! # A first look
//!
//! ```
//! use edgestream::event::{decode, Limits};
//! use edgestream::stats::IngestStats;
//! use edgestream::time::Timestamp;
//!
//! let body = r#"{"tenant":"acme","stream":"metrics","ts":"2026-11-28T04:00:00Z","dims":{"region":"eu"},"fields":{"temp_c":21.5}}
//! {"tenant":"acme","stream":"metrics","ts":"2026-11-28T04:00:01Z","fields":{"temp_c":"NaN"}}"#;
//!
//! let limits = Limits::default();
//! let now: Timestamp = "2026-11-28T04:00:02Z".parse()?;
//! let mut batch = decode("application/x-ndjson", body, &limits)?;
//! let report = limits.validate(&mut batch, now);
//!
//! let mut stats = IngestStats::default();
//! stats.record_batch(body.len(), &report);
//! assert_eq!((stats.accepted, stats.rejected.total()), (1, 1));
//! assert_eq!(batch.get(0).unwrap().field("temp_c"), Some(21.5));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Modules
//!
//! - [`time`]: [`Timestamp`](time::Timestamp) (i64 ns since the epoch), [`Span`](time::Span),
//!   RFC 3339, tumbling-window arithmetic.
//! - [`event`]: the event schema, [`EventBatch`](event::EventBatch), the JSON / NDJSON /
//!   Protobuf codecs, [`Limits`](event::Limits) and validation.
//! - [`proto`]: the `prost` message types of `proto/edgestream.proto`.
//! - [`geo`]: geohash cells.
//! - [`stats`]: counters of accepted and rejected events.
//! - [`window`]: event-time tumbling windows and rollups; [`window::agg`]
//!   holds the mergeable aggregate states: count, sum, min, max, mean, last,
//!   quantiles.
//! - [`flow`]: backpressure policies: GCRA rate limiting per key, bounded queues with
//!   overflow policies, a circuit breaker, and a load-driven fidelity ladder.
//! - [`delta`]: dashboard tile boards with deltas, replicas and conflation; the
//!   time-series codec.
//! - [`sample`]: deterministic hash, reservoir and adaptive per-key sampling, with weights.
//! - [`sink`]: raw events to partitioned, rolled-over files for archiving:
//!   Parquet (feature `parquet`) and CSV.
//! - [`alert`]: alert rules over window results, their evaluation in event time,
//!   escalation, grouping, silences and notification payloads.
//! - [`auth`]: HS256 signed tokens (JWT) with tenant, topics, modes and expiry;
//!   key rotation by key id.
//! - [`pipeline`]: all of the above as one engine: `ingest` a body, `advance` the
//!   clock, get results, deltas, alerts and files back.
//!
//! # Feature flags
//!
//! The default build is the wasm-safe core. Features add formats, adapters
//! and sinks on top of it:
//!
//! | feature | status | adds |
//! | --- | --- | --- |
//! | `yaml` | on by default | alert rule files and rule tests in YAML (`serde_yaml_ng`, pure Rust, wasm-safe) |
//! | `toml` | available | alert rule files in TOML |
//! | `parquet` | available | Parquet files of events and window results in [`sink`] (arrow + parquet; zstd outside wasm32) |
//! | `tokio` | available | [`host::tokio`]: a pipeline on tokio with its ingest channel, timers, subscriber fan-out, file sinks and notification delivery |
//! | `workers` | available | [`host::workers`]: a Durable Object "stream room" (logic on every target, workers-rs glue on wasm32) |
//! | `object-store` | available | archive files to S3, R2, GCS or Azure from the tokio host |
//! | `smtp` | available | email notifications from the tokio host |
//!
//! ## Wasm
//!
//! The core builds for `wasm32-unknown-unknown` with default features; CI
//! checks it on every change.
//!
//! # Panics
//!
//! No function panics on input data: decoders return [`DecodeError`](event::DecodeError),
//! validation returns [`RejectReason`](event::RejectReason)s, and lints deny
//! `unwrap`, `expect` and unchecked indexing outside tests.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod alert;
pub mod auth;
mod base64;
pub mod delta;
pub mod event;
pub mod flow;
pub mod geo;
#[cfg(any(feature = "tokio", feature = "workers"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "tokio", feature = "workers"))))]
pub mod host;
pub mod pipeline;
pub mod proto;
pub mod sample;
pub mod sink;
pub mod stats;
mod text;
pub mod time;
pub mod window;

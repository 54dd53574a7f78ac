//! Batch files for archiving and export: raw events as Parquet (feature
//! `parquet`) or CSV, partitioned Hive-style by tenant, stream, date and
//! hour, rolled over by rows, bytes and age.
//!
//! The sink does no I/O: it returns each finished file as bytes with its
//! path and metadata ([`FinishedFile`]), and the host stores it (R2, S3, a
//! local directory). Paths are deterministic, so a host that retries a
//! put overwrites the same object instead of duplicating it.
//!
//! # Parquet schema of raw events
//!
//! | column | Arrow type | |
//! | --- | --- | --- |
//! | `ts` | `Timestamp(Nanosecond, "UTC")` | event time |
//! | `tenant`, `stream` | `Dictionary(Int32, Utf8)` | |
//! | `id` | `Utf8`, nullable | byte ids as base64 |
//! | one per promoted dim | `Utf8`, nullable | [`EventColumns::dims`] |
//! | one per promoted field | `Float64`, nullable | [`EventColumns::fields`] |
//! | `dims` | `Map<Utf8, Utf8>` | the other dims |
//! | `fields` | `Map<Utf8, Float64>` | the other fields |
//! | `lat`, `lon` | `Float64`, nullable | geo point |
//! | `payload` | `Binary`, nullable | only with [`EventColumns::payload`] |
//!
//! The file's key-value metadata carries `edgestream.schema` =
//! [`EVENT_SCHEMA_VERSION`]. CSV files ([`EventSink::csv`]) have the same
//! columns, with RFC 3339 times and the maps as JSON objects.

mod csv;
#[cfg(feature = "parquet")]
mod parquet;
mod path;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

#[cfg(feature = "parquet")]
pub use self::parquet::{Compression, ParquetOptions};
pub use path::DEFAULT_TEMPLATE;

use crate::event::{EventBatch, EventRef};
use crate::time::{Span, Timestamp};

/// The version of the raw-event file schema, in each file's metadata.
pub const EVENT_SCHEMA_VERSION: &str = "1";

/// Which dims and fields get columns of their own; the others go to the
/// `dims` and `fields` map columns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventColumns {
    /// Dims promoted to `Utf8` columns, named as the dim.
    pub dims: Vec<String>,
    /// Fields promoted to `Float64` columns, named as the field.
    pub fields: Vec<String>,
    /// Whether to keep the raw payload (a `Binary` column).
    pub payload: bool,
}

/// When an open file is finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rollover {
    /// Rows per file.
    pub max_rows: u64,
    /// Bytes per file (the encoded size so far plus what is buffered).
    pub max_bytes: usize,
    /// Time a file may stay open, on the host's clock.
    pub max_age: Span,
}

impl Default for Rollover {
    fn default() -> Self {
        Rollover { max_rows: 1_000_000, max_bytes: 128 * 1024 * 1024, max_age: Span::from_mins(5) }
    }
}

/// How a sink partitions, names and bounds its files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    /// Column layout of raw events.
    pub columns: EventColumns,
    /// When files are finished.
    pub rollover: Rollover,
    /// Path template; placeholders `{tenant}`, `{stream}`, `{date}`
    /// (`YYYY-MM-DD`), `{hour}` (`HH`), `{writer}`, `{seq}` (required),
    /// `{ext}`. Default [`DEFAULT_TEMPLATE`].
    pub path: String,
    /// This writer's name in file names: unique per writer (a Durable
    /// Object's id, a host's name), so writers never overwrite each other.
    pub writer_id: String,
    /// Most partitions with an open file; opening one more finishes the
    /// one open longest first.
    pub max_open_partitions: usize,
    /// Most bytes buffered across open files; above it the largest open
    /// file is finished. Together with `max_open_partitions` this bounds
    /// the sink's memory.
    pub max_buffered_bytes: usize,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            columns: EventColumns::default(),
            rollover: Rollover::default(),
            path: DEFAULT_TEMPLATE.to_owned(),
            writer_id: "0".to_owned(),
            max_open_partitions: 64,
            max_buffered_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Why a sink could not be built or could not encode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The configuration is invalid.
    #[error("sink configuration: {0}")]
    Config(String),
    /// The encoder failed (a bug or an exhausted resource, not bad input).
    #[error("encoding failed: {0}")]
    Encode(String),
}

/// A finished file, for the host to store at `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FinishedFile {
    /// Relative path (Hive-style partition directories, then the name).
    pub path: String,
    /// The file.
    pub bytes: Bytes,
    /// Rows in it.
    pub rows: u64,
    /// Earliest and latest event time in it.
    pub min_time: Timestamp,
    /// See `min_time`.
    pub max_time: Timestamp,
    /// Its tenant.
    pub tenant: Arc<str>,
    /// Its stream.
    pub stream: Arc<str>,
    /// Why it was finished.
    pub reason: FinishReason,
}

/// Why a file was finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FinishReason {
    /// [`Rollover::max_rows`].
    Rows,
    /// [`Rollover::max_bytes`].
    Bytes,
    /// [`Rollover::max_age`].
    Age,
    /// [`SinkConfig::max_open_partitions`].
    OpenPartitions,
    /// [`SinkConfig::max_buffered_bytes`].
    Memory,
    /// [`EventSink::flush`].
    Flush,
}

/// What a sink did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SinkStats {
    /// Events written into files (finished or open).
    pub events: u64,
    /// Files finished.
    pub files: u64,
    /// Bytes of finished files.
    pub bytes: u64,
    /// Files finished for each reason.
    pub by_reason: BTreeMap<String, u64>,
}

/// Checks that promoted columns are unique and do not clash with the fixed ones.
fn check_columns(columns: &EventColumns) -> Result<(), SinkError> {
    let mut names: Vec<&str> = vec!["ts", "tenant", "stream", "id", "dims", "fields", "lat", "lon", "payload"];
    for name in columns.dims.iter().chain(&columns.fields) {
        if names.contains(&name.as_str()) {
            return Err(SinkError::Config(format!("column {name:?} is promoted twice or clashes with a fixed column")));
        }
        names.push(name);
    }
    Ok(())
}

/// An encoder of one file: rows in, bytes out.
pub(crate) trait Encoder {
    /// Appends one event.
    fn push(&mut self, event: &EventRef<'_>) -> Result<(), SinkError>;
    /// Bytes the file holds so far: encoded, plus buffered.
    fn size(&self) -> usize;
    /// Finishes the file.
    fn finish(self: Box<Self>) -> Result<Vec<u8>, SinkError>;
}

/// Makes encoders for new files.
pub(crate) trait EncoderFactory {
    fn open(&self) -> Result<Box<dyn Encoder>, SinkError>;
    fn extension(&self) -> &'static str;
}

/// A partition: tenant, stream and hour of event time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct PartitionKey {
    tenant: Arc<str>,
    stream: Arc<str>,
    hour: Timestamp,
}

struct OpenFile {
    encoder: Box<dyn Encoder>,
    /// `encoder.size()` after the last push.
    size: usize,
    rows: u64,
    opened: Timestamp,
    min_time: Timestamp,
    max_time: Timestamp,
}

/// Writes events into partitioned, rolled-over files.
///
/// ```
/// # #[cfg(feature = "parquet")] {
/// use edgestream::event::{Event, EventBatch};
/// use edgestream::sink::{EventSink, ParquetOptions, SinkConfig};
/// use edgestream::time::Timestamp;
///
/// let mut sink = EventSink::parquet(SinkConfig { writer_id: "do-7".into(), ..SinkConfig::default() }, ParquetOptions::default())?;
/// let now = Timestamp::from_secs(1_795_838_400).unwrap(); // 2026-11-28T04:00:00Z
/// let mut batch = EventBatch::new();
/// batch.push(&Event::new("acme", "http", now).with_dim("region", "eu").with_field("latency_ms", 41.5));
/// let mut files = Vec::new();
/// sink.push(&batch, now, &mut files)?;
/// sink.flush(&mut files)?;
/// assert_eq!(files[0].path, "tenant=acme/stream=http/date=2026-11-28/hour=04/part-do-7-000000.parquet");
/// assert_eq!(files[0].rows, 1);
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct EventSink {
    config: SinkConfig,
    factory: Box<dyn EncoderFactory>,
    open: BTreeMap<PartitionKey, OpenFile>,
    /// Files started so far: the next file's `{seq}`.
    seq: u64,
    /// Sum of the open files' sizes.
    buffered: usize,
    stats: SinkStats,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("open", &self.open.len())
            .field("seq", &self.seq)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

const HOUR: Span = Span::from_hours(1);

impl EventSink {
    fn new(config: SinkConfig, factory: Box<dyn EncoderFactory>) -> Result<EventSink, SinkError> {
        path::check(&config.path).map_err(SinkError::Config)?;
        let r = &config.rollover;
        if r.max_rows == 0 || r.max_bytes == 0 || !r.max_age.is_positive() {
            return Err(SinkError::Config("rollover limits must be positive".into()));
        }
        if config.max_open_partitions == 0 || config.max_buffered_bytes == 0 {
            return Err(SinkError::Config("`max_open_partitions` and `max_buffered_bytes` must be positive".into()));
        }
        Ok(EventSink { config, factory, open: BTreeMap::new(), seq: 0, buffered: 0, stats: SinkStats::default() })
    }

    /// What the sink did so far.
    pub fn stats(&self) -> &SinkStats {
        &self.stats
    }

    /// Files open now.
    pub fn open_files(&self) -> usize {
        self.open.len()
    }

    /// Bytes held by the open files.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Writes every event of `batch` into its partition's open file,
    /// opening files (host time `now`) and finishing them into `out` as
    /// the limits require.
    pub fn push(&mut self, batch: &EventBatch, now: Timestamp, out: &mut Vec<FinishedFile>) -> Result<(), SinkError> {
        for event in batch.iter() {
            self.push_event(&event, now, out)?;
        }
        Ok(())
    }

    fn push_event(
        &mut self,
        event: &EventRef<'_>,
        now: Timestamp,
        out: &mut Vec<FinishedFile>,
    ) -> Result<(), SinkError> {
        let ts = event.ts();
        let hour = Timestamp::from_nanos(ts.as_nanos().div_euclid(HOUR.as_nanos()) * HOUR.as_nanos());
        let key = PartitionKey { tenant: Arc::from(event.tenant()), stream: Arc::from(event.stream()), hour };
        if !self.open.contains_key(&key) {
            if self.open.len() >= self.config.max_open_partitions {
                let oldest = self.open.iter().min_by_key(|(_, f)| f.opened).map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.finish(&oldest, FinishReason::OpenPartitions, out)?;
                }
            }
            let encoder = self.factory.open()?;
            let size = encoder.size();
            self.buffered = self.buffered.saturating_add(size);
            let file = OpenFile { encoder, size, rows: 0, opened: now, min_time: ts, max_time: ts };
            self.open.insert(key.clone(), file);
        }
        let Some(file) = self.open.get_mut(&key) else { return Ok(()) };
        file.encoder.push(event)?;
        let size = file.encoder.size();
        self.buffered = self.buffered.saturating_sub(file.size).saturating_add(size);
        file.size = size;
        file.rows += 1;
        file.min_time = file.min_time.min(ts);
        file.max_time = file.max_time.max(ts);
        self.stats.events = self.stats.events.saturating_add(1);
        let rollover = self.config.rollover;
        if file.rows >= rollover.max_rows {
            self.finish(&key, FinishReason::Rows, out)?;
        } else if size >= rollover.max_bytes {
            self.finish(&key, FinishReason::Bytes, out)?;
        }
        self.bound_memory(out)
    }

    /// Finishes the largest open files while the buffered total is over the cap.
    fn bound_memory(&mut self, out: &mut Vec<FinishedFile>) -> Result<(), SinkError> {
        while self.buffered > self.config.max_buffered_bytes {
            let largest = self.open.iter().max_by_key(|(_, f)| f.size).map(|(k, _)| k.clone());
            let Some(largest) = largest else { break };
            self.finish(&largest, FinishReason::Memory, out)?;
        }
        Ok(())
    }

    /// Finishes the files open for [`Rollover::max_age`] or longer.
    pub fn advance(&mut self, now: Timestamp, out: &mut Vec<FinishedFile>) -> Result<(), SinkError> {
        let max_age = self.config.rollover.max_age;
        let old: Vec<PartitionKey> = self
            .open
            .iter()
            .filter(|(_, f)| now.saturating_since(f.opened) >= max_age)
            .map(|(k, _)| k.clone())
            .collect();
        for key in old {
            self.finish(&key, FinishReason::Age, out)?;
        }
        Ok(())
    }

    /// When [`advance`](EventSink::advance) next has a file to finish.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.open.values().map(|f| f.opened.saturating_add(self.config.rollover.max_age)).min()
    }

    /// Finishes every open file (at shutdown, or before a snapshot).
    pub fn flush(&mut self, out: &mut Vec<FinishedFile>) -> Result<(), SinkError> {
        let keys: Vec<PartitionKey> = self.open.keys().cloned().collect();
        for key in keys {
            self.finish(&key, FinishReason::Flush, out)?;
        }
        Ok(())
    }

    fn finish(
        &mut self,
        key: &PartitionKey,
        reason: FinishReason,
        out: &mut Vec<FinishedFile>,
    ) -> Result<(), SinkError> {
        let Some(file) = self.open.remove(key) else { return Ok(()) };
        self.buffered = self.buffered.saturating_sub(file.size);
        let bytes = Bytes::from(file.encoder.finish()?);
        let path = path::render(
            &self.config.path,
            &path::PathParts {
                tenant: &key.tenant,
                stream: &key.stream,
                hour: key.hour,
                writer: &self.config.writer_id,
                seq: self.seq,
                ext: self.factory.extension(),
            },
        );
        self.seq = self.seq.saturating_add(1);
        self.stats.files = self.stats.files.saturating_add(1);
        self.stats.bytes = self.stats.bytes.saturating_add(bytes.len() as u64);
        let counter = self.stats.by_reason.entry(format!("{reason:?}").to_lowercase()).or_insert(0);
        *counter = counter.saturating_add(1);
        out.push(FinishedFile {
            path,
            bytes,
            rows: file.rows,
            min_time: file.min_time,
            max_time: file.max_time,
            tenant: Arc::clone(&key.tenant),
            stream: Arc::clone(&key.stream),
            reason,
        });
        Ok(())
    }
}

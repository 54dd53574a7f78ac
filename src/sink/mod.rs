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
//! | `ts` | `Timestamp(Nanosecond, "UTC")` | event time; named by [`EventColumns::time_column`] |
//! | `tenant`, `stream` | `Dictionary(Int32, Utf8)` | |
//! | `id` | `Utf8`, nullable | byte ids as base64 |
//! | one per promoted dim | `Utf8`, nullable | [`EventColumns::dims`] |
//! | one per promoted field | `Float64`, nullable | [`EventColumns::fields`] |
//! | one per integer field | `Int64`, nullable | [`EventColumns::int_fields`] |
//! | `dims` | `Map<Utf8, Utf8>` | the other dims |
//! | `fields` | `Map<Utf8, Float64>` | the other fields |
//! | `lat`, `lon` | `Float64`, nullable | geo point |
//! | `payload` | `Binary`, nullable | only with [`EventColumns::payload`] |
//!
//! Each row group is sorted by event time (rows that came out of order
//! are put in order, the usual case costs one check) and its Parquet
//! sorting metadata says so, which lets readers skip and merge.
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
pub use path::{DEFAULT_TEMPLATE, partition_value};

use smallvec::SmallVec;

use crate::event::{EventBatch, EventRef, Sym, Symbols};
use crate::text::short_eq;
use crate::time::{Span, Timestamp};
use crate::window::{FieldSpec, WindowResult, WindowSpec};

/// The version of the raw-event file schema, in each file's metadata
/// (key `edgestream.schema`).
pub const EVENT_SCHEMA_VERSION: &str = "1";

/// The version of the window-result file schema, in each file's metadata
/// (key `edgestream.result_schema`).
pub const RESULT_SCHEMA_VERSION: &str = "1";

/// Which dims and fields get columns of their own; the others go to the
/// `dims` and `fields` map columns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventColumns {
    /// Dims promoted to `Utf8` columns, named as the dim.
    pub dims: Vec<String>,
    /// Fields promoted to `Float64` columns, named as the field.
    pub fields: Vec<String>,
    /// Fields promoted to `Int64` columns (ids, counts, cents): a value
    /// that is not an integer in the `i64` range is not rounded: it goes
    /// to the `fields` map instead, and the column holds null.
    pub int_fields: Vec<String>,
    /// Whether to keep the raw payload (a `Binary` column).
    pub payload: bool,
    /// The name of the event-time column (default `ts`).
    pub time_column: String,
}

impl Default for EventColumns {
    fn default() -> Self {
        EventColumns {
            dims: Vec::new(),
            fields: Vec::new(),
            int_fields: Vec::new(),
            payload: false,
            time_column: "ts".to_owned(),
        }
    }
}

/// `v` as an `i64`, if it is one exactly.
pub(crate) fn exact_int(v: f64) -> Option<i64> {
    // 2^63 is exactly representable; every integral f64 below it fits.
    (v.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&v)).then_some(v as i64)
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
    /// Within a writer, files are numbered by `{seq}`; a writer that
    /// restarts must resume the numbering ([`EventSink::resume_at`]) or
    /// take a new id.
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
    /// Earliest and latest event time in it (window start, for results).
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
    /// Rows (events or window results) written into files, finished or open.
    pub rows: u64,
    /// Files finished.
    pub files: u64,
    /// Bytes of finished files.
    pub bytes: u64,
    /// Files finished for each reason (in JSON, keyed by the reasons'
    /// snake_case names).
    pub by_reason: BTreeMap<FinishReason, u64>,
}

/// Checks that promoted columns are unique and do not clash with the fixed ones.
fn check_columns(columns: &EventColumns) -> Result<(), SinkError> {
    if columns.time_column.is_empty() {
        return Err(SinkError::Config("`time_column` is empty".into()));
    }
    check_unique(Layout::Events(Arc::new(columns.clone())).column_names())
}

/// Checks that no column name is used twice.
fn check_unique(names: Vec<String>) -> Result<(), SinkError> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if !seen.insert(name.clone()) {
            return Err(SinkError::Config(format!(
                "column {name:?} is twice in the schema (promoted twice, or clashing with a fixed column)"
            )));
        }
    }
    Ok(())
}

/// A row of a file: a raw event (with the routing of its batch's
/// symbols) or a window result.
#[derive(Clone, Copy)]
pub(crate) enum Row<'a> {
    Event(&'a EventRef<'a>, &'a Route<'a>),
    Result(&'a WindowResult),
}

impl Row<'_> {
    /// Tenant, stream and time (event time, or window start).
    fn key(&self) -> (&str, &str, Timestamp) {
        match self {
            Row::Event(e, _) => (e.tenant(), e.stream(), e.ts()),
            Row::Result(r) => (&r.group.tenant, &r.group.stream, r.start),
        }
    }
}

/// An encoder of one file: rows in, bytes out.
pub(crate) trait Encoder: Send {
    /// Appends one row (always of the kind its factory was made for).
    fn push(&mut self, row: Row<'_>) -> Result<(), SinkError>;
    /// Bytes the file holds so far: encoded, plus buffered.
    fn size(&self) -> usize;
    /// Finishes the file.
    fn finish(self: Box<Self>) -> Result<Vec<u8>, SinkError>;
}

/// Makes encoders for new files.
pub(crate) trait EncoderFactory: Send {
    fn open(&self) -> Result<Box<dyn Encoder>, SinkError>;
    fn extension(&self) -> &'static str;
}

/// What a sink's files hold: events or window results, and their columns.
#[derive(Clone)]
pub(crate) enum Layout {
    Events(Arc<EventColumns>),
    Results(Arc<ResultColumns>),
}

impl Layout {
    /// The column names, in file order.
    fn column_names(&self) -> Vec<String> {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
        let mut names = Vec::new();
        match self {
            Layout::Events(c) => {
                names.push(c.time_column.clone());
                names.extend(owned(&["tenant", "stream", "id"]));
                names.extend(c.dims.iter().chain(&c.fields).chain(&c.int_fields).cloned());
                names.extend(owned(&["dims", "fields", "lat", "lon"]));
                if c.payload {
                    names.push("payload".to_owned());
                }
            }
            Layout::Results(c) => {
                names.extend(owned(&["window_start", "window_end", "tenant", "stream"]));
                names.extend(c.labels.iter().cloned());
                names.extend(owned(&["labels", "events", "count"]));
                names.extend(c.fields.iter().flat_map(ResultColumns::field_columns));
                names.extend(owned(&["revision", "is_final"]));
            }
        }
        names
    }
}

/// The promoted dim and field names of [`EventColumns`] as symbols of one
/// batch: found once per batch, so sorting an event's dims and fields
/// into promoted columns and maps compares integers, not strings.
pub(crate) struct Route<'a> {
    symbols: &'a Symbols,
    dims: SmallVec<[Option<Sym>; 4]>,
    fields: SmallVec<[Option<Sym>; 4]>,
    ints: SmallVec<[Option<Sym>; 4]>,
}

impl<'a> Route<'a> {
    pub(crate) fn new(columns: &EventColumns, symbols: &'a Symbols) -> Route<'a> {
        Route {
            symbols,
            dims: columns.dims.iter().map(|d| symbols.get(d)).collect(),
            fields: columns.fields.iter().map(|f| symbols.get(f)).collect(),
            ints: columns.int_fields.iter().map(|f| symbols.get(f)).collect(),
        }
    }

    /// The value of each promoted dim, in column order (the first of
    /// repeated names wins, as [`EventRef::dim`] reads).
    pub(crate) fn promoted_dims(&self, e: &EventRef<'a>) -> impl Iterator<Item = Option<&'a str>> + use<'a, '_> {
        let (symbols, dims) = (self.symbols, e.dim_syms());
        self.dims.iter().map(move |key| {
            let key = (*key)?;
            dims.iter().find(|(k, _)| *k == key).map(|&(_, v)| symbols.str(v))
        })
    }

    /// The dims that go to the `dims` map: those without a column, and
    /// repeats of a promoted one after its first.
    pub(crate) fn other_dims(&self, e: &EventRef<'a>) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a, '_> {
        let (symbols, dims) = (self.symbols, e.dim_syms());
        dims.iter()
            .enumerate()
            .filter(move |&(i, _)| to_map(dims, i, &self.dims, |_| true))
            .map(move |(_, &(k, v))| (symbols.str(k), symbols.str(v)))
    }

    /// The value of each promoted field, in column order (the first of
    /// repeated names wins).
    pub(crate) fn promoted_fields(&self, e: &EventRef<'a>) -> impl Iterator<Item = Option<f64>> + use<'a, '_> {
        let fields = e.field_syms();
        self.fields.iter().map(move |key| {
            let key = (*key)?;
            fields.iter().find(|(k, _)| *k == key).map(|&(_, v)| v)
        })
    }

    /// The value of each `Int64` field, in column order: `None` when the
    /// event lacks it or its value is not an exact integer (see
    /// [`EventColumns::int_fields`]).
    pub(crate) fn promoted_ints(&self, e: &EventRef<'a>) -> impl Iterator<Item = Option<i64>> + use<'a, '_> {
        let fields = e.field_syms();
        self.ints.iter().map(move |key| {
            let key = (*key)?;
            fields.iter().find(|(k, _)| *k == key).and_then(|&(_, v)| exact_int(v))
        })
    }

    /// The fields that go to the `fields` map: those without a column,
    /// repeats of a promoted one after its first, and an `Int64` field
    /// whose value is not an exact integer.
    pub(crate) fn other_fields(&self, e: &EventRef<'a>) -> impl Iterator<Item = (&'a str, f64)> + use<'a, '_> {
        let (symbols, fields) = (self.symbols, e.field_syms());
        fields
            .iter()
            .enumerate()
            .filter(move |&(i, &(k, _))| {
                if self.ints.contains(&Some(k)) {
                    to_map(fields, i, &self.ints, |v| exact_int(*v).is_some())
                } else {
                    to_map(fields, i, &self.fields, |_| true)
                }
            })
            .map(move |(_, &(k, v))| (symbols.str(k), v))
    }
}

/// Whether pair `i` of an event's pairs goes to the map rather than to a
/// column: its key has no column, an earlier pair of the same key took
/// the column (the first of repeated names wins, as [`EventRef::dim`]
/// reads), or the column cannot hold its value (`fits`).
fn to_map<T>(pairs: &[(Sym, T)], i: usize, columns: &[Option<Sym>], fits: impl Fn(&T) -> bool) -> bool {
    let Some((key, value)) = pairs.get(i) else { return false };
    if !columns.contains(&Some(*key)) {
        return true;
    }
    let first = !pairs.get(..i).unwrap_or_default().iter().any(|(k, _)| k == key);
    !(first && fits(value))
}

/// The error of an encoder given a row of the other kind (a bug).
pub(crate) fn wrong_row() -> SinkError {
    SinkError::Encode("a row of the wrong kind for this file".into())
}

/// A partition: tenant, stream and hour.
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
    core: Core,
}

/// Writes window results into partitioned, rolled-over files: the same
/// partitioning (by the window's start) and rollover as [`EventSink`].
///
/// # Schema
///
/// | column | Arrow type | |
/// | --- | --- | --- |
/// | `window_start`, `window_end` | `Timestamp(Nanosecond, "UTC")` | |
/// | `tenant`, `stream` | `Dictionary(Int32, Utf8)` | |
/// | one per label of [`ResultColumns::labels`] | `Utf8` | group labels |
/// | `labels` | `Map<Utf8, Utf8>` | the other group labels |
/// | `events` | `UInt64` | events in the window |
/// | `count` | `Float64` | weighted count |
/// | `<field>_count`, `_sum`, `_min`, `_max`, `_mean`, `_last` | `Float64` | per field, those its [`FieldSpec::aggregates`] keep |
/// | `<field>_p50`, `_p99`, `_p999`, … | `Float64` | the field's quantiles |
/// | `revision` | `UInt32` | |
/// | `is_final` | `Boolean` | |
///
/// CSV files have the same columns, with RFC 3339 times and `labels` as a
/// JSON object.
pub struct ResultSink {
    core: Core,
}

/// Which group labels get columns of their own, and which fields and
/// quantiles the window results carry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResultColumns {
    /// Group labels promoted to `Utf8` columns; the others go to `labels`.
    pub labels: Vec<String>,
    /// The aggregated fields, with the quantiles to write for each.
    pub fields: Vec<FieldSpec>,
}

impl ResultColumns {
    /// The columns of the results of windows of `spec`: its group-by
    /// labels (and `geohash`) promoted, its fields and quantiles.
    pub fn of(spec: &WindowSpec) -> ResultColumns {
        let mut labels = spec.group_by.clone();
        if spec.geo_cell.is_some() {
            labels.push("geohash".to_owned());
        }
        ResultColumns { labels, fields: spec.fields.clone() }
    }

    /// The names of the per-field columns of `field`, in order: one per
    /// aggregate it keeps, then one per quantile.
    pub(crate) fn field_columns(field: &FieldSpec) -> Vec<String> {
        let mut names: Vec<String> = field.aggregates.names().map(|a| format!("{}_{a}", field.field)).collect();
        names.extend(field.quantiles.iter().map(|&q| format!("{}_{}", field.field, crate::alert::Agg::Quantile(q))));
        names
    }

    /// Checks that the column names are unique.
    pub(crate) fn check(&self) -> Result<(), SinkError> {
        check_unique(Layout::Results(Arc::new(self.clone())).column_names())
    }
}

/// The values of the per-field columns of `field` in `r`, in the order of
/// [`ResultColumns::field_columns`]; `None` where the window has none.
pub(crate) fn result_values(r: &WindowResult, field: &FieldSpec) -> impl Iterator<Item = Option<f64>> {
    let f = r.field(&field.field);
    let s = f.map(|f| f.scalar);
    let scalars = field.aggregates.names().map(move |name| {
        let s = s?;
        match name {
            "count" => Some(s.count()),
            "sum" => s.sum().filter(|_| !s.is_empty()),
            "min" => s.min(),
            "max" => s.max(),
            "mean" => s.mean(),
            "last" => s.last().map(|(_, v)| v),
            _ => None,
        }
    });
    let quantiles: Vec<Option<f64>> = field
        .quantiles
        .iter()
        .map(|&q| {
            let f = f?;
            let listed = f.quantiles.iter().find(|(fq, _)| (fq - q).abs() < 1e-12).map(|&(_, v)| v);
            listed.or_else(|| f.sketch.as_ref().and_then(|s| s.quantile(q)))
        })
        .collect();
    scalars.into_iter().chain(quantiles)
}

/// Partitioning, rollover and bounds, shared by both sinks.
struct Core {
    config: SinkConfig,
    factory: Box<dyn EncoderFactory>,
    /// The open files (at most `max_open_partitions`, so searched linearly).
    open: Vec<(PartitionKey, OpenFile)>,
    /// Files started so far: the next file's `{seq}`.
    seq: u64,
    /// Sum of the open files' sizes.
    buffered: usize,
    /// The index in `open` of the previous row's file.
    last: Option<usize>,
    stats: SinkStats,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("open", &self.core.open.len())
            .field("stats", &self.core.stats)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ResultSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultSink")
            .field("open", &self.core.open.len())
            .field("stats", &self.core.stats)
            .finish_non_exhaustive()
    }
}

const HOUR: Span = Span::from_hours(1);

/// The methods both sinks share, delegating to their core.
macro_rules! sink_methods {
    ($sink:ident) => {
        impl $sink {
            /// What the sink did so far.
            pub fn stats(&self) -> &SinkStats {
                &self.core.stats
            }

            /// Files open now.
            pub fn open_files(&self) -> usize {
                self.core.open.len()
            }

            /// Bytes held by the open files.
            pub fn buffered_bytes(&self) -> usize {
                self.core.buffered
            }

            /// Finishes the files open for [`Rollover::max_age`] or longer.
            pub fn advance(&mut self, now: Timestamp, out: &mut Vec<FinishedFile>) -> Result<(), SinkError> {
                self.core.advance(now, out)
            }

            /// When [`advance`](Self::advance) next has a file to finish.
            pub fn next_deadline(&self) -> Option<Timestamp> {
                self.core.next_deadline()
            }

            /// Finishes every open file (at shutdown, or before a snapshot).
            pub fn flush(&mut self, out: &mut Vec<FinishedFile>) -> Result<(), SinkError> {
                self.core.flush(out)
            }

            /// The `{seq}` the next finished file gets. A host that
            /// restarts keeps it with its state and gives it back to
            /// [`resume_at`](Self::resume_at), so new files never take the
            /// names of files it already stored.
            pub fn next_seq(&self) -> u64 {
                self.core.seq
            }

            /// Continues numbering files from `seq` (see [`next_seq`](Self::next_seq)).
            pub fn resume_at(&mut self, seq: u64) {
                self.core.seq = seq;
            }

            /// Continues counting from `stats` (saved with the state of a
            /// writer that restarted), so the counters cover its whole life.
            pub fn resume_stats(&mut self, stats: SinkStats) {
                self.core.stats = stats;
            }
        }
    };
}

sink_methods!(EventSink);
sink_methods!(ResultSink);

impl EventSink {
    fn new(config: SinkConfig, factory: Box<dyn EncoderFactory>) -> Result<EventSink, SinkError> {
        Ok(EventSink { core: Core::new(config, factory)? })
    }

    /// Writes every event of `batch` into its partition's open file,
    /// opening files (host time `now`) and finishing them into `out` as
    /// the limits require.
    pub fn push(&mut self, batch: &EventBatch, now: Timestamp, out: &mut Vec<FinishedFile>) -> Result<(), SinkError> {
        let route = Route::new(&self.core.config.columns, batch.symbols());
        for event in batch.iter() {
            self.core.push(Row::Event(&event, &route), now, out)?;
        }
        Ok(())
    }
}

impl ResultSink {
    fn new(config: SinkConfig, factory: Box<dyn EncoderFactory>) -> Result<ResultSink, SinkError> {
        Ok(ResultSink { core: Core::new(config, factory)? })
    }

    /// Writes one window result into its partition's open file (by the
    /// window's start), finishing files into `out` as the limits require.
    pub fn push(
        &mut self,
        result: &WindowResult,
        now: Timestamp,
        out: &mut Vec<FinishedFile>,
    ) -> Result<(), SinkError> {
        self.core.push(Row::Result(result), now, out)
    }
}

impl Core {
    fn new(config: SinkConfig, factory: Box<dyn EncoderFactory>) -> Result<Core, SinkError> {
        path::check(&config.path).map_err(SinkError::Config)?;
        let r = &config.rollover;
        if r.max_rows == 0 || r.max_bytes == 0 || !r.max_age.is_positive() {
            return Err(SinkError::Config("rollover limits must be positive".into()));
        }
        if config.max_open_partitions == 0 || config.max_buffered_bytes == 0 {
            return Err(SinkError::Config("`max_open_partitions` and `max_buffered_bytes` must be positive".into()));
        }
        Ok(Core { config, factory, open: Vec::new(), seq: 0, buffered: 0, last: None, stats: SinkStats::default() })
    }

    fn push(&mut self, row: Row<'_>, now: Timestamp, out: &mut Vec<FinishedFile>) -> Result<(), SinkError> {
        let (tenant, stream, ts) = row.key();
        let hour = Timestamp::from_nanos(ts.as_nanos().div_euclid(HOUR.as_nanos()) * HOUR.as_nanos());
        // Consecutive rows mostly share a partition: one comparison finds it.
        let same = |k: &PartitionKey| {
            k.hour == hour
                && short_eq(k.tenant.as_bytes(), tenant.as_bytes())
                && short_eq(k.stream.as_bytes(), stream.as_bytes())
        };
        let found = match self.last {
            Some(i) if self.open.get(i).is_some_and(|(k, _)| same(k)) => Some(i),
            _ => self.open.iter().position(|(k, _)| same(k)),
        };
        let index = match found {
            Some(i) => i,
            None => {
                if self.open.len() >= self.config.max_open_partitions {
                    let oldest =
                        self.open.iter().enumerate().min_by_key(|(_, (k, f))| (f.opened, k.clone())).map(|(i, _)| i);
                    if let Some(oldest) = oldest {
                        self.finish(oldest, FinishReason::OpenPartitions, out)?;
                    }
                }
                let encoder = self.factory.open()?;
                let size = encoder.size();
                self.buffered = self.buffered.saturating_add(size);
                let key = PartitionKey { tenant: Arc::from(tenant), stream: Arc::from(stream), hour };
                self.open.push((key, OpenFile { encoder, size, rows: 0, opened: now, min_time: ts, max_time: ts }));
                self.open.len() - 1
            }
        };
        self.last = Some(index);
        let Some((_, file)) = self.open.get_mut(index) else { return Ok(()) };
        file.encoder.push(row)?;
        let size = file.encoder.size();
        self.buffered = self.buffered.saturating_sub(file.size).saturating_add(size);
        file.size = size;
        file.rows += 1;
        file.min_time = file.min_time.min(ts);
        file.max_time = file.max_time.max(ts);
        self.stats.rows = self.stats.rows.saturating_add(1);
        let rollover = self.config.rollover;
        if file.rows >= rollover.max_rows {
            self.finish(index, FinishReason::Rows, out)?;
        } else if size >= rollover.max_bytes {
            self.finish(index, FinishReason::Bytes, out)?;
        }
        self.bound_memory(out)
    }

    /// Finishes the largest open files while the buffered total is over the cap.
    fn bound_memory(&mut self, out: &mut Vec<FinishedFile>) -> Result<(), SinkError> {
        while self.buffered > self.config.max_buffered_bytes {
            let largest = self.open.iter().enumerate().max_by_key(|(_, (k, f))| (f.size, std::cmp::Reverse(k.clone())));
            let Some(largest) = largest.map(|(i, _)| i) else { break };
            self.finish(largest, FinishReason::Memory, out)?;
        }
        Ok(())
    }

    fn advance(&mut self, now: Timestamp, out: &mut Vec<FinishedFile>) -> Result<(), SinkError> {
        let max_age = self.config.rollover.max_age;
        self.finish_where(|f| now.saturating_since(f.opened) >= max_age, FinishReason::Age, out)
    }

    fn next_deadline(&self) -> Option<Timestamp> {
        self.open.iter().map(|(_, f)| f.opened.saturating_add(self.config.rollover.max_age)).min()
    }

    fn flush(&mut self, out: &mut Vec<FinishedFile>) -> Result<(), SinkError> {
        self.finish_where(|_| true, FinishReason::Flush, out)
    }

    /// Finishes the open files that match, in partition order (so file
    /// numbers do not depend on the order partitions were opened in).
    fn finish_where(
        &mut self,
        matches: impl Fn(&OpenFile) -> bool,
        reason: FinishReason,
        out: &mut Vec<FinishedFile>,
    ) -> Result<(), SinkError> {
        let mut keys: Vec<PartitionKey> =
            self.open.iter().filter(|(_, f)| matches(f)).map(|(k, _)| k.clone()).collect();
        keys.sort();
        for key in keys {
            if let Some(i) = self.open.iter().position(|(k, _)| *k == key) {
                self.finish(i, reason, out)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self, index: usize, reason: FinishReason, out: &mut Vec<FinishedFile>) -> Result<(), SinkError> {
        if index >= self.open.len() {
            return Ok(());
        }
        let (key, file) = self.open.swap_remove(index);
        self.last = None;
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
        let counter = self.stats.by_reason.entry(reason).or_insert(0);
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

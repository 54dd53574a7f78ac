//! Raw events as Parquet: Arrow builders per open file, encoded into row
//! groups by the `parquet` crate's `ArrowWriter` into memory.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, MapBuilder, StringBuilder, TimestampNanosecondBuilder,
    UInt32Builder, UInt64Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::types::TimestampNanosecondType;
use arrow_array::{ArrayRef, DictionaryArray, Int32Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as Codec, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use super::{
    EVENT_SCHEMA_VERSION, Encoder, EncoderFactory, EventColumns, EventSink, Layout, RESULT_SCHEMA_VERSION,
    ResultColumns, ResultSink, Route, Row, SinkConfig, SinkError, result_values, wrong_row,
};
use crate::event::{EventIdRef, EventRef};
use crate::text::short_eq;
use crate::window::WindowResult;

/// Parquet compression codecs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "codec", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Compression {
    /// zstd at a level from 1 to 22 (not built for wasm32: no C compiler
    /// is assumed there).
    Zstd {
        /// The level.
        level: i32,
    },
    /// Snappy.
    Snappy,
    /// LZ4 (raw).
    Lz4,
    /// No compression.
    None,
}

impl Default for Compression {
    /// zstd level 3 where it is built, else snappy.
    fn default() -> Self {
        if cfg!(target_arch = "wasm32") { Compression::Snappy } else { Compression::Zstd { level: 3 } }
    }
}

/// How Parquet files are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParquetOptions {
    /// The codec.
    pub compression: Compression,
    /// Rows per row group.
    pub row_group_rows: usize,
    /// Target bytes per data page.
    pub page_bytes: usize,
    /// A bloom filter on `id`, for point lookups.
    pub bloom_filter_id: bool,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            compression: Compression::default(),
            row_group_rows: 64 * 1024,
            page_bytes: 1024 * 1024,
            bloom_filter_id: false,
        }
    }
}

impl EventSink {
    /// A sink writing raw events as Parquet.
    pub fn parquet(config: SinkConfig, options: ParquetOptions) -> Result<EventSink, SinkError> {
        super::check_columns(&config.columns)?;
        let columns = Arc::new(config.columns.clone());
        let schema = schema_of(Rows::new(&columns).finish()?);
        let props = properties(options, ("edgestream.schema", EVENT_SCHEMA_VERSION), Some("id"))?;
        let factory =
            ParquetFactory { layout: Layout::Events(columns), schema, props, row_group_rows: options.row_group_rows };
        EventSink::new(config, Box::new(factory))
    }
}

impl ResultSink {
    /// A sink writing window results as Parquet.
    pub fn parquet(
        config: SinkConfig,
        columns: ResultColumns,
        options: ParquetOptions,
    ) -> Result<ResultSink, SinkError> {
        columns.check()?;
        let columns = Arc::new(columns);
        let schema = schema_of(ResultRows::new(&columns).finish()?);
        let props = properties(options, ("edgestream.result_schema", RESULT_SCHEMA_VERSION), None)?;
        let factory =
            ParquetFactory { layout: Layout::Results(columns), schema, props, row_group_rows: options.row_group_rows };
        ResultSink::new(config, Box::new(factory))
    }
}

/// Writer properties from the options, with the schema version in the
/// key-value metadata and a bloom filter on `bloom_column` if asked.
fn properties(
    options: ParquetOptions,
    version: (&str, &str),
    bloom_column: Option<&str>,
) -> Result<WriterProperties, SinkError> {
    if options.row_group_rows == 0 || options.page_bytes == 0 {
        return Err(SinkError::Config("`row_group_rows` and `page_bytes` must be positive".into()));
    }
    let codec = match options.compression {
        Compression::Zstd { level } => {
            if cfg!(target_arch = "wasm32") {
                return Err(SinkError::Config("zstd is not built for wasm32; use snappy or lz4".into()));
            }
            Codec::ZSTD(ZstdLevel::try_new(level).map_err(|e| SinkError::Config(e.to_string()))?)
        }
        Compression::Snappy => Codec::SNAPPY,
        Compression::Lz4 => Codec::LZ4_RAW,
        Compression::None => Codec::UNCOMPRESSED,
    };
    let mut props = WriterProperties::builder()
        .set_compression(codec)
        .set_max_row_group_row_count(Some(options.row_group_rows))
        .set_data_page_size_limit(options.page_bytes)
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_created_by(format!("edgestream {}", env!("CARGO_PKG_VERSION")))
        // Each row group is written sorted by its first column, the time.
        .set_sorting_columns(Some(vec![SortingColumn { column_idx: 0, descending: false, nulls_first: false }]))
        .set_key_value_metadata(Some(vec![KeyValue::new(version.0.to_owned(), version.1.to_owned())]));
    if let (true, Some(column)) = (options.bloom_filter_id, bloom_column) {
        props = props.set_column_bloom_filter_enabled(ColumnPath::from(column), true);
    }
    Ok(props.build())
}

struct ParquetFactory {
    layout: Layout,
    schema: SchemaRef,
    props: WriterProperties,
    row_group_rows: usize,
}

impl EncoderFactory for ParquetFactory {
    fn open(&self) -> Result<Box<dyn Encoder>, SinkError> {
        let writer = ArrowWriter::try_new(Vec::new(), Arc::clone(&self.schema), Some(self.props.clone()))
            .map_err(|e| SinkError::Encode(e.to_string()))?;
        let rows = match &self.layout {
            Layout::Events(columns) => Builders::Events(Box::new(Rows::new(columns))),
            Layout::Results(columns) => Builders::Results(Box::new(ResultRows::new(columns))),
        };
        Ok(Box::new(ParquetFile {
            written: writer.bytes_written(),
            rows,
            schema: Arc::clone(&self.schema),
            writer,
            row_group_rows: self.row_group_rows,
        }))
    }

    fn extension(&self) -> &'static str {
        "parquet"
    }
}

/// The builders of a file's buffered rows.
enum Builders {
    Events(Box<Rows>),
    Results(Box<ResultRows>),
}

impl Builders {
    fn len(&self) -> usize {
        match self {
            Builders::Events(r) => r.len,
            Builders::Results(r) => r.len,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Builders::Events(r) => r.bytes,
            Builders::Results(r) => r.bytes,
        }
    }

    fn finish(&mut self) -> Result<Vec<(String, ArrayRef, bool)>, SinkError> {
        match self {
            Builders::Events(r) => r.finish(),
            Builders::Results(r) => r.finish(),
        }
    }
}

/// Arrow builders of window results not yet encoded.
struct ResultRows {
    columns: Arc<ResultColumns>,
    start: TimestampNanosecondBuilder,
    end: TimestampNanosecondBuilder,
    tenant: DictColumn,
    stream: DictColumn,
    labels: Vec<StringBuilder>,
    other_labels: MapBuilder<StringBuilder, StringBuilder>,
    events: UInt64Builder,
    count: Float64Builder,
    values: Vec<Float64Builder>,
    revision: UInt32Builder,
    is_final: BooleanBuilder,
    len: usize,
    bytes: usize,
}

impl ResultRows {
    fn new(columns: &Arc<ResultColumns>) -> ResultRows {
        let values =
            columns.fields.iter().flat_map(ResultColumns::field_columns).map(|_| Float64Builder::new()).collect();
        ResultRows {
            columns: Arc::clone(columns),
            start: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            end: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            tenant: DictColumn::default(),
            stream: DictColumn::default(),
            labels: columns.labels.iter().map(|_| StringBuilder::new()).collect(),
            other_labels: MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()),
            events: UInt64Builder::new(),
            count: Float64Builder::new(),
            values,
            revision: UInt32Builder::new(),
            is_final: BooleanBuilder::new(),
            len: 0,
            bytes: 0,
        }
    }

    fn push(&mut self, r: &WindowResult) -> Result<(), SinkError> {
        self.start.append_value(r.start.as_nanos());
        self.end.append_value(r.end.as_nanos());
        self.tenant.append(&r.group.tenant);
        self.stream.append(&r.group.stream);
        let mut bytes = 48;
        for (name, builder) in self.columns.labels.iter().zip(&mut self.labels) {
            let v = r.group.label(name);
            builder.append_option(v);
            bytes += v.map_or(0, str::len);
        }
        for (k, v) in r.group.labels.iter().filter(|(k, _)| !self.columns.labels.iter().any(|l| **l == **k)) {
            self.other_labels.keys().append_value(&**k);
            self.other_labels.values().append_value(&**v);
            bytes += k.len() + v.len() + 8;
        }
        self.other_labels.append(true).map_err(|e| SinkError::Encode(e.to_string()))?;
        self.events.append_value(r.events);
        self.count.append_value(r.count);
        let mut builders = self.values.iter_mut();
        for field in &self.columns.fields {
            for value in result_values(r, field) {
                if let Some(b) = builders.next() {
                    b.append_option(value);
                    bytes += 8;
                }
            }
        }
        self.revision.append_value(r.revision);
        self.is_final.append_value(r.is_final);
        self.len += 1;
        self.bytes += bytes;
        Ok(())
    }

    fn finish(&mut self) -> Result<Vec<(String, ArrayRef, bool)>, SinkError> {
        let mut out: Vec<(String, ArrayRef, bool)> = vec![
            ("window_start".into(), Arc::new(self.start.finish()), false),
            ("window_end".into(), Arc::new(self.end.finish()), false),
            ("tenant".into(), self.tenant.finish()?, false),
            ("stream".into(), self.stream.finish()?, false),
        ];
        for (name, b) in self.columns.labels.iter().zip(&mut self.labels) {
            out.push((name.clone(), Arc::new(b.finish()), true));
        }
        out.push(("labels".into(), Arc::new(self.other_labels.finish()), false));
        out.push(("events".into(), Arc::new(self.events.finish()), false));
        out.push(("count".into(), Arc::new(self.count.finish()), false));
        let names = self.columns.fields.iter().flat_map(ResultColumns::field_columns);
        for (name, b) in names.zip(&mut self.values) {
            out.push((name, Arc::new(b.finish()), true));
        }
        out.push(("revision".into(), Arc::new(self.revision.finish()), false));
        out.push(("is_final".into(), Arc::new(self.is_final.finish()), false));
        self.len = 0;
        self.bytes = 0;
        Ok(out)
    }
}

/// The schema of the batches that builders produce, from the empty ones.
fn schema_of(columns: Vec<(String, ArrayRef, bool)>) -> SchemaRef {
    let fields: Vec<Field> = columns
        .into_iter()
        .map(|(name, array, nullable)| Field::new(name, array.data_type().clone(), nullable))
        .collect();
    Arc::new(Schema::new(fields))
}

/// A dictionary-encoded string column for values that come in long runs
/// (tenant, stream): a row whose value equals the previous row's costs one
/// short comparison instead of a hash lookup.
#[derive(Default)]
struct DictColumn {
    keys: Vec<i32>,
    values: Vec<Box<str>>,
    index: HashMap<Box<str>, i32>,
}

impl DictColumn {
    fn append(&mut self, value: &str) {
        let last = self.keys.last().copied();
        let key = match last {
            Some(k)
                if usize::try_from(k)
                    .ok()
                    .and_then(|k| self.values.get(k))
                    .is_some_and(|v| short_eq(v.as_bytes(), value.as_bytes())) =>
            {
                k
            }
            _ => match self.index.get(value) {
                Some(&k) => k,
                None => {
                    // Row groups are far below `i32::MAX` rows, and so are
                    // their distinct values.
                    let k = i32::try_from(self.values.len()).unwrap_or(i32::MAX);
                    self.values.push(value.into());
                    self.index.insert(value.into(), k);
                    k
                }
            },
        };
        self.keys.push(key);
    }

    /// The column built so far; the dictionary starts over.
    fn finish(&mut self) -> Result<ArrayRef, SinkError> {
        let keys = Int32Array::from(std::mem::take(&mut self.keys));
        let values: ArrayRef = Arc::new(StringArray::from_iter_values(self.values.drain(..)));
        self.index.clear();
        let array =
            DictionaryArray::<Int32Type>::try_new(keys, values).map_err(|e| SinkError::Encode(e.to_string()))?;
        Ok(Arc::new(array))
    }
}

/// Arrow builders of the rows not yet encoded.
struct Rows {
    columns: Arc<EventColumns>,
    ts: TimestampNanosecondBuilder,
    tenant: DictColumn,
    stream: DictColumn,
    id: StringBuilder,
    dims: Vec<StringBuilder>,
    fields: Vec<Float64Builder>,
    ints: Vec<Int64Builder>,
    other_dims: MapBuilder<StringBuilder, StringBuilder>,
    other_fields: MapBuilder<StringBuilder, Float64Builder>,
    lat: Float64Builder,
    lon: Float64Builder,
    payload: Option<BinaryBuilder>,
    len: usize,
    /// Bytes appended so far (an estimate of the builders' memory).
    bytes: usize,
}

impl Rows {
    fn new(columns: &Arc<EventColumns>) -> Rows {
        Rows {
            columns: Arc::clone(columns),
            ts: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            tenant: DictColumn::default(),
            stream: DictColumn::default(),
            id: StringBuilder::new(),
            dims: columns.dims.iter().map(|_| StringBuilder::new()).collect(),
            fields: columns.fields.iter().map(|_| Float64Builder::new()).collect(),
            ints: columns.int_fields.iter().map(|_| Int64Builder::new()).collect(),
            other_dims: MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()),
            other_fields: MapBuilder::new(None, StringBuilder::new(), Float64Builder::new()),
            lat: Float64Builder::new(),
            lon: Float64Builder::new(),
            payload: columns.payload.then(BinaryBuilder::new),
            len: 0,
            bytes: 0,
        }
    }

    fn push<'a>(&mut self, e: &EventRef<'a>, route: &Route<'a>) -> Result<(), SinkError> {
        self.ts.append_value(e.ts().as_nanos());
        self.tenant.append(e.tenant());
        self.stream.append(e.stream());
        let mut bytes = 40 + e.tenant().len().min(8) + e.stream().len().min(8);
        match e.id() {
            Some(EventIdRef::Str(s)) => {
                self.id.append_value(s);
                bytes += s.len();
            }
            Some(EventIdRef::Bytes(b)) => {
                let mut text = Vec::with_capacity(b.len().div_ceil(3) * 4);
                crate::base64::encode(b, &mut text);
                self.id.append_value(String::from_utf8_lossy(&text));
                bytes += text.len();
            }
            None => self.id.append_null(),
        }
        for (builder, v) in self.dims.iter_mut().zip(route.promoted_dims(e)) {
            builder.append_option(v);
            bytes += v.map_or(0, str::len);
        }
        for (k, v) in route.other_dims(e) {
            self.other_dims.keys().append_value(k);
            self.other_dims.values().append_value(v);
            bytes += k.len() + v.len() + 8;
        }
        self.other_dims.append(true).map_err(|e| SinkError::Encode(e.to_string()))?;
        for (builder, v) in self.fields.iter_mut().zip(route.promoted_fields(e)) {
            builder.append_option(v);
            bytes += 8;
        }
        for (builder, v) in self.ints.iter_mut().zip(route.promoted_ints(e)) {
            builder.append_option(v);
            bytes += 8;
        }
        for (k, v) in route.other_fields(e) {
            self.other_fields.keys().append_value(k);
            self.other_fields.values().append_value(v);
            bytes += k.len() + 16;
        }
        self.other_fields.append(true).map_err(|e| SinkError::Encode(e.to_string()))?;
        let geo = e.geo();
        self.lat.append_option(geo.map(|g| g.lat));
        self.lon.append_option(geo.map(|g| g.lon));
        if let Some(payload) = &mut self.payload {
            match e.payload() {
                Some(p) => {
                    payload.append_value(p);
                    bytes += p.len();
                }
                None => payload.append_null(),
            }
        }
        self.len += 1;
        self.bytes += bytes;
        Ok(())
    }

    /// The columns built so far, named; the builders start over.
    fn finish(&mut self) -> Result<Vec<(String, ArrayRef, bool)>, SinkError> {
        let mut out: Vec<(String, ArrayRef, bool)> = vec![
            (self.columns.time_column.clone(), Arc::new(self.ts.finish()), false),
            ("tenant".into(), self.tenant.finish()?, false),
            ("stream".into(), self.stream.finish()?, false),
            ("id".into(), Arc::new(self.id.finish()), true),
        ];
        for (name, b) in self.columns.dims.iter().zip(&mut self.dims) {
            out.push((name.clone(), Arc::new(b.finish()), true));
        }
        for (name, b) in self.columns.fields.iter().zip(&mut self.fields) {
            out.push((name.clone(), Arc::new(b.finish()), true));
        }
        for (name, b) in self.columns.int_fields.iter().zip(&mut self.ints) {
            out.push((name.clone(), Arc::new(b.finish()), true));
        }
        out.push(("dims".into(), Arc::new(self.other_dims.finish()), false));
        out.push(("fields".into(), Arc::new(self.other_fields.finish()), false));
        out.push(("lat".into(), Arc::new(self.lat.finish()), true));
        out.push(("lon".into(), Arc::new(self.lon.finish()), true));
        if let Some(p) = &mut self.payload {
            out.push(("payload".into(), Arc::new(p.finish()), true));
        }
        self.len = 0;
        self.bytes = 0;
        Ok(out)
    }
}

struct ParquetFile {
    /// Bytes encoded so far (row groups are flushed as they are written,
    /// so the writer holds none in progress between them).
    written: usize,
    rows: Builders,
    schema: SchemaRef,
    writer: ArrowWriter<Vec<u8>>,
    row_group_rows: usize,
}

impl ParquetFile {
    /// Encodes the buffered rows as one row group.
    fn write_row_group(&mut self) -> Result<(), SinkError> {
        if self.rows.len() == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self.rows.finish()?.into_iter().map(|(_, a, _)| a).collect();
        let batch =
            RecordBatch::try_new(Arc::clone(&self.schema), arrays).map_err(|e| SinkError::Encode(e.to_string()))?;
        let batch = sorted_by_time(batch)?;
        self.writer.write(&batch).map_err(|e| SinkError::Encode(e.to_string()))?;
        self.writer.flush().map_err(|e| SinkError::Encode(e.to_string()))?;
        self.written = self.writer.bytes_written() + self.writer.in_progress_size();
        Ok(())
    }
}

/// The batch with its rows in order of the first column (event time or
/// window start), as the files' sorting metadata says; a batch already in
/// order (the usual case) is returned as it is.
fn sorted_by_time(batch: RecordBatch) -> Result<RecordBatch, SinkError> {
    let Some(times) = batch.columns().first().and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>()) else {
        return Ok(batch);
    };
    let times = times.values();
    if times.is_sorted() {
        return Ok(batch);
    }
    let mut order: Vec<u32> = (0..times.len()).filter_map(|i| u32::try_from(i).ok()).collect();
    order.sort_by_key(|&i| times.get(i as usize).copied().unwrap_or(i64::MAX));
    let indices = UInt32Array::from(order);
    arrow_select::take::take_record_batch(&batch, &indices).map_err(|e| SinkError::Encode(e.to_string()))
}

impl Encoder for ParquetFile {
    fn push(&mut self, row: Row<'_>) -> Result<(), SinkError> {
        match (&mut self.rows, row) {
            (Builders::Events(rows), Row::Event(e, route)) => rows.push(e, route)?,
            (Builders::Results(rows), Row::Result(r)) => rows.push(r)?,
            _ => return Err(wrong_row()),
        }
        if self.rows.len() >= self.row_group_rows {
            self.write_row_group()?;
        }
        Ok(())
    }

    fn size(&self) -> usize {
        self.written + self.rows.bytes()
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<u8>, SinkError> {
        self.write_row_group()?;
        self.writer.into_inner().map_err(|e| SinkError::Encode(e.to_string()))
    }
}

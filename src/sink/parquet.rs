//! Raw events as Parquet: Arrow builders per open file, encoded into row
//! groups by the `parquet` crate's `ArrowWriter` into memory.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, Float64Builder, MapBuilder, StringBuilder, StringDictionaryBuilder, TimestampNanosecondBuilder,
};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as Codec, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use super::{EVENT_SCHEMA_VERSION, Encoder, EncoderFactory, EventColumns, EventSink, SinkConfig, SinkError};
use crate::event::{EventIdRef, EventRef};

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
        let factory = ParquetFactory::new(&config.columns, options)?;
        EventSink::new(config, Box::new(factory))
    }
}

struct ParquetFactory {
    columns: Arc<EventColumns>,
    schema: SchemaRef,
    props: WriterProperties,
    row_group_rows: usize,
}

impl ParquetFactory {
    fn new(columns: &EventColumns, options: ParquetOptions) -> Result<ParquetFactory, SinkError> {
        super::check_columns(columns)?;
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
        let columns = Arc::new(columns.clone());
        let schema = Rows::new(&columns).finish_batch_schema();
        let mut props = WriterProperties::builder()
            .set_compression(codec)
            .set_max_row_group_row_count(Some(options.row_group_rows))
            .set_data_page_size_limit(options.page_bytes)
            .set_dictionary_enabled(true)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_created_by(format!("edgestream {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "edgestream.schema".into(),
                EVENT_SCHEMA_VERSION.to_owned(),
            )]));
        if options.bloom_filter_id {
            props = props.set_column_bloom_filter_enabled(ColumnPath::from("id"), true);
        }
        Ok(ParquetFactory { columns, schema, props: props.build(), row_group_rows: options.row_group_rows })
    }
}

impl EncoderFactory for ParquetFactory {
    fn open(&self) -> Result<Box<dyn Encoder>, SinkError> {
        let writer = ArrowWriter::try_new(Vec::new(), Arc::clone(&self.schema), Some(self.props.clone()))
            .map_err(|e| SinkError::Encode(e.to_string()))?;
        Ok(Box::new(ParquetFile {
            rows: Rows::new(&self.columns),
            schema: Arc::clone(&self.schema),
            writer,
            row_group_rows: self.row_group_rows,
        }))
    }

    fn extension(&self) -> &'static str {
        "parquet"
    }
}

/// Arrow builders of the rows not yet encoded.
struct Rows {
    columns: Arc<EventColumns>,
    ts: TimestampNanosecondBuilder,
    tenant: StringDictionaryBuilder<Int32Type>,
    stream: StringDictionaryBuilder<Int32Type>,
    id: StringBuilder,
    dims: Vec<StringBuilder>,
    fields: Vec<Float64Builder>,
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
            tenant: StringDictionaryBuilder::new(),
            stream: StringDictionaryBuilder::new(),
            id: StringBuilder::new(),
            dims: columns.dims.iter().map(|_| StringBuilder::new()).collect(),
            fields: columns.fields.iter().map(|_| Float64Builder::new()).collect(),
            other_dims: MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()),
            other_fields: MapBuilder::new(None, StringBuilder::new(), Float64Builder::new()),
            lat: Float64Builder::new(),
            lon: Float64Builder::new(),
            payload: columns.payload.then(BinaryBuilder::new),
            len: 0,
            bytes: 0,
        }
    }

    fn push(&mut self, e: &EventRef<'_>) -> Result<(), SinkError> {
        self.ts.append_value(e.ts().as_nanos());
        self.tenant.append_value(e.tenant());
        self.stream.append_value(e.stream());
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
        for (name, builder) in self.columns.dims.iter().zip(&mut self.dims) {
            match e.dim(name) {
                Some(v) => {
                    builder.append_value(v);
                    bytes += v.len();
                }
                None => builder.append_null(),
            }
        }
        for (name, builder) in self.columns.fields.iter().zip(&mut self.fields) {
            builder.append_option(e.field(name));
            bytes += 8;
        }
        for (k, v) in e.dims().filter(|(k, _)| !self.columns.dims.iter().any(|d| d == k)) {
            self.other_dims.keys().append_value(k);
            self.other_dims.values().append_value(v);
            bytes += k.len() + v.len() + 8;
        }
        self.other_dims.append(true).map_err(|e| SinkError::Encode(e.to_string()))?;
        for (k, v) in e.fields().filter(|(k, _)| !self.columns.fields.iter().any(|f| f == k)) {
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
    fn finish(&mut self) -> Vec<(String, ArrayRef, bool)> {
        let mut out: Vec<(String, ArrayRef, bool)> = vec![
            ("ts".into(), Arc::new(self.ts.finish()), false),
            ("tenant".into(), Arc::new(self.tenant.finish()), false),
            ("stream".into(), Arc::new(self.stream.finish()), false),
            ("id".into(), Arc::new(self.id.finish()), true),
        ];
        for (name, b) in self.columns.dims.iter().zip(&mut self.dims) {
            out.push((name.clone(), Arc::new(b.finish()), true));
        }
        for (name, b) in self.columns.fields.iter().zip(&mut self.fields) {
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
        out
    }

    /// The schema of the batches, from empty builders.
    fn finish_batch_schema(mut self) -> SchemaRef {
        let fields: Vec<Field> = self
            .finish()
            .into_iter()
            .map(|(name, array, nullable)| Field::new(name, array.data_type().clone(), nullable))
            .collect();
        Arc::new(Schema::new(fields))
    }
}

struct ParquetFile {
    rows: Rows,
    schema: SchemaRef,
    writer: ArrowWriter<Vec<u8>>,
    row_group_rows: usize,
}

impl ParquetFile {
    /// Encodes the buffered rows as one row group.
    fn write_row_group(&mut self) -> Result<(), SinkError> {
        if self.rows.len == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self.rows.finish().into_iter().map(|(_, a, _)| a).collect();
        let batch =
            RecordBatch::try_new(Arc::clone(&self.schema), arrays).map_err(|e| SinkError::Encode(e.to_string()))?;
        self.writer.write(&batch).map_err(|e| SinkError::Encode(e.to_string()))?;
        self.writer.flush().map_err(|e| SinkError::Encode(e.to_string()))
    }
}

impl Encoder for ParquetFile {
    fn push(&mut self, event: &EventRef<'_>) -> Result<(), SinkError> {
        self.rows.push(event)?;
        if self.rows.len >= self.row_group_rows {
            self.write_row_group()?;
        }
        Ok(())
    }

    fn size(&self) -> usize {
        self.writer.bytes_written() + self.writer.in_progress_size() + self.rows.bytes
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<u8>, SinkError> {
        self.write_row_group()?;
        self.writer.into_inner().map_err(|e| SinkError::Encode(e.to_string()))
    }
}

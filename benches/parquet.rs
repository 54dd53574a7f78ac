//! Writing 1 M realistic events to Parquet (zstd and snappy), against the
//! `parquet` crate's `ArrowWriter` in the same run:
//!
//! - `edgestream_sink`: `EventSink::parquet`, events pushed in batches of
//!   1,000 (one partition: one tenant, one hour), files finished;
//! - `arrow_build_and_write`: hand-written Arrow builders for the same
//!   schema, then `ArrowWriter`: what a user would write without us;
//! - `arrow_write_only`: `ArrowWriter` fed the `RecordBatch`es built
//!   beforehand, outside the measurement.
//!
//! The setup also prints the file sizes against gzipped NDJSON of the same
//! events, and leaves the file in `target/edgestream-bench-events.parquet`
//! for `benches/pyarrow_write.py` (pyarrow writing the same rows).
//!
//! `cargo bench --features parquet --bench parquet`; figures in BENCHMARKS.md.

#![allow(missing_docs, reason = "criterion generates the entry point")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benchmark inputs are generated and known good"
)]

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{
    Float64Builder, MapBuilder, StringBuilder, StringDictionaryBuilder, TimestampNanosecondBuilder,
};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, RecordBatch};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edgestream::event::{Event, EventBatch};
use edgestream::sink::{Compression, EventColumns, EventSink, ParquetOptions, Rollover, SinkConfig};
use edgestream::time::Span;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as Codec, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

#[path = "../tests/common/traffic.rs"]
#[allow(dead_code, unreachable_pub, reason = "shared with the tests")]
mod traffic;

const EVENTS: usize = 1_000_000;
const ROW_GROUP: usize = 64 * 1024;

/// 1 M events of one tenant within one hour (a single partition), so all
/// three variants write one file of the same rows.
fn events() -> Vec<Event> {
    traffic::events(EVENTS, 11)
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            e.tenant = "acme".into();
            e.ts = traffic::start().saturating_add(Span::from_micros(i as i64 * 3_000));
            e
        })
        .collect()
}

fn columns() -> EventColumns {
    EventColumns { dims: vec!["region".into()], fields: vec!["temp_c".into()], ..EventColumns::default() }
}

fn sink_config() -> SinkConfig {
    SinkConfig {
        columns: columns(),
        rollover: Rollover { max_rows: u64::MAX, max_bytes: usize::MAX, max_age: Span::from_hours(24) },
        max_buffered_bytes: usize::MAX,
        ..SinkConfig::default()
    }
}

fn props(codec: Codec) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(codec)
        .set_max_row_group_row_count(Some(ROW_GROUP))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .build()
}

/// The same schema built by hand, one `RecordBatch` per row group.
fn build_batches(events: &[Event]) -> Vec<RecordBatch> {
    events
        .chunks(ROW_GROUP)
        .map(|chunk| {
            let mut ts = TimestampNanosecondBuilder::new().with_timezone("UTC");
            let mut tenant = StringDictionaryBuilder::<Int32Type>::new();
            let mut stream = StringDictionaryBuilder::<Int32Type>::new();
            let mut id = StringBuilder::new();
            let mut region = StringBuilder::new();
            let mut temp = Float64Builder::new();
            let mut dims = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
            let mut fields = MapBuilder::new(None, StringBuilder::new(), Float64Builder::new());
            let mut lat = Float64Builder::new();
            let mut lon = Float64Builder::new();
            for e in chunk {
                ts.append_value(e.ts.as_nanos());
                tenant.append_value(&e.tenant);
                stream.append_value(&e.stream);
                id.append_option(e.id.as_ref().map(|i| String::from_utf8_lossy(i.as_bytes()).into_owned()));
                region.append_option(e.dim("region"));
                temp.append_option(e.field("temp_c"));
                for (k, v) in e.dims.iter().filter(|(k, _)| k != "region") {
                    dims.keys().append_value(k);
                    dims.values().append_value(v);
                }
                dims.append(true).unwrap();
                for (k, v) in e.fields.iter().filter(|(k, _)| k != "temp_c") {
                    fields.keys().append_value(k);
                    fields.values().append_value(*v);
                }
                fields.append(true).unwrap();
                lat.append_option(e.geo.map(|g| g.lat));
                lon.append_option(e.geo.map(|g| g.lon));
            }
            let columns: Vec<(&str, ArrayRef)> = vec![
                ("ts", Arc::new(ts.finish())),
                ("tenant", Arc::new(tenant.finish())),
                ("stream", Arc::new(stream.finish())),
                ("id", Arc::new(id.finish())),
                ("region", Arc::new(region.finish())),
                ("temp_c", Arc::new(temp.finish())),
                ("dims", Arc::new(dims.finish())),
                ("fields", Arc::new(fields.finish())),
                ("lat", Arc::new(lat.finish())),
                ("lon", Arc::new(lon.finish())),
            ];
            RecordBatch::try_from_iter(columns).unwrap()
        })
        .collect()
}

fn write_batches(batches: &[RecordBatch], codec: Codec) -> Vec<u8> {
    let mut writer = ArrowWriter::try_new(Vec::new(), batches[0].schema(), Some(props(codec))).unwrap();
    for b in batches {
        writer.write(b).unwrap();
    }
    writer.into_inner().unwrap()
}

fn sink_write(batches: &[EventBatch], compression: Compression) -> Vec<u8> {
    let mut sink = EventSink::parquet(
        sink_config(),
        ParquetOptions { compression, row_group_rows: ROW_GROUP, ..ParquetOptions::default() },
    )
    .unwrap();
    let mut files = Vec::new();
    let now = traffic::start();
    for b in batches {
        sink.push(b, now, &mut files).unwrap();
    }
    sink.flush(&mut files).unwrap();
    assert_eq!(files.len(), 1);
    files.pop().unwrap().bytes.to_vec()
}

fn bench(c: &mut Criterion) {
    let events = events();
    let batches: Vec<EventBatch> = events
        .chunks(1_000)
        .map(|chunk| {
            let mut b = EventBatch::new();
            chunk.iter().for_each(|e| b.push(e));
            b
        })
        .collect();
    let prebuilt = build_batches(&events);

    // Sizes, once.
    let mut ndjson = Vec::new();
    for e in &events {
        let line = serde_json::json!({
            "tenant": e.tenant, "stream": e.stream, "ts": e.ts.to_rfc3339(),
            "id": e.id.as_ref().map(|i| String::from_utf8_lossy(i.as_bytes()).into_owned()),
            "dims": e.dims.iter().cloned().collect::<std::collections::BTreeMap<String, String>>(),
            "fields": e.fields.iter().cloned().collect::<std::collections::BTreeMap<String, f64>>(),
        });
        writeln!(ndjson, "{line}").unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&ndjson).unwrap();
    let gz = gz.finish().unwrap();
    let zstd = sink_write(&batches, Compression::Zstd { level: 3 });
    let snappy = sink_write(&batches, Compression::Snappy);
    println!(
        "sizes for {EVENTS} events: NDJSON {} B, NDJSON.gz {} B, Parquet zstd {} B ({:.2}× gz), Parquet snappy {} B ({:.2}× gz)",
        ndjson.len(),
        gz.len(),
        zstd.len(),
        zstd.len() as f64 / gz.len() as f64,
        snappy.len(),
        snappy.len() as f64 / gz.len() as f64,
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("edgestream-bench-events.parquet"), &zstd).unwrap();

    for (name, compression, codec) in [
        ("zstd", Compression::Zstd { level: 3 }, Codec::ZSTD(ZstdLevel::try_new(3).unwrap())),
        ("snappy", Compression::Snappy, Codec::SNAPPY),
    ] {
        let mut group = c.benchmark_group(format!("parquet/1m_events_{name}"));
        group.throughput(Throughput::Elements(EVENTS as u64));
        group.sample_size(10);
        group.bench_function("edgestream_sink", |b| b.iter(|| black_box(sink_write(&batches, compression))));
        group.bench_function("arrow_build_and_write", |b| {
            b.iter(|| black_box(write_batches(&build_batches(&events), codec)));
        });
        group.bench_function("arrow_write_only", |b| b.iter(|| black_box(write_batches(&prebuilt, codec))));
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The Parquet event sink: partitions, rollover, memory bounds, and the
//! files read back with the `parquet` crate's own reader (pyarrow and
//! DuckDB read them in `tests/sink_interop.rs`).

#![cfg(feature = "parquet")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampNanosecondType};
use arrow_array::{Array, RecordBatch};
use edgestream::event::{Event, EventBatch, GeoPoint};
use edgestream::sink::{
    Compression, EventColumns, EventSink, FinishReason, FinishedFile, ParquetOptions, Rollover, SinkConfig,
};
use edgestream::time::{Span, Timestamp};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_secs(1_795_838_400 + secs).unwrap() // 2026-11-28T04:00:00Z
}

fn event(i: i64) -> Event {
    let mut e = Event::new(if i % 2 == 0 { "acme" } else { "zeta" }, "http", t(i * 60))
        .with_id(format!("id-{i}"))
        .with_dim("region", ["eu", "us", "ap"][(i % 3) as usize])
        .with_dim("path", format!("/p/{}", i % 5))
        .with_field("latency_ms", i as f64 * 1.5)
        .with_field("bytes", (i * 100) as f64);
    if i % 4 == 0 {
        e = e.with_geo(GeoPoint { lat: 48.85, lon: 2.35 });
    }
    e
}

fn batch(range: std::ops::Range<i64>) -> EventBatch {
    let mut b = EventBatch::new();
    for i in range {
        b.push(&event(i));
    }
    b
}

fn read(file: &FinishedFile) -> Vec<RecordBatch> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(file.bytes.clone()).unwrap().build().unwrap();
    reader.map(Result::unwrap).collect()
}

fn config() -> SinkConfig {
    SinkConfig {
        columns: EventColumns {
            dims: vec!["region".into()],
            fields: vec!["latency_ms".into()],
            ..EventColumns::default()
        },
        writer_id: "w1".into(),
        ..SinkConfig::default()
    }
}

#[test]
fn events_go_to_their_partitions_and_read_back_exactly() {
    let mut sink =
        EventSink::parquet(config(), ParquetOptions { row_group_rows: 16, ..ParquetOptions::default() }).unwrap();
    let mut files = Vec::new();
    // 120 minutes of events: two hours, two tenants → four partitions.
    sink.push(&batch(0..120), t(0), &mut files).unwrap();
    assert!(files.is_empty());
    assert_eq!(sink.open_files(), 4);
    sink.flush(&mut files).unwrap();
    let mut paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "tenant=acme/stream=http/date=2026-11-28/hour=04/part-w1-000000.parquet",
            "tenant=acme/stream=http/date=2026-11-28/hour=05/part-w1-000001.parquet",
            "tenant=zeta/stream=http/date=2026-11-28/hour=04/part-w1-000002.parquet",
            "tenant=zeta/stream=http/date=2026-11-28/hour=05/part-w1-000003.parquet",
        ]
    );
    let mut seen = 0;
    for file in &files {
        let batches = read(file);
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows as u64, file.rows);
        for b in &batches {
            let schema = b.schema();
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            assert_eq!(names, ["ts", "tenant", "stream", "id", "region", "latency_ms", "dims", "fields", "lat", "lon"]);
            let ts = b.column(0).as_primitive::<TimestampNanosecondType>();
            let latency = b.column(5).as_primitive::<Float64Type>();
            let ids = b.column(3).as_string::<i32>();
            let dims = b.column(6).as_map();
            let fields = b.column(7).as_map();
            let lat = b.column(8).as_primitive::<Float64Type>();
            for row in 0..b.num_rows() {
                let i: i64 = ids.value(row).strip_prefix("id-").unwrap().parse().unwrap();
                let expected = event(i);
                assert_eq!(ts.value(row), expected.ts.as_nanos());
                assert!(ts.value(row) >= file.min_time.as_nanos() && ts.value(row) <= file.max_time.as_nanos());
                assert_eq!(latency.value(row).to_bits(), (i as f64 * 1.5).to_bits());
                // The dims and fields not promoted are in the maps.
                let d = dims.value(row);
                assert_eq!(d.column(0).as_string::<i32>().value(0), "path");
                assert_eq!(d.column(1).as_string::<i32>().value(0), format!("/p/{}", i % 5));
                let f = fields.value(row);
                assert_eq!(f.column(0).as_string::<i32>().value(0), "bytes");
                assert_eq!(f.column(1).as_primitive::<Float64Type>().value(0), (i * 100) as f64);
                assert_eq!(lat.is_null(row), i % 4 != 0);
                seen += 1;
            }
        }
        let meta = parquet::file::serialized_reader::SerializedFileReader::new(file.bytes.clone()).unwrap();
        use parquet::file::reader::FileReader;
        assert_eq!(meta.metadata().num_row_groups(), (file.rows as usize).div_ceil(16), "row groups of 16 rows");
        let kv = meta.metadata().file_metadata().key_value_metadata().unwrap();
        assert!(kv.iter().any(|k| k.key == "edgestream.schema" && k.value.as_deref() == Some("1")));
    }
    assert_eq!(seen, 120);
    assert_eq!(sink.stats().rows, 120);
    assert_eq!(sink.stats().files, 4);
}

#[test]
fn rollover_by_rows_bytes_and_age() {
    let rows = SinkConfig { rollover: Rollover { max_rows: 10, ..Rollover::default() }, ..config() };
    let mut sink = EventSink::parquet(rows, ParquetOptions::default()).unwrap();
    let mut files = Vec::new();
    sink.push(&batch(0..50).tap_tenant(), t(0), &mut files).unwrap();
    assert!(files.iter().all(|f| f.rows == 10 && f.reason == FinishReason::Rows), "{files:?}");
    assert_eq!(files.len(), 2, "20 of the 25 acme events of hour 04");

    // The size counts the encoded row groups and the rows still buffered;
    // the footer (schema, statistics, page index) comes on top.
    let bytes = SinkConfig { rollover: Rollover { max_bytes: 100_000, ..Rollover::default() }, ..config() };
    let mut sink =
        EventSink::parquet(bytes, ParquetOptions { row_group_rows: 256, ..ParquetOptions::default() }).unwrap();
    let mut files = Vec::new();
    sink.push(&one_partition(30_000), t(0), &mut files).unwrap();
    let by_bytes: Vec<usize> =
        files.iter().filter(|f| f.reason == FinishReason::Bytes).map(|f| f.bytes.len()).collect();
    assert!(by_bytes.len() >= 2, "{by_bytes:?}");
    assert!(by_bytes.iter().all(|&n| (80_000..130_000).contains(&n)), "{by_bytes:?}");

    let age = SinkConfig { rollover: Rollover { max_age: Span::from_mins(5), ..Rollover::default() }, ..config() };
    let mut sink = EventSink::parquet(age, ParquetOptions::default()).unwrap();
    let mut files = Vec::new();
    sink.push(&batch(0..4), t(0), &mut files).unwrap();
    assert_eq!(sink.next_deadline(), Some(t(300)));
    sink.advance(t(299), &mut files).unwrap();
    assert!(files.is_empty());
    sink.advance(t(300), &mut files).unwrap();
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|f| f.reason == FinishReason::Age));
    assert_eq!(sink.next_deadline(), None);
}

#[test]
fn open_partitions_and_memory_are_bounded() {
    let few = SinkConfig { max_open_partitions: 2, ..config() };
    let mut sink = EventSink::parquet(few, ParquetOptions::default()).unwrap();
    let mut files = Vec::new();
    sink.push(&batch(0..240), t(0), &mut files).unwrap();
    assert!(sink.open_files() <= 2);
    assert!(files.iter().any(|f| f.reason == FinishReason::OpenPartitions));

    let small = SinkConfig { max_buffered_bytes: 20_000, ..config() };
    let mut sink =
        EventSink::parquet(small, ParquetOptions { row_group_rows: 1_000_000, ..ParquetOptions::default() }).unwrap();
    let mut files = Vec::new();
    for k in 0..20 {
        sink.push(&batch(k * 100..(k + 1) * 100), t(0), &mut files).unwrap();
        assert!(sink.buffered_bytes() <= 20_000);
    }
    assert!(files.iter().any(|f| f.reason == FinishReason::Memory));
    sink.flush(&mut files).unwrap();
    assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), 2_000, "nothing lost");
    // Every finished file is counted under its reason.
    let stats = sink.stats();
    assert_eq!(stats.by_reason.values().sum::<u64>(), files.len() as u64);
    assert_eq!(
        stats.by_reason[&FinishReason::Memory],
        files.iter().filter(|f| f.reason == FinishReason::Memory).count() as u64
    );
    let json = serde_json::to_value(stats).unwrap();
    assert!(json["by_reason"]["memory"].as_u64().is_some_and(|n| n > 0), "{json}");
}

#[test]
fn codecs_and_configuration_errors() {
    let mut sizes = Vec::new();
    for compression in [Compression::Zstd { level: 3 }, Compression::Snappy, Compression::Lz4, Compression::None] {
        let mut sink = EventSink::parquet(
            config(),
            ParquetOptions { compression, bloom_filter_id: true, ..ParquetOptions::default() },
        )
        .unwrap();
        let mut files = Vec::new();
        sink.push(&batch(0..60), t(0), &mut files).unwrap();
        sink.flush(&mut files).unwrap();
        assert_eq!(read(&files[0]).iter().map(RecordBatch::num_rows).sum::<usize>() as u64, files[0].rows);
        sizes.push(files[0].bytes.len());
    }
    assert!(sizes[0] < sizes[3], "zstd smaller than uncompressed: {sizes:?}");
    assert!(
        EventSink::parquet(SinkConfig { path: "{tenant}/x.parquet".into(), ..config() }, ParquetOptions::default())
            .is_err()
    );
    let clash = SinkConfig { columns: EventColumns { dims: vec!["ts".into()], ..EventColumns::default() }, ..config() };
    assert!(EventSink::parquet(clash, ParquetOptions::default()).is_err());
    assert!(
        EventSink::parquet(
            config(),
            ParquetOptions { compression: Compression::Zstd { level: 99 }, ..ParquetOptions::default() }
        )
        .is_err()
    );
}

/// `n` acme events in one hour.
fn one_partition(n: i64) -> EventBatch {
    let mut b = EventBatch::new();
    for i in 0..n {
        let mut e = event(2 * i);
        e.ts = t(i % 3600);
        b.push(&e);
    }
    b
}

trait TapTenant {
    fn tap_tenant(self) -> Self;
}

impl TapTenant for EventBatch {
    /// Only the `acme` events of hour 04.
    fn tap_tenant(self) -> Self {
        let mut out = EventBatch::new();
        for e in self.iter().filter(|e| e.tenant() == "acme" && e.ts() < t(3600)) {
            out.push(&e.to_event());
        }
        out
    }
}

#[test]
fn window_results_as_parquet_and_csv() {
    use edgestream::sink::{ResultColumns, ResultSink};
    use edgestream::window::{FieldSpec, WindowSpec, Windows};

    let spec = WindowSpec::new(Span::from_mins(1))
        .group_by(["region"])
        .field(FieldSpec::new("latency_ms").with_quantiles([0.5, 0.99]))
        .out_of_orderness(Span::ZERO)
        .idle_timeout(Some(Span::from_mins(1)));
    let mut windows = Windows::new(spec.clone()).unwrap();
    windows.push(&batch(0..180), t(180 * 60), &mut Vec::new());
    windows.advance(t(200 * 60));
    let mut results = Vec::new();
    while let Some(r) = windows.poll_result() {
        results.push(r);
    }
    assert_eq!(results.len(), 180);

    let columns = ResultColumns::of(&spec);
    let mut parquet = ResultSink::parquet(config(), columns.clone(), ParquetOptions::default()).unwrap();
    let mut csv = ResultSink::csv(config(), columns).unwrap();
    let (mut pq_files, mut csv_files) = (Vec::new(), Vec::new());
    for r in &results {
        parquet.push(r, t(0), &mut pq_files).unwrap();
        csv.push(r, t(0), &mut csv_files).unwrap();
    }
    parquet.flush(&mut pq_files).unwrap();
    csv.flush(&mut csv_files).unwrap();
    // Two tenants × three hours (of window start).
    assert_eq!(pq_files.len(), 6);
    assert_eq!(csv_files.len(), 6);
    assert_eq!(pq_files.iter().map(|f| f.rows).sum::<u64>(), 180);

    let mut rows = 0;
    for file in &pq_files {
        for b in read(file) {
            let schema = b.schema();
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            assert_eq!(
                names,
                [
                    "window_start",
                    "window_end",
                    "tenant",
                    "stream",
                    "region",
                    "labels",
                    "events",
                    "count",
                    "latency_ms_count",
                    "latency_ms_sum",
                    "latency_ms_min",
                    "latency_ms_max",
                    "latency_ms_mean",
                    "latency_ms_last",
                    "latency_ms_p50",
                    "latency_ms_p99",
                    "revision",
                    "is_final"
                ]
            );
            let start = b.column(0).as_primitive::<TimestampNanosecondType>();
            let sum = b.column(9).as_primitive::<Float64Type>();
            let p99 = b.column(15).as_primitive::<Float64Type>();
            for row in 0..b.num_rows() {
                let r = results.iter().find(|r| r.start.as_nanos() == start.value(row)).unwrap();
                let f = r.field("latency_ms").unwrap();
                assert_eq!(sum.value(row).to_bits(), f.scalar.sum().unwrap().to_bits());
                assert_eq!(p99.value(row), f.quantiles.iter().find(|(q, _)| *q == 0.99).unwrap().1);
                rows += 1;
            }
        }
    }
    assert_eq!(rows, 180);
    let text = std::str::from_utf8(&csv_files[0].bytes).unwrap();
    assert!(
        text.starts_with("window_start,window_end,tenant,stream,region,labels,events,count,latency_ms_count,"),
        "{text}"
    );
    assert_eq!(text.lines().count() as u64, csv_files[0].rows + 1);
}

#[test]
fn a_repeated_name_reads_as_its_first_value() {
    // Decoders refuse repeated names; an `Event` built in code may have them.
    let mut batch = EventBatch::new();
    batch.push(&Event::new("acme", "http", t(0)).with_field("latency_ms", 1.0).with_field("latency_ms", 2.0));
    let mut sink = EventSink::parquet(config(), ParquetOptions::default()).unwrap();
    let mut files = Vec::new();
    sink.push(&batch, t(0), &mut files).unwrap();
    sink.flush(&mut files).unwrap();
    let b = &read(&files[0])[0];
    assert_eq!(b.column(5).as_primitive::<Float64Type>().value(0), batch.get(0).unwrap().field("latency_ms").unwrap());
}

#[test]
fn row_groups_are_sorted_by_time_and_say_so() {
    // Events arrive newest first within the hour.
    let mut batch = EventBatch::new();
    for i in (0..100).rev() {
        let mut e = event(2 * i);
        e.ts = t(i);
        batch.push(&e);
    }
    let mut sink =
        EventSink::parquet(config(), ParquetOptions { row_group_rows: 32, ..ParquetOptions::default() }).unwrap();
    let mut files = Vec::new();
    sink.push(&batch, t(0), &mut files).unwrap();
    sink.flush(&mut files).unwrap();
    use parquet::file::reader::FileReader;
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(files[0].bytes.clone()).unwrap();
    for rg in reader.metadata().row_groups() {
        let sorting = rg.sorting_columns().unwrap();
        assert_eq!((sorting[0].column_idx, sorting[0].descending), (0, false));
    }
    let mut rows = 0;
    // Batches of 32 rows: one row group each.
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(files[0].bytes.clone()).unwrap().with_batch_size(32).build().unwrap();
    for b in reader.map(Result::unwrap) {
        let ts = b.column(0).as_primitive::<TimestampNanosecondType>();
        assert!(ts.values().is_sorted());
        rows += b.num_rows();
    }
    assert_eq!(rows, 100);
}

//! edgestream's Parquet files read by real readers, pyarrow and DuckDB
//! (`tests/interop/check_sink.py`). `.ci/run` installs them in a virtual
//! environment and points `EDGESTREAM_PYTHON` at its interpreter; without
//! it the test uses `python3`, which then needs `pyarrow` and `duckdb`.

#![cfg(feature = "parquet")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::io::Write;
use std::process::Command;

use edgestream::event::{Event, EventBatch, GeoPoint};
use edgestream::sink::{EventColumns, EventSink, ParquetOptions, ResultColumns, ResultSink, SinkConfig};
use edgestream::time::Span;
use edgestream::window::{FieldSpec, WindowSpec, Windows};
use serde_json::json;

/// Realistic events over about five and a half hours, with awkward
/// floats mixed in (-0.0, subnormals, huge values, many digits).
fn events() -> Vec<Event> {
    let odd = [-0.0, 5e-324, 1.7976931348623157e308, 0.1 + 0.2, -273.15, 1e-300];
    common::traffic::events(20_000, 7)
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            e.ts = common::traffic::start().saturating_add(Span::from_millis(i as i64 * 997 + (i % 7) as i64));
            if i % 97 == 0
                && let Some(field) = e.fields.iter_mut().find(|(k, _)| k == "temp_c")
            {
                field.1 = odd[i / 97 % odd.len()];
            }
            if i % 5 == 0 {
                e = e.with_geo(GeoPoint { lat: 48.8566 + i as f64 * 1e-6, lon: 2.3522 });
            }
            e
        })
        .collect()
}

fn python() -> String {
    std::env::var("EDGESTREAM_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

#[test]
fn pyarrow_and_duckdb_read_what_we_write() {
    let events = events();
    let dir = std::env::temp_dir().join(format!("edgestream-sink-interop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // The window results go in a tree of their own.
    let results_dir = std::env::temp_dir().join(format!("edgestream-sink-interop-results-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&results_dir);

    // Write, as a host would store the finished files.
    let config = SinkConfig {
        columns: EventColumns { dims: vec!["region".into()], fields: vec!["temp_c".into()], ..EventColumns::default() },
        writer_id: "interop".into(),
        ..SinkConfig::default()
    };
    let mut sink =
        EventSink::parquet(config.clone(), ParquetOptions { row_group_rows: 4_096, ..ParquetOptions::default() })
            .unwrap();
    let mut files = Vec::new();
    for chunk in events.chunks(1_000) {
        let mut batch = EventBatch::new();
        chunk.iter().for_each(|e| batch.push(e));
        let now = chunk.last().unwrap().ts;
        sink.push(&batch, now, &mut files).unwrap();
    }
    sink.flush(&mut files).unwrap();
    assert!(files.len() >= 12, "3 tenants × 6 hours: {}", files.len());
    // The same events as CSV, in their own tree.
    let mut csv = EventSink::csv(config.clone()).unwrap();
    let mut csv_files = Vec::new();
    for chunk in events.chunks(1_000) {
        let mut batch = EventBatch::new();
        chunk.iter().for_each(|e| batch.push(e));
        csv.push(&batch, chunk.last().unwrap().ts, &mut csv_files).unwrap();
    }
    csv.flush(&mut csv_files).unwrap();
    for (root, file) in files.iter().map(|f| (dir.clone(), f)).chain(csv_files.iter().map(|f| (dir.join("csv"), f))) {
        let path = root.join(&file.path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &file.bytes).unwrap();
    }

    // What the readers must find.
    let mut expected = std::fs::File::create(dir.join("expected.ndjson")).unwrap();
    for e in &events {
        let dim = |k: &str| e.dim(k).unwrap().to_owned();
        let mut line = json!({
            "id": match &e.id { Some(id) => String::from_utf8_lossy(id.as_bytes()).into_owned(), None => String::new() },
            "ts": e.ts.as_nanos(), "tenant": e.tenant, "stream": e.stream, "region": dim("region"),
            "temp_c": e.field("temp_c").unwrap(),
            "dims": {"device": dim("device"), "type": dim("type")},
            "fields": {"humidity": e.field("humidity").unwrap()},
        });
        if let Some(g) = e.geo {
            line["lat"] = json!(g.lat);
            line["lon"] = json!(g.lon);
        }
        writeln!(expected, "{line}").unwrap();
    }

    // Per-minute windows of tenant acme, from our own operator.
    // (The idle timeout closes the last window too.)
    let spec = WindowSpec::new(Span::from_mins(1))
        .field(FieldSpec::new("temp_c"))
        .out_of_orderness(Span::ZERO)
        .idle_timeout(Some(Span::from_mins(1)));
    let mut windows = Windows::new(spec).unwrap();
    let mut acme = EventBatch::new();
    events.iter().filter(|e| e.tenant == "acme").for_each(|e| acme.push(e));
    let last = events.last().unwrap().ts;
    let mut late = Vec::new();
    windows.push(&acme, last, &mut late);
    windows.advance(last.saturating_add(Span::from_hours(1)));
    assert!(late.is_empty());
    let mut results = Vec::new();
    // The window results as Parquet too, for pyarrow to read.
    let mut result_sink =
        ResultSink::parquet(config.clone(), ResultColumns::of(windows.spec()), ParquetOptions::default()).unwrap();
    let mut result_files = Vec::new();
    while let Some(r) = windows.poll_result() {
        result_sink.push(&r, last, &mut result_files).unwrap();
        let f = r.field("temp_c").unwrap();
        results.push(json!({
            "start": r.start.as_nanos(), "count": r.events,
            "sum": f.scalar.sum(), "min": f.scalar.min().unwrap(), "max": f.scalar.max().unwrap(),
        }));
    }
    results.sort_by_key(|r| r["start"].as_i64());
    result_sink.flush(&mut result_files).unwrap();
    for file in &result_files {
        let path = results_dir.join(&file.path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &file.bytes).unwrap();
    }
    std::fs::write(dir.join("windows.json"), serde_json::to_vec(&results).unwrap()).unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/check_sink.py");
    let output = Command::new(python())
        .arg(script)
        .arg(&dir)
        .arg(dir.join("expected.ndjson"))
        .arg(dir.join("windows.json"))
        .arg(dir.join("csv"))
        .arg(&results_dir)
        .output()
        .expect("a Python interpreter (set EDGESTREAM_PYTHON)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "the readers disagree:\n{stdout}\n{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&results_dir);
}

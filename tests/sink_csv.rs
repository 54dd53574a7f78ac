//! CSV export: RFC 4180 quoting, RFC 3339 times, exact floats, the same
//! partitioning and rollover as Parquet. DuckDB reads the files in
//! `tests/sink_interop.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use edgestream::event::{Event, EventBatch, GeoPoint};
use edgestream::sink::{EventColumns, EventSink, FinishReason, Rollover, SinkConfig};
use edgestream::time::Timestamp;

/// A minimal RFC 4180 reader: records of fields.
fn parse(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let (mut record, mut field, mut quoted, mut chars) = (Vec::new(), String::new(), false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    records
}

#[test]
fn csv_rows_quote_and_read_back() {
    let t = Timestamp::from_nanos(1_795_838_400_123_456_789);
    let mut batch = EventBatch::new();
    batch.push(
        &Event::new("acme", "http", t)
            .with_id("a,\"b\"")
            .with_dim("region", "eu, west")
            .with_dim("note", "line\nbreak \"q\" back\\slash \u{1}")
            .with_field("latency_ms", 0.1 + 0.2)
            .with_field("big", 1e300)
            .with_field("zero", -0.0)
            .with_geo(GeoPoint { lat: -33.8688, lon: 151.2093 }),
    );
    batch.push(&Event::new("acme", "http", t).with_field("latency_ms", f64::NAN));
    let config = SinkConfig {
        columns: EventColumns {
            dims: vec!["region".into()],
            fields: vec!["latency_ms".into()],
            ..EventColumns::default()
        },
        writer_id: "w".into(),
        ..SinkConfig::default()
    };
    let mut sink = EventSink::csv(config).unwrap();
    let mut files = Vec::new();
    sink.push(&batch, t, &mut files).unwrap();
    sink.flush(&mut files).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path, "tenant=acme/stream=http/date=2026-11-28/hour=04/part-w-000000.csv");
    let records = parse(std::str::from_utf8(&files[0].bytes).unwrap());
    assert_eq!(records[0], ["ts", "tenant", "stream", "id", "region", "latency_ms", "dims", "fields", "lat", "lon"]);
    let row = &records[1];
    assert_eq!(row[0], "2026-11-28T04:00:00.123456789Z");
    assert_eq!(row[3], "a,\"b\"");
    assert_eq!(row[4], "eu, west");
    assert_eq!(row[5].parse::<f64>().unwrap().to_bits(), (0.1f64 + 0.2).to_bits());
    let dims: serde_json::Value = serde_json::from_str(&row[6]).unwrap();
    assert_eq!(dims["note"], "line\nbreak \"q\" back\\slash \u{1}");
    let fields: serde_json::Value = serde_json::from_str(&row[7]).unwrap();
    assert_eq!(fields["big"].as_f64(), Some(1e300));
    assert!(fields["zero"].as_f64().unwrap().is_sign_negative());
    assert_eq!((row[8].as_str(), row[9].as_str()), ("-33.8688", "151.2093"));
    let nan = &records[2];
    assert_eq!((nan[3].as_str(), nan[5].as_str(), nan[8].as_str()), ("", "NaN", ""));
    assert_eq!(records.len(), 3);
}

#[test]
fn csv_rolls_over_like_parquet() {
    let config = SinkConfig { rollover: Rollover { max_rows: 3, ..Rollover::default() }, ..SinkConfig::default() };
    let mut sink = EventSink::csv(config).unwrap();
    let t = Timestamp::from_secs(1_795_838_400).unwrap();
    let mut batch = EventBatch::new();
    for i in 0..7 {
        batch.push(&Event::new("acme", "http", t).with_field("x", f64::from(i)));
    }
    let mut files = Vec::new();
    sink.push(&batch, t, &mut files).unwrap();
    sink.flush(&mut files).unwrap();
    let reasons: Vec<(u64, FinishReason)> = files.iter().map(|f| (f.rows, f.reason)).collect();
    // A restarted writer resumes its numbering instead of reusing names.
    assert_eq!(sink.next_seq(), 3);
    let mut again = EventSink::csv(SinkConfig::default()).unwrap();
    again.resume_at(sink.next_seq());
    let mut more = Vec::new();
    again.push(&batch, t, &mut more).unwrap();
    again.flush(&mut more).unwrap();
    assert!(more[0].path.ends_with("part-0-000003.csv"), "{}", more[0].path);
    assert_eq!(reasons, [(3, FinishReason::Rows), (3, FinishReason::Rows), (1, FinishReason::Flush)]);
    assert!(files.iter().all(|f| f.bytes.starts_with(b"ts,tenant,stream,id,dims,fields,lat,lon\r\n")));
}

#[test]
fn integer_columns_hold_exact_integers_and_the_rest_stays_in_the_map() {
    let t = Timestamp::from_nanos(1_795_838_400_000_000_000);
    let mut batch = EventBatch::new();
    for price in [42.0, 42.5, -7.0, 1e19] {
        batch.push(&Event::new("acme", "bids", t).with_field("price", price));
    }
    batch.push(&Event::new("acme", "bids", t));
    let config = SinkConfig {
        columns: EventColumns {
            int_fields: vec!["price".into()],
            time_column: "date_time".into(),
            ..EventColumns::default()
        },
        ..SinkConfig::default()
    };
    let mut sink = EventSink::csv(config).unwrap();
    let mut files = Vec::new();
    sink.push(&batch, t, &mut files).unwrap();
    sink.flush(&mut files).unwrap();
    let rows = parse(std::str::from_utf8(&files[0].bytes).unwrap());
    let col = |name: &str| rows[0].iter().position(|c| c == name).unwrap();
    let (price, fields) = (col("price"), col("fields"));
    assert_eq!(rows[0][0], "date_time");
    let got: Vec<(&str, &str)> = rows[1..].iter().map(|r| (r[price].as_str(), r[fields].as_str())).collect();
    assert_eq!(
        got,
        [("42", "{}"), ("", r#"{"price":42.5}"#), ("-7", "{}"), ("", r#"{"price":10000000000000000000}"#), ("", "{}")]
    );
    let clash =
        EventColumns { fields: vec!["price".into()], int_fields: vec!["price".into()], ..EventColumns::default() };
    assert!(EventSink::csv(SinkConfig { columns: clash, ..SinkConfig::default() }).is_err());
}

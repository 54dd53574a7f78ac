//! The Nexmark example on a small stream: its q7 and q5 files against a
//! sort-and-scan over the same bids, and its bid files read back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
#![allow(dead_code, reason = "the example's `main` is not called here")]

#[path = "../examples/nexmark/main.rs"]
mod example;

use std::collections::BTreeMap;
use std::path::Path;

use edgestream::time::{Span, Timestamp};
use example::{Args, BidFormat};

const EVENTS: u64 = 60_000;

fn out_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("edgestream-nexmark-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Window start of `ts`, aligned to the epoch.
fn start_of(ts: Timestamp, size: Span) -> i64 {
    ts.as_nanos().div_euclid(size.as_nanos()) * size.as_nanos()
}

fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().skip(1).map(|l| l.split(',').map(str::to_owned).collect()).collect()
}

fn nanos(rfc3339: &str) -> i64 {
    rfc3339.parse::<Timestamp>().unwrap().as_nanos()
}

#[test]
fn q7_and_q5_match_a_sort_and_scan_and_every_bid_is_archived() {
    let window = Span::from_secs(1);
    let dir = out_dir("parquet");
    let report = example::run(&Args { events: EVENTS, window, out: dir.clone(), format: BidFormat::Parquet }).unwrap();
    let mut bids = example::generate(EVENTS);
    assert_eq!(report.bids, bids.len());
    assert!(bids.len() > EVENTS as usize * 9 / 10, "46 of every 50 events are bids");

    // Sort by window, then scan: (max price, count) per window, count per
    // (window, auction).
    bids.sort_by_key(|b| (start_of(b.ts, window), b.auction));
    let mut q7: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    let mut q5: BTreeMap<(i64, u64), u64> = BTreeMap::new();
    for b in &bids {
        let w = start_of(b.ts, window);
        let e = q7.entry(w).or_insert((0, 0));
        e.0 = e.0.max(b.price);
        e.1 += 1;
        *q5.entry((w, b.auction)).or_insert(0) += 1;
    }

    let ours: BTreeMap<i64, (u64, u64)> = csv_rows(&dir.join("q7.csv"))
        .iter()
        .map(|r| {
            assert_eq!(nanos(&r[1]) - nanos(&r[0]), window.as_nanos());
            (nanos(&r[0]), (r[2].parse().unwrap(), r[3].parse().unwrap()))
        })
        .collect();
    assert_eq!(ours, q7);
    assert_eq!(report.windows, q7.len());
    let ours: BTreeMap<(i64, u64), u64> = csv_rows(&dir.join("q5.csv"))
        .iter()
        .map(|r| ((nanos(&r[0]), r[2].parse().unwrap()), r[3].parse().unwrap()))
        .collect();
    assert_eq!(ours, q5);

    // Every bid is in the Parquet files, with integer columns.
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int64Type, TimestampNanosecondType};
    let mut files = Vec::new();
    let mut stack = vec![dir.join("bids")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() { stack.push(path) } else { files.push(path) }
        }
    }
    assert!(files.iter().all(|f| f.to_string_lossy().contains("tenant=nexmark/stream=bids/date=2026-11-28/")));
    let mut archived = Vec::new();
    for file in files {
        let bytes = bytes::Bytes::from(std::fs::read(file).unwrap());
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(bytes, 8192).unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let col = |name: &str| batch.column_by_name(name).unwrap().clone();
            let (auction, price) = (col("auction"), col("price"));
            let time = col("date_time");
            let (auction, price) = (auction.as_primitive::<Int64Type>(), price.as_primitive::<Int64Type>());
            let time = time.as_primitive::<TimestampNanosecondType>();
            for i in 0..batch.num_rows() {
                archived.push((time.value(i), auction.value(i) as u64, price.value(i) as u64));
            }
        }
    }
    archived.sort_unstable();
    let mut expected: Vec<(i64, u64, u64)> = bids.iter().map(|b| (b.ts.as_nanos(), b.auction, b.price)).collect();
    expected.sort_unstable();
    assert_eq!(archived, expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bids_as_one_csv_file() {
    let dir = out_dir("csv");
    let report =
        example::run(&Args { events: 5_000, window: Span::from_secs(10), out: dir.clone(), format: BidFormat::Csv })
            .unwrap();
    let text = std::fs::read_to_string(dir.join("bids.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[0], "date_time");
    assert!(header.contains(&"auction") && header.contains(&"price"));
    assert_eq!(lines.count(), report.bids, "one header, then a row per bid");
    std::fs::remove_dir_all(&dir).unwrap();
}

//! Decode + validate throughput of the three codecs on a realistic batch
//! (1,000 events, 3 dims, 2 fields, an id), against baselines measured in
//! the same run:
//! - JSON / NDJSON: `serde_json` into a plain owned struct (`String`s and
//!   `HashMap`s), no validation;
//! - Protobuf: `prost` decoding the generated `proto::EventBatch`, no
//!   validation.
//!
//! `cargo bench --bench decode`; figures in BENCHMARKS.md.

#![allow(missing_docs, reason = "criterion generates the entry point")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benchmark inputs are generated and known good"
)]

use std::collections::HashMap;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edgestream::event::{EventBatch, Format, Limits};
use edgestream::proto;
use prost::Message;
use serde::Deserialize;

#[path = "../tests/common/traffic.rs"]
#[allow(dead_code, unreachable_pub, reason = "shared with the tests")]
mod traffic;

const EVENTS: usize = 1_000;

/// What a user would write without edgestream: owned strings, hash maps,
/// the timestamp left as text.
#[derive(Deserialize)]
#[allow(dead_code, reason = "fields are decoded for the cost, not read")]
struct PlainEvent {
    tenant: String,
    stream: String,
    ts: String,
    id: Option<String>,
    #[serde(default)]
    dims: HashMap<String, String>,
    #[serde(default)]
    fields: HashMap<String, f64>,
}

fn encoded(format: Format) -> Bytes {
    let mut wire = Vec::new();
    format.encode(&traffic::batch(EVENTS, 42), &mut wire);
    Bytes::from(wire)
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let now = traffic::start();
    for format in [Format::Json, Format::Ndjson, Format::Protobuf] {
        let body = encoded(format);
        let name = match format {
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            _ => "protobuf",
        };
        eprintln!("{name}: {} bytes for {EVENTS} events", body.len());
        let mut group = c.benchmark_group(format!("decode/{name}"));
        group.throughput(Throughput::Elements(EVENTS as u64));
        let mut batch = EventBatch::new();
        group.bench_function("edgestream_decode_validate", |b| {
            b.iter(|| {
                format.decode_into(black_box(&body), &limits, &mut batch).unwrap();
                let report = limits.validate(&mut batch, now);
                black_box(report.accepted())
            })
        });
        group.bench_function("edgestream_decode", |b| {
            b.iter(|| {
                format.decode_into(black_box(&body), &limits, &mut batch).unwrap();
                black_box(batch.len())
            })
        });
        match format {
            Format::Json => group.bench_function("baseline_serde_json_owned", |b| {
                b.iter(|| black_box(serde_json::from_slice::<Vec<PlainEvent>>(black_box(&body)).unwrap().len()))
            }),
            Format::Ndjson => group.bench_function("baseline_serde_json_owned", |b| {
                b.iter(|| {
                    let events: Vec<PlainEvent> = black_box(&body)
                        .split(|&c| c == b'\n')
                        .filter(|line| !line.is_empty())
                        .map(|line| serde_json::from_slice(line).unwrap())
                        .collect();
                    black_box(events.len())
                })
            }),
            _ => group.bench_function("baseline_prost", |b| {
                b.iter(|| black_box(proto::EventBatch::decode(black_box(body.clone())).unwrap().events.len()))
            }),
        };
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The whole pipeline on one core: Protobuf bodies of 1,000 events through
//! decode → validate → rate limit → sample → windows (count, sum, max,
//! mean, p99) → tile deltas → alert evaluation (100 rules), with the stages
//! measured one by one in the same run:
//!
//! - `decode`: `Format::decode_into` alone;
//! - `decode_validate`: plus `Limits::validate_for`;
//! - `decode_validate_windows`: plus `Windows::push` and `advance` by hand;
//! - `pipeline`: `Pipeline::ingest` for every body, `advance` every ten
//!   bodies (rate limit, hash sampling at 0.999, one 10 s window operator
//!   grouped by region and type, a tile board, 100 alert rules);
//! - `prost_hashmap`: the baseline a user might write by hand: `prost`
//!   decoding into generated structs, then count / sum / max per
//!   (window, region, type) in a `HashMap` (no validation, no quantiles,
//!   no deltas, no alerts).
//!
//! 1,000,000 events of the decode bench's generator (three tenants, eight
//! regions, five device types, 200 devices, about one event per
//! millisecond). `cargo bench --bench pipeline`; figures in BENCHMARKS.md.

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
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use edgestream::event::{EventBatch, Format, protobuf};
use edgestream::pipeline::{Outputs, Pipeline, PipelineConfig};
use edgestream::time::Timestamp;
use edgestream::window::Windows;
use prost::Message;

#[path = "../tests/common/traffic.rs"]
#[allow(dead_code, unreachable_pub, reason = "shared with the tests")]
mod traffic;

const EVENTS: usize = 1_000_000;
const PER_BODY: usize = 1_000;

/// Protobuf bodies of 1,000 events of one tenant each, in time order.
fn bodies() -> Vec<(&'static str, Bytes)> {
    let events = traffic::events(EVENTS, 3);
    let mut by_tenant: HashMap<String, Vec<_>> = HashMap::new();
    let mut out = Vec::new();
    for e in events {
        let pending = by_tenant.entry(e.tenant.clone()).or_default();
        pending.push(e);
        if pending.len() == PER_BODY {
            out.push(body(std::mem::take(pending)));
        }
    }
    out.extend(by_tenant.into_values().filter(|p| !p.is_empty()).map(body));
    out
}

fn body(events: Vec<edgestream::event::Event>) -> (&'static str, Bytes) {
    let tenant = ["acme", "globex", "initech"].into_iter().find(|t| *t == events[0].tenant).unwrap();
    let mut batch = EventBatch::new();
    events.iter().for_each(|e| batch.push(e));
    let mut wire = Vec::new();
    protobuf::encode(&batch, &mut wire);
    (tenant, Bytes::from(wire))
}

fn config() -> PipelineConfig {
    let rules: Vec<String> = (0..100)
        .map(|i| {
            let agg = ["max", "avg", "p99", "count"][i % 4];
            let field = if agg == "count" { String::new() } else { "temp_c".to_owned() };
            let threshold = 20 + i % 17;
            format!(
                r#"{{"name": "r{i}", "rule": "{agg}({field}) by (region) > {threshold} for 20s recover < {}"}}"#,
                threshold - 1
            )
        })
        .collect();
    PipelineConfig::from_json_str(&format!(
        r#"{{
        "tenants": {{"rate": {{"cells": 100000000, "per": "1s", "burst": 100000000}}}},
        "sampling": {{"kind": "hash", "rate": 0.999}},
        "windows": [{{"name": "10s", "board": "metrics",
                      "spec": {{"size": "10s", "group_by": ["region", "type"],
                               "fields": [{{"field": "temp_c", "quantiles": [0.99],
                                            "aggregates": ["count", "sum", "max", "mean"]}}]}}}}],
        "alerts": {{"rules": [{}]}}
    }}"#,
        rules.join(",")
    ))
    .unwrap()
}

/// The host's clock: just after the last event.
fn now() -> Timestamp {
    traffic::start().saturating_add(edgestream::time::Span::from_secs(1_001))
}

fn run_pipeline(bodies: &[(&str, Bytes)], mut pipeline: Pipeline) -> usize {
    let mut out = Outputs::default();
    let mut emitted = 0;
    for (i, (tenant, body)) in bodies.iter().enumerate() {
        let receipt = pipeline.ingest(tenant, "application/x-protobuf", body.clone(), now()).unwrap();
        black_box(receipt);
        if i % 10 == 9 {
            pipeline.advance(now(), &mut out);
            emitted += out.results.len() + out.deltas.len() + out.alerts.len();
            out.clear();
        }
    }
    emitted
}

/// What a user might write without the library.
fn prost_hashmap(bodies: &[(&str, Bytes)]) -> usize {
    let mut windows: HashMap<(i64, String, String), (u64, f64, f64)> = HashMap::new();
    for (_, body) in bodies {
        let batch = edgestream::proto::EventBatch::decode(body.clone()).unwrap();
        for e in batch.events {
            let ts = e.ts_unix_nanos.unwrap_or_default();
            let dim = |k: &str| e.dims.iter().find(|d| d.key == k).map(|d| d.value.clone()).unwrap_or_default();
            let Some(temp) = e.fields.iter().find(|f| f.name == "temp_c").map(|f| f.value) else { continue };
            let entry = windows.entry((ts.div_euclid(10_000_000_000), dim("region"), dim("type"))).or_insert((
                0,
                0.0,
                f64::MIN,
            ));
            entry.0 += 1;
            entry.1 += temp;
            entry.2 = entry.2.max(temp);
        }
    }
    windows.len()
}

fn bench(c: &mut Criterion) {
    let bodies = bodies();
    let limits = config().limits;
    let spec = config().windows[0].spec.clone();
    let mut group = c.benchmark_group("pipeline/1m_events");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);

    group.bench_function("decode", |b| {
        let mut batch = EventBatch::new();
        b.iter(|| {
            for (_, body) in &bodies {
                Format::Protobuf.decode_into(body, &limits, &mut batch).unwrap();
                black_box(batch.len());
            }
        });
    });
    group.bench_function("decode_validate", |b| {
        let mut batch = EventBatch::new();
        b.iter(|| {
            for (tenant, body) in &bodies {
                Format::Protobuf.decode_into(body, &limits, &mut batch).unwrap();
                black_box(limits.validate_for(&mut batch, now(), tenant));
            }
        });
    });
    group.bench_function("decode_validate_windows", |b| {
        let mut batch = EventBatch::new();
        let mut late = Vec::new();
        b.iter_batched(
            || Windows::new(spec.clone()).unwrap(),
            |mut windows| {
                for (i, (tenant, body)) in bodies.iter().enumerate() {
                    Format::Protobuf.decode_into(body, &limits, &mut batch).unwrap();
                    limits.validate_for(&mut batch, now(), tenant);
                    windows.push(&batch, now(), &mut late);
                    if i % 10 == 9 {
                        windows.advance(now());
                        while let Some(r) = windows.poll_result() {
                            black_box(r);
                        }
                    }
                }
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("pipeline", |b| {
        b.iter_batched(|| Pipeline::new(config()).unwrap(), |p| run_pipeline(&bodies, p), BatchSize::LargeInput);
    });
    group.bench_function("prost_hashmap", |b| b.iter(|| black_box(prost_hashmap(&bodies))));
    group.finish();

    // What one run emits, for the record.
    let emitted = run_pipeline(&bodies, Pipeline::new(config()).unwrap());
    println!("one run: {} bodies, {emitted} results + deltas + alerts emitted", bodies.len());
}

criterion_group!(benches, bench);
criterion_main!(benches);

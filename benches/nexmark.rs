//! Nexmark q7 and q5 (windowed-aggregate forms) over 1 M bids generated
//! beforehand with the `nexmark` crate, one core, 10 s windows:
//!
//! - `edgestream_q7`, `edgestream_q5`: the example's queries on
//!   `Windows::push_resolved` (groups resolved once per auction);
//! - `hashmap_q7`, `hashmap_q5`: the same two queries by hand with a
//!   `HashMap` keyed by window (and auction), the baseline.
//!
//! `cargo bench --features parquet --bench nexmark`; DuckDB on the same
//! bids: `benches/nexmark_duckdb.py`. Figures in BENCHMARKS.md.

#![allow(missing_docs, reason = "criterion generates the entry point")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benchmark inputs are generated and known good"
)]

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edgestream::time::Span;

#[path = "../examples/nexmark/main.rs"]
#[allow(dead_code, reason = "the example's `main` is not called here")]
mod example;

use example::queries::{self, Bid};

const WINDOW: Span = Span::from_secs(10);

fn hashmap_q7(bids: &[Bid]) -> usize {
    let size = WINDOW.as_nanos();
    let mut windows: HashMap<i64, (u64, u64)> = HashMap::new();
    for b in bids {
        let w = windows.entry(b.ts.as_nanos().div_euclid(size)).or_insert((0, 0));
        w.0 = w.0.max(b.price);
        w.1 += 1;
    }
    windows.len()
}

fn hashmap_q5(bids: &[Bid]) -> usize {
    let size = WINDOW.as_nanos();
    let mut counts: HashMap<(i64, u64), u64> = HashMap::new();
    for b in bids {
        *counts.entry((b.ts.as_nanos().div_euclid(size), b.auction)).or_insert(0) += 1;
    }
    counts.len()
}

fn bench(c: &mut Criterion) {
    // About 1 M bids: 46 of every 50 events.
    let bids = example::generate(1_087_000);
    println!("{} bids", bids.len());
    let mut group = c.benchmark_group("nexmark/1m_bids");
    group.throughput(Throughput::Elements(bids.len() as u64));
    group.sample_size(20);
    group.bench_function("edgestream_q7", |b| b.iter(|| black_box(queries::q7(&bids, WINDOW).unwrap().len())));
    group.bench_function("hashmap_q7", |b| b.iter(|| black_box(hashmap_q7(&bids))));
    group.bench_function("edgestream_q5", |b| b.iter(|| black_box(queries::q5(&bids, WINDOW).unwrap().len())));
    group.bench_function("hashmap_q5", |b| b.iter(|| black_box(hashmap_q5(&bids))));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

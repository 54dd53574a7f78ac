//! The tile board against plain `HashMap` code in the same run.
//!
//! `tick`: a board of 10,000 tiles gets all 10,000 values each tick (a
//! window result per group), 1 % of them changed; the board stages them
//! and commits one delta of the changes. Baseline: a `HashMap<String,
//! f64>` compared value by value, changes collected into a `Vec`.
//!
//! `conflate`: 100 such deltas pushed to a slow subscriber's outbox, then
//! one frame taken. Baseline: the deltas queued as they come and merged
//! into a `HashMap` when taken.
//!
//! `cargo bench --bench board`; figures in BENCHMARKS.md.

#![allow(missing_docs, reason = "criterion generates the entry point")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benchmark inputs are known good"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use edgestream::delta::board::{BoardConfig, Delta, Outbox, TileBoard, TileValue};

const TILES: usize = 10_000;
const CHANGED: usize = TILES / 100;

fn keys() -> Vec<Arc<str>> {
    (0..TILES).map(|i| Arc::from(format!("metrics|device=d{i:05}|temp"))).collect()
}

/// The value of tile `i` at tick `t`: it steps when `t ≡ i (mod 100)`, so
/// 1 % of the tiles change per tick.
fn value(i: usize, t: usize) -> f64 {
    (i + 1_000 * ((t + 100 - i % 100) / 100)) as f64
}

fn bench(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("board/tick_10k_tiles_1pct_changed");
    group.throughput(Throughput::Elements(TILES as u64));
    group.bench_function("edgestream_board", |b| {
        let mut board = TileBoard::new("metrics", BoardConfig { checksum_every: 0, ..BoardConfig::default() });
        for (i, k) in keys.iter().enumerate() {
            board.set(k.clone(), TileValue::number(value(i, 0))).unwrap();
        }
        board.commit();
        let mut t = 0;
        b.iter(|| {
            t += 1;
            for (i, k) in keys.iter().enumerate() {
                board.set(k.clone(), TileValue::number(value(i, t))).unwrap();
            }
            let delta = board.commit().unwrap();
            assert_eq!(delta.upserts.len(), CHANGED);
            black_box(delta)
        })
    });
    group.bench_function("hashmap_diff", |b| {
        let mut map: HashMap<Arc<str>, f64> = keys.iter().enumerate().map(|(i, k)| (k.clone(), value(i, 0))).collect();
        let mut t = 0;
        b.iter(|| {
            t += 1;
            let mut changed = Vec::new();
            for (i, k) in keys.iter().enumerate() {
                let v = value(i, t);
                let slot = map.get_mut(k).unwrap();
                if slot.to_bits() != v.to_bits() {
                    *slot = v;
                    changed.push((k.clone(), v));
                }
            }
            assert_eq!(changed.len(), CHANGED);
            black_box(changed)
        })
    });
    group.finish();

    // 100 deltas of 100 changed tiles each.
    let mut board = TileBoard::new("metrics", BoardConfig::default());
    for (i, k) in keys.iter().enumerate() {
        board.set(k.clone(), TileValue::number(value(i, 0))).unwrap();
    }
    board.commit();
    let mut deltas: Vec<Delta> = Vec::new();
    for t in 1..=100 {
        for i in (t % 100..TILES).step_by(100) {
            board.set(keys[i].clone(), TileValue::number(value(i, t))).unwrap();
        }
        deltas.push(board.commit().unwrap());
    }
    let base = deltas[0].base_seq;
    let mut group = c.benchmark_group("board/conflate_100_deltas");
    group.throughput(Throughput::Elements(100));
    group.bench_function("edgestream_outbox", |b| {
        b.iter_batched(
            || {
                // An outbox whose subscriber holds the board as of `base`.
                let mut before = TileBoard::new("metrics", BoardConfig::default());
                for (i, k) in keys.iter().enumerate() {
                    before.set(k.clone(), TileValue::number(value(i, 0))).unwrap();
                }
                before.commit();
                let mut outbox = Outbox::new();
                outbox.take(&before);
                outbox
            },
            |mut outbox| {
                for d in &deltas {
                    outbox.push(d);
                }
                black_box(outbox.take(&board).unwrap())
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("queue_then_hashmap_merge", |b| {
        b.iter(|| {
            let mut queue: Vec<Delta> = Vec::new();
            for d in &deltas {
                queue.push(d.clone());
            }
            let mut merged: HashMap<Arc<str>, TileValue> = HashMap::new();
            for d in queue {
                for (k, v) in d.upserts {
                    merged.insert(k, v);
                }
            }
            black_box((base, merged))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

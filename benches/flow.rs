//! Flow control and sampling, each against a baseline in the same run.
//!
//! GCRA against the `governor` crate: both limiters use a manual clock (ours takes `now` as an argument,
//! governor's `FakeRelativeClock` is advanced by hand), 1 µs per check, a
//! quota of 1 M cells/s with a burst of 100. Direct: one limiter. Keyed:
//! 1,000 tenants in turn (ours: `RateLimiter<u32>`; governor: its
//! `HashMap`-backed keyed limiter).
//!
//! Queues against a raw `crossbeam` `ArrayQueue` (capacity 1,024, `u64`
//! items, one thread): `push_pop` pushes and pops in turn (the queue never
//! fills); `overflow` pushes into a full queue, so every push meets the
//! policy (the baseline refuses with `push`, or evicts with `force_push`).
//!
//! Sampling: the hash sampler against the same threshold test on std's
//! `DefaultHasher` (SipHash-1-3, what a first implementation would use);
//! the adaptive sampler against a `HashMap` count per key and a fixed-rate
//! draw (the least a per-key sampler does), over Zipf-like keys.
//!
//! `cargo bench --bench flow`; figures in BENCHMARKS.md.

#![allow(missing_docs, reason = "criterion generates the entry point")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benchmark inputs are generated and known good"
)]

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{Bencher, Criterion, Throughput, criterion_group, criterion_main};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use crossbeam::queue::ArrayQueue;
use edgestream::flow::{Gcra, LocalQueue, Overflow, Push, QueueConfig, Quota, RateLimiter, SharedQueue};
use edgestream::sample::{AdaptiveConfig, AdaptiveSampler, HashKey, HashSampler};
use edgestream::time::{Span, Timestamp};
use governor::clock::FakeRelativeClock;

const CHECKS: u64 = 100_000;
const TENANTS: u32 = 1_000;

fn bench(c: &mut Criterion) {
    let quota = Quota::per_second(1_000_000).with_burst(100);
    let gov_quota =
        governor::Quota::per_second(NonZeroU32::new(1_000_000).unwrap()).allow_burst(NonZeroU32::new(100).unwrap());
    let start = Timestamp::from_secs(1_795_838_400).unwrap();

    let mut group = c.benchmark_group("flow/gcra_check");
    group.throughput(Throughput::Elements(CHECKS));
    group.bench_function("edgestream_gcra", |b| {
        b.iter(|| {
            let mut g = Gcra::new();
            let mut allowed = 0u64;
            for i in 0..CHECKS {
                let now = start.saturating_add(Span::from_micros(i as i64));
                allowed += u64::from(g.check(&quota, now, 1).is_allowed());
            }
            black_box(allowed)
        })
    });
    group.bench_function("governor_direct", |b| {
        b.iter(|| {
            let clock = FakeRelativeClock::default();
            let limiter = governor::RateLimiter::direct_with_clock(gov_quota, clock.clone());
            let mut allowed = 0u64;
            for _ in 0..CHECKS {
                clock.advance(Duration::from_micros(1));
                allowed += u64::from(limiter.check().is_ok());
            }
            black_box(allowed)
        })
    });
    group.bench_function("edgestream_keyed_1k_tenants", |b| {
        b.iter(|| {
            let mut limits = RateLimiter::new(quota, 10_000);
            let mut allowed = 0u64;
            for i in 0..CHECKS {
                let now = start.saturating_add(Span::from_micros(i as i64));
                allowed += u64::from(limits.check(&((i as u32) % TENANTS), now, 1).is_allowed());
            }
            black_box(allowed)
        })
    });
    group.bench_function("governor_keyed_1k_tenants", |b| {
        b.iter(|| {
            let clock = FakeRelativeClock::default();
            let limiter = governor::RateLimiter::hashmap_with_clock(gov_quota, clock.clone());
            let mut allowed = 0u64;
            for i in 0..CHECKS {
                clock.advance(Duration::from_micros(1));
                allowed += u64::from(limiter.check_key(&((i as u32) % TENANTS)).is_ok());
            }
            black_box(allowed)
        })
    });
    group.finish();
}

const OPS: u64 = 100_000;
const CAPACITY: usize = 1_024;

fn now() -> Timestamp {
    Timestamp::from_secs(1_795_838_400).unwrap()
}

fn conflate_key(item: &u64) -> u64 {
    item % 64
}

/// Our two queues, driven from one thread.
trait Queue {
    fn push(&mut self, item: u64, now: Timestamp) -> Push<u64>;
    fn pop(&mut self, now: Timestamp) -> Option<u64>;
}

impl Queue for LocalQueue<u64, u64> {
    fn push(&mut self, item: u64, now: Timestamp) -> Push<u64> {
        LocalQueue::push(self, item, now)
    }
    fn pop(&mut self, now: Timestamp) -> Option<u64> {
        LocalQueue::pop(self, now)
    }
}

impl Queue for SharedQueue<u64, u64> {
    fn push(&mut self, item: u64, now: Timestamp) -> Push<u64> {
        SharedQueue::push(self, item, now)
    }
    fn pop(&mut self, now: Timestamp) -> Option<u64> {
        SharedQueue::pop(self, now)
    }
}

/// Pushes and pops in turn: the queue never fills.
fn push_pop(b: &mut Bencher<'_>, q: &mut impl Queue, t: Timestamp) {
    b.iter(|| {
        let mut sum = 0u64;
        for i in 0..OPS {
            let _ = black_box(q.push(i, t));
            sum += q.pop(t).unwrap();
        }
        black_box(sum)
    })
}

/// Fills the queue, then pushes into it: every push meets the policy.
fn push_full(b: &mut Bencher<'_>, q: &mut impl Queue, t: Timestamp) {
    for i in 0..CAPACITY as u64 {
        let _ = q.push(i, t);
    }
    b.iter(|| {
        let mut out = 0u64;
        for i in 0..OPS {
            out += u64::from(!matches!(black_box(q.push(i, t)), Push::Queued));
        }
        black_box(out)
    })
}

fn queues(c: &mut Criterion) {
    let t = now();
    let policies: [(&str, Overflow<u64, u64>); 4] = [
        ("block", Overflow::Block),
        ("drop_newest", Overflow::DropNewest),
        ("drop_oldest", Overflow::DropOldest),
        ("conflate", Overflow::Conflate(conflate_key)),
    ];

    let mut group = c.benchmark_group("flow/queue_push_pop");
    group.throughput(Throughput::Elements(OPS));
    group.bench_function("crossbeam_array_queue", |b| {
        let q = ArrayQueue::new(CAPACITY);
        b.iter(|| {
            let mut sum = 0u64;
            for i in 0..OPS {
                q.push(i).unwrap();
                sum += q.pop().unwrap();
            }
            black_box(sum)
        })
    });
    for (name, overflow) in policies {
        let config = QueueConfig::with_policy(CAPACITY, overflow);
        group.bench_function(format!("local_{name}"), |b| push_pop(b, &mut LocalQueue::new(config), t));
        group.bench_function(format!("shared_{name}"), |b| push_pop(b, &mut SharedQueue::new(config), t));
    }
    group.finish();

    let mut group = c.benchmark_group("flow/queue_overflow");
    group.throughput(Throughput::Elements(OPS));
    group.bench_function("crossbeam_array_queue_refuse", |b| {
        let q = ArrayQueue::new(CAPACITY);
        (0..CAPACITY as u64).for_each(|i| q.push(i).unwrap());
        b.iter(|| {
            let mut refused = 0u64;
            for i in 0..OPS {
                refused += u64::from(q.push(i).is_err());
            }
            black_box(refused)
        })
    });
    group.bench_function("crossbeam_array_queue_force_push", |b| {
        let q = ArrayQueue::new(CAPACITY);
        (0..CAPACITY as u64).for_each(|i| q.push(i).unwrap());
        b.iter(|| {
            let mut evicted = 0u64;
            for i in 0..OPS {
                evicted += q.force_push(i).unwrap_or(0);
            }
            black_box(evicted)
        })
    });
    for (name, overflow) in policies {
        // Conflation of 64 keys never fills a queue of 1,024: every push
        // after the first 64 replaces.
        let config = QueueConfig::with_policy(CAPACITY, overflow);
        group.bench_function(format!("local_{name}"), |b| push_full(b, &mut LocalQueue::new(config), t));
        group.bench_function(format!("shared_{name}"), |b| push_full(b, &mut SharedQueue::new(config), t));
    }
    group.finish();
}

/// Keys 0..1,000 with Zipf-like frequencies (s = 1.1), from a fixed seed.
fn zipf_keys(n: usize) -> Vec<u32> {
    let weights: Vec<f64> = (1..=1_000).map(|r| 1.0 / f64::powf(r as f64, 1.1)).collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    let cdf: Vec<f64> = weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect();
    let mut x = 0x5EEDu64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            cdf.partition_point(|&c| c < u).min(999) as u32
        })
        .collect()
}

fn sampling(c: &mut Criterion) {
    let ids: Vec<String> = (0..OPS).map(|i| format!("evt-{i:012}")).collect();
    let mut group = c.benchmark_group("sample/hash_decision");
    group.throughput(Throughput::Elements(OPS));
    group.bench_function("edgestream_hash_sampler", |b| {
        let mut s = HashSampler::new(0.1, HashKey::Id).unwrap();
        b.iter(|| ids.iter().filter(|id| s.sample(id.as_bytes()).is_kept()).count())
    });
    group.bench_function("std_siphash_threshold", |b| {
        let threshold = (0.1 * u64::MAX as f64) as u64;
        b.iter(|| {
            ids.iter()
                .filter(|id| {
                    let mut h = DefaultHasher::new();
                    id.as_bytes().hash(&mut h);
                    h.finish() < threshold
                })
                .count()
        })
    });
    group.finish();

    let keys = zipf_keys(OPS as usize);
    let start = now();
    let mut group = c.benchmark_group("sample/adaptive_decision");
    group.throughput(Throughput::Elements(OPS));
    group.bench_function("edgestream_adaptive_sampler", |b| {
        let config = AdaptiveConfig { target_rate: 1_000.0, interval: Span::from_secs(1), ..AdaptiveConfig::default() };
        let mut s = AdaptiveSampler::new(config).unwrap();
        let mut tick = 0i64;
        b.iter(|| {
            let mut kept = 0u64;
            for key in &keys {
                // 100,000 events per second of event time.
                tick += 10;
                kept += u64::from(s.sample(key, start.saturating_add(Span::from_micros(tick))).is_kept());
            }
            black_box(kept)
        })
    });
    group.bench_function("hashmap_count_fixed_rate", |b| {
        let mut counts: HashMap<u32, u64> = HashMap::new();
        let mut x = 1u64;
        b.iter(|| {
            let mut kept = 0u64;
            for key in &keys {
                *counts.entry(*key).or_insert(0) += 1;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                kept += u64::from(x % 100 < 5);
            }
            black_box(kept)
        })
    });
    group.finish();
}

criterion_group!(benches, bench, queues, sampling);
criterion_main!(benches);

//! GCRA rate limiting against the `governor` crate, in the same run.
//!
//! Both limiters use a manual clock (ours takes `now` as an argument,
//! governor's `FakeRelativeClock` is advanced by hand), 1 µs per check, a
//! quota of 1 M cells/s with a burst of 100. Direct: one limiter. Keyed:
//! 1,000 tenants in turn (ours: `RateLimiter<u32>`; governor: its
//! `HashMap`-backed keyed limiter).
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

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edgestream::flow::{Gcra, Quota, RateLimiter};
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

criterion_group!(benches, bench);
criterion_main!(benches);

//! Window aggregation throughput: `Windows::push` (+ `advance` per batch)
//! over pre-decoded batches, against a plain `HashMap<(group, window start),
//! aggregate>` written the straightforward way, in the same run.
//!
//! Workload: 100,000 events in batches of 1,000 spanning 2 s of event time
//! with ±20 ms of disorder, 10,000 groups given as a dim (strings the window
//! code resolves), 1 s windows (about 5 events per group and window), and
//! over one field: count, sum, min and max (the baseline's aggregates); the
//! same and p99; every scalar aggregate (mean and last too). Then a dense
//! stream: 1,000,000 events in one second of event time (about 100 events
//! per group and window, as a stream of 1 M events/s has), with string
//! dims and with resolved groups.
//!
//! `cargo bench --bench window`; figures in BENCHMARKS.md.

#![allow(missing_docs, reason = "criterion generates the entry point")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benchmark inputs are generated and known good"
)]

use std::collections::HashMap;
use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use edgestream::event::{Event, EventBatch};
use edgestream::time::{Span, Timestamp};
use edgestream::window::agg::Aggregates;
use edgestream::window::{FieldSpec, GroupHandle, PushError, ResolvedBatch, WindowSpec, Windows};

#[path = "../tests/common/traffic.rs"]
#[allow(dead_code, unreachable_pub, reason = "shared with the tests")]
mod traffic;

/// Events per run: 100,000, or `WINDOW_BENCH_EVENTS` (the DuckDB
/// comparison in BENCHMARKS.md uses 10 M).
fn events_per_run() -> usize {
    std::env::var("WINDOW_BENCH_EVENTS").ok().and_then(|n| n.parse().ok()).unwrap_or(100_000)
}
const BATCH: usize = 1_000;
const GROUPS: u64 = 10_000;

/// The measured traffic: a stream of 50,000 events per second of event
/// time (about 5 events per group and window).
fn batches() -> Vec<EventBatch> {
    batches_from(traffic::start(), 7, events_per_run(), SPARSE_GAP_US)
}

/// Event time between two events of the sparse stream (50 per ms: 100 k
/// events span 2 s) and of the dense one (1,000 per ms: 100 events per
/// group and window, the density of a stream that runs at 1 M events/s).
const SPARSE_GAP_US: i64 = 20;
const DENSE_GAP_US: i64 = 1;
/// Events per run of the dense stream: one second of it.
const DENSE_EVENTS: usize = 1_000_000;

/// `events` events from `start`, `gap_us` microseconds apart in event time
/// (±20 ms of disorder), over `GROUPS` devices.
fn batches_from(start: Timestamp, seed: u64, events: usize, gap_us: i64) -> Vec<EventBatch> {
    let mut rng = traffic::Rng::new(seed);
    let devices: Vec<String> = (0..GROUPS).map(|d| format!("dev-{d:05}")).collect();
    (0..events / BATCH)
        .map(|b| {
            let mut batch = EventBatch::new();
            for i in 0..BATCH {
                let n = (b * BATCH + i) as i64;
                let ts = start.saturating_add(Span::from_micros(n * gap_us + rng.below(40_000) as i64 - 20_000));
                let device = &devices[rng.below(GROUPS) as usize];
                batch.push(
                    &Event::new("acme", "metrics", ts)
                        .with_dim("device", device.as_str())
                        .with_field("latency_ms", (rng.below(10_000) as f64) / 10.0),
                );
            }
            batch
        })
        .collect()
}

struct PlainAgg {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl PlainAgg {
    fn new() -> Self {
        PlainAgg { count: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY }
    }

    fn add(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

/// The straightforward implementation: an owned key per event.
fn plain(batches: &[EventBatch]) -> usize {
    let mut map: HashMap<(String, i64), PlainAgg> = HashMap::new();
    for batch in batches {
        for e in batch.iter() {
            let group = format!("{}/{}/{}", e.tenant(), e.stream(), e.dim("device").unwrap_or(""));
            let window = e.ts().as_nanos().div_euclid(1_000_000_000);
            let Some(v) = e.field("latency_ms") else { continue };
            map.entry((group, window)).or_insert_with(PlainAgg::new).add(v);
        }
    }
    map.len()
}

fn ours(batches: &[EventBatch], spec: &WindowSpec) -> usize {
    feed(&mut Windows::new(spec.clone()).unwrap(), batches)
}

/// An operator that has already aggregated the same traffic for the 2 s
/// before the measured range (every group has a live window, and the
/// operator's memory is sized by the windows it has seen): the steady
/// state of a long-running stream, where groups exist before their next
/// events.
fn warmed(spec: &WindowSpec, before: &[EventBatch]) -> Windows {
    let mut w = Windows::new(spec.clone()).unwrap();
    feed(&mut w, before);
    w
}

/// A [`warmed`] operator and a handle for each of the `names` groups.
fn warmed_with_handles(spec: &WindowSpec, before: &[EventBatch], names: &[String]) -> (Windows, Vec<GroupHandle>) {
    let mut w = warmed(spec, before);
    let handles = names.iter().map(|d| w.resolve("acme", "metrics", &[d])).collect();
    (w, handles)
}

/// Closes what the watermark passed and drops the results; their count.
fn advance_and_drain(w: &mut Windows) -> usize {
    w.advance(Timestamp::UNIX_EPOCH);
    core::iter::from_fn(|| w.poll_result()).count()
}

fn feed(w: &mut Windows, batches: &[EventBatch]) -> usize {
    let mut late = Vec::new();
    let mut results = 0;
    for batch in batches {
        w.push(batch, Timestamp::UNIX_EPOCH, &mut late);
        results += advance_and_drain(w);
    }
    results + w.live_windows()
}

/// The events as (group index, event time, value): groups already resolved.
fn resolved_events(batches: &[EventBatch]) -> Vec<(u32, Timestamp, f64)> {
    batches
        .iter()
        .flat_map(|b| b.iter())
        .map(|e| {
            let device: u32 = e.dim("device").unwrap()[4..].parse().unwrap();
            (device, e.ts(), e.field("latency_ms").unwrap())
        })
        .collect()
}

/// Pushes resolved events in chunks of a batch, advancing and draining
/// after each; a group freed since it was resolved is resolved again.
fn push_resolved_all(
    w: &mut Windows,
    handles: &mut [GroupHandle],
    names: &[String],
    events: &[(u32, Timestamp, f64)],
) -> usize {
    let now = Timestamp::UNIX_EPOCH;
    let mut results = 0;
    for chunk in events.chunks(BATCH) {
        for &(g, ts, v) in chunk {
            let g = g as usize;
            if w.push_resolved(handles[g], ts, &[v], 1.0, now) == Err(PushError::StaleGroup { index: 0 }) {
                handles[g] = w.resolve("acme", "metrics", &[&names[g]]);
                w.push_resolved(handles[g], ts, &[v], 1.0, now).unwrap();
            }
        }
        results += advance_and_drain(w);
    }
    results
}

/// As [`push_resolved_all`], a batch of resolved events at a time (filled
/// in the measured loop, as a host would).
fn push_resolved_batches(
    w: &mut Windows,
    handles: &mut [GroupHandle],
    names: &[String],
    events: &[(u32, Timestamp, f64)],
) -> usize {
    let now = Timestamp::UNIX_EPOCH;
    let mut results = 0;
    let mut batch = ResolvedBatch::with_capacity(1, BATCH);
    let mut late = Vec::new();
    for chunk in events.chunks(BATCH) {
        batch.clear();
        for &(g, ts, v) in chunk {
            batch.push(handles[g as usize], ts, &[v]);
        }
        while let Err(e) = w.push_resolved_batch(&mut batch, now, &mut late) {
            let PushError::StaleGroup { index } = e else { panic!("{e}") };
            let g = chunk[index].0 as usize;
            let fresh = w.resolve("acme", "metrics", &[&names[g]]);
            batch.replace_group(handles[g], fresh);
            handles[g] = fresh;
        }
        results += advance_and_drain(w);
    }
    results
}

/// The plain baseline for resolved groups: `HashMap<(u32, window), agg>`.
fn plain_resolved(events: &[(u32, Timestamp, f64)]) -> usize {
    let mut map: HashMap<(u32, i64), PlainAgg> = HashMap::new();
    for &(g, ts, v) in events {
        let window = ts.as_nanos().div_euclid(1_000_000_000);
        map.entry((g, window)).or_insert_with(PlainAgg::new).add(v);
    }
    map.len()
}

/// `push_resolved_batches` from `setup`'s operator, and the plain
/// `HashMap<(u32, i64)>` baseline, over the same resolved events.
fn batch_and_baseline(
    group: &mut BenchmarkGroup<'_, WallTime>,
    setup: impl Fn() -> (Windows, Vec<GroupHandle>),
    names: &[String],
    events: &[(u32, Timestamp, f64)],
) {
    group.bench_function("edgestream_push_resolved_batch", |b| {
        b.iter_batched_ref(
            &setup,
            |(w, handles)| black_box(push_resolved_batches(w, handles, names, events)),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("baseline_plain_hashmap_u32_keys", |b| b.iter(|| black_box(plain_resolved(events))));
}

fn bench(c: &mut Criterion) {
    let batches = batches();
    let before = batches_from(traffic::start().saturating_sub(Span::from_secs(2)), 8, events_per_run(), SPARSE_GAP_US);
    // The baseline's aggregates: count, sum, min and max (the count is
    // always kept).
    let kept = Aggregates::SUM | Aggregates::MIN | Aggregates::MAX;
    let scalar = WindowSpec::new(Span::from_secs(1))
        .group_by(["device"])
        .field(FieldSpec::new("latency_ms").aggregates(kept))
        .out_of_orderness(Span::from_millis(100))
        .idle_timeout(None);
    let mut with_p99 = scalar.clone();
    with_p99.fields = vec![FieldSpec::new("latency_ms").aggregates(kept).with_quantiles([0.99])];
    // Every scalar aggregate (the default: mean and last too).
    let mut all = scalar.clone();
    all.fields = vec![FieldSpec::new("latency_ms")];
    let mut group = c.benchmark_group("window/push_10k_groups_1s");
    group.throughput(Throughput::Elements(events_per_run() as u64));
    group.sample_size(20);
    group.bench_function("edgestream_count_sum_min_max", |b| b.iter(|| black_box(ours(&batches, &scalar))));
    group.bench_function("edgestream_plus_p99", |b| b.iter(|| black_box(ours(&batches, &with_p99))));
    group.bench_function("edgestream_all_scalar_aggregates", |b| b.iter(|| black_box(ours(&batches, &all))));
    group.bench_function("edgestream_steady_state_count_sum_min_max", |b| {
        b.iter_batched_ref(|| warmed(&scalar, &before), |w| black_box(feed(w, &batches)), BatchSize::LargeInput)
    });
    group.bench_function("baseline_plain_hashmap", |b| b.iter(|| black_box(plain(&batches))));
    group.finish();

    // Groups resolved once, values pushed per event.
    let events = resolved_events(&batches);
    let mut group = c.benchmark_group("window/push_resolved_10k_groups_1s");
    group.throughput(Throughput::Elements(events_per_run() as u64));
    group.sample_size(20);
    let names: Vec<String> = (0..GROUPS).map(|d| format!("dev-{d:05}")).collect();
    let setup = || warmed_with_handles(&scalar, &before, &names);
    // Every event is placed (the host re-resolves a group freed between
    // its events, as it must); checked once outside the measurement.
    let (mut w, mut handles) = setup();
    let placed = |w: &Windows| w.stats().on_time + w.stats().late_accepted + w.stats().late_dropped;
    let warm = placed(&w);
    push_resolved_all(&mut w, &mut handles, &names, &events);
    assert_eq!(placed(&w) - warm, events.len() as u64, "every event placed");
    let (mut batched, mut handles) = setup();
    push_resolved_batches(&mut batched, &mut handles, &names, &events);
    assert_eq!(batched.stats(), w.stats(), "batches place events as single pushes do");
    group.bench_function("edgestream_push_resolved", |b| {
        b.iter_batched_ref(
            setup,
            |(w, handles)| black_box(push_resolved_all(w, handles, &names, &events)),
            BatchSize::LargeInput,
        )
    });
    batch_and_baseline(&mut group, setup, &names, &events);
    group.finish();

    // A dense stream: one second of 1 M events/s, about 100 events per
    // group and window, so each result costs a hundredth of an event
    // where it cost a fifth above (steady state: the operator saw the
    // second before).
    let dense = batches_from(traffic::start(), 7, DENSE_EVENTS, DENSE_GAP_US);
    let dense_before = batches_from(traffic::start().saturating_sub(Span::from_secs(1)), 8, DENSE_EVENTS, DENSE_GAP_US);
    let dense_events = resolved_events(&dense);
    let dense_setup = || warmed_with_handles(&scalar, &dense_before, &names);
    let mut group = c.benchmark_group("window/dense_10k_groups_1s_1m_events");
    group.throughput(Throughput::Elements(DENSE_EVENTS as u64));
    group.sample_size(10);
    group.bench_function("edgestream_steady_state_count_sum_min_max", |b| {
        b.iter_batched_ref(|| warmed(&scalar, &dense_before), |w| black_box(feed(w, &dense)), BatchSize::LargeInput)
    });
    group.bench_function("baseline_plain_hashmap", |b| b.iter(|| black_box(plain(&dense))));
    batch_and_baseline(&mut group, dense_setup, &names, &dense_events);
    group.finish();

    // Snapshot and restore of an operator holding 10 k live groups.
    let live = warmed(&scalar, &before);
    let mut bytes = Vec::new();
    live.snapshot(&mut bytes);
    eprintln!("snapshot of {} live windows: {} bytes", live.live_windows(), bytes.len());
    let mut group = c.benchmark_group("window/snapshot_10k_groups");
    group.bench_function("snapshot", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(bytes.len());
            live.snapshot(&mut out);
            black_box(out.len())
        })
    });
    group.bench_function("restore", |b| b.iter(|| black_box(Windows::restore(&bytes).unwrap().live_windows())));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Alert evaluation against plain `HashMap` code in the same run.
//!
//! 1,000 threshold rules (`avg(x) by (device) > T for 2m recover < R`,
//! ten per stream over 100 streams) and 10,000 groups (100 devices per
//! stream): each window, every group's result meets the ten rules of its
//! stream, so one window is 10,000 results and 100,000 rule instances
//! evaluated; about 1 % of the instances change state per window.
//!
//! Baseline: what one would write by hand for the same rules: a
//! `HashMap<(rule, device), state>` per result and rule, with the same
//! pending / firing / recovery logic, and no buffering, gaps, labels or
//! events beyond a counter.
//!
//! `cargo bench --bench alerts`; figures in BENCHMARKS.md.

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

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edgestream::alert::{EvalConfig, Evaluator, Rule};
use edgestream::time::{Span, Timestamp};
use edgestream::window::agg::Scalar;
use edgestream::window::{FieldResult, GroupKey, WindowResult};
use smallvec::SmallVec;

const STREAMS: usize = 100;
const RULES: usize = 1_000;
const GROUPS: usize = 10_000;
const WINDOW: Span = Span::from_mins(1);

fn threshold(rule: usize) -> f64 {
    100.0 + (rule / STREAMS) as f64 * 10.0
}

fn rules() -> Vec<Rule> {
    (0..RULES)
        .map(|r| {
            let text = format!(
                "avg(x) by (device) > {} for 2m recover < {} stream=s{}",
                threshold(r),
                threshold(r) - 5.0,
                r % STREAMS
            );
            Rule::parse(&format!("rule{r}"), &text).unwrap()
        })
        .collect()
}

/// The value of group `g` in window `t`: flat, with a 3-window excursion
/// above every threshold once every 100 windows (at a phase per group),
/// so about 1 % of the instances start or stop an alert each window.
fn value(g: usize, t: usize) -> f64 {
    let phase = (t + g) % 100;
    if phase < 3 { 500.0 } else { 50.0 + (g % 7) as f64 }
}

fn results() -> Vec<WindowResult> {
    (0..GROUPS)
        .map(|g| {
            let group = Arc::new(GroupKey {
                tenant: Arc::from("acme"),
                stream: Arc::from(format!("s{}", g % STREAMS)),
                labels: vec![(Arc::from("device"), Arc::from(format!("d{g}")))].into_boxed_slice(),
                overflow: false,
            });
            let mut fields = SmallVec::new();
            fields.push(FieldResult {
                field: Arc::from("x"),
                scalar: Scalar::new(),
                quantiles: Vec::new(),
                sketch: None,
            });
            WindowResult {
                group,
                start: Timestamp::UNIX_EPOCH,
                end: Timestamp::UNIX_EPOCH,
                revision: 0,
                is_final: true,
                events: 1,
                count: 1.0,
                fields,
            }
        })
        .collect()
}

/// Moves every result to window `t` with its value.
fn set_window(results: &mut [WindowResult], t: usize) {
    let start = Timestamp::from_nanos(WINDOW.as_nanos() * t as i64);
    for (g, r) in results.iter_mut().enumerate() {
        r.start = start;
        r.end = start.saturating_add(WINDOW);
        let mut scalar = Scalar::new();
        scalar.record(value(g, t), 1.0, start);
        r.fields[0].scalar = scalar;
    }
}

#[derive(Clone, Copy)]
enum Phase {
    Inactive,
    Pending(i64),
    Firing,
}

/// The hand-written baseline.
struct Naive {
    by_stream: HashMap<String, Vec<usize>>,
    rules: Vec<(f64, f64, i64)>,
    state: HashMap<(usize, String), Phase>,
    transitions: u64,
}

impl Naive {
    fn new() -> Naive {
        let mut by_stream: HashMap<String, Vec<usize>> = HashMap::new();
        let mut rules = Vec::new();
        for r in 0..RULES {
            by_stream.entry(format!("s{}", r % STREAMS)).or_default().push(r);
            rules.push((threshold(r), threshold(r) - 5.0, Span::from_mins(2).as_nanos()));
        }
        Naive { by_stream, rules, state: HashMap::new(), transitions: 0 }
    }

    fn push(&mut self, r: &WindowResult) {
        let Some(rules) = self.by_stream.get(&*r.group.stream) else { return };
        let device = r.group.label("device").unwrap_or("");
        let Some(v) = r.field("x").and_then(|f| f.scalar.mean()) else { return };
        for &rule in rules {
            let (above, recover, for_) = self.rules[rule];
            let phase = self.state.entry((rule, device.to_owned())).or_insert(Phase::Inactive);
            let next = match *phase {
                Phase::Inactive if v > above => {
                    if WINDOW.as_nanos() >= for_ {
                        Phase::Firing
                    } else {
                        Phase::Pending(r.start.as_nanos())
                    }
                }
                Phase::Pending(_) if v <= above => Phase::Inactive,
                Phase::Pending(since) if r.end.as_nanos() - since >= for_ => Phase::Firing,
                Phase::Firing if v < recover => Phase::Inactive,
                p => p,
            };
            if std::mem::discriminant(&next) != std::mem::discriminant(phase) {
                self.transitions += 1;
            }
            *phase = next;
        }
    }
}

fn bench(c: &mut Criterion) {
    let rules = rules();
    let mut group = c.benchmark_group("alerts/1000_rules_10k_groups");
    group.throughput(Throughput::Elements(GROUPS as u64));
    group.sample_size(20);

    group.bench_function("edgestream_evaluator", |b| {
        let mut ev = Evaluator::new(rules.clone(), EvalConfig::default()).unwrap();
        let mut results = results();
        let mut events = Vec::new();
        let mut t = 0;
        b.iter(|| {
            set_window(&mut results, t);
            for r in &results {
                ev.push(r);
            }
            events.clear();
            ev.advance(results[0].end, &mut events);
            t += 1;
            black_box(events.len())
        });
        assert_eq!(ev.stats().instances, (GROUPS * RULES / STREAMS) as u64);
    });

    group.bench_function("hashmap_baseline", |b| {
        let mut naive = Naive::new();
        let mut results = results();
        let mut t = 0;
        b.iter(|| {
            set_window(&mut results, t);
            for r in &results {
                naive.push(r);
            }
            t += 1;
            black_box(naive.transitions)
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The tumbling-window operator: boundaries, watermark, idle timeout,
//! lateness, group cap, order independence, and a real series.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use std::collections::BTreeMap;

use edgestream::event::{Event, EventBatch, Format, Limits};
use edgestream::time::{Span, Timestamp};
use edgestream::window::agg::{Aggregates, Scalar};
use edgestream::window::{
    EmitMode, FieldSpec, OVERFLOW, Placement, PushError, ResolvedBatch, SpecError, WindowResult, WindowSpec, Windows,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms).unwrap()
}

fn ev(ms: i64, group: &str, value: f64) -> Event {
    Event::new("acme", "metrics", t(ms)).with_dim("g", group).with_field("v", value)
}

fn spec() -> WindowSpec {
    WindowSpec::new(Span::from_secs(10))
        .group_by(["g"])
        .field(FieldSpec::new("v"))
        .out_of_orderness(Span::from_secs(2))
        .idle_timeout(None)
}

/// Pushes `events` as one batch at `now`, then advances; returns the
/// results and the late indexes.
fn run(w: &mut Windows, events: &[Event], now: i64) -> (Vec<WindowResult>, Vec<usize>) {
    let mut batch = EventBatch::new();
    for e in events {
        batch.push(e);
    }
    let mut late = Vec::new();
    w.push(&batch, t(now), &mut late);
    w.advance(t(now));
    (drain(w), late)
}

fn drain(w: &mut Windows) -> Vec<WindowResult> {
    std::iter::from_fn(|| w.poll_result()).collect()
}

/// Tenant, stream, labels and window start (ms).
type GroupWindow = (String, String, Vec<String>, i64);

/// (group, start ms) → (revision, events, sum, min, max, last).
type Summary = BTreeMap<(String, i64), (u32, u64, f64, Option<f64>, Option<f64>, Option<(Timestamp, f64)>)>;

fn summary(results: &[WindowResult]) -> Summary {
    results
        .iter()
        .map(|r| {
            let s = &r.fields[0].scalar;
            (
                (r.group.labels[0].1.to_string(), r.start.as_millis()),
                (r.revision, r.events, s.sum().unwrap(), s.min(), s.max(), s.last()),
            )
        })
        .collect()
}

#[test]
fn spec_errors() {
    assert!(matches!(Windows::new(WindowSpec::new(Span::ZERO)), Err(SpecError::Window(_))));
    assert!(matches!(Windows::new(WindowSpec::new(Span::from_micros(10))), Err(SpecError::TooSmall(_))));
    assert!(matches!(Windows::new(spec().allowed_lateness(Span::from_secs(-1))), Err(SpecError::Negative(_))));
    assert!(matches!(
        Windows::new(spec().field(FieldSpec::new("x").with_quantiles([1.5]))),
        Err(SpecError::Quantile(_))
    ));
    assert!(matches!(Windows::new(spec().max_groups_per_tenant(0)), Err(SpecError::NoGroups)));
    let mut wide = spec();
    wide.fields = (0..WindowSpec::MAX_FIELDS).map(|i| FieldSpec::new(format!("f{i}"))).collect();
    let mut w = Windows::new(wide.clone()).unwrap();
    let mut event = ev(1_000, "a", 1.0);
    for i in 0..WindowSpec::MAX_FIELDS {
        event = event.with_field(format!("f{i}"), i as f64);
    }
    let results = run(&mut w, &[event, ev(60_000, "a", 1.0)], 0).0;
    let last = &results[0].fields[WindowSpec::MAX_FIELDS - 1].scalar;
    assert_eq!((last.count(), last.last().map(|l| l.1)), (1.0, Some(29.0)), "the last field's state is its own");
    wide.fields.push(FieldSpec::new("one_too_many"));
    assert!(matches!(Windows::new(wide), Err(SpecError::TooManyFields(31))));
}

#[test]
fn boundaries_belong_to_the_window_they_start() {
    let mut w = Windows::new(spec()).unwrap();
    let (results, _) =
        run(&mut w, &[ev(0, "a", 1.0), ev(9_999, "a", 2.0), ev(10_000, "a", 4.0), ev(30_000, "a", 0.0)], 30_000);
    let s = summary(&results);
    assert_eq!(s[&("a".into(), 0)].1, 2);
    assert_eq!(s[&("a".into(), 0)].2, 3.0);
    assert_eq!(s[&("a".into(), 10_000)].1, 1);
    assert!(!s.contains_key(&("a".into(), 30_000)), "still open: watermark is 28 s");
    assert_eq!(w.watermark(), t(28_000));
    assert!(results.iter().all(|r| r.is_final && r.revision == 0 && r.end.as_millis() - r.start.as_millis() == 10_000));
}

#[test]
fn negative_timestamps_window_correctly() {
    let mut w = Windows::new(spec()).unwrap();
    let (results, _) =
        run(&mut w, &[ev(-1, "a", 1.0), ev(-10_000, "a", 2.0), ev(-10_001, "a", 4.0), ev(20_000, "a", 0.0)], 0);
    let s = summary(&results);
    assert_eq!(s[&("a".into(), -10_000)].1, 2);
    assert_eq!(s[&("a".into(), -20_000)].1, 1);
}

#[test]
fn the_watermark_only_moves_in_advance_and_never_back() {
    let mut w = Windows::new(spec()).unwrap();
    let (results, late) = run(&mut w, &[ev(25_000, "a", 1.0), ev(1_000, "a", 1.0)], 0);
    // Both events are in one push: the watermark was MIN while pushing, so
    // the early one is on time, and its window closes in this advance.
    assert!(late.is_empty());
    assert_eq!(summary(&results).len(), 1);
    let (results, _) = run(&mut w, &[ev(5_000, "b", 1.0)], 0);
    assert!(results.is_empty());
    assert_eq!(w.stats().late_dropped, 1);
    assert_eq!(w.watermark(), t(23_000));
}

#[test]
fn idle_timeout_closes_windows_on_a_quiet_stream() {
    let mut w = Windows::new(spec().idle_timeout(Some(Span::from_secs(5)))).unwrap();
    // Event time far behind processing time (a backfill).
    let (results, _) = run(&mut w, &[ev(1_000, "a", 1.0)], 100_000);
    assert!(results.is_empty(), "not idle yet");
    assert_eq!(w.next_deadline(), Some(t(105_000)));
    w.advance(t(104_999));
    assert!(drain(&mut w).is_empty());
    w.advance(t(105_000));
    assert_eq!(summary(&drain(&mut w)).len(), 1);
    assert_eq!(w.next_deadline(), None, "nothing open");
}

#[test]
fn late_events_within_lateness_emit_corrections_and_later_ones_are_returned() {
    let mut w = Windows::new(spec().allowed_lateness(Span::from_secs(30))).unwrap();
    let (first, _) = run(&mut w, &[ev(1_000, "a", 1.0), ev(12_000, "a", 5.0)], 0);
    assert_eq!(summary(&first)[&("a".into(), 0)], (0, 1, 1.0, Some(1.0), Some(1.0), Some((t(1_000), 1.0))));
    // Two late events for [0, 10) in one push: one correction.
    let (second, late) = run(&mut w, &[ev(2_000, "a", 3.0), ev(3_000, "a", -1.0)], 0);
    assert!(late.is_empty());
    assert_eq!(summary(&second)[&("a".into(), 0)], (1, 3, 3.0, Some(-1.0), Some(3.0), Some((t(3_000), -1.0))));
    assert_eq!(w.stats().late_accepted, 2);
    assert_eq!(w.stats().corrections, 1);
    // Move the watermark past [0, 10) + 30 s: the window is freed, and a
    // late event for it is dropped, counted and handed back.
    run(&mut w, &[ev(45_000, "a", 0.0)], 0);
    let (third, late) = run(&mut w, &[ev(12_500, "a", 0.0), ev(4_000, "a", 9.0)], 0);
    assert_eq!(late, [1]);
    assert_eq!(w.stats().late_dropped, 1);
    assert_eq!(summary(&third)[&("a".into(), 10_000)].0, 1, "10 s window corrected");
    assert_eq!(w.stats().on_time + w.stats().late_accepted + w.stats().late_dropped, 7);
}

#[test]
fn update_mode_emits_partials_once_per_change_then_the_final() {
    let mut w = Windows::new(spec().emit(EmitMode::OnUpdate)).unwrap();
    let (first, _) = run(&mut w, &[ev(1_000, "a", 1.0), ev(2_000, "b", 2.0)], 0);
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|r| !r.is_final && r.revision == 0));
    w.advance(t(0));
    assert!(drain(&mut w).is_empty(), "nothing changed");
    let (second, _) = run(&mut w, &[ev(3_000, "a", 3.0)], 0);
    assert_eq!(second.len(), 1);
    assert_eq!((second[0].revision, second[0].is_final, second[0].events), (1, false, 2));
    // Closing: finals for both, no duplicate partial for the closing window.
    let (third, _) = run(&mut w, &[ev(15_000, "a", 5.0)], 0);
    let finals: Vec<_> =
        third.iter().filter(|r| r.is_final).map(|r| (r.group.labels[0].1.to_string(), r.revision)).collect();
    assert_eq!(finals, [("a".to_string(), 2), ("b".to_string(), 1)]);
    let partials: Vec<_> = third.iter().filter(|r| !r.is_final).map(|r| r.start.as_millis()).collect();
    assert_eq!(partials, [10_000], "the new window's partial");
    assert_eq!(w.stats().corrections, 0);
}

#[test]
fn regression_a_window_dirty_when_it_closes_is_emitted_once() {
    // Found in review: a window changed and closed in the same advance was
    // emitted as final twice, the second time counted as a correction.
    let mut w = Windows::new(spec().emit(EmitMode::OnUpdate)).unwrap();
    let (results, _) = run(&mut w, &[ev(1_000, "a", 1.0), ev(15_000, "a", 2.0)], 0);
    let first: Vec<_> = results.iter().filter(|r| r.start == t(0)).map(|r| (r.revision, r.is_final)).collect();
    assert_eq!(first, [(0, true)]);
    assert_eq!(w.stats().corrections, 0);
    // Close mode: a late event in a window that closed with no state at all.
    let mut w = Windows::new(spec().allowed_lateness(Span::from_secs(60))).unwrap();
    run(&mut w, &[ev(35_000, "a", 1.0)], 0);
    let (late, _) = run(&mut w, &[ev(5_000, "a", 7.0)], 0);
    assert_eq!(late.iter().map(|r| (r.start.as_millis(), r.revision, r.is_final)).collect::<Vec<_>>(), [(0, 0, true)]);
    assert_eq!((w.stats().results, w.stats().corrections), (1, 0));
}

#[test]
fn groups_over_the_cap_go_to_the_overflow_group() {
    let mut w = Windows::new(spec().max_groups_per_tenant(2).group_ttl(Span::ZERO)).unwrap();
    let events: Vec<Event> = ["a", "b", "c", "d", "a", "c"].iter().map(|g| ev(1_000, g, 1.0)).collect();
    let other_tenant = Event::new("globex", "metrics", t(1_000)).with_dim("g", "z").with_field("v", 1.0);
    let (results, _) = run(&mut w, &[events, vec![other_tenant, ev(20_000, "a", 0.0)]].concat(), 0);
    let acme: BTreeMap<String, u64> = results
        .iter()
        .filter(|r| &*r.group.tenant == "acme")
        .map(|r| (r.group.labels[0].1.to_string(), r.events))
        .collect();
    assert_eq!(acme, BTreeMap::from([("a".into(), 2), ("b".into(), 1), (OVERFLOW.into(), 3)]));
    assert!(results.iter().any(|r| &*r.group.tenant == "globex"), "the cap is per tenant");
    assert_eq!(w.stats().overflowed, 3);
    assert_eq!(w.groups(), 1, "the groups of the expired window were freed");
}

#[test]
fn a_real_overflow_label_is_not_the_overflow_group() {
    let mut w = Windows::new(spec().max_groups_per_tenant(2)).unwrap();
    let events = [ev(1_000, OVERFLOW, 1.0), ev(1_000, "b", 1.0), ev(1_000, "c", 1.0), ev(30_000, "b", 0.0)];
    let (results, _) = run(&mut w, &events, 0);
    let mut got: Vec<_> = results
        .iter()
        .filter(|r| r.start == t(0))
        .map(|r| (r.group.labels[0].1.to_string(), r.group.overflow, r.events))
        .collect();
    got.sort();
    assert_eq!(got, [(OVERFLOW.into(), false, 1), (OVERFLOW.into(), true, 1), ("b".into(), false, 1)]);
    assert_eq!(w.stats().overflowed, 1);
}

#[test]
fn weights_scale_counts_and_sums_but_not_extremes() {
    let mut w = Windows::new(spec()).unwrap();
    let mut batch = EventBatch::new();
    for e in [ev(1_000, "a", 2.0), ev(2_000, "a", 4.0), ev(30_000, "a", 0.0)] {
        batch.push(&e);
    }
    let mut late = Vec::new();
    let now = t(0);
    assert_eq!(w.push_weighted(&batch, &[1.0], now, &mut late), Err(PushError::WeightCount { events: 3, weights: 1 }));
    for bad in [f64::NAN, 0.0, -1.0, f64::INFINITY] {
        let err = w.push_weighted(&batch, &[1.0, bad, 1.0], now, &mut late).unwrap_err();
        assert!(matches!(err, PushError::InvalidWeight { index: 1, .. }), "{err}");
    }
    assert_eq!(w.stats().on_time, 0, "a refused call aggregates nothing");
    w.push_weighted(&batch, &[10.0, 5.0, 1.0], now, &mut late).unwrap();
    w.advance(now);
    let r = drain(&mut w).into_iter().find(|r| r.start == t(0)).unwrap();
    assert_eq!((r.events, r.count), (2, 15.0));
    let s = &r.field("v").unwrap().scalar;
    assert_eq!((s.count(), s.sum(), s.min(), s.max()), (15.0, Some(40.0), Some(2.0), Some(4.0)));
    assert_eq!(s.mean(), Some(40.0 / 15.0));
    let g = w.resolve("acme", "metrics", &["a"]);
    assert!(matches!(w.push_resolved(g, t(31_000), &[1.0], -2.0, now), Err(PushError::InvalidWeight { .. })));
}

#[test]
fn geohash_cells_group_events_for_heatmaps() {
    let mut w = Windows::new(spec().geo_cell(5)).unwrap();
    let at = |lat, lon| ev(1_000, "a", 1.0).with_geo(edgestream::event::GeoPoint::new(lat, lon));
    let (results, _) = run(
        &mut w,
        &[at(42.6, -5.6), at(42.6001, -5.6001), at(57.649, 10.407), ev(2_000, "a", 1.0), ev(30_000, "a", 0.0)],
        0,
    );
    let cells: BTreeMap<String, u64> = results
        .iter()
        .map(|r| {
            assert_eq!((&*r.group.labels[0].0, &*r.group.labels[1].0), ("g", "geohash"));
            (r.group.labels[1].1.to_string(), r.events)
        })
        .collect();
    assert_eq!(cells, BTreeMap::from([("".into(), 1), ("ezs42".into(), 2), ("u4pru".into(), 1)]));
    assert!(matches!(Windows::new(spec().geo_cell(13)), Err(SpecError::GeoCell(13))));
}

#[test]
fn quiet_groups_make_room_and_are_freed_after_their_ttl() {
    let spec = spec().max_groups_per_tenant(10).idle_timeout(Some(Span::from_secs(1))).group_ttl(Span::from_secs(30));
    let mut w = Windows::new(spec).unwrap();
    // 100 rounds of 10 new groups each; between rounds the stream is idle,
    // so every window closes and expires, and its groups go idle, then
    // are freed 30 s (of event time) later.
    for round in 0..100i64 {
        let now = round * 100_000;
        let events: Vec<Event> = (0..10).map(|i| ev(now, &format!("r{round}-g{i}"), 1.0)).collect();
        run(&mut w, &events, now);
        assert_eq!(w.groups(), 10, "round {round}");
        w.advance(t(now + 50_000));
        assert_eq!(w.groups(), 10, "round {round}: idle, kept for their TTL");
        w.advance(t(now + 90_000));
        drain(&mut w);
        assert_eq!(w.groups(), 0, "round {round}: all quiet groups freed");
    }
    assert_eq!(w.stats().overflowed, 0);
    let mut bytes = Vec::new();
    w.snapshot(&mut bytes);
    assert!(bytes.len() < 4_000, "a snapshot holds live groups only: {} bytes", bytes.len());
    let restored = Windows::restore(&bytes).unwrap();
    assert_eq!(restored.groups(), w.groups());
}

#[test]
fn resolved_groups_give_the_same_results_as_pushed_events() {
    let events = [ev(1_000, "a", 1.0), ev(2_000, "b", 5.0), ev(3_000, "a", -2.0), ev(30_000, "a", 0.0)];
    let mut pushed = Windows::new(spec()).unwrap();
    let expected = summary(&run(&mut pushed, &events, 0).0);
    let mut resolved = Windows::new(spec()).unwrap();
    for e in &events {
        let g = resolved.resolve("acme", "metrics", &[e.dim("g").unwrap()]);
        assert_eq!(resolved.push_resolved(g, e.ts, &[e.field("v").unwrap()], 1.0, t(0)), Ok(Placement::OnTime));
    }
    resolved.advance(t(0));
    assert_eq!(summary(&drain(&mut resolved)), expected);
    assert_eq!(resolved.stats(), pushed.stats());
}

#[test]
fn a_resolved_batch_stops_at_a_stale_group_and_goes_on_from_it() {
    let mut w = Windows::new(spec().group_ttl(Span::ZERO)).unwrap();
    let a = w.resolve("acme", "metrics", &["a"]);
    let b = w.resolve("acme", "metrics", &["b"]);
    let mut batch = ResolvedBatch::for_spec(w.spec());
    batch.push(a, t(1_000), &[1.0]);
    batch.push(b, t(20_000), &[1.0]);
    w.push_resolved_batch(&mut batch, t(0), &mut Vec::new()).unwrap();
    assert_eq!(batch.pushed(), 2);
    w.advance(t(0)); // [0, 10 s) closes and expires: group a is freed
    drain(&mut w);
    assert!(!w.is_current(a) && w.is_current(b));
    let before = w.stats().clone();
    batch.clear();
    batch.push(b, t(21_000), &[2.0]);
    batch.push(a, t(22_000), &[3.0]);
    batch.push(b, t(1_000), &[4.0]); // too late
    batch.push(a, t(23_000), &[5.0]);
    let mut late = Vec::new();
    assert_eq!(w.push_resolved_batch(&mut batch, t(0), &mut late), Err(PushError::StaleGroup { index: 1 }));
    assert_eq!(batch.pushed(), 1, "the event before the stale one is aggregated");
    assert_eq!((w.stats().on_time - before.on_time, late.len()), (1, 0), "the ones after it are not");
    // Pushing again without mending stops at the same event, adding nothing.
    assert_eq!(w.push_resolved_batch(&mut batch, t(0), &mut late), Err(PushError::StaleGroup { index: 1 }));
    assert_eq!(w.stats().on_time - before.on_time, 1);
    let again = w.resolve("acme", "metrics", &["a"]);
    assert_eq!(batch.replace_group(a, again), 2);
    assert_eq!(batch.group(3), Some(again));
    w.push_resolved_batch(&mut batch, t(0), &mut late).unwrap();
    assert_eq!(late, [2], "late indexes are the whole batch's");
    assert_eq!((w.stats().on_time - before.on_time, w.stats().late_dropped - before.late_dropped), (3, 1));
    assert_eq!(batch.pushed(), 4);
    w.push_resolved_batch(&mut batch, t(0), &mut late).unwrap();
    assert_eq!(w.stats().on_time - before.on_time, 3, "a pushed batch pushes nothing again");
    w.close_all(t(0));
    let results = summary(&drain(&mut w));
    assert_eq!(results[&("a".into(), 20_000)].1, 2);
    assert_eq!(results[&("b".into(), 20_000)].1, 2, "the event of the first push and one of the second");
}

/// The retry loop a host runs: resolve the stale event's group again.
fn push_mending(w: &mut Windows, batch: &mut ResolvedBatch, names: &[String], late: &mut Vec<usize>) -> usize {
    let mut retries = 0;
    while let Err(e) = w.push_resolved_batch(batch, t(0), late) {
        let PushError::StaleGroup { index } = e else { panic!("{e}") };
        let stale = batch.group(index).unwrap();
        let fresh = w.resolve("acme", "metrics", &[&names[index]]);
        assert!(batch.replace_group(stale, fresh) > 0);
        retries += 1;
    }
    retries
}

#[test]
fn resolved_batches_end_at_the_group_cap_and_name_late_events() {
    // Cap 1: resolving a group evicts the other idle one, so a batch of
    // fresh handles of several groups goes stale as it is mended. The
    // retry loop must still end, with every event placed once.
    let mut w = Windows::new(spec().max_groups_per_tenant(1).group_ttl(Span::ZERO)).unwrap();
    let mut seed = 7u64;
    let mut fill = |w: &mut Windows, n: i64, from_ms: i64| {
        let (mut batch, mut names) = (ResolvedBatch::for_spec(w.spec()), Vec::new());
        for i in 0..n {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let name = format!("g{}", seed >> 61);
            let handle = w.resolve("acme", "metrics", &[&name]);
            names.push(name);
            // Every 200th event far too late (once the watermark moved).
            let ms = if i % 200 == 199 { 0 } else { from_ms + i * 10 };
            batch.push(handle, t(ms), &[1.0]);
        }
        (batch, names)
    };
    let (mut first, names) = fill(&mut w, 1_000, 20_000);
    let mut late = Vec::new();
    let mut retries = push_mending(&mut w, &mut first, &names, &mut late);
    w.advance(t(0)); // the watermark passes 27 s
    let (mut second, names) = fill(&mut w, 2_500, 40_000);
    retries += push_mending(&mut w, &mut second, &names, &mut late);
    assert!(retries > 0, "handles went stale");
    assert_eq!(second.pushed(), 2_500);
    let expected_late: Vec<usize> = (0..12).map(|k| 200 * k + 199).collect();
    assert_eq!(late, expected_late, "late indexes of the second batch");
    let s = w.stats().clone();
    assert_eq!((s.on_time + s.late_accepted, s.late_dropped), (3_500 - 12, 12));
    w.close_all(t(0));
    let events: u64 = drain(&mut w).iter().map(|r| r.events).sum();
    assert_eq!(events, 3_500 - 12, "every placed event is in a result once");
}

#[test]
fn resolved_batch_values_weights_and_overflow() {
    let mut w = Windows::new(spec().field(FieldSpec::new("w")).max_groups_per_tenant(1)).unwrap();
    let a = w.resolve("acme", "metrics", &["a"]);
    let mut batch = ResolvedBatch::with_capacity(2, 4);
    assert_eq!(batch.fields(), w.spec().fields.len());
    batch.push(a, t(1_000), &[1.0, 10.0, 99.0]); // the extra value is ignored
    w.push_resolved_batch(&mut batch, t(0), &mut Vec::new()).unwrap();
    // a is live: b, past the cap, goes to the overflow group.
    let over = w.resolve("acme", "metrics", &["b"]);
    batch.clear();
    batch.push(a, t(2_000), &[3.0]); // no value for w
    batch.push(a, t(3_000), &[f64::NAN, 20.0]); // NaN: no value for v
    assert_eq!(
        batch.push_weighted(a, t(4_000), &[1.0, 1.0], -1.0),
        Err(PushError::InvalidWeight { index: 2, weight: -1.0 })
    );
    assert_eq!(batch.len(), 2, "a refused event is not added");
    batch.push_weighted(a, t(4_000), &[5.0, 30.0], 2.0).unwrap();
    batch.push(over, t(5_000), &[7.0, 7.0]);
    w.push_resolved_batch(&mut batch, t(0), &mut Vec::new()).unwrap();
    assert_eq!((w.stats().on_time, w.stats().overflowed), (5, 1));
    w.close_all(t(0));
    let results = drain(&mut w);
    let a_window = results.iter().find(|r| r.group.labels[0].1.as_ref() == "a").unwrap();
    assert_eq!((a_window.events, a_window.count), (4, 5.0));
    let (v, x) = (&a_window.field("v").unwrap().scalar, &a_window.field("w").unwrap().scalar);
    assert_eq!((v.count(), v.sum(), v.min(), v.max()), (4.0, Some(14.0), Some(1.0), Some(5.0)));
    assert_eq!((x.count(), x.sum(), x.min(), x.max()), (4.0, Some(90.0), Some(10.0), Some(30.0)));
    let overflow = results.iter().find(|r| r.group.labels[0].1.as_ref() == OVERFLOW).unwrap();
    assert_eq!(overflow.events, 1);
}

#[test]
fn idle_groups_keep_their_handles_and_give_way_at_the_cap() {
    let mut w = Windows::new(spec().max_groups_per_tenant(2)).unwrap();
    let a = w.resolve("acme", "metrics", &["a"]);
    let b = w.resolve("acme", "metrics", &["b"]);
    assert_eq!(w.push_resolved(a, t(1_000), &[1.0], 1.0, t(0)), Ok(Placement::OnTime));
    assert_eq!(w.push_resolved(b, t(20_000), &[1.0], 1.0, t(0)), Ok(Placement::OnTime));
    w.advance(t(0)); // [0, 10 s) closes and expires: a is idle, not freed
    drain(&mut w);
    assert_eq!(w.groups(), 2);
    assert_eq!(w.push_resolved(a, t(21_000), &[2.0], 1.0, t(0)), Ok(Placement::OnTime), "same handle");
    w.advance(t(0));
    // b and a both hold [20 s, 30 s); c evicts neither and overflows.
    let c = w.resolve("acme", "metrics", &["c"]);
    assert_eq!(w.stats().overflowed, 0, "events overflow, resolving does not");
    assert_eq!(w.push_resolved(c, t(22_000), &[3.0], 1.0, t(0)), Ok(Placement::OnTime));
    assert_eq!(w.stats().overflowed, 1);
    // `later` overflows too (its handle is the overflow group's). Once
    // [20 s, 30 s) expires, a and b are idle, and a new group evicts the
    // longest idle group of its tenant instead of overflowing.
    let later = w.resolve("acme", "metrics", &["later"]);
    assert_eq!(w.push_resolved(later, t(45_000), &[1.0], 1.0, t(0)), Ok(Placement::OnTime));
    w.advance(t(0));
    let d = w.resolve("acme", "metrics", &["d"]);
    assert_eq!(w.stats().overflowed, 2, "later itself overflowed; d did not");
    assert_eq!(w.push_resolved(d, t(46_000), &[1.0], 1.0, t(0)), Ok(Placement::OnTime));
    let stale = [a, b].iter().filter(|h| w.push_resolved(**h, t(47_000), &[1.0], 1.0, t(0)).is_err()).count();
    assert_eq!(stale, 1, "exactly one of a and b was evicted");
    // Handles belong to one operator: a restored one refuses them.
    let mut bytes = Vec::new();
    w.snapshot(&mut bytes);
    let mut restored = Windows::restore(&bytes).unwrap();
    assert_eq!(restored.push_resolved(d, t(47_000), &[1.0], 1.0, t(0)), Err(PushError::StaleGroup { index: 0 }));
    let d = restored.resolve("acme", "metrics", &["d"]);
    assert_eq!(restored.push_resolved(d, t(47_000), &[1.0], 1.0, t(0)), Ok(Placement::OnTime));
}

#[test]
fn handles_of_freed_groups_are_refused() {
    let mut w = Windows::new(spec().group_ttl(Span::ZERO)).unwrap();
    let a = w.resolve("acme", "metrics", &["a"]);
    assert_eq!(w.push_resolved(a, t(1_000), &[1.0], 1.0, t(0)), Ok(Placement::OnTime));
    let b = w.resolve("acme", "metrics", &["b"]);
    assert_eq!(w.push_resolved(b, t(20_000), &[1.0], 1.0, t(0)), Ok(Placement::OnTime));
    w.advance(t(0)); // [0, 10 s) closes and expires: group a is freed
    drain(&mut w);
    assert_eq!(w.push_resolved(a, t(21_000), &[1.0], 1.0, t(0)), Err(PushError::StaleGroup { index: 0 }));
    let c = w.resolve("acme", "metrics", &["c"]); // may reuse a's id
    assert_ne!(a, c);
    assert_eq!(w.push_resolved(c, t(1_000), &[f64::NAN], 1.0, t(0)), Ok(Placement::Dropped), "too late");
    assert_eq!(w.stats().late_dropped, 1);
}

#[test]
fn missing_group_dims_and_fields() {
    let mut w = Windows::new(spec()).unwrap();
    let no_dim = Event::new("acme", "metrics", t(1_000)).with_field("v", 2.0);
    let no_field = Event::new("acme", "metrics", t(2_000)).with_dim("g", "a");
    let (results, _) = run(&mut w, &[no_dim, no_field, ev(30_000, "a", 0.0)], 0);
    let s = summary(&results);
    assert_eq!(s[&("".into(), 0)].1, 1);
    let a = results.iter().find(|r| &*r.group.labels[0].1 == "a").unwrap();
    assert_eq!((a.events, a.fields[0].scalar.is_empty()), (1, true), "counted, but no value for v");
}

#[test]
fn quantiles_are_reported() {
    let mut w = Windows::new(spec().field(FieldSpec::new("v").with_quantiles([0.5, 0.99]))).unwrap();
    let events: Vec<Event> =
        (1..=100).map(|i| ev(i * 10, "a", f64::from(i as i32))).chain([ev(30_000, "a", 0.0)]).collect();
    let (results, _) = run(&mut w, &events, 0);
    let r = results.iter().find(|r| r.start == t(0)).unwrap();
    let q = &r.fields[1].quantiles;
    assert_eq!(q.len(), 2);
    assert!((q[0].1 - 50.0).abs() <= 0.5, "{q:?}");
    assert!((q[1].1 - 99.0).abs() <= 1.0, "{q:?}");
    assert!(r.fields[0].quantiles.is_empty());
}

#[test]
fn machine_temperature_hourly_aggregates_match_an_independent_computation() {
    let path =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/timeseries/nab_machine_temperature_system_failure.csv");
    let Ok(text) = std::fs::read_to_string(path) else {
        panic!("{path} not found: the real-data fixtures live in ../shared/data");
    };
    let points: Vec<(Timestamp, f64)> = text
        .lines()
        .skip(1)
        .map(|l| {
            let (ts, v) = l.split_once(',').unwrap();
            (format!("{}Z", ts.replace(' ', "T")).parse().unwrap(), v.parse().unwrap())
        })
        .collect();
    assert_eq!(points.len(), 22_695);
    let spec = WindowSpec::new(Span::from_hours(1))
        .field(FieldSpec::new("temp").with_quantiles([0.99]))
        .out_of_orderness(Span::from_hours(2))
        .idle_timeout(None);
    let mut w = Windows::new(spec).unwrap();
    let mut results = Vec::new();
    let mut late = Vec::new();
    for chunk in points.chunks(500) {
        let mut batch = EventBatch::new();
        for &(ts, v) in chunk {
            batch.push(&Event::new("plant", "machine", ts).with_field("temp", v));
        }
        w.push(&batch, ts_now(), &mut late);
        w.advance(ts_now());
        results.extend(drain(&mut w));
    }
    // The idle timeout is off: move the watermark with a far-future event.
    let mut flush = EventBatch::new();
    flush.push(&Event::new("plant", "machine", t(4_000_000_000_000)));
    w.push(&flush, ts_now(), &mut late);
    w.advance(ts_now());
    results.extend(drain(&mut w).into_iter().filter(|r| r.events > 0 && !r.fields[0].scalar.is_empty()));
    assert!(late.is_empty(), "the one backward step is within 2 h");

    // Independently: bucket by hour, sort, compute.
    let mut hours: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for &(ts, v) in &points {
        hours.entry(ts.as_secs().div_euclid(3_600)).or_default().push(v);
    }
    assert_eq!(results.len(), hours.len());
    for r in &results {
        let values = &hours[&r.start.as_secs().div_euclid(3_600)];
        let s = &r.fields[0].scalar;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert_eq!((s.min(), s.max()), (Some(min), Some(max)));
        assert!((s.mean().unwrap() - mean).abs() < 1e-9 * mean.abs(), "{} vs {mean}", s.mean().unwrap());
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let p99 = sorted[((0.99 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        let got = r.fields[0].quantiles[0].1;
        assert!((got - p99).abs() <= p99.abs() * 0.01 + 0.002, "p99 {got} vs {p99}");
    }
    println!("{} hourly windows checked against an independent computation", results.len());
}

#[test]
fn restore_refuses_bad_bytes() {
    use edgestream::window::SnapshotError;
    assert!(matches!(Windows::restore(&[]), Err(SnapshotError::Malformed(_))));
    assert!(matches!(Windows::restore(&[7]), Err(SnapshotError::Version(7))));
    let mut w = Windows::new(spec().field(FieldSpec::new("v").with_quantiles([0.5]))).unwrap();
    run(&mut w, &[ev(1_000, "a", 1.0), ev(2_000, "b", 2.0)], 0);
    let mut bytes = Vec::new();
    w.snapshot(&mut bytes);
    for cut in [1, bytes.len() / 2, bytes.len() - 1] {
        assert!(Windows::restore(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    if std::env::var_os("WRITE_FUZZ_SEEDS").is_some() {
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/window_snapshot/two_groups.bin"), &bytes)
            .unwrap();
    }
    let restored = Windows::restore(&bytes).unwrap();
    let mut again = Vec::new();
    restored.snapshot(&mut again);
    assert_eq!(again, bytes, "snapshot of a restore is the same snapshot");
}

#[test]
fn a_field_reports_only_the_aggregates_it_keeps() {
    let keep = Aggregates::SUM | Aggregates::MAX;
    let spec = |keep: Aggregates| {
        WindowSpec::new(Span::from_secs(10))
            .group_by(["g"])
            .field(FieldSpec::new("v").aggregates(keep))
            .field(FieldSpec::new("w").aggregates(Aggregates::LAST))
            .out_of_orderness(Span::from_secs(2))
            .idle_timeout(None)
    };
    let events: Vec<Event> = (0..40)
        .map(|i| ev(i * 700, if i % 3 == 0 { "a" } else { "b" }, f64::from(i as i32 % 7)).with_field("w", -(i as f64)))
        .collect();
    let (mut some, mut all) = (Windows::new(spec(keep)).unwrap(), Windows::new(spec(Aggregates::ALL)).unwrap());
    // Half, then a snapshot and restore of the subset operator, then the rest.
    let (first, rest) = events.split_at(20);
    let mut got = run(&mut some, first, 0).0;
    let mut want = run(&mut all, first, 0).0;
    let mut bytes = Vec::new();
    some.snapshot(&mut bytes);
    let mut some = Windows::restore(&bytes).unwrap();
    got.extend(run(&mut some, rest, 0).0);
    want.extend(run(&mut all, rest, 0).0);
    got.extend(run(&mut some, &[ev(100_000, "end", 0.0)], 0).0);
    want.extend(run(&mut all, &[ev(100_000, "end", 0.0)], 0).0);
    assert_eq!(got.len(), want.len());
    assert!(got.len() >= 6, "{} results", got.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            (&g.group, g.start, g.revision, g.events, g.count),
            (&w.group, w.start, w.revision, w.events, w.count)
        );
        let (gv, wv) = (&g.fields[0].scalar, &w.fields[0].scalar);
        assert_eq!(gv.kept(), keep);
        assert_eq!((gv.count(), gv.sum(), gv.max()), (wv.count(), wv.sum(), wv.max()));
        assert_eq!((gv.min(), gv.mean(), gv.last()), (None, None, None), "not kept");
        let (gw, ww) = (&g.fields[1].scalar, &w.fields[1].scalar);
        assert_eq!((gw.count(), gw.last()), (ww.count(), ww.last()));
        assert_eq!((gw.sum(), gw.max()), (None, None));
    }
}

#[test]
fn snapshot_of_ten_thousand_groups_is_compact() {
    let mut w = Windows::new(spec()).unwrap();
    let events: Vec<Event> = (0..10_000).map(|i| ev(1_000, &format!("dev-{i:05}"), f64::from(i))).collect();
    run(&mut w, &events, 0);
    let mut bytes = Vec::new();
    w.snapshot(&mut bytes);
    println!("10k groups, one open window each: {} bytes", bytes.len());
    assert!(bytes.len() < 10_000 * 120, "{} bytes", bytes.len());
}

fn ts_now() -> Timestamp {
    t(0)
}

fn events_strategy() -> impl Strategy<Value = Vec<(i64, u8, i32)>> {
    proptest::collection::vec((0i64..60_000, 0u8..4, -1_000i32..1_000), 1..80)
}

fn run_all(events: &[(i64, u8, i32)], order: &[usize], chunks: usize) -> Summary {
    let mut w = Windows::new(spec()).unwrap();
    let mut results = Vec::new();
    for part in order.chunks(order.len().div_ceil(chunks.max(1)).max(1)) {
        let evs: Vec<Event> = part
            .iter()
            .map(|&i| {
                let (ms, g, v) = events[i];
                ev(ms, &format!("g{g}"), f64::from(v))
            })
            .collect();
        results.extend(run(&mut w, &evs, 0).0);
    }
    results.extend(run(&mut w, &[ev(1_000_000, "end", 0.0)], 0).0);
    summary(&results)
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("tests/proptest-regressions/windows.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn order_within_the_bound_does_not_change_results(
        events in events_strategy(),
        swaps in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..40),
        chunks in 1usize..5,
    ) {
        // Sorted order, then random swaps limited to events less than the
        // out-of-orderness bound (2 s) apart.
        let mut sorted: Vec<usize> = (0..events.len()).collect();
        sorted.sort_by_key(|&i| events[i].0);
        let mut shuffled = sorted.clone();
        for (a, b) in swaps {
            let (i, j) = (a.index(shuffled.len()), b.index(shuffled.len()));
            let (lo, hi) = (i.min(j), i.max(j));
            let span = shuffled[lo..=hi].iter().map(|&k| events[k].0);
            if span.clone().max().unwrap() - span.min().unwrap() < 2_000 {
                shuffled.swap(i, j);
            }
        }
        prop_assert_eq!(run_all(&events, &shuffled, chunks), run_all(&events, &sorted, 1));
    }

    #[test]
    fn snapshot_restore_continue_equals_an_uninterrupted_run(
        events in events_strategy(),
        chunks in 2usize..6,
        at in any::<prop::sample::Index>(),
        update_mode in any::<bool>(),
    ) {
        let spec = spec()
            .allowed_lateness(Span::from_secs(5))
            .field(FieldSpec::new("v").with_quantiles([0.5, 0.9]))
            .emit(if update_mode { EmitMode::OnUpdate } else { EmitMode::OnClose });
        let parts: Vec<Vec<Event>> = events
            .chunks(events.len().div_ceil(chunks).max(1))
            .map(|c| c.iter().map(|&(ms, g, v)| ev(ms, &format!("g{g}"), f64::from(v))).collect())
            .chain([vec![ev(1_000_000, "end", 0.0)]])
            .collect();
        let stop = at.index(parts.len());
        let describe = |results: Vec<WindowResult>| -> Vec<String> {
            results.iter().map(|r| format!("{}|{}|{}|{}|{}|{:?}|{:?}", r.group.labels[0].1, r.start, r.revision, r.is_final, r.events,
                r.fields[0].scalar, r.fields[1].quantiles)).collect()
        };
        let mut straight = Windows::new(spec.clone()).unwrap();
        let mut expected = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            expected.extend(describe(run(&mut straight, part, i as i64 * 1_000).0));
        }
        let mut first = Windows::new(spec).unwrap();
        let mut got = Vec::new();
        for (i, part) in parts.iter().enumerate().take(stop) {
            got.extend(describe(run(&mut first, part, i as i64 * 1_000).0));
        }
        let mut bytes = Vec::new();
        first.snapshot(&mut bytes);
        let mut resumed = Windows::restore(&bytes).unwrap();
        prop_assert_eq!(resumed.stats(), first.stats());
        for (i, part) in parts.iter().enumerate().skip(stop) {
            got.extend(describe(run(&mut resumed, part, i as i64 * 1_000).0));
        }
        prop_assert_eq!(got, expected);
        prop_assert_eq!(resumed.stats(), straight.stats());
    }

    #[test]
    fn a_resolved_batch_equals_pushing_its_events_one_at_a_time(
        events in proptest::collection::vec((0i64..60_000, 0u8..6, -1_000i32..1_000, 1u8..4, any::<bool>()), 1..120),
        chunks in 1usize..6,
        one_field in any::<bool>(),
    ) {
        // Late events within the lateness and past it; weights; values
        // missing now and then, and a second field often without value;
        // groups freed when idle (TTL zero), so that handles go stale
        // between chunks. With one field, the field keeps only count, sum,
        // min and max: the operator's fixed slot layout.
        let mut spec = spec().allowed_lateness(Span::from_secs(5)).group_ttl(Span::ZERO);
        if one_field {
            spec.fields = vec![FieldSpec::new("v").aggregates(Aggregates::SUM | Aggregates::MIN | Aggregates::MAX)];
        } else {
            spec = spec.field(FieldSpec::new("x").with_quantiles([0.5]));
        }
        let fields = spec.fields.len();
        let name = |g: u8| format!("g{g}");
        let mut single = Windows::new(spec.clone()).unwrap();
        let mut batched = Windows::new(spec).unwrap();
        let (mut single_handles, mut batched_handles) = (BTreeMap::new(), BTreeMap::new());
        let (mut expected, mut got) = (Vec::new(), Vec::new());
        let (mut expected_late, mut got_late) = (Vec::new(), Vec::new());
        for (c, part) in events.chunks(events.len().div_ceil(chunks)).enumerate() {
            let values = |&(_, _, v, _, has_x): &(i64, u8, i32, u8, bool)| {
                let x = if has_x { f64::from(v) / 2.0 } else { f64::NAN };
                [if v % 7 == 0 { f64::NAN } else { f64::from(v) }, x]
            };
            for (i, e) in part.iter().enumerate() {
                let h = *single_handles.entry(e.1).or_insert_with(|| single.resolve("acme", "metrics", &[&name(e.1)]));
                let placed = match single.push_resolved(h, t(e.0), &values(e), f64::from(e.3), t(0)) {
                    Err(PushError::StaleGroup { index: 0 }) => {
                        let h = single.resolve("acme", "metrics", &[&name(e.1)]);
                        single_handles.insert(e.1, h);
                        single.push_resolved(h, t(e.0), &values(e), f64::from(e.3), t(0)).unwrap()
                    }
                    placed => placed.unwrap(),
                };
                if placed == Placement::Dropped {
                    expected_late.push((c, i));
                }
            }
            let mut batch = ResolvedBatch::new(fields);
            for e in part {
                let h = *batched_handles.entry(e.1).or_insert_with(|| batched.resolve("acme", "metrics", &[&name(e.1)]));
                batch.push_weighted(h, t(e.0), &values(e), f64::from(e.3)).unwrap();
            }
            let mut late = Vec::new();
            while let Err(e) = batched.push_resolved_batch(&mut batch, t(0), &mut late) {
                let PushError::StaleGroup { index } = e else { panic!("{e}") };
                let g = part[index].1;
                let h = batched.resolve("acme", "metrics", &[&name(g)]);
                let old = batched_handles.insert(g, h).unwrap();
                prop_assert!(batch.replace_group(old, h) > 0);
            }
            got_late.extend(late.into_iter().map(|i| (c, i)));
            single.advance(t(0));
            batched.advance(t(0));
            expected.extend(drain(&mut single));
            got.extend(drain(&mut batched));
        }
        single.close_all(t(0));
        batched.close_all(t(0));
        expected.extend(drain(&mut single));
        got.extend(drain(&mut batched));
        prop_assert_eq!(got_late, expected_late);
        prop_assert_eq!(batched.stats(), single.stats());
        // The same results, in the same order up to the order of the
        // groups within one window's emission.
        let describe = |results: Vec<WindowResult>| -> Vec<String> {
            let mut lines: Vec<String> = results.iter().map(|r| {
                let fields: Vec<_> = r.fields.iter().map(|f| (f.scalar, &f.quantiles)).collect();
                format!("{}|{}|{}|{}|{}|{}|{:?}", r.start, r.group.labels[0].1, r.revision, r.is_final, r.events, r.count, fields)
            }).collect();
            lines.sort();
            lines
        };
        prop_assert_eq!(describe(got), describe(expected));
    }

    #[test]
    fn events_decoded_with_shared_dims_group_as_events_pushed_one_by_one(
        events in proptest::collection::vec((0usize..2, 0usize..2, 0usize..5, 0i64..30_000, -100i32..100), 1..150),
        bodies in 1usize..4,
        cap in prop_oneof![Just(3usize), Just(1_000)],
    ) {
        // The Protobuf decoder lets events that repeat an earlier event's
        // dims share them, and the operator then resolves their group once:
        // events of other tenants or streams with the same dims, dims
        // without a group-by key, and groups past the cap must still come
        // out as when every event has dims of its own.
        let dims: [&[(&str, &str)]; 5] = [
            &[("region", "eu"), ("device", "d-1"), ("type", "pump")],
            &[("region", "eu"), ("device", "d-2"), ("type", "pump")],
            &[("region", "us"), ("device", "d-1"), ("type", "meter")],
            &[("device", "d-3"), ("type", "meter")],
            &[("region", "us"), ("region", "eu"), ("device", "d-4")],
        ];
        let spec = WindowSpec::new(Span::from_secs(10))
            .group_by(["region", "device"])
            .field(FieldSpec::new("v"))
            .out_of_orderness(Span::from_secs(60))
            .max_groups_per_tenant(cap)
            .idle_timeout(None);
        let (mut pushed, mut decoded) = (Windows::new(spec.clone()).unwrap(), Windows::new(spec).unwrap());
        let (mut got, mut expected) = (Vec::new(), Vec::new());
        let mut decoded_batch = EventBatch::new();
        for part in events.chunks(events.len().div_ceil(bodies)) {
            let mut batch = EventBatch::new();
            for &(tenant, stream, d, ms, v) in part {
                let mut e = Event::new(["acme", "globex"][tenant], ["metrics", "logs"][stream], t(ms)).with_field("v", f64::from(v));
                for (k, v) in dims[d] {
                    e = e.with_dim(*k, *v);
                }
                batch.push(&e);
            }
            let mut wire = Vec::new();
            Format::Protobuf.encode(&batch, &mut wire);
            Format::Protobuf.decode_into(&wire.into(), &Limits::default(), &mut decoded_batch).unwrap();
            prop_assert_eq!(&decoded_batch, &batch);
            // The reference: one event per batch, so no event shares dims.
            let (mut late, mut decoded_late) = (Vec::new(), Vec::new());
            for (i, e) in batch.iter().enumerate() {
                let mut one = EventBatch::new();
                one.push(&e.to_event());
                let mut l = Vec::new();
                pushed.push(&one, t(0), &mut l);
                late.extend(l.iter().map(|_| i));
            }
            decoded.push(&decoded_batch, t(0), &mut decoded_late);
            prop_assert_eq!(late, decoded_late);
        }
        pushed.close_all(t(0));
        decoded.close_all(t(0));
        expected.extend(drain(&mut pushed));
        got.extend(drain(&mut decoded));
        prop_assert_eq!(decoded.stats(), pushed.stats());
        let describe = |results: Vec<WindowResult>| -> Vec<String> {
            let mut lines: Vec<String> = results.iter().map(|r| format!("{}|{}|{}|{:?}|{}|{:?}",
                r.start, r.group.tenant, r.group.stream, r.group.labels, r.events, r.fields[0].scalar)).collect();
            lines.sort();
            lines
        };
        prop_assert_eq!(describe(got), describe(expected));
    }

    #[test]
    fn groups_of_any_number_of_keys_match_a_plain_model(
        events in proptest::collection::vec(
            (0usize..2, 0usize..2, proptest::collection::vec(prop::option::of(0usize..3), 3), 0i64..40_000, -50i32..50),
            1..200,
        ),
        keys in 0usize..4,
        batch_len in 1usize..40,
    ) {
        // Zero to three group-by keys (up to two pack into the index's
        // 128-bit keys, three do not), values often missing (grouped as
        // ""), two tenants and streams, several events per batch: each
        // group's windows match a map keyed by the strings themselves.
        // The keys share their values, so a value read for the wrong key
        // names another group.
        const KEYS: [&str; 3] = ["region", "device", "type"];
        let values = |_: usize, v: usize| format!("v{v}");
        let spec = WindowSpec::new(Span::from_secs(10))
            .group_by(KEYS[..keys].iter().copied())
            .field(FieldSpec::new("v"))
            .out_of_orderness(Span::from_secs(60))
            .idle_timeout(None);
        let mut w = Windows::new(spec).unwrap();
        let mut model: BTreeMap<GroupWindow, (u64, f64)> = BTreeMap::new();
        let mut late = Vec::new();
        for part in events.chunks(batch_len) {
            let mut batch = EventBatch::new();
            for (tenant, stream, dims, ms, v) in part {
                let (tenant, stream) = (["acme", "globex"][*tenant], ["metrics", "logs"][*stream]);
                let mut e = Event::new(tenant, stream, t(*ms)).with_field("v", f64::from(*v));
                for (k, d) in dims.iter().enumerate() {
                    if let Some(d) = d {
                        e = e.with_dim(KEYS[k], values(k, *d));
                    }
                }
                batch.push(&e);
                let labels = (0..keys).map(|k| dims[k].map_or(String::new(), |d| values(k, d))).collect();
                let entry = model.entry((tenant.into(), stream.into(), labels, ms.div_euclid(10_000) * 10_000)).or_default();
                entry.0 += 1;
                entry.1 += f64::from(*v);
            }
            w.push(&batch, t(0), &mut late);
        }
        prop_assert!(late.is_empty());
        w.close_all(t(0));
        let got: BTreeMap<_, _> = drain(&mut w)
            .into_iter()
            .map(|r| {
                let labels = r.group.labels.iter().map(|(_, v)| v.to_string()).collect();
                let key = (r.group.tenant.to_string(), r.group.stream.to_string(), labels, r.start.as_millis());
                (key, (r.events, r.fields[0].scalar.sum().unwrap_or(0.0)))
            })
            .collect();
        prop_assert_eq!(got, model);
    }

    #[test]
    fn merging_shard_results_equals_one_pass(events in events_strategy(), shards in 1usize..4) {
        let one = run_all(&events, &(0..events.len()).collect::<Vec<_>>(), 1);
        // Each shard aggregates its own events; merging their Scalars per
        // (group, window) must give the one-pass state.
        let mut merged: BTreeMap<(String, i64), Scalar> = BTreeMap::new();
        for shard in 0..shards {
            let mut w = Windows::new(spec()).unwrap();
            let mine: Vec<Event> = events
                .iter()
                .enumerate()
                .filter(|(i, _)| i % shards == shard)
                .map(|(_, &(ms, g, v))| ev(ms, &format!("g{g}"), f64::from(v)))
                .collect();
            let mut results = run(&mut w, &mine, 0).0;
            results.extend(run(&mut w, &[ev(1_000_000, "end", 0.0)], 0).0);
            for r in results {
                merged.entry((r.group.labels[0].1.to_string(), r.start.as_millis())).or_default().merge(&r.fields[0].scalar);
            }
        }
        let merged: Summary = merged
            .into_iter()
            // Every event has the field, with weight 1: its count is the window's events.
            .map(|(k, s)| (k, (0, s.count() as u64, s.sum().unwrap(), s.min(), s.max(), s.last())))
            .collect();
        prop_assert_eq!(merged, one);
    }
}

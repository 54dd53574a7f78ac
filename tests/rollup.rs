//! Rollups: tiers built from base windows equal windows computed directly
//! at the tier's size; corrections rebuild the tiers; retention; queries.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use std::collections::BTreeMap;

use edgestream::event::{Event, EventBatch};
use edgestream::time::{Span, Timestamp};
use edgestream::window::{FieldSpec, Query, Rollup, RollupSpec, TierSpec, WindowResult, WindowSpec, Windows};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms).unwrap()
}

fn ev(ms: i64, region: &str, v: f64) -> Event {
    Event::new("acme", "m", t(ms)).with_dim("region", region).with_field("v", v)
}

fn windows(size: Span) -> Windows {
    let spec = WindowSpec::new(size)
        .group_by(["region"])
        .field(FieldSpec::new("v").with_quantiles([0.5]))
        .out_of_orderness(Span::ZERO)
        .idle_timeout(None)
        .allowed_lateness(Span::from_mins(10));
    Windows::new(spec).unwrap()
}

/// All results of `events` through `w`, flushed by a far event.
fn results(w: &mut Windows, events: &[Event]) -> Vec<WindowResult> {
    let mut batch = EventBatch::new();
    for e in events {
        batch.push(e);
    }
    batch.push(&ev(10_000_000, "flush", 0.0));
    w.push(&batch, t(0), &mut Vec::new());
    w.advance(t(0));
    std::iter::from_fn(|| w.poll_result()).filter(|r| &*r.group.labels[0].1 != "flush").collect()
}

fn spec() -> RollupSpec {
    RollupSpec::new(vec![
        TierSpec { size: Span::from_secs(1), retention: Span::from_hours(1) },
        TierSpec { size: Span::from_mins(1), retention: Span::from_hours(10) },
    ])
}

type Summary = BTreeMap<(String, i64), (u64, Option<f64>, Option<f64>, Option<f64>, Option<f64>)>;

fn minute_points(rollup: &Rollup, to: i64) -> Summary {
    let mut q = Query::new("acme", "m", t(0), t(to));
    q.resolution = Some(Span::from_mins(1));
    q.quantiles = vec![0.5];
    let answer = rollup.query(&q).unwrap();
    answer
        .series
        .iter()
        .flat_map(|s| {
            s.points.iter().map(|p| {
                (
                    (s.labels[0].1.clone(), p.start.as_millis()),
                    (p.events, p.sum, p.min, p.max, p.quantiles.first().map(|q| q.1)),
                )
            })
        })
        .collect()
}

fn direct(results: &[WindowResult]) -> Summary {
    results
        .iter()
        .map(|r| {
            let s = &r.fields[0].scalar;
            (
                (r.group.labels[0].1.to_string(), r.start.as_millis()),
                (r.events, s.sum(), s.min(), s.max(), r.fields[0].quantiles.first().map(|q| q.1)),
            )
        })
        .collect()
}

#[test]
fn spec_errors() {
    assert!(Rollup::new(RollupSpec::new(vec![])).is_err());
    let bad = |a: i64, b: i64| {
        RollupSpec::new(vec![
            TierSpec { size: Span::from_secs(a), retention: Span::from_hours(1) },
            TierSpec { size: Span::from_secs(b), retention: Span::from_hours(1) },
        ])
    };
    assert!(Rollup::new(bad(2, 3)).is_err(), "not a multiple");
    assert!(Rollup::new(bad(2, 2)).is_err(), "not larger");
    assert!(Rollup::new(bad(1, 60)).is_ok());
    assert!(Rollup::new(RollupSpec::default()).is_ok());
}

#[test]
fn corrections_rebuild_the_tiers_above() {
    let mut w = windows(Span::from_secs(1));
    let mut rollup = Rollup::new(spec()).unwrap();
    let mut batch = EventBatch::new();
    for e in [ev(500, "eu", 1.0), ev(61_000, "eu", 5.0), ev(62_000, "eu", 0.0)] {
        batch.push(&e);
    }
    w.push(&batch, t(0), &mut Vec::new());
    w.advance(t(0)); // watermark 62 s: [0 s, 1 s) is closed, within its 10 min lateness
    while let Some(r) = w.poll_result() {
        rollup.push(&r);
    }
    // A late event for [0 s, 1 s): the window is corrected, and so is minute 0.
    let mut batch = EventBatch::new();
    batch.push(&ev(700, "eu", 3.0));
    w.push(&batch, t(0), &mut Vec::new());
    w.advance(t(0));
    let correction: Vec<_> = std::iter::from_fn(|| w.poll_result()).collect();
    assert_eq!(correction.len(), 1);
    assert_eq!(correction[0].revision, 1);
    rollup.push(&correction[0]);
    rollup.push(&correction[0]); // a duplicate is ignored
    let points = minute_points(&rollup, 120_000);
    assert_eq!(points[&("eu".into(), 0)].0, 2);
    assert_eq!(points[&("eu".into(), 0)].1, Some(4.0));
    assert_eq!(rollup.stats().corrections, 1);
    assert_eq!(rollup.stats().ignored, 1);
}

#[test]
fn retention_drops_old_windows_and_queries_pick_a_tier() {
    let mut w = windows(Span::from_secs(1));
    let mut rollup = Rollup::new(spec()).unwrap();
    let events: Vec<Event> = (0..4 * 3_600).map(|s| ev(s * 1_000, "eu", 1.0)).collect();
    for r in results(&mut w, &events) {
        rollup.push(&r);
    }
    // The 1 s tier keeps one hour; the 1 min tier keeps all four.
    let per_tier = rollup.len_per_tier();
    assert!((3_599..=3_601).contains(&per_tier[0]), "{per_tier:?}");
    assert_eq!(per_tier[1], 240);
    let recent = rollup.query(&Query::new("acme", "m", t(3 * 3_600_000 + 600_000), t(4 * 3_600_000))).unwrap();
    assert_eq!(recent.resolution, Span::from_secs(1));
    let old = rollup.query(&Query::new("acme", "m", t(0), t(4 * 3_600_000))).unwrap();
    assert_eq!(old.resolution, Span::from_mins(1));
    assert_eq!(old.series[0].points.len(), 240);
    let mut missing = Query::new("acme", "m", t(0), t(1));
    missing.resolution = Some(Span::from_secs(5));
    assert!(rollup.query(&missing).is_err());
}

#[test]
fn an_offset_shifts_every_tier_boundary() {
    let spec = RollupSpec::new(vec![
        TierSpec { size: Span::from_hours(1), retention: Span::from_days(10) },
        TierSpec { size: Span::from_days(1), retention: Span::from_days(10) },
    ])
    .with_offset(Span::from_hours(-3));
    let mut rollup = Rollup::new(spec).unwrap();
    let mut w = windows(Span::from_hours(1));
    let h = |hour: i64| hour * 3_600_000;
    // 20:30 and 21:30 UTC (of 1969-12-31): different days when days start
    // at 21:00. (The helper's flush event is at 02:46 the next day.)
    for r in results(&mut w, &[ev(h(-4) + 1_800_000, "eu", 1.0), ev(h(-3) + 1_800_000, "eu", 2.0)]) {
        rollup.push(&r);
    }
    let mut q = Query::new("acme", "m", t(h(-48)), t(h(24)));
    q.resolution = Some(Span::from_days(1));
    let days: Vec<(i64, Option<f64>)> =
        rollup.query(&q).unwrap().series[0].points.iter().map(|p| (p.start.as_millis(), p.sum)).collect();
    assert_eq!(days, [(h(-27), Some(1.0)), (h(-3), Some(2.0))]);
}

#[test]
fn filters_and_regrouping() {
    let spec = WindowSpec::new(Span::from_secs(1))
        .group_by(["region", "device"])
        .field(FieldSpec::new("v"))
        .out_of_orderness(Span::ZERO)
        .idle_timeout(None);
    let mut w = Windows::new(spec).unwrap();
    let mut rollup = Rollup::new(RollupSpec::default()).unwrap();
    let e = |ms, region: &str, device: &str, v| {
        Event::new("acme", "m", t(ms)).with_dim("region", region).with_dim("device", device).with_field("v", v)
    };
    let mut batch = EventBatch::new();
    for x in [e(100, "eu", "a", 1.0), e(200, "eu", "b", 2.0), e(300, "us", "c", 4.0), e(5_000, "eu", "a", 0.0)] {
        batch.push(&x);
    }
    w.push(&batch, t(0), &mut Vec::new());
    w.advance(t(0));
    while let Some(r) = w.poll_result() {
        rollup.push(&r);
    }
    let mut q = Query::new("acme", "m", t(0), t(1_000));
    q.group_by = Some(vec!["region".into()]);
    let by_region = rollup.query(&q).unwrap();
    let sums: Vec<(String, Option<f64>)> =
        by_region.series.iter().map(|s| (s.labels[0].1.clone(), s.points[0].sum)).collect();
    assert_eq!(sums, [("eu".to_string(), Some(3.0)), ("us".to_string(), Some(4.0))]);
    q.filters = vec![("device".into(), "b".into())];
    let only_b = rollup.query(&q).unwrap();
    assert_eq!(only_b.series.len(), 1);
    assert_eq!(only_b.series[0].points[0].sum, Some(2.0));
    let json = serde_json::to_string(&only_b).unwrap();
    assert!(json.contains(r#""resolution":"1s""#), "{json}");
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("tests/proptest-regressions/rollup.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn rolled_up_seconds_equal_direct_minutes(
        events in proptest::collection::vec((0i64..300_000, 0u8..3, -1_000i32..1_000), 1..150),
    ) {
        let events: Vec<Event> = events.iter().map(|&(ms, g, v)| ev(ms, &format!("r{g}"), f64::from(v))).collect();
        let mut rollup = Rollup::new(spec()).unwrap();
        for r in results(&mut windows(Span::from_secs(1)), &events) {
            rollup.push(&r);
        }
        let direct = direct(&results(&mut windows(Span::from_mins(1)), &events));
        prop_assert_eq!(minute_points(&rollup, 300_000), direct);
    }
}

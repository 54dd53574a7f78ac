//! Rate limiting: GCRA edge cases, the admission bound over any interval,
//! exact retry-after, quota changes and the bounded key store.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use edgestream::flow::{Decision, Gcra, Quota, RateLimiter};
use edgestream::time::{Span, Timestamp};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(1_795_838_400_000 + ms).unwrap()
}

#[test]
fn zero_rate_zero_burst_and_zero_cost() {
    let mut g = Gcra::new();
    assert_eq!(g.check(&Quota::per_second(0), t(0), 1), Decision::Exceeds);
    assert_eq!(g.check(&Quota::per_second(10).with_burst(0), t(0), 1), Decision::Exceeds);
    let zero_period = Quota { cells: 1, per: Span::ZERO, burst: 1 };
    assert_eq!(g.check(&zero_period, t(0), 1), Decision::Exceeds);
    assert_eq!(g.check(&Quota::per_second(0), t(0), 0), Decision::Allow, "nothing asked, nothing refused");
    assert!(g.is_idle(t(0)), "refusals charge nothing");
}

#[test]
fn burst_of_one_spaces_requests_by_the_interval() {
    let q = Quota::per_second(4).with_burst(1);
    let mut g = Gcra::new();
    assert!(g.check(&q, t(0), 1).is_allowed());
    assert_eq!(g.check(&q, t(0), 1), Decision::Deny { retry_after: Span::from_millis(250) });
    assert_eq!(g.check(&q, t(100), 1), Decision::Deny { retry_after: Span::from_millis(150) });
    assert!(g.check(&q, t(250), 1).is_allowed());
    assert_eq!(g.check(&q, t(250), 2), Decision::Exceeds, "a cost above the burst never fits");
}

#[test]
fn a_batch_is_charged_its_size() {
    let q = Quota::per_second(1_000);
    let mut g = Gcra::new();
    assert!(g.check(&q, t(0), 600).is_allowed());
    assert_eq!(g.check(&q, t(0), 600), Decision::Deny { retry_after: Span::from_millis(200) });
    assert!(g.check(&q, t(0), 400).is_allowed());
    assert!(g.check(&q, t(200), 200).is_allowed());
}

#[test]
fn time_going_backwards_is_only_stricter() {
    let q = Quota::per_second(10).with_burst(10);
    let mut g = Gcra::new();
    assert!(g.check(&q, t(10_000), 10).is_allowed());
    assert!(!g.check(&q, t(5_000), 1).is_allowed(), "earlier than the last admission");
    assert!(g.check(&q, t(10_100), 1).is_allowed(), "and the state is intact");
    // Extreme inputs saturate instead of overflowing.
    let huge = Quota { cells: 1, per: Span::from_nanos(i64::MAX), burst: u64::MAX };
    assert!(g.check(&huge, Timestamp::MIN, u64::MAX).is_allowed());
    assert!(matches!(g.check(&huge, Timestamp::MAX, 1), Decision::Deny { .. } | Decision::Allow));
}

#[test]
fn quota_changes_keep_the_state() {
    let mut limits = RateLimiter::new(Quota::per_second(10), 100);
    assert!(limits.check(&"acme", t(0), 10).is_allowed());
    // A higher quota applies at once but does not refill the bucket.
    limits.set_quota("acme", Quota::per_second(100));
    assert_eq!(limits.check(&"acme", t(0), 100), Decision::Deny { retry_after: Span::from_millis(1_000) });
    assert!(limits.check(&"acme", t(0), 1).is_allowed() || limits.check(&"acme", t(10), 1).is_allowed());
    // A lower one too.
    limits.set_default_quota(Quota::per_minute(1));
    assert_eq!(limits.quota(&"other"), Quota::per_minute(1));
    assert!(limits.check(&"other", t(0), 1).is_allowed());
    assert!(
        matches!(limits.check(&"other", t(1_000), 1), Decision::Deny { retry_after } if retry_after == Span::from_secs(59))
    );
}

#[test]
fn the_key_store_is_bounded_and_drops_idle_keys_first() {
    let mut limits = RateLimiter::new(Quota::per_second(1), 8);
    for k in 0..8 {
        assert!(limits.check(&k, t(0), 1).is_allowed());
    }
    assert_eq!(limits.tracked_keys(), 8);
    // A second later every key is idle again: making room drops them
    // without changing any decision.
    for k in 8..12 {
        assert!(limits.check(&k, t(1_000), 1).is_allowed());
    }
    assert!(limits.tracked_keys() <= 8);
    assert_eq!(limits.stats().evicted_idle, 8);
    assert_eq!(limits.stats().evicted_active, 0);
    // Many busy keys at once: the store stays at its cap, and the keys it
    // drops while busy are counted.
    for k in 100..1_000 {
        limits.check(&k, t(1_500), 1);
    }
    assert!(limits.tracked_keys() <= 8);
    assert!(limits.stats().evicted_active > 0);
    let s = limits.stats();
    assert_eq!((s.allowed, s.denied), (8 + 4 + 900, 0));
    // A refused first request leaves no state behind.
    let mut strict = RateLimiter::new(Quota::per_second(0), 8);
    assert_eq!(strict.check(&1, t(0), 1), Decision::Exceeds);
    assert_eq!((strict.tracked_keys(), strict.stats().denied, strict.stats().denied_cells), (0, 1, 1));
}

fn quota() -> impl Strategy<Value = Quota> {
    (1u64..50, 1i64..5_000, 1u64..20).prop_map(|(cells, per_ms, burst)| Quota {
        cells,
        per: Span::from_millis(per_ms),
        burst,
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("tests/proptest-regressions/flow.txt"))),
        ..ProptestConfig::default()
    })]

    /// Over any interval [a, b] of request times, admitted cells never
    /// exceed burst + cells × (b - a) / per.
    #[test]
    fn gcra_never_admits_more_than_rate_times_t_plus_burst(
        q in quota(),
        steps in prop::collection::vec((0i64..400_000_000, 1u64..6), 1..120),
    ) {
        let mut g = Gcra::new();
        let mut now = 0i64;
        let mut admitted: Vec<(i64, u64)> = Vec::new();
        for (dt, cost) in steps {
            now += dt;
            if g.check(&q, Timestamp::from_nanos(now), cost).is_allowed() {
                admitted.push((now, cost));
            }
        }
        let per = i128::from(q.per.as_nanos());
        for i in 0..admitted.len() {
            let mut cells = 0i128;
            for &(tj, cost) in &admitted[i..] {
                cells += i128::from(cost);
                let span = i128::from(tj - admitted[i].0);
                // cells ≤ burst + rate × span, multiplied through by per.
                prop_assert!(cells * per <= i128::from(q.burst) * per + i128::from(q.cells) * span,
                    "{cells} cells in {span} ns under {q:?}");
            }
        }
    }

    /// `retry_after` is exact: retrying after it is admitted, a
    /// nanosecond earlier is not.
    #[test]
    fn retry_after_is_exact(q in quota(), first in 1u64..20, wait in 0i64..1_000_000_000, cost in 1u64..20) {
        let mut g = Gcra::new();
        let start = Timestamp::from_secs(1_795_838_400).unwrap();
        g.check(&q, start, first);
        let now = start.saturating_add(Span::from_nanos(wait));
        if let Decision::Deny { retry_after } = g.check(&q, now, cost) {
            prop_assert!(retry_after > Span::ZERO);
            let mut early = g;
            prop_assert!(!early.check(&q, now.saturating_add(retry_after).saturating_sub(Span::from_nanos(1)), cost).is_allowed());
            prop_assert!(g.check(&q, now.saturating_add(retry_after), cost).is_allowed());
        }
    }
}

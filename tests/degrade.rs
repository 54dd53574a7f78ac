//! The circuit breaker and the fidelity ladder: state machines driven by
//! the caller's clock, with their edge cases.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use edgestream::flow::{
    BreakerConfig, BreakerError, BreakerState, CircuitBreaker, Fidelity, FidelityLadder, LadderConfig, LadderError,
    LoadInputs, LoadSignal, Rung,
};
use edgestream::time::{Span, Timestamp};
use proptest::prelude::*;

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(1_795_838_400_000 + ms).unwrap()
}

fn config() -> BreakerConfig {
    BreakerConfig {
        failure_ratio: 0.5,
        min_calls: 4,
        window: Span::from_secs(10),
        cooldown: Span::from_secs(5),
        trial_calls: 2,
    }
}

fn breaker() -> CircuitBreaker {
    CircuitBreaker::new(config()).unwrap()
}

fn call(b: &mut CircuitBreaker, ms: i64, ok: bool) -> bool {
    match b.acquire(t(ms)) {
        Ok(permit) => {
            b.record(t(ms), permit, ok);
            true
        }
        Err(_) => false,
    }
}

#[test]
fn the_breaker_needs_enough_calls_and_a_high_enough_failure_ratio() {
    let mut b = breaker();
    for ms in 0..3 {
        call(&mut b, ms, false);
    }
    assert_eq!(b.state(), BreakerState::Closed, "three calls are below min_calls");
    for ms in 3..9 {
        call(&mut b, ms, true);
    }
    call(&mut b, 9, false);
    assert_eq!(b.state(), BreakerState::Closed, "4 failures in 10 calls is below half");
    call(&mut b, 10, false);
    assert_eq!(b.state(), BreakerState::Closed, "5 in 11");
    call(&mut b, 11, false);
    assert_eq!(b.state(), BreakerState::Open, "6 in 12");
    assert_eq!(b.acquire(t(1_011)), Err(Span::from_secs(4)));
    assert_eq!(b.stats().rejected, 1);
}

#[test]
fn old_failures_leave_the_window() {
    let mut b = breaker();
    for ms in 0..3 {
        call(&mut b, ms, false);
    }
    // Ten seconds later the three failures are gone: one more does not trip it.
    for ms in [11_000, 11_001, 11_002] {
        call(&mut b, ms, true);
    }
    call(&mut b, 11_003, false);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn half_open_lets_a_few_trials_through_and_one_failure_reopens() {
    let mut b = breaker();
    for ms in 0..4 {
        call(&mut b, ms, false);
    }
    assert_eq!(b.state(), BreakerState::Open);
    // After the cooldown: two trials, the third is refused until they report.
    let first = b.acquire(t(5_003)).unwrap();
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let second = b.acquire(t(5_003)).unwrap();
    assert!(b.acquire(t(5_003)).is_err());
    b.record(t(5_004), first, true);
    b.record(t(5_005), second, false);
    assert_eq!(b.state(), BreakerState::Open, "a failed trial reopens");
    assert!(b.acquire(t(6_000)).is_err());

    assert!(call(&mut b, 10_005, true) && call(&mut b, 10_006, true));
    assert_eq!(b.state(), BreakerState::Closed);
    let path: Vec<_> = b.drain_transitions().map(|tr| (tr.from, tr.to)).collect();
    use BreakerState::*;
    assert_eq!(path, [(Closed, Open), (Open, HalfOpen), (HalfOpen, Open), (Open, HalfOpen), (HalfOpen, Closed)]);
    assert_eq!((b.stats().opened, b.stats().closed), (2, 1));
    // Closing starts a fresh window: one failure is not enough.
    call(&mut b, 10_007, false);
    assert_eq!(b.state(), Closed);
}

#[test]
fn late_results_of_earlier_calls_change_nothing() {
    let mut b = breaker();
    let slow: Vec<_> = (0..8).map(|_| b.acquire(t(0)).unwrap()).collect();
    for &permit in &slow[..4] {
        b.record(t(1), permit, false);
    }
    assert_eq!(b.state(), BreakerState::Open);
    let trial = b.acquire(t(5_001)).unwrap();
    // The four other slow calls report success during the trial: stale.
    for &permit in &slow[4..] {
        b.record(t(5_002), permit, true);
    }
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(b.stats().stale_results, 4);
    b.record(t(5_003), trial, true);
    assert_eq!(b.state(), BreakerState::HalfOpen, "two trials are needed");
}

#[test]
fn a_trial_that_never_reports_reopens_the_breaker_after_a_cooldown() {
    let mut b = breaker();
    for ms in 0..4 {
        call(&mut b, ms, false);
    }
    let _lost = b.acquire(t(5_003)).unwrap();
    let _lost_too = b.acquire(t(5_003)).unwrap();
    assert_eq!(b.acquire(t(6_000)), Err(Span::from_millis(4_003)), "waiting for the trials");
    assert_eq!(b.acquire(t(10_003)), Err(Span::from_secs(5)), "they never came back: open again");
    assert_eq!(b.state(), BreakerState::Open);
    assert!(call(&mut b, 15_003, true) && call(&mut b, 15_004, true));
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn breaker_configs_are_checked() {
    let with = |c: BreakerConfig| CircuitBreaker::new(c).map(|_| ()).unwrap_err();
    assert_eq!(
        with(BreakerConfig { failure_ratio: f64::NAN, ..config() }).to_string(),
        "failure ratio must be in (0, 1], got NaN"
    );
    assert!(matches!(with(BreakerConfig { failure_ratio: 0.0, ..config() }), BreakerError::FailureRatio(_)));
    assert_eq!(with(BreakerConfig { cooldown: Span::from_secs(-1), ..config() }), BreakerError::Span);
    assert_eq!(with(BreakerConfig { window: Span::ZERO, ..config() }), BreakerError::Span);
    assert_eq!(with(BreakerConfig { trial_calls: 0, ..config() }), BreakerError::TrialCalls);
}

#[test]
fn time_going_backwards_is_read_as_no_time_passing() {
    let mut b = breaker();
    for ms in 0..4 {
        call(&mut b, ms, false);
    }
    assert!(b.acquire(t(-60_000)).is_err(), "an earlier clock does not end the cooldown");
    assert!(b.acquire(t(5_003)).is_ok());
}

#[test]
fn unread_transitions_are_bounded_and_counted() {
    let mut b = CircuitBreaker::new(BreakerConfig { min_calls: 1, trial_calls: 1, ..config() }).unwrap();
    let mut now = 0;
    for _ in 0..20 {
        call(&mut b, now, false); // opens
        now += 5_000;
        call(&mut b, now, false); // half-open, then open again
        now += 5_000;
    }
    // The first call opens it; each later one half-opens it and opens it again.
    let transitions = 1 + 39 * 2;
    assert_eq!(b.drain_transitions().count(), 16);
    assert_eq!(b.stats().transitions_dropped, transitions - 16);
}

fn ladder(min_dwell_secs: i64) -> FidelityLadder {
    FidelityLadder::new(LadderConfig { min_dwell: Span::from_secs(min_dwell_secs), ..LadderConfig::default() }).unwrap()
}

fn fill(f: f64) -> LoadInputs {
    LoadInputs { queue_fill: Some(f), ..LoadInputs::default() }
}

#[test]
fn the_ladder_climbs_at_once_and_steps_down_one_rung_after_the_dwell() {
    let mut l = ladder(10);
    assert_eq!(l.fidelity(), Fidelity::Full);
    let up = l.observe(t(0), fill(0.97)).unwrap();
    assert_eq!((up.from, up.to), (Fidelity::Full, Fidelity::AggregatesOnly), "straight to the top rung");
    assert_eq!(up.signal, LoadSignal::QueueFill);
    assert!(l.observe(t(1_000), fill(0.0)).is_none(), "dwell");
    let down = l.observe(t(10_000), fill(0.0)).unwrap();
    assert_eq!(down.to, Fidelity::Sampled { rate: 0.1 }, "one rung at a time");
    assert!(l.observe(t(15_000), fill(0.0)).is_none(), "the dwell starts again on the new rung");
    assert_eq!(l.observe(t(20_000), fill(0.0)).unwrap().to, Fidelity::Full);
    assert_eq!(l.changes(), 3);
}

#[test]
fn between_exit_and_enter_the_ladder_stays_put() {
    let mut l = ladder(0);
    l.observe(t(0), fill(0.85)).unwrap();
    for (i, load) in [0.7, 0.79, 0.61, 0.6].into_iter().enumerate() {
        assert!(l.observe(t(i as i64 * 1_000), fill(load)).is_none(), "load {load}");
    }
    assert_eq!(l.fidelity(), Fidelity::Sampled { rate: 0.1 });
    assert_eq!(l.observe(t(9_000), fill(0.59)).unwrap().to, Fidelity::Full);
}

#[test]
fn the_largest_ratio_sets_the_load() {
    let mut l = ladder(0);
    let inputs = LoadInputs {
        queue_fill: Some(0.2),
        ingest_rate: Some(9_000.0),              // 0.9 of 10,000/s
        batch_time: Some(Span::from_millis(30)), // 0.6 of 50 ms
    };
    let change = l.observe(t(0), inputs).unwrap();
    assert_eq!(change.signal, LoadSignal::IngestRate);
    assert!((change.load - 0.9).abs() < 1e-12);
    let slow = LoadInputs { batch_time: Some(Span::from_millis(100)), ..LoadInputs::default() };
    assert_eq!(l.observe(t(1), slow).unwrap().signal, LoadSignal::BatchTime);
    // Nothing measured, or nothing measurable: no change.
    assert!(l.observe(t(2), LoadInputs::default()).is_none());
    assert!(l.observe(t(3), fill(f64::NAN)).is_none());
    assert_eq!(l.fidelity(), Fidelity::AggregatesOnly);
    // An infinite ratio is an overload, not a missing reading.
    let mut l = ladder(0);
    let stalled = LoadInputs { ingest_rate: Some(f64::INFINITY), ..LoadInputs::default() };
    assert_eq!(l.observe(t(0), stalled).unwrap().to, Fidelity::AggregatesOnly);
}

#[test]
fn smoothing_absorbs_a_single_spike_and_time_going_backwards_does_not_step_down() {
    let mut l = FidelityLadder::new(LadderConfig { smoothing: 0.25, ..LadderConfig::default() }).unwrap();
    assert!(l.observe(t(0), fill(0.2)).is_none());
    assert!(l.observe(t(1_000), fill(1.0)).is_none(), "0.25 × 1 + 0.75 × 0.2 = 0.4");
    let mut l = ladder(10);
    l.observe(t(60_000), fill(0.9)).unwrap();
    assert!(l.observe(t(0), fill(0.0)).is_none());
}

#[test]
fn ladder_configs_are_checked() {
    let with = |rungs: Vec<Rung>| FidelityLadder::new(LadderConfig { rungs, ..LadderConfig::default() }).map(|_| ());
    let sampled = |rate| Fidelity::Sampled { rate };
    assert_eq!(
        with(vec![Rung { fidelity: sampled(0.5), enter: 0.5, exit: 0.6 }]),
        Err(LadderError::Thresholds { rung: 0 })
    );
    assert_eq!(
        with(vec![
            Rung { fidelity: sampled(0.5), enter: 0.8, exit: 0.6 },
            Rung { fidelity: Fidelity::AggregatesOnly, enter: 0.8, exit: 0.7 },
        ]),
        Err(LadderError::Order { rung: 1 })
    );
    assert_eq!(with(vec![Rung { fidelity: sampled(0.0), enter: 0.8, exit: 0.6 }]), Err(LadderError::Rate { rung: 0 }));
    assert_eq!(with(vec![]), Ok(()), "no rungs: always full fidelity");
    let bad_capacity = LadderConfig { capacity: 0.0, ..LadderConfig::default() };
    assert!(matches!(FidelityLadder::new(bad_capacity), Err(LadderError::Capacity(_))));

    let config: LadderConfig = serde_json::from_str(
        r#"{"rungs": [{"fidelity": {"level": "sampled", "rate": 0.5}, "enter": 0.7, "exit": 0.5}], "min_dwell": "1m"}"#,
    )
    .unwrap();
    assert_eq!(config.rungs[0].fidelity, sampled(0.5));
    assert_eq!(config.min_dwell, Span::from_mins(1));
    assert!(serde_json::from_str::<LadderConfig>(r#"{"rungz": []}"#).is_err());
}

proptest! {
    /// Whatever the load does, the ladder never changes level more often
    /// than the dwell allows on the way down, and stays on a valid rung.
    #[test]
    fn the_ladder_does_not_flap(loads in prop::collection::vec(0.0f64..1.2, 1..300)) {
        let mut l = ladder(10);
        let mut entered = 0i64;
        for (i, load) in loads.into_iter().enumerate() {
            let now = i as i64 * 1_000;
            if let Some(change) = l.observe(t(now), fill(load)) {
                let rank = |f: Fidelity| match f { Fidelity::Full => 0, Fidelity::Sampled { .. } => 1, Fidelity::AggregatesOnly => 2 };
                if rank(change.to) < rank(change.from) {
                    prop_assert!(now - entered >= 10_000, "stepped down after {} ms", now - entered);
                    prop_assert_eq!(rank(change.from) - rank(change.to), 1);
                }
                entered = now;
            }
        }
    }
}

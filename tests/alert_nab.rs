//! A spike rule on real data: the NAB machine-temperature series (an
//! industrial sensor before and during a system failure), through the
//! windows and the evaluator, scored against NAB's labelled anomaly windows.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use edgestream::alert::{AlertEvent, AlertState, EvalConfig, Evaluator, Rule};
use edgestream::event::{Event, EventBatch};
use edgestream::time::{Span, Timestamp};
use edgestream::window::{FieldSpec, WindowSpec, Windows};

const FILE: &str = "nab_machine_temperature_system_failure.csv";
const KEY: &str = "realKnownCause/machine_temperature_system_failure.csv";

/// NAB's labelled anomaly windows of the file, as (start, end).
fn labelled() -> Vec<(Timestamp, Timestamp)> {
    let text = std::fs::read_to_string(format!("{}/nab_combined_windows.json", common::series::DIR)).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    let parse = |s: &serde_json::Value| -> Timestamp {
        let s = s.as_str().unwrap();
        format!("{}Z", s.split('.').next().unwrap().replace(' ', "T")).parse().unwrap()
    };
    all[KEY].as_array().unwrap().iter().map(|w| (parse(&w[0]), parse(&w[1]))).collect()
}

/// Runs `rule` over the series in windows of `window`, feeding the
/// pipeline in batches as a host would; returns the alert events.
fn run(rule: &str, window: Span) -> Vec<AlertEvent> {
    let points = common::series::load(&std::path::Path::new(common::series::DIR).join(FILE));
    let spec = WindowSpec::new(window)
        .field(FieldSpec::new("temp"))
        // The file steps back in time once, by 55 minutes.
        .out_of_orderness(Span::from_hours(1));
    let mut windows = Windows::new(spec).unwrap();
    let mut alerts =
        Evaluator::new(vec![Rule::parse("temperature_anomaly", rule).unwrap()], EvalConfig::default()).unwrap();
    let mut events = Vec::new();
    let mut late = Vec::new();
    for chunk in points.chunks(500) {
        let mut batch = EventBatch::new();
        for &(ts, v) in chunk {
            batch.push(&Event::new("plant", "sensors", Timestamp::from_nanos(ts)).with_field("temp", v));
        }
        let now = Timestamp::from_nanos(chunk.last().unwrap().0);
        windows.push(&batch, now, &mut late);
        windows.advance(now);
        while let Some(result) = windows.poll_result() {
            alerts.push(&result);
        }
        alerts.advance(windows.watermark(), &mut events);
    }
    assert!(late.is_empty(), "no event is too late with a 1 h bound");
    events
}

/// (labelled windows with an alert firing inside, firing alerts outside every window).
fn score(events: &[AlertEvent], labelled: &[(Timestamp, Timestamp)]) -> (usize, usize) {
    let firing: Vec<Timestamp> = events.iter().filter(|e| e.state == AlertState::Firing).map(|e| e.at).collect();
    let caught = labelled.iter().filter(|(s, e)| firing.iter().any(|t| s <= t && t <= e)).count();
    let false_alerts = firing.iter().filter(|t| !labelled.iter().any(|(s, e)| s <= *t && *t <= e)).count();
    (caught, false_alerts)
}

/// The headline rule: the default baseline (alpha 0.1, warm-up 10
/// windows) on 30-minute means, firing 4 deviations above it. The
/// labelled failures of this machine show as a collapse of the
/// temperature and a jump back when it restarts: the jump is the spike.
const HEADLINE: &str = "spike(avg(temp)) > 4";

#[test]
fn spike_rule_on_nab_machine_temperature() {
    let labelled = labelled();
    assert_eq!(labelled.len(), 4);
    println!("rule | windows | labelled windows caught | false alerts");
    let mut headline = None;
    for window in [Span::from_mins(30), Span::from_hours(1)] {
        for rule in
            ["spike(avg(temp)) > 3", HEADLINE, "spike(avg(temp)) > 5", "spike(avg(temp)) < -4", "spike(avg(temp)) < -6"]
        {
            let events = run(rule, window);
            let (caught, false_alerts) = score(&events, &labelled);
            println!("`{rule}` | {window} | {caught} of 4 | {false_alerts}");
            if rule == HEADLINE && window == Span::from_mins(30) {
                headline = Some((caught, false_alerts, events));
            }
        }
    }
    let (caught, false_alerts, events) = headline.unwrap();
    assert!(caught >= 3, "the spike rule catches {caught} of 4 labelled windows");
    assert!(false_alerts <= 1, "{false_alerts} false alerts");
    // Every firing alert resolves, and events alternate firing / resolved.
    let states: Vec<AlertState> = events.iter().map(|e| e.state).collect();
    assert!(
        states.chunks(2).all(|pair| pair == [AlertState::Firing, AlertState::Resolved] || pair == [AlertState::Firing])
    );
}

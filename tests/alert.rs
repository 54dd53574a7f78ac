//! Alert rules: the text and serde forms, and every state transition of
//! the evaluator on hand-built window results.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use common::alerts::{group, group_of, minutes, result, values};
use edgestream::alert::{AlertEvent, AlertState, AlertStats, EvalConfig, Evaluator, Rule};
use edgestream::geo::Geohash;
use edgestream::time::Span;
use edgestream::window::agg::{QuantileConfig, Quantiles};
use edgestream::window::{GroupKey, WindowResult};
use proptest::prelude::*;
use std::sync::Arc;

const MIN: Span = Span::from_mins(1);

fn evaluator(rule: &str) -> Evaluator {
    Evaluator::new(vec![Rule::parse("r", rule).unwrap()], EvalConfig::default()).unwrap()
}

/// Feeds `(minute index, value)` for one group, advancing after each
/// window; returns `(state, at minute)` of the events.
fn run(rule: &str, series: &[(i64, f64)]) -> Vec<(AlertState, i64)> {
    let mut ev = evaluator(rule);
    let g = group(&[("region", "eu")]);
    let mut out = Vec::new();
    for &(i, v) in series {
        ev.push(&result(&g, MIN, i, v));
        ev.advance(minutes(i + 1), &mut out);
    }
    states(&out)
}

fn states(events: &[AlertEvent]) -> Vec<(AlertState, i64)> {
    events.iter().map(|e| (e.state, e.at.as_secs() / 60)).collect()
}

use AlertState::{Firing, Inactive, Pending, Resolved};

#[test]
fn threshold_goes_pending_then_firing_then_resolved() {
    let series: Vec<(i64, f64)> =
        [100.0, 300.0, 300.0, 300.0, 100.0].into_iter().enumerate().map(|(i, v)| (i as i64, v)).collect();
    assert_eq!(run("avg(x) > 250 for 2m", &series), [(Pending, 2), (Firing, 3), (Resolved, 5)]);
    // `for 0` fires on the first window.
    assert_eq!(run("avg(x) > 250", &series), [(Firing, 2), (Resolved, 5)]);
    // A pending alert whose condition stops holding goes back to inactive.
    assert_eq!(run("avg(x) > 250 for 5m", &series), [(Pending, 2), (Inactive, 5)]);
}

#[test]
fn every_operator_compares() {
    let series = [(0, 250.0)];
    for (op, fires) in [(">", false), (">=", true), ("<", false), ("<=", true), ("==", true), ("!=", false)] {
        let got = run(&format!("avg(x) {op} 250"), &series);
        assert_eq!(!got.is_empty(), fires, "{op}");
    }
}

#[test]
fn a_recovery_threshold_stops_flapping() {
    // Around the threshold: without hysteresis it flaps, with it it stays firing.
    let series: Vec<(i64, f64)> =
        [260.0, 240.0, 260.0, 240.0, 260.0, 190.0].into_iter().enumerate().map(|(i, v)| (i as i64, v)).collect();
    let flapping = run("avg(x) > 250", &series);
    assert_eq!(flapping, [(Firing, 1), (Resolved, 2), (Firing, 3), (Resolved, 4), (Firing, 5), (Resolved, 6)]);
    assert_eq!(run("avg(x) > 250 recover < 200", &series), [(Firing, 1), (Resolved, 6)]);
}

#[test]
fn keep_firing_for_bridges_short_dips_and_gaps() {
    // A one-window dip does not resolve with keep_firing_for 2m.
    let dip: Vec<(i64, f64)> =
        [300.0, 100.0, 300.0, 100.0, 100.0].into_iter().enumerate().map(|(i, v)| (i as i64, v)).collect();
    assert_eq!(run("avg(x) > 250", &dip), [(Firing, 1), (Resolved, 2), (Firing, 3), (Resolved, 4)]);
    assert_eq!(run("avg(x) > 250 keep_firing_for 2m", &dip), [(Firing, 1), (Resolved, 5)]);
    // A gap in the data (minutes 1 and 2 missing) with the default `missing=ok`.
    let gap = [(0, 300.0), (3, 300.0), (4, 100.0), (7, 100.0)];
    assert_eq!(run("avg(x) > 250", &gap), [(Firing, 1), (Resolved, 2), (Firing, 4), (Resolved, 5)]);
    // Two missing windows are within keep_firing_for 3m; three are not.
    assert_eq!(run("avg(x) > 250 keep_firing_for 3m", &gap), [(Firing, 1), (Resolved, 7)]);
    assert_eq!(run("avg(x) > 250 keep_firing_for 2m", &gap), [(Firing, 1), (Resolved, 3), (Firing, 4), (Resolved, 6)]);
}

#[test]
fn missing_data_policies() {
    let gap = [(0, 300.0), (4, 300.0)];
    // ok: the gap resets a pending alert.
    assert_eq!(run("avg(x) > 250 for 3m", &gap), [(Pending, 1), (Inactive, 2), (Pending, 5)]);
    // keep: the gap is ignored, the pending time keeps counting.
    assert_eq!(run("avg(x) > 250 for 3m missing=keep", &gap), [(Pending, 1), (Firing, 5)]);
    // alerting: the gap counts as holding, so it fires during the gap.
    assert_eq!(run("avg(x) > 250 for 3m missing=alerting", &gap), [(Pending, 1), (Firing, 3)]);
}

#[test]
fn gaps_are_noticed_without_new_data_for_the_group() {
    // The group stops; another group keeps the watermark moving. The
    // firing alert resolves at the end of its first missing window.
    let mut ev = evaluator("avg(x) by (region) > 250");
    let (eu, us) = (group(&[("region", "eu")]), group(&[("region", "us")]));
    let mut out = Vec::new();
    ev.push(&result(&eu, MIN, 0, 300.0));
    for i in 0..4 {
        ev.push(&result(&us, MIN, i, 10.0));
        ev.advance(minutes(i + 1), &mut out);
    }
    assert_eq!(states(&out), [(Firing, 1), (Resolved, 2)]);
    assert_eq!(out[0].label("region"), Some("eu"));
    // The next deadline names the next thing to do: nothing before expiry.
    assert!(ev.next_deadline().unwrap() > minutes(4));
}

#[test]
fn absence_per_group() {
    let mut ev = evaluator("absent() by (host) for 3m");
    let (a, b) = (group(&[("host", "a")]), group(&[("host", "b")]));
    let mut out = Vec::new();
    for i in 0..10 {
        ev.push(&result(&a, MIN, i, 1.0));
        if !(2..7).contains(&i) {
            ev.push(&result(&b, MIN, i, 1.0));
        }
        ev.advance(minutes(i + 1), &mut out);
    }
    // b is silent from minute 2 (window [2,3) ends at 3): pending then,
    // firing once 3 minutes are missing, resolved when data returns.
    assert_eq!(states(&out), [(Pending, 3), (Firing, 5), (Resolved, 8)]);
    assert!(out.iter().all(|e| e.label("host") == Some("b")));
    assert_eq!(out[1].since, minutes(2));
}

#[test]
fn rate_of_change_absolute_and_percent() {
    let series: Vec<(i64, f64)> =
        [100.0, 100.0, 100.0, 130.0, 170.0, 170.0].into_iter().enumerate().map(|(i, v)| (i as i64, v)).collect();
    // Versus 2 windows earlier: +30 at 3, +70 at 4, +40 at 5.
    assert_eq!(run("change(avg(x), 2) > 50", &series), [(Firing, 5), (Resolved, 6)]);
    // +30 % at 3, +30.8 % at 4, 0 at 5.
    assert_eq!(run("pct_change(avg(x), 1) >= 30", &series), [(Firing, 4), (Resolved, 6)]);
    // Falls are negative.
    let fall = [(0, 100.0), (1, 40.0)];
    assert_eq!(run("pct_change(avg(x), 1) < -50", &fall), [(Firing, 2)]);
}

#[test]
fn spike_against_a_moving_baseline() {
    // Noise around 10, then a jump to 30.
    let mut series: Vec<(i64, f64)> = (0..40).map(|i| (i, 10.0 + if i % 2 == 0 { 0.5 } else { -0.5 })).collect();
    series.push((40, 30.0));
    series.push((41, 10.0));
    let got = run("spike(avg(x), alpha=0.1, warmup=10) > 4", &series);
    assert_eq!(got, [(Firing, 41), (Resolved, 42)]);
    // During the warm-up nothing fires, however odd the values.
    assert!(run("spike(avg(x), warmup=5) > 1", &[(0, 1.0), (1, 1000.0), (2, 5.0)]).is_empty());
}

#[test]
fn finer_groups_merge_into_the_rule_groups() {
    // Windows grouped by (region, host); the rule is by region: a weighted mean.
    let mut ev = evaluator("avg(x) by (region) > 100");
    let h1 = group(&[("region", "eu"), ("host", "1")]);
    let h2 = group(&[("region", "eu"), ("host", "2")]);
    let mut out = Vec::new();
    ev.push(&values(&h1, MIN, 0, &[150.0, 150.0, 150.0]));
    ev.push(&values(&h2, MIN, 0, &[0.0]));
    ev.advance(minutes(1), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].value, Some(112.5));
    assert_eq!(out[0].labels, [("alertname".to_owned(), "r".to_owned()), ("region".to_owned(), "eu".to_owned())]);
    // count() adds the counts, sum(x) the sums, max(x) the largest.
    for (rule, value) in [("count() > 1", 4.0), ("sum(x) > 1", 450.0), ("max(x) > 1", 150.0), ("min(x) >= 0", 0.0)] {
        let mut ev = evaluator(rule);
        let mut out = Vec::new();
        ev.push(&values(&h1, MIN, 0, &[150.0, 150.0, 150.0]));
        ev.push(&values(&h2, MIN, 0, &[0.0]));
        ev.advance(minutes(1), &mut out);
        assert_eq!(out[0].value, Some(value), "{rule}");
    }
}

#[test]
fn a_reading_over_many_groups_reads_the_merge_not_the_first_groups_quantile() {
    // 70 groups of one region (more parts than a reading keeps unmerged),
    // one of them holding histograms, each result carrying its own p99 as
    // a window computes it: the rule must see the p99 of the merge.
    let config = QuantileConfig::default();
    let mut ev = evaluator("p99(x) by (region) > 0");
    let mut all = Quantiles::new(config);
    for h in 0..70 {
        let g = group(&[("region", "eu"), ("host", &h.to_string())]);
        let n = if h == 3 { 300 } else { 20 };
        let xs: Vec<f64> = (0..n).map(|i| f64::from(h * 1000 + i) * 0.25).collect();
        let mut r = values(&g, MIN, 0, &xs);
        let mut q = Quantiles::new(config);
        xs.iter().for_each(|&x| q.record(x, 1.0));
        r.fields[0].quantiles = vec![(0.99, q.quantile(0.99).unwrap())];
        all.merge(&q);
        r.fields[0].sketch = Some(Arc::new(q));
        ev.push(&r);
    }
    let mut out = Vec::new();
    ev.advance(minutes(1), &mut out);
    assert_eq!(out.iter().map(|e| e.value).collect::<Vec<_>>(), [all.quantile(0.99)]);
    assert!(all.quantile(0.99).unwrap() > 17_000.0, "the merge's p99 is among the last group's values");
}

#[test]
fn merged_quantile_parts_survive_a_snapshot_before_they_are_read() {
    // Quantile parts staged by several groups are held unmerged until
    // `advance` reads them; a snapshot taken before must write them merged
    // and the restored evaluator read the same value.
    let config = QuantileConfig::default();
    let rules = numbered(&["p99(x) by (region) > 0", "p50(x) by (region) > 0"]);
    let hosts: Vec<_> = (0..5).map(|h| group(&[("region", "eu"), ("host", &h.to_string())])).collect();
    let run = |snapshot: bool| {
        let mut ev = Evaluator::new(rules.clone(), EvalConfig::default()).unwrap();
        let mut out = Vec::new();
        for window in 0..2 {
            for (h, g) in hosts.iter().enumerate() {
                // 60 values per host: 300 in the merge, which leaves the exact form.
                let xs: Vec<f64> = (0..60).map(|i| (window * 7 + h as i64 * 60 + i) as f64 * 0.37).collect();
                let mut r = values(g, MIN, window, &xs);
                let mut q = Quantiles::new(config);
                xs.iter().for_each(|&x| q.record(x, 1.0));
                r.fields[0].sketch = Some(Arc::new(q));
                ev.push(&r);
            }
            if snapshot {
                let mut bytes = Vec::new();
                ev.snapshot(&mut bytes);
                ev = Evaluator::restore(rules.clone(), EvalConfig::default(), &bytes).unwrap();
            }
            ev.advance(minutes(window + 1), &mut out);
        }
        let alerts: Vec<_> = ev.alerts().map(|a| (a.rule.to_string(), a.value)).collect();
        (out.iter().map(|e| (e.rule.to_string(), e.value)).collect::<Vec<_>>(), alerts)
    };
    let straight = run(false);
    assert_eq!(straight.1.len(), 2, "both rules fire");
    assert_eq!(run(true), straight);
}

#[test]
fn rules_reading_one_sketch_each_get_the_merged_quantiles() {
    // Windows by (region, host) carry sketches; quantile rules by region
    // merge them. Several rules read the same parts (the evaluator shares
    // their merges): each must see the merge of exactly its parts, and the
    // results' own sketches must stay as they were.
    let config = QuantileConfig::default();
    let with_sketch = |g: &Arc<GroupKey>, index: i64, xs: &[f64]| {
        let mut r = values(g, MIN, index, xs);
        let mut q = Quantiles::new(config);
        xs.iter().for_each(|&x| q.record(x, 1.0));
        r.fields[0].sketch = Some(Arc::new(q));
        r
    };
    let rules = ["p99(x) by (region) > 0", "p50(x) by (region) > 0", "p99(x) by (region) >= 0", "p99(x) > 0"];
    let rules = rules.iter().enumerate().map(|(i, r)| Rule::parse(&format!("r{i}"), r).unwrap()).collect();
    let mut ev = Evaluator::new(rules, EvalConfig::default()).unwrap();
    let hosts: Vec<_> = (0..4).map(|h| group(&[("region", "eu"), ("host", &h.to_string())])).collect();
    let mut out = Vec::new();
    for window in 0..3 {
        let mut all = Quantiles::new(config);
        let mut pushed = Vec::new();
        for (h, g) in hosts.iter().enumerate() {
            let xs: Vec<f64> = (0..50).map(|i| (window * 1000 + h as i64 * 100 + i) as f64 * 1.5).collect();
            let r = with_sketch(g, window, &xs);
            all.merge(r.fields[0].sketch.as_deref().unwrap());
            ev.push(&r);
            pushed.push((r, xs));
        }
        let first = out.len();
        ev.advance(minutes(window + 1), &mut out);
        // Fired on the first window; later windows keep firing silently,
        // so read the values of the active alerts instead.
        let mut values: Vec<(String, Option<f64>)> = if window == 0 {
            out[first..].iter().map(|e| (e.rule.to_string(), e.value)).collect()
        } else {
            ev.alerts().map(|a| (a.rule.to_string(), a.value)).collect()
        };
        values.sort_by(|a, b| a.0.cmp(&b.0));
        let (p99, p50) = (all.quantile(0.99), all.quantile(0.5));
        assert_eq!(
            values,
            [("r0".into(), p99), ("r1".into(), p50), ("r2".into(), p99), ("r3".into(), p99)],
            "window {window}"
        );
        for (r, xs) in &pushed {
            let sketch = r.fields[0].sketch.as_deref().unwrap();
            assert_eq!(sketch.len(), xs.len() as u64, "a result's sketch was changed");
        }
    }
}

#[test]
fn tenant_stream_and_window_scopes() {
    let rules = vec![
        Rule::parse("acme_only", "avg(x) > 1 tenant=acme").unwrap(),
        Rule::parse("other_stream", "avg(x) > 1 stream=other").unwrap(),
        Rule::parse("hourly", "avg(x) > 1 window=1h").unwrap(),
        Rule::parse("all", "avg(x) > 1").unwrap(),
    ];
    let mut ev = Evaluator::new(rules, EvalConfig::default()).unwrap();
    let mut out = Vec::new();
    ev.push(&result(&group_of("acme", "s", &[]), MIN, 0, 5.0));
    ev.push(&result(&group_of("zeta", "s", &[]), MIN, 0, 5.0));
    ev.advance(minutes(1), &mut out);
    let mut fired: Vec<(String, String)> = out.iter().map(|e| (e.rule.to_string(), e.tenant.to_string())).collect();
    fired.sort();
    assert_eq!(
        fired,
        [("acme_only".into(), "acme".into()), ("all".into(), "acme".into()), ("all".into(), "zeta".into())]
    );
}

#[test]
fn geo_cluster_reports_neighbouring_cells_as_one_alert() {
    let center = Geohash::encode(48.85, 2.35, 5).unwrap();
    let near: Vec<Geohash> = center.neighbours().take(2).collect();
    let far = Geohash::encode(-33.8, 151.2, 5).unwrap();
    let rule = "geo_cluster(avg(x) > 100, min_cells=3) by (region)";
    let cells = |list: &[Geohash]| -> Vec<String> { list.iter().map(|g| g.to_string()).collect() };

    // Three neighbouring hot cells and a far hot one: one alert, three cells.
    let mut ev = evaluator(rule);
    let mut out = Vec::new();
    for cell in [center, near[0], near[1], far] {
        ev.push(&result(&group(&[("region", "eu"), ("geohash", cell.as_str())]), MIN, 0, 500.0));
    }
    ev.push(&result(&group(&[("region", "eu"), ("geohash", "u0000")]), MIN, 0, 1.0));
    ev.advance(minutes(1), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].state, Firing);
    assert_eq!(out[0].value, Some(3.0));
    let mut expected = cells(&[center, near[0], near[1]]);
    expected.sort();
    assert_eq!(out[0].cells, expected);

    // Two neighbouring hot cells are not enough; the next window resolves.
    for cell in [center, near[0], far] {
        ev.push(&result(&group(&[("region", "eu"), ("geohash", cell.as_str())]), MIN, 1, 500.0));
    }
    ev.advance(minutes(2), &mut out);
    assert_eq!(states(&out), [(Firing, 1), (Resolved, 2)]);
}

#[test]
fn geo_cluster_of_spikes_per_cell() {
    // Each cell has its own baseline: a cell that is always high is not a spike.
    let cells: Vec<Geohash> = {
        let c = Geohash::encode(10.0, 10.0, 4).unwrap();
        std::iter::once(c).chain(c.neighbours()).collect()
    };
    let mut ev = evaluator("geo_cluster(spike(count(), warmup=5) > 3, min_cells=3)");
    let mut out = Vec::new();
    for i in 0..12 {
        for (k, cell) in cells.iter().enumerate() {
            let base = if k == 0 { 1000.0 } else { 10.0 + (i % 2) as f64 };
            let x = if i == 11 && (1..4).contains(&k) { 80.0 } else { base };
            let xs = vec![0.0; x as usize];
            ev.push(&values(&group(&[("geohash", cell.as_str())]), MIN, i, &xs));
        }
        ev.advance(minutes(i + 1), &mut out);
    }
    assert_eq!(states(&out), [(Firing, 12)]);
    assert_eq!(out[0].cells.len(), 3);
}

#[test]
fn instance_caps_are_counted() {
    let config = EvalConfig { max_instances_per_rule: 2, ..EvalConfig::default() };
    let mut ev = Evaluator::new(vec![Rule::parse("r", "avg(x) by (h) > 1").unwrap()], config).unwrap();
    let mut out = Vec::new();
    for h in ["a", "b", "c", "d"] {
        ev.push(&result(&group(&[("h", h)]), MIN, 0, 5.0));
    }
    ev.advance(minutes(1), &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(ev.stats().instances_capped, 2);
    assert_eq!(ev.stats().instances, 2);
}

/// Rules that read alike share their instance keys, yet each rule keeps
/// its own instances: under a tenant cap the later rules of a key go
/// without one, a key whose instances all expired starts over with fresh
/// instances for every rule, and a snapshot carries each rule's own.
#[test]
fn alike_rules_keep_their_own_instances_of_a_shared_key() {
    let rules: Vec<Rule> = (0..3).map(|i| Rule::parse(&format!("r{i}"), "avg(x) by (h) > 1").unwrap()).collect();
    let config = EvalConfig { max_instances_per_tenant: 4, idle_ttl: Span::from_mins(5), ..EvalConfig::default() };
    let firing = |ev: &Evaluator| {
        let mut alerts: Vec<_> = ev.alerts().map(|a| format!("{} {}", a.rule, a.labels[1].1)).collect();
        alerts.sort();
        alerts
    };
    let mut ev = Evaluator::new(rules.clone(), config).unwrap();
    let mut out = Vec::new();
    for h in ["a", "b"] {
        ev.push(&result(&group(&[("h", h)]), MIN, 0, 5.0));
    }
    ev.advance(minutes(1), &mut out);
    assert_eq!((ev.stats().instances, ev.stats().instances_capped), (4, 2));
    assert_eq!(firing(&ev), ["r0 a", "r0 b", "r1 a", "r1 b"]);
    let mut bytes = Vec::new();
    ev.snapshot(&mut bytes);
    let restored = Evaluator::restore(rules, config, &bytes).unwrap();
    assert_eq!(firing(&restored), firing(&ev));
    assert_eq!(restored.stats().instances, 4);

    // Silent past the idle TTL: every instance resolves and goes.
    ev.advance(minutes(10), &mut out);
    assert_eq!(ev.stats().instances, 0);
    assert_eq!(out.iter().filter(|e| e.state == AlertState::Resolved).count(), 4);
    ev.push(&result(&group(&[("h", "a")]), MIN, 10, 5.0));
    ev.advance(minutes(11), &mut out);
    assert_eq!(firing(&ev), ["r0 a", "r1 a", "r2 a"]);
    assert_eq!(ev.stats().instances, 3);
}

/// `max_buffered` counts window results, however many readings (rules
/// that read differently) take each: the rest are counted per rule.
#[test]
fn the_buffer_holds_max_buffered_results_for_every_reading() {
    let rules = ["avg(x) by (h) > 1", "max(x) by (h) > 1", "sum(x) by (h) > 1"];
    let rules = rules.iter().enumerate().map(|(i, r)| Rule::parse(&format!("r{i}"), r).unwrap()).collect();
    let config = EvalConfig { max_buffered: 4, ..EvalConfig::default() };
    let mut ev = Evaluator::new(rules, config).unwrap();
    let mut out = Vec::new();
    for h in ["a", "b", "c", "d", "e"] {
        ev.push(&result(&group(&[("h", h)]), MIN, 0, 5.0));
    }
    ev.advance(minutes(1), &mut out);
    let stats = ev.stats();
    assert_eq!(stats.evaluated, 12, "four results, each by three rules");
    assert_eq!(stats.buffer_full, 3, "the fifth result, for each of the three rules");
    assert_eq!(out.len(), 12);
}

#[test]
fn partials_stale_results_and_missing_fields_are_counted() {
    let mut ev = evaluator("avg(x) > 1");
    let g = group(&[]);
    let mut out = Vec::new();
    let mut partial = result(&g, MIN, 0, 5.0);
    partial.is_final = false;
    ev.push(&partial);
    ev.push(&result(&g, MIN, 0, 5.0));
    ev.advance(minutes(1), &mut out);
    let mut correction = result(&g, MIN, 0, 0.0);
    correction.revision = 1;
    ev.push(&correction);
    let mut no_field: WindowResult = result(&g, MIN, 1, 5.0);
    no_field.fields.clear();
    ev.push(&no_field);
    ev.advance(minutes(2), &mut out);
    let stats = ev.stats();
    assert_eq!((stats.partials_skipped, stats.stale, stats.no_value, stats.evaluated), (1, 1, 1, 1));
    assert_eq!(states(&out), [(Firing, 1), (Resolved, 2)]);
}

#[test]
fn a_correction_before_evaluation_is_not_double_counted() {
    let mut ev = evaluator("sum(x) > 8");
    let g = group(&[]);
    let mut out = Vec::new();
    ev.push(&result(&g, MIN, 0, 5.0));
    let mut correction = result(&g, MIN, 0, 6.0);
    correction.revision = 1;
    ev.push(&correction);
    ev.advance(minutes(1), &mut out);
    assert!(out.is_empty(), "5 + 6 would fire: {out:?}");
    assert_eq!((ev.stats().stale, ev.stats().evaluated), (1, 1));
}

#[test]
fn idle_instances_expire() {
    let config = EvalConfig { idle_ttl: Span::from_mins(10), ..EvalConfig::default() };
    let mut ev = Evaluator::new(vec![Rule::parse("r", "absent() by (h)").unwrap()], config).unwrap();
    let mut out = Vec::new();
    ev.push(&result(&group(&[("h", "a")]), MIN, 0, 5.0));
    ev.advance(minutes(1), &mut out);
    assert_eq!(ev.stats().instances, 1);
    ev.advance(minutes(30), &mut out);
    assert_eq!(states(&out), [(Firing, 2), (Resolved, 11)]);
    assert_eq!((ev.stats().instances, ev.stats().expired), (0, 1));
    assert_eq!(ev.next_deadline(), None);
}

#[test]
fn labels_annotations_and_fingerprints() {
    let rule: Rule = serde_json::from_str(
        r#"{"name": "slow", "rule": "p99(latency) by (region) > 250 severity=critical team=edge",
            "annotations": {"summary": "p99 {{value}} ms in {{labels.region}} ({{severity}})"}}"#,
    )
    .unwrap();
    let mut ev = Evaluator::new(vec![rule], EvalConfig::default()).unwrap();
    let g = group(&[("region", "eu")]);
    let mut r = result(&g, MIN, 0, 0.0);
    r.fields[0].field = "latency".into();
    r.fields[0].quantiles = vec![(0.99, 300.5)];
    ev.push(&r);
    let mut out = Vec::new();
    ev.advance(minutes(1), &mut out);
    let e = &out[0];
    assert_eq!(e.annotations, [("summary".to_owned(), "p99 300.5 ms in eu (critical)".to_owned())]);
    assert_eq!(e.label("team"), Some("edge"));
    assert_eq!(e.label("alertname"), Some("slow"));
    assert_eq!(e.fingerprint.to_string().len(), 16);
    assert_eq!(e.fingerprint, edgestream::alert::Fingerprint::of("slow", "t", [("region", "eu")]));
    let active: Vec<_> = ev.alerts().collect();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].fingerprint, e.fingerprint);
}

#[test]
fn text_and_serde_forms_agree() {
    let text = Rule::parse(
        "r",
        r#"spike(p99("latency ms"), alpha=0.2, warmup=5) by (region, "data center") > 3 for 2m keep_firing_for 5m recover < 1 missing=keep severity=error tenant=acme stream=http window=1m notify=oncall notify=email team="edge ops""#,
    )
    .unwrap();
    assert_eq!(Rule::parse("r", &text.to_string()).unwrap(), text);
    let yaml_like = serde_json::to_string(&text).unwrap();
    let back: Rule = serde_json::from_str(&yaml_like).unwrap();
    assert_eq!(back, text);
    for rule in
        ["absent() by (host) for 5m", "geo_cluster(spike(count()) > 3, min_cells=4, label=cell) by (tenant_region)"]
    {
        let parsed = Rule::parse("r", rule).unwrap();
        assert_eq!(parsed.to_string(), rule);
    }
}

#[test]
fn parse_errors_say_where() {
    for (text, column, needle) in [
        ("avg(x) >", 9, "expected a threshold"),
        ("avgx) > 1", 1, "unknown aggregate"),
        ("avg(x) > 1 for 2", 16, "expected a duration"),
        ("avg(x) > 1 for 2 m", 16, "expected a duration"),
        ("avg(x) > 1 severity=loud", 21, "not a severity"),
        ("avg(x) > 1 for 1m for 2m", 19, "given twice"),
        ("avg(x) > 1 \"unterminated", 12, "unterminated"),
        ("avg(x) ≥ 1", 8, "unexpected character"),
        ("change(avg(x)) > 1", 14, "expected `,`"),
        ("geo_cluster(avg(x) > 1)", 1, "min_cells"),
    ] {
        let err = Rule::parse("r", text).unwrap_err();
        let edgestream::alert::RuleError::Parse(e) = &err else { panic!("{text}: {err}") };
        assert_eq!(e.column, column, "{text}: {err}");
        assert!(e.message.contains(needle), "{text}: {err}");
    }
    // Checked after parsing: inconsistent settings.
    for (text, needle) in [
        ("avg() > 1", "needs a field"),
        ("change(avg(x), 0) > 1", "look-back"),
        ("spike(avg(x), alpha=2) > 1", "alpha"),
        ("absent() recover < 1", "recover"),
        ("avg(x) by (a, a) > 1", "twice"),
        ("geo_cluster(avg(x) > 1, min_cells=0)", "min_cells"),
    ] {
        let err = Rule::parse("r", text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
    let conflict: Result<Rule, _> = serde_json::from_str(r#"{"name": "r", "rule": "avg(x) > 1 for 2m", "for": "3m"}"#);
    assert!(conflict.unwrap_err().to_string().contains("both"));
    let unknown: Result<Rule, _> = serde_json::from_str(r#"{"name": "r", "rule": "avg(x) > 1", "fro": "3m"}"#);
    assert!(unknown.is_err());
}

#[test]
fn restore_follows_rule_changes_and_refuses_garbage() {
    let mut ev = evaluator("avg(x) by (region) > 250 for 3m");
    let g = group(&[("region", "eu")]);
    let mut out = Vec::new();
    ev.push(&result(&g, MIN, 0, 300.0));
    ev.advance(minutes(1), &mut out);
    let mut bytes = Vec::new();
    ev.snapshot(&mut bytes);
    // Same rule: the pending timer carries on.
    let mut same = Evaluator::restore(
        vec![Rule::parse("r", "avg(x) by (region) > 250 for 3m").unwrap()],
        EvalConfig::default(),
        &bytes,
    )
    .unwrap();
    for i in 1..3 {
        same.push(&result(&g, MIN, i, 300.0));
    }
    same.advance(minutes(3), &mut out);
    assert_eq!(states(&out), [(Pending, 1), (Firing, 3)]);
    assert_eq!(same.stats().instances, 1);
    // A rule with other `by` labels starts afresh; a removed rule is gone.
    let other =
        Evaluator::restore(vec![Rule::parse("r", "avg(x) > 250").unwrap()], EvalConfig::default(), &bytes).unwrap();
    assert_eq!(other.stats().instances, 0);
    let none = Evaluator::restore(vec![], EvalConfig::default(), &bytes).unwrap();
    assert_eq!(none.alerts().count(), 0);
    // Garbage is an error, never a panic.
    for bad in [&b""[..], b"\x01", b"\x07\x00", &bytes[..bytes.len() / 2]] {
        assert!(Evaluator::restore(vec![], EvalConfig::default(), bad).is_err());
    }
}

#[test]
fn the_end_of_time_terminates() {
    // Durations that saturate the timestamp range, and a watermark at its end.
    for rule in [
        "absent() by (g) for 106751d",
        "avg(x) by (g) > 1 keep_firing_for 106751d",
        "avg(x) by (g) > 1 for 106751d missing=alerting",
    ] {
        let mut ev = evaluator(rule);
        let mut out = Vec::new();
        ev.push(&result(&group(&[("g", "a")]), MIN, 0, 5.0));
        ev.advance(edgestream::time::Timestamp::MAX, &mut out);
        ev.advance(edgestream::time::Timestamp::MAX, &mut out);
        assert!(out.len() <= 3, "{rule}: {out:?}");
    }
}

#[test]
fn windows_of_two_sizes_ending_together_both_count() {
    let rules = vec![
        Rule::parse("minute", "avg(x) > 1 window=1m").unwrap(),
        Rule::parse("five", "avg(x) > 1 window=5m").unwrap(),
    ];
    let mut ev = Evaluator::new(rules, EvalConfig::default()).unwrap();
    let g = group(&[]);
    let mut out = Vec::new();
    ev.push(&result(&g, MIN, 4, 5.0));
    ev.push(&result(&g, Span::from_mins(5), 0, 5.0));
    ev.advance(minutes(5), &mut out);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(ev.stats().stale, 0);
}

#[test]
fn results_carried_past_an_expiry_start_a_fresh_instance() {
    // A rule over every stream stages its results; a result for a window
    // past the watermark waits while the instance's idle expiry passes.
    let config = EvalConfig { idle_ttl: Span::from_mins(5), ..EvalConfig::default() };
    let rule = Rule::parse("r", "avg(x) by (g) > 1").unwrap();
    let g = group(&[("g", "a")]);
    let run = |split: bool| {
        let mut ev = Evaluator::new(vec![rule.clone()], config).unwrap();
        let mut out = Vec::new();
        ev.push(&result(&g, MIN, 0, 5.0));
        ev.advance(minutes(1), &mut out);
        ev.push(&result(&g, MIN, 20, 5.0));
        if split {
            ev.advance(minutes(10), &mut out);
        }
        ev.advance(minutes(21), &mut out);
        (states(&out), ev.stats().clone())
    };
    let (one, one_stats) = run(false);
    let (two, two_stats) = run(true);
    assert_eq!(one, [(Firing, 1), (Resolved, 2), (Firing, 21)]);
    assert_eq!(one, two);
    assert_eq!(one_stats, two_stats);
    assert_eq!(one_stats.expired, 1);
}

#[test]
fn a_restore_without_a_rule_resolves_its_firing_alerts() {
    let mut ev = evaluator("avg(x) by (g) > 1");
    let mut out = Vec::new();
    ev.push(&result(&group(&[("g", "a")]), MIN, 0, 5.0));
    ev.advance(minutes(1), &mut out);
    assert_eq!(states(&out), [(Firing, 1)]);
    let mut bytes = Vec::new();
    ev.snapshot(&mut bytes);
    let mut other =
        Evaluator::restore(vec![Rule::parse("other", "avg(x) > 100").unwrap()], EvalConfig::default(), &bytes).unwrap();
    let mut after = Vec::new();
    other.advance(minutes(1), &mut after);
    assert_eq!(states(&after), [(Resolved, 1)]);
    assert_eq!(after[0].fingerprint, out[0].fingerprint, "the notifier can match it");
}

#[test]
fn text_form_corner_cases() {
    let parse = |t: &str| Rule::parse("r", t);
    assert_eq!(parse("p99.9(x) > 1").unwrap(), parse("p999(x) > 1").unwrap());
    assert_eq!(parse("p5.5(x) > 1").unwrap().to_string(), "p055(x) > 1");
    assert_eq!(parse("avg(x) > 1 team=60s").unwrap().labels["team"], "60s");
    assert!(parse("spike(avg(x), alpha=0.1, alpha=0.2) > 1").unwrap_err().to_string().contains("twice"));
    assert!(parse("avg(x) > 1 team=\"abc\\").unwrap_err().to_string().contains("unterminated"));
    assert!(parse("avg(x) by (alertname) > 1").is_err());
    assert!(parse("avg(x) > 1 alertname=y").is_err());
    for text in ["avg(x) > 1e300", "avg(x) < 5e-324", "spike(avg(x), min_dev=1e-300) > 2"] {
        let rule = parse(text).unwrap();
        let printed = rule.to_string();
        assert!(printed.len() < 60, "{printed}");
        assert_eq!(parse(&printed).unwrap(), rule);
    }
}

#[test]
fn config_limits_are_checked() {
    for config in [
        EvalConfig { idle_ttl: Span::ZERO, ..EvalConfig::default() },
        EvalConfig { max_buffered: 0, ..EvalConfig::default() },
    ] {
        assert!(Evaluator::new(vec![], config).is_err());
    }
}

#[test]
fn new_refuses_duplicate_names() {
    let rule = Rule::parse("r", "avg(x) > 1").unwrap();
    assert!(Evaluator::new(vec![rule.clone(), rule], EvalConfig::default()).is_err());
}

fn arb_rule() -> impl Strategy<Value = String> {
    let sel = prop_oneof![
        Just("avg(x)".to_owned()),
        Just("max(x)".to_owned()),
        Just("count()".to_owned()),
        Just("sum(x)".to_owned()),
        Just("last(x)".to_owned()),
    ];
    let expr = (sel, 0..4u8, 1..4u32).prop_map(|(s, kind, n)| match kind {
        0 | 1 => s,
        2 => format!("change({s}, {n})"),
        _ => format!("spike({s}, warmup={n})"),
    });
    let head =
        (expr, prop_oneof![Just(">"), Just("<"), Just(">=")], -5..15i32, 0..6u8).prop_map(
            |(e, op, t, kind)| match kind {
                0 => "absent() by (g)".to_owned(),
                _ => format!("{e} by (g) {op} {t}"),
            },
        );
    // With and without `stream=s` (the groups' stream): a rule of several
    // streams keeps the sketches of what it merges.
    let stream = prop_oneof![Just(""), Just(" stream=s")];
    (
        head,
        0..4i64,
        0..3i64,
        prop::option::of(-5..5i32),
        prop_oneof![Just(""), Just(" missing=keep"), Just(" missing=alerting")],
        stream,
    )
        .prop_map(|(head, f, k, rec, missing, stream)| {
            let recover = if head.starts_with("absent") {
                String::new()
            } else {
                rec.map(|r| format!(" recover < {r}")).unwrap_or_default()
            };
            format!("{head} for {f}m keep_firing_for {k}m{recover}{missing}{stream}")
        })
}

/// Window results of groups `g0..g3`, minute by minute, some missing.
fn arb_traffic() -> impl Strategy<Value = Vec<Vec<(u8, f64)>>> {
    prop::collection::vec(prop::collection::vec((0..4u8, -10.0..20.0f64), 0..4), 1..40)
}

/// Rules `r0`, `r1`, … of these texts.
fn numbered(texts: &[impl AsRef<str>]) -> Vec<Rule> {
    texts.iter().enumerate().map(|(i, text)| Rule::parse(&format!("r{i}"), text.as_ref()).unwrap()).collect()
}

/// Feeds `traffic` (per window, `(group, value)`; a group's first value
/// only) to an evaluator of `rules`, advancing to each window's start, so
/// the last window stays buffered; snapshots and restores before window
/// `restore_at`; then advances past the end. The events and the counters.
fn replay(
    rules: &[Rule],
    config: EvalConfig,
    groups: &[Arc<GroupKey>],
    traffic: &[Vec<(u8, f64)>],
    restore_at: Option<usize>,
) -> (Vec<AlertEvent>, AlertStats) {
    let mut ev = Evaluator::new(rules.to_vec(), config).unwrap();
    let mut out = Vec::new();
    for (i, window) in traffic.iter().enumerate() {
        if restore_at == Some(i) {
            let mut bytes = Vec::new();
            ev.snapshot(&mut bytes);
            ev = Evaluator::restore(rules.to_vec(), config, &bytes).unwrap();
        }
        let mut seen = [false; 4];
        for &(g, v) in window {
            if !std::mem::replace(&mut seen[g as usize], true) {
                ev.push(&result(&groups[g as usize], MIN, i as i64, v));
            }
        }
        ev.advance(minutes(i as i64), &mut out);
    }
    ev.advance(minutes(traffic.len() as i64 + 30), &mut out);
    (out, ev.stats().clone())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// The same results evaluated in one `advance` or split over many
    /// (with idle gaps between) give the same events.
    #[test]
    fn one_batch_or_many_advances_give_the_same_events(rule in arb_rule(), traffic in arb_traffic(), cuts in prop::collection::vec(any::<bool>(), 40), ttl in 3..40i64) {
        let rule = Rule::parse("r", &rule).unwrap();
        // Idle expiry within the run, too.
        let config = EvalConfig { idle_ttl: Span::from_mins(ttl), ..EvalConfig::default() };
        let groups: Vec<_> = (0..4).map(|g| group(&[("g", &format!("g{g}"))])).collect();
        let results: Vec<(i64, WindowResult)> = traffic.iter().enumerate().flat_map(|(i, window)| {
            let mut seen = [false; 4];
            window.iter().filter_map(|&(g, v)| {
                let fresh = !std::mem::replace(&mut seen[g as usize], true);
                fresh.then(|| (i as i64, result(&groups[g as usize], MIN, i as i64, v)))
            }).collect::<Vec<_>>()
        }).collect();
        let end = minutes(traffic.len() as i64 + 30);

        let mut one = Evaluator::new(vec![rule.clone()], config).unwrap();
        let mut all = Vec::new();
        for (_, r) in &results {
            one.push(r);
        }
        one.advance(end, &mut all);

        let mut many = Evaluator::new(vec![rule], config).unwrap();
        let mut split = Vec::new();
        for (k, (i, r)) in results.iter().enumerate() {
            if k == 0 || results[k - 1].0 != *i {
                // A watermark in the middle of the window before this one's end.
                many.advance(minutes(*i).saturating_add(Span::from_secs(30)), &mut split);
            }
            many.push(r);
            let next = results.get(k + 1).map(|(j, _)| *j);
            if next != Some(*i) && cuts[(*i as usize) % cuts.len()] {
                many.advance(minutes(i + 1), &mut split);
                many.advance(minutes(i + 1), &mut split);
            }
        }
        many.advance(end, &mut split);
        prop_assert_eq!(all, split);
        prop_assert_eq!(one.stats(), many.stats());
    }

    /// Snapshot at any point, restore, continue: the same events as an
    /// uninterrupted run (pending timers, gaps and baselines included).
    #[test]
    fn restore_then_continue_equals_an_uninterrupted_run(rule in arb_rule(), traffic in arb_traffic(), cut in 0..40usize, ttl in 3..40i64) {
        let rule = Rule::parse("r", &rule).unwrap();
        let config = EvalConfig { idle_ttl: Span::from_mins(ttl), ..EvalConfig::default() };
        let groups: Vec<_> = (0..4).map(|g| group(&[("g", &format!("g{g}"))])).collect();
        let run = |restore_at| replay(std::slice::from_ref(&rule), config, &groups, &traffic, restore_at);
        let (plain, plain_stats) = run(None);
        let (restored, restored_stats) = run(Some(cut));
        prop_assert_eq!(plain, restored);
        prop_assert_eq!(plain_stats, restored_stats);
    }

    /// Rules that read results alike share their reading (one read, merge
    /// and staging per result): each still gives exactly the events it
    /// gives alone, across advances and a snapshot in the middle. Groups
    /// carry a second label, so a rule `by (g)` merges two results a window.
    #[test]
    fn rules_sharing_a_reading_give_the_events_each_gives_alone(
        rules in prop::collection::vec(arb_rule(), 2..5),
        traffic in arb_traffic(),
        cut in 0..40usize,
    ) {
        let rules = numbered(&rules);
        let config = EvalConfig::default();
        let groups: Vec<_> = (0..4).map(|g| group(&[("g", &format!("g{}", g / 2)), ("h", &format!("h{}", g % 2))])).collect();
        let (together, _) = replay(&rules, config, &groups, &traffic, Some(cut));
        for rule in rules {
            let name = rule.name.clone();
            let (alone, _) = replay(&[rule], config, &groups, &traffic, None);
            let mine: Vec<_> = together.iter().filter(|e| *e.rule == *name).cloned().collect();
            prop_assert_eq!(mine, alone, "{}", name);
        }
    }

    /// Display and parse are inverse on the text form.
    #[test]
    fn text_form_round_trips(rule in arb_rule()) {
        let parsed = Rule::parse("r", &rule).unwrap();
        prop_assert_eq!(Rule::parse("r", &parsed.to_string()).unwrap(), parsed);
    }

    /// No input makes the parser panic.
    #[test]
    fn parser_never_panics(text in "\\PC{0,80}") {
        let _ = Rule::parse("r", &text);
    }
}

#[test]
fn fuzz_seeds_are_valid_snapshots() {
    // `WRITE_FUZZ_SEEDS=1 cargo test --test alert fuzz_seeds` refreshes them.
    // The rules are those of fuzz/fuzz_targets/alert_snapshot.rs.
    let rules =
        numbered(&["avg(x) by (g) > 1 for 2m", "absent() by (g) for 3m", "spike(count()) > 3 keep_firing_for 1m"]);
    let mut ev = Evaluator::new(rules.clone(), EvalConfig::default()).unwrap();
    let mut out = Vec::new();
    for i in 0..12 {
        for g in ["a", "b"] {
            if !(g == "b" && i > 6) {
                ev.push(&values(&group(&[("g", g)]), MIN, i, &vec![5.0; 1 + i as usize % 3]));
            }
        }
        ev.advance(minutes(i), &mut out);
    }
    let mut notifier = edgestream::alert::Notifier::new(edgestream::alert::NotifierConfig::default(), &rules);
    for e in &out {
        notifier.push(e, e.at);
    }
    let (mut evaluator_bytes, mut notifier_bytes) = (Vec::new(), Vec::new());
    ev.snapshot(&mut evaluator_bytes);
    notifier.snapshot(&mut notifier_bytes);
    assert!(Evaluator::restore(rules.clone(), EvalConfig::default(), &evaluator_bytes).is_ok());
    assert!(
        edgestream::alert::Notifier::restore(edgestream::alert::NotifierConfig::default(), &rules, &notifier_bytes)
            .is_ok()
    );
    if std::env::var_os("WRITE_FUZZ_SEEDS").is_some() {
        let dir = format!("{}/fuzz/seeds/alert_snapshot", env!("CARGO_MANIFEST_DIR"));
        std::fs::write(format!("{dir}/evaluator.bin"), &evaluator_bytes).unwrap();
        std::fs::write(format!("{dir}/notifier.bin"), &notifier_bytes).unwrap();
    }
}

/// Heap bytes per alert instance, for BENCHMARKS.md: 10,000 groups under
/// one rule of each kind, and under ten threshold rules that read alike
/// (one instance key shared by ten instances), fed three windows.
#[test]
fn memory_per_instance() {
    const GROUPS: usize = 10_000;
    let groups: Vec<_> = (0..GROUPS).map(|i| group(&[("device", &format!("d{i:05}"))])).collect();
    let ten: Vec<Rule> =
        (0..10).map(|i| Rule::parse(&format!("r{i}"), &format!("avg(x) by (device) > {i} for 2m")).unwrap()).collect();
    for rule in [
        "avg(x) by (device) > 1 for 2m",
        "change(avg(x), 5) by (device) > 1",
        "spike(avg(x)) by (device) > 3",
        "absent() by (device) for 5m",
        "ten rules: avg(x) by (device) > 0..9 for 2m",
    ] {
        let rules = if rule.starts_with("ten") { ten.clone() } else { vec![Rule::parse("r", rule).unwrap()] };
        let instances = GROUPS * rules.len();
        let before = common::alloc::live();
        let (ev, _, peak) = common::alloc::measure(|| {
            let mut ev = Evaluator::new(rules, EvalConfig::default()).unwrap();
            let mut out = Vec::new();
            for i in 0..3 {
                for chunk in groups.chunks(1_000) {
                    for g in chunk {
                        ev.push(&result(g, MIN, i, 0.5));
                    }
                }
                ev.advance(minutes(i + 1), &mut out);
            }
            ev
        });
        assert_eq!(ev.stats().instances, instances as u64);
        let (held, peak) = ((common::alloc::live() - before) / instances, peak / instances);
        println!(
            "`{rule}`: {held} bytes per instance held, {peak} at peak (while a window of {GROUPS} results is staged)"
        );
        // The instance itself is 128 bytes; the rest is its key (shared by
        // the rules that read alike) and timer entries, growth slack, and
        // the staging kept for the next window.
        assert!(held < 640 && peak < 1024, "{rule}: {held} / {peak} bytes per instance");
    }
}

/// A version-1 snapshot (written before rules that read alike shared
/// their staged results, by the evaluator of `a5f48a8`) restores: its
/// per-rule copies of the buffered window collapse into one per reading
/// (counted twice, the sum of group `a` would fire `r1`), and the run
/// carries on as an uninterrupted one does.
#[test]
fn a_version_1_snapshot_restores() {
    let rules = numbered(&["sum(x) by (g) > 4 for 2m", "sum(x) by (g) > 9", "avg(x) by (g) > 2"]);
    // The run the snapshot was taken from, stopped where it was taken.
    let mut ev = Evaluator::new(rules.clone(), EvalConfig::default()).unwrap();
    let mut out = Vec::new();
    for i in 0..6i64 {
        for (g, h, v) in [("a", "h1", 2.0 + i as f64), ("a", "h2", 1.0), ("b", "h1", 4.0 - i as f64)] {
            ev.push(&result(&group(&[("g", g), ("h", h)]), MIN, i, v));
        }
        ev.advance(minutes(i), &mut out);
    }
    // What version 1 emitted up to the snapshot, as this version does.
    let named = |events: &[AlertEvent]| -> Vec<(String, AlertState, i64)> {
        events.iter().map(|e| (e.rule.to_string(), e.state, e.at.as_secs() / 60)).collect()
    };
    let before = [("r2", Firing, 1), ("r0", Pending, 3), ("r2", Resolved, 3), ("r2", Firing, 3), ("r0", Firing, 4)];
    assert_eq!(named(&out), before.map(|(r, s, at)| (r.to_owned(), s, at)));
    let mut tail = Vec::new();
    ev.advance(minutes(30), &mut tail);
    assert_eq!(named(&tail), [("r0".to_owned(), Resolved, 7), ("r2".to_owned(), Resolved, 7)]);

    let bytes = include_bytes!("fixtures/alert_snapshot_v1.bin");
    let mut restored = Evaluator::restore(rules, EvalConfig::default(), bytes).unwrap();
    let mut after = Vec::new();
    restored.advance(minutes(30), &mut after);
    assert_eq!(after, tail);
    assert_eq!(restored.stats(), ev.stats());
}

/// Staged results are restored to the reading that reads alike now: a rule
/// that changed what it reads does not carry results of its old reading
/// into rules that read alike to its new one.
#[test]
fn a_changed_rule_does_not_carry_staged_results_into_another_reading() {
    let rules = |a: &str| vec![Rule::parse("a", a).unwrap(), Rule::parse("d", "sum(x) by (g) > 1 tenant=t2").unwrap()];
    let mut ev = Evaluator::new(rules("sum(x) by (g) > 1 tenant=t1"), EvalConfig::default()).unwrap();
    ev.push(&result(&group_of("t1", "s", &[("g", "a")]), MIN, 0, 5.0));
    let mut bytes = Vec::new();
    ev.snapshot(&mut bytes);
    // Unchanged, the buffered result fires `a` for t1.
    let mut same = Evaluator::restore(rules("sum(x) by (g) > 1 tenant=t1"), EvalConfig::default(), &bytes).unwrap();
    let mut out = Vec::new();
    same.advance(minutes(1), &mut out);
    assert_eq!(out.iter().map(|e| (&*e.rule, &*e.tenant)).collect::<Vec<_>>(), [("a", "t1")]);
    // `a` now reads t2, as `d` does: neither evaluates t1's result.
    let mut changed = Evaluator::restore(rules("sum(x) by (g) > 1 tenant=t2"), EvalConfig::default(), &bytes).unwrap();
    let mut out = Vec::new();
    changed.advance(minutes(1), &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(changed.stats().instances, 0);
}

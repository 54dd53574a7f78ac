//! The pipeline end to end: NDJSON and Protobuf bodies from several
//! tenants through validation, rate limits, dedup, sampling, windows, tile
//! deltas, alerts and the archive; every event accounted for.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

mod common;

use common::traffic::{Rng, start};
use edgestream::alert::{AlertState, RuleFile};
use edgestream::delta::board::Replica;
use edgestream::event::{Event, EventBatch, RejectKind, json, protobuf};
use edgestream::flow::Quota;
use edgestream::pipeline::{
    ArchiveConfig, ArchiveFormat, DedupConfig, IngestError, Outputs, Pipeline, PipelineConfig, RawConfig,
    SamplingConfig, WindowConfig,
};
use edgestream::sample::HashKey;
use edgestream::sink::SinkConfig;
use edgestream::time::{Span, Timestamp};
use edgestream::window::{FieldSpec, WindowSpec};
use proptest::prelude::*;

const NDJSON: &str = "application/x-ndjson";
const PROTOBUF: &str = "application/x-protobuf";

fn at(secs: i64) -> Timestamp {
    start().saturating_add(Span::from_secs(secs))
}

fn event(tenant: &str, secs: i64, region: &str, latency: f64, id: u64) -> Event {
    Event::new(tenant, "http", at(secs))
        .with_id(format!("{tenant}-{id}"))
        .with_dim("region", region)
        .with_field("latency_ms", latency)
}

fn ndjson(events: &[Event]) -> Vec<u8> {
    let mut batch = EventBatch::new();
    events.iter().for_each(|e| batch.push(e));
    let mut out = Vec::new();
    json::encode_ndjson(&batch, &mut out);
    out
}

fn proto(events: &[Event]) -> Vec<u8> {
    let mut batch = EventBatch::new();
    events.iter().for_each(|e| batch.push(e));
    let mut out = Vec::new();
    protobuf::encode(&batch, &mut out);
    out
}

fn spec() -> WindowSpec {
    WindowSpec::new(Span::from_secs(10))
        .group_by(["region"])
        .field(FieldSpec::new("latency_ms").with_quantiles([0.99]))
        .idle_timeout(Some(Span::from_secs(5)))
}

#[test]
fn two_tenants_two_formats_through_to_deltas_alerts_and_files() {
    let alerts = RuleFile::from_json_str(
        r#"{"rules": [{"name": "slow", "rule": "avg(latency_ms) by (region) > 250 severity=critical"}]}"#,
    )
    .unwrap();
    let mut pipeline = Pipeline::builder()
        .window(WindowConfig::new("10s", spec()).board("metrics"))
        .alerts(alerts)
        .archive(ArchiveConfig::new(ArchiveFormat::Csv, SinkConfig::default()))
        .build()
        .unwrap();

    let acme: Vec<Event> = (0..20).map(|i| event("acme", i / 4, "eu", 300.0 + i as f64, i as u64)).collect();
    let globex: Vec<Event> = (0..10).map(|i| event("globex", i / 2, "us", 100.0, i as u64)).collect();
    let r1 = pipeline.ingest("acme", NDJSON, ndjson(&acme), at(6)).unwrap();
    let r2 = pipeline.ingest("globex", PROTOBUF, proto(&globex), at(6)).unwrap();
    assert_eq!((r1.received, r1.accepted), (20, 20));
    assert_eq!((r2.received, r2.accepted), (10, 10));
    // Events waiting: advance is due within a tick.
    assert_eq!(pipeline.next_deadline(), Some(at(6).saturating_add(Span::from_millis(250))));

    let mut out = Outputs::default();
    pipeline.advance(at(6), &mut out);
    assert!(out.results.is_empty(), "the window [0, 10) is still open");
    // The stream goes quiet; the idle timeout closes the window.
    let due = pipeline.next_deadline().unwrap();
    assert!(due > at(6) && due <= at(15), "{due}");
    pipeline.advance(at(16), &mut out);
    assert_eq!(out.results.len(), 2);
    let acme_result = out.results.iter().find(|r| &*r.result.group.tenant == "acme").unwrap();
    assert_eq!((acme_result.result.count, &*acme_result.window), (20.0, "10s"));

    // One delta per tenant board, each applying to a fresh replica.
    assert_eq!(out.deltas.len(), 2);
    for d in &out.deltas {
        let board = pipeline.board(&d.tenant, "metrics").unwrap();
        let mut replica = Replica::new();
        replica.apply_snapshot(&board.snapshot()).unwrap();
        assert_eq!(replica.seq(), Some(d.delta.seq));
    }
    // acme is slow, globex is not; one alert with its labels.
    assert_eq!(out.alerts.len(), 1, "{:?}", out.alerts);
    assert_eq!((&*out.alerts[0].tenant, out.alerts[0].state), ("acme", AlertState::Firing));
    assert_eq!(out.alerts[0].label("region"), Some("eu"));

    pipeline.flush_archive(&mut out);
    let rows: u64 = out.files.iter().map(|f| f.rows).sum();
    assert_eq!(rows, 30, "every admitted event archived");
    assert!(out.files.iter().any(|f| f.path.starts_with("tenant=globex/stream=http/")));

    let stats = pipeline.stats();
    assert_eq!(stats.total.admitted, 30);
    assert!(stats.tenants.values().all(|t| t.is_balanced()));
    assert_eq!(stats.windows["10s"].stats.on_time, 30);
    // The window [0, 10) was emitted at 16 s: 6 s after its end.
    let result_latency = &stats.latency["window_to_result"];
    assert_eq!(result_latency.count, 2);
    assert!((result_latency.p50.unwrap() - 6_000.0).abs() < 100.0, "{result_latency:?}");
    assert_eq!(stats.latency["ingest_to_advance"].count, 30);
    assert_eq!(stats.latency["window_to_alert"].count, 1);
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["tenants"]["acme"]["admitted"], 20);
}

#[test]
fn a_tenant_cannot_write_another_tenants_data() {
    let mut pipeline = Pipeline::builder().window(WindowConfig::new("10s", spec())).build().unwrap();
    let body = ndjson(&[event("acme", 1, "eu", 1.0, 1), event("globex", 1, "eu", 1.0, 2)]);
    let receipt = pipeline.ingest("acme", NDJSON, body, at(2)).unwrap();
    assert_eq!(receipt.accepted, 1);
    assert_eq!(receipt.rejected[0].index, 1);
    assert_eq!(receipt.rejected[0].reason.kind(), RejectKind::ForeignTenant);
    let stats = pipeline.tenant_stats("acme").unwrap();
    assert_eq!(stats.ingest.rejected.get(RejectKind::ForeignTenant), 1);
    assert!(pipeline.tenant_stats("globex").is_none(), "globex never ingested anything");
    let mut out = Outputs::default();
    pipeline.advance(at(60), &mut out);
    assert!(out.results.iter().all(|r| &*r.result.group.tenant == "acme"));
}

#[test]
fn rate_limits_answer_with_retry_after_and_count() {
    let mut pipeline = Pipeline::builder()
        .rate_limit(Quota::per_second(10).with_burst(10))
        .tenant_quota("big", Quota::per_second(1_000))
        .build()
        .unwrap();
    let body = |tenant: &str, n: u64| ndjson(&(0..n).map(|i| event(tenant, 1, "eu", 1.0, i)).collect::<Vec<_>>());
    let ok = pipeline.ingest("acme", NDJSON, body("acme", 8), at(1)).unwrap();
    assert_eq!((ok.accepted, ok.rate_limited), (8, 0));
    let refused = pipeline.ingest("acme", NDJSON, body("acme", 5), at(1)).unwrap();
    assert_eq!((refused.accepted, refused.rate_limited), (0, 5));
    assert_eq!(refused.retry_after, Some(Span::from_millis(300)));
    let too_big = pipeline.ingest("acme", NDJSON, body("acme", 11), at(100)).unwrap();
    assert_eq!((too_big.rate_limited, too_big.retry_after), (11, None), "larger than the burst: split it");
    // Another tenant has its own budget, and "big" its own quota.
    assert_eq!(pipeline.ingest("globex", NDJSON, body("globex", 10), at(1)).unwrap().accepted, 10);
    assert_eq!(pipeline.ingest("big", NDJSON, body("big", 500), at(1)).unwrap().accepted, 500);
    let acme = pipeline.tenant_stats("acme").unwrap();
    assert_eq!((acme.rate_limited, acme.batches_rate_limited, acme.admitted), (16, 2, 8));
    assert!(acme.is_balanced());
}

#[test]
fn a_retried_body_is_not_counted_twice() {
    let mut pipeline = Pipeline::builder()
        .window(WindowConfig::new("10s", spec()))
        .dedup(DedupConfig { ids_per_tenant: 1_000 })
        .build()
        .unwrap();
    let events: Vec<Event> = (0..50).map(|i| event("acme", 1, "eu", 1.0, i)).collect();
    let body = proto(&events);
    assert_eq!(pipeline.ingest("acme", PROTOBUF, body.clone(), at(1)).unwrap().accepted, 50);
    let retry = pipeline.ingest("acme", PROTOBUF, body, at(2)).unwrap();
    assert_eq!((retry.accepted, retry.duplicates), (0, 50));
    // The same ids from another tenant are not duplicates.
    let other: Vec<Event> = (0..50).map(|i| event("globex", 1, "eu", 1.0, i)).collect();
    let mut other = other;
    other.iter_mut().for_each(|e| e.id = Some(format!("acme-{}", 0).into()));
    let r = pipeline.ingest("globex", PROTOBUF, proto(&other), at(2)).unwrap();
    assert_eq!((r.accepted, r.duplicates), (1, 49), "within one body, repeats are duplicates");
    let mut out = Outputs::default();
    pipeline.advance(at(60), &mut out);
    let acme = out.results.iter().find(|r| &*r.result.group.tenant == "acme").unwrap();
    assert_eq!(acme.result.count, 50.0);

    // A retry is not charged to the rate limit: only new events are.
    let mut limited = Pipeline::builder()
        .rate_limit(Quota::per_second(10).with_burst(10))
        .dedup(DedupConfig { ids_per_tenant: 100 })
        .build()
        .unwrap();
    let body = proto(&(0..8).map(|i| event("acme", 1, "eu", 1.0, i)).collect::<Vec<_>>());
    assert_eq!(limited.ingest("acme", PROTOBUF, body.clone(), at(1)).unwrap().accepted, 8);
    let retry = limited.ingest("acme", PROTOBUF, body, at(1)).unwrap();
    assert_eq!((retry.duplicates, retry.rate_limited), (8, 0));
    let more = proto(&(8..11).map(|i| event("acme", 1, "eu", 1.0, i)).collect::<Vec<_>>());
    let refused = limited.ingest("acme", PROTOBUF, more.clone(), at(1)).unwrap();
    assert_eq!(refused.rate_limited, 3, "only 2 cells left");
    let later = limited.ingest("acme", PROTOBUF, more, at(2)).unwrap();
    assert_eq!((later.accepted, later.duplicates), (3, 0), "refused ids were not remembered");
}

#[test]
fn sampled_events_carry_their_weight_and_the_rest_are_counted() {
    let mut pipeline = Pipeline::builder()
        .window(WindowConfig::new("10s", spec()))
        .sampling(SamplingConfig::Hash { rate: 0.25, key: HashKey::Id, seed: 7 })
        .raw(RawConfig { enabled: true, ..RawConfig::default() })
        .build()
        .unwrap();
    let events: Vec<Event> = (0..4_000).map(|i| event("acme", 1, "eu", 1.0, i)).collect();
    let receipt = pipeline.ingest("acme", NDJSON, ndjson(&events), at(1)).unwrap();
    assert_eq!(receipt.accepted + receipt.sampled_out, 4_000);
    assert!((800..1_200).contains(&receipt.accepted), "{receipt:?}");
    let mut out = Outputs::default();
    pipeline.advance(at(60), &mut out);
    // The weighted count is exactly 4 per kept event.
    assert_eq!(out.results[0].result.count, 4.0 * receipt.accepted as f64);
    assert_eq!(out.raw[0].events.len(), receipt.accepted);
    assert!(out.raw[0].weights.iter().all(|w| *w == 4.0));
    assert!(pipeline.tenant_stats("acme").unwrap().is_balanced());
}

#[test]
fn late_events_come_back_to_the_host() {
    let mut pipeline = Pipeline::builder().window(WindowConfig::new("10s", spec())).build().unwrap();
    pipeline.ingest("acme", NDJSON, ndjson(&[event("acme", 30, "eu", 1.0, 1)]), at(30)).unwrap();
    let mut out = Outputs::default();
    pipeline.advance(at(30), &mut out);
    let receipt = pipeline.ingest("acme", NDJSON, ndjson(&[event("acme", 1, "eu", 1.0, 2)]), at(31)).unwrap();
    assert_eq!((receipt.accepted, receipt.late), (1, 1));
    pipeline.advance(at(31), &mut out);
    assert_eq!(out.late.len(), 1);
    assert_eq!(out.late[0].event.id.as_ref().unwrap().as_bytes(), b"acme-2");
    assert_eq!(pipeline.tenant_stats("acme").unwrap().late, 1);
}

#[test]
fn bad_bodies_are_typed_errors_and_counted() {
    let mut pipeline = Pipeline::builder().max_tenants(2).build().unwrap();
    assert!(matches!(pipeline.ingest("acme", NDJSON, "{not json", at(0)), Err(IngestError::Decode(_))));
    assert!(matches!(pipeline.ingest("acme", "text/html", "x", at(0)), Err(IngestError::Decode(_))));
    assert!(matches!(pipeline.ingest("", NDJSON, "{}", at(0)), Err(IngestError::EmptyTenant)));
    assert_eq!(pipeline.tenant_stats("acme").unwrap().ingest.batches_malformed, 2);
    pipeline.ingest("b", NDJSON, ndjson(&[event("b", 0, "eu", 1.0, 1)]), at(0)).unwrap();
    assert_eq!(
        pipeline.ingest("c", NDJSON, ndjson(&[event("c", 0, "eu", 1.0, 1)]), at(0)),
        Err(IngestError::TooManyTenants { max: 2 })
    );
    assert_eq!(pipeline.stats().tenants_refused, 1);
    // An hour later, the tenant idle longest makes room; its counters stay
    // in the totals.
    let later = at(3_600);
    pipeline.ingest("c", NDJSON, ndjson(&[event("c", 3_600, "eu", 1.0, 1)]), later).unwrap();
    let stats = pipeline.stats();
    assert_eq!((stats.tenants_retired, stats.tenants.len()), (1, 2));
    assert!(!stats.tenants.contains_key("acme"));
    assert_eq!(stats.total.ingest.batches_malformed, 2, "acme's malformed bodies are still counted");
    assert_eq!(stats.total.admitted, 2);
    assert!(stats.total.is_balanced());
}

#[test]
fn configuration_loads_from_yaml_and_json_and_is_checked() {
    let yaml = r#"
tenants:
  rate: {cells: 1000, per: 1s, burst: 2000}
  quotas:
    acme: {cells: 10, per: 1s, burst: 10}
sampling: {kind: hash, rate: 0.5}
windows:
  - name: 1s
    spec: {size: 1s, group_by: [region], fields: [{field: latency_ms}]}
    board: metrics
    rollup: {tiers: [{size: 1m, retention: 1h}]}
alerts:
  rules:
    - name: slow
      rule: avg(latency_ms) > 250 for 1m
dedup: {ids_per_tenant: 5000}
archive:
  format: {kind: csv}
tick: 100ms
"#;
    let config = PipelineConfig::from_yaml_str(yaml).unwrap();
    assert_eq!(config.windows[0].board.as_deref(), Some("metrics"));
    let pipeline = Pipeline::new(config.clone()).unwrap();
    assert!(pipeline.rollup("1s").is_some());
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(PipelineConfig::from_json_str(&json).unwrap(), config);

    for bad in [
        "windows: [{name: a, spec: {size: 1s}}, {name: a, spec: {size: 1s}}]",
        "windows: [{name: a, spec: {size: 0s}}]",
        "sampling: {kind: hash, rate: 2}",
        "alerts: {rules: [{name: x, rule: 'avg(x) >'}]}",
        "tick: 0s",
        "nonsense: 1",
        "windows: [{name: a, spec: {size: 1s}, board: m}, {name: b, spec: {size: 1s}, board: m}]",
        "windows: [{name: alerts, spec: {size: 1s}}]",
        "windows: [{name: a, spec: {size: 1s}, board: events}]",
        "windows: [{name: a, spec: {size: 1s, fields: [{field: x, aggregates: [median]}]}}]",
    ] {
        let result = PipelineConfig::from_yaml_str(bad).and_then(Pipeline::new);
        assert!(result.is_err(), "{bad}");
    }
    // A rule reading an aggregate that the windows feeding it do not keep
    // would never see a value.
    let keeping = |aggregates: &str| {
        format!(
            "windows: [{{name: a, spec: {{size: 1s, fields: [{{field: x, aggregates: [{aggregates}]}}]}}}}]\n\
             alerts: {{rules: [{{name: r, rule: 'avg(x) > 1'}}]}}"
        )
    };
    let refused = PipelineConfig::from_yaml_str(&keeping("max")).and_then(Pipeline::new).unwrap_err();
    assert!(refused.to_string().contains("avg(x)"), "{refused}");
    Pipeline::new(PipelineConfig::from_yaml_str(&keeping("max, mean")).unwrap()).unwrap();
    // Only the operators whose window size the rule names count.
    let two = |rule: &str| {
        format!(
            "windows: [{{name: a, spec: {{size: 1s, fields: [{{field: x, aggregates: [max]}}]}}}},\n\
                       {{name: b, spec: {{size: 5s, fields: [{{field: x}}]}}}}]\n\
             alerts: {{rules: [{{name: r, rule: '{rule}'}}]}}"
        )
    };
    Pipeline::new(PipelineConfig::from_yaml_str(&two("avg(x) > 1 window=5s")).unwrap()).unwrap();
    let refused = PipelineConfig::from_yaml_str(&two("avg(x) > 1 window=1s")).and_then(Pipeline::new);
    assert!(refused.is_err());
}

/// Traffic of many kinds: valid, invalid, foreign, duplicate, malformed.
fn body(rng: &mut Rng, tenant: &str, serial: &mut u64) -> (String, Vec<u8>) {
    let n = rng.below(30) as usize;
    let tenants = ["t0", "t1", "t2"];
    let events: Vec<Event> = (0..n)
        .map(|_| {
            *serial += 1;
            let owner = if rng.below(10) == 0 { tenants[rng.below(3) as usize] } else { tenant };
            let id = if rng.below(5) == 0 { *serial / 2 } else { *serial };
            let latency = if rng.below(20) == 0 { f64::NAN } else { rng.below(500) as f64 };
            let mut e = event(owner, rng.below(120) as i64, ["eu", "us", "ap"][rng.below(3) as usize], latency, id);
            if rng.below(25) == 0 {
                e.tenant = String::new();
            }
            e
        })
        .collect();
    match rng.below(10) {
        0 => (NDJSON.into(), b"{\"tenant\": oops".to_vec()),
        1..=4 => (PROTOBUF.into(), proto(&events)),
        _ => (NDJSON.into(), ndjson(&events)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever the traffic, every event of every tenant is accounted for:
    /// each receipt sums up, and the stats balance at all times.
    #[test]
    fn nothing_is_lost_silently(seed in any::<u64>(), rate in 5u64..200, sample in 0u8..3) {
        let mut rng = Rng::new(seed);
        let sampling = match sample {
            0 => SamplingConfig::None,
            1 => SamplingConfig::Hash { rate: 0.5, key: HashKey::Id, seed },
            _ => SamplingConfig::Adaptive { by: "region".into(), config: Default::default() },
        };
        let mut pipeline = Pipeline::builder()
            .window(WindowConfig::new("10s", spec()).board("metrics"))
            .rate_limit(Quota::per_second(rate))
            .dedup(DedupConfig { ids_per_tenant: 50 })
            .sampling(sampling)
            .raw(RawConfig { enabled: true, max_buffered: 40 })
            .build()
            .unwrap();
        let mut serial = 0;
        let mut out = Outputs::default();
        let mut received = std::collections::HashMap::<String, u64>::new();
        for step in 0..40 {
            let now = at(step * 3);
            let tenant = ["t0", "t1", "t2"][rng.below(3) as usize];
            let (content_type, bytes) = body(&mut rng, tenant, &mut serial);
            if let Ok(r) = pipeline.ingest(tenant, &content_type, bytes, now) {
                prop_assert_eq!(r.received, r.accepted + r.rejected.len() + r.rate_limited + r.duplicates + r.sampled_out);
                *received.entry(tenant.to_owned()).or_default() += r.received as u64;
            }
            if rng.below(3) == 0 {
                pipeline.advance(now, &mut out);
            }
            let stats = pipeline.stats();
            for (name, t) in &stats.tenants {
                prop_assert!(t.is_balanced(), "{name}: {t:?}");
                prop_assert_eq!(t.ingest.received, received.get(name).copied().unwrap_or(0));
            }
        }
        pipeline.advance(at(1_000), &mut out);
        let stats = pipeline.stats();
        let raw: usize = out.raw.iter().map(|b| b.events.len()).sum();
        prop_assert_eq!(raw as u64 + stats.total.raw_dropped, stats.total.admitted);
        prop_assert_eq!(stats.windows["10s"].stats.on_time + stats.windows["10s"].stats.late_accepted
            + stats.windows["10s"].stats.late_dropped, stats.total.admitted);
    }
}

fn restart_config() -> PipelineConfig {
    PipelineConfig::from_yaml_str(
        r#"
tenants:
  rate: {cells: 40, per: 1s, burst: 60}
sampling: {kind: adaptive, by: region, config: {target_rate: 20, interval: 5s}}
windows:
  - name: 10s
    spec: {size: 10s, group_by: [region], idle_timeout: 5s, allowed_lateness: 10s, out_of_orderness: 2s,
           fields: [{field: latency_ms, quantiles: [0.5, 0.99]}]}
    board: metrics
    rollup: {tiers: [{size: 1m, retention: 1h}]}
alerts:
  rules:
    - name: slow
      rule: avg(latency_ms) by (region) > 200 for 20s recover < 150
  notifier:
    channels: {ops: {kind: webhook, url: "https://example.com/hook"}}
    default_channels: [ops]
    route: {group_wait: 5s, group_interval: 10s, repeat_interval: 1m}
dedup: {ids_per_tenant: 30}
archive: {format: {kind: csv}}
raw: {enabled: true}
"#,
    )
    .unwrap()
}

/// What a step's outputs say, comparable across runs.
fn summary(out: &Outputs) -> Vec<String> {
    let mut lines: Vec<String> = out
        .results
        .iter()
        .map(|r| {
            let x = &r.result;
            let fields: Vec<String> = x.fields.iter().map(|f| format!("{:?}", f.scalar)).collect();
            format!(
                "{} {:?} {} {} {} {} {} {:?}",
                r.window, x.group, x.start, x.count, x.events, x.revision, x.is_final, fields
            )
        })
        .collect();
    lines.extend(out.deltas.iter().map(|d| format!("{} {:?}", d.tenant, d.delta)));
    lines.extend(out.alerts.iter().map(|a| format!("{a:?}")));
    lines.extend(out.notifications.iter().map(|n| format!("{n:?}")));
    lines.extend(out.files.iter().map(|f| format!("{} {} {:?}", f.path, f.rows, f.bytes)));
    lines.extend(out.raw.iter().map(|b| format!("{} {:?} {:?}", b.tenant, b.events.to_events(), b.weights)));
    lines.extend(out.late.iter().map(|l| format!("{:?}", l)));
    lines.extend(out.fidelity.iter().map(|c| format!("{c:?}")));
    lines
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// A pipeline restored from a snapshot continues exactly as one that
    /// never stopped: same results, deltas, alerts, notifications, files,
    /// raw and late events, and the same stats.
    #[test]
    fn restore_then_continue_equals_an_uninterrupted_run(seed in any::<u64>(), restarts in proptest::collection::vec(any::<bool>(), 30)) {
        let mut rng = Rng::new(seed);
        let traffic: Vec<(String, String, Vec<u8>)> = (0..30)
            .map(|_| {
                let tenant = ["t0", "t1", "t2"][rng.below(3) as usize];
                let mut serial = rng.below(1_000);
                let (ct, bytes) = body(&mut rng, tenant, &mut serial);
                (tenant.to_owned(), ct, bytes)
            })
            .collect();
        let mut straight = Pipeline::new(restart_config()).unwrap();
        let mut restarted = Pipeline::new(restart_config()).unwrap();
        for (step, ((tenant, ct, bytes), restart)) in traffic.iter().zip(&restarts).enumerate() {
            let now = at(step as i64 * 4);
            let a = straight.ingest(tenant, ct, bytes.clone(), now).map(|r| format!("{r:?}")).map_err(|e| e.to_string());
            let b = restarted.ingest(tenant, ct, bytes.clone(), now).map(|r| format!("{r:?}")).map_err(|e| e.to_string());
            prop_assert_eq!(a, b);
            let (mut out_a, mut out_b) = (Outputs::default(), Outputs::default());
            straight.advance(now, &mut out_a);
            restarted.advance(now, &mut out_b);
            if *restart {
                straight.flush_archive(&mut out_a);
                restarted.flush_archive(&mut out_b);
                let mut blob = Vec::new();
                restarted.snapshot(&mut blob, &mut out_b).unwrap();
                restarted = Pipeline::restore(restart_config(), &blob).unwrap();
            }
            prop_assert_eq!(summary(&out_a), summary(&out_b), "step {}", step);
            prop_assert_eq!(straight.next_deadline(), restarted.next_deadline());
        }
        let (mut out_a, mut out_b) = (Outputs::default(), Outputs::default());
        straight.advance(at(10_000), &mut out_a);
        restarted.advance(at(10_000), &mut out_b);
        prop_assert_eq!(summary(&out_a), summary(&out_b));
        prop_assert_eq!(
            serde_json::to_value(straight.stats()).unwrap(),
            serde_json::to_value(restarted.stats()).unwrap()
        );
    }
}

#[test]
fn damaged_or_foreign_snapshots_are_refused() {
    let mut pipeline = Pipeline::new(restart_config()).unwrap();
    pipeline.ingest("t0", NDJSON, ndjson(&[event("t0", 1, "eu", 1.0, 1)]), at(1)).unwrap();
    let mut blob = Vec::new();
    pipeline.snapshot(&mut blob, &mut Outputs::default()).unwrap();
    assert!(Pipeline::restore(restart_config(), &blob).is_ok());
    for cut in [0, 1, 7, blob.len() / 2, blob.len() - 1] {
        assert!(Pipeline::restore(restart_config(), &blob[..cut]).is_err(), "cut at {cut}");
    }
    let mut flipped = blob.clone();
    flipped[blob.len() / 3] ^= 0x40;
    assert!(matches!(
        Pipeline::restore(restart_config(), &flipped),
        Err(edgestream::pipeline::PipelineError::Snapshot(_))
    ));
    // A restored pipeline with a changed window spec starts that operator empty.
    let mut changed = restart_config();
    changed.windows[0].spec.size = Span::from_secs(20);
    let restored = Pipeline::restore(changed, &blob).unwrap();
    assert_eq!(restored.stats().windows["10s"].windows, 0);
    assert_eq!(restored.tenant_stats("t0").unwrap().admitted, 1, "counters survive");
}

/// A snapshot of the fuzz target's pipeline (`fuzz/fuzz_targets/pipeline_snapshot.rs`)
/// after three events restores with its config; with `WRITE_FUZZ_SEEDS`
/// set it becomes the target's seed (without the checksum, which the
/// target appends).
#[test]
fn the_pipeline_snapshot_fuzz_seed_restores() {
    let config = || PipelineConfig::from_json_str(include_str!("../fuzz/pipeline_snapshot_config.json")).unwrap();
    let mut pipeline = Pipeline::new(config()).unwrap();
    let events: Vec<Event> = (0..3)
        .map(|i| {
            Event::new("t", "s", at(i * 4)).with_id(format!("e{i}")).with_dim("region", "eu").with_field("x", i as f64)
        })
        .collect();
    pipeline.ingest("t", NDJSON, ndjson(&events), at(8)).unwrap();
    pipeline.advance(at(9), &mut Outputs::default());
    let mut blob = Vec::new();
    pipeline.snapshot(&mut blob, &mut Outputs::default()).unwrap();
    Pipeline::restore(config(), &blob).unwrap();
    if std::env::var_os("WRITE_FUZZ_SEEDS").is_some() {
        let seed = &blob[..blob.len() - 8];
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/pipeline_snapshot/three_events.bin"), seed)
            .unwrap();
    }
}

#[test]
fn tokens_gate_ingest_and_reads_and_refusals_are_audited() {
    use edgestream::auth::{AuthError, Claims, Keys, Mode};
    use edgestream::pipeline::{AuditAction, AuthConfig, KeyConfig};

    let secret = "a-secret-of-at-least-thirty-two-bytes";
    let mut config = PipelineConfig::default();
    config.auth =
        Some(AuthConfig { keys: vec![KeyConfig { kid: "k1".into(), secret: secret.into() }], ..AuthConfig::default() });
    config.tenants.rate = Some(Quota::per_second(5));
    let mut pipeline = Pipeline::new(config).unwrap();
    let mut keys = Keys::new();
    keys.add("k1", secret.as_bytes()).unwrap();
    let exp = at(3_600);
    let writer = keys.sign("k1", &Claims::new("acme", exp).ingest()).unwrap();
    let reader = keys.sign("k1", &Claims::new("acme", exp).topics(["metrics"]).modes([Mode::Deltas])).unwrap();

    // The token names the tenant: an event claiming another is rejected.
    let body = ndjson(&[event("acme", 1, "eu", 1.0, 1), event("globex", 1, "eu", 1.0, 2)]);
    let receipt = pipeline.ingest_with_token(&writer, NDJSON, body, at(1)).unwrap();
    assert_eq!((receipt.accepted, receipt.rejected[0].reason.kind()), (1, RejectKind::ForeignTenant));
    // A reader may not ingest; a forged or expired token is refused.
    let forbidden = pipeline.ingest_with_token(&reader, NDJSON, ndjson(&[event("acme", 1, "eu", 1.0, 3)]), at(1));
    assert!(matches!(forbidden, Err(IngestError::Auth(AuthError::Forbidden { .. }))));
    let mut other = Keys::new();
    other.add("k1", b"another-secret-of-thirty-two-bytes!!").unwrap();
    let forged = other.sign("k1", &Claims::new("acme", exp).ingest()).unwrap();
    assert!(matches!(pipeline.ingest_with_token(&forged, NDJSON, "{}", at(1)), Err(IngestError::Auth(_))));
    assert!(pipeline.ingest_with_token(&writer, NDJSON, "{}", at(4_000)).is_err(), "expired");

    // A token for acme never reads globex, nor a topic or mode it lacks.
    let claims = pipeline.verify_token(&reader, at(2)).unwrap();
    assert!(pipeline.authorize(&claims, "acme", "metrics", Mode::Deltas, at(2)).is_ok());
    assert!(pipeline.authorize(&claims, "globex", "metrics", Mode::Deltas, at(2)).is_err());
    assert!(pipeline.authorize(&claims, "acme", "events", Mode::Deltas, at(2)).is_err());
    assert!(pipeline.authorize(&claims, "acme", "metrics", Mode::Full, at(2)).is_err());

    // A quota hit is audited too.
    let many = ndjson(&(10..20).map(|i| event("acme", 1, "eu", 1.0, i)).collect::<Vec<_>>());
    assert_eq!(pipeline.ingest_with_token(&writer, NDJSON, many, at(1)).unwrap().rate_limited, 10);

    let mut out = Outputs::default();
    pipeline.advance(at(2), &mut out);
    let actions: Vec<String> = out
        .audit
        .iter()
        .map(|a| match &a.action {
            AuditAction::TokenRefused { reason, count } => format!("refused {reason} x{count}"),
            AuditAction::Forbidden { asked } => format!("forbidden {asked}"),
            AuditAction::QuotaHit { events, .. } => format!("quota {events}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        actions,
        [
            "forbidden ingest",
            "refused signature x1",
            "refused expired x1",
            "forbidden deltas globex/metrics",
            "forbidden deltas acme/events",
            "forbidden full acme/metrics",
            "quota 10",
        ]
    );
    assert!(out.audit.iter().all(|a| a.at <= at(4_000)));
    let json = serde_json::to_string(&out.audit[0]).unwrap();
    assert!(json.contains(r#""action":"forbidden""#), "{json}");

    // A flood of bad tokens is one audit event with a count.
    for _ in 0..20_000 {
        assert!(pipeline.verify_token("not.a.token", at(5)).is_err());
    }
    out.clear();
    pipeline.advance(at(5), &mut out);
    assert!(
        matches!(out.audit.as_slice(), [a] if matches!(&a.action, AuditAction::TokenRefused { count: 20_000, .. })),
        "{:?}",
        out.audit
    );
    assert_eq!(pipeline.stats().audit_dropped, 0);
}

mod subscriptions {
    use super::*;
    use edgestream::auth::{Claims, Keys, Mode};
    use edgestream::delta::board::{Frame, Replica};
    use edgestream::pipeline::{AuthConfig, EvictReason, KeyConfig, SubscribeConfig, SubscribeError, Subscription};

    fn pipeline() -> Pipeline {
        Pipeline::builder()
            .window(WindowConfig::new("10s", spec()).board("metrics"))
            .alerts(
                RuleFile::from_json_str(
                    r#"{"rules": [{"name": "slow", "rule": "avg(latency_ms) by (region) > 250"}]}"#,
                )
                .unwrap(),
            )
            .raw(RawConfig { enabled: true, ..RawConfig::default() })
            .build()
            .unwrap()
    }

    fn take(p: &mut Pipeline, id: u64) -> Vec<Frame> {
        let mut frames = Vec::new();
        p.take_frames(id, &mut frames).unwrap();
        frames
    }

    #[test]
    fn each_mode_gets_its_frames_and_only_its_tenants() {
        let mut p = pipeline();
        let deltas = p.subscribe(Subscription::new("acme", "metrics", Mode::Deltas)).unwrap();
        let aggregates =
            p.subscribe(Subscription::new("acme", "metrics", Mode::Aggregates).filter("region", "eu")).unwrap();
        let events = p.subscribe(Subscription::new("acme", "events", Mode::Full).filter("region", "us")).unwrap();
        let alerts = p.subscribe(Subscription::new("acme", "alerts", Mode::Full)).unwrap();
        let other = p.subscribe(Subscription::new("globex", "metrics", Mode::Aggregates)).unwrap();

        // Join: the deltas subscriber gets a snapshot of the (empty) board.
        let mut replica = Replica::new();
        let first = take(&mut p, deltas);
        assert!(matches!(first.as_slice(), [Frame::Snapshot(s)] if s.seq == 0));
        replica.apply(&first[0]).unwrap();

        let body = ndjson(&[event("acme", 1, "eu", 300.0, 1), event("acme", 2, "us", 100.0, 2)]);
        p.ingest("acme", NDJSON, body, at(3)).unwrap();
        let mut out = Outputs::default();
        p.advance(at(3), &mut out);
        // Raw events go out at once, filtered by dim.
        assert_eq!(out.ready, [events]);
        let frames = take(&mut p, events);
        let Frame::Events(f) = &frames[0] else { panic!("{frames:?}") };
        assert_eq!((f.events.len(), f.events.get(0).unwrap().dim("region")), (1, Some("us")));

        out.clear();
        p.advance(at(30), &mut out);
        assert_eq!(out.ready, [deltas, aggregates, alerts]);
        for frame in take(&mut p, deltas) {
            replica.apply(&frame).unwrap();
        }
        assert_eq!(replica.tiles().count(), p.board("acme", "metrics").unwrap().len());
        let Frame::Results(r) = &take(&mut p, aggregates)[0] else { panic!() };
        assert_eq!((r.results.len(), r.results[0].label("region")), (1, Some("eu")));
        let Frame::Alert(a) = &take(&mut p, alerts)[0] else { panic!() };
        assert_eq!(a.label("region"), Some("eu"));
        assert!(take(&mut p, other).is_empty(), "globex sees nothing of acme");

        // Frames encode for the wire in the subscriber's format.
        let json = p.subscribe(Subscription::new("acme", "metrics", Mode::Deltas).json()).unwrap();
        let mut encoded = Vec::new();
        p.take_encoded(json, &mut encoded).unwrap();
        assert!(Frame::from_json(std::str::from_utf8(&encoded[0]).unwrap()).is_ok());
        assert_eq!(p.stats().subscribers, 6);
    }

    #[test]
    fn unknown_topics_caps_and_tokens() {
        let secret = "a-secret-of-at-least-thirty-two-bytes";
        let mut config = PipelineConfig::default();
        config.windows.push(WindowConfig::new("10s", spec()).board("metrics"));
        config.auth = Some(AuthConfig {
            keys: vec![KeyConfig { kid: "k".into(), secret: secret.into() }],
            ..AuthConfig::default()
        });
        config.subscribers = SubscribeConfig { max_per_tenant: 2, ..SubscribeConfig::default() };
        let mut p = Pipeline::new(config).unwrap();
        assert!(matches!(
            p.subscribe(Subscription::new("acme", "nope", Mode::Deltas)),
            Err(SubscribeError::UnknownTopic { .. })
        ));
        assert!(
            matches!(
                p.subscribe(Subscription::new("acme", "events", Mode::Full)),
                Err(SubscribeError::UnknownTopic { .. })
            ),
            "raw is off"
        );
        let mut keys = Keys::new();
        keys.add("k", secret.as_bytes()).unwrap();
        let token = keys.sign("k", &Claims::new("acme", at(3_600)).topics(["metrics"])).unwrap();
        let a = p.subscribe_with_token(&token, Subscription::new("acme", "metrics", Mode::Deltas), at(1)).unwrap();
        assert!(matches!(
            p.subscribe_with_token(&token, Subscription::new("globex", "metrics", Mode::Deltas), at(1)),
            Err(SubscribeError::Auth(_))
        ));
        p.subscribe_with_token(&token, Subscription::new("acme", "10s", Mode::Aggregates), at(1)).unwrap_err();
        p.subscribe(Subscription::new("acme", "10s", Mode::Aggregates)).unwrap();
        assert_eq!(
            p.subscribe(Subscription::new("acme", "metrics", Mode::Deltas)),
            Err(SubscribeError::TooMany { max: 2 })
        );
        assert!(p.unsubscribe(a));
        assert!(p.subscribe(Subscription::new("acme", "metrics", Mode::Deltas)).is_ok());
    }

    #[test]
    fn a_subscriber_that_stays_slow_is_evicted_and_memory_stays_bounded() {
        let mut config = PipelineConfig::default();
        config.windows.push(WindowConfig::new("10s", spec()).board("metrics"));
        config.raw = RawConfig { enabled: true, ..RawConfig::default() };
        config.subscribers =
            SubscribeConfig { max_queued: 4, max_lag: Span::from_secs(20), ..SubscribeConfig::default() };
        let mut p = Pipeline::new(config).unwrap();
        let slow = p.subscribe(Subscription::new("acme", "events", Mode::Full)).unwrap();
        let fast = p.subscribe(Subscription::new("acme", "events", Mode::Full)).unwrap();
        let deltas = p.subscribe(Subscription::new("acme", "metrics", Mode::Deltas)).unwrap();
        let mut out = Outputs::default();
        for step in 0..30 {
            p.ingest("acme", NDJSON, ndjson(&[event("acme", step, "eu", 1.0, step as u64)]), at(step)).unwrap();
            out.clear();
            p.advance(at(step), &mut out);
            take(&mut p, fast);
            if let Some(&(id, reason)) = out.evicted.first() {
                assert_eq!((id, reason), (slow, EvictReason::SlowConsumer));
                assert!(step > 20, "evicted at {step}");
                assert!(out.audit.iter().any(|a| format!("{:?}", a.action).contains("SubscriberEvicted")));
                assert!(p.subscriber(slow).is_none());
                assert!(p.subscriber(fast).is_some() && p.subscriber(deltas).is_some(), "a deltas outbox conflates");
                return;
            }
            let (_, stats) = p.subscriber(slow).unwrap();
            assert!(step < 4 || stats.dropped > 0, "a full queue drops its oldest frames");
        }
        panic!("the slow subscriber was never evicted");
    }
}

#[test]
fn rules_change_while_running_and_the_change_is_audited() {
    use edgestream::pipeline::AuditAction;
    let rules = |json: &str| RuleFile::from_json_str(json).unwrap();
    let mut p = Pipeline::builder()
        .window(WindowConfig::new("10s", spec()))
        .alerts(rules(
            r#"{"rules": [{"name": "slow", "rule": "avg(latency_ms) by (region) > 250"},
                                      {"name": "busy", "rule": "count() by (region) > 100"}]}"#,
        ))
        .build()
        .unwrap();
    p.ingest("acme", NDJSON, ndjson(&[event("acme", 1, "eu", 300.0, 1)]), at(2)).unwrap();
    let mut out = Outputs::default();
    p.advance(at(16), &mut out);
    assert_eq!(out.alerts.len(), 1, "slow fires");

    p.set_alerts(
        rules(
            r#"{"rules": [{"name": "busy", "rule": "count() by (region) > 50"},
                             {"name": "quiet", "rule": "count() by (region) < 1"}]}"#,
        ),
        at(17),
    )
    .unwrap();
    out.clear();
    p.advance(at(18), &mut out);
    assert!(
        out.alerts.iter().any(|a| &*a.rule == "slow" && a.state == AlertState::Resolved),
        "the removed rule's alert resolves: {:?}",
        out.alerts
    );
    let changed = out.audit.iter().find_map(|a| match &a.action {
        AuditAction::RulesChanged { added, removed, changed } => {
            Some((added.clone(), removed.clone(), changed.clone()))
        }
        _ => None,
    });
    assert_eq!(changed, Some((vec!["quiet".to_owned()], vec!["slow".to_owned()], vec!["busy".to_owned()])));
    assert!(p.set_alerts(rules(r#"{"rules": []}"#), at(19)).is_ok());
    assert!(p.set_alerts(RuleFile::default(), at(19)).is_ok());
}

#[test]
fn closing_puts_every_admitted_event_in_a_result_and_a_file() {
    let mut p = Pipeline::builder()
        .window(WindowConfig::new("10s", spec()))
        .archive(ArchiveConfig::new(ArchiveFormat::Csv, SinkConfig::default()))
        .build()
        .unwrap();
    let events: Vec<Event> = (0..40).map(|i| event("acme", i, ["eu", "us"][i as usize % 2], 1.0, i as u64)).collect();
    let receipt = p.ingest("acme", NDJSON, ndjson(&events), at(40)).unwrap();
    let mut out = Outputs::default();
    p.advance(at(40), &mut out);
    let before: f64 = out.results.iter().map(|r| r.result.count).sum();
    assert!(before < 40.0, "the last windows are still open");
    p.close(at(40), &mut out);
    let counted: f64 = out.results.iter().filter(|r| r.result.is_final).map(|r| r.result.count).sum();
    assert_eq!(counted, receipt.accepted as f64);
    assert_eq!(out.files.iter().map(|f| f.rows).sum::<u64>(), receipt.accepted as u64);
    assert_eq!(p.stats().windows["10s"].windows, 0);
}

//! The notifier: grouping timers, escalation, acknowledgements, silences,
//! and the payloads it hands to the host.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use common::alerts::{group, minutes, result};
use edgestream::alert::payload::{self, Target};
use edgestream::alert::{
    AlertEvent, AlertState, Channel, EvalConfig, Evaluator, Matcher, Notification, Notifier, NotifierConfig, Route,
    Rule, Silence,
};
use edgestream::time::{Span, Timestamp};

const MIN: Span = Span::from_mins(1);

fn secs(s: i64) -> Timestamp {
    Timestamp::from_secs(s).unwrap()
}

fn config() -> NotifierConfig {
    let mut config = NotifierConfig::default();
    config.channels.insert("ops".into(), Channel::Webhook { url: "http://127.0.0.1:9/hook".into(), max_alerts: 0 });
    config.channels.insert(
        "pager".into(),
        Channel::Slack { url: "http://127.0.0.1:9/slack".into(), channel: Some("#oncall".into()) },
    );
    config.channels.insert(
        "mail".into(),
        Channel::Email { to: vec!["oncall@example.com".into()], from: "alerts@example.com".into() },
    );
    config.default_channels = vec!["ops".into()];
    config.route = Route {
        group_by: vec!["alertname".into()],
        group_wait: Span::from_secs(30),
        group_interval: Span::from_mins(5),
        repeat_interval: Span::from_hours(1),
    };
    config
}

/// Alert events of `rule` for the given groups firing (or resolving).
fn events(rule: &Rule, regions: &[&str], value: f64, minute: i64) -> Vec<AlertEvent> {
    let mut ev = Evaluator::new(vec![rule.clone()], EvalConfig::default()).unwrap();
    let mut out = Vec::new();
    for r in regions {
        ev.push(&result(&group(&[("region", r)]), MIN, minute, value));
    }
    ev.advance(minutes(minute + 1), &mut out);
    out
}

fn firing(regions: &[&str]) -> Vec<AlertEvent> {
    events(&rule(), regions, 500.0, 0)
}

fn resolved(region: &str) -> AlertEvent {
    let rule = rule();
    let mut ev = Evaluator::new(vec![rule], EvalConfig::default()).unwrap();
    let mut out = Vec::new();
    let g = group(&[("region", region)]);
    ev.push(&result(&g, MIN, 0, 500.0));
    ev.push(&result(&g, MIN, 1, 1.0));
    ev.advance(minutes(2), &mut out);
    out.pop().unwrap()
}

fn rule() -> Rule {
    Rule::parse("slow", "avg(x) by (region) > 250 severity=warning").unwrap()
}

fn drive(n: &mut Notifier, until: i64) -> Vec<Notification> {
    let mut out = Vec::new();
    let mut guard = 0;
    while let Some(t) = n.next_deadline().filter(|t| t.as_secs() <= until) {
        n.advance(t, &mut out);
        guard += 1;
        assert!(guard < 1000, "deadline does not move");
    }
    out
}

#[test]
fn a_group_waits_then_batches_its_alerts() {
    let mut n = Notifier::new(config(), &[rule()]);
    let mut batch = firing(&["eu"]);
    n.push(&batch.remove(0), secs(0));
    n.push(&firing(&["us"]).remove(0), secs(10));
    assert_eq!(n.next_deadline(), Some(secs(30)));
    let sent = drive(&mut n, 60);
    assert_eq!(sent.len(), 1, "one notification for both alerts");
    assert_eq!(sent[0].alerts.len(), 2);
    assert_eq!(sent[0].at, secs(30));
    assert_eq!(sent[0].group_labels, [("alertname".to_owned(), "slow".to_owned())]);

    // A third alert waits for group_interval after the first notification.
    n.push(&firing(&["ap"]).remove(0), secs(60));
    assert_eq!(n.next_deadline(), Some(secs(330)));
    let sent = drive(&mut n, 400);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].alerts.len(), 3);

    // A resolution is one more notification, then the group repeats the
    // two still firing every repeat_interval.
    n.push(&resolved("eu"), secs(400));
    let sent = drive(&mut n, 700);
    assert_eq!(sent.len(), 1);
    let states: Vec<AlertState> = sent[0].alerts.iter().map(|a| a.state).collect();
    assert_eq!(states, [AlertState::Firing, AlertState::Firing, AlertState::Resolved]);
    let sent = drive(&mut n, 630 + 3600);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].at, secs(630 + 3600));
    assert_eq!(sent[0].alerts.len(), 2);
    assert_eq!(n.stats().notifications, 4);
}

#[test]
fn pending_and_quick_flaps_are_not_notified() {
    let mut n = Notifier::new(config(), &[rule()]);
    // Fires and resolves within group_wait: nothing was said, nothing to clear.
    n.push(&firing(&["eu"]).remove(0), secs(0));
    n.push(&resolved("eu"), secs(5));
    assert!(drive(&mut n, 10_000).is_empty());
    assert_eq!(n.next_deadline(), None);
}

#[test]
fn escalation_raises_severity_and_adds_channels_until_acked() {
    let escalating: Rule = serde_json::from_value(serde_json::json!({
        "name": "slow",
        "rule": "avg(x) by (region) > 250",
        "escalate": [
            {"after": "10m", "severity": "critical", "notify": ["pager"]},
            {"after": "30m", "notify": ["mail"]}
        ]
    }))
    .unwrap();
    let mut n = Notifier::new(config(), std::slice::from_ref(&escalating));
    let event = events(&escalating, &["eu"], 500.0, 0).remove(0);
    n.push(&event, secs(0));
    let first = drive(&mut n, 599);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].alerts[0].severity.as_str(), "warning");

    let at_10m = drive(&mut n, 600 + 30);
    let channels: Vec<(&str, &str)> =
        at_10m.iter().map(|n| (n.channel.as_str(), n.alerts[0].severity.as_str())).collect();
    // ops at once (its group_interval has passed), pager after its group_wait.
    assert_eq!(channels, [("ops", "critical"), ("pager", "critical")]);
    assert_eq!(n.stats().escalations, 1);

    // Acknowledged: the 30 min step never comes, nor any repeat.
    n.ack(event.fingerprint, "ana").unwrap();
    assert!(drive(&mut n, 100_000).is_empty());
    assert_eq!(n.stats().escalations, 1);
    assert!(n.ack(edgestream::alert::Fingerprint(1), "ana").is_err());

    // Withdrawn: the 30 min step, long due, is taken at the next advance.
    n.unack(event.fingerprint).unwrap();
    let resumed = drive(&mut n, 100_000 + 60);
    assert_eq!(n.stats().escalations, 2);
    assert!(resumed.iter().any(|n| n.channel == "mail"), "{resumed:?}");
}

#[test]
fn silences_hold_back_and_release() {
    let mut n = Notifier::new(config(), &[rule()]);
    let id = n
        .silence(Silence {
            matchers: vec![Matcher::parse("region=eu").unwrap()],
            starts: secs(0),
            ends: secs(1000),
            created_by: "ana".into(),
            comment: "maintenance".into(),
        })
        .unwrap();
    for e in firing(&["eu", "us"]) {
        n.push(&e, secs(0));
    }
    let sent = drive(&mut n, 999);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].alerts.len(), 1);
    assert_eq!(sent[0].alerts[0].labels.iter().find(|(k, _)| k == "region").unwrap().1, "us");
    assert!(n.stats().silenced >= 1);
    // When the silence ends, the held-back alert goes out.
    let sent = drive(&mut n, 1400);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].at, secs(1000));
    assert_eq!(sent[0].alerts.len(), 2);
    assert!(!n.expire_silence(id, secs(2000)), "already over");
    assert!(
        n.silence(Silence {
            matchers: vec![],
            starts: secs(0),
            ends: secs(1),
            created_by: String::new(),
            comment: String::new()
        })
        .is_err()
    );
    assert_eq!(Matcher::parse("a!=b"), Some(Matcher::ne("a", "b")));
}

#[test]
fn a_fully_silenced_group_does_not_spin_past_its_repeat_interval() {
    let mut n = Notifier::new(config(), &[rule()]);
    n.push(&firing(&["eu"]).remove(0), secs(0));
    assert_eq!(drive(&mut n, 100).len(), 1);
    n.silence(Silence {
        matchers: vec![Matcher::eq("region", "eu")],
        starts: secs(100),
        ends: secs(20_000),
        created_by: "ana".into(),
        comment: String::new(),
    })
    .unwrap();
    // drive() fails if the deadline stops moving.
    assert!(drive(&mut n, 19_999).is_empty());
    assert_eq!(drive(&mut n, 20_000).len(), 1, "released when the silence ends");
}

#[test]
fn firing_again_before_the_resolution_went_out_is_a_new_episode() {
    let mut n = Notifier::new(config(), &[rule()]);
    let fire = firing(&["eu"]).remove(0);
    n.push(&fire, secs(0));
    assert_eq!(drive(&mut n, 100).len(), 1);
    n.ack(fire.fingerprint, "ana").unwrap();
    assert_eq!(n.alerts()[0].acked_by.as_deref(), Some("ana"));
    n.push(&resolved("eu"), secs(200));
    n.push(&fire, secs(210));
    let tracked = n.alerts();
    assert_eq!(tracked.len(), 1);
    assert_eq!((tracked[0].state, tracked[0].acked_by.clone()), (AlertState::Firing, None));
    n.unack(fire.fingerprint).unwrap();
    assert!(!n.remove_silence(99));
}

#[test]
fn tenants_and_channels_are_separate_groups() {
    let mut config = config();
    config.route.group_by = vec![];
    let two_channels = Rule::parse("slow", "avg(x) by (region) > 250 notify=ops notify=mail").unwrap();
    let mut n = Notifier::new(config, std::slice::from_ref(&two_channels));
    let mut ev = Evaluator::new(vec![two_channels], EvalConfig::default()).unwrap();
    let mut out = Vec::new();
    for tenant in ["a", "b"] {
        ev.push(&result(&common::alerts::group_of(tenant, "s", &[("region", "eu")]), MIN, 0, 500.0));
    }
    ev.advance(minutes(1), &mut out);
    for e in &out {
        n.push(e, secs(0));
    }
    let sent = drive(&mut n, 100);
    let mut keys: Vec<(String, String)> = sent.iter().map(|s| (s.channel.clone(), s.tenant.to_string())).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            ("mail".into(), "a".into()),
            ("mail".into(), "b".into()),
            ("ops".into(), "a".into()),
            ("ops".into(), "b".into())
        ]
    );
}

fn notification() -> Notification {
    let mut n = Notifier::new(config(), &[rule()]);
    let annotated: Rule = serde_json::from_value(serde_json::json!({
        "name": "slow", "rule": "avg(x) by (region) > 250 team=edge",
        "annotations": {"summary": "{{labels.region}} is slow: {{value}} ms"}
    }))
    .unwrap();
    for e in events(&annotated, &["eu", "us"], 500.0, 0) {
        n.push(&e, secs(0));
    }
    drive(&mut n, 100).remove(0)
}

#[test]
fn webhook_body_follows_the_alertmanager_format() {
    let note = notification();
    let delivery = payload::render(&note);
    assert_eq!(delivery.target, Target::Http { url: "http://127.0.0.1:9/hook".into() });
    assert_eq!(delivery.content_type, "application/json");
    let body: serde_json::Value = serde_json::from_slice(&delivery.body).unwrap();
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["receiver"], "ops");
    assert_eq!(body["groupLabels"]["alertname"], "slow");
    assert_eq!(body["commonLabels"]["team"], "edge");
    assert_eq!(body["commonLabels"]["severity"], "warning");
    assert!(body["commonLabels"].get("region").is_none(), "differs between alerts");
    assert_eq!(body["truncatedAlerts"], 0);
    let alerts = body["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2);
    for a in alerts {
        assert_eq!(a["status"], "firing");
        assert_eq!(a["startsAt"], "1970-01-01T00:00:00Z");
        assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(a["fingerprint"].as_str().unwrap().len(), 16);
        let region = a["labels"]["region"].as_str().unwrap();
        assert_eq!(a["annotations"]["summary"], format!("{region} is slow: 500 ms"));
    }
    let truncated: serde_json::Value = serde_json::from_slice(&payload::webhook(&note, 1)).unwrap();
    assert_eq!((truncated["alerts"].as_array().unwrap().len(), truncated["truncatedAlerts"].as_u64()), (1, Some(1)));
}

#[test]
fn slack_and_email_bodies() {
    let mut note = notification();
    let slack: serde_json::Value = serde_json::from_slice(&payload::slack(&note, Some("#oncall"))).unwrap();
    assert_eq!(slack["channel"], "#oncall");
    let blocks = slack["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["text"], "[FIRING:2] slow");
    assert_eq!(blocks.len(), 4);
    assert!(blocks[1]["text"]["text"].as_str().unwrap().contains("region=eu"));
    assert_eq!(blocks[3]["type"], "context");

    note.target = Channel::Email { to: vec!["a@example.com".into()], from: "b@example.com".into() };
    let mail = payload::render(&note);
    let Target::Email { subject, to, .. } = &mail.target else { panic!() };
    assert_eq!(subject, "[FIRING:2] slow");
    assert_eq!(to, &["a@example.com".to_owned()]);
    let text = std::str::from_utf8(&mail.body).unwrap();
    assert!(text.contains("region: eu") && text.contains("summary: us is slow: 500 ms"), "{text}");

    // Many alerts: Slack's 50-block limit holds.
    let one = note.alerts[0].clone();
    note.alerts = vec![one; 100];
    let slack: serde_json::Value = serde_json::from_slice(&payload::slack(&note, None)).unwrap();
    assert!(slack["blocks"].as_array().unwrap().len() <= 50);
}

#[test]
fn snapshot_and_restore_keep_timers_acks_and_silences() {
    let escalating: Rule = serde_json::from_value(serde_json::json!({
        "name": "slow",
        "rule": "avg(x) by (region) > 250",
        "escalate": [{"after": "10m", "severity": "critical", "notify": ["pager"]}]
    }))
    .unwrap();
    let rules = std::slice::from_ref(&escalating);
    let run = |restart_at: Option<i64>| {
        let mut n = Notifier::new(config(), rules);
        n.silence(Silence {
            matchers: vec![Matcher::eq("region", "us")],
            starts: secs(0),
            ends: secs(900),
            created_by: "ana".into(),
            comment: String::new(),
        })
        .unwrap();
        for e in events(&escalating, &["eu", "us"], 500.0, 0) {
            n.push(&e, secs(0));
        }
        let mut sent = Vec::new();
        for t in (0..2000).step_by(10) {
            if restart_at == Some(t) {
                let mut bytes = Vec::new();
                n.snapshot(&mut bytes);
                n = Notifier::restore(config(), rules, &bytes).unwrap();
            }
            n.advance(secs(t), &mut sent);
        }
        (sent, n.stats().clone())
    };
    let (plain, plain_stats) = run(None);
    assert!(plain.iter().any(|s| s.channel == "pager"), "the escalation happened");
    for cut in [10, 300, 610, 900, 1500] {
        let (restored, stats) = run(Some(cut));
        assert_eq!(restored, plain, "restart at {cut}");
        assert_eq!(stats, plain_stats);
    }
    assert!(Notifier::restore(config(), rules, b"\x01\x02").is_err());
}

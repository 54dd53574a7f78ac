//! The Durable Object room, natively: a fake object that keeps storage,
//! the alarm, sockets, a bucket and a webhook in memory, carries out the
//! room's effects like the workers-rs glue does, and can hibernate (drop
//! the room, keep sockets) or restart (drop the room and the sockets) at
//! any point, even in the middle of a batch of writes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

use std::collections::BTreeMap;

use bytes::Bytes;
use edgestream::auth::{Claims, Keys, Mode};
use edgestream::host::DeliveryError;
use edgestream::host::http::Reply;
use edgestream::host::workers::{Effects, Incoming, Room, RoomConfig, RoomRequest, RoomResponse};
use edgestream::pipeline::PipelineConfig;
use edgestream::time::{Span, Timestamp};
use proptest::prelude::*;

const START_MS: i64 = 1_700_000_000_000;

fn pipeline(extra: &str) -> PipelineConfig {
    PipelineConfig::from_yaml_str(&format!(
        r#"
windows:
  - name: 1s
    spec: {{size: 1s, group_by: [region], idle_timeout: 500ms, out_of_orderness: 200ms, allowed_lateness: 1h,
           fields: [{{field: latency_ms, quantiles: [0.5, 0.99]}}]}}
    board: metrics
    rollup:
      tiers: [{{size: 1s, retention: 15m}}, {{size: 1m, retention: 48h}}]
tick: 100ms
{extra}
"#
    ))
    .unwrap()
}

fn archived(extra: &str) -> PipelineConfig {
    archived_with("{max_age: 5s}", extra)
}

fn archived_with(rollover: &str, extra: &str) -> PipelineConfig {
    pipeline(&format!("archive:\n  format: {{kind: csv}}\n  sink: {{rollover: {rollover}}}\n{extra}"))
}

/// NDJSON of `n` events of `tenant`, 10 ms apart, ending at `end_ms`.
fn body(tenant: &str, n: usize, end_ms: i64, first_id: usize) -> Bytes {
    let mut text = String::new();
    for i in 0..n {
        let ts = end_ms - (n - i) as i64 * 10;
        let region = ["eu", "us", "ap"][i % 3];
        text.push_str(&format!(
            r#"{{"tenant":"{tenant}","stream":"http","ts":{ts},"id":"e{}","dims":{{"region":"{region}"}},"fields":{{"latency_ms":{}}}}}"#,
            first_id + i,
            20 + i % 50
        ));
        text.push('\n');
    }
    Bytes::from(text)
}

#[derive(Debug, Default)]
struct Socket {
    attachment: String,
    frames: Vec<(Bytes, bool)>,
    closed: Option<(u16, String)>,
}

/// A Durable Object in memory.
struct Object {
    config: RoomConfig,
    room: Option<Room>,
    storage: BTreeMap<String, Bytes>,
    alarm: Option<Timestamp>,
    sockets: BTreeMap<u64, Socket>,
    bucket: BTreeMap<String, Bytes>,
    /// Puts per bucket key.
    uploads: BTreeMap<String, usize>,
    bucket_down: bool,
    webhook: Vec<Bytes>,
    webhook_status: u16,
    now: Timestamp,
    /// When set, the next batch of writes stops after this many puts and
    /// the object restarts (a crash in the middle of a commit); past the
    /// batch's last put, the next commit stops before its deletes.
    crash_after_puts: Option<usize>,
    logs: Vec<String>,
}

impl Object {
    fn new(config: RoomConfig) -> Object {
        Object {
            config,
            room: None,
            storage: BTreeMap::new(),
            alarm: None,
            sockets: BTreeMap::new(),
            bucket: BTreeMap::new(),
            uploads: BTreeMap::new(),
            bucket_down: false,
            webhook: Vec::new(),
            webhook_status: 200,
            now: Timestamp::from_millis(START_MS).unwrap(),
            crash_after_puts: None,
            logs: Vec::new(),
        }
    }

    fn room(&mut self) -> &mut Room {
        while self.room.is_none() {
            let entries: Vec<(String, Bytes)> = self.storage.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let (mut room, mut fx) = Room::load(self.config.clone(), entries, self.now).unwrap();
            let open: Vec<String> =
                self.sockets.values().filter(|s| s.closed.is_none()).map(|s| s.attachment.clone()).collect();
            fx.append(room.reattach(open, self.now));
            self.room = Some(room);
            self.apply(fx);
        }
        self.room.as_mut().unwrap()
    }

    /// Carries out `fx` as the glue does. Returns false if the object
    /// crashed on the way.
    fn apply(&mut self, mut fx: Effects) -> bool {
        loop {
            let commit = fx.puts.iter().any(|(k, _)| k == "es/meta");
            for (i, (key, value)) in fx.puts.drain(..).enumerate() {
                if self.crash_after_puts == Some(i) {
                    self.crash_after_puts = None;
                    self.restart();
                    return false;
                }
                self.storage.insert(key, value);
            }
            if commit && self.crash_after_puts.is_some() {
                // Everything written, the commit record last; none deleted.
                self.crash_after_puts = None;
                self.restart();
                return false;
            }
            for key in fx.deletes.drain(..) {
                self.storage.remove(&key);
            }
            if let Some(at) = fx.alarm {
                self.alarm = Some(at);
            }
            for send in fx.sends.drain(..) {
                if let Some(s) = self.sockets.get_mut(&send.socket) {
                    s.frames.push((send.frame, send.text));
                }
            }
            for close in fx.closes.drain(..) {
                if let Some(s) = self.sockets.get_mut(&close.socket) {
                    s.closed = Some((close.code, close.reason));
                }
            }
            for (socket, attachment) in fx.attachments.drain(..) {
                if let Some(s) = self.sockets.get_mut(&socket) {
                    s.attachment = attachment;
                }
            }
            self.logs.append(&mut fx.log);
            let mut next = Effects::default();
            let now = self.now;
            for upload in std::mem::take(&mut fx.uploads) {
                let result = if self.bucket_down {
                    Err("bucket down".to_owned())
                } else {
                    *self.uploads.entry(upload.key.clone()).or_default() += 1;
                    self.bucket.insert(upload.key, upload.body);
                    Ok(())
                };
                next.append(self.room.as_mut().unwrap().stored(upload.file, result, now));
            }
            for post in std::mem::take(&mut fx.posts) {
                let result = DeliveryError::from_status(self.webhook_status);
                if result.is_ok() {
                    self.webhook.push(post.body);
                }
                next.append(self.room.as_mut().unwrap().delivered(post.note, result, now));
            }
            if next.is_empty() {
                return true;
            }
            fx = next;
        }
    }

    /// Eviction of an idle object: memory is gone, sockets stay.
    fn hibernate(&mut self) {
        self.room = None;
    }

    /// A restart of the runtime: memory and sockets are gone.
    fn restart(&mut self) {
        self.room = None;
        for s in self.sockets.values_mut() {
            s.closed.get_or_insert((1006, "restart".into()));
        }
    }

    /// The response, or a 599 when the object crashed before it left.
    fn request(&mut self, request: RoomRequest) -> RoomResponse {
        let now = self.now;
        let (response, fx) = self.room().fetch(request, now);
        let lost = RoomResponse::Reply(Reply::json(599, serde_json::json!({"error": "connection lost"})));
        if let RoomResponse::Upgrade { socket, attachment, .. } = &response {
            self.sockets.insert(*socket, Socket { attachment: attachment.clone(), ..Socket::default() });
            if !self.apply(fx) {
                return lost;
            }
            let opened = self.room().opened(*socket, now);
            self.apply(opened);
        } else if !self.apply(fx) {
            return lost;
        }
        response
    }

    fn ingest(&mut self, tenant: &str, content_type: &str, body: Bytes) -> Reply {
        let mut request = RoomRequest::new("POST", "/ingest");
        request.query = vec![("tenant".into(), tenant.into())];
        request.content_type = Some(content_type.into());
        request.body = body;
        match self.request(request) {
            RoomResponse::Reply(reply) => reply,
            other => panic!("{other:?}"),
        }
    }

    fn subscribe(&mut self, query: &[(&str, &str)], token: Option<&str>) -> Result<u64, Reply> {
        let mut request = RoomRequest::new("GET", "/ws");
        request.query = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        request.websocket = true;
        request.authorization = token.map(|t| format!("Bearer {t}"));
        match self.request(request) {
            RoomResponse::Upgrade { socket, .. } => Ok(socket),
            RoomResponse::Reply(reply) => Err(reply),
        }
    }

    fn message(&mut self, socket: u64, text: &str) {
        let now = self.now;
        let fx = self.room().message(socket, Incoming::Text(text), now);
        self.apply(fx);
    }

    /// Moves time forward to `ms` after the start, ringing the alarm each
    /// time it is due (at least every 100 ms of fake time).
    fn run_to(&mut self, ms: i64) {
        let end = Timestamp::from_millis(START_MS + ms).unwrap();
        while self.now < end {
            let step = self.now.saturating_add(Span::from_millis(100)).min(end);
            self.now = match self.alarm {
                Some(at) if at <= step => at.max(self.now),
                _ => step,
            };
            if self.alarm.is_some_and(|at| at <= self.now) {
                self.alarm = None;
                let now = self.now;
                let fx = self.room().alarm(now);
                if !self.apply(fx) {
                    // The runtime retries an alarm whose handler failed.
                    self.alarm.get_or_insert(now);
                }
            }
        }
    }

    fn health(&mut self) -> serde_json::Value {
        match self.request(RoomRequest::new("GET", "/api/health")) {
            RoomResponse::Reply(reply) => reply.body,
            other => panic!("{other:?}"),
        }
    }

    fn frames(&self, socket: u64) -> Vec<serde_json::Value> {
        self.sockets[&socket].frames.iter().map(|(f, _)| serde_json::from_slice(f).unwrap()).collect()
    }

    fn admitted(&mut self, tenant: &str) -> u64 {
        self.health()["pipeline"]["tenants"][tenant]["admitted"].as_u64().unwrap_or(0)
    }
}

fn ms(t: i64) -> i64 {
    START_MS + t
}

#[test]
fn ingest_is_answered_and_subscribers_get_a_snapshot_then_deltas() {
    let mut o = Object::new(RoomConfig::new(pipeline("")));
    let sub = o.subscribe(&[("tenant", "acme"), ("format", "json")], None).unwrap();
    assert_eq!(o.frames(sub)[0]["kind"], "snapshot");

    let reply = o.ingest("acme", "application/x-ndjson", body("acme", 30, ms(0), 0));
    assert_eq!(reply.status, 202, "{reply:?}");
    assert_eq!(reply.body["accepted"], 30);
    // Nothing is answered before the journal entry is in storage.
    assert!(o.storage.keys().any(|k| k.starts_with("es/j/")));
    assert!(o.alarm.is_some(), "the alarm is armed for the pipeline's next deadline");

    o.run_to(3_000);
    let kinds: Vec<String> = o.frames(sub).iter().map(|f| f["kind"].as_str().unwrap().to_owned()).collect();
    assert!(kinds.iter().skip(1).any(|k| k == "delta"), "{kinds:?}");
    // The alarm committed: journal folded into a snapshot.
    assert!(!o.storage.keys().any(|k| k.starts_with("es/j/")));
    assert!(o.storage.contains_key("es/meta"));
    assert_eq!(o.admitted("acme"), 30);
}

#[test]
fn bad_bodies_get_typed_errors() {
    let mut o = Object::new(RoomConfig::new(pipeline("")));
    let reply = o.ingest("acme", "application/json", Bytes::from_static(b"{not json"));
    assert_eq!(reply.status, 400);
    assert_eq!(reply.body["error"], "json", "{reply:?}");
    let reply = o.ingest("acme", "text/csv", Bytes::from_static(b"a,b"));
    assert_eq!(reply.status, 415);
    let big = Bytes::from(vec![b' '; 20 << 20]);
    assert_eq!(o.ingest("acme", "application/json", big).status, 413);
    // Refused bodies are not journaled.
    assert!(!o.storage.keys().any(|k| k.starts_with("es/j/")));
    let mut request = RoomRequest::new("POST", "/ingest");
    request.body = body("acme", 1, ms(0), 0);
    match o.request(request) {
        RoomResponse::Reply(reply) => assert_eq!(reply.body["error"], "missing_tenant"),
        other => panic!("{other:?}"),
    }
    match o.request(RoomRequest::new("GET", "/nope")) {
        RoomResponse::Reply(reply) => assert_eq!(reply.status, 404),
        other => panic!("{other:?}"),
    }
    let mut plain = RoomRequest::new("GET", "/ws");
    plain.query = vec![("tenant".into(), "acme".into())];
    match o.request(plain) {
        RoomResponse::Reply(reply) => assert_eq!(reply.status, 426),
        other => panic!("{other:?}"),
    }
}

#[test]
fn tokens_are_checked_before_an_upgrade_and_never_reach_another_tenant() {
    let auth = "auth: {keys: [{kid: k1, secret: secret-secret-secret-secret-secret}]}";
    let mut o = Object::new(RoomConfig::new(pipeline(auth)));
    let mut keys = Keys::new();
    keys.add("k1", b"secret-secret-secret-secret-secret").unwrap();
    let exp = Timestamp::from_millis(START_MS + 3_600_000).unwrap();
    let token = keys.sign("k1", &Claims::new("acme", exp).topics(["metrics"]).modes([Mode::Deltas]).ingest()).unwrap();

    assert_eq!(o.subscribe(&[("topic", "metrics")], None).unwrap_err().status, 401);
    assert_eq!(o.subscribe(&[("topic", "metrics")], Some("not-a-token")).unwrap_err().status, 401);
    let other = o.subscribe(&[("tenant", "globex"), ("topic", "metrics")], Some(&token)).unwrap_err();
    assert_eq!(other.status, 403, "{other:?}");
    assert_eq!(o.subscribe(&[("topic", "metrics"), ("mode", "full")], Some(&token)).unwrap_err().status, 403);
    let sub = o.subscribe(&[("topic", "metrics"), ("format", "json")], Some(&token)).unwrap();
    assert_eq!(o.frames(sub)[0]["kind"], "snapshot");

    // Changing the subscription stays within the token's grants.
    o.message(sub, r#"{"type":"subscribe","topic":"alerts","mode":"full","format":"json"}"#);
    let last = o.frames(sub).last().cloned().unwrap();
    assert_eq!(last["type"], "error", "{last}");
    assert_eq!(last["status"], 403);

    let mut request = RoomRequest::new("POST", "/ingest");
    request.content_type = Some("application/x-ndjson".into());
    request.body = body("acme", 3, ms(0), 0);
    request.authorization = Some(format!("Bearer {token}"));
    match o.request(request) {
        RoomResponse::Reply(reply) => assert_eq!(reply.status, 202, "{reply:?}"),
        other => panic!("{other:?}"),
    }
    // The journal names the token's tenant, so a replay needs no token.
    o.restart();
    let mut request = RoomRequest::new("GET", "/api/health");
    request.authorization = Some(format!("Bearer {token}"));
    match o.request(request) {
        RoomResponse::Reply(reply) => assert_eq!(reply.body["stats"]["admitted"], 3, "{reply:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hibernation_keeps_state_and_subscriptions() {
    let mut o = Object::new(RoomConfig::new(pipeline("")));
    let sub = o.subscribe(&[("tenant", "acme"), ("format", "json")], None).unwrap();
    o.ingest("acme", "application/x-ndjson", body("acme", 20, ms(0), 0));
    // Evicted before the alarm: only the journal holds the events.
    o.hibernate();
    let before = o.frames(sub).len();
    o.run_to(3_000);
    assert_eq!(o.admitted("acme"), 20);
    let frames = o.frames(sub);
    assert_eq!(frames[before]["kind"], "snapshot", "a reattached socket starts with a snapshot");
    assert!(frames[before..].iter().any(|f| f["kind"] == "delta" || f["kind"] == "snapshot"));
    assert_eq!(o.room().stats().replayed, 1, "the journaled ingest was replayed");
    // A ping after hibernation finds the socket.
    o.hibernate();
    o.message(sub, r#"{"type":"ping"}"#);
    assert_eq!(o.frames(sub).last().unwrap()["type"], "pong");
    assert!(o.sockets[&sub].closed.is_none());
}

#[test]
fn a_slow_socket_with_credit_is_held_then_resumed_by_acks() {
    let mut o = Object::new(RoomConfig::new(pipeline("")));
    let sub = o.subscribe(&[("tenant", "acme"), ("format", "json"), ("credit", "1")], None).unwrap();
    assert_eq!(o.frames(sub).len(), 1);
    for i in 0..5 {
        o.ingest("acme", "application/x-ndjson", body("acme", 10, ms(i * 1_000), i as usize * 10));
        o.run_to(i * 1_000 + 1_000);
    }
    assert_eq!(o.frames(sub).len(), 1, "nothing is sent past the credit");
    o.message(sub, r#"{"type":"ack","frames":1}"#);
    let frames = o.frames(sub);
    assert_eq!(frames.len(), 2, "one conflated frame with everything since");
    o.message(sub, r#"{"type":"bogus"}"#);
    assert_eq!(o.sockets[&sub].closed.as_ref().unwrap().0, 1003);
}

#[test]
fn archive_files_reach_the_bucket_and_wait_in_storage_while_it_is_down() {
    let mut config = RoomConfig::new(archived(""));
    config.archive_prefix = "raw/".into();
    let mut o = Object::new(config);
    o.bucket_down = true;
    o.ingest("acme", "application/x-ndjson", body("acme", 50, ms(0), 0));
    o.run_to(8_000);
    assert!(o.bucket.is_empty());
    assert!(o.storage.keys().any(|k| k.starts_with("es/f/")), "the finished file waits in storage");
    assert!(o.room().stats().upload_failures >= 1);
    // A restart does not lose it.
    o.restart();
    o.bucket_down = false;
    o.run_to(20_000);
    assert_eq!(o.bucket.len(), 1, "{:?}", o.bucket.keys());
    let (key, file) = o.bucket.iter().next().unwrap();
    assert!(key.starts_with("raw/tenant=acme/stream=http/"), "{key}");
    assert_eq!(String::from_utf8_lossy(file).lines().count(), 51, "a header and 50 rows");
    assert!(!o.storage.keys().any(|k| k.starts_with("es/f/") || k.starts_with("es/a/")));
}

#[test]
fn rows_of_open_files_survive_hibernation() {
    let mut o = Object::new(RoomConfig::new(archived("")));
    o.ingest("acme", "application/x-ndjson", body("acme", 20, ms(0), 0));
    o.run_to(1_000);
    assert!(o.storage.keys().any(|k| k.starts_with("es/a/")), "rows of the open file are kept");
    o.hibernate();
    o.ingest("acme", "application/x-ndjson", body("acme", 20, ms(1_000), 20));
    o.run_to(2_000);
    o.restart();
    o.run_to(20_000);
    let rows: usize = o.bucket.values().map(|f| String::from_utf8_lossy(f).lines().count() - 1).sum();
    assert_eq!(rows, 40);
}

#[test]
fn notifications_are_retried_until_delivered_and_survive_a_restart() {
    let notifier = r#"
alerts:
  rules:
    - name: slow
      rule: avg(latency_ms) by (region) > 10 keep_firing_for 1m stream=http window=1s
  notifier:
    route: {group_wait: 0s}
    channels: {ops: {kind: webhook, url: "https://hooks.example.com/x"}}
    default_channels: [ops]
"#;
    let mut config = RoomConfig::new(pipeline(notifier));
    config.first_backoff = Span::from_millis(500);
    let mut o = Object::new(config);
    o.webhook_status = 503;
    o.ingest("acme", "application/x-ndjson", body("acme", 30, ms(0), 0));
    o.run_to(3_000);
    assert!(o.webhook.is_empty());
    assert!(o.room().stats().delivery_failures >= 1);
    assert!(o.storage.keys().any(|k| k.starts_with("es/n/")));
    o.restart();
    o.webhook_status = 200;
    o.run_to(6_000);
    assert!(!o.webhook.is_empty());
    let sent: serde_json::Value = serde_json::from_slice(&o.webhook[0]).unwrap();
    assert_eq!(sent["status"], "firing", "{sent}");
    assert!(!o.storage.keys().any(|k| k.starts_with("es/n/")));
    assert!(o.room().stats().notifications_sent >= 1);

    // A 4xx is final: dropped and counted, not retried.
    let mut o = Object::new(o.config.clone());
    o.webhook_status = 404;
    o.ingest("acme", "application/x-ndjson", body("acme", 30, ms(0), 0));
    o.run_to(10_000);
    assert!(o.webhook.is_empty());
    assert_eq!(o.room().stats().notifications_undeliverable, 1);
    assert_eq!(o.room().stats().delivery_failures, 0);
    assert!(!o.storage.keys().any(|k| k.starts_with("es/n/")));
}

#[test]
fn metrics_come_from_the_rollup() {
    let mut o = Object::new(RoomConfig::new(pipeline("")));
    o.ingest("acme", "application/x-ndjson", body("acme", 30, ms(0), 0));
    o.run_to(3_000);
    let mut request = RoomRequest::new("GET", "/api/metrics");
    request.query = vec![
        ("tenant".into(), "acme".into()),
        ("from".into(), (START_MS - 60_000).to_string()),
        ("to".into(), (START_MS + 60_000).to_string()),
        ("agg".into(), "minute".into()),
    ];
    let RoomResponse::Reply(reply) = o.request(request) else { panic!() };
    assert_eq!(reply.status, 200, "{reply:?}");
    let text = reply.body.to_string();
    assert!(text.contains("latency_ms"), "{text}");
}

#[test]
fn torn_values_are_left_out_and_counted() {
    let mut o = Object::new(RoomConfig::new(pipeline("")));
    o.ingest("acme", "application/x-ndjson", body("acme", 10, ms(0), 0));
    o.run_to(2_000);
    o.ingest("acme", "application/x-ndjson", body("acme", 10, ms(2_000), 10));
    // A journal value whose length does not match.
    let key = o.storage.keys().find(|k| k.starts_with("es/j/")).cloned().unwrap();
    let value = o.storage[&key].slice(..o.storage[&key].len() - 1);
    o.storage.insert(key, value);
    o.restart();
    assert_eq!(o.admitted("acme"), 10);
    assert_eq!(o.room().stats().torn_values, 1);
}

/// One step of traffic against the object.
#[derive(Clone, Debug)]
enum Step {
    Ingest(usize),
    Wait(i64),
    Hibernate,
    Restart,
    /// Crash during the next batch of writes, after this many puts.
    CrashAfter(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1usize..40).prop_map(Step::Ingest),
        3 => (50i64..3_000).prop_map(Step::Wait),
        1 => Just(Step::Hibernate),
        1 => Just(Step::Restart),
        1 => (0usize..6).prop_map(Step::CrashAfter),
    ]
}

/// Runs `steps`; returns what was acknowledged, what the room counts as
/// admitted, and the rows in the bucket. Every file is put once.
fn run(steps: &[Step], faults: bool) -> (u64, u64, usize) {
    // No dedup: a replayed body counted twice would show.
    // Files roll by rows too, and two tenants have files open at once, so
    // files finish while others stay open (and their rows stay in storage).
    let mut o = Object::new(RoomConfig::new(archived_with("{max_age: 5s, max_rows: 37}", "")));
    let (mut t, mut next_id, mut acknowledged) = (0i64, 0usize, 0u64);
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Ingest(n) => {
                let tenant = ["acme", "globex"][i % 2];
                let reply = o.ingest(tenant, "application/x-ndjson", body(tenant, *n, ms(t), next_id));
                if reply.status == 202 {
                    acknowledged += reply.body["accepted"].as_u64().unwrap();
                    next_id += n;
                }
            }
            Step::Wait(d) => {
                t += d;
                o.run_to(t);
            }
            Step::Hibernate if faults => o.hibernate(),
            Step::Restart if faults => o.restart(),
            Step::CrashAfter(k) if faults => o.crash_after_puts = Some(*k),
            _ => {}
        }
    }
    o.crash_after_puts = None;
    o.run_to(t + 60_000);
    assert!(o.uploads.values().all(|&n| n == 1), "a file put twice: {:?}", o.uploads);
    let rows = o.bucket.values().map(|f| String::from_utf8_lossy(f).lines().count() - 1).sum();
    (acknowledged, o.admitted("acme") + o.admitted("globex"), rows)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// However the object is evicted, restarted or crashes mid-commit,
    /// every acknowledged event is counted once and archived once.
    #[test]
    fn no_acknowledged_event_is_lost_or_counted_twice(steps in proptest::collection::vec(step(), 1..30)) {
        let (acknowledged, admitted, rows) = run(&steps, true);
        prop_assert_eq!(admitted, acknowledged);
        prop_assert_eq!(rows as u64, acknowledged);
        let (clean, clean_admitted, clean_rows) = run(&steps, false);
        prop_assert_eq!((clean_admitted, clean_rows as u64), (clean, clean));
    }
}

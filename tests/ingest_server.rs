//! The example ingest server (`examples/ingest_server`) on a loopback port,
//! driven by real HTTP (reqwest), WebSocket (tokio-tungstenite) and SSE
//! clients.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

#[path = "../examples/ingest_server/app.rs"]
#[allow(dead_code, unreachable_pub, reason = "the example's module, shared with the test")]
mod app;

use std::time::Duration;

use edgestream::auth::{Claims, Keys, Mode};
use edgestream::delta::board::Frame;
use edgestream::host::tokio::{Clock, Host, HostConfig, LocalDir, SystemClock};
use edgestream::pipeline::PipelineConfig;
use edgestream::time::Span;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

const SECRET: &str = "a-secret-of-at-least-thirty-two-bytes!";

struct Server {
    base: String,
    host: Host,
    client: reqwest::Client,
}

async fn start(extra: &str) -> Server {
    start_archived(extra, None).await
}

/// A server whose archive (`{kind: csv}` or `{kind: parquet}`) goes to a
/// fresh directory.
async fn start_archived(extra: &str, archive: Option<&str>) -> Server {
    let dir = std::env::temp_dir().join(format!("edgestream-server-{}-{}", std::process::id(), unique()));
    let _ = std::fs::remove_dir_all(&dir);
    let extra = match archive {
        Some(format) => format!("{extra}\narchive: {{format: {format}}}"),
        None => extra.to_owned(),
    };
    let config = PipelineConfig::from_yaml_str(&format!(
        r#"
limits: {{max_batch_bytes: 65536}}
tenants:
  rate: {{cells: 1000, per: 1s, burst: 1000}}
  quotas:
    stingy: {{cells: 1, per: 1h, burst: 5}}
windows:
  - name: 1s
    spec: {{size: 1s, group_by: [region], idle_timeout: 100ms, allowed_lateness: 1h,
           fields: [{{field: latency_ms, quantiles: [0.5, 0.99]}}]}}
    board: metrics
    rollup: {{tiers: [{{size: 1s, retention: 1h}}, {{size: 1m, retention: 1d}}]}}
raw: {{enabled: true}}
tick: 50ms
{extra}
"#
    ))
    .unwrap();
    let auth = config.auth.is_some();
    let max_body = config.limits.max_batch_bytes;
    let archived = archive.map(|format| app::Archive { dir: dir.join("archive"), parquet: format.contains("parquet") });
    let mut builder =
        Host::builder(config).config(HostConfig { retry_after: Span::from_secs(2), ..HostConfig::default() });
    if archived.is_some() {
        builder = builder.files(LocalDir::new(dir.join("archive")));
    }
    let host = builder.start().await.unwrap();
    let state = app::AppState { host: host.handle(), auth, metrics_window: "1s".into(), archive: archived };
    let router = app::router(state, max_body);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Server { base, host, client: reqwest::Client::new() }
}

fn body(tenant: &str, n: usize, first_id: usize) -> String {
    let end = SystemClock.now().as_millis() - 3000;
    (0..n)
        .map(|i| {
            format!(
                r#"{{"tenant":"{tenant}","stream":"http","ts":{},"id":"e{}","dims":{{"region":"{}"}},"fields":{{"latency_ms":{}}}}}"#,
                end - (n - i) as i64 * 10,
                first_id + i,
                ["eu", "us"][i % 2],
                10 + i
            ) + "\n"
        })
        .collect()
}

impl Server {
    async fn post(&self, query: &str, content_type: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(format!("http://{}/ingest{query}", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn ws(
        &self,
        query: &str,
    ) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
        let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws?{query}", self.base)).await.unwrap();
        socket
    }
}

async fn next_message<S>(socket: &mut S) -> Message
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("a message in time").unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_is_acknowledged_and_reaches_websocket_subscribers() {
    let server = start("").await;
    // One JSON subscriber and one Protobuf subscriber.
    let mut json = server.ws("tenant=acme&topic=metrics&mode=deltas&format=json").await;
    let mut proto = server.ws("tenant=acme&stream=metrics&mode=deltas&format=proto").await;
    let Message::Text(snapshot) = next_message(&mut json).await else { panic!("JSON frames are text") };
    let snapshot: serde_json::Value = serde_json::from_str(&snapshot).unwrap();
    assert_eq!(snapshot["kind"], "snapshot");
    let Message::Binary(first) = next_message(&mut proto).await else { panic!("Protobuf frames are binary") };
    assert!(matches!(Frame::from_protobuf(&first).unwrap(), Frame::Snapshot(_)));

    let response = server.post("?tenant=acme", "application/x-ndjson", body("acme", 40, 0)).await;
    assert_eq!(response.status(), 202);
    let receipt: serde_json::Value = response.json().await.unwrap();
    assert_eq!(receipt["accepted"], 40, "{receipt}");

    let Message::Text(delta) = next_message(&mut json).await else { panic!() };
    let delta: serde_json::Value = serde_json::from_str(&delta).unwrap();
    assert_eq!(delta["kind"], "delta", "{delta}");
    assert_eq!(delta["base_seq"], snapshot["seq"], "the delta builds on the snapshot");
    let Message::Binary(delta) = next_message(&mut proto).await else { panic!() };
    let Frame::Delta(delta) = Frame::from_protobuf(&delta).unwrap() else { panic!("a delta") };
    assert!(!delta.upserts.is_empty());

    // A resync request over the socket brings a fresh snapshot.
    json.send(Message::Text(r#"{"type":"resync"}"#.into())).await.unwrap();
    let Message::Text(again) = next_message(&mut json).await else { panic!() };
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["kind"], "snapshot");
    assert!(!again["tiles"].as_object().unwrap().is_empty());
    json.send(Message::Text(r#"{"type":"ping"}"#.into())).await.unwrap();
    let Message::Text(pong) = next_message(&mut json).await else { panic!() };
    assert_eq!(pong.as_str(), r#"{"type":"pong"}"#);

    // The rollup answers /api/metrics, the health shows the counts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics: serde_json::Value = server
        .client
        .get(format!("http://{}/api/metrics?tenant=acme&stream=http&agg=second&group_by=&quantiles=0.99", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events: u64 =
        metrics["series"][0]["points"].as_array().unwrap().iter().map(|p| p["events"].as_u64().unwrap()).sum();
    assert_eq!(events, 40, "{metrics}");
    let health: serde_json::Value =
        server.client.get(format!("http://{}/api/health", server.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["pipeline"]["total"]["admitted"], 40);
    assert_eq!(health["host"]["subscribers"], 2);
    server.host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_typed_errors() {
    let server = start("").await;
    let response = server.post("?tenant=acme", "application/json", r#"{"stream": }"#).await;
    assert_eq!(response.status(), 400);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["error"], "json", "{error}");
    assert_eq!((error["line"].as_u64(), error["column"].as_u64()), (Some(1), Some(12)), "{error}");

    let response = server.post("?tenant=acme", "text/plain", "hello").await;
    assert_eq!(response.status(), 415);
    let response = server.post("?tenant=acme", "application/x-protobuf", vec![0xff_u8; 16]).await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["error"], "protobuf");
    let response = server.post("?tenant=acme", "application/x-ndjson", "x".repeat(70_000)).await;
    assert_eq!(response.status(), 413);
    let response = server.post("", "application/x-ndjson", body("acme", 1, 0)).await;
    assert_eq!(response.status(), 400, "no tenant named");

    // Events naming another tenant are rejected one by one, in the receipt.
    let response = server.post("?tenant=acme", "application/x-ndjson", body("globex", 3, 0)).await;
    assert_eq!(response.status(), 202);
    let receipt: serde_json::Value = response.json().await.unwrap();
    assert_eq!(receipt["rejected"].as_array().unwrap().len(), 3, "{receipt}");
    let health = server.host.handle().health().await.unwrap();
    assert_eq!(health.pipeline.total.ingest.batches_malformed, 3);
    server.host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_is_429_with_retry_after() {
    let server = start("").await;
    let response = server.post("?tenant=stingy", "application/x-ndjson", body("stingy", 5, 0)).await;
    assert_eq!(response.status(), 202);
    let response = server.post("?tenant=stingy", "application/x-ndjson", body("stingy", 2, 10)).await;
    assert_eq!(response.status(), 429);
    let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "{retry}");
    let receipt: serde_json::Value = response.json().await.unwrap();
    assert_eq!(receipt["rate_limited"], 2, "{receipt}");
    // Other tenants are not affected.
    let response = server.post("?tenant=acme", "application/x-ndjson", body("acme", 5, 0)).await;
    assert_eq!(response.status(), 202);
    server.host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_decide_the_tenant_and_another_tenants_data_is_refused() {
    let server = start(&format!("auth: {{keys: [{{kid: k1, secret: \"{SECRET}\"}}]}}")).await;
    let mut keys = Keys::new();
    keys.add("k1", SECRET.as_bytes()).unwrap();
    let exp = SystemClock.now().saturating_add(Span::from_mins(5));
    let acme = keys.sign("k1", &Claims::new("acme", exp).topics(["metrics"]).modes([Mode::Deltas]).ingest()).unwrap();

    // No token, a forged token: 401.
    let response = server.post("", "application/x-ndjson", body("acme", 2, 0)).await;
    assert_eq!(response.status(), 401);
    let forged = format!("{}x", &acme[..acme.len() - 1]);
    let response = server
        .client
        .post(format!("http://{}/ingest", server.base))
        .header("content-type", "application/x-ndjson")
        .bearer_auth(&forged)
        .body(body("acme", 2, 0))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // The token's tenant is the one written, whatever the query says.
    let response = server
        .client
        .post(format!("http://{}/ingest?tenant=globex", server.base))
        .header("content-type", "application/x-ndjson")
        .bearer_auth(&acme)
        .body(body("acme", 4, 0) + &body("globex", 1, 100))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let receipt: serde_json::Value = response.json().await.unwrap();
    assert_eq!((receipt["accepted"].as_u64(), receipt["rejected"].as_array().unwrap().len()), (Some(4), 1));

    // Acme's token opens acme's board and nothing of globex's.
    let mut own = server.ws(&format!("topic=metrics&mode=deltas&format=json&token={acme}")).await;
    let Message::Text(snapshot) = next_message(&mut own).await else { panic!() };
    assert!(snapshot.as_str().contains("\"snapshot\""));
    for query in [
        format!("tenant=globex&topic=metrics&mode=deltas&token={acme}"),
        format!("tenant=acme&topic=events&mode=full&token={acme}"),
        format!("tenant=acme&topic=metrics&mode=deltas&token={forged}"),
        "tenant=acme&topic=metrics&mode=deltas".to_owned(),
    ] {
        let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws?{query}", server.base)).await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert!(matches!(response.status().as_u16(), 401 | 403), "{query}: {}", response.status());
            }
            other => panic!("{query}: the upgrade must be refused, got {other:?}"),
        }
    }
    // Reading rollups needs `aggregates` on the window, raw events `full`:
    // this token grants neither.
    for path in ["/api/metrics", "/api/export?what=results", "/api/export?what=events"] {
        let sep = if path.contains('?') { '&' } else { '?' };
        let response = server.get(&format!("{path}{sep}token={acme}")).await;
        assert_eq!(response.status(), 403, "{path}");
    }
    let reader = keys.sign("k1", &Claims::new("acme", exp).topics(["1s"]).modes([Mode::Aggregates])).unwrap();
    assert_eq!(server.get(&format!("/api/metrics?token={reader}")).await.status(), 200);
    assert_eq!(server.get(&format!("/api/metrics?tenant=globex&token={reader}")).await.status(), 403);

    // The health view needs a token and shows only its tenant.
    assert_eq!(server.get("/api/health").await.status(), 401);
    let health: serde_json::Value = server.get(&format!("/api/health?token={acme}")).await.json().await.unwrap();
    assert_eq!(health["tenant"], "acme", "{health}");
    assert_eq!(health["stats"]["admitted"], 4, "{health}");
    assert!(!health.to_string().contains("globex"), "{health}");
    server.host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_carry_the_same_frames_with_ids() {
    let server = start("").await;
    let response = server
        .client
        .get(format!("http://{}/sse?tenant=acme&topic=metrics&mode=deltas", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut response = response;
    let mut text = String::new();
    let poster = {
        let base = server.base.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            reqwest::Client::new()
                .post(format!("http://{base}/ingest?tenant=acme"))
                .header("content-type", "application/x-ndjson")
                .body(body("acme", 10, 0))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while !text.contains("event: delta") {
            let chunk = response.chunk().await.unwrap().expect("the stream stays open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("a delta event");
    assert_eq!(poster.await.unwrap(), 202);
    assert!(text.contains("event: snapshot"), "{text}");
    assert!(text.contains("\nid: 0") || text.contains("id: 0\n") || text.contains("id:0"), "{text}");
    let data = text.lines().find(|l| l.starts_with("data:") && l.contains("\"delta\"")).unwrap();
    let frame: serde_json::Value = serde_json::from_str(data.trim_start_matches("data:").trim()).unwrap();
    assert_eq!(frame["topic"], "metrics");
    server.host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_closes_sockets_and_refuses_new_bodies() {
    let server = start("").await;
    let mut socket = server.ws("tenant=acme&topic=metrics&mode=deltas&format=json").await;
    next_message(&mut socket).await;
    let handle = server.host.handle();
    let report = server.host.shutdown().await.unwrap();
    assert_eq!(report.stats.total.admitted, 0);
    let closed = next_message(&mut socket).await;
    match closed {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(!handle.is_accepting());
    let response = reqwest::Client::new()
        .post(format!("http://{}/ingest?tenant=acme", server.base))
        .header("content-type", "application/x-ndjson")
        .body(body("acme", 1, 0))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
}

impl Server {
    async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.client.get(format!("http://{}{path_and_query}", self.base)).send().await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_streams_results_and_raw_events_in_a_range_as_csv() {
    let server = start_archived("", Some("{kind: csv}")).await;
    let since = SystemClock.now().as_millis() - 60_000;
    // A value with a comma and quotes survives the export.
    let tricky = format!(
        r#"{{"tenant":"acme","stream":"http","ts":{},"dims":{{"region":"eu","note":"a, \"b\""}},"fields":{{"latency_ms":5}}}}"#,
        SystemClock.now().as_millis() - 3000
    );
    let acme = body("acme", 40, 0) + &tricky + "\n";
    let response = server.post("?tenant=acme", "application/x-ndjson", acme).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["accepted"], 41);
    assert_eq!(server.post("?tenant=globex", "application/x-ndjson", body("globex", 10, 0)).await.status(), 202);
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Raw events: the open files are flushed first, so all 41 are there.
    let response = server.get(&format!("/api/export?tenant=acme&what=events&format=csv&from={since}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/csv");
    let text = response.text().await.unwrap();
    assert!(text.starts_with("ts,"), "{text}");
    assert!(text.contains(r#"""note"":""a, \""b\"""""#), "the quoted value is whole: {text}");
    assert_eq!(text.matches("\r\n").count(), 1 + 41, "a header and 41 events: {text}");
    assert!(!text.contains("globex"));

    // A range after the events: only the header.
    let later = SystemClock.now().as_millis() + 60_000;
    let text = server
        .get(&format!("/api/export?tenant=acme&what=events&from={later}&to={}", later + 1000))
        .await
        .text()
        .await
        .unwrap();
    assert!(text.lines().count() <= 1, "{text}");

    // Window results from the rollup, one row per second and region.
    let response = server
        .get(&format!("/api/export?tenant=acme&what=results&agg=second&group_by=region&quantiles=0.99&from={since}"))
        .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[..4], ["start", "region", "overflow", "field"], "{text}");
    assert!(header.contains(&"p99"), "{header:?}");
    let events_at = header.iter().position(|h| *h == "events").unwrap();
    let events: u64 = lines.map(|l| l.split(',').nth(events_at).unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(events, 41, "{text}");

    // The archive is CSV: Parquet events are refused with a reason.
    let response = server.get("/api/export?tenant=acme&what=events&format=parquet").await;
    assert_eq!(response.status(), 400);
    server.host.shutdown().await.unwrap();
}

#[cfg(feature = "parquet")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_streams_parquet_read_back_by_the_parquet_crate() {
    use parquet::file::reader::{FileReader, SerializedFileReader};

    let server = start_archived("", Some("{kind: parquet}")).await;
    let since = SystemClock.now().as_millis() - 60_000;
    for i in 0..3 {
        let response = server.post("?tenant=acme", "application/x-ndjson", body("acme", 30, i * 100)).await;
        assert_eq!(response.status(), 202);
        // Each flush by an export finishes a file: several files to merge.
        let _ =
            server.get(&format!("/api/export?tenant=acme&what=events&format=parquet&from={since}")).await.bytes().await;
    }
    let bytes = server
        .get(&format!("/api/export?tenant=acme&what=events&format=parquet&from={since}"))
        .await
        .bytes()
        .await
        .unwrap();
    let reader = SerializedFileReader::new(bytes).unwrap();
    assert_eq!(reader.metadata().file_metadata().num_rows(), 90);

    tokio::time::sleep(Duration::from_millis(400)).await;
    let response =
        server.get(&format!("/api/export?tenant=acme&what=results&format=parquet&agg=second&from={since}")).await;
    assert_eq!(response.status(), 200);
    let reader = SerializedFileReader::new(response.bytes().await.unwrap()).unwrap();
    assert!(reader.metadata().file_metadata().num_rows() > 0);
    server.host.shutdown().await.unwrap();
}

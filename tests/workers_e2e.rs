//! The example Worker (`examples/worker`) end to end, in a real local
//! workerd started by `wrangler dev --local`: ingest over HTTP in NDJSON
//! and Protobuf, WebSocket subscribers, the alarm closing windows and
//! firing an alert, typed errors, hibernation, a restart of the runtime,
//! and Parquet files in the local R2 bucket read back by pyarrow.
//!
//! Needs what `.ci/run` prepares: `npm ci` and `worker-build --release`
//! done in `examples/worker` (the test runs what `build/` holds, built with
//! the `parquet` feature), and `EDGESTREAM_PYTHON` (an interpreter with
//! pyarrow); then
//! `cargo test --features workers --test workers_e2e -- --ignored --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgestream::auth::{Claims, Keys};
use edgestream::event::{Limits, decode, protobuf};
use edgestream::time::Timestamp;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "e2e-secret-e2e-secret-e2e-secret-e2e";

/// The room the test runs: one-second windows, an alert rule that fires on
/// the test's latencies, the archive rolled every 5 s.
const ROOM_CONFIG: &str = r#"{"snapshot_every": "1s", "metrics_window": "1s", "pipeline": {
  "windows": [{"name": "1s", "board": "metrics",
    "spec": {"size": "1s", "group_by": ["region"], "out_of_orderness": "200ms", "idle_timeout": "1s",
             "allowed_lateness": "1h", "fields": [{"field": "latency_ms", "quantiles": [0.5, 0.99]}]},
    "rollup": {"tiers": [{"size": "1s", "retention": "15m"}, {"size": "1m", "retention": "48h"}]}}],
  "alerts": {"rules": [{"name": "slow", "rule": "avg(latency_ms) by (region) > 100 keep_firing_for 1m stream=http window=1s"}]},
  "tick": "100ms"}}"#;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// NDJSON of `n` events of `tenant` 10 ms apart, ending 1.5 s before now.
fn ndjson(tenant: &str, n: usize, first_id: usize, latency: u32) -> String {
    let end = now_ms() - 1_500;
    (0..n)
        .map(|i| {
            let ts = end - (n - i) as i64 * 10;
            let region = ["eu", "us", "ap"][i % 3];
            format!(
                r#"{{"tenant":"{tenant}","stream":"http","ts":{ts},"id":"e{}","dims":{{"region":"{region}"}},"fields":{{"latency_ms":{latency}}}}}"#,
                first_id + i
            ) + "\n"
        })
        .collect()
}

fn worker_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/worker")
}

/// `wrangler dev --local` in its own process group, stopped on drop.
struct Wrangler {
    child: Child,
    port: u16,
}

impl Wrangler {
    fn start(port: u16, state: &Path, scratch: &Path) -> Wrangler {
        let dir = worker_dir();
        let bin = dir.join("node_modules/.bin");
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let log = std::fs::File::create(scratch.join(format!("wrangler-{}.log", now_ms()))).unwrap();
        let child = Command::new(bin.join("wrangler"))
            .args(["dev", "--local", "--ip", "127.0.0.1", "--port", &port.to_string()])
            .arg("--persist-to")
            .arg(state)
            .args(["--var", &format!("ROOM_CONFIG:{ROOM_CONFIG}")])
            .args(["--var", "ARCHIVE_MAX_AGE:5s"])
            .args(["--var", &format!("EDGESTREAM_SECRET:{SECRET}")])
            .current_dir(&dir)
            .env("PATH", path)
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("XDG_CONFIG_HOME", scratch.join("config"))
            .env("XDG_CACHE_HOME", scratch.join("cache"))
            .env("TMPDIR", scratch.join("tmp"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("wrangler (npm ci in examples/worker)");
        // For the caller's trap, should this process die before its drop.
        if let Ok(file) = std::env::var("EDGESTREAM_PIDFILE") {
            let _ = std::fs::write(file, child.id().to_string());
        }
        Wrangler { child, port }
    }

    fn stop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn ws(&self, query: &str) -> String {
        format!("ws://127.0.0.1:{}/ws?{query}", self.port)
    }
}

impl Drop for Wrangler {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Checks {
    passed: usize,
    failed: Vec<String>,
}

impl Checks {
    fn check(&mut self, name: &str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                println!("ok   {name}");
                self.passed += 1;
            }
            Err(e) => {
                println!("FAIL {name}: {e}");
                self.failed.push(format!("{name}: {e}"));
            }
        }
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON frame of `socket` whose `kind` (or `type`) is `kind`, within `secs`.
async fn next_kind(socket: &mut Socket, kind: &str, secs: u64) -> Result<serde_json::Value, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| format!("no {kind} frame within {secs} s"))?
            .ok_or("the socket closed")?
            .map_err(|e| e.to_string())?;
        if let Message::Text(text) = message {
            let frame: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            if frame["kind"] == kind || frame["type"] == kind {
                return Ok(frame);
            }
        }
    }
}

async fn wait_ready(client: &reqwest::Client, server: &Wrangler, token: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(240);
    while Instant::now() < deadline {
        let response = client.get(server.url("/api/health")).bearer_auth(token).send().await;
        if response.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err("wrangler dev did not answer within 240 s".into())
}

/// The body of `GET path`.
async fn get(client: &reqwest::Client, server: &Wrangler, token: &str, path: &str) -> Result<bytes::Bytes, String> {
    let response = client.get(server.url(path)).bearer_auth(token).send().await.map_err(|e| e.to_string())?;
    response.bytes().await.map_err(|e| e.to_string())
}

async fn health(client: &reqwest::Client, server: &Wrangler, token: &str) -> Result<serde_json::Value, String> {
    serde_json::from_slice(&get(client, server, token, "/api/health").await?).map_err(|e| e.to_string())
}

async fn post(
    client: &reqwest::Client,
    server: &Wrangler,
    token: &str,
    ct: &str,
    body: Vec<u8>,
) -> Result<(u16, serde_json::Value), String> {
    let response = client
        .post(server.url("/ingest"))
        .bearer_auth(token)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or_default()))
}

/// Events counted by the 1-minute rollup of the last ten minutes.
async fn counted(client: &reqwest::Client, server: &Wrangler, token: &str) -> Result<u64, String> {
    let (from, to) = (now_ms() - 600_000, now_ms() + 60_000);
    let url = server.url(&format!("/api/metrics?from={from}&to={to}&agg=minute"));
    let answer: serde_json::Value = client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let mut total = 0;
    let series = answer["series"].as_array().ok_or(format!("no series in {answer}"))?;
    for one in series.iter().filter(|s| s["field"] == "latency_ms") {
        total += one["points"].as_array().into_iter().flatten().filter_map(|p| p["events"].as_u64()).sum::<u64>();
    }
    Ok(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs wrangler and the worker-build tools: run through .ci/run"]
async fn the_example_worker_in_workerd() {
    let scratch = std::env::temp_dir().join(format!("edgestream-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    for sub in ["config", "cache", "tmp", "state"] {
        std::fs::create_dir_all(scratch.join(sub)).unwrap();
    }
    assert!(
        worker_dir().join("build/index.js").exists(),
        "build the example first: cd examples/worker && worker-build --release"
    );
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut keys = Keys::new();
    keys.add("k1", SECRET.as_bytes()).unwrap();
    let exp = Timestamp::from_millis(now_ms() + 3_600_000).unwrap();
    let token = keys.sign("k1", &Claims::new("acme", exp).topics(["*"]).ingest()).unwrap();
    let client = reqwest::Client::new();
    let mut checks = Checks { passed: 0, failed: Vec::new() };
    let mut sent = 0u64;

    let mut server = Wrangler::start(port, &scratch.join("state"), &scratch);
    if let Err(e) = wait_ready(&client, &server, &token).await {
        panic!("{e}; see the wrangler log in {}", scratch.display());
    }

    // 1. NDJSON and Protobuf ingest; a subscriber gets a snapshot, then deltas.
    let (mut metrics, _) =
        tokio_tungstenite::connect_async(server.ws(&format!("topic=metrics&format=json&token={token}")))
            .await
            .expect("the metrics socket");
    let (mut results, _) =
        tokio_tungstenite::connect_async(server.ws(&format!("topic=1s&mode=aggregates&format=json&token={token}")))
            .await
            .expect("the results socket");
    let (mut alerts, _) =
        tokio_tungstenite::connect_async(server.ws(&format!("topic=alerts&format=json&token={token}")))
            .await
            .expect("the alerts socket");
    let first = next_kind(&mut metrics, "snapshot", 10).await;
    let body = ndjson("acme", 30, 0, 300);
    let ndjson_post = post(&client, &server, &token, "application/x-ndjson", body.into_bytes()).await;
    let batch = decode("application/x-ndjson", ndjson("acme", 20, 1_000, 300), &Limits::default()).unwrap();
    let mut proto = Vec::new();
    protobuf::encode(&batch, &mut proto);
    let proto_post = post(&client, &server, &token, "application/x-protobuf", proto).await;
    checks.check(
        "ingest: NDJSON and Protobuf answered 202, snapshot then delta on the socket",
        async {
            first?;
            let (s1, r1) = ndjson_post?;
            let (s2, r2) = proto_post?;
            if (s1, s2) != (202, 202) || r1["accepted"] != 30 || r2["accepted"] != 20 {
                return Err(format!("{s1} {r1} / {s2} {r2}"));
            }
            next_kind(&mut metrics, "delta", 15).await.map(|_| ())
        }
        .await,
    );
    sent += 50;

    // 2. The alarm closes the windows: final results; the alert fires.
    checks.check(
        "alarm: a final window result and an alert on their topics",
        async {
            let frame = next_kind(&mut results, "results", 20).await?;
            if !frame.to_string().contains("latency_ms") {
                return Err(format!("results frame without the field: {frame}"));
            }
            let alert = next_kind(&mut alerts, "alert", 30).await?;
            if !alert.to_string().contains("slow") {
                return Err(format!("unexpected alert: {alert}"));
            }
            Ok(())
        }
        .await,
    );

    // 3. A bad body is a typed 400; a wrong token never gets a socket.
    checks.check(
        "errors: bad body 400 with its type, wrong token refused before the upgrade",
        async {
            let (status, body) = post(&client, &server, &token, "application/json", b"{nope".to_vec()).await?;
            if status != 400 || body["error"] != "json" {
                return Err(format!("bad body: {status} {body}"));
            }
            match tokio_tungstenite::connect_async(server.ws("topic=metrics&token=not-a-token")).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) if response.status() == 401 => Ok(()),
                Err(e) => Err(format!("wrong token: {e}")),
                Ok(_) => Err("wrong token: upgraded".into()),
            }
        }
        .await,
    );

    // 4. Hibernation: idle for 15 s, the object is evicted; the next message
    // finds the subscription and the state.
    let before = health(&client, &server, &token).await.unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(15)).await;
    checks.check(
        "hibernation: after eviction the socket's subscription and the counters are intact",
        async {
            metrics.send(Message::Text(r#"{"type":"resync"}"#.into())).await.map_err(|e| e.to_string())?;
            next_kind(&mut metrics, "snapshot", 10).await?;
            let after = health(&client, &server, &token).await?;
            let loads = |h: &serde_json::Value| h["room"]["loads"].as_u64().unwrap_or(0);
            if loads(&after) <= loads(&before) {
                return Err(format!("no eviction seen: loads {} then {}", loads(&before), loads(&after)));
            }
            if after["stats"]["admitted"] != sent {
                return Err(format!("admitted {} after hibernation, {sent} sent", after["stats"]["admitted"]));
            }
            Ok(())
        }
        .await,
    );
    drop((metrics, results, alerts));

    // 5. Restart of the runtime: state and counters come back from storage,
    // and counting continues without loss or double counting.
    let (status, _) =
        post(&client, &server, &token, "application/x-ndjson", ndjson("acme", 25, 2_000, 50).into_bytes())
            .await
            .unwrap_or((0, serde_json::Value::Null));
    if status == 202 {
        sent += 25;
    }
    server.stop();
    drop(server);
    let server = Wrangler::start(port, &scratch.join("state"), &scratch);
    wait_ready(&client, &server, &token).await.unwrap();
    checks.check(
        "restart: counters restored, results continue without loss or double counting",
        async {
            let restored = health(&client, &server, &token).await?;
            if restored["stats"]["admitted"] != sent {
                return Err(format!("admitted {} after the restart, {sent} sent", restored["stats"]["admitted"]));
            }
            let (status, _) =
                post(&client, &server, &token, "application/x-ndjson", ndjson("acme", 10, 3_000, 50).into_bytes())
                    .await?;
            if status != 202 {
                return Err(format!("ingest after restart: {status}"));
            }
            sent += 10;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let total = counted(&client, &server, &token).await?;
                if total == sent {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(format!("the rollup counts {total} events, {sent} sent"));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        .await,
    );

    // 6. Parquet files in the local R2 bucket, read back by pyarrow.
    checks.check(
        "archive: Parquet files in R2 hold every event, read by pyarrow",
        async {
            let deadline = Instant::now() + Duration::from_secs(40);
            loop {
                let listed = get(&client, &server, &token, "/archive").await?;
                let keys: Vec<String> = serde_json::from_slice(&listed).map_err(|e| e.to_string())?;
                let dir = scratch.join("files");
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).unwrap();
                for (i, key) in keys.iter().enumerate() {
                    let bytes = get(&client, &server, &token, &format!("/archive/{key}")).await?;
                    std::fs::write(dir.join(format!("{i}.parquet")), bytes).unwrap();
                }
                let python = std::env::var("EDGESTREAM_PYTHON").unwrap_or_else(|_| "python3".into());
                let script = "import sys, glob, pyarrow.parquet as pq\n\
                              print(sum(pq.read_table(f).num_rows for f in glob.glob(sys.argv[1] + '/*.parquet')))";
                let out = Command::new(python).args(["-c", script]).arg(&dir).output().map_err(|e| e.to_string())?;
                let rows: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
                if !out.status.success() {
                    return Err(format!("pyarrow: {}", String::from_utf8_lossy(&out.stderr)));
                }
                if rows == sent {
                    println!("     {} files, {rows} rows", keys.len());
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(format!("{} files with {rows} rows, {sent} events sent", keys.len()));
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        .await,
    );

    println!("{} passed, {} failed", checks.passed, checks.failed.len());
    drop(server);
    assert!(checks.failed.is_empty(), "{:#?}\nlogs in {}", checks.failed, scratch.display());
    let _ = std::fs::remove_dir_all(&scratch);
}

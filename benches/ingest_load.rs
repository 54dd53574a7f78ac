//! A bounded load test of the example ingest server on loopback: N
//! concurrent posters and M WebSocket subscribers for a fixed time. It
//! reports accepted events/s, ingest latency (request to receipt) and
//! delivery latency (post to the event's arrival at a `full` subscriber).
//! It stops by itself; it is a benchmark, not a test.
//!
//! ```text
//! cargo bench --features tokio --bench ingest_load -- [--posters 8] [--subscribers 4] [--seconds 10] [--batch 200]
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "a benchmark harness")]

#[path = "../examples/ingest_server/app.rs"]
#[allow(dead_code, unreachable_pub, reason = "the example's module, shared with the benchmark")]
mod app;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgestream::host::tokio::{Host, HostConfig};
use edgestream::pipeline::PipelineConfig;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

const TENANTS: [&str; 4] = ["t0", "t1", "t2", "t3"];

fn unix_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A body of `n` events whose `sent_us` field is the time of the post.
fn body(tenant: &str, n: usize, seq: &mut u64) -> String {
    let sent = unix_micros();
    let mut text = String::with_capacity(n * 170);
    for i in 0..n {
        *seq += 1;
        text.push_str(&format!(
            r#"{{"tenant":"{tenant}","stream":"http","ts":{},"id":"{tenant}-{seq}","dims":{{"region":"r{}"}},"fields":{{"latency_ms":{},"sent_us":{sent}}}}}"#,
            sent / 1000,
            i % 8,
            10 + (*seq % 90),
        ));
        text.push('\n');
    }
    text
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo bench -- --list` and friends: nothing to list.
        return;
    }
    let posters = arg("--posters", 8) as usize;
    let subscribers = arg("--subscribers", 4) as usize;
    let seconds = arg("--seconds", 10);
    let batch = arg("--batch", 200) as usize;

    let config = PipelineConfig::from_yaml_str(
        r#"
tenants: {rate: {cells: 10000000, per: 1s, burst: 10000000}}
windows:
  - name: 1s
    spec: {size: 1s, group_by: [region], out_of_orderness: 500ms, idle_timeout: 2s,
           fields: [{field: latency_ms, quantiles: [0.5, 0.99]}]}
    board: metrics
raw: {enabled: true}
subscribers: {max_queued: 4096}
"#,
    )
    .unwrap();
    let tick = config.tick;
    let max_body = config.limits.max_batch_bytes;
    let host = Host::builder(config).config(HostConfig { queue: 256, ..HostConfig::default() }).start().await.unwrap();
    let state = app::AppState { host: host.handle(), auth: false, metrics_window: "1s".into(), archive: None };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app::router(state, max_body)).await.unwrap() });

    let stop = Arc::new(AtomicBool::new(false));
    let delivery = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap()));
    let delivered = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for s in 0..subscribers {
        let tenant = TENANTS[s % TENANTS.len()];
        let url = format!("ws://{addr}/ws?tenant={tenant}&topic=events&mode=full&format=json");
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let (stop, delivery, delivered) = (Arc::clone(&stop), Arc::clone(&delivery), Arc::clone(&delivered));
        readers.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let Ok(Some(Ok(Message::Text(text)))) =
                    tokio::time::timeout(Duration::from_millis(200), socket.next()).await
                else {
                    continue;
                };
                let now = unix_micros();
                let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
                for event in frame["events"].as_array().into_iter().flatten() {
                    if let Some(sent) = event["fields"]["sent_us"].as_f64() {
                        local.saturating_record((now - sent as i64).max(1) as u64);
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            delivery.lock().unwrap().add(&local).unwrap();
        }));
    }

    let ingest = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap()));
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for p in 0..posters {
        let tenant = TENANTS[p % TENANTS.len()];
        let (ingest, accepted, refused) = (Arc::clone(&ingest), Arc::clone(&accepted), Arc::clone(&refused));
        let url = format!("http://{addr}/ingest?tenant={tenant}");
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut seq = (p as u64) << 40;
            while Instant::now() < deadline {
                let text = body(tenant, batch, &mut seq);
                let sent = Instant::now();
                let response =
                    client.post(&url).header("content-type", "application/x-ndjson").body(text).send().await.unwrap();
                let status = response.status().as_u16();
                let receipt: serde_json::Value = response.json().await.unwrap();
                local.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                match status {
                    202 => {
                        accepted.fetch_add(receipt["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
                    }
                    _ => {
                        refused.fetch_add(batch as u64, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            ingest.lock().unwrap().add(&local).unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Let the last tick deliver.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    let health = host.handle().health().await.unwrap();
    let report = host.shutdown().await.unwrap();

    let ingest = ingest.lock().unwrap();
    let delivery = delivery.lock().unwrap();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let accepted = accepted.load(Ordering::Relaxed);
    println!(
        "ingest_load: {posters} posters x {batch}-event NDJSON bodies, {subscribers} `full` WebSocket subscribers, {seconds} s on loopback; pipeline tick {tick}"
    );
    println!(
        "  accepted            {accepted} events, {:.0} events/s ({} bodies refused)",
        accepted as f64 / elapsed,
        refused.load(Ordering::Relaxed) / batch as u64
    );
    println!(
        "  ingest latency      p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests)",
        ms(&ingest, 0.5),
        ms(&ingest, 0.99),
        ingest.max() as f64 / 1000.0,
        ingest.len()
    );
    println!(
        "  delivery latency    p50 {:.1} ms, p99 {:.1} ms ({} events received by subscribers)",
        ms(&delivery, 0.5),
        ms(&delivery, 0.99),
        delivered.load(Ordering::Relaxed)
    );
    println!(
        "  subscriber frames dropped {}, evicted {}; busy refusals {}; admitted in the pipeline {}",
        health.pipeline.subscriber_frames_dropped,
        health.pipeline.subscribers_evicted,
        health.host.busy_refusals,
        report.stats.total.admitted
    );
}

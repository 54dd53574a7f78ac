//! The tokio host: ingest through the bounded channel, subscribers,
//! graceful shutdown that stores every accepted event, snapshots across a
//! restart, and notification delivery to a real HTTP receiver on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use bytes::Bytes;
use edgestream::auth::Mode;
use edgestream::host::tokio::Clock;
use edgestream::host::tokio::{Closed, DeliveryConfig, Host, HostConfig, HostError, LocalDir, SystemClock};
use edgestream::pipeline::{PipelineConfig, Subscription};
use edgestream::time::Span;

fn now_ms() -> i64 {
    SystemClock.now().as_millis()
}

/// NDJSON of `n` events of `tenant`, `ms` apart, ending `ago_ms` before now.
fn body(tenant: &str, n: usize, ago_ms: i64, first_id: usize) -> Bytes {
    let end = now_ms() - ago_ms;
    let mut text = String::new();
    for i in 0..n {
        let ts = end - (n - i) as i64 * 10;
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

fn config(extra: &str) -> PipelineConfig {
    PipelineConfig::from_yaml_str(&format!(
        r#"
windows:
  - name: 1s
    spec: {{size: 1s, group_by: [region], idle_timeout: 100ms, allowed_lateness: 1h,
           fields: [{{field: latency_ms, quantiles: [0.5, 0.99]}}]}}
    board: metrics
tick: 50ms
{extra}
"#
    ))
    .unwrap()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("edgestream-host-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn next_json(sub: &mut edgestream::host::tokio::Subscriber) -> serde_json::Value {
    let mut frames = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sub.next(&mut frames)).await.expect("a frame in time").unwrap();
    serde_json::from_slice(&frames[0]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_reaches_a_subscriber_as_snapshot_then_delta() {
    let host = Host::builder(config("")).start().await.unwrap();
    let handle = host.handle();
    let mut sub = handle.subscribe(Subscription::new("acme", "metrics", Mode::Deltas).json()).await.unwrap();
    let first = next_json(&mut sub).await;
    assert_eq!(first["kind"], "snapshot", "{first}");

    let receipt = handle.ingest("acme", "application/x-ndjson", body("acme", 30, 3000, 0)).await.unwrap();
    assert_eq!(receipt.accepted, 30);
    let delta = next_json(&mut sub).await;
    assert_eq!(delta["kind"], "delta", "{delta}");
    assert_eq!(delta["topic"], "metrics");
    assert!(!delta["upserts"].as_object().unwrap().is_empty(), "{delta}");

    // Another tenant's events never reach acme's board.
    handle.ingest("globex", "application/x-ndjson", body("globex", 5, 3000, 100)).await.unwrap();
    let health = handle.health().await.unwrap();
    assert_eq!(health.pipeline.total.admitted, 35);
    assert_eq!(health.host.subscribers, 1);

    let report = host.shutdown().await.unwrap();
    assert_eq!(report.stats.total.admitted, 35);
    let mut frames = Vec::new();
    loop {
        match sub.next(&mut frames).await {
            Ok(()) => continue,
            Err(why) => {
                assert_eq!(why, Closed::Shutdown);
                break;
            }
        }
    }
    assert!(matches!(
        handle.ingest("acme", "application/x-ndjson", body("acme", 1, 0, 0)).await,
        Err(HostError::Closed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_channel_answers_busy_at_once() {
    let host = Host::builder(config(""))
        .config(HostConfig { queue: 1, retry_after: Span::from_millis(1500), ..HostConfig::default() })
        .start()
        .await
        .unwrap();
    let handle = host.handle();
    // Hold the pipeline task until released.
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let blocked = tokio::spawn({
        let handle = handle.clone();
        async move {
            handle
                .with_pipeline(move |_| {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                })
                .await
        }
    });
    tokio::task::spawn_blocking(move || started_rx.recv().unwrap()).await.unwrap();

    let queued = tokio::spawn({
        let handle = handle.clone();
        async move { handle.ingest("acme", "application/x-ndjson", body("acme", 3, 3000, 0)).await }
    });
    while handle.stats().queue_depth < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    match handle.ingest("acme", "application/x-ndjson", body("acme", 3, 3000, 10)).await {
        Err(HostError::Busy { retry_after }) => assert_eq!(retry_after, Span::from_millis(1500)),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert_eq!(handle.stats().busy_refusals, 1);

    release_tx.send(()).unwrap();
    blocked.await.unwrap().unwrap();
    assert_eq!(queued.await.unwrap().unwrap().accepted, 3);
    let report = host.shutdown().await.unwrap();
    assert_eq!(report.stats.total.ingest.received, 3, "the refused body never reached the pipeline");
    assert_eq!(report.host.busy_refusals, 1);
}

/// Files and rows under `dir`, by extension (`csv`: lines after the
/// header; `parquet`: the footer's row count).
fn stored_rows(dir: &Path) -> (usize, usize) {
    let (mut files, mut rows) = (0, 0);
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            files += 1;
            match path.extension().and_then(|e| e.to_str()) {
                Some("csv") => rows += std::fs::read_to_string(&path).unwrap().lines().count() - 1,
                #[cfg(feature = "parquet")]
                Some("parquet") => {
                    use parquet::file::reader::{FileReader, SerializedFileReader};
                    let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
                    rows += reader.metadata().file_metadata().num_rows() as usize;
                }
                _ => panic!("unexpected file {path:?} (a temporary left behind?)"),
            }
        }
    }
    (files, rows)
}

/// Posts bodies from many tasks, shuts down, and counts: every accepted
/// event is in a final window result and in a stored file.
async fn shutdown_stores_everything(format: &str) {
    let dir = temp_dir(&format!("shutdown-{}", format.len()));
    let config =
        config(&format!("archive: {{format: {format}}}\ntenants: {{rate: {{cells: 400, per: 1s, burst: 400}}}}"));
    let final_events = Arc::new(Mutex::new(HashMap::<String, u64>::new()));
    let host = Host::builder(config)
        .files(LocalDir::new(dir.join("archive")))
        .observe({
            let final_events = Arc::clone(&final_events);
            move |out| {
                let mut seen = final_events.lock().unwrap();
                for r in out.results.iter().filter(|r| r.result.is_final) {
                    // The latest revision of a window holds its whole count.
                    let key = format!("{:?}/{}", r.result.group, r.result.start);
                    seen.insert(key, r.result.events);
                }
            }
        })
        .start()
        .await
        .unwrap();
    let handle = host.handle();

    let mut tasks = Vec::new();
    for i in 0..40usize {
        let handle = handle.clone();
        let tenant = ["acme", "globex"][i % 2];
        tasks.push(tokio::spawn(async move {
            let mut text = String::from_utf8(body(tenant, 25, 2000 - i as i64 * 20, i * 100).to_vec()).unwrap();
            // One invalid event per body: another tenant's.
            text.push_str(&format!(r#"{{"tenant":"intruder","stream":"http","ts":{}}}"#, now_ms()));
            handle.ingest(tenant, "application/x-ndjson", Bytes::from(text)).await
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        let receipt = task.await.unwrap().unwrap();
        assert_eq!(receipt.rejected.len(), 1);
        accepted += receipt.accepted;
    }
    assert!(accepted > 0);

    let report = host.shutdown().await.unwrap();
    assert_eq!(report.stats.total.admitted as usize, accepted);
    assert!(report.stats.total.is_balanced());
    assert_eq!(report.files_unstored, 0);
    let (files, rows) = stored_rows(&dir.join("archive"));
    assert_eq!(rows, accepted, "every accepted event is in a stored file");
    assert_eq!(report.host.files.rows as usize, accepted);
    assert_eq!(report.host.files.written as usize, files);
    assert_eq!(report.host.files.pending, 0);
    let in_results: u64 = final_events.lock().unwrap().values().sum();
    assert_eq!(in_results as usize, accepted, "every accepted event is in a final window result");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stores_every_accepted_event_in_a_result_and_a_csv_file() {
    shutdown_stores_everything("{kind: csv}").await;
}

#[cfg(feature = "parquet")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stores_every_accepted_event_in_a_result_and_a_parquet_file() {
    shutdown_stores_everything("{kind: parquet}").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_continues_from_the_snapshot() {
    let dir = temp_dir("snapshot");
    let host_config = HostConfig {
        snapshot: Some(dir.join("state.bin")),
        snapshot_every: Span::from_millis(100),
        ..HostConfig::default()
    };
    let config = config("dedup: {ids_per_tenant: 1000}");

    let host = Host::builder(config.clone()).config(host_config.clone()).start().await.unwrap();
    let receipt = host.handle().ingest("acme", "application/x-ndjson", body("acme", 20, 3000, 0)).await.unwrap();
    assert_eq!(receipt.accepted, 20);
    // A periodic snapshot lands while the host runs.
    tokio::time::timeout(Duration::from_secs(10), async {
        while host.handle().stats().snapshots.written == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    host.shutdown().await.unwrap();
    assert!(dir.join("state.bin").exists());

    let host = Host::builder(config).config(host_config).start().await.unwrap();
    let handle = host.handle();
    assert_eq!(handle.health().await.unwrap().pipeline.total.admitted, 20, "counters restored");
    // The dedup memory came back too: a retried body is not counted twice.
    let retried = handle.ingest("acme", "application/x-ndjson", body("acme", 20, 3000, 0)).await.unwrap();
    assert_eq!((retried.accepted, retried.duplicates), (0, 20));
    let report = host.shutdown().await.unwrap();
    assert_eq!(report.stats.total.admitted, 20);
}

/// A webhook receiver on loopback that answers 503 to its first `failures`
/// requests, then 200; it keeps the bodies it accepted.
async fn receiver(failures: usize) -> (String, Arc<Mutex<Vec<serde_json::Value>>>, Arc<AtomicUsize>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let app = Router::new().route(
        "/hook",
        post({
            let (bodies, calls) = (Arc::clone(&bodies), Arc::clone(&calls));
            move |body: Bytes| async move {
                if calls.fetch_add(1, Ordering::SeqCst) < failures {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                bodies.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, bodies, calls)
}

fn alerting_config(url: &str) -> PipelineConfig {
    config(&format!(
        r#"
alerts:
  rules:
    - name: busy
      rule: count() by (region) > 0 keep_firing_for 1h
  notifier:
    channels: {{ops: {{kind: webhook, url: "{url}"}}}}
    default_channels: [ops]
    route: {{group_wait: 0s, group_interval: 1m, repeat_interval: 1h}}
"#
    ))
}

fn fast_retries() -> DeliveryConfig {
    DeliveryConfig { first_backoff: Span::from_millis(20), timeout: Span::from_secs(2), ..DeliveryConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_retried_until_a_real_receiver_takes_them() {
    let (url, bodies, calls) = receiver(2).await;
    let host = Host::builder(alerting_config(&url))
        .config(HostConfig { delivery: fast_retries(), ..HostConfig::default() })
        .start()
        .await
        .unwrap();
    let handle = host.handle();
    handle.ingest("acme", "application/x-ndjson", body("acme", 9, 3000, 0)).await.unwrap();
    // The receiver holds the body before its 200 reaches the deliverer,
    // which counts the send only then: wait for the count, not the body.
    tokio::time::timeout(Duration::from_secs(20), async {
        while bodies.lock().unwrap().is_empty() || handle.stats().delivery.sent == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a notification delivered");
    let stats = handle.stats().delivery;
    assert!(stats.sent >= 1 && stats.failed_attempts >= 2, "{stats:?}");
    assert!(calls.load(Ordering::SeqCst) >= 3);
    let first = bodies.lock().unwrap()[0].clone();
    assert_eq!(first["status"], "firing", "{first}");
    assert_eq!(first["alerts"][0]["labels"]["alertname"], "busy", "{first}");
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsent_notifications_are_kept_across_a_restart() {
    let dir = temp_dir("unsent");
    let (down, _, down_calls) = receiver(usize::MAX).await;
    let host_config = HostConfig {
        snapshot: Some(dir.join("state.bin")),
        delivery: fast_retries(),
        shutdown_grace: Span::from_millis(300),
        ..HostConfig::default()
    };
    let host = Host::builder(alerting_config(&down)).config(host_config.clone()).start().await.unwrap();
    host.handle().ingest("acme", "application/x-ndjson", body("acme", 9, 3000, 0)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while down_calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let report = host.shutdown().await.unwrap();
    assert!(report.notifications_unsent >= 1, "{report:?}");
    assert!(dir.join("state.bin.notifications.json").exists());

    // The restarted host loads the saved notifications and tries again.
    let calls_before = down_calls.load(Ordering::SeqCst);
    let host = Host::builder(alerting_config(&down)).config(host_config).start().await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while down_calls.load(Ordering::SeqCst) == calls_before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the saved notification is tried again after the restart");
    assert!(!dir.join("state.bin.notifications.json").exists());
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_conflated_then_evicted_with_bounded_memory() {
    let config = config("raw: {enabled: true}\nsubscribers: {max_queued: 4, max_lag: 300ms}");
    let host = Host::builder(config).start().await.unwrap();
    let handle = host.handle();
    // Never reads.
    let mut slow = handle.subscribe(Subscription::new("acme", "events", Mode::Full).json()).await.unwrap();
    // Reads all along.
    let mut fast = handle.subscribe(Subscription::new("acme", "events", Mode::Full).json()).await.unwrap();
    let mut fast_events = 0;
    let mut frames = Vec::new();
    for i in 0..40 {
        handle.ingest("acme", "application/x-ndjson", body("acme", 5, 3000, i * 10)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(25)).await;
        while let Ok(Ok(())) = tokio::time::timeout(Duration::from_millis(1), fast.next(&mut frames)).await {}
        fast_events += frames.drain(..).count();
    }
    // What the fast one had not read yet in the loop (a starved machine may
    // have run the loop's 1 ms reads late) is still there for it.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while fast_events < 30 && fast.next(&mut frames).await.is_ok() {
            fast_events += frames.drain(..).count();
        }
    })
    .await;
    let stats = handle.health().await.unwrap().pipeline;
    assert!(stats.subscriber_frames_dropped > 0, "the slow one's oldest frames were dropped and counted");
    assert_eq!(stats.subscribers_evicted, 1, "only the slow one");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Err(why) = slow.next(&mut frames).await {
                return why;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ended, Closed::Evicted(edgestream::pipeline::EvictReason::SlowConsumer));
    assert!(fast_events >= 30, "the fast subscriber kept up: {fast_events} frames");
    assert_eq!(handle.stats().subscribers, 1);
    host.shutdown().await.unwrap();
}

/// A file sink that is down.
struct Down;

impl edgestream::host::tokio::FileSink for Down {
    fn put<'a>(&'a self, _: &'a str, _: Bytes) -> edgestream::host::tokio::BoxFuture<'a, std::io::Result<()>> {
        Box::pin(async { Err(std::io::Error::other("the store is down")) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_the_sink_could_not_take_are_kept_and_stored_after_the_restart() {
    let dir = temp_dir("spool");
    let host_config = HostConfig {
        snapshot: Some(dir.join("state.bin")),
        shutdown_grace: Span::from_millis(300),
        ..HostConfig::default()
    };
    let config = config("archive: {format: {kind: csv}}");
    let host = Host::builder(config.clone()).config(host_config.clone()).files(Down).start().await.unwrap();
    let mut accepted = 0;
    for i in 0..4 {
        let receipt =
            host.handle().ingest("acme", "application/x-ndjson", body("acme", 25, 3000, i * 100)).await.unwrap();
        accepted += receipt.accepted;
    }
    let report = host.shutdown().await.unwrap();
    assert!(report.files_unstored > 0, "{report:?}");
    assert!(report.host.files.failed_attempts > 0);
    assert!(dir.join("state.bin.unstored").is_dir());

    let archive = dir.join("archive");
    let host = Host::builder(config).config(host_config).files(LocalDir::new(&archive)).start().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while host.handle().stats().files.written < report.files_unstored as u64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the kept files are stored");
    host.shutdown().await.unwrap();
    assert!(!dir.join("state.bin.unstored").exists());
    let (_, rows) = stored_rows(&archive);
    assert_eq!(rows, accepted, "every accepted event reached the store in the end");
}

/// Counts the raw events in JSON `full` frames.
fn raw_events(frames: &mut Vec<Bytes>) -> usize {
    frames
        .drain(..)
        .map(|frame| {
            let frame: serde_json::Value = serde_json::from_slice(&frame).unwrap();
            frame["events"].as_array().expect("a raw events frame").len()
        })
        .sum()
}

/// The race the test below hit now and then, made certain: a `next`
/// cancelled after its request was answered with frames, then a shutdown
/// that hands over more. The answer's frames come first, then the handed
/// over ones, then the end.
#[tokio::test]
async fn frames_answered_to_a_cancelled_next_are_not_lost_at_shutdown() {
    let host = Host::builder(config("raw: {enabled: true}")).start().await.unwrap();
    let handle = host.handle();
    let mut full = handle.subscribe(Subscription::new("acme", "events", Mode::Full).json()).await.unwrap();
    let mut frames = Vec::new();
    handle.ingest("acme", "application/x-ndjson", body("acme", 10, 3000, 0)).await.unwrap();
    // Fan the batch out to the subscriber's queue now, whatever the tick.
    handle
        .with_pipeline(|p| p.advance(SystemClock.now(), &mut edgestream::pipeline::Outputs::default()))
        .await
        .unwrap();
    // `next` sends its request and is dropped before the answer...
    tokio::select! {
        biased;
        _ = full.next(&mut frames) => panic!("answered before the pipeline task ran"),
        () = std::future::ready(()) => {}
    }
    // ...which the pipeline task gives before this round trip returns.
    handle.with_pipeline(|_| ()).await.unwrap();
    handle.ingest("acme", "application/x-ndjson", body("acme", 5, 3000, 10)).await.unwrap();
    let report = host.shutdown().await.unwrap();
    let mut events = 0;
    while full.next(&mut frames).await.is_ok() {
        events += raw_events(&mut frames);
    }
    assert_eq!(report.stats.total.admitted, 15);
    assert_eq!(events, 15, "the answered frames and the handed over ones all arrive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_is_cancel_safe_and_the_last_frames_come_before_the_end() {
    let config = config("raw: {enabled: true}\nsubscribers: {max_queued: 100000}");
    let host = Host::builder(config).start().await.unwrap();
    let handle = host.handle();
    let mut sub = handle.subscribe(Subscription::new("acme", "1s", Mode::Aggregates).json()).await.unwrap();
    let mut full = handle.subscribe(Subscription::new("acme", "events", Mode::Full).json()).await.unwrap();
    let mut frames = Vec::new();
    let mut events = 0;
    for i in 0..30 {
        handle.ingest("acme", "application/x-ndjson", body("acme", 10, 3000, i * 10)).await.unwrap();
        // Cancel `next` often: no frame may be lost.
        for _ in 0..5 {
            tokio::select! {
                _ = full.next(&mut frames) => {}
                _ = tokio::time::sleep(Duration::from_micros(200)) => {}
            }
        }
        events += raw_events(&mut frames);
    }
    let report = host.shutdown().await.unwrap();
    loop {
        match full.next(&mut frames).await {
            Ok(()) => events += raw_events(&mut frames),
            Err(why) => {
                assert_eq!(why, Closed::Shutdown);
                break;
            }
        }
    }
    assert_eq!(events as u64, report.stats.total.admitted, "every raw event arrived once");
    // The aggregates subscriber gets the final results of the closing windows.
    let mut finals = 0;
    while sub.next(&mut frames).await.is_ok() {
        for frame in frames.drain(..) {
            let frame: serde_json::Value = serde_json::from_slice(&frame).unwrap();
            finals += frame["results"].as_array().map_or(0, Vec::len);
        }
    }
    assert!(finals > 0, "final window results reach the subscriber at shutdown");
}

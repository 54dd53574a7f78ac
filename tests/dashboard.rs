//! The dashboard in a real headless Chromium, driven over the DevTools
//! protocol: the example server runs with its demo generator, the page
//! loads, and the test waits until the KPI tiles, the region tiles, the
//! chart, the heatmap and the event timeline show live data. It saves a screenshot
//! (`EDGESTREAM_ARTIFACTS`, default the system temp dir).
//!
//! Needs Chromium: `EDGESTREAM_CHROMIUM` names the binary (default
//! `chromium`); `.ci/run` installs Debian's package.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

#[path = "../examples/ingest_server/app.rs"]
#[allow(dead_code, unreachable_pub, reason = "the example's module, shared with the test")]
mod app;
#[path = "../examples/ingest_server/demo.rs"]
#[allow(dead_code, unreachable_pub, reason = "the example's module, shared with the test")]
mod demo;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use edgestream::host::tokio::Host;
use edgestream::pipeline::PipelineConfig;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const CONFIG: &str = include_str!("../examples/ingest_server/config.yaml");

/// Kills the browser however the test ends.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts headless Chromium and returns it with its DevTools address.
fn launch(profile: &std::path::Path) -> (Browser, String) {
    let binary = std::env::var("EDGESTREAM_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let mut child = Command::new(&binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-port=0",
            "--window-size=1400,1100",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{binary}: {e} (set EDGESTREAM_CHROMIUM)"));
    let stderr = child.stderr.take().unwrap();
    let browser = Browser(child);
    let mut lines = BufReader::new(stderr).lines();
    let address = loop {
        let line = lines.next().expect("Chromium printed its DevTools address").unwrap();
        if let Some(rest) = line.split("DevTools listening on ws://").nth(1) {
            break rest.split('/').next().unwrap().to_owned();
        }
    };
    // Keep draining stderr so the browser never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    (browser, address)
}

/// One DevTools session on a page.
struct Page {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next_id: u64,
}

impl Page {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket.send(Message::Text(request.into())).await.unwrap();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .expect("DevTools answered")
                .unwrap()
                .unwrap();
            let Message::Text(text) = message else { continue };
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["id"] == id {
                assert!(value.get("error").is_none(), "{method}: {value}");
                return value["result"].clone();
            }
        }
    }

    async fn eval(&mut self, expression: &str) -> Value {
        let result = self.call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true})).await;
        result["result"]["value"].clone()
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        acc = (acc << 6) | ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_numbers_in_a_real_browser() {
    let dir = std::env::temp_dir().join(format!("edgestream-dashboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // The example's configuration, without its archive (nothing to store here).
    let mut config: Value = serde_yaml_ng::from_str(CONFIG).unwrap();
    config["pipeline"].as_object_mut().unwrap().remove("archive");
    let pipeline: PipelineConfig = serde_json::from_value(config["pipeline"].clone()).unwrap();
    let max_body = pipeline.limits.max_batch_bytes;
    let host = Host::builder(pipeline).start().await.unwrap();
    let state = app::AppState { host: host.handle(), auth: false, metrics_window: "1s".into(), archive: None };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/?tenant=acme", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app::router(state, max_body)).await.unwrap() });
    let generator = tokio::spawn(demo::run(host.handle()));
    // Let every tenant exist before the page lists them.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (browser, devtools) = tokio::task::spawn_blocking({
        let profile = dir.join("profile");
        move || launch(&profile)
    })
    .await
    .unwrap();
    let targets: Value = reqwest::get(format!("http://{devtools}/json/list")).await.unwrap().json().await.unwrap();
    let page_ws = targets
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "page")
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .expect("a page target")
        .to_owned();
    let (socket, _) = tokio_tungstenite::connect_async(page_ws).await.unwrap();
    let mut page = Page { socket, next_id: 0 };
    page.call("Page.enable", json!({})).await;
    page.call("Page.navigate", json!({"url": url})).await;

    // Live numbers: events per second in the KPI tile, one tile per region,
    // a drawn chart (two points or more) and raw events in the timeline.
    let probe = r##"JSON.stringify({
        rate: document.getElementById("kpi-rate").textContent,
        p99: document.getElementById("kpi-p99").textContent,
        regions: document.querySelectorAll("#regions .region").length,
        timeline: document.querySelectorAll("#timeline div").length,
        tenants: document.getElementById("tenant").options.length,
        points: Number(document.getElementById("chart").dataset.points || 0),
        cells: Number(document.getElementById("heatmap").dataset.cells || 0),
        status: document.getElementById("status").textContent,
    })"##;
    let mut seen = Value::Null;
    let mut rates = Vec::new();
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        seen = serde_json::from_str(page.eval(probe).await.as_str().unwrap_or("null")).unwrap();
        if let Some(rate) = seen["rate"].as_str().and_then(|r| r.parse::<f64>().ok())
            && rates.last() != Some(&rate)
        {
            rates.push(rate);
        }
        if rates.len() >= 3
            && seen["regions"].as_u64() >= Some(3)
            && seen["timeline"].as_u64() >= Some(10)
            && seen["cells"].as_u64() >= Some(3)
        {
            break;
        }
    }
    assert!(rates.len() >= 3, "the events/s tile changed at least three times: {rates:?} {seen}");
    assert!(rates.iter().all(|r| *r > 0.0), "{rates:?}");
    assert!(seen["p99"].as_str().unwrap().parse::<f64>().unwrap() > 0.0, "{seen}");
    assert!(seen["regions"].as_u64() >= Some(3), "{seen}");
    assert!(seen["timeline"].as_u64() >= Some(10), "{seen}");
    assert_eq!(seen["tenants"], 3, "{seen}");
    assert!(seen["points"].as_u64() >= Some(2), "the chart has a line: {seen}");
    assert!(seen["cells"].as_u64() >= Some(3), "the heatmap has cells: {seen}");
    assert_eq!(seen["status"], "live", "{seen}");

    let shot = page.call("Page.captureScreenshot", json!({"format": "png"})).await;
    let png = decode_base64(shot["data"].as_str().unwrap());
    assert_eq!(png.get(1..4), Some(&b"PNG"[..]));
    let artifacts = std::env::var_os("EDGESTREAM_ARTIFACTS").map_or_else(std::env::temp_dir, Into::into);
    std::fs::create_dir_all(&artifacts).unwrap();
    let path = artifacts.join("dashboard.png");
    std::fs::write(&path, &png).unwrap();
    println!("dashboard screenshot: {} ({} bytes); last probe {seen}", path.display(), png.len());

    drop(page);
    drop(browser);
    generator.abort();
    host.shutdown().await.unwrap();
}

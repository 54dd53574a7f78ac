//! The object-store sink end to end: a host archives to a real S3 API
//! server on loopback (moto's `moto_server`, a stand-in for R2's S3 API),
//! and every accepted event is in the objects after shutdown.
//!
//! `EDGESTREAM_MOTO` names the `moto_server` binary (default `moto_server`);
//! `.ci/run` installs it in its Python environment.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edgestream::host::tokio::{Clock, Host, ObjectStoreSink, SystemClock};
use edgestream::pipeline::PipelineConfig;
use futures_util::StreamExt;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;

/// Stops the server however the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start_s3() -> (Server, String) {
    let binary = std::env::var("EDGESTREAM_MOTO").unwrap_or_else(|_| "moto_server".into());
    let port = free_port();
    let child = Command::new(&binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{binary}: {e} (set EDGESTREAM_MOTO)"));
    let server = Server(child);
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client.get(&url).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // S3 buckets are created with a PUT.
    let created = client.put(format!("{url}/edgestream")).send().await.unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    (server, url)
}

fn body(tenant: &str, n: usize, first: usize) -> Bytes {
    let end = SystemClock.now().as_millis() - 2000;
    let text: String = (0..n)
        .map(|i| {
            format!(
                r#"{{"tenant":"{tenant}","stream":"http","ts":{},"id":"e{}","dims":{{"region":"eu"}},"fields":{{"latency_ms":{}}}}}"#,
                end - (n - i) as i64,
                first + i,
                i
            ) + "\n"
        })
        .collect();
    Bytes::from(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_files_land_in_an_s3_bucket_whole() {
    // object_store's client is built without a default crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (_server, url) = start_s3().await;
    let store: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(&url)
            .with_allow_http(true)
            .with_bucket_name("edgestream")
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap(),
    );
    let config = PipelineConfig::from_yaml_str(
        "windows: [{name: 1s, spec: {size: 1s}}]\narchive: {format: {kind: csv}, sink: {rollover: {max_rows: 100}}}",
    )
    .unwrap();
    let host = Host::builder(config)
        .files(ObjectStoreSink::new(Arc::clone(&store)).with_prefix("raw/"))
        .start()
        .await
        .unwrap();
    let handle = host.handle();
    let mut accepted = 0;
    for i in 0..6 {
        for tenant in ["acme", "globex"] {
            accepted +=
                handle.ingest(tenant, "application/x-ndjson", body(tenant, 60, i * 100)).await.unwrap().accepted;
        }
    }
    let report = host.shutdown().await.unwrap();
    assert_eq!(report.files_unstored, 0);
    assert_eq!(report.host.files.rows as usize, accepted);

    let objects: Vec<_> = store.list(None).collect().await;
    let mut rows = 0;
    let mut keys = Vec::new();
    for meta in objects {
        let meta = meta.unwrap();
        let key = meta.location.to_string();
        assert!(key.starts_with("raw/tenant="), "{key}");
        let text = store.get_opts(&meta.location, Default::default()).await.unwrap().bytes().await.unwrap();
        let text = String::from_utf8(text.to_vec()).unwrap();
        assert!(text.starts_with("ts,tenant,stream,"), "{key}: a whole file");
        rows += text.lines().count() - 1;
        keys.push(key);
    }
    assert_eq!(rows, accepted, "every accepted event is in an object: {keys:?}");
    assert!(keys.len() >= 2 * 4, "rollover at 100 rows: {keys:?}");
    assert_eq!(keys.len() as u64, report.host.files.written);
}

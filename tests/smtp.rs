//! Email notifications over SMTP (feature `smtp`): an alert fires and its
//! email reaches an SMTP receiver on loopback, after the receiver refused
//! the first attempt with a transient error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use edgestream::host::tokio::{Clock, DeliveryConfig, Host, HostConfig, SmtpConfig, SmtpSecurity, SystemClock};
use edgestream::pipeline::PipelineConfig;
use edgestream::time::Span;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A minimal SMTP receiver: answers each session's first `MAIL FROM` with
/// `451` for the first `refusals` sessions, and keeps every message's data.
async fn receiver(refusals: usize) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let messages = Arc::new(Mutex::new(Vec::new()));
    let sessions = Arc::new(AtomicUsize::new(0));
    let kept = Arc::clone(&messages);
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let (messages, session) = (Arc::clone(&kept), sessions.fetch_add(1, Ordering::SeqCst));
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 test ESMTP\r\n").await.unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line.split([' ', ':']).next().unwrap_or_default().to_ascii_uppercase();
                    let answer: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250 test\r\n",
                        "MAIL" if session < refusals => b"451 try again later\r\n",
                        "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 ok\r\n",
                        "DATA" => {
                            write.write_all(b"354 go on\r\n").await.unwrap();
                            let mut data = String::new();
                            while let Ok(Some(line)) = lines.next_line().await {
                                if line == "." {
                                    break;
                                }
                                data.push_str(&line);
                                data.push('\n');
                            }
                            messages.lock().unwrap().push(data);
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"502 not implemented\r\n",
                    };
                    if write.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_email_reaches_an_smtp_receiver_after_a_retry() {
    let (port, messages) = receiver(1).await;
    let config = PipelineConfig::from_yaml_str(
        r#"
windows:
  - name: 1s
    spec: {size: 1s, group_by: [region], idle_timeout: 100ms, fields: [{field: latency_ms}]}
alerts:
  rules:
    - name: slow
      rule: avg(latency_ms) by (region) > 100 keep_firing_for 1h severity=critical
      annotations: {summary: "slow in {{labels.region}}"}
  notifier:
    channels: {mail: {kind: email, from: "alerts@example.com", to: ["sre@example.com", "oncall@example.com"]}}
    default_channels: [mail]
    route: {group_wait: 0s, group_interval: 1m, repeat_interval: 1h}
tick: 50ms
"#,
    )
    .unwrap();
    let smtp = SmtpConfig {
        host: "127.0.0.1".into(),
        port: Some(port),
        security: SmtpSecurity::None,
        username: None,
        password: None,
    };
    let delivery =
        DeliveryConfig { first_backoff: Span::from_millis(50), smtp: Some(smtp), ..DeliveryConfig::default() };
    let host = Host::builder(config).config(HostConfig { delivery, ..HostConfig::default() }).start().await.unwrap();
    let handle = host.handle();
    let ts = SystemClock.now().as_millis() - 3000;
    let body = format!(
        r#"{{"tenant":"acme","stream":"http","ts":{ts},"dims":{{"region":"eu"}},"fields":{{"latency_ms":400}}}}"#
    );
    handle.ingest("acme", "application/x-ndjson", Bytes::from(body)).await.unwrap();

    // The server stores the message before its final reply reaches the
    // deliverer, which counts the send only then: wait for both.
    tokio::time::timeout(Duration::from_secs(20), async {
        while messages.lock().unwrap().is_empty() || handle.stats().delivery.sent == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("an email arrives and is counted");
    let stats = handle.stats().delivery;
    assert_eq!(stats.sent, 1, "{stats:?}");
    assert!(stats.failed_attempts >= 1, "the first attempt was refused: {stats:?}");
    assert_eq!(stats.undeliverable, 0);
    let message = messages.lock().unwrap()[0].clone();
    assert!(message.contains("From: alerts@example.com"), "{message}");
    assert!(message.contains("sre@example.com") && message.contains("oncall@example.com"), "{message}");
    assert!(message.contains("Subject:") && message.contains("slow"), "{message}");
    assert!(message.contains("slow in eu"), "{message}");
    host.shutdown().await.unwrap();
}

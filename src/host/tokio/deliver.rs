//! Sending the pipeline's alert notifications: webhook and Slack bodies over
//! HTTP, with timeouts, retries with backoff and a circuit breaker per
//! channel. A notification that cannot be sent yet is kept and retried;
//! one that can never be sent is counted and logged.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::tokio::sync::{mpsc, watch};
use ::tokio::time::Instant;
use serde::{Deserialize, Serialize};

use super::{BoxFuture, Clock};
use crate::alert::Notification;
use crate::alert::payload::{self, Delivery, Target};
use crate::flow::{BreakerConfig, CircuitBreaker};
use crate::time::Span;

/// Why a delivery failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// Worth retrying: a timeout, a refused connection, HTTP 5xx, 408 or 429.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help: HTTP 4xx, an invalid URL, a channel this
    /// deliverer does not support. Counted as undeliverable.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// Sends one rendered notification.
pub trait Deliver: Send + Sync + 'static {
    /// Sends `delivery` once; the caller retries transient failures.
    fn deliver<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), DeliveryError>>;
}

/// Webhook and Slack notifications as HTTP(S) POSTs with `reqwest`. Email
/// channels are refused as [`DeliveryError::Permanent`]: plug in a
/// [`Deliver`] of your own for SMTP.
#[derive(Clone, Debug)]
pub struct HttpDelivery {
    client: reqwest::Client,
}

impl HttpDelivery {
    /// A client whose requests time out after `timeout`.
    pub fn new(timeout: Duration) -> Result<HttpDelivery, DeliveryError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("edgestream/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DeliveryError::Permanent(format!("HTTP client: {e}")))?;
        Ok(HttpDelivery { client })
    }
}

impl Deliver for HttpDelivery {
    fn deliver<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let url = match &delivery.target {
                Target::Http { url } => url,
                Target::Email { .. } => {
                    return Err(DeliveryError::Permanent(format!(
                        "channel {:?} is email, which this deliverer does not send",
                        delivery.channel
                    )));
                }
            };
            let response = self
                .client
                .post(url.as_str())
                .header(reqwest::header::CONTENT_TYPE, delivery.content_type)
                .body(delivery.body.clone())
                .send()
                .await
                .map_err(|e| {
                    if e.is_builder() {
                        DeliveryError::Permanent(e.to_string())
                    } else {
                        DeliveryError::Transient(e.to_string())
                    }
                })?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
                Err(DeliveryError::Transient(format!("HTTP {status}")))
            } else {
                Err(DeliveryError::Permanent(format!("HTTP {status}")))
            }
        })
    }
}

/// How notifications are retried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Timeout of one attempt (default 10 s).
    pub timeout: Span,
    /// Wait before the first retry (default 1 s); doubled after each failure.
    pub first_backoff: Span,
    /// Longest wait between retries (default 5 min).
    pub max_backoff: Span,
    /// Most notifications kept for retry (default 10,000); beyond it the
    /// oldest is dropped and counted in [`DeliveryStats::dropped`].
    pub max_pending: usize,
    /// The circuit breaker of each channel.
    pub breaker: BreakerConfig,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: Span::from_secs(10),
            first_backoff: Span::from_secs(1),
            max_backoff: Span::from_mins(5),
            max_pending: 10_000,
            breaker: BreakerConfig::default(),
        }
    }
}

/// What the deliverer did, for the health view.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct DeliveryStats {
    /// Notifications delivered.
    pub sent: u64,
    /// Failed attempts (transient ones are retried).
    pub failed_attempts: u64,
    /// Attempts not made because the channel's breaker was open.
    pub breaker_refusals: u64,
    /// Notifications that can never be delivered (permanent failures).
    pub undeliverable: u64,
    /// Notifications dropped because more than `max_pending` waited.
    pub dropped: u64,
    /// Notifications waiting to be delivered.
    pub pending: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

struct Pending {
    notification: Notification,
    delivery: Delivery,
    attempts: u32,
    due: Instant,
}

/// Delivers notifications as they come; retries with backoff; ends when
/// `incoming` closes and nothing is pending, or when `stop` fires, handing
/// back what was not delivered so the host can persist it.
pub(super) async fn run_deliverer(
    deliver: Arc<dyn Deliver>,
    config: DeliveryConfig,
    clock: Arc<dyn Clock>,
    mut incoming: mpsc::UnboundedReceiver<Notification>,
    stats: Arc<Mutex<DeliveryStats>>,
    mut stop: watch::Receiver<bool>,
) -> Vec<Notification> {
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut breakers: HashMap<String, Option<CircuitBreaker>> = HashMap::new();
    let first = Duration::try_from(config.first_backoff).unwrap_or(Duration::from_secs(1));
    let max = Duration::try_from(config.max_backoff).unwrap_or(Duration::from_secs(300));
    let mut open = true;
    let update = |f: &dyn Fn(&mut DeliveryStats)| {
        if let Ok(mut s) = stats.lock() {
            f(&mut s);
        }
    };
    loop {
        let pending = queue.len() as u64;
        update(&|s| s.pending = pending);
        if !open && queue.is_empty() {
            return Vec::new();
        }
        let next_due = queue.iter().map(|p| p.due).min();
        let wake = next_due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        ::tokio::select! {
            n = incoming.recv(), if open => match n {
                Some(notification) => {
                    if queue.len() >= config.max_pending.max(1) {
                        queue.pop_front();
                        update(&|s| s.dropped += 1);
                        tracing::error!("notification dropped: more than {} waiting", config.max_pending);
                    }
                    let delivery = payload::render(&notification);
                    queue.push_back(Pending { notification, delivery, attempts: 0, due: Instant::now() });
                }
                None => open = false,
            },
            _ = ::tokio::time::sleep_until(wake), if next_due.is_some() => {}
            _ = stop.changed() => return queue.into_iter().map(|p| p.notification).collect(),
        }
        let now = Instant::now();
        let mut i = 0;
        while let Some(item) = queue.get_mut(i) {
            if item.due > now {
                i += 1;
                continue;
            }
            // The configuration was checked when the host started.
            let breaker = breakers
                .entry(item.delivery.channel.clone())
                .or_insert_with(|| CircuitBreaker::new(config.breaker).ok());
            let permit = match breaker.as_mut().map(|b| b.acquire(clock.now())) {
                Some(Err(wait)) => {
                    item.due = now + Duration::try_from(wait).unwrap_or(first).max(Duration::from_millis(10));
                    update(&|s| s.breaker_refusals += 1);
                    i += 1;
                    continue;
                }
                Some(Ok(permit)) => Some(permit),
                None => None,
            };
            let result = deliver.deliver(&item.delivery).await;
            if let (Some(breaker), Some(permit)) = (breaker.as_mut(), permit) {
                breaker.record(clock.now(), permit, result.is_ok());
            }
            match result {
                Ok(()) => {
                    tracing::info!(channel = %item.delivery.channel, tenant = %item.notification.tenant,
                        group = %item.notification.group_key, "notification delivered");
                    update(&|s| {
                        s.sent += 1;
                        s.last_error = None;
                    });
                    queue.remove(i);
                }
                Err(DeliveryError::Permanent(e)) => {
                    tracing::error!(channel = %item.delivery.channel, error = %e, "notification undeliverable");
                    let message = format!("{}: {e}", item.delivery.channel);
                    update(&|s| {
                        s.failed_attempts += 1;
                        s.undeliverable += 1;
                        s.last_error = Some(message.clone());
                    });
                    queue.remove(i);
                }
                Err(DeliveryError::Transient(e)) => {
                    item.attempts = item.attempts.saturating_add(1);
                    let backoff = first.saturating_mul(1 << item.attempts.min(20).saturating_sub(1)).min(max);
                    tracing::warn!(channel = %item.delivery.channel, error = %e, retry_in = ?backoff,
                        "notification not delivered; retrying");
                    item.due = Instant::now() + backoff;
                    let message = format!("{}: {e}", item.delivery.channel);
                    update(&|s| {
                        s.failed_attempts += 1;
                        s.last_error = Some(message.clone());
                    });
                    i += 1;
                }
            }
        }
    }
}

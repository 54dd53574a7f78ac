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
use crate::host::DeliveryError;
use crate::time::Span;

/// Sends one rendered notification.
pub trait Deliver: Send + Sync + 'static {
    /// Sends `delivery` once; the caller retries transient failures.
    fn deliver<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), DeliveryError>>;
}

/// Webhook and Slack notifications as HTTP(S) POSTs with `reqwest`; email
/// over SMTP when built with the `smtp` feature and given an
/// [`SmtpDelivery`] ([`HttpDelivery::with_smtp`]). Without it, email
/// channels are refused as [`DeliveryError::Permanent`] (counted as
/// undeliverable).
#[derive(Clone, Debug)]
pub struct HttpDelivery {
    client: reqwest::Client,
    #[cfg(feature = "smtp")]
    smtp: Option<SmtpDelivery>,
}

impl HttpDelivery {
    /// A client whose requests time out after `timeout`.
    pub fn new(timeout: Duration) -> Result<HttpDelivery, DeliveryError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("edgestream/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DeliveryError::Permanent(format!("HTTP client: {e}")))?;
        Ok(HttpDelivery {
            client,
            #[cfg(feature = "smtp")]
            smtp: None,
        })
    }

    /// Also sends email channels, through `smtp`.
    #[cfg(feature = "smtp")]
    #[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
    pub fn with_smtp(mut self, smtp: SmtpDelivery) -> Self {
        self.smtp = Some(smtp);
        self
    }
}

impl Deliver for HttpDelivery {
    fn deliver<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let url = match &delivery.target {
                Target::Http { url } => url,
                Target::Email { .. } => {
                    #[cfg(feature = "smtp")]
                    if let Some(smtp) = &self.smtp {
                        return smtp.deliver(delivery).await;
                    }
                    return Err(DeliveryError::Permanent(format!(
                        "channel {:?} is email: configure delivery.smtp (feature `smtp`)",
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
                    // Webhook URLs are secrets (Slack's are): never in errors or stats.
                    let permanent = e.is_builder();
                    let message = e.without_url().to_string();
                    if permanent { DeliveryError::Permanent(message) } else { DeliveryError::Transient(message) }
                })?;
            DeliveryError::from_status(response.status().as_u16())
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
    /// The SMTP relay for email channels (feature `smtp`).
    #[cfg(feature = "smtp")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpConfig>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: Span::from_secs(10),
            first_backoff: Span::from_secs(1),
            max_backoff: Span::from_mins(5),
            max_pending: 10_000,
            breaker: BreakerConfig::default(),
            #[cfg(feature = "smtp")]
            smtp: None,
        }
    }
}

/// How an SMTP relay is secured.
#[cfg(feature = "smtp")]
#[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587; the default).
    #[default]
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or network.
    None,
}

/// The SMTP relay email notifications go through.
#[cfg(feature = "smtp")]
#[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// The relay's host name.
    pub host: String,
    /// Its port (default: 587 for STARTTLS, 465 for TLS, 25 without).
    #[serde(default)]
    pub port: Option<u16>,
    /// How the connection is secured.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// User name, if the relay wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (never serialized back out).
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
}

#[cfg(feature = "smtp")]
impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Sends email notifications (the plain-text body and subject the
/// pipeline rendered) through an SMTP relay with `lettre`.
#[cfg(feature = "smtp")]
#[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
#[derive(Clone)]
pub struct SmtpDelivery {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
}

#[cfg(feature = "smtp")]
impl std::fmt::Debug for SmtpDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpDelivery").finish_non_exhaustive()
    }
}

#[cfg(feature = "smtp")]
impl SmtpDelivery {
    /// A transport to `config`'s relay whose sends time out after `timeout`.
    pub fn new(config: &SmtpConfig, timeout: Duration) -> Result<SmtpDelivery, DeliveryError> {
        use lettre::AsyncSmtpTransport;
        use lettre::transport::smtp::authentication::Credentials;

        let bad = |e: lettre::transport::smtp::Error| DeliveryError::Permanent(format!("SMTP relay: {e}"));
        let builder = match config.security {
            SmtpSecurity::StartTls => AsyncSmtpTransport::<lettre::Tokio1Executor>::starttls_relay(&config.host)
                .map_err(bad)?
                .port(config.port.unwrap_or(587)),
            SmtpSecurity::Tls => AsyncSmtpTransport::<lettre::Tokio1Executor>::relay(&config.host)
                .map_err(bad)?
                .port(config.port.unwrap_or(465)),
            SmtpSecurity::None => AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(&config.host)
                .port(config.port.unwrap_or(25)),
        };
        let builder = match (&config.username, &config.password) {
            (Some(user), Some(password)) => builder.credentials(Credentials::new(user.clone(), password.clone())),
            _ => builder,
        };
        Ok(SmtpDelivery { transport: builder.timeout(Some(timeout)).build() })
    }
}

#[cfg(feature = "smtp")]
impl Deliver for SmtpDelivery {
    fn deliver<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            use lettre::AsyncTransport;
            use lettre::message::header::ContentType;

            let Target::Email { from, to, subject } = &delivery.target else {
                return Err(DeliveryError::Permanent(format!("channel {:?} is not email", delivery.channel)));
            };
            let address = |a: &str| {
                a.parse::<lettre::message::Mailbox>()
                    .map_err(|e| DeliveryError::Permanent(format!("address {a:?}: {e}")))
            };
            let mut message = lettre::Message::builder().from(address(from)?).subject(subject.as_str());
            for recipient in to {
                message = message.to(address(recipient)?);
            }
            let message = message
                .header(ContentType::TEXT_PLAIN)
                .body(String::from_utf8_lossy(&delivery.body).into_owned())
                .map_err(|e| DeliveryError::Permanent(format!("message: {e}")))?;
            match self.transport.send(message).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_permanent() => Err(DeliveryError::Permanent(e.to_string())),
                Err(e) => Err(DeliveryError::Transient(e.to_string())),
            }
        })
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
            biased;
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
            _ = stop.changed() => return unsent(queue, &mut incoming),
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
            // Past the shutdown deadline, what is left is handed back.
            let result = ::tokio::select! {
                result = deliver.deliver(&item.delivery) => result,
                _ = stop.changed() => return unsent(queue, &mut incoming),
            };
            if let (Some(breaker), Some(permit)) = (breaker.as_mut(), permit) {
                // A permanent failure says nothing about the channel's health.
                breaker.record(clock.now(), permit, !matches!(result, Err(DeliveryError::Transient(_))));
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

/// What was not delivered: the queue, then what is still in the channel.
fn unsent(queue: VecDeque<Pending>, incoming: &mut mpsc::UnboundedReceiver<Notification>) -> Vec<Notification> {
    let mut left: Vec<Notification> = queue.into_iter().map(|p| p.notification).collect();
    while let Ok(notification) = incoming.try_recv() {
        left.push(notification);
    }
    left
}

//! Hosts: what drives a [`Pipeline`](crate::pipeline::Pipeline) on a
//! runtime, with its clock, sockets, files and timers.
//!
//! The core never does I/O; a host does, and stays thin. Each host is a
//! feature:
//!
//! - [`tokio`] (feature `tokio`): a pipeline on a tokio task,
//!   for ingest servers.
//! - [`workers`] (feature `workers`): a pipeline in a Cloudflare Durable
//!   Object, with its state in the object's storage.
//!
//! Both answer HTTP the same way ([`http`]).

#[cfg(any(feature = "tokio", feature = "workers"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "tokio", feature = "workers"))))]
pub mod http;

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;

#[cfg(feature = "workers")]
#[cfg_attr(docsrs, doc(cfg(feature = "workers")))]
pub mod workers;

/// Why a notification was not delivered.
#[cfg(any(feature = "tokio", feature = "workers"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "tokio", feature = "workers"))))]
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

#[cfg(any(feature = "tokio", feature = "workers"))]
impl DeliveryError {
    /// The outcome of a POST that got HTTP `status`: 2xx delivered; 5xx,
    /// 408 and 429 transient; anything else permanent.
    pub fn from_status(status: u16) -> Result<(), DeliveryError> {
        match status {
            200..=299 => Ok(()),
            408 | 429 | 500..=599 => Err(DeliveryError::Transient(format!("HTTP {status}"))),
            _ => Err(DeliveryError::Permanent(format!("HTTP {status}"))),
        }
    }
}

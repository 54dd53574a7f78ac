//! Hosts: what drives a [`Pipeline`](crate::pipeline::Pipeline) on a
//! runtime, with its clock, sockets, files and timers.
//!
//! The core never does I/O; a host does, and stays thin. Each host is a
//! feature:
//!
//! - [`tokio`] (feature `tokio`): a pipeline on a tokio task,
//!   for ingest servers.

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;

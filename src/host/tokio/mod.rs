//! A [`Pipeline`] on a tokio task, for ingest servers (feature `tokio`).
//!
//! [`Host::builder`] starts one task that owns the pipeline; a cloneable
//! [`HostHandle`] talks to it from any number of request handlers:
//!
//! - **Ingest** goes through a bounded channel. When it is full,
//!   [`HostHandle::ingest`] answers [`HostError::Busy`] with a retry-after
//!   at once instead of queueing without limit (HTTP 429).
//! - **Timers**: the task calls [`Pipeline::advance`] when
//!   [`Pipeline::next_deadline`] says (window closes, file rollover, alert
//!   timers, notifications), and at least every [`HostConfig::tick`].
//! - **Subscribers** ([`HostHandle::subscribe`]) pull their encoded frames
//!   from the pipeline's bounded, conflating outboxes; a subscriber that
//!   stays too slow is evicted by the pipeline and its stream ends with the
//!   reason and a close code.
//! - **Files** finished by the pipeline's archive go to a [`FileSink`]
//!   ([`LocalDir`] writes atomically; `ObjectStoreSink`, feature
//!   `object-store`, puts objects to S3, R2 or any `object_store` backend),
//!   in order, retried until stored.
//! - **Snapshots** of the whole pipeline go to a file atomically every
//!   [`HostConfig::snapshot_every`] and at shutdown; the next start restores
//!   from it.
//! - **Notifications** are sent by a [`Deliver`] ([`HttpDelivery`]: webhook
//!   and Slack over HTTP(S)) with timeouts, backoff and a circuit breaker
//!   per channel; unsent ones are kept, counted, and at shutdown saved next
//!   to the snapshot to be retried after the restart.
//! - **Graceful shutdown** ([`Host::shutdown`]): stop accepting, drain the
//!   channel, close every window, finish every file, store the files, write
//!   the final snapshot. Every accepted event is then in a window result and
//!   in the archive.
//!
//! Logs and spans go through `tracing`; audit events are logged at `info`
//! with the target `edgestream::audit`.
//!
//! ```no_run
//! use bytes::Bytes;
//! use edgestream::host::tokio::{Host, HostConfig, LocalDir};
//! use edgestream::pipeline::PipelineConfig;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pipeline = PipelineConfig::from_yaml_str(
//!     "windows: [{name: 1s, spec: {size: 1s, fields: [{field: latency_ms}]}, board: metrics}]",
//! )?;
//! let host = Host::builder(pipeline)
//!     .config(HostConfig { snapshot: Some("data/state.bin".into()), ..HostConfig::default() })
//!     .files(LocalDir::new("data/archive"))
//!     .start()
//!     .await?;
//! let handle = host.handle();
//! let body = Bytes::from_static(br#"{"tenant":"acme","stream":"http","ts":1764900000000,"fields":{"latency_ms":12}}"#);
//! let receipt = handle.ingest("acme", "application/x-ndjson", body).await?;
//! assert_eq!(receipt.accepted, 1);
//! let report = host.shutdown().await?;
//! println!("{}", serde_json::to_string(&report.stats)?);
//! # Ok(())
//! # }
//! ```

mod deliver;
mod files;
mod subscriber;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::tokio::sync::{mpsc, oneshot, watch};
use ::tokio::task::JoinHandle;
use ::tokio::time::Instant;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

pub use super::DeliveryError;
pub use deliver::{Deliver, DeliveryConfig, DeliveryStats, HttpDelivery};
#[cfg(feature = "smtp")]
pub use deliver::{SmtpConfig, SmtpDelivery, SmtpSecurity};
#[cfg(feature = "object-store")]
pub use files::ObjectStoreSink;
pub use files::{FileSink, FileStats, LocalDir};
pub use subscriber::{Closed, Subscriber};

use crate::alert::Notification;
use crate::flow::LoadInputs;
use crate::pipeline::{
    IngestError, Outputs, Pipeline, PipelineConfig, PipelineError, PipelineStats, Receipt, SubscribeError,
    SubscriberId, Subscription,
};
use crate::sink::FinishedFile;
use crate::time::{Span, Timestamp};
use subscriber::{Held, Slot};

/// A boxed, sendable future: what [`FileSink`] and [`Deliver`] return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The host's clock. The pipeline never reads one; the host passes `now`.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp::from_nanos(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX))
    }
}

/// How the host runs its pipeline. Loads from serde (`deny_unknown_fields`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Bodies the ingest channel holds before [`HostHandle::ingest`] answers
    /// [`HostError::Busy`] (default 1024).
    pub queue: usize,
    /// The retry-after given when the channel is full (default 1 s).
    pub retry_after: Span,
    /// Longest time between two `advance` calls, even when the pipeline
    /// names no deadline (default 1 s): it keeps load measures fresh.
    pub tick: Span,
    /// The snapshot file: restored at start when it exists, written every
    /// `snapshot_every` and at shutdown. `None`: no snapshots.
    pub snapshot: Option<PathBuf>,
    /// How often the snapshot is written (default 10 s).
    pub snapshot_every: Span,
    /// How notifications are retried.
    pub delivery: DeliveryConfig,
    /// How long shutdown waits for files to be stored and notifications to
    /// be sent (default 10 s); what is left is reported, and kept beside
    /// the snapshot for the next start.
    pub shutdown_grace: Span,
    /// Bytes of finished files waiting for the file sink (an outage) above
    /// which ingest answers [`HostError::Busy`] instead of growing memory
    /// (default 256 MiB).
    pub max_pending_file_bytes: u64,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            queue: 1024,
            retry_after: Span::from_secs(1),
            tick: Span::from_secs(1),
            snapshot: None,
            snapshot_every: Span::from_secs(10),
            delivery: DeliveryConfig::default(),
            shutdown_grace: Span::from_secs(10),
            max_pending_file_bytes: 256 << 20,
        }
    }
}

/// Why a host call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The ingest channel is full, or the file sink is too far behind:
    /// try again after `retry_after` (HTTP 429).
    #[error("the ingest queue is full; retry after {retry_after}")]
    Busy {
        /// [`HostConfig::retry_after`].
        retry_after: Span,
    },
    /// The host is shutting down or stopped (HTTP 503).
    #[error("the host is shutting down")]
    Closed,
    /// The pipeline refused the body.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The pipeline refused the subscription.
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
    /// The pipeline could not be built or restored.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A file of the host (the snapshot) could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The host's configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// The pipeline task ended abnormally (a panic): nothing was flushed.
    #[error("the pipeline task failed: {0}")]
    Task(String),
}

/// Snapshot writes, for the health view.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SnapshotStats {
    /// Snapshots written.
    pub written: u64,
    /// Snapshots that could not be taken or written.
    pub failed: u64,
    /// Size of the last one.
    pub last_bytes: u64,
    /// When the last one was taken (host clock).
    pub last_at: Option<Timestamp>,
    /// The last failure.
    pub last_error: Option<String>,
}

/// The host's own counters, beside the pipeline's.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct HostStats {
    /// Bodies waiting in the ingest channel.
    pub queue_depth: usize,
    /// [`HostConfig::queue`].
    pub queue_capacity: usize,
    /// Bodies refused because the channel was full.
    pub busy_refusals: u64,
    /// Late events the pipeline handed out (also counted in its window
    /// stats as `late_dropped`); the host logs and does not archive them.
    pub late_events: u64,
    /// Open subscriber streams.
    pub subscribers: usize,
    /// The archive's file writer.
    pub files: FileStats,
    /// Notification delivery.
    pub delivery: DeliveryStats,
    /// Snapshot writes.
    pub snapshots: SnapshotStats,
}

/// The pipeline's stats and the host's: what `/api/health` shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Health {
    /// The pipeline's counters.
    pub pipeline: PipelineStats,
    /// The host's counters.
    pub host: HostStats,
}

/// What a graceful shutdown did.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The pipeline's final counters, after every window closed.
    pub stats: PipelineStats,
    /// The host's final counters.
    pub host: HostStats,
    /// Files not stored within the grace period; kept beside the snapshot
    /// (when there is one) and stored after the restart.
    pub files_unstored: usize,
    /// Notifications not sent within the grace period; saved beside the
    /// snapshot when there is one.
    pub notifications_unsent: usize,
}

type Task = Box<dyn FnOnce(&mut Pipeline) + Send>;
type Observer = Box<dyn FnMut(&Outputs) + Send>;

struct Job {
    tenant: String,
    content_type: String,
    body: Bytes,
    token: Option<String>,
    reply: oneshot::Sender<Result<Receipt, IngestError>>,
}

enum Control {
    Subscribe {
        request: Subscription,
        token: Option<String>,
        reply: oneshot::Sender<Result<(SubscriberId, Arc<Slot>), SubscribeError>>,
    },
    Take {
        id: SubscriberId,
        reply: oneshot::Sender<Result<Vec<Bytes>, SubscribeError>>,
    },
    Resync {
        id: SubscriberId,
        reply: oneshot::Sender<Result<(), SubscribeError>>,
    },
    Unsubscribe {
        id: SubscriberId,
    },
    Run(Task),
    Flush {
        reply: oneshot::Sender<oneshot::Receiver<()>>,
    },
    Shutdown,
}

struct Shared {
    accepting: AtomicBool,
    busy: AtomicU64,
    late: AtomicU64,
    subscribers: AtomicU64,
    retry_after: Span,
    max_pending_file_bytes: u64,
    files: Arc<Mutex<FileStats>>,
    delivery: Arc<Mutex<DeliveryStats>>,
    snapshots: Mutex<SnapshotStats>,
}

/// Builds and starts a [`Host`].
pub struct HostBuilder {
    pipeline: PipelineConfig,
    config: HostConfig,
    files: Option<Arc<dyn FileSink>>,
    deliver: Option<Arc<dyn Deliver>>,
    clock: Arc<dyn Clock>,
    observer: Option<Observer>,
}

impl std::fmt::Debug for HostBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostBuilder").field("pipeline", &self.pipeline).field("config", &self.config).finish()
    }
}

impl HostBuilder {
    /// The host's settings.
    pub fn config(mut self, config: HostConfig) -> Self {
        self.config = config;
        self
    }

    /// Where the archive's finished files go (required when the pipeline
    /// has an archive).
    pub fn files(mut self, sink: impl FileSink) -> Self {
        self.files = Some(Arc::new(sink));
        self
    }

    /// How notifications are sent (default: [`HttpDelivery`] with
    /// [`DeliveryConfig::timeout`], and SMTP for email channels when
    /// `delivery.smtp` is set, feature `smtp`).
    pub fn deliver(mut self, deliver: impl Deliver) -> Self {
        self.deliver = Some(Arc::new(deliver));
        self
    }

    /// The clock (default [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Called on the pipeline task with everything each `advance` hands
    /// out (results, deltas, alerts, …), before the host routes it. Keep it
    /// quick: the pipeline waits for it.
    pub fn observe(mut self, observer: impl FnMut(&Outputs) + Send + 'static) -> Self {
        self.observer = Some(Box::new(observer));
        self
    }

    /// Builds the pipeline (restored from [`HostConfig::snapshot`] when the
    /// file exists) and starts its task, the file writer and the
    /// deliverer on the current tokio runtime.
    pub async fn start(self) -> Result<Host, HostError> {
        let HostBuilder { pipeline: pipeline_config, config, files, deliver, clock, observer } = self;
        if config.queue == 0 {
            return Err(HostError::Config("queue must be at least 1".into()));
        }
        let duration = |name: &str, span: Span| {
            Duration::try_from(span)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| HostError::Config(format!("{name} must be positive")))
        };
        let tick = duration("tick", config.tick)?;
        let snapshot_every = duration("snapshot_every", config.snapshot_every)?;
        duration("delivery.first_backoff", config.delivery.first_backoff)?;
        duration("delivery.max_backoff", config.delivery.max_backoff)?;
        duration("delivery.timeout", config.delivery.timeout)?;
        let grace = Duration::try_from(config.shutdown_grace).unwrap_or_default();
        crate::flow::CircuitBreaker::new(config.delivery.breaker)
            .map_err(|e| HostError::Config(format!("delivery.breaker: {e}")))?;
        if pipeline_config.archive.is_some() && files.is_none() {
            return Err(HostError::Config("the pipeline has an archive: give the host a file sink".into()));
        }

        let pipeline = match &config.snapshot {
            Some(path) => match ::tokio::fs::read(path).await {
                Ok(bytes) => {
                    tracing::info!(path = %path.display(), bytes = bytes.len(), "restoring the pipeline");
                    Pipeline::restore(pipeline_config, &bytes)?
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Pipeline::new(pipeline_config)?,
                Err(e) => return Err(HostError::File { path: path.clone(), message: e.to_string() }),
            },
            None => Pipeline::new(pipeline_config)?,
        };
        let saved = match &config.snapshot {
            Some(path) => load_unsent(&unsent_path(path)).await?,
            None => Vec::new(),
        };
        let spooled = match &config.snapshot {
            Some(path) => files::unspool(&spool_path(path))
                .await
                .map_err(|e| HostError::File { path: spool_path(path), message: e.to_string() })?,
            None => Vec::new(),
        };
        if !spooled.is_empty() && files.is_none() {
            return Err(HostError::Config(format!(
                "{} files kept at the last shutdown wait to be stored: give the host a file sink",
                spooled.len()
            )));
        }

        let shared = Arc::new(Shared {
            accepting: AtomicBool::new(true),
            busy: AtomicU64::new(0),
            late: AtomicU64::new(0),
            subscribers: AtomicU64::new(0),
            retry_after: config.retry_after,
            max_pending_file_bytes: config.max_pending_file_bytes,
            files: Arc::default(),
            delivery: Arc::default(),
            snapshots: Mutex::default(),
        });
        let (stop_tx, stop_rx) = watch::channel(false);

        let (files_tx, writer) = match files {
            Some(sink) => {
                let (tx, rx) = mpsc::unbounded_channel();
                if !spooled.is_empty() {
                    tracing::info!(count = spooled.len(), "storing files kept at the last shutdown");
                }
                for file in spooled {
                    if let Ok(mut s) = shared.files.lock() {
                        s.pending += 1;
                        s.pending_bytes += file.bytes.len() as u64;
                    }
                    let _ = tx.send(files::ToWriter::File(file));
                }
                let task = files::run_writer(sink, rx, Arc::clone(&shared.files), stop_rx.clone());
                (Some(tx), Some(::tokio::spawn(task.instrument(tracing::info_span!("edgestream.files")))))
            }
            None => (None, None),
        };
        let deliver = match deliver {
            Some(d) => d,
            None => {
                let timeout = Duration::try_from(config.delivery.timeout).unwrap_or(Duration::from_secs(10));
                let http = HttpDelivery::new(timeout).map_err(|e| HostError::Config(e.to_string()))?;
                #[cfg(feature = "smtp")]
                let http = match &config.delivery.smtp {
                    Some(smtp) => http.with_smtp(
                        SmtpDelivery::new(smtp, timeout)
                            .map_err(|e| HostError::Config(format!("delivery.smtp: {e}")))?,
                    ),
                    None => http,
                };
                Arc::new(http)
            }
        };
        let (notes_tx, notes_rx) = mpsc::unbounded_channel();
        for note in saved {
            let _ = notes_tx.send(note);
        }
        let deliverer = ::tokio::spawn(
            deliver::run_deliverer(
                deliver,
                config.delivery.clone(),
                Arc::clone(&clock),
                notes_rx,
                Arc::clone(&shared.delivery),
                stop_rx,
            )
            .instrument(tracing::info_span!("edgestream.deliver")),
        );

        let (jobs_tx, jobs_rx) = mpsc::channel(config.queue);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let runner = Runner {
            last_now: clock.now(),
            pipeline,
            out: Outputs::default(),
            clock,
            slots: HashMap::new(),
            files_tx,
            notes_tx: Some(notes_tx),
            shared: Arc::clone(&shared),
            observer,
            snapshot: config.snapshot.clone(),
            queue: config.queue,
        };
        let ends = Ends { writer, deliverer, stop: stop_tx, grace };
        let task = ::tokio::spawn(
            runner
                .run(jobs_rx, control_rx, tick, snapshot_every, ends)
                .instrument(tracing::info_span!("edgestream.pipeline")),
        );
        Ok(Host { handle: HostHandle { jobs: jobs_tx, control: control_tx, shared }, task })
    }
}

/// A running pipeline. Dropping it without [`shutdown`](Host::shutdown)
/// still shuts down gracefully once every [`HostHandle`] is dropped, but
/// nobody sees the report.
#[derive(Debug)]
pub struct Host {
    handle: HostHandle,
    task: JoinHandle<ShutdownReport>,
}

impl Host {
    /// A host for `pipeline`, with the default [`HostConfig`].
    pub fn builder(pipeline: PipelineConfig) -> HostBuilder {
        HostBuilder {
            pipeline,
            config: HostConfig::default(),
            files: None,
            deliver: None,
            clock: Arc::new(SystemClock),
            observer: None,
        }
    }

    /// A handle for request handlers (cheap to clone).
    pub fn handle(&self) -> HostHandle {
        self.handle.clone()
    }

    /// Stops accepting bodies, drains the channel, closes every window,
    /// finishes and stores every file, writes the final snapshot and waits
    /// (up to [`HostConfig::shutdown_grace`]) for notifications. Open
    /// subscriber streams end with [`Closed::Shutdown`].
    pub async fn shutdown(self) -> Result<ShutdownReport, HostError> {
        self.handle.shared.accepting.store(false, Ordering::SeqCst);
        let _ = self.handle.control.send(Control::Shutdown);
        self.task.await.map_err(|e| HostError::Task(e.to_string()))
    }
}

/// Talks to a running [`Host`]; clone it into each request handler.
#[derive(Clone)]
pub struct HostHandle {
    jobs: mpsc::Sender<Job>,
    control: mpsc::UnboundedSender<Control>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for HostHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostHandle").field("stats", &self.stats()).finish()
    }
}

impl HostHandle {
    /// Ingests one body of `tenant`'s events ([`Pipeline::ingest`]); waits
    /// for the receipt, but never for room in the channel: when it is full
    /// the answer is [`HostError::Busy`] at once.
    pub async fn ingest(&self, tenant: &str, content_type: &str, body: Bytes) -> Result<Receipt, HostError> {
        self.send_job(tenant, content_type, body, None).await
    }

    /// [`ingest`](HostHandle::ingest) for the bearer of `token`, whose
    /// tenant it is ([`Pipeline::ingest_with_token`]).
    pub async fn ingest_with_token(&self, token: &str, content_type: &str, body: Bytes) -> Result<Receipt, HostError> {
        self.send_job("", content_type, body, Some(token.to_owned())).await
    }

    async fn send_job(
        &self,
        tenant: &str,
        content_type: &str,
        body: Bytes,
        token: Option<String>,
    ) -> Result<Receipt, HostError> {
        if !self.shared.accepting.load(Ordering::SeqCst) {
            return Err(HostError::Closed);
        }
        // The file sink is behind (an outage): refuse rather than buffer.
        let pending = self.shared.files.lock().map(|s| s.pending_bytes).unwrap_or_default();
        if pending > self.shared.max_pending_file_bytes {
            self.shared.busy.fetch_add(1, Ordering::Relaxed);
            return Err(HostError::Busy { retry_after: self.shared.retry_after });
        }
        let (reply, answer) = oneshot::channel();
        let job = Job { tenant: tenant.to_owned(), content_type: content_type.to_owned(), body, token, reply };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.busy.fetch_add(1, Ordering::Relaxed);
                return Err(HostError::Busy { retry_after: self.shared.retry_after });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(HostError::Closed),
        }
        Ok(answer.await.map_err(|_| HostError::Closed)??)
    }

    /// Opens a subscription ([`Pipeline::subscribe`]); the stream starts
    /// with a snapshot of the board for `deltas`.
    pub async fn subscribe(&self, request: Subscription) -> Result<Subscriber, HostError> {
        self.open(request, None).await
    }

    /// [`subscribe`](HostHandle::subscribe) for the bearer of `token`
    /// ([`Pipeline::subscribe_with_token`]): refused, and audited, unless
    /// the token grants the tenant, topic and mode.
    pub async fn subscribe_with_token(&self, token: &str, request: Subscription) -> Result<Subscriber, HostError> {
        self.open(request, Some(token.to_owned())).await
    }

    async fn open(&self, request: Subscription, token: Option<String>) -> Result<Subscriber, HostError> {
        let format = request.format;
        let (reply, answer) = oneshot::channel();
        self.control.send(Control::Subscribe { request, token, reply }).map_err(|_| HostError::Closed)?;
        let (id, slot) = answer.await.map_err(|_| HostError::Closed)??;
        Ok(Subscriber::new(id, format, slot, self.control.clone()))
    }

    /// Runs `f` on the pipeline task, between two bodies, and returns what
    /// it returns: for queries ([`Pipeline::rollup`]), rule changes
    /// ([`Pipeline::set_alerts`]) and anything else the host does not wrap.
    pub async fn with_pipeline<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Pipeline) -> R + Send + 'static,
    ) -> Result<R, HostError> {
        let (reply, answer) = oneshot::channel();
        let task: Task = Box::new(move |pipeline| {
            let _ = reply.send(f(pipeline));
        });
        self.control.send(Control::Run(task)).map_err(|_| HostError::Closed)?;
        answer.await.map_err(|_| HostError::Closed)
    }

    /// Finishes every open archive file now and waits until the file sink
    /// has stored them and every file before them: an export then sees
    /// every event accepted so far. Without a file sink, or when the
    /// writer stopped, [`HostError::Closed`].
    pub async fn flush_archive(&self) -> Result<(), HostError> {
        let (reply, answer) = oneshot::channel();
        self.control.send(Control::Flush { reply }).map_err(|_| HostError::Closed)?;
        let stored = answer.await.map_err(|_| HostError::Closed)?;
        stored.await.map_err(|_| HostError::Closed)
    }

    /// The pipeline's stats and the host's.
    pub async fn health(&self) -> Result<Health, HostError> {
        let pipeline = self.with_pipeline(|p| p.stats()).await?;
        Ok(Health { pipeline, host: self.stats() })
    }

    /// The host's own counters (no round trip to the pipeline task).
    pub fn stats(&self) -> HostStats {
        let depth = self.jobs.max_capacity().saturating_sub(self.jobs.capacity());
        Self::stats_of(&self.shared, depth, self.jobs.max_capacity())
    }

    /// Whether the host still accepts bodies.
    pub fn is_accepting(&self) -> bool {
        self.shared.accepting.load(Ordering::SeqCst)
    }
}

/// The tasks beside the pipeline's, for shutdown.
struct Ends {
    writer: Option<JoinHandle<Vec<FinishedFile>>>,
    deliverer: JoinHandle<Vec<Notification>>,
    stop: watch::Sender<bool>,
    grace: Duration,
}

/// The pipeline task's state.
struct Runner {
    pipeline: Pipeline,
    out: Outputs,
    clock: Arc<dyn Clock>,
    last_now: Timestamp,
    slots: HashMap<SubscriberId, Held>,
    files_tx: Option<mpsc::UnboundedSender<files::ToWriter>>,
    notes_tx: Option<mpsc::UnboundedSender<Notification>>,
    shared: Arc<Shared>,
    observer: Option<Observer>,
    snapshot: Option<PathBuf>,
    queue: usize,
}

impl Runner {
    /// The host's clock, never going back.
    fn now(&mut self) -> Timestamp {
        self.last_now = self.last_now.max(self.clock.now());
        self.last_now
    }

    async fn run(
        mut self,
        mut jobs: mpsc::Receiver<Job>,
        mut control: mpsc::UnboundedReceiver<Control>,
        tick: Duration,
        snapshot_every: Duration,
        ends: Ends,
    ) -> ShutdownReport {
        tracing::info!(tenants = self.pipeline.stats().tenants.len(), "pipeline started");
        let mut next_snapshot = Instant::now() + snapshot_every;
        let mut last_advance = Instant::now();
        loop {
            let now = self.now();
            let deadline = self.pipeline.next_deadline().map(|at| instant_after(now, at));
            let mut wake = deadline.map_or(last_advance + tick, |d| d.min(last_advance + tick));
            if self.snapshot.is_some() {
                wake = wake.min(next_snapshot);
            }
            ::tokio::select! {
                message = control.recv() => match message {
                    Some(Control::Shutdown) | None => break,
                    Some(message) => self.control(message),
                },
                job = jobs.recv() => match job {
                    Some(job) => self.ingest(job, jobs.len()),
                    None => break,
                },
                _ = ::tokio::time::sleep_until(wake) => {}
            }
            let now = self.now();
            let due = self.pipeline.next_deadline().is_some_and(|at| at <= now);
            if due || last_advance + tick <= Instant::now() {
                self.pipeline.observe_load(LoadInputs {
                    queue_fill: Some(jobs.len() as f64 / self.queue as f64),
                    ..LoadInputs::default()
                });
                self.pipeline.advance(now, &mut self.out);
                self.route();
                last_advance = Instant::now();
            }
            if self.snapshot.is_some() && next_snapshot <= Instant::now() {
                self.write_snapshot().await;
                next_snapshot = Instant::now() + snapshot_every;
            }
        }
        self.shutdown(jobs, control, ends).await
    }

    fn ingest(&mut self, job: Job, left: usize) {
        let now = self.now();
        let Job { tenant, content_type, body, token, reply } = job;
        let result = match &token {
            Some(token) => self.pipeline.ingest_with_token(token, &content_type, body, now),
            None => self.pipeline.ingest(&tenant, &content_type, body, now),
        };
        if let Err(e) = &result {
            tracing::debug!(tenant = %tenant, error = %e, "body refused");
        }
        // The caller may have gone (a dropped connection): the receipt's
        // counts are in the stats either way.
        let _ = reply.send(result);
        tracing::trace!(queued = left, "body ingested");
    }

    fn control(&mut self, message: Control) {
        match message {
            Control::Subscribe { request, token, reply } => {
                let now = self.now();
                let opened = match &token {
                    Some(token) => self.pipeline.subscribe_with_token(token, request, now),
                    None => self.pipeline.subscribe(request),
                };
                let answer = opened.map(|id| {
                    let slot = Arc::new(Slot::default());
                    self.slots.insert(id, Held::new(Arc::clone(&slot)));
                    self.shared.subscribers.store(self.slots.len() as u64, Ordering::Relaxed);
                    // The snapshot on join may be waiting already.
                    slot.wake();
                    (id, slot)
                });
                if let (Ok((id, _)), Err(_)) = (&answer, reply.send(answer.clone())) {
                    self.unsubscribe(*id);
                }
            }
            Control::Take { id, reply } => {
                let mut frames = Vec::new();
                let taken = self.pipeline.take_encoded(id, &mut frames).map(|()| frames);
                let _ = reply.send(taken);
            }
            Control::Resync { id, reply } => {
                let _ = reply.send(self.pipeline.resync(id));
                if let Some(slot) = self.slots.get(&id) {
                    slot.wake();
                }
            }
            Control::Unsubscribe { id } => self.unsubscribe(id),
            Control::Run(task) => task(&mut self.pipeline),
            Control::Flush { reply } => {
                self.pipeline.flush_archive(&mut self.out);
                self.route();
                let (done_tx, done_rx) = oneshot::channel();
                if let Some(tx) = &self.files_tx {
                    // A closed writer drops the barrier: the waiter sees it.
                    let _ = tx.send(files::ToWriter::Barrier(done_tx));
                }
                let _ = reply.send(done_rx);
            }
            // Handled by the loop.
            Control::Shutdown => {}
        }
    }

    fn unsubscribe(&mut self, id: SubscriberId) {
        self.pipeline.unsubscribe(id);
        self.slots.remove(&id);
        self.shared.subscribers.store(self.slots.len() as u64, Ordering::Relaxed);
    }

    /// Sends what the last call handed out where it goes, and clears it.
    fn route(&mut self) {
        if let Some(observer) = &mut self.observer {
            observer(&self.out);
        }
        let out = &mut self.out;
        for id in out.ready.drain(..) {
            if let Some(slot) = self.slots.get(&id) {
                slot.wake();
            }
        }
        for (id, reason) in out.evicted.drain(..) {
            tracing::info!(subscriber = id, reason = reason.as_str(), "subscriber evicted");
            if let Some(slot) = self.slots.remove(&id) {
                slot.close(Closed::Evicted(reason));
            }
        }
        self.shared.subscribers.store(self.slots.len() as u64, Ordering::Relaxed);
        for file in out.files.drain(..) {
            match &self.files_tx {
                Some(tx) => {
                    if let Ok(mut s) = self.shared.files.lock() {
                        s.pending += 1;
                        s.pending_bytes += file.bytes.len() as u64;
                    }
                    if tx.send(files::ToWriter::File(file)).is_err() {
                        tracing::error!("file writer gone: file not stored");
                    }
                }
                None => tracing::error!(path = %file.path, "no file sink: file not stored"),
            }
        }
        for note in out.notifications.drain(..) {
            if let Some(tx) = &self.notes_tx
                && let Err(e) = tx.send(note)
            {
                tracing::error!(group = %e.0.group_key, "deliverer gone: notification not sent");
            }
        }
        for event in out.audit.drain(..) {
            tracing::info!(target: "edgestream::audit", tenant = event.tenant.as_deref().unwrap_or(""),
                action = ?event.action, at = %event.at, "audit");
        }
        for error in out.errors.drain(..) {
            tracing::warn!(error = %error, "pipeline stage error");
        }
        if !out.late.is_empty() {
            tracing::debug!(events = out.late.len(), "late events");
            self.shared.late.fetch_add(out.late.len() as u64, Ordering::Relaxed);
        }
        for change in &out.fidelity {
            tracing::info!(from = ?change.from, to = ?change.to, "fidelity changed");
        }
        out.clear();
    }

    async fn write_snapshot(&mut self) {
        let Some(path) = self.snapshot.clone() else { return };
        let mut blob = Vec::new();
        let now = self.now();
        let taken = self.pipeline.snapshot(&mut blob, &mut self.out);
        self.route();
        let result = match taken {
            Ok(()) => {
                let bytes = blob.len() as u64;
                files::write_atomic(&path, Bytes::from(blob)).await.map(|()| bytes).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        if let Ok(mut s) = self.shared.snapshots.lock() {
            match result {
                Ok(bytes) => {
                    s.written += 1;
                    s.last_bytes = bytes;
                    s.last_at = Some(now);
                    s.last_error = None;
                    tracing::debug!(bytes, "snapshot written");
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "snapshot not written");
                    s.failed += 1;
                    s.last_error = Some(e);
                }
            }
        }
    }

    async fn shutdown(
        mut self,
        mut jobs: mpsc::Receiver<Job>,
        mut control: mpsc::UnboundedReceiver<Control>,
        ends: Ends,
    ) -> ShutdownReport {
        self.shared.accepting.store(false, Ordering::SeqCst);
        // `recv`, not `try_recv`: after `close` it still waits for a send
        // already under way (which `try_recv` reports as empty), and ends
        // once none is left, so every job and request accepted is served.
        jobs.close();
        let mut drained = 0usize;
        while let Some(job) = jobs.recv().await {
            self.ingest(job, 0);
            drained += 1;
        }
        // Requests already sent (queries, unsubscribes) still get answers.
        control.close();
        while let Some(message) = control.recv().await {
            self.control(message);
        }
        let now = self.now();
        self.pipeline.close(now, &mut self.out);
        self.route();
        // Subscribers get their last frames (the final results) before the end.
        for (id, slot) in self.slots.drain() {
            let mut frames = Vec::new();
            if self.pipeline.take_encoded(id, &mut frames).is_ok() {
                slot.hand_over(frames);
            }
            slot.close(Closed::Shutdown);
        }
        self.shared.subscribers.store(0, Ordering::Relaxed);
        self.write_snapshot().await;
        tracing::info!(drained, "pipeline closed; storing files and sending notifications");

        // Closing the channels lets the writer and the deliverer finish
        // what they hold; past the grace period they stop and hand it back.
        self.files_tx = None;
        self.notes_tx = None;
        let Ends { writer, deliverer, stop, grace } = ends;
        let stopper = ::tokio::spawn(async move {
            ::tokio::time::sleep(grace).await;
            let _ = stop.send(true);
            stop
        });
        let unstored = match writer {
            Some(writer) => writer.await.unwrap_or_default(),
            None => Vec::new(),
        };
        let unsent = deliverer.await.unwrap_or_default();
        stopper.abort();
        for file in &unstored {
            tracing::warn!(path = %file.path, rows = file.rows, "file not stored before the shutdown deadline");
        }
        if !unstored.is_empty() {
            match &self.snapshot {
                Some(path) => match files::spool(&spool_path(path), &unstored).await {
                    Ok(()) => tracing::warn!(count = unstored.len(), "unstored files kept for the next start"),
                    Err(e) => tracing::error!(error = %e, "unstored files could not be kept: they are lost"),
                },
                None => {
                    tracing::error!(count = unstored.len(), "no snapshot path to keep unstored files: they are lost")
                }
            }
        }
        if !unsent.is_empty()
            && let Some(path) = &self.snapshot
        {
            save_unsent(&unsent_path(path), &unsent).await;
        }
        let host = HostHandle::stats_of(&self.shared, 0, self.queue);
        let report = ShutdownReport {
            stats: self.pipeline.stats(),
            host,
            files_unstored: unstored.len(),
            notifications_unsent: unsent.len(),
        };
        tracing::info!(accepted = report.stats.total.admitted, files = report.host.files.written, "shutdown complete");
        report
    }
}

impl HostHandle {
    fn stats_of(shared: &Shared, depth: usize, capacity: usize) -> HostStats {
        HostStats {
            queue_depth: depth,
            queue_capacity: capacity,
            busy_refusals: shared.busy.load(Ordering::Relaxed),
            late_events: shared.late.load(Ordering::Relaxed),
            subscribers: usize::try_from(shared.subscribers.load(Ordering::Relaxed)).unwrap_or(usize::MAX),
            files: shared.files.lock().map(|s| s.clone()).unwrap_or_default(),
            delivery: shared.delivery.lock().map(|s| s.clone()).unwrap_or_default(),
            snapshots: shared.snapshots.lock().map(|s| s.clone()).unwrap_or_default(),
        }
    }
}

/// The tokio instant at which the host clock reads `at`, given that it
/// reads `now` now (at most a day ahead).
fn instant_after(now: Timestamp, at: Timestamp) -> Instant {
    let nanos = u64::try_from(at.saturating_since(now).as_nanos()).unwrap_or(0);
    Instant::now() + Duration::from_nanos(nanos.min(86_400_000_000_000))
}

/// Where files unstored at shutdown are kept: a directory beside the snapshot.
fn spool_path(snapshot: &Path) -> PathBuf {
    let mut name = snapshot.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".unstored");
    snapshot.with_file_name(name)
}

/// Where notifications unsent at shutdown are kept: beside the snapshot.
fn unsent_path(snapshot: &Path) -> PathBuf {
    let mut name = snapshot.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".notifications.json");
    snapshot.with_file_name(name)
}

async fn save_unsent(path: &Path, unsent: &[Notification]) {
    let written = match serde_json::to_vec(unsent) {
        Ok(json) => files::write_atomic(path, Bytes::from(json)).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match written {
        Ok(()) => tracing::warn!(path = %path.display(), count = unsent.len(), "unsent notifications saved"),
        Err(e) => tracing::error!(path = %path.display(), error = %e, count = unsent.len(),
            "unsent notifications could not be saved"),
    }
}

/// Notifications saved by the last shutdown, to send again; the file is
/// removed once they are queued.
async fn load_unsent(path: &Path) -> Result<Vec<Notification>, HostError> {
    let bytes = match ::tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(HostError::File { path: path.to_owned(), message: e.to_string() }),
    };
    let notes: Vec<Notification> = serde_json::from_slice(&bytes)
        .map_err(|e| HostError::File { path: path.to_owned(), message: e.to_string() })?;
    ::tokio::fs::remove_file(path)
        .await
        .map_err(|e| HostError::File { path: path.to_owned(), message: e.to_string() })?;
    tracing::info!(count = notes.len(), "sending notifications saved at the last shutdown");
    Ok(notes)
}

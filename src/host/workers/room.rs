//! The room: a pipeline with its durable state, its sockets, its archive
//! and its notifications, driven by the events of a Durable Object and
//! answering with [`Effects`] for the glue to carry out.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::store::{self, Kind, Loaded, Meta, MetaError, Record, Slot};
use crate::alert::payload::{self, Target};
use crate::auth::{Claims, Mode};
use crate::event::EventBatch;
use crate::host::DeliveryError;
use crate::host::http::{self, RangeParams, Reply, SubscribeParams};
use crate::pipeline::{
    ArchiveConfig, ArchiveFormat, Outputs, Pipeline, PipelineConfig, PipelineError, SubscriberId, Subscription,
    WireFormat,
};
use crate::sink::{EventSink, FinishedFile};
use crate::time::{Span, Timestamp};

/// How a room runs: its pipeline and how it keeps state, files and
/// notifications. Loadable from YAML, TOML or JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RoomConfig {
    /// The pipeline. Its `archive`, if any, is run by the room so that the
    /// rows of open files survive hibernation (see the [module](super) docs).
    pub pipeline: PipelineConfig,
    /// Under ingest load, the shortest time between two snapshots (default
    /// 1 s); ingests in between are journaled, so none is lost.
    pub snapshot_every: Span,
    /// A journal larger than this is folded into a snapshot at once
    /// (default 4 MiB).
    pub max_journal_bytes: usize,
    /// The largest value written to storage; larger ones are cut into
    /// chunks (default 2,000,000 bytes, the SQLite-backed limit; use
    /// 131,072 on the older key-value backend).
    pub max_value_bytes: usize,
    /// Prefix of archive keys in the bucket (default none).
    pub archive_prefix: String,
    /// Open archive files are all finished at the latest this long after
    /// the oldest of their rows arrived (default 15 min), which bounds the
    /// rows kept in storage for them.
    pub archive_flush_after: Span,
    /// Open archive files are all finished once their rows kept in storage
    /// pass this many bytes (default 16 MiB), which bounds what a load
    /// reads back.
    pub max_archive_bytes: usize,
    /// Finished files not yet in the bucket, in bytes, beyond which ingest
    /// answers 503 (default 32 MiB): memory stays bounded while the
    /// bucket is down.
    pub max_pending_file_bytes: usize,
    /// Wait before the first retry of a failed upload or notification
    /// (default 1 s), doubled after each failure.
    pub first_backoff: Span,
    /// Longest wait between retries (default 5 min).
    pub max_backoff: Span,
    /// Notifications kept for retry; beyond it the oldest is dropped and
    /// counted (default 1,000).
    pub max_pending_notifications: usize,
    /// Timeout of one notification POST (default 10 s); a timeout is
    /// retried like a 5xx.
    pub delivery_timeout: Span,
    /// The window operator `/api/metrics` reads by default (default the
    /// first one).
    pub metrics_window: Option<String>,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            pipeline: PipelineConfig::default(),
            snapshot_every: Span::from_secs(1),
            max_journal_bytes: 4 << 20,
            max_value_bytes: 2_000_000,
            archive_prefix: String::new(),
            archive_flush_after: Span::from_mins(15),
            max_archive_bytes: 16 << 20,
            max_pending_file_bytes: 32 << 20,
            first_backoff: Span::from_secs(1),
            max_backoff: Span::from_mins(5),
            max_pending_notifications: 1_000,
            delivery_timeout: Span::from_secs(10),
            metrics_window: None,
        }
    }
}

impl RoomConfig {
    /// A room around `pipeline`, with the other settings at their defaults.
    pub fn new(pipeline: PipelineConfig) -> Self {
        RoomConfig { pipeline, ..RoomConfig::default() }
    }

    /// Parses a JSON configuration: a `pipeline:` section and the room's settings.
    pub fn from_json_str(text: &str) -> Result<RoomConfig, RoomError> {
        crate::pipeline::config::check_size(text)?;
        serde_json::from_str(text).map_err(|e| RoomError::Config(format!("json: {e}")))
    }

    /// Parses a YAML configuration: a `pipeline:` section and the room's settings.
    #[cfg(feature = "yaml")]
    pub fn from_yaml_str(text: &str) -> Result<RoomConfig, RoomError> {
        crate::pipeline::config::check_size(text)?;
        serde_yaml_ng::from_str(text).map_err(|e| RoomError::Config(format!("yaml: {e}")))
    }
}

/// Why a room could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// The configuration is invalid.
    #[error("room config: {0}")]
    Config(String),
    /// The pipeline refused its configuration.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The stored state cannot be used by this build.
    #[error("room storage: {0}")]
    Storage(String),
}

/// A room's counters (in `/api/health`, and kept across restarts).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RoomStats {
    /// Snapshots committed to storage.
    pub snapshots: u64,
    /// Size of the last snapshot, in bytes.
    pub snapshot_bytes: u64,
    /// Times the room was loaded from storage (after hibernation, eviction or restart).
    pub loads: u64,
    /// Journaled ingests replayed at those loads.
    pub replayed: u64,
    /// Stored values found torn or unreadable at a load (left out and deleted).
    pub torn_values: u64,
    /// Snapshots that could not be restored: the room started afresh
    /// (the reason is in the log and in `last_error`).
    pub restore_failures: u64,
    /// Ingests journaled.
    pub journaled: u64,
    /// Ingests refused because too many finished files wait for the bucket.
    pub refused_backlog: u64,
    /// Archive files stored in the bucket.
    pub files_stored: u64,
    /// Failed attempts to store a file (each retried).
    pub upload_failures: u64,
    /// Notifications delivered.
    pub notifications_sent: u64,
    /// Failed delivery attempts that will be retried.
    pub delivery_failures: u64,
    /// Notifications given up on: refused for good (HTTP 4xx), a channel
    /// the room cannot send to (email), or dropped beyond the cap.
    pub notifications_undeliverable: u64,
    /// Sockets accepted.
    pub sockets_opened: u64,
    /// Frames sent to sockets.
    pub frames_sent: u64,
    /// Sockets closed by the room (evicted, refused after a load, protocol error).
    pub sockets_closed: u64,
    /// Storage operations the host reported as failed.
    pub storage_errors: u64,
    /// The last error the room met, for `/api/health`.
    pub last_error: Option<String>,
}

/// What the glue must do after a call, in this order: write `puts` (in
/// order; the commit record comes last), then `deletes`, then arm the
/// alarm, send and close on sockets, and finally run `uploads` and `posts`
/// and report each outcome back ([`Room::stored`], [`Room::delivered`]).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Effects {
    /// Storage writes, in order.
    pub puts: Vec<(String, Bytes)>,
    /// Storage keys to delete, after the writes.
    pub deletes: Vec<String>,
    /// Arm the object's alarm at this time.
    pub alarm: Option<Timestamp>,
    /// Frames to send.
    pub sends: Vec<SocketSend>,
    /// Sockets to close.
    pub closes: Vec<SocketClose>,
    /// Archive files to put in the bucket.
    pub uploads: Vec<Upload>,
    /// Notifications to POST.
    pub posts: Vec<Post>,
    /// New attachments to keep on sockets (after a change of subscription).
    pub attachments: Vec<(u64, String)>,
    /// Lines for the host's log: audit events (JSON) and errors.
    pub log: Vec<String>,
}

impl Effects {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty()
            && self.deletes.is_empty()
            && self.alarm.is_none()
            && self.sends.is_empty()
            && self.closes.is_empty()
            && self.uploads.is_empty()
            && self.posts.is_empty()
            && self.attachments.is_empty()
            && self.log.is_empty()
    }

    /// Appends `other`'s work after this one's; the later alarm wins.
    pub fn append(&mut self, other: Effects) {
        self.puts.extend(other.puts);
        self.deletes.extend(other.deletes);
        self.alarm = other.alarm.or(self.alarm);
        self.sends.extend(other.sends);
        self.closes.extend(other.closes);
        self.uploads.extend(other.uploads);
        self.posts.extend(other.posts);
        self.attachments.extend(other.attachments);
        self.log.extend(other.log);
    }
}

/// A frame for a socket: text (JSON) or binary (Protobuf).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketSend {
    /// The socket.
    pub socket: u64,
    /// The frame.
    pub frame: Bytes,
    /// Whether it goes as a text message.
    pub text: bool,
}

/// A socket to close, with a WebSocket close code and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketClose {
    /// The socket.
    pub socket: u64,
    /// The close code (4008: too slow; 1003: a message the room does not
    /// understand; 1011: the subscription could not be restored).
    pub code: u16,
    /// The reason.
    pub reason: String,
}

/// An archive file to put in the bucket; report with [`Room::stored`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// The room's number for it.
    pub file: u64,
    /// The object key (Hive-style partitions).
    pub key: String,
    /// The file.
    pub body: Bytes,
}

/// A notification to POST; report with [`Room::delivered`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Post {
    /// The room's number for it.
    pub note: u64,
    /// Where to.
    pub url: String,
    /// The body's MIME type.
    pub content_type: String,
    /// The body.
    pub body: Bytes,
}

/// An HTTP request as the room sees it.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RoomRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path (`/ingest`, `/ws`, `/api/metrics`, `/api/health`).
    pub path: String,
    /// Query parameters, percent-decoded.
    pub query: Vec<(String, String)>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Authorization`.
    pub authorization: Option<String>,
    /// `X-Tenant` (without auth).
    pub tenant: Option<String>,
    /// Whether it asks for a WebSocket upgrade.
    pub websocket: bool,
    /// The body.
    pub body: Bytes,
}

impl RoomRequest {
    /// A request for `method` and `path`, with nothing else yet.
    pub fn new(method: &str, path: &str) -> RoomRequest {
        RoomRequest { method: method.to_owned(), path: path.to_owned(), ..RoomRequest::default() }
    }
}

/// The room's answer to a request.
#[derive(Clone, Debug, PartialEq)]
pub enum RoomResponse {
    /// An HTTP response with a JSON body.
    Reply(Reply),
    /// Accept a WebSocket: with the hibernation API, with `tags`, and with
    /// `attachment` serialized on it; then call [`Room::opened`].
    Upgrade {
        /// The room's number for the socket.
        socket: u64,
        /// The socket's state, to keep as its attachment (at most 2 KiB).
        attachment: String,
        /// Tags: topic and mode.
        tags: Vec<String>,
    },
}

/// A message from a socket.
#[derive(Clone, Copy, Debug)]
pub enum Incoming<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

/// What a socket keeps as its attachment, so that it survives hibernation.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Attachment {
    /// The room's number for it.
    sid: u64,
    sub: Subscription,
    /// The bearer's grants, for later changes of subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claims: Option<Claims>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    credit: Option<u32>,
}

/// The most a socket attachment may hold: the runtime's limit is 2,048
/// bytes, structured-clone overhead included.
const MAX_ATTACHMENT: usize = 1_900;

/// The runtime's limit on a socket tag, in bytes.
const MAX_TAG: usize = 256;

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}

struct Socket {
    subscriber: SubscriberId,
    attachment: Attachment,
    sent: u64,
    acked: u64,
}

/// A finished file waiting for the bucket.
struct PendingFile {
    key: String,
    body: Bytes,
    chunks: u32,
    retry: Retry,
}

/// A notification waiting for delivery.
struct PendingNote {
    url: String,
    content_type: String,
    body: Bytes,
    chunks: u32,
    retry: Retry,
}

#[derive(Clone, Copy, Debug, Default)]
struct Retry {
    attempts: u32,
    due: Option<Timestamp>,
    in_flight: bool,
}

/// Kinds of archive record: rows, or a clock tick or flush of the sink, so
/// that a replay finishes the same files at the same rows.
const ROWS: u8 = 0;
const TICK: u8 = 1;
const FLUSH: u8 = 2;

/// The room's archive: the sink of open files, and the records that
/// rebuild it after a load.
struct Archive {
    sink: EventSink,
    /// Live records by number, with their chunk counts.
    records: BTreeMap<u64, u32>,
    bytes: usize,
    /// When the oldest row of the open files arrived.
    oldest: Option<Timestamp>,
    /// Decoding limits for replayed rows.
    limits: crate::event::Limits,
}

/// A pipeline hosted in a Durable Object: sans-IO, so it runs and is
/// tested natively; `StreamRoom` (on wasm32) is its glue to
/// workers-rs.
pub struct Room {
    config: RoomConfig,
    pipeline: Pipeline,
    archive: Option<Archive>,
    meta: Meta,
    /// The next ingest's journal number, and the live entries' chunk counts.
    journal_next: u64,
    journal: BTreeMap<u64, u32>,
    journal_bytes: usize,
    /// Whether state changed since the last commit.
    dirty: bool,
    last_commit: Option<Timestamp>,
    files: BTreeMap<u64, PendingFile>,
    file_bytes: usize,
    notes: BTreeMap<u64, PendingNote>,
    sockets: BTreeMap<u64, Socket>,
    by_subscriber: HashMap<SubscriberId, u64>,
    /// Sockets out of credit with frames waiting.
    held: BTreeSet<u64>,
    next_socket: u64,
    armed: Option<Timestamp>,
    out: Outputs,
    frames: Vec<Bytes>,
    finished: Vec<FinishedFile>,
    batch: EventBatch,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("sockets", &self.sockets.len())
            .field("journal", &self.journal.len())
            .field("files", &self.files.len())
            .field("notes", &self.notes.len())
            .field("stats", &self.meta.stats)
            .finish_non_exhaustive()
    }
}

impl Room {
    /// A fresh room.
    pub fn new(config: RoomConfig) -> Result<Room, RoomError> {
        let (pipeline_config, archive) = split_archive(&config)?;
        let pipeline = Pipeline::new(pipeline_config)?;
        Room::assemble(config, pipeline, archive, Meta::default())
    }

    fn assemble(
        config: RoomConfig,
        pipeline: Pipeline,
        archive: Option<ArchiveConfig>,
        meta: Meta,
    ) -> Result<Room, RoomError> {
        let archive = match archive {
            None => None,
            Some(a) => {
                let mut sink = match &a.format {
                    ArchiveFormat::Csv => EventSink::csv(a.sink.clone()),
                    #[cfg(feature = "parquet")]
                    ArchiveFormat::Parquet { options } => EventSink::parquet(a.sink.clone(), *options),
                }
                .map_err(|e| RoomError::Config(format!("archive: {e}")))?;
                sink.resume_at(meta.archive_file_seq);
                let mut limits = config.pipeline.limits.clone();
                limits.max_batch_bytes = usize::MAX;
                limits.max_events_per_batch = usize::MAX;
                Some(Archive { sink, records: BTreeMap::new(), bytes: 0, oldest: None, limits })
            }
        };
        Ok(Room {
            journal_next: meta.journal_next,
            config,
            pipeline,
            archive,
            meta,
            journal: BTreeMap::new(),
            journal_bytes: 0,
            dirty: false,
            last_commit: None,
            files: BTreeMap::new(),
            file_bytes: 0,
            notes: BTreeMap::new(),
            sockets: BTreeMap::new(),
            by_subscriber: HashMap::new(),
            held: BTreeSet::new(),
            next_socket: 1,
            armed: None,
            out: Outputs::default(),
            frames: Vec::new(),
            finished: Vec::new(),
            batch: EventBatch::new(),
        })
    }

    /// The room as it was, from every key-value pair stored under
    /// [`PREFIX`](super::PREFIX): the last committed snapshot, then the
    /// journaled ingests replayed in order, the open archive files rebuilt,
    /// finished files and notifications queued again (the alarm sends them).
    /// Values that are not part of the last commit are deleted.
    ///
    /// A snapshot that cannot be restored (a configuration that changed
    /// incompatibly, a torn commit) is counted and logged, and the
    /// pipeline starts afresh; the journal, the archive rows and the
    /// pending files and notifications still apply. An unreadable commit
    /// record wipes the room's storage (counted, logged). A commit record
    /// of another version of the room is an error: nothing is touched.
    pub fn load(
        config: RoomConfig,
        entries: impl IntoIterator<Item = (String, Bytes)>,
        now: Timestamp,
    ) -> Result<(Room, Effects), RoomError> {
        let mut fx = Effects::default();
        let mut loaded = Loaded::from_entries(entries);
        let (pipeline_config, archive_config) = split_archive(&config)?;
        match loaded.meta_error.take() {
            Some(MetaError::Version(found)) => {
                return Err(RoomError::Storage(format!(
                    "the stored state is version {found}; this build reads version {}",
                    store::VERSION
                )));
            }
            Some(MetaError::Corrupt(e)) => {
                fx.log.push(format!("edgestream room: {e}; the stored state is wiped"));
                fx.deletes.append(&mut loaded.keys);
                let mut room =
                    Room::assemble(config, Pipeline::new(pipeline_config)?, archive_config, Meta::default())?;
                room.meta.stats.loads = 1;
                room.meta.stats.restore_failures = 1;
                room.meta.stats.last_error = Some(e);
                room.finish(now, &mut fx);
                return Ok((room, fx));
            }
            None => {}
        }
        let mut meta = loaded.meta.take().unwrap_or_default();
        let mut stats = std::mem::take(&mut meta.stats);
        stats.loads += 1;
        stats.torn_values += loaded.torn.len() as u64;
        fx.deletes.append(&mut loaded.torn);

        let (mut pipeline, mut failed) = (None, false);
        for (generation, bytes, chunks) in loaded.take(Kind::Snapshot) {
            if generation == meta.generation && pipeline.is_none() && meta.chunks > 0 {
                match Pipeline::restore(pipeline_config.clone(), &bytes) {
                    // Kept until the next commit replaces it.
                    Ok(p) => {
                        pipeline = Some(p);
                        continue;
                    }
                    Err(e) => {
                        failed = true;
                        restore_failed(&mut stats, &mut fx, &e.to_string());
                    }
                }
            }
            fx.deletes.extend(Slot::new(Kind::Snapshot, generation).keys(chunks));
        }
        if pipeline.is_none() && meta.chunks > 0 && !failed {
            restore_failed(&mut stats, &mut fx, "the committed snapshot is missing or torn");
        }
        let pipeline = match pipeline {
            Some(p) => p,
            None => Pipeline::new(pipeline_config)?,
        };
        meta.stats = stats;
        let mut room = Room::assemble(config, pipeline, archive_config, meta)?;

        // Ingests after the snapshot, replayed as they were taken.
        for (seq, bytes, chunks) in loaded.take(Kind::Journal) {
            let keys = Slot::new(Kind::Journal, seq).keys(chunks);
            if seq < room.meta.journal_next {
                fx.deletes.extend(keys);
                continue;
            }
            match Record::decode(&bytes) {
                Some(entry) => {
                    // The outcome was answered before the restart; replaying
                    // rebuilds the state and counters it left.
                    let _ = room.pipeline.ingest(&entry.key, &entry.content_type, entry.body, entry.at);
                    room.meta.stats.replayed += 1;
                    room.journal.insert(seq, chunks);
                    room.journal_bytes += bytes.len();
                    room.journal_next = room.journal_next.max(seq.saturating_add(1));
                    room.dirty = true;
                }
                None => {
                    room.meta.stats.torn_values += 1;
                    fx.deletes.extend(keys);
                }
            }
        }

        // Rows of the open archive files, and the ticks that finished files:
        // the sink is rebuilt as it was. The files it finishes on the way
        // were committed already (below, or stored in the bucket).
        let range = room.meta.archive_from..room.meta.archive_next;
        for (n, bytes, chunks) in loaded.take(Kind::Archive) {
            if !range.contains(&n) || room.archive.is_none() {
                fx.deletes.extend(Slot::new(Kind::Archive, n).keys(chunks));
                continue;
            }
            room.replay_archive(n, &bytes, chunks, &mut fx);
        }
        room.finished.clear();

        // Committed files not yet stored, and notifications not yet sent;
        // what was not committed is made again by the replay.
        for (n, bytes, chunks) in loaded.take(Kind::File) {
            match store::decode_file(&bytes).filter(|_| n < room.meta.file_next) {
                Some((key, body)) => {
                    room.file_bytes += body.len();
                    room.files.insert(n, PendingFile { key, body, chunks, retry: Retry::default() });
                }
                None => fx.deletes.extend(Slot::new(Kind::File, n).keys(chunks)),
            }
        }
        for (n, bytes, chunks) in loaded.take(Kind::Note) {
            match Record::decode(&bytes).filter(|_| n < room.meta.note_next) {
                Some(r) => {
                    let note = PendingNote {
                        url: r.key,
                        content_type: r.content_type,
                        body: r.body,
                        chunks,
                        retry: Retry::default(),
                    };
                    room.notes.insert(n, note);
                }
                None => fx.deletes.extend(Slot::new(Kind::Note, n).keys(chunks)),
            }
        }
        room.finish(now, &mut fx);
        Ok((room, fx))
    }

    fn replay_archive(&mut self, n: u64, bytes: &Bytes, chunks: u32, fx: &mut Effects) {
        let Some(archive) = &mut self.archive else { return };
        let record = bytes.split_first().and_then(|(&kind, rest)| {
            let rest = bytes.slice(bytes.len() - rest.len()..);
            store::split_archive_rows(&rest).map(|(at, rows)| (kind, at, rows))
        });
        let result = match record {
            Some((ROWS, at, rows)) => {
                match crate::event::protobuf::decode_into(&rows, archive.limits.max_events_per_batch, &mut self.batch) {
                    Ok(()) => {
                        archive.oldest.get_or_insert(at);
                        archive.sink.push(&self.batch, at, &mut self.finished).map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Some((TICK, at, _)) => archive.sink.advance(at, &mut self.finished).map_err(|e| e.to_string()),
            Some((FLUSH, _, _)) => archive.sink.flush(&mut self.finished).map_err(|e| e.to_string()),
            _ => Err("unreadable archive record".to_owned()),
        };
        if let Err(e) = result {
            self.meta.stats.torn_values += 1;
            fx.log.push(format!("edgestream room: archive record {n}: {e}"));
        }
        archive.records.insert(n, chunks);
        archive.bytes += bytes.len();
    }

    /// The pipeline (for queries of its own that a host adds).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The room's counters.
    pub fn stats(&self) -> &RoomStats {
        &self.meta.stats
    }

    /// Open sockets.
    pub fn sockets(&self) -> usize {
        self.sockets.len()
    }

    /// Records that the host failed to carry out a storage operation
    /// (counted): the room is then ahead of storage, and commits at its next
    /// alarm. `StreamRoom` instead drops the room and loads it again from
    /// storage, so that an ingest whose journal entry was not written counts
    /// as never accepted (it was answered 503).
    pub fn storage_failed(&mut self, message: &str) {
        self.meta.stats.storage_errors += 1;
        self.meta.stats.last_error = Some(format!("storage: {message}"));
        self.dirty = true;
        self.last_commit = None;
        self.armed = None;
    }

    /// Serves an HTTP request: `POST /ingest`, `GET /ws`, `GET /api/metrics`,
    /// `GET /api/health`.
    pub fn fetch(&mut self, request: RoomRequest, now: Timestamp) -> (RoomResponse, Effects) {
        let mut fx = Effects::default();
        let response = match (request.method.as_str(), request.path.as_str()) {
            ("POST", "/ingest") => RoomResponse::Reply(self.ingest(request, now, &mut fx)),
            ("GET", "/ws") => self.upgrade(&request, now),
            ("GET", "/api/metrics") => RoomResponse::Reply(self.metrics(&request, now)),
            ("GET", "/api/health") => RoomResponse::Reply(self.health(&request, now)),
            (_, "/ingest" | "/ws" | "/api/metrics" | "/api/health") => {
                RoomResponse::Reply(Reply::json(405, json!({"error": "method_not_allowed"})))
            }
            _ => RoomResponse::Reply(Reply::json(404, json!({"error": "not_found"}))),
        };
        self.finish(now, &mut fx);
        (response, fx)
    }

    fn token(request: &RoomRequest) -> Option<&str> {
        request
            .authorization
            .as_deref()
            .and_then(http::bearer)
            .or_else(|| request.query.iter().find(|(k, _)| k == "token").map(|(_, v)| v.as_str()))
    }

    fn ingest(&mut self, request: RoomRequest, now: Timestamp, fx: &mut Effects) -> Reply {
        if self.file_bytes > self.config.max_pending_file_bytes {
            self.meta.stats.refused_backlog += 1;
            let mut reply = Reply::json(
                503,
                json!({"error": "archive_backlog", "message": "finished archive files wait for the bucket; retry later"}),
            );
            reply.retry_after = Some(http::retry_after_secs(self.config.first_backoff.max(Span::from_secs(1))));
            return reply;
        }
        let content_type = request.content_type.clone().unwrap_or_default();
        let body = request.body.clone();
        let (result, tenant) = if self.config.pipeline.auth.is_some() {
            let Some(token) = Room::token(&request) else { return Reply::missing_token() };
            let result = self.pipeline.ingest_with_token(token, &content_type, body.clone(), now);
            let tenant = match &result {
                Ok(_) => self.pipeline.verify_token(token, now).map(|c| c.tenant).unwrap_or_default(),
                Err(_) => String::new(),
            };
            (result, tenant)
        } else {
            let named = request.query.iter().find(|(k, _)| k == "tenant").map(|(_, v)| v.clone());
            let Some(tenant) = named.or(request.tenant.clone()) else {
                return Reply::json(
                    400,
                    json!({"error": "missing_tenant", "message": "name the tenant with ?tenant= or an X-Tenant header"}),
                );
            };
            (self.pipeline.ingest(&tenant, &content_type, body.clone(), now), tenant)
        };
        match result {
            Ok(receipt) => {
                if receipt.received > 0 {
                    self.journal(Record { at: now, key: tenant, content_type, body }, now, fx);
                }
                http::receipt_reply(&receipt)
            }
            Err(e) => http::ingest_error_reply(&e),
        }
    }

    /// Journals an accepted ingest; a journal grown past its bound is
    /// folded into a snapshot at once.
    fn journal(&mut self, record: Record, now: Timestamp, fx: &mut Effects) {
        let value = record.encode();
        let seq = self.journal_next;
        self.journal_next += 1;
        let parts = store::chunks(Slot::new(Kind::Journal, seq), &value, self.config.max_value_bytes);
        self.journal.insert(seq, parts.len() as u32);
        self.journal_bytes += value.len();
        fx.puts.extend(parts);
        self.meta.stats.journaled += 1;
        self.dirty = true;
        if self.journal_bytes > self.config.max_journal_bytes {
            self.commit(now, fx);
        }
    }

    fn upgrade(&mut self, request: &RoomRequest, now: Timestamp) -> RoomResponse {
        self.open_socket(request, now).unwrap_or_else(RoomResponse::Reply)
    }

    fn open_socket(&mut self, request: &RoomRequest, now: Timestamp) -> Result<RoomResponse, Reply> {
        if !request.websocket {
            return Err(Reply::json(
                426,
                json!({"error": "upgrade_required", "message": "expected a WebSocket upgrade"}),
            ));
        }
        let params: SubscribeParams = http::params_from_pairs(request.query.iter().cloned())?;
        let mut sub = params.request(false)?;
        let credit = params.credit()?;
        let claims = if self.config.pipeline.auth.is_some() {
            let token = Room::token(request).ok_or_else(Reply::missing_token)?;
            let claims = self.pipeline.verify_token(token, now).map_err(|e| http::auth_error_reply(&e))?;
            if sub.tenant.is_empty() {
                sub.tenant = claims.tenant.clone();
            }
            self.pipeline
                .authorize(&claims, &sub.tenant, &sub.topic, sub.mode, now)
                .map_err(|e| http::auth_error_reply(&e))?;
            Some(claims)
        } else {
            if sub.tenant.is_empty() {
                sub.tenant = request.tenant.clone().unwrap_or_default();
            }
            if sub.tenant.is_empty() {
                return Err(Reply::bad_query("name the tenant with ?tenant="));
            }
            None
        };
        let sid = self.next_socket;
        let attachment = Attachment { sid, sub, claims, credit };
        let text = serde_json::to_string(&attachment).unwrap_or_default();
        if text.len() > MAX_ATTACHMENT {
            return Err(too_large());
        }
        let subscriber =
            self.pipeline.subscribe(attachment.sub.clone()).map_err(|e| http::subscribe_error_reply(&e))?;
        self.next_socket += 1;
        let tags = vec![truncate(&attachment.sub.topic, MAX_TAG), attachment.sub.mode.as_str().to_owned()];
        self.sockets.insert(sid, Socket { subscriber, attachment, sent: 0, acked: 0 });
        self.by_subscriber.insert(subscriber, sid);
        self.meta.stats.sockets_opened += 1;
        Ok(RoomResponse::Upgrade { socket: sid, attachment: text, tags })
    }

    /// The socket of an upgrade was accepted: its first frames (the
    /// snapshot on join) go out.
    pub fn opened(&mut self, socket: u64, now: Timestamp) -> Effects {
        let mut fx = Effects::default();
        self.flush_socket(socket, &mut fx);
        self.finish(now, &mut fx);
        fx
    }

    /// The room's number of the socket whose attachment is `attachment`.
    pub fn socket_of(attachment: &str) -> Option<u64> {
        serde_json::from_str::<Attachment>(attachment).ok().map(|a| a.sid)
    }

    /// After a load: subscribes again the sockets that outlived the room in
    /// memory (hibernation), from their attachments. Each gets a snapshot
    /// of its board; one whose subscription no longer applies is closed.
    pub fn reattach(&mut self, attachments: impl IntoIterator<Item = String>, now: Timestamp) -> Effects {
        let mut fx = Effects::default();
        for text in attachments {
            let Ok(attachment) = serde_json::from_str::<Attachment>(&text) else { continue };
            let sid = attachment.sid;
            self.next_socket = self.next_socket.max(sid + 1);
            if self.sockets.contains_key(&sid) {
                continue;
            }
            match self.pipeline.subscribe(attachment.sub.clone()) {
                Ok(subscriber) => {
                    self.sockets.insert(sid, Socket { subscriber, attachment, sent: 0, acked: 0 });
                    self.by_subscriber.insert(subscriber, sid);
                    self.flush_socket(sid, &mut fx);
                }
                Err(e) => {
                    self.meta.stats.sockets_closed += 1;
                    fx.closes.push(SocketClose { socket: sid, code: 1011, reason: format!("resubscribe: {e}") });
                }
            }
        }
        self.finish(now, &mut fx);
        fx
    }

    /// A message from a socket: `{"type":"ping"}` (answered with a pong),
    /// `{"type":"resync"}` (a snapshot follows), `{"type":"ack","frames":N}`
    /// (N frames received in all, for flow control), or
    /// `{"type":"subscribe", "topic":…, "mode":…, "filter":…, "format":…}`
    /// (change the subscription, within the token's grants). Anything else
    /// closes the socket with 1003.
    pub fn message(&mut self, socket: u64, message: Incoming<'_>, now: Timestamp) -> Effects {
        let mut fx = Effects::default();
        let parsed = match message {
            Incoming::Text(text) => serde_json::from_str::<Control>(text).ok(),
            Incoming::Binary(_) => None,
        };
        if !self.sockets.contains_key(&socket) {
            fx.closes.push(SocketClose { socket, code: 1011, reason: "unknown socket".into() });
        } else {
            match parsed {
                Some(Control::Ping) => {
                    fx.sends.push(SocketSend { socket, frame: Bytes::from_static(br#"{"type":"pong"}"#), text: true })
                }
                Some(Control::Resync) => {
                    if let Some(s) = self.sockets.get(&socket) {
                        let _ = self.pipeline.resync(s.subscriber);
                    }
                    self.flush_socket(socket, &mut fx);
                }
                Some(Control::Ack { frames }) => {
                    if let Some(s) = self.sockets.get_mut(&socket) {
                        s.acked = s.acked.max(frames.min(s.sent));
                    }
                    if self.held.contains(&socket) {
                        self.flush_socket(socket, &mut fx);
                    }
                }
                Some(Control::Subscribe(params)) => self.resubscribe(socket, &params, now, &mut fx),
                None => self.close(socket, 1003, "unknown control message", &mut fx),
            }
        }
        self.finish(now, &mut fx);
        fx
    }

    fn resubscribe(&mut self, socket: u64, params: &SubscribeParams, now: Timestamp, fx: &mut Effects) {
        let Some(old) = self.sockets.get(&socket) else { return };
        let checked = params.request(false).and_then(|mut sub| {
            sub.tenant = old.attachment.sub.tenant.clone();
            if let Some(claims) = &old.attachment.claims {
                self.pipeline
                    .authorize(claims, &sub.tenant, &sub.topic, sub.mode, now)
                    .map_err(|e| http::auth_error_reply(&e))?;
            }
            Ok(sub)
        });
        let checked = checked.and_then(|sub| {
            let attachment = Attachment { sub: sub.clone(), ..old.attachment.clone() };
            let size = serde_json::to_string(&attachment).map_or(usize::MAX, |t| t.len());
            if size > MAX_ATTACHMENT { Err(too_large()) } else { Ok(sub) }
        });
        let sub = match checked {
            Ok(sub) => sub,
            Err(reply) => {
                let frame = json!({"type": "error", "status": reply.status, "error": reply.body});
                fx.sends.push(SocketSend { socket, frame: Bytes::from(frame.to_string()), text: true });
                return;
            }
        };
        match self.pipeline.subscribe(sub.clone()) {
            Ok(subscriber) => {
                if let Some(s) = self.sockets.get_mut(&socket) {
                    self.pipeline.unsubscribe(s.subscriber);
                    self.by_subscriber.remove(&s.subscriber);
                    s.subscriber = subscriber;
                    s.attachment.sub = sub;
                    self.by_subscriber.insert(subscriber, socket);
                    if let Ok(text) = serde_json::to_string(&s.attachment) {
                        fx.attachments.push((socket, text));
                    }
                }
                self.flush_socket(socket, fx);
            }
            Err(e) => {
                let reply = http::subscribe_error_reply(&e);
                let frame = json!({"type": "error", "status": reply.status, "error": reply.body});
                fx.sends.push(SocketSend { socket, frame: Bytes::from(frame.to_string()), text: true });
            }
        }
    }

    /// A socket closed (by the client, or with an error).
    pub fn closed(&mut self, socket: u64, now: Timestamp) -> Effects {
        if let Some(s) = self.sockets.remove(&socket) {
            self.pipeline.unsubscribe(s.subscriber);
            self.by_subscriber.remove(&s.subscriber);
        }
        self.held.remove(&socket);
        let mut fx = Effects::default();
        self.finish(now, &mut fx);
        fx
    }

    fn close(&mut self, socket: u64, code: u16, reason: &str, fx: &mut Effects) {
        if let Some(s) = self.sockets.remove(&socket) {
            self.pipeline.unsubscribe(s.subscriber);
            self.by_subscriber.remove(&s.subscriber);
        }
        self.held.remove(&socket);
        self.meta.stats.sockets_closed += 1;
        fx.closes.push(SocketClose { socket, code, reason: reason.to_owned() });
    }

    /// Sends what waits for `socket`, unless it is out of credit.
    fn flush_socket(&mut self, socket: u64, fx: &mut Effects) {
        let Some(s) = self.sockets.get_mut(&socket) else { return };
        if let Some(credit) = s.attachment.credit
            && s.sent.saturating_sub(s.acked) >= u64::from(credit)
        {
            self.held.insert(socket);
            return;
        }
        self.held.remove(&socket);
        self.frames.clear();
        if self.pipeline.take_encoded(s.subscriber, &mut self.frames).is_err() {
            return;
        }
        let text = s.attachment.sub.format == WireFormat::Json;
        s.sent += self.frames.len() as u64;
        self.meta.stats.frames_sent += self.frames.len() as u64;
        fx.sends.extend(self.frames.drain(..).map(|frame| SocketSend { socket, frame, text }));
    }

    /// The alarm rang: advance the pipeline, hand its outputs out, retry
    /// what is due, commit. Late or repeated alarms are harmless.
    pub fn alarm(&mut self, now: Timestamp) -> Effects {
        let mut fx = Effects::default();
        self.armed = None;
        self.out.clear();
        self.pipeline.advance(now, &mut self.out);
        if !self.out.is_empty() {
            self.dirty = true;
        }
        let mut durable = self.route(now, &mut fx);
        durable |= self.tick_archive(now, &mut fx);
        let due = self.last_commit.is_none_or(|at| now >= at.saturating_add(self.config.snapshot_every));
        if durable || (self.dirty && due) {
            self.commit(now, &mut fx);
        }
        self.retry_due(now, &mut fx);
        self.finish(now, &mut fx);
        fx
    }

    /// Hands the outputs in `self.out` to sockets, the archive and the
    /// notification queue. Whether any of it must be committed at once.
    fn route(&mut self, now: Timestamp, fx: &mut Effects) -> bool {
        let mut durable = false;
        let mut out = std::mem::take(&mut self.out);
        for id in out.ready.drain(..) {
            if let Some(&socket) = self.by_subscriber.get(&id) {
                self.flush_socket(socket, fx);
            }
        }
        for (id, reason) in out.evicted.drain(..) {
            if let Some(socket) = self.by_subscriber.remove(&id) {
                self.sockets.remove(&socket);
                self.held.remove(&socket);
                self.meta.stats.sockets_closed += 1;
                fx.closes.push(SocketClose { socket, code: reason.close_code(), reason: reason.as_str().to_owned() });
            }
        }
        // Archive rows need no commit of their own: the journal makes them again.
        if self.archive.is_some() && !out.raw.is_empty() {
            for raw in out.raw.drain(..) {
                let mut value = vec![ROWS];
                value.extend(store::encode_archive_rows(now, &raw.events));
                self.archive_record(&value, fx);
                if let Some(archive) = &mut self.archive {
                    archive.oldest.get_or_insert(now);
                    if let Err(e) = archive.sink.push(&raw.events, now, &mut self.finished) {
                        fx.log.push(format!("edgestream room: archive: {e}"));
                    }
                }
            }
        }
        for notification in out.notifications.drain(..) {
            durable = true;
            let delivery = payload::render(&notification);
            match delivery.target {
                Target::Http { url } => {
                    let record = Record {
                        at: now,
                        key: url,
                        content_type: delivery.content_type.to_owned(),
                        body: delivery.body,
                    };
                    self.queue_note(record, fx);
                }
                _ => {
                    self.meta.stats.notifications_undeliverable += 1;
                    fx.log.push(format!(
                        "edgestream room: channel {:?} is not HTTP: a Worker cannot send it",
                        delivery.channel
                    ));
                }
            }
        }
        for event in out.audit.drain(..) {
            if let Ok(line) = serde_json::to_string(&event) {
                fx.log.push(line);
            }
        }
        fx.log.extend(out.errors.drain(..).map(|e| format!("edgestream pipeline: {e}")));
        if !self.finished.is_empty() {
            durable = true;
            let files = std::mem::take(&mut self.finished);
            self.queue_files(files, fx);
        }
        out.clear();
        self.out = out;
        durable
    }

    fn archive_record(&mut self, value: &[u8], fx: &mut Effects) {
        let n = self.meta.archive_next;
        self.meta.archive_next += 1;
        let parts = store::chunks(Slot::new(Kind::Archive, n), value, self.config.max_value_bytes);
        if let Some(archive) = &mut self.archive {
            archive.records.insert(n, parts.len() as u32);
            archive.bytes += value.len();
        }
        fx.puts.extend(parts);
    }

    /// Time-based rollover of the archive, and the flush that bounds how
    /// long rows wait in storage. Whether files were finished.
    fn tick_archive(&mut self, now: Timestamp, fx: &mut Effects) -> bool {
        let Some(archive) = &mut self.archive else { return false };
        let before = self.finished.len();
        let flush = archive.oldest.is_some_and(|t| now >= t.saturating_add(self.config.archive_flush_after))
            || archive.bytes >= self.config.max_archive_bytes;
        let (kind, result) = if flush {
            (FLUSH, archive.sink.flush(&mut self.finished))
        } else {
            (TICK, archive.sink.advance(now, &mut self.finished))
        };
        if let Err(e) = result {
            fx.log.push(format!("edgestream room: archive: {e}"));
        }
        if self.finished.len() == before {
            return false;
        }
        let mut value = vec![kind];
        value.extend_from_slice(&now.as_nanos().to_le_bytes());
        self.archive_record(&value, fx);
        let files = std::mem::take(&mut self.finished);
        self.queue_files(files, fx);
        true
    }

    fn queue_files(&mut self, files: Vec<FinishedFile>, fx: &mut Effects) {
        for file in files {
            let n = self.meta.file_next;
            self.meta.file_next += 1;
            let key = format!("{}{}", self.config.archive_prefix, file.path);
            let parts = store::chunks(
                Slot::new(Kind::File, n),
                &store::encode_file(&key, &file.bytes),
                self.config.max_value_bytes,
            );
            let chunks = parts.len() as u32;
            fx.puts.extend(parts);
            self.file_bytes += file.bytes.len();
            // Uploaded from the alarm, after the commit that names it.
            self.files.insert(n, PendingFile { key, body: file.bytes, chunks, retry: Retry::default() });
        }
    }

    fn queue_note(&mut self, record: Record, fx: &mut Effects) {
        while self.notes.len() >= self.config.max_pending_notifications.max(1) {
            let Some((n, old)) = self.notes.pop_first() else { break };
            self.meta.stats.notifications_undeliverable += 1;
            fx.deletes.extend(Slot::new(Kind::Note, n).keys(old.chunks));
        }
        let n = self.meta.note_next;
        self.meta.note_next += 1;
        let parts = store::chunks(Slot::new(Kind::Note, n), &record.encode(), self.config.max_value_bytes);
        let chunks = parts.len() as u32;
        fx.puts.extend(parts);
        // Sent from the alarm, after the commit that names it.
        let note = PendingNote {
            url: record.key,
            content_type: record.content_type,
            body: record.body,
            chunks,
            retry: Retry::default(),
        };
        self.notes.insert(n, note);
    }

    /// Writes a snapshot and the commit record; drops the journal it covers
    /// and, when no archive file is open, the archive rows.
    fn commit(&mut self, now: Timestamp, fx: &mut Effects) {
        let mut snapshot = Vec::new();
        self.out.clear();
        if let Err(e) = self.pipeline.snapshot(&mut snapshot, &mut self.out) {
            let message = format!("snapshot: {e}");
            fx.log.push(format!("edgestream room: {message}"));
            self.meta.stats.last_error = Some(message);
            return;
        }
        // What the snapshot handed out is routed before the commit record.
        self.route(now, fx);
        let old = (self.meta.generation, self.meta.chunks);
        let generation = old.0 + 1;
        let parts = store::chunks(Slot::new(Kind::Snapshot, generation), &snapshot, self.config.max_value_bytes);
        self.meta.generation = generation;
        self.meta.chunks = parts.len() as u32;
        fx.puts.extend(parts);
        if old.1 > 0 {
            fx.deletes.extend(Slot::new(Kind::Snapshot, old.0).keys(old.1));
        }
        for (seq, chunks) in std::mem::take(&mut self.journal) {
            fx.deletes.extend(Slot::new(Kind::Journal, seq).keys(chunks));
        }
        self.journal_bytes = 0;
        self.meta.journal_next = self.journal_next;
        if let Some(archive) = &mut self.archive
            && archive.sink.open_files() == 0
        {
            for (n, chunks) in std::mem::take(&mut archive.records) {
                fx.deletes.extend(Slot::new(Kind::Archive, n).keys(chunks));
            }
            archive.bytes = 0;
            archive.oldest = None;
            self.meta.archive_from = self.meta.archive_next;
            self.meta.archive_file_seq = archive.sink.next_seq();
        }
        self.meta.at = Some(now);
        self.meta.stats.snapshots += 1;
        self.meta.stats.snapshot_bytes = snapshot.len() as u64;
        fx.puts.push((store::META.to_owned(), self.meta.encode()));
        self.dirty = false;
        self.last_commit = Some(now);
    }

    /// Starts the uploads and deliveries whose retry is due.
    fn retry_due(&mut self, now: Timestamp, fx: &mut Effects) {
        for (&n, file) in &mut self.files {
            if !file.retry.in_flight && file.retry.due.is_none_or(|d| d <= now) {
                file.retry.in_flight = true;
                fx.uploads.push(Upload { file: n, key: file.key.clone(), body: file.body.clone() });
            }
        }
        for (&n, note) in &mut self.notes {
            if !note.retry.in_flight && note.retry.due.is_none_or(|d| d <= now) {
                note.retry.in_flight = true;
                fx.posts.push(Post {
                    note: n,
                    url: note.url.clone(),
                    content_type: note.content_type.clone(),
                    body: note.body.clone(),
                });
            }
        }
    }

    fn backoff(&self, attempts: u32) -> Span {
        let first = self.config.first_backoff.as_nanos().max(1);
        let factor = 1i64.checked_shl(attempts.saturating_sub(1).min(40)).unwrap_or(i64::MAX);
        Span::from_nanos(first.saturating_mul(factor).min(self.config.max_backoff.as_nanos().max(first)))
    }

    /// The outcome of an [`Upload`]: stored (its storage copy is deleted), or
    /// failed (retried after a backoff).
    pub fn stored(&mut self, file: u64, result: Result<(), String>, now: Timestamp) -> Effects {
        let mut fx = Effects::default();
        match result {
            Ok(()) => {
                if let Some(f) = self.files.remove(&file) {
                    self.file_bytes = self.file_bytes.saturating_sub(f.body.len());
                    self.meta.stats.files_stored += 1;
                    fx.deletes.extend(Slot::new(Kind::File, file).keys(f.chunks));
                }
            }
            Err(e) => {
                self.meta.stats.upload_failures += 1;
                let backoff = self.files.get(&file).map(|f| self.backoff(f.retry.attempts + 1));
                if let (Some(f), Some(backoff)) = (self.files.get_mut(&file), backoff) {
                    f.retry.attempts += 1;
                    f.retry.in_flight = false;
                    f.retry.due = Some(now.saturating_add(backoff));
                    fx.log.push(format!("edgestream room: storing {}: {e} (attempt {})", f.key, f.retry.attempts));
                }
            }
        }
        self.finish(now, &mut fx);
        fx
    }

    /// The outcome of a [`Post`]: delivered or refused for good (dropped,
    /// counted), or failed for now (retried after a backoff).
    pub fn delivered(&mut self, note: u64, result: Result<(), DeliveryError>, now: Timestamp) -> Effects {
        let mut fx = Effects::default();
        if !self.notes.contains_key(&note) {
            // Dropped meanwhile (beyond the cap), and counted then.
            return fx;
        }
        let retry = match &result {
            Ok(()) => {
                self.meta.stats.notifications_sent += 1;
                false
            }
            Err(DeliveryError::Permanent(e)) => {
                self.meta.stats.notifications_undeliverable += 1;
                fx.log.push(format!("edgestream room: notification {note} refused for good: {e}"));
                false
            }
            Err(DeliveryError::Transient(_)) => {
                self.meta.stats.delivery_failures += 1;
                true
            }
        };
        if retry {
            let backoff = self.notes.get(&note).map(|n| self.backoff(n.retry.attempts + 1));
            if let (Some(n), Some(backoff)) = (self.notes.get_mut(&note), backoff) {
                n.retry.attempts += 1;
                n.retry.in_flight = false;
                n.retry.due = Some(now.saturating_add(backoff));
            }
        } else if let Some(n) = self.notes.remove(&note) {
            fx.deletes.extend(Slot::new(Kind::Note, note).keys(n.chunks));
        }
        self.finish(now, &mut fx);
        fx
    }

    /// When the room next needs its alarm.
    pub fn next_alarm(&self) -> Option<Timestamp> {
        let pipeline = self.pipeline.next_deadline();
        let archive = self.archive.as_ref().and_then(|a| {
            let flush = a.oldest.map(|t| t.saturating_add(self.config.archive_flush_after));
            [a.sink.next_deadline(), flush].into_iter().flatten().min()
        });
        let commit = self
            .dirty
            .then(|| self.last_commit.map_or(Timestamp::MIN, |t| t.saturating_add(self.config.snapshot_every)));
        let retries = self
            .files
            .values()
            .map(|f| f.retry)
            .chain(self.notes.values().map(|n| n.retry))
            .filter(|r| !r.in_flight)
            .map(|r| r.due.unwrap_or(Timestamp::MIN));
        [pipeline, archive, commit].into_iter().flatten().chain(retries).min()
    }

    /// Arms the alarm when the room needs it sooner than it is armed.
    fn finish(&mut self, now: Timestamp, fx: &mut Effects) {
        let Some(at) = self.next_alarm() else { return };
        let at = at.max(now);
        if self.armed.is_none_or(|armed| at < armed || armed < now) {
            self.armed = Some(at);
            fx.alarm = Some(at);
        }
    }

    fn metrics(&mut self, request: &RoomRequest, now: Timestamp) -> Reply {
        let params: RangeParams = match http::params_from_pairs(request.query.iter().cloned()) {
            Ok(p) => p,
            Err(reply) => return reply,
        };
        let default_window = self
            .config
            .metrics_window
            .clone()
            .or_else(|| self.config.pipeline.windows.first().map(|w| w.name.clone()))
            .unwrap_or_default();
        let mut tenant = params.tenant.clone().unwrap_or_default();
        if self.config.pipeline.auth.is_some() {
            let Some(token) = Room::token(request) else { return Reply::missing_token() };
            let claims = match self.pipeline.verify_token(token, now) {
                Ok(c) => c,
                Err(e) => return http::auth_error_reply(&e),
            };
            if tenant.is_empty() {
                tenant.clone_from(&claims.tenant);
            }
            let window = params.window.clone().unwrap_or_else(|| default_window.clone());
            if let Err(e) = self.pipeline.authorize(&claims, &tenant, &window, Mode::Aggregates, now) {
                return http::auth_error_reply(&e);
            }
        }
        if tenant.is_empty() {
            return Reply::bad_query("name the tenant with ?tenant=");
        }
        let (window, query) = match params.rollup_query(tenant, &default_window, now) {
            Ok(q) => q,
            Err(reply) => return reply,
        };
        match self.pipeline.rollup(&window).map(|r| r.query(&query)) {
            Some(Ok(result)) => Reply::json(200, serde_json::to_value(result).unwrap_or_default()),
            Some(Err(e)) => Reply::bad_query(e.to_string()),
            None => Reply::bad_query(format!("no rollup on window {window:?}")),
        }
    }

    fn health(&mut self, request: &RoomRequest, now: Timestamp) -> Reply {
        let room = json!({
            "stats": self.meta.stats,
            "sockets": self.sockets.len(),
            "journal_entries": self.journal.len(),
            "journal_bytes": self.journal_bytes,
            "files_pending": self.files.len(),
            "file_bytes_pending": self.file_bytes,
            "notifications_pending": self.notes.len(),
            "archive_rows_bytes": self.archive.as_ref().map_or(0, |a| a.bytes),
            "last_commit": self.last_commit,
        });
        if self.config.pipeline.auth.is_some() {
            let Some(token) = Room::token(request) else { return Reply::missing_token() };
            let claims = match self.pipeline.verify_token(token, now) {
                Ok(c) => c,
                Err(e) => return http::auth_error_reply(&e),
            };
            // Only the bearer's own tenant; the room's error texts stay private.
            let stats = self.pipeline.tenant_stats(&claims.tenant).cloned();
            let mut room = self.meta.stats.clone();
            room.last_error = None;
            return Reply::json(
                200,
                json!({"tenant": claims.tenant, "stats": stats, "sockets": self.sockets.len(), "room": room}),
            );
        }
        Reply::json(200, json!({"pipeline": self.pipeline.stats(), "room": room}))
    }
}

fn too_large() -> Reply {
    Reply::bad_query("the subscription is too large to keep on the socket (2 KiB)")
}

/// A control message from a socket.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Control {
    Ping,
    Resync,
    Ack { frames: u64 },
    Subscribe(SubscribeParams),
}

fn restore_failed(stats: &mut RoomStats, fx: &mut Effects, reason: &str) {
    stats.restore_failures += 1;
    let message = format!("snapshot not restored, the pipeline starts afresh: {reason}");
    fx.log.push(format!("edgestream room: {message}"));
    stats.last_error = Some(message);
}

/// The pipeline's configuration without its archive (run by the room),
/// with raw events handed out for it; and the archive's.
fn split_archive(config: &RoomConfig) -> Result<(PipelineConfig, Option<ArchiveConfig>), RoomError> {
    if config.max_value_bytes < 4096 {
        return Err(RoomError::Config(format!("max_value_bytes {} is below 4096", config.max_value_bytes)));
    }
    if !config.snapshot_every.is_positive() || !config.archive_flush_after.is_positive() {
        return Err(RoomError::Config("snapshot_every and archive_flush_after must be positive".into()));
    }
    let mut pipeline = config.pipeline.clone();
    let archive = pipeline.archive.take();
    if archive.is_some() {
        // Every admitted event goes to the archive: what is held between two
        // alarms is bounded by the ingest limits and the rate limits.
        pipeline.raw.enabled = true;
        pipeline.raw.max_buffered = usize::MAX;
    }
    Ok((pipeline, archive))
}

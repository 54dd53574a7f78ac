//! Where finished archive files go: a small trait, a local directory, and
//! the task that stores files in order and retries until each is stored.

use std::collections::VecDeque;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::tokio::sync::{mpsc, oneshot};
use bytes::Bytes;
use serde::Serialize;

use super::BoxFuture;
use crate::sink::FinishedFile;

/// Stores finished files (Parquet or CSV from the pipeline's archive).
///
/// `put` must be idempotent for a path: a file whose put failed is put
/// again with the same path and bytes, and a restarted pipeline resumes its
/// numbering so a retried file overwrites rather than duplicates.
pub trait FileSink: Send + Sync + 'static {
    /// Stores `bytes` at `path`, relative to the sink's root, whole or not at
    /// all: a reader must never see half a file.
    fn put<'a>(&'a self, path: &'a str, bytes: Bytes) -> BoxFuture<'a, io::Result<()>>;
}

/// Files in a local directory, each written to a temporary name, synced,
/// then renamed into place.
#[derive(Clone, Debug)]
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    /// Files under `root` (created when the first file is stored).
    pub fn new(root: impl Into<PathBuf>) -> LocalDir {
        LocalDir { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl FileSink for LocalDir {
    fn put<'a>(&'a self, path: &'a str, bytes: Bytes) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let relative = Path::new(path);
            if path.is_empty() || !relative.components().all(|c| matches!(c, Component::Normal(_))) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{path:?} is not a relative path without `..`"),
                ));
            }
            write_atomic(&self.root.join(relative), bytes).await
        })
    }
}

/// Files as objects of any [`object_store`] backend (S3 and S3-compatible
/// stores such as Cloudflare R2, GCS, Azure, memory), under an optional
/// prefix (feature `object-store`). One PUT per file: a reader sees the
/// whole object or none.
#[cfg(feature = "object-store")]
#[cfg_attr(docsrs, doc(cfg(feature = "object-store")))]
#[derive(Clone, Debug)]
pub struct ObjectStoreSink {
    store: Arc<dyn object_store::ObjectStore>,
    prefix: String,
}

#[cfg(feature = "object-store")]
impl ObjectStoreSink {
    /// Files at the root of `store`.
    pub fn new(store: Arc<dyn object_store::ObjectStore>) -> ObjectStoreSink {
        ObjectStoreSink { store, prefix: String::new() }
    }

    /// Files under `prefix` (`raw/` puts `tenant=…/…` at `raw/tenant=…/…`).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> ObjectStoreSink {
        self.prefix = prefix.into().trim_matches('/').to_owned();
        self
    }
}

#[cfg(feature = "object-store")]
impl FileSink for ObjectStoreSink {
    fn put<'a>(&'a self, path: &'a str, bytes: Bytes) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let key = if self.prefix.is_empty() { path.to_owned() } else { format!("{}/{path}", self.prefix) };
            let location = object_store::path::Path::parse(&key)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{key:?}: {e}")))?;
            self.store
                .put_opts(&location, object_store::PutPayload::from(bytes), object_store::PutOptions::default())
                .await
                .map(|_| ())
                .map_err(io::Error::other)
        })
    }
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically: a temporary file beside it, synced,
/// then renamed over it. Parent directories are created.
pub(super) async fn write_atomic(path: &Path, bytes: Bytes) -> io::Result<()> {
    let path = path.to_owned();
    ::tokio::task::spawn_blocking(move || {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let temp = path.with_file_name(format!(".{name}.tmp-{}-{seq}", std::process::id()));
        let written = (|| {
            let mut file = std::fs::File::create(&temp)?;
            io::Write::write_all(&mut file, &bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)
        })();
        if written.is_err() {
            // Best effort: the error that matters is the write's.
            let _ = std::fs::remove_file(&temp);
        }
        written
    })
    .await
    .map_err(io::Error::other)?
}

/// What the file writer did, for the health view.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct FileStats {
    /// Files stored.
    pub written: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Rows in the files stored.
    pub rows: u64,
    /// Failed attempts (each is retried).
    pub failed_attempts: u64,
    /// Files waiting to be stored (retrying or queued).
    pub pending: u64,
    /// Their bytes.
    pub pending_bytes: u64,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
}

/// What the file writer is sent.
pub(super) enum ToWriter {
    /// A file to store.
    File(FinishedFile),
    /// Answered once every file sent before it is stored.
    Barrier(oneshot::Sender<()>),
}

/// Backoff between attempts at a file that could not be stored.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Stores files in the order they were finished; a file that fails is
/// retried with exponential backoff until stored, and the files behind it
/// wait. Ends when `files` closes and everything is stored, or when `stop`
/// fires (what is left is returned, counted as pending).
pub(super) async fn run_writer(
    sink: Arc<dyn FileSink>,
    mut files: mpsc::UnboundedReceiver<ToWriter>,
    stats: Arc<Mutex<FileStats>>,
    mut stop: ::tokio::sync::watch::Receiver<bool>,
) -> Vec<FinishedFile> {
    let mut queue: VecDeque<ToWriter> = VecDeque::new();
    let mut open = true;
    let mut backoff = FIRST_BACKOFF;
    loop {
        if queue.is_empty() {
            if !open {
                return Vec::new();
            }
            ::tokio::select! {
                biased;
                file = files.recv() => match file {
                    Some(file) => queue.push_back(file),
                    None => open = false,
                },
                _ = stop.changed() => return unstored(queue, &mut files),
            }
            continue;
        }
        while let Ok(file) = files.try_recv() {
            queue.push_back(file);
        }
        let file = match queue.front() {
            Some(ToWriter::File(file)) => file,
            Some(ToWriter::Barrier(_)) => {
                if let Some(ToWriter::Barrier(done)) = queue.pop_front() {
                    // The caller may have stopped waiting.
                    let _ = done.send(());
                }
                continue;
            }
            None => continue,
        };
        // An attempt in flight is abandoned at the deadline: the file is
        // handed back, to be stored again after the restart.
        let attempt = ::tokio::select! {
            result = sink.put(&file.path, file.bytes.clone()) => result,
            _ = stop.changed() => return unstored(queue, &mut files),
        };
        match attempt {
            Ok(()) => {
                backoff = FIRST_BACKOFF;
                if let Ok(mut s) = stats.lock() {
                    s.written += 1;
                    s.bytes += file.bytes.len() as u64;
                    s.rows += file.rows;
                    s.pending = s.pending.saturating_sub(1);
                    s.pending_bytes = s.pending_bytes.saturating_sub(file.bytes.len() as u64);
                    s.last_error = None;
                }
                tracing::debug!(path = %file.path, rows = file.rows, bytes = file.bytes.len(), "file stored");
                queue.pop_front();
            }
            Err(e) => {
                tracing::warn!(path = %file.path, error = %e, retry_in = ?backoff, "file not stored; retrying");
                if let Ok(mut s) = stats.lock() {
                    s.failed_attempts += 1;
                    s.last_error = Some(format!("{}: {e}", file.path));
                }
                ::tokio::select! {
                    _ = ::tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return unstored(queue, &mut files),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The files of `queue` and those still in the channel, in order (the
/// barriers are dropped: their waiters see the writer gone).
fn unstored(mut queue: VecDeque<ToWriter>, files: &mut mpsc::UnboundedReceiver<ToWriter>) -> Vec<FinishedFile> {
    while let Ok(item) = files.try_recv() {
        queue.push_back(item);
    }
    queue
        .into_iter()
        .filter_map(|item| match item {
            ToWriter::File(file) => Some(file),
            ToWriter::Barrier(_) => None,
        })
        .collect()
}

/// A file kept for the next start, described in the spool's index.
#[derive(serde::Serialize, serde::Deserialize)]
struct Spooled {
    path: String,
    rows: u64,
    min_time: crate::time::Timestamp,
    max_time: crate::time::Timestamp,
    tenant: String,
    stream: String,
    reason: crate::sink::FinishReason,
}

const SPOOL_INDEX: &str = "index.json";

/// Keeps files the sink could not store before shutdown in `dir` (their
/// bytes at their own paths, and an index), to be stored after the restart.
pub(super) async fn spool(dir: &Path, files: &[FinishedFile]) -> io::Result<()> {
    let mut index = Vec::with_capacity(files.len());
    for file in files {
        LocalDir::new(dir).put(&file.path, file.bytes.clone()).await?;
        index.push(Spooled {
            path: file.path.clone(),
            rows: file.rows,
            min_time: file.min_time,
            max_time: file.max_time,
            tenant: file.tenant.to_string(),
            stream: file.stream.to_string(),
            reason: file.reason,
        });
    }
    let json = serde_json::to_vec(&index).map_err(io::Error::other)?;
    write_atomic(&dir.join(SPOOL_INDEX), Bytes::from(json)).await
}

/// The files a previous shutdown kept in `dir`, in their order; the
/// directory is removed once they are read (they are then queued again).
pub(super) async fn unspool(dir: &Path) -> io::Result<Vec<FinishedFile>> {
    let index = match ::tokio::fs::read(dir.join(SPOOL_INDEX)).await {
        Ok(index) => index,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let index: Vec<Spooled> = serde_json::from_slice(&index).map_err(io::Error::other)?;
    let mut files = Vec::with_capacity(index.len());
    for s in index {
        let bytes = ::tokio::fs::read(dir.join(&s.path)).await?;
        files.push(FinishedFile {
            path: s.path,
            bytes: Bytes::from(bytes),
            rows: s.rows,
            min_time: s.min_time,
            max_time: s.max_time,
            tenant: s.tenant.into(),
            stream: s.stream.into(),
            reason: s.reason,
        });
    }
    ::tokio::fs::remove_dir_all(dir).await?;
    Ok(files)
}

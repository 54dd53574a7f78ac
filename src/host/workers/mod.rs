//! A pipeline in a Cloudflare Durable Object: a "stream room" per tenant
//! (or per stream shard), with ingest, WebSocket fan-out with the
//! hibernation API, the alarm as its timer, its state in the object's
//! storage, raw events archived to an R2 bucket and alert notifications
//! sent with `fetch`.
//!
//! Two layers:
//!
//! - [`Room`] is the logic, in plain Rust and sans-IO: each event of the
//!   object (a request, the alarm, a socket message) is a call that
//!   returns [`Effects`] — storage writes and deletes, the alarm to arm,
//!   frames to send, sockets to close, files to upload, notifications to
//!   post. It compiles and is tested on every target.
//! - `StreamRoom` (on `wasm32` only) carries the effects out with
//!   workers-rs: your own `#[durable_object]` holds one and delegates its
//!   handlers to it.
//!
//! ```ignore
//! use edgestream::host::workers::{RoomConfig, StreamRoom};
//! use worker::*;
//!
//! #[durable_object]
//! pub struct Room(StreamRoom);
//!
//! impl DurableObject for Room {
//!     fn new(state: State, env: Env) -> Self {
//!         let config: RoomConfig = serde_yaml_ng::from_str(include_str!("room.yaml")).unwrap_or_default();
//!         Room(StreamRoom::new(state, env, config, "ARCHIVE"))
//!     }
//!     async fn fetch(&self, req: Request) -> Result<Response> { self.0.fetch(req).await }
//!     async fn alarm(&self) -> Result<Response> { self.0.alarm().await }
//!     async fn websocket_message(&self, ws: WebSocket, msg: WebSocketIncomingMessage) -> Result<()> {
//!         self.0.websocket_message(ws, msg).await
//!     }
//!     async fn websocket_close(&self, ws: WebSocket, code: usize, reason: String, clean: bool) -> Result<()> {
//!         self.0.websocket_close(ws, code, reason, clean).await
//!     }
//!     async fn websocket_error(&self, ws: WebSocket, error: Error) -> Result<()> {
//!         self.0.websocket_error(ws, error).await
//!     }
//! }
//! ```
//!
//! # Durability
//!
//! An object may be evicted whenever it is idle (hibernation) and may be
//! restarted at any time; its memory is then gone. The room therefore:
//!
//! - journals every accepted ingest body before answering 202 (a body
//!   whose write fails is answered 503, and the room reloads from
//!   storage), and replays the journal after a load, so an accepted event
//!   is never lost nor counted twice. The replay runs under the
//!   configuration of the new instance: deploy a changed configuration
//!   (rate limits, windows) knowing that the few ingests since the last
//!   commit (at most [`RoomConfig::snapshot_every`] old) are replayed
//!   under it;
//! - commits a [`Pipeline`](crate::pipeline::Pipeline) snapshot after an
//!   alarm that produced files, notifications or archive rows, and
//!   otherwise at most every [`RoomConfig::snapshot_every`] (or when the
//!   journal outgrows [`RoomConfig::max_journal_bytes`]); values are
//!   chunked below the per-value limit, and a commit record written last
//!   makes each commit atomic;
//! - runs the archive itself: the admitted rows of open files are kept in
//!   storage until every open file is finished (all are finished after
//!   [`RoomConfig::archive_flush_after`] or past
//!   [`RoomConfig::max_archive_bytes`]), so a load rebuilds the same files;
//!   a finished file stays in storage until the bucket has it (put from
//!   the alarm, retried with backoff);
//! - keeps each notification in storage until it is delivered (retried
//!   with backoff; 4xx answers are final and counted);
//! - keeps each socket's subscription in its attachment, so that after
//!   hibernation the socket is subscribed again (with a fresh snapshot).
//!
//! Sockets have no send-side back-pressure in Workers: a client may ask
//! for flow control with `credit=N` on `/ws` and acknowledge frames with
//! `{"type":"ack","frames":<received so far>}`; while N frames are
//! unacknowledged the room sends nothing, `deltas` subscribers conflate,
//! and others are evicted (close code 4008) once their queue stays full
//! for [`SubscribeConfig::max_lag`](crate::pipeline::SubscribeConfig::max_lag).

mod room;
mod store;

pub use room::{
    Effects, Incoming, Post, Room, RoomConfig, RoomError, RoomRequest, RoomResponse, RoomStats, SocketClose,
    SocketSend, Upload,
};
pub use store::PREFIX;

#[cfg(target_arch = "wasm32")]
mod glue;
#[cfg(target_arch = "wasm32")]
pub use glue::StreamRoom;

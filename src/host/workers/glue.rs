//! The thin layer between a [`Room`] and workers-rs: it reads the room
//! from storage on the first event after a (re)start, turns requests and
//! socket events into calls, and carries out the [`Effects`].

use std::cell::RefCell;
use std::collections::HashMap;

use bytes::Bytes;
use worker::js_sys::{self, Object, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::{
    AbortSignal, Env, Error, Fetch, Headers, ListOptions, Method, Request, RequestInit, Response, Result,
    ScheduledTime, State, WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

use super::{Effects, Incoming, PREFIX, Room, RoomConfig, RoomRequest, RoomResponse};
use crate::host::DeliveryError;
use crate::host::http::Reply;
use crate::time::Timestamp;

/// Most keys the runtime writes or deletes in one call.
const BATCH: usize = 128;

/// A [`Room`] in a Durable Object: hold one in your `#[durable_object]`
/// struct and delegate each handler to it (see the [module](super) docs).
///
/// Every handler loads the room from storage first if this instance has
/// not yet (after a start, an eviction or hibernation), then carries out
/// what the room asks: storage writes before the response leaves,
/// frames to sockets, files to the R2 bucket, notifications with `fetch`.
pub struct StreamRoom {
    state: State,
    env: Env,
    config: RoomConfig,
    bucket: String,
    /// Timeout of a notification POST.
    timeout_ms: u32,
    room: RefCell<Option<Room>>,
    sockets: RefCell<HashMap<u64, WebSocket>>,
}

impl std::fmt::Debug for StreamRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRoom").field("bucket", &self.bucket).finish_non_exhaustive()
    }
}

fn now() -> Timestamp {
    let ms = i64::try_from(worker::Date::now().as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_millis(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn room_error(e: impl std::fmt::Display) -> Error {
    Error::RustError(e.to_string())
}

impl StreamRoom {
    /// A room with `config`, archiving to the R2 bucket bound as `bucket`
    /// (when the pipeline has an archive). Unless the archive names its
    /// writer, files are named after the object's id, so that rooms never
    /// overwrite each other's files.
    pub fn new(state: State, env: Env, mut config: RoomConfig, bucket: &str) -> StreamRoom {
        if let Some(archive) = &mut config.pipeline.archive
            && archive.sink.writer_id == crate::sink::SinkConfig::default().writer_id
        {
            archive.sink.writer_id = state.id().to_string().chars().take(16).collect();
        }
        // Pings are answered by the runtime without waking the object.
        if let Ok(pair) =
            worker::worker_sys::WebSocketRequestResponsePair::new(r#"{"type":"ping"}"#, r#"{"type":"pong"}"#)
        {
            state.set_websocket_auto_response(&pair);
        }
        let timeout_ms = u32::try_from(config.delivery_timeout.as_millis().max(1)).unwrap_or(u32::MAX);
        StreamRoom {
            state,
            env,
            timeout_ms,
            config,
            bucket: bucket.to_owned(),
            room: RefCell::new(None),
            sockets: RefCell::new(HashMap::new()),
        }
    }

    /// Loads the room from storage unless it is in memory.
    async fn ensure(&self) -> Result<()> {
        if self.room.borrow().is_some() {
            return Ok(());
        }
        let listed = self.state.storage().list_with_options(ListOptions::new().prefix(PREFIX)).await?;
        let mut entries = Vec::new();
        listed.for_each(&mut |value, key| {
            if let (Some(key), Ok(bytes)) = (key.as_string(), value.dyn_into::<Uint8Array>()) {
                entries.push((key, Bytes::from(bytes.to_vec())));
            }
        });
        let at = now();
        let (mut room, mut fx) = Room::load(self.config.clone(), entries, at).map_err(room_error)?;
        let mut attachments = Vec::new();
        {
            let mut sockets = self.sockets.borrow_mut();
            for ws in self.state.get_websockets() {
                if let Ok(Some(text)) = ws.deserialize_attachment::<String>()
                    && let Some(sid) = Room::socket_of(&text)
                {
                    sockets.insert(sid, ws);
                    attachments.push(text);
                }
            }
        }
        fx.append(room.reattach(attachments, at));
        if self.room.borrow().is_some() {
            // Another event loaded it while this one read storage.
            return Ok(());
        }
        *self.room.borrow_mut() = Some(room);
        if self.apply(fx).await { Ok(()) } else { Err(room_error("storage writes failed; the room will reload")) }
    }

    fn with_room<R>(&self, f: impl FnOnce(&mut Room) -> R) -> Result<R> {
        let mut room = self.room.borrow_mut();
        let room = room.as_mut().ok_or_else(|| room_error("the room is not loaded"))?;
        Ok(f(room))
    }

    /// Carries out `fx`, then what the room asks after each upload and
    /// notification outcome. Whether storage took every write: if not, the
    /// room in memory is ahead of storage and is dropped, to be loaded
    /// again from what storage holds.
    async fn apply(&self, mut fx: Effects) -> bool {
        loop {
            if let Err(e) = self.write(&fx).await {
                // The room is dropped (not told through `storage_failed`): what
                // storage holds is the truth it reloads from.
                worker::console_error!("edgestream room: storage: {e}; reloading");
                *self.room.borrow_mut() = None;
                return false;
            }
            self.sockets_out(&mut fx);
            for line in fx.log.drain(..) {
                worker::console_log!("{line}");
            }
            let mut next = Effects::default();
            for upload in std::mem::take(&mut fx.uploads) {
                let result = self.upload(&upload.key, upload.body).await.map_err(|e| e.to_string());
                if let Ok(more) = self.with_room(|room| room.stored(upload.file, result, now())) {
                    next.append(more);
                }
            }
            for post in std::mem::take(&mut fx.posts) {
                let result = post_once(&post.url, &post.content_type, &post.body, self.timeout_ms).await;
                if let Ok(more) = self.with_room(|room| room.delivered(post.note, result, now())) {
                    next.append(more);
                }
            }
            if next.is_empty() {
                return true;
            }
            fx = next;
        }
    }

    async fn write(&self, fx: &Effects) -> Result<()> {
        let storage = self.state.storage();
        for group in fx.puts.chunks(BATCH) {
            let object = Object::new();
            for (key, value) in group {
                Reflect::set(&object, &JsValue::from_str(key), &Uint8Array::from(&value[..]))?;
            }
            storage.put_multiple_raw(object).await?;
        }
        for group in fx.deletes.chunks(BATCH) {
            storage.delete_multiple(group.to_vec()).await?;
        }
        if let Some(at) = fx.alarm {
            let date = js_sys::Date::new(&JsValue::from_f64(at.as_millis() as f64));
            storage.set_alarm(ScheduledTime::new(date)).await?;
        }
        Ok(())
    }

    fn sockets_out(&self, fx: &mut Effects) {
        let mut sockets = self.sockets.borrow_mut();
        for send in fx.sends.drain(..) {
            let Some(ws) = sockets.get(&send.socket) else { continue };
            let sent = if send.text {
                ws.send_with_str(String::from_utf8_lossy(&send.frame))
            } else {
                ws.send_with_bytes(&send.frame)
            };
            if let Err(e) = sent {
                worker::console_warn!("edgestream room: send to socket {}: {e}", send.socket);
            }
        }
        for close in fx.closes.drain(..) {
            if let Some(ws) = sockets.remove(&close.socket) {
                let _ = ws.close(Some(close.code), Some(close.reason));
            }
        }
        // After the frames: a socket whose new attachment cannot be kept
        // still got what was sent under the old one.
        for (socket, attachment) in fx.attachments.drain(..) {
            if let Some(ws) = sockets.get(&socket)
                && let Err(e) = ws.serialize_attachment(&attachment)
            {
                worker::console_error!("edgestream room: attachment of socket {socket}: {e}");
            }
        }
    }

    async fn upload(&self, key: &str, body: Bytes) -> Result<()> {
        let bucket = self.env.bucket(&self.bucket)?;
        bucket.put(key, body.to_vec()).execute().await?;
        Ok(())
    }

    /// The object's `fetch`: `POST /ingest`, `GET /ws`, `GET /api/metrics`,
    /// `GET /api/health`.
    pub async fn fetch(&self, mut req: Request) -> Result<Response> {
        self.ensure().await?;
        let url = req.url()?;
        let header = |name: &str| req.headers().get(name).ok().flatten();
        let websocket = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let mut request = RoomRequest::new(req.method().as_ref(), url.path());
        request.query = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        request.content_type = header("content-type");
        request.authorization = header("authorization");
        request.tenant = header("x-tenant");
        request.websocket = websocket;
        if req.method() == Method::Post {
            request.body = Bytes::from(req.bytes().await?);
        }
        let at = now();
        let (response, fx) = self.with_room(|room| room.fetch(request, at))?;
        match response {
            RoomResponse::Reply(reply) => {
                if !self.apply(fx).await && reply.status < 300 {
                    // Not in storage: not accepted. A retry counts it once.
                    let mut unavailable = Reply::json(503, serde_json_error("storage_unavailable"));
                    unavailable.retry_after = Some(1);
                    return reply_response(&unavailable);
                }
                reply_response(&reply)
            }
            RoomResponse::Upgrade { socket, attachment, tags } => {
                let pair = WebSocketPair::new()?;
                let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
                self.state.accept_websocket_with_tags(&pair.server, &tags);
                if let Err(e) = pair.server.serialize_attachment(&attachment) {
                    let closed = self.with_room(|room| room.closed(socket, at))?;
                    self.apply(closed).await;
                    return Err(e);
                }
                self.sockets.borrow_mut().insert(socket, pair.server.clone());
                self.apply(fx).await;
                let opened = self.with_room(|room| room.opened(socket, at))?;
                self.apply(opened).await;
                Response::from_websocket(pair.client)
            }
        }
    }

    /// The object's `alarm`.
    pub async fn alarm(&self) -> Result<Response> {
        self.ensure().await?;
        let fx = self.with_room(|room| room.alarm(now()))?;
        self.apply(fx).await;
        Response::empty()
    }

    fn socket_id(ws: &WebSocket) -> Option<u64> {
        ws.deserialize_attachment::<String>().ok().flatten().and_then(|text| Room::socket_of(&text))
    }

    /// The object's `websocket_message`.
    pub async fn websocket_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<()> {
        self.ensure().await?;
        let Some(sid) = StreamRoom::socket_id(&ws) else {
            let _ = ws.close(Some(1011), Some("unknown socket"));
            return Ok(());
        };
        self.sockets.borrow_mut().entry(sid).or_insert_with(|| ws.clone());
        let at = now();
        let fx = self.with_room(|room| match &message {
            WebSocketIncomingMessage::String(text) => room.message(sid, Incoming::Text(text), at),
            WebSocketIncomingMessage::Binary(bytes) => room.message(sid, Incoming::Binary(bytes), at),
        })?;
        self.apply(fx).await;
        Ok(())
    }

    /// The object's `websocket_close`.
    pub async fn websocket_close(&self, ws: WebSocket, _code: usize, _reason: String, _clean: bool) -> Result<()> {
        self.gone(ws).await
    }

    /// The object's `websocket_error`.
    pub async fn websocket_error(&self, ws: WebSocket, _error: Error) -> Result<()> {
        self.gone(ws).await
    }

    async fn gone(&self, ws: WebSocket) -> Result<()> {
        self.ensure().await?;
        if let Some(sid) = StreamRoom::socket_id(&ws) {
            self.sockets.borrow_mut().remove(&sid);
            let fx = self.with_room(|room| room.closed(sid, now()))?;
            self.apply(fx).await;
        }
        let _ = ws.close(Some(1000), Some("closed"));
        Ok(())
    }
}

/// One POST of a notification, aborted after `timeout_ms`. Webhook URLs
/// are secrets: they never appear in errors.
async fn post_once(
    url: &str,
    content_type: &str,
    body: &[u8],
    timeout_ms: u32,
) -> std::result::Result<(), DeliveryError> {
    let request = (|| {
        let headers = Headers::new();
        headers.set("content-type", content_type)?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_headers(headers).with_body(Some(Uint8Array::from(body).into()));
        Request::new_with_init(url, &init)
    })()
    // A request that cannot be built (an invalid URL) never will be.
    .map_err(|_| DeliveryError::Permanent("the request cannot be built (invalid URL?)".into()))?;
    let signal = AbortSignal::from(worker::web_sys::AbortSignal::timeout_with_u32(timeout_ms));
    match Fetch::Request(request).send_with_signal(&signal).await {
        Ok(response) => DeliveryError::from_status(response.status_code()),
        Err(_) => Err(DeliveryError::Transient("fetch failed or timed out".into())),
    }
}

fn serde_json_error(error: &str) -> serde_json::Value {
    serde_json::json!({ "error": error })
}

/// An HTTP response for `reply`.
fn reply_response(reply: &Reply) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    if let Some(after) = reply.retry_after {
        headers.set("retry-after", &after.to_string())?;
    }
    Ok(Response::from_bytes(reply.body_bytes())?.with_status(reply.status).with_headers(headers))
}

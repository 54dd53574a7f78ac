//! The HTTP side of the ingest server: an axum router over a
//! [`HostHandle`]. The tests start it on a loopback port.

// Early returns of ready-made responses keep the handlers flat.
#![allow(clippy::result_large_err, reason = "a Response is the error type of a handler")]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use edgestream::auth::{AuthError, Mode};
use edgestream::event::DecodeError;
use edgestream::host::tokio::{Clock, Closed, HostError, HostHandle, Subscriber, SystemClock};
use edgestream::pipeline::{IngestError, Receipt, SubscribeError, Subscription, WireFormat};
use edgestream::time::{Span, Timestamp};
use edgestream::window::{Query as RollupQuery, QueryResult};
use serde::Deserialize;
use serde_json::json;

#[path = "export.rs"]
mod export;

pub(crate) use export::Archive;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");

/// What every handler shares.
#[derive(Clone, Debug)]
pub(crate) struct AppState {
    pub(crate) host: HostHandle,
    /// Whether ingest and subscriptions need a token.
    pub(crate) auth: bool,
    /// The window operator `/api/metrics` reads by default.
    pub(crate) metrics_window: Arc<str>,
    /// The raw-event archive, for `/api/export?what=events`.
    pub(crate) archive: Option<Archive>,
}

/// The server's routes.
pub(crate) fn router(state: AppState, max_body: usize) -> Router {
    Router::new()
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route("/app.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS) }))
        .route("/ingest", post(ingest))
        .route("/ws", get(ws))
        .route("/sse", get(sse))
        .route("/api/metrics", get(metrics))
        .route("/api/health", get(health))
        .route("/api/export", get(export))
        // A little above the pipeline's own limit, so an oversized body gets
        // the pipeline's typed 413 when it fits in memory at all.
        .layer(DefaultBodyLimit::max(max_body.saturating_add(1)))
        .with_state(state)
}

/// A JSON error response.
fn error(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

fn retry_after(span: Span) -> HeaderValue {
    // Whole seconds, rounded up, at least one.
    let secs = (span.as_millis().max(1) + 999) / 1000;
    HeaderValue::from(secs)
}

#[derive(Debug, Deserialize)]
struct IngestParams {
    tenant: Option<String>,
    /// For `/api/health` with auth on (or an `Authorization` header).
    token: Option<String>,
}

/// `POST /ingest`: 202 with the receipt; 400 bad body; 401/403 token;
/// 413 too large; 415 content type; 429 rate-limited or queue full.
async fn ingest(
    State(state): State<AppState>,
    Query(params): Query<IngestParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let result = if state.auth {
        let Some(token) = bearer(&headers) else {
            return error(StatusCode::UNAUTHORIZED, json!({"error": "missing_token"}));
        };
        state.host.ingest_with_token(token, content_type, body).await
    } else {
        let tenant = params.tenant.or_else(|| headers.get("x-tenant").and_then(|v| v.to_str().ok()).map(str::to_owned));
        let Some(tenant) = tenant else {
            return error(
                StatusCode::BAD_REQUEST,
                json!({"error": "missing_tenant",
                "message": "name the tenant with ?tenant= or an X-Tenant header"}),
            );
        };
        state.host.ingest(&tenant, content_type, body).await
    };
    match result {
        Ok(receipt) => receipt_response(receipt),
        Err(e) => host_error(e),
    }
}

/// 202 with the receipt; 429 when the rate limit refused the body's
/// events and none was taken (a client that retries the whole body then
/// counts nothing twice). A partly taken body is 202 with `Retry-After`:
/// the receipt says how many events were refused.
fn receipt_response(receipt: Receipt) -> Response {
    let after = receipt.retry_after.filter(|_| receipt.rate_limited > 0);
    let status = if receipt.rate_limited > 0 && receipt.accepted == 0 && receipt.duplicates == 0 {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        StatusCode::ACCEPTED
    };
    let mut response = (status, axum::Json(receipt)).into_response();
    if let Some(after) = after {
        response.headers_mut().insert(header::RETRY_AFTER, retry_after(after));
    }
    response
}

fn host_error(e: HostError) -> Response {
    let message = e.to_string();
    match e {
        HostError::Busy { retry_after: after } => {
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, json!({"error": "queue_full", "message": message}));
            response.headers_mut().insert(header::RETRY_AFTER, retry_after(after));
            response
        }
        HostError::Ingest(IngestError::Decode(decode)) => {
            let status = match decode {
                DecodeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                DecodeError::UnsupportedContentType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                _ => StatusCode::BAD_REQUEST,
            };
            let mut body = serde_json::to_value(&decode).unwrap_or_else(|_| json!({}));
            if let Some(fields) = body.as_object_mut() {
                fields.insert("message".into(), json!(message));
            }
            error(status, body)
        }
        HostError::Ingest(IngestError::Auth(auth)) | HostError::Subscribe(SubscribeError::Auth(auth)) => {
            auth_error(&auth)
        }
        HostError::Ingest(IngestError::EmptyTenant) => {
            error(StatusCode::BAD_REQUEST, json!({"error": "empty_tenant", "message": message}))
        }
        HostError::Ingest(IngestError::TooManyTenants { .. })
        | HostError::Subscribe(SubscribeError::TooManyTenants) => {
            error(StatusCode::SERVICE_UNAVAILABLE, json!({"error": "too_many_tenants", "message": message}))
        }
        HostError::Subscribe(SubscribeError::UnknownTopic { .. }) => {
            error(StatusCode::NOT_FOUND, json!({"error": "unknown_topic", "message": message}))
        }
        HostError::Subscribe(SubscribeError::TooMany { .. }) => {
            error(StatusCode::SERVICE_UNAVAILABLE, json!({"error": "too_many_subscribers", "message": message}))
        }
        HostError::Closed => error(StatusCode::SERVICE_UNAVAILABLE, json!({"error": "shutting_down"})),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": "internal", "message": message})),
    }
}

fn auth_error(e: &AuthError) -> Response {
    let status = match e {
        AuthError::Forbidden { .. } => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    };
    error(status, json!({"error": e.kind(), "message": e.to_string()}))
}

/// The query of `/ws` and `/sse`.
#[derive(Debug, Deserialize)]
struct SubscribeParams {
    tenant: Option<String>,
    /// The topic; `stream` is accepted as a synonym.
    topic: Option<String>,
    stream: Option<String>,
    mode: Option<String>,
    format: Option<String>,
    token: Option<String>,
    /// `label=value` filters, comma-separated.
    filter: Option<String>,
}

impl SubscribeParams {
    fn request(&self, json_only: bool) -> Result<Subscription, Response> {
        let bad = |m: String| error(StatusCode::BAD_REQUEST, json!({"error": "bad_query", "message": m}));
        let tenant = self.tenant.clone().unwrap_or_default();
        let topic = self.topic.clone().or_else(|| self.stream.clone()).unwrap_or_else(|| "metrics".into());
        let mode = match self.mode.as_deref().unwrap_or("deltas") {
            "deltas" => Mode::Deltas,
            "aggregates" => Mode::Aggregates,
            "full" => Mode::Full,
            other => return Err(bad(format!("mode {other:?}: expected deltas, aggregates or full"))),
        };
        let mut request = Subscription::new(tenant, topic, mode);
        match (self.format.as_deref(), json_only) {
            (_, true) | (Some("json"), _) => request = request.json(),
            (None | Some("proto"), false) => {}
            (Some(other), false) => return Err(bad(format!("format {other:?}: expected proto or json"))),
        }
        for pair in self.filter.iter().flat_map(|f| f.split(',')).filter(|p| !p.is_empty()) {
            let Some((label, value)) = pair.split_once('=') else {
                return Err(bad(format!("filter {pair:?}: expected label=value")));
            };
            request = request.filter(label, value);
        }
        Ok(request)
    }
}

/// Opens the subscription before any upgrade, so a refused token or an
/// unknown topic is an HTTP error, not a socket that closes at once.
async fn open(
    state: &AppState,
    params: &SubscribeParams,
    headers: &HeaderMap,
    json_only: bool,
) -> Result<Subscriber, Response> {
    let mut request = params.request(json_only)?;
    let token = params.token.as_deref().or_else(|| bearer(headers));
    let opened = match (state.auth, token) {
        (true, None) => return Err(error(StatusCode::UNAUTHORIZED, json!({"error": "missing_token"}))),
        (true, Some(token)) => {
            if request.tenant.is_empty() {
                // The token's tenant, when the query names none.
                request.tenant = verified_tenant(state, token).await?;
            }
            state.host.subscribe_with_token(token, request).await
        }
        (false, _) => {
            if request.tenant.is_empty() {
                return Err(error(StatusCode::BAD_REQUEST, json!({"error": "missing_tenant"})));
            }
            state.host.subscribe(request).await
        }
    };
    opened.map_err(host_error)
}

/// The tenant of a valid token (a refusal is audited by the pipeline).
async fn verified_tenant(state: &AppState, token: &str) -> Result<String, Response> {
    let token = token.to_owned();
    let now = SystemClock.now();
    match state.host.with_pipeline(move |p| p.verify_token(&token, now)).await {
        Ok(Ok(claims)) => Ok(claims.tenant),
        Ok(Err(e)) => Err(auth_error(&e)),
        Err(e) => Err(host_error(e)),
    }
}

/// `GET /ws`: a WebSocket subscription. Protobuf frames go as binary
/// messages, JSON as text. The client may send `{"type":"resync"}` or
/// `{"type":"ping"}` (answered `{"type":"pong"}`).
async fn ws(
    State(state): State<AppState>,
    Query(params): Query<SubscribeParams>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    match open(&state, &params, &headers, false).await {
        Ok(subscriber) => upgrade.on_upgrade(move |socket| pump(socket, subscriber)),
        Err(response) => response,
    }
}

async fn pump(mut socket: WebSocket, mut subscriber: Subscriber) {
    let mut frames = Vec::new();
    loop {
        tokio::select! {
            next = subscriber.next(&mut frames) => {
                if let Err(why) = next {
                    let (code, reason) = match why {
                        Closed::Evicted(reason) => (reason.close_code(), reason.as_str()),
                        _ => (1001, "shutdown"),
                    };
                    let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
                for frame in frames.drain(..) {
                    let message = match subscriber.format() {
                        WireFormat::Json => match Utf8Bytes::try_from(frame) {
                            Ok(text) => Message::Text(text),
                            Err(_) => continue,
                        },
                        _ => Message::Binary(frame),
                    };
                    if socket.send(message).await.is_err() {
                        return;
                    }
                }
            }
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => {
                    let kind = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned));
                    match kind.as_deref() {
                        Some("resync") => {
                            let _ = subscriber.resync().await;
                        }
                        Some("ping") => {
                            if socket.send(Message::Text(r#"{"type":"pong"}"#.into())).await.is_err() {
                                return;
                            }
                        }
                        _ => {
                            let frame = CloseFrame { code: 1003, reason: "unknown control message".into() };
                            let _ = socket.send(Message::Close(Some(frame))).await;
                            return;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// `GET /sse`: the same subscriptions as Server-Sent Events with JSON
/// frames; `id:` is the frame's sequence number where it has one, so a
/// client reconnecting with `Last-Event-ID` gets a fresh snapshot and
/// continues.
async fn sse(State(state): State<AppState>, Query(params): Query<SubscribeParams>, headers: HeaderMap) -> Response {
    let subscriber = match open(&state, &params, &headers, true).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    type Pending = std::collections::VecDeque<Bytes>;
    // The state is `None` once the close event is out: the stream ends.
    let start: Option<(Subscriber, Pending)> = Some((subscriber, Pending::new()));
    let stream = futures_util::stream::unfold(start, |state| async move {
        let (mut subscriber, mut queue) = state?;
        loop {
            if let Some(frame) = queue.pop_front() {
                return Some((Ok::<_, Infallible>(sse_event(&frame)), Some((subscriber, queue))));
            }
            let mut frames = Vec::new();
            match subscriber.next(&mut frames).await {
                Ok(()) => queue.extend(frames),
                Err(why) => {
                    let reason = match why {
                        Closed::Evicted(reason) => reason.as_str(),
                        _ => "shutdown",
                    };
                    return Some((Ok(SseEvent::default().event("close").data(reason)), None));
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

/// One JSON frame as an SSE event: `event:` its kind, `id:` its sequence.
fn sse_event(frame: &[u8]) -> SseEvent {
    let text = String::from_utf8_lossy(frame);
    let head: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let mut event = SseEvent::default().data(text);
    if let Some(kind) = head.get("kind").and_then(|k| k.as_str()) {
        event = event.event(kind);
    }
    if let Some(seq) = head.get("seq").and_then(|s| s.as_u64()) {
        event = event.id(seq.to_string());
    }
    event
}

/// The query of `/api/metrics` and `/api/export`.
#[derive(Debug, Deserialize)]
pub(crate) struct RangeParams {
    tenant: Option<String>,
    stream: Option<String>,
    /// The window operator whose rollup is read (default: the server's).
    window: Option<String>,
    /// RFC 3339 or milliseconds since the epoch; default one hour before `to`.
    from: Option<String>,
    /// Default now.
    to: Option<String>,
    /// `second`, `minute`, `hour`, `day`, or any span (`5m`); default the
    /// finest tier that covers the range.
    agg: Option<String>,
    /// Labels to keep, comma-separated; the others are merged.
    group_by: Option<String>,
    /// Fields to return, comma-separated (default all).
    fields: Option<String>,
    /// Quantiles to compute, comma-separated (`0.5,0.99`).
    quantiles: Option<String>,
    /// `/api/export`: `csv` (default) or `parquet`.
    format: Option<String>,
    /// `/api/export`: `results` (default, from the rollup) or `events`
    /// (raw, from the archive).
    what: Option<String>,
    token: Option<String>,
}

fn parse_time(text: &str) -> Option<Timestamp> {
    match text.parse::<i64>() {
        Ok(ms) => Timestamp::from_millis(ms),
        Err(_) => Timestamp::parse_rfc3339(text).ok(),
    }
}

fn list(text: &Option<String>) -> Vec<String> {
    text.iter().flat_map(|t| t.split(',')).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

fn bad_query(message: String) -> Response {
    error(StatusCode::BAD_REQUEST, json!({"error": "bad_query", "message": message}))
}

impl RangeParams {
    /// The tenant asked. With auth on, the token's, which must grant
    /// reading: window results (`aggregates` on the window operator) or,
    /// for raw events, `full` on the stream or on `events`. Refusals are
    /// audited by the pipeline.
    async fn tenant(&self, state: &AppState, headers: &HeaderMap) -> Result<String, Response> {
        let mut tenant = self.tenant.clone().unwrap_or_default();
        if state.auth {
            let Some(token) = self.token.as_deref().or_else(|| bearer(headers)) else {
                return Err(error(StatusCode::UNAUTHORIZED, json!({"error": "missing_token"})));
            };
            let (token, asked) = (token.to_owned(), tenant.clone());
            let raw = self.what.as_deref() == Some("events");
            let topic = if raw {
                self.stream.clone().unwrap_or_else(|| "http".into())
            } else {
                self.window.clone().unwrap_or_else(|| state.metrics_window.to_string())
            };
            let now = SystemClock.now();
            let checked = state
                .host
                .with_pipeline(move |p| {
                    let claims = p.verify_token(&token, now)?;
                    let tenant = if asked.is_empty() { claims.tenant.clone() } else { asked };
                    let (topic, mode) = match raw {
                        true if claims.topics.iter().any(|t| t == "events") => ("events".to_owned(), Mode::Full),
                        true => (topic, Mode::Full),
                        false => (topic, Mode::Aggregates),
                    };
                    p.authorize(&claims, &tenant, &topic, mode, now).map(|()| tenant)
                })
                .await;
            tenant = match checked {
                Ok(Ok(tenant)) => tenant,
                Ok(Err(e)) => return Err(auth_error(&e)),
                Err(e) => return Err(host_error(e)),
            };
        }
        if tenant.is_empty() {
            return Err(bad_query("name the tenant with ?tenant=".into()));
        }
        Ok(tenant)
    }

    /// `[from, to)`.
    pub(crate) fn range(&self) -> Result<(Timestamp, Timestamp), Response> {
        let to = match self.to.as_deref().map(parse_time) {
            Some(Some(t)) => t,
            Some(None) => return Err(bad_query("to: expected RFC 3339 or milliseconds".into())),
            None => SystemClock.now(),
        };
        let from = match self.from.as_deref().map(parse_time) {
            Some(Some(t)) => t,
            Some(None) => return Err(bad_query("from: expected RFC 3339 or milliseconds".into())),
            None => to.saturating_sub(Span::from_hours(1)),
        };
        Ok((from, to))
    }

    /// The rollup's answer to the query.
    pub(crate) async fn rollup(&self, state: &AppState, tenant: String) -> Result<QueryResult, Response> {
        let (window, query) = self.rollup_query(state, tenant)?;
        let answer = state
            .host
            .with_pipeline(move |p| match p.rollup(&window) {
                Some(rollup) => rollup.query(&query).map_err(|e| e.to_string()),
                None => Err(format!("no rollup on window {window:?}")),
            })
            .await;
        match answer {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(message)) => Err(bad_query(message)),
            Err(e) => Err(host_error(e)),
        }
    }

    /// The window operator and the rollup query.
    fn rollup_query(&self, state: &AppState, tenant: String) -> Result<(String, RollupQuery), Response> {
        let (from, to) = self.range()?;
        let resolution = match self.agg.as_deref() {
            None | Some("") | Some("auto") => None,
            Some("second") => Some(Span::from_secs(1)),
            Some("minute") => Some(Span::from_mins(1)),
            Some("hour") => Some(Span::from_hours(1)),
            Some("day") => Some(Span::from_days(1)),
            Some(other) => Some(other.parse::<Span>().map_err(|e| bad_query(format!("agg: {e}")))?),
        };
        let mut query = RollupQuery::new(tenant, self.stream.clone().unwrap_or_else(|| "http".into()), from, to);
        query.resolution = resolution;
        if self.group_by.is_some() {
            query.group_by = Some(list(&self.group_by));
        }
        query.fields = list(&self.fields);
        for q in list(&self.quantiles) {
            query.quantiles.push(q.parse::<f64>().map_err(|_| bad_query(format!("quantiles: {q:?} is not a number")))?);
        }
        let window = self.window.clone().unwrap_or_else(|| state.metrics_window.to_string());
        Ok((window, query))
    }
}

/// `GET /api/metrics`: rollup series as JSON, for charts.
async fn metrics(State(state): State<AppState>, Query(params): Query<RangeParams>, headers: HeaderMap) -> Response {
    let tenant = match params.tenant(&state, &headers).await {
        Ok(tenant) => tenant,
        Err(response) => return response,
    };
    match params.rollup(&state, tenant).await {
        Ok(result) => axum::Json(result).into_response(),
        Err(response) => response,
    }
}

/// `GET /api/export`: window results or raw events in a range, as CSV or
/// Parquet, streamed.
async fn export(State(state): State<AppState>, Query(params): Query<RangeParams>, headers: HeaderMap) -> Response {
    match params.tenant(&state, &headers).await {
        Ok(tenant) => export::export(state, params, tenant).await,
        Err(response) => response,
    }
}

/// `GET /api/health`: the pipeline's and the host's counters.
///
/// With auth on, it needs a token and shows only that tenant's counters and
/// the host's queue: other tenants' names and the host's error texts stay
/// private.
async fn health(State(state): State<AppState>, Query(params): Query<IngestParams>, headers: HeaderMap) -> Response {
    if state.auth {
        let Some(token) = params.token.as_deref().or_else(|| bearer(&headers)) else {
            return error(StatusCode::UNAUTHORIZED, json!({"error": "missing_token"}));
        };
        let tenant = match verified_tenant(&state, token).await {
            Ok(tenant) => tenant,
            Err(response) => return response,
        };
        let host = state.host.stats();
        let own = tenant.clone();
        return match state.host.with_pipeline(move |p| p.tenant_stats(&own).cloned()).await {
            Ok(stats) => axum::Json(json!({
                "tenant": tenant,
                "stats": stats,
                "queue_depth": host.queue_depth,
                "queue_capacity": host.queue_capacity,
                "busy_refusals": host.busy_refusals,
            }))
            .into_response(),
            Err(e) => host_error(e),
        };
    }
    match state.host.health().await {
        Ok(health) => axum::Json(health).into_response(),
        Err(e) => host_error(e),
    }
}

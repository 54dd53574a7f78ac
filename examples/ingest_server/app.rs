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
use edgestream::host::http::{self, RangeParams, Reply, SubscribeParams};
use edgestream::host::tokio::{Clock, Closed, HostError, HostHandle, Subscriber, SystemClock};
use edgestream::pipeline::Receipt;
use edgestream::pipeline::WireFormat;
use edgestream::time::Span;
use edgestream::window::QueryResult;
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

/// A host-independent [`Reply`] as an axum response.
fn reply(r: Reply) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(r.body)).into_response();
    if let Some(after) = r.retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(after));
    }
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    http::bearer(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

fn retry_after(span: Span) -> HeaderValue {
    HeaderValue::from(http::retry_after_secs(span))
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

/// 202 with the receipt (see [`http::receipt_reply`]).
fn receipt_response(receipt: Receipt) -> Response {
    reply(http::receipt_reply(&receipt))
}

fn host_error(e: HostError) -> Response {
    let message = e.to_string();
    match e {
        HostError::Busy { retry_after: after } => {
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, json!({"error": "queue_full", "message": message}));
            response.headers_mut().insert(header::RETRY_AFTER, retry_after(after));
            response
        }
        HostError::Ingest(e) => reply(http::ingest_error_reply(&e)),
        HostError::Subscribe(e) => reply(http::subscribe_error_reply(&e)),
        HostError::Closed => error(StatusCode::SERVICE_UNAVAILABLE, json!({"error": "shutting_down"})),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": "internal", "message": message})),
    }
}

fn auth_error(e: &AuthError) -> Response {
    reply(http::auth_error_reply(e))
}

/// Opens the subscription before any upgrade, so a refused token or an
/// unknown topic is an HTTP error, not a socket that closes at once.
async fn open(
    state: &AppState,
    params: &SubscribeParams,
    headers: &HeaderMap,
    json_only: bool,
) -> Result<Subscriber, Response> {
    let mut request = params.request(json_only).map_err(reply)?;
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

fn bad_query(message: String) -> Response {
    reply(Reply::bad_query(message))
}

/// The tenant a `/api/metrics` or `/api/export` query asks. With auth on,
/// the token's, which must grant reading: window results (`aggregates` on
/// the window operator) or, for raw events, `full` on the stream or on
/// `events`. Refusals are audited by the pipeline.
async fn range_tenant(params: &RangeParams, state: &AppState, headers: &HeaderMap) -> Result<String, Response> {
    let mut tenant = params.tenant.clone().unwrap_or_default();
    if state.auth {
        let Some(token) = params.token.as_deref().or_else(|| bearer(headers)) else {
            return Err(reply(Reply::missing_token()));
        };
        let (token, asked) = (token.to_owned(), tenant.clone());
        let raw = params.what.as_deref() == Some("events");
        let topic = if raw {
            params.stream_or_default()
        } else {
            params.window.clone().unwrap_or_else(|| state.metrics_window.to_string())
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

/// The rollup's answer to the query.
pub(crate) async fn rollup(params: &RangeParams, state: &AppState, tenant: String) -> Result<QueryResult, Response> {
    let (window, query) = params.rollup_query(tenant, &state.metrics_window, SystemClock.now()).map_err(reply)?;
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

/// `GET /api/metrics`: rollup series as JSON, for charts.
async fn metrics(State(state): State<AppState>, Query(params): Query<RangeParams>, headers: HeaderMap) -> Response {
    let tenant = match range_tenant(&params, &state, &headers).await {
        Ok(tenant) => tenant,
        Err(response) => return response,
    };
    match rollup(&params, &state, tenant).await {
        Ok(result) => axum::Json(result).into_response(),
        Err(response) => response,
    }
}

/// `GET /api/export`: window results or raw events in a range, as CSV or
/// Parquet, streamed.
async fn export(State(state): State<AppState>, Query(params): Query<RangeParams>, headers: HeaderMap) -> Response {
    match range_tenant(&params, &state, &headers).await {
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

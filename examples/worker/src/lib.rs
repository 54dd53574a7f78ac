//! A Cloudflare Worker on edgestream: the `fetch` entry authenticates and
//! routes each request to the Durable Object of its tenant (and room
//! shard); the object, `StreamRoomObject`, delegates everything to
//! `edgestream::host::workers::StreamRoom`.
//!
//! Routes (all behind a bearer token, or `?token=` for browsers'
//! WebSockets, when `EDGESTREAM_SECRET` is set):
//! - `POST /ingest` (JSON, NDJSON or Protobuf) → 202 with the receipt;
//! - `GET /ws?topic=&mode=&format=&credit=` → a WebSocket subscription;
//! - `GET /api/metrics?from=&to=&agg=` and `GET /api/health`;
//! - `GET /archive?prefix=` lists the tenant's archive files in R2 and
//!   `GET /archive/<key>` downloads one.
//!
//! `?room=` picks a shard of the tenant (default `main`).

use edgestream::auth::Mode;
use edgestream::host::workers::{RoomConfig, StreamRoom};
use edgestream::pipeline::{ArchiveConfig, ArchiveFormat, AuthConfig, KeyConfig};
use edgestream::sink::SinkConfig;
use edgestream::time::{Span, Timestamp};
use worker::{
    Context, Env, Error, Request, Response, Result, State, WebSocket, WebSocketIncomingMessage, durable_object, event,
};

const ROOM_YAML: &str = include_str!("../room.yaml");
const BUCKET: &str = "ARCHIVE";
const ROOMS: &str = "ROOMS";

/// The room's configuration: `ROOM_CONFIG` or the built-in one, plus the
/// archive and the signing key from the environment.
fn room_config(env: &Env) -> Result<RoomConfig> {
    let text = env.var("ROOM_CONFIG").map(|v| v.to_string()).ok().filter(|t| !t.trim().is_empty());
    let mut config =
        RoomConfig::from_yaml_str(text.as_deref().unwrap_or(ROOM_YAML)).map_err(|e| Error::RustError(e.to_string()))?;
    if config.pipeline.archive.is_none() {
        let mut sink = SinkConfig::default();
        sink.rollover.max_age = env
            .var("ARCHIVE_MAX_AGE")
            .ok()
            .and_then(|v| v.to_string().parse::<Span>().ok())
            .unwrap_or(Span::from_mins(5));
        // A Durable Object has 128 MB of memory.
        sink.max_buffered_bytes = 16 << 20;
        #[cfg(feature = "parquet")]
        let format = ArchiveFormat::Parquet { options: Default::default() };
        #[cfg(not(feature = "parquet"))]
        let format = ArchiveFormat::Csv;
        config.pipeline.archive = Some(ArchiveConfig::new(format, sink));
    }
    if let Some(keys) = signing_keys(env) {
        config.pipeline.auth = Some(keys);
    }
    Ok(config)
}

fn signing_keys(env: &Env) -> Option<AuthConfig> {
    let secret = env.secret("EDGESTREAM_SECRET").ok().map(|s| s.to_string()).filter(|s| !s.is_empty())?;
    Some(AuthConfig { keys: vec![KeyConfig { kid: "k1".into(), secret }], leeway: Span::from_secs(30) })
}

fn now() -> Timestamp {
    let ms = i64::try_from(worker::Date::now().as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_millis(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn json_error(status: u16, error: &str) -> Result<Response> {
    Ok(Response::from_json(&serde_json::json!({ "error": error }))?.with_status(status))
}

/// The token of the request: `Authorization: Bearer …` or `?token=`.
fn token(req: &Request) -> Option<String> {
    let header = req.headers().get("authorization").ok().flatten();
    if let Some(token) = header.as_deref().and_then(|h| h.strip_prefix("Bearer ")) {
        return Some(token.trim().to_owned());
    }
    req.url().ok()?.query_pairs().find(|(k, _)| k == "token").map(|(_, v)| v.into_owned())
}

fn query(req: &Request, name: &str) -> Option<String> {
    req.url().ok()?.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    // The tenant: the token's (checked here and again in the room), or
    // named when no secret is configured (local development).
    let claims = match signing_keys(&env) {
        Some(auth) => {
            let keys = auth.keys().map_err(|e| Error::RustError(e.to_string()))?;
            let Some(token) = token(&req) else { return json_error(401, "missing_token") };
            match keys.verify(&token, now()) {
                Ok(claims) => Some(claims),
                Err(e) => return json_error(401, e.kind()),
            }
        }
        None => None,
    };
    let tenant = match &claims {
        Some(claims) => claims.tenant.clone(),
        None => match query(&req, "tenant").or_else(|| req.headers().get("x-tenant").ok().flatten()) {
            Some(tenant) => tenant,
            None => return json_error(400, "missing_tenant"),
        },
    };
    let path = req.path();
    if let Some(rest) = path.strip_prefix("/archive") {
        // Raw events are readable with a grant of `full` on `events`.
        if let Some(claims) = &claims
            && !claims.allows("events", Mode::Full)
        {
            return json_error(403, "forbidden");
        }
        return archive(&env, &tenant, rest.trim_start_matches('/'), query(&req, "prefix")).await;
    }
    let room = query(&req, "room").unwrap_or_else(|| "main".into());
    let namespace = env.durable_object(ROOMS)?;
    // Length-prefixed, so no two (tenant, room) pairs share an object.
    let stub = namespace.id_from_name(&format!("{}:{tenant}/{room}", tenant.len()))?.get_stub()?;
    stub.fetch_with_request(req).await
}

/// Lists or downloads the tenant's archive files.
async fn archive(env: &Env, tenant: &str, key: &str, prefix: Option<String>) -> Result<Response> {
    let bucket = env.bucket(BUCKET)?;
    let own = format!("tenant={}/", edgestream::sink::partition_value(tenant));
    if key.is_empty() {
        let prefix = prefix.unwrap_or_default();
        if !prefix.is_empty() && !prefix.starts_with(&own) {
            return json_error(403, "forbidden");
        }
        let listed = bucket.list().prefix(if prefix.is_empty() { own } else { prefix }).execute().await?;
        let keys: Vec<String> = listed.objects().iter().map(|o| o.key()).collect();
        return Response::from_json(&keys);
    }
    if !key.starts_with(&own) {
        return json_error(403, "forbidden");
    }
    let Some(object) = bucket.get(key).execute().await? else { return json_error(404, "not_found") };
    let Some(body) = object.body() else { return json_error(404, "not_found") };
    Response::from_bytes(body.bytes().await?)
}

/// One stream room per tenant and shard.
#[durable_object]
pub struct StreamRoomObject {
    /// The room, or why its configuration was refused: then every event
    /// fails (and is logged) rather than run a room that would overwrite
    /// the stored one with another configuration.
    room: std::result::Result<StreamRoom, String>,
}

impl StreamRoomObject {
    fn room(&self) -> Result<&StreamRoom> {
        self.room.as_ref().map_err(|e| Error::RustError(format!("room config: {e}")))
    }
}

impl worker::DurableObject for StreamRoomObject {
    fn new(state: State, env: Env) -> Self {
        let room = room_config(&env).map(|config| StreamRoom::new(state, env, config, BUCKET)).map_err(|e| {
            worker::console_error!("room config: {e}");
            e.to_string()
        });
        StreamRoomObject { room }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        self.room()?.fetch(req).await
    }

    async fn alarm(&self) -> Result<Response> {
        self.room()?.alarm().await
    }

    async fn websocket_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<()> {
        self.room()?.websocket_message(ws, message).await
    }

    async fn websocket_close(&self, ws: WebSocket, code: usize, reason: String, was_clean: bool) -> Result<()> {
        self.room()?.websocket_close(ws, code, reason, was_clean).await
    }

    async fn websocket_error(&self, ws: WebSocket, error: Error) -> Result<()> {
        self.room()?.websocket_error(ws, error).await
    }
}

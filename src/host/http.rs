//! The HTTP face every host shares: status codes and JSON bodies for
//! receipts and errors, and the query parameters of the subscribe,
//! metrics and health routes. Runtime-agnostic: a host maps a [`Reply`]
//! onto its own response type (axum, workers-rs).

use serde::Deserialize;
use serde_json::json;

use crate::auth::{AuthError, Mode};
use crate::event::DecodeError;
use crate::pipeline::{IngestError, Receipt, SubscribeError, Subscription};
use crate::time::{Span, Timestamp};
use crate::window::Query;

/// A response: status, optional `Retry-After` (whole seconds) and a JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After`, in whole seconds.
    pub retry_after: Option<u64>,
    /// The JSON body.
    pub body: serde_json::Value,
}

impl Reply {
    /// `status` with `body`.
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply { status, retry_after: None, body }
    }

    /// `400 bad_query` with `message`.
    pub fn bad_query(message: impl Into<String>) -> Reply {
        Reply::json(400, json!({"error": "bad_query", "message": message.into()}))
    }

    /// `401 missing_token`.
    pub fn missing_token() -> Reply {
        Reply::json(401, json!({"error": "missing_token"}))
    }

    /// The body as bytes.
    pub fn body_bytes(&self) -> Vec<u8> {
        self.body.to_string().into_bytes()
    }
}

/// `Retry-After` for `span`: whole seconds, rounded up, at least one.
pub fn retry_after_secs(span: Span) -> u64 {
    (span.as_millis().max(1).unsigned_abs()).div_ceil(1000)
}

/// The token of an `Authorization: Bearer …` header value.
pub fn bearer(authorization: &str) -> Option<&str> {
    authorization.strip_prefix("Bearer ").map(str::trim)
}

/// 202 with the receipt; 429 with `Retry-After` when the rate limit
/// refused the body's events: the limit takes a body whole or not at all
/// (duplicates in a refused body are not remembered either), so a client
/// that retries the whole body counts nothing twice.
pub fn receipt_reply(receipt: &Receipt) -> Reply {
    let status = if receipt.rate_limited > 0 && receipt.accepted == 0 { 429 } else { 202 };
    let retry_after = receipt.retry_after.filter(|_| receipt.rate_limited > 0).map(retry_after_secs);
    let body = serde_json::to_value(receipt).unwrap_or_else(|_| json!({}));
    Reply { status, retry_after, body }
}

/// A refused body: 400 with the typed decode error (413 too large, 415
/// unsupported content type), 401/403 for a token, 503 when the pipeline
/// holds its maximum of tenants.
pub fn ingest_error_reply(e: &IngestError) -> Reply {
    let message = e.to_string();
    match e {
        IngestError::Decode(decode) => {
            let status = match decode {
                DecodeError::TooLarge { .. } => 413,
                DecodeError::UnsupportedContentType { .. } => 415,
                _ => 400,
            };
            let mut body = serde_json::to_value(decode).unwrap_or_else(|_| json!({}));
            if let Some(fields) = body.as_object_mut() {
                fields.insert("message".into(), json!(message));
            }
            Reply::json(status, body)
        }
        IngestError::Auth(auth) => auth_error_reply(auth),
        IngestError::EmptyTenant => Reply::json(400, json!({"error": "empty_tenant", "message": message})),
        IngestError::TooManyTenants { .. } => {
            Reply::json(503, json!({"error": "too_many_tenants", "message": message}))
        }
    }
}

/// 403 for a token that does not grant what was asked, 401 otherwise.
pub fn auth_error_reply(e: &AuthError) -> Reply {
    let status = if matches!(e, AuthError::Forbidden { .. }) { 403 } else { 401 };
    Reply::json(status, json!({"error": e.kind(), "message": e.to_string()}))
}

/// A refused subscription: 401/403 token, 404 unknown topic, 503 caps.
pub fn subscribe_error_reply(e: &SubscribeError) -> Reply {
    let message = e.to_string();
    match e {
        SubscribeError::Auth(auth) => auth_error_reply(auth),
        SubscribeError::UnknownTopic { .. } => Reply::json(404, json!({"error": "unknown_topic", "message": message})),
        SubscribeError::TooMany { .. } => {
            Reply::json(503, json!({"error": "too_many_subscribers", "message": message}))
        }
        SubscribeError::TooManyTenants => Reply::json(503, json!({"error": "too_many_tenants", "message": message})),
        _ => Reply::json(500, json!({"error": "internal", "message": message})),
    }
}

/// Query parameters from `(name, value)` pairs (already percent-decoded);
/// for a repeated name, the first value wins.
pub fn params_from_pairs<T: for<'de> Deserialize<'de>>(
    pairs: impl IntoIterator<Item = (String, String)>,
) -> Result<T, Reply> {
    let mut map = serde_json::Map::new();
    for (name, value) in pairs {
        map.entry(name).or_insert(serde_json::Value::String(value));
    }
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| Reply::bad_query(e.to_string()))
}

/// The query of a WebSocket or SSE subscription.
#[derive(Clone, Debug, Default, Deserialize)]
#[non_exhaustive]
pub struct SubscribeParams {
    /// The tenant (with auth on, the token's when absent).
    pub tenant: Option<String>,
    /// The topic (default `metrics`); `stream` is accepted as a synonym.
    pub topic: Option<String>,
    /// Synonym of `topic`.
    pub stream: Option<String>,
    /// `deltas` (default), `aggregates` or `full`.
    pub mode: Option<String>,
    /// `proto` (default) or `json`.
    pub format: Option<String>,
    /// The token, for clients that cannot set headers (browsers' WebSocket).
    pub token: Option<String>,
    /// `label=value` filters, comma-separated.
    pub filter: Option<String>,
    /// Flow control: the most frames sent and not yet acknowledged by the
    /// client (`{"type":"ack","frames":N}`); absent: no flow control.
    pub credit: Option<String>,
}

impl SubscribeParams {
    /// The subscription asked for; JSON frames when `json_only` (SSE).
    pub fn request(&self, json_only: bool) -> Result<Subscription, Reply> {
        let tenant = self.tenant.clone().unwrap_or_default();
        let topic = self.topic.clone().or_else(|| self.stream.clone()).unwrap_or_else(|| "metrics".into());
        let mode = match self.mode.as_deref().unwrap_or("deltas") {
            "deltas" => Mode::Deltas,
            "aggregates" => Mode::Aggregates,
            "full" => Mode::Full,
            other => return Err(Reply::bad_query(format!("mode {other:?}: expected deltas, aggregates or full"))),
        };
        let mut request = Subscription::new(tenant, topic, mode);
        match (self.format.as_deref(), json_only) {
            (_, true) | (Some("json"), _) => request = request.json(),
            (None | Some("proto"), false) => {}
            (Some(other), false) => return Err(Reply::bad_query(format!("format {other:?}: expected proto or json"))),
        }
        for pair in self.filter.iter().flat_map(|f| f.split(',')).filter(|p| !p.is_empty()) {
            let Some((label, value)) = pair.split_once('=') else {
                return Err(Reply::bad_query(format!("filter {pair:?}: expected label=value")));
            };
            request = request.filter(label, value);
        }
        Ok(request)
    }

    /// The flow-control credit asked for (`credit=N`, N ≥ 1).
    pub fn credit(&self) -> Result<Option<u32>, Reply> {
        match self.credit.as_deref() {
            None | Some("") => Ok(None),
            Some(text) => match text.parse::<u32>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(Reply::bad_query(format!("credit {text:?}: expected a whole number of frames, at least 1"))),
            },
        }
    }
}

/// The query of `/api/metrics` (and of exports over a time range).
#[derive(Clone, Debug, Default, Deserialize)]
#[non_exhaustive]
pub struct RangeParams {
    /// The tenant (with auth on, the token's when absent).
    pub tenant: Option<String>,
    /// The stream (default `http`).
    pub stream: Option<String>,
    /// The window operator whose rollup is read (default: the host's).
    pub window: Option<String>,
    /// RFC 3339 or milliseconds since the epoch; default one hour before `to`.
    pub from: Option<String>,
    /// Default now.
    pub to: Option<String>,
    /// `second`, `minute`, `hour`, `day`, or any span (`5m`); default the
    /// finest tier that covers the range.
    pub agg: Option<String>,
    /// Labels to keep, comma-separated; the others are merged.
    pub group_by: Option<String>,
    /// Fields to return, comma-separated (default all).
    pub fields: Option<String>,
    /// Quantiles to compute, comma-separated (`0.5,0.99`).
    pub quantiles: Option<String>,
    /// Exports: `csv` (default) or `parquet`.
    pub format: Option<String>,
    /// Exports: `results` (default, from the rollup) or `events` (raw).
    pub what: Option<String>,
    /// The token, for clients that cannot set headers.
    pub token: Option<String>,
}

/// A time as RFC 3339 or milliseconds since the epoch.
pub fn parse_time(text: &str) -> Option<Timestamp> {
    match text.parse::<i64>() {
        Ok(ms) => Timestamp::from_millis(ms),
        Err(_) => Timestamp::parse_rfc3339(text).ok(),
    }
}

/// Comma-separated items, empty ones left out.
pub fn list(text: Option<&str>) -> Vec<String> {
    text.iter().flat_map(|t| t.split(',')).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

impl RangeParams {
    /// The stream asked (default `http`).
    pub fn stream_or_default(&self) -> String {
        self.stream.clone().unwrap_or_else(|| "http".into())
    }

    /// `[from, to)`; `to` defaults to `now`, `from` to an hour before `to`.
    pub fn range(&self, now: Timestamp) -> Result<(Timestamp, Timestamp), Reply> {
        let to = match self.to.as_deref().map(parse_time) {
            Some(Some(t)) => t,
            Some(None) => return Err(Reply::bad_query("to: expected RFC 3339 or milliseconds")),
            None => now,
        };
        let from = match self.from.as_deref().map(parse_time) {
            Some(Some(t)) => t,
            Some(None) => return Err(Reply::bad_query("from: expected RFC 3339 or milliseconds")),
            None => to.saturating_sub(Span::from_hours(1)),
        };
        Ok((from, to))
    }

    /// The window operator (`default_window` unless named) and the rollup
    /// query for `tenant`.
    pub fn rollup_query(&self, tenant: String, default_window: &str, now: Timestamp) -> Result<(String, Query), Reply> {
        let (from, to) = self.range(now)?;
        let resolution = match self.agg.as_deref() {
            None | Some("" | "auto") => None,
            Some("second") => Some(Span::from_secs(1)),
            Some("minute") => Some(Span::from_mins(1)),
            Some("hour") => Some(Span::from_hours(1)),
            Some("day") => Some(Span::from_days(1)),
            Some(other) => Some(other.parse::<Span>().map_err(|e| Reply::bad_query(format!("agg: {e}")))?),
        };
        let mut query = Query::new(tenant, self.stream_or_default(), from, to);
        query.resolution = resolution;
        if self.group_by.is_some() {
            query.group_by = Some(list(self.group_by.as_deref()));
        }
        query.fields = list(self.fields.as_deref());
        for q in list(self.quantiles.as_deref()) {
            let parsed = q.parse::<f64>().map_err(|_| Reply::bad_query(format!("quantiles: {q:?} is not a number")))?;
            query.quantiles.push(parsed);
        }
        let window = self.window.clone().unwrap_or_else(|| default_window.to_owned());
        Ok((window, query))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Span::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Span::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Span::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Span::ZERO), 1);
    }

    #[test]
    fn params_come_from_pairs_and_unknown_names_are_ignored() {
        let pairs = [("topic", "alerts"), ("mode", "full"), ("format", "json"), ("x", "y"), ("topic", "later")];
        let params: SubscribeParams =
            params_from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
        let request = params.request(false).unwrap();
        assert_eq!(request.topic, "alerts");
        assert_eq!(request.mode, Mode::Full);
        let bad = SubscribeParams { mode: Some("all".into()), ..SubscribeParams::default() };
        assert_eq!(bad.request(false).unwrap_err().status, 400);
        let credit = SubscribeParams { credit: Some("0".into()), ..SubscribeParams::default() };
        assert_eq!(credit.credit().unwrap_err().status, 400);
    }

    #[test]
    fn a_range_defaults_to_the_last_hour() {
        let now = Timestamp::from_secs(10_000).unwrap();
        let (from, to) = RangeParams::default().range(now).unwrap();
        assert_eq!((from, to), (now.saturating_sub(Span::from_hours(1)), now));
        let bad = RangeParams { from: Some("yesterday".into()), ..RangeParams::default() };
        assert_eq!(bad.range(now).unwrap_err().status, 400);
    }
}

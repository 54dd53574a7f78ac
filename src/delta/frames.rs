//! The payloads of the frames that are not tile boards: window results,
//! raw events, and (as [`AlertEvent`]) alert state changes; and their
//! Protobuf and JSON forms.

use std::sync::Arc;

use serde::de::value::{Error as ValueError, StrDeserializer};
use serde::{Deserialize, Serialize};

use super::board::FrameError;
use crate::alert::{AlertEvent, AlertState, Fingerprint, Severity};
use crate::event::{EventBatch, Format, Limits};
use crate::proto;
use crate::time::Timestamp;
use crate::window::WindowResult;

/// Window results of one topic, for an `aggregates` subscriber.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsFrame {
    /// The topic.
    pub topic: Arc<str>,
    /// The results.
    pub results: Vec<ResultRow>,
}

/// One window result as plain numbers (no sketch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultRow {
    /// The window operator's name.
    pub window: String,
    /// The stream.
    pub stream: String,
    /// Window start.
    pub start: Timestamp,
    /// Window end.
    pub end: Timestamp,
    /// Group labels.
    pub labels: Vec<(String, String)>,
    /// Events in the window.
    pub events: u64,
    /// Weighted count.
    pub count: f64,
    /// Per field.
    pub fields: Vec<FieldRow>,
    /// Revision (0 for the first emission).
    pub revision: u32,
    /// Whether this is the final result (not a partial update).
    pub is_final: bool,
}

/// The aggregates of one field in one window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRow {
    /// The field.
    pub field: String,
    /// Weighted count.
    pub count: f64,
    /// Weighted sum, if the window keeps it ([`FieldSpec::aggregates`](crate::window::FieldSpec::aggregates)).
    pub sum: Option<f64>,
    /// Minimum, if kept and any value.
    pub min: Option<f64>,
    /// Maximum, if kept and any value.
    pub max: Option<f64>,
    /// Weighted mean, if kept and any value.
    pub mean: Option<f64>,
    /// Latest value by event time, if kept and any.
    pub last: Option<f64>,
    /// The requested quantiles as `(q, value)`.
    pub quantiles: Vec<(f64, f64)>,
}

impl ResultRow {
    /// The row of `result`, from window operator `window`.
    pub fn new(window: &str, result: &WindowResult) -> ResultRow {
        ResultRow {
            window: window.to_owned(),
            stream: result.group.stream.to_string(),
            start: result.start,
            end: result.end,
            labels: result.group.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            events: result.events,
            count: result.count,
            fields: result
                .fields
                .iter()
                .map(|f| FieldRow {
                    field: f.field.to_string(),
                    count: f.scalar.count(),
                    sum: f.scalar.sum(),
                    min: f.scalar.min(),
                    max: f.scalar.max(),
                    mean: f.scalar.mean(),
                    last: f.scalar.last().map(|(_, v)| v),
                    quantiles: f.quantiles.clone(),
                })
                .collect(),
            revision: result.revision,
            is_final: result.is_final,
        }
    }

    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The aggregates of field `name`.
    pub fn field(&self, name: &str) -> Option<&FieldRow> {
        self.fields.iter().find(|f| f.field == name)
    }
}

/// Raw events of one topic, for a `full` subscriber, each with its sample
/// weight.
#[derive(Clone, Debug, PartialEq)]
pub struct EventsFrame {
    /// The topic.
    pub topic: Arc<str>,
    /// The events.
    pub events: EventBatch,
    /// One weight per event.
    pub weights: Vec<f64>,
}

/// Limits for reading the events of a frame: generous, since frames come
/// from a server, yet bounded.
fn frame_limits() -> Limits {
    Limits { max_batch_bytes: 64 * 1024 * 1024, max_events_per_batch: 1_000_000, ..Limits::default() }
}

fn labels(pairs: &[(String, String)]) -> Vec<proto::Label> {
    pairs.iter().map(|(name, value)| proto::Label { name: name.clone(), value: value.clone() }).collect()
}

fn pairs(labels: Vec<proto::Label>) -> Vec<(String, String)> {
    labels.into_iter().map(|l| (l.name, l.value)).collect()
}

fn nanos(ts: Timestamp) -> i64 {
    ts.as_nanos()
}

/// A unit-only enum from its snake_case name.
fn named<'de, T: Deserialize<'de>>(what: &str, name: &'de str) -> Result<T, FrameError> {
    T::deserialize(StrDeserializer::<ValueError>::new(name))
        .map_err(|_| FrameError::Protobuf(format!("unknown {what} {name:?}")))
}

pub(super) fn alert_to_proto(a: &AlertEvent) -> proto::AlertFrame {
    proto::AlertFrame {
        rule: a.rule.to_string(),
        tenant: a.tenant.to_string(),
        labels: labels(&a.labels),
        state: a.state.as_str().to_owned(),
        previous: a.previous.as_str().to_owned(),
        severity: a.severity.as_str().to_owned(),
        value: a.value,
        at_unix_nanos: nanos(a.at),
        since_unix_nanos: nanos(a.since),
        fingerprint: a.fingerprint.0,
        cells: a.cells.clone(),
        annotations: labels(&a.annotations),
    }
}

pub(super) fn alert_from_proto(p: proto::AlertFrame) -> Result<AlertEvent, FrameError> {
    let state: AlertState = named("state", &p.state)?;
    let previous: AlertState = named("state", &p.previous)?;
    let severity: Severity = named("severity", &p.severity)?;
    if p.value.is_some_and(|v| !v.is_finite()) {
        return Err(FrameError::NonFinite { key: p.rule, field: "value".into() });
    }
    Ok(AlertEvent {
        rule: p.rule.into(),
        tenant: p.tenant.into(),
        labels: pairs(p.labels),
        state,
        previous,
        severity,
        value: p.value,
        at: Timestamp::from_nanos(p.at_unix_nanos),
        since: Timestamp::from_nanos(p.since_unix_nanos),
        fingerprint: Fingerprint(p.fingerprint),
        cells: p.cells,
        annotations: pairs(p.annotations),
    })
}

pub(super) fn results_to_proto(f: &ResultsFrame) -> proto::ResultsFrame {
    proto::ResultsFrame {
        topic: f.topic.to_string(),
        results: f
            .results
            .iter()
            .map(|r| proto::WindowResultRow {
                window: r.window.clone(),
                stream: r.stream.clone(),
                start_unix_nanos: nanos(r.start),
                end_unix_nanos: nanos(r.end),
                labels: labels(&r.labels),
                events: r.events,
                count: r.count,
                fields: r
                    .fields
                    .iter()
                    .map(|f| proto::FieldAggregates {
                        field: f.field.clone(),
                        count: f.count,
                        sum: f.sum,
                        min: f.min,
                        max: f.max,
                        mean: f.mean,
                        last: f.last,
                        quantiles: f.quantiles.iter().map(|&(q, value)| proto::Quantile { q, value }).collect(),
                    })
                    .collect(),
                revision: r.revision,
                is_final: r.is_final,
            })
            .collect(),
    }
}

pub(super) fn results_from_proto(p: proto::ResultsFrame) -> Result<ResultsFrame, FrameError> {
    let results = p
        .results
        .into_iter()
        .map(|r| ResultRow {
            window: r.window,
            stream: r.stream,
            start: Timestamp::from_nanos(r.start_unix_nanos),
            end: Timestamp::from_nanos(r.end_unix_nanos),
            labels: pairs(r.labels),
            events: r.events,
            count: r.count,
            fields: r
                .fields
                .into_iter()
                .map(|f| FieldRow {
                    field: f.field,
                    count: f.count,
                    sum: f.sum,
                    min: f.min,
                    max: f.max,
                    mean: f.mean,
                    last: f.last,
                    quantiles: f.quantiles.into_iter().map(|q| (q.q, q.value)).collect(),
                })
                .collect(),
            revision: r.revision,
            is_final: r.is_final,
        })
        .collect();
    check_results(ResultsFrame { topic: p.topic.into(), results })
}

/// Refuses non-finite numbers, as every frame reader does.
pub(super) fn check_results(frame: ResultsFrame) -> Result<ResultsFrame, FrameError> {
    for r in &frame.results {
        let bad = |field: &str| FrameError::NonFinite { key: r.window.clone(), field: field.to_owned() };
        if !r.count.is_finite() {
            return Err(bad("count"));
        }
        for f in &r.fields {
            let numbers = [Some(f.count), f.sum, f.min, f.max, f.mean, f.last];
            let quantiles = f.quantiles.iter().flat_map(|&(q, v)| [Some(q), Some(v)]);
            if numbers.into_iter().chain(quantiles).flatten().any(|v| !v.is_finite()) {
                return Err(bad(&f.field));
            }
        }
    }
    Ok(frame)
}

pub(super) fn events_to_proto(f: &EventsFrame) -> proto::EventsFrame {
    proto::EventsFrame {
        topic: f.topic.to_string(),
        batch: Some(proto::EventBatch::from(&f.events)),
        weights: f.weights.clone(),
    }
}

pub(super) fn events_from_proto(p: proto::EventsFrame) -> Result<EventsFrame, FrameError> {
    let batch = p.batch.unwrap_or_default();
    let events = EventBatch::try_from(batch).map_err(|e| FrameError::Protobuf(e.to_string()))?;
    check_events(EventsFrame { topic: p.topic.into(), events, weights: p.weights })
}

/// One finite, positive weight per event.
fn check_events(frame: EventsFrame) -> Result<EventsFrame, FrameError> {
    if frame.weights.len() != frame.events.len() {
        return Err(FrameError::Protobuf(format!("{} events but {} weights", frame.events.len(), frame.weights.len())));
    }
    if frame.weights.iter().any(|w| !(w.is_finite() && *w > 0.0)) {
        return Err(FrameError::NonFinite { key: frame.topic.to_string(), field: "weight".into() });
    }
    Ok(frame)
}

/// The JSON form of an events frame: `{"v":1,"kind":"events","topic":…,
/// "events":[…],"weights":[…]}`, the events as the JSON array codec
/// writes them.
pub(super) fn events_to_json(version: u32, f: &EventsFrame) -> String {
    let mut events = Vec::new();
    crate::event::json::encode(&f.events, &mut events);
    let topic = serde_json::to_string(&*f.topic).unwrap_or_default();
    let weights = serde_json::to_string(&f.weights).unwrap_or_default();
    format!(
        r#"{{"v":{version},"kind":"events","topic":{topic},"events":{},"weights":{weights}}}"#,
        String::from_utf8_lossy(&events)
    )
}

/// An events frame as JSON, read strictly.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsJson {
    pub(super) v: u32,
    #[allow(dead_code, reason = "checked by the caller before this is read")]
    kind: String,
    topic: String,
    events: Box<serde_json::value::RawValue>,
    weights: Vec<f64>,
}

impl EventsJson {
    pub(super) fn into_frame(self) -> Result<EventsFrame, FrameError> {
        let mut batch = EventBatch::new();
        let body = bytes::Bytes::copy_from_slice(self.events.get().trim().as_bytes());
        if body.as_ref() != b"[]" {
            Format::Json
                .decode_into(&body, &frame_limits(), &mut batch)
                .map_err(|e| FrameError::Json(e.to_string()))?;
        }
        check_events(EventsFrame { topic: self.topic.into(), events: batch, weights: self.weights })
    }
}

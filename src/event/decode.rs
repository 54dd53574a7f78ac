//! Choosing a codec from a content type, and the errors decoders report.

use core::fmt;

use bytes::Bytes;

use super::{EventBatch, Limits, json, protobuf};
use crate::time::TimeError;

/// A wire format for event batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Format {
    /// One JSON event object, or a JSON array of them (`application/json`).
    Json,
    /// Newline-delimited JSON, one event object per line (`application/x-ndjson`).
    Ndjson,
    /// A Protobuf `edgestream.v1.EventBatch` message (`application/x-protobuf`).
    Protobuf,
}

impl Format {
    /// The format for an HTTP `Content-Type` value. Parameters such as
    /// `; charset=utf-8` are ignored, and so is case.
    ///
    /// | format | accepted content types |
    /// | --- | --- |
    /// | [`Format::Json`] | `application/json`, `text/json` |
    /// | [`Format::Ndjson`] | `application/x-ndjson`, `application/ndjson`, `application/jsonl`, `application/x-jsonlines`, `application/jsonlines` |
    /// | [`Format::Protobuf`] | `application/x-protobuf`, `application/protobuf`, `application/vnd.google.protobuf`, `application/octet-stream` |
    pub fn from_content_type(content_type: &str) -> Result<Format, DecodeError> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        let is = |name: &str| essence.eq_ignore_ascii_case(name);
        if is("application/json") || is("text/json") {
            Ok(Format::Json)
        } else if [
            "application/x-ndjson",
            "application/ndjson",
            "application/jsonl",
            "application/x-jsonlines",
            "application/jsonlines",
        ]
        .iter()
        .any(|n| is(n))
        {
            Ok(Format::Ndjson)
        } else if [
            "application/x-protobuf",
            "application/protobuf",
            "application/vnd.google.protobuf",
            "application/octet-stream",
        ]
        .iter()
        .any(|n| is(n))
        {
            Ok(Format::Protobuf)
        } else {
            Err(DecodeError::UnsupportedContentType { content_type: truncated(content_type, 100) })
        }
    }

    /// The canonical content type of this format.
    pub const fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Protobuf => "application/x-protobuf",
        }
    }

    /// Decodes `body` into `batch`, replacing its contents and reusing its
    /// allocations. On error `batch` is left empty.
    ///
    /// Fails fast, before reading, on an empty body or one larger than
    /// [`Limits::max_batch_bytes`]; stops with
    /// [`DecodeError::TooManyEvents`] as soon as the body holds more than
    /// [`Limits::max_events_per_batch`] events.
    pub fn decode_into(self, body: &Bytes, limits: &Limits, batch: &mut EventBatch) -> Result<(), DecodeError> {
        batch.clear();
        if body.is_empty() {
            return Err(DecodeError::EmptyBody);
        }
        if body.len() > limits.max_batch_bytes {
            return Err(DecodeError::TooLarge { len: body.len(), max: limits.max_batch_bytes });
        }
        let result = match self {
            Format::Json => json::decode_into(body, limits.max_events_per_batch, batch),
            Format::Ndjson => json::decode_ndjson_into(body, limits.max_events_per_batch, batch),
            Format::Protobuf => protobuf::decode_into(body, limits.max_events_per_batch, batch),
        };
        if result.is_err() {
            batch.clear();
        }
        result
    }

    /// Appends the encoding of `batch` in this format to `out`.
    pub fn encode(self, batch: &EventBatch, out: &mut Vec<u8>) {
        match self {
            Format::Json => json::encode(batch, out),
            Format::Ndjson => json::encode_ndjson(batch, out),
            Format::Protobuf => protobuf::encode(batch, out),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.content_type())
    }
}

/// Decodes a body whose format is given by an HTTP content type: the entry
/// point for an ingest endpoint. See [`Format::from_content_type`] for the
/// accepted types and [`Format::decode_into`] to reuse a batch.
///
/// `body` is anything that converts into [`Bytes`] without copying (`Vec<u8>`,
/// `String`, `&'static str`, `Bytes`); for borrowed data use
/// `Bytes::copy_from_slice`. Payloads in the result are zero-copy slices of it.
///
/// ```
/// use edgestream::event::{decode, DecodeError, Limits};
///
/// let body = r#"{"tenant":"acme","stream":"metrics","ts":1795838400000,"fields":{"temp_c":21.5}}
/// {"tenant":"acme","stream":"metrics","ts":"2026-11-28T04:00:01Z","dims":{"region":"eu"}}"#;
/// let batch = decode("application/x-ndjson", body, &Limits::default())?;
/// assert_eq!(batch.len(), 2);
/// assert_eq!(batch.get(1).unwrap().dim("region"), Some("eu"));
///
/// let err = decode("text/csv", "a,b", &Limits::default()).unwrap_err();
/// assert!(matches!(err, DecodeError::UnsupportedContentType { .. }));
/// # Ok::<(), DecodeError>(())
/// ```
pub fn decode(content_type: &str, body: impl Into<Bytes>, limits: &Limits) -> Result<EventBatch, DecodeError> {
    let format = Format::from_content_type(content_type)?;
    let mut batch = EventBatch::new();
    format.decode_into(&body.into(), limits, &mut batch)?;
    Ok(batch)
}

/// Why a body could not be decoded into a batch. Nothing of the body is
/// kept: a malformed body is rejected whole, and says where it went wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(tag = "error", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DecodeError {
    /// The content type names no supported format; send one of those
    /// listed in [`Format::from_content_type`].
    #[error(
        "unsupported content type {content_type:?}: expected application/json, application/x-ndjson or application/x-protobuf"
    )]
    UnsupportedContentType {
        /// The content type received (at most 100 bytes of it).
        content_type: String,
    },
    /// The body is empty (zero bytes, or an NDJSON body of blank lines);
    /// send at least one event. A JSON `[]` is a valid, empty batch.
    #[error("the body is empty")]
    EmptyBody,
    /// The body is larger than [`Limits::max_batch_bytes`]; split it.
    #[error("the body is {len} bytes, over the limit of {max}")]
    TooLarge {
        /// Body length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body holds more than [`Limits::max_events_per_batch`] events;
    /// split it.
    #[error("the body holds more than {max} events")]
    TooManyEvents {
        /// The limit.
        max: usize,
    },
    /// The JSON or NDJSON body is malformed at the given place.
    #[error("malformed JSON at line {line}, column {column} (event {event}): {kind}")]
    Json {
        /// Line of the body, from 1.
        line: usize,
        /// Column (byte) in that line, from 1.
        column: usize,
        /// Index of the event being read, from 0.
        event: usize,
        /// What is wrong.
        kind: JsonErrorKind,
    },
    /// The Protobuf body is malformed at the given place.
    #[error("malformed Protobuf at byte {offset} (event {event}): {kind}")]
    Protobuf {
        /// Byte offset in the body where the bad element starts.
        offset: usize,
        /// Index of the event being read, from 0.
        event: usize,
        /// What is wrong.
        kind: ProtoErrorKind,
    },
}

impl DecodeError {
    /// The kind of this error, without its details: the key the stats count
    /// malformed bodies by.
    pub fn kind(&self) -> DecodeErrorKind {
        match self {
            DecodeError::UnsupportedContentType { .. } => DecodeErrorKind::UnsupportedContentType,
            DecodeError::EmptyBody => DecodeErrorKind::EmptyBody,
            DecodeError::TooLarge { .. } => DecodeErrorKind::TooLarge,
            DecodeError::TooManyEvents { .. } => DecodeErrorKind::TooManyEvents,
            DecodeError::Json { .. } => DecodeErrorKind::Json,
            DecodeError::Protobuf { .. } => DecodeErrorKind::Protobuf,
        }
    }
}

/// The kind of a [`DecodeError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// [`DecodeError::UnsupportedContentType`].
    UnsupportedContentType,
    /// [`DecodeError::EmptyBody`].
    EmptyBody,
    /// [`DecodeError::TooLarge`].
    TooLarge,
    /// [`DecodeError::TooManyEvents`].
    TooManyEvents,
    /// [`DecodeError::Json`].
    Json,
    /// [`DecodeError::Protobuf`].
    Protobuf,
}

impl crate::stats::CountKey for DecodeErrorKind {
    const ALL: &'static [Self] = &[
        DecodeErrorKind::UnsupportedContentType,
        DecodeErrorKind::EmptyBody,
        DecodeErrorKind::TooLarge,
        DecodeErrorKind::TooManyEvents,
        DecodeErrorKind::Json,
        DecodeErrorKind::Protobuf,
    ];
    fn index(self) -> usize {
        self as usize
    }
    fn name(self) -> &'static str {
        match self {
            DecodeErrorKind::UnsupportedContentType => "unsupported_content_type",
            DecodeErrorKind::EmptyBody => "empty_body",
            DecodeErrorKind::TooLarge => "too_large",
            DecodeErrorKind::TooManyEvents => "too_many_events",
            DecodeErrorKind::Json => "json",
            DecodeErrorKind::Protobuf => "protobuf",
        }
    }
}

/// What is wrong in a malformed JSON body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JsonErrorKind {
    /// Not JSON at all here (as described by the JSON parser); this includes
    /// a body cut short. (A `payload` is kept verbatim and may nest deeper
    /// than the parser's 128 levels elsewhere.)
    #[error("{0}")]
    Syntax(String),
    /// The value is not an event object (nor, at the top level of
    /// `application/json`, an array of them).
    #[error("expected an event object")]
    NotAnEvent,
    /// A required key is missing from an event.
    #[error("missing required key `{0}`")]
    MissingField(&'static str),
    /// A key that the event format does not define; see the README for the
    /// keys and their spelling.
    #[error("unknown key {0:?}")]
    UnknownField(String),
    /// A key appears twice in one object, or both `id` and `id_bytes` (or
    /// `payload` and `payload_bytes`) are given and not null.
    #[error("key `{0}` appears more than once")]
    DuplicateField(&'static str),
    /// A key has a value of the wrong type.
    #[error("`{field}` must be {expected}")]
    InvalidValue {
        /// The key.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// `ts` is neither integer milliseconds in range nor RFC 3339 text.
    #[error("invalid `ts`: {0}")]
    InvalidTimestamp(TimeError),
    /// A `*_bytes` value is not standard base64.
    #[error("`{0}` is not valid base64")]
    InvalidBase64(&'static str),
}

/// What is wrong in a malformed Protobuf body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProtoErrorKind {
    /// The body ends inside a value or a length-delimited field runs past
    /// its enclosing message.
    #[error("truncated message")]
    Truncated,
    /// A varint is longer than 10 bytes or overflows 64 bits.
    #[error("invalid varint")]
    InvalidVarint,
    /// A tag has field number 0 or above 2^29 - 1.
    #[error("invalid field number")]
    InvalidFieldNumber,
    /// A wire type that does not exist (6 or 7), or an end-group tag with
    /// no matching start.
    #[error("invalid wire type {0}")]
    InvalidWireType(u8),
    /// A known field arrived with the wrong wire type: the sender's schema
    /// does not match `proto/edgestream.proto`.
    #[error("field `{field}` has wire type {wire_type}, which its declared type does not allow")]
    WrongWireType {
        /// The field's name in the schema.
        field: &'static str,
        /// The wire type received.
        wire_type: u8,
    },
    /// A `string` field is not valid UTF-8.
    #[error("field `{0}` is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// An event has no `ts_unix_nanos`.
    #[error("event has no `ts_unix_nanos`")]
    MissingTimestamp,
    /// Unknown groups nested deeper than 100 levels.
    #[error("nesting too deep")]
    TooDeep,
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(crate) fn truncated(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(Format::from_content_type("application/json"), Ok(Format::Json));
        assert_eq!(Format::from_content_type("Application/JSON; charset=utf-8"), Ok(Format::Json));
        assert_eq!(Format::from_content_type(" application/x-ndjson "), Ok(Format::Ndjson));
        assert_eq!(Format::from_content_type("application/x-protobuf"), Ok(Format::Protobuf));
        for f in [Format::Json, Format::Ndjson, Format::Protobuf] {
            assert_eq!(Format::from_content_type(f.content_type()), Ok(f));
        }
        let long = "x".repeat(10_000);
        match Format::from_content_type(&long) {
            Err(DecodeError::UnsupportedContentType { content_type }) => assert_eq!(content_type.len(), 100),
            other => panic!("{other:?}"),
        }
        assert!(Format::from_content_type("").is_err());
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncated("héllo", 2), "h");
        assert_eq!(truncated("abc", 10), "abc");
    }
}

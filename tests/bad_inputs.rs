//! A corpus of bad inputs: each gets its documented, typed error (or a
//! typed per-event rejection), none panics, and memory stays bounded by
//! `Limits` whatever the body holds.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use bytes::Bytes;
use common::alloc::measure;
use common::traffic;
use edgestream::event::{
    DecodeError, EventBatch, Format, JsonErrorKind, Limits, ProtoErrorKind, RejectKind, RejectReason,
};
use edgestream::proto;
use edgestream::time::{Span, TimeError, Timestamp};
use prost::Message;

const ALL: [Format; 3] = [Format::Json, Format::Ndjson, Format::Protobuf];

fn now() -> Timestamp {
    traffic::start()
}

fn decode(format: Format, body: impl Into<Bytes>, limits: &Limits) -> Result<EventBatch, DecodeError> {
    let mut batch = EventBatch::new();
    format.decode_into(&body.into(), limits, &mut batch).map(|()| batch)
}

fn json_kind(format: Format, body: &str) -> JsonErrorKind {
    match decode(format, body.to_owned(), &Limits::default()) {
        Err(DecodeError::Json { kind, .. }) => kind,
        other => panic!("{body:.100}: {:.300}", format!("{other:?}")),
    }
}

/// Decodes and validates one body, returning the rejection kinds.
fn rejections(format: Format, body: impl Into<Bytes>, limits: &Limits) -> Vec<RejectKind> {
    let mut batch = decode(format, body, limits).unwrap();
    limits.validate(&mut batch, now()).rejected.iter().map(|r| r.reason.kind()).collect()
}

fn event_json(rest: &str) -> String {
    format!(r#"{{"tenant":"acme","stream":"metrics","ts":1795838400000{rest}}}"#)
}

fn proto_body(events: Vec<proto::Event>) -> Vec<u8> {
    proto::EventBatch { events }.encode_to_vec()
}

fn proto_event() -> proto::Event {
    proto::Event {
        tenant: "acme".into(),
        stream: "metrics".into(),
        ts_unix_nanos: Some(now().as_nanos()),
        ..Default::default()
    }
}

#[test]
fn empty_body() {
    for format in ALL {
        assert_eq!(decode(format, Bytes::new(), &Limits::default()), Err(DecodeError::EmptyBody));
    }
}

#[test]
fn garbage_bytes() {
    let mut rng = traffic::Rng::new(7);
    let garbage: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
    assert!(matches!(
        decode(Format::Json, garbage.clone(), &Limits::default()),
        Err(DecodeError::Json { line: 1, kind: JsonErrorKind::Syntax(_), .. })
    ));
    assert!(matches!(decode(Format::Ndjson, garbage.clone(), &Limits::default()), Err(DecodeError::Json { .. })));
    assert!(matches!(decode(Format::Protobuf, garbage, &Limits::default()), Err(DecodeError::Protobuf { .. })));
    for body in ["\u{feff}[]", "null", "true", "\"event\"", "[1,2]", "{\"a\":1}"] {
        assert!(decode(Format::Json, body, &Limits::default()).is_err(), "{body}");
    }
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    let depth = 200_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    // The first inner `[` is not an event object: refused before recursing.
    assert_eq!(json_kind(Format::Json, &nested), JsonErrorKind::NotAnEvent);
    let objects = format!("{}{}", "{\"a\":".repeat(depth / 2), "}".repeat(depth / 2));
    assert!(matches!(json_kind(Format::Json, &objects), JsonErrorKind::UnknownField(f) if f == "a"));
    // A payload is kept verbatim (a zero-copy slice), never parsed into a
    // tree: deep nesting there costs no stack, and the parser's bracket
    // stack (one byte per level) stays below the body's own size.
    let in_payload = event_json(&format!(r#","payload":{nested}"#));
    for format in [Format::Json, Format::Ndjson] {
        let body = Bytes::from(in_payload.clone());
        let len = body.len();
        let (batch, _, peak) = measure(|| decode(format, body, &Limits::default()));
        let batch = batch.unwrap();
        assert_eq!(batch.get(0).unwrap().payload().unwrap().len(), 2 * depth);
        assert!(peak < len, "{format}: peak {peak} bytes for a body of {len}");
    }
    // Unbalanced nesting in a payload is a syntax error.
    let unbalanced = event_json(&format!(r#","payload":{}"#, "[".repeat(depth)));
    assert!(matches!(json_kind(Format::Json, &unbalanced), JsonErrorKind::Syntax(_)));
}

#[test]
fn deeply_nested_protobuf_groups_are_an_error() {
    // Field 15 as nested start-group tags, never closed.
    let body = vec![(15 << 3 | 3) as u8; 10_000];
    assert!(matches!(
        decode(Format::Protobuf, body, &Limits::default()),
        Err(DecodeError::Protobuf { kind: ProtoErrorKind::TooDeep | ProtoErrorKind::Truncated, .. })
    ));
}

#[test]
fn huge_strings() {
    let limits = Limits::default();
    let long = "x".repeat(1 << 19);
    let body = event_json(&format!(r#","dims":{{"device":"{long}"}}"#));
    assert_eq!(rejections(Format::Json, body, &limits), [RejectKind::TooLong]);
    let tenant = format!(r#"{{"tenant":"{long}","stream":"m","ts":1}}"#);
    assert_eq!(rejections(Format::Ndjson, tenant, &limits), [RejectKind::TooLong]);
    let mut e = proto_event();
    e.id = Some(proto::event::Id::IdStr(long.clone()));
    assert_eq!(rejections(Format::Protobuf, proto_body(vec![e]), &limits), [RejectKind::TooLong]);
    let over = event_json(&format!(r#","dims":{{"device":"{}"}}"#, "x".repeat(Limits::DEFAULT_MAX_BATCH_BYTES)));
    for format in [Format::Json, Format::Ndjson] {
        assert!(matches!(decode(format, over.clone(), &limits), Err(DecodeError::TooLarge { .. })));
    }
    // A length prefix that claims more than the body holds.
    let lying = vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
    assert!(matches!(
        decode(Format::Protobuf, lying, &limits),
        Err(DecodeError::Protobuf { kind: ProtoErrorKind::Truncated, offset: 1, event: 0 })
    ));
}

#[test]
fn a_million_tiny_events_stop_at_the_event_limit_with_bounded_memory() {
    let tiny = r#"{"tenant":"t","stream":"s","ts":1}"#;
    let ndjson = format!("{tiny}\n").repeat(1_000_000);
    let array = format!("[{}]", vec![tiny; 1_000_000].join(","));
    let protobuf = {
        let one = proto_body(vec![proto::Event {
            tenant: "t".into(),
            stream: "s".into(),
            ts_unix_nanos: Some(1),
            ..Default::default()
        }]);
        one.repeat(1_000_000)
    };
    // Over the default byte limit: refused before reading.
    for (format, body) in [(Format::Ndjson, &ndjson), (Format::Json, &array)] {
        assert!(matches!(decode(format, body.clone(), &Limits::default()), Err(DecodeError::TooLarge { .. })));
    }
    // With room for the bytes, the event limit stops the decoder early, and
    // what it holds meanwhile is bounded by that limit, not by the body.
    let mut limits = Limits::default();
    limits.max_batch_bytes = 64 << 20;
    for (format, body) in [
        (Format::Ndjson, Bytes::from(ndjson)),
        (Format::Json, Bytes::from(array)),
        (Format::Protobuf, Bytes::from(protobuf)),
    ] {
        let mut batch = EventBatch::new();
        let (result, _, peak) = measure(|| format.decode_into(&body, &limits, &mut batch));
        assert_eq!(result, Err(DecodeError::TooManyEvents { max: Limits::DEFAULT_MAX_EVENTS_PER_BATCH }), "{format}");
        assert!(peak < 4 << 20, "{format}: peak {peak} bytes while decoding");
        assert!(batch.is_empty());
    }
}

#[test]
fn nan_and_infinite_fields() {
    let limits = Limits::default();
    let body = event_json(r#","fields":{"a":"NaN","b":"Infinity","c":"-Infinity","d":1}"#);
    assert_eq!(rejections(Format::Json, body, &limits), [RejectKind::NonFiniteField]);
    // Bare NaN is not JSON.
    assert!(matches!(json_kind(Format::Json, &event_json(r#","fields":{"a":NaN}"#)), JsonErrorKind::Syntax(_)));
    // Numbers beyond f64 are a syntax error, not a silent infinity.
    assert!(matches!(json_kind(Format::Json, &event_json(r#","fields":{"a":1e400}"#)), JsonErrorKind::Syntax(_)));
    let mut e = proto_event();
    e.fields.push(proto::Field { name: "temp".into(), value: f64::NAN });
    let mut batch = decode(Format::Protobuf, proto_body(vec![e]), &limits).unwrap();
    let report = limits.validate(&mut batch, now());
    assert!(
        matches!(&report.rejected[0].reason, RejectReason::NonFiniteField { name, value } if name == "temp" && value.is_nan())
    );
    let mut e = proto_event();
    e.geo = Some(proto::GeoPoint { lat: f64::INFINITY, lon: 0.0 });
    assert_eq!(rejections(Format::Protobuf, proto_body(vec![e]), &limits), [RejectKind::InvalidGeo]);
}

#[test]
fn timestamps_far_in_the_future_or_past() {
    let limits = Limits::default();
    let ts = |v: &str| event_json("").replace("1795838400000", v);
    assert_eq!(
        json_kind(Format::Json, &ts("\"9999-12-31T23:59:59Z\"")),
        JsonErrorKind::InvalidTimestamp(TimeError::OutOfRange)
    );
    assert_eq!(
        json_kind(Format::Json, &ts("\"0001-01-01T00:00:00Z\"")),
        JsonErrorKind::InvalidTimestamp(TimeError::OutOfRange)
    );
    assert_eq!(
        json_kind(Format::Json, &ts("100000000000000000")),
        JsonErrorKind::InvalidTimestamp(TimeError::OutOfRange)
    );
    assert_eq!(
        json_kind(Format::Json, &ts("18446744073709551616")),
        JsonErrorKind::InvalidTimestamp(TimeError::OutOfRange)
    );
    assert_eq!(rejections(Format::Json, ts("\"2100-01-01T00:00:00Z\""), &limits), [RejectKind::InFuture]);
    // Seconds sent where milliseconds are expected land in 1970: accepted by
    // default (backfills are legitimate), rejected once an age bound is set.
    assert_eq!(rejections(Format::Json, ts("1795838400"), &limits), []);
    let mut bounded = Limits::default();
    bounded.max_event_age = Some(Span::from_days(30));
    assert_eq!(rejections(Format::Json, ts("1795838400"), &bounded), [RejectKind::TooOld]);
    assert_eq!(rejections(Format::Json, ts("\"1800-01-01T00:00:00Z\""), &bounded), [RejectKind::TooOld]);
    let mut e = proto_event();
    e.ts_unix_nanos = Some(i64::MAX);
    let mut old = proto_event();
    old.ts_unix_nanos = Some(i64::MIN);
    assert_eq!(
        rejections(Format::Protobuf, proto_body(vec![e, old]), &bounded),
        [RejectKind::InFuture, RejectKind::TooOld]
    );
    let mut missing = proto_event();
    missing.ts_unix_nanos = None;
    assert!(matches!(
        decode(Format::Protobuf, proto_body(vec![proto_event(), missing]), &limits),
        Err(DecodeError::Protobuf { kind: ProtoErrorKind::MissingTimestamp, event: 1, .. })
    ));
}

#[test]
fn duplicate_keys() {
    let limits = Limits::default();
    assert_eq!(json_kind(Format::Json, &event_json(r#","ts":1"#)), JsonErrorKind::DuplicateField("ts"));
    assert_eq!(
        json_kind(Format::Json, &event_json(r#","payload":1,"payload_bytes":"AA==""#)),
        JsonErrorKind::DuplicateField("payload")
    );
    assert_eq!(
        json_kind(Format::Json, &event_json(r#","geo":{"lat":1,"lat":2,"lon":3}"#)),
        JsonErrorKind::DuplicateField("lat")
    );
    let dims = event_json(r#","dims":{"region":"eu","region":"us"}"#);
    let mut batch = decode(Format::Json, dims, &limits).unwrap();
    let report = limits.validate(&mut batch, now());
    assert_eq!(report.rejected[0].reason, RejectReason::DuplicateDim { key: "region".into() });
    let fields = event_json(r#","fields":{"t":1,"t":2}"#);
    assert_eq!(rejections(Format::Ndjson, fields, &limits), [RejectKind::DuplicateField]);
    let mut e = proto_event();
    e.dims = vec![proto::Dim { key: "k".into(), value: "a".into() }, proto::Dim { key: "k".into(), value: "b".into() }];
    assert_eq!(rejections(Format::Protobuf, proto_body(vec![e]), &limits), [RejectKind::DuplicateDim]);
}

#[test]
fn errors_say_where() {
    let body = format!("{}\n{}\n{}\n", event_json(""), event_json(""), event_json(r#","dims":{"a":1}"#));
    match decode(Format::Ndjson, body, &Limits::default()) {
        Err(DecodeError::Json {
            line: 3,
            event: 2,
            column,
            kind: JsonErrorKind::InvalidValue { field: "dims", .. },
        }) => {
            assert!((60..75).contains(&column), "{column}")
        }
        other => panic!("{other:?}"),
    }
    let mut wire = proto_body(vec![proto_event(), proto_event()]);
    let len = wire.len();
    wire.truncate(len - 3);
    match decode(Format::Protobuf, wire, &Limits::default()) {
        Err(DecodeError::Protobuf { event: 1, offset, kind: ProtoErrorKind::Truncated }) => assert!(offset > 20),
        other => panic!("{other:?}"),
    }
    let msg = decode(Format::Json, "[{\"tenant\":1}]", &Limits::default()).unwrap_err().to_string();
    assert_eq!(msg, "malformed JSON at line 1, column 12 (event 0): `tenant` must be a string");
}

#[test]
fn wrong_wire_types_and_invalid_utf8() {
    // tenant (field 1) sent as a varint.
    let body = vec![0x0a, 0x02, 0x08, 0x01];
    assert!(matches!(
        decode(Format::Protobuf, body, &Limits::default()),
        Err(DecodeError::Protobuf { kind: ProtoErrorKind::WrongWireType { field: "tenant", wire_type: 0 }, .. })
    ));
    let body = vec![0x0a, 0x03, 0x0a, 0x01, 0xff];
    assert!(matches!(
        decode(Format::Protobuf, body, &Limits::default()),
        Err(DecodeError::Protobuf { kind: ProtoErrorKind::InvalidUtf8("tenant"), offset: 3, .. })
    ));
    let body = vec![0x0a, 0x0b, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
    assert!(matches!(
        decode(Format::Protobuf, body, &Limits::default()),
        Err(DecodeError::Protobuf { kind: ProtoErrorKind::InvalidVarint, .. })
    ));
}

#[test]
fn reject_batch_policy_counts_every_event() {
    let mut limits = Limits::default();
    limits.policy = edgestream::event::BatchPolicy::RejectBatch;
    let body = format!("{}\n{}\n", event_json(""), event_json(r#","fields":{"x":"NaN"}"#));
    assert_eq!(rejections(Format::Ndjson, body, &limits), [RejectKind::BatchRejected, RejectKind::NonFiniteField]);
}

#[test]
fn realistic_traffic_is_accepted_in_every_format() {
    let batch = traffic::batch(1_000, 1);
    for format in ALL {
        let mut wire = Vec::new();
        format.encode(&batch, &mut wire);
        let mut decoded = decode(format, wire, &Limits::default()).unwrap();
        assert_eq!(decoded, batch);
        assert!(Limits::default().validate(&mut decoded, now()).is_clean());
    }
}

//! Properties of the event codecs: every batch survives each codec, the
//! Protobuf fast path agrees with `prost`, and no input makes a decoder panic.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use bytes::Bytes;
use edgestream::event::{DecodeError, Event, EventBatch, EventId, Format, GeoPoint, Limits};
use edgestream::proto;
use edgestream::stats::IngestStats;
use edgestream::time::Timestamp;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use prost::Message;

fn name() -> impl Strategy<Value = String> {
    // Few distinct values, as in real traffic, so interning is exercised.
    prop_oneof![Just("acme".to_owned()), Just("globex".to_owned()), "[a-z][a-z0-9_-]{0,11}"]
}

fn label() -> impl Strategy<Value = String> {
    // Any printable text, including multi-byte characters and quotes.
    "\\PC{0,16}"
}

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
        Just(-0.0),
        Just(f64::MIN_POSITIVE / 4.0),
        (-1_000_000i64..1_000_000).prop_map(|v| v as f64 / 100.0),
    ]
}

fn payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from),
        Just(Bytes::from_static(br#"{"fw":"1.4.2","raw":[1,2,3]}"#)),
        Just(Bytes::from_static(b" 42")),
        Just(Bytes::from_static(b"{\"a\"\n:\r\n[1 ,2]}")),
        "\\PC{0,20}".prop_map(|s| Bytes::from(format!("\"{}\"", s.replace(['"', '\\'], "")))),
    ]
}

/// A valid event: what validation accepts (with a `now` far in the future).
fn valid_event() -> impl Strategy<Value = Event> {
    (
        name(),
        name(),
        any::<i64>(),
        proptest::option::of(prop_oneof![
            "[ -~]{1,24}".prop_map(EventId::Str),
            proptest::collection::vec(any::<u8>(), 1..24).prop_map(EventId::Bytes),
        ]),
        proptest::collection::btree_map("[a-z_][a-z0-9_.]{0,10}", label(), 0..5),
        proptest::collection::btree_map("[a-z_][a-z0-9_]{0,10}", finite(), 0..5),
        proptest::option::of((-90.0..=90.0f64, -180.0..=180.0f64)),
        proptest::option::of(payload()),
    )
        .prop_map(|(tenant, stream, ts, id, dims, fields, geo, payload)| Event {
            tenant,
            stream,
            ts: Timestamp::from_nanos(ts),
            id,
            dims: dims.into_iter().collect(),
            fields: fields.into_iter().collect(),
            geo: geo.map(|(lat, lon)| GeoPoint { lat, lon }),
            payload,
        })
}

/// Any event the codecs can carry, valid or not: NaN and infinite fields,
/// repeated keys, empty strings, control characters.
fn any_event() -> impl Strategy<Value = Event> {
    (
        valid_event(),
        proptest::collection::vec(("\\PC{0,4}|\n|\u{0}", any::<f64>()), 0..3),
        proptest::collection::vec(("\\PC{0,4}", "\\PC{0,4}|\u{1}"), 0..3),
    )
        .prop_map(|(mut e, fields, dims)| {
            e.fields.extend(fields);
            e.dims.extend(dims);
            e
        })
}

fn batch_of(events: &[Event]) -> EventBatch {
    let mut batch = EventBatch::new();
    for e in events {
        batch.push(e);
    }
    batch
}

fn round_trip(format: Format, batch: &EventBatch) -> Result<EventBatch, DecodeError> {
    let mut wire = Vec::new();
    format.encode(batch, &mut wire);
    let mut back = EventBatch::new();
    let limits = unbounded();
    format.decode_into(&Bytes::from(wire), &limits, &mut back)?;
    Ok(back)
}

/// Limits that never stop a decoder, to compare codecs on any input.
fn unbounded() -> Limits {
    let mut limits = Limits::default();
    limits.max_batch_bytes = usize::MAX;
    limits.max_events_per_batch = usize::MAX;
    limits
}

/// Decodes a body with `prost` and converts it, as a reference for the fast path.
fn prost_decode(body: &[u8]) -> Option<Vec<Event>> {
    let batch = proto::EventBatch::decode(body).ok()?;
    batch.events.into_iter().map(|e| Event::try_from(e).ok()).collect()
}

/// Compares events as batches do (a NaN equals any NaN, -0.0 is not 0.0).
fn same(a: &[Event], b: &[Event]) -> bool {
    a.len() == b.len() && batch_of(a) == batch_of(b)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("tests/proptest-regressions/codecs.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn valid_batches_round_trip_and_stay_valid(events in proptest::collection::vec(valid_event(), 1..20)) {
        let batch = batch_of(&events);
        for format in [Format::Json, Format::Ndjson, Format::Protobuf] {
            let mut back = round_trip(format, &batch).map_err(|e| TestCaseError::fail(format!("{format}: {e}")))?;
            prop_assert_eq!(&back, &batch, "{}", format);
            let report = Limits::default().validate(&mut back, Timestamp::MAX);
            prop_assert!(report.is_clean(), "{:?}", report.rejected);
        }
    }

    #[test]
    fn any_batch_round_trips(events in proptest::collection::vec(any_event(), 0..10)) {
        let batch = batch_of(&events);
        prop_assert_eq!(batch.to_events().len(), events.len());
        for format in [Format::Json, Format::Ndjson, Format::Protobuf] {
            if batch.is_empty() && format != Format::Json {
                continue; // no events encode to an empty body, which decoders refuse
            }
            let back = round_trip(format, &batch).map_err(|e| TestCaseError::fail(format!("{format}: {e}")))?;
            prop_assert_eq!(&back, &batch, "{}", format);
        }
    }

    #[test]
    fn protobuf_encoding_matches_prost(events in proptest::collection::vec(any_event(), 1..10)) {
        // prost reads what we write...
        let batch = batch_of(&events);
        let mut ours = Vec::new();
        Format::Protobuf.encode(&batch, &mut ours);
        let reference = proto::EventBatch::from(&batch);
        prop_assert_eq!(proto::EventBatch::decode(&ours[..]).ok(), Some(reference.clone()));
        // ...and we read what prost writes. (prost drops the sign of a -0.0
        // field, which we keep, so compare with prost's own reading.)
        let from_prost = reference.encode_to_vec();
        let mut back = EventBatch::new();
        Format::Protobuf.decode_into(&Bytes::from(from_prost.clone()), &unbounded(), &mut back).unwrap();
        prop_assert!(same(&back.to_events(), &prost_decode(&from_prost).unwrap()));
    }

    #[test]
    fn protobuf_fast_path_agrees_with_prost_on_corrupted_input(
        events in proptest::collection::vec(valid_event(), 1..4),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut wire = Vec::new();
        Format::Protobuf.encode(&batch_of(&events), &mut wire);
        for (at, byte) in flips {
            let i = at.index(wire.len());
            wire[i] = byte;
        }
        let limits = unbounded();
        let mut ours = EventBatch::new();
        let ours = Format::Protobuf.decode_into(&Bytes::from(wire.clone()), &limits, &mut ours).map(|()| ours.to_events());
        match (ours, prost_decode(&wire)) {
            (Ok(a), Some(b)) => prop_assert!(same(&a, &b), "ours {:?}\nprost {:?}", a, b),
            (Err(_), None) => {}
            (a, b) => prop_assert!(false, "disagreement on {:?}: ours {:?}, prost {:?}", wire, a, b),
        }
    }

    #[test]
    fn protobuf_fast_path_agrees_with_prost_on_random_bytes(wire in proptest::collection::vec(any::<u8>(), 1..200)) {
        let limits = unbounded();
        let mut ours = EventBatch::new();
        let ours = Format::Protobuf.decode_into(&Bytes::from(wire.clone()), &limits, &mut ours).map(|()| ours.to_events());
        match (ours, prost_decode(&wire)) {
            (Ok(a), Some(b)) => prop_assert!(same(&a, &b)),
            (Err(_), None) => {}
            (a, b) => prop_assert!(false, "disagreement on {:?}: ours {:?}, prost {:?}", wire, a, b),
        }
    }

    #[test]
    fn every_event_and_body_is_counted(
        bodies in proptest::collection::vec(
            (
                proptest::collection::vec(any_event(), 0..6),
                0..3usize,
                proptest::option::of(any::<prop::sample::Index>()),
            ),
            1..8,
        ),
        reject_batch in any::<bool>(),
    ) {
        let mut limits = Limits::default();
        if reject_batch {
            limits.policy = edgestream::event::BatchPolicy::RejectBatch;
        }
        let mut stats = IngestStats::default();
        let mut batch = EventBatch::new();
        let mut accepted_events = 0;
        for (events, format, corrupt) in &bodies {
            let format = [Format::Json, Format::Ndjson, Format::Protobuf][*format];
            let mut wire = Vec::new();
            format.encode(&batch_of(events), &mut wire);
            if let (Some(at), false) = (corrupt, wire.is_empty()) {
                let i = at.index(wire.len());
                wire[i] ^= 0x5a;
            }
            match format.decode_into(&Bytes::from(wire.clone()), &limits, &mut batch) {
                Ok(()) => {
                    let report = limits.validate(&mut batch, Timestamp::from_nanos(0));
                    prop_assert_eq!(report.accepted(), batch.len());
                    prop_assert_eq!(report.accepted_indices().count(), batch.len());
                    accepted_events += batch.len() as u64;
                    stats.record_batch(wire.len(), &report);
                }
                Err(e) => stats.record_malformed(wire.len(), &e),
            }
            prop_assert_eq!(stats.received, stats.accepted + stats.rejected.total());
            prop_assert_eq!(stats.batches_malformed, stats.malformed.total());
        }
        prop_assert_eq!(stats.batches + stats.batches_malformed, bodies.len() as u64);
        prop_assert_eq!(stats.accepted, accepted_events);
    }

    #[test]
    fn json_decoders_never_panic(body in proptest::collection::vec(any::<u8>(), 1..300)) {
        let mut batch = EventBatch::new();
        for format in [Format::Json, Format::Ndjson] {
            let _ = format.decode_into(&Bytes::from(body.clone()), &Limits::default(), &mut batch);
        }
    }

    #[test]
    fn json_decoders_never_panic_on_near_valid_input(
        events in proptest::collection::vec(any_event(), 1..4),
        cut in any::<prop::sample::Index>(),
        insert in "[\\[\\]{}\",:\\\\0-9a-z\n ]{0,3}",
    ) {
        let mut wire = Vec::new();
        Format::Ndjson.encode(&batch_of(&events), &mut wire);
        let at = cut.index(wire.len());
        wire.splice(at..at, insert.bytes());
        let mut batch = EventBatch::new();
        for format in [Format::Json, Format::Ndjson] {
            match format.decode_into(&Bytes::from(wire.clone()), &Limits::default(), &mut batch) {
                Ok(()) => prop_assert!(!batch.is_empty() || wire.iter().all(u8::is_ascii_whitespace)),
                Err(_) => prop_assert!(batch.is_empty()),
            }
        }
    }
}

#[test]
fn protobuf_keeps_nan_payloads_and_negative_zero_exactly() {
    let odd_nan = f64::from_bits(0x7ff8_b300_0000_0001);
    let batch = batch_of(&[Event::new("t", "s", Timestamp::UNIX_EPOCH)
        .with_field("nan", odd_nan)
        .with_field("neg0", -0.0)
        .with_geo(GeoPoint::new(-0.0, odd_nan))]);
    let back = round_trip(Format::Protobuf, &batch).unwrap();
    let e = back.get(0).unwrap();
    assert_eq!(e.field("nan").unwrap().to_bits(), odd_nan.to_bits());
    assert_eq!(e.field("neg0").unwrap().to_bits(), (-0.0f64).to_bits());
    assert_eq!(e.geo().unwrap().lon.to_bits(), odd_nan.to_bits());
}

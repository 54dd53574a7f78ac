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

/// A valid event whose dims come from a small pool, as in real traffic, so
/// that a batch repeats them: `Dim` messages of every size class the
/// Protobuf decoder's memo tells apart (under 8 bytes, up to 16, up to 32,
/// longer), and pairs that share a key or a value.
///
/// Half of them take their whole dims list from a few sources, as events
/// of one device do, so that runs of dims repeat too: runs that differ
/// only in the middle, runs past the decoder's 64 bytes and 4 dims, a run
/// with a repeated key.
fn pooled_event() -> impl Strategy<Value = Event> {
    let keys = ["k", "region", "device", "a-rather-long-dimension-key"];
    let values = ["a", "eu-west", "d-0001", "", "é", "device-with-a-name-longer-than-the-memo"];
    let sources: [&[(usize, usize)]; 6] = [
        &[(1, 1), (2, 2), (0, 0)],
        &[(1, 1), (2, 4), (0, 0)],
        &[(2, 5), (0, 3)],
        &[(0, 0), (0, 0)],
        &[(3, 5), (2, 5), (0, 0)],
        &[(1, 1), (2, 2), (0, 0), (3, 0), (1, 3)],
    ];
    let random = proptest::collection::vec((0..keys.len(), 0..values.len()), 0..6);
    let dims = prop_oneof![random, proptest::sample::select(sources.to_vec()).prop_map(<[_]>::to_vec)];
    (valid_event(), dims).prop_map(move |(mut e, dims)| {
        e.dims = dims.into_iter().map(|(k, v)| (keys[k].to_owned(), values[v].to_owned())).collect();
        e
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
    fn protobuf_decoding_into_a_reused_batch_agrees_with_prost(
        bodies in proptest::collection::vec(
            (proptest::collection::vec(pooled_event(), 1..12), proptest::option::of((any::<prop::sample::Index>(), any::<u8>()))),
            1..6,
        ),
    ) {
        // Dims and fields repeat within and across bodies, and each body
        // numbers its symbols afresh: what the decoder remembers of one
        // batch must never leak into the next.
        let limits = unbounded();
        let mut batch = EventBatch::new();
        for (events, flip) in bodies {
            let mut wire = proto::EventBatch::from(&batch_of(&events)).encode_to_vec();
            if let Some((at, byte)) = flip {
                let i = at.index(wire.len());
                wire[i] = byte;
            }
            let ours = Format::Protobuf.decode_into(&Bytes::from(wire.clone()), &limits, &mut batch).map(|()| batch.to_events());
            match (ours, prost_decode(&wire)) {
                (Ok(a), Some(b)) => prop_assert!(same(&a, &b), "ours {:?}\nprost {:?}", a, b),
                (Err(_), None) => {}
                (a, b) => prop_assert!(false, "disagreement on {:?}: ours {:?}, prost {:?}", wire, a, b),
            }
        }
    }

    /// The decoder lets an event share the dims of an earlier one that
    /// repeats them: an event whose dims come in several runs, or after
    /// and before its other fields, must still read as `prost` reads it.
    #[test]
    fn protobuf_dims_in_pieces_read_as_prost_reads_them(
        events in proptest::collection::vec(
            (pooled_event(), proptest::collection::vec(any::<prop::sample::Index>(), 0..3), any::<prop::sample::Index>()),
            1..12,
        ),
    ) {
        let mut wire = Vec::new();
        for (e, cuts, rest_at) in &events {
            len_field(0x0a, &in_pieces(e, cuts, *rest_at), &mut wire);
        }
        let mut ours = EventBatch::new();
        Format::Protobuf.decode_into(&Bytes::from(wire.clone()), &unbounded(), &mut ours).unwrap();
        let theirs = prost_decode(&wire).unwrap();
        prop_assert!(same(&ours.to_events(), &theirs), "ours {:?}\nprost {:?}", ours.to_events(), theirs);
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

/// Appends a Protobuf varint.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited field.
fn len_field(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

#[test]
fn protobuf_reads_every_form_of_a_field_message_as_prost_does() {
    // Encoders write a `Field` as its name then its value, which the
    // decoder takes a shortcut for; every other form takes the general
    // path and must read the same as `prost`.
    let name = |n: &[u8], out: &mut Vec<u8>| len_field(0x0a, n, out);
    let value = |v: f64, out: &mut Vec<u8>| {
        out.push(0x11);
        out.extend_from_slice(&v.to_le_bytes());
    };
    let long = vec![b'n'; 130];
    let mut forms: Vec<Vec<u8>> = Vec::new();
    let mut form = |parts: &dyn Fn(&mut Vec<u8>)| {
        let mut f = Vec::new();
        parts(&mut f);
        forms.push(f);
    };
    form(&|f| {
        name(b"temp_c", f);
        value(21.5, f);
    });
    form(&|f| {
        value(21.5, f);
        name(b"temp_c", f);
    });
    form(&|f| {
        name(b"temp_c", f);
        f.extend_from_slice(&[0x18, 0x07]); // unknown varint field 3
        value(1.0, f);
    });
    form(&|f| name(b"temp_c", f));
    form(&|f| value(-2.0, f));
    form(&|f| {
        name(&long, f);
        value(3.0, f);
    });
    form(&|f| {
        name(b"temp_c", f);
        value(1.0, f);
        value(2.0, f); // a repeated scalar keeps its last value
    });
    form(&|f| {
        name(b"a", f);
        name(b"b", f);
        value(4.0, f);
    });
    form(&|f| {
        name(b"\xff\xfe", f); // not UTF-8: refused on both paths
        value(1.0, f);
    });
    form(&|f| {
        name(b"temp_c", f);
        f.extend_from_slice(&[0x11, 0, 0]); // a truncated value
    });
    let mut batch = EventBatch::new();
    for field in forms {
        let mut event = vec![0x18, 0x01];
        len_field(0x3a, &field, &mut event);
        len_field(0x3a, &field, &mut event);
        let mut wire = Vec::new();
        len_field(0x0a, &event, &mut wire);
        len_field(0x0a, &event, &mut wire);
        let ours = Format::Protobuf
            .decode_into(&Bytes::from(wire.clone()), &unbounded(), &mut batch)
            .map(|()| batch.to_events());
        match (ours, prost_decode(&wire)) {
            (Ok(a), Some(b)) => assert!(same(&a, &b), "{field:?}: ours {a:?}, prost {b:?}"),
            (Err(_), None) => {}
            (a, b) => panic!("{field:?}: ours {a:?}, prost {b:?}"),
        }
    }
}

/// The wire form of `e` as an `Event` message sent in pieces: its dims
/// cut at `cuts` into several `dims` runs, with the rest of the event
/// between them at `rest_at` (Protobuf merges the pieces, appending
/// repeated fields), so that an event's dims arrive in several runs and
/// around its other fields.
fn in_pieces(e: &Event, cuts: &[prop::sample::Index], rest_at: prop::sample::Index) -> Vec<u8> {
    let batch = batch_of(std::slice::from_ref(e));
    let mut rest = proto::Event::from(&batch.get(0).unwrap());
    let dims = std::mem::take(&mut rest.dims);
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(dims.len() + 1)).collect();
    at.push(dims.len());
    at.sort_unstable();
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let mut from = 0;
    for to in at {
        let piece = proto::Event { dims: dims[from..to].to_vec(), ..Default::default() };
        pieces.push(piece.encode_to_vec());
        from = to;
    }
    pieces.insert(rest_at.index(pieces.len() + 1), rest.encode_to_vec());
    pieces.concat()
}

/// One id field of an event: `id_str` (true) or `id_bytes`, raw bytes.
type RawId = (bool, Vec<u8>);

/// A body of events (tenant `t`, time 1), each with the id fields in
/// `ids` (a later one replacing an earlier one, as in a `oneof`), and
/// where each id's length byte sits.
fn body_with_raw_ids(ids: &[Vec<RawId>]) -> (Vec<u8>, Vec<Vec<usize>>) {
    let mut wire = Vec::new();
    let mut at = Vec::new();
    for event_ids in ids {
        let mut event = vec![0x0a, 0x01, b't', 0x18, 0x01];
        let mut event_at = Vec::new();
        for (is_str, id) in event_ids {
            event.push(if *is_str { 0x22 } else { 0x2a });
            event_at.push(event.len());
            event.push(id.len() as u8);
            event.extend_from_slice(id);
        }
        wire.extend_from_slice(&[0x0a, event.len() as u8]);
        at.push(event_at.iter().map(|offset| wire.len() + offset).collect());
        wire.extend_from_slice(&event);
    }
    (wire, at)
}

/// Bytes that make valid and invalid UTF-8 in few draws: ASCII, the two
/// halves of `é`, the three bytes of `日`, a byte never valid.
fn id_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(proptest::sample::select(vec![b'a', 0xc3, 0xa9, 0xe6, 0x97, 0xa5, 0xff]), 0..6)
}

/// The id fields of one event: mostly one string id, sometimes several of
/// either kind.
fn event_ids() -> impl Strategy<Value = Vec<RawId>> {
    prop_oneof![
        3 => id_bytes().prop_map(|id| vec![(true, id)]),
        1 => proptest::collection::vec((any::<bool>(), id_bytes()), 1..4),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// String ids are checked as UTF-8 together, once per body: the result
    /// must be that of checking each alone, as it is read. In particular a
    /// character split between two ids (valid once joined) is refused, and
    /// so is a bad string id that a later id of its event replaces (as
    /// `prost` refuses it); the error names the first bad id and points at it.
    #[test]
    fn protobuf_string_ids_are_checked_one_by_one_in_effect(ids in proptest::collection::vec(event_ids(), 1..6)) {
        let (wire, at) = body_with_raw_ids(&ids);
        let mut batch = EventBatch::new();
        let ours = Format::Protobuf.decode_into(&Bytes::from(wire.clone()), &Limits::default(), &mut batch);
        let first_bad = ids.iter().enumerate().find_map(|(event, event_ids)| {
            let field = event_ids.iter().position(|(is_str, id)| *is_str && std::str::from_utf8(id).is_err())?;
            Some((event, at[event][field]))
        });
        match first_bad {
            None => {
                prop_assert!(ours.is_ok(), "{:?}", ours);
                let back: Vec<_> = batch.iter().map(|e| e.id().map(|id| id.as_bytes().to_vec())).collect();
                let want: Vec<_> = ids.iter().map(|event_ids| event_ids.last().map(|(_, id)| id.clone())).collect();
                prop_assert_eq!(back, want);
                prop_assert!(same(&batch.to_events(), &prost_decode(&wire).unwrap_or_default()));
            }
            Some((bad, offset)) => {
                prop_assert!(prost_decode(&wire).is_none());
                match ours {
                    Err(DecodeError::Protobuf { event, offset: got, kind: edgestream::event::ProtoErrorKind::InvalidUtf8("id_str") }) => {
                        prop_assert_eq!(event, bad);
                        prop_assert_eq!(got, offset);
                        prop_assert!(batch.is_empty());
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
    }
}

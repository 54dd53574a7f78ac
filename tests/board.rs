//! The tile board: deltas of changed tiles only, replicas that follow or
//! detect gaps and divergence, conflation for slow subscribers, and strict
//! Protobuf and JSON frames.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use std::collections::BTreeMap;

use edgestream::delta::board::{
    Applied, BoardConfig, BoardError, BoardStats, Delta, Epsilon, Frame, FrameError, Outbox, Replica, Resync, Snapshot,
    TileBoard, TileValue, tiles_of,
};
use edgestream::event::{Event, EventBatch};
use edgestream::time::{Span, Timestamp};
use edgestream::window::{FieldSpec, WindowSpec, Windows};
use proptest::prelude::*;

fn board() -> TileBoard {
    TileBoard::new("metrics", BoardConfig::default())
}

fn state(board: &TileBoard) -> BTreeMap<String, TileValue> {
    board.snapshot().tiles.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn replica_state(r: &Replica) -> BTreeMap<String, TileValue> {
    r.tiles().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

#[test]
fn only_changed_tiles_are_published_and_epsilon_keeps_the_published_value() {
    let config = BoardConfig { epsilon: Epsilon { absolute: 0.5, relative: 0.0 }, ..BoardConfig::default() };
    let mut b = TileBoard::new("metrics", config);
    b.set("a", TileValue::number(10.0)).unwrap();
    b.set("b", TileValue::number(20.0)).unwrap();
    let d = b.commit().unwrap();
    assert_eq!(d.upserts.len(), 2);
    b.set("a", TileValue::number(10.4)).unwrap(); // within epsilon
    b.set("b", TileValue::number(21.0)).unwrap();
    let d = b.commit().unwrap();
    assert_eq!(d.upserts, vec![("b".into(), TileValue::number(21.0))]);
    assert_eq!(b.get("a"), Some(&TileValue::number(10.0)), "the published value stays");
    assert_eq!(b.stats().unchanged, 1);
    b.set("a", TileValue::number(10.4)).unwrap();
    assert!(b.commit().is_none(), "nothing changed: no delta, no new sequence");
    assert_eq!(b.seq(), 2);
    // A new field is a change whatever the epsilon.
    b.set("a", TileValue::number(10.0).with("p99", 1.0)).unwrap();
    assert_eq!(b.commit().unwrap().upserts.len(), 1);
    b.remove("b");
    b.remove("never-there");
    let d = b.commit().unwrap();
    assert_eq!((d.upserts.len(), d.removals.len()), (0, 1));
}

#[test]
fn bad_values_and_a_full_board_are_refused() {
    let mut b = TileBoard::new("m", BoardConfig { max_tiles: 2, ..BoardConfig::default() });
    assert!(matches!(b.set("x", TileValue::number(f64::NAN)), Err(BoardError::NonFinite { .. })));
    b.set("a", TileValue::number(1.0)).unwrap();
    b.set("b", TileValue::number(1.0)).unwrap();
    assert_eq!(b.set("c", TileValue::number(1.0)), Err(BoardError::Full { max: 2 }));
    b.set("a", TileValue::number(2.0)).unwrap(); // an existing tile is fine
    b.commit().unwrap();
    assert_eq!(b.set("c", TileValue::number(1.0)), Err(BoardError::Full { max: 2 }));
    assert_eq!(b.stats().refused, 3);
}

#[test]
fn checksums_come_every_nth_delta_and_catch_silent_divergence() {
    let mut b = TileBoard::new("m", BoardConfig { checksum_every: 3, ..BoardConfig::default() });
    let mut r = Replica::new();
    r.apply_snapshot(&b.snapshot()).unwrap();
    let mut deltas = Vec::new();
    b.set("u", TileValue::number(7.0)).unwrap();
    for i in 0..6 {
        b.set("t", TileValue::number(f64::from(i))).unwrap();
        deltas.push(b.commit().unwrap());
    }
    let with: Vec<u64> = deltas.iter().filter(|d| d.checksum.is_some()).map(|d| d.seq).collect();
    assert_eq!(with, [3, 6]);
    // Corrupt a value in transit ("u", which no later delta touches): the
    // next checksum catches it.
    let mut bad = deltas[0].clone();
    assert_eq!(&*bad.upserts[1].0, "u");
    bad.upserts[1].1 = TileValue::number(99.0);
    assert_eq!(r.apply_delta(&bad), Ok(Applied::Applied));
    assert_eq!(r.apply_delta(&deltas[1]), Ok(Applied::Applied));
    assert_eq!(r.apply_delta(&deltas[2]), Err(Resync::Diverged { seq: 3 }));
    assert!(r.needs_snapshot());
    r.apply_snapshot(&b.snapshot()).unwrap();
    assert_eq!(replica_state(&r), state(&b));
}

#[test]
fn a_restored_board_continues_its_replicas() {
    let mut b = board();
    let mut replica = Replica::new();
    replica.apply_snapshot(&b.snapshot()).unwrap();
    b.set("a", TileValue::number(1.0)).unwrap();
    b.set("b", TileValue::new().with("p99", 2.5)).unwrap();
    replica.apply_delta(&b.commit().unwrap()).unwrap();
    // Stored as a Protobuf frame, read back, restored.
    let frame = Frame::from_protobuf(&Frame::Snapshot(b.snapshot()).to_protobuf()).unwrap();
    let Frame::Snapshot(snapshot) = frame else { panic!("a snapshot frame") };
    let mut restored = TileBoard::restore(snapshot.clone(), BoardConfig::default(), b.stats().clone()).unwrap();
    assert_eq!((restored.seq(), restored.checksum(), restored.stats()), (b.seq(), b.checksum(), b.stats()));
    restored.set("a", TileValue::number(3.0)).unwrap();
    replica.apply_delta(&restored.commit().unwrap()).unwrap();
    assert_eq!(replica_state(&replica), state(&restored));

    let mut bad = snapshot.clone();
    bad.checksum ^= 1;
    assert_eq!(
        TileBoard::restore(bad, BoardConfig::default(), BoardStats::default()).unwrap_err(),
        BoardError::Checksum
    );
    let small = BoardConfig { max_tiles: 1, ..BoardConfig::default() };
    assert!(matches!(TileBoard::restore(snapshot, small, BoardStats::default()), Err(BoardError::Full { .. })));
}

#[test]
fn gaps_are_detected_and_duplicates_ignored() {
    let mut b = board();
    let mut r = Replica::new();
    b.set("t", TileValue::number(1.0)).unwrap();
    let d1 = b.commit().unwrap();
    assert_eq!(r.apply_delta(&d1), Err(Resync::NoBase));
    r.apply_snapshot(&b.snapshot()).unwrap();
    assert_eq!(r.apply_delta(&d1), Ok(Applied::Duplicate), "already in the snapshot");
    b.set("t", TileValue::number(2.0)).unwrap();
    let _lost = b.commit().unwrap();
    b.set("t", TileValue::number(3.0)).unwrap();
    let d3 = b.commit().unwrap();
    assert_eq!(r.apply_delta(&d3), Err(Resync::Gap { have: 1, base: 2 }));
    assert_eq!(r.stats().resyncs, 2);
    let other = TileBoard::new("other", BoardConfig::default()).snapshot();
    assert!(matches!(r.apply_snapshot(&other), Err(Resync::Topic { .. })));
}

#[test]
fn window_results_become_tiles() {
    let spec = WindowSpec::new(Span::from_secs(10))
        .group_by(["region"])
        .field(FieldSpec::new("ms").with_quantiles([0.99]))
        .idle_timeout(Some(Span::from_secs(1)));
    let mut w = Windows::new(spec).unwrap();
    let mut batch = EventBatch::new();
    let t0 = Timestamp::from_secs(1_795_838_400).unwrap();
    for (i, ms) in [10.0, 20.0, 30.0].into_iter().enumerate() {
        batch.push(
            &Event::new("acme", "api", t0.saturating_add(Span::from_secs(i as i64)))
                .with_dim("region", "eu")
                .with_field("ms", ms),
        );
    }
    w.push(&batch, t0, &mut Vec::new());
    w.advance(t0.saturating_add(Span::from_secs(60)));
    let result = w.poll_result().unwrap();
    let tiles: Vec<_> = tiles_of(&result).collect();
    assert_eq!(tiles.len(), 1);
    let (key, value) = &tiles[0];
    assert_eq!(&**key, "api|region=eu|ms");
    assert_eq!((value.get("count"), value.get("mean"), value.get("max")), (Some(3.0), Some(20.0), Some(30.0)));
    assert!((value.get("p99").unwrap() - 30.0).abs() < 0.5);
    assert_eq!(value.get("start_ms"), Some(t0.as_millis() as f64));
    let mut b = board();
    b.set_result(&result).unwrap();
    assert_eq!(b.commit().unwrap().upserts.len(), 1);
}

#[test]
fn frames_round_trip_and_decoders_are_strict() {
    let mut b = board();
    b.set("eu|latency", TileValue::number(41.5).with("p99", 90.0)).unwrap();
    b.set("us|latency", TileValue::number(57.0)).unwrap();
    b.commit().unwrap();
    b.remove("us|latency");
    b.set("eu|latency", TileValue::number(40.0)).unwrap();
    let delta = Frame::Delta(b.commit().unwrap());
    let snapshot = Frame::Snapshot(b.snapshot());
    for frame in [&delta, &snapshot] {
        assert_eq!(&Frame::from_protobuf(&frame.to_protobuf()).unwrap(), frame);
        assert_eq!(&Frame::from_json(&frame.to_json()).unwrap(), frame);
    }
    let json = delta.to_json();
    assert!(json.starts_with(r#"{"kind":"delta","v":1,"topic":"metrics","seq":2,"base_seq":1,"#), "{json}");

    let bad = |text: &str| Frame::from_json(text).unwrap_err();
    assert_eq!(bad(&json.replace(r#""v":1"#, r#""v":2"#)), FrameError::Version(2));
    assert!(matches!(bad(&json.replace(r#""seq":2"#, r#""seq":2,"extra":0"#)), FrameError::Json(_)));
    assert!(matches!(
        bad(r#"{"kind":"delta","v":1,"topic":"m","seq":2,"base_seq":1,"upserts":{"a":{"x":1}},"removals":["a"]}"#),
        FrameError::Duplicate { what: "removal", .. }
    ));
    assert_eq!(
        bad(r#"{"kind":"snapshot","v":1,"topic":"m","seq":2,"tiles":{},"checksum":"12"}"#),
        FrameError::Checksum
    );

    use prost::Message;
    let proto = |f: edgestream::proto::Frame| Frame::from_protobuf(&f.encode_to_vec());
    assert_eq!(proto(edgestream::proto::Frame { version: 1, kind: None }), Err(FrameError::NoKind));
    assert_eq!(proto(edgestream::proto::Frame { version: 7, kind: None }), Err(FrameError::Version(7)));
    let tile = |key: &str, value: f64| edgestream::proto::Tile {
        key: key.into(),
        fields: vec![edgestream::proto::Field { name: "v".into(), value }],
    };
    let snap = |tiles| edgestream::proto::Frame {
        version: 1,
        kind: Some(edgestream::proto::frame::Kind::Snapshot(edgestream::proto::BoardSnapshot {
            topic: "m".into(),
            seq: 1,
            tiles,
            checksum: 0,
        })),
    };
    assert!(matches!(proto(snap(vec![tile("a", f64::INFINITY)])), Err(FrameError::NonFinite { .. })));
    assert!(matches!(
        proto(snap(vec![tile("a", 1.0), tile("a", 2.0)])),
        Err(FrameError::Duplicate { what: "key", .. })
    ));
    assert!(matches!(Frame::from_protobuf(&[0xff, 0xff]), Err(FrameError::Protobuf(_))));
}

/// A random board workload: per step, a few sets and removals over a small
/// key space, then a commit.
fn steps() -> impl Strategy<Value = Vec<Vec<(u8, Option<i16>)>>> {
    prop::collection::vec(prop::collection::vec((0u8..12, prop::option::weighted(0.8, -5i16..5)), 0..6), 1..40)
}

fn run(b: &mut TileBoard, step: &[(u8, Option<i16>)]) -> Option<Delta> {
    for &(key, value) in step {
        let key = format!("k{key}");
        match value {
            Some(v) => b.set(key, TileValue::number(f64::from(v)).with("x", f64::from(v) / 2.0)).unwrap(),
            None => b.remove(&key),
        }
    }
    b.commit()
}

proptest! {
    #[test]
    fn a_replica_following_every_delta_equals_the_board(steps in steps(), every in 0u32..4) {
        let mut b = TileBoard::new("m", BoardConfig { checksum_every: every, ..BoardConfig::default() });
        let mut r = Replica::new();
        r.apply_snapshot(&b.snapshot()).unwrap();
        for step in &steps {
            if let Some(d) = run(&mut b, step) {
                prop_assert_eq!(r.apply_delta(&d), Ok(Applied::Applied));
            }
            prop_assert_eq!(replica_state(&r), state(&b));
            prop_assert_eq!(r.seq(), Some(b.seq()));
        }
    }

    #[test]
    fn lost_duplicated_or_reordered_deltas_are_caught_and_a_snapshot_heals(
        steps in steps(),
        faults in prop::collection::vec(0u8..6, 40),
    ) {
        let mut b = board();
        let mut history: BTreeMap<u64, Snapshot> = BTreeMap::from([(0, b.snapshot())]);
        let mut deltas = Vec::new();
        for step in &steps {
            if let Some(d) = run(&mut b, step) {
                history.insert(d.seq, b.snapshot());
                deltas.push(d);
            }
        }
        // Deliver with faults: 0 drop, 1 duplicate, 2 swap with the next.
        let mut wire: Vec<Delta> = Vec::new();
        let mut i = 0;
        while i < deltas.len() {
            match faults[i % faults.len()] {
                0 => {}
                1 => { wire.push(deltas[i].clone()); wire.push(deltas[i].clone()); }
                2 if i + 1 < deltas.len() => { wire.push(deltas[i + 1].clone()); wire.push(deltas[i].clone()); i += 1; }
                _ => wire.push(deltas[i].clone()),
            }
            i += 1;
        }
        let mut r = Replica::new();
        r.apply_snapshot(&history[&0]).unwrap();
        for d in &wire {
            let result = r.apply_delta(d);
            if result.is_err() {
                prop_assert!(r.needs_snapshot());
                continue;
            }
            // Never silently wrong: whatever was applied matches the board
            // at the replica's sequence.
            if let Some(seq) = r.seq() {
                let expected: BTreeMap<String, TileValue> =
                    history[&seq].tiles.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
                prop_assert_eq!(replica_state(&r), expected);
            }
        }
        r.apply_snapshot(&b.snapshot()).unwrap();
        prop_assert_eq!(replica_state(&r), state(&b));
    }

    #[test]
    fn a_conflated_delta_equals_the_deltas_one_by_one(steps in steps(), take_every in 1usize..8) {
        let mut b = board();
        let mut outbox = Outbox::new();
        let (mut slow, mut fast) = (Replica::new(), Replica::new());
        slow.apply(&outbox.take(&b).unwrap()).unwrap();
        fast.apply_snapshot(&b.snapshot()).unwrap();
        for (i, step) in steps.iter().enumerate() {
            if let Some(d) = run(&mut b, step) {
                fast.apply_delta(&d).unwrap();
                outbox.push(&d);
            }
            prop_assert!(outbox.pending_tiles() <= 12, "bounded by the tiles");
            if i % take_every == 0
                && let Some(frame) = outbox.take(&b)
            {
                slow.apply(&frame).unwrap();
                prop_assert_eq!(replica_state(&slow), replica_state(&fast));
            }
        }
        if let Some(frame) = outbox.take(&b) {
            slow.apply(&frame).unwrap();
        }
        prop_assert_eq!(replica_state(&slow), state(&b));
        prop_assert_eq!(slow.seq(), Some(b.seq()));
    }

    #[test]
    fn frames_round_trip_through_both_encodings(steps in steps()) {
        let mut b = board();
        for step in &steps {
            if let Some(d) = run(&mut b, step) {
                let frame = Frame::Delta(d);
                prop_assert_eq!(Frame::from_protobuf(&frame.to_protobuf()).unwrap(), frame.clone());
                prop_assert_eq!(Frame::from_json(&frame.to_json()).unwrap(), frame);
            }
        }
        let frame = Frame::Snapshot(b.snapshot());
        prop_assert_eq!(Frame::from_protobuf(&frame.to_protobuf()).unwrap(), frame.clone());
        prop_assert_eq!(Frame::from_json(&frame.to_json()).unwrap(), frame);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_frame_decoders(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Frame::from_protobuf(&bytes);
        let _ = Frame::from_json(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn a_slow_subscriber_gets_a_snapshot_when_that_is_smaller() {
    let mut b = board();
    let mut outbox = Outbox::new();
    outbox.take(&b).unwrap();
    for i in 0..5 {
        b.set(format!("a-long-tile-name-{i}"), TileValue::number(1.0)).unwrap();
        outbox.push(&b.commit().unwrap());
    }
    // Everything then removed: the merged delta lists five removals, the
    // snapshot is empty.
    for i in 0..5 {
        b.remove(&format!("a-long-tile-name-{i}"));
    }
    outbox.push(&b.commit().unwrap());
    assert!(matches!(outbox.take(&b), Some(Frame::Snapshot(_))));
    assert_eq!(outbox.stats().snapshots, 2);
    assert!(outbox.take(&b).is_none(), "up to date");
}

#[test]
fn fuzz_seeds_are_valid_frames() {
    // `WRITE_FUZZ_SEEDS=1 cargo test --test board fuzz_seeds` refreshes them.
    let mut b = board();
    b.set("eu|latency", TileValue::number(41.5).with("p99", 90.0)).unwrap();
    b.set("us|latency", TileValue::number(57.0)).unwrap();
    b.commit().unwrap();
    b.remove("us|latency");
    let delta = Frame::Delta(b.commit().unwrap());
    let snapshot = Frame::Snapshot(b.snapshot());
    let seeds = [
        ("delta.pb", delta.to_protobuf()),
        ("snapshot.pb", snapshot.to_protobuf()),
        ("delta.json", delta.to_json().into_bytes()),
        ("snapshot.json", snapshot.to_json().into_bytes()),
    ];
    for (name, bytes) in seeds {
        let frame = match name.ends_with(".pb") {
            true => Frame::from_protobuf(&bytes).unwrap(),
            false => Frame::from_json(std::str::from_utf8(&bytes).unwrap()).unwrap(),
        };
        assert!(frame == delta || frame == snapshot);
        if std::env::var_os("WRITE_FUZZ_SEEDS").is_some() {
            std::fs::write(format!("{}/fuzz/seeds/frame/{name}", env!("CARGO_MANIFEST_DIR")), &bytes).unwrap();
        }
    }
}

#[test]
fn an_outbox_ignores_deltas_the_subscriber_already_has_and_catches_missed_pushes() {
    let mut b = board();
    b.set("a", TileValue::number(1.0)).unwrap();
    let d1 = b.commit().unwrap();
    let mut outbox = Outbox::new();
    assert!(matches!(outbox.take(&b), Some(Frame::Snapshot(s)) if s.seq == 1));
    outbox.push(&d1); // already in the snapshot
    outbox.push(&d1);
    assert!(outbox.take(&b).is_none(), "up to date: no second snapshot");
    assert_eq!(outbox.stats().stale, 2);
    // A commit the host forgot to push: the next take catches up with a snapshot.
    b.set("a", TileValue::number(2.0)).unwrap();
    b.commit().unwrap();
    assert!(matches!(outbox.take(&b), Some(Frame::Snapshot(s)) if s.seq == 2));
}

#[test]
fn a_replica_asks_for_a_snapshot_once() {
    let mut b = board();
    let mut r = Replica::new();
    r.apply_snapshot(&b.snapshot()).unwrap();
    let mut deltas = Vec::new();
    for i in 0..6 {
        b.set("t", TileValue::number(f64::from(i))).unwrap();
        deltas.push(b.commit().unwrap());
    }
    assert!(matches!(r.apply_delta(&deltas[1]), Err(Resync::Gap { .. })));
    for d in &deltas[2..] {
        assert_eq!(r.apply_delta(d), Ok(Applied::AwaitingSnapshot));
    }
    assert_eq!((r.stats().resyncs, r.stats().ignored), (1, 4));
    r.apply_snapshot(&b.snapshot()).unwrap();
    assert!(!r.needs_snapshot());
}

#[test]
fn zero_epsilon_publishes_a_sign_change_of_zero() {
    let mut b = board();
    b.set("z", TileValue::number(0.0)).unwrap();
    b.commit().unwrap();
    b.set("z", TileValue::number(-0.0)).unwrap();
    assert!(b.commit().is_some());
}

#[test]
fn json_frames_refuse_repeated_keys_and_signed_checksums() {
    let twice = r#"{"kind":"delta","v":1,"topic":"m","seq":2,"base_seq":1,"upserts":{"a":{"x":1,"x":2}}}"#;
    assert!(matches!(Frame::from_json(twice), Err(FrameError::Json(e)) if e.contains("twice")));
    let twice = r#"{"kind":"delta","v":1,"topic":"m","seq":2,"base_seq":1,"upserts":{"a":{"x":1},"a":{"x":2}}}"#;
    assert!(matches!(Frame::from_json(twice), Err(FrameError::Json(_))));
    let plus = r#"{"kind":"snapshot","v":1,"topic":"m","seq":2,"tiles":{},"checksum":"+00000000000000f"}"#;
    assert_eq!(Frame::from_json(plus), Err(FrameError::Checksum));
}

#[test]
fn tile_keys_escape_separators_and_quantiles_have_round_names() {
    let spec = WindowSpec::new(Span::from_secs(10))
        .group_by(["path"])
        .field(FieldSpec::new("ms").with_quantiles([0.29, 0.999]))
        .idle_timeout(Some(Span::from_secs(1)));
    let mut w = Windows::new(spec).unwrap();
    let t0 = Timestamp::from_secs(1_795_838_400).unwrap();
    let mut batch = EventBatch::new();
    for path in ["a|b", "a", "a,b=c"] {
        batch.push(&Event::new("acme", "api", t0).with_dim("path", path).with_field("ms", 1.0));
    }
    w.push(&batch, t0, &mut Vec::new());
    w.advance(t0.saturating_add(Span::from_secs(60)));
    let mut keys = Vec::new();
    while let Some(r) = w.poll_result() {
        for (key, value) in tiles_of(&r) {
            assert!(value.get("p29").is_some() && value.get("p99.9").is_some(), "{value:?}");
            keys.push(key.to_string());
        }
    }
    keys.sort();
    let mut expected = [r"api|path=a\,b\=c|ms", r"api|path=a\|b|ms", r"api|path=a|ms"];
    expected.sort();
    assert_eq!(keys, expected);
}

#[test]
fn set_result_stages_the_tiles_of_the_result() {
    // Two fields, quantiles out of name order, names to escape; windows
    // one after another, so tiles are added and then changed.
    let spec = WindowSpec::new(Span::from_secs(10))
        .group_by(["path", "region"])
        .field(FieldSpec::new("ms").with_quantiles([0.999, 0.29, 0.5]))
        .field(FieldSpec::new("b|ytes"))
        .idle_timeout(None);
    let mut w = Windows::new(spec).unwrap();
    let t0 = Timestamp::from_secs(1_795_838_400).unwrap();
    let (mut by_result, mut by_tile) = (board(), board());
    // Boards too small for every tile: the same refusals at the same tile.
    let small = BoardConfig { max_tiles: 5, ..BoardConfig::default() };
    let (mut small_by_result, mut small_by_tile) =
        (TileBoard::new("metrics", small.clone()), TileBoard::new("metrics", small));
    let mut replica = Replica::new();
    replica.apply_snapshot(&by_result.snapshot()).unwrap();
    let mut deltas = 0;
    for window in 0..4i64 {
        let mut batch = EventBatch::new();
        for (i, path) in ["a|b", "a", "a,b=c"].into_iter().enumerate().filter(|_| window < 3) {
            let at = t0.saturating_add(Span::from_secs(10 * window + i as i64));
            let ms = (window * 3 + i as i64) as f64;
            batch.push(
                &Event::new("acme", "api", at).with_dim("path", path).with_dim("region", "eu").with_field("ms", ms),
            );
            batch.push(&Event::new("acme", "api", at).with_dim("path", path).with_field("b|ytes", 5.0));
        }
        w.push(&batch, t0, &mut Vec::new());
        if window < 3 {
            w.advance(t0);
        } else {
            w.close_all(t0);
        }
        while let Some(r) = w.poll_result() {
            // Twice: the second time every key is already staged.
            for _ in 0..2 {
                by_result.set_result(&r).unwrap();
                for (key, value) in tiles_of(&r) {
                    by_tile.set(key, value).unwrap();
                }
            }
            let refused = small_by_result.set_result(&r);
            assert_eq!(refused, tiles_of(&r).try_for_each(|(key, value)| small_by_tile.set(key, value)));
        }
        assert_eq!(small_by_result.commit(), small_by_tile.commit());
        assert_eq!(small_by_result.stats(), small_by_tile.stats());
        let (a, b) = (by_result.commit(), by_tile.commit());
        assert_eq!(a, b, "window {window}");
        if let Some(delta) = a {
            replica.apply_delta(&delta).unwrap();
            deltas += 1;
        }
        assert_eq!(by_result.checksum(), by_tile.checksum());
        assert_eq!(state(&by_result), state(&by_tile));
        assert_eq!(replica_state(&replica), state(&by_result));
    }
    assert_eq!(deltas, 3);
    // Six groups (with and without a region), a tile per field each.
    assert_eq!(state(&by_result).len(), 12);
    assert_eq!(by_result.stats(), by_tile.stats());
    assert_eq!(state(&small_by_result), state(&small_by_tile));
    assert!(small_by_result.stats().refused > 0 && small_by_result.len() == 5);
}

#[test]
fn alert_results_and_events_frames_round_trip_in_both_encodings() {
    use edgestream::alert::{AlertEvent, AlertState};
    use edgestream::delta::board::{EventsFrame, ResultRow, ResultsFrame};
    use std::sync::Arc;

    // An alert event, as the evaluator makes them.
    let rule = edgestream::alert::Rule::parse("slow", "avg(x) by (g) > 1").unwrap();
    let mut ev = edgestream::alert::Evaluator::new(vec![rule], Default::default()).unwrap();
    let spec =
        WindowSpec::new(Span::from_secs(10)).group_by(["g"]).field(FieldSpec::new("x").with_quantiles([0.5, 0.99]));
    let mut windows = Windows::new(spec).unwrap();
    let mut batch = EventBatch::new();
    let t0 = Timestamp::from_secs(1_795_838_400).unwrap();
    for i in 0..5 {
        batch.push(
            &Event::new("acme", "s", t0.saturating_add(Span::from_secs(i)))
                .with_dim("g", "a")
                .with_field("x", 2.5 + i as f64),
        );
    }
    windows.push(&batch, t0, &mut Vec::new());
    windows.advance(t0.saturating_add(Span::from_secs(100)));
    let result = windows.poll_result().unwrap();
    ev.push(&result);
    let mut alerts = Vec::new();
    ev.advance(result.end, &mut alerts);
    let alert: AlertEvent = alerts.remove(0);
    assert_eq!(alert.state, AlertState::Firing);

    let row = ResultRow::new("10s", &result);
    assert_eq!(row.field("x").unwrap().quantiles.len(), 2);
    assert_eq!(row.label("g"), Some("a"));
    let frames = [
        Frame::Alert(Box::new(alert)),
        Frame::Results(ResultsFrame { topic: Arc::from("metrics"), results: vec![row] }),
        Frame::Events(Box::new(EventsFrame {
            topic: Arc::from("events"),
            events: batch.clone(),
            weights: vec![1.0, 2.0, 1.0, 4.0, 1.0],
        })),
        Frame::Events(Box::new(EventsFrame { topic: Arc::from("events"), events: EventBatch::new(), weights: vec![] })),
    ];
    for frame in &frames {
        assert_eq!(&Frame::from_protobuf(&frame.to_protobuf()).unwrap(), frame);
        assert_eq!(&Frame::from_json(&frame.to_json()).unwrap(), frame, "{}", frame.to_json());
    }
    // Strict: a weight per event, each finite and positive.
    let bad = Frame::Events(Box::new(EventsFrame { topic: Arc::from("e"), events: batch.clone(), weights: vec![1.0] }));
    assert!(Frame::from_protobuf(&bad.to_protobuf()).is_err());
    assert!(Frame::from_json(&bad.to_json()).is_err());
    let nan = Frame::Events(Box::new(EventsFrame { topic: Arc::from("e"), events: batch, weights: vec![f64::NAN; 5] }));
    assert!(Frame::from_protobuf(&nan.to_protobuf()).is_err());
    assert!(Frame::from_json(r#"{"v":1,"kind":"alert","alert":{"nope":1}}"#).is_err());
    assert!(Frame::from_json(r#"{"v":1,"kind":"events","topic":"e","events":[],"weights":[],"extra":1}"#).is_err());
    assert!(Frame::from_json(r#"{"v":2,"kind":"events","topic":"e","events":[],"weights":[]}"#).is_err());
}

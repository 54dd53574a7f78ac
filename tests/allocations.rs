//! Repeated strings must not cost a heap allocation per event: decoding
//! into a reused batch allocates a small constant number of times per body,
//! whatever the number of events.

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
use edgestream::event::{EventBatch, Format, Limits};

#[test]
fn steady_state_decoding_allocates_nothing_per_event() {
    let limits = Limits::default();
    for n in [100, 1_000, 5_000] {
        let source = traffic::batch(n, 3);
        for format in [Format::Json, Format::Ndjson, Format::Protobuf] {
            let mut wire = Vec::new();
            format.encode(&source, &mut wire);
            let body = Bytes::from(wire);
            let mut batch = EventBatch::new();
            let (first, cold, _) = measure(|| format.decode_into(&body, &limits, &mut batch));
            first.unwrap();
            let (again, warm, _) = measure(|| format.decode_into(&body, &limits, &mut batch));
            again.unwrap();
            assert!(limits.validate(&mut batch, traffic::start()).is_clean());
            format.decode_into(&body, &limits, &mut batch).unwrap();
            let (report, validate, _) = measure(|| limits.validate(&mut batch, traffic::start()));
            assert!(report.is_clean());
            println!("{format} x{n}: {cold} allocations cold, {warm} warm, {validate} to validate");
            assert!(warm <= 2, "{format} x{n}: {warm} allocations when reusing the batch");
            assert_eq!(validate, 0, "{format} x{n}: validating a clean batch in a reused batch allocates");
            assert!(cold < 200, "{format} x{n}: {cold} allocations on a fresh batch (amortized growth only)");
            assert_eq!(batch, source);
        }
    }
}

#[test]
fn escaped_strings_and_binary_ids_do_not_allocate_per_event_either() {
    let line = "{\"tenant\":\"ac\\u006de\",\"stream\":\"m\",\"ts\":1,\"id_bytes\":\"AAECAw==\",\"dims\":{\"k\\\"\":\"v\\n\"}}\n";
    let body = Bytes::from(line.repeat(1_000));
    let mut batch = EventBatch::new();
    Format::Ndjson.decode_into(&body, &Limits::default(), &mut batch).unwrap();
    let (result, warm, _) = measure(|| Format::Ndjson.decode_into(&body, &Limits::default(), &mut batch));
    result.unwrap();
    assert_eq!(batch.get(999).unwrap().tenant(), "acme");
    // serde_json unescapes into a scratch buffer per line parser.
    assert!(warm <= 1_000 + 2, "{warm}");
    println!("escaped NDJSON x1000: {warm} allocations warm");
}

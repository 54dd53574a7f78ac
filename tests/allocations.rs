//! What the heap pays for: repeated strings must not cost a heap
//! allocation per event (decoding into a reused batch allocates a small
//! constant number of times per body, whatever the number of events), and a
//! live window state costs its slot and nothing more.

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

/// The heap bytes one more live (group, window) costs an operator keeping
/// count, sum, min and max of one field: its 64-byte slot, which also links
/// the window's list of states. Measured as the growth when every group of
/// a resolved set opens a second window (a group lists its first two
/// windows inline).
#[test]
fn a_live_window_state_costs_its_64_byte_slot() {
    use edgestream::time::{Span, Timestamp};
    use edgestream::window::agg::Aggregates;
    use edgestream::window::{FieldSpec, ResolvedBatch, WindowSpec, Windows};

    const GROUPS: usize = 4_096;
    let spec = WindowSpec::new(Span::from_secs(1))
        .group_by(["device"])
        .field(FieldSpec::new("v").aggregates(Aggregates::SUM | Aggregates::MIN | Aggregates::MAX))
        .out_of_orderness(Span::from_secs(60))
        .idle_timeout(None);
    let mut w = Windows::new(spec).unwrap();
    let names: Vec<String> = (0..GROUPS).map(|g| format!("dev-{g:05}")).collect();
    let handles: Vec<_> = names.iter().map(|n| w.resolve("acme", "metrics", &[n])).collect();
    let mut batch = ResolvedBatch::with_capacity(1, GROUPS);
    let mut late = Vec::new();
    let now = Timestamp::UNIX_EPOCH;
    let mut open_window = |w: &mut Windows, second: i64| {
        batch.clear();
        for (g, &h) in handles.iter().enumerate() {
            batch.push(h, Timestamp::from_secs(second).unwrap(), &[g as f64]);
        }
        w.push_resolved_batch(&mut batch, now, &mut late).unwrap();
        w.advance(now);
    };
    open_window(&mut w, 0);
    let before = common::alloc::live();
    open_window(&mut w, 1);
    let grown = common::alloc::live() - before;
    assert_eq!(w.live_windows(), 2 * GROUPS);
    assert!(late.is_empty() && w.poll_result().is_none(), "both windows still open");
    let per_state = grown as f64 / GROUPS as f64;
    println!("one more live (group, window): {per_state:.2} heap bytes");
    // The slots (the slab doubles at powers of two, so 4,096 more slots
    // are exactly 256 KiB more) and one entry in the operator's window map.
    assert!((64.0..64.1).contains(&per_state), "{per_state} bytes per state");
}

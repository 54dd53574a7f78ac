// Shared by the JSON-family targets: decode, and if the body is accepted,
// validate it and check that it survives every codec unchanged.

use bytes::Bytes;
use edgestream::event::{EventBatch, Format, Limits};
use edgestream::time::Timestamp;

pub fn decode_and_round_trip(format: Format, data: &[u8]) {
    let limits = Limits::default();
    let mut batch = EventBatch::new();
    if format.decode_into(&Bytes::copy_from_slice(data), &limits, &mut batch).is_err() {
        assert!(batch.is_empty(), "a failed decode leaves the batch empty");
        return;
    }
    let decoded = batch.clone();
    for other in [Format::Json, Format::Ndjson, Format::Protobuf] {
        if decoded.is_empty() && other != Format::Json {
            continue;
        }
        let mut wire = Vec::new();
        other.encode(&decoded, &mut wire);
        let mut back = EventBatch::new();
        let mut unbounded = Limits::default();
        unbounded.max_batch_bytes = usize::MAX;
        other.decode_into(&Bytes::from(wire), &unbounded, &mut back).expect("our own encoding decodes");
        assert!(back == decoded, "{other} round trip changed the batch");
    }
    let report = limits.validate(&mut batch, Timestamp::from_nanos(1_795_838_400_000_000_000));
    assert_eq!(report.received, decoded.len());
    assert_eq!(report.accepted(), batch.len());
}

#![no_main]
// The fast Protobuf decoder must agree with prost on every input: same
// events when both accept, both refuse otherwise. Accepted bodies must also
// survive re-encoding.

mod common;

use bytes::Bytes;
use edgestream::event::{Event, EventBatch, Format, Limits};
use edgestream::proto;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let mut limits = Limits::default();
    limits.max_events_per_batch = usize::MAX;
    let mut batch = EventBatch::new();
    let ours = Format::Protobuf.decode_into(&Bytes::copy_from_slice(data), &limits, &mut batch);
    let reference: Option<Vec<Event>> = proto::EventBatch::decode(data)
        .ok()
        .and_then(|b| b.events.into_iter().map(|e| Event::try_from(e).ok()).collect());
    match (ours, reference) {
        (Ok(()), Some(events)) => {
            let mut expected = EventBatch::new();
            for e in &events {
                expected.push(e);
            }
            assert!(batch == expected, "decoders disagree on the events");
        }
        (Err(_), None) => {}
        // prost decodes an empty body as an empty batch; we refuse it.
        (Err(edgestream::event::DecodeError::EmptyBody), Some(events)) if events.is_empty() => {}
        (ours, reference) => panic!("decoders disagree: ours {ours:?}, prost accepted: {}", reference.is_some()),
    }
    common::decode_and_round_trip(Format::Protobuf, data);
});

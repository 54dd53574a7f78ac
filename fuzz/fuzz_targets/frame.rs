#![no_main]
// Dashboard frames. Arbitrary bytes, read as Protobuf or as JSON, give a
// typed error or a frame, never a panic; a frame read either way encodes
// back to a frame equal to it in both encodings.

use edgestream::delta::board::Frame;
use libfuzzer_sys::fuzz_target;

fn round_trip(frame: &Frame) {
    assert_eq!(&Frame::from_protobuf(&frame.to_protobuf()).expect("our Protobuf reads back"), frame);
    assert_eq!(&Frame::from_json(&frame.to_json()).expect("our JSON reads back"), frame);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::from_protobuf(data) {
        round_trip(&frame);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(frame) = Frame::from_json(text) {
            round_trip(&frame);
        }
    }
});

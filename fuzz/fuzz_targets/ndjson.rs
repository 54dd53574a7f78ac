#![no_main]

mod common;

use edgestream::event::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| common::decode_and_round_trip(Format::Ndjson, data));

#![no_main]
// Restoring a window snapshot never panics; whatever restores snapshots
// back to the same bytes and keeps working.

use edgestream::event::{Event, EventBatch};
use edgestream::time::Timestamp;
use edgestream::window::Windows;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut w) = Windows::restore(data) else { return };
    let mut bytes = Vec::new();
    w.snapshot(&mut bytes);
    let again = Windows::restore(&bytes).expect("our own snapshot restores");
    let mut second = Vec::new();
    again.snapshot(&mut second);
    assert_eq!(bytes, second, "snapshot of a restore is the same snapshot");
    let mut batch = EventBatch::new();
    batch.push(&Event::new("acme", "metrics", Timestamp::from_nanos(1)).with_dim("g", "a").with_field("v", 1.0));
    let mut late = Vec::new();
    w.push(&batch, Timestamp::from_nanos(0), &mut late);
    w.advance(Timestamp::MAX);
    while w.poll_result().is_some() {}
});

//! The Parquet sink compiled for wasm32 (snappy: no C code on the edge):
//! `check.mjs` runs it in Node and checks the file it writes, and CI
//! records the module's size.
//!
//! ```sh
//! cargo build --manifest-path tests/wasm/sink/Cargo.toml --target wasm32-unknown-unknown --release
//! node tests/wasm/sink/check.mjs <target>/wasm32-unknown-unknown/release/edgestream_wasm_sink.wasm
//! ```

#![allow(unsafe_code, reason = "`no_mangle` exports are the module's interface to JavaScript")]

use edgestream::event::{Event, EventBatch};
use edgestream::sink::{EventColumns, EventSink, ParquetOptions, SinkConfig};
use edgestream::time::Timestamp;

/// Writes `n` events into one Parquet file in memory and returns its
/// length, or 0 on error; the file starts and ends with `PAR1` or this
/// returns `u32::MAX`.
#[unsafe(no_mangle)]
pub extern "C" fn parquet_len(n: u32) -> u32 {
    let config = SinkConfig {
        columns: EventColumns { dims: vec!["region".into()], fields: vec!["temp_c".into()], ..EventColumns::default() },
        ..SinkConfig::default()
    };
    let Ok(mut sink) = EventSink::parquet(config, ParquetOptions::default()) else { return 0 };
    let start = Timestamp::from_secs(1_795_838_400).unwrap_or(Timestamp::UNIX_EPOCH);
    let mut batch = EventBatch::new();
    for i in 0..n {
        let ts = Timestamp::from_nanos(start.as_nanos() + i64::from(i) * 1_000_000);
        batch.push(
            &Event::new("acme", "http", ts)
                .with_dim("region", ["eu", "us", "ap"][(i % 3) as usize])
                .with_dim("device", format!("dev-{}", i % 200))
                .with_field("temp_c", f64::from(i % 1000) / 10.0),
        );
    }
    let mut files = Vec::new();
    if sink.push(&batch, start, &mut files).is_err() || sink.flush(&mut files).is_err() {
        return 0;
    }
    let Some(file) = files.first() else { return 0 };
    let magic = file.bytes.starts_with(b"PAR1") && file.bytes.ends_with(b"PAR1");
    if !magic || file.rows != u64::from(n) {
        return u32::MAX;
    }
    u32::try_from(file.bytes.len()).unwrap_or(u32::MAX)
}

#![no_main]
// Pipeline snapshots come back from storage. The fuzzer's bytes are given
// a valid checksum, so they reach the decoders behind it: any bytes give a
// typed error or a pipeline that keeps working, never a panic.

use edgestream::pipeline::{Outputs, Pipeline, PipelineConfig};
use edgestream::sample::stable_hash;
use edgestream::time::Timestamp;
use libfuzzer_sys::fuzz_target;

/// The seed `Pipeline::snapshot` checksums with.
const CHECKSUM_SEED: u64 = 0x7069_7065_6c69_6e65;

/// The config, shared with the test that writes this target's seed.
fn config() -> PipelineConfig {
    PipelineConfig::from_json_str(include_str!("../pipeline_snapshot_config.json")).expect("valid config")
}

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    bytes.extend_from_slice(&stable_hash(CHECKSUM_SEED, data).to_le_bytes());
    let Ok(mut pipeline) = Pipeline::restore(config(), &bytes) else { return };
    let now = Timestamp::from_secs(1_800_000_000).expect("in range");
    let body = r#"{"tenant":"t","stream":"s","ts":"2027-01-15T08:00:00Z","id":"a","dims":{"region":"eu"},"fields":{"x":2}}"#;
    let _ = pipeline.ingest("t", "application/x-ndjson", body, now);
    let mut out = Outputs::default();
    let _ = pipeline.next_deadline();
    pipeline.advance(now, &mut out);
    let _ = pipeline.stats();
    let mut again = Vec::new();
    pipeline.snapshot(&mut again, &mut out).expect("a restored pipeline snapshots");
    assert!(Pipeline::restore(config(), &again).is_ok());
});

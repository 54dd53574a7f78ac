#![no_main]
// The time-series codec. Arbitrary bytes decode to a typed error or to
// points, never a panic; decoded points re-encode and decode to the same
// bits. Bytes read as points (first byte: block size) round-trip exactly.

use edgestream::delta::series::{SeriesEncoder, decode};
use libfuzzer_sys::fuzz_target;

fn round_trip(ts: &[i64], values: &[f64], block: usize) {
    let mut encoder = SeriesEncoder::with_block_points(block);
    encoder.extend(ts.iter().copied().zip(values.iter().copied()));
    let bytes = encoder.finish();
    let (mut ts2, mut values2) = (Vec::new(), Vec::new());
    decode(&bytes, &mut ts2, &mut values2).expect("our own encoding decodes");
    assert_eq!(ts2, ts);
    assert!(values2.iter().zip(values).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert_eq!(values2.len(), values.len());
}

fuzz_target!(|data: &[u8]| {
    let (mut ts, mut values) = (Vec::new(), Vec::new());
    if decode(data, &mut ts, &mut values).is_ok() {
        round_trip(&ts, &values, 1024);
    }
    assert_eq!(ts.len(), values.len());

    if let Some((&block, rest)) = data.split_first() {
        let (ts, values): (Vec<i64>, Vec<f64>) = rest
            .chunks_exact(16)
            .map(|c| {
                let mut t = [0u8; 8];
                let mut v = [0u8; 8];
                t.copy_from_slice(&c[..8]);
                v.copy_from_slice(&c[8..]);
                (i64::from_le_bytes(t), f64::from_bits(u64::from_le_bytes(v)))
            })
            .unzip();
        round_trip(&ts, &values, usize::from(block).max(1));
    }
});

//! The time-series codec: bit-exact round trips of the real fixtures at
//! three timestamp resolutions, special values, hostile timestamps,
//! properties over arbitrary bit patterns, and a decoder that refuses bad
//! input with typed errors.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use edgestream::delta::series::{MAX_BLOCK_POINTS, SeriesDecoder, SeriesEncoder, SeriesError, decode, encode};
use proptest::prelude::*;

fn round_trip(ts: &[i64], values: &[f64]) -> usize {
    round_trip_blocks(ts, values, 1024)
}

fn round_trip_blocks(ts: &[i64], values: &[f64], block: usize) -> usize {
    let mut encoder = SeriesEncoder::with_block_points(block);
    encoder.extend(ts.iter().copied().zip(values.iter().copied()));
    let bytes = encoder.finish();
    let (mut got_ts, mut got_values) = (Vec::new(), Vec::new());
    let n = decode(&bytes, &mut got_ts, &mut got_values).unwrap();
    assert_eq!(n, ts.len());
    assert_eq!(got_ts, ts);
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got_values), bits(values), "values differ bit for bit");
    bytes.len()
}

#[test]
fn every_real_series_round_trips_bit_for_bit_at_every_resolution() {
    for (name, points) in common::series::all() {
        let values: Vec<f64> = points.iter().map(|p| p.1).collect();
        for (unit, div) in [("ns", 1), ("ms", 1_000_000), ("s", 1_000_000_000)] {
            let ts: Vec<i64> = points.iter().map(|p| p.0 / div).collect();
            let bytes = round_trip(&ts, &values);
            println!("{name} ({unit}): {:.3} bytes/point", bytes as f64 / points.len() as f64);
        }
    }
}

#[test]
fn special_values_survive() {
    let values = [
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        f64::from_bits(0x7ff8_dead_beef_0001), // a NaN with a payload
        f64::from_bits(0xfff0_0000_0000_0001), // a signalling NaN, negative
        f64::MIN_POSITIVE / 4.0,               // subnormal
        f64::MAX,
        f64::MIN,
        1.5,
        1.5,
        23.5,
        11.529000000000002,
    ];
    let ts: Vec<i64> = (0..values.len() as i64).collect();
    round_trip(&ts, &values);
    // In a block of decimals, as corrections.
    let mut mixed: Vec<f64> = (0..500).map(|i| f64::from(i) * 0.25).collect();
    mixed.extend(values);
    let ts: Vec<i64> = (0..mixed.len() as i64).collect();
    round_trip(&ts, &mixed);
}

#[test]
fn hostile_timestamps_survive() {
    let cases: [&[i64]; 5] = [
        &[i64::MIN, i64::MAX, i64::MIN, 0, i64::MAX],
        &[5, 5, 5, 5, 4, 3, 3, 100],
        &[0, 1_000, 2_000, 1_500, 2_500, 2_500, 3_500],
        &[-1_000_000_000, 0, 1_000_000_000],
        &[42],
    ];
    for ts in cases {
        let values: Vec<f64> = ts.iter().map(|&t| t as f64).collect();
        round_trip(ts, &values);
    }
}

#[test]
fn regular_decimal_series_cost_about_a_byte_a_point() {
    // One point a second, temperatures with one decimal.
    let ts: Vec<i64> = (0..10_000).map(|i| 1_795_838_400_000_000_000 + i * 1_000_000_000).collect();
    let values: Vec<f64> = (0..10_000).map(|i| 200.0 + f64::from((i * 7919) % 31) / 10.0).collect();
    let bytes = round_trip(&ts, &values);
    assert!(bytes < 10_000, "{bytes} bytes");
}

#[test]
fn streaming_takes_finished_blocks_and_keeps_the_rest() {
    let mut encoder = SeriesEncoder::with_block_points(100);
    for i in 0..250 {
        encoder.push(i, i as f64);
    }
    assert_eq!(encoder.pending(), 50);
    let first = encoder.take_finished();
    let rest = encoder.finish();
    let mut all = first.to_vec();
    all.extend_from_slice(&rest);
    let (mut ts, mut values) = (Vec::new(), Vec::new());
    let mut decoder = SeriesDecoder::new(&all);
    let mut blocks = Vec::new();
    while let Some(n) = decoder.next_block(&mut ts, &mut values) {
        blocks.push(n.unwrap());
    }
    assert_eq!(blocks, [100, 100, 50]);
    assert_eq!(ts, (0..250).collect::<Vec<_>>());
}

#[test]
fn bad_input_gets_typed_errors() {
    let bytes = encode(&[1, 2, 3, 4], &[1.0, 2.0, 3.5, 4.25]);
    let mut sink = (Vec::new(), Vec::new());
    let mut decode_err = |b: &[u8]| decode(b, &mut sink.0, &mut sink.1).unwrap_err();
    assert_eq!(decode_err(&[0x00]), SeriesError::Tag { block: 0, tag: 0 });
    assert_eq!(decode_err(&[0xE5, 0x00, 0x00]), SeriesError::Points { block: 0, points: 0 });
    assert_eq!(decode_err(&[0xE5, 0x81, 0x80, 0x01, 0x00]), SeriesError::Points { block: 0, points: 16_385 });
    for cut in 1..bytes.len() {
        let err = decode_err(&bytes[..cut]);
        assert!(matches!(err, SeriesError::Truncated { .. } | SeriesError::Section { .. }), "cut {cut}: {err}");
    }
    // A second block that is bad keeps the first block's points.
    let mut two = bytes.to_vec();
    two.push(0x17);
    let (mut ts, mut values) = (Vec::new(), Vec::new());
    assert_eq!(decode(&two, &mut ts, &mut values), Err(SeriesError::Tag { block: 1, tag: 0x17 }));
    assert_eq!(ts.len(), 4);
    assert_eq!(MAX_BLOCK_POINTS, 8192);
}

proptest! {
    #[test]
    fn arbitrary_bit_patterns_and_timestamps_round_trip(
        points in prop::collection::vec((any::<i64>(), any::<u64>()), 1..600), block in 1usize..300,
    ) {
        let ts: Vec<i64> = points.iter().map(|p| p.0).collect();
        let values: Vec<f64> = points.iter().map(|p| f64::from_bits(p.1)).collect();
        round_trip_blocks(&ts, &values, block);
    }

    #[test]
    fn decimal_like_series_round_trip(
        start in any::<i64>(), steps in prop::collection::vec(-3i64..1_000, 1..600),
        digits in 0u32..9, scaled in prop::collection::vec(-1_000_000i64..1_000_000, 1..600),
    ) {
        let mut t = start;
        let ts: Vec<i64> = steps.iter().map(|s| { t = t.wrapping_add(*s); t }).collect();
        let p = 10f64.powi(digits as i32);
        let values: Vec<f64> = scaled.iter().cycle().take(ts.len()).map(|k| *k as f64 / p).collect();
        round_trip(&ts, &values);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let (mut ts, mut values) = (Vec::new(), Vec::new());
        let _ = decode(&bytes, &mut ts, &mut values);
        prop_assert_eq!(ts.len(), values.len());
    }

    #[test]
    fn corrupted_encodings_never_panic(
        points in prop::collection::vec((any::<i32>(), -1_000i32..1_000), 2..200),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let ts: Vec<i64> = points.iter().map(|p| i64::from(p.0)).collect();
        let values: Vec<f64> = points.iter().map(|p| f64::from(p.1) / 8.0).collect();
        let mut bytes = encode(&ts, &values).to_vec();
        for (at, x) in flips {
            let i = at % bytes.len();
            bytes[i] ^= x;
        }
        let (mut ts, mut values) = (Vec::new(), Vec::new());
        let _ = decode(&bytes, &mut ts, &mut values);
        prop_assert_eq!(ts.len(), values.len());
    }
}

#[test]
fn fuzz_seeds_are_valid_encodings() {
    // `WRITE_FUZZ_SEEDS=1 cargo test --test series fuzz_seeds` refreshes them.
    let all = common::series::all();
    let (_, co2) = &all[0];
    let ts: Vec<i64> = co2.iter().take(300).map(|p| p.0 / 1_000_000_000).collect();
    let values: Vec<f64> = co2.iter().take(300).map(|p| p.1).collect();
    let mut noisy: Vec<f64> = (0..200).map(|i| f64::from(i) * 0.1 + 20.0).collect();
    noisy.extend([f64::NAN, -0.0, f64::INFINITY, 11.529000000000002]);
    let seeds = [
        ("co2_300.bin", SeriesEncoder::with_block_points(128), ts.clone(), values),
        ("noisy.bin", SeriesEncoder::new(), (0..noisy.len() as i64).collect(), noisy),
    ];
    for (name, mut encoder, ts, values) in seeds {
        encoder.extend(ts.iter().copied().zip(values.iter().copied()));
        let bytes = encoder.finish();
        round_trip(&ts, &values);
        if std::env::var_os("WRITE_FUZZ_SEEDS").is_some() {
            std::fs::write(format!("{}/fuzz/seeds/series/{name}", env!("CARGO_MANIFEST_DIR")), &bytes).unwrap();
        }
    }
}

#[test]
fn a_negative_zero_or_a_huge_value_does_not_push_a_block_out_of_decimal_mode() {
    for odd in [-0.0, 1e300, f64::NAN] {
        let mut values: Vec<f64> = (0..300).map(|i| f64::from(i) * 0.5).collect();
        values[150] = odd;
        let ts: Vec<i64> = (0..300).collect();
        let mut encoder = SeriesEncoder::new();
        encoder.extend(ts.iter().copied().zip(values.iter().copied()));
        assert_eq!(encoder.pending(), 300);
        encoder.flush();
        assert_eq!(encoder.stats().decimal_blocks, 1, "{odd}");
        round_trip(&ts, &values);
    }
}

//! The time-series codec against raw points, the `tsz` crate (Gorilla) and
//! `pco` (pcodec, a batch codec: the ratio reference), on every real
//! series in `../shared/data/timeseries`, in the same run.
//!
//! Timestamps are fed as seconds to every codec: `tsz` 0.1.4 silently
//! corrupts millisecond timestamps (its first delta has 14 bits). `pco`
//! compresses the timestamp and value columns with
//! `pco::standalone::simple_compress` and the default `ChunkConfig`.
//!
//! Sizes are printed first (bytes per point); criterion then times encode
//! and decode per file.
//!
//! `cargo bench --bench series_codec`; figures in BENCHMARKS.md.

#![allow(missing_docs, reason = "criterion generates the entry point")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benchmark inputs are the repository's fixtures, known good"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edgestream::delta::series::{SeriesEncoder, decode};
use pco::ChunkConfig;
use tsz::stream::{BufferedReader, BufferedWriter};
use tsz::{DataPoint, Decode, Encode, StdDecoder, StdEncoder};

/// The fixture loader the tests use.
#[path = "../tests/common/series.rs"]
mod fixtures;

struct Series {
    name: String,
    ts: Vec<i64>,
    values: Vec<f64>,
}

/// Every fixture, timestamps in seconds.
fn load() -> Vec<Series> {
    fixtures::all()
        .into_iter()
        .map(|(file, points)| Series {
            name: file.trim_end_matches(".csv").to_owned(),
            ts: points.iter().map(|p| p.0 / 1_000_000_000).collect(),
            values: points.iter().map(|p| p.1).collect(),
        })
        .collect()
}

fn ours(s: &Series) -> Vec<u8> {
    let mut encoder = SeriesEncoder::new();
    encoder.extend(s.ts.iter().copied().zip(s.values.iter().copied()));
    encoder.finish().to_vec()
}

fn gorilla(s: &Series) -> Box<[u8]> {
    let mut encoder = StdEncoder::new(s.ts[0] as u64, BufferedWriter::new());
    for (&t, &v) in s.ts.iter().zip(&s.values) {
        encoder.encode(DataPoint::new(t as u64, v));
    }
    encoder.close()
}

fn gorilla_decode(bytes: Box<[u8]>, n: usize) -> (Vec<i64>, Vec<f64>) {
    let mut decoder = StdDecoder::new(BufferedReader::new(bytes));
    let (mut ts, mut values) = (Vec::with_capacity(n), Vec::with_capacity(n));
    while let Ok(p) = decoder.next() {
        ts.push(p.get_time() as i64);
        values.push(p.get_value());
    }
    (ts, values)
}

fn pcodec(s: &Series) -> (Vec<u8>, Vec<u8>) {
    let config = ChunkConfig::default();
    (
        pco::standalone::simple_compress(&s.ts, &config).unwrap(),
        pco::standalone::simple_compress(&s.values, &config).unwrap(),
    )
}

fn sizes(all: &[Series]) {
    println!("\nbytes per point (ours / tsz / pco / raw 16):");
    let (mut n, mut o, mut g, mut p) = (0usize, 0usize, 0usize, 0usize);
    for s in all {
        let ours = ours(s);
        let gorilla = gorilla(s);
        let (pt, pv) = pcodec(s);
        // Every codec must give the series back.
        let (mut ts, mut values) = (Vec::new(), Vec::new());
        decode(&ours, &mut ts, &mut values).unwrap();
        assert_eq!(ts, s.ts);
        assert!(values.iter().zip(&s.values).all(|(a, b)| a.to_bits() == b.to_bits()));
        let (gts, gvalues) = gorilla_decode(gorilla.clone(), s.ts.len());
        assert_eq!(gts, s.ts, "tsz on {}", s.name);
        assert!(gvalues.iter().zip(&s.values).all(|(a, b)| a.to_bits() == b.to_bits()));
        let k = s.ts.len() as f64;
        let pco_len = pt.len() + pv.len();
        println!(
            "  {:<44} {:>6} points  {:>5.2} / {:>5.2} / {:>5.2}   ours ÷ pco {:.2}, ours ÷ tsz {:.2}",
            s.name,
            s.ts.len(),
            ours.len() as f64 / k,
            gorilla.len() as f64 / k,
            pco_len as f64 / k,
            ours.len() as f64 / pco_len as f64,
            ours.len() as f64 / gorilla.len() as f64,
        );
        n += s.ts.len();
        o += ours.len();
        g += gorilla.len();
        p += pco_len;
    }
    let k = n as f64;
    println!(
        "  {:<44} {:>6} points  {:>5.2} / {:>5.2} / {:>5.2}\n",
        "all",
        n,
        o as f64 / k,
        g as f64 / k,
        p as f64 / k
    );
}

fn bench(c: &mut Criterion) {
    let all = load();
    sizes(&all);
    for s in &all {
        let mut group = c.benchmark_group(format!("series/encode/{}", s.name));
        group.throughput(Throughput::Elements(s.ts.len() as u64));
        group.bench_function("edgestream", |b| b.iter(|| black_box(ours(s))));
        group.bench_function("tsz", |b| b.iter(|| black_box(gorilla(s))));
        group.bench_function("pco", |b| b.iter(|| black_box(pcodec(s))));
        group.finish();

        let encoded = ours(s);
        let gorilla_bytes = gorilla(s);
        let (pt, pv) = pcodec(s);
        let mut group = c.benchmark_group(format!("series/decode/{}", s.name));
        group.throughput(Throughput::Elements(s.ts.len() as u64));
        group.bench_function("edgestream", |b| {
            let (mut ts, mut values) = (Vec::with_capacity(s.ts.len()), Vec::with_capacity(s.ts.len()));
            b.iter(|| {
                ts.clear();
                values.clear();
                black_box(decode(&encoded, &mut ts, &mut values).unwrap())
            })
        });
        group.bench_function("tsz", |b| b.iter(|| black_box(gorilla_decode(gorilla_bytes.clone(), s.ts.len()))));
        group.bench_function("pco", |b| {
            b.iter(|| {
                let ts: Vec<i64> = pco::standalone::simple_decompress(&pt).unwrap();
                let values: Vec<f64> = pco::standalone::simple_decompress(&pv).unwrap();
                black_box((ts, values))
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

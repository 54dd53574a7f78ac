//! Nexmark, the streaming benchmark Flink, Arroyo, RisingWave and Feldera
//! report on, over edgestream's windows.
//!
//! ```sh
//! cargo run --release --features parquet --example nexmark -- --events 10000000 --window 10s --out /tmp/nexmark
//! ```
//!
//! Generates `--events` Nexmark events (the `nexmark` crate, default
//! generator configuration, a fixed base time so runs repeat), runs the
//! bids through tumbling windows on their event time with edgestream's
//! decode-free path, and writes into `--out`:
//!
//! - `bids/`: every bid as Hive-partitioned Parquet (`--format parquet`,
//!   the default) with the columns `auction`, `bidder`, `price` (`Int64`)
//!   and `date_time` (timestamp, UTC), by edgestream's Parquet writer; or
//!   `bids.csv` with `--format csv`;
//! - `q7.csv`: `window_start,window_end,max_price,bids`, one row per window;
//! - `q5.csv`: `window_start,window_end,auction,bids`, one row per window
//!   and auction with a bid.
//!
//! It prints the events generated, the bids, the windows, and the
//! throughput of the windowing stage alone and of the whole run.
//! `benches/nexmark_duckdb.py` runs the same queries in DuckDB on the
//! files; BENCHMARKS.md has the figures.

#![allow(clippy::print_stdout, reason = "an example reports on stdout")]

pub(crate) mod queries;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use edgestream::event::{Event, EventBatch};
use edgestream::sink::{EventColumns, EventSink, FinishedFile, ParquetOptions, Rollover, SinkConfig};
use edgestream::time::{Span, Timestamp};
use queries::{Bid, Error, Q5Row, Q7Row};

/// The generator's base time: 2026-11-28T04:00:00Z, so every run makes
/// the same events (the crate's default is the wall clock).
pub(crate) const BASE_TIME_MS: u64 = 1_795_838_400_000;

/// How the bids are archived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BidFormat {
    /// Hive-partitioned Parquet under `bids/`.
    Parquet,
    /// One `bids.csv`.
    Csv,
}

/// The command line.
#[derive(Clone, Debug)]
pub(crate) struct Args {
    /// Events to generate (persons, auctions and bids).
    pub(crate) events: u64,
    /// Window size.
    pub(crate) window: Span,
    /// Output directory.
    pub(crate) out: PathBuf,
    /// Bid archive format.
    pub(crate) format: BidFormat,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let usage = "usage: nexmark --events <N> --window <e.g. 10s> --out <dir> [--format parquet|csv]";
        let (mut events, mut window, mut out, mut format) = (None, None, None, BidFormat::Parquet);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value\n{usage}"));
            match flag.as_str() {
                "--events" => events = Some(value()?.parse::<u64>().map_err(|e| format!("--events: {e}"))?),
                "--window" => window = Some(value()?.parse::<Span>().map_err(|e| format!("--window: {e}"))?),
                "--out" => out = Some(PathBuf::from(value()?)),
                "--format" => {
                    format = match value()?.as_str() {
                        "parquet" => BidFormat::Parquet,
                        "csv" => BidFormat::Csv,
                        other => return Err(format!("--format: {other:?} is not parquet or csv")),
                    }
                }
                "-h" | "--help" => return Err(usage.to_owned()),
                other => return Err(format!("unknown argument {other:?}\n{usage}")),
            }
        }
        match (events, window, out) {
            (Some(events), Some(window), Some(out)) if window.is_positive() => Ok(Args { events, window, out, format }),
            _ => Err(usage.to_owned()),
        }
    }
}

/// What a run did.
#[derive(Clone, Debug)]
pub(crate) struct Report {
    /// Events generated.
    pub(crate) events: u64,
    /// Bids among them.
    pub(crate) bids: usize,
    /// q7 rows (windows).
    pub(crate) windows: usize,
    /// q5 rows.
    pub q5_rows: usize,
    /// Seconds in the windowing stage (q7 and q5).
    pub(crate) window_secs: f64,
    /// Seconds for the whole run.
    pub(crate) total_secs: f64,
}

/// The bids of the first `events` Nexmark events.
pub(crate) fn generate(events: u64) -> Vec<Bid> {
    let config = nexmark::config::NexmarkConfig { base_time: BASE_TIME_MS, ..Default::default() };
    nexmark::EventGenerator::new(config)
        .take(events as usize)
        .filter_map(|e| match e {
            nexmark::event::Event::Bid(b) => Some(Bid {
                auction: b.auction as u64,
                bidder: b.bidder as u64,
                price: b.price as u64,
                ts: Timestamp::from_millis(b.date_time as i64).unwrap_or(Timestamp::from_nanos(0)),
            }),
            _ => None,
        })
        .collect()
}

/// Runs the example: see the module documentation.
pub(crate) fn run(args: &Args) -> Result<Report, Error> {
    let started = Instant::now();
    let bids = generate(args.events);

    let windowing = Instant::now();
    let q7 = queries::q7(&bids, args.window)?;
    let q5 = queries::q5(&bids, args.window)?;
    let window_secs = windowing.elapsed().as_secs_f64();

    std::fs::create_dir_all(&args.out)?;
    write_bids(&bids, args)?;
    let mut text = String::from("window_start,window_end,max_price,bids\n");
    for Q7Row { start, end, max_price, bids } in &q7 {
        writeln!(text, "{},{},{max_price},{bids}", start.to_rfc3339(), end.to_rfc3339())?;
    }
    std::fs::write(args.out.join("q7.csv"), text)?;
    let mut text = String::from("window_start,window_end,auction,bids\n");
    for Q5Row { start, end, auction, bids } in &q5 {
        writeln!(text, "{},{},{auction},{bids}", start.to_rfc3339(), end.to_rfc3339())?;
    }
    std::fs::write(args.out.join("q5.csv"), text)?;

    Ok(Report {
        events: args.events,
        bids: bids.len(),
        windows: q7.len(),
        q5_rows: q5.len(),
        window_secs,
        total_secs: started.elapsed().as_secs_f64(),
    })
}

/// Every bid through edgestream's sink: Parquet files under `bids/`, or
/// the CSV files joined into one `bids.csv`.
fn write_bids(bids: &[Bid], args: &Args) -> Result<(), Error> {
    let config = SinkConfig {
        columns: EventColumns {
            int_fields: vec!["auction".into(), "bidder".into(), "price".into()],
            time_column: "date_time".into(),
            ..EventColumns::default()
        },
        rollover: Rollover { max_rows: 10_000_000, max_bytes: 512 * 1024 * 1024, max_age: Span::from_hours(24) },
        writer_id: "nexmark".into(),
        ..SinkConfig::default()
    };
    let mut sink = match args.format {
        BidFormat::Parquet => EventSink::parquet(config, ParquetOptions::default())?,
        BidFormat::Csv => EventSink::csv(config)?,
    };
    let now = Timestamp::from_millis(BASE_TIME_MS as i64).unwrap_or(Timestamp::from_nanos(0));
    let mut files: Vec<FinishedFile> = Vec::new();
    let mut batch = EventBatch::new();
    let mut event = Event::new("nexmark", "bids", now)
        .with_field("auction", 0.0)
        .with_field("bidder", 0.0)
        .with_field("price", 0.0);
    for chunk in bids.chunks(4_096) {
        batch.clear();
        for bid in chunk {
            event.ts = bid.ts;
            for ((_, v), x) in event.fields.iter_mut().zip([bid.auction, bid.bidder, bid.price]) {
                *v = x as f64;
            }
            batch.push(&event);
        }
        sink.push(&batch, now, &mut files)?;
    }
    sink.flush(&mut files)?;
    match args.format {
        BidFormat::Parquet => {
            let dir = args.out.join("bids");
            for file in &files {
                let path = dir.join(&file.path);
                std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
                std::fs::write(path, &file.bytes)?;
            }
        }
        BidFormat::Csv => {
            // One header, then every file's rows.
            let mut csv: Vec<u8> = Vec::new();
            for (i, file) in files.iter().enumerate() {
                let header = file.bytes.iter().position(|&b| b == b'\n').map_or(0, |p| p + 1);
                let skip = if i == 0 { 0 } else { header };
                csv.extend_from_slice(file.bytes.get(skip..).unwrap_or_default());
            }
            std::fs::write(args.out.join("bids.csv"), csv)?;
        }
    }
    Ok(())
}

#[allow(dead_code, reason = "the test includes this file for `run`")]
fn main() {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    match run(&args) {
        Ok(r) => {
            println!("events generated: {}", r.events);
            println!("bids:             {}", r.bids);
            println!("windows:          {} (q5 rows: {})", r.windows, r.q5_rows);
            println!(
                "windowing stage:  {:.3} s, {:.2} M bids/s (q7 and q5, one core)",
                r.window_secs,
                r.bids as f64 / r.window_secs / 1e6
            );
            println!(
                "whole run:        {:.3} s, {:.2} M events/s (generation, windows, files)",
                r.total_secs,
                r.events as f64 / r.total_secs / 1e6
            );
            println!("written to {}", args.out.display());
        }
        Err(e) => {
            eprintln!("nexmark: {e}");
            std::process::exit(1);
        }
    }
}

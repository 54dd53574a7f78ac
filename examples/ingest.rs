//! Decode, validate and count a body of events, as an ingest endpoint does.
//!
//! ```text
//! cargo run --example ingest                          # the bundled sample
//! cargo run --example ingest -- my-events.ndjson      # your own file
//! cargo run --example ingest -- body.pb application/x-protobuf
//! ```
//!
//! The content type is taken from the second argument, or guessed from the
//! file extension (`.json`, `.ndjson` / `.jsonl`, `.pb` / `.bin`).

use std::error::Error;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use edgestream::event::{EventBatch, EventRef, Format, Limits};
use edgestream::stats::IngestStats;
use edgestream::time::Timestamp;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/sample.ndjson");

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().map_or(SAMPLE, String::as_str);
    let format = match args.get(1) {
        Some(content_type) => Format::from_content_type(content_type)?,
        None => guess_format(path),
    };
    let body = Bytes::from(std::fs::read(path).map_err(|e| format!("{path}: {e}"))?);
    // The host owns the clock; the library only ever receives `now`.
    let now = Timestamp::from_nanos(i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos())?);

    let limits = Limits::default();
    let mut stats = IngestStats::default();
    let mut batch = EventBatch::new();

    println!("edgestream ingest: {path}");
    println!("  {} bytes as {format}\n", body.len());

    let started = Instant::now();
    if let Err(e) = format.decode_into(&body, &limits, &mut batch) {
        stats.record_malformed(body.len(), &e);
        println!("rejected whole: {e}");
        println!("\nstats: {}", serde_json::to_string(&stats)?);
        return Ok(());
    }
    let decoded = batch.len();
    let report = limits.validate(&mut batch, now);
    let elapsed = started.elapsed();
    stats.record_batch(body.len(), &report);

    println!(
        "decoded {decoded} events and validated them in {:.1} µs ({} distinct strings interned)",
        elapsed.as_secs_f64() * 1e6,
        batch.symbols().len()
    );
    println!("  accepted {:>4}", report.accepted());
    println!("  rejected {:>4}", report.rejected.len());
    for r in &report.rejected {
        println!("    event #{:<3} {:<18} {}", r.index, r.reason.kind(), r.reason);
    }

    println!("\nfirst accepted events:");
    for event in batch.iter().take(5) {
        println!("  {}", one_line(&event));
    }

    println!("\nthe accepted events re-encoded:");
    for other in [Format::Json, Format::Ndjson, Format::Protobuf] {
        let mut wire = Vec::new();
        other.encode(&batch, &mut wire);
        let mut back = EventBatch::new();
        other.decode_into(&Bytes::from(wire.clone()), &limits, &mut back)?;
        let same = if back == batch { "round trip identical" } else { "ROUND TRIP DIFFERS" };
        println!("  {:<24} {:>6} bytes  ({same})", other.content_type(), wire.len());
    }

    println!("\nwhat a malformed body gets:");
    for (content_type, bad) in [
        ("application/json", &br#"{"tenant": "acme", "stream": "metrics", "ts": }"#[..]),
        (
            "application/x-ndjson",
            &b"{\"tenant\":\"acme\",\"stream\":\"m\",\"ts\":1}\n{\"tenant\":\"acme\",\"ts\":2}\n"[..],
        ),
        ("application/x-protobuf", &[0x0a, 0x09, 0x0a, 0x04, b'a', b'c'][..]),
        ("text/csv", &b"tenant,ts\nacme,1\n"[..]),
    ] {
        let result = Format::from_content_type(content_type)
            .and_then(|f| f.decode_into(&Bytes::from_static(bad), &limits, &mut EventBatch::new()));
        if let Err(e) = result {
            stats.record_malformed(bad.len(), &e);
            println!("  {content_type:<24} {e}");
        }
    }

    println!("\nstats, as an /api/health endpoint would serve them:");
    println!("  {}", serde_json::to_string(&stats)?);
    Ok(())
}

fn guess_format(path: &str) -> Format {
    match path.rsplit('.').next() {
        Some("json") => Format::Json,
        Some("pb" | "bin" | "protobuf") => Format::Protobuf,
        _ => Format::Ndjson,
    }
}

fn one_line(e: &EventRef<'_>) -> String {
    let mut s = format!("{} {}/{}", e.ts(), e.tenant(), e.stream());
    for (k, v) in e.dims() {
        s.push_str(&format!(" {k}={v}"));
    }
    for (k, v) in e.fields() {
        s.push_str(&format!(" {k}={v}"));
    }
    if let Some(g) = e.geo() {
        s.push_str(&format!(" @({}, {})", g.lat, g.lon));
    }
    s
}

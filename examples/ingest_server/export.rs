//! `GET /api/export`: window results (from the rollup) or raw events (from
//! the archive) in a time range, as CSV or Parquet, streamed.

use std::path::{Path, PathBuf};

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgestream::time::Timestamp;
use edgestream::window::QueryResult;
use serde_json::json;
use tokio::sync::mpsc;

use edgestream::host::http::RangeParams;
use edgestream::host::tokio::{Clock, SystemClock};

use super::{AppState, error, reply};

/// Where the archive's files are and how they are written.
#[derive(Clone, Debug)]
pub(crate) struct Archive {
    /// The [`LocalDir`](edgestream::host::tokio::LocalDir) root.
    pub(crate) dir: PathBuf,
    /// Parquet files; otherwise CSV.
    pub(crate) parquet: bool,
}

/// Rows per chunk of a streamed CSV body.
const ROWS_PER_CHUNK: usize = 1024;

pub(crate) async fn export(state: AppState, params: RangeParams, tenant: String) -> Response {
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, json!({"error": "bad_query", "message": m}));
    let format = params.format.clone().unwrap_or_else(|| "csv".into());
    if format != "csv" && format != "parquet" {
        return bad("format: expected csv or parquet");
    }
    match params.what.as_deref().unwrap_or("results") {
        "results" => match super::rollup(&params, &state, tenant).await {
            Ok(result) if format == "csv" => attachment("results.csv", "text/csv", results_csv(result)),
            Ok(result) => results_parquet(&result),
            Err(response) => response,
        },
        "events" => {
            let Some(archive) = state.archive.clone() else {
                return bad("this server keeps no archive of raw events");
            };
            if (format == "parquet") != archive.parquet {
                let kept = if archive.parquet { "parquet" } else { "csv" };
                return bad(&format!("raw events are archived as {kept}: export them with format={kept}"));
            }
            let (from, to) = match params.range(SystemClock.now()) {
                Ok(range) => range,
                Err(r) => return reply(r),
            };
            // Every event accepted so far is then in a stored file.
            match tokio::time::timeout(std::time::Duration::from_secs(30), state.host.flush_archive()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return super::host_error(e),
                Err(_) => {
                    let message = "the archive's files could not be stored in 30 s; see /api/health";
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({"error": "archive_busy", "message": message}),
                    );
                }
            }
            let stream = params.stream_or_default();
            let files = match partition_files(&archive.dir, &tenant, &stream, from, to) {
                Ok(files) => files,
                Err(e) => {
                    return error(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": "io", "message": e.to_string()}));
                }
            };
            if archive.parquet {
                events_parquet(files, from, to)
            } else {
                attachment("events.csv", "text/csv", events_csv(files, from, to))
            }
        }
        _ => bad("what: expected results or events"),
    }
}

fn attachment(name: &str, content_type: &'static str, body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        body,
    )
        .into_response()
}

/// A body fed by a bounded channel: the producer waits for the client.
fn channel_body() -> (mpsc::Sender<Result<Bytes, std::io::Error>>, Body) {
    let (tx, rx) = mpsc::channel(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    (tx, Body::from_stream(stream))
}

/// RFC 4180 quoting where needed.
fn csv_field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn csv_number(out: &mut String, value: Option<f64>) {
    if let Some(v) = value {
        out.push_str(&v.to_string());
    }
}

/// The rollup series as CSV: one row per point and field; a column per
/// label name met in any series, then the aggregates and the quantiles.
fn results_csv(result: QueryResult) -> Body {
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        let mut labels: Vec<String> =
            result.series.iter().flat_map(|s| s.labels.iter().map(|(k, _)| k.clone())).collect();
        labels.sort();
        labels.dedup();
        let quantiles: Vec<f64> = result
            .series
            .iter()
            .flat_map(|s| s.points.iter().flat_map(|p| p.quantiles.iter().map(|(q, _)| *q)))
            .fold(Vec::new(), |mut qs, q| {
                if !qs.contains(&q) {
                    qs.push(q);
                }
                qs
            });
        let mut text = String::from("start");
        for label in &labels {
            text.push(',');
            csv_field(&mut text, label);
        }
        text.push_str(",overflow,field,events,count,sum,min,max,mean,last");
        for q in &quantiles {
            text.push_str(&format!(",p{}", q * 100.0));
        }
        text.push_str("\r\n");
        let mut rows = 0;
        for series in &result.series {
            for point in &series.points {
                text.push_str(&point.start.to_string());
                for label in &labels {
                    text.push(',');
                    if let Some((_, v)) = series.labels.iter().find(|(k, _)| k == label) {
                        csv_field(&mut text, v);
                    }
                }
                text.push_str(if series.overflow { ",true," } else { ",false," });
                csv_field(&mut text, &series.field);
                text.push_str(&format!(",{},{}", point.events, point.count));
                for v in [point.sum, point.min, point.max, point.mean, point.last] {
                    text.push(',');
                    csv_number(&mut text, v);
                }
                for q in &quantiles {
                    text.push(',');
                    csv_number(&mut text, point.quantiles.iter().find(|(x, _)| x == q).map(|(_, v)| *v));
                }
                text.push_str("\r\n");
                rows += 1;
                if rows % ROWS_PER_CHUNK == 0 && tx.send(Ok(Bytes::from(std::mem::take(&mut text)))).await.is_err() {
                    return;
                }
            }
        }
        let _ = tx.send(Ok(Bytes::from(text))).await;
    });
    body
}

#[cfg(feature = "parquet")]
fn results_parquet(result: &QueryResult) -> Response {
    use std::sync::Arc;

    use arrow_array::builder::{
        BooleanBuilder, Float64Builder, StringBuilder, TimestampNanosecondBuilder, UInt64Builder,
    };
    use arrow_array::{ArrayRef, RecordBatch};

    let mut start = TimestampNanosecondBuilder::new().with_timezone("UTC");
    let (mut labels, mut field) = (StringBuilder::new(), StringBuilder::new());
    let mut overflow = BooleanBuilder::new();
    let mut events = UInt64Builder::new();
    let mut numbers: Vec<Float64Builder> = (0..6).map(|_| Float64Builder::new()).collect();
    let mut quantiles: Vec<(f64, Float64Builder)> = Vec::new();
    for series in &result.series {
        for point in &series.points {
            for (q, _) in &point.quantiles {
                if !quantiles.iter().any(|(x, _)| x == q) {
                    quantiles.push((*q, Float64Builder::new()));
                }
            }
        }
    }
    for series in &result.series {
        let text: Vec<String> = series.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for point in &series.points {
            start.append_value(point.start.as_nanos());
            labels.append_value(text.join(","));
            overflow.append_value(series.overflow);
            field.append_value(&series.field);
            events.append_value(point.events);
            let values = [Some(point.count), point.sum, point.min, point.max, point.mean, point.last];
            for (builder, value) in numbers.iter_mut().zip(values) {
                builder.append_option(value);
            }
            for (q, builder) in &mut quantiles {
                builder.append_option(point.quantiles.iter().find(|(x, _)| x == q).map(|(_, v)| *v));
            }
        }
    }
    let mut columns: Vec<(String, ArrayRef)> = vec![
        ("start".into(), Arc::new(start.finish())),
        ("labels".into(), Arc::new(labels.finish())),
        ("overflow".into(), Arc::new(overflow.finish())),
        ("field".into(), Arc::new(field.finish())),
        ("events".into(), Arc::new(events.finish())),
    ];
    for (name, mut builder) in ["count", "sum", "min", "max", "mean", "last"].into_iter().zip(numbers) {
        columns.push((name.into(), Arc::new(builder.finish())));
    }
    for (q, mut builder) in quantiles {
        columns.push((format!("p{}", q * 100.0), Arc::new(builder.finish())));
    }
    let written = RecordBatch::try_from_iter(columns).map_err(|e| e.to_string()).and_then(|batch| {
        let mut bytes = Vec::new();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).map_err(|e| e.to_string())?;
        writer.write(&batch).map_err(|e| e.to_string())?;
        writer.close().map_err(|e| e.to_string())?;
        Ok(bytes)
    });
    match written {
        Ok(bytes) => attachment("results.parquet", "application/vnd.apache.parquet", Body::from(bytes)),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": "parquet", "message": e})),
    }
}

#[cfg(not(feature = "parquet"))]
fn results_parquet(_: &QueryResult) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        json!({"error": "bad_query", "message": "Parquet export needs the `parquet` feature"}),
    )
}

/// The archive files of `tenant` and `stream` whose hour partition
/// overlaps `[from, to)`, in path order (which is time, then file order).
fn partition_files(
    dir: &Path,
    tenant: &str,
    stream: &str,
    from: Timestamp,
    to: Timestamp,
) -> std::io::Result<Vec<PathBuf>> {
    let root = dir
        .join(format!("tenant={}", edgestream::sink::partition_value(tenant)))
        .join(format!("stream={}", edgestream::sink::partition_value(stream)));
    let mut files = Vec::new();
    let Ok(dates) = std::fs::read_dir(&root) else { return Ok(files) };
    for date in dates {
        let date = date?.path();
        let Some(day) =
            date.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("date=")).map(str::to_owned)
        else {
            continue;
        };
        for hour in std::fs::read_dir(&date)? {
            let hour = hour?.path();
            let Some(h) = hour.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("hour=")) else {
                continue;
            };
            let Ok(start) = Timestamp::parse_rfc3339(&format!("{day}T{h}:00:00Z")) else { continue };
            let end = start.saturating_add(edgestream::time::Span::from_hours(1));
            if end <= from || start >= to {
                continue;
            }
            for file in std::fs::read_dir(&hour)? {
                let file = file?.path();
                // Skip the writer's temporary files.
                if file.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.')) {
                    files.push(file);
                }
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Splits CSV text into records, honouring quoted fields that hold line
/// breaks; each record keeps its line ending.
fn csv_records(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut quoted = false;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '"' => quoted = !quoted,
                '\n' if !quoted => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        let (record, tail) = rest.split_at(end);
        rest = tail;
        Some(record)
    })
}

/// The archived CSV files' rows whose time (the first column) is in
/// `[from, to)`, under one header; one file in memory at a time.
fn events_csv(files: Vec<PathBuf>, from: Timestamp, to: Timestamp) -> Body {
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        let mut header_sent = false;
        for path in files {
            let text = match tokio::fs::read_to_string(&path).await {
                Ok(text) => text,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let mut records = csv_records(&text);
            let header = records.next().unwrap_or_default();
            let mut chunk = String::new();
            if !header_sent {
                chunk.push_str(header);
                header_sent = true;
            }
            for record in records {
                let time = record.split(',').next().unwrap_or_default().trim_end();
                if Timestamp::parse_rfc3339(time).is_ok_and(|t| t >= from && t < to) {
                    chunk.push_str(record);
                }
            }
            if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return;
            }
        }
    });
    body
}

#[cfg(feature = "parquet")]
fn events_parquet(files: Vec<PathBuf>, from: Timestamp, to: Timestamp) -> Response {
    let (tx, body) = channel_body();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = copy_parquet(&files, from, to, &tx) {
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    attachment("events.parquet", "application/vnd.apache.parquet", body)
}

/// Writes into the response body in chunks, waiting for the client.
#[cfg(feature = "parquet")]
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

#[cfg(feature = "parquet")]
impl std::io::Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= 1 << 16 {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buffer));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| std::io::Error::other("the client went away"))
    }
}

/// Reads the archive's own Parquet files (never untrusted input) one row
/// group at a time, keeps the rows in `[from, to)` and writes them as one
/// Parquet file.
#[cfg(feature = "parquet")]
fn copy_parquet(
    files: &[PathBuf],
    from: Timestamp,
    to: Timestamp,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), String> {
    use arrow_array::{Array, BooleanArray, TimestampNanosecondArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let mut writer: Option<parquet::arrow::ArrowWriter<ChannelWriter>> = None;
    for path in files {
        let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| e.to_string())?
            .build()
            .map_err(|e| e.to_string())?;
        for batch in reader {
            let batch = batch.map_err(|e| e.to_string())?;
            let times = batch
                .column(0)
                .as_any()
                .downcast_ref::<TimestampNanosecondArray>()
                .ok_or("the first column is not a nanosecond timestamp")?;
            let keep: BooleanArray = (0..times.len())
                .map(|i| Some(times.is_valid(i) && times.value(i) >= from.as_nanos() && times.value(i) < to.as_nanos()))
                .collect();
            let kept = arrow_select::filter::filter_record_batch(&batch, &keep).map_err(|e| e.to_string())?;
            if writer.is_none() {
                let sink = ChannelWriter { tx: tx.clone(), buffer: Vec::new() };
                writer =
                    Some(parquet::arrow::ArrowWriter::try_new(sink, batch.schema(), None).map_err(|e| e.to_string())?);
            }
            if let Some(w) = &mut writer {
                w.write(&kept).map_err(|e| e.to_string())?;
            }
        }
    }
    match writer {
        Some(w) => {
            let mut sink = w.into_inner().map_err(|e| e.to_string())?;
            std::io::Write::flush(&mut sink).map_err(|e| e.to_string())
        }
        // No file in the range: an empty body says so.
        None => Ok(()),
    }
}

#[cfg(not(feature = "parquet"))]
fn events_parquet(_: Vec<PathBuf>, _: Timestamp, _: Timestamp) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        json!({"error": "bad_query", "message": "Parquet export needs the `parquet` feature"}),
    )
}

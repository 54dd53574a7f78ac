//! Raw events as CSV (RFC 4180): the same columns as the Parquet files,
//! RFC 3339 times, maps as JSON objects.

use std::fmt::Write as _;
use std::sync::Arc;

use super::{
    Encoder, EncoderFactory, EventColumns, EventSink, ResultColumns, ResultSink, Row, SinkConfig, SinkError,
    result_values, wrong_row,
};
use crate::event::EventIdRef;
use crate::window::WindowResult;

impl EventSink {
    /// A sink writing raw events as CSV files (`.csv`): a header row, then
    /// one row per event with the columns of the Parquet schema; times in
    /// RFC 3339 (UTC, exact to the nanosecond), the `dims` and `fields`
    /// maps as JSON objects, byte ids and payloads in base64, floats
    /// written so they read back exactly (`NaN`, `Infinity`, `-Infinity`
    /// for the non-finite ones).
    pub fn csv(config: SinkConfig) -> Result<EventSink, SinkError> {
        super::check_columns(&config.columns)?;
        let factory = CsvFactory { columns: Arc::new(config.columns.clone()) };
        EventSink::new(config, Box::new(factory))
    }
}

struct CsvFactory {
    columns: Arc<EventColumns>,
}

impl EncoderFactory for CsvFactory {
    fn open(&self) -> Result<Box<dyn Encoder>, SinkError> {
        let mut out = String::with_capacity(64 * 1024);
        let mut header: Vec<&str> = vec!["ts", "tenant", "stream", "id"];
        header.extend(self.columns.dims.iter().map(String::as_str));
        header.extend(self.columns.fields.iter().map(String::as_str));
        header.extend(["dims", "fields", "lat", "lon"]);
        if self.columns.payload {
            header.push("payload");
        }
        for (i, name) in header.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            quote(&mut out, name);
        }
        out.push_str("\r\n");
        Ok(Box::new(CsvFile { columns: Arc::clone(&self.columns), out }))
    }

    fn extension(&self) -> &'static str {
        "csv"
    }
}

struct CsvFile {
    columns: Arc<EventColumns>,
    out: String,
}

impl Encoder for CsvFile {
    fn push(&mut self, row: Row<'_>) -> Result<(), SinkError> {
        let Row::Event(e) = row else { return Err(wrong_row()) };
        let out = &mut self.out;
        out.push_str(&e.ts().to_rfc3339());
        out.push(',');
        quote(out, e.tenant());
        out.push(',');
        quote(out, e.stream());
        out.push(',');
        match e.id() {
            Some(EventIdRef::Str(s)) => quote(out, s),
            Some(EventIdRef::Bytes(b)) => base64(out, b),
            None => {}
        }
        for name in &self.columns.dims {
            out.push(',');
            if let Some(v) = e.dim(name) {
                quote(out, v);
            }
        }
        for name in &self.columns.fields {
            out.push(',');
            if let Some(v) = e.field(name) {
                number(out, v);
            }
        }
        out.push(',');
        let mut json = String::from("{");
        for (i, (k, v)) in e.dims().filter(|(k, _)| !self.columns.dims.iter().any(|d| d == k)).enumerate() {
            if i > 0 {
                json.push(',');
            }
            json_string(&mut json, k);
            json.push(':');
            json_string(&mut json, v);
        }
        json.push('}');
        quote(out, &json);
        out.push(',');
        json.clear();
        json.push('{');
        for (i, (k, v)) in e.fields().filter(|(k, _)| !self.columns.fields.iter().any(|f| f == k)).enumerate() {
            if i > 0 {
                json.push(',');
            }
            json_string(&mut json, k);
            json.push(':');
            // JSON has no NaN or infinities: those go as strings, as the
            // Protobuf JSON mapping does.
            if v.is_finite() {
                number(&mut json, v);
            } else {
                json.push('"');
                number(&mut json, v);
                json.push('"');
            }
        }
        json.push('}');
        quote(out, &json);
        let geo = e.geo();
        out.push(',');
        if let Some(g) = geo {
            number(out, g.lat);
        }
        out.push(',');
        if let Some(g) = geo {
            number(out, g.lon);
        }
        if self.columns.payload {
            out.push(',');
            if let Some(p) = e.payload() {
                base64(out, p);
            }
        }
        out.push_str("\r\n");
        Ok(())
    }

    fn size(&self) -> usize {
        self.out.len()
    }

    fn finish(self: Box<Self>) -> Result<Vec<u8>, SinkError> {
        Ok(self.out.into_bytes())
    }
}

impl ResultSink {
    /// A sink writing window results as CSV files (`.csv`), with the
    /// columns of the [`ResultSink`] schema; `labels` as a JSON object.
    pub fn csv(config: SinkConfig, columns: ResultColumns) -> Result<ResultSink, SinkError> {
        columns.check()?;
        ResultSink::new(config, Box::new(CsvResultFactory { columns: Arc::new(columns) }))
    }
}

struct CsvResultFactory {
    columns: Arc<ResultColumns>,
}

impl EncoderFactory for CsvResultFactory {
    fn open(&self) -> Result<Box<dyn Encoder>, SinkError> {
        let mut header: Vec<String> =
            ["window_start", "window_end", "tenant", "stream"].iter().map(|s| (*s).to_owned()).collect();
        header.extend(self.columns.labels.iter().cloned());
        header.extend(["labels", "events", "count"].iter().map(|s| (*s).to_owned()));
        header.extend(self.columns.fields.iter().flat_map(ResultColumns::field_columns));
        header.extend(["revision", "is_final"].iter().map(|s| (*s).to_owned()));
        let mut out = String::with_capacity(64 * 1024);
        for (i, name) in header.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            quote(&mut out, name);
        }
        out.push_str("\r\n");
        Ok(Box::new(CsvResultFile { columns: Arc::clone(&self.columns), out }))
    }

    fn extension(&self) -> &'static str {
        "csv"
    }
}

struct CsvResultFile {
    columns: Arc<ResultColumns>,
    out: String,
}

impl CsvResultFile {
    fn push_result(&mut self, r: &WindowResult) {
        let out = &mut self.out;
        out.push_str(&r.start.to_rfc3339());
        out.push(',');
        out.push_str(&r.end.to_rfc3339());
        out.push(',');
        quote(out, &r.group.tenant);
        out.push(',');
        quote(out, &r.group.stream);
        for name in &self.columns.labels {
            out.push(',');
            if let Some(v) = r.group.label(name) {
                quote(out, v);
            }
        }
        out.push(',');
        let mut json = String::from("{");
        let others = r.group.labels.iter().filter(|(k, _)| !self.columns.labels.iter().any(|l| **l == **k));
        for (i, (k, v)) in others.enumerate() {
            if i > 0 {
                json.push(',');
            }
            json_string(&mut json, k);
            json.push(':');
            json_string(&mut json, v);
        }
        json.push('}');
        quote(out, &json);
        let _ = write!(out, ",{},", r.events);
        number(out, r.count);
        for field in &self.columns.fields {
            for value in result_values(r, field) {
                out.push(',');
                if let Some(v) = value {
                    number(out, v);
                }
            }
        }
        let _ = write!(out, ",{},{}\r\n", r.revision, r.is_final);
    }
}

impl Encoder for CsvResultFile {
    fn push(&mut self, row: Row<'_>) -> Result<(), SinkError> {
        let Row::Result(r) = row else { return Err(wrong_row()) };
        self.push_result(r);
        Ok(())
    }

    fn size(&self) -> usize {
        self.out.len()
    }

    fn finish(self: Box<Self>) -> Result<Vec<u8>, SinkError> {
        Ok(self.out.into_bytes())
    }
}

/// A field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn quote(out: &mut String, s: &str) {
    if s.contains([',', '"', '\r', '\n']) {
        out.push('"');
        for c in s.chars() {
            if c == '"' {
                out.push('"');
            }
            out.push(c);
        }
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// A float that reads back exactly: the shortest exact digits, with an
/// exponent when that is shorter; `NaN`, `Infinity`, `-Infinity`.
fn number(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        let plain = v.to_string();
        if plain.len() <= 24 {
            out.push_str(&plain);
        } else {
            let _ = write!(out, "{v:e}");
        }
    }
}

fn json_string(out: &mut String, s: &str) {
    // serde_json escapes exactly as JSON requires.
    match serde_json::to_string(s) {
        Ok(text) => out.push_str(&text),
        Err(_) => out.push_str("\"\""),
    }
}

fn base64(out: &mut String, bytes: &[u8]) {
    let mut text = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    crate::base64::encode(bytes, &mut text);
    out.push_str(&String::from_utf8_lossy(&text));
}

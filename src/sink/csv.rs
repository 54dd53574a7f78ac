//! Raw events as CSV (RFC 4180): the same columns as the Parquet files,
//! RFC 3339 times, maps as JSON objects.

use std::fmt::Write as _;
use std::sync::Arc;

use super::{
    Encoder, EncoderFactory, EventColumns, EventSink, Layout, ResultColumns, ResultSink, Route, Row, SinkConfig,
    SinkError, result_values, wrong_row,
};
use crate::event::{EventIdRef, EventRef};
use crate::text::ShortF64;
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
        let layout = Layout::Events(Arc::new(config.columns.clone()));
        EventSink::new(config, Box::new(CsvFactory { layout }))
    }
}

impl ResultSink {
    /// A sink writing window results as CSV files (`.csv`), with the
    /// columns of the [`ResultSink`] schema; `labels` as a JSON object.
    pub fn csv(config: SinkConfig, columns: ResultColumns) -> Result<ResultSink, SinkError> {
        columns.check()?;
        ResultSink::new(config, Box::new(CsvFactory { layout: Layout::Results(Arc::new(columns)) }))
    }
}

struct CsvFactory {
    layout: Layout,
}

impl EncoderFactory for CsvFactory {
    fn open(&self) -> Result<Box<dyn Encoder>, SinkError> {
        let mut out = String::with_capacity(64 * 1024);
        for (i, name) in self.layout.column_names().iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            quote(&mut out, name);
        }
        out.push_str("\r\n");
        Ok(Box::new(CsvFile { layout: self.layout.clone(), out }))
    }

    fn extension(&self) -> &'static str {
        "csv"
    }
}

struct CsvFile {
    layout: Layout,
    out: String,
}

impl Encoder for CsvFile {
    fn push(&mut self, row: Row<'_>) -> Result<(), SinkError> {
        match (&self.layout, row) {
            (Layout::Events(columns), Row::Event(e, route)) => push_event(&mut self.out, columns, e, route),
            (Layout::Results(columns), Row::Result(r)) => push_result(&mut self.out, columns, r),
            _ => return Err(wrong_row()),
        }
        Ok(())
    }

    fn size(&self) -> usize {
        self.out.len()
    }

    fn finish(self: Box<Self>) -> Result<Vec<u8>, SinkError> {
        Ok(self.out.into_bytes())
    }
}

fn push_event<'a>(out: &mut String, columns: &EventColumns, e: &EventRef<'a>, route: &Route<'a>) {
    let _ = e.ts().write_rfc3339(out);
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
    for v in route.promoted_dims(e) {
        out.push(',');
        if let Some(v) = v {
            quote(out, v);
        }
    }
    for v in route.promoted_fields(e) {
        out.push(',');
        if let Some(v) = v {
            number(out, v);
        }
    }
    for v in route.promoted_ints(e) {
        out.push(',');
        if let Some(v) = v {
            let _ = write!(out, "{v}");
        }
    }
    out.push(',');
    json_object(out, route.other_dims(e), json_string);
    out.push(',');
    // JSON has no NaN or infinities: those go as strings, as the Protobuf
    // JSON mapping does.
    json_object(out, route.other_fields(e), |json, v| {
        if v.is_finite() {
            number(json, v);
        } else {
            json.push_str("\"\"");
            number(json, v);
            json.push_str("\"\"");
        }
    });
    let geo = e.geo();
    out.push(',');
    if let Some(g) = geo {
        number(out, g.lat);
    }
    out.push(',');
    if let Some(g) = geo {
        number(out, g.lon);
    }
    if columns.payload {
        out.push(',');
        if let Some(p) = e.payload() {
            base64(out, p);
        }
    }
    out.push_str("\r\n");
}

fn push_result(out: &mut String, columns: &ResultColumns, r: &WindowResult) {
    let _ = r.start.write_rfc3339(out);
    out.push(',');
    let _ = r.end.write_rfc3339(out);
    out.push(',');
    quote(out, &r.group.tenant);
    out.push(',');
    quote(out, &r.group.stream);
    for name in &columns.labels {
        out.push(',');
        if let Some(v) = r.group.label(name) {
            quote(out, v);
        }
    }
    out.push(',');
    let others = r.group.labels.iter().filter(|(k, _)| !columns.labels.iter().any(|l| **l == **k));
    json_object(out, others.map(|(k, v)| (&**k, &**v)), json_string);
    let _ = write!(out, ",{},", r.events);
    number(out, r.count);
    for field in &columns.fields {
        for value in result_values(r, field) {
            out.push(',');
            if let Some(v) = value {
                number(out, v);
            }
        }
    }
    let _ = write!(out, ",{},{}\r\n", r.revision, r.is_final);
}

/// A JSON object of `pairs` (values written by `value`), as one CSV
/// field: always quoted (JSON strings hold quotes), the quotes doubled as
/// it is written, so no buffer is needed per row.
fn json_object<'a, V>(out: &mut String, pairs: impl Iterator<Item = (&'a str, V)>, value: impl Fn(&mut String, V)) {
    out.push_str("\"{");
    for (i, (k, v)) in pairs.enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(out, k);
        out.push(':');
        value(out, v);
    }
    out.push_str("}\"");
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

/// A float that reads back exactly ([`ShortF64`]); `NaN`, `Infinity`,
/// `-Infinity` for the others.
fn number(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        let _ = write!(out, "{}", ShortF64(v));
    }
}

/// A JSON string inside a quoted CSV field: JSON escapes, and each `"`
/// written twice for CSV.
fn json_string(out: &mut String, s: &str) {
    out.push_str("\"\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\"\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push_str("\"\"");
}

fn base64(out: &mut String, bytes: &[u8]) {
    let mut text = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    crate::base64::encode(bytes, &mut text);
    out.push_str(&String::from_utf8_lossy(&text));
}

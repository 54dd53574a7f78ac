//! The Protobuf form of events: `edgestream.v1.EventBatch` from
//! `proto/edgestream.proto`.
//!
//! [`crate::proto`] holds the message types `prost` generates from that file,
//! for building or reading messages field by field. This module is the fast
//! path between the wire and an [`EventBatch`]: a decoder that walks the wire
//! format once, interning strings and slicing payloads out of the body
//! without copying, and an encoder that writes what `prost` writes, except
//! that it keeps the sign of a `-0.0` value (which `prost` drops as a default
//! value). The decoder follows the Protobuf rules the `prost` types follow
//! (unknown fields and groups are skipped, a repeated scalar keeps its last
//! value, a repeated `geo` message merges); tests and a fuzz target check
//! that it reads every input as `prost` does, with one deliberate
//! difference: an event without `ts_unix_nanos` is an error here, where
//! `prost` would read it as time zero.
//!
//! ```
//! use edgestream::event::{protobuf, Event, EventBatch, Format, Limits};
//! use edgestream::time::Timestamp;
//!
//! let mut batch = EventBatch::new();
//! batch.push(&Event::new("acme", "metrics", Timestamp::from_nanos(1)).with_field("temp_c", 21.5));
//! let mut wire = Vec::new();
//! protobuf::encode(&batch, &mut wire);
//!
//! let mut back = EventBatch::new();
//! Format::Protobuf.decode_into(&wire.into(), &Limits::default(), &mut back)?;
//! assert_eq!(back, batch);
//! # Ok::<(), edgestream::event::DecodeError>(())
//! ```

use bytes::Bytes;

use super::decode::{DecodeError, ProtoErrorKind};
use super::{Event, EventBatch, EventBuilder, EventId, EventIdRef, EventRef, GeoPoint, Sym};
use crate::proto;
use crate::time::Timestamp;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// The nesting budget `prost` gives a top-level message.
const RECURSION_LIMIT: u32 = 100;

type Result<T> = core::result::Result<T, (usize, ProtoErrorKind)>;

/// Decodes an `EventBatch` message, appending to `batch` (which
/// [`Format::decode_into`](super::Format::decode_into) has cleared).
pub(crate) fn decode_into(
    body: &Bytes,
    max_events: usize,
    batch: &mut EventBatch,
) -> core::result::Result<(), DecodeError> {
    batch.clear();
    let mut r = Reader { buf: body, pos: 0, tag: 0 };
    while r.pos < body.len() {
        if let Err((offset, kind)) = next_field(&mut r, body, batch) {
            return Err(DecodeError::Protobuf { offset, event: batch.len(), kind });
        }
        if batch.len() > max_events {
            return Err(DecodeError::TooManyEvents { max: max_events });
        }
    }
    Ok(())
}

/// Reads one field of the top-level `EventBatch`: an event, or an unknown
/// field to skip.
fn next_field(r: &mut Reader<'_>, body: &Bytes, batch: &mut EventBatch) -> Result<()> {
    let end = body.len();
    let (field, wire) = r.key(end)?;
    if field == 1 {
        r.expect(wire, LEN, "events")?;
        let event_end = r.len_end(end)?;
        decode_event(r, event_end, body, batch)
    } else {
        r.skip(field, wire, end, RECURSION_LIMIT)
    }
}

fn decode_event(r: &mut Reader<'_>, end: usize, body: &Bytes, batch: &mut EventBatch) -> Result<()> {
    let start = r.pos;
    let depth = RECURSION_LIMIT - 1;
    let mut ev = batch.start_event();
    let (mut tenant, mut stream, mut ts, mut geo, mut payload) = (None, None, None, None::<GeoPoint>, None);
    while r.pos < end {
        let (field, wire) = r.key(end)?;
        match field {
            1 => tenant = Some(r.symbol(wire, end, "tenant", &mut ev)?),
            2 => stream = Some(r.symbol(wire, end, "stream", &mut ev)?),
            3 => {
                r.expect(wire, VARINT, "ts_unix_nanos")?;
                // int64 is the varint's bit pattern as two's complement.
                ts = Some(r.varint(end)? as i64);
            }
            4 => {
                let id = r.string(wire, end, "id_str")?;
                ev.id_str(id);
            }
            5 => {
                let id = r.bytes(wire, end, "id_bytes")?;
                ev.id_bytes(id);
            }
            6 => {
                r.expect(wire, LEN, "dims")?;
                let dim_end = r.len_end(end)?;
                let (key, value) = decode_pair(
                    r,
                    dim_end,
                    depth - 1,
                    "dims.key",
                    &mut ev,
                    |r, wire, end, ev| r.symbol(wire, end, "dims.value", ev),
                    |ev| ev.intern(""),
                )?;
                ev.dim_sym(key, value);
            }
            7 => {
                r.expect(wire, LEN, "fields")?;
                let field_end = r.len_end(end)?;
                let (name, value) = decode_pair(
                    r,
                    field_end,
                    depth - 1,
                    "fields.name",
                    &mut ev,
                    |r, wire, end, _| r.double(wire, end, "fields.value"),
                    |_| 0.0,
                )?;
                ev.field_sym(name, value);
            }
            8 => {
                r.expect(wire, LEN, "geo")?;
                let geo_end = r.len_end(end)?;
                geo = Some(decode_geo(r, geo_end, depth - 1, geo.unwrap_or_default())?);
            }
            9 => {
                let range = r.bytes_range(wire, end, "payload")?;
                // `bytes_range` stays inside the body; checked again because
                // `Bytes::slice` would panic otherwise.
                if range.end > body.len() {
                    return Err((r.tag, ProtoErrorKind::Truncated));
                }
                payload = Some(body.slice(range));
            }
            _ => r.skip(field, wire, end, depth)?,
        }
    }
    let ts = ts.ok_or((start, ProtoErrorKind::MissingTimestamp))?;
    let tenant = tenant.unwrap_or_else(|| ev.intern(""));
    let stream = stream.unwrap_or_else(|| ev.intern(""));
    ev.finish(tenant, stream, Timestamp::from_nanos(ts), geo, payload);
    Ok(())
}

/// Decodes a `Dim` or `Field` message: a string key (named `key_name` in
/// errors) in field 1 and a value in field 2 read by `value`; a missing part
/// takes its proto3 default (the empty string, `default` for the value).
fn decode_pair<T>(
    r: &mut Reader<'_>,
    end: usize,
    depth: u32,
    key_name: &'static str,
    ev: &mut EventBuilder<'_>,
    mut value: impl FnMut(&mut Reader<'_>, u8, usize, &mut EventBuilder<'_>) -> Result<T>,
    default: impl FnOnce(&mut EventBuilder<'_>) -> T,
) -> Result<(Sym, T)> {
    let (mut k, mut v) = (None, None);
    while r.pos < end {
        let (field, wire) = r.key(end)?;
        match field {
            1 => k = Some(r.symbol(wire, end, key_name, ev)?),
            2 => v = Some(value(r, wire, end, ev)?),
            _ => r.skip(field, wire, end, depth)?,
        }
    }
    let k = k.unwrap_or_else(|| ev.intern(""));
    let v = v.unwrap_or_else(|| default(ev));
    Ok((k, v))
}

fn decode_geo(r: &mut Reader<'_>, end: usize, depth: u32, mut geo: GeoPoint) -> Result<GeoPoint> {
    while r.pos < end {
        let (field, wire) = r.key(end)?;
        match field {
            1 => geo.lat = r.double(wire, end, "geo.lat")?,
            2 => geo.lon = r.double(wire, end, "geo.lon")?,
            _ => r.skip(field, wire, end, depth)?,
        }
    }
    Ok(geo)
}

/// A cursor over the body; every read is bounded by the end of the
/// enclosing message, and errors carry the offset where the bad item starts.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Where the last tag read starts: errors about its field point there.
    tag: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn varint(&mut self, end: usize) -> Result<u64> {
        // Tags, lengths and small numbers are one byte: the common case.
        if self.pos < end
            && let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        self.varint_slow(end)
    }

    /// A varint of several bytes (timestamps in nanoseconds take nine): one
    /// bounds check for the whole run rather than one per byte.
    #[inline]
    fn varint_slow(&mut self, end: usize) -> Result<u64> {
        let start = self.pos;
        let bytes = self.buf.get(start..end).unwrap_or_default();
        let mut value = 0u64;
        for (i, &b) in bytes.iter().take(10).enumerate() {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                // The tenth byte may only carry the top bit of a u64.
                if i == 9 && b > 1 {
                    return Err((start, ProtoErrorKind::InvalidVarint));
                }
                self.pos = start + i + 1;
                return Ok(value);
            }
        }
        let kind = if bytes.len() < 10 { ProtoErrorKind::Truncated } else { ProtoErrorKind::InvalidVarint };
        Err((start, kind))
    }

    #[inline]
    fn key(&mut self, end: usize) -> Result<(u32, u8)> {
        let start = self.pos;
        self.tag = start;
        let key = self.varint(end)?;
        let key = u32::try_from(key).map_err(|_| (start, ProtoErrorKind::InvalidFieldNumber))?;
        let wire = (key & 7) as u8;
        if wire > FIXED32 {
            return Err((start, ProtoErrorKind::InvalidWireType(wire)));
        }
        let field = key >> 3;
        if field == 0 {
            return Err((start, ProtoErrorKind::InvalidFieldNumber));
        }
        Ok((field, wire))
    }

    fn expect(&self, wire: u8, want: u8, field: &'static str) -> Result<()> {
        if wire == want { Ok(()) } else { Err((self.tag, ProtoErrorKind::WrongWireType { field, wire_type: wire })) }
    }

    /// Reads a length prefix and returns the end of the delimited value.
    #[inline]
    fn len_end(&mut self, end: usize) -> Result<usize> {
        let start = self.pos;
        let len = self.varint(end)?;
        match usize::try_from(len).ok().and_then(|len| self.pos.checked_add(len)) {
            Some(value_end) if value_end <= end => Ok(value_end),
            _ => Err((start, ProtoErrorKind::Truncated)),
        }
    }

    #[inline]
    fn bytes_range(&mut self, wire: u8, end: usize, field: &'static str) -> Result<core::ops::Range<usize>> {
        self.expect(wire, LEN, field)?;
        let value_end = self.len_end(end)?;
        let range = self.pos..value_end;
        self.pos = value_end;
        Ok(range)
    }

    #[inline]
    fn bytes(&mut self, wire: u8, end: usize, field: &'static str) -> Result<&'a [u8]> {
        let range = self.bytes_range(wire, end, field)?;
        let start = range.start;
        self.buf.get(range).ok_or((start, ProtoErrorKind::Truncated))
    }

    /// Reads a `string` field and interns it (UTF-8 is checked once per
    /// distinct string).
    #[inline]
    fn symbol(&mut self, wire: u8, end: usize, field: &'static str, ev: &mut EventBuilder<'_>) -> Result<Sym> {
        let start = self.pos;
        let bytes = self.bytes(wire, end, field)?;
        ev.intern_utf8(bytes).map_err(|_| (start, ProtoErrorKind::InvalidUtf8(field)))
    }

    #[inline]
    fn string(&mut self, wire: u8, end: usize, field: &'static str) -> Result<&'a str> {
        let start = self.pos;
        let bytes = self.bytes(wire, end, field)?;
        core::str::from_utf8(bytes).map_err(|_| (start, ProtoErrorKind::InvalidUtf8(field)))
    }

    #[inline]
    fn fixed<const N: usize>(&mut self, end: usize) -> Result<[u8; N]> {
        let start = self.pos;
        if end - self.pos < N {
            return Err((start, ProtoErrorKind::Truncated));
        }
        let bytes = self.buf.get(start..start + N).and_then(|b| <[u8; N]>::try_from(b).ok());
        self.pos += N;
        bytes.ok_or((start, ProtoErrorKind::Truncated))
    }

    #[inline]
    fn double(&mut self, wire: u8, end: usize, field: &'static str) -> Result<f64> {
        self.expect(wire, FIXED64, field)?;
        self.fixed::<8>(end).map(f64::from_le_bytes)
    }

    /// Skips an unknown field, as `prost` does: groups are walked to their
    /// matching end tag, each level costing one unit of `depth`.
    fn skip(&mut self, field: u32, wire: u8, end: usize, depth: u32) -> Result<()> {
        if depth == 0 {
            return Err((self.tag, ProtoErrorKind::TooDeep));
        }
        let tag = self.tag;
        match wire {
            VARINT => self.varint(end).map(drop),
            FIXED64 => self.fixed::<8>(end).map(drop),
            FIXED32 => self.fixed::<4>(end).map(drop),
            LEN => self.len_end(end).map(|value_end| self.pos = value_end),
            START_GROUP => loop {
                let start = self.pos;
                let (inner, inner_wire) = self.key(end)?;
                if inner_wire == END_GROUP {
                    if inner != field {
                        return Err((start, ProtoErrorKind::InvalidWireType(END_GROUP)));
                    }
                    return Ok(());
                }
                self.skip(inner, inner_wire, end, depth - 1)?;
            },
            _ => Err((tag, ProtoErrorKind::InvalidWireType(wire))),
        }
    }
}

// ---------------------------------------------------------------------------
// Encoding

/// Appends `batch` as an `EventBatch` message.
pub fn encode(batch: &EventBatch, out: &mut Vec<u8>) {
    for event in batch.iter() {
        key(1, LEN, out);
        varint(event_len(&event) as u64, out);
        encode_event(&event, out);
    }
}

/// The encoded length of `event` as an `Event` message body.
fn event_len(e: &EventRef<'_>) -> usize {
    let mut n = str_field_len(e.tenant()) + str_field_len(e.stream());
    n += 1 + varint_len(e.ts().as_nanos() as u64);
    n += match e.id() {
        Some(id) => len_field_len(id.as_bytes().len()),
        None => 0,
    };
    for (k, v) in e.dims() {
        n += len_field_len(str_field_len(k) + str_field_len(v));
    }
    for (k, v) in e.fields() {
        n += len_field_len(str_field_len(k) + f64_field_len(v));
    }
    if let Some(g) = e.geo() {
        n += len_field_len(f64_field_len(g.lat) + f64_field_len(g.lon));
    }
    if let Some(p) = e.payload() {
        n += len_field_len(p.len());
    }
    n
}

fn encode_event(e: &EventRef<'_>, out: &mut Vec<u8>) {
    str_field(1, e.tenant(), out);
    str_field(2, e.stream(), out);
    key(3, VARINT, out);
    varint(e.ts().as_nanos() as u64, out);
    match e.id() {
        Some(EventIdRef::Str(id)) => len_field(4, id.as_bytes(), out),
        Some(EventIdRef::Bytes(id)) => len_field(5, id, out),
        None => {}
    }
    for (k, v) in e.dims() {
        key(6, LEN, out);
        varint((str_field_len(k) + str_field_len(v)) as u64, out);
        str_field(1, k, out);
        str_field(2, v, out);
    }
    for (k, v) in e.fields() {
        key(7, LEN, out);
        varint((str_field_len(k) + f64_field_len(v)) as u64, out);
        str_field(1, k, out);
        f64_field(2, v, out);
    }
    if let Some(g) = e.geo() {
        key(8, LEN, out);
        varint((f64_field_len(g.lat) + f64_field_len(g.lon)) as u64, out);
        f64_field(1, g.lat, out);
        f64_field(2, g.lon, out);
    }
    if let Some(p) = e.payload() {
        len_field(9, p, out);
    }
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

const fn varint_len(v: u64) -> usize {
    // 1 byte per started group of 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn key(field: u32, wire: u8, out: &mut Vec<u8>) {
    varint(u64::from(field << 3 | u32::from(wire)), out);
}

/// Length of a length-delimited field with a one-byte key (fields 1..=15).
const fn len_field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn len_field(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    key(field, LEN, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// proto3 omits empty strings (the default value) from the wire.
fn str_field_len(s: &str) -> usize {
    if s.is_empty() { 0 } else { len_field_len(s.len()) }
}

fn str_field(field: u32, s: &str, out: &mut Vec<u8>) {
    if !s.is_empty() {
        len_field(field, s.as_bytes(), out);
    }
}

/// proto3 omits a double equal to +0.0 (the default; -0.0 is kept).
fn f64_field_len(v: f64) -> usize {
    if v.to_bits() == 0 { 0 } else { 9 }
}

fn f64_field(field: u32, v: f64, out: &mut Vec<u8>) {
    if v.to_bits() != 0 {
        key(field, FIXED64, out);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

// ---------------------------------------------------------------------------
// Conversions with the prost types

impl From<&EventRef<'_>> for proto::Event {
    fn from(e: &EventRef<'_>) -> Self {
        proto::Event {
            tenant: e.tenant().to_owned(),
            stream: e.stream().to_owned(),
            ts_unix_nanos: Some(e.ts().as_nanos()),
            id: e.id().map(|id| match id {
                EventIdRef::Str(s) => proto::event::Id::IdStr(s.to_owned()),
                EventIdRef::Bytes(b) => proto::event::Id::IdBytes(Bytes::copy_from_slice(b)),
            }),
            dims: e.dims().map(|(k, v)| proto::Dim { key: k.to_owned(), value: v.to_owned() }).collect(),
            fields: e.fields().map(|(k, v)| proto::Field { name: k.to_owned(), value: v }).collect(),
            geo: e.geo().map(|g| proto::GeoPoint { lat: g.lat, lon: g.lon }),
            payload: e.payload().cloned(),
        }
    }
}

impl From<&EventBatch> for proto::EventBatch {
    fn from(batch: &EventBatch) -> Self {
        proto::EventBatch { events: batch.iter().map(|e| proto::Event::from(&e)).collect() }
    }
}

impl TryFrom<proto::EventBatch> for EventBatch {
    type Error = MissingTimestamp;
    fn try_from(p: proto::EventBatch) -> core::result::Result<Self, MissingTimestamp> {
        let mut batch = EventBatch::new();
        for e in p.events {
            batch.push(&Event::try_from(e)?);
        }
        Ok(batch)
    }
}

/// A `proto::Event` without `ts_unix_nanos` cannot become an [`Event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the event has no `ts_unix_nanos`")]
pub struct MissingTimestamp;

impl TryFrom<proto::Event> for Event {
    type Error = MissingTimestamp;
    fn try_from(p: proto::Event) -> core::result::Result<Self, MissingTimestamp> {
        Ok(Event {
            tenant: p.tenant,
            stream: p.stream,
            ts: Timestamp::from_nanos(p.ts_unix_nanos.ok_or(MissingTimestamp)?),
            id: p.id.map(|id| match id {
                proto::event::Id::IdStr(s) => EventId::Str(s),
                proto::event::Id::IdBytes(b) => EventId::Bytes(b.to_vec()),
            }),
            dims: p.dims.into_iter().map(|d| (d.key, d.value)).collect(),
            fields: p.fields.into_iter().map(|f| (f.name, f.value)).collect(),
            geo: p.geo.map(|g| GeoPoint { lat: g.lat, lon: g.lon }),
            payload: p.payload,
        })
    }
}

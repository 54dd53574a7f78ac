//! The JSON and NDJSON forms of events.
//!
//! An event is one JSON object:
//!
//! ```json
//! {
//!   "tenant": "acme",
//!   "stream": "metrics",
//!   "ts": "2026-11-28T04:00:07.250Z",
//!   "id": "evt-000123",
//!   "dims": {"region": "eu-west", "device": "d-17", "type": "thermo"},
//!   "fields": {"temp_c": 21.5, "humidity": 40},
//!   "geo": {"lat": 38.7223, "lon": -9.1393},
//!   "payload": {"firmware": "1.4.2", "raw": [1, 2, 3]}
//! }
//! ```
//!
//! | key | required | value |
//! | --- | --- | --- |
//! | `tenant` | yes | string |
//! | `stream` | yes | string |
//! | `ts` | yes | an **integer** of milliseconds since the Unix epoch, or an RFC 3339 string (up to nanosecond precision, any offset); a number with a fraction is an error rather than a guess |
//! | `id` | no | string; or `id_bytes`, standard base64, for a binary id |
//! | `dims` | no | object of string values |
//! | `fields` | no | object of numbers; `"NaN"`, `"Infinity"` and `"-Infinity"` are read as those values (and then rejected by validation) |
//! | `geo` | no | `{"lat": number, "lon": number}` |
//! | `payload` | no | any JSON value, kept verbatim as bytes; or `payload_bytes`, standard base64, for binary |
//!
//! `null` for any optional key means absent. Unknown keys and repeated keys
//! are errors (so a typo such as `"feilds"` is reported, not ignored).
//!
//! A `application/json` body is one event object or an array of them; an
//! `application/x-ndjson` body has one event object per line (blank lines
//! and `\r\n` endings are fine). Errors give the line and column.
//!
//! The encoders write `ts` as RFC 3339 in UTC, omit empty dims and fields,
//! write a payload verbatim when it is itself a one-line JSON value and as
//! `payload_bytes` otherwise, so any batch survives encode → decode
//! unchanged, with one exception JSON imposes: a NaN reads back as the
//! canonical NaN, whatever payload bits it had (Protobuf keeps them).

use core::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::decode::{DecodeError, JsonErrorKind, truncated};
use super::{EventBatch, EventBuilder, EventIdRef, EventRef, GeoPoint, Sym};
use crate::base64;
use crate::time::Timestamp;

/// Decodes a JSON body (one event object or an array of them), appending to
/// `batch` (which [`Format::decode_into`](super::Format::decode_into) has
/// cleared).
pub(crate) fn decode_into(body: &Bytes, max_events: usize, batch: &mut EventBatch) -> Result<(), DecodeError> {
    let mut ctx = Ctx::new(body, max_events, batch);
    let mut de = serde_json::Deserializer::from_slice(body);
    BodySeed { ctx: &mut ctx }.deserialize(&mut de).and_then(|()| de.end()).map_err(|e| ctx.error(e, 0))
}

/// Decodes an NDJSON body (one event object per line) into `batch`.
pub(crate) fn decode_ndjson_into(body: &Bytes, max_events: usize, batch: &mut EventBatch) -> Result<(), DecodeError> {
    let mut ctx = Ctx::new(body, max_events, batch);
    for (index, line) in body.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.trim_ascii().is_empty() {
            continue;
        }
        let mut de = serde_json::Deserializer::from_slice(line);
        EventSeed { ctx: &mut ctx }.deserialize(&mut de).and_then(|()| de.end()).map_err(|e| ctx.error(e, index))?;
    }
    // Only blank lines: no event at all, like a zero-byte body.
    if ctx.batch.is_empty() { Err(DecodeError::EmptyBody) } else { Ok(()) }
}

/// Appends `batch` as a JSON array of event objects.
pub fn encode(batch: &EventBatch, out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, event) in batch.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        encode_event(&event, out);
    }
    out.push(b']');
}

/// Appends `batch` as NDJSON: one event object per line, each line ending in `\n`.
pub fn encode_ndjson(batch: &EventBatch, out: &mut Vec<u8>) {
    for event in batch.iter() {
        encode_event(&event, out);
        out.push(b'\n');
    }
}

/// Appends one event as a JSON object.
pub fn encode_event(e: &EventRef<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"tenant\":");
    string(e.tenant(), out);
    out.extend_from_slice(b",\"stream\":");
    string(e.stream(), out);
    out.extend_from_slice(b",\"ts\":\"");
    e.ts().append_rfc3339(out);
    out.push(b'"');
    match e.id() {
        Some(EventIdRef::Str(id)) => {
            out.extend_from_slice(b",\"id\":");
            string(id, out);
        }
        Some(EventIdRef::Bytes(id)) => {
            out.extend_from_slice(b",\"id_bytes\":\"");
            base64::encode(id, out);
            out.push(b'"');
        }
        None => {}
    }
    if !e.dim_syms().is_empty() {
        out.extend_from_slice(b",\"dims\":{");
        for (i, (k, v)) in e.dims().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(k, out);
            out.push(b':');
            string(v, out);
        }
        out.push(b'}');
    }
    if !e.field_syms().is_empty() {
        out.extend_from_slice(b",\"fields\":{");
        for (i, (k, v)) in e.fields().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(k, out);
            out.push(b':');
            number(v, out);
        }
        out.push(b'}');
    }
    if let Some(geo) = e.geo() {
        out.extend_from_slice(b",\"geo\":{\"lat\":");
        number(geo.lat, out);
        out.extend_from_slice(b",\"lon\":");
        number(geo.lon, out);
        out.push(b'}');
    }
    if let Some(payload) = e.payload() {
        if is_json_value(payload) {
            out.extend_from_slice(b",\"payload\":");
            out.extend_from_slice(payload);
        } else {
            out.extend_from_slice(b",\"payload_bytes\":\"");
            base64::encode(payload, out);
            out.push(b'"');
        }
    }
    out.push(b'}');
}

/// Whether `bytes` can be embedded verbatim and read back byte for byte:
/// exactly one JSON value other than `null`, no surrounding space, and no
/// line break inside (whitespace between tokens may hold one, and NDJSON is
/// split on them).
fn is_json_value(bytes: &[u8]) -> bool {
    // `"payload": null` reads back as no payload, so bytes `null` go as base64.
    bytes != b"null"
        && !bytes.iter().any(|&b| b == b'\n' || b == b'\r')
        && serde_json::from_slice::<&RawValue>(bytes).is_ok_and(|raw| raw.get().len() == bytes.len())
}

/// Appends `s` as a JSON string.
fn string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let hex = |n: u8| HEX.get(usize::from(n & 15)).copied().unwrap_or(b'0');
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hex(b >> 4), hex(b)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
    out.push(b'"');
}

/// Appends `v` as a JSON number in its shortest round-trip form, or as the
/// strings `"NaN"`, `"Infinity"`, `"-Infinity"` (the Protobuf JSON mapping).
fn number(v: f64, out: &mut Vec<u8>) {
    if v.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"\"Infinity\"" } else { b"\"-Infinity\"" });
    } else {
        // Finite floats always serialize; writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &v);
    }
}

// ---------------------------------------------------------------------------
// Decoding: serde visitors that write straight into the batch, interning
// every string as it is read, so nothing is allocated per event.

/// What went wrong, kept aside while serde unwinds with an opaque error.
enum Fail {
    Kind(JsonErrorKind),
    TooManyEvents,
}

struct Ctx<'b> {
    body: &'b Bytes,
    batch: &'b mut EventBatch,
    max_events: usize,
    fail: Option<Fail>,
    /// The key whose value is being read, to name it in type errors.
    key: Option<Key>,
    scratch: Vec<u8>,
}

impl<'b> Ctx<'b> {
    fn new(body: &'b Bytes, max_events: usize, batch: &'b mut EventBatch) -> Self {
        Ctx { body, batch, max_events, fail: None, key: None, scratch: Vec::new() }
    }

    /// The typed error for a serde error `e`, raised on line `line_base + e.line()`.
    fn error(&mut self, e: serde_json::Error, line_base: usize) -> DecodeError {
        let kind = match self.fail.take() {
            Some(Fail::TooManyEvents) => return DecodeError::TooManyEvents { max: self.max_events },
            Some(Fail::Kind(kind)) => kind,
            None if e.is_data() => match self.key {
                Some(key) => JsonErrorKind::InvalidValue { field: key.name(), expected: key.expected() },
                None => JsonErrorKind::NotAnEvent,
            },
            None => {
                let message = e.to_string();
                let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(m, _)| m);
                JsonErrorKind::Syntax(message.to_owned())
            }
        };
        DecodeError::Json { line: line_base + e.line(), column: e.column(), event: self.batch.len(), kind }
    }
}

/// Records `kind` (unless an inner error was recorded first) and returns the
/// opaque serde error that unwinds the parse.
fn fail<E: de::Error>(slot: &mut Option<Fail>, kind: JsonErrorKind) -> E {
    slot.get_or_insert(Fail::Kind(kind));
    E::custom("edgestream")
}

/// The keys of an event object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Tenant,
    Stream,
    Ts,
    Id,
    IdBytes,
    Dims,
    Fields,
    Geo,
    Payload,
    PayloadBytes,
    Lat,
    Lon,
}

impl Key {
    const EVENT: [Key; 10] = [
        Key::Tenant,
        Key::Stream,
        Key::Ts,
        Key::Id,
        Key::IdBytes,
        Key::Dims,
        Key::Fields,
        Key::Geo,
        Key::Payload,
        Key::PayloadBytes,
    ];
    const GEO: [Key; 2] = [Key::Lat, Key::Lon];

    fn name(self) -> &'static str {
        match self {
            Key::Tenant => "tenant",
            Key::Stream => "stream",
            Key::Ts => "ts",
            Key::Id => "id",
            Key::IdBytes => "id_bytes",
            Key::Dims => "dims",
            Key::Fields => "fields",
            Key::Geo => "geo",
            Key::Payload => "payload",
            Key::PayloadBytes => "payload_bytes",
            Key::Lat => "lat",
            Key::Lon => "lon",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Key::Tenant | Key::Stream | Key::Id => "a string",
            Key::Ts => "integer epoch milliseconds or an RFC 3339 string",
            Key::IdBytes | Key::PayloadBytes => "a base64 string",
            Key::Dims => "an object of string values",
            Key::Fields => "an object of numbers",
            Key::Geo => "an object {\"lat\": number, \"lon\": number}",
            Key::Payload => "a JSON value",
            Key::Lat | Key::Lon => "a number",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// Reads an object key among `keys`; an unknown key comes back as its text
/// (at most 100 bytes of it).
struct KeySeed(&'static [Key]);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Result<Key, String>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Result<Key, String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let key = match v {
            "tenant" => Key::Tenant,
            "stream" => Key::Stream,
            "ts" => Key::Ts,
            "id" => Key::Id,
            "id_bytes" => Key::IdBytes,
            "dims" => Key::Dims,
            "fields" => Key::Fields,
            "geo" => Key::Geo,
            "payload" => Key::Payload,
            "payload_bytes" => Key::PayloadBytes,
            "lat" => Key::Lat,
            "lon" => Key::Lon,
            _ => return Ok(Err(truncated(v, 100))),
        };
        Ok(if self.0.contains(&key) { Ok(key) } else { Err(truncated(v, 100)) })
    }
}

struct BodySeed<'c, 'b> {
    ctx: &'c mut Ctx<'b>,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object or an array of event objects")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        EventSeed { ctx: self.ctx }.visit_map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(EventSeed { ctx: &mut *self.ctx })?.is_some() {}
        Ok(())
    }
}

struct EventSeed<'c, 'b> {
    ctx: &'c mut Ctx<'b>,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EventSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Ctx { body, batch, max_events, fail: slot, key: current, scratch } = self.ctx;
        let mut ev = batch.start_event();
        let (mut tenant, mut stream, mut ts, mut geo, mut payload) = (None, None, None, None, None);
        let mut seen = 0u16;
        // `id`/`id_bytes` and `payload`/`payload_bytes` exclude each other
        // unless one of them is null.
        let (mut has_id, mut has_payload) = (false, false);
        fn one_of<E: de::Error>(has: &mut bool, name: &'static str, slot: &mut Option<Fail>) -> Result<(), E> {
            if core::mem::replace(has, true) { Err(fail(slot, JsonErrorKind::DuplicateField(name))) } else { Ok(()) }
        }
        *current = None;
        while let Some(key) = map.next_key_seed(KeySeed(&Key::EVENT))? {
            let key = key.map_err(|name| fail(slot, JsonErrorKind::UnknownField(name)))?;
            if seen & key.bit() != 0 {
                return Err(fail(slot, JsonErrorKind::DuplicateField(key.name())));
            }
            seen |= key.bit();
            *current = Some(key);
            match key {
                Key::Tenant => tenant = Some(map.next_value_seed(SymSeed(&mut ev))?),
                Key::Stream => stream = Some(map.next_value_seed(SymSeed(&mut ev))?),
                Key::Ts => ts = Some(map.next_value_seed(TsSeed(slot))?),
                Key::Id => {
                    if map.next_value_seed(Nullable(IdSeed(&mut ev)))?.is_some() {
                        one_of(&mut has_id, "id", slot)?;
                    }
                }
                Key::IdBytes => {
                    if map.next_value_seed(Nullable(Base64Seed { scratch, slot, key }))?.is_some() {
                        one_of(&mut has_id, "id", slot)?;
                        ev.id_bytes(scratch);
                    }
                }
                Key::Dims => _ = map.next_value_seed(Nullable(DimsSeed(&mut ev)))?,
                Key::Fields => _ = map.next_value_seed(Nullable(FieldsSeed { ev: &mut ev, slot }))?,
                Key::Geo => geo = map.next_value_seed(Nullable(GeoSeed(slot)))?,
                Key::Payload => {
                    if let Some(raw) = map.next_value::<Option<&'de RawValue>>()? {
                        one_of(&mut has_payload, "payload", slot)?;
                        payload = Some(subslice(body, raw.get().as_bytes()));
                    }
                }
                Key::PayloadBytes => {
                    if map.next_value_seed(Nullable(Base64Seed { scratch, slot, key }))?.is_some() {
                        one_of(&mut has_payload, "payload", slot)?;
                        payload = Some(Bytes::copy_from_slice(scratch));
                    }
                }
                // Not event keys: `KeySeed(&Key::EVENT)` never yields them.
                Key::Lat | Key::Lon => {}
            }
            *current = None;
        }
        let tenant = tenant.ok_or_else(|| fail(slot, JsonErrorKind::MissingField("tenant")))?;
        let stream = stream.ok_or_else(|| fail(slot, JsonErrorKind::MissingField("stream")))?;
        let ts = ts.ok_or_else(|| fail(slot, JsonErrorKind::MissingField("ts")))?;
        ev.finish(tenant, stream, ts, geo, payload);
        if batch.len() > *max_events {
            slot.get_or_insert(Fail::TooManyEvents);
            return Err(de::Error::custom("edgestream"));
        }
        Ok(())
    }
}

/// `part` as a zero-copy slice of `body` when it lies inside it (it always
/// does for values borrowed from the body), else a copy.
fn subslice(body: &Bytes, part: &[u8]) -> Bytes {
    let start = (part.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
    if start <= body.len() && part.len() <= body.len() - start {
        body.slice(start..start + part.len())
    } else {
        Bytes::copy_from_slice(part)
    }
}

/// Interns a string value.
struct SymSeed<'e, 'b>(&'e mut EventBuilder<'b>);

impl<'de> DeserializeSeed<'de> for SymSeed<'_, '_> {
    type Value = Sym;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Sym, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for SymSeed<'_, '_> {
    type Value = Sym;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Sym, E> {
        Ok(self.0.intern(v))
    }
}

struct TsSeed<'s>(&'s mut Option<Fail>);

impl<'de> DeserializeSeed<'de> for TsSeed<'_> {
    type Value = Timestamp;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Timestamp, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for TsSeed<'_> {
    type Value = Timestamp;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Key::Ts.expected())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
        Timestamp::from_millis(v)
            .ok_or_else(|| fail(self.0, JsonErrorKind::InvalidTimestamp(crate::time::TimeError::OutOfRange)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
        self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
    }
    /// serde_json reads `-0` and integers beyond 64 bits as floats: whole
    /// values are still integers of milliseconds; a fraction is an error.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Timestamp, E> {
        if v.fract() != 0.0 || !v.is_finite() {
            Err(fail(self.0, JsonErrorKind::InvalidValue { field: Key::Ts.name(), expected: Key::Ts.expected() }))
        } else if v.abs() < 9.2e18 {
            self.visit_i64(v as i64)
        } else {
            Err(fail(self.0, JsonErrorKind::InvalidTimestamp(crate::time::TimeError::OutOfRange)))
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
        Timestamp::parse_rfc3339(v).map_err(|e| fail(self.0, JsonErrorKind::InvalidTimestamp(e)))
    }
}

/// Reads an optional value with seed `S`: `null` (or an absent value)
/// gives `None`, as in the Protobuf JSON mapping.
struct Nullable<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Nullable<S> {
    type Value = Option<S::Value>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Nullable<S> {
    type Value = Option<S::Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value or null")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}

/// Reads a base64 string into `scratch`.
struct Base64Seed<'s> {
    scratch: &'s mut Vec<u8>,
    slot: &'s mut Option<Fail>,
    key: Key,
}

impl<'de> DeserializeSeed<'de> for Base64Seed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Base64Seed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key.expected())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        base64::decode(v.as_bytes(), self.scratch)
            .ok_or_else(|| fail(self.slot, JsonErrorKind::InvalidBase64(self.key.name())))
    }
}

/// Reads a string `id` into the event.
struct IdSeed<'e, 'b>(&'e mut EventBuilder<'b>);

impl<'de> DeserializeSeed<'de> for IdSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for IdSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Key::Id.expected())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.id_str(v);
        Ok(())
    }
}

/// Reads an object of string dims into the event.
struct DimsSeed<'e, 'b>(&'e mut EventBuilder<'b>);

impl<'de> DeserializeSeed<'de> for DimsSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DimsSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Key::Dims.expected())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(k) = map.next_key_seed(SymSeed(&mut *self.0))? {
            let v = map.next_value_seed(SymSeed(&mut *self.0))?;
            self.0.dim_sym(k, v);
        }
        Ok(())
    }
}

/// Reads an object of numeric fields into the event.
struct FieldsSeed<'e, 'b> {
    ev: &'e mut EventBuilder<'b>,
    slot: &'e mut Option<Fail>,
}

impl<'de> DeserializeSeed<'de> for FieldsSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldsSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Key::Fields.expected())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(k) = map.next_key_seed(SymSeed(&mut *self.ev))? {
            let v = map.next_value_seed(NumberSeed { slot: &mut *self.slot, key: Key::Fields })?;
            self.ev.field_sym(k, v);
        }
        Ok(())
    }
}

/// A JSON number, or one of the strings `"NaN"`, `"Infinity"`, `"-Infinity"`.
struct NumberSeed<'s> {
    slot: &'s mut Option<Fail>,
    key: Key,
}

impl<'de> DeserializeSeed<'de> for NumberSeed<'_> {
    type Value = f64;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<f64, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for NumberSeed<'_> {
    type Value = f64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        match v {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => Err(fail(
                self.slot,
                JsonErrorKind::InvalidValue { field: self.key.name(), expected: self.key.expected() },
            )),
        }
    }
}

/// A `{"lat": number, "lon": number}` object.
struct GeoSeed<'s>(&'s mut Option<Fail>);

impl<'de> DeserializeSeed<'de> for GeoSeed<'_> {
    type Value = GeoPoint;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<GeoPoint, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for GeoSeed<'_> {
    type Value = GeoPoint;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Key::Geo.expected())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut lat, mut lon) = (None, None);
        while let Some(key) = map.next_key_seed(KeySeed(&Key::GEO))? {
            let key = key.map_err(|name| fail(self.0, JsonErrorKind::UnknownField(name)))?;
            let slot = if key == Key::Lat { &mut lat } else { &mut lon };
            if slot.is_some() {
                return Err(fail(self.0, JsonErrorKind::DuplicateField(key.name())));
            }
            *slot = Some(map.next_value_seed(NumberSeed { slot: &mut *self.0, key })?);
        }
        match (lat, lon) {
            (Some(lat), Some(lon)) => Ok(GeoPoint { lat, lon }),
            (None, _) => Err(fail(self.0, JsonErrorKind::MissingField("geo.lat"))),
            (_, None) => Err(fail(self.0, JsonErrorKind::MissingField("geo.lon"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventId, Format, Limits};

    fn decode(format: Format, body: &str) -> Result<EventBatch, DecodeError> {
        let mut batch = EventBatch::new();
        format.decode_into(&Bytes::copy_from_slice(body.as_bytes()), &Limits::default(), &mut batch)?;
        Ok(batch)
    }

    fn kind(body: &str) -> JsonErrorKind {
        match decode(Format::Json, body) {
            Err(DecodeError::Json { kind, .. }) => kind,
            other => panic!("{body}: {other:?}"),
        }
    }

    const FULL: &str = r#"{"tenant":"acme","stream":"metrics","ts":"2026-11-28T04:00:07.250Z","id":"evt-1",
        "dims":{"region":"eu-west","device":"d-17"},"fields":{"temp_c":21.5,"n":40},
        "geo":{"lat":38.72,"lon":-9.14},"payload":{"fw": "1.4"}}"#;

    #[test]
    fn decodes_every_part() {
        let b = decode(Format::Json, FULL).unwrap();
        let e = b.get(0).unwrap();
        assert_eq!((e.tenant(), e.stream()), ("acme", "metrics"));
        assert_eq!(e.ts(), "2026-11-28T04:00:07.250Z".parse().unwrap());
        assert_eq!(e.id(), Some(EventIdRef::Str("evt-1")));
        assert_eq!(e.dims().collect::<Vec<_>>(), [("region", "eu-west"), ("device", "d-17")]);
        assert_eq!(e.fields().collect::<Vec<_>>(), [("temp_c", 21.5), ("n", 40.0)]);
        assert_eq!(e.geo(), Some(GeoPoint::new(38.72, -9.14)));
        assert_eq!(e.payload().map(|p| &p[..]), Some(&br#"{"fw": "1.4"}"#[..]));
    }

    #[test]
    fn integer_millis_arrays_nulls_and_escapes() {
        let body = r#"[{"tenant":"a","stream":"s","ts":1795838400123,"id":null,"geo":null,"dims":{"k\"ey":"v\u00e9"}},
                       {"tenant":"a","stream":"s","ts":-1,"id_bytes":"AAEC","payload_bytes":"/w=="}]"#;
        let b = decode(Format::Json, body).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b.get(0).unwrap().ts().as_nanos(), 1_795_838_400_123_000_000);
        assert_eq!(b.get(0).unwrap().dim("k\"ey"), Some("vé"));
        assert_eq!(b.get(0).unwrap().id(), None);
        let second = b.get(1).unwrap().to_event();
        assert_eq!(second.ts.as_nanos(), -1_000_000);
        assert_eq!(second.id, Some(EventId::Bytes(vec![0, 1, 2])));
        assert_eq!(second.payload.as_deref(), Some(&[0xff][..]));
        assert!(decode(Format::Json, "[]").unwrap().is_empty());
    }

    #[test]
    fn typed_schema_errors() {
        assert_eq!(kind(r#"{"stream":"s","ts":1}"#), JsonErrorKind::MissingField("tenant"));
        assert_eq!(kind(r#"{"tenant":"t","stream":"s"}"#), JsonErrorKind::MissingField("ts"));
        assert_eq!(
            kind(r#"{"tenant":"t","stream":"s","ts":1,"feilds":{}}"#),
            JsonErrorKind::UnknownField("feilds".into())
        );
        assert_eq!(kind(r#"{"tenant":"t","tenant":"u","stream":"s","ts":1}"#), JsonErrorKind::DuplicateField("tenant"));
        assert_eq!(
            kind(r#"{"tenant":"t","stream":"s","ts":1,"id":"a","id_bytes":"AA=="}"#),
            JsonErrorKind::DuplicateField("id")
        );
        assert_eq!(
            kind(r#"{"tenant":"t","stream":"s","ts":1.5}"#),
            JsonErrorKind::InvalidValue { field: "ts", expected: Key::Ts.expected() }
        );
        assert_eq!(
            kind(r#"{"tenant":"t","stream":"s","ts":"yesterday"}"#),
            JsonErrorKind::InvalidTimestamp(crate::time::TimeError::InvalidRfc3339("expected a four-digit year"))
        );
        assert_eq!(
            kind(r#"{"tenant":"t","stream":"s","ts":9223372036854775807}"#),
            JsonErrorKind::InvalidTimestamp(crate::time::TimeError::OutOfRange)
        );
        assert_eq!(
            kind(r#"{"tenant":"t","stream":"s","ts":1,"dims":{"floor":3}}"#),
            JsonErrorKind::InvalidValue { field: "dims", expected: Key::Dims.expected() }
        );
        assert_eq!(
            kind(r#"{"tenant":"t","stream":"s","ts":1,"fields":{"x":"high"}}"#),
            JsonErrorKind::InvalidValue { field: "fields", expected: Key::Fields.expected() }
        );
        assert_eq!(
            kind(r#"{"tenant":"t","stream":"s","ts":1,"geo":{"lat":1}}"#),
            JsonErrorKind::MissingField("geo.lon")
        );
        assert_eq!(
            kind(r#"{"tenant":"t","stream":"s","ts":1,"id_bytes":"!!"}"#),
            JsonErrorKind::InvalidBase64("id_bytes")
        );
        assert_eq!(kind("42"), JsonErrorKind::NotAnEvent);
        assert_eq!(kind("[42]"), JsonErrorKind::NotAnEvent);
        assert!(matches!(kind(r#"{"tenant":"#), JsonErrorKind::Syntax(_)));
        assert!(matches!(kind("[] []"), JsonErrorKind::Syntax(_)));
        assert_eq!(kind("{}"), JsonErrorKind::MissingField("tenant"));
    }

    #[test]
    fn every_key_name_reads_back_as_its_key() {
        for (keys, key) in
            Key::EVENT.iter().map(|k| (&Key::EVENT[..], *k)).chain(Key::GEO.iter().map(|k| (&Key::GEO[..], *k)))
        {
            let json = format!("\"{}\"", key.name());
            let mut de = serde_json::Deserializer::from_str(&json);
            assert_eq!(KeySeed(keys).deserialize(&mut de).unwrap(), Ok(key));
        }
        let mut de = serde_json::Deserializer::from_str("\"lat\"");
        assert_eq!(
            KeySeed(&Key::EVENT).deserialize(&mut de).unwrap(),
            Err("lat".to_owned()),
            "geo keys are not event keys"
        );
    }

    #[test]
    fn id_and_payload_alternatives_may_be_null() {
        let b = decode(
            Format::Json,
            r#"{"tenant":"t","stream":"s","ts":1,"id":null,"id_bytes":"AA==","payload_bytes":null,"payload":[1]}"#,
        )
        .unwrap();
        let e = b.get(0).unwrap();
        assert_eq!(e.id(), Some(EventIdRef::Bytes(&[0])));
        assert_eq!(e.payload().map(|p| &p[..]), Some(&b"[1]"[..]));
        assert_eq!(
            kind(r#"{"tenant":"t","stream":"s","ts":1,"payload":1,"payload_bytes":"AA=="}"#),
            JsonErrorKind::DuplicateField("payload")
        );
        assert_eq!(
            kind(r#"{"tenant":"t","stream":"s","ts":1,"geo":{"lat":"x","lon":1}}"#),
            JsonErrorKind::InvalidValue { field: "lat", expected: "a number" }
        );
    }

    #[test]
    fn whole_float_timestamps_are_integers() {
        let at = |ts: &str| {
            decode(Format::Json, &format!(r#"{{"tenant":"t","stream":"s","ts":{ts}}}"#)).map(|b| b.get(0).unwrap().ts())
        };
        assert_eq!(at("-0"), Ok(Timestamp::UNIX_EPOCH));
        assert_eq!(at("1795838400000.0"), Ok(Timestamp::from_millis(1_795_838_400_000).unwrap()));
        assert!(matches!(at("1e30"), Err(DecodeError::Json { kind: JsonErrorKind::InvalidTimestamp(_), .. })));
        assert!(matches!(
            at("1.5"),
            Err(DecodeError::Json { kind: JsonErrorKind::InvalidValue { field: "ts", .. }, .. })
        ));
    }

    #[test]
    fn null_bytes_payload_round_trips() {
        let mut batch = EventBatch::new();
        batch.push(&Event::new("t", "s", Timestamp::UNIX_EPOCH).with_payload(&b"null"[..]));
        let mut out = Vec::new();
        encode(&batch, &mut out);
        assert_eq!(decode(Format::Json, core::str::from_utf8(&out).unwrap()).unwrap(), batch);
    }

    #[test]
    fn non_finite_strings_are_read_as_values() {
        let b =
            decode(Format::Json, r#"{"tenant":"t","stream":"s","ts":1,"fields":{"a":"NaN","b":"-Infinity"}}"#).unwrap();
        let e = b.get(0).unwrap();
        assert!(e.field("a").unwrap().is_nan());
        assert_eq!(e.field("b"), Some(f64::NEG_INFINITY));
    }

    #[test]
    fn ndjson_positions_name_the_line() {
        let body = "{\"tenant\":\"t\",\"stream\":\"s\",\"ts\":1}\r\n\n  \n{\"tenant\":\"t\",\"stream\":\"s\",\"ts\":2}\n{\"tenant\":\"t\",\"stream\":\"s\",\"ts\":x}\n";
        match decode(Format::Ndjson, body) {
            Err(DecodeError::Json { line, column, event, kind: JsonErrorKind::Syntax(_) }) => {
                assert_eq!((line, event), (5, 2));
                assert!(column > 30, "{column}");
            }
            other => panic!("{other:?}"),
        }
        let first_four_lines: String = body.split_inclusive('\n').take(4).collect();
        assert_eq!(decode(Format::Ndjson, &first_four_lines).unwrap().len(), 2);
    }

    #[test]
    fn event_limit_stops_the_decoder() {
        let line = "{\"tenant\":\"t\",\"stream\":\"s\",\"ts\":1}\n";
        let limits = Limits { max_events_per_batch: 3, ..Limits::default() };
        let mut batch = EventBatch::new();
        let body = Bytes::from(line.repeat(4));
        assert_eq!(Format::Ndjson.decode_into(&body, &limits, &mut batch), Err(DecodeError::TooManyEvents { max: 3 }));
        assert!(batch.is_empty(), "a failed decode leaves the batch empty");
        let array = Bytes::from(format!("[{}]", line.trim().repeat(4).replace("}{", "},{")));
        assert_eq!(Format::Json.decode_into(&array, &limits, &mut batch), Err(DecodeError::TooManyEvents { max: 3 }));
        let three = Bytes::from(line.repeat(3));
        assert_eq!(Format::Ndjson.decode_into(&three, &limits, &mut batch), Ok(()));
        assert_eq!(batch.len(), 3);
    }

    #[test]
    fn regression_payload_with_line_breaks_found_by_fuzzing() {
        // A JSON payload with newlines between its tokens was embedded
        // verbatim, which split its event across NDJSON lines.
        let body = "{\"tenant\":\"t\",\"stream\":\"s\",\"ts\":1,\"payload\":{\"a\"\n\n:1}}";
        let batch = decode(Format::Json, body).unwrap();
        assert_eq!(batch.get(0).unwrap().payload().unwrap().as_ref(), b"{\"a\"\n\n:1}");
        for format in [Format::Json, Format::Ndjson] {
            let mut out = Vec::new();
            format.encode(&batch, &mut out);
            assert!(out.iter().filter(|&&b| b == b'\n').count() <= 1, "one line per event");
            assert_eq!(decode(format, core::str::from_utf8(&out).unwrap()).unwrap(), batch);
        }
    }

    #[test]
    fn regression_nan_payload_bits_found_by_fuzzing() {
        // A NaN with payload bits (0x7ff8b30000000000) came back from JSON as
        // the canonical NaN; both are NaN, and batches compare them equal.
        let odd_nan = f64::from_bits(0x7ff8_b300_0000_0000);
        let mut batch = EventBatch::new();
        batch.push(&Event::new("t", "s", Timestamp::UNIX_EPOCH).with_field("h", odd_nan));
        let mut out = Vec::new();
        encode(&batch, &mut out);
        let back = decode(Format::Json, core::str::from_utf8(&out).unwrap()).unwrap();
        assert!(back.get(0).unwrap().field("h").unwrap().is_nan());
        assert_eq!(back, batch);
        let mut zero = EventBatch::new();
        zero.push(&Event::new("t", "s", Timestamp::UNIX_EPOCH).with_field("h", 0.0));
        let mut negative_zero = EventBatch::new();
        negative_zero.push(&Event::new("t", "s", Timestamp::UNIX_EPOCH).with_field("h", -0.0));
        assert_ne!(zero, negative_zero);
    }

    #[test]
    fn encoding_escapes_and_round_trips_odd_values() {
        let e = Event::new("t\"\\\n\u{1}", "s", Timestamp::from_nanos(-123))
            .with_id(vec![0xffu8, 0])
            .with_field("nan", f64::NAN)
            .with_field("neg0", -0.0)
            .with_field("big", 1e300)
            .with_field("tiny", 5e-324)
            .with_payload(&b" not json"[..]);
        let mut batch = EventBatch::new();
        batch.push(&e);
        batch.push(&Event::new("a", "b", Timestamp::MAX).with_payload(&b"[1,2]"[..]));
        for format in [Format::Json, Format::Ndjson] {
            let mut out = Vec::new();
            format.encode(&batch, &mut out);
            let back = decode(format, core::str::from_utf8(&out).unwrap()).unwrap();
            assert_eq!(back, batch, "{}", String::from_utf8_lossy(&out));
        }
        let mut out = Vec::new();
        encode_ndjson(&batch, &mut out);
        assert!(out.windows(13).any(|w| w == b"\"payload\":[1,"), "valid JSON payloads are embedded verbatim");
    }
}

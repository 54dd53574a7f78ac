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
use crate::text::{short_eq, tail_word};
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
    let result = decode_pass(body, max_events, batch, false);
    // Also after an error: an id before it may be the first thing wrong.
    if batch.check_ids() {
        return result;
    }
    // Some string id is not UTF-8: decode again checking each, which gives
    // the error (and the offset) a check of each as it is read gives.
    decode_pass(body, max_events, batch, true)
}

/// One pass over the body; `check_each_id` checks string ids one by one
/// instead of leaving them to [`EventBatch::check_ids`].
fn decode_pass(
    body: &Bytes,
    max_events: usize,
    batch: &mut EventBatch,
    check_each_id: bool,
) -> core::result::Result<(), DecodeError> {
    batch.clear();
    let mut r = Reader { buf: body, pos: 0, tag: 0, check_each_id };
    let mut repeats = Repeats::default();
    while r.pos < body.len() {
        if let Err((offset, kind)) = next_field(&mut r, body, batch, &mut repeats) {
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
fn next_field<'a>(r: &mut Reader<'a>, body: &Bytes, batch: &mut EventBatch, repeats: &mut Repeats<'a>) -> Result<()> {
    let end = body.len();
    let (field, wire) = r.key(end)?;
    if field == 1 {
        r.expect(wire, LEN, "events")?;
        let event_end = r.event_end(end)?;
        decode_event(r, event_end, body, batch, repeats)
    } else {
        r.skip(field, wire, end, RECURSION_LIMIT)
    }
}

/// The strings the previous event had in the same places, and their
/// symbols: consecutive events mostly repeat their tenant, stream and field
/// names, and comparing a few bytes costs less than interning them.
#[derive(Default)]
struct Repeats<'a> {
    /// The bytes of the last event's tenant and stream fields, when it
    /// began with them (as encoders write events), and their symbols.
    head: Option<(&'a [u8], Sym, Sym)>,
    tenant: Repeat<'a>,
    stream: Repeat<'a>,
    /// The names of the first fields, by position.
    fields: [Repeat<'a>; 4],
}

type Repeat<'a> = Option<(&'a [u8], Sym)>;

/// The symbol of `bytes` (from `field` of the body, starting at `start`):
/// `last`'s if it holds the same bytes, else interned (checked as UTF-8)
/// and kept in `last`.
#[inline]
fn symbol_of<'a>(
    bytes: &'a [u8],
    last: &mut Repeat<'a>,
    ev: &mut EventBuilder<'_>,
    start: usize,
    field: &'static str,
) -> Result<Sym> {
    if let Some((seen, sym)) = *last
        && short_eq(seen, bytes)
    {
        return Ok(sym);
    }
    let sym = ev.intern_utf8(bytes).map_err(|_| (start, ProtoErrorKind::InvalidUtf8(field)))?;
    *last = Some((bytes, sym));
    Ok(sym)
}

fn decode_event<'a>(
    r: &mut Reader<'a>,
    end: usize,
    body: &Bytes,
    batch: &mut EventBatch,
    repeats: &mut Repeats<'a>,
) -> Result<()> {
    let start = r.pos;
    let depth = RECURSION_LIMIT - 1;
    let mut ev = batch.start_event();
    let (mut ts, mut geo, mut payload) = (None, None::<GeoPoint>, None);
    let (mut tenant, mut stream) = head(r, end, &mut ev, repeats)?;
    // Fields read so far (by the plain path): where to look for a repeat.
    let mut fields = 0;
    while r.pos < end {
        let (field, wire) = r.key(end)?;
        match field {
            1 => tenant = Some(r.symbol_as_before(wire, end, "tenant", &mut ev, &mut repeats.tenant)?),
            2 => stream = Some(r.symbol_as_before(wire, end, "stream", &mut ev, &mut repeats.stream)?),
            3 => {
                r.expect(wire, VARINT, "ts_unix_nanos")?;
                // int64 is the varint's bit pattern as two's complement.
                ts = Some(r.varint_long(end)? as i64);
            }
            4 if r.check_each_id => {
                let id = r.string(wire, end, "id_str")?;
                ev.id_str(id);
            }
            4 => {
                let id = r.bytes(wire, end, "id_str")?;
                ev.id_utf8(id);
            }
            5 => {
                let id = r.bytes(wire, end, "id_bytes")?;
                ev.id_bytes(id);
            }
            6 => {
                // An event's dims sit together and repeat together (a
                // device's name, region and type): a run of them whose bytes
                // were decoded before gives all its symbols at once.
                let Some(run_end) = dim_run(r.buf, r.tag, end) else {
                    decode_dim(r, wire, end, depth, &mut ev)?;
                    continue;
                };
                let run = r.buf.get(r.tag..run_end).unwrap_or_default();
                if let Some(found) = ev.batch.dim_memo.get_run(run) {
                    ev.shared_dims(found.at as usize, found.dims());
                    r.pos = run_end;
                    continue;
                }
                let first = ev.own_dims();
                r.pos = r.tag;
                while r.pos < run_end {
                    let (_, wire) = r.key(end)?;
                    decode_dim(r, wire, end, depth, &mut ev)?;
                }
                let batch = &mut *ev.batch;
                batch.dim_memo.put_run(run, first, batch.dims.get(first..).unwrap_or_default());
            }
            7 => {
                r.expect(wire, LEN, "fields")?;
                let field_end = r.len_end(end)?;
                if let Some((name, value)) = r.buf.get(r.pos..field_end).and_then(plain_field) {
                    // Where the generic path reports a bad name: its length.
                    let at = r.pos + 1;
                    let mut beyond = None;
                    let last = repeats.fields.get_mut(fields).unwrap_or(&mut beyond);
                    let name = symbol_of(name, last, &mut ev, at, "fields.name")?;
                    fields += 1;
                    r.pos = field_end;
                    ev.field_sym(name, value);
                    continue;
                }
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

/// The tenant and stream of an event that begins with them (fields 1 and
/// 2, the order encoders write), read past: consecutive events mostly
/// begin with the same bytes, and one compare with the last event's then
/// gives both. Only the tenant, or nothing (nothing read), for an event
/// that begins otherwise: the general loop reads the rest.
#[inline]
fn head<'a>(
    r: &mut Reader<'a>,
    end: usize,
    ev: &mut EventBuilder<'_>,
    repeats: &mut Repeats<'a>,
) -> Result<(Option<Sym>, Option<Sym>)> {
    const TENANT_KEY: u8 = 1 << 3 | LEN;
    const STREAM_KEY: u8 = 2 << 3 | LEN;
    let start = r.pos;
    if let Some((head, tenant, stream)) = repeats.head
        && start + head.len() <= end
        && r.buf.get(start..start + head.len()).is_some_and(|bytes| short_eq(bytes, head))
    {
        r.pos = start + head.len();
        return Ok((Some(tenant), Some(stream)));
    }
    if start >= end || r.buf.get(start) != Some(&TENANT_KEY) {
        return Ok((None, None));
    }
    let (_, wire) = r.key(end)?;
    let tenant = r.symbol_as_before(wire, end, "tenant", ev, &mut repeats.tenant)?;
    if r.pos >= end || r.buf.get(r.pos) != Some(&STREAM_KEY) {
        return Ok((Some(tenant), None));
    }
    let (_, wire) = r.key(end)?;
    let stream = r.symbol_as_before(wire, end, "stream", ev, &mut repeats.stream)?;
    repeats.head = r.buf.get(start..r.pos).map(|head| (head, tenant, stream));
    Ok((Some(tenant), Some(stream)))
}

/// Decodes one `dims` field (its key read: `wire`) into `ev`.
fn decode_dim(r: &mut Reader<'_>, wire: u8, end: usize, depth: u32, ev: &mut EventBuilder<'_>) -> Result<()> {
    r.expect(wire, LEN, "dims")?;
    let dim_end = r.len_end(end)?;
    // A `Dim` message decodes the same wherever its bytes occur: a repeat
    // of a recent one is found by its bytes alone.
    let entry = r.buf.get(r.pos..dim_end).unwrap_or_default();
    if let Some((key, value)) = ev.batch.dim_memo.get(entry) {
        r.pos = dim_end;
        ev.dim_sym(key, value);
        return Ok(());
    }
    let (key, value) = decode_pair(
        r,
        dim_end,
        depth - 1,
        "dims.key",
        ev,
        |r, wire, end, ev| r.symbol(wire, end, "dims.value", ev),
        |ev| ev.intern(""),
    )?;
    ev.batch.dim_memo.put(entry, key, value);
    ev.dim_sym(key, value);
    Ok(())
}

/// The key byte of a `dims` field (field 6, length-delimited).
const DIMS_KEY: u8 = 6 << 3 | LEN;

/// The end of the run of consecutive `dims` fields starting at `start` (at
/// a key), each with a one-byte key and length, if it holds 2 to
/// [`RUN_DIMS`] of them in at most [`RUN_BYTES`] bytes before `end`.
#[inline]
fn dim_run(buf: &[u8], start: usize, end: usize) -> Option<usize> {
    let mut pos = start;
    let mut dims = 0;
    while dims < RUN_DIMS
        && let Some(&[key, len]) = buf.get(pos..end).and_then(|b| b.first_chunk::<2>())
        && key == DIMS_KEY
        && len < 0x80
    {
        let next = pos + 2 + usize::from(len);
        if next > end || next - start > RUN_BYTES {
            break;
        }
        pos = next;
        dims += 1;
    }
    (dims >= 2).then_some(pos)
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

/// The name and value of a `Field` message in the form encoders write:
/// the name (field 1, shorter than 128 bytes) then the value (field 2), and
/// nothing else. Any other form is left to [`decode_pair`], which reads it
/// the same way.
#[inline]
fn plain_field(bytes: &[u8]) -> Option<(&[u8], f64)> {
    let (&[tag, len], rest) = bytes.split_first_chunk::<2>()?;
    let (name, rest) = rest.split_at_checked(usize::from(len))?;
    let (&[value_tag], value) = rest.split_first_chunk::<1>()?;
    let value = <[u8; 8]>::try_from(value).ok()?;
    (tag == 1 << 3 | LEN && len < 0x80 && value_tag == 2 << 3 | FIXED64).then(|| (name, f64::from_le_bytes(value)))
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

/// `Dim` messages decoded recently in the current batch, by their bytes:
/// dims repeat (a region, a device name), and a repeat costs a few word
/// compares instead of two keys, two lengths and two interned strings.
/// Messages of up to 32 bytes are kept (most dims); a longer one is decoded
/// each time. Two ways per set, the latest first, so that a few hundred
/// distinct dims mostly stay. The symbols belong to the batch's table, so
/// [`EventBatch::clear`] forgets every entry, by starting a new epoch.
#[derive(Default)]
pub(crate) struct DimMemo {
    /// Allocated when a first dim is decoded (boxed whole: batches that
    /// never see Protobuf pay one pointer).
    table: Option<Box<DimTable>>,
    /// Runs of consecutive `dims` fields (see [`dim_run`]), allocated when
    /// a first run is decoded.
    runs: Option<Box<RunTable>>,
}

/// Most dims in a run kept whole.
const RUN_DIMS: usize = 4;
/// Most bytes of a run kept whole (all its fields, keys and lengths).
const RUN_BYTES: usize = 64;
/// 256 sets of two runs (57 KB): a batch's distinct runs (one per device,
/// say) rarely put a third in one set, where they would evict each other
/// at every event. On the pipeline bench's bodies (about 67 devices each)
/// runs missed 93 k times per million events with 128 sets, 71 k with 256
/// (67 k of them first sightings).
const RUN_SET_BITS: u32 = 8;
const RUN_SETS: usize = 1 << RUN_SET_BITS;

struct RunTable {
    /// Entries of another epoch are stale.
    epoch: u32,
    /// `RUN_SETS` sets of two, by a hash of the run's bytes, the latest
    /// first: two runs that hash alike do not evict each other in turn.
    entries: [RunEntry; 2 * RUN_SETS],
}

/// A decoded run: its bytes and the dims it gave.
#[derive(Clone, Copy)]
struct RunEntry {
    bytes: [u8; RUN_BYTES],
    len: u8,
    epoch: u32,
    dims: RunDims,
}

/// The dims a run gave, and where in the batch's dims they were first
/// written (later events of the same run share them).
#[derive(Clone, Copy)]
struct RunDims {
    at: u32,
    n: u8,
    syms: [(Sym, Sym); RUN_DIMS],
}

impl RunDims {
    fn dims(&self) -> &[(Sym, Sym)] {
        self.syms.get(..usize::from(self.n)).unwrap_or_default()
    }
}

struct DimTable {
    /// Entries of another epoch are stale.
    epoch: u32,
    /// `DIM_SETS` sets of two.
    entries: [DimEntry; 2 * DIM_SETS],
}

const DIM_SET_BITS: u32 = 8;
const DIM_SETS: usize = 1 << DIM_SET_BITS;

/// A decoded `Dim`: its message bytes as [`dim_words`] and its length, and
/// the symbols of its key and value.
#[derive(Clone, Copy)]
struct DimEntry {
    words: [u64; 4],
    len: u32,
    epoch: u32,
    key: Sym,
    value: Sym,
}

/// The bytes of a message of up to 32 bytes as four words, read so that
/// together with the length they determine every byte; `None` if longer.
#[inline]
fn dim_words(bytes: &[u8]) -> Option<[u64; 4]> {
    let word = |b: Option<&[u8]>| b.and_then(|b| b.first_chunk::<8>()).map_or(0, |w| u64::from_le_bytes(*w));
    let len = bytes.len();
    match len {
        0..8 => Some([tail_word(bytes, len), 0, 0, 0]),
        8..=16 => Some([word(bytes.get(..8)), word(bytes.get(len - 8..)), 0, 0]),
        17..=32 => Some([
            word(bytes.get(..8)),
            word(bytes.get(8..16)),
            word(bytes.get(len - 16..)),
            word(bytes.get(len - 8..)),
        ]),
        _ => None,
    }
}

/// A clone of a batch starts with an empty memo: it is a cache of the
/// decoder, not part of the events, and a batch kept (as raw events are)
/// should not hold its 52 KB (24 KB of dims, 28 KB of runs).
impl Clone for DimMemo {
    fn clone(&self) -> Self {
        DimMemo::default()
    }
}

impl DimMemo {
    /// The two entries of the set of a message.
    #[inline]
    fn set(words: &[u64; 4], len: usize) -> core::ops::Range<usize> {
        let [a, b, c, d] = *words;
        let mixed = (a ^ b.rotate_left(17) ^ c.rotate_left(31) ^ d.rotate_left(47) ^ len as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let set = (mixed >> (64 - DIM_SET_BITS)) as usize;
        2 * set..2 * set + 2
    }

    /// The key and value of the `Dim` message `bytes`, if decoded in this
    /// epoch.
    #[inline]
    fn get(&self, bytes: &[u8]) -> Option<(Sym, Sym)> {
        let table = self.table.as_deref()?;
        let words = dim_words(bytes)?;
        let set = table.entries.get(Self::set(&words, bytes.len()))?;
        set.iter()
            .find(|e| e.words == words && e.len as usize == bytes.len() && e.epoch == table.epoch)
            .map(|e| (e.key, e.value))
    }

    /// Remembers that `bytes` decoded to `key` and `value`, first in its
    /// set (the other entry of the set moves second, the second goes).
    #[inline]
    fn put(&mut self, bytes: &[u8], key: Sym, value: Sym) {
        let Some(words) = dim_words(bytes) else { return };
        let table = self.table.get_or_insert_with(|| {
            // Epoch 0 is never current (see `clear`).
            let empty = DimEntry { words: [0; 4], len: 0, epoch: 0, key, value };
            Box::new(DimTable { epoch: 1, entries: [empty; 2 * DIM_SETS] })
        });
        let entry = DimEntry { words, len: bytes.len() as u32, epoch: table.epoch, key, value };
        let set = table.entries.get_mut(Self::set(&words, bytes.len()));
        if let Some([first, second]) = set.and_then(|s| <&mut [DimEntry; 2]>::try_from(s).ok()) {
            *second = core::mem::replace(first, entry);
        }
    }

    /// The two entries of the set of a run in [`RunTable::entries`], by a
    /// hash of all its bytes (runs of one region and type differ in the
    /// device between).
    #[inline]
    fn run_set(run: &[u8]) -> core::ops::Range<usize> {
        // A sum of each word times an odd constant of its position: the
        // products are independent, so they overlap, where a chain of
        // mixes would wait on each (a run is up to eight words).
        const K: [u64; RUN_BYTES / 8] = [
            0x9e37_79b9_7f4a_7c15,
            0xc2b2_ae3d_27d4_eb4f,
            0x1656_67b1_9e37_79f9,
            0x85eb_ca77_c2b2_ae63,
            0x27d4_eb2f_1656_67c5,
            0xff51_afd7_ed55_8ccd,
            0xc4ce_b9fe_1a85_ec53,
            0x8cb9_2ba7_2f3d_8dd7,
        ];
        let mut words = run.chunks_exact(8);
        let mut h = (run.len() as u64).wrapping_mul(0xd6e8_feb8_6659_fd93);
        let mut k = K.iter();
        for (w, &k) in (&mut words).zip(&mut k) {
            h = h.wrapping_add(w.first_chunk::<8>().map_or(0, |w| u64::from_le_bytes(*w)).wrapping_mul(k));
        }
        let tail = words.remainder().len();
        if tail > 0 {
            h = h.wrapping_add(tail_word(run, tail).wrapping_mul(k.next().copied().unwrap_or(1)));
        }
        let set = ((h ^ h >> 29).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - RUN_SET_BITS)) as usize;
        2 * set..2 * set + 2
    }

    /// The dims of the run `run`, if decoded in this epoch.
    #[inline]
    fn get_run(&self, run: &[u8]) -> Option<RunDims> {
        let table = self.runs.as_deref()?;
        let entry = table.entries.get(Self::run_set(run))?.iter().find(|e| {
            e.epoch == table.epoch && e.bytes.get(..usize::from(e.len)).is_some_and(|bytes| short_eq(bytes, run))
        })?;
        Some(entry.dims)
    }

    /// Remembers that the run `run` gave `dims`, written in the batch's
    /// dims at `at` (runs as [`dim_run`] bounds them; anything longer is
    /// not kept).
    fn put_run(&mut self, run: &[u8], at: usize, dims: &[(Sym, Sym)]) {
        let (Some(&first), Ok(len), Ok(n), Ok(at)) =
            (dims.first(), u8::try_from(run.len()), u8::try_from(dims.len()), u32::try_from(at))
        else {
            return;
        };
        if run.len() > RUN_BYTES || dims.len() > RUN_DIMS {
            return;
        }
        let table = self.runs.get_or_insert_with(|| {
            // Epoch 0 is never current (see `clear`).
            let dims = RunDims { at: 0, n: 0, syms: [first; RUN_DIMS] };
            let empty = RunEntry { bytes: [0; RUN_BYTES], len: 0, epoch: 0, dims };
            Box::new(RunTable { epoch: 1, entries: [empty; 2 * RUN_SETS] })
        });
        let epoch = table.epoch;
        let set = table.entries.get_mut(Self::run_set(run));
        let Some([entry, second]) = set.and_then(|s| <&mut [RunEntry; 2]>::try_from(s).ok()) else { return };
        *second = *entry;
        if let (Some(bytes), Some(syms)) = (entry.bytes.get_mut(..run.len()), entry.dims.syms.get_mut(..dims.len())) {
            bytes.copy_from_slice(run);
            syms.copy_from_slice(dims);
            entry.len = len;
            entry.epoch = epoch;
            entry.dims.n = n;
            entry.dims.at = at;
        }
    }

    /// Forgets every entry (their symbols are about to be reused).
    pub(crate) fn clear(&mut self) {
        if let Some(table) = &mut self.table {
            table.epoch = table.epoch.wrapping_add(1);
            if table.epoch == 0 {
                // Wrapped: entries of epoch 1 written 2^32 epochs ago would
                // look current again.
                self.table = None;
            }
        }
        if let Some(runs) = &mut self.runs {
            runs.epoch = runs.epoch.wrapping_add(1);
            if runs.epoch == 0 {
                self.runs = None;
            }
        }
    }
}

/// A cursor over the body; every read is bounded by the end of the
/// enclosing message, and errors carry the offset where the bad item starts.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Where the last tag read starts: errors about its field point there.
    tag: usize,
    /// Check string ids as UTF-8 as they are read (see [`decode_pass`]).
    check_each_id: bool,
}

/// The 7-bit groups in the low bits of each byte of `word` (high bits
/// ignored), joined into one number, least significant group first.
#[inline]
fn join_7bit_groups(word: u64) -> u64 {
    let x = word & 0x7f7f_7f7f_7f7f_7f7f;
    let x = (x & 0x007f_007f_007f_007f) | (x & 0x7f00_7f00_7f00_7f00) >> 1;
    let x = (x & 0x0000_3fff_0000_3fff) | (x & 0x3fff_0000_3fff_0000) >> 2;
    (x & 0x0000_0000_0fff_ffff) | (x & 0x0fff_ffff_0000_0000) >> 4
}

/// The varint that starts `word` (eight bytes, little-endian) followed by
/// `ninth`, the byte after them if any, and its length, when it ends within
/// those nine bytes.
#[inline(always)]
fn varint_in_word(word: u64, ninth: Option<u8>) -> Option<(u64, usize)> {
    // The high bit of each byte that ends the varint.
    let stops = !word & 0x8080_8080_8080_8080;
    if stops != 0 {
        let n = stops.trailing_zeros() as usize / 8 + 1;
        return Some((join_7bit_groups(word & (u64::MAX >> (64 - 8 * n))), n));
    }
    match ninth {
        Some(b) if b < 0x80 => Some((join_7bit_groups(word) | u64::from(b) << 56, 9)),
        _ => None,
    }
}

/// The value of the varint `low`, `high` (`low` continues, `high` ends).
#[inline(always)]
fn two_byte_varint(low: u8, high: u8) -> u64 {
    u64::from(low & 0x7f) | u64::from(high) << 7
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

    /// A varint expected to be long (a timestamp in nanoseconds takes
    /// nine bytes): read from one word first, without the tests for the
    /// short forms, and without a call; anything else as [`Reader::varint`].
    #[inline(always)]
    fn varint_long(&mut self, end: usize) -> Result<u64> {
        let start = self.pos;
        if let Some((head, rest)) = self.buf.get(start..end).and_then(|b| b.split_first_chunk::<8>())
            && let Some((value, n)) = varint_in_word(u64::from_le_bytes(*head), rest.first().copied())
        {
            self.pos = start + n;
            return Ok(value);
        }
        self.varint(end)
    }

    /// A varint expected to take one or two bytes (the length of an event:
    /// events of 128 bytes to 16 KB take two): both forms read inline,
    /// without a call; anything else as [`Reader::varint`].
    #[inline(always)]
    fn varint_short(&mut self, end: usize) -> Result<u64> {
        let start = self.pos;
        if let Some(&[low, high]) = self.buf.get(start..end).and_then(|b| b.first_chunk::<2>()) {
            if low < 0x80 {
                self.pos = start + 1;
                return Ok(u64::from(low));
            }
            if high < 0x80 {
                self.pos = start + 2;
                return Ok(two_byte_varint(low, high));
            }
        }
        self.varint(end)
    }

    /// A varint of several bytes (timestamps in nanoseconds take nine):
    /// its first eight bytes read as one word when the message holds them.
    #[inline]
    fn varint_slow(&mut self, end: usize) -> Result<u64> {
        let start = self.pos;
        let bytes = self.buf.get(start..end).unwrap_or_default();
        // Two bytes: lengths from 128 bytes (events take `varint_short`).
        if let Some(&[low, high]) = bytes.first_chunk::<2>()
            && high < 0x80
        {
            self.pos = start + 2;
            return Ok(two_byte_varint(low, high));
        }
        if let Some(head) = bytes.first_chunk::<8>() {
            let word = u64::from_le_bytes(*head);
            if let Some((value, n)) = varint_in_word(word, bytes.get(8).copied()) {
                self.pos = start + n;
                return Ok(value);
            }
            // Nine bytes that all continue: 63 bits, then one more byte.
            let low = join_7bit_groups(word);
            return match (bytes.get(8), bytes.get(9)) {
                // The tenth byte may only carry the top bit of a u64.
                (Some(&b), Some(&last)) if last <= 1 => {
                    self.pos = start + 10;
                    Ok(low | u64::from(b & 0x7f) << 56 | u64::from(last) << 63)
                }
                (Some(_), Some(_)) => Err((start, ProtoErrorKind::InvalidVarint)),
                _ => Err((start, ProtoErrorKind::Truncated)),
            };
        }
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
        // A one-byte key of a valid field number and wire type: nearly all.
        if start < end
            && let Some(&b) = self.buf.get(start)
            && (8..0x80).contains(&b)
            && b & 7 <= FIXED32
        {
            self.pos = start + 1;
            return Ok((u32::from(b >> 3), b & 7));
        }
        self.key_slow(start, end)
    }

    /// A key of several bytes, or an invalid one.
    #[cold]
    fn key_slow(&mut self, start: usize, end: usize) -> Result<(u32, u8)> {
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
        self.value_end(start, len, end)
    }

    /// [`Reader::len_end`] for an event, whose length is mostly two bytes
    /// long ([`Reader::varint_short`]).
    #[inline(always)]
    fn event_end(&mut self, end: usize) -> Result<usize> {
        let start = self.pos;
        let len = self.varint_short(end)?;
        self.value_end(start, len, end)
    }

    /// The end of a value of `len` bytes from here, which must be within
    /// `end` (`start`: where its length began, for the error).
    #[inline(always)]
    fn value_end(&self, start: usize, len: u64, end: usize) -> Result<usize> {
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

    /// Reads a `string` field as [`symbol_of`] does with `last`.
    #[inline]
    fn symbol_as_before(
        &mut self,
        wire: u8,
        end: usize,
        field: &'static str,
        ev: &mut EventBuilder<'_>,
        last: &mut Repeat<'a>,
    ) -> Result<Sym> {
        let start = self.pos;
        let bytes = self.bytes(wire, end, field)?;
        symbol_of(bytes, last, ev, start, field)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Our varint readers (the general one, and those for long and for
    /// short varints) against `prost`'s on `bytes` (followed by more bytes,
    /// or not): the same value and length, or all refuse.
    fn agrees_with_prost(bytes: &[u8]) {
        let ours = |form: usize| {
            let mut r = Reader { buf: bytes, pos: 0, tag: 0, check_each_id: true };
            let value = match form {
                0 => r.varint(bytes.len()),
                1 => r.varint_long(bytes.len()),
                _ => r.varint_short(bytes.len()),
            };
            value.map(|v| (v, r.pos)).ok()
        };
        let theirs = {
            let mut buf = bytes;
            prost::encoding::decode_varint(&mut buf).ok().map(|v| (v, bytes.len() - buf.len()))
        };
        assert_eq!(ours(0), theirs, "{bytes:02x?}");
        assert_eq!(ours(1), theirs, "long: {bytes:02x?}");
        assert_eq!(ours(2), theirs, "short: {bytes:02x?}");
    }

    #[test]
    fn varints_of_every_length_read_as_prost_reads_them() {
        let mut values = vec![0, 1, 127, 128, 300, u64::MAX, u64::MAX - 1, 1 << 63, (1 << 63) - 1];
        values.extend((1..64).map(|b| 1u64 << b));
        values.extend((1..64).map(|b| (1u64 << b) - 1));
        values.push(1_795_838_400_123_456_789); // a timestamp in nanoseconds
        for v in values {
            let mut wire = Vec::new();
            varint(v, &mut wire);
            agrees_with_prost(&wire);
            for tail in [&[0x05][..], &[0xff; 12], &[0x80, 0x01]] {
                let mut longer = wire.clone();
                longer.extend_from_slice(tail);
                agrees_with_prost(&longer);
            }
            // Truncated: every continuation byte without its end.
            for cut in 1..wire.len() {
                agrees_with_prost(&wire[..cut]);
            }
        }
        // Overlong and out-of-range tenth bytes, and ten continuing bytes.
        for last in [0x00, 0x01, 0x02, 0x7f, 0x80, 0xff] {
            let mut wire = vec![0xff; 9];
            wire.push(last);
            agrees_with_prost(&wire);
            wire.push(0x00);
            agrees_with_prost(&wire);
        }
        agrees_with_prost(&[0x80; 11]);
        agrees_with_prost(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]);
    }
}

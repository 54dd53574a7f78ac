//! The event schema, batches of events, their codecs and their validation.
//!
//! An event is one measurement or occurrence reported by a device, a service
//! or a user:
//!
//! | part | type | |
//! | --- | --- | --- |
//! | `tenant` | string | required; whose data this is |
//! | `stream` | string | required; the topic, e.g. `metrics`, `events`, `alerts` |
//! | `ts` | [`Timestamp`] | required; event time |
//! | `id` | string or bytes | optional; for dedup and deterministic sampling |
//! | `dims` | string → string | labels such as `region`, `device`, `type` |
//! | `fields` | string → `f64` | named numeric measurements |
//! | `geo` | [`GeoPoint`] | optional latitude / longitude |
//! | `payload` | bytes | optional raw payload, kept opaque |
//!
//! Decoders produce an [`EventBatch`], a compact columnar container that
//! interns every repeated string (tenant, stream, dim keys and values, field
//! names) in a per-batch [`Symbols`] table and keeps dims, fields and ids in
//! flat arenas, so decoding allocates nothing per event once a batch is
//! reused. [`Event`] is the owned, self-contained form for building events in
//! code and for tests.
//!
//! The wire forms are described in [`json`] (JSON, JSON arrays and NDJSON)
//! and [`protobuf`] (`proto/edgestream.proto`); [`decode`] picks one from an
//! HTTP content type. [`Limits::validate`] checks a decoded batch.

use core::fmt;
use core::ops::Range;

use bytes::Bytes;
use smallvec::SmallVec;

use crate::time::Timestamp;

mod decode;
pub mod json;
pub mod protobuf;
mod symbols;
mod validate;

pub use decode::{DecodeError, DecodeErrorKind, Format, JsonErrorKind, ProtoErrorKind, decode};
pub use symbols::{Sym, Symbols};
pub use validate::{BatchPolicy, Limits, Part, RejectKind, RejectReason, Rejection, ValidationReport};

/// A point on Earth in degrees (WGS 84): latitude −90..=90, longitude −180..=180.
///
/// Decoders accept any `f64`; [`Limits::validate`] rejects points outside
/// those ranges or with non-finite coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct GeoPoint {
    /// Latitude in degrees, positive north.
    pub lat: f64,
    /// Longitude in degrees, positive east.
    pub lon: f64,
}

impl GeoPoint {
    /// A point at `lat`, `lon` degrees.
    pub const fn new(lat: f64, lon: f64) -> Self {
        GeoPoint { lat, lon }
    }

    /// Whether both coordinates are finite and inside their ranges.
    pub fn is_valid(&self) -> bool {
        (-90.0..=90.0).contains(&self.lat) && (-180.0..=180.0).contains(&self.lon)
    }
}

/// The optional identity of an event: a string or raw bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventId {
    /// A textual id, such as a UUID or `device-17:4711`.
    Str(String),
    /// A binary id, such as a 16-byte UUID or a hash.
    Bytes(Vec<u8>),
}

impl EventId {
    /// The id's bytes (UTF-8 for a string id).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            EventId::Str(s) => s.as_bytes(),
            EventId::Bytes(b) => b,
        }
    }

    /// A borrowed view of this id.
    pub fn as_id_ref(&self) -> EventIdRef<'_> {
        match self {
            EventId::Str(s) => EventIdRef::Str(s),
            EventId::Bytes(b) => EventIdRef::Bytes(b),
        }
    }
}

impl From<&str> for EventId {
    fn from(s: &str) -> Self {
        EventId::Str(s.to_owned())
    }
}

impl From<String> for EventId {
    fn from(s: String) -> Self {
        EventId::Str(s)
    }
}

impl From<Vec<u8>> for EventId {
    fn from(b: Vec<u8>) -> Self {
        EventId::Bytes(b)
    }
}

/// A borrowed event id, as stored in an [`EventBatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventIdRef<'a> {
    /// A textual id.
    Str(&'a str),
    /// A binary id.
    Bytes(&'a [u8]),
}

impl<'a> EventIdRef<'a> {
    /// The id's bytes (UTF-8 for a string id).
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            EventIdRef::Str(s) => s.as_bytes(),
            EventIdRef::Bytes(b) => b,
        }
    }
}

impl From<EventIdRef<'_>> for EventId {
    fn from(id: EventIdRef<'_>) -> Self {
        match id {
            EventIdRef::Str(s) => EventId::Str(s.to_owned()),
            EventIdRef::Bytes(b) => EventId::Bytes(b.to_vec()),
        }
    }
}

/// One event, owning its strings: the convenient form for building events in
/// code. Batches store events more compactly; see [`EventBatch`].
///
/// ```
/// use edgestream::event::{Event, GeoPoint};
/// use edgestream::time::Timestamp;
///
/// let ts = Timestamp::from_millis(1_795_838_400_000).unwrap();
/// let e = Event::new("acme", "metrics", ts)
///     .with_id("evt-1")
///     .with_dim("region", "eu-west")
///     .with_field("temp_c", 21.5)
///     .with_geo(GeoPoint::new(38.72, -9.14));
/// assert_eq!(e.field("temp_c"), Some(21.5));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Event {
    /// Whose data this is.
    pub tenant: String,
    /// The topic the event belongs to.
    pub stream: String,
    /// Event time.
    pub ts: Timestamp,
    /// Optional identity for dedup and deterministic sampling.
    pub id: Option<EventId>,
    /// Labels, in the order given.
    pub dims: SmallVec<[(String, String); 4]>,
    /// Numeric measurements, in the order given.
    pub fields: SmallVec<[(String, f64); 4]>,
    /// Optional location.
    pub geo: Option<GeoPoint>,
    /// Optional opaque payload.
    pub payload: Option<Bytes>,
}

impl Event {
    /// An event with no id, dims, fields, geo point or payload.
    pub fn new(tenant: impl Into<String>, stream: impl Into<String>, ts: Timestamp) -> Self {
        Event { tenant: tenant.into(), stream: stream.into(), ts, ..Event::default() }
    }

    /// Sets the id.
    pub fn with_id(mut self, id: impl Into<EventId>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Appends a dim.
    pub fn with_dim(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.dims.push((key.into(), value.into()));
        self
    }

    /// Appends a field.
    pub fn with_field(mut self, name: impl Into<String>, value: f64) -> Self {
        self.fields.push((name.into(), value));
        self
    }

    /// Sets the geo point.
    pub fn with_geo(mut self, geo: GeoPoint) -> Self {
        self.geo = Some(geo);
        self
    }

    /// Sets the payload.
    pub fn with_payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// The value of the first dim named `key`.
    pub fn dim(&self, key: &str) -> Option<&str> {
        self.dims.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of the first field named `name`.
    pub fn field(&self, name: &str) -> Option<f64> {
        self.fields.iter().find(|(k, _)| k == name).map(|&(_, v)| v)
    }
}

impl PartialEq for Event {
    /// The same equality as [`EventRef`]'s: `-0.0` differs from `0.0`, and a
    /// NaN equals any NaN.
    fn eq(&self, other: &Self) -> bool {
        let geo = |e: &Self| e.geo.map(|g| (Num(g.lat), Num(g.lon)));
        self.tenant == other.tenant
            && self.stream == other.stream
            && self.ts == other.ts
            && self.id == other.id
            && self.dims == other.dims
            && self.fields.len() == other.fields.len()
            && self.fields.iter().zip(&other.fields).all(|((a, x), (b, y))| a == b && Num(*x) == Num(*y))
            && geo(self) == geo(other)
            && self.payload == other.payload
    }
}

/// Where an event's id lives in its batch's id arena.
#[derive(Clone, Debug, PartialEq, Eq)]
enum IdSlot {
    None,
    Str(Range<usize>),
    Bytes(Range<usize>),
}

/// One event inside an [`EventBatch`]: symbols and ranges into the batch's
/// shared tables.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    tenant: Sym,
    stream: Sym,
    ts: Timestamp,
    id: IdSlot,
    dims: Range<usize>,
    fields: Range<usize>,
    /// Its geo point and payload in [`EventBatch::extras`], or [`NO_EXTRA`]
    /// (most events have neither): 80 bytes a record instead of 128, and
    /// every stage reads each record.
    extra: usize,
}

/// [`Record::extra`] of an event without geo point or payload.
const NO_EXTRA: usize = usize::MAX;

/// What few events carry: kept apart from their [`Record`]s.
#[derive(Clone, Debug)]
struct Extra {
    geo: Option<GeoPoint>,
    payload: Option<Bytes>,
}

/// A batch of events: what every decoder produces and every later stage
/// consumes.
///
/// Storage is columnar and shared: strings are interned once per batch in
/// [`EventBatch::symbols`], dims and fields of all events sit in two flat
/// arrays, ids in two arenas (text and bytes), and payloads are [`Bytes`] slices of the
/// decoded body (no copy). Reusing a batch ([`EventBatch::clear`], or a
/// decoder's `decode_into`) keeps every allocation, so steady-state decoding
/// allocates nothing per event.
///
/// ```
/// use edgestream::event::{Event, EventBatch};
/// use edgestream::time::Timestamp;
///
/// let ts = Timestamp::from_secs(1_795_838_400).unwrap();
/// let mut batch = EventBatch::new();
/// for device in ["d-1", "d-2", "d-1"] {
///     batch.push(&Event::new("acme", "metrics", ts).with_dim("device", device).with_field("temp_c", 21.0));
/// }
/// assert_eq!(batch.len(), 3);
/// // "acme", "metrics", "device", "d-1", "d-2", "temp_c": each stored once.
/// assert_eq!(batch.symbols().len(), 6);
/// let second = batch.get(1).unwrap();
/// assert_eq!(second.dim("device"), Some("d-2"));
/// ```
#[derive(Clone, Default)]
pub struct EventBatch {
    symbols: Symbols,
    records: Vec<Record>,
    dims: Vec<(Sym, Sym)>,
    fields: Vec<(Sym, f64)>,
    /// Arenas of string ids (kept as text, so reading one back needs no
    /// UTF-8 check) and of byte ids.
    id_text: String,
    id_bytes: Vec<u8>,
    /// String ids a decoder appended without checking them as UTF-8 one by
    /// one: they continue `id_text` (their ranges count from its start)
    /// until [`EventBatch::check_ids`] checks them all at once and moves
    /// them there. Empty between decodes.
    id_unchecked: Vec<u8>,
    /// Whether an unchecked id that is not UTF-8 was replaced by a later id
    /// of the same event: gone from `id_unchecked`, it must still fail
    /// [`EventBatch::check_ids`] (a decoder that checks each id as it is
    /// read refuses it).
    dropped_bad_id: bool,
    /// Scratch for validation: a verdict per symbol, kept to reuse the allocation.
    verdicts: Vec<u8>,
    /// The Protobuf decoder's recent dims, valid until `clear`.
    dim_memo: protobuf::DimMemo,
    /// Whether some events share their dims (see [`EventRef::dims_id`]).
    shares_dims: bool,
    /// Geo points and payloads, by [`Record::extra`].
    extras: Vec<Extra>,
}

impl fmt::Debug for EventBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for EventBatch {
    /// Two batches are equal when they hold equal events (see
    /// [`EventRef`]'s `PartialEq`) in the same order, whatever their symbol
    /// tables look like.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().zip(other.iter()).all(|(a, b)| a == b)
    }
}

impl EventBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Removes every event and string, keeping the allocations.
    pub fn clear(&mut self) {
        self.symbols.clear();
        self.dim_memo.clear();
        self.records.clear();
        self.extras.clear();
        self.dims.clear();
        self.fields.clear();
        self.id_text.clear();
        self.id_bytes.clear();
        self.id_unchecked.clear();
        self.dropped_bad_id = false;
        self.shares_dims = false;
    }

    /// Whether some events share the dims of an earlier one (see
    /// [`EventRef::dims_id`]): only then is work per dims id worth
    /// remembering.
    #[inline]
    pub(crate) fn shares_dims(&self) -> bool {
        self.shares_dims
    }

    /// The geo point and payload of `record`, if it has either.
    #[inline]
    pub(crate) fn extra_of(&self, record: &Record) -> Option<(Option<GeoPoint>, Option<&Bytes>)> {
        self.extras.get(record.extra).map(|e| (e.geo, e.payload.as_ref()))
    }

    /// Where the next string id starts: after the checked text and any
    /// unchecked text.
    #[inline]
    fn id_text_end(&self) -> usize {
        self.id_text.len() + self.id_unchecked.len()
    }

    /// Checks the string ids appended by [`EventBuilder::id_utf8`] as UTF-8,
    /// all at once (one pass over a few kilobytes costs less than a call per
    /// id), and makes them readable. Each id must be valid alone, so each
    /// must also start and end on a character boundary of the whole. False
    /// when some id is not UTF-8: the caller clears the batch (whose ids
    /// are then unusable) and finds which by checking them one by one.
    pub(crate) fn check_ids(&mut self) -> bool {
        if self.dropped_bad_id {
            return false;
        }
        if self.id_unchecked.is_empty() {
            return true;
        }
        let base = self.id_text.len();
        if base == 0 {
            // The usual case (a decoder starts from a cleared batch): the
            // checked bytes become the text without a copy, and the empty
            // text's allocation is kept for the next batch.
            let unchecked = core::mem::take(&mut self.id_unchecked);
            let mut spare = core::mem::take(&mut self.id_text).into_bytes();
            // Sized for the next batch like this one, so that a batch
            // reused for bodies alike stops allocating from the second.
            spare.reserve(unchecked.len());
            match String::from_utf8(unchecked) {
                Ok(text) => self.id_text = text,
                Err(e) => {
                    // Both buffers back in place, allocations kept (`spare`
                    // is empty, so this is always `Ok`).
                    self.id_unchecked = e.into_bytes();
                    self.id_text = String::from_utf8(spare).unwrap_or_default();
                    return false;
                }
            }
            self.id_unchecked = spare;
        } else {
            let Ok(text) = core::str::from_utf8(&self.id_unchecked) else { return false };
            self.id_text.push_str(text);
            self.id_unchecked.clear();
        }
        // Every position in ASCII text is a boundary.
        let text = self.id_text.get(base..).unwrap_or_default();
        text.is_ascii()
            || self.records.iter().all(|r| match &r.id {
                IdSlot::Str(range) if range.end > base => {
                    text.is_char_boundary(range.start.saturating_sub(base)) && text.is_char_boundary(range.end - base)
                }
                _ => true,
            })
    }

    /// The batch's string table: resolves the [`Sym`]s of its events.
    pub fn symbols(&self) -> &Symbols {
        &self.symbols
    }

    /// The dims of every event, one event after another, including those
    /// of events a retain dropped (their arena entries stay until `clear`).
    #[inline]
    pub(crate) fn dims_arena(&self) -> &[(Sym, Sym)] {
        &self.dims
    }

    /// The event at `index`.
    pub fn get(&self, index: usize) -> Option<EventRef<'_>> {
        self.records.get(index).map(|record| EventRef { batch: self, record })
    }

    /// The events in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = EventRef<'_>> + '_ {
        self.records.iter().map(move |record| EventRef { batch: self, record })
    }

    /// Appends a copy of `event`.
    pub fn push(&mut self, event: &Event) {
        let mut b = self.start_event();
        let tenant = b.intern(&event.tenant);
        let stream = b.intern(&event.stream);
        for (k, v) in &event.dims {
            b.dim(k, v);
        }
        for (k, v) in &event.fields {
            b.field(k, *v);
        }
        match &event.id {
            Some(EventId::Str(s)) => b.id_str(s),
            Some(EventId::Bytes(bytes)) => b.id_bytes(bytes),
            None => {}
        }
        b.finish(tenant, stream, event.ts, event.geo, event.payload.clone());
    }

    /// Every event as an owned [`Event`].
    pub fn to_events(&self) -> Vec<Event> {
        self.iter().map(|e| e.to_event()).collect()
    }

    /// Starts appending an event; decoders build events through this.
    #[inline]
    pub(crate) fn start_event(&mut self) -> EventBuilder<'_> {
        EventBuilder {
            dims_start: self.dims.len(),
            fields_start: self.fields.len(),
            id_starts: (self.id_text_end(), self.id_bytes.len()),
            id: IdSlot::None,
            shared: None,
            batch: self,
        }
    }

    /// Removes the events whose weight is not positive (sampled out) and
    /// their entries in `weights`, which holds one weight per event (as
    /// written by the [`crate::sample`] batch helpers). Returns how many
    /// events were removed. The rest keep their order, ready for
    /// [`Windows::push_weighted`](crate::window::Windows::push_weighted).
    ///
    /// If `weights` does not hold one weight per event, nothing changes and
    /// `None` is returned.
    pub fn retain_sampled(&mut self, weights: &mut Vec<f64>) -> Option<usize> {
        if weights.len() != self.records.len() {
            return None;
        }
        let before = self.records.len();
        let kept = |w: &f64| *w > 0.0;
        self.retain_indexed(|i| weights.get(i).is_some_and(kept));
        weights.retain(kept);
        Some(before - self.records.len())
    }

    /// Keeps only the events for which `keep(index)` is true, in order.
    /// Arena space of removed events is reclaimed by the next `clear`; their
    /// payloads are let go at once (a clone of the batch must not hold a
    /// refused payload's body).
    pub(crate) fn retain_indexed(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let mut i = 0;
        let extras = &mut self.extras;
        self.records.retain(|r| {
            let k = keep(i);
            i += 1;
            if !k && let Some(e) = extras.get_mut(r.extra) {
                e.payload = None;
            }
            k
        });
    }
}

/// Appends one event to a batch. Dims, fields and the id are pushed as the
/// decoder meets them; [`EventBuilder::finish`] seals the event. Dropping the
/// builder without finishing leaves orphan arena entries but no event, which
/// is harmless: arenas are reclaimed on `clear`.
pub(crate) struct EventBuilder<'b> {
    batch: &'b mut EventBatch,
    dims_start: usize,
    fields_start: usize,
    /// Lengths of the two id arenas when the event started.
    id_starts: (usize, usize),
    id: IdSlot,
    /// Dims of an earlier event that are all this one's so far (see
    /// [`EventBuilder::shared_dims`]).
    shared: Option<Range<usize>>,
}

impl EventBuilder<'_> {
    #[inline]
    pub(crate) fn intern(&mut self, s: &str) -> Sym {
        self.batch.symbols.intern(s)
    }

    /// Interns UTF-8 bytes, validating them only the first time they occur.
    #[inline]
    pub(crate) fn intern_utf8(&mut self, bytes: &[u8]) -> Result<Sym, core::str::Utf8Error> {
        self.batch.symbols.intern_utf8(bytes)
    }

    #[inline]
    pub(crate) fn dim(&mut self, key: &str, value: &str) {
        let k = self.batch.symbols.intern(key);
        let v = self.batch.symbols.intern(value);
        self.dim_sym(k, v);
    }

    #[inline]
    pub(crate) fn dim_sym(&mut self, key: Sym, value: Sym) {
        self.own_dims();
        self.batch.dims.push((key, value));
    }

    /// Adds `dims`, which an earlier event of the batch wrote at `at` in
    /// the dims arena: an event that has no other dims shares them (no
    /// copy, and stages that resolve groups see that the two events'
    /// dims are one, by [`EventRef::dims_id`]).
    #[inline]
    pub(crate) fn shared_dims(&mut self, at: usize, dims: &[(Sym, Sym)]) {
        let range = at..at.saturating_add(dims.len());
        if self.shared.is_none()
            && self.dims_start == self.batch.dims.len()
            && self.batch.dims.get(range.clone()) == Some(dims)
        {
            self.shared = Some(range);
            self.batch.shares_dims = true;
        } else {
            self.own_dims();
            self.batch.dims.extend_from_slice(dims);
        }
    }

    /// Copies shared dims into the event's own, so that more can follow
    /// them; returns the end of the dims arena.
    #[inline]
    pub(crate) fn own_dims(&mut self) -> usize {
        if let Some(shared) = self.shared.take() {
            self.batch.dims.extend_from_within(shared);
        }
        self.batch.dims.len()
    }

    #[inline]
    pub(crate) fn field(&mut self, name: &str, value: f64) {
        let k = self.batch.symbols.intern(name);
        self.batch.fields.push((k, value));
    }

    #[inline]
    pub(crate) fn field_sym(&mut self, name: Sym, value: f64) {
        self.batch.fields.push((name, value));
    }

    /// Sets a string id, replacing any id set before.
    #[inline]
    pub(crate) fn id_str(&mut self, id: &str) {
        if self.batch.id_unchecked.is_empty() {
            self.drop_id();
            let (start, _) = self.id_starts;
            self.batch.id_text.push_str(id);
            self.id = IdSlot::Str(start..self.batch.id_text.len());
        } else {
            // Behind unchecked ids: it goes after them.
            self.id_utf8(id.as_bytes());
        }
    }

    /// Sets a string id from bytes that must be UTF-8, replacing any id set
    /// before. The check is left to [`EventBatch::check_ids`], which the
    /// decoder must call before the batch is read.
    #[inline]
    pub(crate) fn id_utf8(&mut self, id: &[u8]) {
        self.drop_id();
        let (start, _) = self.id_starts;
        self.batch.id_unchecked.extend_from_slice(id);
        self.id = IdSlot::Str(start..self.batch.id_text_end());
    }

    /// Sets a bytes id, replacing any id set before.
    pub(crate) fn id_bytes(&mut self, id: &[u8]) {
        self.drop_id();
        let (_, start) = self.id_starts;
        self.batch.id_bytes.extend_from_slice(id);
        self.id = IdSlot::Bytes(start..self.batch.id_bytes.len());
    }

    /// Drops an id this same event set before from the arenas.
    fn drop_id(&mut self) {
        if matches!(self.id, IdSlot::None) {
            // Nothing was appended since the event started.
            return;
        }
        let (text, bytes) = self.id_starts;
        let checked = self.batch.id_text.len();
        match text.checked_sub(checked) {
            Some(unchecked) => {
                let batch = &mut *self.batch;
                if let Some(dropped) = batch.id_unchecked.get(unchecked..)
                    && !dropped.is_empty()
                    && core::str::from_utf8(dropped).is_err()
                {
                    batch.dropped_bad_id = true;
                }
                batch.id_unchecked.truncate(unchecked);
            }
            // `text` was the length of `id_text` when the event started: a
            // character boundary.
            None => {
                self.batch.id_text.truncate(text);
                self.batch.id_unchecked.clear();
            }
        }
        self.batch.id_bytes.truncate(bytes);
    }

    /// Seals the event and appends it to the batch.
    #[inline(always)]
    pub(crate) fn finish(self, tenant: Sym, stream: Sym, ts: Timestamp, geo: Option<GeoPoint>, payload: Option<Bytes>) {
        let record = Record {
            tenant,
            stream,
            ts,
            id: self.id,
            dims: self.shared.unwrap_or(self.dims_start..self.batch.dims.len()),
            fields: self.fields_start..self.batch.fields.len(),
            extra: NO_EXTRA,
        };
        let record = if geo.is_some() || payload.is_some() {
            self.batch.extras.push(Extra { geo, payload });
            Record { extra: self.batch.extras.len() - 1, ..record }
        } else {
            record
        };
        self.batch.records.push(record);
    }
}

/// A borrowed view of one event in an [`EventBatch`].
#[derive(Clone, Copy)]
pub struct EventRef<'a> {
    batch: &'a EventBatch,
    record: &'a Record,
}

impl fmt::Debug for EventRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("tenant", &self.tenant())
            .field("stream", &self.stream())
            .field("ts", &self.ts())
            .field("id", &self.id())
            .field("dims", &self.dims().collect::<Vec<_>>())
            .field("fields", &self.fields().collect::<Vec<_>>())
            .field("geo", &self.geo())
            .field("payload", &self.payload())
            .finish()
    }
}

impl PartialEq for EventRef<'_> {
    /// Numbers compare as values that survive every codec: `-0.0` differs
    /// from `0.0`, and a NaN equals any NaN (JSON carries no NaN payload).
    fn eq(&self, other: &Self) -> bool {
        let geo = |e: &Self| e.geo().map(|g| (Num(g.lat), Num(g.lon)));
        self.tenant() == other.tenant()
            && self.stream() == other.stream()
            && self.ts() == other.ts()
            && self.id() == other.id()
            && self.dims().eq(other.dims())
            && self.fields().map(|(k, v)| (k, Num(v))).eq(other.fields().map(|(k, v)| (k, Num(v))))
            && geo(self) == geo(other)
            && self.payload() == other.payload()
    }
}

/// An `f64` compared by bit pattern, with every NaN equal to every other.
#[derive(Clone, Copy)]
struct Num(f64);

impl PartialEq for Num {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits() || (self.0.is_nan() && other.0.is_nan())
    }
}

impl<'a> EventRef<'a> {
    /// The tenant.
    pub fn tenant(&self) -> &'a str {
        self.batch.symbols.str(self.record.tenant)
    }

    /// The stream (topic).
    pub fn stream(&self) -> &'a str {
        self.batch.symbols.str(self.record.stream)
    }

    /// Event time.
    pub fn ts(&self) -> Timestamp {
        self.record.ts
    }

    /// The id, if any.
    pub fn id(&self) -> Option<EventIdRef<'a>> {
        match &self.record.id {
            IdSlot::None => None,
            IdSlot::Str(r) => self.batch.id_text.get(r.clone()).map(EventIdRef::Str),
            IdSlot::Bytes(r) => self.batch.id_bytes.get(r.clone()).map(EventIdRef::Bytes),
        }
    }

    /// The id's bytes, if any: what [`EventIdRef::as_bytes`] gives for
    /// [`EventRef::id`], without checking the text's character boundaries
    /// (its ranges are whole ids).
    #[inline]
    pub(crate) fn id_bytes(&self) -> Option<&'a [u8]> {
        match &self.record.id {
            IdSlot::None => None,
            IdSlot::Str(r) => self.batch.id_text.as_bytes().get(r.clone()),
            IdSlot::Bytes(r) => self.batch.id_bytes.get(r.clone()),
        }
    }

    /// The length in bytes of the id, if any (without slicing the text).
    #[inline]
    pub(crate) fn id_len(&self) -> Option<usize> {
        match &self.record.id {
            IdSlot::None => None,
            IdSlot::Str(r) | IdSlot::Bytes(r) => Some(r.len()),
        }
    }

    /// The dims as `(key, value)` strings, in order.
    pub fn dims(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + 'a {
        let symbols = &self.batch.symbols;
        self.dim_syms().iter().map(move |&(k, v)| (symbols.str(k), symbols.str(v)))
    }

    /// The value of the first dim named `key`.
    pub fn dim(&self, key: &str) -> Option<&'a str> {
        let k = self.batch.symbols.get(key)?;
        self.dim_syms().iter().find(|(dk, _)| *dk == k).map(|&(_, v)| self.batch.symbols.str(v))
    }

    /// The fields as `(name, value)`, in order.
    pub fn fields(&self) -> impl ExactSizeIterator<Item = (&'a str, f64)> + 'a {
        let symbols = &self.batch.symbols;
        self.field_syms().iter().map(move |&(k, v)| (symbols.str(k), v))
    }

    /// The value of the first field named `name`.
    pub fn field(&self, name: &str) -> Option<f64> {
        let k = self.batch.symbols.get(name)?;
        self.field_syms().iter().find(|(fk, _)| *fk == k).map(|&(_, v)| v)
    }

    /// The geo point, if any.
    pub fn geo(&self) -> Option<GeoPoint> {
        self.batch.extra_of(self.record).and_then(|(geo, _)| geo)
    }

    /// The payload, if any: a zero-copy slice of the decoded body.
    pub fn payload(&self) -> Option<&'a Bytes> {
        self.batch.extra_of(self.record).and_then(|(_, payload)| payload)
    }

    /// The tenant as a symbol of [`EventBatch::symbols`].
    pub fn tenant_sym(&self) -> Sym {
        self.record.tenant
    }

    /// The stream as a symbol of [`EventBatch::symbols`].
    pub fn stream_sym(&self) -> Sym {
        self.record.stream
    }

    /// The dims as symbol pairs: the fast path for grouping.
    pub fn dim_syms(&self) -> &'a [(Sym, Sym)] {
        self.batch.dims.get(self.record.dims.clone()).unwrap_or_default()
    }

    /// Where the event's dims sit in its batch: events of one batch with
    /// the same `dims_id` have the same dims (a decoder shares the dims of
    /// events that repeat them), so per-event work on dims can be done
    /// once per id. Events with the same dims may still have different
    /// ids.
    #[inline]
    pub(crate) fn dims_id(&self) -> (usize, usize) {
        (self.record.dims.start, self.record.dims.end)
    }

    /// The fields keyed by symbol: the fast path for aggregation.
    pub fn field_syms(&self) -> &'a [(Sym, f64)] {
        self.batch.fields.get(self.record.fields.clone()).unwrap_or_default()
    }

    /// An owned copy of this event.
    pub fn to_event(&self) -> Event {
        Event {
            tenant: self.tenant().to_owned(),
            stream: self.stream().to_owned(),
            ts: self.ts(),
            id: self.id().map(EventId::from),
            dims: self.dims().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            fields: self.fields().map(|(k, v)| (k.to_owned(), v)).collect(),
            geo: self.geo(),
            payload: self.payload().cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(n: i64) -> Timestamp {
        Timestamp::from_nanos(n)
    }

    /// Appends an event with the unchecked string id `id`.
    fn push_unchecked(batch: &mut EventBatch, id: &[u8]) {
        let mut b = batch.start_event();
        let t = b.intern("t");
        b.id_utf8(id);
        b.finish(t, t, ts(1), None, None);
    }

    /// Every stage reads each record: geo points and payloads live apart.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn records_stay_small() {
        assert!(size_of::<Record>() <= 80, "{}", size_of::<Record>());
    }

    /// Geo points and payloads stay with their events when others are
    /// dropped around them.
    #[test]
    fn extras_follow_their_events_through_retain() {
        let mut batch = EventBatch::new();
        for i in 0..6 {
            let mut e = Event::new("t", "t", ts(i));
            if i % 2 == 1 {
                e = e.with_geo(GeoPoint::new(i as f64, 0.0)).with_payload(vec![i as u8]);
            }
            batch.push(&e);
        }
        batch.retain_indexed(|i| i != 1 && i != 2);
        assert!(batch.extras.iter().filter(|e| e.payload.is_some()).count() == 2, "event 1's payload let go");
        let seen: Vec<_> = batch.iter().map(|e| (e.ts(), e.geo().map(|g| g.lat), e.payload().cloned())).collect();
        assert_eq!(
            seen,
            vec![
                (ts(0), None, None),
                (ts(3), Some(3.0), Some(Bytes::from(vec![3u8]))),
                (ts(4), None, None),
                (ts(5), Some(5.0), Some(Bytes::from(vec![5u8]))),
            ]
        );
    }

    /// `id_bytes` reads what `id` gives, for both kinds, after a retain
    /// moved the ranges, and for events without an id.
    #[test]
    fn id_bytes_are_the_ids_bytes() {
        let mut batch = EventBatch::new();
        for i in 0..8 {
            let e = Event::new("t", "t", ts(i));
            let e = match i % 3 {
                0 => e.with_id(format!("évt-{i}")),
                1 => e.with_id(vec![0xff, i as u8]),
                _ => e,
            };
            batch.push(&e);
        }
        batch.retain_indexed(|i| i != 2 && i != 3);
        let ids: Vec<_> = batch.iter().map(|e| (e.id_bytes(), e.id().map(|id| id.as_bytes()))).collect();
        assert!(ids.iter().all(|(fast, slow)| fast == slow), "{ids:?}");
        assert_eq!(ids.iter().filter(|(id, _)| id.is_some()).count(), 5);
    }

    #[test]
    fn unchecked_ids_after_checked_text_are_checked_alone() {
        let mut batch = EventBatch::new();
        batch.push(&Event::new("t", "t", ts(1)).with_id("checked-é"));
        push_unchecked(&mut batch, "après".as_bytes());
        assert!(batch.check_ids(), "the path where text was checked before");
        let ids: Vec<_> = batch.iter().map(|e| e.id().map(|id| id.as_bytes().to_vec())).collect();
        assert_eq!(ids, vec![Some("checked-é".as_bytes().to_vec()), Some("après".as_bytes().to_vec())]);

        // A character split between two unchecked ids: valid once joined,
        // refused as ids.
        let mut batch = EventBatch::new();
        batch.push(&Event::new("t", "t", ts(1)).with_id("x"));
        push_unchecked(&mut batch, &[0xc3]);
        push_unchecked(&mut batch, &[0xa9]);
        assert!(!batch.check_ids());
    }

    #[test]
    fn a_failed_check_keeps_both_id_buffers() {
        let mut batch = EventBatch::new();
        push_unchecked(&mut batch, &[b'a'; 100]);
        push_unchecked(&mut batch, &[0xff]);
        assert!(!batch.check_ids());
        assert!(batch.id_unchecked.capacity() >= 101, "the unchecked bytes' buffer is kept");
        batch.clear();
        push_unchecked(&mut batch, b"ok");
        assert!(batch.check_ids());
        assert_eq!(batch.get(0).and_then(|e| e.id()).map(|id| id.as_bytes().to_vec()), Some(b"ok".to_vec()));
    }

    #[test]
    fn push_then_read_back() {
        let e = Event::new("acme", "metrics", ts(5))
            .with_id(vec![1u8, 2, 3])
            .with_dim("region", "eu")
            .with_dim("device", "d-1")
            .with_field("temp", 21.5)
            .with_geo(GeoPoint::new(1.0, 2.0))
            .with_payload(&b"raw"[..]);
        let mut batch = EventBatch::new();
        batch.push(&e);
        batch.push(&Event::new("acme", "events", ts(6)).with_id("x"));
        assert_eq!(batch.to_events(), vec![e.clone(), Event::new("acme", "events", ts(6)).with_id("x")]);
        let first = batch.get(0).unwrap();
        assert_eq!(first.dim("device"), Some("d-1"));
        assert_eq!(first.dim("nope"), None);
        assert_eq!(first.field("temp"), Some(21.5));
        assert_eq!(first.id(), Some(EventIdRef::Bytes(&[1, 2, 3])));
        assert_eq!(batch.get(1).unwrap().dims().len(), 0);
        assert!(batch.get(2).is_none());
    }

    #[test]
    fn a_replaced_id_leaves_nothing_behind() {
        let mut b = EventBatch::new();
        let mut e = b.start_event();
        let (t, s) = (e.intern("t"), e.intern("s"));
        e.id_str("first");
        e.id_bytes(&[1, 2]);
        e.finish(t, s, ts(1), None, None);
        let mut e = b.start_event();
        e.id_bytes(&[9]);
        e.id_str("second");
        e.finish(t, s, ts(2), None, None);
        assert_eq!(b.get(0).unwrap().id(), Some(EventIdRef::Bytes(&[1, 2])));
        assert_eq!(b.get(1).unwrap().id(), Some(EventIdRef::Str("second")));
        assert_eq!((b.id_text.as_str(), b.id_bytes.as_slice()), ("second", &[1u8, 2][..]));
    }

    #[test]
    fn clear_keeps_working_and_equality_ignores_symbol_order() {
        let mut a = EventBatch::new();
        a.push(&Event::new("z", "y", ts(1)).with_dim("k", "v"));
        let mut b = EventBatch::new();
        b.push(&Event::new("q", "y", ts(0)));
        b.clear();
        b.push(&Event::new("z", "y", ts(1)).with_dim("k", "v"));
        assert_eq!(a, b);
        b.retain_indexed(|_| false);
        assert!(b.is_empty());
    }
}

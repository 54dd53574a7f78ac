//! Limits on what a batch may contain, and the validation that enforces them.

use core::fmt;

use serde::{Deserialize, Serialize};

use super::{EventBatch, EventRef, Sym};
use crate::time::{Span, Timestamp};

/// What a batch and its events may contain.
///
/// Two kinds of limit live here. **Batch limits** (`max_batch_bytes`,
/// `max_events_per_batch`) are enforced by the decoders while they read, so
/// a hostile body can never make them hold more than these bounds. A decoded
/// batch holds at most about 8 bytes per body byte (the worst case, a body of
/// empty Protobuf fields, each 2 bytes on the wire and 16 in the batch) plus
/// about 150 bytes per event, so with the defaults a batch never exceeds
/// about 10 MiB, whatever the body; on a memory-tight host lower
/// `max_batch_bytes`. **Event limits** are checked by [`Limits::validate`],
/// which rejects the offending events one by one with a typed
/// [`RejectReason`].
///
/// Every field has a default (the `DEFAULT_*` constants); in serde config any
/// field may be left out:
///
/// ```
/// use edgestream::event::Limits;
///
/// let limits: Limits = serde_json::from_str(r#"{"max_events_per_batch": 500, "max_future_skew": "30s"}"#)?;
/// assert_eq!(limits.max_events_per_batch, 500);
/// assert_eq!(limits.max_dims_per_event, Limits::DEFAULT_MAX_DIMS_PER_EVENT);
///
/// // In code: start from the defaults and change what you need.
/// let mut limits = Limits::default();
/// limits.max_event_age = Some(edgestream::time::Span::from_days(7));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Limits {
    /// Largest body a decoder accepts, in bytes.
    pub max_batch_bytes: usize,
    /// Most events a decoder accepts in one body.
    pub max_events_per_batch: usize,
    /// Most dims on one event.
    pub max_dims_per_event: usize,
    /// Most fields on one event.
    pub max_fields_per_event: usize,
    /// Longest tenant, stream, dim key or field name, in bytes.
    pub max_key_len: usize,
    /// Longest dim value, in bytes.
    pub max_value_len: usize,
    /// Longest id, in bytes.
    pub max_id_len: usize,
    /// Largest payload, in bytes.
    pub max_payload_bytes: usize,
    /// How far past the caller's `now` an event time may be (clock skew of
    /// the senders). Later events are rejected as [`RejectReason::InFuture`].
    /// Config refuses a negative span; set in code, one counts as zero.
    #[serde(deserialize_with = "non_negative")]
    pub max_future_skew: Span,
    /// How far before the caller's `now` an event time may be, if bounded.
    /// Older events are rejected as [`RejectReason::TooOld`]. Unbounded by
    /// default: backfills are legitimate, and the window stage counts
    /// events that arrive after their window closed. Config refuses a
    /// negative span; set in code, one counts as zero.
    #[serde(deserialize_with = "non_negative_option")]
    pub max_event_age: Option<Span>,
    /// What happens to the valid events of a batch that has invalid ones.
    pub policy: BatchPolicy,
}

impl Limits {
    /// Default for [`Limits::max_batch_bytes`]: 1 MiB.
    pub const DEFAULT_MAX_BATCH_BYTES: usize = 1 << 20;
    /// Default for [`Limits::max_events_per_batch`].
    pub const DEFAULT_MAX_EVENTS_PER_BATCH: usize = 10_000;
    /// Default for [`Limits::max_dims_per_event`].
    pub const DEFAULT_MAX_DIMS_PER_EVENT: usize = 32;
    /// Default for [`Limits::max_fields_per_event`].
    pub const DEFAULT_MAX_FIELDS_PER_EVENT: usize = 64;
    /// Default for [`Limits::max_key_len`].
    pub const DEFAULT_MAX_KEY_LEN: usize = 128;
    /// Default for [`Limits::max_value_len`].
    pub const DEFAULT_MAX_VALUE_LEN: usize = 1_024;
    /// Default for [`Limits::max_id_len`].
    pub const DEFAULT_MAX_ID_LEN: usize = 256;
    /// Default for [`Limits::max_payload_bytes`]: 64 KiB.
    pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 << 10;
    /// Default for [`Limits::max_future_skew`]: 5 minutes.
    pub const DEFAULT_MAX_FUTURE_SKEW: Span = Span::from_mins(5);
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_bytes: Self::DEFAULT_MAX_BATCH_BYTES,
            max_events_per_batch: Self::DEFAULT_MAX_EVENTS_PER_BATCH,
            max_dims_per_event: Self::DEFAULT_MAX_DIMS_PER_EVENT,
            max_fields_per_event: Self::DEFAULT_MAX_FIELDS_PER_EVENT,
            max_key_len: Self::DEFAULT_MAX_KEY_LEN,
            max_value_len: Self::DEFAULT_MAX_VALUE_LEN,
            max_id_len: Self::DEFAULT_MAX_ID_LEN,
            max_payload_bytes: Self::DEFAULT_MAX_PAYLOAD_BYTES,
            max_future_skew: Self::DEFAULT_MAX_FUTURE_SKEW,
            max_event_age: None,
            policy: BatchPolicy::default(),
        }
    }
}

fn non_negative<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
    let span = Span::deserialize(d)?;
    if span < Span::ZERO { Err(serde::de::Error::custom("a limit span must not be negative")) } else { Ok(span) }
}

fn non_negative_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Span>, D::Error> {
    match Option::<Span>::deserialize(d)? {
        Some(span) if span < Span::ZERO => Err(serde::de::Error::custom("a limit span must not be negative")),
        other => Ok(other),
    }
}

/// What [`Limits::validate`] does with the valid events of a batch that also
/// holds invalid ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BatchPolicy {
    /// Keep the valid events, reject the invalid ones (the default).
    #[default]
    AcceptValid,
    /// Reject the whole batch if any event is invalid; the valid events are
    /// reported with [`RejectReason::BatchRejected`].
    RejectBatch,
}

/// Which part of an event a [`RejectReason`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Part {
    /// The tenant.
    Tenant,
    /// The stream.
    Stream,
    /// The id.
    Id,
    /// A dim key.
    DimKey,
    /// A dim value.
    DimValue,
    /// A field name.
    FieldName,
    /// The payload.
    Payload,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Part::Tenant => "tenant",
            Part::Stream => "stream",
            Part::Id => "id",
            Part::DimKey => "dim key",
            Part::DimValue => "dim value",
            Part::FieldName => "field name",
            Part::Payload => "payload",
        })
    }
}

/// Why one event of a batch was rejected. Each variant says how to fix it.
///
/// Serializes (for an HTTP error body) as an object tagged by `reason`,
/// e.g. `{"reason":"too_long","part":"tenant","len":300,"max":128}`.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectReason {
    /// A required string is empty (tenant, stream, dim key, field name) or
    /// an id is empty. Send a non-empty value, or leave the id out.
    #[error("{part} is empty")]
    Empty {
        /// Which string.
        part: Part,
    },
    /// A string, id or payload is longer than its limit. Shorten it or
    /// raise the limit in [`Limits`].
    #[error("{part} is {len} bytes, over the limit of {max}")]
    TooLong {
        /// Which string.
        part: Part,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A tenant, stream, dim key, dim value or field name contains a control
    /// character (U+0000..U+001F, U+007F..U+009F). Remove it.
    #[error("{part} contains a control character")]
    ControlCharacter {
        /// Which string.
        part: Part,
    },
    /// More dims than [`Limits::max_dims_per_event`].
    #[error("{count} dims, over the limit of {max}")]
    TooManyDims {
        /// Dims on the event.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// More fields than [`Limits::max_fields_per_event`].
    #[error("{count} fields, over the limit of {max}")]
    TooManyFields {
        /// Fields on the event.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The same dim key appears twice. Send each key once.
    #[error("dim {key:?} appears more than once")]
    DuplicateDim {
        /// The repeated key.
        key: String,
    },
    /// The same field name appears twice. Send each field once.
    #[error("field {name:?} appears more than once")]
    DuplicateField {
        /// The repeated name.
        name: String,
    },
    /// A field value is NaN or infinite. Send finite numbers, or leave the
    /// field out when there is no measurement.
    #[error("field {name:?} is {value}, not a finite number")]
    NonFiniteField {
        /// The field.
        name: String,
        /// Its value.
        value: f64,
    },
    /// The event time is further in the future than
    /// [`Limits::max_future_skew`] allows. Check the sender's clock and the
    /// timestamp's unit (milliseconds in JSON, nanoseconds in Protobuf).
    #[error("event time {ts} is after the latest accepted time {latest}")]
    InFuture {
        /// The event time.
        ts: Timestamp,
        /// `now + max_future_skew`.
        latest: Timestamp,
    },
    /// The event time is older than [`Limits::max_event_age`] allows. Check
    /// the sender's clock and the timestamp's unit.
    #[error("event time {ts} is before the earliest accepted time {earliest}")]
    TooOld {
        /// The event time.
        ts: Timestamp,
        /// `now - max_event_age`.
        earliest: Timestamp,
    },
    /// The geo point is not finite or outside ±90° latitude / ±180°
    /// longitude. Check the coordinate order (latitude first).
    #[error("geo point ({lat}, {lon}) is outside ±90° latitude / ±180° longitude")]
    InvalidGeo {
        /// Latitude sent.
        lat: f64,
        /// Longitude sent.
        lon: f64,
    },
    /// The event names another tenant than the one ingesting it
    /// ([`Limits::validate_for`]). A tenant may only write its own data.
    #[error("tenant {tenant:?} is not the ingesting tenant")]
    ForeignTenant {
        /// The tenant the event names.
        tenant: String,
    },
    /// The event is valid, but another event in the same batch was not and
    /// the policy is [`BatchPolicy::RejectBatch`]. Fix the others and resend.
    #[error("the batch was rejected because event {first_invalid} is invalid")]
    BatchRejected {
        /// Index of the first invalid event in the batch.
        first_invalid: usize,
    },
}

/// The kind of a [`RejectReason`], without its details: the key the stats
/// count rejections by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectKind {
    /// [`RejectReason::Empty`].
    Empty,
    /// [`RejectReason::TooLong`].
    TooLong,
    /// [`RejectReason::ControlCharacter`].
    ControlCharacter,
    /// [`RejectReason::TooManyDims`].
    TooManyDims,
    /// [`RejectReason::TooManyFields`].
    TooManyFields,
    /// [`RejectReason::DuplicateDim`].
    DuplicateDim,
    /// [`RejectReason::DuplicateField`].
    DuplicateField,
    /// [`RejectReason::NonFiniteField`].
    NonFiniteField,
    /// [`RejectReason::InFuture`].
    InFuture,
    /// [`RejectReason::TooOld`].
    TooOld,
    /// [`RejectReason::InvalidGeo`].
    InvalidGeo,
    /// [`RejectReason::ForeignTenant`].
    ForeignTenant,
    /// [`RejectReason::BatchRejected`].
    BatchRejected,
}

impl crate::stats::CountKey for RejectKind {
    const ALL: &'static [Self] = &[
        RejectKind::Empty,
        RejectKind::TooLong,
        RejectKind::ControlCharacter,
        RejectKind::TooManyDims,
        RejectKind::TooManyFields,
        RejectKind::DuplicateDim,
        RejectKind::DuplicateField,
        RejectKind::NonFiniteField,
        RejectKind::InFuture,
        RejectKind::TooOld,
        RejectKind::InvalidGeo,
        RejectKind::ForeignTenant,
        RejectKind::BatchRejected,
    ];
    fn index(self) -> usize {
        self as usize
    }
    fn name(self) -> &'static str {
        match self {
            RejectKind::Empty => "empty",
            RejectKind::TooLong => "too_long",
            RejectKind::ControlCharacter => "control_character",
            RejectKind::TooManyDims => "too_many_dims",
            RejectKind::TooManyFields => "too_many_fields",
            RejectKind::DuplicateDim => "duplicate_dim",
            RejectKind::DuplicateField => "duplicate_field",
            RejectKind::NonFiniteField => "non_finite_field",
            RejectKind::InFuture => "in_future",
            RejectKind::TooOld => "too_old",
            RejectKind::InvalidGeo => "invalid_geo",
            RejectKind::ForeignTenant => "foreign_tenant",
            RejectKind::BatchRejected => "batch_rejected",
        }
    }
}

impl fmt::Display for RejectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(crate::stats::CountKey::name(*self))
    }
}

impl RejectReason {
    /// The kind of this reason.
    pub fn kind(&self) -> RejectKind {
        match self {
            RejectReason::Empty { .. } => RejectKind::Empty,
            RejectReason::TooLong { .. } => RejectKind::TooLong,
            RejectReason::ControlCharacter { .. } => RejectKind::ControlCharacter,
            RejectReason::TooManyDims { .. } => RejectKind::TooManyDims,
            RejectReason::TooManyFields { .. } => RejectKind::TooManyFields,
            RejectReason::DuplicateDim { .. } => RejectKind::DuplicateDim,
            RejectReason::DuplicateField { .. } => RejectKind::DuplicateField,
            RejectReason::NonFiniteField { .. } => RejectKind::NonFiniteField,
            RejectReason::InFuture { .. } => RejectKind::InFuture,
            RejectReason::TooOld { .. } => RejectKind::TooOld,
            RejectReason::InvalidGeo { .. } => RejectKind::InvalidGeo,
            RejectReason::ForeignTenant { .. } => RejectKind::ForeignTenant,
            RejectReason::BatchRejected { .. } => RejectKind::BatchRejected,
        }
    }
}

/// One rejected event: its index in the batch as decoded, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rejection {
    /// Position of the event in the decoded batch (0-based).
    pub index: usize,
    /// Why it was rejected.
    pub reason: RejectReason,
}

/// The outcome of [`Limits::validate`] for one batch.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ValidationReport {
    /// Events in the batch before validation.
    pub received: usize,
    /// Rejected events in index order, each with its reason. With
    /// [`BatchPolicy::RejectBatch`] and any invalid event, every event is
    /// here.
    pub rejected: Vec<Rejection>,
}

impl ValidationReport {
    /// Events that passed and remain in the batch.
    pub fn accepted(&self) -> usize {
        self.received.saturating_sub(self.rejected.len())
    }

    /// Whether every event was accepted.
    pub fn is_clean(&self) -> bool {
        self.rejected.is_empty()
    }

    /// The original indexes of the accepted events, in order: event `i` of
    /// the validated batch was event `accepted_indices().nth(i)` of the
    /// decoded one.
    pub fn accepted_indices(&self) -> impl Iterator<Item = usize> + '_ {
        let mut rejected = self.rejected.iter().map(|r| r.index).peekable();
        (0..self.received).filter(move |&i| rejected.next_if_eq(&i).is_none())
    }
}

impl Limits {
    /// Checks every event of `batch` against these limits, removes the
    /// rejected ones from the batch (keeping the order of the rest) and
    /// reports each rejection with its original index and reason.
    ///
    /// `now` is the host's current time; it bounds event times through
    /// [`Limits::max_future_skew`] and [`Limits::max_event_age`]. The first
    /// failing check of an event is its reason. With
    /// [`BatchPolicy::RejectBatch`], one invalid event empties the batch.
    ///
    /// ```
    /// use edgestream::event::{Event, EventBatch, Limits, RejectReason};
    /// use edgestream::time::{Span, Timestamp};
    ///
    /// let now = Timestamp::from_secs(1_795_838_400).unwrap();
    /// let mut batch = EventBatch::new();
    /// batch.push(&Event::new("acme", "metrics", now).with_field("temp_c", 21.5));
    /// batch.push(&Event::new("acme", "metrics", now).with_field("temp_c", f64::NAN));
    /// batch.push(&Event::new("acme", "metrics", now.saturating_add(Span::from_hours(1))));
    ///
    /// let report = Limits::default().validate(&mut batch, now);
    /// assert_eq!(report.accepted(), 1);
    /// assert_eq!(batch.len(), 1);
    /// assert_eq!(report.rejected[0].index, 1);
    /// assert!(matches!(report.rejected[0].reason, RejectReason::NonFiniteField { .. }));
    /// assert!(matches!(report.rejected[1].reason, RejectReason::InFuture { .. }));
    /// ```
    pub fn validate(&self, batch: &mut EventBatch, now: Timestamp) -> ValidationReport {
        self.validate_inner(batch, now, None)
    }

    /// As [`Limits::validate`], for a body ingested by (authenticated as)
    /// `tenant`: an event that names another tenant is also rejected, with
    /// [`RejectReason::ForeignTenant`], so a tenant can never write into
    /// another's data.
    ///
    /// ```
    /// use edgestream::event::{decode, Limits, RejectKind};
    /// use edgestream::time::Timestamp;
    ///
    /// let body = r#"{"tenant":"acme","stream":"s","ts":0}
    /// {"tenant":"globex","stream":"s","ts":0}"#;
    /// let limits = Limits::default();
    /// let mut batch = decode("application/x-ndjson", body, &limits)?;
    /// let report = limits.validate_for(&mut batch, Timestamp::from_nanos(0), "acme");
    /// assert_eq!(report.rejected[0].index, 1);
    /// assert_eq!(report.rejected[0].reason.kind(), RejectKind::ForeignTenant);
    /// # Ok::<(), edgestream::event::DecodeError>(())
    /// ```
    pub fn validate_for(&self, batch: &mut EventBatch, now: Timestamp, tenant: &str) -> ValidationReport {
        self.validate_inner(batch, now, Some(tenant))
    }

    fn validate_inner(&self, batch: &mut EventBatch, now: Timestamp, tenant: Option<&str>) -> ValidationReport {
        // The ingesting tenant's symbol; `Some(None)`: no event names it.
        let own = tenant.map(|t| batch.symbols.get(t));
        let latest = now.saturating_add(self.max_future_skew.max(Span::ZERO));
        let earliest = self.max_event_age.map(|age| now.saturating_sub(age.max(Span::ZERO)));
        // Strings are interned, so each distinct one is checked once per
        // batch here, and events then only look up its verdict.
        let mut verdicts = core::mem::take(&mut batch.verdicts);
        verdicts.clear();
        verdicts.extend(batch.symbols.iter().map(|(_, s)| {
            let mut v = 0;
            if self.name(Part::Tenant, s).is_ok() {
                v |= NAME_OK;
            }
            if self.value(s).is_ok() {
                v |= VALUE_OK;
            }
            v
        }));
        let mut rejected = Vec::new();
        let mut memo = DimsMemo::new(batch.shares_dims());
        for (index, event) in batch.iter().enumerate() {
            // Most events pass: a quick test of every rule first, the full
            // check (which names the reason) only for those that fail it.
            if self.passes_all(batch, event.record, &verdicts, latest, earliest, own, &mut memo) {
                continue;
            }
            let result = self.check(&event, &verdicts, latest, earliest).and_then(|()| match own {
                Some(own) if own != Some(event.tenant_sym()) => {
                    Err(RejectReason::ForeignTenant { tenant: event.tenant().to_owned() })
                }
                _ => Ok(()),
            });
            if let Err(reason) = result {
                rejected.push(Rejection { index, reason });
            }
        }
        batch.verdicts = verdicts;
        let received = batch.len();
        if rejected.is_empty() {
            return ValidationReport { received, rejected };
        }
        match self.policy {
            BatchPolicy::AcceptValid => {
                let mut next = rejected.iter().map(|r| r.index).peekable();
                batch.retain_indexed(|i| {
                    if next.peek() == Some(&i) {
                        next.next();
                        false
                    } else {
                        true
                    }
                });
            }
            BatchPolicy::RejectBatch => {
                let first_invalid = rejected.first().map_or(0, |r| r.index);
                let mut invalid = rejected.into_iter().peekable();
                rejected = (0..received)
                    .map(|index| match invalid.next_if(|r| r.index == index) {
                        Some(r) => r,
                        None => Rejection { index, reason: RejectReason::BatchRejected { first_invalid } },
                    })
                    .collect();
                batch.clear();
            }
        }
        ValidationReport { received, rejected }
    }

    /// Whether `record` passes every check of [`Limits::check`] and the
    /// tenant check, tested with few branches: `false` also when in doubt
    /// (the full check decides). `memo` keeps the verdict on dims that
    /// several events share.
    #[inline]
    #[allow(clippy::too_many_arguments, reason = "a private helper of the per-event loop")]
    fn passes_all(
        &self,
        batch: &EventBatch,
        record: &super::Record,
        verdicts: &[u8],
        latest: Timestamp,
        earliest: Option<Timestamp>,
        own: Option<Option<Sym>>,
        memo: &mut DimsMemo,
    ) -> bool {
        let verdict = |sym: Sym| verdict_of(verdicts, sym);
        let (Some(dims), Some(fields)) = (batch.dims.get(record.dims.clone()), batch.fields.get(record.fields.clone()))
        else {
            return false;
        };
        if fields.len() > self.max_fields_per_event
            || !memo.verdict((record.dims.start, record.dims.end), || self.dims_pass(dims, verdicts))
        {
            return false;
        }
        let mut names = verdict(record.tenant) & verdict(record.stream);
        let mut finite = true;
        // Repeated names by a bit per symbol, as in `dims_pass`.
        let (mut seen, mut twice) = (0u64, 0u64);
        for &(name, value) in fields {
            names &= verdict(name);
            finite &= value.is_finite();
            let bit = 1u64 << (name.index() % 64);
            twice |= seen & bit;
            seen |= bit;
        }
        let id_ok = match &record.id {
            super::IdSlot::None => true,
            super::IdSlot::Str(r) | super::IdSlot::Bytes(r) => !r.is_empty() && r.len() <= self.max_id_len,
        };
        names & NAME_OK != 0
            && finite
            && id_ok
            && record.ts <= latest
            && earliest.is_none_or(|e| record.ts >= e)
            && own.is_none_or(|own| own == Some(record.tenant))
            && batch.extra_of(record).is_none_or(|(geo, payload)| {
                geo.is_none_or(|g| g.is_valid()) && payload.is_none_or(|p| p.len() <= self.max_payload_bytes)
            })
            && twice == 0
    }

    /// The part of [`Limits::passes_all`] that depends on the dims alone:
    /// not too many, every key a valid name and every value a valid value,
    /// no key twice (`false` also when in doubt).
    #[inline]
    fn dims_pass(&self, dims: &[(Sym, Sym)], verdicts: &[u8]) -> bool {
        let verdict = |sym: Sym| verdict_of(verdicts, sym);
        if dims.len() > self.max_dims_per_event {
            return false;
        }
        let (mut names, mut values) = (NAME_OK, VALUE_OK);
        // Repeated keys by a bit per symbol, modulo 64: a bit met twice is a
        // repeat or two symbols alike modulo 64 (rare: keys are few and
        // interned early), which the full check tells apart.
        let (mut seen, mut twice) = (0u64, 0u64);
        for &(key, value) in dims {
            names &= verdict(key);
            values &= verdict(value);
            let bit = 1u64 << (key.index() % 64);
            twice |= seen & bit;
            seen |= bit;
        }
        names & NAME_OK != 0 && values & VALUE_OK != 0 && twice == 0
    }

    fn check(
        &self,
        e: &EventRef<'_>,
        verdicts: &[u8],
        latest: Timestamp,
        earliest: Option<Timestamp>,
    ) -> Result<(), RejectReason> {
        let symbols = &e.batch.symbols;
        let passes = |sym: Sym, bit: u8| verdicts.get(sym.index()).is_some_and(|v| v & bit != 0);
        // The slow paths run only for a failing string, to name the reason.
        let name = |part: Part, sym: Sym| {
            if passes(sym, NAME_OK) { Ok(()) } else { self.name(part, symbols.str(sym)) }
        };
        name(Part::Tenant, e.tenant_sym())?;
        name(Part::Stream, e.stream_sym())?;
        match e.id_len() {
            Some(0) => return Err(RejectReason::Empty { part: Part::Id }),
            Some(len) => max_len(Part::Id, len, self.max_id_len)?,
            None => {}
        }
        let dims = e.dim_syms();
        if dims.len() > self.max_dims_per_event {
            return Err(RejectReason::TooManyDims { count: dims.len(), max: self.max_dims_per_event });
        }
        for &(key, value) in dims {
            name(Part::DimKey, key)?;
            if !passes(value, VALUE_OK) {
                self.value(symbols.str(value))?;
            }
        }
        if let Some(key) = first_duplicate(dims, |d| d.0) {
            return Err(RejectReason::DuplicateDim { key: symbols.str(key).to_owned() });
        }
        let fields = e.field_syms();
        if fields.len() > self.max_fields_per_event {
            return Err(RejectReason::TooManyFields { count: fields.len(), max: self.max_fields_per_event });
        }
        for &(field, value) in fields {
            name(Part::FieldName, field)?;
            if !value.is_finite() {
                return Err(RejectReason::NonFiniteField { name: symbols.str(field).to_owned(), value });
            }
        }
        if let Some(field) = first_duplicate(fields, |f| f.0) {
            return Err(RejectReason::DuplicateField { name: symbols.str(field).to_owned() });
        }
        if let Some(geo) = e.geo()
            && !geo.is_valid()
        {
            return Err(RejectReason::InvalidGeo { lat: geo.lat, lon: geo.lon });
        }
        if let Some(payload) = e.payload() {
            max_len(Part::Payload, payload.len(), self.max_payload_bytes)?;
        }
        let ts = e.ts();
        if ts > latest {
            return Err(RejectReason::InFuture { ts, latest });
        }
        if let Some(earliest) = earliest
            && ts < earliest
        {
            return Err(RejectReason::TooOld { ts, earliest });
        }
        Ok(())
    }

    /// Checks a dim value.
    fn value(&self, s: &str) -> Result<(), RejectReason> {
        max_len(Part::DimValue, s.len(), self.max_value_len)?;
        no_control(Part::DimValue, s)
    }

    /// Checks a tenant, stream, dim key or field name.
    fn name(&self, part: Part, s: &str) -> Result<(), RejectReason> {
        if s.is_empty() {
            return Err(RejectReason::Empty { part });
        }
        max_len(part, s.len(), self.max_key_len)?;
        no_control(part, s)
    }
}

/// Verdict bits of one interned string, computed once per batch.
const NAME_OK: u8 = 1;
const VALUE_OK: u8 = 2;

fn max_len(part: Part, len: usize, max: usize) -> Result<(), RejectReason> {
    if len > max { Err(RejectReason::TooLong { part, len, max }) } else { Ok(()) }
}

fn no_control(part: Part, s: &str) -> Result<(), RejectReason> {
    // ASCII fast path: most labels are plain ASCII.
    let has_control =
        if s.is_ascii() { s.bytes().any(|b| b < 0x20 || b == 0x7f) } else { s.chars().any(char::is_control) };
    if has_control { Err(RejectReason::ControlCharacter { part }) } else { Ok(()) }
}

/// The first key that occurs twice (or, past 16 entries, some key that
/// does). Small inputs, the usual handful of dims, use a quadratic scan that
/// beats hashing; large ones (a generous configured limit) sort a copy.
fn first_duplicate<T>(items: &[T], key: impl Fn(&T) -> Sym) -> Option<Sym> {
    if items.len() <= 16 {
        let mut rest = items;
        while let Some((a, tail)) = rest.split_first() {
            let k = key(a);
            if tail.iter().any(|b| key(b) == k) {
                return Some(k);
            }
            rest = tail;
        }
        return None;
    }
    let mut keys: Vec<Sym> = items.iter().map(key).collect();
    keys.sort_unstable();
    keys.windows(2).find_map(|w| match *w {
        [a, b] if a == b => Some(a),
        _ => None,
    })
}

/// The verdict bits ([`NAME_OK`], [`VALUE_OK`]) on `sym`, none if unknown.
#[inline]
fn verdict_of(verdicts: &[u8], sym: Sym) -> u8 {
    verdicts.get(sym.index()).copied().unwrap_or(0)
}

/// Entries of [`DimsMemo`].
const DIMS_MEMO: usize = 64;

/// The quick test's verdict on the dims of recent events, by their place in
/// the batch's dims: events that share dims (a decoder gives them the same
/// place, see [`EventRef::dims_id`]) are judged on them once. Within one
/// batch, one place always holds the same dims.
struct DimsMemo {
    /// Off for batches whose events share no dims: nothing would repeat.
    on: bool,
    entries: [((usize, usize), bool); DIMS_MEMO],
}

impl DimsMemo {
    fn new(on: bool) -> Self {
        // A start past its end: no event's dims are there.
        DimsMemo { on, entries: [((usize::MAX, 0), false); DIMS_MEMO] }
    }

    /// The verdict on the dims at `place`: remembered, or `judge`'s.
    #[inline]
    fn verdict(&mut self, place: (usize, usize), judge: impl FnOnce() -> bool) -> bool {
        if !self.on {
            return judge();
        }
        let Some(entry) = self.entries.get_mut(place.0 % DIMS_MEMO) else { return judge() };
        if entry.0 != place {
            *entry = (place, judge());
        }
        entry.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, GeoPoint};

    fn now() -> Timestamp {
        Timestamp::from_secs(1_795_838_400).unwrap()
    }

    fn ok() -> Event {
        Event::new("acme", "metrics", now()).with_dim("region", "eu").with_field("temp", 1.0)
    }

    fn reason_of(e: Event, limits: &Limits) -> Option<RejectReason> {
        let mut b = EventBatch::new();
        b.push(&e);
        limits.validate(&mut b, now()).rejected.pop().map(|r| r.reason)
    }

    /// Two keys whose symbols are alike modulo 64 look repeated to the
    /// quick test: the full check tells them apart and accepts the event.
    #[test]
    fn keys_alike_modulo_64_are_not_taken_for_repeats() {
        let mut batch = EventBatch::new();
        for i in 0..70 {
            batch.push(&Event::new("acme", "metrics", now()).with_dim(format!("k{i}"), "v"));
        }
        let index = |k: &str| batch.symbols.get(k).map(Sym::index);
        let (a, b) = (0..70)
            .flat_map(|i| (i + 1..70).map(move |j| (format!("k{i}"), format!("k{j}"))))
            .find(|(a, b)| index(a).zip(index(b)).is_some_and(|(x, y)| x % 64 == y % 64))
            .unwrap();
        batch.push(&Event::new("acme", "metrics", now()).with_dim(&*a, "v").with_dim(&*b, "v").with_field("t", 1.0));
        let limits = Limits::default();
        let verdicts = vec![NAME_OK | VALUE_OK; batch.symbols.len()];
        let last = batch.iter().last().unwrap();
        assert!(!limits.passes_all(&batch, last.record, &verdicts, now(), None, None, &mut DimsMemo::new(false)));
        let report = limits.validate(&mut batch, now());
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        assert_eq!(batch.len(), 71);
    }

    /// Events with the dims of `pool[choice]` and a field, pushed one by
    /// one (each event its own dims), and the same events decoded from
    /// Protobuf (where events with equal dims share them).
    fn pushed_and_decoded(choices: &[(usize, bool)], pool: &[Vec<(&str, &str)>]) -> (EventBatch, EventBatch) {
        let mut pushed = EventBatch::new();
        for &(choice, finite) in choices {
            let mut e = Event::new("acme", "metrics", now()).with_field("t", if finite { 1.0 } else { f64::NAN });
            e.dims = pool[choice % pool.len()].iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect();
            pushed.push(&e);
        }
        let mut wire = Vec::new();
        crate::event::protobuf::encode(&pushed, &mut wire);
        let mut decoded = EventBatch::new();
        crate::event::Format::Protobuf
            .decode_into(&bytes::Bytes::from(wire), &Limits::default(), &mut decoded)
            .unwrap();
        (pushed, decoded)
    }

    /// Dims of every kind of verdict: good, a bad value, a repeated key,
    /// three dims (too many for some limits), a bad key, none.
    fn dims_pool() -> Vec<Vec<(&'static str, &'static str)>> {
        vec![
            vec![("region", "eu"), ("type", "a")],
            vec![("region", "eu\n")],
            vec![("k", "v"), ("k", "w")],
            vec![("a", "1"), ("b", "2"), ("c", "3")],
            vec![("x\u{0}", "v")],
            vec![],
        ]
    }

    #[test]
    fn shared_dims_are_judged_once_and_alike() {
        let choices: Vec<(usize, bool)> = (0..200).map(|i| (i % 6, i % 7 != 0)).collect();
        let (mut pushed, mut decoded) = pushed_and_decoded(&choices, &dims_pool());
        assert!(decoded.shares_dims() && !pushed.shares_dims());
        let limits = Limits { max_dims_per_event: 2, ..Limits::default() };
        let (a, b) = (limits.validate(&mut pushed, now()), limits.validate(&mut decoded, now()));
        // Debug: a NaN field in a reason is not equal to itself.
        assert_eq!(format!("{:?}", a.rejected), format!("{:?}", b.rejected));
        // Four dims lists of six fail, and every seventh event's field.
        let failing = (0..200).filter(|i| (1..=4).contains(&(i % 6)) || i % 7 == 0).count();
        assert_eq!(b.rejected.len(), failing);
        assert_eq!(pushed.len(), decoded.len());
    }

    proptest::proptest! {
        /// Events that share dims get the verdicts each would get alone,
        /// whatever the order and mix of good and bad dims.
        #[test]
        fn shared_dims_get_the_verdicts_of_own_dims(
            choices in proptest::collection::vec((0usize..6, proptest::bool::weighted(0.9)), 1..300),
            max_dims in 1usize..4,
        ) {
            let (mut pushed, mut decoded) = pushed_and_decoded(&choices, &dims_pool());
            let limits = Limits { max_dims_per_event: max_dims, ..Limits::default() };
            let (a, b) = (limits.validate(&mut pushed, now()), limits.validate(&mut decoded, now()));
            proptest::prop_assert_eq!(format!("{:?}", a.rejected), format!("{:?}", b.rejected));
            proptest::prop_assert_eq!(pushed.len(), decoded.len());
        }

        /// The quick test agrees with the full check (and the tenant
        /// check) on events that break any mix of rules.
        #[test]
        fn the_quick_test_agrees_with_the_full_check(
            events in proptest::collection::vec((
                proptest::sample::select(vec!["acme", "other", "", "a\u{0}"]),
                proptest::collection::vec(
                    (proptest::sample::select(vec!["region", "k", "", "x\n"]),
                     proptest::sample::select(vec!["eu".to_owned(), String::new(), "v\u{85}".into(), "v".repeat(1025)])),
                    0..4,
                ),
                proptest::collection::vec(
                    (proptest::sample::select(vec!["temp", "t", ""]),
                     proptest::sample::select(vec![1.0, f64::NAN, f64::INFINITY, -0.0])),
                    0..4,
                ),
                proptest::sample::select(vec![None, Some(String::new()), Some("e1".to_owned()), Some("i".repeat(300))]),
                proptest::sample::select(vec![None, Some(GeoPoint::new(1.0, 2.0)), Some(GeoPoint::new(91.0, 0.0))]),
                proptest::sample::select(vec![-10i64, 0, 301]),
                proptest::sample::select(vec![None, Some(10usize), Some(70_000)]),
            ), 1..8),
            max_dims in 1usize..4,
            max_fields in 1usize..4,
            max_age in proptest::option::of(proptest::sample::select(vec![5i64, 60])),
        ) {
            let limits = Limits {
                max_dims_per_event: max_dims,
                max_fields_per_event: max_fields,
                max_event_age: max_age.map(Span::from_secs),
                ..Limits::default()
            };
            let mut batch = EventBatch::new();
            for (tenant, dims, fields, id, geo, skew, payload) in events {
                let mut e = Event::new(tenant, "s", now().saturating_add(Span::from_secs(skew)));
                e.dims = dims.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                e.fields = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                e.id = id.map(crate::event::EventId::Str);
                e.geo = geo;
                e.payload = payload.map(|n| bytes::Bytes::from(vec![0u8; n]));
                batch.push(&e);
            }
            let verdicts: Vec<u8> = batch.symbols.iter().map(|(_, s)| {
                (u8::from(limits.name(Part::Tenant, s).is_ok()) * NAME_OK) | (u8::from(limits.value(s).is_ok()) * VALUE_OK)
            }).collect();
            let latest = now().saturating_add(limits.max_future_skew);
            let earliest = limits.max_event_age.map(|age| now().saturating_sub(age));
            let own = Some(batch.symbols.get("acme"));
            for event in batch.iter() {
                let quick = limits.passes_all(&batch, event.record, &verdicts, latest, earliest, own, &mut DimsMemo::new(false));
                let full = limits.check(&event, &verdicts, latest, earliest).is_ok() && event.tenant() == "acme";
                proptest::prop_assert_eq!(quick, full, "{:?}", event);
            }
        }
    }

    #[test]
    fn each_rule_has_its_reason() {
        let l = Limits::default();
        assert_eq!(reason_of(ok(), &l), None);
        let cases: Vec<(Event, RejectKind)> = vec![
            (Event { tenant: String::new(), ..ok() }, RejectKind::Empty),
            (Event { stream: "x".repeat(129), ..ok() }, RejectKind::TooLong),
            (Event { tenant: "a\u{0}b".into(), ..ok() }, RejectKind::ControlCharacter),
            (ok().with_dim("k", "line\nbreak"), RejectKind::ControlCharacter),
            (ok().with_dim("k", "\u{85}"), RejectKind::ControlCharacter),
            (ok().with_dim("region", "us"), RejectKind::DuplicateDim),
            (ok().with_field("temp", 2.0), RejectKind::DuplicateField),
            (ok().with_field("x", f64::INFINITY), RejectKind::NonFiniteField),
            (ok().with_geo(GeoPoint::new(91.0, 0.0)), RejectKind::InvalidGeo),
            (ok().with_geo(GeoPoint::new(0.0, f64::NAN)), RejectKind::InvalidGeo),
            (ok().with_id(""), RejectKind::Empty),
            (ok().with_id(vec![0u8; 257]), RejectKind::TooLong),
            (ok().with_payload(vec![0u8; (64 << 10) + 1]), RejectKind::TooLong),
            (ok().with_dim("", "v"), RejectKind::Empty),
            (ok().with_dim("k", "v".repeat(1025)), RejectKind::TooLong),
            (Event { ts: now().saturating_add(Span::from_secs(301)), ..ok() }, RejectKind::InFuture),
        ];
        for (event, kind) in cases {
            assert_eq!(reason_of(event.clone(), &l).map(|r| r.kind()), Some(kind), "{event:?}");
        }
        let mut many = ok();
        for i in 0..33 {
            many = many.with_dim(format!("k{i}"), "v");
        }
        assert_eq!(reason_of(many, &l), Some(RejectReason::TooManyDims { count: 34, max: 32 }));
        assert_eq!(reason_of(ok().with_field("x", -0.0), &l), None);
        assert_eq!(
            reason_of(Event { ts: now().saturating_add(Span::from_secs(300)), ..ok() }, &l),
            None,
            "exactly at the skew limit is accepted"
        );
    }

    #[test]
    fn event_age_is_only_checked_when_configured() {
        let old = Event { ts: Timestamp::from_secs(0).unwrap(), ..ok() };
        assert_eq!(reason_of(old.clone(), &Limits::default()), None);
        let l = Limits { max_event_age: Some(Span::from_days(7)), ..Limits::default() };
        assert_eq!(reason_of(old, &l).map(|r| r.kind()), Some(RejectKind::TooOld));
    }

    #[test]
    fn accept_valid_keeps_order_and_reports_original_indexes() {
        let mut b = EventBatch::new();
        for i in 0..6 {
            let e = if i % 2 == 1 { ok().with_field("bad", f64::NAN) } else { ok().with_dim("i", i.to_string()) };
            b.push(&e);
        }
        let report = Limits::default().validate(&mut b, now());
        assert_eq!(report.received, 6);
        assert_eq!(report.accepted(), 3);
        assert_eq!(report.rejected.iter().map(|r| r.index).collect::<Vec<_>>(), [1, 3, 5]);
        assert_eq!(report.accepted_indices().collect::<Vec<_>>(), [0, 2, 4]);
        assert_eq!(b.iter().map(|e| e.dim("i").unwrap().to_owned()).collect::<Vec<_>>(), ["0", "2", "4"]);
    }

    #[test]
    fn reject_batch_rejects_everything_with_reasons() {
        let mut b = EventBatch::new();
        b.push(&ok());
        b.push(&ok().with_field("bad", f64::NAN));
        b.push(&ok());
        let l = Limits { policy: BatchPolicy::RejectBatch, ..Limits::default() };
        let report = l.validate(&mut b, now());
        assert!(b.is_empty());
        assert_eq!(report.accepted(), 0);
        let kinds: Vec<_> = report.rejected.iter().map(|r| (r.index, r.reason.kind())).collect();
        assert_eq!(
            kinds,
            [(0, RejectKind::BatchRejected), (1, RejectKind::NonFiniteField), (2, RejectKind::BatchRejected)]
        );
        // A clean batch passes untouched under either policy.
        let mut clean = EventBatch::new();
        clean.push(&ok());
        assert!(l.validate(&mut clean, now()).is_clean());
        assert_eq!(clean.len(), 1);
    }

    #[test]
    fn kinds_are_dense_and_named() {
        use crate::stats::CountKey;
        for (i, k) in RejectKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
            assert_eq!(serde_json::to_string(k).unwrap(), format!("\"{}\"", k.name()));
        }
    }

    #[test]
    fn duplicates_are_found_in_long_lists_too() {
        let mut e = ok();
        for i in 0..40 {
            e = e.with_dim(format!("k{i}"), "v");
        }
        let l = Limits { max_dims_per_event: 100, ..Limits::default() };
        assert_eq!(reason_of(e.clone(), &l), None);
        assert_eq!(reason_of(e.with_dim("k7", "again"), &l), Some(RejectReason::DuplicateDim { key: "k7".into() }));
    }

    #[test]
    fn negative_spans_are_refused_in_config_and_clamped_in_code() {
        assert!(serde_json::from_str::<Limits>(r#"{"max_future_skew": "-1s"}"#).is_err());
        assert!(serde_json::from_str::<Limits>(r#"{"max_event_age": "-1d"}"#).is_err());
        assert!(serde_json::from_str::<Limits>(r#"{"max_event_age": null}"#).is_ok());
        let l = Limits { max_future_skew: Span::from_secs(-60), ..Limits::default() };
        assert_eq!(reason_of(ok(), &l), None, "an event at `now` passes a negative skew");
    }

    #[test]
    fn reasons_serialize_for_error_bodies() {
        let r = RejectReason::TooLong { part: Part::DimKey, len: 300, max: 128 };
        assert_eq!(
            serde_json::to_string(&Rejection { index: 4, reason: r }).unwrap(),
            r#"{"index":4,"reason":{"reason":"too_long","part":"dim_key","len":300,"max":128}}"#
        );
    }

    #[test]
    fn limits_from_config_reject_unknown_keys() {
        assert!(serde_json::from_str::<Limits>(r#"{"max_events": 5}"#).is_err());
        let l: Limits = serde_json::from_str(r#"{"policy": "reject_batch", "max_event_age": "7d"}"#).unwrap();
        assert_eq!(l.policy, BatchPolicy::RejectBatch);
        assert_eq!(l.max_event_age, Some(Span::from_days(7)));
    }
}

//! Event time: [`Timestamp`], [`Span`] and tumbling-window arithmetic.
//!
//! Time in edgestream is *event time*, carried by the events themselves, or
//! the "now" a host passes in. Nothing in this module (or anywhere in the core)
//! reads a clock: reading `std::time::SystemTime` panics on
//! `wasm32-unknown-unknown`, and a clock read inside the library would make
//! runs impossible to replay.
//!
//! A [`Timestamp`] is a signed count of nanoseconds since the Unix epoch
//! (1970-01-01T00:00:00Z), which covers 1677-09-21 to 2262-04-11. A [`Span`]
//! is a signed count of nanoseconds between two timestamps. Both are plain
//! `i64` newtypes: copying, comparing and hashing them costs nothing.
//!
//! ```
//! use edgestream::time::{Span, Timestamp, Tumbling};
//!
//! let ts: Timestamp = "2026-11-28T04:00:07.250Z".parse()?;
//! assert_eq!(ts.as_millis(), 1_795_838_407_250);
//!
//! let minutes = Tumbling::new(Span::from_mins(1))?;
//! assert_eq!(minutes.start(ts).unwrap().to_string(), "2026-11-28T04:00:00Z");
//! assert_eq!(minutes.end(ts).unwrap().to_string(), "2026-11-28T04:01:00Z");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const NANOS_PER_MICRO: i64 = 1_000;
const NANOS_PER_MILLI: i64 = 1_000_000;
const NANOS_PER_SEC: i64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// Why a time value could not be built, parsed or computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TimeError {
    /// The value does not fit in an `i64` count of nanoseconds since the
    /// epoch (1677-09-21 to 2262-04-11). Use a timestamp inside that range.
    #[error("time is outside the representable range 1677-09-21..2262-04-11")]
    OutOfRange,
    /// The text is not an RFC 3339 timestamp such as
    /// `2026-11-28T04:00:07.250Z` or `2026-11-28T06:00:07+02:00`; the
    /// payload says which part is wrong.
    #[error("invalid RFC 3339 timestamp: {0}")]
    InvalidRfc3339(&'static str),
    /// The text is not a span such as `250ms`, `10s`, `1m`, `2h` or `1d`.
    #[error("invalid span: {0}")]
    InvalidSpan(&'static str),
    /// A window size must be strictly positive.
    #[error("window size must be positive")]
    NonPositiveWindow,
}

/// A point in event time: nanoseconds since the Unix epoch, UTC.
///
/// Negative values are instants before 1970. Ordering is chronological.
/// Text form is RFC 3339 ([`Display`](fmt::Display) formats, [`FromStr`]
/// parses); serde uses the same text form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);
    /// The earliest representable instant (1677-09-21T00:12:43.145224192Z).
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    /// The latest representable instant (2262-04-11T23:47:16.854775807Z).
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    /// A timestamp from nanoseconds since the epoch.
    pub const fn from_nanos(nanos: i64) -> Self {
        Timestamp(nanos)
    }

    /// A timestamp from microseconds since the epoch, or `None` if out of range.
    pub const fn from_micros(micros: i64) -> Option<Self> {
        match micros.checked_mul(NANOS_PER_MICRO) {
            Some(n) => Some(Timestamp(n)),
            None => None,
        }
    }

    /// A timestamp from milliseconds since the epoch, or `None` if out of range.
    pub const fn from_millis(millis: i64) -> Option<Self> {
        match millis.checked_mul(NANOS_PER_MILLI) {
            Some(n) => Some(Timestamp(n)),
            None => None,
        }
    }

    /// A timestamp from whole seconds since the epoch, or `None` if out of range.
    pub const fn from_secs(secs: i64) -> Option<Self> {
        match secs.checked_mul(NANOS_PER_SEC) {
            Some(n) => Some(Timestamp(n)),
            None => None,
        }
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// Whole microseconds since the epoch, rounded toward negative infinity.
    pub const fn as_micros(self) -> i64 {
        self.0.div_euclid(NANOS_PER_MICRO)
    }

    /// Whole milliseconds since the epoch, rounded toward negative infinity.
    pub const fn as_millis(self) -> i64 {
        self.0.div_euclid(NANOS_PER_MILLI)
    }

    /// Whole seconds since the epoch, rounded toward negative infinity.
    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(NANOS_PER_SEC)
    }

    /// `self + span`, or `None` on overflow.
    pub const fn checked_add(self, span: Span) -> Option<Self> {
        match self.0.checked_add(span.0) {
            Some(n) => Some(Timestamp(n)),
            None => None,
        }
    }

    /// `self - span`, or `None` on overflow.
    pub const fn checked_sub(self, span: Span) -> Option<Self> {
        match self.0.checked_sub(span.0) {
            Some(n) => Some(Timestamp(n)),
            None => None,
        }
    }

    /// `self + span`, clamped to [`Timestamp::MIN`]..=[`Timestamp::MAX`].
    pub const fn saturating_add(self, span: Span) -> Self {
        Timestamp(self.0.saturating_add(span.0))
    }

    /// `self - span`, clamped to [`Timestamp::MIN`]..=[`Timestamp::MAX`].
    pub const fn saturating_sub(self, span: Span) -> Self {
        Timestamp(self.0.saturating_sub(span.0))
    }

    /// The span from `earlier` to `self` (negative if `earlier` is later),
    /// clamped to the range of [`Span`].
    pub const fn saturating_since(self, earlier: Timestamp) -> Span {
        Span(self.0.saturating_sub(earlier.0))
    }

    /// Parses an RFC 3339 timestamp (`2026-11-28T04:00:07.25Z`,
    /// `2026-11-28t06:00:07+02:00`, `2026-11-28 04:00:07Z`).
    ///
    /// Accepted: `T`, `t` or a space between date and time; up to nine
    /// fractional digits (more are an error rather than silently truncated);
    /// `Z`, `z` or a `±HH:MM` offset; a leap second (`23:59:60` UTC) is read
    /// as the first instant of the next day, as Unix time does.
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimeError> {
        parse_rfc3339(text.as_bytes())
    }

    /// Writes the RFC 3339 form in UTC (`Z`), with 0, 3, 6 or 9 fractional
    /// digits, the fewest that represent the value exactly.
    ///
    /// Always between 20 and 30 bytes; see also [`Timestamp::to_rfc3339`].
    pub fn write_rfc3339(self, out: &mut impl fmt::Write) -> fmt::Result {
        let mut buf = [0u8; 32];
        let len = format_rfc3339(self, &mut buf);
        // Every byte written by `format_rfc3339` is ASCII.
        let text = core::str::from_utf8(buf.get(..len).unwrap_or_default()).map_err(|_| fmt::Error)?;
        out.write_str(text)
    }

    /// Appends the RFC 3339 form, as [`Timestamp::write_rfc3339`] writes it,
    /// to a byte buffer.
    pub(crate) fn append_rfc3339(self, out: &mut Vec<u8>) {
        let mut buf = [0u8; 32];
        let len = format_rfc3339(self, &mut buf);
        out.extend_from_slice(buf.get(..len).unwrap_or_default());
    }

    /// The RFC 3339 form in UTC, as [`Timestamp::write_rfc3339`] writes it.
    pub fn to_rfc3339(self) -> String {
        let mut s = String::with_capacity(30);
        // Writing into a String never fails.
        let _ = self.write_rfc3339(&mut s);
        s
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339; honours width and alignment (`{:>32}`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 32];
        let len = format_rfc3339(*self, &mut buf);
        f.pad(core::str::from_utf8(buf.get(..len).unwrap_or_default()).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for Timestamp {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timestamp::parse_rfc3339(s)
    }
}

/// Human-readable formats (JSON, YAML, TOML) use the RFC 3339 text; binary
/// formats (bincode, postcard) the `i64` of nanoseconds.
impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.collect_str(self) } else { s.serialize_i64(self.0) }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return i64::deserialize(d).map(Timestamp);
        }
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse_rfc3339(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// A signed length of time in nanoseconds: the difference of two
/// [`Timestamp`]s, a window size, a lateness bound.
///
/// Text form (used by serde, [`Display`](fmt::Display) and [`FromStr`]): an
/// integer followed by a unit, `ns`, `us`, `ms`, `s`, `m`, `h` or `d`,
/// for example `250ms`, `10s`, `-5m`. Display picks the largest unit that
/// represents the value exactly. serde also accepts a bare integer, read as
/// nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span(i64);

impl Span {
    /// No time at all.
    pub const ZERO: Span = Span(0);
    /// The longest representable span (about 292 years).
    pub const MAX: Span = Span(i64::MAX);

    /// A span of `nanos` nanoseconds.
    pub const fn from_nanos(nanos: i64) -> Self {
        Span(nanos)
    }
    /// A span of `micros` microseconds, saturating at the `i64` range.
    pub const fn from_micros(micros: i64) -> Self {
        Span(micros.saturating_mul(NANOS_PER_MICRO))
    }
    /// A span of `millis` milliseconds, saturating at the `i64` range.
    pub const fn from_millis(millis: i64) -> Self {
        Span(millis.saturating_mul(NANOS_PER_MILLI))
    }
    /// A span of `secs` seconds, saturating at the `i64` range.
    pub const fn from_secs(secs: i64) -> Self {
        Span(secs.saturating_mul(NANOS_PER_SEC))
    }
    /// A span of `mins` minutes, saturating at the `i64` range.
    pub const fn from_mins(mins: i64) -> Self {
        Span(mins.saturating_mul(60 * NANOS_PER_SEC))
    }
    /// A span of `hours` hours, saturating at the `i64` range.
    pub const fn from_hours(hours: i64) -> Self {
        Span(hours.saturating_mul(3_600 * NANOS_PER_SEC))
    }
    /// A span of `days` days of 86 400 s, saturating at the `i64` range.
    pub const fn from_days(days: i64) -> Self {
        Span(days.saturating_mul(SECS_PER_DAY * NANOS_PER_SEC))
    }
    /// Nanoseconds in this span.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }
    /// Whole milliseconds in this span, rounded toward zero.
    pub const fn as_millis(self) -> i64 {
        self.0 / NANOS_PER_MILLI
    }
    /// Whole seconds in this span, rounded toward zero.
    pub const fn as_secs(self) -> i64 {
        self.0 / NANOS_PER_SEC
    }
    /// Whether the span is strictly positive.
    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }
}

impl TryFrom<core::time::Duration> for Span {
    type Error = TimeError;
    fn try_from(d: core::time::Duration) -> Result<Self, TimeError> {
        i64::try_from(d.as_nanos()).map(Span).map_err(|_| TimeError::OutOfRange)
    }
}

impl TryFrom<Span> for core::time::Duration {
    type Error = TimeError;
    /// Fails for negative spans.
    fn try_from(s: Span) -> Result<Self, TimeError> {
        u64::try_from(s.0).map(core::time::Duration::from_nanos).map_err(|_| TimeError::OutOfRange)
    }
}

const SPAN_UNITS: [(&str, i64); 7] = [
    ("d", SECS_PER_DAY * NANOS_PER_SEC),
    ("h", 3_600 * NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("s", NANOS_PER_SEC),
    ("ms", NANOS_PER_MILLI),
    ("us", NANOS_PER_MICRO),
    ("ns", 1),
];

impl fmt::Display for Span {
    /// The text form; honours width and alignment (`{:>8}`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every value is a multiple of 1 ns, so a unit is always found.
        let (unit, nanos) = SPAN_UNITS.iter().copied().find(|&(_, n)| self.0 % n == 0).unwrap_or(("ns", 1));
        if self.0 == 0 {
            f.pad("0s")
        } else if f.width().is_none() {
            write!(f, "{}{unit}", self.0 / nanos)
        } else {
            f.pad(&format!("{}{unit}", self.0 / nanos))
        }
    }
}

impl FromStr for Span {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, TimeError> {
        let s = s.trim();
        let digits_end = s
            .char_indices()
            .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))))
            .map_or(s.len(), |(i, _)| i);
        let (number, unit) = s.split_at(digits_end);
        if unit.is_empty() {
            return Err(TimeError::InvalidSpan("missing unit (ns, us, ms, s, m, h, d)"));
        }
        let value: i64 = number.parse().map_err(|_| TimeError::InvalidSpan("expected an integer before the unit"))?;
        let scale = SPAN_UNITS
            .iter()
            .find(|(u, _)| *u == unit.trim())
            .map(|&(_, n)| n)
            .ok_or(TimeError::InvalidSpan("unknown unit (expected ns, us, ms, s, m, h or d)"))?;
        value.checked_mul(scale).map(Span).ok_or(TimeError::OutOfRange)
    }
}

/// Human-readable formats use the text form (`"10s"`, and also accept an
/// integer of nanoseconds); binary formats the `i64` of nanoseconds.
impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.collect_str(self) } else { s.serialize_i64(self.0) }
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return i64::deserialize(d).map(Span);
        }
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a span such as \"250ms\", \"10s\", \"5m\", or an integer of nanoseconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Span, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Span, E> {
                Ok(Span(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Span, E> {
                i64::try_from(v).map(Span).map_err(|_| E::custom(TimeError::OutOfRange))
            }
        }
        d.deserialize_any(V)
    }
}

/// Tumbling (fixed, non-overlapping) windows of one size, aligned to the
/// epoch plus an optional offset.
///
/// Window `k` covers `[offset + k·size, offset + (k+1)·size)`: a timestamp
/// exactly on a boundary belongs to the window that *starts* there. The
/// arithmetic floors toward negative infinity, so it is correct before 1970
/// too. Results that would leave the [`Timestamp`] range are `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "TumblingConfig", into = "TumblingConfig")]
pub struct Tumbling {
    size: i64,
    offset: i64,
}

#[derive(Serialize, Deserialize)]
struct TumblingConfig {
    size: Span,
    #[serde(default)]
    offset: Span,
}

impl TryFrom<TumblingConfig> for Tumbling {
    type Error = TimeError;
    fn try_from(c: TumblingConfig) -> Result<Self, TimeError> {
        Tumbling::with_offset(c.size, c.offset)
    }
}

impl From<Tumbling> for TumblingConfig {
    fn from(t: Tumbling) -> Self {
        TumblingConfig { size: t.size(), offset: t.offset() }
    }
}

impl Tumbling {
    /// Windows of `size` aligned to the epoch.
    ///
    /// Fails with [`TimeError::NonPositiveWindow`] when `size <= 0`.
    pub fn new(size: Span) -> Result<Self, TimeError> {
        Self::with_offset(size, Span::ZERO)
    }

    /// Windows of `size` whose boundaries are shifted by `offset` from the
    /// epoch (for example `size = 1d, offset = -3h` gives days that start at
    /// 21:00 UTC). The offset is reduced modulo the size.
    pub fn with_offset(size: Span, offset: Span) -> Result<Self, TimeError> {
        if !size.is_positive() {
            return Err(TimeError::NonPositiveWindow);
        }
        Ok(Tumbling { size: size.0, offset: offset.0.rem_euclid(size.0) })
    }

    /// The window size.
    pub const fn size(&self) -> Span {
        Span(self.size)
    }

    /// The offset of the boundaries from the epoch, in `0..size`.
    pub const fn offset(&self) -> Span {
        Span(self.offset)
    }

    /// Start of the window containing `ts`: the greatest boundary `<= ts`.
    #[inline]
    pub fn start(&self, ts: Timestamp) -> Option<Timestamp> {
        // The result leaves the i64 range only when the boundary lies before
        // `Timestamp::MIN`. `ts - offset` may overflow near the range edge:
        // then (and only then) take the slower exact i128 path.
        match ts.0.checked_sub(self.offset) {
            Some(shifted) => ts.0.checked_sub(shifted.rem_euclid(self.size)).map(Timestamp),
            None => {
                let t = i128::from(ts.0);
                let start = t - (t - i128::from(self.offset)).rem_euclid(i128::from(self.size));
                i64::try_from(start).ok().map(Timestamp)
            }
        }
    }

    /// End (exclusive) of the window containing `ts`: the least boundary `> ts`.
    #[inline]
    pub fn end(&self, ts: Timestamp) -> Option<Timestamp> {
        self.start(ts)?.0.checked_add(self.size).map(Timestamp)
    }

    /// The least boundary `>= ts` (`ts` itself when it lies on a boundary).
    pub fn next_boundary(&self, ts: Timestamp) -> Option<Timestamp> {
        let start = self.start(ts)?;
        if start == ts { Some(ts) } else { start.0.checked_add(self.size).map(Timestamp) }
    }

    /// The start of window `k`, `offset + k·size`, if representable.
    #[inline]
    pub fn start_of_index(&self, k: i64) -> Option<Timestamp> {
        match k.checked_mul(self.size).and_then(|s| s.checked_add(self.offset)) {
            Some(start) => Some(Timestamp(start)),
            // Near the range edge `k·size` alone may overflow while the
            // sum fits: decide exactly in i128.
            None => {
                let start = i128::from(k) * i128::from(self.size) + i128::from(self.offset);
                i64::try_from(start).ok().map(Timestamp)
            }
        }
    }

    /// The window index `k` of `ts` (window `k` starts at `offset + k·size`).
    #[inline]
    pub fn index(&self, ts: Timestamp) -> i64 {
        match ts.0.checked_sub(self.offset) {
            Some(shifted) => shifted.div_euclid(self.size),
            None => {
                // Only near the range edge: i128 keeps `ts - offset` exact,
                // and the quotient fits in i64 because size >= 1.
                let q = (i128::from(ts.0) - i128::from(self.offset)).div_euclid(i128::from(self.size));
                i64::try_from(q).unwrap_or(if q < 0 { i64::MIN } else { i64::MAX })
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Calendar arithmetic (proleptic Gregorian), after Howard Hinnant's
// `days_from_civil` / `civil_from_days` algorithms.

/// Days since 1970-01-01 of a proleptic Gregorian date.
const fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let mp = (m as i64 + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + d as i64 - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a count of days since 1970-01-01.
const fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

const fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

const fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Formats `ts` into `buf`, returning the number of bytes written (20..=30).
fn format_rfc3339(ts: Timestamp, buf: &mut [u8; 32]) -> usize {
    let secs = ts.0.div_euclid(NANOS_PER_SEC);
    let nanos = ts.0.rem_euclid(NANOS_PER_SEC);
    let days = secs.div_euclid(SECS_PER_DAY);
    let sod = secs.rem_euclid(SECS_PER_DAY);
    let (y, mo, d) = civil_from_days(days);
    // The i64 range only spans years 1677..=2262: always four digits.
    let mut w = Writer { buf, len: 0 };
    w.digits(y, 4);
    w.byte(b'-');
    w.digits(i64::from(mo), 2);
    w.byte(b'-');
    w.digits(i64::from(d), 2);
    w.byte(b'T');
    w.digits(sod / 3_600, 2);
    w.byte(b':');
    w.digits(sod / 60 % 60, 2);
    w.byte(b':');
    w.digits(sod % 60, 2);
    if nanos != 0 {
        w.byte(b'.');
        if nanos % 1_000_000 == 0 {
            w.digits(nanos / 1_000_000, 3);
        } else if nanos % 1_000 == 0 {
            w.digits(nanos / 1_000, 6);
        } else {
            w.digits(nanos, 9);
        }
    }
    w.byte(b'Z');
    w.len
}

struct Writer<'a> {
    buf: &'a mut [u8; 32],
    len: usize,
}

impl Writer<'_> {
    fn byte(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }
    fn digits(&mut self, mut v: i64, width: usize) {
        let start = self.len;
        for _ in 0..width {
            self.byte(b'0');
        }
        let mut i = self.len;
        while i > start {
            i -= 1;
            if let Some(slot) = self.buf.get_mut(i) {
                *slot = b'0' + (v % 10) as u8;
            }
            v /= 10;
        }
    }
}

fn parse_rfc3339(s: &[u8]) -> Result<Timestamp, TimeError> {
    use TimeError::InvalidRfc3339 as E;
    let mut p = Parser { s, pos: 0 };
    let year = p.number(4).ok_or(E("expected a four-digit year"))?;
    p.expect(b'-').ok_or(E("expected '-' after the year"))?;
    let month = p.number(2).ok_or(E("expected a two-digit month"))? as u32;
    p.expect(b'-').ok_or(E("expected '-' after the month"))?;
    let day = p.number(2).ok_or(E("expected a two-digit day"))? as u32;
    match p.next() {
        Some(b'T' | b't' | b' ') => {}
        _ => return Err(E("expected 'T' between date and time")),
    }
    let hour = p.number(2).ok_or(E("expected a two-digit hour"))?;
    p.expect(b':').ok_or(E("expected ':' after the hour"))?;
    let minute = p.number(2).ok_or(E("expected two-digit minutes"))?;
    p.expect(b':').ok_or(E("expected ':' after the minutes"))?;
    let second = p.number(2).ok_or(E("expected two-digit seconds"))?;
    let mut nanos = 0i64;
    if p.peek() == Some(b'.') {
        p.pos += 1;
        let mut count = 0;
        while let Some(c @ b'0'..=b'9') = p.peek() {
            if count == 9 {
                return Err(E("more than nine fractional digits"));
            }
            nanos = nanos * 10 + i64::from(c - b'0');
            count += 1;
            p.pos += 1;
        }
        if count == 0 {
            return Err(E("expected digits after '.'"));
        }
        for _ in count..9 {
            nanos *= 10;
        }
    }
    let offset_secs = match p.next() {
        Some(b'Z' | b'z') => 0,
        Some(sign @ (b'+' | b'-')) => {
            let oh = p.number(2).ok_or(E("expected a two-digit offset hour"))?;
            p.expect(b':').ok_or(E("expected ':' in the offset"))?;
            let om = p.number(2).ok_or(E("expected two-digit offset minutes"))?;
            if oh > 23 || om > 59 {
                return Err(E("offset out of range"));
            }
            let o = oh * 3_600 + om * 60;
            if sign == b'-' { -o } else { o }
        }
        _ => return Err(E("expected 'Z' or an offset such as '+02:00'")),
    };
    if p.pos != s.len() {
        return Err(E("unexpected text after the timestamp"));
    }
    if !(1..=12).contains(&month) {
        return Err(E("month out of range"));
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err(E("day out of range for the month"));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(E("time of day out of range"));
    }
    // A leap second ends a UTC day: 23:59:60Z, or the same instant in
    // another offset.
    if second == 60 && (hour * 3_600 + minute * 60 - offset_secs).rem_euclid(SECS_PER_DAY) != SECS_PER_DAY - 60 {
        return Err(E("second 60 is only valid at 23:59 UTC (a leap second)"));
    }
    let days = days_from_civil(year, month, day);
    // Years are at most 9999 here, so this arithmetic cannot overflow i64.
    let secs = days * SECS_PER_DAY + hour * 3_600 + minute * 60 + second - offset_secs;
    secs.checked_mul(NANOS_PER_SEC).and_then(|n| n.checked_add(nanos)).map(Timestamp).ok_or(TimeError::OutOfRange)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }
    fn expect(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }
    /// Exactly `width` ASCII digits.
    fn number(&mut self, width: usize) -> Option<i64> {
        let mut v = 0i64;
        for _ in 0..width {
            match self.next()? {
                c @ b'0'..=b'9' => v = v * 10 + i64::from(c - b'0'),
                _ => return None,
            }
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn epoch_and_known_instants() {
        assert_eq!(ts("1970-01-01T00:00:00Z"), Timestamp::UNIX_EPOCH);
        assert_eq!(ts("2000-03-01T00:00:00Z").as_secs(), 951_868_800);
        assert_eq!(ts("1969-12-31T23:59:59.999999999Z").as_nanos(), -1);
        assert_eq!(Timestamp::MIN.to_string(), "1677-09-21T00:12:43.145224192Z");
        assert_eq!(Timestamp::MAX.to_string(), "2262-04-11T23:47:16.854775807Z");
    }

    #[test]
    fn offsets_lowercase_space_and_leap_second() {
        assert_eq!(ts("2026-11-28T06:00:00+02:00"), ts("2026-11-28T04:00:00Z"));
        assert_eq!(ts("2026-11-28t01:30:00-02:30"), ts("2026-11-28T04:00:00z"));
        assert_eq!(ts("2026-11-28 04:00:00Z"), ts("2026-11-28T04:00:00Z"));
        assert_eq!(ts("2016-12-31T23:59:60Z"), ts("2017-01-01T00:00:00Z"));
        assert_eq!(ts("2017-01-01T00:59:60+01:00"), ts("2017-01-01T00:00:00Z"));
        assert!(Timestamp::parse_rfc3339("2016-12-31T12:34:60Z").is_err());
    }

    #[test]
    fn fractional_digits_are_exact() {
        assert_eq!(ts("2026-01-01T00:00:00.1Z").as_nanos() % NANOS_PER_SEC, 100_000_000);
        assert_eq!(ts("2026-01-01T00:00:00.000000001Z").as_nanos() % NANOS_PER_SEC, 1);
        assert_eq!(ts("2026-01-01T00:00:00.120Z").to_string(), "2026-01-01T00:00:00.120Z");
        assert_eq!(ts("2026-01-01T00:00:00.000120Z").to_string(), "2026-01-01T00:00:00.000120Z");
        assert!(matches!(
            Timestamp::parse_rfc3339("2026-01-01T00:00:00.1234567891Z"),
            Err(TimeError::InvalidRfc3339(_))
        ));
    }

    #[test]
    fn rejects_malformed_and_impossible_dates() {
        for bad in [
            "",
            "2026",
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:60:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00+2:00",
            "2026-01-01T00:00:00Zjunk",
            "2026-01-01T00:00:00.Z",
            "+2026-01-01T00:00:00Z",
            "２０２６-01-01T00:00:00Z",
        ] {
            assert!(matches!(Timestamp::parse_rfc3339(bad), Err(TimeError::InvalidRfc3339(_))), "{bad}");
        }
        assert_eq!(ts("2024-02-29T00:00:00Z").to_string(), "2024-02-29T00:00:00Z");
    }

    #[test]
    fn out_of_range_years_are_typed_errors() {
        assert_eq!(Timestamp::parse_rfc3339("1000-01-01T00:00:00Z"), Err(TimeError::OutOfRange));
        assert_eq!(Timestamp::parse_rfc3339("9999-12-31T23:59:59Z"), Err(TimeError::OutOfRange));
        assert_eq!(Timestamp::from_millis(i64::MAX), None);
    }

    #[test]
    fn span_text_form() {
        assert_eq!("250ms".parse::<Span>().unwrap(), Span::from_millis(250));
        assert_eq!("-5m".parse::<Span>().unwrap(), Span::from_mins(-5));
        assert_eq!(Span::from_secs(90).to_string(), "90s");
        assert_eq!(Span::from_hours(48).to_string(), "2d");
        assert_eq!(Span::from_nanos(1_500).to_string(), "1500ns");
        assert_eq!(format!("[{:>6}]", Span::from_secs(10)), "[   10s]");
        assert_eq!(format!("[{:<24}]", Timestamp::UNIX_EPOCH), "[1970-01-01T00:00:00Z    ]");
        assert!("10".parse::<Span>().is_err());
        assert!("10 parsecs".parse::<Span>().is_err());
        assert_eq!("99999999999d".parse::<Span>(), Err(TimeError::OutOfRange));
        let from_json: Span = serde_json::from_str("\"15s\"").unwrap();
        assert_eq!(from_json, Span::from_secs(15));
        let from_int: Span = serde_json::from_str("1000").unwrap();
        assert_eq!(from_int, Span::from_micros(1));
    }

    #[test]
    fn windows_floor_toward_negative_infinity() {
        let w = Tumbling::new(Span::from_secs(10)).unwrap();
        let t = |s| Timestamp::from_secs(s).unwrap();
        assert_eq!(w.start(t(25)), Some(t(20)));
        assert_eq!(w.start(t(20)), Some(t(20)), "a boundary starts its window");
        assert_eq!(w.end(t(20)), Some(t(30)));
        assert_eq!(w.start(t(-1)), Some(t(-10)));
        assert_eq!(w.start(t(-10)), Some(t(-10)));
        assert_eq!(w.start(Timestamp::from_nanos(-1)), Some(t(-10)));
        assert_eq!(w.index(t(-1)), -1);
        assert_eq!(w.index(t(0)), 0);
        assert_eq!(w.next_boundary(t(20)), Some(t(20)));
        assert_eq!(w.next_boundary(t(21)), Some(t(30)));
    }

    #[test]
    fn windows_with_offset_and_at_range_edges() {
        let w = Tumbling::with_offset(Span::from_days(1), Span::from_hours(-3)).unwrap();
        assert_eq!(w.offset(), Span::from_hours(21));
        assert_eq!(w.start(ts("2026-11-28T22:00:00Z")), Some(ts("2026-11-28T21:00:00Z")));
        assert_eq!(w.start(ts("2026-11-28T20:59:59Z")), Some(ts("2026-11-27T21:00:00Z")));
        let w = Tumbling::new(Span::from_secs(7)).unwrap();
        assert_eq!(w.start(Timestamp::MIN), None);
        assert_eq!(w.end(Timestamp::MAX), None);
        assert!(w.start(Timestamp::MAX).is_some());
        assert_eq!(Tumbling::new(Span::ZERO), Err(TimeError::NonPositiveWindow));
        assert_eq!(Tumbling::new(Span::from_secs(-1)), Err(TimeError::NonPositiveWindow));
        let cfg: Tumbling = serde_json::from_str(r#"{"size":"1m","offset":"15s"}"#).unwrap();
        assert_eq!(cfg, Tumbling::with_offset(Span::from_mins(1), Span::from_secs(15)).unwrap());
        assert!(serde_json::from_str::<Tumbling>(r#"{"size":"0s"}"#).is_err());
    }

    proptest! {
        #[test]
        fn rfc3339_round_trips(n in any::<i64>()) {
            let t = Timestamp::from_nanos(n);
            let text = t.to_rfc3339();
            prop_assert!((20..=30).contains(&text.len()));
            prop_assert_eq!(Timestamp::parse_rfc3339(&text), Ok(t));
        }

        #[test]
        fn civil_days_round_trip(days in -200_000i64..200_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn window_contains_its_timestamp(n in any::<i64>(), size in 1i64..=i64::MAX, offset in any::<i64>()) {
            let w = Tumbling::with_offset(Span::from_nanos(size), Span::from_nanos(offset)).unwrap();
            let t = Timestamp::from_nanos(n);
            if let Some(start) = w.start(t) {
                prop_assert!(start <= t);
                prop_assert!((i128::from(t.as_nanos()) - i128::from(start.as_nanos())) < i128::from(size));
                prop_assert_eq!((i128::from(start.as_nanos()) - i128::from(w.offset().as_nanos())).rem_euclid(i128::from(size)), 0);
                prop_assert_eq!(w.start(start), Some(start));
                prop_assert_eq!(w.start_of_index(w.index(t)), Some(start));
            } else {
                // Only when the true boundary is below the representable range.
                prop_assert!(i128::from(n) - (i128::from(n) - i128::from(w.offset().as_nanos())).rem_euclid(i128::from(size)) < i128::from(i64::MIN));
            }
        }
    }
}

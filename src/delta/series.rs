//! A compact, lossless, streaming codec for `(timestamp, f64)` series.

use bytes::Bytes;

use crate::delta::bits::{BitReader, BitWriter, bit_len, put_varint, take_u8, take_varint, unzigzag, zigzag};
use crate::delta::lencode::{Hist, LenCode, LenDecoder, SYMBOLS, estimate_bits, hist_of, sum_parts};

/// Most points a block may hold (the decoder refuses more).
pub const MAX_BLOCK_POINTS: usize = 8192;
/// Points per block unless configured.
pub const DEFAULT_BLOCK_POINTS: usize = 1024;

/// First byte of every block: format version 1.
const BLOCK_TAG: u8 = 0xE5;
const MODE_XOR: u8 = 0;
const MODE_DECIMAL: u8 = 1;
/// Most decimal digits tried for the scaled-integer mode.
const MAX_EXP: usize = 18;
/// A value within this many units in the last place of a decimal counts as
/// that decimal plus a correction (float-print noise such as
/// `11.529000000000002`).
const NEAR_ULPS: u64 = 4;
/// Scaled integers stay below this magnitude so their deltas cannot
/// overflow and they convert to `f64` the same way everywhere.
const MAX_SCALED: f64 = 9.007_199_254_740_992e15; // 2^53

const POW10: [f64; MAX_EXP + 1] =
    [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18];

/// A series that cannot be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SeriesError {
    /// The input ends inside a block.
    #[error("block {block}: the input ends inside the block")]
    Truncated {
        /// Index of the block.
        block: usize,
    },
    /// A block does not start with the version-1 tag.
    #[error("block {block}: unknown block tag {tag:#04x}")]
    Tag {
        /// Index of the block.
        block: usize,
        /// The byte found.
        tag: u8,
    },
    /// A block claims zero points or more than [`MAX_BLOCK_POINTS`].
    #[error("block {block}: {points} points (1 to 8192 allowed)")]
    Points {
        /// Index of the block.
        block: usize,
        /// The count found.
        points: u64,
    },
    /// A header field is out of range.
    #[error("block {block}: invalid {field}")]
    Header {
        /// Index of the block.
        block: usize,
        /// Which field.
        field: &'static str,
    },
    /// A section's bits run out before its points do.
    #[error("block {block}: the {section} section is shorter than its points need")]
    Section {
        /// Index of the block.
        block: usize,
        /// Which section.
        section: &'static str,
    },
    /// A block's sections do not add up to its length.
    #[error("block {block}: {extra} unread bytes at the end of the block")]
    Trailing {
        /// Index of the block.
        block: usize,
        /// Bytes left over.
        extra: usize,
    },
}

/// How one block's values were coded (see [`SeriesStats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Xor,
    Decimal,
}

/// Counters of a [`SeriesEncoder`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SeriesStats {
    /// Points encoded into finished blocks.
    pub points: u64,
    /// Blocks whose values were coded as XOR'd floats (Gorilla).
    pub xor_blocks: u64,
    /// Blocks whose values were coded as scaled decimal integers.
    pub decimal_blocks: u64,
    /// Bytes of finished blocks.
    pub bytes: u64,
}

/// Streaming encoder for `(timestamp, f64)` points, in blocks.
///
/// Timestamps are `i64` in any unit (ns, ms, s); they may repeat or go
/// backwards. Each block stores them as deltas of deltas, in units of the
/// greatest common divisor of the block's steps: a regular series costs
/// nothing per timestamp.
///
/// Values are coded one of two ways, whichever is smaller for the block
/// (recorded in its header):
///
/// - **decimal**: most telemetry is decimals with few digits (`23.5`,
///   `99.668`) or integers stored as floats. The block's values are scaled
///   by the smallest power of ten that makes them integers, and those are
///   written as offsets from the block's minimum, deltas, or deltas of
///   deltas, whichever is cheapest. Values that are only near such a
///   decimal (float-print noise like `11.529000000000002`), and anything
///   else (NaN payloads, infinities, `-0.0`), carry an exact correction of
///   their bit pattern.
/// - **XOR** (Gorilla): each value XOR'd with the previous one, writing only
///   the meaningful bits.
///
/// Integer streams (timestamp deltas, residuals, corrections) are written
/// as a canonical Huffman code of each value's bit length, chosen per
/// block, followed by the bits below its leading one.
///
/// Both are lossless bit for bit, and every platform decodes a block the
/// same way. The encoder's choice between codings uses floating-point
/// estimates, so on a near tie two platforms may pick different (equally
/// valid) encodings of the same points.
///
/// The format, all integers LEB128
/// varints (signed ones zigzagged) unless said otherwise:
///
/// ```text
/// block     = 0xE5, points (1..=8192), body length, body
/// body      = first timestamp, [unit, first step (in units), code, section]  (2+ points)
///             mode byte, values
/// values    = 0 (XOR): first value (8 bytes LE), section
///           | 1 (decimal): exponent byte, order byte (0 offsets, 1 deltas,
///             2 deltas of deltas), start (minimum | first | first and
///             first delta), code, correction flag byte, [code], section, [section]
/// code      = smallest bit length, largest, then for more than one a
///             nibble per length in between (its code length, 0 if absent)
/// section   = byte length, bits (least significant first)
/// ```
///
/// ```
/// use edgestream::delta::series::{SeriesEncoder, decode};
///
/// let mut encoder = SeriesEncoder::new();
/// for i in 0..1_000i64 {
///     encoder.push(1_795_838_400_000 + i * 1_000, 20.0 + (i % 7) as f64 * 0.5);
/// }
/// let bytes = encoder.finish();
/// assert!(bytes.len() < 1_000); // under one byte per point
///
/// let (mut ts, mut values) = (Vec::new(), Vec::new());
/// decode(&bytes, &mut ts, &mut values)?;
/// assert_eq!(ts.len(), 1_000);
/// assert_eq!(values[3], 21.5);
/// # Ok::<(), edgestream::delta::series::SeriesError>(())
/// ```
#[derive(Debug)]
pub struct SeriesEncoder {
    /// Pending points: `ts` and `values` are `block_points` long, the
    /// first `pending` of them taken.
    ts: Box<[i64]>,
    values: Box<[f64]>,
    pending: usize,
    out: Vec<u8>,
    scratch: Scratch,
    stats: SeriesStats,
}

/// Buffers reused from block to block.
#[derive(Debug, Default)]
struct Scratch {
    zz: Vec<u64>,
    /// Header values a decimal block's residuals start from.
    starts: Vec<u8>,
    ks: Vec<i64>,
    corrections: Vec<u64>,
    body: Vec<u8>,
    section: Vec<u8>,
}

impl Default for SeriesEncoder {
    fn default() -> Self {
        SeriesEncoder::new()
    }
}

impl SeriesEncoder {
    /// An encoder with blocks of [`DEFAULT_BLOCK_POINTS`].
    pub fn new() -> Self {
        SeriesEncoder::with_block_points(DEFAULT_BLOCK_POINTS)
    }

    /// An encoder with blocks of `points` (clamped to 1..=[`MAX_BLOCK_POINTS`]).
    /// Larger blocks compress a little better; smaller ones let a reader
    /// start sooner.
    pub fn with_block_points(points: usize) -> Self {
        let block_points = points.clamp(1, MAX_BLOCK_POINTS);
        SeriesEncoder {
            ts: vec![0; block_points].into_boxed_slice(),
            values: vec![0.0; block_points].into_boxed_slice(),
            pending: 0,
            out: Vec::new(),
            scratch: Scratch::default(),
            stats: SeriesStats::default(),
        }
    }

    /// Adds a point; a full block is encoded at once.
    #[inline]
    pub fn push(&mut self, ts: i64, value: f64) {
        if let (Some(slot_t), Some(slot_v)) = (self.ts.get_mut(self.pending), self.values.get_mut(self.pending)) {
            (*slot_t, *slot_v) = (ts, value);
        }
        self.pending += 1;
        if self.pending >= self.ts.len() {
            self.flush();
        }
    }

    /// Adds points in order.
    pub fn extend(&mut self, points: impl IntoIterator<Item = (i64, f64)>) {
        let mut points = points.into_iter();
        loop {
            // The buffers and the count as locals, so that the loop keeps
            // them in registers.
            let (mut pending, full) = (self.pending, self.ts.len());
            let mut slots = self.ts.iter_mut().zip(self.values.iter_mut()).skip(pending);
            for (t, v) in points.by_ref() {
                if let Some((slot_t, slot_v)) = slots.next() {
                    (*slot_t, *slot_v) = (t, v);
                }
                pending += 1;
                if pending == full {
                    break;
                }
            }
            self.pending = pending;
            if pending < full {
                return;
            }
            self.flush();
        }
    }

    /// Encodes the pending points as a (short) block.
    pub fn flush(&mut self) {
        let n = self.pending;
        if n == 0 {
            return;
        }
        let (ts, values) = (self.ts.get(..n).unwrap_or_default(), self.values.get(..n).unwrap_or_default());
        let before = self.out.len();
        let mode = encode_block(ts, values, &mut self.out, &mut self.scratch);
        self.stats.points += n as u64;
        self.stats.bytes += (self.out.len() - before) as u64;
        match mode {
            Mode::Xor => self.stats.xor_blocks += 1,
            Mode::Decimal => self.stats.decimal_blocks += 1,
        }
        self.pending = 0;
    }

    /// Takes the finished blocks so far (for streaming them out); pending
    /// points stay for the next block.
    pub fn take_finished(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.out))
    }

    /// Encodes the pending points and returns every block not yet taken.
    pub fn finish(mut self) -> Bytes {
        self.flush();
        Bytes::from(self.out)
    }

    /// Points waiting for their block.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Counters of the finished blocks.
    pub fn stats(&self) -> &SeriesStats {
        &self.stats
    }
}

/// Encodes a whole series at once.
pub fn encode(ts: &[i64], values: &[f64]) -> Bytes {
    let mut encoder = SeriesEncoder::new();
    encoder.extend(ts.iter().copied().zip(values.iter().copied()));
    encoder.finish()
}

/// Where bits go: written, or only counted to compare codings.
pub(crate) trait BitSink {
    fn put(&mut self, value: u64, bits: u32);
}

impl BitSink for BitWriter<'_> {
    #[inline(always)]
    fn put(&mut self, value: u64, bits: u32) {
        self.write(value, bits);
    }
}

/// Counts bits.
#[cfg(test)]
struct BitCount(u64);

#[cfg(test)]
impl BitSink for BitCount {
    #[inline]
    fn put(&mut self, _: u64, bits: u32) {
        self.0 += u64::from(bits);
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Appends a section, at most `most_bits` long: its byte length, then the
/// bits `write` puts in the writer it is given (called again with more
/// room if `most_bits` was short, which would be a bug).
///
/// `write` is called from one place, so that it is inlined with the
/// writer, whose state then stays in registers.
#[inline(always)]
fn put_section(out: &mut Vec<u8>, section: &mut Vec<u8>, most_bits: u64, mut write: impl FnMut(&mut BitWriter<'_>)) {
    let mut room = most_bits;
    let len = loop {
        section.clear();
        section.resize(BitWriter::room(room), 0);
        let mut w = BitWriter::new(section);
        write(&mut w);
        match w.finish() {
            Some(len) => break len,
            None if room < MOST_SECTION_BITS => {
                debug_assert!(false, "section longer than {most_bits} bits");
                room = MOST_SECTION_BITS;
            }
            None => break 0,
        }
    };
    section.truncate(len);
    put_varint(out, section.len() as u64);
    out.extend_from_slice(section);
}

/// More bits than any section of a block can hold (78 per point).
const MOST_SECTION_BITS: u64 = 80 * MAX_BLOCK_POINTS as u64;

/// Appends a section of `values` in `code`, `bits` long
/// ([`LenCode::cost_bits`]).
fn put_coded(out: &mut Vec<u8>, section: &mut Vec<u8>, code: &LenCode, values: &[u64], bits: u64) {
    if bits == 0 {
        // Every value is 0 and costs nothing: an empty section.
        put_varint(out, 0);
        return;
    }
    put_section(out, section, bits, |w| {
        for &v in values {
            code.put(v, w);
        }
    });
}

/// `x` rounded to the nearest integer (halves away from zero), when it is
/// below [`MAX_SCALED`] in magnitude. Plain arithmetic rather than
/// `f64::round`, which is a library call on baseline x86-64.
#[inline]
fn round_scaled(x: f64) -> Option<i64> {
    // NaN compares false: no scaled integer.
    if x.abs().partial_cmp(&MAX_SCALED) != Some(std::cmp::Ordering::Less) {
        return None;
    }
    let t = x as i64; // truncates toward zero, exact below 2^53
    let frac = x - t as f64;
    // Without branches: the fraction is as good as random.
    Some(t + i64::from(frac >= 0.5) - i64::from(frac <= -0.5))
}

/// The scaled integer of `v` at `p = 10^e` (`previous` when `v` has none)
/// and the exact bit difference of `v` from `k / p`, zigzagged.
#[inline]
fn scaled(v: f64, p: f64, previous: i64) -> (i64, u64) {
    let k = round_scaled(v * p).unwrap_or(previous);
    (k, zigzag(v.to_bits().wrapping_sub((k as f64 / p).to_bits()) as i64))
}

/// Scales the block to decimal integers: the smallest exponent at which
/// every finite value is within [`NEAR_ULPS`] of a decimal, with `ks` and
/// `corrections` filled for it; `None` when some value needs more than
/// [`MAX_EXP`] digits.
fn scale(values: &[f64], ks: &mut Vec<i64>, corrections: &mut Vec<u64>) -> Option<Scaled> {
    ks.clear();
    ks.resize(values.len(), 0);
    corrections.clear();
    corrections.resize(values.len(), 0);
    let mut e = 0usize;
    loop {
        // `scale_at` stops at the first value that needs more digits; the
        // exponent goes up until that value fits, and the block is scaled
        // again from its start.
        let scaled_at = if e == 0 {
            scale_at::<true>(values, 1.0, ks, corrections)
        } else {
            scale_at::<false>(values, *POW10.get(e)?, ks, corrections)
        };
        match scaled_at {
            Ok(facts) => return Some(Scaled { e, ..facts }),
            Err(v) => {
                while scaled(v, *POW10.get(e)?, 0).1 > 2 * NEAR_ULPS {
                    e += 1;
                }
            }
        }
    }
}

/// A block scaled to decimal integers, and what the encoder needs to know
/// of it (gathered in the same pass).
#[derive(Clone, Copy, Debug)]
struct Scaled {
    /// The exponent.
    e: usize,
    /// The smallest scaled integer.
    min: i64,
    /// Whether any value has a correction.
    corrected: bool,
    /// Values equal to their predecessor, bit for bit.
    repeats: u64,
}

/// Fills `ks` and `corrections` for `p = 10^e` (`INT`: `e = 0`); fails with
/// the first value that is more than [`NEAR_ULPS`] away from every decimal
/// of `e` digits. Values no decimal can hold (non-finite, `-0.0`,
/// magnitudes of 2^53 and more) keep their correction without raising the
/// exponent.
#[inline(always)]
fn scale_at<const INT: bool>(values: &[f64], p: f64, ks: &mut [i64], corrections: &mut [u64]) -> Result<Scaled, f64> {
    let mut k = 0i64;
    let mut facts = Scaled { e: 0, min: i64::MAX, corrected: false, repeats: 0 };
    let mut previous = values.first().map(|v| !v.to_bits());
    for ((&v, slot_k), slot_c) in values.iter().zip(ks.iter_mut()).zip(corrections.iter_mut()) {
        let c;
        // `p` is the constant 1 at exponent 0: the multiplication and the
        // division fold away.
        (k, c) = scaled(v, if INT { 1.0 } else { p }, k);
        // A zigzagged correction above 2 × NEAR_ULPS is more than NEAR_ULPS away.
        if c > 2 * NEAR_ULPS && v.is_finite() && v != 0.0 && v.abs() < MAX_SCALED {
            return Err(v);
        }
        (*slot_k, *slot_c) = (k, c);
        facts.min = facts.min.min(k);
        facts.corrected |= c != 0;
        facts.repeats += u64::from(previous == Some(v.to_bits()));
        previous = Some(v.to_bits());
    }
    Ok(facts)
}

/// How the scaled integers of a decimal block are turned into residuals:
/// offsets from the block's minimum (order 0, for values that jump
/// around), deltas (1) or deltas of deltas (2, for smooth curves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    Offsets,
    Deltas,
    DeltasOfDeltas,
}

impl Order {
    fn from_byte(b: u8) -> Option<Order> {
        match b {
            0 => Some(Order::Offsets),
            1 => Some(Order::Deltas),
            2 => Some(Order::DeltasOfDeltas),
            _ => None,
        }
    }

    fn byte(self) -> u8 {
        match self {
            Order::Offsets => 0,
            Order::Deltas => 1,
            Order::DeltasOfDeltas => 2,
        }
    }
}

/// The residual order with the smallest estimated cost for `ks` (whose
/// smallest is `min`), and the histogram of its residuals.
fn best_order(ks: &[i64], min: i64) -> (Order, Hist) {
    // One pass for the three histograms (offsets, deltas, deltas of
    // deltas), each in four copies taken in turn: runs of equal bit lengths
    // would otherwise make each increment wait for the previous one.
    let mut parts = [[[0u32; SYMBOLS]; 3]; 4];
    let mut count = |copy: usize, stream: usize, v: u64| {
        if let Some(h) =
            parts.get_mut(copy).and_then(|p| p.get_mut(stream)).and_then(|h| h.get_mut(bit_len(v) as usize))
        {
            *h += 1;
        }
    };
    let (first, second) = match ks {
        [a, b, ..] => (*a, *b),
        [a] => (*a, *a),
        [] => (0, 0),
    };
    for &k in ks.iter().take(2) {
        count(0, 0, k.wrapping_sub(min) as u64);
    }
    if ks.len() >= 2 {
        count(0, 1, zigzag(second.wrapping_sub(first)));
    }
    let (mut previous, mut delta) = (second, second.wrapping_sub(first));
    for (i, &k) in ks.iter().skip(2).enumerate() {
        let d = k.wrapping_sub(previous);
        let copy = i & 3;
        count(copy, 0, k.wrapping_sub(min) as u64);
        count(copy, 1, zigzag(d));
        count(copy, 2, zigzag(d.wrapping_sub(delta)));
        (previous, delta) = (k, d);
    }
    let hist = |stream: usize| sum_parts(parts.iter().filter_map(|p| p.get(stream)));
    let (offsets, deltas, second) = (hist(0), hist(1), hist(2));
    let costs = [
        (estimate_bits(&offsets), Order::Offsets, offsets),
        (estimate_bits(&deltas), Order::Deltas, deltas),
        (estimate_bits(&second), Order::DeltasOfDeltas, second),
    ];
    costs.into_iter().min_by(|a, b| a.0.total_cmp(&b.0)).map_or((Order::Deltas, deltas), |(_, order, h)| (order, h))
}

/// Writes the residuals of `ks` (whose smallest is `min`) in `order` into
/// `out`, and the header values they start from into `starts`.
fn residuals(ks: &[i64], min: i64, order: Order, out: &mut Vec<u64>, starts: &mut Vec<u8>) {
    out.clear();
    match order {
        Order::Offsets => {
            put_varint(starts, zigzag(min));
            out.extend(ks.iter().map(|&k| k.wrapping_sub(min) as u64));
        }
        Order::Deltas => {
            put_varint(starts, zigzag(ks.first().copied().unwrap_or(0)));
            out.extend(ks.windows(2).map(|w| match w {
                [a, b] => zigzag(b.wrapping_sub(*a)),
                _ => 0,
            }));
        }
        Order::DeltasOfDeltas => {
            let k0 = ks.first().copied().unwrap_or(0);
            put_varint(starts, zigzag(k0));
            put_varint(starts, zigzag(ks.get(1).copied().unwrap_or(k0).wrapping_sub(k0)));
            out.extend(ks.windows(3).map(|w| match w {
                [a, b, c] => zigzag(c.wrapping_sub(*b).wrapping_sub(b.wrapping_sub(*a))),
                _ => 0,
            }));
        }
    }
}

/// Writes a block's timestamps: the first, then (two or more) the unit,
/// the first step and the deltas of steps, in units.
fn encode_timestamps(ts: &[i64], body: &mut Vec<u8>, zz: &mut Vec<u64>, section: &mut Vec<u8>) {
    put_varint(body, zigzag(ts.first().copied().unwrap_or(0)));
    let [a, b, ..] = ts else { return };
    let step = b.wrapping_sub(*a);
    if ts.windows(2).fold(true, |same, w| same & matches!(w, [a, b] if b.wrapping_sub(*a) == step)) {
        // A regular series: the bytes the general path writes for it,
        // without its passes.
        put_varint(body, step.unsigned_abs().max(1));
        put_varint(body, zigzag(step.signum()));
        LenCode::build(&[0; SYMBOLS]).write_header(body);
        put_varint(body, 0);
    } else {
        encode_steps(ts, body, zz, section);
    }
}

/// [`encode_timestamps`] after the first, for any two or more timestamps.
fn encode_steps(ts: &[i64], body: &mut Vec<u8>, zz: &mut Vec<u64>, section: &mut Vec<u8>) {
    // Steps repeat: skip the divisions when a step equals the last one.
    let mut last = 0u64;
    let unit = ts.windows(2).fold(0u64, |g, w| match w {
        [a, b] => {
            let d = b.wrapping_sub(*a).unsigned_abs();
            if d == last || d == g {
                return g;
            }
            last = d;
            gcd(g, d)
        }
        _ => g,
    });
    let unit = unit.max(1);
    let mut cache = (0i64, 0i64);
    let mut step = |w: &[i64]| match w {
        [a, b] => {
            let d = b.wrapping_sub(*a);
            if d != cache.0 {
                // `unit` divides `d` exactly; i128 keeps `i64::MIN / 1` in range.
                cache = (d, (i128::from(d) / i128::from(unit)) as i64);
            }
            cache.1
        }
        _ => 0,
    };
    zz.clear();
    let mut previous = step(ts.get(..2).unwrap_or_default());
    put_varint(body, unit);
    put_varint(body, zigzag(previous));
    for w in ts.windows(2).skip(1) {
        let q = step(w);
        zz.push(zigzag(q.wrapping_sub(previous)));
        previous = q;
    }
    let hist = hist_of(zz.iter().copied());
    let code = LenCode::build(&hist);
    code.write_header(body);
    put_coded(body, section, &code, zz, code.cost_bits(&hist));
}

fn encode_block(ts: &[i64], values: &[f64], out: &mut Vec<u8>, s: &mut Scratch) -> Mode {
    let n = ts.len().min(values.len());
    let (ts, values) = (ts.get(..n).unwrap_or_default(), values.get(..n).unwrap_or_default());
    let body = &mut s.body;
    body.clear();

    encode_timestamps(ts, body, &mut s.zz, &mut s.section);

    // Values: the cheaper of decimal and XOR, compared in exact bits. XOR
    // costs at least 1 bit per repeated value and 3 per other one: when the
    // decimal coding is below that, XOR need not be counted.
    let xor_bits = |decimal_bits: u64, repeats: u64| {
        let floor = 64 + 3 * n.saturating_sub(1) as u64 - 2 * repeats;
        if decimal_bits < floor { u64::MAX } else { xor_cost(values, decimal_bits) }
    };
    let decimal = scale(values, &mut s.ks, &mut s.corrections).map(|Scaled { e, min, corrected, repeats }| {
        let (order, hist) = best_order(&s.ks, min);
        s.starts.clear();
        residuals(&s.ks, min, order, &mut s.zz, &mut s.starts);
        let code = LenCode::build(&hist);
        let value_bits = code.cost_bits(&hist);
        let mut bits = value_bits + 8 * (code.header_len() + s.starts.len() + 4) as u64;
        let corrections = if corrected {
            let hist = hist_of(s.corrections.iter().copied());
            let code = LenCode::build(&hist);
            let correction_bits = code.cost_bits(&hist);
            bits += correction_bits + 8 * (code.header_len() + 2) as u64;
            Some((code, correction_bits))
        } else {
            None
        };
        (e, order, (code, value_bits), corrections, bits, repeats)
    });
    let mode = match decimal {
        Some((e, order, (code, value_bits), corrections, bits, repeats)) if bits < xor_bits(bits, repeats) => {
            body.push(MODE_DECIMAL);
            body.push(e as u8);
            body.push(order.byte());
            body.extend_from_slice(&s.starts);
            code.write_header(body);
            body.push(u8::from(corrections.is_some()));
            if let Some((c, _)) = &corrections {
                c.write_header(body);
            }
            put_coded(body, &mut s.section, &code, &s.zz, value_bits);
            if let Some((c, correction_bits)) = &corrections {
                put_coded(body, &mut s.section, c, &s.corrections, *correction_bits);
            }
            Mode::Decimal
        }
        _ => {
            body.push(MODE_XOR);
            body.extend_from_slice(&values.first().copied().unwrap_or(0.0).to_bits().to_le_bytes());
            put_section(body, &mut s.section, 78 * n as u64, |w| xor_encode(values, w));
            Mode::Xor
        }
    };

    out.push(BLOCK_TAG);
    put_varint(out, n as u64);
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
    mode
}

/// The bits [`xor_encode`] writes for `values`, plus 64 for the first
/// value (the same decisions, taken without branches), or a number of
/// at least `limit` as soon as the count reaches it.
fn xor_cost(values: &[f64], limit: u64) -> u64 {
    let Some((first, rest)) = values.split_first() else { return 64 };
    let mut previous = first.to_bits();
    let (mut lead, mut trail) = (u32::MAX, 0u32);
    let mut bits = 64u64;
    for (i, v) in rest.iter().enumerate() {
        if i % 32 == 0 && bits >= limit {
            break;
        }
        let x = v.to_bits() ^ previous;
        previous = v.to_bits();
        let (lz, tz) = (x.leading_zeros(), x.trailing_zeros());
        let fits = lead != u32::MAX && lz >= lead && tz >= trail;
        let new_window = x != 0 && !fits;
        // 1 for a repeat, 2 + the window's width when it fits, else 14 + the
        // meaningful bits (a repeat's lz and tz are 64: its window "fits").
        let cost = if x == 0 {
            1
        } else if fits {
            66u32.saturating_sub(lead + trail)
        } else {
            78u32.saturating_sub(lz + tz)
        };
        bits += u64::from(cost);
        lead = if new_window { lz } else { lead };
        trail = if new_window { tz } else { trail };
    }
    bits
}

/// Gorilla XOR coding of `values[1..]` against their predecessors: `0` for
/// a repeat; `10` and the meaningful bits when they fit the previous
/// window; `11`, 6 bits of leading zeros, 6 bits of length − 1 and the
/// meaningful bits otherwise.
fn xor_encode(values: &[f64], sink: &mut impl BitSink) {
    let Some((first, rest)) = values.split_first() else { return };
    let mut previous = first.to_bits();
    let (mut lead, mut trail) = (u32::MAX, 0u32);
    for v in rest {
        let bits = v.to_bits();
        let x = bits ^ previous;
        previous = bits;
        if x == 0 {
            sink.put(0, 1);
            continue;
        }
        let (lz, tz) = (x.leading_zeros(), x.trailing_zeros());
        // Control bits, window and meaningful bits go in one write when
        // they fit 64 bits.
        if lead != u32::MAX && lz >= lead && tz >= trail {
            let (bits, len) = (x >> trail, 64 - lead - trail);
            if len <= 62 {
                sink.put(0b01 | bits << 2, 2 + len);
            } else {
                sink.put(0b01, 2);
                sink.put(bits, len);
            }
        } else {
            let len = 64 - lz - tz;
            let head = 0b11 | u64::from(lz) << 2 | u64::from(len - 1) << 8;
            if len <= 50 {
                sink.put(head | (x >> tz) << 14, 14 + len);
            } else {
                sink.put(head, 14);
                sink.put(x >> tz, len);
            }
            (lead, trail) = (lz, tz);
        }
    }
}

/// Decodes every block of `input`, appending to `ts` and `values`; returns
/// the number of points decoded. On error, the points of the blocks before
/// the bad one are kept.
pub fn decode(input: &[u8], ts: &mut Vec<i64>, values: &mut Vec<f64>) -> Result<usize, SeriesError> {
    let mut decoder = SeriesDecoder::new(input);
    let mut total = 0;
    while let Some(points) = decoder.next_block(ts, values) {
        total += points?;
    }
    Ok(total)
}

/// Decodes a series block by block.
///
/// Memory is bounded by the input: a block holds at most
/// [`MAX_BLOCK_POINTS`] points and costs at least four bytes, and nothing
/// is reserved before a block's bytes are known to be present.
#[derive(Debug)]
pub struct SeriesDecoder<'a> {
    input: &'a [u8],
    block: usize,
    failed: bool,
}

impl<'a> SeriesDecoder<'a> {
    /// A decoder over encoded blocks.
    pub fn new(input: &'a [u8]) -> Self {
        SeriesDecoder { input, block: 0, failed: false }
    }

    /// Decodes the next block into `ts` and `values` (appending), returning
    /// its number of points; `None` at the end, or after an error.
    pub fn next_block(&mut self, ts: &mut Vec<i64>, values: &mut Vec<f64>) -> Option<Result<usize, SeriesError>> {
        if self.input.is_empty() || self.failed {
            return None;
        }
        let result = self.block_inner(ts, values);
        if result.is_err() {
            self.failed = true;
        }
        self.block += 1;
        Some(result)
    }

    fn block_inner(&mut self, ts: &mut Vec<i64>, values: &mut Vec<f64>) -> Result<usize, SeriesError> {
        let block = self.block;
        let truncated = SeriesError::Truncated { block };
        let mut input = self.input;
        let tag = take_u8(&mut input).ok_or(truncated.clone())?;
        if tag != BLOCK_TAG {
            return Err(SeriesError::Tag { block, tag });
        }
        let points = take_varint(&mut input).ok_or(truncated.clone())?;
        if points == 0 || points > MAX_BLOCK_POINTS as u64 {
            return Err(SeriesError::Points { block, points });
        }
        let n = points as usize;
        let len = take_varint(&mut input).ok_or(truncated.clone())?;
        let len = usize::try_from(len).map_err(|_| truncated.clone())?;
        let mut body = input.get(..len).ok_or(truncated.clone())?;
        let rest = input.get(len..).unwrap_or_default();

        let (ts_start, values_start) = (ts.len(), values.len());
        ts.reserve(n);
        values.reserve(n);
        let result = decode_body(&mut body, n, ts, values, block);
        let result = result.and(match body.len() {
            0 => Ok(n),
            extra => Err(SeriesError::Trailing { block, extra }),
        });
        if result.is_err() {
            ts.truncate(ts_start);
            values.truncate(values_start);
        } else {
            self.input = rest;
        }
        result
    }
}

/// Takes a section (byte length, then bits) from the front of `body`.
fn take_section<'a>(body: &mut &'a [u8], block: usize) -> Result<&'a [u8], SeriesError> {
    let truncated = SeriesError::Truncated { block };
    let len = take_varint(body).ok_or(truncated.clone())?;
    let len = usize::try_from(len).map_err(|_| truncated.clone())?;
    let section = body.get(..len).ok_or(truncated)?;
    *body = body.get(len..).unwrap_or_default();
    Ok(section)
}

fn decode_body(
    body: &mut &[u8],
    n: usize,
    ts: &mut Vec<i64>,
    values: &mut Vec<f64>,
    block: usize,
) -> Result<(), SeriesError> {
    let truncated = || SeriesError::Truncated { block };
    let header = |field| SeriesError::Header { block, field };
    let short = |section| SeriesError::Section { block, section };
    let varint = |body: &mut &[u8]| take_varint(body).ok_or_else(truncated);

    let mut t = unzigzag(varint(body)?);
    ts.push(t);
    if n >= 2 {
        let unit = varint(body)?;
        if unit == 0 {
            return Err(header("timestamp unit"));
        }
        let unit = unit as i64;
        let q = unzigzag(varint(body)?);
        let code = LenCode::read_header(body).ok_or(header("timestamp code"))?;
        let section = take_section(body, block)?;
        t = t.wrapping_add(q.wrapping_mul(unit));
        ts.push(t);
        let complete = decode_timestamps(&code, section, grow(ts, n - 2), t, q, unit);
        if !complete {
            return Err(short("timestamp"));
        }
    }

    match take_u8(body).ok_or_else(truncated)? {
        MODE_XOR => {
            let first = body.get(..8).ok_or_else(truncated)?;
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(first);
            *body = body.get(8..).unwrap_or_default();
            let section = take_section(body, block)?;
            let mut reader = BitReader::new(section);
            xor_decode(&mut reader, u64::from_le_bytes(bytes), n, values);
            if reader.overrun() {
                return Err(short("value"));
            }
        }
        MODE_DECIMAL => {
            let e = usize::from(take_u8(body).ok_or_else(truncated)?);
            let p = POW10.get(e).copied().ok_or(header("decimal exponent"))?;
            let order = Order::from_byte(take_u8(body).ok_or_else(truncated)?).ok_or(header("residual order"))?;
            let k = unzigzag(varint(body)?);
            let d = match order {
                Order::DeltasOfDeltas => unzigzag(varint(body)?),
                _ => 0,
            };
            let code = LenCode::read_header(body).ok_or(header("value code"))?;
            let corrections = match take_u8(body).ok_or_else(truncated)? {
                0 => None,
                1 => Some(LenCode::read_header(body).ok_or(header("correction code"))?),
                _ => return Err(header("correction flag")),
            };
            let section = take_section(body, block)?;
            let correction_section = if corrections.is_some() { take_section(body, block)? } else { &[] };
            let out = grow(values, n);
            let decoder = code.decoder();
            let mut reader = BitReader::new(section);
            let mut corrections = corrections.map(|c| (c.decoder(), BitReader::new(correction_section)));
            let stream = (&decoder, &mut reader);
            match order {
                Order::Offsets => fill_decimal::<0>(out, p, (k, d), stream, &mut corrections),
                Order::Deltas => fill_decimal::<1>(out, p, (k, d), stream, &mut corrections),
                Order::DeltasOfDeltas => fill_decimal::<2>(out, p, (k, d), stream, &mut corrections),
            }
            let complete = corrections.is_none_or(|(_, reader)| !reader.overrun());
            if reader.overrun() {
                return Err(short("value"));
            }
            if !complete {
                return Err(short("correction"));
            }
        }
        _ => return Err(header("value mode")),
    }
    Ok(())
}

/// Decodes a decimal block's values into `out`: the scaled integers `k` in
/// residual order `ORDER` (0 offsets, 1 deltas, 2 deltas of deltas; `start`
/// holds the header's minimum or first `k`, and first delta), each written
/// as `k / p` plus its exact correction when the block has them. Values
/// and corrections decode in one loop: two independent bit streams the
/// processor works on side by side.
#[inline(always)]
fn fill_decimal<const ORDER: u8>(
    out: &mut [f64],
    p: f64,
    start: (i64, i64),
    (decoder, reader): (&LenDecoder, &mut BitReader<'_>),
    corrections: &mut Option<(LenDecoder, BitReader<'_>)>,
) {
    let (mut k, mut d) = start;
    // The first `ORDER` integers come from the header.
    let heads = usize::from(ORDER).min(out.len());
    let (head, rest) = out.split_at_mut_checked(heads).unwrap_or_default();
    for (i, slot) in head.iter_mut().enumerate() {
        let k = if i == 0 { k } else { k.wrapping_add(d) };
        *slot = match corrections {
            Some((c_decoder, c_reader)) => correct(k as f64 / p, c_decoder.next(c_reader)),
            None => k as f64 / p,
        };
    }
    if ORDER == 2 {
        k = k.wrapping_add(d);
    }
    match corrections {
        Some((c_decoder, c_reader)) => {
            for slot in rest {
                let exact = next_k::<ORDER>(decoder.next(reader), &mut k, &mut d) as f64 / p;
                *slot = correct(exact, c_decoder.next(c_reader));
            }
        }
        None => {
            for slot in rest {
                *slot = next_k::<ORDER>(decoder.next(reader), &mut k, &mut d) as f64 / p;
            }
        }
    }
}

/// `exact` with its zigzagged bit correction `c` applied.
#[inline(always)]
fn correct(exact: f64, c: u64) -> f64 {
    f64::from_bits(exact.to_bits().wrapping_add(unzigzag(c) as u64))
}

/// The next scaled integer from residual `r` in order `ORDER` (see
/// [`fill_decimal`]).
#[inline(always)]
fn next_k<const ORDER: u8>(r: u64, k: &mut i64, d: &mut i64) -> i64 {
    match ORDER {
        0 => k.wrapping_add(r as i64),
        1 => {
            *k = k.wrapping_add(unzigzag(r));
            *k
        }
        _ => {
            *d = d.wrapping_add(unzigzag(r));
            *k = k.wrapping_add(*d);
            *k
        }
    }
}

/// Appends `n` default values to `v` and returns them, to be overwritten
/// (no per-value capacity checks in the decoding loops).
fn grow<T: Default + Clone>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    let start = v.len();
    v.resize(start + n, T::default());
    v.get_mut(start..).unwrap_or_default()
}

/// Decodes timestamps into `out` from their deltas of steps in `code`,
/// starting after timestamp `t` and step `q` (in `unit`s); returns whether
/// the section held them all.
fn decode_timestamps(code: &LenCode, section: &[u8], out: &mut [i64], mut t: i64, mut q: i64, unit: i64) -> bool {
    let mut reader = BitReader::new(section);
    let mut step = |dod: u64| {
        q = q.wrapping_add(unzigzag(dod));
        t = t.wrapping_add(q.wrapping_mul(unit));
        t
    };
    match code.single() {
        // Every value is 0 (a regular series): no bits to read.
        Some(0) => {
            for slot in out {
                *slot = step(0);
            }
        }
        // Every value has the same bit length: its bits below the leading one.
        Some(b) => {
            let lead = 1u64 << (b - 1);
            for slot in out {
                *slot = step(lead | reader.read(b - 1));
            }
        }
        None => {
            let decoder = code.decoder();
            for slot in out {
                *slot = step(decoder.next(&mut reader));
            }
        }
    }
    !reader.overrun()
}

/// Consumes `skip` bits and returns the `len <= 64` after them, from the
/// bits `acc` the reader held (in one shift and mask when it held them all).
#[inline(always)]
fn take_after(reader: &mut BitReader<'_>, acc: u64, skip: u32, len: u32) -> u64 {
    if skip + len <= reader.held() {
        reader.consume(skip + len);
        (acc >> skip) & ((1u64 << len) - 1)
    } else {
        reader.skip(skip);
        reader.read(len)
    }
}

/// Gorilla XOR decoding of `values[1..]` (see [`xor_encode`]).
fn xor_decode(reader: &mut BitReader<'_>, first: u64, n: usize, values: &mut Vec<f64>) {
    let out = grow(values, n);
    let Some((head, rest)) = out.split_first_mut() else { return };
    *head = f64::from_bits(first);
    let mut previous = first;
    let (mut lead, mut trail) = (0u32, 0u32);
    for slot in rest {
        if reader.held() < 56 {
            reader.refill();
        }
        let acc = reader.bits();
        if acc & 1 == 0 {
            // A repeat.
            reader.skip(1);
        } else if acc & 2 == 0 {
            // The previous window: its meaningful bits, when held.
            let len = 64u32.saturating_sub(lead + trail);
            previous ^= take_after(reader, acc, 2, len) << trail;
        } else {
            // A new window: 6 bits of leading zeros, 6 of length − 1, the
            // meaningful bits. A corrupt window (lead + len > 64) is
            // clamped, not trusted; `trail` stays below 64.
            let window = |lead: u32, len: u32| {
                let trail = 64u32.saturating_sub(lead + len);
                (trail, 64 - lead - trail)
            };
            if 14 <= reader.held() {
                lead = (acc >> 2) as u32 & 63;
                let len;
                (trail, len) = window(lead, ((acc >> 8) as u32 & 63) + 1);
                previous ^= take_after(reader, acc, 14, len) << trail;
            } else {
                reader.skip(2);
                lead = reader.read_short(6) as u32;
                let len;
                (trail, len) = window(lead, reader.read_short(6) as u32 + 1);
                previous ^= reader.read(len) << trail;
            }
        }
        *slot = f64::from_bits(previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_timestamps_take_the_general_paths_bytes() {
        for step in [0, 1, -1, 7, -300, 1_000_000_007, i64::MAX, i64::MIN] {
            for n in [2usize, 3, 10, 1024] {
                let ts: Vec<i64> =
                    (0..n as i64).map(|i| 1_700_000_000_000i64.wrapping_add(step.wrapping_mul(i))).collect();
                let (mut fast, mut general) = (Vec::new(), Vec::new());
                let (mut zz, mut section) = (Vec::new(), Vec::new());
                encode_timestamps(&ts, &mut fast, &mut zz, &mut section);
                put_varint(&mut general, zigzag(ts[0]));
                encode_steps(&ts, &mut general, &mut zz, &mut section);
                assert_eq!(fast, general, "step {step}, {n} points");
            }
        }
    }

    #[test]
    fn xor_cost_counts_what_xor_encode_writes() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..200 {
            let values: Vec<f64> = (0..round * 5)
                .map(|i| match next() % 4 {
                    0 => f64::from_bits(next()),
                    1 => (next() % 1000) as f64 / 100.0,
                    2 => (i / 7) as f64,
                    _ => f64::from_bits(next() & !((1 << (next() % 64)) - 1)),
                })
                .collect();
            let mut count = BitCount(0);
            xor_encode(&values, &mut count);
            assert_eq!(xor_cost(&values, u64::MAX), count.0 + 64, "round {round}");
            assert!(xor_cost(&values, 100) >= (count.0 + 64).min(100));
        }
    }
}

//! A compact, lossless, streaming codec for `(timestamp, f64)` series.

use bytes::Bytes;

use crate::delta::bits::{BitReader, BitWriter, put_varint, take_u8, take_varint, unzigzag, zigzag};
use crate::delta::lencode::{Hist, LenCode, estimate_bits, hist_of};

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
    block_points: usize,
    ts: Vec<i64>,
    values: Vec<f64>,
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
            block_points,
            ts: Vec::with_capacity(block_points),
            values: Vec::with_capacity(block_points),
            out: Vec::new(),
            scratch: Scratch::default(),
            stats: SeriesStats::default(),
        }
    }

    /// Adds a point; a full block is encoded at once.
    #[inline]
    pub fn push(&mut self, ts: i64, value: f64) {
        self.ts.push(ts);
        self.values.push(value);
        if self.ts.len() >= self.block_points {
            self.flush();
        }
    }

    /// Adds points in order.
    pub fn extend(&mut self, points: impl IntoIterator<Item = (i64, f64)>) {
        for (ts, value) in points {
            self.push(ts, value);
        }
    }

    /// Encodes the pending points as a (short) block.
    pub fn flush(&mut self) {
        if self.ts.is_empty() {
            return;
        }
        let before = self.out.len();
        let mode = encode_block(&self.ts, &self.values, &mut self.out, &mut self.scratch);
        self.stats.points += self.ts.len() as u64;
        self.stats.bytes += (self.out.len() - before) as u64;
        match mode {
            Mode::Xor => self.stats.xor_blocks += 1,
            Mode::Decimal => self.stats.decimal_blocks += 1,
        }
        self.ts.clear();
        self.values.clear();
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
        self.ts.len()
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
    #[inline]
    fn put(&mut self, value: u64, bits: u32) {
        self.write(value, bits);
    }
}

/// Counts bits.
struct BitCount(u64);

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

/// Appends a section: its byte length, then the bits `write` produces.
fn put_section(out: &mut Vec<u8>, section: &mut Vec<u8>, write: impl FnOnce(&mut BitWriter<'_>)) {
    section.clear();
    let mut w = BitWriter::new(section);
    write(&mut w);
    w.finish();
    put_varint(out, section.len() as u64);
    out.extend_from_slice(section);
}

/// Appends a section of `values` in `code`.
fn put_coded(out: &mut Vec<u8>, section: &mut Vec<u8>, code: &LenCode, values: &[u64]) {
    put_section(out, section, |w| values.iter().for_each(|&v| code.put(v, w)));
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
    Some(if frac >= 0.5 {
        t + 1
    } else if frac <= -0.5 {
        t - 1
    } else {
        t
    })
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
fn scale(values: &[f64], ks: &mut Vec<i64>, corrections: &mut Vec<u64>) -> Option<usize> {
    ks.clear();
    corrections.clear();
    let (mut e, mut p, mut k) = (0usize, 1.0, 0i64);
    for &v in values {
        let (mut kv, mut c) = scaled(v, p, k);
        // A zigzagged correction above 2 × NEAR_ULPS is more than NEAR_ULPS
        // away. Values no decimal can hold (non-finite, -0.0, magnitudes of
        // 2^53 and more) keep their correction without raising the exponent.
        let decimal = v.is_finite() && v != 0.0 && v.abs() < MAX_SCALED;
        if decimal && c > 2 * NEAR_ULPS {
            while c > 2 * NEAR_ULPS {
                e += 1;
                p = *POW10.get(e)?;
                c = scaled(v, p, k).1;
            }
            // More digits: rescale the values before this one.
            let mut previous = 0;
            for ((slot_k, slot_c), &w) in ks.iter_mut().zip(corrections.iter_mut()).zip(values) {
                (*slot_k, *slot_c) = scaled(w, p, previous);
                previous = *slot_k;
            }
            (kv, c) = scaled(v, p, previous);
        }
        k = kv;
        ks.push(kv);
        corrections.push(c);
    }
    Some(e)
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

/// The residual order with the smallest estimated cost for `ks`, and the
/// histogram of its residuals.
fn best_order(ks: &[i64]) -> (Order, Hist) {
    let min = ks.iter().copied().min().unwrap_or(0);
    let offsets = hist_of(ks.iter().map(|&k| k.wrapping_sub(min) as u64));
    let deltas = hist_of(ks.windows(2).map(|w| match w {
        [a, b] => zigzag(b.wrapping_sub(*a)),
        _ => 0,
    }));
    let second = hist_of(ks.windows(3).map(|w| match w {
        [a, b, c] => zigzag(c.wrapping_sub(*b).wrapping_sub(b.wrapping_sub(*a))),
        _ => 0,
    }));
    let costs = [
        (estimate_bits(&offsets), Order::Offsets, offsets),
        (estimate_bits(&deltas), Order::Deltas, deltas),
        (estimate_bits(&second), Order::DeltasOfDeltas, second),
    ];
    costs.into_iter().min_by(|a, b| a.0.total_cmp(&b.0)).map_or((Order::Deltas, deltas), |(_, order, h)| (order, h))
}

/// Writes the residuals of `ks` in `order` into `out`, and the header
/// values they start from into `starts`.
fn residuals(ks: &[i64], order: Order, out: &mut Vec<u64>, starts: &mut Vec<u8>) {
    out.clear();
    match order {
        Order::Offsets => {
            let min = ks.iter().copied().min().unwrap_or(0);
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

fn encode_block(ts: &[i64], values: &[f64], out: &mut Vec<u8>, s: &mut Scratch) -> Mode {
    let n = ts.len().min(values.len());
    let (ts, values) = (ts.get(..n).unwrap_or_default(), values.get(..n).unwrap_or_default());
    let body = &mut s.body;
    body.clear();

    // Timestamps: first, unit, first step, then deltas of steps in units.
    let first_ts = ts.first().copied().unwrap_or(0);
    put_varint(body, zigzag(first_ts));
    if n >= 2 {
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
        s.zz.clear();
        let mut previous = step(ts.get(..2).unwrap_or_default());
        put_varint(body, unit);
        put_varint(body, zigzag(previous));
        for w in ts.windows(2).skip(1) {
            let q = step(w);
            s.zz.push(zigzag(q.wrapping_sub(previous)));
            previous = q;
        }
        let code = LenCode::build(&hist_of(s.zz.iter().copied()));
        code.write_header(body);
        put_coded(body, &mut s.section, &code, &s.zz);
    }

    // Values: the cheaper of decimal and XOR, compared in exact bits.
    let xor_bits = {
        let mut count = BitCount(0);
        xor_encode(values, &mut count);
        count.0 + 64
    };
    let decimal = scale(values, &mut s.ks, &mut s.corrections).map(|e| {
        let (order, hist) = best_order(&s.ks);
        s.starts.clear();
        residuals(&s.ks, order, &mut s.zz, &mut s.starts);
        let code = LenCode::build(&hist);
        let mut bits = code.cost_bits(&hist) + 8 * (code.header_len() + s.starts.len() + 4) as u64;
        let corrections = if s.corrections.iter().any(|&c| c != 0) {
            let hist = hist_of(s.corrections.iter().copied());
            let code = LenCode::build(&hist);
            bits += code.cost_bits(&hist) + 8 * (code.header_len() + 2) as u64;
            Some(code)
        } else {
            None
        };
        (e, order, code, corrections, bits)
    });
    let mode = match decimal {
        Some((e, order, code, corrections, bits)) if bits < xor_bits => {
            body.push(MODE_DECIMAL);
            body.push(e as u8);
            body.push(order.byte());
            body.extend_from_slice(&s.starts);
            code.write_header(body);
            body.push(u8::from(corrections.is_some()));
            if let Some(c) = &corrections {
                c.write_header(body);
            }
            put_coded(body, &mut s.section, &code, &s.zz);
            if let Some(c) = &corrections {
                put_coded(body, &mut s.section, c, &s.corrections);
            }
            Mode::Decimal
        }
        _ => {
            body.push(MODE_XOR);
            body.extend_from_slice(&values.first().copied().unwrap_or(0.0).to_bits().to_le_bytes());
            put_section(body, &mut s.section, |w| xor_encode(values, w));
            Mode::Xor
        }
    };

    out.push(BLOCK_TAG);
    put_varint(out, n as u64);
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
    mode
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
        if lead != u32::MAX && lz >= lead && tz >= trail {
            sink.put(0b01, 2);
            sink.put(x >> trail, 64 - lead - trail);
        } else {
            let len = 64 - lz - tz;
            sink.put(0b11, 2);
            sink.put(u64::from(lz), 6);
            sink.put(u64::from(len - 1), 6);
            sink.put(x >> tz, len);
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
        let mut q = unzigzag(varint(body)?);
        let code = LenCode::read_header(body).ok_or(header("timestamp code"))?;
        let section = take_section(body, block)?;
        t = t.wrapping_add(q.wrapping_mul(unit));
        ts.push(t);
        let complete = decode_into(&code, section, grow(ts, n - 2), |dod| {
            q = q.wrapping_add(unzigzag(dod));
            t = t.wrapping_add(q.wrapping_mul(unit));
            t
        });
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
            let mut k = unzigzag(varint(body)?);
            let mut d = match order {
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
            let mut next = || decoder.next(&mut reader);
            // The scaled integers: up to two from the header, then the stream.
            let heads = match order {
                Order::Offsets => 0,
                Order::Deltas => 1,
                Order::DeltasOfDeltas => 2,
            };
            let mut i = 0;
            let mut next_k = || {
                i += 1;
                match order {
                    Order::Offsets => k.wrapping_add(next() as i64),
                    Order::Deltas if i > heads => {
                        k = k.wrapping_add(unzigzag(next()));
                        k
                    }
                    Order::DeltasOfDeltas if i > heads => {
                        d = d.wrapping_add(unzigzag(next()));
                        k = k.wrapping_add(d);
                        k
                    }
                    Order::DeltasOfDeltas if i == 2 => {
                        k = k.wrapping_add(d);
                        k
                    }
                    _ => k,
                }
            };
            // Values and corrections decode in one loop: two independent
            // bit streams the processor works on side by side.
            let complete = match &corrections {
                Some(code) => {
                    let decoder = code.decoder();
                    let mut reader = BitReader::new(correction_section);
                    for slot in out.iter_mut() {
                        let exact = (next_k() as f64 / p).to_bits();
                        *slot = f64::from_bits(exact.wrapping_add(unzigzag(decoder.next(&mut reader)) as u64));
                    }
                    !reader.overrun()
                }
                None => {
                    for slot in out.iter_mut() {
                        *slot = next_k() as f64 / p;
                    }
                    true
                }
            };
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

/// Appends `n` default values to `v` and returns them, to be overwritten
/// (no per-value capacity checks in the decoding loops).
fn grow<T: Default + Clone>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    let start = v.len();
    v.resize(start + n, T::default());
    v.get_mut(start..).unwrap_or_default()
}

/// Decodes one value of `code` from `section` per slot of `out`, mapped by
/// `f`; returns whether the section held them all. The reader lives in
/// this function so that its state stays in registers.
#[inline(always)]
fn decode_into<T>(code: &LenCode, section: &[u8], out: &mut [T], mut f: impl FnMut(u64) -> T) -> bool {
    let mut reader = BitReader::new(section);
    match code.single() {
        // Every value is 0 (a regular series' timestamps): no bits to read.
        Some(0) => out.iter_mut().for_each(|slot| *slot = f(0)),
        // Every value has the same bit length: its bits below the leading one.
        Some(b) => {
            let lead = 1u64 << (b - 1);
            out.iter_mut().for_each(|slot| *slot = f(lead | reader.read(b - 1)));
        }
        None => {
            let decoder = code.decoder();
            out.iter_mut().for_each(|slot| *slot = f(decoder.next(&mut reader)));
        }
    }
    !reader.overrun()
}

fn xor_decode(reader: &mut BitReader<'_>, first: u64, n: usize, values: &mut Vec<f64>) {
    let mut previous = first;
    values.push(f64::from_bits(previous));
    let (mut lead, mut trail) = (0u32, 0u32);
    for _ in 1..n {
        if reader.read_short(1) == 1 {
            if reader.read_short(1) == 1 {
                lead = reader.read_short(6) as u32;
                let len = reader.read_short(6) as u32 + 1;
                // A corrupt window (lead + len > 64) is clamped, not trusted.
                trail = 64u32.saturating_sub(lead + len);
                let len = 64 - lead.min(64) - trail;
                previous ^= reader.read(len).checked_shl(trail).unwrap_or(0);
            } else {
                let len = 64u32.saturating_sub(lead + trail);
                previous ^= reader.read(len).checked_shl(trail).unwrap_or(0);
            }
        }
        values.push(f64::from_bits(previous));
    }
}

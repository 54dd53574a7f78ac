//! An entropy code for unsigned integers: each value is written as a
//! Huffman code of its bit length, then its bits below the leading one.
//!
//! A value `v` of bit length `b` (`b = 0` for 0) costs `len(b) + max(b - 1, 0)`
//! bits. Codes are canonical and at most [`MAX_CODE`] bits long, so the
//! decoder is one lookup in a 256-entry table per value. A block with a
//! single bit length `b` has an empty code: each value costs its `b - 1`
//! low bits, and nothing at all for zeros (timestamps that never change
//! step).

use smallvec::{SmallVec, smallvec};

use crate::delta::bits::{BitReader, bit_len, take_u8};

/// Longest code, in bits.
pub(crate) const MAX_CODE: u32 = 8;
const TABLE: usize = 1 << MAX_CODE;
/// Bit lengths 0..=64.
pub(crate) const SYMBOLS: usize = 65;
/// Nodes of a Huffman tree over [`SYMBOLS`] leaves.
const NODES: usize = 2 * SYMBOLS - 1;

/// Histogram of bit lengths.
pub(crate) type Hist = [u64; SYMBOLS];

pub(crate) fn hist_of(values: impl Iterator<Item = u64>) -> Hist {
    // Four interleaved histograms: runs of equal bit lengths (the common
    // case) would otherwise make each increment wait for the previous one.
    let mut parts = [[0u32; SYMBOLS]; 4];
    for (i, v) in values.enumerate() {
        if let Some(h) = parts.get_mut(i % 4).and_then(|p| p.get_mut(bit_len(v) as usize)) {
            *h += 1;
        }
    }
    sum_parts(&parts)
}

/// The histogram of several partial counts (kept apart so that runs of
/// equal lengths do not make each increment wait for the previous one).
pub(crate) fn sum_parts<'a>(parts: impl IntoIterator<Item = &'a [u32; SYMBOLS]>) -> Hist {
    let mut hist = [0u64; SYMBOLS];
    for part in parts {
        for (h, &p) in hist.iter_mut().zip(part) {
            *h += u64::from(p);
        }
    }
    hist
}

/// Bits below the leading one of a value of bit length `b`.
fn mantissa(b: usize) -> u64 {
    b.saturating_sub(1) as u64
}

/// An estimate of the bits [`LenCode`] spends on values with histogram
/// `hist` (the entropy of the lengths plus the mantissas, plus a header),
/// cheap enough to compare candidate streams before building a code.
pub(crate) fn estimate_bits(hist: &Hist) -> f64 {
    let n: u64 = hist.iter().sum();
    if n == 0 {
        return 16.0;
    }
    let mut bits = 16.0;
    for (b, &h) in hist.iter().enumerate() {
        if h > 0 {
            let p = h as f64 / n as f64;
            bits += h as f64 * (-p.log2() + mantissa(b) as f64) + 4.0;
        }
    }
    bits
}

/// A canonical Huffman code over bit lengths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LenCode {
    /// Code length per symbol (0: absent, or the only symbol).
    lengths: [u8; SYMBOLS],
    /// Smallest and largest symbol present.
    min: u8,
    max: u8,
    /// Bit-reversed canonical code per symbol, for the LSB-first writer.
    codes: [u16; SYMBOLS],
}

impl LenCode {
    /// The code for values with histogram `hist`.
    pub(crate) fn build(hist: &Hist) -> LenCode {
        let present: SmallVec<[usize; SYMBOLS]> =
            (0..SYMBOLS).filter(|&b| hist.get(b).is_some_and(|&h| h > 0)).collect();
        let mut lengths = [0u8; SYMBOLS];
        let (min, max) = match (present.first(), present.last()) {
            (Some(&lo), Some(&hi)) => (lo as u8, hi as u8),
            _ => (0, 0),
        };
        if present.len() >= 2 {
            let mut weights: SmallVec<[u64; SYMBOLS]> =
                present.iter().map(|&b| hist.get(b).copied().unwrap_or(1)).collect();
            loop {
                let depths = huffman_depths(&weights);
                if depths.iter().all(|&d| d <= MAX_CODE) {
                    for (&b, &d) in present.iter().zip(&depths) {
                        if let Some(l) = lengths.get_mut(b) {
                            *l = d as u8;
                        }
                    }
                    break;
                }
                // Too deep: flatten the weights and try again (converges:
                // equal weights give depths of at most 7 for 65 symbols).
                for w in &mut weights {
                    *w = (*w >> 1) | 1;
                }
            }
        }
        let mut code = LenCode { lengths, min, max, codes: [0; SYMBOLS] };
        code.assign_codes();
        code
    }

    /// Canonical codes from the lengths, bit-reversed.
    fn assign_codes(&mut self) {
        let mut order: SmallVec<[usize; SYMBOLS]> =
            (0..SYMBOLS).filter(|&b| self.lengths.get(b).is_some_and(|&l| l > 0)).collect();
        order.sort_by_key(|&b| (self.lengths.get(b).copied().unwrap_or(0), b));
        let mut next = 0u32;
        let mut previous = 0u32;
        for b in order {
            let len = u32::from(self.lengths.get(b).copied().unwrap_or(0));
            next <<= len - previous;
            previous = len;
            if let Some(c) = self.codes.get_mut(b) {
                *c = (next.reverse_bits() >> (32 - len)) as u16;
            }
            next += 1;
        }
    }

    /// Exact payload bits for values with histogram `hist`.
    pub(crate) fn cost_bits(&self, hist: &Hist) -> u64 {
        hist.iter().zip(&self.lengths).enumerate().map(|(b, (&h, &l))| h * (u64::from(l) + mantissa(b))).sum()
    }

    /// Header: `min`, `max`, then for `min < max` one nibble per symbol in
    /// between (its code length, 0 when absent), two per byte.
    pub(crate) fn header_len(&self) -> usize {
        2 + if self.min < self.max { (usize::from(self.max - self.min) + 2) / 2 } else { 0 }
    }

    pub(crate) fn write_header(&self, out: &mut Vec<u8>) {
        out.push(self.min);
        out.push(self.max);
        if self.min < self.max {
            let lengths = self.lengths.get(usize::from(self.min)..=usize::from(self.max)).unwrap_or_default();
            for pair in lengths.chunks(2) {
                let lo = pair.first().copied().unwrap_or(0);
                let hi = pair.get(1).copied().unwrap_or(0);
                out.push(lo | (hi << 4));
            }
        }
    }

    /// Reads a header, checking that it describes a complete code.
    pub(crate) fn read_header(input: &mut &[u8]) -> Option<LenCode> {
        let min = take_u8(input)?;
        let max = take_u8(input)?;
        if usize::from(max) >= SYMBOLS || min > max {
            return None;
        }
        let mut lengths = [0u8; SYMBOLS];
        if min < max {
            let count = usize::from(max - min) + 1;
            let mut kraft = 0u32;
            for i in 0..count.div_ceil(2) {
                let byte = take_u8(input)?;
                for (j, nibble) in [byte & 0x0f, byte >> 4].into_iter().enumerate() {
                    let b = usize::from(min) + 2 * i + j;
                    if 2 * i + j >= count {
                        if nibble != 0 {
                            return None;
                        }
                        continue;
                    }
                    if u32::from(nibble) > MAX_CODE {
                        return None;
                    }
                    if nibble > 0 {
                        kraft += 1 << (MAX_CODE - u32::from(nibble));
                    }
                    *lengths.get_mut(b)? = nibble;
                }
            }
            let ends_present = lengths.get(usize::from(min)) != Some(&0) && lengths.get(usize::from(max)) != Some(&0);
            if kraft != TABLE as u32 || !ends_present {
                return None;
            }
        }
        let mut code = LenCode { lengths, min, max, codes: [0; SYMBOLS] };
        code.assign_codes();
        Some(code)
    }

    /// Writes `v`: its length's code, then the bits below its leading one,
    /// in one write when they fit 64 bits.
    #[inline(always)]
    pub(crate) fn put(&self, v: u64, sink: &mut impl super::series::BitSink) {
        let b = bit_len(v);
        let len = u32::from(self.lengths.get(b as usize).copied().unwrap_or(0));
        let code = u64::from(self.codes.get(b as usize).copied().unwrap_or(0));
        let m = b.saturating_sub(1);
        let low = v & ((1u64 << m) - 1);
        if len + m <= 64 {
            sink.put(code | (low << len), len + m);
        } else {
            sink.put(code, len);
            sink.put(low, m);
        }
    }

    /// The bit length of every value, when there is only one (its code is
    /// empty).
    pub(crate) fn single(&self) -> Option<u32> {
        (self.min == self.max).then_some(u32::from(self.min))
    }

    /// The decoding table.
    pub(crate) fn decoder(&self) -> LenDecoder {
        let mut table = [0u16; TABLE];
        if self.min == self.max {
            table = [u16::from(self.min); TABLE];
        } else {
            for b in usize::from(self.min)..=usize::from(self.max) {
                let len = u32::from(self.lengths.get(b).copied().unwrap_or(0));
                if len == 0 {
                    continue;
                }
                let code = usize::from(self.codes.get(b).copied().unwrap_or(0));
                for fill in 0..1usize << (MAX_CODE - len) {
                    if let Some(slot) = table.get_mut(code | (fill << len)) {
                        *slot = (b as u16) | ((len as u16) << 8);
                    }
                }
            }
        }
        LenDecoder { table }
    }
}

/// Table-driven decoder of a [`LenCode`].
pub(crate) struct LenDecoder {
    /// Per 8-bit window: symbol in the low byte, code length in the high.
    table: [u16; TABLE],
}

impl LenDecoder {
    #[inline(always)]
    pub(crate) fn next(&self, reader: &mut BitReader<'_>) -> u64 {
        if reader.held() < 56 {
            reader.refill();
        }
        let acc = reader.bits();
        let entry = self.table.get((acc & (TABLE as u64 - 1)) as usize).copied().unwrap_or(0);
        let (b, len) = (u32::from(entry & 0xff), u32::from(entry >> 8));
        // The leading one (none for 0), then the `m` bits below it.
        let m = b.saturating_sub(1);
        let lead = u64::from(b != 0) << m;
        if len + m <= reader.held() {
            // Code and mantissa both held (always, for mantissas up to 48
            // bits away from the end of the data): one shift and mask.
            reader.consume(len + m);
            lead | ((acc >> len) & ((1u64 << m) - 1))
        } else {
            reader.skip(len);
            lead | reader.read(m)
        }
    }
}

/// Huffman code lengths for `weights` (two or more, all positive), by the
/// two-queue method on weights sorted ascending.
fn huffman_depths(weights: &[u64]) -> SmallVec<[u32; SYMBOLS]> {
    let k = weights.len();
    let mut order: SmallVec<[usize; SYMBOLS]> = (0..k).collect();
    order.sort_by_key(|&i| weights.get(i).copied().unwrap_or(0));
    // Nodes 0..k are the sorted leaves, k.. the internal nodes in creation
    // order; a parent is always created after its children.
    let mut weight: SmallVec<[u64; NODES]> = order.iter().map(|&i| weights.get(i).copied().unwrap_or(0)).collect();
    let mut parent: SmallVec<[usize; NODES]> = smallvec![0usize; 2 * k - 1];
    let (mut leaf, mut internal) = (0usize, k);
    let take = |weight: &[u64], leaf: &mut usize, internal: &mut usize| {
        let from_leaf = *leaf < k && (*internal >= weight.len() || weight.get(*leaf) <= weight.get(*internal));
        if from_leaf {
            *leaf += 1;
            *leaf - 1
        } else {
            *internal += 1;
            *internal - 1
        }
    };
    for node in k..2 * k - 1 {
        let a = take(&weight, &mut leaf, &mut internal);
        let b = take(&weight, &mut leaf, &mut internal);
        let w = weight.get(a).copied().unwrap_or(0).saturating_add(weight.get(b).copied().unwrap_or(0));
        weight.push(w);
        for child in [a, b] {
            if let Some(p) = parent.get_mut(child) {
                *p = node;
            }
        }
    }
    let mut depth: SmallVec<[u32; NODES]> = smallvec![0u32; 2 * k - 1];
    for node in (0..2 * k - 2).rev() {
        let d = parent.get(node).and_then(|&p| depth.get(p)).copied().unwrap_or(0) + 1;
        if let Some(slot) = depth.get_mut(node) {
            *slot = d;
        }
    }
    let mut result: SmallVec<[u32; SYMBOLS]> = smallvec![0u32; k];
    for (sorted, &original) in order.iter().enumerate() {
        if let Some(r) = result.get_mut(original) {
            *r = depth.get(sorted).copied().unwrap_or(0);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::bits::BitWriter;

    fn round_trip(values: &[u64]) -> usize {
        let hist = hist_of(values.iter().copied());
        let code = LenCode::build(&hist);
        let mut header = Vec::new();
        code.write_header(&mut header);
        assert_eq!(header.len(), code.header_len());
        let read = LenCode::read_header(&mut &header[..]).unwrap();
        assert_eq!(read, code);
        let bits = code.cost_bits(&hist);
        let mut out = vec![0u8; BitWriter::room(bits)];
        let mut w = BitWriter::new(&mut out);
        for &v in values {
            code.put(v, &mut w);
        }
        let len = w.finish().expect("cost_bits is exact");
        out.truncate(len);
        assert_eq!(len as u64, bits.div_ceil(8));
        let decoder = read.decoder();
        let mut r = BitReader::new(&out);
        for &v in values {
            assert_eq!(decoder.next(&mut r), v);
        }
        assert!(!r.overrun());
        out.len()
    }

    #[test]
    fn codes_round_trip() {
        round_trip(&[]);
        round_trip(&[0; 100]);
        assert_eq!(round_trip(&[5; 100]), 25, "one length: only the two low bits");
        round_trip(&[0, 1, 2, 3, u64::MAX, 1 << 63, 7, 0, 0, 0]);
        // Skewed frequencies that a plain Huffman code would make deeper than 8.
        let mut skewed = Vec::new();
        for b in 0..40u32 {
            for _ in 0..(1u64 << (b / 3)).min(5_000) {
                skewed.push(if b == 0 { 0 } else { 1u64 << (b - 1) });
            }
        }
        round_trip(&skewed);
    }

    #[test]
    fn incomplete_or_oversized_headers_are_refused() {
        assert!(LenCode::read_header(&mut &[0, 65][..]).is_none());
        assert!(LenCode::read_header(&mut &[3, 1][..]).is_none());
        // Two symbols of length 2: Kraft sum 1/2, incomplete.
        assert!(LenCode::read_header(&mut &[0, 1, 0x22][..]).is_none());
        assert!(LenCode::read_header(&mut &[0, 1, 0x11][..]).is_some());
        assert!(LenCode::read_header(&mut &[0, 1, 0x9f][..]).is_none());
    }
}

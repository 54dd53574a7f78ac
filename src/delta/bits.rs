//! Bit-level writer and reader (least significant bit first), and the
//! varint and zigzag helpers of the series codec.

/// Writes bits into a byte slice sized beforehand, least significant bit
/// first.
///
/// Every write stores the whole 64-bit accumulator at the current byte and
/// then moves past the bytes it completed, so the loop has no branch on
/// whether a word filled up; the slice needs 8 bytes of room past the last
/// bit. A slice too short is not written past: [`BitWriter::finish`] says
/// so.
#[derive(Debug)]
pub(crate) struct BitWriter<'a> {
    out: &'a mut [u8],
    /// The byte `acc` starts at.
    pos: usize,
    acc: u64,
    /// Bits held in `acc`, 0..8 between writes.
    held: u32,
    overflow: bool,
}

impl<'a> BitWriter<'a> {
    /// A writer into `out`, which must hold the bits to come plus 8 bytes.
    pub(crate) fn new(out: &'a mut [u8]) -> Self {
        BitWriter { out, pos: 0, acc: 0, held: 0, overflow: false }
    }

    /// The size of slice [`BitWriter::new`] needs for `bits` bits.
    pub(crate) fn room(bits: u64) -> usize {
        usize::try_from(bits.div_ceil(8)).unwrap_or(usize::MAX).saturating_add(8)
    }

    /// Writes the low `bits` bits of `value` (`bits <= 64`); its bits above
    /// them must be zero.
    #[inline(always)]
    pub(crate) fn write(&mut self, value: u64, bits: u32) {
        debug_assert!(bits <= 64 && value.checked_shr(bits).unwrap_or(0) == 0);
        // Inline both ways: a call would keep the writer in memory.
        if bits > 56 {
            self.write_word(value & 0xffff_ffff, 32);
            self.write_word(value >> 32, bits - 32);
        } else {
            self.write_word(value, bits);
        }
    }

    /// [`BitWriter::write`] of at most 56 bits: with at most 7 held, the
    /// accumulator never overflows.
    #[inline(always)]
    fn write_word(&mut self, value: u64, bits: u32) {
        self.acc |= value << self.held;
        self.held += bits;
        match self.out.get_mut(self.pos..self.pos + 8) {
            Some(word) => word.copy_from_slice(&self.acc.to_le_bytes()),
            None => self.overflow = true,
        }
        let done = self.held / 8;
        self.pos += done as usize;
        // At most 56: `done` is at most 7.
        self.acc >>= done * 8;
        self.held -= done * 8;
    }

    /// Writes the last partial byte (zero-padded); returns the bytes
    /// written, or `None` when the slice was too short for them.
    pub(crate) fn finish(mut self) -> Option<usize> {
        self.write_word(0, 0);
        (!self.overflow).then_some(self.pos + self.held.div_ceil(8) as usize)
    }
}

/// Reads bits written by [`BitWriter`]. Reading past the end yields zero
/// bits and sets [`BitReader::overrun`], so hot loops need no bounds checks
/// and the caller checks once at the end.
#[derive(Debug)]
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte to load into `acc`.
    pos: usize,
    acc: u64,
    /// Valid bits in `acc`.
    held: u32,
    /// Bits consumed past the end of `data`.
    overrun: bool,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0, acc: 0, held: 0, overrun: false }
    }

    /// Loads bytes until at least 56 bits are held (fewer only at the end
    /// of the data). Bits above `held` in `acc` are already the stream's
    /// next bits, so loading them again is harmless.
    #[inline(always)]
    pub(crate) fn refill(&mut self) {
        if let Some(word) = self.data.get(self.pos..self.pos + 8) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            self.acc |= u64::from_le_bytes(bytes) << self.held;
            let take = (63 - self.held) / 8;
            self.pos += take as usize;
            self.held += take * 8;
        } else {
            self.refill_tail();
        }
    }

    /// [`BitReader::refill`] within the last eight bytes.
    #[cold]
    fn refill_tail(&mut self) {
        while self.held <= 55 {
            let Some(&byte) = self.data.get(self.pos) else { break };
            self.acc |= u64::from(byte) << self.held;
            self.pos += 1;
            self.held += 8;
        }
    }

    /// The bits held, for a caller that reads several fields from one
    /// [`BitReader::refill`]: the low [`BitReader::held`] bits are valid.
    #[inline(always)]
    pub(crate) fn bits(&self) -> u64 {
        self.acc
    }

    /// How many bits [`BitReader::bits`] holds (at most 63).
    #[inline(always)]
    pub(crate) fn held(&self) -> u32 {
        self.held
    }

    /// Drops `bits <= held()` bits already read through [`BitReader::bits`].
    #[inline(always)]
    pub(crate) fn consume(&mut self, bits: u32) {
        debug_assert!(bits <= self.held && bits < 64);
        self.acc >>= bits;
        self.held -= bits;
    }

    /// Reads `bits <= 56` bits.
    #[inline(always)]
    pub(crate) fn read_short(&mut self, bits: u32) -> u64 {
        if self.held < bits {
            self.refill();
            if self.held < bits {
                // Past the end: the missing bits read as zero.
                self.overrun = true;
                self.held = bits;
            }
        }
        let value = self.acc & ((1u64 << bits) - 1);
        self.acc >>= bits;
        self.held -= bits;
        value
    }

    /// Consumes `bits <= 56` bits.
    #[inline(always)]
    pub(crate) fn skip(&mut self, bits: u32) {
        self.read_short(bits);
    }

    /// Reads `bits <= 64` bits.
    #[inline(always)]
    pub(crate) fn read(&mut self, bits: u32) -> u64 {
        if bits <= 56 {
            self.read_short(bits)
        } else {
            let low = self.read_short(32);
            low | (self.read_short(bits - 32) << 32)
        }
    }

    /// Whether any read went past the end of the data.
    pub(crate) fn overrun(&self) -> bool {
        self.overrun
    }
}

#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Bits needed to write `v` (0 for 0).
#[inline]
pub(crate) fn bit_len(v: u64) -> u32 {
    64 - v.leading_zeros()
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 varint from the front of `input`, advancing it.
pub(crate) fn take_varint(input: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for (i, &byte) in input.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        if i == 9 && bits > 1 {
            return None; // more than 64 bits
        }
        v |= bits << (7 * i);
        if byte & 0x80 == 0 {
            *input = input.get(i + 1..)?;
            return Some(v);
        }
    }
    None
}

pub(crate) fn take_u8(input: &mut &[u8]) -> Option<u8> {
    let (&first, rest) = input.split_first()?;
    *input = rest;
    Some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_at_every_width_and_alignment() {
        let mut out = vec![0u8; BitWriter::room(65 * 64 * 3)];
        let mut w = BitWriter::new(&mut out);
        let mut expected = Vec::new();
        for bits in 0..=64u32 {
            for pattern in [u64::MAX, 0x0123_4567_89ab_cdef, 1] {
                let v = if bits == 64 { pattern } else { pattern & ((1u64 << bits) - 1) };
                w.write(v, bits);
                expected.push((v, bits));
            }
        }
        let len = w.finish().unwrap();
        out.truncate(len);
        let mut r = BitReader::new(&out);
        for (v, bits) in expected {
            assert_eq!(r.read(bits), v, "{bits} bits");
        }
        assert!(!r.overrun());
        r.read(16);
        assert!(r.overrun());
    }

    #[test]
    fn a_short_slice_is_reported_not_overrun() {
        let mut out = [0u8; 9];
        let mut w = BitWriter::new(&mut out);
        w.write(u64::MAX, 64);
        w.write(1, 1);
        assert_eq!(w.finish(), None);
        let mut out = [0u8; 17];
        let mut w = BitWriter::new(&mut out);
        w.write(u64::MAX, 64);
        w.write(1, 1);
        assert_eq!(w.finish(), Some(9));
    }

    #[test]
    fn varints_and_zigzag() {
        for v in [0, 1, 127, 128, 300, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut s = &out[..];
            assert_eq!(take_varint(&mut s), Some(v));
            assert!(s.is_empty());
        }
        assert_eq!(take_varint(&mut &[0xff; 11][..]), None);
        assert_eq!(take_varint(&mut &[0x80][..]), None);
        for v in [0, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }
}

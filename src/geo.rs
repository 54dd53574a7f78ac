//! Geohash cells, for heatmap grouping and geo correlation.
//!
//! A geohash names a cell of the latitude/longitude grid with 1 to 12
//! base-32 characters; each character splits the cell in 32, so precision
//! 5 is about 5 km × 5 km and precision 7 about 150 m × 150 m. Cells that
//! share a prefix are inside one another.
//!
//! ```
//! use edgestream::geo::Geohash;
//!
//! let cell = Geohash::encode(57.64911, 10.40744, 11).unwrap();
//! assert_eq!(cell.as_str(), "u4pruydqqvj");
//! ```

use core::fmt;

const BASE32: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";

/// The longest geohash this module produces.
pub const MAX_PRECISION: u8 = 12;

/// A geohash of 1 to 12 characters, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Geohash {
    bytes: [u8; MAX_PRECISION as usize],
    len: u8,
}

impl Geohash {
    /// The cell of `precision` characters (clamped to 1..=12) containing
    /// (`lat`, `lon`) in degrees, or `None` for a point that is not finite
    /// or outside ±90° / ±180°.
    pub fn encode(lat: f64, lon: f64, precision: u8) -> Option<Geohash> {
        if !((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)) {
            return None;
        }
        let len = precision.clamp(1, MAX_PRECISION);
        let (mut lat_range, mut lon_range) = ((-90.0f64, 90.0f64), (-180.0f64, 180.0f64));
        let mut bytes = [0u8; MAX_PRECISION as usize];
        let mut even = true; // bits alternate, starting with longitude
        for slot in bytes.iter_mut().take(len as usize) {
            let mut index = 0usize;
            for _ in 0..5 {
                let (range, value) = if even { (&mut lon_range, lon) } else { (&mut lat_range, lat) };
                let mid = (range.0 + range.1) / 2.0;
                index <<= 1;
                if value >= mid {
                    index |= 1;
                    range.0 = mid;
                } else {
                    range.1 = mid;
                }
                even = !even;
            }
            *slot = BASE32.get(index).copied().unwrap_or(b'0');
        }
        Some(Geohash { bytes, len })
    }

    /// The geohash text.
    pub fn as_str(&self) -> &str {
        // Only ASCII from BASE32 is ever stored.
        core::str::from_utf8(self.bytes.get(..self.len as usize).unwrap_or_default()).unwrap_or_default()
    }

    /// Number of characters.
    pub fn precision(&self) -> u8 {
        self.len
    }

    /// Parses a geohash of 1 to 12 characters of the geohash alphabet
    /// (lowercase; uppercase is accepted and lowered).
    pub fn parse(text: &str) -> Option<Geohash> {
        let len = u8::try_from(text.len()).ok().filter(|l| (1..=MAX_PRECISION).contains(l))?;
        let mut bytes = [0u8; MAX_PRECISION as usize];
        for (slot, b) in bytes.iter_mut().zip(text.bytes()) {
            let b = b.to_ascii_lowercase();
            digit(b)?;
            *slot = b;
        }
        Some(Geohash { bytes, len })
    }

    /// The cell's column and row in the grid of its precision: `x` counts
    /// cells eastward from 180° W, `y` northward from 90° S.
    pub fn grid(&self) -> (u32, u32) {
        let (mut x, mut y) = (0u32, 0u32);
        let mut even = true;
        for &b in self.bytes.iter().take(self.len as usize) {
            let d = digit(b).unwrap_or(0);
            for shift in (0..5).rev() {
                let bit = u32::from((d >> shift) & 1);
                if even {
                    x = (x << 1) | bit;
                } else {
                    y = (y << 1) | bit;
                }
                even = !even;
            }
        }
        (x, y)
    }

    /// Columns and rows of the grid at this precision.
    fn grid_size(&self) -> (u32, u32) {
        let bits = 5 * u32::from(self.len);
        (1 << bits.div_ceil(2), 1 << (bits / 2))
    }

    /// Whether `other` is a different cell of the same precision that
    /// touches this one by a side or a corner (across the 180° meridian
    /// too).
    pub fn is_neighbour(&self, other: &Geohash) -> bool {
        if self.len != other.len || self == other {
            return false;
        }
        let ((x1, y1), (x2, y2)) = (self.grid(), other.grid());
        let (columns, _) = self.grid_size();
        let dx = x1.abs_diff(x2);
        y1.abs_diff(y2) <= 1 && (dx <= 1 || dx == columns - 1)
    }

    /// The cells touching this one by a side or a corner: eight, fewer
    /// next to a pole (or when the grid is narrower than three cells).
    pub fn neighbours(&self) -> impl Iterator<Item = Geohash> + use<> {
        let (x, y) = self.grid();
        let (columns, rows) = self.grid_size();
        let len = self.len;
        let mut seen: [Option<(u32, u32)>; 8] = [None; 8];
        let mut n = 0;
        for dy in [-1i64, 0, 1] {
            for dx in [-1i64, 0, 1] {
                let row = i64::from(y) + dy;
                if (dx, dy) == (0, 0) || row < 0 || row >= i64::from(rows) {
                    continue;
                }
                let column = (i64::from(x) + dx).rem_euclid(i64::from(columns));
                let cell = (column as u32, row as u32);
                if cell != (x, y) && !seen.iter().flatten().any(|c| *c == cell) {
                    if let Some(slot) = seen.get_mut(n) {
                        *slot = Some(cell);
                    }
                    n += 1;
                }
            }
        }
        seen.into_iter().flatten().map(move |(column, row)| Geohash::from_grid(column, row, len))
    }

    fn from_grid(x: u32, y: u32, len: u8) -> Geohash {
        let bits = 5 * u32::from(len);
        let (mut xbits, mut ybits) = (bits.div_ceil(2), bits / 2);
        let mut bytes = [0u8; MAX_PRECISION as usize];
        let mut even = true;
        for slot in bytes.iter_mut().take(len as usize) {
            let mut index = 0usize;
            for _ in 0..5 {
                let bit = if even {
                    xbits -= 1;
                    (x >> xbits) & 1
                } else {
                    ybits -= 1;
                    (y >> ybits) & 1
                };
                index = (index << 1) | bit as usize;
                even = !even;
            }
            *slot = BASE32.get(index).copied().unwrap_or(b'0');
        }
        Geohash { bytes, len }
    }
}

/// The value of a geohash character.
fn digit(b: u8) -> Option<u8> {
    BASE32.iter().position(|&c| c == b).and_then(|i| u8::try_from(i).ok())
}

impl fmt::Display for Geohash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for Geohash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Geohash({:?})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_cells() {
        assert_eq!(Geohash::encode(42.6, -5.6, 5).unwrap().as_str(), "ezs42");
        assert_eq!(Geohash::encode(57.64911, 10.40744, 11).unwrap().as_str(), "u4pruydqqvj");
        assert_eq!(Geohash::encode(-33.8688, 151.2093, 4).unwrap().as_str(), "r3gx");
        assert_eq!(Geohash::encode(0.0, 0.0, 1).unwrap().as_str(), "s");
        assert_eq!(Geohash::encode(90.0, 180.0, 3).unwrap().as_str(), "zzz");
        assert_eq!(Geohash::encode(-90.0, -180.0, 3).unwrap().as_str(), "000");
    }

    #[test]
    fn precision_is_clamped_and_bad_points_refused() {
        assert_eq!(Geohash::encode(1.0, 1.0, 0).unwrap().precision(), 1);
        assert_eq!(Geohash::encode(1.0, 1.0, 40).unwrap().precision(), 12);
        assert_eq!(Geohash::encode(91.0, 0.0, 5), None);
        assert_eq!(Geohash::encode(0.0, f64::NAN, 5), None);
    }

    #[test]
    fn longer_cells_refine_shorter_ones() {
        let long = Geohash::encode(48.8566, 2.3522, 12).unwrap();
        for p in 1..12 {
            assert!(long.as_str().starts_with(Geohash::encode(48.8566, 2.3522, p).unwrap().as_str()));
        }
    }
}

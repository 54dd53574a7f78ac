//! Compact encodings of changing data.
//!
//! - [`series`]: a lossless, streaming codec for `(timestamp, f64)`
//!   series: delta-of-delta timestamps in any unit, and per block the
//!   smaller of Gorilla XOR floats or scaled decimal integers.

mod bits;
mod lencode;
pub mod series;

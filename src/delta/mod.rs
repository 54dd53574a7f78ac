//! Compact encodings of changing data.
//!
//! - [`board`]: dashboard state as a tile board per topic: deltas of the
//!   tiles that changed, with sequence numbers; a client [`board::Replica`]
//!   that detects gaps and silent divergence and asks for a snapshot;
//!   conflation for slow subscribers; Protobuf and JSON frames, which also
//!   carry alert events, window results and raw events.
//! - [`series`]: a lossless, streaming codec for `(timestamp, f64)`
//!   series: delta-of-delta timestamps in any unit, and per block the
//!   smaller of Gorilla XOR floats or scaled decimal integers.

mod bits;
pub mod board;
mod frames;
mod lencode;
pub mod series;

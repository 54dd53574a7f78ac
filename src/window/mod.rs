//! Event-time tumbling windows.
//!
//! [`Windows`] aggregates validated batches into tumbling windows keyed by
//! (tenant, stream, group-by dims), closes them with a watermark, accepts
//! late events within an allowed lateness (re-emitting the window as a
//! correction), counts and returns the events too late for that, and caps
//! the live groups per tenant with an overflow group. [`agg`] holds the
//! mergeable aggregate states it keeps, usable on their own (for example to
//! merge partial aggregates from several Durable Objects).
//!
//! Still to come in this module: rollups and range queries.

pub mod agg;
mod tumbling;

pub use tumbling::{
    EmitMode, FieldResult, FieldSpec, OVERFLOW, SnapshotError, SpecError, WindowResult, WindowSpec, WindowStats,
    Windows,
};

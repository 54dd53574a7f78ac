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
//! [`Rollup`] merges final window results into coarser tiers (1 min, 1 h,
//! 1 day by default), keeps each for its retention, and answers range
//! [`Query`]s.

pub mod agg;
mod resolved;
mod rollup;
mod slab;
mod tumbling;

pub use resolved::ResolvedBatch;
pub use rollup::{Point, Query, QueryResult, Rollup, RollupError, RollupSpec, RollupStats, Series, TierSpec};

pub use tumbling::{
    EmitMode, FieldResult, FieldSpec, GroupHandle, GroupKey, OVERFLOW, Placement, PushError, SnapshotError, SpecError,
    WindowResult, WindowSpec, WindowStats, Windows,
};

//! Event-time windows: tumbling windows keyed by (tenant, stream, group),
//! watermarks, lateness and rollups are being built here; the
//! [`agg`] module, the mergeable per-window aggregate states they keep, is
//! ready and usable on its own (for example to merge partial aggregates
//! from several Durable Objects).

pub mod agg;

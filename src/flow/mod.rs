//! Backpressure policies: pure, clock-free code (the caller passes `now`)
//! that decides what to admit, and counts every decision.
//!
//! - [`Gcra`] is a generic cell rate algorithm limiter (rate and burst, a
//!   cost per request so a batch of N events is charged N cells, a
//!   retry-after for HTTP 429), and [`RateLimiter`] keeps one per tenant
//!   (or any key) in a bounded store.
//! - [`LocalQueue`] (single-threaded, for the edge) and [`SharedQueue`]
//!   (for native hosts: lock-free on `crossbeam` unless it conflates) are
//!   bounded in items and bytes, with an explicit [`Overflow`] policy; every item they give up
//!   is handed back and counted in [`QueueStats`].
//! - [`CircuitBreaker`] guards a downstream sink: closed, open after a
//!   failure ratio, half-open with trial calls after a cooldown.
//! - [`FidelityLadder`] turns the host's load measurements into a
//!   [`Fidelity`] (full, sampled, aggregates only) with hysteresis and a
//!   minimum dwell time, and reports each change as a [`LevelChange`].
//!
//! Time is the caller's: each policy reads time going backwards as no time
//! passing, and believes a `now` far in the future until real time catches
//! up with it.

mod breaker;
mod gcra;
mod ladder;
mod queue;

pub use breaker::{BreakerConfig, BreakerError, BreakerState, BreakerStats, CircuitBreaker, Permit, Transition};

pub use gcra::{Decision, Gcra, Quota, RateLimiter, RateStats};
pub use ladder::{Fidelity, FidelityLadder, LadderConfig, LadderError, LevelChange, LoadInputs, LoadSignal, Rung};
pub use queue::{LocalQueue, Overflow, Push, QueueConfig, QueueStats, SharedQueue};

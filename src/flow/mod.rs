//! Backpressure policies: pure, clock-free code (the caller passes `now`)
//! that decides what to admit, and counts every decision.
//!
//! [`Gcra`] is a generic cell rate algorithm limiter (rate and burst, a
//! cost per request so a batch of N events is charged N cells, a
//! retry-after for HTTP 429), and [`RateLimiter`] keeps one per tenant (or
//! any key) in a bounded store.

mod gcra;

pub use gcra::{Decision, Gcra, Quota, RateLimiter, RateStats};

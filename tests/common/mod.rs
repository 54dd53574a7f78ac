//! Helpers shared by the integration tests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]
#![allow(dead_code, reason = "each test binary uses a different part")]

pub(crate) mod alerts;
pub(crate) mod alloc;
pub(crate) mod series;
pub(crate) mod traffic;

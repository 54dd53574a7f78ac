//! Helpers shared by the integration tests.

#![allow(dead_code, reason = "each test binary uses a different part")]

pub(crate) mod alloc;
pub(crate) mod traffic;

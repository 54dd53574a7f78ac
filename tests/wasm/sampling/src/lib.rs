//! The sampling contract, compiled for wasm32: `check.mjs` loads this
//! module in Node and checks that the stable hash and the sampling
//! decisions match the values `tests/sample.rs` checks natively, so every
//! replica (Workers and servers alike) keeps the same events.
//!
//! ```sh
//! cargo build --manifest-path tests/wasm/sampling/Cargo.toml --target wasm32-unknown-unknown --release
//! node tests/wasm/sampling/check.mjs tests/wasm/sampling/target/wasm32-unknown-unknown/release/edgestream_wasm_sampling.wasm
//! ```

#![allow(unsafe_code, reason = "`no_mangle` exports are the module's interface to JavaScript")]

use edgestream::sample::{HashKey, HashSampler, stable_hash};

/// `stable_hash(seed, "evt-<i>")` folded over `i < n`: each hash is xored
/// into the accumulator rotated left by 5.
#[unsafe(no_mangle)]
pub extern "C" fn hash_digest(n: u32, seed: u64) -> u64 {
    (0..n).fold(0u64, |acc, i| acc.rotate_left(5) ^ stable_hash(seed, format!("evt-{i}").as_bytes()))
}

/// How many of the ids `"evt-<i>"`, `i < n`, a `HashSampler` keeps at
/// `rate_ppm` parts per million.
#[unsafe(no_mangle)]
pub extern "C" fn kept(n: u32, rate_ppm: u32) -> u32 {
    let Ok(sampler) = HashSampler::new(f64::from(rate_ppm) / 1e6, HashKey::Id) else { return u32::MAX };
    (0..n).filter(|i| sampler.keeps(format!("evt-{i}").as_bytes())).count() as u32
}

//! The Rust types in `src/proto/edgestream.v1.rs` are generated from
//! `proto/edgestream.proto` with `prost-build` and the pure-Rust `protox`
//! compiler, and checked in so that building edgestream needs neither a
//! `protoc` binary nor a build script. This test regenerates them and fails
//! when the checked-in file is stale.
//!
//! To refresh it after editing the `.proto` file:
//! `UPDATE_GENERATED=1 cargo test --test proto_codegen`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use std::path::PathBuf;

#[test]
fn generated_protobuf_code_is_up_to_date() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fds = protox::compile(["edgestream.proto"], [root.join("proto")]).unwrap();
    let out = std::env::temp_dir().join(format!("edgestream-proto-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    prost_build::Config::new().bytes(["."]).out_dir(&out).compile_fds(fds).unwrap();
    let generated = std::fs::read_to_string(out.join("edgestream.v1.rs")).unwrap();
    std::fs::remove_dir_all(&out).unwrap();

    let checked_in_path = root.join("src/proto/edgestream.v1.rs");
    if std::env::var_os("UPDATE_GENERATED").is_some() {
        std::fs::write(&checked_in_path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&checked_in_path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "src/proto/edgestream.v1.rs is stale: run `UPDATE_GENERATED=1 cargo test --test proto_codegen`"
    );
}

//! The end-to-end tests: one test binary, one suite (module) per command or
//! concern, run one test at a time (`--test-threads=1`) because they share
//! kernel state. Their helpers are the package's library (tests/src); the
//! fixtures come from build.rs. `cargo test --test integration check::` runs
//! one suite.

mod suites {
    mod check;
    mod churn;
    mod containers;
    mod debuginfo;
    mod dwarf;
    mod errors;
    mod hostile_files;
    mod hostile_users;
    mod lifecycle;
    mod output_owner;
    mod pid_reuse;
    mod ready;
    mod record;
    mod serve;
    mod sources;
    mod stack_every;
    mod top;
}

use std::path::Path;

/// The Rust fixture, built by cargo with frame pointers (.cargo/config.toml);
/// only an integration test knows its path, hence here and not in the library.
pub fn rust_fixture() -> &'static Path {
    let exe = Path::new(env!("CARGO_BIN_EXE_fixture-rust"));
    assert!(exe.exists(), "{} is missing", exe.display());
    exe
}

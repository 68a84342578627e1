//! `cargo xtask build` and `cargo xtask run`.

use std::process::{Command, ExitCode};

use anyhow::{ensure, Result};

use crate::setup::{self, SetupArgs};
use crate::{process, workspace};

pub const CLOCKPROF_BIN: &str = "clockprof";

/// Setup, then the release profiler (its build.rs builds and embeds the eBPF
/// object) and the Rust fixture the end-to-end tests profile.
pub fn run() -> Result<()> {
    setup::run(&SetupArgs::default())?;
    build_profiler()?;
    process::run(&mut process::cargo([
        "build",
        "--release",
        "-p",
        "clockprof-tests",
        "--bins",
    ]))
}

/// The profiler the panic tests run: built with the `test-panic` feature
/// (CLOCKPROF_TEST_PANIC panics on purpose), which the shipped one lacks.
pub const TEST_PANIC_BIN: &str = "clockprof-test-panic";

/// Builds the `test-panic` variant and keeps it as TEST_PANIC_BIN, then puts
/// the shipped build back at target/release/clockprof. Both share every
/// dependency's build and stay cached side by side (features are part of the
/// artifact's hash), so this costs one compile of the profiler crate when it
/// changed and a copy when it did not.
pub fn build_test_panic_profiler() -> Result<()> {
    process::run(&mut process::cargo([
        "build",
        "--release",
        "-p",
        "profiler",
        "--features",
        "test-panic",
    ]))?;
    let built = workspace::release_bin(CLOCKPROF_BIN);
    let kept = workspace::release_bin(TEST_PANIC_BIN);
    // Copied to a new file, then renamed: a test binary still running the
    // old one keeps its inode.
    let partial = kept.with_extension("partial");
    std::fs::copy(&built, &partial)
        .and_then(|_| std::fs::rename(&partial, &kept))
        .map_err(|err| anyhow::anyhow!("cannot keep {}: {err}", kept.display()))?;
    build_profiler()
}

pub fn build_profiler() -> Result<()> {
    process::run(&mut process::cargo([
        "build",
        "--release",
        "-p",
        "profiler",
    ]))
}

/// Runs the freshly built profiler, through sudo when not root (loading eBPF needs
/// root), and hands back its exit status.
pub fn run_clockprof(args: &[String]) -> Result<ExitCode> {
    let bin = workspace::release_bin(CLOCKPROF_BIN);
    ensure!(
        bin.exists(),
        "{} was not produced by the build",
        bin.display()
    );
    let mut cmd = if workspace::is_root() {
        Command::new(&bin)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("--").arg(&bin);
        sudo
    };
    cmd.args(args);
    let status = process::status(&mut cmd)?;
    Ok(ExitCode::from(process::exit_code(status)))
}

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

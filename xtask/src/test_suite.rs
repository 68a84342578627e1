//! `cargo xtask test`: what CI runs. Build, then rustfmt, clippy, the layer check
//! (layers.rs) and the test suite, then the package (`dist`, installed into
//! clean roots), then the VM tests (vm.rs) that the host kernel cannot run. Every check runs even when one fails, so one CI run shows every
//! problem, except that a failed layer check stops the run before the tests.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Args;

use crate::tally::{self, Tally};
use crate::{build, dist, layers, process, vm, workspace};

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Skip the VM tests (kprobe, fentry, breakpoints under QEMU) for a quick
    /// local run. CI never passes it.
    #[arg(long)]
    pub no_vm: bool,
}

/// The boots `cargo xtask test` runs: 6.12, 6.1, 6.12 on hpet and 5.10
/// (vm::RUNS), since the cost is small next to CI's 90 minutes. Measured under
/// TCG on 2 cores, kernels fetched the first time: 111 s for the VM step
/// (6.12: fetch 6 s, QEMU 34 s; 6.1: fetch 6 s, QEMU 41 s; 6.12-hpet, one
/// test: QEMU 22 s), plus ~15 s to install QEMU. 5.10 runs every test and
/// adds QEMU 108-164 s with 9 tests, 218 s with the 16 there are since the
/// kernel-source tests (boot to /init 13-21 s; the spread is the shared
/// machine's load, which stretched the others alike), and ~12 s the first
/// time to update its bullseye lists and fetch it. A guest kernel crash adds
/// one more boot.
const VM_KERNELS: vm::KernelChoice = vm::KernelChoice::All;

pub fn run(args: &TestArgs) -> Result<ExitCode> {
    let started = Instant::now();
    if let Err(err) = build::run().and_then(|()| build::build_test_panic_profiler()) {
        eprintln!("xtask: error: {err:#}");
        println!("xtask test: FAILED: build (nothing was tested)");
        return Ok(ExitCode::FAILURE);
    }
    if !workspace::is_root() {
        eprintln!("xtask: warning: not root; the end-to-end tests load eBPF and will fail");
    }

    let fixture_dir = fresh_fixture_dir()?;
    // --no-fail-fast: a failing test binary must not hide the others' results
    // (the profiler's unit tests ran after the end-to-end ones and were never
    // reached when one of those failed).
    let mut tests = process::cargo([
        "test",
        "--release",
        "--no-fail-fast",
        "--",
        "--test-threads=1",
    ]);
    // The end-to-end tests share kernel state (tracepoints, maps), hence one thread.
    tests
        .env(
            "CLOCKPROF_BIN",
            workspace::release_bin(build::CLOCKPROF_BIN),
        )
        .env(
            "CLOCKPROF_TEST_PANIC_BIN",
            workspace::release_bin(build::TEST_PANIC_BIN),
        )
        .env("CLOCKPROF_FIXTURE_DIR", &fixture_dir)
        .env("CLOCKPROF_OTELCOL", crate::setup::collector_binary());

    let steps: [(&str, Command); 2] = [
        ("fmt", process::cargo(["fmt", "--all", "--", "--check"])),
        (
            "clippy",
            process::cargo(["clippy", "--release", "--", "-D", "warnings"]),
        ),
    ];
    let mut failed = Vec::new();
    for (name, mut cmd) in steps {
        if !process::status(&mut cmd)?.success() {
            eprintln!("xtask: {name} FAILED");
            failed.push(name);
        }
    }
    // The layer check reads files only and takes a moment. A circle or an upward
    // import means the tree's shape is wrong, so it is fixed before minutes of
    // tests are spent on that shape.
    let layers_clean = layers::run().unwrap_or_else(|err| {
        eprintln!("xtask: error: layers: {err:#}");
        false
    });
    if !layers_clean {
        eprintln!("xtask: layers FAILED");
        failed.push("layers");
        let _ = fs::remove_dir_all(&fixture_dir);
        println!(
            "xtask test: FAILED: {} (the tests did not run; `cargo xtask lint` repeats \
             the layer check)",
            failed.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    }
    let (status, mut tally) = tally::run_tallied(&mut tests)?;
    if !status.success() {
        eprintln!("xtask: tests FAILED");
        failed.push("tests");
    }
    // Host runs list the VM tests as ignored; the VM runs them.
    let host_ignored = tally.ignored;

    // The package, as production hosts get it: built and checked (lintian,
    // systemd-analyze, dpkg-shlibdeps), then installed into clean Debian 12
    // and 11 roots and run there (dist/clean_root.rs). About 3 min with the
    // dev cache warm (the shipped build and the roots are kept there).
    match dist::run().and_then(|()| dist::clean_root::run(None)) {
        Ok(()) => {}
        Err(err) => {
            eprintln!("xtask: error: dist: {err:#}");
            failed.push("dist");
        }
    }

    // The kprobe, fentry and breakpoint tests are #[ignore]d on the host: without
    // this step they would not run at all, so skipping it is always said loudly.
    let vm_note = if args.no_vm {
        println!(
            "xtask test: VM tests SKIPPED (--no-vm): the kprobe, fentry and breakpoint \
             tests did not run; `cargo xtask vm-test` runs them"
        );
        " (VM tests skipped)"
    } else {
        match vm::run_kernels(VM_KERNELS, &[], vm::DEFAULT_TIMEOUT_SECS) {
            Ok((true, vm_tally)) => {
                tally.add(vm_tally);
                tally.ignored -= host_ignored.min(tally.ignored);
                " (VM tests included)"
            }
            Ok((false, vm_tally)) => {
                tally.add(vm_tally);
                failed.push("vm-test");
                ""
            }
            Err(err) => {
                eprintln!("xtask: error: vm-test: {err:#}");
                failed.push("vm-test");
                ""
            }
        }
    };

    let secs = started.elapsed().as_secs_f64();
    if failed.is_empty() {
        // Fixture output is only worth keeping when something needs explaining.
        let _ = fs::remove_dir_all(&fixture_dir);
        println!(
            "xtask test: OK: build, fmt, clippy, tests and the package all passed{vm_note} \
             ({secs:.0} s)"
        );
        print_tally(tally);
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "xtask test: FAILED: {}{vm_note} ({secs:.0} s; fixture files kept in {})",
            failed.join(", "),
            fixture_dir.display()
        );
        print_tally(tally);
        Ok(ExitCode::FAILURE)
    }
}

/// The closing line: every test of the host and VM runs, in the plain form
/// CI reads (`N passed, N failed`, `N skipped` for tests no run executed).
fn print_tally(tally: Tally) {
    println!(
        "tests: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
}

/// A new directory per run, so tests never see a previous run's files.
fn fresh_fixture_dir() -> Result<PathBuf> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dir = workspace::target_dir()
        .join("fixtures")
        .join(format!("test-{stamp}-{}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    Ok(dir)
}

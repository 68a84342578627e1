//! Developer and CI tasks for clockprof:
//! `cargo xtask <setup|build|run|test|lint|bench|dist>`.
//!
//! Everything a fresh Debian machine needs is installed by `setup`, and every other
//! task that builds runs it first, so `cargo xtask test` alone is enough in CI.
//! `lint` only reads profiler/src and needs nothing installed.

mod bench;
mod build;
mod dist;
mod e2e_lock;
mod layers;
mod process;
mod setup;
mod tally;
mod test_suite;
mod vm;
mod workspace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Setup, build, run, test, benchmark and package clockprof"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the Debian packages and bpf-linker the build needs (idempotent).
    Setup(setup::SetupArgs),
    /// Build target/release/clockprof and the Rust fixture.
    Build,
    /// Build, then run target/release/clockprof with ARGS (through sudo when not root).
    Run {
        /// Arguments for clockprof, e.g. `record -s syscall -o out.svg -- ./app`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, then run rustfmt, clippy, the layer check (lint) and the test suite
    /// (what CI runs), then the VM tests (vm-test) unless --no-vm.
    Test(test_suite::TestArgs),
    /// Run the tests that need kprobes, fentry or breakpoints under stock Debian
    /// kernels in QEMU (tests/tests/vm_kernel.rs).
    VmTest(vm::VmTestArgs),
    /// Check the import layers of profiler/src: no circle of files, no file
    /// importing a higher layer (the table is in xtask/src/layers.rs).
    Lint,
    /// Measure the added cost per traced clock_gettime syscall, vs bpftrace.
    Bench(bench::BenchArgs),
    /// Build the packages for production hosts into target/dist/: the .deb,
    /// its -dbgsym .deb, and a tarball of the same files with a .debug file
    /// beside it; checked with lintian and systemd-analyze verify.
    Dist,
    /// Install target/dist's .deb into a clean `debootstrap --variant=minbase`
    /// root (cached outside the clone) and run doctor, record and serve there.
    CleanRoot {
        /// The Debian suite of the root (bookworm or bullseye); every one
        /// without it.
        #[arg(long)]
        suite: Option<String>,
    },
}

fn main() -> ExitCode {
    workspace::sanitize_env();
    let cli = Cli::parse();
    let outcome = match cli.task {
        Task::Setup(args) => setup::run(&args).map(|()| ExitCode::SUCCESS),
        Task::Build => build::run().map(|()| ExitCode::SUCCESS),
        Task::Run { args } => build::run().and_then(|()| build::run_clockprof(&args)),
        Task::Test(args) => e2e_lock::take().and_then(|_lock| test_suite::run(&args)),
        Task::VmTest(args) => e2e_lock::take().and_then(|_lock| vm::run(&args)),
        Task::Lint => layers::run().map(|clean| {
            if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        // The fuzz row alone loads no eBPF: it need not wait for the lock.
        Task::Bench(args) if args.fuzz_only() => bench::run(&args).map(|()| ExitCode::SUCCESS),
        Task::Bench(args) => {
            e2e_lock::take().and_then(|_lock| bench::run(&args).map(|()| ExitCode::SUCCESS))
        }
        // Builds and packs; loads no eBPF.
        Task::Dist => dist::run().map(|()| ExitCode::SUCCESS),
        Task::CleanRoot { suite } => e2e_lock::take()
            .and_then(|_lock| dist::clean_root::run(suite.as_deref()).map(|()| ExitCode::SUCCESS)),
    };
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(argv: &[&str]) -> Vec<String> {
        match Cli::try_parse_from(argv).unwrap().task {
            Task::Run { args } => args,
            _ => panic!("not run"),
        }
    }

    #[test]
    fn run_passes_clockprof_args_through_untouched() {
        let expected = [
            "record", "-s", "syscall", "-o", "x.svg", "--", "./app", "-v",
        ];
        assert_eq!(
            run_args(&[
                "xtask", "run", "--", "record", "-s", "syscall", "-o", "x.svg", "--", "./app", "-v"
            ]),
            expected
        );
        assert_eq!(
            run_args(&[
                "xtask", "run", "record", "-s", "syscall", "-o", "x.svg", "--", "./app", "-v"
            ]),
            expected
        );
        assert_eq!(run_args(&["xtask", "run", "--", "--help"]), ["--help"]);
    }
}

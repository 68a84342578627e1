//! `cargo xtask vm-test`: the tests that need kprobes, fentry or hardware
//! breakpoints, which this host's kernel (and CI's) cannot give, run under stock
//! Debian kernels in QEMU (shared/VM.md). One boot per kernel runs them all.
//!
//! kernel.rs fetches and caches the kernel, initramfs.rs writes the initramfs,
//! guest.rs the per-boot script, qemu.rs boots and reports.

mod guest;
mod initramfs;
mod kernel;
mod qemu;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::{Args, ValueEnum};

use crate::setup::{self, SetupArgs};
use crate::{build, process, workspace};

use kernel::{KernelLine, LINES};
use qemu::Outcome;

/// One boot runs ~30 s under TCG; 15 minutes leaves room for a loaded machine
/// while still ending a hung guest well inside CI's 90.
pub const DEFAULT_TIMEOUT_SECS: u64 = 15 * 60;

#[derive(Args, Debug)]
pub struct VmTestArgs {
    /// Kernel to boot: a Debian kernel line, or all of them one after the other.
    #[arg(long, value_enum, default_value = "6.12")]
    pub kernel: KernelChoice,
    /// Kill the guest (and fail) after this many seconds per kernel.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout: u64,
    /// Filters for the test binary, as for `cargo test -- FILTER` (also flags
    /// such as --exact).
    #[arg(last = true, value_name = "TEST-FILTER")]
    pub filters: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KernelChoice {
    #[value(name = "6.12")]
    V6_12,
    #[value(name = "6.1")]
    V6_1,
    All,
}

impl KernelChoice {
    fn lines(self) -> Vec<KernelLine> {
        let name = match self {
            KernelChoice::V6_12 => "6.12",
            KernelChoice::V6_1 => "6.1",
            KernelChoice::All => return LINES.to_vec(),
        };
        LINES.iter().copied().filter(|l| l.name == name).collect()
    }
}

/// `cargo xtask vm-test`.
pub fn run(args: &VmTestArgs) -> Result<ExitCode> {
    let (passed, _) = run_kernels(args.kernel, &args.filters, args.timeout)?;
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Installs, builds, boots each kernel and reports; true when every kernel
/// passed. Also what `cargo xtask test` calls after the host tests.
/// Boots each kernel and runs the VM tests; returns whether all passed and
/// the guests' test counts.
pub fn run_kernels(
    choice: KernelChoice,
    filters: &[String],
    timeout_secs: u64,
) -> Result<(bool, crate::tally::Tally)> {
    let started = Instant::now();
    setup::run(&SetupArgs {
        with: vec!["vm".to_string()],
    })?;
    let vm_dir = workspace::target_dir().join("vm");
    fs::create_dir_all(&vm_dir)
        .with_context(|| format!("could not create {}", vm_dir.display()))?;
    let host = build_host(&vm_dir)?;
    eprintln!(
        "xtask: vm: host build done ({:.0} s)",
        started.elapsed().as_secs_f64()
    );

    // A kernel that cannot even be set up fails alone; the others still run.
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for line in choice.lines() {
        match run_kernel(line, &vm_dir, &host, filters, timeout_secs) {
            Ok(result) => results.push(result),
            Err(err) => errors.push(format!(
                "xtask vm-test: kernel {}: FAILED (not booted: {err:#})",
                line.name
            )),
        }
    }

    println!();
    for r in &results {
        r.print();
    }
    for e in &errors {
        println!("{e}");
    }
    let passed = errors.is_empty() && results.iter().all(KernelResult::passed);
    println!(
        "xtask vm-test: {} ({:.0} s in all)",
        if passed { "OK" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    let mut tally = crate::tally::Tally::default();
    for line in results.iter().flat_map(|r| &r.summary.test_lines) {
        tally.add_line(line);
    }
    Ok((passed, tally))
}

/// What the guest runs, built on the host: compiling under emulation would be
/// far slower, and the guest sees these paths unchanged over 9p.
struct HostBuild {
    clockprof: PathBuf,
    c_fixture: PathBuf,
    test_exe: PathBuf,
}

fn build_host(vm_dir: &Path) -> Result<HostBuild> {
    build::build_profiler()?;
    let clockprof = workspace::release_bin(build::CLOCKPROF_BIN);
    ensure!(
        clockprof.exists(),
        "{} was not produced by the build",
        clockprof.display()
    );

    let c_fixture = vm_dir.join("cfixture");
    process::run(
        Command::new("gcc")
            .args(["-O1", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(&c_fixture)
            .arg(workspace::root().join("tests/fixtures/syscall_fixture.c")),
    )?;

    let mut cargo = process::cargo([
        "test",
        "--release",
        "-p",
        "clockprof-tests",
        "--test",
        "vm_kernel",
        "--no-run",
        "--message-format=json",
    ]);
    eprintln!("xtask: $ {}", process::describe(&cargo));
    let out = cargo
        .stderr(Stdio::inherit())
        .output()
        .context("could not run cargo")?;
    ensure!(
        out.status.success(),
        "building the vm_kernel tests failed ({}); they live in tests/tests/vm_kernel.rs",
        out.status
    );
    let test_exe = test_executable(&String::from_utf8_lossy(&out.stdout), "vm_kernel")
        .context("cargo reported no executable for the vm_kernel test target")?;
    Ok(HostBuild {
        clockprof,
        c_fixture,
        test_exe,
    })
}

/// The executable of test target `name` from cargo's JSON messages.
fn test_executable(json_lines: &str, name: &str) -> Option<PathBuf> {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
}

struct KernelResult {
    line: &'static str,
    release: String,
    fetch: Duration,
    report: qemu::Report,
    summary: guest::Summary,
    console_log: PathBuf,
}

impl KernelResult {
    fn passed(&self) -> bool {
        self.report.outcome == Outcome::Finished(0)
    }

    fn print(&self) {
        let verdict = match self.report.outcome {
            Outcome::Finished(0) => "PASSED".to_string(),
            Outcome::Finished(rc) => format!("FAILED (tests exited {rc})"),
            Outcome::InitFailed => "FAILED (the guest's /init failed before the tests; \
                                    see the console log)"
                .to_string(),
            Outcome::Panicked => {
                "FAILED (the guest kernel panicked: QEMU exited 0 without an rc file)".to_string()
            }
            Outcome::TimedOut => "FAILED (timed out: QEMU was killed)".to_string(),
            Outcome::QemuFailed(code) => format!("FAILED (QEMU failed with status {code})"),
        };
        let secs =
            |d: Option<Duration>| d.map_or("?".to_string(), |d| format!("{:.1}", d.as_secs_f64()));
        println!(
            "xtask vm-test: kernel {} ({}): {verdict}",
            self.line, self.release
        );
        println!(
            "  kernel fetch {} s, boot to /init {} s, tests {} s, QEMU total {:.1} s ({})",
            secs(Some(self.fetch)),
            secs(self.report.boot),
            self.summary
                .tests_secs
                .map_or("?".to_string(), |s| format!("{s:.1}")),
            self.report.total.as_secs_f64(),
            self.report.accel
        );
        if let Some(kernel_line) = &self.summary.kernel_line {
            println!("  {kernel_line}");
        }
        if let Some(panic) = &self.summary.panic_line {
            println!("  {panic}");
        }
        for line in &self.summary.test_lines {
            println!("  {line}");
        }
        println!("  console log: {}", self.console_log.display());
    }
}

fn run_kernel(
    line: KernelLine,
    vm_dir: &Path,
    host: &HostBuild,
    filters: &[String],
    timeout_secs: u64,
) -> Result<KernelResult> {
    let fetch_started = Instant::now();
    let kernel = kernel::ensure(line)?;
    let initramfs = initramfs::ensure(&kernel)?;
    let fetch = fetch_started.elapsed();

    let run_dir = qemu::fresh_run_dir(vm_dir, line.name)?;
    let script = guest::script(&guest::GuestCommand {
        clockprof: &host.clockprof,
        c_fixture: &host.c_fixture,
        test_exe: &host.test_exe,
        filters,
    });
    fs::write(run_dir.join("guest.sh"), script).context("could not write guest.sh")?;
    // Beside, not inside, the shared run directory: the guest cannot touch it.
    let console_log = vm_dir.join(format!("console-{}.log", line.name));

    eprintln!(
        "xtask: vm: booting {} (console follows; log in {})",
        kernel.release,
        console_log.display()
    );
    let report = qemu::boot(&qemu::Boot {
        kernel: &kernel,
        initramfs: &initramfs,
        run_dir: &run_dir,
        console_log: &console_log,
        timeout: Duration::from_secs(timeout_secs),
    })?;
    let console = fs::read(&console_log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Ok(KernelResult {
        line: line.name,
        release: kernel.release,
        fetch,
        report,
        summary: guest::summarize(&console),
        console_log,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_test_executable_in_cargo_json() {
        let json = r#"{"reason":"compiler-artifact","target":{"name":"common"},"executable":null}
{"reason":"compiler-artifact","target":{"name":"vm_kernel","kind":["test"]},"executable":"/t/release/deps/vm_kernel-abc"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            test_executable(json, "vm_kernel"),
            Some(PathBuf::from("/t/release/deps/vm_kernel-abc"))
        );
        assert_eq!(test_executable(json, "other"), None);
    }

    #[test]
    fn kernel_choices_cover_every_line() {
        assert_eq!(KernelChoice::All.lines(), LINES);
        assert_eq!(KernelChoice::V6_1.lines()[0].name, "6.1");
        assert_eq!(KernelChoice::V6_12.lines()[0].name, "6.12");
    }
}

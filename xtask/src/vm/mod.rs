//! `cargo xtask vm-test`: the tests that need kprobes, fentry or hardware
//! breakpoints, which this host's kernel (and CI's) cannot give, run under stock
//! Debian kernels in QEMU (shared/VM.md). One boot per kernel runs them all.
//!
//! kernel.rs fetches and caches the kernel, initramfs.rs writes the initramfs,
//! guest.rs the per-boot script, qemu.rs boots and reports.
//!
//! What only depends on downloads (the kernels, the overlay's package lists)
//! and the Go build cache are kept in the dev cache (`workspace::cache_dir()`),
//! which outlives a clone: CI's fresh clone would fetch them again on every run.
//! What this clone's sources make (the fixtures, the initramfs with its /init,
//! the runs' directories and console logs) stays in `target/vm/`.

mod guest;
mod initramfs;
mod kernel;
mod qemu;

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::{Args, ValueEnum};

use crate::setup::{self, SetupArgs};
use crate::{build, process, workspace};

use kernel::LINES;
use qemu::Outcome;

/// One boot runs ~30 s under TCG; 15 minutes leaves room for a loaded machine
/// while still ending a hung guest well inside CI's 90.
pub const DEFAULT_TIMEOUT_SECS: u64 = 15 * 60;

#[derive(Args, Debug)]
pub struct VmTestArgs {
    /// Kernel to boot: a Debian kernel line, 6.12 on the hpet clocksource (only
    /// the clocksource-fallback tests), Debian 11's 5.10 (the kernel floor, on
    /// hpet: every test), or all of them one after the other.
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
    #[value(name = "6.12-hpet")]
    V6_12Hpet,
    #[value(name = "5.10")]
    V5_10,
    All,
}

impl KernelChoice {
    fn runs(self) -> Vec<VmRun> {
        let name = match self {
            KernelChoice::V6_12 => "6.12",
            KernelChoice::V6_1 => "6.1",
            KernelChoice::V6_12Hpet => "6.12-hpet",
            KernelChoice::V5_10 => "5.10",
            KernelChoice::All => return RUNS.to_vec(),
        };
        RUNS.iter().copied().filter(|r| r.name == name).collect()
    }
}

/// One boot of the VM tests: a kernel line and the clocksource it runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmRun {
    /// What `--kernel` calls it; also names its run directory and console log.
    name: &'static str,
    line: &'static str,
    clock: GuestClock,
    tests: TestSet,
}

/// Which tests of vm_kernel.rs a boot runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TestSet {
    /// Every test but HPET_TEST (a guest on tsc).
    AllButHpet,
    /// HPET_TEST alone: the rest already ran on this kernel on tsc.
    HpetOnly,
    /// Every test, HPET_TEST included (a guest on hpet).
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GuestClock {
    /// What real machines have: clock reads stay in the vDSO. Under TCG 6.1
    /// finds the two vCPUs' TSCs "unsynchronized" and falls back to hpet unless
    /// told the TSC is reliable (6.12 keeps tsc by itself).
    Tsc,
    /// The fallback clockprof must handle too: the vDSO cannot read hpet, so
    /// every clock read becomes a syscall made from inside the vDSO. Only the
    /// HPET_TEST runs on it; it fails if the guest is not really on hpet.
    Hpet,
}

impl GuestClock {
    fn kernel_param(self) -> &'static str {
        match self {
            GuestClock::Tsc => "tsc=reliable",
            GuestClock::Hpet => "clocksource=hpet",
        }
    }
}

/// The boots of `--kernel all` (and of `cargo xtask test`), in order. The 6.12
/// hpet boot runs one test, so it costs a boot (~6 s) and that test, not a
/// second pass over every test. 5.10 runs everything on hpet: that is where
/// TCG puts it anyway (it marks the TSC unstable), and saying so makes the
/// clocksource certain rather than a property of the emulator.
pub const RUNS: &[VmRun] = &[
    VmRun {
        name: "6.12",
        line: "6.12",
        clock: GuestClock::Tsc,
        tests: TestSet::AllButHpet,
    },
    VmRun {
        name: "6.1",
        line: "6.1",
        clock: GuestClock::Tsc,
        tests: TestSet::AllButHpet,
    },
    VmRun {
        name: "6.12-hpet",
        line: "6.12",
        clock: GuestClock::Hpet,
        tests: TestSet::HpetOnly,
    },
    VmRun {
        name: "5.10",
        line: "5.10",
        clock: GuestClock::Hpet,
        tests: TestSet::All,
    },
];

/// The test in tests/tests/vm_kernel.rs that needs an hpet guest.
const HPET_TEST: &str = "hpet_clocksource_go_time_now_counts_as_syscalls_under_the_caller";

/// libtest's arguments for a run: the hpet test only on hpet boots, and on
/// hpet-only boots only it unless the user named tests.
fn test_args(tests: TestSet, filters: &[String]) -> Vec<String> {
    let mut args = filters.to_vec();
    match tests {
        TestSet::AllButHpet => args.extend(["--skip".to_string(), HPET_TEST.to_string()]),
        TestSet::HpetOnly if filters.is_empty() => args.push(HPET_TEST.to_string()),
        TestSet::HpetOnly | TestSet::All => {}
    }
    args
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
/// The guest mounts a tmpfs over these (initramfs.rs's init), hiding what the
/// host has there: test executables built under them would not be found.
const GUEST_TMPFS_DIRS: [&str; 3] = ["/tmp", "/run", "/root"];

fn visible_in_guest(dir: &Path) -> Result<()> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    match GUEST_TMPFS_DIRS
        .iter()
        .find(|hidden| dir.starts_with(hidden))
    {
        Some(hidden) => anyhow::bail!(
            "the build is under {hidden}, which the guest covers with a tmpfs, so its test \
             executables would not be found there; run from a checkout outside {} (or point \
             CARGO_TARGET_DIR elsewhere)",
            GUEST_TMPFS_DIRS.join(", ")
        ),
        None => Ok(()),
    }
}

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
    visible_in_guest(&vm_dir)?;
    let host = build_host(&vm_dir)?;
    eprintln!(
        "xtask: vm: host build done ({:.0} s)",
        started.elapsed().as_secs_f64()
    );

    // A kernel that cannot even be set up fails alone; the others still run.
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for run in choice.runs() {
        match run_with_reruns(run, &vm_dir, &host, filters, timeout_secs) {
            Ok(result) => results.push(result),
            Err(err) => errors.push(format!(
                "xtask vm-test: kernel {}: FAILED (not booted: {err:#})",
                run.name
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
    go_fixture: PathBuf,
    cgo_fixture: PathBuf,
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

    // `go build` under TCG would compile the runtime from scratch (minutes).
    // Go's cache is content-addressed and safe for concurrent use, so clones
    // share it; go trims what it has not used for days.
    let go_cache = create_cache_dir("go-cache-vm")?;
    let go_build = |source: &str, name: &str| -> Result<PathBuf> {
        let out = vm_dir.join(name);
        process::run(
            Command::new("go")
                .arg("build")
                .arg("-o")
                .arg(&out)
                .arg(workspace::root().join("tests/fixtures").join(source))
                .env("GOCACHE", &go_cache)
                .env("GOPATH", vm_dir.join("go-path"))
                .env("GO111MODULE", "off"),
        )?;
        Ok(out)
    };
    let go_fixture = go_build("go_fixture.go", "gofixture")?;
    let cgo_fixture = go_build("cgo_fixture.go", "cgofixture")?;

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
        go_fixture,
        cgo_fixture,
        test_exe,
    })
}

/// `<workspace::cache_dir()>/<name>`, made absolute: apt and go run in other
/// directories than this one (a relative CLOCKPROF_DEV_CACHE).
fn cache_path(name: &str) -> PathBuf {
    let dir = workspace::cache_dir().join(name);
    std::path::absolute(&dir).unwrap_or(dir)
}

/// cache_path(name), created if missing: the dev cache and `name` with mode
/// 0755 (whatever the umask), any missing parents above the cache as usual.
/// Refused unless it belongs to this user: as root, xtask would otherwise boot
/// kernels and load modules another user could have put there, and remove
/// directories in it.
fn create_cache_dir(name: &str) -> Result<PathBuf> {
    let dir = cache_path(name);
    create_owned_dir(&dir)?;
    Ok(dir)
}

/// create_cache_dir()'s work on `dir`: it and its parent (the cache) 0755.
fn create_owned_dir(dir: &Path) -> Result<()> {
    let root = dir.parent().context("the dev cache has no parent")?;
    if let Some(above) = root.parent() {
        fs::create_dir_all(above)
            .with_context(|| format!("could not create {}", above.display()))?;
    }
    for d in [root, dir] {
        match fs::DirBuilder::new().mode(0o755).create(d) {
            Ok(()) => fs::set_permissions(d, fs::Permissions::from_mode(0o755))
                .with_context(|| format!("could not set the mode of {}", d.display()))?,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => {
                return Err(err).with_context(|| format!("could not create {}", d.display()))
            }
        }
    }
    let meta = fs::metadata(dir).with_context(|| format!("could not stat {}", dir.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    ensure!(
        meta.is_dir() && meta.uid() == euid,
        "{} is not a directory of this user (uid {euid}); remove it, or point \
         CLOCKPROF_DEV_CACHE at a directory of your own",
        dir.display()
    );
    Ok(())
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
    /// The first lines of a guest kernel crash in this boot.
    crash: Option<Vec<String>>,
    /// The crash of the boot this one reran, if it is a rerun.
    rerun_after: Option<Vec<String>>,
}

impl KernelResult {
    fn passed(&self) -> bool {
        self.crash.is_none() && self.report.outcome == Outcome::Finished(0)
    }

    fn print(&self) {
        let verdict = match (&self.crash, &self.report.outcome) {
            // The crash, not a test caught in it, is what failed.
            (Some(crash), _) => format!(
                "FAILED (the guest kernel crashed{}: {})",
                if self.rerun_after.is_some() {
                    " again on the rerun"
                } else {
                    ""
                },
                crash.first().map_or("", String::as_str)
            ),
            (None, Outcome::Finished(0)) if self.rerun_after.is_some() => {
                "PASSED on the rerun".to_string()
            }
            (None, outcome) => verdict(outcome),
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
        if let Some(earlier) = &self.rerun_after {
            println!(
                "  rerun because the first boot's kernel crashed or stopped: {}",
                earlier.first().map_or("", String::as_str)
            );
        }
        if let Some(crash) = &self.crash {
            for line in crash {
                println!("  | {line}");
            }
        } else if let Some(panic) = &self.summary.panic_line {
            println!("  {panic}");
        }
        for line in &self.summary.test_lines {
            println!("  {line}");
        }
        println!("  console log: {}", self.console_log.display());
    }
}

fn verdict(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Finished(0) => "PASSED".to_string(),
        Outcome::Finished(rc) => format!("FAILED (tests exited {rc})"),
        Outcome::InitFailed => {
            "FAILED (the guest's /init failed before the tests; see the console log)".to_string()
        }
        Outcome::Panicked => {
            "FAILED (the guest kernel panicked: QEMU exited 0 without an rc file)".to_string()
        }
        Outcome::TimedOut => "FAILED (timed out: QEMU was killed)".to_string(),
        Outcome::Stopped(_) => "FAILED (the guest stopped: QEMU was killed)".to_string(),
        Outcome::QemuFailed(code) => format!("FAILED (QEMU failed with status {code})"),
    }
}

/// Boots `run`; if its kernel crashes (an oops or panic on the console), says
/// so with the crash's first lines and boots it again, up to
/// `CRASH_RERUNS` times. Under TCG a stock kernel oopses by itself (VM.md:
/// an `int3` while text_poke patches a static key, about one boot in two on
/// the hpet clocksource), so a crash says nothing about the tests; with one
/// rerun, two crashes in a row failed a quarter of the hpet runs, and three
/// in a row were seen on 6.12 (tsc) too. A crash on every boot fails the run
/// with the crash, not a test name.
const CRASH_RERUNS: usize = 3;

fn run_with_reruns(
    run: VmRun,
    vm_dir: &Path,
    host: &HostBuild,
    filters: &[String],
    timeout_secs: u64,
) -> Result<KernelResult> {
    let mut result = run_kernel(run, vm_dir, host, filters, timeout_secs, "")?;
    for rerun in 1..=CRASH_RERUNS {
        let Some(crash) = result.crash.take() else {
            return Ok(result);
        };
        println!(
            "\nxtask vm-test: kernel {}: the guest kernel crashed or stopped (console log {}):",
            run.name,
            result.console_log.display()
        );
        for line in &crash {
            println!("  | {line}");
        }
        println!(
            "xtask vm-test: kernel {}: rerunning its tests ({rerun} of {CRASH_RERUNS}; a kernel that crashed or stopped is not a test failure)",
            run.name
        );
        let suffix = if rerun == 1 {
            "-rerun".to_string()
        } else {
            format!("-rerun{rerun}")
        };
        result = run_kernel(run, vm_dir, host, filters, timeout_secs, &suffix)?;
        result.rerun_after = Some(crash);
    }
    Ok(result)
}

fn run_kernel(
    run: VmRun,
    vm_dir: &Path,
    host: &HostBuild,
    filters: &[String],
    timeout_secs: u64,
    log_suffix: &str,
) -> Result<KernelResult> {
    let line = LINES
        .iter()
        .copied()
        .find(|l| l.name == run.line)
        .with_context(|| format!("no kernel line {}", run.line))?;
    let fetch_started = Instant::now();
    let kernel = kernel::ensure(line)?;
    let initramfs = initramfs::ensure(&kernel)?;
    let fetch = fetch_started.elapsed();

    let run_dir = qemu::fresh_run_dir(vm_dir, run.name)?;
    let script = guest::script(&guest::GuestCommand {
        clockprof: &host.clockprof,
        c_fixture: &host.c_fixture,
        go_fixture: &host.go_fixture,
        cgo_fixture: &host.cgo_fixture,
        test_exe: &host.test_exe,
        test_args: &test_args(run.tests, filters),
    });
    fs::write(run_dir.join("guest.sh"), script).context("could not write guest.sh")?;
    // Beside, not inside, the shared run directory: the guest cannot touch it.
    // A rerun keeps the crashed boot's log.
    let console_log = vm_dir.join(format!("console-{}{log_suffix}.log", run.name));

    eprintln!(
        "xtask: vm: booting {} (console follows; log in {})",
        kernel.release,
        console_log.display()
    );
    let report = qemu::boot(&qemu::Boot {
        kernel: &kernel,
        kernel_param: run.clock.kernel_param(),
        initramfs: &initramfs,
        run_dir: &run_dir,
        console_log: &console_log,
        timeout: Duration::from_secs(timeout_secs),
    })?;
    let console = fs::read(&console_log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let crash = guest::crash_report(&console).or_else(|| match &report.outcome {
        Outcome::Panicked => Some(vec![
            "the guest rebooted (a panic) without a kernel message on the console".to_string(),
        ]),
        // A guest that stopped running anything is the emulated kernel's
        // failure, not a test's: rerun as for a crash, with where the CPUs were.
        Outcome::Stopped(why) => Some(
            std::iter::once(format!(
                "the guest stopped: {}; its CPUs then:",
                why.first().map_or("", String::as_str)
            ))
            .chain(why.iter().skip(1).cloned())
            .collect(),
        ),
        _ => None,
    });
    Ok(KernelResult {
        line: run.name,
        release: kernel.release,
        fetch,
        report,
        summary: guest::summarize(&console),
        console_log,
        crash,
        rerun_after: None,
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn refuses_a_build_the_guest_cannot_see() {
        let err = visible_in_guest(Path::new("/tmp/ci-clone/target/vm")).unwrap_err();
        assert!(err.to_string().contains("under /tmp"), "{err}");
        assert!(visible_in_guest(Path::new("/root/x")).is_err());
        assert!(visible_in_guest(Path::new("/work/main/target/vm")).is_ok());
        assert!(visible_in_guest(Path::new("/tmpfoo/target")).is_ok());
    }

    use super::*;

    #[test]
    fn the_cache_dirs_are_0755_whatever_the_umask() {
        let base = std::env::temp_dir().join(format!("xtask-cache-test-{}", std::process::id()));
        let dir = base.join("a/clockprof-dev/vm-kernels");
        create_owned_dir(&dir).unwrap();
        for d in [&dir, &base.join("a/clockprof-dev")] {
            assert_eq!(
                fs::metadata(d).unwrap().mode() & 0o7777,
                0o755,
                "{}",
                d.display()
            );
        }
        // A second call finds it in place.
        create_owned_dir(&dir).unwrap();
        fs::write(base.join("file"), "").unwrap();
        assert!(create_owned_dir(&base.join("file")).is_err());
        fs::remove_dir_all(&base).unwrap();
    }

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
    fn kernel_choices_cover_every_run() {
        assert_eq!(KernelChoice::All.runs(), RUNS);
        assert_eq!(KernelChoice::V6_1.runs()[0].name, "6.1");
        assert_eq!(KernelChoice::V6_12.runs()[0].clock, GuestClock::Tsc);
        assert_eq!(KernelChoice::V6_12Hpet.runs()[0].clock, GuestClock::Hpet);
        assert_eq!(KernelChoice::V5_10.runs()[0].tests, TestSet::All);
        assert!(RUNS.iter().all(|r| LINES.iter().any(|l| l.name == r.line)));
    }

    #[test]
    fn the_hpet_test_runs_only_on_hpet() {
        assert_eq!(test_args(TestSet::AllButHpet, &[]), ["--skip", HPET_TEST]);
        assert_eq!(test_args(TestSet::HpetOnly, &[]), [HPET_TEST]);
        assert!(test_args(TestSet::All, &[]).is_empty());
        let named = ["kprobe".to_string()];
        assert_eq!(
            test_args(TestSet::AllButHpet, &named),
            ["kprobe", "--skip", HPET_TEST]
        );
        assert_eq!(test_args(TestSet::HpetOnly, &named), ["kprobe"]);
        assert_eq!(test_args(TestSet::All, &named), ["kprobe"]);
        assert!(RUNS
            .iter()
            .filter(|r| r.tests != TestSet::AllButHpet)
            .all(|r| r.clock == GuestClock::Hpet));
    }
}

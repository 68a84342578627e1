//! `cargo xtask setup`: installs the Debian packages and the bpf-linker the build
//! needs, and builds the OpenTelemetry Collector the OTLP tests send profiles to
//! (ensure_collector). Every other task calls it first, so its no-op path must
//! stay fast: two dpkg-queries, a few small file reads and one
//! `bpf-linker --version`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::{process, workspace};

/// A named set of Debian packages installed together. Optional groups (not
/// `default`) are only installed when asked for with `--with NAME`.
pub struct PackageGroup {
    pub name: &'static str,
    pub why: &'static str,
    pub default: bool,
    pub packages: &'static [&'static str],
    /// Packages of this group to take from `<codename>-backports` when Debian's
    /// main suite would remove an installed package to install them, or when apt
    /// already offers them from backports (see plan_install).
    pub backports: &'static [&'static str],
}

pub const PACKAGE_GROUPS: &[PackageGroup] = &[
    PackageGroup {
        name: "ebpf-toolchain",
        why: "build the eBPF crate with Debian's prebuilt bpfel libcore (TOOLCHAIN.md); \
              rustc-web, cargo-web and libstd-rust-web-dev-bpf must share one version",
        default: true,
        packages: &[
            "rustc-web",
            "cargo-web",
            "libstd-rust-web-dev-bpf",
            "llvm-22-dev",
        ],
        backports: &[],
    },
    PackageGroup {
        name: "fixtures",
        why: "compile the C and Go busy-loop fixtures and the bench loop; the Go tests \
              run on Debian's Go 1.19 (golang-go), bookworm-backports' Go 1.23 \
              (golang-1.23-go, in /usr/lib/go-1.23) and the current release \
              (/usr/local/go, not installed here), each fixture built by each",
        default: true,
        packages: &["gcc", "libc6-dev", "golang-go", "golang-1.23-go"],
        // Bookworm has no golang-1.23-go: only backports does (its
        // dependencies, golang-1.23-src, come along with -t).
        backports: &["golang-1.23-go"],
    },
    PackageGroup {
        name: "test-tools",
        why: "bpftrace as the bench's reference tracer, tmux to drive the TUI in tests, \
              python3 for the contract check and XML checks, bpftool to prove no program \
              stays loaded after clockprof exits, debuginfod to serve a fixture's split \
              debug file on loopback (it starts no service of its own), prometheus (and \
              promtool) to scrape `clockprof serve` and check the packaged configs (its \
              service is stopped and disabled), redis-server and redis-tools (Debian's \
              stripped redis under redis-benchmark for the DWARF unwinding test; the \
              tests run their own on a temporary port, the package's service is stopped \
              and disabled), libstd-rust-dev (Debian's Rust 1.63 std as a shared library \
              built without frame pointers, for the DWARF test of a Rust program linked \
              against it; its compiler is set up beside it, see ensure_debian_rustc), \
              openssl and curl to make the TLS tests' certificates and to scrape serve \
              over https, libfaketime as the real LD_PRELOAD interposer of the clock-cause \
              tests",
        default: true,
        packages: &[
            "bpftrace",
            "bpftool",
            "tmux",
            "python3",
            "debuginfod",
            "prometheus",
            "redis-server",
            "redis-tools",
            "linux-perf", // the bench's `perf record --call-graph dwarf` row
            "libstd-rust-dev",
            "openssl",
            "curl",
            "libfaketime",
        ],
        backports: &[],
    },
    PackageGroup {
        name: "dist",
        why: "build and check the .deb and tarball (cargo xtask dist, which asks for this \
              group): objcopy, objdump and readelf split and read the binary, dpkg-shlibdeps \
              cross-checks its Depends, lintian checks both packages, systemd-analyze \
              verifies the packaged unit (man, for its Documentation= check, and \
              systemd-sysusers come along); debootstrap makes the clean root \
              cargo xtask clean-root installs the .deb into; python3-pip installs \
              cargo-zigbuild and Zig (pinned, from PyPI, into the dev cache), which link \
              the shipped binary against glibc 2.26",
        default: false,
        packages: &[
            "binutils",
            "dpkg-dev",
            "lintian",
            "systemd",
            "man-db",
            "debootstrap",
            "python3-pip",
        ],
        backports: &[],
    },
    PackageGroup {
        name: "vm",
        why: "boot stock Debian kernels under QEMU for the kprobe, fentry and breakpoint \
              tests (cargo xtask vm-test, VM.md); xz unpacks the kernel's modules",
        default: false,
        packages: &["qemu-system-x86", "busybox-static", "xz-utils"],
        // The machine image ships qemu-utils 10.0 from bookworm-backports, which
        // Breaks qemu-system-common << 8.0: installing bookworm's qemu-system-x86
        // 7.2 would remove qemu-img. The backports build (10.0, same source as the
        // image's qemu-utils) installs beside it, with its dependencies
        // (qemu-system-common, qemu-system-data, seabios) from backports too, so it
        // is taken whenever the plain install would remove something. Where
        // nothing conflicts, bookworm's 7.2 is used: it boots the test kernels just
        // as well.
        backports: &["qemu-system-x86"],
    },
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// LLVM 22 matches both rustc-web 1.96 and rustup's 1.95 (TOOLCHAIN.md); without
/// LLVM_PREFIX bpf-linker's build finds llvm-14's llvm-config and fails.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

#[derive(Args, Default)]
pub struct SetupArgs {
    /// Also install an optional package group (repeatable), e.g. `--with vm`.
    #[arg(long = "with", value_name = "GROUP", value_parser = optional_group_name)]
    pub with: Vec<String>,
}

fn optional_group_name(name: &str) -> Result<String, String> {
    match PACKAGE_GROUPS.iter().find(|g| g.name == name) {
        Some(_) => Ok(name.to_string()),
        None => Err(format!(
            "unknown package group; known: {}",
            PACKAGE_GROUPS
                .iter()
                .map(|g| g.name)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The packages to ensure: every default group plus the requested optional ones.
pub fn packages(with: &[String]) -> Vec<&'static str> {
    PACKAGE_GROUPS
        .iter()
        .filter(|g| g.default || with.iter().any(|w| w == g.name))
        .flat_map(|g| g.packages.iter().copied())
        .collect()
}

pub fn run(args: &SetupArgs) -> Result<()> {
    ensure_packages(&packages(&args.with))?;
    ensure_debian_rustc()?;
    ensure_bpf_linker()?;
    ensure_collector()?;
    if args.with.iter().any(|g| g == "dist") {
        ensure_zigbuild()?;
    }
    Ok(())
}

/// cargo-zigbuild and the Zig it drives, pinned, from PyPI (both ship as
/// wheels with their binaries: 7 s to install here, 417 MB). dist links the
/// shipped binary with them against glibc 2.26 (dist/binary.rs says why).
const ZIGBUILD_WHEELS: &[&str] = &["ziglang==0.17.1", "cargo-zigbuild==0.24.1"];

/// Where ZIGBUILD_WHEELS are installed (`pip install --target`), one
/// directory per pinned set, in the dev cache outside the clone.
pub fn zigbuild_dir() -> PathBuf {
    let key = ZIGBUILD_WHEELS.join("+").replace("==", "-");
    workspace::cache_dir().join("zigbuild").join(key)
}

/// Installs ZIGBUILD_WHEELS with Debian's pip (python3-pip, in the dist
/// group) into zigbuild_dir(), under a temporary name renamed when complete,
/// unless they are there.
fn ensure_zigbuild() -> Result<()> {
    let dir = zigbuild_dir();
    if dir.join("bin/cargo-zigbuild").is_file() {
        return Ok(());
    }
    let parent = dir.parent().expect("zigbuild_dir has a parent");
    fs::create_dir_all(parent)?;
    let partial = parent.join(format!(".partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&partial);
    eprintln!(
        "xtask: installing {} into {}",
        ZIGBUILD_WHEELS.join(" "),
        dir.display()
    );
    let result = process::run(
        Command::new("/usr/bin/python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-cache-dir",
                "--target",
            ])
            .arg(&partial)
            .args(ZIGBUILD_WHEELS)
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
    )
    .and_then(|()| {
        fs::rename(&partial, &dir)
            .with_context(|| format!("could not move {} into place", dir.display()))
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&partial);
    }
    result
}

fn ensure_packages(wanted: &[&'static str]) -> Result<()> {
    let missing = missing_packages(wanted)?;
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: missing Debian packages:");
    for group in PACKAGE_GROUPS {
        let in_group: Vec<&str> = group
            .packages
            .iter()
            .copied()
            .filter(|p| missing.contains(p))
            .collect();
        if !in_group.is_empty() {
            eprintln!(
                "  {}: {} (to {})",
                group.name,
                in_group.join(" "),
                group.why
            );
        }
    }
    if !workspace::is_root() {
        bail!(
            "installing packages needs root: re-run `cargo xtask setup` with sudo, or run \
             `sudo apt-get install -y --no-install-recommends {}`",
            missing.join(" ")
        );
    }
    process::run(apt_get().arg("update"))?;
    // Planned in full before anything is installed, so a plan that would remove
    // a package stops the run with nothing changed.
    let plans = plan_install(&missing)?;
    for plan in &plans {
        process::run(apt_get().args(plan.apt_args(AptAction::Install)))?;
    }
    let still_missing = missing_packages(wanted)?;
    if !still_missing.is_empty() {
        bail!(
            "apt-get reported success but these packages are still not installed: {}",
            still_missing.join(" ")
        );
    }
    stop_package_services(&missing)
}

/// Test tools whose Debian package starts a daemon, with its service name.
/// The tests start their own, on loopback and a free port; the package's
/// (Prometheus on every address, port 9090) is stopped and disabled where
/// this setup installed it, so a test machine exposes nothing it did not ask
/// for.
const PACKAGE_SERVICES: &[(&str, &str)] = &[
    ("prometheus", "prometheus"),
    ("redis-server", "redis-server"),
];

fn stop_package_services(installed: &[&str]) -> Result<()> {
    for &(package, service) in PACKAGE_SERVICES {
        if !installed.contains(&package) {
            continue;
        }
        if std::path::Path::new("/run/systemd/system").exists() {
            process::run(Command::new("systemctl").args(["disable", "--now", service]))?;
        } else if std::path::Path::new(&format!("/etc/init.d/{service}")).exists() {
            // Without systemd, invoke-rc.d may have started it through its
            // init script; stopping one that is not running succeeds.
            process::run(Command::new(format!("/etc/init.d/{service}")).arg("stop"))?;
            process::run(Command::new("update-rc.d").args([service, "disable"]))?;
        }
    }
    Ok(())
}

/// One `apt-get install` run.
#[derive(Debug, PartialEq)]
struct InstallPlan {
    /// Extra `-o` options (a sources overlay with backports).
    apt_options: Vec<String>,
    /// `-t SUITE`: take these packages AND the dependencies they need from
    /// SUITE. Naming only the package (`name/SUITE`) leaves its dependencies on
    /// the main suite, and backports' qemu-system-x86 needs backports'
    /// qemu-system-common, qemu-system-data and seabios (unmet otherwise).
    target_release: Option<String>,
    packages: Vec<String>,
}

#[derive(Clone, Copy)]
enum AptAction {
    Install,
    /// A dry run (`-s`): what would happen, with no lock taken.
    Simulate,
}

impl InstallPlan {
    fn plain(packages: &[&str]) -> Self {
        InstallPlan {
            apt_options: Vec::new(),
            target_release: None,
            packages: packages.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn from_suite(packages: &[&str], suite: &str, apt_options: Vec<String>) -> Self {
        InstallPlan {
            apt_options,
            target_release: Some(suite.to_string()),
            ..InstallPlan::plain(packages)
        }
    }

    fn apt_args(&self, action: AptAction) -> Vec<String> {
        let mut args = self.apt_options.clone();
        if let Some(suite) = &self.target_release {
            args.extend(["-t".to_string(), suite.clone()]);
        }
        args.push("install".to_string());
        args.extend(
            match action {
                // Belt and braces: plan_install already checked that nothing goes.
                AptAction::Install => ["-y", "--no-install-recommends", "--no-remove"],
                // Without --no-remove, so the dry run lists what would go.
                AptAction::Simulate => ["-s", "--no-install-recommends", ""],
            }
            .into_iter()
            .filter(|a| !a.is_empty())
            .map(str::to_string),
        );
        args.extend(self.packages.iter().cloned());
        args
    }
}

/// How to install the packages a group allows to come from backports.
#[derive(Debug, PartialEq)]
enum Route {
    /// From Debian's main suite, like every other package.
    Main,
    /// From backports with their dependencies (`-t`); `overlay` when the
    /// system's sources do not list backports and a sources overlay adds it.
    Backports { overlay: bool },
    /// Nothing can install them without removing a package.
    Refuse,
}

/// Setup never removes a package to install another (a developer's machine is
/// not ours to trim). For each package a group allows from backports, in order:
/// 1. apt already offers it from backports: take it from there.
/// 2. The main suite has it and installing it removes nothing: do that.
/// 3. Otherwise (the main suite lacks it, as bookworm lacks golang-1.23-go, or
///    would remove a package to install it) take it from backports through a
///    sources overlay that adds the backports suite for this apt run only
///    (nothing under /etc/apt changes).
/// 4. No backports suite known: stop and say why.
fn choose_route(
    offered_by_backports: bool,
    main_offers: bool,
    main_removes: bool,
    suite_known: bool,
) -> Route {
    match (suite_known, offered_by_backports, main_offers, main_removes) {
        (true, true, _, _) => Route::Backports { overlay: false },
        (_, _, true, false) => Route::Main,
        (true, false, _, _) => Route::Backports { overlay: true },
        (false, _, _, _) => Route::Refuse,
    }
}

/// The apt runs that install `missing`: the packages no group allows from
/// backports in one plain run, the others routed one by one by choose_route
/// and installed together by route. Every plan is simulated first: none may
/// remove an installed package.
fn plan_install(missing: &[&str]) -> Result<Vec<InstallPlan>> {
    let (eligible, main_only): (Vec<&str>, Vec<&str>) = missing
        .iter()
        .partition(|p| PACKAGE_GROUPS.iter().any(|g| g.backports.contains(p)));
    let mut plans = Vec::new();
    if !main_only.is_empty() {
        plans.push(checked(InstallPlan::plain(&main_only))?);
    }
    if eligible.is_empty() {
        return Ok(plans);
    }
    let suite = backports_suite();
    let (mut main, mut from_suite, mut via_overlay) = (Vec::new(), Vec::new(), Vec::new());
    for package in eligible {
        let offered = suite
            .as_deref()
            .is_some_and(|s| apt_offers_from(package, s));
        let main_offers = !offered && apt_has_candidate(package);
        let removals = if main_offers {
            simulated_removals(&InstallPlan::plain(&[package]))?
        } else {
            Vec::new()
        };
        match (
            choose_route(offered, main_offers, !removals.is_empty(), suite.is_some()),
            suite.as_deref(),
        ) {
            (Route::Backports { overlay: false }, Some(_)) => from_suite.push(package),
            (Route::Backports { overlay: true }, Some(suite)) => {
                let main_suite = suite.trim_end_matches("-backports");
                if main_offers {
                    eprintln!(
                        "xtask: installing {package} from {main_suite} would remove {}; \
                         taking {package} and its dependencies from {suite} instead",
                        removals.join(" ")
                    );
                } else {
                    eprintln!("xtask: {main_suite} has no {package}; taking it from {suite}");
                }
                via_overlay.push(package);
            }
            // Refused: the plain run's simulation says why it cannot be.
            _ => main.push(package),
        }
    }
    if !main.is_empty() {
        plans.push(checked(InstallPlan::plain(&main))?);
    }
    if let Some(suite) = suite.as_deref() {
        if !from_suite.is_empty() {
            plans.push(checked(InstallPlan::from_suite(
                &from_suite,
                suite,
                Vec::new(),
            ))?);
        }
        if !via_overlay.is_empty() {
            let overlay = backports_overlay(suite)?;
            plans.push(checked(InstallPlan::from_suite(
                &via_overlay,
                suite,
                overlay,
            ))?);
        }
    }
    Ok(plans)
}

fn checked(plan: InstallPlan) -> Result<InstallPlan> {
    let removals = simulated_removals(&plan)?;
    if !removals.is_empty() {
        bail!(
            "installing {} would remove installed packages: {}. Setup never removes \
             packages; remove them yourself if you do not need them, then re-run",
            plan.packages.join(" "),
            removals.join(" ")
        );
    }
    Ok(plan)
}

/// What `apt-get install -s` would remove (a dry run; needs no lock).
fn simulated_removals(plan: &InstallPlan) -> Result<Vec<String>> {
    let out = apt_get()
        .args(plan.apt_args(AptAction::Simulate))
        .output()
        .context("could not run apt-get")?;
    if !out.status.success() {
        bail!(
            "apt-get cannot install {}:\n{}",
            plan.packages.join(" "),
            String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(parse_removals(&String::from_utf8_lossy(&out.stdout)))
}

/// `Remv NAME [VERSION]` lines of a simulated install.
fn parse_removals(simulation: &str) -> Vec<String> {
    simulation
        .lines()
        .filter_map(|l| l.strip_prefix("Remv "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// `<codename>-backports` of this Debian release, from /etc/os-release.
fn backports_suite() -> Option<String> {
    let release = std::fs::read_to_string("/etc/os-release").ok()?;
    let codename = release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))?
        .trim_matches('"');
    (!codename.is_empty()).then(|| format!("{codename}-backports"))
}

/// Whether `apt-cache policy` lists a version of `package` from `suite`.
fn apt_offers_from(package: &str, suite: &str) -> bool {
    Command::new("apt-cache")
        .args(["policy", package])
        .output()
        .is_ok_and(|o| policy_lists_suite(&String::from_utf8_lossy(&o.stdout), suite))
}

/// Whether apt has a version of `package` to install from the sources it
/// reads (`Candidate:` is `(none)`, or absent for a name no source lists,
/// otherwise).
fn apt_has_candidate(package: &str) -> bool {
    Command::new("apt-cache")
        .args(["policy", package])
        .output()
        .is_ok_and(|o| policy_has_candidate(&String::from_utf8_lossy(&o.stdout)))
}

fn policy_has_candidate(policy: &str) -> bool {
    policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .is_some_and(|candidate| candidate.trim() != "(none)")
}

/// Version-table lines look like `500 http://deb.debian.org/debian
/// bookworm-backports/main amd64 Packages`.
fn policy_lists_suite(policy: &str, suite: &str) -> bool {
    let needle = format!(" {suite}/");
    policy.lines().any(|l| l.contains(&needle))
}

/// A sources.list.d of our own: the system's entries (symlinked, so they stay
/// the system's) plus the backports suite, used through Dir::Etc::sourceparts by
/// this apt run only; /etc/apt/sources.list itself is still read. Runs
/// `apt-get update` with it and returns the options for the install.
fn backports_overlay(suite: &str) -> Result<Vec<String>> {
    let dir = workspace::target_dir().join("apt").join("sources.list.d");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("could not empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    let system = std::path::Path::new("/etc/apt/sources.list.d");
    if let Ok(entries) = std::fs::read_dir(system) {
        for entry in entries.flatten() {
            std::os::unix::fs::symlink(entry.path(), dir.join(entry.file_name()))
                .with_context(|| format!("could not link {}", entry.path().display()))?;
        }
    }
    std::fs::write(
        dir.join(format!("xtask-{suite}.sources")),
        format!(
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {suite}\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        ),
    )
    .context("could not write the backports source")?;
    let options = vec![
        "-o".to_string(),
        format!("Dir::Etc::sourceparts={}", dir.display()),
    ];
    process::run(apt_get().args(&options).arg("update"))?;
    Ok(options)
}

fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// One dpkg-query for all packages keeps the no-op path fast. Unknown packages make
/// dpkg-query exit 1 and are simply absent from its output.
fn missing_packages(wanted: &[&'static str]) -> Result<Vec<&'static str>> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${Package}\\t${Status}\\n"])
        .args(wanted)
        .output()
        .context("could not run dpkg-query: `cargo xtask setup` supports Debian only")?;
    let statuses = parse_dpkg_statuses(&String::from_utf8_lossy(&output.stdout));
    Ok(wanted
        .iter()
        .copied()
        .filter(|p| statuses.get(*p).map(String::as_str) != Some("install ok installed"))
        .collect())
}

fn parse_dpkg_statuses(stdout: &str) -> HashMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(pkg, status)| (pkg.to_string(), status.trim().to_string()))
        .collect()
}

/// Where Debian's rustc 1.63 is kept: `rustc`, and `version`, the package
/// version it was taken from. The DWARF test builds its Rust fixture with
/// `rustc --sysroot /usr -C prefer-dynamic` (tests/tests/integration/suites/dwarf.rs).
fn debian_rustc_dir() -> PathBuf {
    workspace::target_dir().join("debian-rustc")
}

/// Debian's rustc 1.63, the compiler of the libstd-rust-dev installed above.
/// Its package cannot be installed here: rustc-web (the eBPF build's
/// compiler) conflicts with it and owns /usr/bin/rustc. Its /usr/bin/rustc is
/// only a driver of librustc_driver, which libstd-rust-1.63 installs, so that
/// one file, taken from the `rustc` package of the same version, makes the
/// compiler. It goes under the target dir, on no PATH: rustup's cargo and
/// rustc, and rustc-web's /usr/bin/rustc, stay the ones that run.
fn ensure_debian_rustc() -> Result<()> {
    let version = installed_version("libstd-rust-dev")?;
    let dir = debian_rustc_dir();
    let have = fs::read_to_string(dir.join("version")).unwrap_or_default();
    if have == version && dir.join("rustc").exists() {
        return Ok(());
    }
    eprintln!(
        "xtask: taking Debian's rustc {version} from its package into {}",
        dir.display()
    );
    let scratch = workspace::target_dir().join(format!(".debian-rustc-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)
        .with_context(|| format!("could not create {}", scratch.display()))?;
    // Filled in a scratch dir renamed into place: an interrupted run leaves
    // no half-made compiler behind.
    let result = extract_debian_rustc(&version, &scratch).and_then(|()| {
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&scratch, &dir)
            .with_context(|| format!("could not move {} into place", dir.display()))
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&scratch);
    }
    result
}

fn extract_debian_rustc(version: &str, scratch: &Path) -> Result<()> {
    process::run(
        Command::new("apt-get")
            // As root apt downloads as the `_apt` user, which cannot write to a
            // root-owned target dir.
            .args(["-o", "APT::Sandbox::User=root", "download"])
            .arg(format!("rustc={version}"))
            .current_dir(scratch),
    )?;
    let deb = fs::read_dir(scratch)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb for rustc")?;
    let tree = scratch.join("tree");
    process::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    let rustc = scratch.join("rustc");
    fs::rename(tree.join("usr/bin/rustc"), &rustc)
        .context("the rustc package has no usr/bin/rustc")?;
    fs::remove_dir_all(&tree)?;
    fs::remove_file(&deb)?;
    // It runs only with the librustc_driver of its own version.
    let out = Command::new(&rustc)
        .arg("--version")
        .output()
        .with_context(|| format!("could not run {}", rustc.display()))?;
    let said = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !reports_rustc_version(&said, version) {
        bail!(
            "Debian's rustc {version} does not run with the installed libstd-rust: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fs::write(scratch.join("version"), version)?;
    Ok(())
}

/// `rustc --version` prints e.g. `rustc 1.63.0` for package version
/// `1.63.0+dfsg1-2`.
fn reports_rustc_version(output: &str, package_version: &str) -> bool {
    let upstream = package_version
        .split(['+', '-', '~'])
        .next()
        .unwrap_or_default();
    output.split_whitespace().nth(1) == Some(upstream)
}

/// The installed version of `package` (dpkg's `${Version}`).
fn installed_version(package: &str) -> Result<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", package])
        .output()
        .context("could not run dpkg-query")?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || version.is_empty() {
        bail!("{package} is not installed");
    }
    Ok(version)
}

fn ensure_bpf_linker() -> Result<()> {
    let reported = bpf_linker_version();
    if reported
        .as_deref()
        .is_some_and(|v| reports_version(v, BPF_LINKER_VERSION))
    {
        return Ok(());
    }
    eprintln!(
        "xtask: bpf-linker {BPF_LINKER_VERSION} not found (have: {}); building it (1-3 minutes)",
        reported.as_deref().map_or("none", str::trim)
    );
    let mut install = Command::new(workspace::cargo_program());
    install
        .args(["install", "--locked"])
        .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
        .args(["--no-default-features", "--features", "llvm-22"])
        .env("LLVM_PREFIX", LLVM_PREFIX)
        // Outside the workspace, so its .cargo/config.toml (rustflags, env) stays
        // out of a tool build that has nothing to do with it.
        .current_dir(std::env::temp_dir());
    process::run(&mut install)?;
    // `cargo install` is satisfied by its own copy; another bpf-linker earlier on
    // PATH would still be the one rustc runs.
    let now = bpf_linker_version();
    if !now
        .as_deref()
        .is_some_and(|v| reports_version(v, BPF_LINKER_VERSION))
    {
        bail!(
            "bpf-linker {BPF_LINKER_VERSION} is installed in cargo's bin dir, but the \
             bpf-linker first on PATH reports {:?}; remove that one or put cargo's bin dir first",
            now.as_deref().map_or("nothing", str::trim)
        );
    }
    Ok(())
}

fn bpf_linker_version() -> Option<String> {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `bpf-linker --version` prints e.g. `bpf-linker 0.13.0`.
fn reports_version(output: &str, version: &str) -> bool {
    output.split_whitespace().nth(1) == Some(version)
}

/// The Go module of the OpenTelemetry Collector the OTLP tests run
/// (tests/collector/main.go says what it holds and why).
const COLLECTOR_MODULE: &str = "tests/collector";
/// The module's files that decide what is built: a change to any of them
/// builds anew (the configuration, README's, is read by the tests at run
/// time, not built in).
const COLLECTOR_SOURCES: [&str; 3] = ["go.mod", "go.sum", "main.go"];
const COLLECTOR_BIN: &str = "otelcol-clockprof";
/// `go build`'s arguments, part of the cache key so changing them rebuilds.
/// -buildvcs=false: the clone's git state is no input (and a clone owned by
/// another user would make go's git call fail).
const COLLECTOR_BUILD_ARGS: [&str; 4] = ["build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w"];
/// Where a Go toolchain is looked for when the `go` on PATH is too old (Debian
/// 12's golang-go, installed by the fixtures group, is 1.19; sudo's PATH often
/// lacks /usr/local/go/bin): the usual manual install, then Debian's versioned
/// golang-1.NN packages.
const GO_FALLBACKS: [&str; 1] = ["/usr/local/go/bin/go"];
const DEBIAN_GO_DIRS: &str = "/usr/lib";

/// `<cache>/otelcol`: one directory per build, named by collector_key, beside
/// the Go build and module caches that every build shares (`go-build`,
/// `go-mod`), so a fresh clone, such as CI's, neither downloads the modules
/// again nor rebuilds the Collector.
fn collector_cache_root() -> PathBuf {
    workspace::cache_dir().join("otelcol")
}

/// The Collector binary `cargo xtask setup` builds for the current
/// tests/collector sources; `cargo xtask test` passes it to the tests as
/// `CLOCKPROF_OTELCOL`.
pub fn collector_binary() -> PathBuf {
    match collector_key() {
        Ok(key) => collector_cache_root().join(key).join(COLLECTOR_BIN),
        Err(err) => panic!("{err:#}"),
    }
}

/// A short hash of go.mod, go.sum, main.go and the build's arguments.
fn collector_key() -> Result<String> {
    let module = workspace::root().join(COLLECTOR_MODULE);
    let mut files = Vec::new();
    for name in COLLECTOR_SOURCES {
        let path = module.join(name);
        let content =
            fs::read(&path).with_context(|| format!("could not read {}", path.display()))?;
        files.push((name, content));
    }
    Ok(cache_key(&files, &COLLECTOR_BUILD_ARGS))
}

/// FNV-1a (64 bits) over each file's name, length and content, then the build
/// arguments, as 16 hex digits. Not a defence against anyone: it only tells
/// one checked-in version of the sources from another, stably across Rust
/// releases (std's DefaultHasher is not).
fn cache_key(files: &[(&str, Vec<u8>)], build_args: &[&str]) -> String {
    let mut hash = Fnv1a::default();
    for (name, content) in files {
        hash.write(name.as_bytes());
        hash.write(&[0]);
        hash.write(&(content.len() as u64).to_le_bytes());
        hash.write(content);
    }
    for arg in build_args {
        hash.write(arg.as_bytes());
        hash.write(&[0]);
    }
    format!("{:016x}", hash.0)
}

struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Builds the OpenTelemetry Collector of the OTLP tests (tests/collector: the
/// OTLP receiver and contrib's file exporter) from its Go modules into
/// collector_binary(), unless it is there already (the no-op path: three small
/// files hashed, one stat). The machine's Go builds it, offline once the module
/// cache holds the modules: -mod=readonly (go.sum is checked in, nothing is
/// resolved anew), GOTOOLCHAIN=local (no toolchain download), CGO_ENABLED=0.
/// It is built under a temporary name and renamed, so an interrupted build
/// leaves no binary behind, and the builds of earlier sources are removed.
fn ensure_collector() -> Result<()> {
    let key = collector_key()?;
    let root = collector_cache_root();
    let dir = root.join(&key);
    let binary = dir.join(COLLECTOR_BIN);
    if binary.is_file() {
        return Ok(());
    }
    let module = workspace::root().join(COLLECTOR_MODULE);
    let go_mod = module.join("go.mod");
    let required = fs::read_to_string(&go_mod)
        .ok()
        .as_deref()
        .and_then(go_mod_version)
        .with_context(|| format!("{} has no readable `go` line", go_mod.display()))?;
    let go = find_go(required)?;
    eprintln!(
        "xtask: building the OpenTelemetry Collector for the OTLP tests into {} with {} \
         (go{}; takes a few minutes once)",
        binary.display(),
        go.0.display(),
        go.1
    );
    fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    // Left by a build that was killed.
    for entry in fs::read_dir(&dir)?.flatten() {
        if entry.file_name().to_string_lossy().contains(".partial-") {
            let _ = fs::remove_file(entry.path());
        }
    }
    let partial = dir.join(format!("{COLLECTOR_BIN}.partial-{}", std::process::id()));
    let mut build = Command::new(&go.0);
    build
        .args(COLLECTOR_BUILD_ARGS)
        .arg("-o")
        .arg(&partial)
        .arg(".")
        .current_dir(&module)
        .env("GOCACHE", root.join("go-build"))
        .env("GOMODCACHE", root.join("go-mod"))
        .env("GOFLAGS", "-mod=readonly")
        .env("GOTOOLCHAIN", "local")
        .env("GOWORK", "off")
        .env("CGO_ENABLED", "0");
    let result = process::run(&mut build).and_then(|()| {
        fs::rename(&partial, &binary)
            .with_context(|| format!("could not move {} into place", binary.display()))
    });
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result?;
    let names: Vec<String> = fs::read_dir(&root)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for old in superseded_builds(&names, &key) {
        let _ = fs::remove_dir_all(root.join(old));
    }
    Ok(())
}

/// The build directories of other sources than `key`'s (named like a key; the
/// shared Go caches beside them are not).
fn superseded_builds<'a>(names: &'a [String], key: &str) -> Vec<&'a str> {
    names
        .iter()
        .map(String::as_str)
        .filter(|n| *n != key && n.len() == 16 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect()
}

/// A Go release as (major, minor, patch); `go1.26` and `go1.26rc1` count as
/// 1.26.0.
type GoVersion = (u32, u32, u32);

/// The version of a `go` line (`go 1.26.0`, `go 1.26`) of a go.mod.
fn go_mod_version(go_mod: &str) -> Option<GoVersion> {
    go_mod
        .lines()
        .find_map(|l| l.trim().strip_prefix("go "))
        .and_then(|v| parse_go_version(v.trim()))
}

/// `1.26.8`, `1.26`, `1.27rc1` (without the `go` of `go env GOVERSION`).
fn parse_go_version(version: &str) -> Option<GoVersion> {
    let mut parts = version.split('.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let major = parts.next()??;
    let minor = parts.next()??;
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// What `go env GOVERSION` says, e.g. `go1.26.8` (an experiment build adds
/// ` X:...`).
fn goversion_of(output: &str) -> Option<GoVersion> {
    parse_go_version(output.split_whitespace().next()?.strip_prefix("go")?)
}

fn show_version(v: GoVersion) -> String {
    format!("{}.{}.{}", v.0, v.1, v.2)
}

/// The `go` on PATH if it is at least `required`, else the first that is of
/// GO_FALLBACKS, then Debian's /usr/lib/go-1.NN (newest first).
fn find_go(required: GoVersion) -> Result<(PathBuf, String)> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("go"))
        .filter(|go| go.is_file())
        .take(1)
        .collect();
    candidates.extend(GO_FALLBACKS.iter().map(PathBuf::from));
    let mut debian: Vec<(GoVersion, PathBuf)> = fs::read_dir(DEBIAN_GO_DIRS)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = parse_go_version(name.strip_prefix("go-")?)?;
            Some((version, e.path().join("bin/go")))
        })
        .collect();
    debian.sort();
    candidates.extend(debian.into_iter().rev().map(|(_, go)| go));

    let mut seen = Vec::new();
    let mut found = Vec::new();
    for go in candidates {
        let Ok(real) = fs::canonicalize(&go) else {
            continue;
        };
        if seen.contains(&real) {
            continue;
        }
        seen.push(real);
        let out = Command::new(&go)
            .args(["env", "GOVERSION"])
            .env("GOTOOLCHAIN", "local")
            .current_dir(std::env::temp_dir())
            .output();
        let said = out
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        match goversion_of(&said) {
            Some(v) if v >= required => return Ok((go, show_version(v))),
            _ => found.push(format!("{} says {:?}", go.display(), said)),
        }
    }
    bail!(
        "building the OpenTelemetry Collector of the OTLP tests ({COLLECTOR_MODULE}) needs Go \
         {} or newer, and none was found ({}): put a newer `go` first on PATH or install one \
         at /usr/local/go (Debian 12's golang-go, 1.19, is too old)",
        show_version(required),
        if found.is_empty() {
            "no go at all".to_string()
        } else {
            found.join("; ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_packages_exclude_optional_groups() {
        let pkgs = packages(&[]);
        assert!(pkgs.contains(&"llvm-22-dev"));
        assert!(pkgs.contains(&"bpftrace"));
        assert!(!pkgs.contains(&"qemu-system-x86"));
        assert!(packages(&["vm".into()]).contains(&"qemu-system-x86"));
    }

    #[test]
    fn dpkg_status_lines_parse() {
        let s = parse_dpkg_statuses("gcc\tinstall ok installed\nfoo\tdeinstall ok config-files\n");
        assert_eq!(s["gcc"], "install ok installed");
        assert_eq!(s["foo"], "deinstall ok config-files");
    }

    #[test]
    fn backports_plans_take_dependencies_from_backports_too() {
        let overlay = vec!["-o".to_string(), "Dir::Etc::sourceparts=/t/apt".to_string()];
        let plan = InstallPlan::from_suite(&["qemu-system-x86"], "bookworm-backports", overlay);
        assert_eq!(
            plan.apt_args(AptAction::Install),
            [
                "-o",
                "Dir::Etc::sourceparts=/t/apt",
                "-t",
                "bookworm-backports",
                "install",
                "-y",
                "--no-install-recommends",
                "--no-remove",
                "qemu-system-x86"
            ]
        );
        // The dry run must be free to list removals.
        assert_eq!(
            InstallPlan::plain(&["gcc", "golang-go"]).apt_args(AptAction::Simulate),
            [
                "install",
                "-s",
                "--no-install-recommends",
                "gcc",
                "golang-go"
            ]
        );
        assert!(PACKAGE_GROUPS
            .iter()
            .all(|g| g.backports.iter().all(|b| g.packages.contains(b))));
    }

    #[test]
    fn routes_never_remove_a_package() {
        // (offered by backports, main offers, main removes, suite known)
        // A fresh image: qemu-utils from backports, no backports in the sources.
        assert_eq!(
            choose_route(false, true, true, true),
            Route::Backports { overlay: true }
        );
        assert_eq!(choose_route(false, true, false, true), Route::Main);
        assert_eq!(
            choose_route(true, false, false, true),
            Route::Backports { overlay: false }
        );
        assert_eq!(choose_route(false, true, true, false), Route::Refuse);
        assert_eq!(choose_route(false, true, false, false), Route::Main);
        // golang-1.23-go: bookworm has none, backports is not in the sources.
        assert_eq!(
            choose_route(false, false, false, true),
            Route::Backports { overlay: true }
        );
        assert_eq!(choose_route(false, false, false, false), Route::Refuse);
    }

    #[test]
    fn reads_whether_apt_has_a_candidate() {
        let main = "golang-go:\n  Installed: 2:1.19~1\n  Candidate: 2:1.19~1\n  Version table:\n";
        assert!(policy_has_candidate(main));
        assert!(!policy_has_candidate(
            "golang-1.23-go:\n  Installed: (none)\n  Candidate: (none)\n  Version table:\n"
        ));
        // A name no source lists: apt-cache policy prints nothing.
        assert!(!policy_has_candidate(""));
        assert!(PACKAGE_GROUPS
            .iter()
            .any(|g| g.backports.contains(&"golang-1.23-go") && g.default));
    }

    #[test]
    fn reads_simulated_removals_and_policy_suites() {
        let sim = "Inst libfdt1 (1.6.1-4+b1 Debian:12.15/oldstable [amd64])\n\
                   Remv qemu-utils [1:10.0.2+ds-2+deb13u1~bpo12+1]\n\
                   Inst qemu-system-x86 (1:7.2+dfsg-7+deb12u18+b3 Debian:12.15/oldstable [amd64])\n";
        assert_eq!(parse_removals(sim), ["qemu-utils"]);
        assert!(parse_removals("Inst a (1 x)\nConf a (1 x)\n").is_empty());
        let policy = "qemu-system-x86:\n  Installed: (none)\n  Version table:\n     \
                      1:10.0.2+ds-2+deb13u1~bpo12+1 100\n        100 \
                      http://deb.debian.org/debian bookworm-backports/main amd64 Packages\n";
        assert!(policy_lists_suite(policy, "bookworm-backports"));
        assert!(!policy_lists_suite(
            "        500 http://deb.debian.org/debian bookworm/main amd64 Packages\n",
            "bookworm-backports"
        ));
    }

    #[test]
    fn debian_rustc_version_matches_its_package() {
        assert!(reports_rustc_version("rustc 1.63.0\n", "1.63.0+dfsg1-2"));
        assert!(!reports_rustc_version(
            "rustc 1.96.0 (ac68faa20 2026-05-25)",
            "1.63.0+dfsg1-2"
        ));
        assert!(!reports_rustc_version("", "1.63.0+dfsg1-2"));
    }

    #[test]
    fn bpf_linker_version_matches_exactly() {
        assert!(reports_version("bpf-linker 0.13.0\n", "0.13.0"));
        assert!(!reports_version("bpf-linker 0.13.1\n", "0.13.0"));
        assert!(!reports_version("", "0.13.0"));
    }

    #[test]
    fn collector_cache_key_is_stable_and_covers_everything() {
        // FNV-1a's published vectors.
        let mut h = Fnv1a::default();
        assert_eq!(h.0, 0xcbf29ce484222325);
        h.write(b"a");
        assert_eq!(h.0, 0xaf63dc4c8601ec8c);

        let files = |main: &str| {
            vec![
                ("go.mod", b"module m\n".to_vec()),
                ("main.go", main.as_bytes().to_vec()),
            ]
        };
        let key = cache_key(&files("package main\n"), &["build"]);
        assert_eq!(key.len(), 16);
        assert_eq!(key, cache_key(&files("package main\n"), &["build"]));
        assert_ne!(key, cache_key(&files("package main \n"), &["build"]));
        assert_ne!(
            key,
            cache_key(&files("package main\n"), &["build", "-race"])
        );
        // Bytes moving from one file to the next change the key too.
        let a = vec![("a", b"xy".to_vec()), ("b", b"z".to_vec())];
        let b = vec![("a", b"x".to_vec()), ("b", b"yz".to_vec())];
        assert_ne!(cache_key(&a, &[]), cache_key(&b, &[]));
    }

    #[test]
    fn superseded_collector_builds_spare_the_go_caches() {
        let names: Vec<String> = [
            "0123456789abcdef",
            "fedcba9876543210",
            "go-build",
            "go-mod",
            "x.tmp",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            superseded_builds(&names, "0123456789abcdef"),
            ["fedcba9876543210"]
        );
    }

    #[test]
    fn go_versions_parse_and_compare() {
        assert_eq!(
            go_mod_version("module m\n\ngo 1.26.0\n\nrequire x v1\n"),
            Some((1, 26, 0))
        );
        assert_eq!(go_mod_version("module m\ngo 1.24\n"), Some((1, 24, 0)));
        assert_eq!(go_mod_version("module m\n"), None);
        // A `toolchain` line is not the go line.
        assert_eq!(
            go_mod_version("toolchain go1.27.1\ngo 1.26.0\n"),
            Some((1, 26, 0))
        );
        assert_eq!(goversion_of("go1.26.8\n"), Some((1, 26, 8)));
        assert_eq!(goversion_of("go1.19.8"), Some((1, 19, 8)));
        assert_eq!(goversion_of("go1.27rc1"), Some((1, 27, 0)));
        assert_eq!(
            goversion_of("go1.26.8 X:nocoverageredesign"),
            Some((1, 26, 8))
        );
        assert_eq!(goversion_of("devel +abc"), None);
        assert_eq!(goversion_of(""), None);
        assert!((1, 26, 8) >= (1, 26, 0));
        assert!((1, 19, 8) < (1, 26, 0));
        assert!((1, 100, 0) > (1, 26, 9));
        assert_eq!(parse_go_version("1.22"), Some((1, 22, 0)));
    }
}

//! `cargo xtask setup`: installs the Debian packages and the bpf-linker the build
//! needs. Every other task calls it first, so its no-op path must stay fast: two
//! dpkg-queries, a file read and one `bpf-linker --version`.

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
        why: "compile the C and Go busy-loop fixtures and the bench loop",
        default: true,
        packages: &["gcc", "libc6-dev", "golang-go"],
        backports: &[],
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
              over https",
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
    ensure_bpf_linker()
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
/// not ours to trim). In order:
/// 1. apt already offers them from backports: take them from there.
/// 2. A plain install removes nothing: do that.
/// 3. Otherwise take them from backports through a sources overlay that adds
///    the backports suite for this apt run only (nothing under /etc/apt changes).
/// 4. No backports suite known: stop and say what would go.
fn choose_route(offered_by_backports: bool, main_removes: bool, suite_known: bool) -> Route {
    match (suite_known, offered_by_backports, main_removes) {
        (true, true, _) => Route::Backports { overlay: false },
        (_, _, false) => Route::Main,
        (true, false, true) => Route::Backports { overlay: true },
        (false, _, true) => Route::Refuse,
    }
}

/// The apt runs that install `missing`: the packages no group allows from
/// backports in one plain run, the others routed by choose_route. Every plan is
/// simulated first: none may remove an installed package.
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
    let offered = suite
        .as_deref()
        .is_some_and(|s| eligible.iter().all(|p| apt_offers_from(p, s)));
    let main = InstallPlan::plain(&eligible);
    let removals = if offered {
        Vec::new()
    } else {
        simulated_removals(&main)?
    };
    let plan = match (
        choose_route(offered, !removals.is_empty(), suite.is_some()),
        suite.as_deref(),
    ) {
        (Route::Backports { overlay: false }, Some(suite)) => {
            InstallPlan::from_suite(&eligible, suite, Vec::new())
        }
        (Route::Backports { overlay: true }, Some(suite)) => {
            eprintln!(
                "xtask: installing {} from {} would remove {}; taking {} and its \
                 dependencies from {suite} instead",
                eligible.join(" "),
                suite.trim_end_matches("-backports"),
                removals.join(" "),
                eligible.join(" ")
            );
            InstallPlan::from_suite(&eligible, suite, backports_overlay(suite)?)
        }
        _ => main,
    };
    plans.push(checked(plan)?);
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
        // A fresh image: qemu-utils from backports, no backports in the sources.
        assert_eq!(
            choose_route(false, true, true),
            Route::Backports { overlay: true }
        );
        assert_eq!(choose_route(false, false, true), Route::Main);
        assert_eq!(
            choose_route(true, true, true),
            Route::Backports { overlay: false }
        );
        assert_eq!(
            choose_route(true, false, true),
            Route::Backports { overlay: false }
        );
        assert_eq!(choose_route(false, true, false), Route::Refuse);
        assert_eq!(choose_route(false, false, false), Route::Main);
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
}

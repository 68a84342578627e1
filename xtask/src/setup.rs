//! `cargo xtask setup`: installs the Debian packages and the bpf-linker the build
//! needs. Every other task calls it first, so its no-op path must stay fast: one
//! dpkg-query and one `bpf-linker --version`.

use std::collections::HashMap;
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
    },
    PackageGroup {
        name: "fixtures",
        why: "compile the C and Go busy-loop fixtures and the bench loop",
        default: true,
        packages: &["gcc", "libc6-dev", "golang-go"],
    },
    PackageGroup {
        name: "test-tools",
        why: "bpftrace as the bench's reference tracer, tmux to drive the TUI in tests, \
              python3 for the contract check",
        default: true,
        packages: &["bpftrace", "tmux", "python3"],
    },
    PackageGroup {
        name: "vm",
        why: "boot a stock Debian kernel under QEMU for the kprobe, fentry and breakpoint tests, VM.md",
        default: false,
        packages: &["qemu-system-x86", "busybox-static"],
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
    process::run(
        apt_get()
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )?;
    let still_missing = missing_packages(wanted)?;
    if !still_missing.is_empty() {
        bail!(
            "apt-get reported success but these packages are still not installed: {}",
            still_missing.join(" ")
        );
    }
    Ok(())
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
    fn bpf_linker_version_matches_exactly() {
        assert!(reports_version("bpf-linker 0.13.0\n", "0.13.0"));
        assert!(!reports_version("bpf-linker 0.13.1\n", "0.13.0"));
        assert!(!reports_version("", "0.13.0"));
    }
}

//! `cargo xtask clean-root`: the .deb `dist` built, installed into a clean
//! Debian root as a production host would have it (`debootstrap
//! --variant=minbase`: no compiler, no tools of ours), and run there:
//! `dpkg -i` succeeds, `clockprof doctor` runs, `record -s syscall -- sh -c
//! 'date; date'` writes a profile, and `serve` answers `/healthz`, as root
//! and then as an unprivileged user holding only the packaged unit's
//! capabilities (issue 24, item 5).
//!
//! The root is made once and kept in the dev cache
//! (`/var/cache/clockprof-dev/roots/`, outside the clone, as the VM kernels
//! are); each run lays a fresh overlay over it, in a private mount
//! namespace (`unshare -m`) whose mounts (the overlay, /proc, /sys, /dev
//! bound in) end with the namespace, so nothing is left behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::setup::{self, SetupArgs};
use crate::{process, workspace};

/// Where the minbase roots are kept, one per suite.
fn roots_dir() -> PathBuf {
    workspace::cache_dir().join("roots")
}

/// What a finished debootstrap leaves, so a root cut short is made again.
const COMPLETE: &str = ".clockprof-root-complete";

/// The suite's minbase root, made with debootstrap the first time.
fn ensure_root(suite: &str) -> Result<PathBuf> {
    let root = roots_dir().join(format!("{suite}-minbase"));
    if root.join(COMPLETE).exists() {
        return Ok(root);
    }
    if root.exists() {
        fs::remove_dir_all(&root)
            .with_context(|| format!("could not remove the unfinished {}", root.display()))?;
    }
    fs::create_dir_all(roots_dir())?;
    let started = Instant::now();
    process::run(
        Command::new("debootstrap")
            .args(["--variant=minbase", suite])
            .arg(&root)
            .arg("http://deb.debian.org/debian"),
    )
    .with_context(|| format!("debootstrap of {suite} failed"))?;
    fs::write(root.join(COMPLETE), "")?;
    eprintln!(
        "xtask: clean-root: made the {suite} root in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(root)
}

/// Run in the private mount namespace with: $1 the cached root, $2 the
/// .deb, $3 a scratch directory, $4 a free port, $5 the syscall fixture
/// built static (minbase has no compiler, and a static binary needs nothing
/// of the root's), $6 `yes` to run serve with only the unit's capabilities
/// (else why not). Every command inside the
/// root is the package's; the /healthz request is bash's /dev/tcp, from
/// outside (minbase has no HTTP client, and the network is shared).
const SCRIPT: &str = r#"set -eu
root=$1 deb=$2 scratch=$3 port=$4 fixture=$5 unit_capabilities=$6
mkdir -p "$scratch/upper" "$scratch/work" "$scratch/merged"
r=$scratch/merged
mount -t overlay overlay -o "lowerdir=$root,upperdir=$scratch/upper,workdir=$scratch/work" "$r"
mount --rbind /proc "$r/proc"
mount --rbind /sys "$r/sys"
mount --rbind /dev "$r/dev"
mount -t tmpfs tmpfs "$r/tmp"
# A fresh host has no tracefs mounted (nor had this root's debootstrap):
# clockprof then mounts its own in a namespace of its own and must still
# start COMMAND in this root, not in the namespace's (setns resets it).
if mountpoint -q "$r/sys/kernel/tracing"; then umount -l "$r/sys/kernel/tracing"; fi
cp "$deb" "$r/tmp/clockprof.deb"
echo "clean-root: dpkg -i"
chroot "$r" dpkg -i /tmp/clockprof.deb
echo "clean-root: clockprof --version"
chroot "$r" clockprof --version
echo "clean-root: clockprof doctor"
chroot "$r" clockprof doctor
cp "$fixture" "$r/tmp/syscall_fixture"
command="date; date; /tmp/syscall_fixture counts 1000"
echo "clean-root: clockprof record -s syscall -o /tmp/out.folded -- sh -c '$command'"
chroot "$r" clockprof record -s syscall -o /tmp/out.folded -- sh -c "$command"
test -f "$r/tmp/out.folded" || { echo "clean-root: no profile written"; exit 1; }
# date reads the clock through the vDSO (no syscall); the fixture makes
# exactly 1000 CLOCK_MONOTONIC syscalls in fixture_hot and 500 REALTIME in
# fixture_warm, and the profile must say so, named.
reads_in() { awk -v f=";$1;" 'index($0, f) { n += $NF } END { print n + 0 }' "$r/tmp/out.folded"; }
hot=$(reads_in fixture_hot) warm=$(reads_in fixture_warm)
[ "$hot" = 1000 ] && [ "$warm" = 500 ] || {
    echo "clean-root: the profile has $hot reads under fixture_hot and $warm under fixture_warm, not 1000 and 500:"
    cat "$r/tmp/out.folded"
    exit 1
}
echo "clean-root: the profile has 1000 reads under fixture_hot and 500 under fixture_warm"
# serve_until_healthy LABEL CMD...: starts CMD (a serve on $port) in the
# background, waits for its /healthz 200, then stops it with SIGTERM, which
# must end it with status 0.
serve_until_healthy() {
    label=$1; shift
    echo "clean-root: $label"
    "$@" &
    serve=$!
    answered=
    for _ in $(seq 1 300); do
        if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
            printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3
            status=$(head -n 1 <&3 || true)
            exec 3<&- 3>&-
            case $status in *" 200 "*) answered=$status; break ;; esac
        fi
        sleep 0.1
    done
    kill -TERM $serve
    wait $serve || { echo "clean-root: $label exited $? after SIGTERM"; exit 1; }
    [ -n "$answered" ] || { echo "clean-root: $label: /healthz never answered 200"; exit 1; }
    echo "clean-root: $label: /healthz: $answered"
}
serve_until_healthy "clockprof serve as root" \
    chroot "$r" clockprof serve --listen "127.0.0.1:$port"

# The packaged unit's capability set, and nothing else: serve started as an
# unprivileged user (the unit's User= is made by systemd-sysusers, which a
# minbase root lacks; nobody stands in) with exactly the unit's
# AmbientCapabilities as its inheritable, ambient and bounding sets. setpriv
# (util-linux, in every Debian root) does what capsh would; the unit's
# RequiresMountsFor=/sys/kernel/tracing is done here, as systemd would.
if [ "$unit_capabilities" != yes ]; then
    echo "clean-root: serve with only the unit's capabilities is not run here: $unit_capabilities"
    exit 0
fi
unit=$r/usr/lib/systemd/system/clockprof.service
ambient=$(sed -n 's/^AmbientCapabilities=//p' "$unit")
bounding=$(sed -n 's/^CapabilityBoundingSet=//p' "$unit")
[ -n "$ambient" ] || { echo "clean-root: the packaged unit grants no AmbientCapabilities"; exit 1; }
[ "$ambient" = "$bounding" ] || { echo "clean-root: the unit's ambient ($ambient) and bounding ($bounding) sets differ"; exit 1; }
caps=-all
for cap in $ambient; do
    caps="$caps,+$(echo "${cap#CAP_}" | tr 'A-Z' 'a-z')"
done
mountpoint -q "$r/sys/kernel/tracing" || mount -t tracefs nodev "$r/sys/kernel/tracing"
serve_until_healthy "clockprof serve as nobody with only $ambient" \
    chroot "$r" setpriv --reuid=nobody --regid=nogroup --clear-groups \
        --inh-caps="$caps" --ambient-caps="$caps" --bounding-set="$caps" \
        clockprof serve --listen "127.0.0.1:$port"
"#;

/// A Debian release the package is installed into.
pub struct Suite {
    pub name: &'static str,
    /// Why serve with only the unit's capabilities is not run in this root,
    /// if it is not.
    no_capability_run: Option<&'static str>,
}

/// The roots `cargo xtask test` tries the package in: Debian 12, whose
/// package it is, and Debian 11, the oldest the shipped binary's glibc 2.26
/// link (dist/binary.rs) is tried on (its glibc is 2.31).
pub const SUITES: &[Suite] = &[
    Suite {
        name: "bookworm",
        no_capability_run: None,
    },
    Suite {
        name: "bullseye",
        no_capability_run: Some(
            "bullseye's setpriv (util-linux 2.36 on libcap-ng 0.7.9) knows neither CAP_BPF \
             nor CAP_PERFMON; the bookworm root runs it",
        ),
    },
];

/// `cargo xtask clean-root`: needs `cargo xtask dist` first. `suite`
/// chooses one of SUITES; without it, every one runs.
pub fn run(suite: Option<&str>) -> Result<()> {
    let suites: Vec<&Suite> = match suite {
        None => SUITES.iter().collect(),
        Some(name) => vec![SUITES.iter().find(|s| s.name == name).with_context(|| {
            format!(
                "no clean root for {name}; known: {}",
                SUITES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            )
        })?],
    };
    setup::run(&SetupArgs {
        with: vec!["dist".to_string()],
    })?;
    let dist = workspace::target_dir().join("dist");
    let deb = single_deb(&dist)?;
    let build = tempfile::Builder::new()
        .prefix("xtask-clean-root-")
        .tempdir()
        .context("could not make a scratch directory")?;
    let fixture = build.path().join("syscall_fixture");
    process::run(
        Command::new("gcc")
            .args(["-O1", "-g", "-fno-omit-frame-pointer", "-static", "-o"])
            .arg(&fixture)
            .arg(workspace::root().join("tests/fixtures/syscall_fixture.c")),
    )
    .context("could not build the static syscall fixture")?;
    for suite in suites {
        run_in(suite, &deb, &fixture)?;
    }
    Ok(())
}

fn run_in(suite: &Suite, deb: &Path, fixture: &Path) -> Result<()> {
    let started = Instant::now();
    let name = suite.name;
    let root = ensure_root(name)?;
    let scratch = tempfile::Builder::new()
        .prefix("xtask-clean-root-")
        .tempdir()
        .context("could not make a scratch directory")?;
    let port = free_port()?;
    process::run(
        Command::new("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "bash",
                "-c",
                SCRIPT,
                "clean-root",
            ])
            .arg(&root)
            .arg(deb)
            .arg(scratch.path())
            .arg(port.to_string())
            .arg(fixture)
            .arg(suite.no_capability_run.unwrap_or("yes")),
    )
    .with_context(|| {
        format!(
            "{} in a clean {name} root failed (its output is above)",
            deb.display()
        )
    })?;
    eprintln!(
        "xtask clean-root: {} installs and runs in a clean {name} root ({:.0} s)",
        deb.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The one `clockprof_*_amd64.deb` dist left (not the -dbgsym one).
fn single_deb(dist: &Path) -> Result<PathBuf> {
    let debs: Vec<PathBuf> = fs::read_dir(dist)
        .with_context(|| format!("no {}: run `cargo xtask dist` first", dist.display()))?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("clockprof_") && n.ends_with("_amd64.deb"))
        })
        .collect();
    match debs.as_slice() {
        [deb] => Ok(deb.clone()),
        [] => bail!(
            "no clockprof_*_amd64.deb in {}: run `cargo xtask dist` first",
            dist.display()
        ),
        _ => bail!("more than one clockprof_*_amd64.deb in {}", dist.display()),
    }
}

/// A loopback port nobody listens on now.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

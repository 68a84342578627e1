//! Where things are (workspace root, target dir, cargo's bin dir) and the process
//! environment every task starts from.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The workspace root. Taken from where xtask was compiled rather than from the
/// current directory, so `cargo xtask` works from any subdirectory.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Cargo's target dir. Honors CARGO_TARGET_DIR instead of asking `cargo metadata`,
/// which would be slower and fails whenever another crate's manifest is mid-edit.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root().join(dir),
        _ => root().join("target"),
    }
}

/// Where downloads and builds that outlive a clone are kept (VM kernels, the
/// OpenTelemetry Collector built from its Go modules): CI runs in a fresh clone,
/// and refetching them there would cost minutes of every run. Override with
/// `CLOCKPROF_DEV_CACHE`; as root it is `/var/cache/clockprof-dev`, otherwise
/// `$XDG_CACHE_HOME/clockprof-dev` (or `~/.cache/clockprof-dev`).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = env::var_os("CLOCKPROF_DEV_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if is_root() {
        return PathBuf::from("/var/cache/clockprof-dev");
    }
    env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| target_dir().join("cache"))
        .join("clockprof-dev")
}

pub fn release_bin(name: &str) -> PathBuf {
    target_dir().join("release").join(name)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `$CARGO_HOME/bin`, where `cargo install` puts bpf-linker.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    let home = env::var_os("CARGO_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    Some(home.join("bin"))
}

/// The cargo that started xtask (cargo sets $CARGO for `cargo run`), so nested
/// builds use the same toolchain as the outer command.
pub fn cargo_program() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Fixes up the environment inherited by every child process. Runs first in main,
/// before any thread exists.
pub fn sanitize_env() {
    // An exported RUSTC_BOOTSTRAP=1 beats .cargo/config.toml's crate-scoped value
    // and breaks the eBPF build (TOOLCHAIN.md). Dropping it lets the nested cargo
    // apply the config's value again.
    if env::var_os("RUSTC_BOOTSTRAP").is_some_and(|v| v == "1") {
        eprintln!(
            "xtask: ignoring RUSTC_BOOTSTRAP=1 from the environment (it breaks the eBPF build)"
        );
        env::remove_var("RUSTC_BOOTSTRAP");
    }
    // rustc finds bpf-linker by name, and `cargo install` puts it in cargo's bin
    // dir, which a fresh shell (CI, sudo) may not have on PATH.
    if let Some(bin) = cargo_bin_dir() {
        let path = env::var_os("PATH").unwrap_or_default();
        if !env::split_paths(&path).any(|p| p == bin) {
            let joined = env::join_paths(std::iter::once(bin).chain(env::split_paths(&path)))
                .expect("PATH entries contain no separator");
            env::set_var("PATH", joined);
        }
    }
}

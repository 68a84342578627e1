// Builds profiler-ebpf for bpfel-unknown-none with Debian's rustc-web (which ships a
// prebuilt libcore for BPF; see ../shared/TOOLCHAIN.md) and puts the object in OUT_DIR,
// where src/probes/mod.rs embeds it: the one `clockprof` binary is all a host needs.
//
// It also stamps the build for `clockprof --version` (src/version.rs): the git
// commit and the build date, as CLOCKPROF_COMMIT and CLOCKPROF_BUILD_DATE.
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> anyhow::Result<()> {
    stamp_version();
    let package = aya_build::Package {
        name: "profiler-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../profiler-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom("/usr"))
}

fn stamp_version() {
    println!("cargo:rustc-env=CLOCKPROF_COMMIT={}", commit());
    println!("cargo:rustc-env=CLOCKPROF_BUILD_DATE={}", build_date());
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // This script runs again when HEAD moves (a commit, a checkout) and when
    // the sources compiled into clockprof change (so `-dirty` follows them),
    // not on every build: a run it needs only for the stamp finds the eBPF
    // crate fresh, and aya-build's cargo then builds nothing.
    for path in watched_paths() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// `git ARGS` in this crate's directory, its trimmed stdout if it succeeded.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// HEAD's commit, 12 hex digits, `-dirty` when tracked files differ from it;
/// `unknown` outside a git checkout (a source tarball).
fn commit() -> String {
    let Some(hash) = git(&["rev-parse", "--short=12", "HEAD"]).filter(|h| !h.is_empty()) else {
        return "unknown".to_string();
    };
    // --no-optional-locks: no index refresh written behind the back of a
    // git command running in the same checkout.
    let changes = git(&[
        "--no-optional-locks",
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]);
    match changes {
        Some(changes) if changes.is_empty() => hash,
        _ => format!("{hash}-dirty"),
    }
}

/// A path git printed, relative ones taken from this crate's directory.
fn absolute(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// What, changed, makes the stamp stale. Only existing paths: cargo reruns
/// the script on every build for a path that does not exist.
fn watched_paths() -> Vec<PathBuf> {
    let sources = [
        "src",
        "Cargo.toml",
        "../profiler-common",
        "../Cargo.toml",
        "../Cargo.lock",
    ];
    let mut paths: Vec<PathBuf> = sources.iter().map(|p| absolute(p)).collect();
    if let (Some(git_dir), Some(common_dir)) = (
        git(&["rev-parse", "--git-dir"]),
        git(&["rev-parse", "--git-common-dir"]),
    ) {
        let (git_dir, common_dir) = (absolute(&git_dir), absolute(&common_dir));
        // HEAD names the branch (or a commit, detached); the branch's ref is
        // a file of its own until `git pack-refs` moves it to packed-refs,
        // and a new loose ref is a new file in its folder.
        paths.push(git_dir.join("HEAD"));
        if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
            let loose = common_dir.join(&reference);
            match loose.exists() {
                true => paths.push(loose),
                false => paths.extend(loose.parent().map(Path::to_path_buf)),
            }
        }
        paths.push(common_dir.join("packed-refs"));
    }
    paths.retain(|path| path.exists());
    paths
}

/// The build date, `YYYY-MM-DD` in UTC: SOURCE_DATE_EPOCH's for a
/// reproducible build, else today's.
fn build_date() -> String {
    let seconds = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(epoch) => epoch.trim().parse::<i64>().unwrap_or_else(|_| {
            panic!("SOURCE_DATE_EPOCH={epoch:?} is not a number of seconds since 1970")
        }),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    };
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    format!("{year:04}-{month:02}-{day:02}")
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

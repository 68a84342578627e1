//! The shipped binary: the release build linked against glibc 2.26
//! (stamped with SOURCE_DATE_EPOCH's date), the man pages and completions
//! rendered from its command line, and its debug information split off as
//! Debian's dh_strip does.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{process, workspace};

/// What `clockprof --version` says of the build.
#[derive(Debug, PartialEq)]
pub struct Version {
    /// The crate version, `0.1.0`.
    pub upstream: String,
    /// `6b2787818cf0`, `-dirty` with uncommitted changes.
    pub commit: String,
}

/// The glibc the shipped binary is linked against. 2.26 is Amazon Linux 2's,
/// the oldest userland of the fleets clockprof's kernel floor (5.10) meets;
/// RHEL 8 has 2.28, Debian 11 and Ubuntu 20.04 2.31. The host's own glibc
/// (Debian 12's 2.34) would shut them all out.
pub const GLIBC: &str = "2.26";

/// The Rust target cargo-zigbuild links for: the host's, with the glibc
/// version as Zig names it (no other Rust target is installed).
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Where the shipped build is made: in the dev cache, outside the clone, so
/// that a fresh clone (CI) rebuilds only clockprof, not its 200 crates.
fn target_dir() -> PathBuf {
    workspace::cache_dir().join("dist-target")
}

/// Builds the shipped clockprof with SOURCE_DATE_EPOCH set (its build date
/// is that day) by cargo-zigbuild, linked against glibc GLIBC, then runs the
/// docs generator (a host build against the same library and stamp) into
/// `generated`. Returns the shipped binary.
///
/// cargo-zigbuild, not a bullseye root: Zig carries the symbol lists of every
/// glibc, so the build runs on this host's toolchain and reaches 2.26 (a
/// bullseye root would give 2.31, and a buster one an LLVM too old for the
/// eBPF build). Measured here: 5 min 37 s for the first build, 59 s after a
/// change to clockprof alone. The binary needs GLIBC_2.25 at most and no
/// libgcc_s (Zig's libunwind is linked in).
pub fn build(epoch: i64, date: &str, generated: &Path) -> Result<PathBuf> {
    let epoch = epoch.to_string();
    let zig = crate::setup::zigbuild_dir();
    let path = std::env::join_paths(std::iter::once(zig.join("bin")).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let target_dir = target_dir();
    process::run(
        Command::new(zig.join("bin/cargo-zigbuild"))
            .args(["rustc", "--release", "-p", "profiler", "--bin"])
            .arg(crate::build::CLOCKPROF_BIN)
            .arg("--target")
            .arg(format!("{TARGET}.{GLIBC}"))
            .arg("--target-dir")
            .arg(&target_dir)
            // Zig's lld writes no GNU build id unless asked, and the debug
            // package and debuginfod find the debug file by it. `rustc`
            // passes it to the final link only, so no dependency rebuilds.
            .args(["--", "-C", "link-arg=-Wl,--build-id=sha1"])
            .current_dir(workspace::root())
            // cargo-zigbuild runs Zig as `python3 -m ziglang` from its wheel.
            .env("PYTHONPATH", &zig)
            .env("PATH", path)
            .env("SOURCE_DATE_EPOCH", &epoch),
    )?;
    process::run(
        process::cargo([
            "run",
            "--quiet",
            "--release",
            "-p",
            "profiler",
            "--example",
            "generate_docs",
            "--",
        ])
        .arg(generated)
        .arg(date)
        .env("SOURCE_DATE_EPOCH", &epoch),
    )?;
    Ok(target_dir
        .join(TARGET)
        .join("release")
        .join(crate::build::CLOCKPROF_BIN))
}

/// The version and commit of the binary at `bin`, from its --version.
pub fn version_of(bin: &Path) -> Result<Version> {
    let output = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("could not run {} --version", bin.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_version(&text).with_context(|| format!("{} --version printed {text:?}", bin.display()))
}

/// `clockprof 0.1.0 (commit 6b2787818cf0, built 2026-12-07)`.
fn parse_version(text: &str) -> Option<Version> {
    let rest = text.trim().strip_prefix("clockprof ")?;
    let (upstream, rest) = rest.split_once(" (commit ")?;
    let (commit, _) = rest.split_once(", built ")?;
    Some(Version {
        upstream: upstream.to_string(),
        commit: commit.to_string(),
    })
}

/// The GNU build id `readelf -n` prints for the ELF file at `path`.
pub fn build_id(path: &Path) -> Result<String> {
    let output = Command::new("readelf")
        .arg("-n")
        .arg(path)
        .output()
        .context("could not run readelf (binutils)")?;
    parse_build_id(&String::from_utf8_lossy(&output.stdout)).with_context(|| {
        format!(
            "{} has no GNU build id; the debug symbols are found by it",
            path.display()
        )
    })
}

fn parse_build_id(readelf_notes: &str) -> Option<String> {
    readelf_notes.lines().find_map(|line| {
        let id = line.trim().strip_prefix("Build ID: ")?.trim();
        (id.len() >= 16 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_lowercase())
    })
}

/// Where Debian puts the debug file of build id `id`:
/// `usr/lib/debug/.build-id/7b/3c4a....debug`.
pub fn debug_path(id: &str) -> String {
    format!("usr/lib/debug/.build-id/{}/{}.debug", &id[..2], &id[2..])
}

/// Splits `built` as dh_strip does: its debug sections (compressed) and
/// symbol table into `debug`, and a copy without them, with a
/// .gnu_debuglink naming `debug` (by file name and CRC), into `stripped`.
pub fn split_debug_info(built: &Path, stripped: &Path, debug: &Path) -> Result<()> {
    process::run(
        Command::new("objcopy")
            .args(["--only-keep-debug", "--compress-debug-sections"])
            .arg(built)
            .arg(debug),
    )?;
    // --strip-all, not --strip-debug: lintian takes a symbol table left in a
    // binary for an unstripped one (an error); the debug file keeps it. The
    // .comment section (compiler versions) goes too, as with dh_strip.
    process::run(
        Command::new("objcopy")
            .args(["--strip-all", "--remove-section=.comment"])
            .arg(format!("--add-gnu-debuglink={}", debug.display()))
            .arg(built)
            .arg(stripped),
    )?;
    let (built_id, stripped_id) = (build_id(built)?, build_id(stripped)?);
    if built_id != stripped_id {
        bail!("stripping changed the build id ({built_id} -> {stripped_id})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_and_commit_are_read_from_version_output() {
        assert_eq!(
            parse_version("clockprof 0.1.0 (commit 6b2787818cf0-dirty, built 2026-12-07)\n"),
            Some(Version {
                upstream: "0.1.0".into(),
                commit: "6b2787818cf0-dirty".into()
            })
        );
        assert_eq!(parse_version("clockprof 0.1.0\n"), None);
    }

    #[test]
    fn the_build_id_is_read_from_readelfs_notes() {
        let notes = "
Displaying notes found in: .note.gnu.build-id
  Owner                Data size \tDescription
  GNU                  0x00000014\tNT_GNU_BUILD_ID (unique build ID bitstring)
    Build ID: 7b3c4ad077c83536c647902e0fc0d4fd3df625d7
";
        let id = parse_build_id(notes).unwrap();
        assert_eq!(id, "7b3c4ad077c83536c647902e0fc0d4fd3df625d7");
        assert_eq!(
            debug_path(&id),
            "usr/lib/debug/.build-id/7b/3c4ad077c83536c647902e0fc0d4fd3df625d7.debug"
        );
        assert_eq!(parse_build_id("no notes"), None);
    }
}

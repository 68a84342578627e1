//! Packing staged trees: DEBIAN/md5sums, `dpkg-deb --build`, and the
//! tarball, each with SOURCE_DATE_EPOCH's time on every entry, root:root,
//! in name order.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::process;

/// DEBIAN/md5sums: `md5sum` of every regular file below `root` but DEBIAN/,
/// paths relative to the root, sorted (as dh_md5sums writes it).
pub fn write_md5sums(root: &Path) -> Result<()> {
    let mut files = Vec::new();
    regular_files(root, root, &mut files)?;
    files.retain(|path| !path.starts_with("DEBIAN/"));
    files.sort();
    let output = Command::new("md5sum")
        .args(&files)
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .context("could not run md5sum")?;
    if !output.status.success() {
        bail!("md5sum failed ({})", output.status);
    }
    let path = root.join("DEBIAN/md5sums");
    fs::write(&path, output.stdout)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// Paths (relative to `root`, `/`-separated) of the regular files below `dir`.
fn regular_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("could not list {}", dir.display()))? {
        let path = entry?.path();
        let meta = path.symlink_metadata()?;
        if meta.is_dir() {
            regular_files(root, &path, out)?;
        } else if meta.is_file() {
            let relative = path.strip_prefix(root).expect("below root");
            out.push(relative.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// `dpkg-deb --build` of `root` into `deb`: xz, every entry root:root, its
/// time clamped to `epoch` (dpkg-deb reads SOURCE_DATE_EPOCH).
pub fn build_deb(root: &Path, deb: &Path, epoch: i64) -> Result<()> {
    process::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(root)
            .arg(deb)
            .env("SOURCE_DATE_EPOCH", epoch.to_string()),
    )
}

/// `tarball` (.tar.gz) of `root` but its DEBIAN/, under `top`/: entries in
/// name order, root:root, all at `epoch`, gzip without name or time.
pub fn build_tarball(root: &Path, top: &str, tarball: &Path, epoch: i64) -> Result<()> {
    let mut tar = Command::new("tar")
        .args([
            "--create",
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--format=gnu",
            "--exclude=./DEBIAN",
        ])
        .arg(format!("--mtime=@{epoch}"))
        // `.` becomes `clockprof-VERSION`; the tree has no links to rewrite.
        .arg(format!("--transform=s,^\\.,{top},"))
        .arg("--directory")
        .arg(root)
        .arg(".")
        .stdout(Stdio::piped())
        .spawn()
        .context("could not run tar")?;
    let out = fs::File::create(tarball)
        .with_context(|| format!("could not create {}", tarball.display()))?;
    let gzip = Command::new("gzip")
        .arg("-9n")
        .stdin(tar.stdout.take().expect("piped"))
        .stdout(out)
        .status()
        .context("could not run gzip")?;
    let tar = tar.wait().context("tar failed")?;
    if !tar.success() || !gzip.success() {
        bail!("tar | gzip -9n > {} failed", tarball.display());
    }
    Ok(())
}

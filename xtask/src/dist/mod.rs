//! `cargo xtask dist`: clockprof packaged for production hosts, in
//! target/dist/:
//!
//! - `clockprof_VERSION_amd64.deb` (the name DESIGN.md's contract gives; the
//!   package inside is version VERSION-1, a Debian revision, so lintian
//!   takes its changelog.Debian.gz): the stripped binary, man pages, shell
//!   completions, the systemd unit (not enabled) and its system user, the
//!   docs and examples;
//! - `clockprof-dbgsym_VERSION_amd64.deb`: its debug information, under
//!   /usr/lib/debug/.build-id/ as Debian ships it;
//! - `clockprof-VERSION-x86_64-linux.tar.gz`: the same tree as the .deb
//!   under clockprof-VERSION/, and `clockprof-VERSION-x86_64-linux.debug`.
//!
//! The packages are built by dpkg-deb from trees staged here, not by
//! cargo-deb: dpkg-deb ships with dpkg, so nothing more is installed to
//! build them, and the layout (man pages rendered from the CLI, the
//! dbgsym package, the maintainer scripts) is ours to choose. dist fails
//! when lintian reports an error, systemd-analyze verify finds anything in
//! the unit or its drop-in examples, or dpkg-shlibdeps disagrees with the
//! Depends computed from the binary. docs/packaging.md says more.

mod archive;
mod binary;
mod checks;
pub mod clean_root;
mod control;
mod layout;
mod shlibs;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::setup::{self, SetupArgs};
use crate::workspace;

/// The Debian revision of every package dist builds: the upstream version
/// is the crate's, and the `-1` makes the package non-native, so its
/// changelog is changelog.Debian.gz.
const DEBIAN_REVISION: &str = "1";

/// The maintainer scripts, packaging/deb/NAME, installed as DEBIAN/NAME.
const MAINTAINER_SCRIPTS: &[&str] = &["postinst", "prerm", "postrm"];

pub fn run() -> Result<()> {
    let started = Instant::now();
    setup::run(&SetupArgs {
        with: vec!["dist".to_string()],
    })?;
    let ws = workspace::root();
    let dist = workspace::target_dir().join("dist");
    let work = dist.join("work");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(work.join("debian"))?;

    let epoch = source_date_epoch()?;
    let generated = work.join("generated");
    let built = binary::build(epoch, &control::date(epoch), &generated)?;
    let version = binary::version_of(&built)?;
    if version.commit.ends_with("-dirty") || version.commit == "unknown" {
        eprintln!(
            "xtask: warning: building packages of commit {}: commit the changes first \
             for a package that names what it holds",
            version.commit
        );
    }
    let deb_version = format!("{}-{DEBIAN_REVISION}", version.upstream);
    let maintainer = maintainer()?;

    // The stripped binary and its debug file, named by build id.
    let package_root = work.join("debian/clockprof");
    let dbgsym_root = work.join("debian/clockprof-dbgsym");
    let build_id = binary::build_id(&built)?;
    let debug_file = dbgsym_root.join(binary::debug_path(&build_id));
    layout::make_dirs(&dbgsym_root, debug_file.parent().expect("a file"))?;
    let stripped = work.join("clockprof");
    binary::split_debug_info(&built, &stripped, &debug_file)?;
    fs::set_permissions(&debug_file, fs::Permissions::from_mode(0o644))?;
    let depends = shlibs::depends_of(&stripped)?;

    // The clockprof package's tree.
    let man_pages = file_names(&generated.join("man"), ".1")?;
    let drop_in_dir = ws.join("packaging").join(layout::DROP_IN_DIR);
    let drop_ins = file_names(&drop_in_dir, ".conf")?;
    let readme = fs::read_to_string(ws.join("README.md"))?;
    let files = layout::files(&layout::Inputs {
        workspace: &ws,
        binary: &stripped,
        generated: &generated,
        man_pages: &man_pages,
        drop_ins: &drop_ins,
        unit: layout::packaged_unit(&fs::read_to_string(ws.join("packaging/clockprof.service"))?)?,
        collector_config: layout::collector_config(&readme)?,
        copyright: control::copyright(env!("CARGO_PKG_LICENSE"), &copyright_years(epoch)?),
        changelog: control::changelog(&deb_version, &version.commit, &maintainer, epoch),
    });
    layout::stage(&package_root, &files)?;
    let debian_dir = package_root.join("DEBIAN");
    layout::make_dirs(&package_root, &debian_dir)?;
    for script in MAINTAINER_SCRIPTS {
        let target = debian_dir.join(script);
        fs::copy(ws.join("packaging/deb").join(script), &target)?;
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755))?;
    }
    let package = control::Package {
        version: &deb_version,
        maintainer: &maintainer,
        installed_size: control::installed_size(&package_root)?,
    };
    write_control(&package_root, &control::control(&package, &depends))?;
    archive::write_md5sums(&package_root)?;

    // The dbgsym package's tree: its doc directory is clockprof's, linked.
    let doc_link = dbgsym_root.join("usr/share/doc/clockprof-dbgsym");
    layout::make_dirs(&dbgsym_root, doc_link.parent().expect("below root"))?;
    std::os::unix::fs::symlink("clockprof", &doc_link)?;
    layout::make_dirs(&dbgsym_root, &dbgsym_root.join("DEBIAN"))?;
    let dbgsym = control::Package {
        installed_size: control::installed_size(&dbgsym_root)?,
        ..package
    };
    write_control(&dbgsym_root, &control::dbgsym_control(&dbgsym, &build_id))?;
    archive::write_md5sums(&dbgsym_root)?;

    // The artifacts.
    // Named by the upstream version, as the CLI contract has it; dpkg and
    // apt read the version from the control file, not the name.
    let deb = dist.join(format!("clockprof_{}_amd64.deb", version.upstream));
    let dbgsym_deb = dist.join(format!("clockprof-dbgsym_{}_amd64.deb", version.upstream));
    let stem = format!("clockprof-{}-x86_64-linux", version.upstream);
    let tarball = dist.join(format!("{stem}.tar.gz"));
    let debug_copy = dist.join(format!("{stem}.debug"));
    remove_older_artifacts(&dist)?;
    archive::build_deb(&package_root, &deb, epoch)?;
    archive::build_deb(&dbgsym_root, &dbgsym_deb, epoch)?;
    archive::build_tarball(
        &package_root,
        &format!("clockprof-{}", version.upstream),
        &tarball,
        epoch,
    )?;
    fs::copy(&debug_file, &debug_copy)?;

    // The checks.
    checks::shlibdeps(&work, &depends)?;
    checks::sysusers(&package_root, &work)?;
    let drop_in_paths: Vec<PathBuf> = drop_ins.iter().map(|n| drop_in_dir.join(n)).collect();
    checks::systemd_verify(&package_root, &drop_in_paths, &work)?;
    checks::lintian(&[deb.clone(), dbgsym_deb.clone()])?;

    println!(
        "\nxtask dist: done in {:.0} s:",
        started.elapsed().as_secs_f64()
    );
    for artifact in [&deb, &dbgsym_deb, &tarball, &debug_copy] {
        let size = fs::metadata(artifact)?.len();
        println!(
            "  {} ({:.1} MiB)",
            artifact.display(),
            size as f64 / (1024.0 * 1024.0)
        );
    }
    println!("  Depends: {depends}; build id {build_id}");
    Ok(())
}

/// The time every packaged file gets, and the build date clockprof is
/// stamped with: SOURCE_DATE_EPOCH when set, else the commit's time, so
/// two builds of one commit give the same packages.
fn source_date_epoch() -> Result<i64> {
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") {
        return epoch
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={epoch:?} is not a number"));
    }
    git(&["log", "-1", "--format=%ct", "HEAD"])?
        .parse()
        .context("git log printed no commit time")
}

/// `2025-2026`: the years from the first commit to `epoch`'s.
fn copyright_years(epoch: i64) -> Result<String> {
    let roots = git(&["log", "--max-parents=0", "--format=%ct", "HEAD"])?;
    let first = roots
        .lines()
        .filter_map(|l| l.trim().parse::<i64>().ok())
        .min()
        .unwrap_or(epoch);
    let (from, to) = (control::year(first), control::year(epoch));
    Ok(match from == to {
        true => to.to_string(),
        false => format!("{from}-{to}"),
    })
}

/// Who the packages name as maintainer: DEBFULLNAME and DEBEMAIL, as dch
/// reads them, else git's user.name and user.email, else the author of
/// the commit built.
fn maintainer() -> Result<String> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if let (Some(name), Some(email)) = (env("DEBFULLNAME"), env("DEBEMAIL")) {
        return Ok(format!("{name} <{email}>"));
    }
    if let (Ok(name), Ok(email)) = (
        git(&["config", "user.name"]),
        git(&["config", "user.email"]),
    ) {
        if !name.is_empty() && !email.is_empty() {
            return Ok(format!("{name} <{email}>"));
        }
    }
    git(&["log", "-1", "--format=%an <%ae>", "HEAD"])
}

fn git(args: &[&str]) -> Result<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(workspace::root())
        .output()
        .context("could not run git")?;
    if !output.status.success() {
        bail!("git {} failed", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The names of the files in `dir` ending in `suffix`, sorted.
fn file_names(dir: &Path, suffix: &str) -> Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .with_context(|| format!("could not list {}", dir.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(suffix))
        .collect();
    names.sort();
    Ok(names)
}

fn write_control(root: &Path, text: &str) -> Result<()> {
    let path = root.join("DEBIAN/control");
    fs::write(&path, text)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// Packages of another version left by an earlier run would be taken for
/// this one's.
fn remove_older_artifacts(dist: &Path) -> Result<()> {
    for entry in fs::read_dir(dist)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let ours = name.starts_with("clockprof")
            && [".deb", ".tar.gz", ".debug"]
                .iter()
                .any(|ext| name.ends_with(ext));
        if ours && path.is_file() {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

//! What dist checks before it calls the packages done: lintian on both
//! .debs, `systemd-analyze verify` on the packaged unit (alone and with each
//! drop-in example), `systemd-sysusers --dry-run` on the sysusers file, and
//! dpkg-shlibdeps against the Depends computed from objdump. Any error
//! fails dist.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::layout;
use super::shlibs::DottedVersion;
use crate::process;

/// Runs lintian on `debs`, prints what it says, fails on an error (`E:`;
/// an overridden one shows as `O:`).
pub fn lintian(debs: &[PathBuf]) -> Result<String> {
    let mut cmd = Command::new("lintian");
    // Every tag, however many times it repeats; info tags and the
    // overridden ones too, so that what remains is seen and
    // docs/packaging.md can explain it. The verdict is read from the tags:
    // with --show-overrides lintian's own exit status counts an overridden
    // error as one, and with `--fail-on none` it says only whether lintian
    // could check at all.
    cmd.args([
        "--tag-display-limit",
        "0",
        "--display-info",
        "--show-overrides",
        "--fail-on",
        "none",
    ])
    .args(debs);
    eprintln!("xtask: $ {}", process::describe(&cmd));
    let output = cmd.output().context("could not run lintian")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    print!("{text}");
    if !output.status.success() {
        bail!(
            "lintian could not check the packages ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let errors = lintian_errors(&text);
    if !errors.is_empty() {
        bail!(
            "lintian reported {} error(s): {}",
            errors.len(),
            errors.join("; ")
        );
    }
    Ok(text)
}

/// lintian's error lines: `E: clockprof: tag [pointer]`.
fn lintian_errors(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|line| line.starts_with("E: "))
        .collect()
}

/// `systemd-analyze verify` of the packaged unit, in a root of its own: the
/// host's system units (the unit's dependencies: sysinit.target ...), the
/// package's binary (verify checks that ExecStart= is executable, inside
/// --root) and unit, the man pages on MANPATH (Documentation=man:...).
/// Then once more with each drop-in example in /etc/systemd/system/
/// clockprof.service.d/. verify prints only what is wrong, and exits 0 on
/// some of it (an unknown key): anything printed fails dist.
pub fn systemd_verify(package_root: &Path, drop_ins: &[PathBuf], work: &Path) -> Result<()> {
    let root = work.join("verify-root");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    let units = root.join("usr/lib/systemd/system");
    copy_dir(Path::new("/usr/lib/systemd/system"), &units)
        .context("could not copy the host's systemd units (is systemd installed?)")?;
    for path in [layout::BIN_PATH, layout::UNIT_PATH] {
        let target = root.join(path);
        fs::create_dir_all(target.parent().expect("below root"))?;
        fs::copy(package_root.join(path), &target)?;
    }
    let man = package_root.join("usr/share/man");
    let drop_in_dir = root.join("etc/systemd/system/clockprof.service.d");
    verify_unit(&root, &man, "the packaged unit")?;
    for drop_in in drop_ins {
        fs::create_dir_all(&drop_in_dir)?;
        let name = drop_in.file_name().expect("a file");
        fs::copy(drop_in, drop_in_dir.join(name))?;
        verify_unit(
            &root,
            &man,
            &format!("the unit with {}", name.to_string_lossy()),
        )?;
        fs::remove_file(drop_in_dir.join(name))?;
    }
    fs::remove_dir_all(&root)?;
    Ok(())
}

fn verify_unit(root: &Path, man: &Path, what: &str) -> Result<()> {
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("clockprof.service")
        .env("MANPATH", man)
        // No pager, no colour: the output is read, not shown.
        .env("SYSTEMD_PAGER", "")
        .env("SYSTEMD_COLORS", "0");
    eprintln!("xtask: $ {} ({what})", process::describe(&cmd));
    let output = cmd.output().context("could not run systemd-analyze")?;
    let findings = findings(&[&output.stdout, &output.stderr]);
    if !output.status.success() || !findings.is_empty() {
        bail!(
            "systemd-analyze verify of {what} failed ({}): {}",
            output.status,
            findings.join("; ")
        );
    }
    Ok(())
}

/// The non-empty lines of a command's outputs.
fn findings(outputs: &[&[u8]]) -> Vec<String> {
    outputs
        .iter()
        .flat_map(|out| {
            String::from_utf8_lossy(out)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `systemd-sysusers --dry-run` of the packaged sysusers file, against an
/// empty root: it parses, and would create the clockprof user and group.
pub fn sysusers(package_root: &Path, work: &Path) -> Result<()> {
    let root = work.join("sysusers-root");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    fs::create_dir_all(root.join("etc"))?;
    let mut cmd = Command::new("systemd-sysusers");
    cmd.arg(format!("--root={}", root.display()))
        .arg("--dry-run")
        .arg(package_root.join("usr/lib/sysusers.d/clockprof.conf"));
    eprintln!("xtask: $ {}", process::describe(&cmd));
    let output = cmd.output().context("could not run systemd-sysusers")?;
    let said = findings(&[&output.stdout, &output.stderr]);
    if !output.status.success() || !said.iter().any(|l| l.contains("user 'clockprof'")) {
        bail!(
            "systemd-sysusers --dry-run refused the sysusers file ({}): {}",
            output.status,
            said.join("; ")
        );
    }
    fs::remove_dir_all(&root)?;
    Ok(())
}

/// dpkg-shlibdeps, Debian's own reading of the binary against the installed
/// libraries' symbols files, must ask for the packages dist's Depends names,
/// and for no newer version of any. It runs where debhelper would:
/// `debian/clockprof/usr/bin/clockprof` below `work`, beside a
/// debian/control naming the package.
pub fn shlibdeps(work: &Path, depends: &str) -> Result<()> {
    fs::write(
        work.join("debian/control"),
        "Source: clockprof\n\nPackage: clockprof\nArchitecture: amd64\n",
    )?;
    let mut cmd = Command::new("dpkg-shlibdeps");
    cmd.args(["-O", "debian/clockprof/usr/bin/clockprof"])
        .current_dir(work);
    eprintln!("xtask: $ {}", process::describe(&cmd));
    let output = cmd.output().context("could not run dpkg-shlibdeps")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let theirs = stdout
        .lines()
        .find_map(|line| line.strip_prefix("shlibs:Depends="))
        .with_context(|| {
            format!(
                "dpkg-shlibdeps printed no shlibs:Depends: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })?;
    let disagree = || {
        format!(
            "dpkg-shlibdeps says Depends: {theirs}; dist computed {depends} \
             (xtask/src/dist/shlibs.rs)"
        )
    };
    let (ours, theirs_parsed) = (parse_depends(depends), parse_depends(theirs));
    let names = |list: &[(String, String)]| {
        let mut names: Vec<String> = list.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        names
    };
    if names(&ours) != names(&theirs_parsed) {
        bail!(disagree());
    }
    for (package, version) in &ours {
        let (_, their_version) = theirs_parsed
            .iter()
            .find(|(p, _)| p == package)
            .expect("same names");
        let at_least = Command::new("dpkg")
            .args(["--compare-versions", version, "ge", their_version])
            .status()
            .context("could not run dpkg --compare-versions")?;
        if !at_least.success() {
            let raised = symbols_raised_past(work, version)?;
            let unexplained: Vec<&(String, String)> = raised
                .iter()
                .filter(|(symbol, _)| !HEADER_BUMPS.iter().any(|(s, _)| s == symbol))
                .collect();
            if raised.is_empty() || !unexplained.is_empty() {
                bail!("{}; symbols dated past it: {unexplained:?}", disagree());
            }
            for (symbol, minver) in &raised {
                eprintln!(
                    "xtask: dpkg-shlibdeps dates {symbol} to {package} {minver}, past {version}: \
                     {}",
                    HEADER_BUMPS
                        .iter()
                        .find(|(s, _)| s == symbol)
                        .expect("filtered")
                        .1
                );
            }
        }
    }
    Ok(())
}

/// Symbols whose minimum version Debian's libc6 symbols file raises past the
/// ELF version the binary imports, for programs compiled against newer
/// headers; the shipped binary is linked against glibc 2.26's (binary.rs),
/// so the raise does not apply to it.
const HEADER_BUMPS: &[(&str, &str)] = &[(
    "sysconf",
    "glibc 2.34 added the _SC_MINSIGSTKSZ and _SC_SIGSTKSZ names, which older \
     glibcs answer with -1 (EINVAL), as Rust's std expects",
)];

/// The (symbol, minimum version) pairs dpkg-shlibdeps takes from the
/// libraries' symbols files that are newer than `version`, read from its
/// debug output.
fn symbols_raised_past(work: &Path, version: &str) -> Result<Vec<(String, String)>> {
    let output = Command::new("dpkg-shlibdeps")
        .args(["-O", "-v", "-v", "debian/clockprof/usr/bin/clockprof"])
        .current_dir(work)
        .output()
        .context("could not run dpkg-shlibdeps")?;
    // -O prints both the result and the debug lines on stdout.
    Ok(raised_past(
        &String::from_utf8_lossy(&output.stdout),
        version,
    ))
}

/// From dpkg-shlibdeps' `-v -v` lines (`Looking up symbol sysconf@GLIBC_2.2.5`,
/// then `Found in symbols file of libc.so.6 (minver: 2.34, ...)`), the
/// symbols whose minimum version is newer than `version`, compared as
/// shlibs.rs compares symbol versions. A minimum version that is not dotted
/// numbers counts as newer: it must then be explained like any other.
fn raised_past(debug: &str, version: &str) -> Vec<(String, String)> {
    let ours = DottedVersion::parse(version);
    let mut raised = Vec::new();
    let mut symbol = None;
    for line in debug.lines() {
        if let Some((_, rest)) = line.split_once("Looking up symbol ") {
            symbol = rest.split('@').next().map(str::to_string);
        } else if let Some((_, rest)) = line.split_once("(minver: ") {
            let minver = rest.split(',').next().unwrap_or("").trim();
            let newer = match (DottedVersion::parse(minver), &ours) {
                (Some(theirs), Some(ours)) => theirs > *ours,
                _ => true,
            };
            if let (true, Some(symbol)) = (newer, symbol.take()) {
                raised.push((symbol, minver.to_string()));
            }
        }
    }
    raised.sort();
    raised.dedup();
    raised
}

/// `libc6 (>= 2.34), libgcc-s1 (>= 4.2)` as (package, version) pairs; a
/// package without a version has "".
fn parse_depends(field: &str) -> Vec<(String, String)> {
    field
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| match item.split_once('(') {
            Some((name, rest)) => {
                let version = rest.trim_end_matches(')').trim();
                let version = version.trim_start_matches(['>', '=', '<']).trim();
                (name.trim().to_string(), version.to_string())
            }
            None => (item.to_string(), String::new()),
        })
        .collect()
}

/// A copy of the directory `from` (files and symlinks; links copied as
/// links).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("could not list {}", from.display()))? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let meta = source.symlink_metadata()?;
        if meta.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&source)?, &target)?;
        } else if meta.is_dir() {
            copy_dir(&source, &target)?;
        } else {
            fs::copy(&source, &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_symbols_dated_past_our_version_are_raised() {
        let debug = "\
dpkg-shlibdeps: debug:  Looking up symbol read@GLIBC_2.2.5
dpkg-shlibdeps: debug:  Found in symbols file of libc.so.6 (minver: 2.2.5, dep: libc6 #MINVER#)
dpkg-shlibdeps: debug:  Looking up symbol sysconf@GLIBC_2.2.5
dpkg-shlibdeps: debug:  Found in symbols file of libc.so.6 (minver: 2.34, dep: libc6 #MINVER#)
dpkg-shlibdeps: debug:  Looking up symbol posix_spawn_file_actions_addchdir@Base
dpkg-shlibdeps: debug:  Looking up symbol getrandom@GLIBC_2.25
dpkg-shlibdeps: debug:  Found in symbols file of libc.so.6 (minver: 2.25, dep: libc6 #MINVER#)
dpkg-shlibdeps: debug:  Looking up symbol odd@GLIBC_2.2.5
dpkg-shlibdeps: debug:  Found in symbols file of libc.so.6 (minver: 2.30~rc1, dep: libc6 #MINVER#)
";
        assert_eq!(
            raised_past(debug, "2.25"),
            [
                ("odd".to_string(), "2.30~rc1".to_string()),
                ("sysconf".to_string(), "2.34".to_string())
            ]
        );
        assert!(raised_past(debug, "2.34")
            .iter()
            .all(|(symbol, _)| symbol == "odd"));
    }

    #[test]
    fn lintian_errors_are_its_e_lines() {
        let output = "W: clockprof: no-manual-page [usr/bin/x]\n\
                      E: clockprof: unstripped-binary-or-object [usr/bin/clockprof]\n\
                      I: clockprof: no-homepage-field\n\
                      N: E: is not an error line\n";
        assert_eq!(
            lintian_errors(output),
            ["E: clockprof: unstripped-binary-or-object [usr/bin/clockprof]"]
        );
        assert!(lintian_errors("W: clockprof: x\n").is_empty());
    }

    #[test]
    fn depends_fields_split_into_packages_and_versions() {
        assert_eq!(
            parse_depends("libc6 (>= 2.34), libgcc-s1 (>= 4.2), foo"),
            [
                ("libc6".to_string(), "2.34".to_string()),
                ("libgcc-s1".to_string(), "4.2".to_string()),
                ("foo".to_string(), String::new()),
            ]
        );
    }

    #[test]
    fn any_line_systemd_analyze_prints_is_a_finding() {
        let err = b"\n/x/clockprof.service:68: Unknown key 'Foo' in section [Install], ignoring.\n";
        assert_eq!(
            findings(&[b"", err]),
            ["/x/clockprof.service:68: Unknown key 'Foo' in section [Install], ignoring."]
        );
        assert!(findings(&[b"", b"\n"]).is_empty());
    }
}

//! The words of the packages: DEBIAN/control of clockprof and
//! clockprof-dbgsym, the Debian changelog, the DEP-5 copyright file, and
//! Installed-Size, each as dpkg-gencontrol, dch and the copyright format
//! spell them.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

/// The first line of both packages' description; the rest is clockprof's.
const SYNOPSIS: &str = "find which processes and call stacks read the clock most";
const DESCRIPTION: &str = "\
clockprof counts clock reads in eBPF maps, per process and call stack:
clock_gettime, gettimeofday and time system calls, glibc and Go clock
calls, vDSO clock reads (sampled) and kernel-internal clock reads. It shows
them as a live view (clockprof top), or writes flamegraphs, folded stacks,
pprof or JSON (clockprof record), judges a command's clock reads against a
budget in CI (clockprof check), and serves Prometheus metrics and pprof
profiles for a fleet (clockprof serve, with a systemd unit that installing
the package does not enable).
.
It needs Linux 5.10 or newer and root (or, for serve, the capabilities the
unit grants).";

/// What both control files share.
pub struct Package<'a> {
    /// The Debian version: `0.1.0-1`.
    pub version: &'a str,
    pub maintainer: &'a str,
    pub installed_size: u64,
}

/// DEBIAN/control of clockprof.
pub fn control(package: &Package, depends: &str) -> String {
    format!(
        "Package: clockprof\n\
         Version: {}\n\
         Architecture: amd64\n\
         Maintainer: {}\n\
         Installed-Size: {}\n\
         Depends: {depends}\n\
         Section: devel\n\
         Priority: optional\n\
         Description: {SYNOPSIS}\n{}\n",
        package.version,
        package.maintainer,
        package.installed_size,
        continuation(DESCRIPTION)
    )
}

/// DEBIAN/control of clockprof-dbgsym, as dh_strip writes it.
pub fn dbgsym_control(package: &Package, build_id: &str) -> String {
    format!(
        "Package: clockprof-dbgsym\n\
         Source: clockprof\n\
         Version: {version}\n\
         Auto-Built-Package: debug-symbols\n\
         Architecture: amd64\n\
         Maintainer: {}\n\
         Installed-Size: {}\n\
         Depends: clockprof (= {version})\n\
         Section: debug\n\
         Priority: optional\n\
         Description: debug symbols for clockprof\n\
         Build-Ids: {build_id}\n",
        package.maintainer,
        package.installed_size,
        version = package.version,
    )
}

/// A multi-line field's continuation lines: each indented by one space,
/// an empty line as ` .`.
fn continuation(text: &str) -> String {
    text.lines()
        .map(|line| match line {
            "" | "." => " .".to_string(),
            line => format!(" {line}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The one entry of changelog.Debian: this build, from this commit.
pub fn changelog(version: &str, commit: &str, maintainer: &str, epoch: i64) -> String {
    format!(
        "clockprof ({version}) unstable; urgency=medium\n\n  \
         * Built by `cargo xtask dist` from commit {commit}.\n\n \
         -- {maintainer}  {}\n",
        rfc2822(epoch)
    )
}

/// debian/copyright in the machine-readable format (DEP-5), for the terms
/// `license` (the workspace's SPDX expression, e.g. `MIT OR Apache-2.0`).
pub fn copyright(license: &str, years: &str) -> String {
    // DEP-5 spells SPDX's OR and AND in lower case.
    let expression = license.replace(" OR ", " or ").replace(" AND ", " and ");
    let mut text = format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: clockprof\n\
         Comment: Built from the clockprof sources by `cargo xtask dist`. The\n \
         clockprof binary also holds the Rust crates it is built from, each under\n \
         its own license (the crates' Cargo.toml name it).\n\
         \n\
         Files: *\n\
         Copyright: {years} the clockprof authors\n\
         License: {expression}\n"
    );
    for name in expression.split([' ', '(', ')']) {
        if let Some(body) = license_text(name) {
            text.push_str(&format!("\nLicense: {name}\n{}\n", continuation(body)));
        }
    }
    text
}

fn license_text(name: &str) -> Option<&'static str> {
    match name {
        "MIT" => Some(MIT),
        "Apache-2.0" => Some(APACHE),
        _ => None,
    }
}

const MIT: &str = "\
Permission is hereby granted, free of charge, to any person obtaining a
copy of this software and associated documentation files (the \"Software\"),
to deal in the Software without restriction, including without limitation
the rights to use, copy, modify, merge, publish, distribute, sublicense,
and/or sell copies of the Software, and to permit persons to whom the
Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in
all copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING
FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
DEALINGS IN THE SOFTWARE.";

const APACHE: &str = "\
Licensed under the Apache License, Version 2.0 (the \"License\"); you may
not use this file except in compliance with the License. You may obtain a
copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an \"AS IS\" BASIS, WITHOUT
WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
License for the specific language governing permissions and limitations
under the License.

On Debian systems, the complete text of the Apache License, Version 2.0
can be found in \"/usr/share/common-licenses/Apache-2.0\".";

/// `Mon, 07 Dec 2026 18:14:45 +0000`: the date form of Debian changelogs.
pub fn rfc2822(epoch: i64) -> String {
    utc(epoch, "%a, %d %b %Y %H:%M:%S +0000")
}

/// The year of a time since 1970, UTC.
pub fn year(epoch: i64) -> i64 {
    utc(epoch, "%Y").parse().unwrap_or(1970)
}

/// `YYYY-MM-DD` of a time since 1970, UTC.
pub fn date(epoch: i64) -> String {
    utc(epoch, "%Y-%m-%d")
}

/// A time since 1970 in `format`, UTC, in the C locale, by GNU date (which
/// every Debian has), rather than a second copy of profiler/build.rs's
/// calendar arithmetic. A date that cannot be run leaves the seconds.
fn utc(epoch: i64, format: &str) -> String {
    std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{epoch}"), &format!("+{format}")])
        .env("LC_ALL", "C")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map_or_else(|| epoch.to_string(), |text| text.trim_end().to_string())
}

/// Installed-Size as dpkg-gencontrol counts it: KiB, each regular file and
/// symlink rounded up to a whole KiB, every other entry (directories) 1;
/// DEBIAN/ is not installed and not counted.
pub fn installed_size(root: &Path) -> Result<u64> {
    fn walk(dir: &Path, top: bool, total: &mut u64) -> Result<()> {
        let entries =
            fs::read_dir(dir).with_context(|| format!("could not list {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            if top && entry.file_name() == "DEBIAN" {
                continue;
            }
            let meta = entry.path().symlink_metadata()?;
            if meta.is_file() || meta.is_symlink() {
                *total += meta.len().div_ceil(1024);
            } else {
                *total += 1;
                if meta.is_dir() {
                    walk(&entry.path(), false, total)?;
                }
            }
        }
        Ok(())
    }
    let mut total = 0;
    walk(root, true, &mut total)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changelog_dates_are_rfc2822_in_utc() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822(1_796_660_151), "Mon, 07 Dec 2026 16:15:51 +0000");
        assert_eq!(rfc2822(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(date(1_796_660_151), "2026-12-07");
        assert_eq!(year(1_796_660_151), 2026);
    }

    #[test]
    fn the_changelog_is_one_entry_with_the_maintainers_trailer() {
        let text = changelog("0.1.0-1", "6b2787818cf0", "A B <a@example.org>", 0);
        assert_eq!(
            text,
            "clockprof (0.1.0-1) unstable; urgency=medium\n\n  \
             * Built by `cargo xtask dist` from commit 6b2787818cf0.\n\n \
             -- A B <a@example.org>  Thu, 01 Jan 1970 00:00:00 +0000\n"
        );
    }

    #[test]
    fn control_files_have_dpkgs_fields_and_a_continued_description() {
        let package = Package {
            version: "0.1.0-1",
            maintainer: "A B <a@example.org>",
            installed_size: 12345,
        };
        let text = control(&package, "libc6 (>= 2.34)");
        assert!(text.starts_with("Package: clockprof\nVersion: 0.1.0-1\nArchitecture: amd64\n"));
        assert!(text.contains("\nInstalled-Size: 12345\nDepends: libc6 (>= 2.34)\n"));
        assert!(text.contains(&format!("\nDescription: {SYNOPSIS}\n clockprof counts")));
        assert!(text.contains("\n .\n It needs Linux"));
        assert!(text.ends_with("grants).\n"));
        for line in text.lines() {
            assert!(line.len() <= 80, "{line}");
        }
        let dbgsym = dbgsym_control(&package, "7b3c");
        assert!(dbgsym.contains("\nDepends: clockprof (= 0.1.0-1)\n"));
        assert!(dbgsym.ends_with("\nBuild-Ids: 7b3c\n"));
    }

    #[test]
    fn copyright_names_the_workspace_license_in_dep5_words() {
        let text = copyright("MIT OR Apache-2.0", "2025-2026");
        assert!(text.contains(
            "\nFiles: *\nCopyright: 2025-2026 the clockprof authors\nLicense: MIT or Apache-2.0\n"
        ));
        assert!(text.contains("\nLicense: MIT\n Permission is hereby granted"));
        assert!(text.contains("\n .\n The above copyright notice"));
        assert!(text.contains("\nLicense: Apache-2.0\n"));
        assert!(text.contains("/usr/share/common-licenses/Apache-2.0"));
    }

    #[test]
    fn installed_size_counts_kib_per_file_and_one_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("DEBIAN")).unwrap();
        fs::write(root.join("DEBIAN/control"), vec![0; 5000]).unwrap();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::write(root.join("usr/bin/a"), vec![0; 1025]).unwrap();
        fs::write(root.join("usr/bin/b"), b"").unwrap();
        std::os::unix::fs::symlink("a", root.join("usr/bin/c")).unwrap();
        // usr, usr/bin: 2; a: 2; b: 0; c: 1.
        assert_eq!(installed_size(root).unwrap(), 5);
    }
}

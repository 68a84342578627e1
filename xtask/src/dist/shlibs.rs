//! The .deb's Depends, read from the binary itself: the shared libraries it
//! needs (`objdump -p`, NEEDED) and, for each library's package, the newest
//! symbol version it imports (`objdump -T`: `GLIBC_2.34`, `GCC_4.2.0`), so
//! the package asks for the glibc the build linked against, whatever
//! toolchain or sysroot built it. dist cross-checks the result with
//! dpkg-shlibdeps (checks.rs).

use std::cmp::Ordering;
use std::fmt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The libraries clockprof may link, the Debian package of each, and the
/// prefix of the symbol versions that date what it needs of it.
const LIBRARIES: &[(&str, &str, &str)] = &[
    ("libc.so.6", "libc6", "GLIBC_"),
    ("libm.so.6", "libc6", "GLIBC_"),
    ("libpthread.so.0", "libc6", "GLIBC_"),
    ("libdl.so.2", "libc6", "GLIBC_"),
    ("librt.so.1", "libc6", "GLIBC_"),
    ("libutil.so.1", "libc6", "GLIBC_"),
    ("ld-linux-x86-64.so.2", "libc6", "GLIBC_"),
    // Rust's unwinder (panics), as in every Rust program on glibc.
    ("libgcc_s.so.1", "libgcc-s1", "GCC_"),
];

/// A dotted version, compared number by number (`2.9` < `2.17` < `2.34`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DottedVersion(Vec<u32>);

impl DottedVersion {
    pub fn parse(text: &str) -> Option<Self> {
        let parts: Option<Vec<u32>> = text.split('.').map(|p| p.parse().ok()).collect();
        parts.filter(|p| !p.is_empty()).map(DottedVersion)
    }
}

impl DottedVersion {
    /// As Debian's symbols files date a version node: `GCC_4.2.0` is 4.2.
    pub fn debian(&self) -> String {
        match self.0.as_slice() {
            [major, minor, 0] => format!("{major}.{minor}"),
            _ => self.to_string(),
        }
    }
}

impl Ord for DottedVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

impl PartialOrd for DottedVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for DottedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

/// The newest version named `PREFIX<x.y...>` among the symbols `objdump -T`
/// lists as imported (`*UND*`), e.g. `(GLIBC_2.34) __libc_start_main` for
/// `GLIBC_`. GLIBC_PRIVATE and the like are no release.
pub fn newest_version(objdump_dynamic_symbols: &str, prefix: &str) -> Option<DottedVersion> {
    objdump_dynamic_symbols
        .lines()
        .filter(|line| line.contains("*UND*"))
        .flat_map(str::split_whitespace)
        .filter_map(|word| {
            let word = word.trim_start_matches('(').trim_end_matches(')');
            DottedVersion::parse(word.strip_prefix(prefix)?)
        })
        .max()
}

/// The `NEEDED` entries of `objdump -p`'s dynamic section.
pub fn needed_libraries(objdump_private_headers: &str) -> Vec<String> {
    objdump_private_headers
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("NEEDED")).then(|| words.next().map(str::to_string))?
        })
        .collect()
}

/// The Depends field for a binary needing `needed` (sonames) with these
/// dynamic symbols: `libc6 (>= 2.34), libgcc-s1 (>= 4.2)`, one package per
/// library set, in LIBRARIES' order. A library not in LIBRARIES is refused:
/// the package would need a dependency this function cannot name.
pub fn depends(needed: &[String], objdump_dynamic_symbols: &str) -> Result<String> {
    let unknown: Vec<&str> = needed
        .iter()
        .map(String::as_str)
        .filter(|lib| !LIBRARIES.iter().any(|(soname, ..)| soname == lib))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "clockprof links {}, which the package has no dependency for (add it to \
             LIBRARIES in xtask/src/dist/shlibs.rs)",
            unknown.join(", ")
        );
    }
    let mut fields: Vec<String> = Vec::new();
    for (_, package, prefix) in LIBRARIES {
        let linked = LIBRARIES
            .iter()
            .any(|(soname, p, _)| p == package && needed.iter().any(|n| n == soname));
        let field_start = format!("{package} ");
        if !linked || fields.iter().any(|f| f.starts_with(&field_start)) {
            continue;
        }
        let Some(version) = newest_version(objdump_dynamic_symbols, prefix) else {
            bail!("clockprof links {package}'s library but imports no {prefix} symbol version");
        };
        fields.push(format!("{package} (>= {})", version.debian()));
    }
    Ok(fields.join(", "))
}

/// Depends for the binary at `path`, from objdump's view of it.
pub fn depends_of(path: &Path) -> Result<String> {
    let headers = objdump(path, "-p")?;
    let symbols = objdump(path, "-T")?;
    depends(&needed_libraries(&headers), &symbols)
}

fn objdump(path: &Path, flag: &str) -> Result<String> {
    let output = Command::new("objdump")
        .arg(flag)
        .arg(path)
        .output()
        .context("could not run objdump (binutils)")?;
    if !output.status.success() {
        bail!(
            "objdump {flag} {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYMBOLS: &str = "
target/release/clockprof:     file format elf64-x86-64

DYNAMIC SYMBOL TABLE:
0000000000000000      DF *UND*\t0000000000000000 (GLIBC_2.2.5) memcpy
0000000000000000      DF *UND*\t0000000000000000 (GLIBC_2.34) __libc_start_main
0000000000000000      DF *UND*\t0000000000000000 (GLIBC_2.9) pipe2
0000000000000000      DF *UND*\t0000000000000000  GLIBC_2.17  clock_gettime
0000000000000000      DF *UND*\t0000000000000000 (GLIBC_PRIVATE) __libc_x
0000000000000000      DF *UND*\t0000000000000000 (GCC_4.2.0) _Unwind_Foo
0000000000000000  w   D  *UND*\t0000000000000000  Base        __gmon_start__
00000000001a2b30 g    DF .text\t0000000000000010 (GLIBC_2.99) not_imported
";

    #[test]
    fn the_newest_imported_version_wins_numerically() {
        assert_eq!(
            newest_version(SYMBOLS, "GLIBC_"),
            DottedVersion::parse("2.34")
        );
        assert_eq!(newest_version(SYMBOLS, "GCC_").unwrap().debian(), "4.2");
        assert_eq!(
            newest_version(
                "0 DF *UND* 0 (GLIBC_2.17) a\n0 DF *UND* 0 (GLIBC_2.9) b\n0 DF *UND* 0 (GLIBC_2.3.4) c",
                "GLIBC_"
            )
            .unwrap()
            .to_string(),
            "2.17"
        );
        assert_eq!(newest_version("0 DF *UND* 0 (GCC_3.0) a", "GLIBC_"), None);
        assert_eq!(DottedVersion::parse("2.2.5").unwrap().debian(), "2.2.5");
    }

    #[test]
    fn needed_libraries_are_read_from_the_dynamic_section() {
        let headers = "
Dynamic Section:
  NEEDED               libgcc_s.so.1
  NEEDED               libc.so.6
  NEEDED               ld-linux-x86-64.so.2
  FLAGS                0x0000000000000008
";
        assert_eq!(
            needed_libraries(headers),
            ["libgcc_s.so.1", "libc.so.6", "ld-linux-x86-64.so.2"]
        );
    }

    #[test]
    fn depends_names_each_package_once_with_its_newest_version() {
        let needed = |libs: &[&str]| libs.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        assert_eq!(
            depends(
                &needed(&["libgcc_s.so.1", "libm.so.6", "libc.so.6"]),
                SYMBOLS
            )
            .unwrap(),
            "libc6 (>= 2.34), libgcc-s1 (>= 4.2)"
        );
        assert_eq!(
            depends(&needed(&["libc.so.6"]), SYMBOLS).unwrap(),
            "libc6 (>= 2.34)"
        );
        let err = depends(&needed(&["libc.so.6", "libssl.so.3"]), SYMBOLS).unwrap_err();
        assert!(err.to_string().contains("libssl.so.3"), "{err}");
        assert!(depends(&needed(&["libc.so.6"]), "no symbols").is_err());
    }
}

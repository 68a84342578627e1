//! Which clockprof this is: the package version, the git commit it was built
//! from (`-dirty` with uncommitted changes, `unknown` from a source tarball)
//! and the build date, stamped by build.rs. `--version`, the JSON and pprof
//! outputs and the OTLP pushes all name it from here.

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("CLOCKPROF_COMMIT");
/// `YYYY-MM-DD`, UTC; SOURCE_DATE_EPOCH's date in a reproducible build.
pub const BUILD_DATE: &str = env!("CLOCKPROF_BUILD_DATE");

/// `0.1.0 (commit 1a2b3c4d5e6f, built 2026-12-07)`: what `clockprof
/// --version` prints after the name.
pub const FULL: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CLOCKPROF_COMMIT"),
    ", built ",
    env!("CLOCKPROF_BUILD_DATE"),
    ")"
);

/// `clockprof 0.1.0 (commit ..., built ...)`, as `--version` prints it.
pub fn line() -> String {
    format!("clockprof {FULL}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_names_version_commit_and_date() {
        assert_eq!(
            FULL,
            format!("{VERSION} (commit {COMMIT}, built {BUILD_DATE})")
        );
        let hash = COMMIT.strip_suffix("-dirty").unwrap_or(COMMIT);
        assert!(
            hash == "unknown" || (hash.len() == 12 && hash.bytes().all(|b| b.is_ascii_hexdigit())),
            "{COMMIT}"
        );
        let date: Vec<&str> = BUILD_DATE.split('-').collect();
        assert_eq!(
            date.iter().map(|part| part.len()).collect::<Vec<_>>(),
            [4, 2, 2],
            "{BUILD_DATE}"
        );
    }
}

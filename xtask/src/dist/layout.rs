//! What the package holds and where: one list of files for the .deb and the
//! tarball alike (the tarball is the .deb's tree under clockprof-VERSION/),
//! and the staging of that list into a directory, with explicit modes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

pub const BIN_PATH: &str = "usr/bin/clockprof";
pub const UNIT_PATH: &str = "usr/lib/systemd/system/clockprof.service";
pub const MAN_DIR: &str = "usr/share/man/man1";
pub const DOC_DIR: &str = "usr/share/doc/clockprof";

/// The unit in packaging/ runs a binary installed by hand; the package's
/// runs the one it installs.
const HAND_INSTALLED_EXEC: &str = "ExecStart=/usr/local/bin/clockprof ";
const PACKAGED_EXEC: &str = "ExecStart=/usr/bin/clockprof ";

/// The user documentation shipped beside README.md (README links to it
/// under docs/); the developers' pages (developing, design, costs) stay in
/// the source.
const USER_DOCS: &[&str] = &[
    "record.md",
    "top.md",
    "serve.md",
    "check-and-diff.md",
    "doctor.md",
    "sources.md",
    "stacks.md",
    "security.md",
    "packaging.md",
];

/// Examples from packaging/, installed under the doc directory's examples/.
const EXAMPLES: &[&str] = &[
    "prometheus.yml",
    "clockprof.rules.yml",
    "clockprof.dashboard.json",
    "clockprof.alloy",
    "parca.yaml",
    "web-config.yml",
    "ci-budget.toml",
];

/// The systemd drop-in examples, packaging/clockprof.service.d/.
pub const DROP_IN_DIR: &str = "clockprof.service.d";

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// A file, copied as it is.
    File(PathBuf),
    /// Bytes made by dist (the packaged unit, copyright, changelog ...).
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Relative to the package root: `usr/bin/clockprof`.
    pub path: String,
    pub mode: u32,
    /// Compressed with `gzip -9n` on the way (`path` names the .gz).
    pub gzip: bool,
    pub content: Content,
}

impl Entry {
    fn file(path: impl Into<String>, mode: u32, source: PathBuf) -> Self {
        Entry {
            path: path.into(),
            mode,
            gzip: false,
            content: Content::File(source),
        }
    }

    fn gzipped(path: impl Into<String>, source: PathBuf) -> Self {
        Entry {
            gzip: true,
            ..Entry::file(path, 0o644, source)
        }
    }

    fn bytes(path: impl Into<String>, bytes: Vec<u8>) -> Self {
        Entry {
            path: path.into(),
            mode: 0o644,
            gzip: false,
            content: Content::Bytes(bytes),
        }
    }
}

/// What the build produced for the package, and what dist wrote.
pub struct Inputs<'a> {
    pub workspace: &'a Path,
    /// The stripped binary.
    pub binary: &'a Path,
    /// generate_docs's output: man/*.1 and completions/.
    pub generated: &'a Path,
    /// The file names in generated/man (clockprof.1, clockprof-record.1 ...).
    pub man_pages: &'a [String],
    /// packaging/clockprof.service.d/*.conf, by name.
    pub drop_ins: &'a [String],
    pub unit: String,
    pub collector_config: String,
    pub copyright: String,
    /// The Debian changelog, uncompressed.
    pub changelog: String,
}

/// Every file of the clockprof package (directories are made as needed).
pub fn files(inputs: &Inputs) -> Vec<Entry> {
    let ws = |path: &str| inputs.workspace.join(path);
    let generated = |path: &str| inputs.generated.join(path);
    let doc = |name: &str| format!("{DOC_DIR}/{name}");
    let mut files = vec![
        Entry::file(BIN_PATH, 0o755, inputs.binary.to_path_buf()),
        Entry::file(
            "usr/share/bash-completion/completions/clockprof",
            0o644,
            generated("completions/clockprof.bash"),
        ),
        Entry::file(
            "usr/share/zsh/vendor-completions/_clockprof",
            0o644,
            generated("completions/_clockprof"),
        ),
        Entry::file(
            "usr/share/fish/vendor_completions.d/clockprof.fish",
            0o644,
            generated("completions/clockprof.fish"),
        ),
        Entry::bytes(UNIT_PATH, inputs.unit.clone().into_bytes()),
        Entry::file(
            "usr/lib/sysusers.d/clockprof.conf",
            0o644,
            ws("packaging/clockprof.sysusers"),
        ),
        // What lintian is told to accept, each with its reason.
        Entry::file(
            "usr/share/lintian/overrides/clockprof",
            0o644,
            ws("packaging/deb/lintian-overrides"),
        ),
        Entry::bytes(doc("copyright"), inputs.copyright.clone().into_bytes()),
        Entry {
            gzip: true,
            ..Entry::bytes(
                doc("changelog.Debian.gz"),
                inputs.changelog.clone().into_bytes(),
            )
        },
        // Compressed as dh_compress does with documentation over 4 kB.
        Entry::gzipped(doc("README.md.gz"), ws("README.md")),
        Entry::bytes(
            doc("examples/otelcol.yaml"),
            inputs.collector_config.clone().into_bytes(),
        ),
    ];
    for page in inputs.man_pages {
        files.push(Entry::gzipped(
            format!("{MAN_DIR}/{page}.gz"),
            generated(&format!("man/{page}")),
        ));
    }
    for name in USER_DOCS {
        files.push(Entry::gzipped(
            doc(&format!("docs/{name}.gz")),
            ws(&format!("docs/{name}")),
        ));
    }
    for name in EXAMPLES {
        files.push(Entry::file(
            doc(&format!("examples/{name}")),
            0o644,
            ws(&format!("packaging/{name}")),
        ));
    }
    for name in inputs.drop_ins {
        files.push(Entry::file(
            doc(&format!("examples/{DROP_IN_DIR}/{name}")),
            0o644,
            ws(&format!("packaging/{DROP_IN_DIR}/{name}")),
        ));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// packaging/clockprof.service with ExecStart on the packaged binary. Its
/// one ExecStart must be the hand-installed one: anything else means the
/// unit changed in a way this rewrite does not know.
pub fn packaged_unit(unit: &str) -> Result<String> {
    let starts: Vec<&str> = unit
        .lines()
        .filter(|line| line.trim_start().starts_with("ExecStart="))
        .collect();
    match starts.as_slice() {
        [line] if line.starts_with(HAND_INSTALLED_EXEC) => {
            Ok(unit.replacen(HAND_INSTALLED_EXEC, PACKAGED_EXEC, 1))
        }
        _ => bail!(
            "packaging/clockprof.service should have one `{HAND_INSTALLED_EXEC}...` line for \
             dist to point at /usr/bin/clockprof; it has {starts:?}"
        ),
    }
}

/// The Collector configuration README shows (and the OTLP tests run), from
/// its marker comment to the end of the indented block.
pub fn collector_config(readme: &str) -> Result<String> {
    let block: Vec<&str> = readme
        .lines()
        .skip_while(|line| line.trim() != "# clockprof's OTLP profiles into a Collector")
        .take_while(|line| line.starts_with("    ") || line.is_empty())
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .collect();
    let text = block.join("\n");
    if block.len() < 10 {
        bail!("README.md shows no Collector configuration (its `# clockprof's OTLP profiles into a Collector` block)");
    }
    Ok(format!("{}\n", text.trim_end()))
}

/// Writes `files` under `root`: directories 0755, each file with its mode.
pub fn stage(root: &Path, files: &[Entry]) -> Result<()> {
    for entry in files {
        let path = root.join(&entry.path);
        make_dirs(root, path.parent().expect("a file below the root"))?;
        let bytes = match &entry.content {
            Content::File(source) => {
                fs::read(source).with_context(|| format!("could not read {}", source.display()))?
            }
            Content::Bytes(bytes) => bytes.clone(),
        };
        let bytes = if entry.gzip { gzip(&bytes)? } else { bytes };
        fs::write(&path, bytes).with_context(|| format!("could not write {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(entry.mode))?;
    }
    Ok(())
}

/// `dir` and its parents up to `root`, 0755 whatever the umask.
pub fn make_dirs(root: &Path, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    let mut dir = dir;
    while dir.starts_with(root) {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
        match dir.parent() {
            Some(parent) => dir = parent,
            None => break,
        }
    }
    Ok(())
}

/// `gzip -9n`: no name or time stamp in the header, as Debian compresses
/// (reproducible, and what lintian expects of man pages and changelogs).
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    crate::process::filter(Command::new("gzip").arg("-9n"), bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs_files() -> Vec<Entry> {
        let pages = ["clockprof.1".to_string(), "clockprof-record.1".to_string()];
        let drop_ins = ["push.conf".to_string()];
        files(&Inputs {
            workspace: Path::new("/ws"),
            binary: Path::new("/work/clockprof"),
            generated: Path::new("/work/generated"),
            man_pages: &pages,
            drop_ins: &drop_ins,
            unit: "unit".into(),
            collector_config: "receivers:".into(),
            copyright: "Format: ...".into(),
            changelog: "clockprof (0.1.0-1) unstable".into(),
        })
    }

    #[test]
    fn the_package_holds_the_binary_docs_unit_and_examples_where_debian_looks() {
        let files = inputs_files();
        let find = |path: &str| {
            files
                .iter()
                .find(|e| e.path == path)
                .unwrap_or_else(|| panic!("no {path}"))
        };
        assert_eq!(find("usr/bin/clockprof").mode, 0o755);
        assert_eq!(
            find("usr/bin/clockprof").content,
            Content::File("/work/clockprof".into())
        );
        assert!(find("usr/share/man/man1/clockprof-record.1.gz").gzip);
        assert!(find("usr/share/doc/clockprof/changelog.Debian.gz").gzip);
        assert!(!find("usr/share/doc/clockprof/copyright").gzip);
        assert_eq!(
            find("usr/lib/sysusers.d/clockprof.conf").content,
            Content::File("/ws/packaging/clockprof.sysusers".into())
        );
        find("usr/lib/systemd/system/clockprof.service");
        find("usr/share/bash-completion/completions/clockprof");
        find("usr/share/zsh/vendor-completions/_clockprof");
        find("usr/share/fish/vendor_completions.d/clockprof.fish");
        find("usr/share/doc/clockprof/examples/clockprof.service.d/push.conf");
        find("usr/share/doc/clockprof/examples/otelcol.yaml");
        find("usr/share/doc/clockprof/docs/serve.md.gz");
        for entry in &files {
            assert!(entry.path.starts_with("usr/"), "{}", entry.path);
            assert_eq!(entry.gzip, entry.path.ends_with(".gz"), "{}", entry.path);
            if entry.path != BIN_PATH {
                assert_eq!(entry.mode, 0o644, "{}", entry.path);
            }
        }
        let mut paths: Vec<&str> = files.iter().map(|e| e.path.as_str()).collect();
        paths.dedup();
        assert_eq!(paths.len(), files.len(), "a path twice");
    }

    #[test]
    fn the_packaged_unit_starts_the_packaged_binary() {
        let unit = "# install -m 0755 clockprof /usr/local/bin/clockprof\n[Service]\n\
                    ExecStart=/usr/local/bin/clockprof serve --listen 127.0.0.1:9742\nUser=clockprof\n";
        let packaged = packaged_unit(unit).unwrap();
        assert!(packaged.contains("\nExecStart=/usr/bin/clockprof serve --listen 127.0.0.1:9742\n"));
        assert!(packaged.starts_with("# install -m 0755 clockprof /usr/local/bin/clockprof\n"));
        assert!(packaged_unit("[Service]\nExecStart=/opt/clockprof serve\n").is_err());
        assert!(packaged_unit("[Service]\nUser=clockprof\n").is_err());
    }

    #[test]
    fn the_collector_config_is_readmes_indented_block() {
        let readme =
            "text\n\n    # clockprof's OTLP profiles into a Collector\n    receivers:\n      \
                      otlp:\n\n    a\n    b\n    c\n    d\n    e\n    f\n    g\n\nafter\n";
        let config = collector_config(readme).unwrap();
        assert!(config.starts_with(
            "# clockprof's OTLP profiles into a Collector\nreceivers:\n  otlp:\n\na\n"
        ));
        assert!(config.ends_with("g\n"));
        assert!(collector_config("no config").is_err());
    }

    #[test]
    fn gzip_output_has_no_name_or_time() {
        let packed = gzip(b"hello").unwrap();
        // Bytes 4..8 are the modification time, 3 the flags (FNAME = 8).
        assert_eq!(&packed[4..8], &[0, 0, 0, 0]);
        assert_eq!(packed[3] & 0x08, 0);
    }
}

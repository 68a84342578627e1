//! Writes a profile out. Each output format is one module that declares its
//! row of [`FORMATS`]: name, file extension, help line and render function.
//! `-f`, the extension lookup of `-o`, `--help` and every other use read that
//! table, so adding a format is one module plus one entry here. The text
//! summary (no `-o`) is not a format. Files appear whole or not at all
//! (OutputFile).

pub mod folded;
pub mod json;
mod output_file;
pub mod pprof;
mod summary;
pub mod svg;

use std::fmt;
use std::path::Path;

use anyhow::{bail, Result};
use clap::builder::PossibleValue;

use crate::aggregate::Profile;

pub use output_file::{Existing, OutputFile};
pub use summary::summary;

/// Every output format, in the order `--help` lists them.
pub static FORMATS: [Format; 4] = [svg::FORMAT, folded::FORMAT, json::FORMAT, pprof::FORMAT];

/// One output format: a row of [`FORMATS`]. `-f` parses into it (clap's
/// `ValueEnum`, whose variants are that table).
#[derive(Clone, Copy)]
pub struct Format {
    /// What `-f` takes.
    name: &'static str,
    /// What a file in this format ends in, without the first dot
    /// (`pb.gz`); `-o` without `-f` goes by it.
    extension: &'static str,
    /// One line for `--help`.
    help: &'static str,
    render: fn(&Profile) -> Result<Vec<u8>>,
}

impl Format {
    pub fn extension(self) -> &'static str {
        self.extension
    }

    /// Renders `profile` in this format.
    pub fn render(self, profile: &Profile) -> Result<Vec<u8>> {
        (self.render)(profile)
    }

    /// The format whose extension ends `path`'s file name (with something
    /// before it: `.svg` alone is a hidden file, not an SVG).
    pub fn of_path(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_string_lossy();
        FORMATS.iter().copied().find(|format| {
            name.strip_suffix(format.extension)
                .and_then(|stem| stem.strip_suffix('.'))
                .is_some_and(|stem| !stem.is_empty())
        })
    }

    /// The format `-f` names, else the one the file's extension names.
    pub fn resolve(explicit: Option<Format>, path: &Path) -> Result<Format> {
        if let Some(format) = explicit {
            return Ok(format);
        }
        match Format::of_path(path) {
            Some(format) => Ok(format),
            None => bail!(
                "cannot tell the output format of `{}` from its extension; use -f {}",
                path.to_string_lossy(),
                one_of(FORMATS.iter().map(|f| f.name))
            ),
        }
    }

    /// `.svg, .folded, .json, .pb.gz`, for help texts.
    pub fn extensions() -> String {
        FORMATS
            .iter()
            .map(|f| format!(".{}", f.extension))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `a, b, c or d`.
fn one_of<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

impl clap::ValueEnum for Format {
    fn value_variants<'a>() -> &'a [Self] {
        &FORMATS
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name).help(self.help))
    }
}

impl PartialEq for Format {
    fn eq(&self, other: &Format) -> bool {
        self.name == other.name
    }
}

impl Eq for Format {}

impl fmt::Debug for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn format_from_flag_or_extension() {
        let resolve = |f, p: &str| Format::resolve(f, Path::new(p));
        assert_eq!(resolve(None, "a/b.svg").unwrap(), svg::FORMAT);
        assert_eq!(resolve(None, "x.folded").unwrap(), folded::FORMAT);
        assert_eq!(resolve(None, "x.json").unwrap(), json::FORMAT);
        assert_eq!(resolve(Some(json::FORMAT), "x.svg").unwrap(), json::FORMAT);
        assert!(resolve(None, "x.txt").is_err());
        assert!(resolve(None, "x.gz").is_err());
        assert!(resolve(None, ".svg").is_err());
        assert_eq!(resolve(None, "x.pb.gz").unwrap(), pprof::FORMAT);
        assert_eq!(Format::from_str("pprof", false).unwrap(), pprof::FORMAT);
        assert!(Format::from_str("png", false).is_err());
    }

    #[test]
    fn the_table_names_each_format_and_extension_once() {
        let mut names: Vec<&str> = FORMATS.iter().map(|f| f.name).collect();
        let mut extensions: Vec<&str> = FORMATS.iter().map(|f| f.extension).collect();
        names.sort();
        names.dedup();
        extensions.sort();
        extensions.dedup();
        assert_eq!(names.len(), FORMATS.len());
        assert_eq!(extensions.len(), FORMATS.len());
        for format in &FORMATS {
            let file = format!("profile.{}", format.extension);
            assert_eq!(Format::of_path(Path::new(&file)), Some(*format));
        }
    }

    #[test]
    fn the_refusal_lists_the_table() {
        let err = Format::resolve(None, Path::new("x.txt")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot tell the output format of `x.txt` from its extension; use -f svg, folded, json or pprof"
        );
        assert_eq!(Format::extensions(), ".svg, .folded, .json, .pb.gz");
    }
}

//! Writes a profile out: folded stacks, an SVG flamegraph, JSON, or a text
//! summary on stdout. Files appear whole or not at all.

mod folded;
mod json;
mod output_file;
mod pprof;
mod summary;
mod svg;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Result};

use crate::aggregate::Profile;

pub use output_file::{Existing, OutputFile};
pub use summary::summary;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Svg,
    Folded,
    Json,
    Pprof,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "svg" => Ok(Format::Svg),
            "folded" => Ok(Format::Folded),
            "json" => Ok(Format::Json),
            "pprof" => Ok(Format::Pprof),
            other => Err(format!(
                "unknown format `{other}`; use svg, folded, json or pprof"
            )),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Svg => "svg",
            Format::Folded => "folded",
            Format::Json => "json",
            Format::Pprof => "pprof",
        })
    }
}

impl Format {
    /// The format `-f` names, else the one the file's extension names.
    pub fn resolve(explicit: Option<Format>, path: &Path) -> Result<Format> {
        if let Some(format) = explicit {
            return Ok(format);
        }
        let name = path.to_string_lossy();
        if name.ends_with(".pb.gz") {
            return Ok(Format::Pprof);
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("svg") => Ok(Format::Svg),
            Some("folded") => Ok(Format::Folded),
            Some("json") => Ok(Format::Json),
            _ => bail!(
                "cannot tell the output format of `{name}` from its extension; use -f svg, folded, json or pprof"
            ),
        }
    }
}

/// Renders `profile` in `format`.
pub fn render(profile: &Profile, format: Format) -> Result<Vec<u8>> {
    match format {
        Format::Folded => Ok(folded::render(profile).into_bytes()),
        Format::Svg => svg::render(profile),
        Format::Json => json::render(profile),
        Format::Pprof => pprof::render(profile),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_from_flag_or_extension() {
        let resolve = |f, p: &str| Format::resolve(f, Path::new(p));
        assert_eq!(resolve(None, "a/b.svg").unwrap(), Format::Svg);
        assert_eq!(resolve(None, "x.folded").unwrap(), Format::Folded);
        assert_eq!(resolve(None, "x.json").unwrap(), Format::Json);
        assert_eq!(resolve(Some(Format::Json), "x.svg").unwrap(), Format::Json);
        assert!(resolve(None, "x.txt").is_err());
        assert_eq!(resolve(None, "x.pb.gz").unwrap(), Format::Pprof);
        assert_eq!("pprof".parse::<Format>().unwrap(), Format::Pprof);
        assert!("png".parse::<Format>().is_err());
    }
}

//! Writes a profile out: folded stacks, an SVG flamegraph, JSON, or a text
//! summary on stdout. Files appear whole or not at all.

mod folded;
mod json;
mod output_file;
mod summary;
mod svg;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Result};

use crate::aggregate::Profile;

pub use output_file::OutputFile;
pub use summary::summary;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Svg,
    Folded,
    Json,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "svg" => Ok(Format::Svg),
            "folded" => Ok(Format::Folded),
            "json" => Ok(Format::Json),
            "pprof" => Err("pprof output is not supported yet; use svg, folded or json".into()),
            other => Err(format!("unknown format `{other}`; use svg, folded or json")),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Svg => "svg",
            Format::Folded => "folded",
            Format::Json => "json",
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
            bail!("pprof output (.pb.gz) is not supported yet; write .svg, .folded or .json");
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("svg") => Ok(Format::Svg),
            Some("folded") => Ok(Format::Folded),
            Some("json") => Ok(Format::Json),
            _ => bail!(
                "cannot tell the output format of `{name}` from its extension; use -f svg, -f folded or -f json"
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
        assert!(resolve(None, "x.pb.gz").is_err());
        assert!("pprof".parse::<Format>().is_err());
    }
}

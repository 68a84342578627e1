//! SVG flamegraph through inferno's library API.

use anyhow::{Context, Result};
use inferno::flamegraph::{self, Options};

use super::Format;
use crate::aggregate::Profile;

/// The title names what was counted, how, and for how long, so a flamegraph
/// shared later still says what it shows.
pub fn title(profile: &Profile) -> String {
    let sources: Vec<&str> = profile.info.sources.iter().map(|s| s.name()).collect();
    format!(
        "clockprof: {} clock reads over {:.1} s ({}; backend {})",
        profile.total,
        profile.info.duration.as_secs_f64(),
        sources.join(", "),
        profile.info.backends().join(", ")
    )
}

pub const FORMAT: Format = Format {
    name: "svg",
    extension: "svg",
    help: "SVG flamegraph, drawn by inferno",
    render,
};

fn render(profile: &Profile) -> Result<Vec<u8>> {
    let lines = profile.folded_lines();
    let mut options = Options::default();
    options.title = title(profile);
    options.count_name = "reads".to_string();
    options.name_type = "Function:".to_string();
    if lines.is_empty() {
        // inferno refuses an empty profile; a flamegraph that says "nothing
        // read the clock" is the honest output.
        return Ok(empty_svg(&options.title).into_bytes());
    }
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut svg)
        .context("inferno could not draw the flamegraph")?;
    Ok(svg)
}

fn empty_svg(title: &str) -> String {
    let title = title.replace('&', "&amp;").replace('<', "&lt;");
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1200\" height=\"60\"><text x=\"10\" y=\"24\">{title}</text><text x=\"10\" y=\"48\">no clock reads were recorded</text></svg>\n"
    )
}

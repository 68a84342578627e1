//! Folded stacks, one `ROOT;FRAME;...;LEAF COUNT` line per stack (DESIGN.md).

use anyhow::Result;

use super::Format;
use crate::aggregate::Profile;

pub const FORMAT: Format = Format {
    name: "folded",
    extension: "folded",
    help:
        "folded stacks, `ROOT;FRAME;...;LEAF COUNT` per line (flamegraph.pl, inferno, speedscope)",
    render,
};

fn render(profile: &Profile) -> Result<Vec<u8>> {
    let mut text = profile.folded_lines().join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    Ok(text.into_bytes())
}

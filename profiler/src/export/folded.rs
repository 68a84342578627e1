//! Folded stacks, one `ROOT;FRAME;...;LEAF COUNT` line per stack (DESIGN.md).

use crate::aggregate::Profile;

pub fn render(profile: &Profile) -> String {
    let mut text = profile.folded_lines().join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text
}

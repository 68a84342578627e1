//! Names that come from the traced processes (their comm, their symbols) are
//! chosen by whoever runs them. Before they reach a line-based file or a
//! terminal, control characters are written out as escapes, so a newline
//! cannot forge a folded line and an ESC cannot drive the terminal.

use std::borrow::Cow;
use std::fmt::Write;

/// `name` with every control character (C0, DEL, C1) written as `\n`, `\r`,
/// `\t` or `\xNN` / `\u{NN}`.
pub fn printable(name: &str) -> Cow<'_, str> {
    if !name.chars().any(char::is_control) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A frame or process name in folded stacks: printable, and without the `;`
/// that separates frames (C++ templates and Rust closures can hold one).
pub fn folded(name: &str) -> String {
    printable(name).replace(';', ":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(printable("main"), Cow::Borrowed("main")));
        assert_eq!(printable("a\nb x 99"), "a\\nb x 99");
        assert_eq!(
            printable("\x1b[2J\x1b]0;pwned\x07"),
            "\\x1b[2J\\x1b]0;pwned\\x07"
        );
        assert_eq!(printable("cr\r\ttab\x7f"), "cr\\r\\ttab\\x7f");
        assert_eq!(printable("c1\u{9b}31m"), "c1\\u{9b}31m");
        assert_eq!(printable("ünïcode ✓"), "ünïcode ✓");
    }

    #[test]
    fn folded_names_are_one_frame_on_one_line() {
        let name = folded("std::map<int;int>\nforged;line 99");
        assert_eq!(name, "std::map<int:int>\\nforged:line 99");
        assert!(!name.contains(['\n', ';']));
    }
}

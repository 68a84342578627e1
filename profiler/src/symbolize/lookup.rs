//! What blazesym is asked and what it answers, in the form every naming
//! step shares.

use std::collections::HashMap;

use blazesym::symbolize::Symbolized;

/// The address to look up for the `depth`-th frame (0 = innermost). Frames
/// above the innermost hold return addresses, which point past the call and
/// may belong to the next function; one byte back is inside the call.
pub(super) fn lookup_address(ip: u64, depth: usize) -> u64 {
    if depth == 0 {
        ip
    } else {
        ip.saturating_sub(1)
    }
}

/// Names of the function at each looked-up location, outermost (inlining)
/// first, keyed by location.
pub(super) type NameTable<K> = HashMap<K, Vec<String>>;

/// Bytes of a function name kept; longer ones end in `...`. A name comes
/// from a file its owner wrote, and is copied into every stack that holds
/// it.
pub(super) const MAX_NAME_BYTES: usize = 512;

/// `name`, cut at `MAX_NAME_BYTES` (on a character boundary) with `...`.
pub(super) fn capped_name(name: &str) -> String {
    if name.len() <= MAX_NAME_BYTES {
        return name.to_string();
    }
    let mut end = MAX_NAME_BYTES - 3;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &name[..end])
}

/// The function and the inlined functions blazesym found at an address,
/// outermost first, each name capped; None where it found none.
pub(crate) fn names_of(symbolized: &Symbolized) -> Option<Vec<String>> {
    match symbolized {
        Symbolized::Sym(sym) => {
            let mut names = vec![capped_name(&sym.name)];
            names.extend(sym.inlined.iter().map(|f| capped_name(&f.name)));
            Some(names)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_addresses_step_back_into_the_call() {
        assert_eq!(lookup_address(0x1000, 0), 0x1000);
        assert_eq!(lookup_address(0x1000, 1), 0xfff);
        assert_eq!(lookup_address(0, 3), 0);
    }

    #[test]
    fn names_are_capped_on_a_character_boundary() {
        assert_eq!(capped_name("main"), "main");
        let cut = capped_name(&"é".repeat(MAX_NAME_BYTES));
        assert!(cut.len() <= MAX_NAME_BYTES && cut.ends_with("..."), "{cut}");
    }
}

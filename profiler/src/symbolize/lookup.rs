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

/// The function and the inlined functions blazesym found at an address,
/// outermost first; None where it found none.
pub(crate) fn names_of(symbolized: &Symbolized) -> Option<Vec<String>> {
    match symbolized {
        Symbolized::Sym(sym) => {
            let mut names = vec![sym.name.to_string()];
            names.extend(sym.inlined.iter().map(|f| f.name.to_string()));
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
}

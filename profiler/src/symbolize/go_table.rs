//! Names for the frames of a stripped Go executable, from its `.gopclntab`
//! (host/gopclntab.rs): the last resort after its symbols, DWARF and any
//! debug file have named nothing.

use std::collections::HashMap;
use std::path::Path;

use object::ReadCache;

use super::lookup::capped_name;
use crate::host::gopclntab;

/// Names for those of `offsets` (file offsets of looked-up addresses) that
/// `file`'s Go function table covers; none when it is not a Go executable.
pub(super) fn name_offsets(file: &Path, offsets: &[u64]) -> HashMap<u64, Vec<String>> {
    let Ok(opened) = std::fs::File::open(file) else {
        return HashMap::new();
    };
    let data = ReadCache::new(opened);
    let Ok(elf) = object::File::parse(&data) else {
        return HashMap::new();
    };
    gopclntab::with_table(&elf, |table| {
        Some(
            offsets
                .iter()
                .filter_map(|&offset| {
                    let address = gopclntab::address_of(&elf, offset)?;
                    let (name, _) = table.function_at(address)?;
                    Some((offset, vec![capped_name(name)]))
                })
                .collect(),
        )
    })
    .unwrap_or_default()
}

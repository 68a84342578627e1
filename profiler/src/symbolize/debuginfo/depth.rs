//! blazesym parses a function's inlined calls recursively, one call per
//! level of `DW_TAG_inlined_subroutine` nesting, with no limit: a user's
//! binary with some 20,000 nested entries would overflow clockprof's stack
//! and abort it. It does so only when asked for inlined calls with code
//! information, which the symbolizer does not enable today; this guard is
//! for the day it does, and against DWARF no compiler writes. Before
//! blazesym reads the DWARF of a file root did not install, the nesting of
//! its debugging entries is measured here, in a loop; a file nested deeper
//! than compilers nest is named from its ELF symbols only.

use std::borrow::Cow;
use std::path::Path;

use gimli::RunTimeEndian;
use object::{Object, ObjectSection};

use crate::host::elf_section::bounded_data;

/// Deepest nesting of debugging entries read. Compilers nest a few dozen
/// levels (deep inlining in Rust and C++ included); blazesym recurses
/// twice per level, in frames of a few hundred bytes.
pub const MAX_DIE_DEPTH: isize = 1_000;

/// `.debug_info` larger than this is not scanned, and the file's DWARF not
/// read (its ELF symbols still name its functions): the scan reads the
/// whole section, where blazesym reads only the units it needs, and a
/// test runner's hundreds of MiB took minutes in a TCG guest over 9p.
const MAX_SCANNED_BYTES: u64 = 64 << 20;

/// Whether every debugging entry of `file` (an ELF file's path) nests at
/// most `MAX_DIE_DEPTH` deep; a file without DWARF passes, one whose
/// entries cannot be read does not.
pub fn nesting_is_bounded(file: &Path) -> bool {
    let Ok(handle) = std::fs::File::open(file) else {
        return false;
    };
    let data = object::ReadCache::new(handle);
    let Ok(elf) = object::File::parse(&data) else {
        return true;
    };
    let Some(info) = elf.section_by_name(".debug_info") else {
        return true;
    };
    // Before any of it is read: an uncompressed section is read whole to
    // be looked at.
    if info.size() > MAX_SCANNED_BYTES {
        return false;
    }
    let Some(info) = bounded_data(&info, MAX_SCANNED_BYTES) else {
        return false;
    };
    let abbrev = elf
        .section_by_name(".debug_abbrev")
        .and_then(|section| bounded_data(&section, MAX_SCANNED_BYTES))
        .unwrap_or(Cow::Borrowed(&[]));
    let endian = if elf.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    nesting_within(&info, &abbrev, endian, MAX_DIE_DEPTH)
}

/// Whether the entries of `.debug_info` nest at most `limit` deep.
fn nesting_within(info: &[u8], abbrev: &[u8], endian: RunTimeEndian, limit: isize) -> bool {
    let info = gimli::DebugInfo::new(info, endian);
    let abbrev = gimli::DebugAbbrev::new(abbrev, endian);
    let mut units = info.units();
    loop {
        let header = match units.next() {
            Ok(Some(header)) => header,
            Ok(None) => return true,
            Err(_) => return false,
        };
        let Ok(abbreviations) = header.abbreviations(&abbrev) else {
            return false;
        };
        let Ok(mut entries) = header.entries_raw(&abbreviations, None) else {
            return false;
        };
        while !entries.is_empty() {
            if entries.next_depth() > limit {
                return false;
            }
            match entries.read_abbreviation() {
                Ok(Some(abbreviation)) => {
                    if entries.skip_attributes(abbreviation.attributes()).is_err() {
                        return false;
                    }
                }
                Ok(None) => {}
                Err(_) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `.debug_info` of one DWARF 4 unit whose entries nest `depth` deep:
    /// a compile unit, then `depth - 1` inlined subroutines each holding
    /// the next, as a crafted binary would.
    fn nested_unit(depth: usize) -> (Vec<u8>, Vec<u8>) {
        // Abbreviation 1: DW_TAG_compile_unit, children, no attributes;
        // 2: DW_TAG_inlined_subroutine, children, no attributes.
        let abbrev = vec![1, 0x11, 1, 0, 0, 2, 0x1d, 1, 0, 0, 0];
        let mut entries = vec![1u8];
        entries.extend(std::iter::repeat_n(2u8, depth - 1));
        entries.extend(std::iter::repeat_n(0u8, depth));
        let mut unit = Vec::new();
        let length = (2 + 4 + 1 + entries.len()) as u32;
        unit.extend_from_slice(&length.to_le_bytes());
        unit.extend_from_slice(&4u16.to_le_bytes()); // version
        unit.extend_from_slice(&0u32.to_le_bytes()); // abbrev offset
        unit.push(8); // address size
        unit.extend_from_slice(&entries);
        (unit, abbrev)
    }

    #[test]
    fn deep_nesting_is_refused_without_recursing() {
        let (shallow, abbrev) = nested_unit(50);
        assert!(nesting_within(
            &shallow,
            &abbrev,
            RunTimeEndian::Little,
            100
        ));
        // 200,000 levels: a recursive reader would overflow the stack.
        let (deep, abbrev) = nested_unit(200_000);
        assert!(!nesting_within(&deep, &abbrev, RunTimeEndian::Little, 100));
        assert!(!nesting_within(
            &deep[..40],
            &abbrev,
            RunTimeEndian::Little,
            100_000_000
        ));
    }

    #[test]
    fn our_own_dwarf_nests_within_the_limit() {
        assert!(nesting_is_bounded(Path::new("/proc/self/exe")));
    }
}

//! Function names from a Go executable's `.gopclntab`, the table Go's own
//! runtime reads to print panics and tracebacks. `-ldflags=-s -w` (or
//! `strip`) removes the ELF symbol table and DWARF, but not this table, so a
//! stripped Go program still names its functions through it: the go source
//! finds `time.now` in it to place its uprobes, and the symbolizer names the
//! frames of a stripped Go binary with it.
//!
//! What it does not give back: inlined functions (their tree is in the
//! table's funcdata, not read here), the ELF names' ABI suffixes
//! (`runtime.goexit.abi0` is `runtime.goexit` here: the linker adds them to
//! the symbol table only), and file and line.
//!
//! The layout (Go's runtime/symtab.go, `pcHeader`), the same from Go 1.18
//! (magic 0xfffffff0) through 1.20 and later (0xfffffff1, the current one):
//!
//! ```text
//! magic u32, pad u8, pad u8, minLC u8, ptrSize u8,
//! then ptrSize words: nfunc, nfiles, textStart, funcnameOffset,
//!                     cuOffset, filetabOffset, pctabOffset, pclnOffset
//! pclntable (at pclnOffset): nfunc+1 × {entryOff u32, funcOff u32}, sorted
//!                            by entryOff (from textStart), the last one the
//!                            end of the text; then each _func at pclnOffset
//!                            + funcOff: {entryOff u32, nameOff i32, ...}
//! funcnametab (at funcnameOffset): the NUL-terminated names
//! ```
//!
//! The table comes from a file anyone may have written: every offset is
//! checked against the section, and a table that does not hold together
//! names nothing rather than something wrong.

use object::{Object, ObjectSection, ObjectSegment};

use super::elf_section::bounded_data;

/// The largest `.gopclntab` read: a big Go service's is tens of MiB (the
/// Collector's, ~200 MiB of code, has one of about 40 MiB).
const MAX_TABLE_BYTES: u64 = 128 << 20;
/// Longer names are not Go's (the runtime itself has no limit, but no real
/// function name comes near it), and bound the scan for the NUL.
const MAX_NAME_BYTES: usize = 4096;

const MAGIC_GO_1_18: u32 = 0xffff_fff0;
const MAGIC_GO_1_20: u32 = 0xffff_fff1;

/// A Go executable's function table, over the section's bytes.
pub struct GoFuncTable<'data> {
    table: &'data [u8],
    /// Functions in the table (its functab has one entry more: the end).
    nfunc: usize,
    /// The address function entries are offsets from.
    text_start: u64,
    funcnames: usize,
    pcln: usize,
}

impl<'data> GoFuncTable<'data> {
    /// Reads the header of `table` (a `.gopclntab`'s bytes). `text_address` is
    /// the `.text` section's address, used when the header's own textStart is
    /// 0 (a position-independent build leaves it to a relocation).
    pub fn parse(table: &'data [u8], text_address: u64) -> Option<Self> {
        let magic = u32::from_le_bytes(table.get(0..4)?.try_into().ok()?);
        let (pad1, pad2, min_lc, ptr_size) = (
            *table.get(4)?,
            *table.get(5)?,
            *table.get(6)?,
            *table.get(7)?,
        );
        if !matches!(magic, MAGIC_GO_1_18 | MAGIC_GO_1_20)
            || (pad1, pad2) != (0, 0)
            || min_lc != 1
            || ptr_size != 8
        {
            return None;
        }
        let word = |index: usize| -> Option<u64> {
            let at = 8 + index * 8;
            Some(u64::from_le_bytes(table.get(at..at + 8)?.try_into().ok()?))
        };
        let nfunc = usize::try_from(word(0)?).ok()?;
        let text_start = match word(2)? {
            0 => text_address,
            start => start,
        };
        let funcnames = usize::try_from(word(3)?).ok()?;
        let pcln = usize::try_from(word(7)?).ok()?;
        // The functab, end entry included, must lie within the table.
        let functab_end = nfunc.checked_add(1)?.checked_mul(8)?.checked_add(pcln)?;
        if nfunc == 0 || functab_end > table.len() || funcnames >= table.len() {
            return None;
        }
        Some(GoFuncTable {
            table,
            nfunc,
            text_start,
            funcnames,
            pcln,
        })
    }

    /// Functab entry `index`: (entry offset from textStart, _func offset).
    fn functab(&self, index: usize) -> Option<(u32, u32)> {
        let at = self.pcln + index * 8;
        let bytes = self.table.get(at..at + 8)?;
        Some((
            u32::from_le_bytes(bytes[0..4].try_into().ok()?),
            u32::from_le_bytes(bytes[4..8].try_into().ok()?),
        ))
    }

    /// The name of the `_func` at `func_offset` in the pclntable.
    fn name(&self, func_offset: u32) -> Option<&'data str> {
        let func = self.pcln.checked_add(usize::try_from(func_offset).ok()?)?;
        let name_offset = i32::from_le_bytes(self.table.get(func + 4..func + 8)?.try_into().ok()?);
        let start = self
            .funcnames
            .checked_add(usize::try_from(name_offset).ok()?)?;
        let rest = self.table.get(start..)?;
        let rest = &rest[..rest.len().min(MAX_NAME_BYTES)];
        let end = rest.iter().position(|&b| b == 0)?;
        let name = std::str::from_utf8(&rest[..end]).ok()?;
        (!name.is_empty()).then_some(name)
    }

    /// The function whose code holds `address` (a virtual address of the
    /// file), and that function's entry address.
    pub fn function_at(&self, address: u64) -> Option<(&'data str, u64)> {
        let offset = u32::try_from(address.checked_sub(self.text_start)?).ok()?;
        let (end, _) = self.functab(self.nfunc)?;
        if offset >= end {
            return None;
        }
        // The last entry at or below the offset; the functab is sorted.
        let (mut low, mut high) = (0, self.nfunc);
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if self.functab(middle)?.0 <= offset {
                low = middle;
            } else {
                high = middle;
            }
        }
        let (entry, func) = self.functab(low)?;
        if entry > offset {
            return None;
        }
        Some((
            self.name(func)?,
            self.text_start.checked_add(u64::from(entry))?,
        ))
    }

    /// The entry address of the function named `wanted`.
    pub fn entry_of(&self, wanted: &str) -> Option<u64> {
        (0..self.nfunc).find_map(|index| {
            let (entry, func) = self.functab(index)?;
            (self.name(func)? == wanted).then(|| self.text_start.checked_add(u64::from(entry)))?
        })
    }
}

/// Runs `with` on the function table of `elf`, if it is a Go executable with
/// a readable `.gopclntab`.
pub fn with_table<'data, R: object::ReadRef<'data>, T>(
    elf: &object::File<'data, R>,
    with: impl FnOnce(&GoFuncTable) -> Option<T>,
) -> Option<T> {
    let section = elf.section_by_name(".gopclntab")?;
    let text_address = elf
        .section_by_name(".text")
        .map_or(0, |text| text.address());
    let bytes = bounded_data(&section, MAX_TABLE_BYTES)?;
    with(&GoFuncTable::parse(&bytes, text_address)?)
}

/// The file offset of the virtual address `address`, by the loaded segment
/// that holds it (where a uprobe is placed).
pub fn file_offset_of<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
    address: u64,
) -> Option<u64> {
    elf.segments().find_map(|segment| {
        let (file_start, file_size) = segment.file_range();
        let within = address.checked_sub(segment.address())?;
        // The headers are the file owner's: no sum may overflow.
        file_start
            .checked_add(within)
            .filter(|_| within < file_size)
    })
}

/// The virtual address at file offset `offset` (where a sampled frame was,
/// as the normalizer gives it).
pub fn address_of<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
    offset: u64,
) -> Option<u64> {
    elf.segments().find_map(|segment| {
        let (file_start, file_size) = segment.file_range();
        let within = offset.checked_sub(file_start)?;
        segment
            .address()
            .checked_add(within)
            .filter(|_| within < file_size)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table as Go 1.20+ lays it out: two functions, `main.a` at
    /// textStart+0x10 and `main.b` at +0x40, the text ending at +0x80.
    fn table() -> Vec<u8> {
        let mut t = Vec::new();
        t.extend(MAGIC_GO_1_20.to_le_bytes());
        t.extend([0, 0, 1, 8]);
        let header_words = 8;
        let funcnames = 8 + header_words * 8;
        let names = b"main.a\0main.b\0";
        let pcln = funcnames + names.len();
        for word in [2, 0, 0x40_1000, funcnames, 0, 0, 0, pcln] {
            t.extend((word as u64).to_le_bytes());
        }
        t.extend(names);
        // functab: 3 entries (2 functions and the end), then the two _funcs.
        let funcs = 3 * 8;
        for (entry, func) in [(0x10u32, funcs), (0x40, funcs + 8), (0x80, 0)] {
            t.extend(entry.to_le_bytes());
            t.extend((func as u32).to_le_bytes());
        }
        for (entry, name) in [(0x10u32, 0i32), (0x40, 7)] {
            t.extend(entry.to_le_bytes());
            t.extend(name.to_le_bytes());
        }
        t
    }

    #[test]
    fn names_the_function_holding_an_address() {
        let t = table();
        let go = GoFuncTable::parse(&t, 0).unwrap();
        assert_eq!(go.function_at(0x40_1010), Some(("main.a", 0x40_1010)));
        assert_eq!(go.function_at(0x40_103f), Some(("main.a", 0x40_1010)));
        assert_eq!(go.function_at(0x40_1040), Some(("main.b", 0x40_1040)));
        assert_eq!(go.function_at(0x40_107f), Some(("main.b", 0x40_1040)));
        // Before the first function, past the text's end, below textStart.
        assert_eq!(go.function_at(0x40_100f), None);
        assert_eq!(go.function_at(0x40_1080), None);
        assert_eq!(go.function_at(0x1000), None);
        assert_eq!(go.entry_of("main.b"), Some(0x40_1040));
        assert_eq!(go.entry_of("main.c"), None);
    }

    #[test]
    fn a_relocated_text_start_comes_from_the_text_section() {
        let mut t = table();
        t[8 + 16..8 + 24].copy_from_slice(&0u64.to_le_bytes());
        let go = GoFuncTable::parse(&t, 0x9000).unwrap();
        assert_eq!(go.function_at(0x9040), Some(("main.b", 0x9040)));
    }

    #[test]
    fn a_text_start_at_the_top_of_the_address_space_overflows_nothing() {
        let mut t = table();
        t[8 + 16..8 + 24].copy_from_slice(&(u64::MAX - 0x20).to_le_bytes());
        let go = GoFuncTable::parse(&t, 0).unwrap();
        // main.b's entry (textStart + 0x40) is past the top: not found.
        assert_eq!(go.entry_of("main.b"), None);
        assert_eq!(go.function_at(u64::MAX), Some(("main.a", u64::MAX - 0x10)));
    }

    #[test]
    fn a_table_that_does_not_hold_together_names_nothing() {
        let t = table();
        // Older Go releases (a different layout), and other magics.
        for magic in [0xffff_fffau32, 0xffff_fffb, 0] {
            let mut old = t.clone();
            old[0..4].copy_from_slice(&magic.to_le_bytes());
            assert!(GoFuncTable::parse(&old, 0).is_none());
        }
        // Truncated anywhere: no panic, and nothing named wrongly.
        for len in 0..t.len() {
            if let Some(go) = GoFuncTable::parse(&t[..len], 0) {
                for address in [0x40_1010, 0x40_1040, 0x40_1070] {
                    if let Some((name, _)) = go.function_at(address) {
                        assert!(["main.a", "main.b"].contains(&name), "{name}");
                    }
                }
            }
        }
        // A name offset pointing outside the table.
        let mut wild = t.clone();
        let last = wild.len() - 4;
        wild[last..].copy_from_slice(&i32::MAX.to_le_bytes());
        let go = GoFuncTable::parse(&wild, 0).unwrap();
        assert_eq!(go.function_at(0x40_1040), None);
        let mut negative = t;
        negative[last..].copy_from_slice(&(-5i32).to_le_bytes());
        let go = GoFuncTable::parse(&negative, 0).unwrap();
        assert_eq!(go.function_at(0x40_1040), None);
    }
}

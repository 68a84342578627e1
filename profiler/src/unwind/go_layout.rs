//! Where a Go program with cgo keeps the way from a thread to the goroutine
//! that called into C (profiler_common::GoLayout): the offsets of the
//! runtime's `g`, `m` and `gobuf` fields, from the program's own DWARF
//! (they change between Go releases), and where its `g` sits in TLS, from
//! its TLS segment and the `runtime.tlsg` symbol. A program built without
//! DWARF (`-ldflags=-w`) or symbols (`-s`) has none, and its cgo stacks end
//! at `runtime.asmcgocall`.

use gimli::{AttributeValue, EndianSlice, RunTimeEndian};
use object::{Object, ObjectSymbol};
use profiler_common::GoLayout;

use crate::host::binaries::bounded_data;

/// A DWARF section larger than this is not read (Go 1.19's cgo fixture's
/// .debug_info is 0.8 MB uncompressed; a large service's some tens of MB):
/// the file is the user's, and its size bounds the parse.
const MAX_DWARF_BYTES: u64 = 256 << 20;

/// The runtime's struct fields the eBPF side follows.
const FIELDS: [(&str, &str); 5] = [
    ("runtime.g", "m"),
    ("runtime.g", "sched"),
    ("runtime.m", "curg"),
    ("runtime.gobuf", "sp"),
    ("runtime.gobuf", "bp"),
];

/// The GoLayout of the Go program `elf`, if its DWARF and TLS say.
pub fn go_layout<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
) -> Option<GoLayout> {
    let tls_g = tls_g_offset(elf)?;
    let [g_m, g_sched, m_curg, gobuf_sp, gobuf_bp] = field_offsets(elf)?;
    Some(GoLayout {
        tls_g,
        g_m,
        m_curg,
        g_sched_sp: g_sched.checked_add(gobuf_sp)?,
        g_sched_bp: g_sched.checked_add(gobuf_bp)?,
    })
}

/// Where `runtime.tlsg` (the `g` slot) is from the thread pointer: x86_64
/// puts the executable's TLS block right below it (TLS variant II), the
/// block's size rounded up to its alignment.
fn tls_g_offset<'data, R: object::ReadRef<'data>>(elf: &object::File<'data, R>) -> Option<i64> {
    let object::File::Elf64(elf64) = elf else {
        return None;
    };
    use object::read::elf::{FileHeader, ProgramHeader};
    let endian = elf64.endian();
    let tls = elf64
        .elf_header()
        .program_headers(endian, elf64.data())
        .ok()?
        .iter()
        .find(|header| header.p_type(endian) == object::elf::PT_TLS)?;
    let align = tls.p_align(endian).max(1);
    // glibc places a block whose start is not aligned differently; Go's
    // linker never makes one.
    if tls.p_vaddr(endian) % align != 0 {
        return None;
    }
    let block = tls.p_memsz(endian).checked_next_multiple_of(align)?;
    let slot = elf
        .symbols()
        .find(|s| s.name() == Ok("runtime.tlsg"))?
        .address();
    i64::try_from(slot)
        .ok()?
        .checked_sub(i64::try_from(block).ok()?)
}

/// The byte offsets of FIELDS, in its order, from the DWARF of the runtime
/// package's compilation unit.
fn field_offsets<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
) -> Option<[u32; 5]> {
    // Only what struct members need: types, their abbreviations, strings.
    let sections = gimli::DwarfSections::load(|id| -> Result<std::borrow::Cow<[u8]>, ()> {
        if !matches!(
            id,
            gimli::SectionId::DebugInfo
                | gimli::SectionId::DebugAbbrev
                | gimli::SectionId::DebugStr
        ) {
            return Ok(std::borrow::Cow::Borrowed(&[]));
        }
        Ok(elf
            .section_by_name(id.name())
            .and_then(|section| bounded_data(&section, MAX_DWARF_BYTES))
            .unwrap_or_default())
    })
    .ok()?;
    let dwarf = sections.borrow(|section| EndianSlice::new(section, RunTimeEndian::Little));
    let mut found: [Option<u32>; 5] = [None; 5];
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        // Not dwarf.unit(): that also reads the unit's line program.
        let Ok(abbreviations) = dwarf.abbreviations(&header) else {
            continue;
        };
        let Ok(mut tree) = header.entries_tree(&abbreviations, None) else {
            continue;
        };
        let Ok(root) = tree.root() else { continue };
        let mut types = root.children();
        while let Ok(Some(node)) = types.next() {
            let entry = node.entry();
            if entry.tag() != gimli::DW_TAG_structure_type {
                continue;
            }
            let Some(name) = entry_name(&dwarf, entry) else {
                continue;
            };
            if !FIELDS.iter().any(|&(strukt, _)| strukt == name) {
                continue;
            }
            let mut members = node.children();
            while let Ok(Some(member)) = members.next() {
                let member = member.entry();
                let Some(field) = entry_name(&dwarf, member) else {
                    continue;
                };
                let Some(index) = FIELDS
                    .iter()
                    .position(|&f| f == (name.as_str(), field.as_str()))
                else {
                    continue;
                };
                let offset = member
                    .attr_value(gimli::DW_AT_data_member_location)
                    .and_then(|value| value.udata_value())
                    .and_then(|offset| u32::try_from(offset).ok());
                found[index] = found[index].or(offset);
            }
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    let [a, b, c, d, e] = found;
    Some([a?, b?, c?, d?, e?])
}

/// An entry's name: inline (what Go writes) or in .debug_str.
fn entry_name<R: gimli::Reader>(
    dwarf: &gimli::Dwarf<R>,
    entry: &gimli::DebuggingInformationEntry<R>,
) -> Option<String> {
    let name = match entry.attr_value(gimli::DW_AT_name)? {
        AttributeValue::String(name) => name,
        AttributeValue::DebugStrRef(offset) => dwarf.debug_str.get_str(offset).ok()?,
        _ => return None,
    };
    Some(name.to_string_lossy().ok()?.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cgo program built here with Debian's Go, its layout read back and
    /// checked against what its own `runtime.asmcgocall` reads: `g` at
    /// %fs:-8 and `g.m` at 0x30 in Go 1.19's code (`mov %fs:0xfffffffffffffff8,%rdi;
    /// mov 0x30(%rdi),%r8`).
    #[test]
    fn reads_the_layout_of_a_cgo_program() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("main.go");
        std::fs::write(
            &source,
            "package main\n// int twice(int x) { return 2 * x; }\nimport \"C\"\nfunc main() { println(C.twice(2)) }\n",
        )
        .unwrap();
        let program = dir.path().join("cgo");
        // Debian's Go, not whichever `go` is first on PATH (a newer Go
        // moved gobuf.bp): the offsets below are Go 1.19's.
        let status = std::process::Command::new("/usr/bin/go")
            .args(["build", "-o"])
            .arg(&program)
            .arg(&source)
            .env("GOCACHE", dir.path().join("cache"))
            .env("GO111MODULE", "off")
            .status()
            .expect("Debian's go runs (cargo xtask setup installs golang-go)");
        assert!(status.success());
        let data = std::fs::read(&program).unwrap();
        let elf = object::File::parse(&*data).unwrap();
        let layout = go_layout(&elf).expect("a cgo program has a layout");
        assert_eq!(layout.tls_g, -8);
        assert_eq!(layout.g_m, 0x30);
        // g.sched is right after g.m; gobuf's sp is its first field, bp
        // its seventh.
        assert_eq!(layout.g_sched_sp, 0x38);
        assert_eq!(layout.g_sched_bp, 0x38 + 6 * 8);
        assert!(layout.m_curg > 0);
    }
}

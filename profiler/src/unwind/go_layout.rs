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

use crate::host::elf_section::bounded_data;

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
    use object::ObjectSection;

    /// The Go releases the tests run on, by the path of their `go`, and
    /// what installs each.
    const GO_RELEASES: [(&str, &str); 3] = [
        ("/usr/lib/go-1.19/bin/go", "cargo xtask setup (golang-go)"),
        (
            "/usr/lib/go-1.23/bin/go",
            "cargo xtask setup (golang-1.23-go from bookworm-backports)",
        ),
        (
            "/usr/local/go/bin/go",
            "the current Go release at /usr/local/go",
        ),
    ];

    /// The bytes of the function `name` of `elf`.
    fn code<'a>(elf: &object::File<'a>, name: &str) -> &'a [u8] {
        let symbol = elf
            .symbols()
            .find(|s| s.name() == Ok(name))
            .unwrap_or_else(|| panic!("no {name}"));
        elf.sections()
            .find_map(|section| {
                section
                    .data_range(symbol.address(), symbol.size())
                    .ok()
                    .flatten()
            })
            .unwrap_or_else(|| panic!("no code of {name}"))
    }

    /// The byte after the first `pattern` in `code`.
    fn after(code: &[u8], pattern: &[u8]) -> Option<u8> {
        code.windows(pattern.len() + 1)
            .find(|window| window.starts_with(pattern))
            .map(|window| window[pattern.len()])
    }

    /// The offsets a Go program's own code uses, for the layout read from its
    /// DWARF to be checked against, whatever the release:
    /// `gosave_systemstack_switch` saves the stack pointer into `g.sched.sp`
    /// (`lea 0x8(%rsp),%r9; mov %r9,SP(%r14)`) and %rbp into `g.sched.bp`
    /// (`mov %rbp,BP(%r14)`), %r14 holding `g`; `runtime.asmcgocall` loads
    /// `g` from TLS (`mov %fs:TLS,%rdi`) and `g.m` (`mov M(%rdi),%r8`).
    /// (tls_g, g_m, g_sched_sp, g_sched_bp).
    fn offsets_in_code(elf: &object::File) -> (i64, u32, u32, u32) {
        let save = code(elf, "gosave_systemstack_switch");
        let sp = after(save, &[0x4c, 0x8d, 0x4c, 0x24, 0x08, 0x4d, 0x89, 0x4e])
            .expect("lea 0x8(%rsp),%r9; mov %r9,SP(%r14)");
        let bp = after(save, &[0x49, 0x89, 0x6e]).expect("mov %rbp,BP(%r14)");
        let switch = code(elf, "runtime.asmcgocall.abi0");
        let at = switch
            .windows(9)
            .position(|w| w.starts_with(&[0x64, 0x48, 0x8b, 0x3c, 0x25]))
            .expect("mov %fs:TLS,%rdi");
        let tls = i32::from_le_bytes(switch[at + 5..at + 9].try_into().unwrap());
        let m = after(&switch[at..], &[0x4c, 0x8b, 0x47]).expect("mov M(%rdi),%r8");
        (tls.into(), m.into(), sp.into(), bp.into())
    }

    /// A cgo program built here by each Go release of the test matrix, its
    /// layout read back from its DWARF and TLS segment, and checked against
    /// the offsets its own runtime code uses. Go 1.26's `gobuf.bp` is 8 bytes
    /// lower than 1.19's and 1.23's (its gobuf has no `ret`): only each
    /// program's DWARF says where it is.
    #[test]
    fn reads_the_layout_of_a_cgo_program_of_each_go_release() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("main.go");
        std::fs::write(
            &source,
            "package main\n// int twice(int x) { return 2 * x; }\nimport \"C\"\nfunc main() { println(C.twice(2)) }\n",
        )
        .unwrap();
        let mut bps = Vec::new();
        for (index, (go, installer)) in GO_RELEASES.iter().enumerate() {
            assert!(
                std::path::Path::new(go).exists(),
                "{go} is missing: {installer} installs it"
            );
            let program = dir.path().join(format!("cgo{index}"));
            let mut build = std::process::Command::new(go);
            build
                .args(["build", "-o"])
                .arg(&program)
                .arg(&source)
                .env("GO111MODULE", "off")
                .env("GOTOOLCHAIN", "local");
            // Go's own build cache where it has one (a fresh one builds 1.23's
            // and 1.26's runtime/cgo again, ~30 s); else one of the test's.
            if ["GOCACHE", "XDG_CACHE_HOME", "HOME"]
                .iter()
                .all(|variable| std::env::var_os(variable).is_none())
            {
                build.env("GOCACHE", dir.path().join("cache"));
            }
            let status = build
                .status()
                .unwrap_or_else(|err| panic!("{go} does not run: {err}"));
            assert!(status.success(), "{go} build failed");
            let data = std::fs::read(&program).unwrap();
            let elf = object::File::parse(&*data).unwrap();
            let layout = go_layout(&elf).unwrap_or_else(|| panic!("{go}: no layout"));
            let (tls_g, g_m, g_sched_sp, g_sched_bp) = offsets_in_code(&elf);
            assert_eq!(layout.tls_g, tls_g, "{go}");
            assert_eq!(layout.g_m, g_m, "{go}");
            assert_eq!(layout.g_sched_sp, g_sched_sp, "{go}");
            assert_eq!(layout.g_sched_bp, g_sched_bp, "{go}");
            assert!(layout.m_curg > 0, "{go}");
            bps.push(layout.g_sched_bp);
        }
        // 1.19 and 1.23: gobuf {sp, pc, g, ctxt, ret, lr, bp} at g+0x38.
        assert_eq!(bps[..2], [0x38 + 6 * 8, 0x38 + 6 * 8]);
    }
}

//! What framehop needs of one ELF file to unwind through its code: the
//! unwind tables (`.eh_frame` with its `.eh_frame_hdr` index, `.debug_frame`
//! where present), where `.text` and `.got` are (DWARF's text- and
//! data-relative addresses), and the load segments that place them in a
//! process. Not the code itself: framehop analyses instructions only for
//! Mach-O and PE, and on ELF the tables cover prologues and epilogues.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use framehop::ExplicitModuleSectionInfo;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Object, ObjectSection, ObjectSymbol};

use crate::host::elf_section::bounded_data;

/// An unwind section larger than this is not read: the largest here
/// (python3's .eh_frame) is under 1 MB.
const MAX_SECTION_BYTES: u64 = 64 << 20;

/// Section data, shared by every process that maps the file.
pub type Bytes = Arc<[u8]>;

/// A file's unwind sections, read once and shared.
pub struct UnwindSections {
    /// (file offset, virtual address, file size) of each PT_LOAD segment.
    loads: Vec<(u64, u64, u64)>,
    text: Option<Range<u64>>,
    eh_frame: Option<(Range<u64>, Bytes)>,
    eh_frame_hdr: Option<(Range<u64>, Bytes)>,
    debug_frame: Option<Bytes>,
    got: Option<Range<u64>>,
    /// A Go program's `runtime.asmcgocall`, where C code called through cgo
    /// returns to Go (see DwarfUnwinder::unwind).
    cgo_returns: Vec<Range<u64>>,
}

/// Go's function that switches to the system stack and calls C; since Go
/// 1.17 its assembly body carries the `.abi0` suffix.
const ASMCGOCALL: [&str; 2] = ["runtime.asmcgocall", "runtime.asmcgocall.abi0"];

impl UnwindSections {
    /// The sections of the ELF file at `path` (a descriptor of ours); None
    /// if it is not a 64-bit ELF file or has no unwind table.
    pub fn read(path: &Path) -> Option<UnwindSections> {
        let file = std::fs::File::open(path).ok()?;
        let cache = object::ReadCache::new(file);
        Self::parse(&cache)
    }

    /// The same from an image in memory (the vDSO).
    pub fn from_image(image: &[u8]) -> Option<UnwindSections> {
        Self::parse(image)
    }

    fn parse<'data, R: object::ReadRef<'data>>(data: R) -> Option<UnwindSections> {
        let elf = ElfFile64::<object::Endianness, R>::parse(data).ok()?;
        let endian = elf.endian();
        let loads = elf
            .elf_header()
            .program_headers(endian, data)
            .ok()?
            .iter()
            .filter(|header| header.p_type(endian) == object::elf::PT_LOAD)
            .map(|header| {
                (
                    header.p_offset(endian),
                    header.p_vaddr(endian),
                    header.p_filesz(endian),
                )
            })
            .collect();
        let section = |name: &str| -> Option<(Range<u64>, Bytes)> {
            let section = elf.section_by_name(name)?;
            let data = bounded_data(&section, MAX_SECTION_BYTES)?;
            let start = section.address();
            // Saturating: a crafted size must not wrap the range (release)
            // or panic (debug); framehop only looks addresses up in it.
            Some((
                start..start.saturating_add(section.size()),
                Arc::from(&*data),
            ))
        };
        let eh_frame = section(".eh_frame");
        let eh_frame_hdr =
            section(".eh_frame_hdr").filter(|hdr| hdr_table_is_sound(hdr, eh_frame.as_ref()));
        let sections = UnwindSections {
            loads,
            text: elf
                .section_by_name(".text")
                .map(|s| s.address()..s.address().saturating_add(s.size())),
            eh_frame,
            eh_frame_hdr,
            debug_frame: section(".debug_frame").map(|(_, data)| data),
            got: elf
                .section_by_name(".got")
                .map(|s| s.address()..s.address().saturating_add(s.size())),
            cgo_returns: if elf.section_by_name(".gopclntab").is_some() {
                elf.symbols()
                    .filter(|s| s.name().is_ok_and(|name| ASMCGOCALL.contains(&name)))
                    .map(|s| s.address()..s.address().saturating_add(s.size()))
                    .collect()
            } else {
                Vec::new()
            },
        };
        (sections.eh_frame.is_some() || sections.debug_frame.is_some()).then_some(sections)
    }

    /// Bytes held, for the cache's bound.
    pub fn size(&self) -> usize {
        [&self.eh_frame, &self.eh_frame_hdr]
            .iter()
            .filter_map(|s| s.as_ref().map(|(_, data)| data.len()))
            .sum::<usize>()
            + self.debug_frame.as_ref().map_or(0, |d| d.len())
    }

    /// The process address of virtual address 0 of the file, for a mapping
    /// of it at `start` from file offset `file_offset`: the load segment
    /// holding that offset tells how file offsets and addresses differ.
    pub fn base_avma(&self, start: u64, file_offset: u64) -> Option<u64> {
        let &(offset, vaddr, _) = self.loads.iter().find(|&&(offset, _, size)| {
            (offset..offset.saturating_add(size.max(1))).contains(&file_offset)
        })?;
        Some(
            start
                .wrapping_sub(file_offset)
                .wrapping_add(offset)
                .wrapping_sub(vaddr),
        )
    }

    /// Where the code of `runtime.asmcgocall` is, as file virtual
    /// addresses (add base_avma).
    pub fn cgo_returns(&self) -> &[Range<u64>] {
        &self.cgo_returns
    }

    pub fn module_info(&self) -> ExplicitModuleSectionInfo<Bytes> {
        ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: self.text.clone(),
            got_svma: self.got.clone(),
            eh_frame_svma: self.eh_frame.as_ref().map(|(range, _)| range.clone()),
            eh_frame: self.eh_frame.as_ref().map(|(_, data)| data.clone()),
            eh_frame_hdr_svma: self.eh_frame_hdr.as_ref().map(|(range, _)| range.clone()),
            eh_frame_hdr: self.eh_frame_hdr.as_ref().map(|(_, data)| data.clone()),
            debug_frame: self.debug_frame.clone(),
            ..Default::default()
        }
    }
}

/// Whether every entry of `.eh_frame_hdr`'s search table points into
/// `.eh_frame`. gimli turns an entry into an offset by subtracting the
/// table's `eh_frame_ptr`, unchecked (EhHdrTable::pointer_to_offset): an
/// entry below it panics where overflow is checked (found by the
/// unwind_sections fuzz target in a debug build) and wraps to a bogus offset
/// where not. A file whose table fails this gets no table, so framehop finds
/// no unwind info in it: a crafted file is not unwound, a real one always
/// passes. One pass over the table when the file is first read.
fn hdr_table_is_sound(hdr: &(Range<u64>, Bytes), eh_frame: Option<&(Range<u64>, Bytes)>) -> bool {
    use gimli::{BaseAddresses, EhFrameHdr, LittleEndian};
    let Some((eh_frame_range, eh_frame_data)) = eh_frame else {
        return false;
    };
    let bases = BaseAddresses::default()
        .set_eh_frame_hdr(hdr.0.start)
        .set_eh_frame(eh_frame_range.start);
    let Ok(parsed) = EhFrameHdr::new(&hdr.1, LittleEndian).parse(&bases, 8) else {
        return false;
    };
    let Ok(eh_frame_ptr) = parsed.eh_frame_ptr().direct() else {
        return false;
    };
    let Some(table) = parsed.table() else {
        return true;
    };
    let end = eh_frame_ptr.saturating_add(eh_frame_data.len() as u64);
    let mut entries = table.iter(&bases);
    loop {
        match entries.next() {
            Ok(Some((_, fde))) => match fde.direct() {
                Ok(fde) if (eh_frame_ptr..end).contains(&fde) => {}
                _ => return false,
            },
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapping_is_placed_by_the_load_segment_of_its_file_offset() {
        let sections = UnwindSections {
            // libc-like: code at file offset 0x26000, vaddr 0x26000; a
            // segment whose vaddr differs from its offset by 0x1000.
            loads: vec![
                (0, 0, 0x26000),
                (0x26000, 0x26000, 0x155000),
                (0x17b000, 0x17c000, 0x5000),
            ],
            text: None,
            eh_frame: None,
            eh_frame_hdr: None,
            debug_frame: None,
            got: None,
            cgo_returns: Vec::new(),
        };
        assert_eq!(
            sections.base_avma(0x7f00_0002_6000, 0x26000),
            Some(0x7f00_0000_0000)
        );
        assert_eq!(
            sections.base_avma(0x7f00_0017_c000, 0x17b000),
            Some(0x7f00_0000_0000)
        );
        assert_eq!(sections.base_avma(0x7f00_0000_0000, 0x900000), None);
    }

    #[test]
    fn this_machines_libc_has_unwind_tables() {
        // Debian's, which every supported host has.
        let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        let sections = UnwindSections::read(libc).expect("libc has .eh_frame");
        assert!(sections.eh_frame_hdr.is_some());
        assert!(sections.size() > 0);
        let vdso = crate::host::facts::own_vdso_image().expect("a vDSO");
        let sections = UnwindSections::from_image(&vdso).expect("the vDSO has .eh_frame");
        assert!(sections.eh_frame_hdr.is_some());
    }

    /// Found by the unwind_sections fuzz target (a mutated vDSO): an
    /// .eh_frame_hdr entry pointing below .eh_frame. Handed to framehop, gimli
    /// subtracted with overflow (a panic where checked, a bogus offset not).
    #[test]
    fn a_search_table_pointing_outside_eh_frame_is_dropped() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz-corpus/unwind_sections/eh-frame-hdr-entry-below-eh-frame.elf");
        let image = std::fs::read(path).unwrap();
        let sections = UnwindSections::from_image(&image).expect("it still has .eh_frame");
        assert!(sections.eh_frame.is_some());
        assert!(sections.eh_frame_hdr.is_none());
        // And unwinding through what is left does not panic, overflow
        // checks or not.
        assert!(super::super::fuzz_unwind_sections(&image));
    }
}

//! How an executable's stacks are walked, for `--unwind auto`: its
//! functions' first instructions say whether it keeps frame pointers.
//! Compilers that keep them start (nearly) every function with
//! `push %rbp; mov %rsp,%rbp`; `-O2` C and C++ (Debian's binaries), Rust's
//! release builds and the C half of cgo programs start almost none so. Go
//! keeps them always, but a Go program with cgo runs C code, which needs
//! DWARF, and whose stack must then be joined to its goroutine's.

use std::path::Path;

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use profiler_common::GoLayout;

/// Functions looked at: enough to tell, cheap on a large binary.
const SAMPLE: usize = 400;

/// `endbr64`, which `-fcf-protection` (Debian's default) puts first.
const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
/// `push %rbp; mov %rsp,%rbp` (both encodings of the move).
const PROLOGUES: [[u8; 4]; 2] = [[0x55, 0x48, 0x89, 0xe5], [0x55, 0x48, 0x8b, 0xec]];

/// How a program's user stacks are best walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackKind {
    /// By frame pointers, in eBPF.
    FramePointers,
    /// With the unwind tables, in user space.
    Dwarf,
    /// A Go program with cgo: DWARF through its C code, then its
    /// goroutine's frame pointers (dwarf_target::GOROUTINE_FRAMES), found
    /// through its layout where its DWARF gives one.
    Cgo(Option<GoLayout>),
}

/// The C function of Go's runtime/cgo that a program links only with cgo.
const CGO_INIT: &str = "x_cgo_init";

/// Dwarf when the ELF file at `path` is not a Go program and fewer than
/// half of its functions (from `.symtab`, else `.dynsym`) set up a frame
/// pointer first; also when it names no function to look at, since unwind
/// tables serve code with or without frame pointers. Cgo for a Go program
/// with cgo. FramePointers for other Go programs, and for what cannot be
/// read as ELF (a script's interpreter is what runs).
pub fn stack_kind(path: &Path) -> StackKind {
    let Ok(file) = std::fs::File::open(path) else {
        return StackKind::FramePointers;
    };
    let data = object::ReadCache::new(file);
    let Ok(elf) = object::File::parse(&data) else {
        return StackKind::FramePointers;
    };
    if elf.section_by_name(".gopclntab").is_some() || elf.section_by_name(".go.buildinfo").is_some()
    {
        // cgo links dynamically against libc; a static Go program has no C.
        let cgo = elf
            .symbols()
            .chain(elf.dynamic_symbols())
            .any(|s| s.name() == Ok(CGO_INIT));
        return if cgo {
            StackKind::Cgo(super::go_layout::go_layout(&elf))
        } else {
            StackKind::FramePointers
        };
    }
    if keeps_frame_pointers(&elf) {
        StackKind::FramePointers
    } else {
        StackKind::Dwarf
    }
}

/// Whether at least half of the sampled functions of `elf` set up a frame
/// pointer first.
fn keeps_frame_pointers<'data, R: object::ReadRef<'data>>(elf: &object::File<'data, R>) -> bool {
    let Some(text) = elf.section_by_name(".text") else {
        return false;
    };
    let mut functions: Vec<u64> = elf
        .symbols()
        .chain(elf.dynamic_symbols())
        .filter(|s| s.kind() == SymbolKind::Text && s.size() >= 8)
        .map(|s| s.address())
        .collect();
    functions.sort_unstable();
    functions.dedup();
    let step = functions.len().div_ceil(SAMPLE).max(1);
    let (mut framed, mut seen) = (0usize, 0usize);
    for &address in functions.iter().step_by(step) {
        // Only the 8 bytes looked at are read from the file.
        let Ok(Some(mut head)) = text.data_range(address, 8) else {
            continue;
        };
        if head.starts_with(&ENDBR64) {
            head = &head[4..];
        }
        seen += 1;
        if PROLOGUES.iter().any(|p| head.starts_with(p)) {
            framed += 1;
        }
    }
    seen > 0 && framed * 2 >= seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kind_of_test_binary_is_told_by_its_prologues() {
        // Debian's libc is built without frame pointers.
        assert_eq!(
            stack_kind(Path::new("/lib/x86_64-linux-gnu/libc.so.6")),
            StackKind::Dwarf
        );
        // Unreadable: left to the frame-pointer walk.
        assert_eq!(
            stack_kind(Path::new("/nonexistent")),
            StackKind::FramePointers
        );
    }
}

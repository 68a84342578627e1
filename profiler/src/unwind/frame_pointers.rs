//! Whether an executable keeps frame pointers, for `--unwind auto`: its
//! functions' first instructions say. Compilers that keep them start
//! (nearly) every function with `push %rbp; mov %rsp,%rbp`; `-O2` C and
//! C++ (Debian's binaries), Rust's release builds and the C half of cgo
//! programs start almost none so. Go keeps them always.

use std::path::Path;

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

/// Functions looked at: enough to tell, cheap on a large binary.
const SAMPLE: usize = 400;

/// `endbr64`, which `-fcf-protection` (Debian's default) puts first.
const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
/// `push %rbp; mov %rsp,%rbp` (both encodings of the move).
const PROLOGUES: [[u8; 4]; 2] = [[0x55, 0x48, 0x89, 0xe5], [0x55, 0x48, 0x8b, 0xec]];

/// False when the ELF file at `path` is not a Go program and fewer than
/// half of its functions (from `.symtab`, else `.dynsym`) set up a frame
/// pointer first; also false when it names no function to look at, since
/// unwind tables serve code with or without frame pointers. True for what
/// cannot be read as ELF (a script's interpreter is what runs).
pub fn keeps_frame_pointers(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return true;
    };
    let data = object::ReadCache::new(file);
    let Ok(elf) = object::File::parse(&data) else {
        return true;
    };
    if elf.section_by_name(".gopclntab").is_some() || elf.section_by_name(".go.buildinfo").is_some()
    {
        return true;
    }
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
        assert!(!keeps_frame_pointers(Path::new(
            "/lib/x86_64-linux-gnu/libc.so.6"
        )));
        // Unreadable: left to the frame-pointer walk.
        assert!(keeps_frame_pointers(Path::new("/nonexistent")));
    }
}

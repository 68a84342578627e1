//! How an executable's stacks are walked, for `--unwind auto`: its
//! functions' first instructions say whether it keeps frame pointers.
//! Compilers that keep them set up a frame (`push %rbp; mov %rsp,%rbp`) in
//! nearly every function, near its start: first, or after an early-return
//! test that GCC's shrink-wrapping moves ahead of it (`-O1` and up: in the
//! test fixture, 12 of 29 functions). `-O2` C and C++ (Debian's binaries),
//! Rust's release builds and the C half of cgo programs set up almost none.
//! Only the program's own functions count: crt1's and crtstuff's (`_start`,
//! `frame_dummy`...) never set one up, whatever the program was built with,
//! and in a small program they would be the majority. Go
//! keeps them always, but a Go program with cgo runs C code, which needs
//! DWARF, and whose stack must then be joined to its goroutine's.

use std::path::Path;

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use profiler_common::GoLayout;

/// Functions looked at: enough to tell, cheap on a large binary.
const SAMPLE: usize = 400;
/// Bytes of a function searched for the frame setup: past an early-return
/// test and its branch, short of the body of a function without one.
const PROLOGUE_WINDOW: u64 = 32;
/// The start-up code the C toolchain links into every program (crt1.o,
/// crti.o, crtstuff.c): not the program's own, and built without frame
/// pointers.
const CRT_FUNCTIONS: [&str; 9] = [
    "_start",
    "_init",
    "_fini",
    "deregister_tm_clones",
    "register_tm_clones",
    "__do_global_dtors_aux",
    "frame_dummy",
    "__libc_csu_init",
    "__libc_csu_fini",
];

/// `mov %rsp,%rbp`, both encodings.
const MOV_RSP_RBP: [[u8; 3]; 2] = [[0x48, 0x89, 0xe5], [0x48, 0x8b, 0xec]];

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
    let mut functions: Vec<(u64, u64)> = elf
        .symbols()
        .chain(elf.dynamic_symbols())
        .filter(|s| s.kind() == SymbolKind::Text && s.size() >= 8)
        .filter(|s| !s.name().is_ok_and(|name| CRT_FUNCTIONS.contains(&name)))
        .map(|s| (s.address(), s.size()))
        .collect();
    functions.sort_unstable();
    functions.dedup_by_key(|&mut (address, _)| address);
    let step = functions.len().div_ceil(SAMPLE).max(1);
    let (mut framed, mut seen) = (0usize, 0usize);
    for &(address, size) in functions.iter().step_by(step) {
        // Only the bytes looked at are read from the file.
        let Ok(Some(head)) = text.data_range(address, size.min(PROLOGUE_WINDOW)) else {
            continue;
        };
        seen += 1;
        if sets_up_a_frame(head) {
            framed += 1;
        }
    }
    seen > 0 && framed * 2 >= seen
}

/// Whether a function's first bytes set up a frame pointer: `push %rbp`,
/// then `mov %rsp,%rbp`, first or a little later, and at -O2 with other
/// instructions scheduled between the two. Together they are specific: code
/// without frame pointers may save %rbp as any other register, but has no
/// reason to copy %rsp into it.
fn sets_up_a_frame(head: &[u8]) -> bool {
    const PUSH_RBP: u8 = 0x55;
    let Some(push) = head.iter().position(|&b| b == PUSH_RBP) else {
        return false;
    };
    MOV_RSP_RBP
        .iter()
        .any(|mov| head[push + 1..].windows(mov.len()).any(|w| w == mov))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_set_up_after_an_early_return_test_counts() {
        // fixture_hot at -O1 -fno-omit-frame-pointer: test, jle, then the frame.
        let shrink_wrapped = [
            0x48, 0x85, 0xff, 0x7e, 0x2b, 0x55, 0x48, 0x89, 0xe5, 0x41, 0x55,
        ];
        assert!(sets_up_a_frame(&shrink_wrapped));
        assert!(sets_up_a_frame(&[
            0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5
        ]));
        // -O2: push %rbp; mov $0x1,%edi; mov %rsp,%rbp.
        assert!(sets_up_a_frame(&[
            0x55, 0xbf, 0x01, 0x00, 0x00, 0x00, 0x48, 0x89, 0xe5
        ]));
        // The move without the push is no frame.
        assert!(!sets_up_a_frame(&[0x48, 0x89, 0xe5, 0x55]));
        // %rbp saved as a callee-saved register, no frame.
        assert!(!sets_up_a_frame(&[0x55, 0x53, 0x48, 0x83, 0xec, 0x18]));
    }

    /// Builds the C fixture as users build programs, and tells each build.
    #[test]
    fn small_programs_are_told_by_their_own_functions() {
        let source =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/syscall_fixture.c");
        let dir = tempfile::tempdir().unwrap();
        for (flags, expected) in [
            (
                &["-O1", "-fno-omit-frame-pointer"][..],
                StackKind::FramePointers,
            ),
            (
                &["-O2", "-fno-omit-frame-pointer"][..],
                StackKind::FramePointers,
            ),
            (&["-O0"][..], StackKind::FramePointers),
            (&["-O1"][..], StackKind::Dwarf),
            (&["-O2"][..], StackKind::Dwarf),
        ] {
            let binary = dir.path().join("fixture");
            let status = std::process::Command::new("cc")
                .args(flags)
                .arg("-o")
                .arg(&binary)
                .arg(&source)
                .status()
                .expect("cc, which builds the eBPF fixtures too");
            assert!(status.success(), "{flags:?}");
            assert_eq!(stack_kind(&binary), expected, "cc {flags:?}");
        }
    }

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

//! Entry uprobes opened by hand: `perf_event_open` on the kernel's uprobe
//! PMU and the program set on the event, for every process that maps the
//! file. aya's `UProbe::attach` needs the program inside the eBPF object,
//! which the drain loop holds; this needs only the program's fd, so the
//! attach queue's worker thread attaches without stopping the loop (see
//! `attach_queue`).
//!
//! Not `inherit` (an event copied into each child a process forks, which
//! would scope COMMAND's uprobes to its process tree): the kernel builds
//! the child's uprobe again from the attribute, reading the file's path
//! from the forking process's memory, where our pointer means nothing, so
//! its fork fails (`sh: Cannot fork`, kernel 6.18).

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use object::{Object, ObjectSection, ObjectSymbol, ReadCache};

use crate::host::{gopclntab, perf_event};

/// The uprobe PMU's perf type, as the kernel numbers it.
fn uprobe_pmu_type() -> Result<u32> {
    const TYPE: &str = "/sys/bus/event_source/devices/uprobe/type";
    std::fs::read_to_string(TYPE)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| anyhow!("this kernel has no uprobe PMU ({TYPE} is missing)"))
}

/// The file offset of the first of `symbols` that `path` defines, and which
/// one it was: where the kernel puts the breakpoint.
pub fn symbol_offset(path: &Path, symbols: &[&'static str]) -> Option<(&'static str, u64)> {
    let file = std::fs::File::open(path).ok()?;
    let data = ReadCache::new(file);
    let elf = object::File::parse(&data).ok()?;
    let by_symbol = symbols.iter().find_map(|&wanted| {
        let symbol = elf
            .dynamic_symbols()
            .chain(elf.symbols())
            .find(|s| s.is_definition() && s.name() == Ok(wanted))?;
        let section = elf.section_by_index(symbol.section_index()?).ok()?;
        let (start, _) = section.file_range()?;
        let offset = symbol.address().checked_sub(section.address())? + start;
        Some((wanted, offset))
    });
    // A stripped Go executable: its runtime's function table has the entries.
    by_symbol.or_else(|| {
        gopclntab::with_table(&elf, |table| {
            symbols.iter().find_map(|&wanted| {
                let entry = table.entry_of(wanted)?;
                Some((wanted, gopclntab::file_offset_of(&elf, entry)?))
            })
        })
    })
}

/// An entry uprobe at `offset` in the file `path` (a `/proc/self/fd` path of
/// ours), running `program` (a loaded uprobe program) in every process
/// that maps the file (the PID filter decides in eBPF). Closing the
/// returned fd removes it, breakpoints included.
pub fn open(program: BorrowedFd, path: &Path, offset: u64) -> Result<OwnedFd> {
    use perf_event::sys;
    let path = CString::new(path.as_os_str().as_bytes()).context("a path with a NUL byte")?;
    let mut attr = perf_event::attr(uprobe_pmu_type()?, 0);
    attr.__bindgen_anon_1.sample_period = 1;
    attr.__bindgen_anon_3.config1 = path.as_ptr() as u64;
    attr.__bindgen_anon_4.config2 = offset;
    // One event for every process, on CPU 0's context: the program runs on
    // whichever CPU hits the breakpoint (as aya and libbpf open them).
    let (pid, cpu) = (-1, 0);
    // SAFETY: attr is a valid perf_event_attr whose size field matches it,
    // and `path` outlives the call.
    let fd = unsafe {
        perf_event_open_sys::perf_event_open(
            &mut attr,
            pid,
            cpu,
            -1,
            sys::PERF_FLAG_FD_CLOEXEC.into(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("perf_event_open of a uprobe failed");
    }
    // SAFETY: perf_event_open just returned this fd, owned by nobody else.
    let event = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain ioctls on the event we own.
    unsafe {
        if perf_event_open_sys::ioctls::SET_BPF(event.as_raw_fd(), program.as_raw_fd() as u32) < 0
            || perf_event_open_sys::ioctls::ENABLE(event.as_raw_fd(), 0) < 0
        {
            return Err(anyhow!(
                "attaching to the uprobe failed: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(event)
}

//! DWARF unwinding in user space (`--unwind`): the eBPF side copies the
//! user registers and the top of the user stack of each event that takes
//! its stack from a process without frame pointers (DWARF_STACKS), and here
//! framehop walks that copy with the unwind tables of the files the process
//! maps, as samply and `perf --call-graph dwarf` do. The frames come out as
//! the kernel's frame-pointer walk gives them (the user ip, then return
//! addresses), so normalization and naming are the same for both.

pub mod frame_pointers;
mod go_layout;
mod ring;
mod sections;

pub use ring::DwarfStacks;

/// The fuzz target of the unwind tables (fuzz/targets.rs): `data` as an ELF
/// file's image, its sections handed to framehop as clockprof does, then
/// frames unwound through them with `data` itself as the copied stack, so
/// framehop parses .eh_frame, .eh_frame_hdr and .debug_frame as it would a
/// user's file.
#[cfg(test)]
pub(crate) fn fuzz_unwind_sections(data: &[u8]) -> bool {
    let Some(sections) = sections::UnwindSections::from_image(data) else {
        return false;
    };
    let _ = sections.size();
    let _ = sections.cgo_returns();
    let start = 0x40_0000u64;
    let base = sections.base_avma(start, 0).unwrap_or(start);
    let mut unwinder = UnwinderX86_64::new();
    unwinder.add_module(Module::new(
        "fuzz".to_string(),
        start..start + 0x100_0000,
        base,
        sections.module_info(),
    ));
    let mut cache = CacheX86_64::new();
    let sp = 0x7fff_0000u64;
    let mut read_stack = |address: u64| -> Result<u64, ()> {
        let offset = usize::try_from(address.checked_sub(sp).ok_or(())?).map_err(|_| ())?;
        let bytes = data
            .get(offset..offset.checked_add(8).ok_or(())?)
            .ok_or(())?;
        Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
    };
    // Addresses from the data too, so mutations reach every FDE.
    let words = data.chunks_exact(8).take(16).map(|w| {
        let word = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        start + word % 0x100_0000
    });
    for ip in [start + 0x1000, start].into_iter().chain(words) {
        let mut regs = UnwindRegsX86_64::new(ip, sp, sp + 16);
        let mut address = FrameAddress::InstructionPointer(ip);
        for _ in 0..MAX_STACK_DEPTH {
            let Ok(Some(return_address)) =
                unwinder.unwind_frame(address, &mut regs, &mut cache, &mut read_stack)
            else {
                break;
            };
            let Some(next) = FrameAddress::from_return_address(return_address) else {
                break;
            };
            address = next;
        }
    }
    true
}

/// The fuzz target of the Go layout reader: `data` as an executable's image
/// (accepted: it parsed as an object file; no seed is a Go program).
#[cfg(test)]
pub(crate) fn fuzz_go_layout(data: &[u8]) -> bool {
    let Ok(file) = object::File::parse(data) else {
        return false;
    };
    let _ = go_layout::go_layout(&file);
    true
}

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{FrameAddress, Module, Unwinder};
use profiler_common::{DwarfStack, MAX_STACK_DEPTH};

use crate::host::safe_open::FileKey;
use crate::proc_tracker::ProcTracker;
use sections::{Bytes, UnwindSections};

/// Files whose unwind tables (or their absence) are remembered at most.
const SECTION_CACHE_FILES: usize = 4096;
/// Unwind sections kept at most, over every file: beyond it the cache is
/// emptied (the processes' unwinders keep what they use).
const SECTION_CACHE_BYTES: usize = 256 << 20;

/// The callers of a cgo call, on the goroutine's stack, as the eBPF side
/// found them through the goroutine Go saved as it switched stacks
/// (count::walk_goroutine): only when the unwind of the copied stack up to
/// `runtime.asmcgocall` leaves `%rbp` (callee-saved, so restored by the
/// unwind tables where the C code reused it) at the frame pointer that
/// goroutine saved, since Go switches stacks without touching `%rbp`. Any
/// other is not this switch's goroutine, and the stack ends at
/// `runtime.asmcgocall`.
fn goroutine_callers(record: &DwarfStack, bp_at_switch: u64) -> &[u64] {
    if record.goroutine_len == 0 || bp_at_switch != record.goroutine_bp {
        return &[];
    }
    let len = (record.goroutine_len as usize).min(record.goroutine.len());
    &record.goroutine[..len]
}

/// Processes the summary can name as unwound with DWARF.
const SERVED_KEPT: usize = 1000;

/// One process's modules, added as its mappings become known.
struct ProcessUnwinder {
    unwinder: UnwinderX86_64<Bytes>,
    /// Start addresses of the mappings added.
    added: HashSet<u64>,
    /// Where `runtime.asmcgocall` is in this process (a cgo program).
    cgo_returns: Vec<Range<u64>>,
    /// Whether its mappings were looked at since the side-band last changed.
    fresh: bool,
}

#[derive(Default)]
pub struct DwarfUnwinder {
    sections: HashMap<FileKey, Option<Arc<UnwindSections>>>,
    section_bytes: usize,
    vdso: Option<Option<Arc<UnwindSections>>>,
    processes: HashMap<(u32, u64), ProcessUnwinder>,
    cache: CacheX86_64,
    /// Processes (PID, start time) whose stacks were unwound here, for the
    /// summary: the first SERVED_KEPT, so a long run over process churn
    /// does not grow it without end.
    served: BTreeSet<(u32, u64)>,
}

impl DwarfUnwinder {
    /// Mappings may have changed: each process looks again at its next stack.
    pub fn mappings_changed(&mut self) {
        for process in self.processes.values_mut() {
            process.fresh = false;
        }
    }

    /// Forgets processes gone: each (PID, bound) drops the lives of PID that
    /// started at or before the bound.
    pub fn forget(&mut self, gone: &[(u32, u64)]) {
        self.processes.retain(|&(pid, start), _| {
            !gone
                .iter()
                .any(|&(gone_pid, bound)| gone_pid == pid && start <= bound)
        });
    }

    /// Processes whose stacks were unwound with DWARF so far.
    pub fn served(&self) -> &BTreeSet<(u32, u64)> {
        &self.served
    }

    /// The user stack of `record`, innermost first: its ip, then the return
    /// addresses the unwind tables (or, where a file has none, the frame
    /// pointers) lead to within the copied stack.
    pub fn unwind(&mut self, tracker: &mut ProcTracker, record: &DwarfStack) -> Vec<u64> {
        let process = (record.tgid, record.start_time);
        if self.served.len() < SERVED_KEPT {
            self.served.insert(process);
        }
        self.refresh(tracker, process);
        let Some(process) = self.processes.get(&process) else {
            return vec![record.ip];
        };
        let len = (record.stack_len as usize).min(record.stack.len());
        let stack = &record.stack[..len];
        let sp = record.sp;
        let mut read_stack = |address: u64| -> Result<u64, ()> {
            let offset = usize::try_from(address.checked_sub(sp).ok_or(())?).map_err(|_| ())?;
            let bytes = stack
                .get(offset..offset.checked_add(8).ok_or(())?)
                .ok_or(())?;
            Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
        };
        let mut regs = UnwindRegsX86_64::new(record.ip, record.sp, record.bp);
        let mut address = FrameAddress::InstructionPointer(record.ip);
        let mut ips = vec![record.ip];
        while ips.len() < MAX_STACK_DEPTH {
            let Ok(Some(return_address)) =
                process
                    .unwinder
                    .unwind_frame(address, &mut regs, &mut self.cache, &mut read_stack)
            else {
                break;
            };
            let Some(next) = FrameAddress::from_return_address(return_address) else {
                break;
            };
            ips.push(return_address);
            address = next;
            if process
                .cgo_returns
                .iter()
                .any(|code| code.contains(&return_address))
            {
                ips.extend(goroutine_callers(record, regs.bp()));
                ips.truncate(MAX_STACK_DEPTH);
                break;
            }
        }
        ips
    }
    /// Adds the modules of the process's mappings not added yet, once per
    /// side-band drain.
    fn refresh(&mut self, tracker: &mut ProcTracker, (pid, start_time): (u32, u64)) {
        let process = self
            .processes
            .entry((pid, start_time))
            .or_insert_with(|| ProcessUnwinder {
                unwinder: UnwinderX86_64::new(),
                added: HashSet::new(),
                cgo_returns: Vec::new(),
                fresh: false,
            });
        if process.fresh {
            return;
        }
        process.fresh = true;
        let new: Vec<_> = tracker
            .mappings(pid, start_time)
            .filter(|m| !process.added.contains(&m.start))
            .cloned()
            .collect();
        for mapping in new {
            let sections = match (mapping.file, mapping.path.as_str()) {
                (Some(file), path) => self.file_sections(tracker, file, path),
                (None, "[vdso]") => self.vdso_sections(),
                _ => None,
            };
            let process = self
                .processes
                .get_mut(&(pid, start_time))
                .expect("inserted above");
            process.added.insert(mapping.start);
            let Some(sections) = sections else { continue };
            let Some(base) = sections.base_avma(mapping.start, mapping.file_offset) else {
                continue;
            };
            process.cgo_returns.extend(
                sections
                    .cgo_returns()
                    .iter()
                    .map(|code| base.wrapping_add(code.start)..base.wrapping_add(code.end)),
            );
            process.unwinder.add_module(Module::new(
                mapping.path.clone(),
                mapping.start..mapping.end,
                base,
                sections.module_info(),
            ));
        }
    }

    fn file_sections(
        &mut self,
        tracker: &mut ProcTracker,
        file: FileKey,
        path: &str,
    ) -> Option<Arc<UnwindSections>> {
        if let Some(known) = self.sections.get(&file) {
            return known.clone();
        }
        let sections = tracker
            .elf_path(file, path)
            .and_then(|opened| UnwindSections::read(&opened))
            .map(Arc::new);
        let size = sections.as_ref().map_or(0, |sections| sections.size());
        self.section_bytes += size;
        // Files without tables are remembered too, and count against the
        // cap by their number.
        if self.section_bytes > SECTION_CACHE_BYTES || self.sections.len() >= SECTION_CACHE_FILES {
            self.sections.clear();
            self.section_bytes = size;
        }
        self.sections.insert(file, sections.clone());
        sections
    }

    /// The vDSO is this kernel's, the same in every process: read from ours.
    fn vdso_sections(&mut self) -> Option<Arc<UnwindSections>> {
        self.vdso
            .get_or_insert_with(|| {
                let image = crate::host::facts::own_vdso_image()?;
                UnwindSections::from_image(&image).map(Arc::new)
            })
            .clone()
    }
}

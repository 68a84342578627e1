//! Reads the eBPF side's DWARF stack records as they come, unwinds each
//! while its process's mappings are known, and keeps them as samples until
//! the next drain of the count maps; under `--unwind auto` it also tells
//! the eBPF side which processes have no frame pointers.

use std::collections::{HashMap, HashSet};
use std::mem::size_of;

use aya::maps::{MapData, RingBuf};
use profiler_common::DwarfStack;

use super::frame_pointers::{stack_kind, StackKind};
use super::DwarfUnwinder;
use crate::collect::{RawSample, RawStack};
use crate::host::safe_open::FileKey;
use crate::probes::{Probes, DWARF_RING_BYTES};
use crate::proc_tracker::ProcTracker;
use crate::sources::ClockRead;

/// (pid, start time, event, clock id, frames): one distinct unwound stack.
type StackKey = (u32, u64, u32, i32, Vec<u64>);

pub struct DwarfStacks {
    ring: RingBuf<MapData>,
    unwinder: DwarfUnwinder,
    pending: HashMap<StackKey, u64>,
    /// `--unwind auto`: processes are classified by their executable. Under
    /// `--unwind dwarf` only cgo programs are looked for.
    auto: bool,
    /// Each executable's verdict, by file.
    stack_kinds: HashMap<FileKey, StackKind>,
    /// The executable each process was classified by.
    classified: HashMap<u32, FileKey>,
    /// Processes in the eBPF side's DWARF_TARGETS.
    dwarf_pids: HashSet<u32>,
}

impl DwarfStacks {
    pub fn new(probes: &mut Probes, auto: bool) -> anyhow::Result<DwarfStacks> {
        Ok(DwarfStacks {
            ring: probes.take_dwarf_ring()?,
            unwinder: DwarfUnwinder::default(),
            pending: HashMap::new(),
            auto,
            stack_kinds: HashMap::new(),
            classified: HashMap::new(),
            dwarf_pids: HashSet::new(),
        })
    }

    /// COMMAND, between its fork and its exec: classified by the program it
    /// is about to run, so its first clock read is already unwound the way
    /// it needs.
    pub fn classify_command(&mut self, probes: &mut Probes, pid: u32, program: &std::path::Path) {
        self.unwind_as(probes, pid, stack_kind(program));
    }

    /// After each side-band drain: classifies the processes whose
    /// executable is new, then unwinds the stacks the ring holds: at most
    /// what it held when this began. A process that reads the clock in a
    /// tight loop fills the ring faster than stacks are unwound, and
    /// reading until it is empty would never return to the loop that
    /// watches for signals and COMMAND's exit (a recording stopped with
    /// Ctrl-C hung so); what is left is read at the next tick.
    pub fn poll(&mut self, probes: &mut Probes, tracker: &mut ProcTracker) {
        self.unwinder.mappings_changed();
        self.classify(probes, tracker);
        let ring_capacity = DWARF_RING_BYTES as usize / size_of::<DwarfStack>();
        let mut drained_again = HashSet::new();
        for _ in 0..ring_capacity {
            let Some(item) = self.ring.next() else {
                break;
            };
            if item.len() < size_of::<DwarfStack>() {
                continue;
            }
            // SAFETY: the eBPF side writes whole DwarfStack records (plain
            // integers and bytes, any bit pattern valid); read unaligned.
            let record: Box<DwarfStack> =
                Box::new(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const DwarfStack) });
            drop(item);
            // A stack read now may have been taken after the side-band
            // drain above began, by a process that had just started: the
            // records of what it mapped (its libc, say) then wait for the
            // next tick, and its stack would end at its first frame. Apply
            // them first, at most once a tick for each process whose ip
            // lies outside what is known of it.
            //
            // The same holds for its callers: a stack that ends at a return
            // address outside what is known (into a libc whose mapping
            // record waits) is unwound again once those records are applied.
            let mut drain_again = |tracker: &mut ProcTracker, unwinder: &mut DwarfUnwinder| {
                if drained_again.insert(record.tgid) && tracker.drain() > 0 {
                    unwinder.mappings_changed();
                    return true;
                }
                false
            };
            if !tracker.maps(record.tgid, record.start_time, record.ip) {
                drain_again(tracker, &mut self.unwinder);
            }
            let mut ips = self.unwinder.unwind(tracker, &record);
            let ends_outside = |ips: &[u64], tracker: &ProcTracker| {
                ips.last().is_some_and(|&outermost| {
                    outermost != 0 && !tracker.maps(record.tgid, record.start_time, outermost)
                })
            };
            if ends_outside(&ips, tracker) && drain_again(tracker, &mut self.unwinder) {
                ips = self.unwinder.unwind(tracker, &record);
            }
            *self
                .pending
                .entry((
                    record.tgid,
                    record.start_time,
                    record.event,
                    record.clock_id,
                    ips,
                ))
                .or_default() += 1;
        }
    }

    fn classify(&mut self, probes: &mut Probes, tracker: &mut ProcTracker) {
        let executables: Vec<(u32, FileKey, String)> = tracker
            .executables()
            .filter_map(|(pid, exe)| {
                let file = exe.file?;
                (self.classified.get(&pid) != Some(&file)).then(|| (pid, file, exe.path.clone()))
            })
            .collect();
        for (pid, file, path) in executables {
            self.classified.insert(pid, file);
            let kind = *self.stack_kinds.entry(file).or_insert_with(|| {
                // The very file mapped, opened while the process lived; one
                // that cannot be had stays with frame pointers.
                tracker
                    .elf_path(file, &path)
                    .map_or(StackKind::FramePointers, |opened| stack_kind(&opened))
            });
            self.unwind_as(probes, pid, kind);
        }
    }

    /// Tells the eBPF side how to take `pid`'s stacks from now on.
    fn unwind_as(&mut self, probes: &mut Probes, pid: u32, kind: StackKind) {
        let dwarf = match kind {
            StackKind::Cgo(layout) => probes.unwind_with_dwarf(pid, layout).is_ok(),
            // Under `--unwind dwarf` every process is copied anyway.
            StackKind::Dwarf => self.auto && probes.unwind_with_dwarf(pid, None).is_ok(),
            StackKind::FramePointers => false,
        };
        if dwarf {
            self.dwarf_pids.insert(pid);
        } else if self.dwarf_pids.remove(&pid) {
            probes.unwind_with_frame_pointers(pid);
        }
    }

    /// The stacks unwound since the last call, as samples: each a weight
    /// for its key's exact count (RawStack::Unwound).
    pub fn take_samples(&mut self) -> Vec<RawSample> {
        self.pending
            .drain()
            .map(
                |((tgid, start_time, event, clock_id, ips), count)| RawSample {
                    tgid,
                    start_time,
                    read: ClockRead::new(event, clock_id),
                    user_stack: RawStack::Unwound(ips),
                    kernel_stack: RawStack::NotCaptured,
                    caller_ip: 0,
                    wrapper_caller_ip: 0,
                    count,
                },
            )
            .collect()
    }

    /// Processes gone (see ProcTracker::forget_exited) leave the unwinder
    /// and the eBPF side's list.
    pub fn forget(&mut self, probes: &mut Probes, gone: &[(u32, u64)]) {
        self.unwinder.forget(gone);
        for &(pid, _) in gone {
            self.classified.remove(&pid);
            if self.dwarf_pids.remove(&pid) {
                probes.unwind_with_frame_pointers(pid);
            }
        }
    }

    /// Processes (PID, start time) whose stacks were unwound with DWARF.
    pub fn served(&self) -> Vec<(u32, u64)> {
        self.unwinder.served().iter().copied().collect()
    }
}

//! What to attach where: loads the embedded eBPF object, sizes its maps and
//! sets its globals, and owns what is attached. Dropping `Probes` detaches
//! everything (links are fd-based), so no probe outlives the process,
//! whatever way it exits.
//!
//! The parts, each its own module under `probes/`:
//! - attaching: `programs` (one program of the object by kind of hook),
//!   `fallback` (a source's kernel hooks, best backend first),
//!   `kernel_functions` (the kernel source's functions), `source_uprobes`
//!   (the uprobe sources, at start and on new processes' binaries),
//!   `vdso_sampling` (the vdso source), `breakpoint` (hardware execute
//!   breakpoints on kernel functions), `uprobe` (uprobes opened by hand for
//!   the attach queue), `perf_event` (`perf_event_open` by hand) and
//!   `refusal` (why the kernel refused a backend);
//! - the programs' globals and maps: `variant` (which syscall tracepoint
//!   programs this kernel loads), `process_offsets`, `kernel_context` (what
//!   the kernel source's programs need to tell interrupt context and kernel
//!   threads), `btf` (struct offsets from the kernel's BTF), `kallsyms`
//!   (kernel symbol addresses), `pid_filter` (the `TARGETS` map) and
//!   `dwarf_targets` (the processes unwound with DWARF and their ring);
//!
//! tracepoint formats are read through `crate::host::tracefs`.

use std::collections::HashSet;
use std::os::fd::OwnedFd;

use anyhow::{anyhow, Context, Result};
use aya::{Btf, Ebpf, EbpfLoader};
use profiler_common::names;

pub mod attach_queue;
mod breakpoint;
mod btf;
mod dwarf_targets;
mod fallback;
pub mod kernel_context;
mod kernel_functions;
mod pid_filter;
mod process_offsets;
mod programs;
mod refusal;
mod source_uprobes;
pub mod uprobe;
mod variant;
mod vdso_sampling;

use crate::attachment::Attachment;
use crate::host::clocksource::Clocksource;
use crate::host::safe_open::FileKey;
use crate::host::tracefs;
use crate::probes::attach_queue::AttachQueue;
pub use breakpoint::free_debug_registers;
use btf::KernelBtf;
pub use fallback::backend_rank;
use kernel_context::KernelContext;
pub use kernel_functions::{KernelFunction, DEFAULT_BREAKPOINT_FUNCTIONS};
pub use process_offsets::ProcessOffsets;
#[cfg(test)]
pub use refusal::Errno;
pub use refusal::Refusal;
use variant::kernel_stack_globals;
pub use variant::ProgramVariant;
use vdso_sampling::vdso_globals;

/// The eBPF object built by build.rs (profiler-ebpf for bpfel-unknown-none).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/clockprof"));

/// `--unwind`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnwindMode {
    Auto,
    #[value(name = "fp")]
    FramePointers,
    Dwarf,
}

impl UnwindMode {
    /// The eBPF side's `UNWIND_MODE`.
    pub fn kernel_value(self) -> u32 {
        match self {
            UnwindMode::Auto => profiler_common::unwind::AUTO,
            UnwindMode::FramePointers => profiler_common::unwind::FRAME_POINTERS,
            UnwindMode::Dwarf => profiler_common::unwind::DWARF,
        }
    }
}

pub struct ProbeConfig {
    /// Count only processes in the target map (`-p`, `-- COMMAND`).
    pub filter_by_pid: bool,
    /// Follow forks of targets added with `FOLLOW_CHILDREN`.
    pub follow_children: bool,
    pub count_entries: u32,
    pub stack_entries: u32,
    /// One event in this many takes its user stack (`--stack-every`).
    pub stack_every: u32,
    /// `--unwind`: how user stacks are walked.
    pub unwind: UnwindMode,
    /// The vdso source is wanted: its program needs kernel offsets.
    pub vdso: bool,
    /// The kernel source is wanted: its programs need to tell interrupt
    /// context and kernel threads (KernelContext).
    pub kernel: bool,
}

pub struct Probes {
    /// Uprobes on the binaries processes start with later (first: its
    /// worker closes them before the programs go).
    late: Option<AttachQueue>,
    /// The files that got uprobes when the session started, or COMMAND's
    /// before it ran: the attach queue leaves them alone.
    uprobe_files: HashSet<FileKey>,
    /// Only processes in the PID filter count: the attach queue considers
    /// only the files they map.
    filter_by_pid: bool,
    /// Breakpoint perf events with our program attached (see attach_breakpoint).
    breakpoints: Vec<OwnedFd>,
    /// Functions those breakpoints watch (one debug register per CPU each).
    breakpoint_functions: usize,
    ebpf: Ebpf,
    attachments: Vec<Attachment>,
    /// BTF of the running kernel, loaded on first use by fentry.
    btf: Option<Result<Btf, String>>,
    /// Programs already loaded (one program may be attached many times).
    loaded: HashSet<&'static str>,
    /// Which syscall tracepoint programs this kernel loads.
    variant: ProgramVariant,
    /// The clocksource makes every clock read a syscall: the raw
    /// tracepoint goes before the syscall tracepoints (backend_rank).
    clock_syscalls_dominate: bool,
}

/// Room in the stack-trace maps: kernel stacks and the user stacks the
/// kernel walks (32-bit tasks, events without user registers). The user
/// stacks the programs walk themselves, most of them, are kept by a hash
/// of their frames in the spill maps, which get all of --stack-entries.
fn kernel_walked_entries(stack_entries: u32) -> u32 {
    (stack_entries / 4).max(1)
}

/// The DWARF stack ring: 2,048 records of 16 KiB, what 20 ms between two
/// reads of it (session::DWARF_DRAIN_INTERVAL) hold at ~100,000 stacks a
/// second (beyond that, stacks are lost and the counts stay exact); a page
/// when nothing is unwound with DWARF. With `--stack-every N` one read in N
/// (on average) copies its stack, so the ring is N times smaller with 4x to
/// spare for bursts, and at least MIN_DWARF_RING_BYTES: 2 MiB at N = 64,
/// where its pages (mapped twice, so counted twice in the resident set) had
/// cost 64 MiB.
fn dwarf_ring_bytes(unwind: UnwindMode, stack_every: u32) -> u32 {
    match unwind {
        UnwindMode::FramePointers => 4096,
        _ => {
            let spare = u64::from(DWARF_RING_BYTES) * 4 / u64::from(stack_every.max(1));
            let bytes =
                spare.clamp(u64::from(MIN_DWARF_RING_BYTES), u64::from(DWARF_RING_BYTES)) as u32;
            // A ring buffer's size is a power of two (of pages); DWARF_RING_BYTES
            // is one, so rounding up never passes it.
            bytes.next_power_of_two()
        }
    }
}

/// The smallest DWARF ring, 64 records.
const MIN_DWARF_RING_BYTES: u32 = 1 << 20;

/// The DWARF stack ring's size when anything is unwound with DWARF.
pub const DWARF_RING_BYTES: u32 = 32 << 20;

impl Probes {
    pub fn load(config: &ProbeConfig) -> Result<Self> {
        tracefs::require()?;
        let (newtask_pid, newtask_flags) = if config.follow_children {
            (
                tracefs::tracepoint_field_offset("task", "task_newtask", "pid")?,
                tracefs::tracepoint_field_offset("task", "task_newtask", "clone_flags")?,
            )
        } else {
            (0, 0)
        };
        // Parsed once for every offset the programs need (each parse of
        // vmlinux's BTF costs 10-25 ms and tens of MB), and dropped with
        // this function.
        let kernel_btf = KernelBtf::load();
        let process = ProcessOffsets::find(kernel_btf.as_ref().ok());
        let filter = u32::from(config.filter_by_pid);
        let (task_mm, mm_vdso, vdso_size) = if config.vdso {
            vdso_globals(&kernel_btf).context("the vdso source cannot find the vDSO of a task")?
        } else {
            (0, 0, 0)
        };
        let kernel_context = if config.kernel {
            KernelContext::find(kernel_btf.as_ref().ok())
        } else {
            KernelContext::default()
        };
        let task_mm = if task_mm != 0 {
            task_mm
        } else {
            kernel_context.task_mm_offset
        };
        let daemon = std::process::id();
        let variant = ProgramVariant::probe();
        let (task_stack, thread_size) = match variant {
            ProgramVariant::KernelStack => kernel_stack_globals(kernel_btf.as_ref().ok()),
            ProgramVariant::TaskPtRegs => (0, 0),
        };
        drop(kernel_btf);
        // aya's own parse of the same BTF, made once: EbpfLoader would
        // otherwise parse it for itself, and each fentry attach again.
        let aya_btf = Btf::from_sys_fs();
        let ebpf = EbpfLoader::new()
            .btf(aya_btf.as_ref().ok())
            .override_global(names::FILTER_BY_PID, &filter, true)
            .override_global(names::DAEMON_TGID, &daemon, true)
            .override_global(names::STACK_EVERY, &config.stack_every, true)
            .override_global(names::UNWIND_MODE, &config.unwind.kernel_value(), true)
            .override_global(names::NEWTASK_PID_OFFSET, &newtask_pid, true)
            .override_global(names::NEWTASK_CLONE_FLAGS_OFFSET, &newtask_flags, true)
            .override_global(
                names::TASK_GROUP_LEADER_OFFSET,
                &process.task_group_leader,
                true,
            )
            .override_global(names::TASK_START_TIME_OFFSET, &process.task_start_time, true)
            .override_global(names::TASK_SIGNAL_OFFSET, &process.task_signal, true)
            .override_global(names::SIGNAL_LIVE_OFFSET, &process.signal_live, true)
            .override_global(names::TASK_FSBASE_OFFSET, &process.task_fsbase, true)
            .override_global(names::TASK_MM_OFFSET, &task_mm, true)
            .override_global(names::MM_VDSO_OFFSET, &mm_vdso, true)
            .override_global(names::VDSO_TEXT_SIZE, &vdso_size, true)
            .override_global(
                names::PER_CPU_OFFSETS,
                &kernel_context.per_cpu_offsets,
                true,
            )
            .override_global(names::PREEMPT_COUNT, &kernel_context.preempt_count, true)
            .override_global(
                names::TASK_FLAGS_OFFSET,
                &kernel_context.task_flags_offset,
                true,
            )
            .override_global(names::TASK_STACK_OFFSET, &task_stack, true)
            .override_global(names::THREAD_SIZE, &thread_size, true)
            .map_max_entries(names::COUNTS[0], config.count_entries)
            .map_max_entries(names::COUNTS[1], config.count_entries)
            .map_max_entries(names::STACKS[0], kernel_walked_entries(config.stack_entries))
            .map_max_entries(names::STACKS[1], kernel_walked_entries(config.stack_entries))
            .map_max_entries(names::SPILLED_STACKS[0], config.stack_entries)
            .map_max_entries(names::SPILLED_STACKS[1], config.stack_entries)
            .map_max_entries(names::DWARF_STACKS, dwarf_ring_bytes(config.unwind, config.stack_every))
            .load(EBPF_OBJECT)
            .map_err(|err| {
                anyhow!("the kernel refused clockprof's eBPF maps or programs ({err}); run `clockprof doctor` to see what this kernel allows")
            })?;
        let mut probes = Probes {
            late: None,
            uprobe_files: HashSet::new(),
            filter_by_pid: config.filter_by_pid,
            breakpoints: Vec::new(),
            breakpoint_functions: 0,
            ebpf,
            attachments: Vec::new(),
            btf: Some(aya_btf.map_err(|err| format!("the kernel has no usable BTF ({err})"))),
            loaded: HashSet::new(),
            variant,
            clock_syscalls_dominate: Clocksource::read().forces_syscalls(),
        };
        if config.follow_children {
            probes
                .attach_tracepoint("task_newtask", "task:task_newtask")
                .context("could not follow the processes COMMAND starts")?;
        }
        // Always: every exit invalidates the programs' cached start times.
        probes
            .attach_tracepoint("sched_process_exit", "sched:sched_process_exit")
            .context("could not watch processes exit")?;
        Ok(probes)
    }

    /// The program variant chosen for this kernel.
    pub fn variant(&self) -> ProgramVariant {
        self.variant
    }

    /// Every hook attached, those attached to new processes' binaries
    /// since included.
    pub fn attachments(&self) -> Vec<Attachment> {
        let mut attachments = self.attachments.clone();
        if let Some(queue) = &self.late {
            attachments.extend(queue.attachments());
        }
        attachments
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// The hash map `name` of the eBPF object, to update from here.
    fn hash_map<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &str,
    ) -> Result<aya::maps::HashMap<&mut aya::maps::MapData, K, V>> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or_else(|| anyhow!("the eBPF object has no {name} map"))?;
        Ok(aya::maps::HashMap::try_from(map)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dwarf_ring_shrinks_with_stack_every_to_a_power_of_two() {
        assert_eq!(dwarf_ring_bytes(UnwindMode::FramePointers, 1), 4096);
        for every in [0, 1, 2, 4] {
            assert_eq!(dwarf_ring_bytes(UnwindMode::Auto, every), DWARF_RING_BYTES);
        }
        assert_eq!(dwarf_ring_bytes(UnwindMode::Dwarf, 8), 16 << 20);
        assert_eq!(dwarf_ring_bytes(UnwindMode::Auto, 64), 2 << 20);
        // 128 MiB / 100 is 1.28 MiB: rounded up to the next power of two.
        assert_eq!(dwarf_ring_bytes(UnwindMode::Auto, 100), 2 << 20);
        assert_eq!(
            dwarf_ring_bytes(UnwindMode::Auto, 65_536),
            MIN_DWARF_RING_BYTES
        );
        for every in 1..=2048 {
            let bytes = dwarf_ring_bytes(UnwindMode::Dwarf, every);
            assert!(
                bytes.is_power_of_two() && bytes.is_multiple_of(4096),
                "{every}: {bytes}"
            );
        }
    }
}

//! What to attach where: loads the embedded eBPF object, sizes its maps, fills
//! the PID filter and attaches one program per clock-read hook of each chosen
//! source. Dropping `Probes` detaches everything (links are fd-based), so no
//! probe outlives the process, whatever way it exits.
//!
//! The parts, each its own module under `probes/`: `btf` (struct offsets
//! from the kernel's BTF), `kallsyms` (kernel symbol addresses),
//! `kernel_context` (what the kernel source's programs need to tell interrupt
//! context and kernel threads), `pid_filter` (the `TARGETS` map),
//! `perf_event` (`perf_event_open` by hand), `breakpoint` (hardware execute
//! breakpoints on kernel functions) and `refusal` (why the kernel refused a
//! backend); tracepoint formats are read through `crate::tracefs`.

use std::collections::HashSet;
use std::fmt;
use std::num::NonZeroU32;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use aya::programs::perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent};
use aya::programs::uprobe::UProbeScope;
use aya::programs::{FEntry, KProbe, PerfEvent, ProgramType, RawTracePoint, TracePoint, UProbe};
use aya::sys::{is_helper_supported, BpfHelper};
use aya::{Btf, Ebpf, EbpfLoader};
use profiler_common::names;
use serde::Serialize;

mod breakpoint;
mod btf;
mod dwarf_targets;
mod kallsyms;
pub mod kernel_context;
pub mod perf_event;
mod pid_filter;
mod refusal;
pub mod uprobe;

use crate::attach_queue::{AttachQueue, Wanted};
use crate::attachment::{backend_rank, Attachment, Backend, DEBUG_REGISTERS};
use crate::binaries::Binary;
use crate::clocksource::Clocksource;
use crate::host_facts;
use crate::proc_tracker::ProcTracker;
use crate::safe_open::FileKey;
use crate::sources::{Attach, Hook, HookPoint, Source, Uprobe};
use crate::tracefs;
pub use breakpoint::free_debug_registers;
use kallsyms::kernel_symbol_address;
use kernel_context::KernelContext;
pub use refusal::refusal_reason;
use refusal::refusal_reason_on;

/// The eBPF object built by build.rs (profiler-ebpf for bpfel-unknown-none).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/clockprof"));

/// How the syscall tracepoint programs find the user registers (to recover
/// the callers a frameless clock path hides), chosen at load time by probing
/// the kernel's helpers. fentry and kprobe get the registers as the syscall
/// wrapper's argument, so they have one program for every kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProgramVariant {
    /// bpf_task_pt_regs(bpf_get_current_task_btf()): kernels 5.15 and later.
    TaskPtRegs,
    /// The registers at the top of the task's kernel stack, found through
    /// bpf_get_current_task and task_struct.stack's offset from BTF: for
    /// kernels before 5.15 (Debian 11's 5.10 has neither helper).
    KernelStack,
}

impl fmt::Display for ProgramVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProgramVariant::TaskPtRegs => "task-pt-regs",
            ProgramVariant::KernelStack => "kernel-stack",
        })
    }
}

impl ProgramVariant {
    /// The variant this kernel can load: the helper one when the verifier
    /// knows both helpers (aya's probe loads a one-call program and reads
    /// the verifier's verdict) and the kernel has BTF for the task pointer.
    /// A probe that cannot run at all (no privileges) picks the helper
    /// variant, whose load then reports the real error.
    pub fn probe() -> ProgramVariant {
        match std::env::var(VARIANT_ENV).as_deref() {
            Ok("task-pt-regs") => return ProgramVariant::TaskPtRegs,
            Ok("kernel-stack") => return ProgramVariant::KernelStack,
            _ => {}
        }
        let supported =
            |helper| is_helper_supported(ProgramType::TracePoint, helper).unwrap_or(true);
        if Path::new(VMLINUX_BTF).exists()
            && supported(BpfHelper::BPF_FUNC_get_current_task_btf)
            && supported(BpfHelper::BPF_FUNC_task_pt_regs)
        {
            ProgramVariant::TaskPtRegs
        } else {
            ProgramVariant::KernelStack
        }
    }
}

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Forces a ProgramVariant (`task-pt-regs` or `kernel-stack`) instead of
/// probing: for tests, which run each variant where the kernel allows it and
/// check the verifier's refusal where it does not.
pub const VARIANT_ENV: &str = "CLOCKPROF_PROGRAM_VARIANT";

/// The kernel stack size on x86_64: 16 KiB, doubled under KASAN
/// (THREAD_SIZE_ORDER = 2 + KASAN_STACK_ORDER).
fn thread_size() -> u32 {
    if kernel_symbol_address("kasan_report").is_ok() {
        32 * 1024
    } else {
        16 * 1024
    }
}

/// Globals of the kernel-stack variant: task_struct.stack's offset and the
/// stack size. Without BTF the offset stays 0 and the programs count syscalls
/// without recovering skipped callers.
fn kernel_stack_globals() -> (u32, u32) {
    let offset = btf::KernelBtf::load()
        .and_then(|btf| btf.member_offset("task_struct", &["stack"]))
        .unwrap_or(0);
    (offset, thread_size())
}

/// Kernel clock functions watched by default: the NMI-safe monotonic clock
/// (notrace on distro kernels, so only a breakpoint reaches it) and the
/// traceable clocks behind clock_gettime and most in-kernel timestamps.
pub const DEFAULT_KERNEL_FUNCTIONS: &[&str] = &[
    "ktime_get_mono_fast_ns",
    "ktime_get",
    "ktime_get_ts64",
    "ktime_get_real_ts64",
];

/// The default functions that may take a debug register: the notrace ones.
/// The traceable ones use fentry or kprobe or nothing, so a default recording
/// takes at most one of the four, leaving gdb watchpoints and perf
/// breakpoints the rest.
pub const DEFAULT_BREAKPOINT_FUNCTIONS: &[&str] = &["ktime_get_mono_fast_ns"];

/// A kernel function for the kernel source, and whether it may take a
/// debug register (a hardware breakpoint on every CPU) when fentry and
/// kprobe cannot reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelFunction {
    pub name: String,
    pub breakpoint: bool,
}

impl KernelFunction {
    /// The default list, or the functions the user named (each of which may
    /// take a breakpoint).
    pub fn chosen(named: &[String]) -> Vec<KernelFunction> {
        if named.is_empty() {
            DEFAULT_KERNEL_FUNCTIONS
                .iter()
                .map(|&name| KernelFunction {
                    name: name.to_string(),
                    breakpoint: DEFAULT_BREAKPOINT_FUNCTIONS.contains(&name),
                })
                .collect()
        } else {
            named
                .iter()
                .map(|name| KernelFunction {
                    name: name.clone(),
                    breakpoint: true,
                })
                .collect()
        }
    }
}

/// Where the current task's vDSO lives, for the sampling program: offsets of
/// task_struct.mm and mm_struct.context.vdso from BTF, and the vDSO's text
/// size (the same for every process of this kernel: read from our own).
fn vdso_globals() -> Result<(u32, u32, u64)> {
    let btf = btf::KernelBtf::load()?;
    let mm = btf.member_offset("task_struct", &["mm"])?;
    let vdso = btf.member_offset("mm_struct", &["context", "vdso"])?;
    let own = host_facts::own_vdso().context("the kernel has no vDSO to sample")?;
    Ok((mm, vdso, own.end - own.start))
}

/// Where the programs find a task's process start time (which tells two
/// processes with one PID apart) and whether its process is gone (for
/// pruning the PID filter), from the kernel's BTF; 0 where not found: events
/// then carry start time 0 and the filter drops a process when its group
/// leader exits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessOffsets {
    pub task_group_leader: u32,
    pub task_start_time: u32,
    pub task_signal: u32,
    pub signal_live: u32,
    /// task_struct.thread.fsbase: a cgo program's TLS (unwind::go_layout).
    pub task_fsbase: u32,
}

impl ProcessOffsets {
    pub fn find() -> ProcessOffsets {
        let Ok(btf) = btf::KernelBtf::load() else {
            return ProcessOffsets::default();
        };
        let both = |first: Result<u32>, second: Result<u32>| match (first, second) {
            (Ok(first), Ok(second)) => (first, second),
            _ => (0, 0),
        };
        let (task_group_leader, task_start_time) = both(
            btf.member_offset("task_struct", &["group_leader"]),
            btf.member_offset("task_struct", &["start_time"]),
        );
        let (task_signal, signal_live) = both(
            btf.member_offset("task_struct", &["signal"]),
            btf.member_offset("signal_struct", &["live"]),
        );
        ProcessOffsets {
            task_group_leader,
            task_start_time,
            task_signal,
            signal_live,
            task_fsbase: btf
                .member_offset("task_struct", &["thread", "fsbase"])
                .unwrap_or(0),
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
    pub unwind: crate::cli::UnwindMode,
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
/// when nothing is unwound with DWARF.
fn dwarf_ring_bytes(unwind: crate::cli::UnwindMode) -> u32 {
    match unwind {
        crate::cli::UnwindMode::FramePointers => 4096,
        _ => 32 << 20,
    }
}

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
        let process = ProcessOffsets::find();
        let filter = u32::from(config.filter_by_pid);
        let (task_mm, mm_vdso, vdso_size) = if config.vdso {
            vdso_globals().context("the vdso source cannot find the vDSO of a task")?
        } else {
            (0, 0, 0)
        };
        let kernel_context = if config.kernel {
            KernelContext::find()
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
            ProgramVariant::KernelStack => kernel_stack_globals(),
            ProgramVariant::TaskPtRegs => (0, 0),
        };
        let ebpf = EbpfLoader::new()
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
            .map_max_entries(names::DWARF_STACKS, dwarf_ring_bytes(config.unwind))
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
            btf: None,
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

    fn attach_tracepoint(&mut self, program: &str, tracepoint: &str) -> Result<()> {
        let (category, name) = tracepoint
            .split_once(':')
            .expect("tracepoints are named category:name");
        let tracepoint: &mut TracePoint = self.program(program)?.try_into()?;
        tracepoint.load()?;
        if let Err(err) = tracepoint.attach(category, name) {
            let _ = tracepoint.unload();
            return Err(err.into());
        }
        Ok(())
    }

    /// Attaches a raw tracepoint program once: several hooks may share it.
    fn attach_raw_tracepoint(&mut self, program: &'static str, tracepoint: &str) -> Result<()> {
        if self.loaded.contains(program) {
            return Ok(());
        }
        let (_, name) = tracepoint
            .split_once(':')
            .expect("tracepoints are named category:name");
        let raw: &mut RawTracePoint = self.program(program)?.try_into()?;
        raw.load()?;
        if let Err(err) = raw.attach(name) {
            let _ = raw.unload();
            return Err(err.into());
        }
        self.loaded.insert(program);
        Ok(())
    }

    fn attach_kprobe(&mut self, program: &str, function: &str) -> Result<()> {
        let kprobe: &mut KProbe = self.program(program)?.try_into()?;
        kprobe.load()?;
        if let Err(err) = kprobe.attach(function, 0) {
            let _ = kprobe.unload();
            return Err(err.into());
        }
        Ok(())
    }

    fn attach_fentry(&mut self, program: &str, function: &str) -> Result<()> {
        let btf = self
            .btf
            .get_or_insert_with(|| {
                Btf::from_sys_fs().map_err(|err| format!("the kernel has no usable BTF ({err})"))
            })
            .clone()
            .map_err(|reason| anyhow!(reason))?;
        let fentry: &mut FEntry = self.program(program)?.try_into()?;
        fentry.load(function, &btf)?;
        if let Err(err) = fentry.attach() {
            let _ = fentry.unload();
            return Err(err.into());
        }
        Ok(())
    }

    fn program(&mut self, name: &str) -> Result<&mut aya::programs::Program> {
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))
    }

    /// The program variant chosen for this kernel.
    pub fn variant(&self) -> ProgramVariant {
        self.variant
    }

    /// Loads and attaches one way of a hook. A program the kernel loads but
    /// will not attach is unloaded again, so a failed try leaves nothing behind.
    fn attach_point(&mut self, hook: &Hook, point: HookPoint) -> Result<()> {
        match point.backend {
            Backend::Fentry => self.attach_fentry(point.program, point.place),
            Backend::Kprobe => self.attach_kprobe(point.program, point.place),
            Backend::RawTracepoint => self.attach_raw_tracepoint(point.program, point.place),
            Backend::Tracepoint => {
                let program = match self.variant {
                    ProgramVariant::TaskPtRegs => point.program,
                    ProgramVariant::KernelStack => hook.kernel_stack_tracepoint,
                };
                self.attach_tracepoint(program, point.place)
            }
            Backend::Breakpoint | Backend::Uprobe | Backend::PerfEvent => {
                bail!("{} does not attach syscall hooks", point.backend)
            }
        }
    }

    /// Attaches every hook of every source, each through the best backend the
    /// kernel accepts (or only `forced`). On error, what was attached is
    /// detached when `self` is dropped by the caller.
    pub fn attach(&mut self, sources: &[Source], forced: Option<Backend>) -> Result<()> {
        for &source in sources {
            for hook in source.kernel_hooks() {
                let mut refusals = Vec::new();
                let mut attached = None;
                let mut candidates: Vec<HookPoint> = hook
                    .points
                    .iter()
                    .filter(|p| forced.is_none_or(|backend| p.backend == backend))
                    .copied()
                    .collect();
                candidates.sort_by_key(|p| backend_rank(p.backend, self.clock_syscalls_dominate));
                for point in candidates {
                    match self.attach_point(hook, point) {
                        Ok(()) => {
                            attached = Some(point);
                            break;
                        }
                        Err(err) => refusals.push(format!(
                            "{} on {}: {}",
                            point.backend,
                            point.place,
                            refusal_reason_on(point.backend, point.place, &err)
                        )),
                    }
                }
                let Some(point) = attached else {
                    let tried = if refusals.is_empty() {
                        "it has no hook of the chosen backend".to_string()
                    } else {
                        refusals.join("; ")
                    };
                    bail!("could not attach the {source} source ({tried}); run `clockprof doctor` to see what this kernel allows");
                };
                self.attachments.push(Attachment {
                    source,
                    hook: point.place.to_string(),
                    backend: point.backend,
                });
            }
        }
        Ok(())
    }

    /// Entry uprobes of `source` on `binary`, for one process or all that map
    /// it. Returns how many were attached; an error names the binary.
    /// Symbols are read from, and the uprobes attached to, the one open file
    /// (through its /proc/self/fd path): the kernel keys uprobes by inode, so
    /// they land in exactly the file whose symbols gave the offsets.
    pub fn attach_uprobes(
        &mut self,
        source: Source,
        binary: &Binary,
        pid: Option<u32>,
    ) -> Result<usize> {
        let path = binary.fd_path();
        let scope = match pid.and_then(NonZeroU32::new) {
            Some(pid) => UProbeScope::OneProcess(pid),
            None => UProbeScope::AllProcesses,
        };
        let mut attached = 0;
        let mut missing = Vec::new();
        let uprobes = match source.spec().attach {
            Attach::Uprobes { uprobes, .. } => uprobes,
            Attach::KernelHooks(_) | Attach::KernelFunctions | Attach::Sampling => &[],
        };
        for &Uprobe { program, symbols } in uprobes {
            let first_use = self.loaded.insert(program);
            let uprobe: &mut UProbe = self.program(program)?.try_into()?;
            if first_use {
                uprobe.load()?;
            }
            let found = symbols
                .iter()
                .find(|&&symbol| uprobe.attach(symbol, &path, scope).is_ok());
            match found {
                Some(symbol) => {
                    attached += 1;
                    self.attachments.push(Attachment {
                        source,
                        hook: format!("{}:{symbol}", binary.shown.display()),
                        backend: Backend::Uprobe,
                    });
                }
                None => missing.push(symbols[0]),
            }
        }
        if attached == 0 {
            bail!(
                "could not put the {source} uprobes on {}: it has none of {}",
                binary.shown.display(),
                missing.join(", ")
            );
        }
        self.uprobe_files.insert(binary.key());
        Ok(attached)
    }

    /// Loads the uprobe program `name` once; returns its descriptor.
    fn uprobe_program(&mut self, name: &'static str) -> Result<BorrowedFd<'_>> {
        let first_use = self.loaded.insert(name);
        let uprobe: &mut UProbe = self.program(name)?.try_into()?;
        if first_use {
            uprobe.load()?;
        }
        Ok(uprobe.fd()?.as_fd())
    }

    /// From now on, the uprobes of `sources` follow new processes: each
    /// binary a process maps later that a source wants gets that source's
    /// uprobes (see `attach_queue`), as the side-band brings it
    /// (`follow_new_files`).
    pub fn follow_new_processes(&mut self, sources: &[Source]) -> Result<()> {
        let mut wanted = Vec::new();
        for &source in sources {
            let Attach::Uprobes { binary, uprobes } = source.spec().attach else {
                continue;
            };
            let mut programs = Vec::new();
            for &Uprobe { program, symbols } in uprobes {
                let fd = self.uprobe_program(program)?.try_clone_to_owned()?;
                programs.push((symbols, fd));
            }
            wanted.push(Wanted {
                source,
                which: binary,
                programs,
            });
        }
        if !wanted.is_empty() {
            self.late = Some(
                AttachQueue::start(wanted)
                    .context("could not start the thread that attaches uprobes to new processes")?,
            );
        }
        Ok(())
    }

    /// Sends the files processes mapped since the last call (the tracker
    /// just drained) to the attach queue: those a recorded process maps
    /// and no uprobe covers yet.
    pub fn follow_new_files(&mut self, tracker: &mut ProcTracker) {
        let Some(queue) = self.late.as_mut() else {
            return;
        };
        let new_files = tracker.take_new_files();
        let targets = match self.ebpf.map(profiler_common::names::TARGETS) {
            Some(map) if self.filter_by_pid => {
                aya::maps::HashMap::<_, u32, u32>::try_from(map).ok()
            }
            _ => None,
        };
        for (pid, mapping) in new_files {
            let recorded = !self.filter_by_pid
                || targets
                    .as_ref()
                    .is_some_and(|targets| targets.get(&pid, 0).is_ok());
            let Some(key) = mapping.file else { continue };
            if !recorded || self.uprobe_files.contains(&key) || !queue.is_new(&mapping) {
                continue;
            }
            if let Some(binary) = tracker.binary(key, &mapping.path) {
                queue.consider(binary);
            }
        }
    }

    /// Detaches the late uprobes of files no live process maps any more
    /// (see `AttachQueue::sweep`).
    pub fn sweep_late_uprobes(&mut self, tracker: &ProcTracker) {
        if let Some(queue) = self.late.as_mut() {
            queue.sweep(&tracker.files_mapped_by_live_processes());
        }
    }

    /// Attaches `hooks` through `backend` only, for `doctor`; the error is
    /// the short reason of the first refusal.
    pub fn try_backend(&mut self, hooks: &[Hook], backend: Backend) -> Result<(), String> {
        for hook in hooks {
            for &point in hook.points.iter().filter(|p| p.backend == backend) {
                self.attach_point(hook, point)
                    .map_err(|err| refusal_reason_on(backend, point.place, &err))?;
            }
        }
        Ok(())
    }

    /// Watches each kernel clock function through the best backend the kernel
    /// accepts for it (fentry, kprobe, then, where the function may take one,
    /// a hardware execute breakpoint while debug registers remain), or only
    /// `forced`. Returns, per function, the backend used or, in short, why
    /// none could be; the slot of a function is its index in `functions`.
    pub fn attach_kernel_functions(
        &mut self,
        functions: &[KernelFunction],
        forced: Option<Backend>,
    ) -> Result<Vec<Result<Backend, String>>> {
        if functions.len() > profiler_common::MAX_KERNEL_FNS as usize {
            bail!(
                "at most {} kernel functions can be watched at once, not {}",
                profiler_common::MAX_KERNEL_FNS,
                functions.len()
            );
        }
        let mut outcomes = Vec::new();
        for (slot, function) in functions.iter().enumerate() {
            let name = function.name.as_str();
            let mut refusals = Vec::new();
            let mut used = None;
            for backend in [Backend::Fentry, Backend::Kprobe, Backend::Breakpoint] {
                if forced.is_some_and(|f| f != backend) {
                    continue;
                }
                let result = match backend {
                    Backend::Fentry => {
                        self.attach_fentry(&format!("fentry_kernel_fn_{slot}"), name)
                    }
                    Backend::Kprobe => self.attach_kernel_kprobe(slot, name),
                    _ if !function.breakpoint => {
                        // Only said when it is the one backend asked for:
                        // otherwise the refusals above tell why.
                        if forced.is_some() {
                            refusals.push(
                                "a breakpoint only for a function named with --kernel-fn"
                                    .to_string(),
                            );
                        }
                        continue;
                    }
                    _ if self.breakpoints_taken() >= DEBUG_REGISTERS => {
                        refusals.push(format!(
                            "all {DEBUG_REGISTERS} debug registers are taken by the functions before it"
                        ));
                        continue;
                    }
                    _ => self.attach_breakpoint(slot, name),
                };
                match result {
                    Ok(()) => {
                        used = Some(backend);
                        break;
                    }
                    Err(err) => {
                        let reason = refusal_reason_on(backend, &function.name, &err);
                        if !refusals.contains(&reason) {
                            refusals.push(reason);
                        }
                    }
                }
            }
            match used {
                Some(backend) => {
                    self.attachments.push(Attachment {
                        source: Source::Kernel,
                        hook: name.to_string(),
                        backend,
                    });
                    outcomes.push(Ok(backend));
                }
                None if refusals.is_empty() => {
                    outcomes.push(Err("no hook of the chosen backend".to_string()))
                }
                None => outcomes.push(Err(refusals.join(", "))),
            }
        }
        Ok(outcomes)
    }

    /// Functions watched by breakpoint now: each takes one debug register
    /// on every CPU.
    pub fn breakpoints_taken(&self) -> usize {
        self.breakpoint_functions
    }

    fn attach_kernel_kprobe(&mut self, slot: usize, function: &str) -> Result<()> {
        const PROGRAMS: [&str; profiler_common::MAX_KERNEL_FNS as usize] = [
            "kprobe_kernel_fn_0",
            "kprobe_kernel_fn_1",
            "kprobe_kernel_fn_2",
            "kprobe_kernel_fn_3",
            "kprobe_kernel_fn_4",
            "kprobe_kernel_fn_5",
            "kprobe_kernel_fn_6",
            "kprobe_kernel_fn_7",
        ];
        let name = PROGRAMS[slot];
        // Loaded once and left loaded if an attach fails: unloading would also
        // detach the slot's other links (doctor reuses slots).
        let first_use = self.loaded.insert(name);
        let kprobe: &mut KProbe = self.program(name)?.try_into()?;
        if first_use {
            kprobe.load()?;
        }
        kprobe.attach(function, 0)?;
        Ok(())
    }

    /// cpu-clock sampling on every online CPU at `frequency` Hz; the program
    /// keeps only samples inside the vDSO.
    pub fn attach_vdso_sampling(&mut self, frequency: u64) -> Result<()> {
        let sampler: &mut PerfEvent = self.program("vdso_sample")?.try_into()?;
        sampler.load()?;
        for cpu in host_facts::online_cpus()? {
            sampler
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(frequency),
                    false,
                )
                .with_context(|| format!("could not start cpu-clock sampling on CPU {cpu}"))?;
        }
        self.attachments.push(Attachment {
            source: Source::Vdso,
            hook: format!("cpu-clock@{frequency}Hz"),
            backend: Backend::PerfEvent,
        });
        Ok(())
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
}

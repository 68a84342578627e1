//! Types shared by the eBPF programs and the `clockprof` daemon, and the
//! table of clock sources (`sources`), whose event ids both sides use.
//!
//! Every map type here is `#[repr(C)]` with explicit padding fields: BPF hash
//! keys are compared byte by byte, so no byte of a key may be left uninitialised.
#![no_std]

// The daemon's build derives clap's ValueEnum on sources::Backend, whose
// generated code names `::std`.
#[cfg(feature = "user")]
extern crate std;

pub mod sources;

/// Kernel clock functions the `kernel` source can watch at once (one fentry
/// and one kprobe program slot each).
pub const MAX_KERNEL_FNS: u32 = 8;

/// `CountKey::clock_id` when the hook does not know the clock (gettimeofday, time).
pub const CLOCK_ID_NONE: i32 = i32::MIN;

/// `CountKey::{user,kernel}_stack_id` when the source does not capture that stack.
/// Other negative ids are the `-errno` of a failed capture (a lost stack); the
/// event itself is still counted.
pub const STACK_NOT_CAPTURED: i64 = -1_000_000;

/// Set in a stack id kept in the spill map (by a hash of its frames) rather
/// than the stack-trace map (ids below 2^32).
pub const SPILLED_STACK: i64 = 1 << 62;

/// Frames a stack holds at most (the kernel's PERF_MAX_STACK_DEPTH).
pub const MAX_STACK_DEPTH: usize = 127;

/// A stack as kept in the stack maps: return addresses, innermost first,
/// then zeros.
pub type StackFrames = [u64; MAX_STACK_DEPTH];

/// `CountKey::user_stack_id` of an event whose user stack was not taken
/// (`--stack-every N`: one event in N takes it). Not a lost stack: the key's
/// `user_ip` and `first_return` keep the innermost frames instead.
pub const STACK_SAMPLED_OUT: i64 = -1_000_001;

/// `CountKey::tgid` of a kernel clock read made in interrupt context
/// (hardirq, softirq, NMI): it is charged to no task, whichever one the
/// interrupt happened to stop. No PID reaches it (PID_MAX_LIMIT is 2^22).
pub const INTERRUPT_TGID: u32 = u32::MAX;

/// Key of the in-kernel count map: one entry per distinct (process, stacks, clock read).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountKey {
    pub tgid: u32,
    pub clock_id: i32,
    pub event: u32,
    pub _pad: u32,
    /// The stacks' ids in the key's generation: the stack-trace map's id, or
    /// for a stack whose bucket another held there, SPILLED_STACK and a hash
    /// of its frames (its key in the spill map); negative: not captured.
    pub user_stack_id: i64,
    pub kernel_stack_id: i64,
    /// Return addresses that frame-pointer unwinding skips, recovered from
    /// the stack where the kernel side can check them: the caller of the
    /// innermost function when that has no frame at this instruction (a uprobe
    /// at function entry, a vDSO prologue or epilogue), and the caller of a
    /// frameless wrapper above it (glibc's `__clock_gettime` around the vDSO).
    /// They belong at depth 1 and 2 of the user stack; 0 when not found.
    pub caller_ip: u64,
    pub wrapper_caller_ip: u64,
    /// Only when `user_stack_id` is STACK_SAMPLED_OUT (0 otherwise, so
    /// keys with a stack do not split): the user instruction pointer and
    /// the first return address the frame-pointer walk would have given
    /// (`[bp + 8]`; 0 when unreadable). With the recovered callers they
    /// name the calling function exactly, the frames a taken stack starts
    /// with.
    pub user_ip: u64,
    pub first_return: u64,
    /// When the process started: its group leader's `task_struct.start_time`
    /// (CLOCK_MONOTONIC ns, what /proc/PID/stat's starttime is made of), so
    /// two processes that had the same PID one after the other stay apart.
    /// Exec keeps it. 0 when unknown (no BTF) and for INTERRUPT_TGID.
    pub start_time: u64,
}

/// How user stacks are walked (`--unwind`): the `UNWIND_MODE` global.
pub mod unwind {
    /// Frame pointers, in the kernel (`bpf_get_stackid`), for every process.
    pub const FRAME_POINTERS: u32 = 0;
    /// DWARF for the processes in the `DWARF_TARGETS` map (those whose
    /// executable has no frame pointers), frame pointers for the rest.
    pub const AUTO: u32 = 1;
    /// DWARF for every process.
    pub const DWARF: u32 = 2;
}

/// Bytes of user stack, from the stack pointer up, a DWARF stack record
/// carries at most: four pages.
pub const DWARF_STACK_BYTES: usize = 16384;

/// Return addresses of a goroutine's stack a DWARF stack record carries at
/// most (`DwarfStack::goroutine`).
pub const GOROUTINE_FRAMES: usize = 32;

/// Values of the `DWARF_TARGETS` map (tgid -> flags).
pub mod dwarf_target {
    /// Its stacks are copied for DWARF unwinding (under `unwind::AUTO`).
    pub const UNWIND: u32 = 1;
    /// A Go program with cgo (its `GoLayout` is in `GO_LAYOUTS`): each
    /// copied stack also carries the frames of the goroutine that called
    /// into C. C code called through cgo runs on the thread's system stack,
    /// which the copy from `%rsp` covers, while the goroutine's stack is
    /// elsewhere; Go saved where it left it in the goroutine's `sched`.
    pub const GOROUTINE_FRAMES: u32 = 2;
}

/// Where a Go program keeps what leads from a thread to the goroutine that
/// called into C, read from its DWARF (`runtime.g`, `runtime.m`,
/// `runtime.gobuf`) and its TLS segment: the current `g` (during a cgo
/// call, the thread's `g0`) is at `fsbase + tls_g`, `g.m` at `g_m`,
/// `m.curg` at `m_curg`, and the goroutine's saved stack and frame
/// pointers at `g_sched_sp` and `g_sched_bp` of it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GoLayout {
    pub tls_g: i64,
    pub g_m: u32,
    pub m_curg: u32,
    pub g_sched_sp: u32,
    pub g_sched_bp: u32,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for GoLayout {}

/// A user stack to unwind in user space with the binaries' unwind tables:
/// the event's identity (as in its `CountKey`), the user registers the
/// unwinder starts from, and `stack_len` bytes of the stack from `sp` up
/// (fewer than DWARF_STACK_BYTES where the stack ends sooner).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DwarfStack {
    pub tgid: u32,
    pub clock_id: i32,
    pub event: u32,
    pub stack_len: u32,
    pub start_time: u64,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Return addresses in `goroutine` (dwarf_target::GOROUTINE_FRAMES).
    pub goroutine_len: u32,
    pub _pad: u32,
    /// The goroutine's saved frame pointer the walk started from.
    pub goroutine_bp: u64,
    /// The return address at the goroutine's saved stack pointer, then its
    /// frame pointer chain, innermost first: a cgo call's Go callers, which
    /// user space splices in where the unwind of the C frames reaches
    /// `runtime.asmcgocall`.
    pub goroutine: [u64; GOROUTINE_FRAMES],
    pub stack: [u8; DWARF_STACK_BYTES],
}

/// Slots of the per-CPU `LOST` array: events or stacks the kernel side could not keep.
pub mod lost {
    /// The count map was full: the event was not counted at all.
    pub const COUNT_MAP_FULL: u32 = 0;
    /// The user stack could not be captured (stack maps full, or the user
    /// stack was unreadable); the event was counted without it.
    pub const USER_STACK: u32 = 1;
    /// The same for the kernel stack.
    pub const KERNEL_STACK: u32 = 2;
    /// A child of a followed process could not be added to the target filter.
    pub const TARGET_MAP_FULL: u32 = 3;
    /// A user stack to unwind with DWARF found the DWARF_STACKS ring full
    /// (or its stack unreadable); the event was counted without it.
    pub const DWARF_STACK: u32 = 4;
    pub const SLOTS: u32 = 5;
}

/// Values of the `TARGETS` map (tgid -> flags).
pub mod target {
    /// Profile this process only.
    pub const ONLY: u32 = 0;
    /// Profile this process and every process it forks, transitively
    /// (`record -- COMMAND`).
    pub const FOLLOW_CHILDREN: u32 = 1;
}

/// Map and program names, shared so a rename cannot split the two sides.
pub mod names {
    /// The two generations of the count and stack maps, by generation.
    pub const COUNTS: [&str; 2] = ["COUNTS_0", "COUNTS_1"];
    pub const STACKS: [&str; 2] = ["STACKS_0", "STACKS_1"];
    /// Stacks whose stack-trace map bucket was taken, by a hash of them.
    pub const SPILLED_STACKS: [&str; 2] = ["SPILLED_STACKS_0", "SPILLED_STACKS_1"];
    /// One-slot array: the generation the programs write to.
    pub const GENERATION: &str = "GENERATION";
    pub const TARGETS: &str = "TARGETS";
    pub const LOST: &str = "LOST";
    /// Global: non-zero when only processes in `TARGETS` are profiled.
    pub const FILTER_BY_PID: &str = "FILTER_BY_PID";
    /// Global: the daemon's own PID, never profiled (its timers read the clock).
    pub const DAEMON_TGID: &str = "DAEMON_TGID";
    /// Global: one event in this many takes its user stack, per CPU (1:
    /// every event).
    pub const STACK_EVERY: &str = "STACK_EVERY";
    /// Global: `unwind::*`, how user stacks are walked.
    pub const UNWIND_MODE: &str = "UNWIND_MODE";
    /// tgid -> `dwarf_target` flags: processes whose stacks are copied for
    /// DWARF unwinding (`unwind::AUTO`), and how.
    pub const DWARF_TARGETS: &str = "DWARF_TARGETS";
    /// tgid -> `GoLayout` of cgo programs (dwarf_target::GOROUTINE_FRAMES).
    pub const GO_LAYOUTS: &str = "GO_LAYOUTS";
    /// Global: offset of `task_struct.thread.fsbase` (from BTF), 0 if unknown.
    pub const TASK_FSBASE_OFFSET: &str = "TASK_FSBASE_OFFSET";
    /// Ring buffer of `DwarfStack` records.
    pub const DWARF_STACKS: &str = "DWARF_STACKS";
    /// Globals: offsets of `pid` and `clone_flags` in the `task_newtask`
    /// tracepoint record (read from tracefs at start).
    pub const NEWTASK_PID_OFFSET: &str = "NEWTASK_PID_OFFSET";
    pub const NEWTASK_CLONE_FLAGS_OFFSET: &str = "NEWTASK_CLONE_FLAGS_OFFSET";
    /// Globals: where a task's process start time is (task_struct.group_leader,
    /// then task_struct.start_time), from the kernel's BTF; 0: unknown.
    pub const TASK_GROUP_LEADER_OFFSET: &str = "TASK_GROUP_LEADER_OFFSET";
    pub const TASK_START_TIME_OFFSET: &str = "TASK_START_TIME_OFFSET";
    /// Globals: how the exit program tells the last thread of a process
    /// (task_struct.signal, then signal_struct.live), from BTF; 0: unknown.
    pub const TASK_SIGNAL_OFFSET: &str = "TASK_SIGNAL_OFFSET";
    pub const SIGNAL_LIVE_OFFSET: &str = "SIGNAL_LIVE_OFFSET";
    /// Globals: where the vDSO of the current task is (task_struct.mm, then
    /// mm_struct.context.vdso), from the kernel's BTF, and the vDSO text size.
    pub const TASK_MM_OFFSET: &str = "TASK_MM_OFFSET";
    pub const MM_VDSO_OFFSET: &str = "MM_VDSO_OFFSET";
    pub const VDSO_TEXT_SIZE: &str = "VDSO_TEXT_SIZE";
    /// Globals: how the kernel-source programs tell interrupt context and
    /// kernel threads (0: unknown, not checked). The address of the
    /// `__per_cpu_offset` array, the per-CPU address of the CPU's preempt
    /// count (kallsyms, plus its offset in `pcpu_hot` from BTF where it lives
    /// there), and the offset of task_struct.flags (BTF).
    pub const PER_CPU_OFFSETS: &str = "PER_CPU_OFFSETS";
    pub const PREEMPT_COUNT: &str = "PREEMPT_COUNT";
    pub const TASK_FLAGS_OFFSET: &str = "TASK_FLAGS_OFFSET";
    /// Globals: offset of task_struct.stack (from BTF) and the kernel stack
    /// size, for syscall tracepoint programs on kernels without bpf_task_pt_regs.
    pub const TASK_STACK_OFFSET: &str = "TASK_STACK_OFFSET";
    pub const THREAD_SIZE: &str = "THREAD_SIZE";
    /// Kernel function address -> index, for the breakpoint program.
    pub const KERNEL_FN_INDEX: &str = "KERNEL_FN_INDEX";
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for CountKey {}

//! clockprof's eBPF programs. Each hook counts one kind of clock read in
//! a count map, keyed by process, stacks and clock; the daemon never sees
//! per-event records, so the cost per clock read is one map update plus the
//! stack walk.
//!
//! Count and stack maps come in two generations: the programs write to the
//! one `GENERATION` selects, while the daemon drains and clears the other
//! (see the daemon's generations.rs), so no map fills on a long run.
//!
//! One module per clock source under `sources/`, each counting the event
//! ids its source declares in profiler-common's `sources`; the counting
//! they share (`count`), caller recovery (`callers`), the process start
//! time that tells lives of a PID apart (`process`) and the fork follower
//! (`targets`). Globals and maps are declared here, once.
#![no_std]
#![no_main]

mod callers;
mod count;
mod process;
mod targets;

/// One module per clock source, each file of src/sources/ (no list to keep
/// in step: a new source is a new file).
mod sources {
    automod::dir!("src/sources");
}

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
};
use profiler_common::{lost, CountKey, GoLayout, StackFrames, MAX_KERNEL_FNS};

// Globals are set by the loader (`EbpfLoader::override_global`) and live in .rodata,
// so the verifier folds them into constants.
#[no_mangle]
pub(crate) static FILTER_BY_PID: u32 = 0;
#[no_mangle]
pub(crate) static DAEMON_TGID: u32 = 0;
/// `--stack-every N`: one event in N takes its user stack (count::takes_stack).
#[no_mangle]
pub(crate) static STACK_EVERY: u32 = 1;
/// `--unwind`: profiler_common::unwind (count::copies_stack).
#[no_mangle]
pub(crate) static UNWIND_MODE: u32 = 0;
#[no_mangle]
pub(crate) static NEWTASK_PID_OFFSET: u32 = 8;
#[no_mangle]
pub(crate) static NEWTASK_CLONE_FLAGS_OFFSET: u32 = 32;
#[no_mangle]
pub(crate) static TASK_GROUP_LEADER_OFFSET: u32 = 0;
#[no_mangle]
pub(crate) static TASK_START_TIME_OFFSET: u32 = 0;
#[no_mangle]
pub(crate) static TASK_SIGNAL_OFFSET: u32 = 0;
#[no_mangle]
pub(crate) static SIGNAL_LIVE_OFFSET: u32 = 0;
#[no_mangle]
pub(crate) static TASK_MM_OFFSET: u32 = 0;
#[no_mangle]
pub(crate) static MM_VDSO_OFFSET: u32 = 0;
#[no_mangle]
pub(crate) static VDSO_TEXT_SIZE: u64 = 0;
#[no_mangle]
pub(crate) static PER_CPU_OFFSETS: u64 = 0;
#[no_mangle]
pub(crate) static PREEMPT_COUNT: u64 = 0;
#[no_mangle]
pub(crate) static TASK_FLAGS_OFFSET: u32 = 0;
/// For TaskRegs::KernelStack: offset of task_struct.stack (from BTF) and the
/// kernel stack size.
#[no_mangle]
pub(crate) static TASK_STACK_OFFSET: u32 = 0;
#[no_mangle]
pub(crate) static THREAD_SIZE: u32 = 0;
/// Offset of task_struct.thread.fsbase (from BTF), for a cgo program's
/// goroutine (count::walk_goroutine); 0 where unknown.
#[no_mangle]
pub(crate) static TASK_FSBASE_OFFSET: u32 = 0;

// Sizes are defaults; the loader resizes both generations of COUNTS, STACKS
// and SPILLED_STACKS from the command line. Per-CPU values: a hot key is bumped without
// atomics or cache-line bouncing; the daemon sums the CPUs.
#[map]
pub(crate) static COUNTS_0: PerCpuHashMap<CountKey, u64> =
    PerCpuHashMap::with_max_entries(65536, 0);
#[map]
pub(crate) static COUNTS_1: PerCpuHashMap<CountKey, u64> =
    PerCpuHashMap::with_max_entries(65536, 0);
/// Stacks by id (the kernel's stack-trace map, for kernel stacks and user
/// stacks the kernel walks), and by a hash of their frames: user stacks
/// walked here (count::walk_user_stack), and stacks whose bucket in the
/// stack-trace map another stack holds (EEXIST): a hash map chains what
/// collides, so no stack is lost to a collision. Preallocated: before 6.1
/// the verifier refuses perf_event programs (the vdso sampler) any other
/// hash map. Most user stacks are walked here, so the hash maps get
/// --stack-entries and the stack-trace maps a quarter of it.
#[map]
pub(crate) static STACKS_0: StackTrace = StackTrace::with_max_entries(4096, 0);
#[map]
pub(crate) static STACKS_1: StackTrace = StackTrace::with_max_entries(4096, 0);
#[map]
pub(crate) static SPILLED_STACKS_0: HashMap<u64, StackFrames> = HashMap::with_max_entries(16384, 0);
#[map]
pub(crate) static SPILLED_STACKS_1: HashMap<u64, StackFrames> = HashMap::with_max_entries(16384, 0);
/// Where a stack is captured and hashed, per CPU: one slot per kind of
/// program that may interrupt another on the same CPU (see count::Scratch).
#[map]
pub(crate) static STACK_SCRATCH: PerCpuArray<StackFrames> =
    PerCpuArray::with_max_entries(2 + MAX_KERNEL_FNS, 0);
/// Slot 0: the generation (0 or 1) the programs write to; the daemon flips it.
#[map]
pub(crate) static GENERATION: Array<u32> = Array::with_max_entries(1, 0);
#[map]
pub(crate) static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);
#[map]
pub(crate) static KERNEL_FN_INDEX: HashMap<u64, u32> = HashMap::with_max_entries(MAX_KERNEL_FNS, 0);
/// Processes whose stacks are copied for DWARF unwinding under
/// `unwind::AUTO` (filled by the daemon).
#[map]
pub(crate) static DWARF_TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);
/// The GoLayout of each cgo program unwound with DWARF (filled by the
/// daemon).
#[map]
pub(crate) static GO_LAYOUTS: HashMap<u32, GoLayout> = HashMap::with_max_entries(4096, 0);
/// DwarfStack records; the loader sizes it (a page when nothing unwinds
/// with DWARF).
#[map]
pub(crate) static DWARF_STACKS: RingBuf = RingBuf::with_byte_size(4096, 0);
/// Events left until this CPU takes its next user stack (count::takes_stack).
#[map]
pub(crate) static STACK_COUNTDOWN: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub(crate) static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(lost::SLOTS, 0);
/// The last task exit's tag and each CPU's count of them (process::count_exit),
/// and each CPU's last start time read.
#[map]
pub(crate) static LAST_EXIT: Array<u64> = Array::with_max_entries(1, 0);
#[map]
pub(crate) static EXIT_SEQUENCE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub(crate) static START_TIME_CACHE: PerCpuArray<process::StartTimeCache> =
    PerCpuArray::with_max_entries(1, 0);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
pub(crate) static LICENSE: [u8; 4] = *b"GPL\0";

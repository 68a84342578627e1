//! clockprof's eBPF programs. Each hook counts one kind of clock read in
//! `COUNTS`, keyed by process, stacks and clock; the daemon never sees per-event
//! records, so the cost per clock read is one map update plus the stack walk.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{fentry, kprobe, map, tracepoint},
    maps::{HashMap, PerCpuArray, PerCpuHashMap, StackTrace},
    programs::{tracing::StackIdContext, FEntryContext, ProbeContext, TracePointContext},
};
use profiler_common::{event, lost, target, CountKey, CLOCK_ID_NONE, STACK_NOT_CAPTURED};

// Globals are set by the loader (`EbpfLoader::set_global`) and live in .rodata,
// so the verifier folds them into constants.
#[no_mangle]
static FILTER_BY_PID: u32 = 0;
#[no_mangle]
static FORK_CHILD_PID_OFFSET: u32 = 20;

// Sizes are defaults; the loader resizes COUNTS and STACKS from the command line.
// Per-CPU values: a hot key is bumped without atomics or cache-line bouncing;
// the daemon sums the CPUs.
#[map]
static COUNTS: PerCpuHashMap<CountKey, u64> = PerCpuHashMap::with_max_entries(65536, 0);
#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);
#[map]
static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(lost::SLOTS, 0);

/// Offset of the first syscall argument in a `syscalls:sys_enter_*` record
/// (after the common header and `__syscall_nr`); stable across kernels.
const SYSCALL_ARG0_OFFSET: usize = 16;

#[inline(always)]
fn filter_by_pid() -> bool {
    unsafe { core::ptr::read_volatile(&FILTER_BY_PID) != 0 }
}

#[inline(always)]
fn count_lost(slot: u32) {
    if let Some(counter) = LOST.get_ptr_mut(slot) {
        // Per-CPU slot: no other CPU writes it.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
fn is_target(tgid: u32) -> bool {
    !filter_by_pid() || unsafe { TARGETS.get(&tgid) }.is_some()
}

#[inline(always)]
fn stack_id<C: StackIdContext>(ctx: &C, flags: u64, lost_slot: u32) -> i32 {
    match ctx.get_stackid(&STACKS, flags) {
        Ok(id) => id as i32,
        Err(errno) => {
            count_lost(lost_slot);
            errno
        }
    }
}

/// Counts one clock read of `event` by the current task.
#[inline(always)]
fn count_clock_read<C: StackIdContext>(ctx: &C, event: u32, clock_id: i32, kernel_stack: bool) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_target(tgid) {
        return;
    }
    let key = CountKey {
        tgid,
        user_stack_id: stack_id(ctx, BPF_F_USER_STACK as u64, lost::USER_STACK),
        kernel_stack_id: if kernel_stack {
            stack_id(ctx, 0, lost::KERNEL_STACK)
        } else {
            STACK_NOT_CAPTURED
        },
        clock_id,
        event,
    };
    if add_one(&key) {
        return;
    }
    // First read with this key on this CPU. Another CPU may insert the key between
    // our lookup and insert (EEXIST): then this CPU's slot exists and the add succeeds.
    if COUNTS.insert(&key, &1, BPF_NOEXIST as u64).is_ok() || add_one(&key) {
        return;
    }
    count_lost(lost::COUNT_MAP_FULL);
}

#[inline(always)]
fn add_one(key: &CountKey) -> bool {
    match COUNTS.get_ptr_mut(key) {
        Some(count) => {
            unsafe { *count += 1 };
            true
        }
        None => false,
    }
}

#[tracepoint]
pub fn sys_enter_clock_gettime(ctx: TracePointContext) -> u32 {
    let clock_id = unsafe { ctx.read_at::<u64>(SYSCALL_ARG0_OFFSET) }.unwrap_or(0) as i32;
    count_clock_read(&ctx, event::SYSCALL_CLOCK_GETTIME, clock_id, false);
    0
}

#[tracepoint]
pub fn sys_enter_gettimeofday(ctx: TracePointContext) -> u32 {
    count_clock_read(&ctx, event::SYSCALL_GETTIMEOFDAY, CLOCK_ID_NONE, false);
    0
}

#[tracepoint]
pub fn sys_enter_time(ctx: TracePointContext) -> u32 {
    count_clock_read(&ctx, event::SYSCALL_TIME, CLOCK_ID_NONE, false);
    0
}

// The same three syscalls through fentry and kprobe on the `__x64_sys_*`
// wrappers, which are cheaper than the syscall tracepoints (and, unlike them,
// do not put every task on the slow syscall-entry path). The wrappers take the
// caller's saved user registers; the first argument was passed in `di`.
const PT_REGS_DI_OFFSET: usize = 112;

#[inline(always)]
fn first_syscall_arg(user_regs: *const u8) -> i32 {
    if user_regs.is_null() {
        return 0;
    }
    unsafe { bpf_probe_read_kernel(user_regs.add(PT_REGS_DI_OFFSET) as *const u64) }.unwrap_or(0)
        as i32
}

#[fentry(function = "__x64_sys_clock_gettime")]
pub fn fentry_clock_gettime(ctx: FEntryContext) -> u32 {
    let clock_id = first_syscall_arg(ctx.arg::<*const u8>(0));
    count_clock_read(&ctx, event::SYSCALL_CLOCK_GETTIME, clock_id, false);
    0
}

#[fentry(function = "__x64_sys_gettimeofday")]
pub fn fentry_gettimeofday(ctx: FEntryContext) -> u32 {
    count_clock_read(&ctx, event::SYSCALL_GETTIMEOFDAY, CLOCK_ID_NONE, false);
    0
}

#[fentry(function = "__x64_sys_time")]
pub fn fentry_time(ctx: FEntryContext) -> u32 {
    count_clock_read(&ctx, event::SYSCALL_TIME, CLOCK_ID_NONE, false);
    0
}

#[kprobe]
pub fn kprobe_clock_gettime(ctx: ProbeContext) -> u32 {
    let clock_id = first_syscall_arg(ctx.arg::<*const u8>(0).unwrap_or(core::ptr::null()));
    count_clock_read(&ctx, event::SYSCALL_CLOCK_GETTIME, clock_id, false);
    0
}

#[kprobe]
pub fn kprobe_gettimeofday(ctx: ProbeContext) -> u32 {
    count_clock_read(&ctx, event::SYSCALL_GETTIMEOFDAY, CLOCK_ID_NONE, false);
    0
}

#[kprobe]
pub fn kprobe_time(ctx: ProbeContext) -> u32 {
    count_clock_read(&ctx, event::SYSCALL_TIME, CLOCK_ID_NONE, false);
    0
}

/// Adds children of followed processes (`record -- COMMAND`) to the filter, so a
/// command that forks (a shell, a test runner) is profiled as a whole. Runs in the
/// parent. Threads fire this too; their tids land in TARGETS harmlessly.
#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    if !filter_by_pid() {
        return 0;
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    match unsafe { TARGETS.get(&parent) } {
        Some(&flags) if flags & target::FOLLOW_CHILDREN != 0 => {}
        _ => return 0,
    }
    let offset = unsafe { core::ptr::read_volatile(&FORK_CHILD_PID_OFFSET) } as usize;
    let Ok(child) = (unsafe { ctx.read_at::<u32>(offset) }) else {
        return 0;
    };
    if TARGETS.insert(&child, &target::FOLLOW_CHILDREN, 0).is_err() {
        count_lost(lost::TARGET_MAP_FULL);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

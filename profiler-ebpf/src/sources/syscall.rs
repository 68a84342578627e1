//! The `syscall` source: clock_gettime, gettimeofday and time at kernel
//! entry, through fentry or kprobes on the `__x64_sys_*` wrappers, the raw
//! `sys_enter` tracepoint or the `syscalls:sys_enter_*` tracepoints (the
//! loader picks the best the kernel allows).

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_task, bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_task_pt_regs,
    },
    macros::{fentry, kprobe, raw_tracepoint, tracepoint},
    programs::{
        tracing::StackIdContext, FEntryContext, ProbeContext, RawTracePointContext,
        TracePointContext,
    },
};
use profiler_common::sources::syscall as event;
use profiler_common::CLOCK_ID_NONE;

use crate::callers::{skipped_callers, DECODE_SYSCALL};
use crate::count::{count_clock_read, current_target, UserFrame, NO_CALLER};
use crate::{TASK_STACK_OFFSET, THREAD_SIZE};

/// Offset of the first syscall argument in a `syscalls:sys_enter_*` record
/// (after the common header and `__syscall_nr`); stable across kernels.
pub(crate) const SYSCALL_ARG0_OFFSET: usize = 16;

/// Counts a clock syscall by `tgid` (a target). Where it was made from code
/// without a frame (the vDSO's fallback path for CPU-time clocks or a
/// clocksource it cannot read, inside glibc's frameless wrapper), the callers
/// the frame chain skips are recovered from the user registers saved at
/// kernel entry (`regs`, null when unknown), as for vDSO samples.
/// clock_gettime's clock is `clock_id`, or with None its first argument as
/// saved in `regs`.
#[inline(always)]
pub(crate) fn count_syscall(
    ctx: &impl StackIdContext,
    tgid: u32,
    event: u32,
    clock_id: Option<i32>,
    regs: *const pt_regs,
) {
    let saved = unsafe { user_regs(regs) };
    let clock_id = match (event, clock_id, &saved) {
        (event::CLOCK_GETTIME, Some(clock_id), _) => clock_id,
        (event::CLOCK_GETTIME, None, Some(saved)) => saved.di as i32,
        (event::CLOCK_GETTIME, None, None) => 0,
        _ => CLOCK_ID_NONE,
    };
    let (callers, user) = match saved {
        Some(UserRegs { ip, sp, bp, cs, .. }) => {
            let (callers, first_return) = skipped_callers(tgid, ip, sp, bp, DECODE_SYSCALL);
            (
                callers,
                UserFrame {
                    ip,
                    sp,
                    bp,
                    first_return,
                    cs,
                },
            )
        }
        None => (NO_CALLER, UserFrame::UNKNOWN),
    };
    count_clock_read(ctx, tgid, event, clock_id, callers, user);
}

pub(crate) struct UserRegs {
    ip: u64,
    sp: u64,
    bp: u64,
    /// The first syscall argument.
    di: u64,
    cs: u64,
}

/// `struct pt_regs` from `bp` to `sp`: the registers a clock syscall needs,
/// read with one helper call (a call costs tens of ns; this runs on every
/// clock syscall).
#[repr(C)]
struct SavedRegs {
    bp: u64,
    _bx_to_si: [u64; 9],
    di: u64,
    _orig_ax: u64,
    ip: u64,
    cs: u64,
    _flags: u64,
    sp: u64,
}

/// The user registers saved in `regs`.
#[inline(always)]
pub(crate) unsafe fn user_regs(regs: *const pt_regs) -> Option<UserRegs> {
    if regs.is_null() {
        return None;
    }
    let saved: SavedRegs =
        bpf_probe_read_kernel(&(*regs).rbp as *const u64 as *const SavedRegs).ok()?;
    Some(UserRegs {
        ip: saved.ip,
        sp: saved.sp,
        bp: saved.bp,
        di: saved.di,
        cs: saved.cs,
    })
}

/// How a tracepoint program finds the current task's user registers. The
/// loader picks one by probing the kernel's helpers: each is its own program,
/// so the other's helper calls are not even in the program the kernel checks.
#[derive(Clone, Copy)]
pub(crate) enum TaskRegs {
    /// bpf_task_pt_regs(bpf_get_current_task_btf()): kernels 5.15 and later.
    Helper,
    /// task_pt_regs() done by hand, for older kernels (5.10 has neither
    /// helper): x86_64 saves the user registers at the top of the task's
    /// kernel stack, `task->stack + THREAD_SIZE - sizeof(struct pt_regs)`,
    /// with the offset of task_struct.stack from BTF.
    KernelStack,
}

#[inline(always)]
pub(crate) fn task_regs(ctx: &TracePointContext, how: TaskRegs) -> *const pt_regs {
    match how {
        TaskRegs::Helper => unsafe {
            bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs
        },
        TaskRegs::KernelStack => match unsafe { ctx.read_at::<i32>(SYSCALL_NR_OFFSET) } {
            Ok(nr) => unsafe { kernel_stack_regs(nr as u64) },
            Err(_) => core::ptr::null(),
        },
    }
}

#[inline(always)]
pub(crate) unsafe fn kernel_stack_regs(syscall_nr: u64) -> *const pt_regs {
    let offset = core::ptr::read_volatile(&TASK_STACK_OFFSET) as usize;
    let thread_size = core::ptr::read_volatile(&THREAD_SIZE) as u64;
    if offset == 0 || thread_size == 0 {
        return core::ptr::null();
    }
    let task = bpf_get_current_task() as *const u8;
    let stack = match bpf_probe_read_kernel(task.add(offset) as *const u64) {
        Ok(stack) if stack != 0 => stack,
        _ => return core::ptr::null(),
    };
    let top = stack + thread_size - core::mem::size_of::<pt_regs>() as u64;
    // TOP_OF_KERNEL_STACK_PADDING is 0 on x86_64, but 16 bytes on kernels
    // built with FRED (6.9+, for the variant forced there). The entry code
    // saved this syscall's number in orig_ax: where it is not, the layout is
    // not the one assumed, and a wrong caller is worse than none.
    for padding in [0, 16] {
        let regs = (top - padding) as *const pt_regs;
        if let Ok(nr) = bpf_probe_read_kernel(&(*regs).orig_rax) {
            if nr == syscall_nr {
                return regs;
            }
        }
    }
    core::ptr::null()
}

/// `__syscall_nr` in a `syscalls:sys_enter_*` record, after the common header.
pub(crate) const SYSCALL_NR_OFFSET: usize = 8;

#[inline(always)]
pub(crate) fn sys_enter(ctx: &TracePointContext, event: u32, how: TaskRegs) -> u32 {
    let Some(tgid) = current_target() else {
        return 0;
    };
    let clock_id = if event == event::CLOCK_GETTIME {
        unsafe { ctx.read_at::<u64>(SYSCALL_ARG0_OFFSET) }.unwrap_or(0) as i32
    } else {
        CLOCK_ID_NONE
    };
    count_syscall(ctx, tgid, event, Some(clock_id), task_regs(ctx, how));
    0
}

#[tracepoint]
pub fn sys_enter_clock_gettime(ctx: TracePointContext) -> u32 {
    sys_enter(&ctx, event::CLOCK_GETTIME, TaskRegs::Helper)
}

#[tracepoint]
pub fn sys_enter_gettimeofday(ctx: TracePointContext) -> u32 {
    sys_enter(&ctx, event::GETTIMEOFDAY, TaskRegs::Helper)
}

#[tracepoint]
pub fn sys_enter_time(ctx: TracePointContext) -> u32 {
    sys_enter(&ctx, event::TIME, TaskRegs::Helper)
}

#[tracepoint]
pub fn sys_enter_clock_gettime_kstack(ctx: TracePointContext) -> u32 {
    sys_enter(&ctx, event::CLOCK_GETTIME, TaskRegs::KernelStack)
}

#[tracepoint]
pub fn sys_enter_gettimeofday_kstack(ctx: TracePointContext) -> u32 {
    sys_enter(&ctx, event::GETTIMEOFDAY, TaskRegs::KernelStack)
}

#[tracepoint]
pub fn sys_enter_time_kstack(ctx: TracePointContext) -> u32 {
    sys_enter(&ctx, event::TIME, TaskRegs::KernelStack)
}

// The same three syscalls through fentry and kprobe on the `__x64_sys_*`
// wrappers, which are cheaper than the syscall tracepoints (and, unlike them,
// do not put every task on the slow syscall-entry path). The wrappers take the
// caller's saved user registers as their one argument (the first syscall
// argument was passed in `di`), so these need no helper to find them and are
// the same program on every kernel.
#[fentry(function = "__x64_sys_clock_gettime")]
pub fn fentry_clock_gettime(ctx: FEntryContext) -> u32 {
    let Some(tgid) = current_target() else {
        return 0;
    };
    let regs = ctx.arg::<*const pt_regs>(0);
    count_syscall(&ctx, tgid, event::CLOCK_GETTIME, None, regs);
    0
}

#[fentry(function = "__x64_sys_gettimeofday")]
pub fn fentry_gettimeofday(ctx: FEntryContext) -> u32 {
    let Some(tgid) = current_target() else {
        return 0;
    };
    let regs = ctx.arg::<*const pt_regs>(0);
    count_syscall(&ctx, tgid, event::GETTIMEOFDAY, None, regs);
    0
}

#[fentry(function = "__x64_sys_time")]
pub fn fentry_time(ctx: FEntryContext) -> u32 {
    let Some(tgid) = current_target() else {
        return 0;
    };
    let regs = ctx.arg::<*const pt_regs>(0);
    count_syscall(&ctx, tgid, event::TIME, None, regs);
    0
}

#[kprobe]
pub fn kprobe_clock_gettime(ctx: ProbeContext) -> u32 {
    let Some(tgid) = current_target() else {
        return 0;
    };
    let regs = ctx.arg::<*const pt_regs>(0).unwrap_or(core::ptr::null());
    count_syscall(&ctx, tgid, event::CLOCK_GETTIME, None, regs);
    0
}

#[kprobe]
pub fn kprobe_gettimeofday(ctx: ProbeContext) -> u32 {
    let Some(tgid) = current_target() else {
        return 0;
    };
    let regs = ctx.arg::<*const pt_regs>(0).unwrap_or(core::ptr::null());
    count_syscall(&ctx, tgid, event::GETTIMEOFDAY, None, regs);
    0
}

#[kprobe]
pub fn kprobe_time(ctx: ProbeContext) -> u32 {
    let Some(tgid) = current_target() else {
        return 0;
    };
    let regs = ctx.arg::<*const pt_regs>(0).unwrap_or(core::ptr::null());
    count_syscall(&ctx, tgid, event::TIME, None, regs);
    0
}

// The raw `sys_enter` tracepoint (BPF_PROG_TYPE_RAW_TRACEPOINT, 4.17+): one
// program for the three syscalls, given the user registers and the syscall
// number as arguments. It runs on every syscall of every task, but skips the
// record the `syscalls:sys_enter_*` tracepoints build (and copy, for BPF)
// before their program runs, so it costs a clock syscall less; it needs no
// helper to find the registers, so it is the same program on every kernel.
pub(crate) const NR_GETTIMEOFDAY: u64 = 96;
pub(crate) const NR_TIME: u64 = 201;
pub(crate) const NR_CLOCK_GETTIME: u64 = 228;

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn raw_sys_enter(ctx: RawTracePointContext) -> i32 {
    // The syscall number first: one load from the context decides for every
    // other syscall, before the PID filter's helper call and map lookup.
    let event = match ctx.arg::<u64>(1) {
        NR_CLOCK_GETTIME => event::CLOCK_GETTIME,
        NR_GETTIMEOFDAY => event::GETTIMEOFDAY,
        NR_TIME => event::TIME,
        _ => return 0,
    };
    let Some(tgid) = current_target() else {
        return 0;
    };
    count_syscall(&ctx, tgid, event, None, ctx.arg::<*const pt_regs>(0));
    0
}

//! The `kernel` source: kernel clock functions through fentry, kprobes or
//! a hardware breakpoint, with the kernel stack and, in task context, the
//! user stack.

use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_smp_processor_id,
        bpf_probe_read_kernel,
    },
    macros::{fentry, kprobe, perf_event},
    programs::{tracing::StackIdContext, FEntryContext, PerfEventContext, ProbeContext},
};
use profiler_common::sources::kernel as event;
use profiler_common::{lost, CountKey, INTERRUPT_TGID, STACK_NOT_CAPTURED};

use crate::count::{count_key, filter_by_pid, generation, is_target, scratch, stack_id};
use crate::process::current_start_time;
use crate::{KERNEL_FN_INDEX, PER_CPU_OFFSETS, PREEMPT_COUNT, TASK_FLAGS_OFFSET, TASK_MM_OFFSET};

// Kernel-internal clock reads. Nothing on these paths may read a clock
// (no bpf_ktime_get_ns): some of them are the very clock being read.

/// How a kernel-source program was entered, for reading the preempt count.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// fentry, or a kprobe through ftrace (kprobes at function entry always
    /// are, where CONFIG_KPROBES_ON_FTRACE): the count is the traced code's.
    Traced,
    /// A hardware breakpoint's #DB exception, which the kernel enters like an
    /// NMI (irqentry_nmi_enter adds one NMI and one hardirq level).
    DebugException,
}

// preempt_count bits (include/linux/preempt.h): a task runs in interrupt
// context while any hardirq or NMI level is entered or a softirq is being
// served (SOFTIRQ_OFFSET; the bits above it only count bh-disabled sections).
pub(crate) const SOFTIRQ_OFFSET: u32 = 1 << 8;
pub(crate) const HARDIRQ_OFFSET: u32 = 1 << 16;
pub(crate) const HARDIRQ_MASK: u32 = 0xf << 16;
pub(crate) const NMI_OFFSET: u32 = 1 << 20;
pub(crate) const NMI_MASK: u32 = 0xf << 20;
pub(crate) const INTERRUPT_BITS: u32 = NMI_MASK | HARDIRQ_MASK | SOFTIRQ_OFFSET;

/// Whether this CPU is in interrupt context (hardirq, softirq or NMI), from
/// its preempt count: a per-CPU variable, read at its per-CPU address
/// (`__per_cpu_offset[cpu]` + the variable's, both set by the loader)
/// because Rust eBPF code has no ksyms for bpf_this_cpu_ptr. Unknown
/// addresses read as task context; the daemon then still finds interrupt
/// entry frames in the kernel stack.
#[inline(always)]
pub(crate) fn in_interrupt(entry: Entry) -> bool {
    let offsets = unsafe { core::ptr::read_volatile(&PER_CPU_OFFSETS) };
    let count_at = unsafe { core::ptr::read_volatile(&PREEMPT_COUNT) };
    if offsets == 0 || count_at == 0 {
        return false;
    }
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64;
    let Ok(base) = (unsafe { bpf_probe_read_kernel((offsets + cpu * 8) as *const u64) }) else {
        return false;
    };
    let Ok(count) = (unsafe { bpf_probe_read_kernel(count_at.wrapping_add(base) as *const u32) })
    else {
        return false;
    };
    let mut levels = count & INTERRUPT_BITS;
    if entry == Entry::DebugException {
        levels = levels.wrapping_sub(NMI_OFFSET + HARDIRQ_OFFSET);
    }
    levels & INTERRUPT_BITS != 0
}

pub(crate) const PF_KTHREAD: u32 = 0x0020_0000;

/// Whether the current task has a user stack to walk: kernel threads (and
/// user tasks past exit_mm) have none, which is not a lost stack.
#[inline(always)]
pub(crate) fn has_user_stack() -> bool {
    let mm_offset = unsafe { core::ptr::read_volatile(&TASK_MM_OFFSET) } as usize;
    let flags_offset = unsafe { core::ptr::read_volatile(&TASK_FLAGS_OFFSET) } as usize;
    let task = unsafe { bpf_get_current_task() } as *const u8;
    if flags_offset != 0 {
        if let Ok(flags) = unsafe { bpf_probe_read_kernel(task.add(flags_offset) as *const u32) } {
            if flags & PF_KTHREAD != 0 {
                return false;
            }
        }
    }
    if mm_offset != 0 {
        if let Ok(mm) = unsafe { bpf_probe_read_kernel(task.add(mm_offset) as *const u64) } {
            return mm != 0;
        }
    }
    true
}

/// Counts a kernel clock function call. In interrupt context it is charged
/// to no task (INTERRUPT_TGID, no user stack: the interrupted task's would
/// be a stranger's), and a PID filter leaves it out, as it is no target's.
#[inline(always)]
pub(crate) fn count_kernel_fn<C: StackIdContext>(ctx: &C, index: u32, entry: Entry) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // Under a PID filter, only a target's own reads count (never those of
    // an interrupt): one map lookup decides before anything is read.
    if filter_by_pid() && !is_target(tgid) {
        return;
    }
    let generation = generation();
    let (tgid, user_stack_id, start_time) = if in_interrupt(entry) {
        if filter_by_pid() {
            return;
        }
        (INTERRUPT_TGID, STACK_NOT_CAPTURED, 0)
    } else {
        if !is_target(tgid) {
            return;
        }
        let user_stack_id = if has_user_stack() {
            stack_id(
                &generation,
                ctx,
                BPF_F_USER_STACK as u64,
                lost::USER_STACK,
                scratch::KERNEL_FN + index,
            )
        } else {
            STACK_NOT_CAPTURED
        };
        (
            tgid,
            user_stack_id,
            current_start_time(bpf_get_current_pid_tgid()),
        )
    };
    count_key(
        &generation,
        &CountKey {
            tgid,
            user_stack_id,
            kernel_stack_id: stack_id(
                &generation,
                ctx,
                0,
                lost::KERNEL_STACK,
                scratch::KERNEL_FN + index,
            ),
            clock_id: index as i32,
            event: event::FUNCTION,
            _pad: 0,
            caller_ip: 0,
            wrapper_caller_ip: 0,
            user_ip: 0,
            first_return: 0,
            start_time,
        },
    );
}

/// One fentry and one kprobe program per slot: an fentry program is bound to
/// its function at load time, so each watched function needs its own, and the
/// slot number tells the daemon which function fired.
macro_rules! kernel_fn_slot {
    ($fentry:ident, $kprobe:ident, $slot:expr) => {
        #[fentry]
        pub fn $fentry(ctx: FEntryContext) -> u32 {
            count_kernel_fn(&ctx, $slot, Entry::Traced);
            0
        }

        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            count_kernel_fn(&ctx, $slot, Entry::Traced);
            0
        }
    };
}

kernel_fn_slot!(fentry_kernel_fn_0, kprobe_kernel_fn_0, 0);
kernel_fn_slot!(fentry_kernel_fn_1, kprobe_kernel_fn_1, 1);
kernel_fn_slot!(fentry_kernel_fn_2, kprobe_kernel_fn_2, 2);
kernel_fn_slot!(fentry_kernel_fn_3, kprobe_kernel_fn_3, 3);
kernel_fn_slot!(fentry_kernel_fn_4, kprobe_kernel_fn_4, 4);
kernel_fn_slot!(fentry_kernel_fn_5, kprobe_kernel_fn_5, 5);
kernel_fn_slot!(fentry_kernel_fn_6, kprobe_kernel_fn_6, 6);
kernel_fn_slot!(fentry_kernel_fn_7, kprobe_kernel_fn_7, 7);

/// A hardware execute breakpoint on a kernel function (for `notrace`
/// functions such as ktime_get_mono_fast_ns, which refuse kprobes and fentry).
/// The breakpoint fires before the instruction at its address runs, so the
/// interrupted instruction pointer names the function.
#[perf_event]
pub fn breakpoint_kernel_fn(ctx: PerfEventContext) -> u32 {
    if filter_by_pid() && !is_target((bpf_get_current_pid_tgid() >> 32) as u32) {
        return 0;
    }
    let ip = unsafe { (*ctx.ctx).regs.rip };
    if let Some(&index) = unsafe { KERNEL_FN_INDEX.get(&ip) } {
        count_kernel_fn(&ctx, index, Entry::DebugException);
    }
    0
}

//! The `vdso` source: cpu-clock samples that interrupted the vDSO.

use aya_ebpf::{
    helpers::bpf_get_current_task, helpers::bpf_probe_read_kernel, macros::perf_event,
    programs::PerfEventContext,
};
use profiler_common::sources::vdso as event;
use profiler_common::CLOCK_ID_NONE;

use crate::callers::{skipped_callers, DECODE_SAMPLE};
use crate::count::{count_clock_read, current_target, UserFrame};
use crate::{MM_VDSO_OFFSET, TASK_MM_OFFSET, VDSO_TEXT_SIZE};

/// cpu-clock sampling: a sample counts when the interrupted user instruction
/// lies in the task's vDSO, whose address the kernel keeps in
/// mm->context.vdso (offsets from BTF, set by the loader). Costs what the
/// sampling frequency costs, whatever the clock-read rate.
#[perf_event]
pub fn vdso_sample(ctx: PerfEventContext) -> u32 {
    let regs = unsafe { &(*ctx.ctx).regs };
    // Only samples that interrupted user mode carry a user instruction pointer.
    if regs.cs & 3 != 3 {
        return 0;
    }
    let Some(tgid) = current_target() else {
        return 0;
    };
    let ip = regs.rip;
    let mm_offset = unsafe { core::ptr::read_volatile(&TASK_MM_OFFSET) } as usize;
    let vdso_offset = unsafe { core::ptr::read_volatile(&MM_VDSO_OFFSET) } as usize;
    let vdso_size = unsafe { core::ptr::read_volatile(&VDSO_TEXT_SIZE) };
    if mm_offset == 0 || vdso_offset == 0 {
        return 0;
    }
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let Ok(mm) = (unsafe { bpf_probe_read_kernel(task.add(mm_offset) as *const u64) }) else {
        return 0;
    };
    if mm == 0 {
        return 0;
    }
    let Ok(vdso) =
        (unsafe { bpf_probe_read_kernel((mm as *const u8).add(vdso_offset) as *const u64) })
    else {
        return 0;
    };
    if ip < vdso || ip >= vdso + vdso_size {
        return 0;
    }
    let (callers, first_return) = skipped_callers(tgid, ip, regs.rsp, regs.rbp, DECODE_SAMPLE);
    count_clock_read(
        &ctx,
        tgid,
        event::SAMPLE,
        CLOCK_ID_NONE,
        callers,
        UserFrame {
            ip,
            sp: regs.rsp,
            bp: regs.rbp,
            first_return,
            cs: regs.cs,
        },
    );
    0
}

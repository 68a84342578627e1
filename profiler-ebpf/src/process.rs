//! Which life of a PID the current task belongs to: its process's start
//! time, `task->group_leader->start_time` (CLOCK_MONOTONIC ns, set in
//! copy_process; exec keeps it, de_thread copies it to a thread that execs).

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};

use crate::{TASK_GROUP_LEADER_OFFSET, TASK_START_TIME_OFFSET};

/// The current process's start time, or 0 where the offsets are unknown.
#[inline(always)]
pub(crate) fn current_start_time() -> u64 {
    let leader_at = unsafe { core::ptr::read_volatile(&TASK_GROUP_LEADER_OFFSET) } as usize;
    let start_at = unsafe { core::ptr::read_volatile(&TASK_START_TIME_OFFSET) } as usize;
    if leader_at == 0 || start_at == 0 {
        return 0;
    }
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let Ok(leader) = (unsafe { bpf_probe_read_kernel(task.add(leader_at) as *const u64) }) else {
        return 0;
    };
    unsafe { bpf_probe_read_kernel((leader as *const u8).add(start_at) as *const u64) }.unwrap_or(0)
}

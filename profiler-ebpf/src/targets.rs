//! Following `record -- COMMAND` through its forks.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use profiler_common::{lost, target};

use crate::count::{count_lost, filter_by_pid};
use crate::{FORK_CHILD_PID_OFFSET, TARGETS};

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

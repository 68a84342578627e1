//! The PID filter's upkeep: following `record -- COMMAND` through the
//! processes it starts, and forgetting each followed process when it exits,
//! so that TARGETS holds processes (tgids) a recording follows, and an
//! unrelated process that later gets one of their PIDs is not profiled.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel},
    macros::tracepoint,
    programs::TracePointContext,
};
use profiler_common::{lost, target};

use crate::count::{count_lost, filter_by_pid};
use crate::process::count_exit;
use crate::{
    NEWTASK_CLONE_FLAGS_OFFSET, NEWTASK_PID_OFFSET, SIGNAL_LIVE_OFFSET, TARGETS, TASK_SIGNAL_OFFSET,
};

/// include/uapi/linux/sched.h: the new task is a thread of the caller's process.
const CLONE_THREAD: u64 = 0x0001_0000;

/// Adds the new processes of followed processes (`record -- COMMAND`) to the
/// filter, so a command that forks (a shell, a test runner) is profiled as a
/// whole. `task_newtask` rather than `sched_process_fork`: it carries the
/// clone flags, so a new thread, whose process is already followed, is told
/// from a new process and its thread id never enters TARGETS. It runs in the
/// parent at the end of copy_process, before the child can run.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    if !filter_by_pid() {
        return 0;
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    match unsafe { TARGETS.get(&parent) } {
        Some(&flags) if flags & target::FOLLOW_CHILDREN != 0 => {}
        _ => return 0,
    }
    let flags_at = unsafe { core::ptr::read_volatile(&NEWTASK_CLONE_FLAGS_OFFSET) } as usize;
    let pid_at = unsafe { core::ptr::read_volatile(&NEWTASK_PID_OFFSET) } as usize;
    let Ok(clone_flags) = (unsafe { ctx.read_at::<u64>(flags_at) }) else {
        return 0;
    };
    if clone_flags & CLONE_THREAD != 0 {
        return 0;
    }
    let Ok(child) = (unsafe { ctx.read_at::<u32>(pid_at) }) else {
        return 0;
    };
    if TARGETS.insert(&child, &target::FOLLOW_CHILDREN, 0).is_err() {
        count_lost(lost::TARGET_MAP_FULL);
    }
    0
}

/// Counts every task's exit (for process::current_start_time's cache), and
/// removes a process from the filter when its last thread exits. do_exit
/// decrements `signal->live` before this tracepoint, so the last thread
/// (not necessarily the group leader, which may exit first) reads 0. The
/// PID is freed only after this, so the entry is gone before any other
/// process can have that PID. Without the offsets, the leader's exit stands
/// for the process's.
#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    count_exit();
    if !filter_by_pid() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if unsafe { TARGETS.get(&tgid) }.is_none() {
        return 0;
    }
    let process_gone = match unsafe { live_threads() } {
        Some(live) => live == 0,
        None => tgid == pid_tgid as u32,
    };
    if process_gone {
        let _ = TARGETS.remove(&tgid);
    }
    0
}

/// `current->signal->live`: the threads of the process not yet exiting.
#[inline(always)]
unsafe fn live_threads() -> Option<i32> {
    let signal_at = core::ptr::read_volatile(&TASK_SIGNAL_OFFSET) as usize;
    let live_at = core::ptr::read_volatile(&SIGNAL_LIVE_OFFSET) as usize;
    if signal_at == 0 {
        return None;
    }
    let task = bpf_get_current_task() as *const u8;
    let signal = bpf_probe_read_kernel(task.add(signal_at) as *const u64).ok()?;
    if signal == 0 {
        return None;
    }
    bpf_probe_read_kernel((signal as *const u8).add(live_at) as *const i32).ok()
}

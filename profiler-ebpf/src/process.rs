//! Which life of a PID the current task belongs to: its process's start
//! time, `task->group_leader->start_time` (CLOCK_MONOTONIC ns, set in
//! copy_process; exec keeps it, de_thread copies it to a thread that execs).

use aya_ebpf::helpers::{bpf_get_current_task, bpf_get_smp_processor_id, bpf_probe_read_kernel};

use crate::{
    EXIT_SEQUENCE, LAST_EXIT, START_TIME_CACHE, TASK_GROUP_LEADER_OFFSET, TASK_START_TIME_OFFSET,
};

/// The last start time read on this CPU, and for which task: a hot loop
/// reads it once, not on every event (two kernel reads cost ~70 ns per
/// event on this project's machines).
///
/// A task_struct is often reused at once for the next task (the slab's
/// per-CPU free list), and the next process may get the same PID (what
/// ns_last_pid forces): the task pointer and pid_tgid do not tell a task
/// from one that replaced it. `last_exit` does: every task exit stores a tag
/// of its own in LAST_EXIT (count_exit) before the task can be freed or its
/// PID given again, so an entry made before any exit no longer matches
/// after it.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct StartTimeCache {
    task: u64,
    pid_tgid: u64,
    last_exit: u64,
    start_time: u64,
}

/// The current process's start time, or 0 where the offsets are unknown.
/// `pid_tgid` is bpf_get_current_pid_tgid(), which every caller has.
#[inline(always)]
pub(crate) fn current_start_time(pid_tgid: u64) -> u64 {
    let task = unsafe { bpf_get_current_task() };
    let last_exit = match LAST_EXIT.get_ptr(0) {
        Some(last_exit) => unsafe { core::ptr::read_volatile(last_exit) },
        None => return read_start_time(task),
    };
    let Some(cache) = START_TIME_CACHE.get_ptr_mut(0) else {
        return read_start_time(task);
    };
    let cache = unsafe { &mut *cache };
    if cache.task == task && cache.pid_tgid == pid_tgid && cache.last_exit == last_exit {
        return cache.start_time;
    }
    let start_time = read_start_time(task);
    // A program that interrupts this one on this CPU (an NMI) sees no task
    // until the entry is whole.
    cache.task = 0;
    cache.pid_tgid = pid_tgid;
    cache.last_exit = last_exit;
    cache.start_time = start_time;
    unsafe { core::ptr::write_volatile(&mut cache.task, task) };
    start_time
}

#[inline(always)]
fn read_start_time(task: u64) -> u64 {
    let leader_at = unsafe { core::ptr::read_volatile(&TASK_GROUP_LEADER_OFFSET) } as usize;
    let start_at = unsafe { core::ptr::read_volatile(&TASK_START_TIME_OFFSET) } as usize;
    if leader_at == 0 || start_at == 0 {
        return 0;
    }
    let task = task as *const u8;
    let Ok(leader) = (unsafe { bpf_probe_read_kernel(task.add(leader_at) as *const u64) }) else {
        return 0;
    };
    unsafe { bpf_probe_read_kernel((leader as *const u8).add(start_at) as *const u64) }.unwrap_or(0)
}

/// Called for every task exit (sched_process_exit), before the task is
/// freed or its PID released: invalidates every CPU's cache entry. Rust has
/// no atomic add for BPF, so each exit stores a tag no other exit stores
/// (its CPU and that CPU's own exit count): whatever order concurrent exits
/// store in, the value left is not one a cache entry made before them holds.
#[inline(always)]
pub(crate) fn count_exit() {
    let Some(sequence) = EXIT_SEQUENCE.get_ptr_mut(0) else {
        return;
    };
    let Some(last_exit) = LAST_EXIT.get_ptr_mut(0) else {
        return;
    };
    unsafe {
        // Per-CPU, and exits do not nest: no other writer.
        *sequence += 1;
        let cpu = u64::from(bpf_get_smp_processor_id());
        core::ptr::write_volatile(last_exit, (cpu << 48) | (*sequence & ((1 << 48) - 1)));
    }
}

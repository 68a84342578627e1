//! Counting shared by every source: the PID filter, the count map and the
//! stack map, and the lost-event counters.

use aya_ebpf::{
    bindings::BPF_F_USER_STACK, bindings::BPF_NOEXIST, helpers::bpf_get_current_pid_tgid,
    programs::tracing::StackIdContext,
};
use profiler_common::{lost, CountKey, STACK_NOT_CAPTURED};

use crate::{COUNTS, DAEMON_TGID, FILTER_BY_PID, LOST, STACKS, TARGETS};

/// No skipped caller was recovered.
pub(crate) const NO_CALLER: (u64, u64) = (0, 0);

#[inline(always)]
pub(crate) fn filter_by_pid() -> bool {
    unsafe { core::ptr::read_volatile(&FILTER_BY_PID) != 0 }
}

#[inline(always)]
pub(crate) fn count_lost(slot: u32) {
    if let Some(counter) = LOST.get_ptr_mut(slot) {
        // Per-CPU slot: no other CPU writes it.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
pub(crate) fn is_target(tgid: u32) -> bool {
    if tgid == unsafe { core::ptr::read_volatile(&DAEMON_TGID) } {
        return false;
    }
    !filter_by_pid() || unsafe { TARGETS.get(&tgid) }.is_some()
}

#[inline(always)]
pub(crate) fn stack_id<C: StackIdContext>(ctx: &C, flags: u64, lost_slot: u32) -> i32 {
    match ctx.get_stackid(&STACKS, flags) {
        Ok(id) => id as i32,
        Err(errno) => {
            count_lost(lost_slot);
            errno
        }
    }
}

/// Counts one clock read of `event` by the current task, with its user stack.
#[inline(always)]
pub(crate) fn count_clock_read<C: StackIdContext>(
    ctx: &C,
    event: u32,
    clock_id: i32,
    (caller_ip, wrapper_caller_ip): (u64, u64),
) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_target(tgid) {
        return;
    }
    count_key(&CountKey {
        tgid,
        user_stack_id: stack_id(ctx, BPF_F_USER_STACK as u64, lost::USER_STACK),
        kernel_stack_id: STACK_NOT_CAPTURED,
        clock_id,
        event,
        _pad: 0,
        caller_ip,
        wrapper_caller_ip,
    });
}

#[inline(always)]
pub(crate) fn count_key(key: &CountKey) {
    if add_one(key) {
        return;
    }
    // First read with this key on this CPU. Another CPU may insert the key between
    // our lookup and insert (EEXIST): then this CPU's slot exists and the add succeeds.
    if COUNTS.insert(key, &1, BPF_NOEXIST as u64).is_ok() || add_one(key) {
        return;
    }
    count_lost(lost::COUNT_MAP_FULL);
}

#[inline(always)]
pub(crate) fn add_one(key: &CountKey) -> bool {
    match COUNTS.get_ptr_mut(key) {
        Some(count) => {
            unsafe { *count += 1 };
            true
        }
        None => false,
    }
}

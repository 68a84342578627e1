//! Counting shared by every source: the PID filter, the count map and the
//! stack map, and the lost-event counters.

use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_get_prandom_u32, bpf_probe_read_user},
    programs::tracing::StackIdContext,
};
use profiler_common::{lost, CountKey, STACK_NOT_CAPTURED, STACK_SAMPLED_OUT};

use crate::{
    COUNTS, DAEMON_TGID, FILTER_BY_PID, LOST, STACKS, STACK_COUNTDOWN, STACK_EVERY, TARGETS,
};

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

/// The current process, if it is profiled: every program asks this first,
/// before it decodes anything, so a `-p` recording costs other processes
/// one map lookup.
#[inline(always)]
pub(crate) fn current_target() -> Option<u32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    is_target(tgid).then_some(tgid)
}

/// Whether this event takes its user stack: one in STACK_EVERY per CPU on
/// average. The gap to the next one is drawn uniformly from 1..=2N-1, not
/// fixed at N: a fixed period aliases with a loop whose call pattern repeats
/// with a divisor of N, and would then only ever see one of its call paths.
#[inline(always)]
pub(crate) fn takes_stack() -> bool {
    let every = unsafe { core::ptr::read_volatile(&STACK_EVERY) };
    if every <= 1 {
        return true;
    }
    let Some(left) = STACK_COUNTDOWN.get_ptr_mut(0) else {
        return true;
    };
    // Per-CPU slot: only a program nested on this CPU (an NMI sample) races
    // it, which only shifts when the next stack is taken.
    let left = unsafe { &mut *left };
    if *left > 1 {
        *left -= 1;
        return false;
    }
    *left = 1 + unsafe { bpf_get_prandom_u32() } % (2 * every - 1);
    true
}

/// The user registers a sampled-out event keeps instead of its stack.
#[derive(Clone, Copy)]
pub(crate) struct UserFrame {
    pub ip: u64,
    pub bp: u64,
    /// `[bp + 8]`, where the caller already read it.
    pub first_return: Option<u64>,
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

/// Counts one clock read of `event` by `tgid` (a target: see
/// current_target), with its user stack when this event takes one. An event
/// that does not keeps the innermost frames instead: the user ip and the
/// first return address the frame walk starts with (`[bp + 8]`, as the
/// kernel's user walk reads it), which with the recovered callers name the
/// calling function. `user` is None where the registers are unknown.
#[inline(always)]
pub(crate) fn count_clock_read<C: StackIdContext>(
    ctx: &C,
    tgid: u32,
    event: u32,
    clock_id: i32,
    (caller_ip, wrapper_caller_ip): (u64, u64),
    user: Option<UserFrame>,
) {
    let (user_stack_id, user_ip, first_return) = match user {
        Some(frame) if !takes_stack() => (
            STACK_SAMPLED_OUT,
            frame.ip,
            match frame.first_return {
                Some(address) => address,
                None => unsafe { bpf_probe_read_user((frame.bp + 8) as *const u64) }.unwrap_or(0),
            },
        ),
        _ => (
            stack_id(ctx, BPF_F_USER_STACK as u64, lost::USER_STACK),
            0,
            0,
        ),
    };
    count_key(&CountKey {
        tgid,
        user_stack_id,
        kernel_stack_id: STACK_NOT_CAPTURED,
        clock_id,
        event,
        _pad: 0,
        caller_ip,
        wrapper_caller_ip,
        user_ip,
        first_return,
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

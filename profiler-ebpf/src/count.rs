//! Counting shared by every source: the PID filter, the count map and the
//! stack map, and the lost-event counters.

use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_prandom_u32, bpf_probe_read_kernel,
        bpf_probe_read_user, generated::bpf_get_stack,
    },
    maps::{HashMap, PerCpuHashMap, StackTrace},
    programs::tracing::StackIdContext,
};
use profiler_common::{
    dwarf_target, lost, unwind, CountKey, DwarfStack, GoLayout, StackFrames, DWARF_STACK_BYTES,
    MAX_STACK_DEPTH, SPILLED_STACK, STACK_NOT_CAPTURED, STACK_SAMPLED_OUT,
};

use crate::process::current_start_time;
use crate::{
    COUNTS_0, COUNTS_1, DAEMON_TGID, DWARF_STACKS, DWARF_TARGETS, FILTER_BY_PID, GENERATION,
    GO_LAYOUTS, LOST, SPILLED_STACKS_0, SPILLED_STACKS_1, STACKS_0, STACKS_1, STACK_COUNTDOWN,
    STACK_EVERY, STACK_SCRATCH, TARGETS, TASK_FSBASE_OFFSET, UNWIND_MODE,
};

/// The count and stack maps one event writes to. Chosen once per event, so
/// a key's stack ids always name stacks of its own generation's stack map.
pub(crate) struct Generation {
    counts: &'static PerCpuHashMap<CountKey, u64>,
    stacks: &'static StackTrace,
    spilled: &'static HashMap<u64, StackFrames>,
}

/// The generation the daemon is not draining. The daemon waits for every
/// program that may have read the old value before it drains (an RCU grace
/// period), so one event never straddles the flip.
#[inline(always)]
pub(crate) fn generation() -> Generation {
    let second = GENERATION
        .get(0)
        .is_some_and(|g| unsafe { core::ptr::read_volatile(g) } != 0);
    if second {
        Generation {
            counts: &COUNTS_1,
            stacks: &STACKS_1,
            spilled: &SPILLED_STACKS_1,
        }
    } else {
        Generation {
            counts: &COUNTS_0,
            stacks: &STACKS_0,
            spilled: &SPILLED_STACKS_0,
        }
    }
}

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

/// The user registers an event's stack starts from: a sampled-out event
/// keeps them instead of its stack, a sampled-in one walks its frames from
/// them. Plain fields, no Option: LLVM loads a field before it tests which
/// variant it has, and before 6.3 the verifier refuses a read of the
/// stack where None left the field unwritten.
#[derive(Clone, Copy)]
pub(crate) struct UserFrame {
    /// 0 where the registers are unknown (UserFrame::UNKNOWN).
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// `[bp + 8]` where the caller already read it, else 0.
    pub first_return: u64,
    /// The code segment of the saved registers: 64-bit code's frames are
    /// walked here, a 32-bit (compat) task's by the kernel, which knows
    /// their layout.
    pub cs: u64,
}

impl UserFrame {
    /// Registers not known: the kernel walks the stack, from what it finds.
    pub(crate) const UNKNOWN: UserFrame = UserFrame {
        ip: 0,
        sp: 0,
        bp: 0,
        first_return: 0,
        cs: 0,
    };
}

/// x86_64's user code segment selector for 64-bit code (`__USER_CS`).
pub(crate) const USER_CS_64: u64 = 0x33;

/// Slots of STACK_SCRATCH. A program may run inside another on the same CPU
/// only from another context: the vdso sampler in a timer interrupt, a
/// kernel function's program in any interrupt. Each gets its own slot
/// (the same program never nests in itself), so none overwrites a stack
/// another is still hashing.
pub(crate) mod scratch {
    /// Syscall, libc and go programs (task context).
    pub(crate) const TASK: u32 = 0;
    pub(crate) const VDSO: u32 = 1;
    /// Plus the kernel function's index.
    pub(crate) const KERNEL_FN: u32 = 2;
}

/// Captures the current stack (`flags`: user or kernel) in the generation's
/// stack-trace map and returns its id; a stack whose bucket another holds
/// is spilled (see `spill`). A failed capture returns its -errno, counted
/// under `lost_slot`.
#[inline(always)]
pub(crate) fn stack_id<C: StackIdContext>(
    generation: &Generation,
    ctx: &C,
    flags: u64,
    lost_slot: u32,
    scratch_slot: u32,
) -> i64 {
    match ctx.get_stackid(generation.stacks, flags) {
        Ok(id) => id,
        Err(errno) if errno == -EEXIST => spill(generation, ctx, flags, lost_slot, scratch_slot),
        Err(errno) => {
            count_lost(lost_slot);
            errno as i64
        }
    }
}

/// Keeps the current stack in the generation's spill map under a hash of
/// its frames, returned with SPILLED_STACK set.
#[inline(always)]
fn spill<C: StackIdContext>(
    generation: &Generation,
    ctx: &C,
    flags: u64,
    lost_slot: u32,
    scratch_slot: u32,
) -> i64 {
    let Some(frames) = STACK_SCRATCH.get_ptr_mut(scratch_slot) else {
        count_lost(lost_slot);
        return -(ENOMEM as i64);
    };
    // bpf_get_stack zeroes what the stack leaves of the buffer, so a stack
    // is its frames up to the first zero.
    let size = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            frames as *mut core::ffi::c_void,
            core::mem::size_of::<StackFrames>() as u32,
            flags,
        )
    };
    if size <= 0 {
        count_lost(lost_slot);
        return if size < 0 { size } else { -(ENODATA as i64) };
    }
    keep_by_hash(generation, unsafe { &*frames }, lost_slot)
}

/// Keeps `frames` (up to the first zero) in the generation's spill map under
/// a hash of them, and returns that id with SPILLED_STACK set.
#[inline(always)]
fn keep_by_hash(generation: &Generation, frames: &StackFrames, lost_slot: u32) -> i64 {
    let id = hash(frames) | SPILLED_STACK as u64;
    if unsafe { generation.spilled.get(&id) }.is_none()
        && generation.spilled.insert(&id, frames, BPF_NOEXIST as u64).is_err()
        // Inserted meanwhile by another CPU: EEXIST, and there it is.
        && unsafe { generation.spilled.get(&id) }.is_none()
    {
        count_lost(lost_slot);
        return -(E2BIG as i64);
    }
    id as i64
}

/// vm.mmap_min_addr's default on x86_64.
const LOWEST_MAPPABLE: u64 = 0x10000;

/// The user stack from `frame`, walked here and kept by a hash of its
/// frames: the same frames as the kernel's walk (bpf_get_stackid), the ip
/// then each frame's return address until a read fails or MAX_STACK_DEPTH,
/// except that it does not read a frame pointer below LOWEST_MAPPABLE. The
/// kernel reads it anyway, and that read's page fault ends nearly every
/// walk: it cost ~500 ns of a ~1.3 µs event on this machine (a VM guest,
/// where faults are dear), the largest part of the whole stack capture.
#[inline(always)]
fn walk_user_stack(generation: &Generation, frame: UserFrame, scratch_slot: u32) -> i64 {
    let Some(frames) = STACK_SCRATCH.get_ptr_mut(scratch_slot) else {
        count_lost(lost::USER_STACK);
        return -(ENOMEM as i64);
    };
    let frames = unsafe { &mut *frames };
    frames[0] = frame.ip;
    let mut fp = frame.bp;
    for depth in 1..MAX_STACK_DEPTH {
        // The end of the stack unless a frame follows. Written here, not
        // after the loop, so nothing after it depends on where the walk
        // stopped: the verifier then checks the hashing once, not once
        // per depth (which took the load from 1 s to 20 s).
        frames[depth] = 0;
        let Some((next, return_address)) = caller_frame(fp) else {
            break;
        };
        frames[depth] = return_address;
        fp = next;
    }
    keep_by_hash(generation, frames, lost::USER_STACK)
}

/// One step up a frame-pointer chain: the caller's frame pointer and the
/// return address of the frame at `fp`, or None where the chain ends.
#[inline(always)]
fn caller_frame(fp: u64) -> Option<(u64, u64)> {
    // Nothing is ever mapped below vm.mmap_min_addr (64 KiB by default): a
    // frame pointer there is no frame but the end of the chain (0 from
    // `_start`, or what frameless code such as glibc's
    // __libc_start_call_main left in %rbp: argc, say), and reading it
    // would fault.
    if fp < LOWEST_MAPPABLE {
        return None;
    }
    // [fp] is the caller's frame pointer, [fp + 8] the return address.
    let [next, return_address] = unsafe { bpf_probe_read_user(fp as *const [u64; 2]) }.ok()?;
    (return_address != 0).then_some((next, return_address))
}

const EEXIST: i32 = 17;
const ENODATA: i32 = 61;
const ENOMEM: i32 = 12;
const E2BIG: i32 = 7;

/// FNV-1a over the frames, a shift folding the high bits down after each,
/// below SPILLED_STACK (negative ids are errors, smaller ones the stack-trace
/// map's).
#[inline(always)]
fn hash(frames: &StackFrames) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &ip in frames.iter().take(MAX_STACK_DEPTH) {
        if ip == 0 {
            break;
        }
        hash = (hash ^ ip).wrapping_mul(0x0000_0100_0000_01b3);
        hash ^= hash >> 29;
    }
    hash & (SPILLED_STACK as u64 - 1)
}

/// How `tgid`'s stacks are unwound with DWARF in user space (`--unwind`):
/// its `dwarf_target` flags, or None where its stacks are walked here.
#[inline(always)]
fn dwarf_flags(tgid: u32) -> Option<u32> {
    match unsafe { core::ptr::read_volatile(&UNWIND_MODE) } {
        // Every process; a cgo program's flags still come from the map.
        unwind::DWARF => Some(
            unsafe { DWARF_TARGETS.get(&tgid) }
                .copied()
                .unwrap_or(dwarf_target::UNWIND),
        ),
        unwind::AUTO => unsafe { DWARF_TARGETS.get(&tgid) }.copied(),
        _ => None,
    }
}

/// Copies the user registers and the top of the user stack into a
/// DWARF_STACKS record; a full ring is a lost user stack, never a wait.
/// The stack is read a page at a time from `sp` up, each read a fixed size
/// the verifier can bound, and the one that would cross into an unmapped
/// page only up to that page's end: the stack's top may be closer than
/// DWARF_STACK_BYTES.
#[inline(always)]
fn copy_stack(
    tgid: u32,
    event: u32,
    clock_id: i32,
    frame: &UserFrame,
    start_time: u64,
    flags: u32,
) {
    let Some(mut record) = DWARF_STACKS.reserve::<DwarfStack>(0) else {
        count_lost(lost::DWARF_STACK);
        return;
    };
    let out = record.as_mut_ptr();
    let mut len: u32 = 0;
    unsafe {
        (*out).tgid = tgid;
        (*out).clock_id = clock_id;
        (*out).event = event;
        (*out).start_time = start_time;
        (*out).ip = frame.ip;
        (*out).sp = frame.sp;
        (*out).bp = frame.bp;
        (*out).goroutine_len = 0;
        (*out).goroutine_bp = 0;
        if flags & dwarf_target::GOROUTINE_FRAMES != 0 {
            if let Some(layout) = GO_LAYOUTS.get(&tgid) {
                walk_goroutine(&mut *out, layout);
            }
        }
        let stack = (*out).stack.as_mut_ptr();
        for page in 0..DWARF_STACK_BYTES / PAGE {
            let from = frame.sp + (page * PAGE) as u64;
            let to = stack.add(page * PAGE);
            if read_user(to, PAGE as u32, from) {
                len += PAGE as u32;
                continue;
            }
            let to_page_end = (PAGE as u64 - (from & (PAGE as u64 - 1))) as u32;
            if to_page_end < PAGE as u32 && read_user(to, to_page_end & (PAGE as u32 - 1), from) {
                len += to_page_end;
            }
            break;
        }
        (*out).stack_len = len;
    }
    if len == 0 {
        record.discard(0);
        count_lost(lost::DWARF_STACK);
        return;
    }
    record.submit(0);
}

const PAGE: usize = 4096;

/// The frames of the goroutine that called into C, into `out.goroutine`:
/// during a cgo call the thread's current `g` (in TLS) is its `g0`, whose
/// `m.curg` is that goroutine, and Go saved the goroutine's stack and frame
/// pointers in its `sched` as it switched stacks (`runtime.asmcgocall`).
/// At the saved stack pointer is the return address into the switch's
/// caller, `runtime.cgocall` (or the frame record holding it), and Go keeps
/// frame pointers, so the chain from the saved one leads to its callers. Outside a cgo call the `sched` read is stale;
/// user space splices these frames in only where the unwind of the copied
/// stack reaches `runtime.asmcgocall` with `%rbp` equal to `goroutine_bp`.
#[inline(always)]
fn walk_goroutine(out: &mut DwarfStack, layout: &GoLayout) {
    let fsbase_at = unsafe { core::ptr::read_volatile(&TASK_FSBASE_OFFSET) } as u64;
    if fsbase_at == 0 {
        return;
    }
    let task = unsafe { bpf_get_current_task() };
    let Ok(fsbase) = (unsafe { bpf_probe_read_kernel((task + fsbase_at) as *const u64) }) else {
        return;
    };
    let read = |address: u64| unsafe { bpf_probe_read_user(address as *const u64) }.ok();
    let Some(g) = read(fsbase.wrapping_add(layout.tls_g as u64)) else {
        return;
    };
    let Some(m) = read(g.wrapping_add(layout.g_m as u64)) else {
        return;
    };
    let Some(curg) = read(m.wrapping_add(layout.m_curg as u64)) else {
        return;
    };
    // On the goroutine's own stack: no switch to look through.
    if curg == 0 || curg == g {
        return;
    }
    let (Some(sp), Some(bp)) = (
        read(curg.wrapping_add(layout.g_sched_sp as u64)),
        read(curg.wrapping_add(layout.g_sched_bp as u64)),
    ) else {
        return;
    };
    // Where asmcgocall has a frame record of its own (its assembler adds one
    // in Go 1.23 and 1.26, not in 1.19), the stack pointer Go saved is that
    // record: [sp] is the caller's frame pointer, not a return address, and
    // the return address into cgocall is the record's. Where it has none,
    // [sp] is that return address and `bp` cgocall's frame.
    let (first, mut fp) = if sp == bp {
        let Some((next, return_address)) = caller_frame(bp) else {
            return;
        };
        (return_address, next)
    } else {
        let Some(first) = read(sp) else {
            return;
        };
        (first, bp)
    };
    out.goroutine_bp = bp;
    out.goroutine[0] = first;
    let mut len = 1;
    for slot in out.goroutine.iter_mut().skip(1) {
        let Some((next, return_address)) = caller_frame(fp) else {
            break;
        };
        *slot = return_address;
        len += 1;
        fp = next;
    }
    out.goroutine_len = len;
}

#[inline(always)]
unsafe fn read_user(to: *mut u8, size: u32, from: u64) -> bool {
    aya_ebpf::helpers::generated::bpf_probe_read_user(
        to as *mut core::ffi::c_void,
        size,
        from as *const core::ffi::c_void,
    ) == 0
}

/// Counts one clock read of `event` by `tgid` (a target: see
/// current_target), with its user stack when this event takes one. An event
/// that does not keeps the innermost frames instead: the user ip and the
/// first return address the frame walk starts with (`[bp + 8]`, as the
/// kernel's user walk reads it), which with the recovered callers name the
/// calling function. `user` is UserFrame::UNKNOWN where the registers are
/// unknown.
///
/// A process unwound with DWARF is never walked here: each of its events is
/// counted under its user ip alone (its frame pointers name nothing), and
/// one that takes its stack also copies it into DWARF_STACKS, whose records
/// user space unwinds and spreads that key's exact count over.
#[inline(always)]
pub(crate) fn count_clock_read<C: StackIdContext>(
    ctx: &C,
    tgid: u32,
    event: u32,
    clock_id: i32,
    (caller_ip, wrapper_caller_ip): (u64, u64),
    user: UserFrame,
) {
    let generation = generation();
    let start_time = current_start_time(bpf_get_current_pid_tgid());
    // 64-bit code only: its unwind tables are what the daemon reads.
    if let Some(flags) = (user.ip != 0 && user.cs == USER_CS_64)
        .then(|| dwarf_flags(tgid))
        .flatten()
    {
        if takes_stack() {
            copy_stack(tgid, event, clock_id, &user, start_time, flags);
        }
        count_key(
            &generation,
            &CountKey {
                tgid,
                user_stack_id: STACK_SAMPLED_OUT,
                kernel_stack_id: STACK_NOT_CAPTURED,
                clock_id,
                event,
                _pad: 0,
                caller_ip: 0,
                wrapper_caller_ip: 0,
                user_ip: user.ip,
                first_return: 0,
                start_time,
            },
        );
        return;
    }
    let (user_stack_id, user_ip, first_return) = if user.ip != 0 && !takes_stack() {
        (
            STACK_SAMPLED_OUT,
            user.ip,
            if user.first_return != 0 {
                user.first_return
            } else {
                unsafe { bpf_probe_read_user((user.bp + 8) as *const u64) }.unwrap_or(0)
            },
        )
    } else {
        let scratch_slot = if event == profiler_common::sources::vdso::SAMPLE {
            scratch::VDSO
        } else {
            scratch::TASK
        };
        // UNKNOWN's cs is 0: the kernel walks those.
        let id = if user.cs == USER_CS_64 {
            walk_user_stack(&generation, user, scratch_slot)
        } else {
            stack_id(
                &generation,
                ctx,
                BPF_F_USER_STACK as u64,
                lost::USER_STACK,
                scratch_slot,
            )
        };
        (id, 0, 0)
    };
    count_key(
        &generation,
        &CountKey {
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
            start_time,
        },
    );
}

#[inline(always)]
pub(crate) fn count_key(generation: &Generation, key: &CountKey) {
    if add_one(generation, key) {
        return;
    }
    // First read with this key on this CPU. Another CPU may insert the key between
    // our lookup and insert (EEXIST): then this CPU's slot exists and the add succeeds.
    if generation
        .counts
        .insert(key, &1, BPF_NOEXIST as u64)
        .is_ok()
        || add_one(generation, key)
    {
        return;
    }
    count_lost(lost::COUNT_MAP_FULL);
}

#[inline(always)]
fn add_one(generation: &Generation, key: &CountKey) -> bool {
    match generation.counts.get_ptr_mut(key) {
        Some(count) => {
            unsafe { *count += 1 };
            true
        }
        None => false,
    }
}

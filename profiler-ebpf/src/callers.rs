//! Recovering the callers a frame-pointer walk skips: the caller of code
//! that has no frame at the interrupted instruction, and of a frameless
//! wrapper above it (glibc's `__clock_gettime`).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::map,
    maps::PerCpuArray,
    programs::ProbeContext,
};

use profiler_common::CLOCK_ID_NONE;

use crate::count::{count_clock_read, current_target, UserFrame, NO_CALLER};
use crate::process::current_start_time;

// User-space clock functions, by entry uprobes (never uretprobes: they crash
// Go programs). At entry the callee has not pushed its frame, so the caller is
// only found at the stack pointer: it is recorded exactly.

/// Counts a uprobe at a clock function's entry, with `clock_arg` (the index
/// of the argument holding the clock id) where the function takes one.
#[inline(always)]
pub(crate) fn uprobe_entry(ctx: &ProbeContext, event: u32, clock_arg: Option<usize>) {
    let Some(tgid) = current_target() else {
        return;
    };
    let clock_id = match clock_arg {
        Some(n) => ctx.arg::<u64>(n).unwrap_or(0) as i32,
        None => CLOCK_ID_NONE,
    };
    let regs = unsafe { &*ctx.regs };
    let caller = unsafe { bpf_probe_read_user(regs.rsp as *const u64) }.unwrap_or(0);
    count_clock_read(
        ctx,
        tgid,
        event,
        clock_id,
        (caller, 0),
        UserFrame {
            ip: regs.rip,
            sp: regs.rsp,
            bp: regs.rbp,
            first_return: 0,
            cs: regs.cs,
        },
    );
}

/// The vDSO is built with frame pointers, so the frame chain names its caller,
/// except where the sampled function has no frame at that instruction: its
/// first instruction (`push %rbp`), the next (`mov %rsp,%rbp`), and after its
/// final `pop %rbp`. There the return address is at the stack pointer. The
/// caller is typically glibc's `__clock_gettime`, which has no frame at all
/// (`sub $8,%rsp; call *%rax; ...; add $8,%rsp; ret`), so the chain also skips
/// the function that called glibc: its return address sits right above the
/// wrapper's frame, whose size the wrapper's epilogue tells.
///
/// Also returns `[bp + 8]` where it read it on the way (the first return
/// address of the frame walk), else 0, so a sampled-out event does not read
/// it again.
#[inline(always)]
pub(crate) fn skipped_callers(
    tgid: u32,
    ip: u64,
    sp: u64,
    bp: u64,
    cache_slot: u32,
) -> ((u64, u64), u64) {
    let Some(cache) = DECODE_CACHE.get_ptr_mut(cache_slot) else {
        return (NO_CALLER, 0);
    };
    let cache = unsafe { &mut *cache };
    let tgid = tgid as u64;
    // Cached per CPU (process::StartTimeCache): the count that follows
    // reads the same entry again.
    let start_time = current_start_time(bpf_get_current_pid_tgid());
    if cache.tgid != tgid || cache.start_time != start_time {
        *cache = DecodeCache {
            tgid,
            start_time,
            ip: 0,
            ip_offset: NOT_UNFRAMED,
            site: 0,
            site_frame: NOT_UNFRAMED,
        };
    }
    let unframed_slot = cache.unframed_offset(ip).map(|offset| sp + offset);
    // The stack slot holding the return address into the sampled code's caller.
    let (caller, slot) = match unframed_slot.map(|slot| (read_return_address(slot), slot)) {
        Some((caller, slot)) if caller != 0 => (caller, slot),
        _ => (0, bp + 8),
    };
    let (return_site, wrapper_caller) = wrapper_caller(slot, cache);
    let first_return = if slot == bp + 8 { return_site } else { 0 };
    ((caller, wrapper_caller), first_return)
}

/// The last decoding per CPU and program kind: a hot loop reads the clock
/// from one instruction and returns to one site, so the code bytes there are
/// read and decoded once, not on every event. A program interrupting another
/// on the same CPU (an NMI sample) uses its own slot.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct DecodeCache {
    /// Addresses only mean the same code within one process (non-PIE
    /// programs share theirs): one life of a PID, as CountKey tells them
    /// apart, so a process that got a PID again on this CPU decodes its own
    /// code. Start time 0 (no BTF offsets) keys by the PID alone.
    tgid: u64,
    start_time: u64,
    ip: u64,
    /// Where the return address sits relative to sp at `ip`, or NOT_UNFRAMED.
    ip_offset: u64,
    site: u64,
    /// The frame size of a frameless function returning from `site`, or
    /// NOT_UNFRAMED.
    site_frame: u64,
}

pub(crate) const NOT_UNFRAMED: u64 = u64::MAX;
pub(crate) const DECODE_SYSCALL: u32 = 0;
pub(crate) const DECODE_SAMPLE: u32 = 1;

#[map]
pub(crate) static DECODE_CACHE: PerCpuArray<DecodeCache> = PerCpuArray::with_max_entries(2, 0);

impl DecodeCache {
    /// Where the return address is relative to sp when `ip` runs without a
    /// frame: at its first instruction (`push %rbp`), the next
    /// (`mov %rsp,%rbp`), or after its last `pop %rbp`.
    #[inline(always)]
    fn unframed_offset(&mut self, ip: u64) -> Option<u64> {
        if self.ip != ip {
            self.ip = ip;
            self.ip_offset = match unsafe { bpf_probe_read_user(ip as *const [u8; CODE_WINDOW]) } {
                Ok(code) => match code {
                    [0x55, ..] => 0,
                    [0x48, 0x89, 0xe5, ..] => 8,
                    _ => frameless_exit(&code).unwrap_or(NOT_UNFRAMED),
                },
                Err(_) => NOT_UNFRAMED,
            };
        }
        (self.ip_offset != NOT_UNFRAMED).then_some(self.ip_offset)
    }

    /// The frame size of the function `site` returns into, if frameless.
    #[inline(always)]
    fn frameless_frame(&mut self, site: u64) -> Option<u64> {
        if self.site != site {
            self.site = site;
            self.site_frame = match unsafe { bpf_probe_read_user(site as *const [u8; CODE_WINDOW]) }
            {
                Ok(code) => frameless_exit(&code).unwrap_or(NOT_UNFRAMED),
                Err(_) => NOT_UNFRAMED,
            };
        }
        (self.site_frame != NOT_UNFRAMED).then_some(self.site_frame)
    }
}

/// Reads a return address from the stack, kept only if it follows a call.
#[inline(always)]
pub(crate) fn read_return_address(slot: u64) -> u64 {
    match unsafe { bpf_probe_read_user(slot as *const u64) } {
        Ok(address) if follows_call(address) => address,
        _ => 0,
    }
}

/// Bytes of code decoded to find how a function returns: the vDSO's epilogue
/// clears nine registers (20 bytes) between its `pop %rbp` and `ret`.
pub(crate) const CODE_WINDOW: usize = 24;

/// How the code at some instruction returns, judged by decoding the next
/// CODE_WINDOW bytes: `Some(n)` if it reaches `ret`, or `add $n,%rsp; ret`, through only
/// register clearing and tests (`xor`/`test` of registers, the fall-through of
/// a short conditional jump), so without a frame of its own; None at anything
/// else (`pop %rbp`, `leave`, memory access, ...). The vDSO's epilogue clears
/// registers after its last `pop %rbp`; glibc's `__clock_gettime` tests the
/// vDSO's result and returns with `add $8,%rsp; ret`; glibc's `syscall()`
/// compares the result (`cmp $-4095,%rax; jae; ret`) and returns.
#[inline(always)]
pub(crate) fn frameless_exit(code: &[u8; CODE_WINDOW]) -> Option<u64> {
    let mut i = 0;
    let mut frame = 0;
    while i < CODE_WINDOW - 1 {
        let op = code[i];
        match op {
            0xc3 => return Some(frame),
            // xor/test r32, r32 (mod = 11: registers only)
            0x31 | 0x33 | 0x85 if code[i + 1] >= 0xc0 => i += 2,
            // jcc rel8: follow the fall-through
            0x70..=0x7f => i += 2,
            // REX prefix: add $imm8,%rsp | xor/test r64, r64
            0x40..=0x4f if i + 3 < CODE_WINDOW => match (code[i + 1], code[i + 2]) {
                (0x83, 0xc4) if op == 0x48 => {
                    frame = code[i + 3] as u64;
                    i += 4;
                }
                (0x31 | 0x33 | 0x85, modrm) if modrm >= 0xc0 => i += 3,
                // cmp $imm32,%rax: glibc's syscall() checks the result
                // right after its `syscall` and returns, without a frame.
                (0x3d, _) if op == 0x48 => i += 6,
                _ => return None,
            },
            _ => return None,
        }
    }
    None
}

/// The return address at `slot` (0 if unreadable) and, if it returns into
/// a frameless wrapper, the wrapper's caller.
#[inline(always)]
pub(crate) fn wrapper_caller(slot: u64, cache: &mut DecodeCache) -> (u64, u64) {
    let Ok(return_site) = (unsafe { bpf_probe_read_user(slot as *const u64) }) else {
        return (0, 0);
    };
    let caller = match cache.frameless_frame(return_site) {
        Some(frame) => read_return_address(slot + 8 + frame),
        None => 0,
    };
    (return_site, caller)
}

/// Whether `address` follows a call instruction, as a return address does:
/// `call rel32` (e8 ..), `call *disp32(%rip)` (ff 15 ..), `call *%reg`
/// (ff d0-d7, also with a REX prefix), `call *(%reg)` (ff 10-17) or
/// `call *disp8(%reg)` (ff 50-57 ..).
#[inline(always)]
pub(crate) fn follows_call(address: u64) -> bool {
    match unsafe { bpf_probe_read_user((address - 6) as *const [u8; 6]) } {
        Ok(code) => {
            code[1] == 0xe8
                || (code[0] == 0xff && code[1] == 0x15)
                || (code[4] == 0xff && (code[5] & 0xf8 == 0xd0 || code[5] & 0xf8 == 0x10))
                || (code[3] == 0xff && code[4] & 0xf8 == 0x50)
        }
        Err(_) => false,
    }
}

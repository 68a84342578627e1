//! clockprof's eBPF programs. Each hook counts one kind of clock read in
//! `COUNTS`, keyed by process, stacks and clock; the daemon never sees per-event
//! records, so the cost per clock read is one map update plus the stack walk.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{pt_regs, BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_task_btf,
        bpf_get_smp_processor_id, bpf_probe_read_kernel, bpf_probe_read_user, bpf_task_pt_regs,
    },
    macros::{fentry, kprobe, map, perf_event, tracepoint, uprobe},
    maps::{HashMap, PerCpuArray, PerCpuHashMap, StackTrace},
    programs::{
        tracing::StackIdContext, FEntryContext, PerfEventContext, ProbeContext, TracePointContext,
    },
};
use profiler_common::{
    event, lost, target, CountKey, CLOCK_ID_NONE, INTERRUPT_TGID, MAX_KERNEL_FNS,
    STACK_NOT_CAPTURED,
};

// Globals are set by the loader (`EbpfLoader::override_global`) and live in .rodata,
// so the verifier folds them into constants.
#[no_mangle]
static FILTER_BY_PID: u32 = 0;
#[no_mangle]
static DAEMON_TGID: u32 = 0;
#[no_mangle]
static FORK_CHILD_PID_OFFSET: u32 = 20;
#[no_mangle]
static TASK_MM_OFFSET: u32 = 0;
#[no_mangle]
static MM_VDSO_OFFSET: u32 = 0;
#[no_mangle]
static VDSO_TEXT_SIZE: u64 = 0;
#[no_mangle]
static PER_CPU_OFFSETS: u64 = 0;
#[no_mangle]
static PREEMPT_COUNT: u64 = 0;
#[no_mangle]
static TASK_FLAGS_OFFSET: u32 = 0;
/// For TaskRegs::KernelStack: offset of task_struct.stack (from BTF) and the
/// kernel stack size.
#[no_mangle]
static TASK_STACK_OFFSET: u32 = 0;
#[no_mangle]
static THREAD_SIZE: u32 = 0;

// Sizes are defaults; the loader resizes COUNTS and STACKS from the command line.
// Per-CPU values: a hot key is bumped without atomics or cache-line bouncing;
// the daemon sums the CPUs.
#[map]
static COUNTS: PerCpuHashMap<CountKey, u64> = PerCpuHashMap::with_max_entries(65536, 0);
#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);
#[map]
static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);
#[map]
static KERNEL_FN_INDEX: HashMap<u64, u32> = HashMap::with_max_entries(MAX_KERNEL_FNS, 0);
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(lost::SLOTS, 0);

/// No skipped caller was recovered.
const NO_CALLER: (u64, u64) = (0, 0);

/// Offset of the first syscall argument in a `syscalls:sys_enter_*` record
/// (after the common header and `__syscall_nr`); stable across kernels.
const SYSCALL_ARG0_OFFSET: usize = 16;

/// Counts a clock syscall. Where it was made from code without a frame (the
/// vDSO's fallback path for CPU-time clocks or a clocksource it cannot read,
/// inside glibc's frameless wrapper), the callers the frame chain skips are
/// recovered from the user registers saved at kernel entry (`regs`, null when
/// unknown), as for vDSO samples.
#[inline(always)]
fn count_syscall(ctx: &impl StackIdContext, event: u32, clock_id: i32, regs: *const pt_regs) {
    let callers = match unsafe { user_regs(regs) } {
        Some((ip, sp, bp)) => skipped_callers(ip, sp, bp, DECODE_SYSCALL),
        None => NO_CALLER,
    };
    count_clock_read(ctx, event, clock_id, callers);
}

/// The user ip, sp and bp saved in `regs`.
#[inline(always)]
unsafe fn user_regs(regs: *const pt_regs) -> Option<(u64, u64, u64)> {
    if regs.is_null() {
        return None;
    }
    Some((
        bpf_probe_read_kernel(&(*regs).rip).ok()?,
        bpf_probe_read_kernel(&(*regs).rsp).ok()?,
        bpf_probe_read_kernel(&(*regs).rbp).ok()?,
    ))
}

/// How a tracepoint program finds the current task's user registers. The
/// loader picks one by probing the kernel's helpers: each is its own program,
/// so the other's helper calls are not even in the program the kernel checks.
#[derive(Clone, Copy)]
enum TaskRegs {
    /// bpf_task_pt_regs(bpf_get_current_task_btf()): kernels 5.15 and later.
    Helper,
    /// task_pt_regs() done by hand, for older kernels (5.10 has neither
    /// helper): x86_64 saves the user registers at the top of the task's
    /// kernel stack, `task->stack + THREAD_SIZE - sizeof(struct pt_regs)`,
    /// with the offset of task_struct.stack from BTF.
    KernelStack,
}

#[inline(always)]
fn task_regs(ctx: &TracePointContext, how: TaskRegs) -> *const pt_regs {
    match how {
        TaskRegs::Helper => unsafe {
            bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs
        },
        TaskRegs::KernelStack => match unsafe { ctx.read_at::<i32>(SYSCALL_NR_OFFSET) } {
            Ok(nr) => unsafe { kernel_stack_regs(nr as u64) },
            Err(_) => core::ptr::null(),
        },
    }
}

#[inline(always)]
unsafe fn kernel_stack_regs(syscall_nr: u64) -> *const pt_regs {
    let offset = core::ptr::read_volatile(&TASK_STACK_OFFSET) as usize;
    let thread_size = core::ptr::read_volatile(&THREAD_SIZE) as u64;
    if offset == 0 || thread_size == 0 {
        return core::ptr::null();
    }
    let task = bpf_get_current_task() as *const u8;
    let stack = match bpf_probe_read_kernel(task.add(offset) as *const u64) {
        Ok(stack) if stack != 0 => stack,
        _ => return core::ptr::null(),
    };
    let top = stack + thread_size - core::mem::size_of::<pt_regs>() as u64;
    // TOP_OF_KERNEL_STACK_PADDING is 0 on x86_64, but 16 bytes on kernels
    // built with FRED (6.9+, for the variant forced there). The entry code
    // saved this syscall's number in orig_ax: where it is not, the layout is
    // not the one assumed, and a wrong caller is worse than none.
    for padding in [0, 16] {
        let regs = (top - padding) as *const pt_regs;
        if let Ok(nr) = bpf_probe_read_kernel(&(*regs).orig_rax) {
            if nr == syscall_nr {
                return regs;
            }
        }
    }
    core::ptr::null()
}

#[inline(always)]
fn filter_by_pid() -> bool {
    unsafe { core::ptr::read_volatile(&FILTER_BY_PID) != 0 }
}

#[inline(always)]
fn count_lost(slot: u32) {
    if let Some(counter) = LOST.get_ptr_mut(slot) {
        // Per-CPU slot: no other CPU writes it.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
fn is_target(tgid: u32) -> bool {
    if tgid == unsafe { core::ptr::read_volatile(&DAEMON_TGID) } {
        return false;
    }
    !filter_by_pid() || unsafe { TARGETS.get(&tgid) }.is_some()
}

#[inline(always)]
fn stack_id<C: StackIdContext>(ctx: &C, flags: u64, lost_slot: u32) -> i32 {
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
fn count_clock_read<C: StackIdContext>(
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
fn count_key(key: &CountKey) {
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
fn add_one(key: &CountKey) -> bool {
    match COUNTS.get_ptr_mut(key) {
        Some(count) => {
            unsafe { *count += 1 };
            true
        }
        None => false,
    }
}

/// `__syscall_nr` in a `syscalls:sys_enter_*` record, after the common header.
const SYSCALL_NR_OFFSET: usize = 8;

#[inline(always)]
fn sys_enter(ctx: &TracePointContext, event: u32, how: TaskRegs) -> u32 {
    let clock_id = if event == event::SYSCALL_CLOCK_GETTIME {
        unsafe { ctx.read_at::<u64>(SYSCALL_ARG0_OFFSET) }.unwrap_or(0) as i32
    } else {
        CLOCK_ID_NONE
    };
    count_syscall(ctx, event, clock_id, task_regs(ctx, how));
    0
}

#[tracepoint]
pub fn sys_enter_clock_gettime(ctx: TracePointContext) -> u32 {
    sys_enter(&ctx, event::SYSCALL_CLOCK_GETTIME, TaskRegs::Helper)
}

#[tracepoint]
pub fn sys_enter_gettimeofday(ctx: TracePointContext) -> u32 {
    sys_enter(&ctx, event::SYSCALL_GETTIMEOFDAY, TaskRegs::Helper)
}

#[tracepoint]
pub fn sys_enter_time(ctx: TracePointContext) -> u32 {
    sys_enter(&ctx, event::SYSCALL_TIME, TaskRegs::Helper)
}

#[tracepoint]
pub fn sys_enter_clock_gettime_kstack(ctx: TracePointContext) -> u32 {
    sys_enter(&ctx, event::SYSCALL_CLOCK_GETTIME, TaskRegs::KernelStack)
}

#[tracepoint]
pub fn sys_enter_gettimeofday_kstack(ctx: TracePointContext) -> u32 {
    sys_enter(&ctx, event::SYSCALL_GETTIMEOFDAY, TaskRegs::KernelStack)
}

#[tracepoint]
pub fn sys_enter_time_kstack(ctx: TracePointContext) -> u32 {
    sys_enter(&ctx, event::SYSCALL_TIME, TaskRegs::KernelStack)
}

// The same three syscalls through fentry and kprobe on the `__x64_sys_*`
// wrappers, which are cheaper than the syscall tracepoints (and, unlike them,
// do not put every task on the slow syscall-entry path). The wrappers take the
// caller's saved user registers as their one argument (the first syscall
// argument was passed in `di`), so these need no helper to find them and are
// the same program on every kernel.
const PT_REGS_DI_OFFSET: usize = 112;

#[inline(always)]
fn first_syscall_arg(user_regs: *const pt_regs) -> i32 {
    if user_regs.is_null() {
        return 0;
    }
    unsafe { bpf_probe_read_kernel((user_regs as *const u8).add(PT_REGS_DI_OFFSET) as *const u64) }
        .unwrap_or(0) as i32
}

#[fentry(function = "__x64_sys_clock_gettime")]
pub fn fentry_clock_gettime(ctx: FEntryContext) -> u32 {
    let regs = ctx.arg::<*const pt_regs>(0);
    count_syscall(
        &ctx,
        event::SYSCALL_CLOCK_GETTIME,
        first_syscall_arg(regs),
        regs,
    );
    0
}

#[fentry(function = "__x64_sys_gettimeofday")]
pub fn fentry_gettimeofday(ctx: FEntryContext) -> u32 {
    let regs = ctx.arg::<*const pt_regs>(0);
    count_syscall(&ctx, event::SYSCALL_GETTIMEOFDAY, CLOCK_ID_NONE, regs);
    0
}

#[fentry(function = "__x64_sys_time")]
pub fn fentry_time(ctx: FEntryContext) -> u32 {
    let regs = ctx.arg::<*const pt_regs>(0);
    count_syscall(&ctx, event::SYSCALL_TIME, CLOCK_ID_NONE, regs);
    0
}

#[kprobe]
pub fn kprobe_clock_gettime(ctx: ProbeContext) -> u32 {
    let regs = ctx.arg::<*const pt_regs>(0).unwrap_or(core::ptr::null());
    count_syscall(
        &ctx,
        event::SYSCALL_CLOCK_GETTIME,
        first_syscall_arg(regs),
        regs,
    );
    0
}

#[kprobe]
pub fn kprobe_gettimeofday(ctx: ProbeContext) -> u32 {
    let regs = ctx.arg::<*const pt_regs>(0).unwrap_or(core::ptr::null());
    count_syscall(&ctx, event::SYSCALL_GETTIMEOFDAY, CLOCK_ID_NONE, regs);
    0
}

#[kprobe]
pub fn kprobe_time(ctx: ProbeContext) -> u32 {
    let regs = ctx.arg::<*const pt_regs>(0).unwrap_or(core::ptr::null());
    count_syscall(&ctx, event::SYSCALL_TIME, CLOCK_ID_NONE, regs);
    0
}

// User-space clock functions, by entry uprobes (never uretprobes: they crash
// Go programs). At entry the callee has not pushed its frame, so the caller is
// only found at the stack pointer: it is recorded exactly.

#[inline(always)]
fn return_address(ctx: &ProbeContext) -> (u64, u64) {
    let sp = unsafe { (*ctx.regs).rsp };
    (
        unsafe { bpf_probe_read_user(sp as *const u64) }.unwrap_or(0),
        0,
    )
}

#[uprobe]
pub fn uprobe_libc_clock_gettime(ctx: ProbeContext) -> u32 {
    let clock_id = ctx.arg::<u64>(0).unwrap_or(0) as i32;
    count_clock_read(
        &ctx,
        event::LIBC_CLOCK_GETTIME,
        clock_id,
        return_address(&ctx),
    );
    0
}

#[uprobe]
pub fn uprobe_go_time_now(ctx: ProbeContext) -> u32 {
    count_clock_read(
        &ctx,
        event::GO_TIME_NOW,
        CLOCK_ID_NONE,
        return_address(&ctx),
    );
    0
}

#[uprobe]
pub fn uprobe_go_nanotime1(ctx: ProbeContext) -> u32 {
    count_clock_read(
        &ctx,
        event::GO_NANOTIME1,
        CLOCK_ID_NONE,
        return_address(&ctx),
    );
    0
}

#[uprobe]
pub fn uprobe_go_walltime(ctx: ProbeContext) -> u32 {
    count_clock_read(
        &ctx,
        event::GO_WALLTIME,
        CLOCK_ID_NONE,
        return_address(&ctx),
    );
    0
}

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
    count_clock_read(
        &ctx,
        event::VDSO_SAMPLE,
        CLOCK_ID_NONE,
        skipped_callers(ip, regs.rsp, regs.rbp, DECODE_SAMPLE),
    );
    0
}

/// The vDSO is built with frame pointers, so the frame chain names its caller,
/// except where the sampled function has no frame at that instruction: its
/// first instruction (`push %rbp`), the next (`mov %rsp,%rbp`), and after its
/// final `pop %rbp`. There the return address is at the stack pointer. The
/// caller is typically glibc's `__clock_gettime`, which has no frame at all
/// (`sub $8,%rsp; call *%rax; ...; add $8,%rsp; ret`), so the chain also skips
/// the function that called glibc: its return address sits right above the
/// wrapper's frame, whose size the wrapper's epilogue tells.
#[inline(always)]
fn skipped_callers(ip: u64, sp: u64, bp: u64, cache_slot: u32) -> (u64, u64) {
    let Some(cache) = DECODE_CACHE.get_ptr_mut(cache_slot) else {
        return NO_CALLER;
    };
    let cache = unsafe { &mut *cache };
    let tgid = bpf_get_current_pid_tgid() >> 32;
    if cache.tgid != tgid {
        *cache = DecodeCache {
            tgid,
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
    (caller, wrapper_caller(slot, cache))
}

/// The last decoding per CPU and program kind: a hot loop reads the clock
/// from one instruction and returns to one site, so the code bytes there are
/// read and decoded once, not on every event. A program interrupting another
/// on the same CPU (an NMI sample) uses its own slot.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct DecodeCache {
    /// Addresses only mean the same code within one process (non-PIE
    /// programs share theirs).
    tgid: u64,
    ip: u64,
    /// Where the return address sits relative to sp at `ip`, or NOT_UNFRAMED.
    ip_offset: u64,
    site: u64,
    /// The frame size of a frameless function returning from `site`, or
    /// NOT_UNFRAMED.
    site_frame: u64,
}

const NOT_UNFRAMED: u64 = u64::MAX;
const DECODE_SYSCALL: u32 = 0;
const DECODE_SAMPLE: u32 = 1;

#[map]
static DECODE_CACHE: PerCpuArray<DecodeCache> = PerCpuArray::with_max_entries(2, 0);

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
fn read_return_address(slot: u64) -> u64 {
    match unsafe { bpf_probe_read_user(slot as *const u64) } {
        Ok(address) if follows_call(address) => address,
        _ => 0,
    }
}

/// Bytes of code decoded to find how a function returns: the vDSO's epilogue
/// clears nine registers (20 bytes) between its `pop %rbp` and `ret`.
const CODE_WINDOW: usize = 24;

/// How the code at some instruction returns, judged by decoding the next
/// CODE_WINDOW bytes: `Some(n)` if it reaches `ret`, or `add $n,%rsp; ret`, through only
/// register clearing and tests (`xor`/`test` of registers, the fall-through of
/// a short conditional jump), so without a frame of its own; None at anything
/// else (`pop %rbp`, `leave`, memory access, ...). The vDSO's epilogue clears
/// registers after its last `pop %rbp`; glibc's `__clock_gettime` tests the
/// vDSO's result and returns with `add $8,%rsp; ret`.
#[inline(always)]
fn frameless_exit(code: &[u8; CODE_WINDOW]) -> Option<u64> {
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
                _ => return None,
            },
            _ => return None,
        }
    }
    None
}

/// The caller of a frameless wrapper whose return address is at `slot`.
#[inline(always)]
fn wrapper_caller(slot: u64, cache: &mut DecodeCache) -> u64 {
    let Ok(return_site) = (unsafe { bpf_probe_read_user(slot as *const u64) }) else {
        return 0;
    };
    match cache.frameless_frame(return_site) {
        Some(frame) => read_return_address(slot + 8 + frame),
        None => 0,
    }
}

/// Whether `address` follows a call instruction, as a return address does:
/// `call rel32` (e8 ..), `call *disp32(%rip)` (ff 15 ..), `call *%reg`
/// (ff d0-d7, also with a REX prefix), `call *(%reg)` (ff 10-17) or
/// `call *disp8(%reg)` (ff 50-57 ..).
#[inline(always)]
fn follows_call(address: u64) -> bool {
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

// Kernel-internal clock reads. Nothing on these paths may read a clock
// (no bpf_ktime_get_ns): some of them are the very clock being read.

/// How a kernel-source program was entered, for reading the preempt count.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Entry {
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
const SOFTIRQ_OFFSET: u32 = 1 << 8;
const HARDIRQ_OFFSET: u32 = 1 << 16;
const HARDIRQ_MASK: u32 = 0xf << 16;
const NMI_OFFSET: u32 = 1 << 20;
const NMI_MASK: u32 = 0xf << 20;
const INTERRUPT_BITS: u32 = NMI_MASK | HARDIRQ_MASK | SOFTIRQ_OFFSET;

/// Whether this CPU is in interrupt context (hardirq, softirq or NMI), from
/// its preempt count: a per-CPU variable, read at its per-CPU address
/// (`__per_cpu_offset[cpu]` + the variable's, both set by the loader)
/// because Rust eBPF code has no ksyms for bpf_this_cpu_ptr. Unknown
/// addresses read as task context; the daemon then still finds interrupt
/// entry frames in the kernel stack.
#[inline(always)]
fn in_interrupt(entry: Entry) -> bool {
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

const PF_KTHREAD: u32 = 0x0020_0000;

/// Whether the current task has a user stack to walk: kernel threads (and
/// user tasks past exit_mm) have none, which is not a lost stack.
#[inline(always)]
fn has_user_stack() -> bool {
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
fn count_kernel_fn<C: StackIdContext>(ctx: &C, index: u32, entry: Entry) {
    let (tgid, user_stack_id) = if in_interrupt(entry) {
        if filter_by_pid() {
            return;
        }
        (INTERRUPT_TGID, STACK_NOT_CAPTURED)
    } else {
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        if !is_target(tgid) {
            return;
        }
        let user_stack_id = if has_user_stack() {
            stack_id(ctx, BPF_F_USER_STACK as u64, lost::USER_STACK)
        } else {
            STACK_NOT_CAPTURED
        };
        (tgid, user_stack_id)
    };
    count_key(&CountKey {
        tgid,
        user_stack_id,
        kernel_stack_id: stack_id(ctx, 0, lost::KERNEL_STACK),
        clock_id: index as i32,
        event: event::KERNEL_FN,
        _pad: 0,
        caller_ip: 0,
        wrapper_caller_ip: 0,
    });
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
    let ip = unsafe { (*ctx.ctx).regs.rip };
    if let Some(&index) = unsafe { KERNEL_FN_INDEX.get(&ip) } {
        count_kernel_fn(&ctx, index, Entry::DebugException);
    }
    0
}

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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

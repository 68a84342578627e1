//! The `syscall` source: the clock system calls, hooked at their kernel
//! entry by fentry, kprobe, the raw `sys_enter` tracepoint or the
//! `syscalls:sys_enter_*` tracepoints (probes::backend_rank orders them).

use super::{point, Attach, Backend, Call, Event, Hook, SourceSpec};

/// Event ids: which clock system call entered the kernel.
pub const CLOCK_GETTIME: u32 = 1;
pub const GETTIMEOFDAY: u32 = 2;
pub const TIME: u32 = 3;

pub const SPEC: SourceSpec = SourceSpec {
    name: "syscall",
    order: 0,
    help: "clock_gettime/gettimeofday/time system calls (fentry, kprobe, raw
sys_enter tracepoint or syscalls:sys_enter_* tracepoints; ~1.1-1.2 us per
syscall with its user stack, ~0.3-0.45 us with --stack-every 64; exact
counts). Most clock reads never enter the kernel (vDSO); syscalls show
CPU-time clocks and hosts whose clocksource cannot serve the vDSO.",
    events: &[
        Event::new(CLOCK_GETTIME, Call::Named("clock_gettime")),
        Event::new(GETTIMEOFDAY, Call::Named("gettimeofday")),
        Event::new(TIME, Call::Named("time")),
    ],
    attach: Attach::KernelHooks(HOOKS),
    on_by_default: true,
    sampled: false,
    doctor_note: "exact counts",
};

/// One raw-tracepoint program serves the three syscalls (it tells them by
/// number), attached once however many hooks name it.
pub const RAW_SYS_ENTER: &str = "raw_sys_enter";
const RAW_SYS_ENTER_PLACE: &str = "raw_syscalls:sys_enter";

const HOOKS: &[Hook] = &[
    Hook {
        points: &[
            point(
                Backend::Fentry,
                "fentry_clock_gettime",
                "__x64_sys_clock_gettime",
            ),
            point(
                Backend::Kprobe,
                "kprobe_clock_gettime",
                "__x64_sys_clock_gettime",
            ),
            point(Backend::RawTracepoint, RAW_SYS_ENTER, RAW_SYS_ENTER_PLACE),
            point(
                Backend::Tracepoint,
                "sys_enter_clock_gettime",
                "syscalls:sys_enter_clock_gettime",
            ),
        ],
        kernel_stack_tracepoint: "sys_enter_clock_gettime_kstack",
    },
    Hook {
        points: &[
            point(
                Backend::Fentry,
                "fentry_gettimeofday",
                "__x64_sys_gettimeofday",
            ),
            point(
                Backend::Kprobe,
                "kprobe_gettimeofday",
                "__x64_sys_gettimeofday",
            ),
            point(Backend::RawTracepoint, RAW_SYS_ENTER, RAW_SYS_ENTER_PLACE),
            point(
                Backend::Tracepoint,
                "sys_enter_gettimeofday",
                "syscalls:sys_enter_gettimeofday",
            ),
        ],
        kernel_stack_tracepoint: "sys_enter_gettimeofday_kstack",
    },
    Hook {
        points: &[
            point(Backend::Fentry, "fentry_time", "__x64_sys_time"),
            point(Backend::Kprobe, "kprobe_time", "__x64_sys_time"),
            point(Backend::RawTracepoint, RAW_SYS_ENTER, RAW_SYS_ENTER_PLACE),
            point(
                Backend::Tracepoint,
                "sys_enter_time",
                "syscalls:sys_enter_time",
            ),
        ],
        kernel_stack_tracepoint: "sys_enter_time_kstack",
    },
];

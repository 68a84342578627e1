//! The `syscall` source: the clock system calls, hooked at their kernel
//! entry (fentry, kprobe or tracepoint; the catalogue is probes' SYSCALL_HOOKS).

use profiler_common::event;

use super::{Attach, Call, Event, SourceSpec};

pub const SPEC: SourceSpec = SourceSpec {
    name: "syscall",
    help: "clock_gettime/gettimeofday/time system calls (fentry, kprobe or
tracepoint; ~0.9 us per syscall with its user stack; exact counts).
Most clock reads never enter the kernel (vDSO); syscalls show
CPU-time clocks and hosts whose clocksource cannot serve the vDSO.",
    events: &[
        Event::new(event::SYSCALL_CLOCK_GETTIME, Call::Named("clock_gettime")),
        Event::new(event::SYSCALL_GETTIMEOFDAY, Call::Named("gettimeofday")),
        Event::new(event::SYSCALL_TIME, Call::Named("time")),
    ],
    attach: Attach::KernelHooks,
    on_by_default: true,
    sampled: false,
    doctor_note: "exact counts",
};

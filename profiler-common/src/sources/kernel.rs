//! The `kernel` source: kernel-internal clock functions, each watched by
//! fentry, kprobe or a hardware breakpoint. Its events carry the slot of the
//! function in the recording's list instead of a clock id.

use super::{Attach, Call, Event, SourceSpec};

/// A kernel clock function ran; `CountKey::clock_id` is its slot in the
/// daemon's list of kernel functions.
pub const FUNCTION: u32 = 40;

pub const SPEC: SourceSpec = SourceSpec {
    name: "kernel",
    order: 1,
    help: "kernel-internal clock functions (--kernel-fn; default
ktime_get_mono_fast_ns, ktime_get, ktime_get_ts64,
ktime_get_real_ts64) by fentry or kprobe; ~0.1-1 us per call with
kernel and user stacks. A hardware breakpoint takes one of the CPU's
4 debug registers (shared with gdb and perf): by default only for
the notrace ktime_get_mono_fast_ns, for each --kernel-fn function
fentry and kprobe cannot reach when named (up to 4). Reads in
interrupt context go under [interrupt], not the interrupted task
(left out with -p or COMMAND). Skipped with a warning where the
kernel allows none of them.",
    events: &[Event::new(FUNCTION, Call::KernelFunction)],
    attach: Attach::KernelFunctions,
    on_by_default: true,
    sampled: false,
    doctor_note: "",
};

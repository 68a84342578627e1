//! The `vdso` source: cpu-clock samples whose user instruction pointer is
//! in the vDSO's clock functions.

use super::{Attach, Call, Event, SourceSpec};

/// A cpu-clock sample whose user instruction pointer was in the [vdso].
pub const SAMPLE: u32 = 30;

pub const SPEC: SourceSpec = SourceSpec {
    name: "vdso",
    order: 4,
    help: "cpu-clock samples landing in the vDSO's clock functions, where
glibc's clock_gettime/gettimeofday/time, Go's time.Now and Rust's
Instant::now read the clock without a syscall. Costs what the
sampling rate (-F) costs, whatever the call rate; counts are samples.",
    events: &[Event::new(SAMPLE, Call::Named("sample"))],
    attach: Attach::Sampling,
    on_by_default: true,
    sampled: true,
    doctor_note: "samples; needs BTF",
};

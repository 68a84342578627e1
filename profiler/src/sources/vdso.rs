//! The `vdso` source: cpu-clock samples whose user instruction pointer is
//! in the vDSO's clock functions.

use profiler_common::event;

use super::{Attach, Call, Event, SourceSpec};

pub const SPEC: SourceSpec = SourceSpec {
    name: "vdso",
    help: "cpu-clock samples landing in the vDSO's clock functions, where
glibc's clock_gettime/gettimeofday/time, Go's time.Now and Rust's
Instant::now read the clock without a syscall. Costs what the
sampling rate (-F) costs, whatever the call rate; counts are samples.",
    events: &[Event::new(event::VDSO_SAMPLE, Call::Named("sample"))],
    attach: Attach::Sampling,
    on_by_default: true,
    sampled: true,
    doctor_note: "samples; needs BTF",
};

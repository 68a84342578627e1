//! The `libc` source: an entry uprobe on glibc's `__clock_gettime`, in the
//! glibc each process really maps.

use super::{Attach, Call, Event, SourceSpec, Uprobe, UprobeBinary};

/// Entry of glibc's `__clock_gettime`.
pub const CLOCK_GETTIME: u32 = 10;

pub const SPEC: SourceSpec = SourceSpec {
    name: "libc",
    order: 2,
    help: "uprobe on glibc's __clock_gettime: exact counts, but each call traps
(0.3-1 us on bare metal, ~20 us under nested virtualization: 10x to
1000x a 20-30 ns vDSO read). Opt-in; scoped to -p when given;
with COMMAND every process using its glibc traps (only COMMAND's
are counted). gettimeofday and time are glibc IFUNCs that jump
straight into the vDSO: only vdso sees them.",
    events: &[Event::new(
        CLOCK_GETTIME,
        Call::Named("clock_gettime"),
    )],
    attach: Attach::Uprobes {
        binary: UprobeBinary::Libc,
        uprobes: &[Uprobe {
            program: "uprobe_libc_clock_gettime",
            symbols: &["__clock_gettime"],
        }],
    },
    on_by_default: false,
    sampled: false,
    doctor_note: "opt-in: traps on every call",
};

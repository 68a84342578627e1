//! The `go` source: entry uprobes on Go's clock functions in Go executables
//! that keep their symbol table. Go's assembly functions carry an `.abi0`
//! suffix in some releases, and not every release has every function (Go
//! 1.19 on amd64 reads the wall clock inside time.now, with no
//! runtime.walltime).

use super::{Attach, Call, Event, SourceSpec, Uprobe, UprobeBinary};

/// Event ids: entries of Go's clock functions.
pub const TIME_NOW: u32 = 20;
pub const NANOTIME1: u32 = 21;
pub const WALLTIME: u32 = 22;

pub const SPEC: SourceSpec = SourceSpec {
    name: "go",
    order: 3,
    help: "uprobes on time.now, runtime.nanotime1, runtime.walltime of Go
binaries (needs their symbols): exact counts, same trap cost.
Opt-in; follows new processes: a Go program started later gets
them tens of ms after it starts.",
    events: &[
        Event::new(TIME_NOW, Call::Named("time.now")),
        Event::new(NANOTIME1, Call::Named("runtime.nanotime1")),
        Event::new(WALLTIME, Call::Named("runtime.walltime")),
    ],
    attach: Attach::Uprobes {
        binary: UprobeBinary::GoExecutable,
        uprobes: &[
            Uprobe {
                program: "uprobe_go_time_now",
                symbols: &["time.now", "time.now.abi0"],
            },
            Uprobe {
                program: "uprobe_go_nanotime1",
                symbols: &["runtime.nanotime1", "runtime.nanotime1.abi0"],
            },
            Uprobe {
                program: "uprobe_go_walltime",
                symbols: &["runtime.walltime", "runtime.walltime.abi0"],
            },
        ],
    },
    on_by_default: false,
    sampled: false,
    doctor_note: "opt-in: traps on every call",
};

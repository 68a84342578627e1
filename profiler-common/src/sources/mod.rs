//! The clock sources a user can choose with `-s`, one module each.
//!
//! A source is declared once, in its module here: its `SPEC` (name, help
//! with its cost, the event ids its eBPF programs count and the call each
//! stands for, how it attaches, whether it is on by default) and the ids
//! themselves as constants. This crate is the one both sides compile, so
//! the eBPF program counts with the same constants the daemon names its
//! leaves from, and the table is plain `const` data that costs the BPF
//! object nothing.
//!
//! No file lists the sources: build.rs declares every `.rs` file of this
//! folder as a module and puts its `SPEC` in [`ALL`], in file-name order
//! (the daemon orders sources by [`SourceSpec::order`]). Adding a source is
//! adding its file here, its programs in profiler-ebpf/src/sources/ and its
//! test.

include!(concat!(env!("OUT_DIR"), "/sources.rs"));

/// Whether a module's `SPEC` bears its file's name: build.rs asserts it at
/// compile time for every source, so `-s NAME` is always `sources/NAME.rs`.
pub const fn is_named(spec: &SourceSpec, file_stem: &str) -> bool {
    let (a, b) = (spec.name.as_bytes(), file_stem.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Everything about one source, declared in its own module.
pub struct SourceSpec {
    /// Its name for `-s` and in leaves.
    pub name: &'static str,
    /// Where it comes in every list of sources: outputs, `-s all`, the
    /// summary. Unique (a unit test checks); a new source takes the next.
    pub order: u8,
    /// Its paragraph of `-s`'s help, with its cost.
    pub help: &'static str,
    /// The event ids its eBPF programs count, and the call each stands for.
    pub events: &'static [Event],
    pub attach: Attach,
    /// Part of `-s default`.
    pub on_by_default: bool,
    /// Counts are samples, not events.
    pub sampled: bool,
    /// What `doctor` says of it next to the backend it would use (the
    /// kernel source's note is which way its notrace function is reached).
    pub doctor_note: &'static str,
}

/// One counted event: its id (a constant of its source's module, which the
/// eBPF program writes in `CountKey::event`) and its call.
pub struct Event {
    pub id: u32,
    pub call: Call,
}

impl Event {
    pub const fn new(id: u32, call: Call) -> Event {
        Event { id, call }
    }
}

/// How the leaf of an event names its call.
pub enum Call {
    Named(&'static str),
    /// The kernel function in the event's slot of the recording's list.
    KernelFunction,
}

/// How a source's hooks are attached.
pub enum Attach {
    /// At fixed kernel places, each hook by the best backend the kernel
    /// accepts.
    KernelHooks(&'static [Hook]),
    /// On each chosen kernel clock function (`--kernel-fn`).
    KernelFunctions,
    /// cpu-clock sampling on every CPU at `-F` Hz.
    Sampling,
    /// Entry uprobes on the binaries of `binary`.
    Uprobes {
        binary: UprobeBinary,
        uprobes: &'static [Uprobe],
    },
}

/// A clock-read hook with its ways of attaching, best first.
pub struct Hook {
    pub points: &'static [HookPoint],
    /// The tracepoint program for kernels without bpf_task_pt_regs
    /// (the daemon's probes::ProgramVariant::KernelStack); the other
    /// backends' programs serve every kernel.
    pub kernel_stack_tracepoint: &'static str,
}

/// One way to attach a hook: a program of the eBPF object and where it goes
/// (a kernel function, or `category:name` of a tracepoint).
#[derive(Clone, Copy, Debug)]
pub struct HookPoint {
    pub backend: Backend,
    pub program: &'static str,
    pub place: &'static str,
}

pub const fn point(backend: Backend, program: &'static str, place: &'static str) -> HookPoint {
    HookPoint {
        backend,
        program,
        place,
    }
}

/// Which binary of a process the uprobes of a source go into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UprobeBinary {
    /// The glibc it maps.
    Libc,
    /// Its executable, if it is a Go program with its symbol table.
    GoExecutable,
}

/// One entry uprobe: its program and the names its function goes by.
pub struct Uprobe {
    pub program: &'static str,
    pub symbols: &'static [&'static str],
}

/// How a hook is attached, best (cheapest) first: the first one the kernel
/// accepts is used, unless `--backend` forces one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(
    feature = "user",
    derive(serde::Serialize, clap::ValueEnum),
    serde(rename_all = "lowercase")
)]
pub enum Backend {
    Fentry,
    Kprobe,
    /// The raw `sys_enter` tracepoint: one program for every clock syscall.
    #[cfg_attr(
        feature = "user",
        value(name = "raw_tracepoint"),
        serde(rename = "raw_tracepoint")
    )]
    RawTracepoint,
    Tracepoint,
    Breakpoint,
    Uprobe,
    #[cfg_attr(
        feature = "user",
        value(name = "perf_event"),
        serde(rename = "perf_event")
    )]
    PerfEvent,
}

impl core::fmt::Display for Backend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Backend::Fentry => "fentry",
            Backend::Kprobe => "kprobe",
            Backend::RawTracepoint => "raw_tracepoint",
            Backend::Tracepoint => "tracepoint",
            Backend::Breakpoint => "breakpoint",
            Backend::Uprobe => "uprobe",
            Backend::PerfEvent => "perf_event",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_orders_and_event_ids_are_each_one_sources() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(!a.events.is_empty(), "{} counts no event", a.name);
            for b in &ALL[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.order, b.order, "{} and {}", a.name, b.name);
                for event in a.events {
                    assert!(
                        b.events.iter().all(|e| e.id != event.id),
                        "event id {} is both {}'s and {}'s",
                        event.id,
                        a.name,
                        b.name
                    );
                }
            }
            for (j, event) in a.events.iter().enumerate() {
                assert!(a.events[j + 1..].iter().all(|e| e.id != event.id));
            }
        }
    }
}

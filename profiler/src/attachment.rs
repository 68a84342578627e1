//! What a recording attached, as plain data: each hook with its source and
//! backend. Aggregation, the exporters and the live view read this, never
//! the probes layer that produced it.

use std::fmt;

use serde::Serialize;

use crate::sources::Source;

/// How a hook is attached, best (cheapest) first: the first one the kernel
/// accepts is used, unless `--backend` forces one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Fentry,
    Kprobe,
    /// The raw `sys_enter` tracepoint: one program for every clock syscall.
    #[value(name = "raw_tracepoint")]
    #[serde(rename = "raw_tracepoint")]
    RawTracepoint,
    Tracepoint,
    Breakpoint,
    Uprobe,
    #[value(name = "perf_event")]
    #[serde(rename = "perf_event")]
    PerfEvent,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// One attached hook, for the record of what was measured how.
#[derive(Clone, Debug, Serialize)]
pub struct Attachment {
    pub source: Source,
    pub hook: String,
    pub backend: Backend,
}

/// Debug registers per CPU on x86: at most this many functions can be
/// watched by breakpoint at once.
pub const DEBUG_REGISTERS: usize = 4;

/// Debug registers per CPU that `attachments` take: one per function watched
/// by breakpoint.
pub fn debug_registers_taken(attachments: &[Attachment]) -> usize {
    attachments
        .iter()
        .filter(|a| a.backend == Backend::Breakpoint)
        .count()
}

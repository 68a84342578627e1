//! What a recording attached, as plain data: each hook with its source and
//! backend. Aggregation, the exporters and the live view read this, never
//! the probes layer that produced it.

use serde::Serialize;

use crate::sources::Source;

/// How a hook is attached; declared with the sources, whose hooks name
/// their backends.
pub use profiler_common::sources::Backend;

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

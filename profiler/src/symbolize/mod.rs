//! Turns raw instruction pointers into function names with blazesym.
//!
//! Two steps. As samples are drained from the kernel, `Normalizer` turns
//! their user addresses into (file, file offset) through the process
//! tracker, which remembers the mappings of processes until their last
//! events are drained; that is why a 5 ms COMMAND is symbolized as well as a
//! long-running daemon. Normalized stacks no longer depend on where a
//! process was loaded, so the stacks of every run of a program are one
//! interned stack. Then, at the end or when someone looks, `StackSymbolizer`
//! names each distinct location once.

mod cause;
pub mod debuginfo;
mod frames;
mod go_table;
pub mod interrupt;
mod lookup;
mod normalize;
mod perf_map;
mod resolve;
mod symbolizer;
mod vdso;

/// The fuzz target of perf maps (fuzz/targets.rs): any text, as a JIT's
/// `/tmp/perf-PID.map` or a user's file there holds.
#[cfg(test)]
pub(crate) fn fuzz_perf_map(text: &str) -> bool {
    perf_map::fuzz(text.as_bytes())
}

/// What stands for a user stack the kernel could not capture (the
/// format tests render one).
#[cfg(test)]
pub use frames::LOST_STACK;
pub use frames::{
    Frame, NormalizedSample, ProcessIdentity, StackState, SymbolizedSample, UserLocation, UNKNOWN,
};
pub use normalize::{process_name, Normalizer};
pub use symbolizer::StackSymbolizer;

//! What naming produces and consumes: frames, symbolized samples, and the
//! normalized form a sample takes once its addresses no longer depend on
//! where its process was loaded.

use std::sync::Arc;

use serde::Serialize;

use crate::host::interposer::Interposer;
use crate::host::safe_open::FileKey;
use crate::sources::ClockRead;

pub const UNKNOWN: &str = "[unknown]";
/// Stands for the user stack when the kernel could not capture it.
pub const LOST_STACK: &str = "[lost stack]";

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Frame {
    pub function: String,
    /// The file the code lives in (the kernel for kernel frames), where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    pub kernel: bool,
}

impl Frame {
    pub(super) fn unknown(module: Option<String>, kernel: bool) -> Frame {
        Frame {
            function: UNKNOWN.to_string(),
            module,
            kernel,
        }
    }

    /// The frame's name in folded stacks: kernel frames carry `_[k]`.
    pub fn folded_name(&self) -> String {
        if self.kernel {
            format!("{}_[k]", self.function)
        } else {
            self.function.clone()
        }
    }
}

/// How a stack ended up, besides its frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StackState {
    Complete,
    /// The kernel could not capture the user stack; frames are missing.
    UserStackLost,
    /// `--stack-every N`: the frames above the exact ones (exact_frames)
    /// were sampled from one event in N, and the count of this stack is its
    /// share of the exact count of the events with those frames.
    Estimated,
    /// `--stack-every N`: no event with these exact frames took its whole
    /// stack; the frames are the exact ones only (under `[unsampled]` once
    /// aggregated).
    Unsampled,
    /// A stack unwound with DWARF from one event's copy: its count weighs
    /// how the exact count of its group (its process, clock read and user
    /// ip) is spread, as for sampled stacks; stack_scaling turns it into
    /// `Complete` (every event's stack was unwound) or `Estimated`.
    Unwound,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolizedSample {
    pub pid: u32,
    /// The process's start time (CLOCK_MONOTONIC ns, 0: unknown): with
    /// `pid`, it names one process, also where a PID was reused.
    pub start_time: u64,
    pub comm: String,
    /// The process's cgroup path, where it is not the root cgroup.
    pub cgroup: Option<String>,
    /// The libraries that take the process's clock calls over.
    pub interposers: Arc<[Interposer]>,
    pub read: ClockRead,
    /// Outermost first: user frames, then kernel frames.
    pub frames: Vec<Frame>,
    pub state: StackState,
    /// How many of the innermost user frames every event of this sample's
    /// key had for certain: the clock-reading code, the callers the kernel
    /// side recovered and the first return address. Under `--stack-every`
    /// they name the group whose exact count stack_scaling spreads.
    pub exact_frames: usize,
    pub count: u64,
}

/// Where a user address lives: a file and an offset into it, JIT code named
/// by the process's perf map, or nowhere known.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UserLocation {
    /// `file` is `None` for the vDSO, which has no file.
    File {
        path: Arc<str>,
        file: Option<FileKey>,
        offset: u64,
    },
    Special(Arc<str>),
    Jit(Arc<str>),
    Unknown,
}

/// What names a process in the output, read while it lived.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessIdentity {
    pub comm: Option<String>,
    /// The cgroup path, where it is not the root cgroup.
    pub cgroup: Option<String>,
    /// The libraries that take its clock calls over (host/interposer.rs).
    pub interposers: Arc<[Interposer]>,
}

/// A drained sample with its stacks made independent of the process's
/// address space: everything naming needs, without the process's mappings.
/// Stacks and identities are interned (`Normalizer`), so a sample costs a
/// few pointers whatever its depth.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NormalizedSample {
    pub pid: u32,
    /// The process's start time (see `SymbolizedSample::start_time`).
    pub start_time: u64,
    pub process: Arc<ProcessIdentity>,
    pub read: ClockRead,
    /// Innermost first, with the callers the frame chain skipped.
    pub user: Arc<[UserLocation]>,
    /// The kernel could not capture the user stack.
    pub user_lost: bool,
    /// The event's user stack was sampled out: `user` holds the innermost
    /// frames only.
    pub sampled_out: bool,
    /// One event's stack unwound with DWARF (RawStack::Unwound).
    pub unwound: bool,
    /// How many of `user`'s innermost frames every event of the key shares
    /// (see `exact_depth`).
    pub exact_depth: usize,
    /// Kernel return addresses as captured, innermost first.
    pub kernel: Arc<[u64]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_frames_are_suffixed() {
        let frame = Frame {
            function: "do_syscall_64".into(),
            module: None,
            kernel: true,
        };
        assert_eq!(frame.folded_name(), "do_syscall_64_[k]");
        assert_eq!(Frame::unknown(None, false).folded_name(), "[unknown]");
    }
}

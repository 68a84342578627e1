//! Where the programs find a task's process identity and liveness.

use anyhow::Result;

use super::btf;

/// Where the programs find a task's process start time (which tells two
/// processes with one PID apart) and whether its process is gone (for
/// pruning the PID filter), from the kernel's BTF; 0 where not found: events
/// then carry start time 0 and the filter drops a process when its group
/// leader exits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessOffsets {
    pub task_group_leader: u32,
    pub task_start_time: u32,
    pub task_signal: u32,
    pub signal_live: u32,
    /// task_struct.thread.fsbase: a cgo program's TLS (unwind::go_layout).
    pub task_fsbase: u32,
}

impl ProcessOffsets {
    pub fn find(btf: Option<&btf::KernelBtf>) -> ProcessOffsets {
        let Some(btf) = btf else {
            return ProcessOffsets::default();
        };
        let both = |first: Result<u32>, second: Result<u32>| match (first, second) {
            (Ok(first), Ok(second)) => (first, second),
            _ => (0, 0),
        };
        let (task_group_leader, task_start_time) = both(
            btf.member_offset("task_struct", &["group_leader"]),
            btf.member_offset("task_struct", &["start_time"]),
        );
        let (task_signal, signal_live) = both(
            btf.member_offset("task_struct", &["signal"]),
            btf.member_offset("signal_struct", &["live"]),
        );
        ProcessOffsets {
            task_group_leader,
            task_start_time,
            task_signal,
            signal_live,
            task_fsbase: btf
                .member_offset("task_struct", &["thread", "fsbase"])
                .unwrap_or(0),
        }
    }
}

//! Merges symbolized samples into a profile: counts per stack, totals per
//! process and source, and what the recording was (sources, hooks, losses).

pub mod stack_scaling;
#[cfg(test)]
pub mod test_profile;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::attachment::Attachment;
use crate::collect::LostCounts;
use crate::host::interposer::Interposer;
use crate::session::Unavailable;
use crate::sources::{ClockRead, Source, SyscallCause};
use crate::symbolize::{Frame, StackState, SymbolizedSample};

/// How the recording was made; every output names it.
#[derive(Clone, Debug, Default)]
pub struct RecordingInfo {
    pub sources: Vec<Source>,
    pub attachments: Vec<Attachment>,
    pub duration: Duration,
    pub lost: LostCounts,
    /// Mapping records the kernel dropped (user frames may be `[unknown]`).
    pub lost_mapping_records: u64,
    /// Sampling frequency of the vdso source (Hz per CPU), when sampled.
    pub sample_frequency: Option<u64>,
    /// Default sources this kernel could not serve, and why.
    pub unavailable: Vec<(Source, Unavailable)>,
    /// The kernel functions watched, by slot: they name the kernel
    /// source's events.
    pub kernel_functions: Vec<String>,
    /// `--stack-every N`: one event in N per CPU took its user stack (1:
    /// every event; 0 in hand-made infos means the same).
    pub stack_every: u32,
    /// Processes (PID, start time) whose user stacks were unwound with
    /// DWARF (`--unwind`); the others' with frame pointers.
    pub dwarf_processes: std::collections::BTreeSet<(u32, u64)>,
    /// The clocksource while recording and what is known of it (record
    /// gathers it; a profile read back from a file has none).
    pub clock: Option<crate::host::clocksource::ClockFacts>,
}

impl RecordingInfo {
    /// The unwinder that served a process's user stacks.
    pub fn unwinder(&self, pid: u32, start_time: u64) -> &'static str {
        if self.dwarf_processes.contains(&(pid, start_time)) {
            "dwarf"
        } else {
            "frame_pointers"
        }
    }

    /// CPU time that `samples` of a sampled source stand for, in ms: each
    /// sample covers one sampling period of CPU time.
    pub fn sampled_cpu_ms(&self, samples: u64) -> Option<f64> {
        self.sample_frequency
            .map(|hz| samples as f64 * 1000.0 / hz as f64)
    }

    /// Backends in use, e.g. `tracepoint`, de-duplicated.
    pub fn backends(&self) -> Vec<String> {
        let mut backends: Vec<String> = self
            .attachments
            .iter()
            .map(|a| a.backend.to_string())
            .collect();
        backends.sort();
        backends.dedup();
        backends
    }
}

impl SymbolizedSample {
    /// `ROOT;FRAME;...;LEAF` as DESIGN.md's folded format has it.
    pub fn folded_stack(&self, kernel_functions: &[String]) -> String {
        let mut parts = Vec::with_capacity(self.frames.len() + 2);
        parts.push(self.comm.clone());
        parts.extend(self.frames.iter().map(Frame::folded_name));
        parts.push(self.read.leaf(kernel_functions));
        // One line per stack, `;` between frames: names escape both.
        parts
            .iter()
            .map(|p| crate::host::printable::folded(p))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// One process: two processes that had the same PID one after the other
/// are two, told apart by their start times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessTotal {
    pub pid: u32,
    /// CLOCK_MONOTONIC ns at which it started (0: unknown).
    pub start_time: u64,
    pub comm: String,
    pub cgroup: Option<String>,
    pub total: u64,
    pub by_source: BTreeMap<Source, u64>,
    /// Its clock system calls by why each was one.
    pub syscalls_by_cause: BTreeMap<SyscallCause, u64>,
    /// The libraries that take its clock calls over.
    pub interposers: Arc<[Interposer]>,
}

#[derive(Clone, Debug)]
pub struct Profile {
    pub info: RecordingInfo,
    /// One per process, clock read and frames (samples merged), most reads
    /// first.
    pub stacks: Vec<SymbolizedSample>,
    /// Most reads first.
    pub processes: Vec<ProcessTotal>,
    pub total: u64,
}

impl Profile {
    pub fn new(samples: Vec<SymbolizedSample>, info: RecordingInfo) -> Profile {
        let samples = crate::aggregate::stack_scaling::scale_sampled_stacks(samples);
        // Different stack ids can symbolize to the same frames (e.g. two call
        // sites in one function); they are one stack to the user. Processes
        // gone before the end share pid 0, told apart by name. Two processes
        // that had one PID in turn are two, told apart by their start times.
        type ProcessKey = (u32, u64, String);
        type StackKey = (ProcessKey, ClockRead, Vec<Frame>, StackState);
        let mut stacks: HashMap<StackKey, SymbolizedSample> = HashMap::new();
        let mut processes: HashMap<ProcessKey, ProcessTotal> = HashMap::new();
        for sample in samples {
            let process_key = (sample.pid, sample.start_time, sample.comm.clone());
            let process = processes
                .entry(process_key.clone())
                .or_insert_with(|| ProcessTotal {
                    pid: sample.pid,
                    start_time: sample.start_time,
                    comm: sample.comm.clone(),
                    cgroup: sample.cgroup.clone(),
                    total: 0,
                    by_source: BTreeMap::new(),
                    syscalls_by_cause: BTreeMap::new(),
                    interposers: sample.interposers.clone(),
                });
            if let Some(cause) = sample.read.cause {
                add_count(
                    process.syscalls_by_cause.entry(cause).or_default(),
                    sample.count,
                );
            }
            add_count(&mut process.total, sample.count);
            add_count(
                process.by_source.entry(sample.read.source()).or_default(),
                sample.count,
            );
            let stack = stacks
                .entry((
                    process_key,
                    sample.read,
                    sample.frames.clone(),
                    sample.state,
                ))
                .or_insert_with(|| SymbolizedSample {
                    count: 0,
                    ..sample.clone()
                });
            add_count(&mut stack.count, sample.count);
        }
        let mut stacks: Vec<SymbolizedSample> = stacks.into_values().collect();
        stacks.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| {
                    a.folded_stack(&info.kernel_functions)
                        .cmp(&b.folded_stack(&info.kernel_functions))
                })
                .then(a.pid.cmp(&b.pid))
                .then(a.start_time.cmp(&b.start_time))
        });
        let mut processes: Vec<ProcessTotal> = processes.into_values().collect();
        processes.sort_by(|a, b| {
            b.total
                .cmp(&a.total)
                .then(a.pid.cmp(&b.pid))
                .then(a.start_time.cmp(&b.start_time))
                .then_with(|| a.comm.cmp(&b.comm))
        });
        let total = sum_counts(processes.iter().map(|p| p.total));
        Profile {
            info,
            stacks,
            processes,
            total,
        }
    }

    /// Folded lines (`STACK COUNT`), one per distinct stack text, sorted by
    /// stack: processes with the same name merge, as in every flamegraph tool.
    pub fn folded_lines(&self) -> Vec<String> {
        merged_folded_lines(
            self.stacks
                .iter()
                .map(|s| (s.folded_stack(&self.info.kernel_functions), s.count)),
        )
    }
}

/// Adds `count` to `total`, stopping at u64::MAX. Counts come from the
/// kernel's maps over a run of months, or from files a user wrote: a sum that
/// wraps in a release build would report a tiny number for the largest one.
pub fn add_count(total: &mut u64, count: u64) {
    *total = total.saturating_add(count);
}

/// The sum of `counts`, stopping at u64::MAX (see add_count).
pub fn sum_counts(counts: impl IntoIterator<Item = u64>) -> u64 {
    counts.into_iter().fold(0, u64::saturating_add)
}

/// Folded lines (`STACK COUNT`) from stack texts and counts: identical texts
/// merged, sorted by stack, as every flamegraph tool expects.
pub fn merged_folded_lines(stacks: impl Iterator<Item = (String, u64)>) -> Vec<String> {
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    for (stack, count) in stacks {
        add_count(merged.entry(stack).or_default(), count);
    }
    merged
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::test_profile::symbolized as sample;
    use super::*;
    use profiler_common::CLOCK_ID_NONE;

    #[test]
    fn merges_equal_stacks_and_totals_processes() {
        let samples = vec![
            sample(
                10,
                "fixture",
                &["main", "hot"],
                profiler_common::sources::syscall::CLOCK_GETTIME,
                1,
                30,
            ),
            sample(
                10,
                "fixture",
                &["main", "hot"],
                profiler_common::sources::syscall::CLOCK_GETTIME,
                1,
                20,
            ),
            sample(
                10,
                "fixture",
                &["main", "warm"],
                profiler_common::sources::syscall::CLOCK_GETTIME,
                0,
                25,
            ),
            sample(
                11,
                "other",
                &["main"],
                profiler_common::sources::syscall::TIME,
                CLOCK_ID_NONE,
                5,
            ),
        ];
        let profile = Profile::new(samples, RecordingInfo::default());
        assert_eq!(profile.total, 80);
        assert_eq!(profile.stacks.len(), 3);
        assert_eq!(profile.stacks[0].count, 50);
        assert_eq!(profile.stacks[0].frames.last().unwrap().function, "hot");
        assert_eq!(profile.processes[0].pid, 10);
        assert_eq!(profile.processes[0].total, 75);
        assert_eq!(
            profile.processes[0].by_source[&Source::of(&profiler_common::sources::syscall::SPEC)],
            75
        );
        assert_eq!(
            profile.folded_lines(),
            vec![
                "fixture;main;hot;[syscall clock_gettime MONOTONIC] 50",
                "fixture;main;warm;[syscall clock_gettime REALTIME] 25",
                "other;main;[syscall time] 5",
            ]
        );
    }

    /// Processes gone before the end share pid 0: each name stays its own
    /// process, and equal frames of two names stay two stacks.
    /// A release build wrapped these sums: u64::MAX + 2 reads were 1.
    #[test]
    fn count_sums_saturate() {
        let event = profiler_common::sources::syscall::TIME;
        let samples = vec![
            sample(10, "fx", &["main"], event, CLOCK_ID_NONE, u64::MAX),
            sample(10, "fx", &["main"], event, CLOCK_ID_NONE, 2),
            sample(11, "fy", &["main"], event, CLOCK_ID_NONE, 2),
        ];
        let profile = Profile::new(samples, RecordingInfo::default());
        assert_eq!(profile.stacks[0].count, u64::MAX);
        assert_eq!(profile.processes[0].total, u64::MAX);
        assert_eq!(profile.total, u64::MAX);
        assert_eq!(
            merged_folded_lines([("a".to_string(), u64::MAX), ("a".to_string(), 1)].into_iter()),
            [format!("a {}", u64::MAX)]
        );
    }

    #[test]
    fn gone_processes_stay_apart_by_name() {
        let samples = vec![
            sample(
                0,
                "sh",
                &["[unknown]"],
                profiler_common::sources::syscall::TIME,
                CLOCK_ID_NONE,
                2,
            ),
            sample(
                0,
                "fx",
                &["[unknown]"],
                profiler_common::sources::syscall::TIME,
                CLOCK_ID_NONE,
                5,
            ),
        ];
        let profile = Profile::new(samples, RecordingInfo::default());
        let processes: Vec<(&str, u64)> = profile
            .processes
            .iter()
            .map(|p| (p.comm.as_str(), p.total))
            .collect();
        assert_eq!(processes, vec![("fx", 5), ("sh", 2)]);
        assert_eq!(profile.stacks.len(), 2);
    }

    #[test]
    fn a_newline_in_a_name_cannot_forge_a_folded_line() {
        let samples = vec![sample(
            1,
            "a\nb x 99",
            &["evil\r\nfn 7", "k:do_syscall_64"],
            profiler_common::sources::syscall::TIME,
            CLOCK_ID_NONE,
            2,
        )];
        let profile = Profile::new(samples, RecordingInfo::default());
        assert_eq!(
            profile.folded_lines(),
            vec!["a\\nb x 99;evil\\r\\nfn 7;k:do_syscall_64_[k];[syscall time] 2"]
        );
    }

    #[test]
    fn same_name_processes_merge_in_folded_output_and_separators_are_escaped() {
        let samples = vec![
            sample(
                1,
                "worker",
                &["a;b", "k:do_syscall_64"],
                profiler_common::sources::syscall::TIME,
                CLOCK_ID_NONE,
                2,
            ),
            sample(
                2,
                "worker",
                &["a;b", "k:do_syscall_64"],
                profiler_common::sources::syscall::TIME,
                CLOCK_ID_NONE,
                3,
            ),
        ];
        let profile = Profile::new(samples, RecordingInfo::default());
        assert_eq!(profile.processes.len(), 2);
        assert_eq!(
            profile.folded_lines(),
            vec!["worker;a:b;k:do_syscall_64_[k];[syscall time] 5"]
        );
    }

    /// Two processes that had one PID in turn stay two, each with its own
    /// name and stacks, even where their frames are the same.
    #[test]
    fn a_reused_pid_is_two_processes() {
        let life = |start_time, comm: &str, count| SymbolizedSample {
            start_time,
            ..sample(
                42,
                comm,
                &["main", "tick"],
                profiler_common::sources::syscall::CLOCK_GETTIME,
                1,
                count,
            )
        };
        let profile = Profile::new(
            vec![life(100, "first", 3), life(200, "second", 5)],
            RecordingInfo::default(),
        );
        let processes: Vec<(u32, u64, &str, u64)> = profile
            .processes
            .iter()
            .map(|p| (p.pid, p.start_time, p.comm.as_str(), p.total))
            .collect();
        assert_eq!(processes, [(42, 200, "second", 5), (42, 100, "first", 3)]);
        let stacks: Vec<(u64, &str, u64)> = profile
            .stacks
            .iter()
            .map(|s| (s.start_time, s.comm.as_str(), s.count))
            .collect();
        assert_eq!(stacks, [(200, "second", 5), (100, "first", 3)]);
    }
}

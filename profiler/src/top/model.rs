//! The model behind `clockprof top`: per-interval rates from the kernel's
//! cumulative counts, per key, per process and for the host, with a minute of
//! history for sparklines.
//!
//! Pure: it sees counts and durations, never the kernel or /proc, so it is
//! tested with plain numbers. Stacks are not part of it; `stacks` has the few
//! keys someone looks at symbolized, through `Stages`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use profiler_common::CountKey;

use crate::collect::{clock_read, LostCounts, RawSample, RawStack};
use crate::sources::Source;
use crate::symbolize::SymbolizedSample;

/// The pipeline's stages as the live view uses them, the same as `record`'s:
/// collect reads stacks from the kernel's maps, symbolize names their frames
/// and the processes. The live view itself reads neither the kernel nor /proc.
pub trait Stages {
    /// The stack behind a stack id, as collect reads it.
    fn raw_stack(&mut self, id: i32) -> anyhow::Result<RawStack>;
    /// `samples` symbolized, as `record` symbolizes them.
    fn symbolize(&mut self, samples: &[RawSample]) -> Vec<SymbolizedSample>;
    /// The process's name as last known, also after it exited.
    fn comm(&self, pid: u32) -> Option<&str>;
    /// The process's cgroup path, where it is not the root cgroup.
    fn cgroup(&self, pid: u32) -> Option<&str>;
}

/// How far back sparklines look.
pub const HISTORY_SPAN: Duration = Duration::from_secs(60);

/// One count-map key over the last interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyCount {
    pub key: CountKey,
    /// Reads in the last interval.
    pub delta: u64,
    /// Reads since the view started.
    pub total: u64,
}

/// What a process is called on screen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Label {
    pub comm: String,
    /// Container or cgroup, where the process is in one.
    pub group: Option<String>,
}

/// Reads of one process, or of the whole host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    pub delta: u64,
    pub total: u64,
    /// Reads in the last interval, by source.
    pub by_source: BTreeMap<Source, u64>,
    /// Reads per interval over the last minute, oldest first, the last interval
    /// included.
    pub history: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessReads {
    pub pid: u32,
    pub label: Label,
    pub reads: Reads,
}

/// Everything one refresh shows; immutable, so a frozen view keeps one.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// How long the last interval really lasted (timers drift).
    pub interval: Duration,
    /// Since the probes were attached.
    pub elapsed: Duration,
    /// Every key counted so far, by process id.
    pub keys: Vec<KeyCount>,
    /// Processes that read the clock within the last minute, in no order.
    pub processes: Vec<ProcessReads>,
    pub host: Reads,
    pub lost: LostCounts,
}

impl Snapshot {
    /// Per second, over the last interval.
    pub fn rate(&self, delta: u64) -> f64 {
        delta as f64 / self.interval.as_secs_f64().max(1e-9)
    }

    /// The keys of one process.
    pub fn keys_of(&self, pid: u32) -> &[KeyCount] {
        let start = self.keys.partition_point(|k| k.key.tgid < pid);
        let end = self.keys.partition_point(|k| k.key.tgid <= pid);
        &self.keys[start..end]
    }

    pub fn process(&self, pid: u32) -> Option<&ProcessReads> {
        self.processes.iter().find(|p| p.pid == pid)
    }

    /// The process's part of the host's reads in the last interval, 0 to 1.
    pub fn share(&self, delta: u64) -> f64 {
        if self.host.delta == 0 {
            0.0
        } else {
            delta as f64 / self.host.delta as f64
        }
    }
}

/// Turns successive cumulative snapshots of the count map into rates.
pub struct RateModel {
    history_len: usize,
    previous: HashMap<CountKey, u64>,
    /// Only processes with reads within the history span.
    histories: HashMap<u32, VecDeque<u64>>,
    host_history: VecDeque<u64>,
}

impl RateModel {
    /// A model refreshed every `interval`.
    pub fn new(interval: Duration) -> RateModel {
        let points = HISTORY_SPAN.as_secs_f64() / interval.as_secs_f64().max(1e-3);
        RateModel {
            history_len: (points.ceil() as usize).clamp(2, 3600),
            previous: HashMap::new(),
            histories: HashMap::new(),
            host_history: VecDeque::new(),
        }
    }

    /// Takes the cumulative `counts` read after an interval of `interval`
    /// (the first since the probes were attached), `elapsed` after the start.
    /// `label` names the processes on screen.
    pub fn update(
        &mut self,
        counts: Vec<(CountKey, u64)>,
        lost: LostCounts,
        interval: Duration,
        elapsed: Duration,
        mut label: impl FnMut(u32) -> Label,
    ) -> Arc<Snapshot> {
        let mut keys: Vec<KeyCount> = counts
            .into_iter()
            .map(|(key, total)| {
                // Smaller than before means the entry was removed and counted
                // anew; what it holds now is all new.
                let before = self.previous.get(&key).copied().unwrap_or(0);
                let delta = if total >= before {
                    total - before
                } else {
                    total
                };
                KeyCount { key, delta, total }
            })
            .collect();
        keys.sort_unstable_by_key(|k| k.key);
        self.previous = keys.iter().map(|k| (k.key, k.total)).collect();

        let mut host = Reads::default();
        let mut per_process: HashMap<u32, Reads> = HashMap::new();
        for count in &keys {
            let source = clock_read(&count.key).source();
            let process = per_process.entry(count.key.tgid).or_default();
            for reads in [&mut host, process] {
                reads.delta += count.delta;
                reads.total += count.total;
                if count.delta > 0 {
                    *reads.by_source.entry(source).or_default() += count.delta;
                }
            }
        }

        push_bounded(&mut self.host_history, host.delta, self.history_len);
        host.history = self.host_history.iter().copied().collect();
        for (&pid, reads) in &per_process {
            if reads.delta > 0 {
                self.histories.entry(pid).or_default();
            }
        }
        let history_len = self.history_len;
        self.histories.retain(|pid, history| {
            let delta = per_process.get(pid).map_or(0, |r| r.delta);
            push_bounded(history, delta, history_len);
            history.iter().any(|&d| d > 0)
        });
        let processes = self
            .histories
            .iter()
            .map(|(&pid, history)| ProcessReads {
                pid,
                label: label(pid),
                reads: Reads {
                    history: history.iter().copied().collect(),
                    ..per_process.remove(&pid).unwrap_or_default()
                },
            })
            .collect();
        Arc::new(Snapshot {
            interval,
            elapsed,
            keys,
            processes,
            host,
            lost,
        })
    }
}

fn push_bounded(history: &mut VecDeque<u64>, value: u64, len: usize) {
    history.push_back(value);
    while history.len() > len {
        history.pop_front();
    }
}

/// A key with these fields and the kernel stack 7; zero elsewhere.
#[cfg(test)]
pub fn test_key(tgid: u32, user_stack_id: i32, clock_id: i32, event: u32) -> CountKey {
    // SAFETY: CountKey is plain integers (aya::Pod), for which zero is valid.
    let zero: CountKey = unsafe { std::mem::zeroed() };
    CountKey {
        tgid,
        user_stack_id,
        kernel_stack_id: 7,
        clock_id,
        event,
        ..zero
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use profiler_common::event;

    fn key(tgid: u32, user_stack_id: i32) -> CountKey {
        test_key(tgid, user_stack_id, 1, event::SYSCALL_CLOCK_GETTIME)
    }

    fn label(pid: u32) -> Label {
        Label {
            comm: format!("p{pid}"),
            group: None,
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    fn update(model: &mut RateModel, counts: &[(CountKey, u64)]) -> Arc<Snapshot> {
        model.update(
            counts.to_vec(),
            LostCounts::default(),
            SECOND,
            SECOND,
            label,
        )
    }

    #[test]
    fn deltas_per_key_process_and_host() {
        let mut model = RateModel::new(SECOND);
        let first = update(&mut model, &[(key(10, 1), 100), (key(20, 1), 5)]);
        // The first interval runs from the attachment: all of it is new.
        assert_eq!(first.host.delta, 105);
        let second = update(
            &mut model,
            &[(key(10, 1), 1100), (key(10, 2), 50), (key(20, 1), 5)],
        );
        assert_eq!(second.host.delta, 1050);
        assert_eq!(second.host.total, 1155);
        assert_eq!(second.host.by_source[&Source::Syscall], 1050);
        let p10 = second.process(10).unwrap();
        assert_eq!((p10.reads.delta, p10.reads.total), (1050, 1150));
        assert_eq!(p10.label.comm, "p10");
        assert_eq!(
            second
                .keys_of(10)
                .iter()
                .map(|k| (k.delta, k.total))
                .collect::<Vec<_>>(),
            vec![(1000, 1100), (50, 50)]
        );
        // Idle this interval, but read within the minute: still listed.
        let p20 = second.process(20).unwrap();
        assert_eq!((p20.reads.delta, p20.reads.total), (0, 5));
        assert!(p20.reads.by_source.is_empty());
        assert_eq!(p20.reads.history, vec![5, 0]);
        assert!((second.share(p10.reads.delta) - 1.0).abs() < 1e-9);
        assert!((second.rate(1050) - 1050.0).abs() < 1e-9);
    }

    #[test]
    fn rates_use_the_measured_interval() {
        let mut model = RateModel::new(SECOND);
        let snapshot = model.update(
            vec![(key(1, 1), 300)],
            LostCounts::default(),
            Duration::from_millis(1500),
            SECOND,
            label,
        );
        assert!((snapshot.rate(snapshot.host.delta) - 200.0).abs() < 1e-9);
    }

    #[test]
    fn a_recreated_entry_counts_from_zero() {
        let mut model = RateModel::new(SECOND);
        update(&mut model, &[(key(1, 1), 500)]);
        let snapshot = update(&mut model, &[(key(1, 1), 20)]);
        assert_eq!(snapshot.host.delta, 20);
    }

    #[test]
    fn history_covers_a_minute_and_idle_processes_leave() {
        let mut model = RateModel::new(Duration::from_secs(20));
        let mut total = 0;
        for delta in [1, 2, 3, 4] {
            total += delta;
            update(&mut model, &[(key(1, 1), total)]);
        }
        let snapshot = update(&mut model, &[(key(1, 1), total)]);
        // 60 s at 20 s per point: three points, the newest last.
        assert_eq!(snapshot.process(1).unwrap().reads.history, vec![3, 4, 0]);
        assert_eq!(snapshot.host.history, vec![3, 4, 0]);
        update(&mut model, &[(key(1, 1), total)]);
        let snapshot = update(&mut model, &[(key(1, 1), total)]);
        assert!(snapshot.process(1).is_none());
        assert_eq!(snapshot.keys_of(1)[0].total, 10);
    }

    #[test]
    fn keys_of_finds_each_process_slice() {
        let mut model = RateModel::new(SECOND);
        let snapshot = update(
            &mut model,
            &[
                (key(3, 1), 1),
                (key(1, 1), 1),
                (key(3, 2), 1),
                (key(2, 1), 1),
            ],
        );
        assert_eq!(snapshot.keys_of(3).len(), 2);
        assert_eq!(snapshot.keys_of(2).len(), 1);
        assert!(snapshot.keys_of(4).is_empty());
    }
}

//! The model behind `clockprof top`: per-interval rates from what each
//! refresh drained from the kernel, per key, per process and for the host,
//! with a minute of history for sparklines, and the totals since the view
//! started.
//!
//! Pure: it sees counts and durations, never the kernel or /proc, so it is
//! tested with plain numbers. Its keys are drained samples, stacks
//! normalized; `stacks` names the few someone looks at, through `Stages`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::aggregate::{add_count, sum_counts};
use crate::collect::LostCounts;
use crate::sources::Source;
use crate::symbolize::{NormalizedSample, ProcessIdentity, SymbolizedSample};

/// The pipeline's last stage as the live view uses it, the same as
/// `record`'s: symbolize names the frames of drained samples. The live view
/// itself reads neither the kernel nor /proc.
pub trait Stages {
    /// `samples` named, as `record` names them.
    fn name(&mut self, samples: &[NormalizedSample]) -> Vec<SymbolizedSample>;
}

/// How far back sparklines look.
pub const HISTORY_SPAN: Duration = Duration::from_secs(60);

/// Processes idle in the last interval stay listed for the history span,
/// but at most this many, the most recently active first: under a churn of
/// short processes the list, and memory, stay bounded.
pub const MAX_IDLE_LISTED: usize = 1000;

/// One drained sample (process, clock read, stacks) over the last interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyCount {
    pub key: NormalizedSample,
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
    /// The file name of a library that takes its clock calls over
    /// (host/interposer.rs), where one does.
    pub interposer: Option<String>,
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
    /// Every key of the listed processes counted so far, by process id.
    pub keys: Vec<KeyCount>,
    /// What processes no longer listed counted, merged per name and stack
    /// (pid 0): counted in exports of everything.
    pub retired: Arc<Vec<KeyCount>>,
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
        let start = self.keys.partition_point(|k| k.key.pid < pid);
        let end = self.keys.partition_point(|k| k.key.pid <= pid);
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

/// Turns what each refresh drained into rates and totals.
pub struct RateModel {
    history_len: usize,
    /// Reads per key since the view started, for the listed processes.
    totals: HashMap<NormalizedSample, u64>,
    /// Keys of processes that left the list, merged per name and stack, so
    /// memory follows the processes of the last minute, not every process
    /// that ever ran.
    retired: HashMap<NormalizedSample, u64>,
    retired_shown: Arc<Vec<KeyCount>>,
    lost: LostCounts,
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
            totals: HashMap::new(),
            retired: HashMap::new(),
            retired_shown: Arc::default(),
            lost: LostCounts::default(),
            histories: HashMap::new(),
            host_history: VecDeque::new(),
        }
    }

    /// Takes what was drained after an interval of `interval` (the first
    /// since the probes were attached), `elapsed` after the start, and what
    /// the kernel lost meanwhile. `label` names the processes on screen.
    pub fn update(
        &mut self,
        drained: Vec<(NormalizedSample, u64)>,
        lost: LostCounts,
        interval: Duration,
        elapsed: Duration,
        mut label: impl FnMut(u32, &ProcessIdentity) -> Label,
    ) -> Arc<Snapshot> {
        self.lost.add(&lost);
        let mut deltas: HashMap<NormalizedSample, u64> = HashMap::with_capacity(drained.len());
        for (key, count) in drained {
            add_count(self.totals.entry(key.clone()).or_default(), count);
            add_count(deltas.entry(key).or_default(), count);
        }

        let mut host = Reads::default();
        let mut per_process: HashMap<u32, Reads> = HashMap::new();
        // Unwound stacks only weigh their key's count (StackState::Unwound).
        for (key, &total) in self.totals.iter().filter(|(key, _)| !key.unwound) {
            let delta = deltas.get(key).copied().unwrap_or(0);
            let source = key.read.source();
            let process = per_process.entry(key.pid).or_default();
            for reads in [&mut host, process] {
                add_count(&mut reads.delta, delta);
                add_count(&mut reads.total, total);
                if delta > 0 {
                    add_count(reads.by_source.entry(source).or_default(), delta);
                }
            }
        }
        let retired = sum_counts(
            self.retired
                .iter()
                .filter(|(key, _)| !key.unwound)
                .map(|(_, &total)| total),
        );
        add_count(&mut host.total, retired);

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
        self.cap_idle();
        self.retire_unlisted();

        let mut keys: Vec<KeyCount> = self
            .totals
            .iter()
            .map(|(key, &total)| KeyCount {
                key: key.clone(),
                delta: deltas.get(key).copied().unwrap_or(0),
                total,
            })
            .collect();
        keys.sort_unstable_by_key(|k| (k.key.pid, k.key.start_time));
        // A row is a PID, named after the process that has it now (or had
        // it last); exports name each process by its own.
        let mut identities: HashMap<u32, Arc<ProcessIdentity>> = HashMap::new();
        for count in &keys {
            identities.insert(count.key.pid, Arc::clone(&count.key.process));
        }
        let processes = self
            .histories
            .iter()
            .map(|(&pid, history)| ProcessReads {
                pid,
                label: label(
                    pid,
                    identities
                        .get(&pid)
                        .map_or(&ProcessIdentity::default(), |p| p),
                ),
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
            retired: Arc::clone(&self.retired_shown),
            processes,
            host,
            lost: self.lost,
        })
    }

    /// Unlists the idle processes beyond MAX_IDLE_LISTED, longest idle first.
    fn cap_idle(&mut self) {
        let idle_for =
            |history: &VecDeque<u64>| history.iter().rev().take_while(|&&d| d == 0).count();
        let mut idle: Vec<(usize, u32)> = self
            .histories
            .iter()
            .map(|(&pid, history)| (idle_for(history), pid))
            .filter(|&(idle, _)| idle > 0)
            .collect();
        if idle.len() <= MAX_IDLE_LISTED {
            return;
        }
        idle.sort_unstable_by(|a, b| b.cmp(a));
        for &(_, pid) in &idle[..idle.len() - MAX_IDLE_LISTED] {
            self.histories.remove(&pid);
        }
    }

    /// Moves the totals of processes no longer listed into `retired`.
    fn retire_unlisted(&mut self) {
        let leaving: Vec<NormalizedSample> = self
            .totals
            .keys()
            .filter(|key| !self.histories.contains_key(&key.pid))
            .cloned()
            .collect();
        if leaving.is_empty() {
            return;
        }
        for key in leaving {
            let total = self.totals.remove(&key).unwrap_or(0);
            add_count(
                self.retired.entry(key.of_gone_process()).or_default(),
                total,
            );
        }
        self.retired_shown = Arc::new(
            self.retired
                .iter()
                .map(|(key, &total)| KeyCount {
                    key: key.clone(),
                    delta: 0,
                    total,
                })
                .collect(),
        );
    }
}

fn push_bounded(history: &mut VecDeque<u64>, value: u64, len: usize) {
    history.push_back(value);
    while history.len() > len {
        history.pop_front();
    }
}

/// A drained sample of process `pid` (named `p{pid}`) with a user stack of
/// one location, `user`, and the kernel stack [7].
#[cfg(test)]
pub fn test_key(pid: u32, user: u64, clock_id: i32, event: u32) -> NormalizedSample {
    use crate::symbolize::UserLocation;
    NormalizedSample {
        pid,
        start_time: 0,
        process: Arc::new(ProcessIdentity {
            comm: Some(format!("p{pid}")),
            cgroup: None,
            interposers: Default::default(),
        }),
        read: crate::sources::ClockRead::new(event, clock_id),
        user: Arc::from(vec![UserLocation::File {
            path: Arc::from("/bin/app"),
            file: None,
            offset: user,
        }]),
        user_lost: false,
        sampled_out: false,
        unwound: false,
        exact_depth: 1,
        kernel: Arc::from(vec![7u64]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pid: u32, user: u64) -> NormalizedSample {
        test_key(
            pid,
            user,
            1,
            profiler_common::sources::syscall::CLOCK_GETTIME,
        )
    }

    fn label(pid: u32, identity: &ProcessIdentity) -> Label {
        Label {
            comm: identity.comm.clone().unwrap_or(format!("[pid {pid}]")),
            group: None,
            interposer: None,
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    /// One refresh that drained `counts`.
    fn update(model: &mut RateModel, counts: &[(NormalizedSample, u64)]) -> Arc<Snapshot> {
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
        let second = update(&mut model, &[(key(10, 1), 1000), (key(10, 2), 50)]);
        assert_eq!(second.host.delta, 1050);
        assert_eq!(second.host.total, 1155);
        assert_eq!(
            second.host.by_source[&Source::of(&profiler_common::sources::syscall::SPEC)],
            1050
        );
        let p10 = second.process(10).unwrap();
        assert_eq!((p10.reads.delta, p10.reads.total), (1050, 1150));
        assert_eq!(p10.label.comm, "p10");
        let mut of_10: Vec<(u64, u64)> = second
            .keys_of(10)
            .iter()
            .map(|k| (k.delta, k.total))
            .collect();
        of_10.sort();
        assert_eq!(of_10, vec![(50, 50), (1000, 1100)]);
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
    fn lost_counts_add_up_over_refreshes() {
        let mut model = RateModel::new(SECOND);
        let lost = |user_stacks| LostCounts {
            user_stacks,
            ..LostCounts::default()
        };
        model.update(vec![], lost(3), SECOND, SECOND, label);
        let snapshot = model.update(vec![], lost(4), SECOND, SECOND, label);
        assert_eq!(snapshot.lost.user_stacks, 7);
    }

    #[test]
    fn history_covers_a_minute_and_idle_processes_retire() {
        let mut model = RateModel::new(Duration::from_secs(20));
        for delta in [1, 2, 3, 4] {
            update(&mut model, &[(key(1, 1), delta)]);
        }
        let snapshot = update(&mut model, &[]);
        // 60 s at 20 s per point: three points, the newest last.
        assert_eq!(snapshot.process(1).unwrap().reads.history, vec![3, 4, 0]);
        assert_eq!(snapshot.host.history, vec![3, 4, 0]);
        assert_eq!(snapshot.keys_of(1)[0].total, 10);
        assert!(snapshot.retired.is_empty());
        update(&mut model, &[]);
        let snapshot = update(&mut model, &[]);
        assert!(snapshot.process(1).is_none());
        // Its reads stay in the totals, under its name, without its pid.
        assert!(snapshot.keys_of(1).is_empty());
        assert_eq!(snapshot.retired.len(), 1);
        assert_eq!(snapshot.retired[0].total, 10);
        assert_eq!(snapshot.retired[0].key.pid, 0);
        assert_eq!(snapshot.retired[0].key.process.comm.as_deref(), Some("p1"));
        assert_eq!(snapshot.host.total, 10);
    }

    /// Many short processes of one program, each idle after its run: what
    /// the model keeps is one retired key per stack, whatever their number.
    #[test]
    fn a_churn_of_processes_retires_into_one_key_per_stack() {
        let mut model = RateModel::new(Duration::from_secs(30));
        let program = Arc::new(ProcessIdentity {
            comm: Some("short".into()),
            cgroup: None,
            interposers: Default::default(),
        });
        for pid in 100..400 {
            let key = NormalizedSample {
                process: Arc::clone(&program),
                ..key(pid, 1)
            };
            update(&mut model, &[(key, 10)]);
        }
        for _ in 0..3 {
            update(&mut model, &[]);
        }
        let snapshot = update(&mut model, &[]);
        assert!(snapshot.keys.is_empty());
        assert_eq!(model.totals.len(), 0);
        assert_eq!(snapshot.retired.len(), 1);
        assert_eq!(snapshot.retired[0].total, 3000);
        assert_eq!(snapshot.host.total, 3000);
    }

    #[test]
    fn idle_processes_listed_are_capped_longest_idle_first() {
        // A history long enough that none leaves it on its own.
        let mut model = RateModel::new(Duration::from_millis(20));
        let extra = 5;
        for pid in 0..(MAX_IDLE_LISTED + extra) as u32 {
            update(&mut model, &[(key(pid + 100, 1), 1)]);
        }
        let snapshot = update(&mut model, &[(key(7, 1), 1)]);
        assert_eq!(snapshot.processes.len(), MAX_IDLE_LISTED + 1);
        for gone in 100..100 + extra as u32 {
            assert!(snapshot.process(gone).is_none(), "{gone}");
        }
        assert!(snapshot.process(100 + extra as u32).is_some());
        assert!(snapshot.process(7).is_some());
        assert_eq!(snapshot.host.total, (MAX_IDLE_LISTED + extra + 1) as u64);
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

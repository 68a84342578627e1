//! Normalizing drained samples while their processes' mappings are known:
//! user addresses become (file, offset), the callers the frame chain skipped
//! are put back, and every path, stack and process identity is interned.

use std::collections::HashSet;
use std::sync::Arc;

use profiler_common::INTERRUPT_TGID;

use super::cause::syscall_cause;
use super::frames::{NormalizedSample, ProcessIdentity, UserLocation};
use super::interrupt;
use super::lookup::lookup_address;
use super::perf_map::PerfMaps;
use super::vdso::VDSO;
use crate::collect::{RawSample, RawStack};
use crate::proc_tracker::ProcTracker;
use crate::sources::ClockRead;

impl NormalizedSample {
    /// The sample as kept once its process is gone: under its name, not
    /// its pid and start time (0), so every run of a program adds to one
    /// entry per stack.
    /// A process never named is named by its pid now; interrupt-context
    /// reads and the idle tasks keep their pseudo-processes.
    pub fn of_gone_process(mut self) -> NormalizedSample {
        if self.pid == INTERRUPT_TGID || self.pid == 0 {
            return self;
        }
        if self.process.comm.is_none() {
            self.process = Arc::new(ProcessIdentity {
                comm: Some(process_name(self.pid, None)),
                cgroup: self.process.cgroup.clone(),
                interposers: self.process.interposers.clone(),
            });
        }
        self.pid = 0;
        self.start_time = 0;
        self
    }
}

/// One shared copy of each value: what a long run accumulates is its
/// distinct stacks, not one copy per process that ran them.
pub(super) struct Interned<T: ?Sized + Eq + std::hash::Hash>(HashSet<Arc<T>>);

impl<T: ?Sized + Eq + std::hash::Hash> Default for Interned<T> {
    fn default() -> Self {
        Interned(HashSet::new())
    }
}

impl<T: ?Sized + Eq + std::hash::Hash> Interned<T> {
    pub(super) fn get(&mut self, value: &T, make: impl FnOnce(&T) -> Arc<T>) -> Arc<T> {
        if let Some(known) = self.0.get(value) {
            return Arc::clone(known);
        }
        let value = make(value);
        self.0.insert(Arc::clone(&value));
        value
    }

    /// Drops the values only this set still holds.
    fn release_unshared(&mut self) {
        self.0.retain(|value| Arc::strong_count(value) > 1);
    }
}

/// Normalizes drained samples while their processes' mappings are known,
/// sharing one copy of every path, stack and process identity.
#[derive(Default)]
pub struct Normalizer {
    paths: Interned<str>,
    user_stacks: Interned<[UserLocation]>,
    kernel_stacks: Interned<[u64]>,
    processes: Interned<ProcessIdentity>,
    perf_maps: PerfMaps,
}

impl Normalizer {
    /// Lets go of the paths, stacks and identities no sample holds any
    /// more: a long run that names each drain at once keeps only what its
    /// windows hold.
    pub fn release_unreferenced(&mut self) {
        self.paths.release_unshared();
        self.user_stacks.release_unshared();
        self.kernel_stacks.release_unshared();
        self.processes.release_unshared();
    }

    /// `samples` normalized, with their counts. Call before the tracker
    /// forgets the processes that ran them.
    pub fn normalize(
        &mut self,
        samples: &[RawSample],
        tracker: &mut ProcTracker,
    ) -> Vec<(NormalizedSample, u64)> {
        // Looked at once per drain, for the addresses no mapping covers.
        self.perf_maps.begin_drain();
        samples
            .iter()
            .map(|sample| {
                let user: Vec<UserLocation> = user_ips(sample)
                    .iter()
                    .enumerate()
                    .map(|(depth, &ip)| {
                        self.locate(
                            tracker,
                            (sample.tgid, sample.start_time),
                            lookup_address(ip, depth),
                        )
                    })
                    .collect();
                let identity = ProcessIdentity {
                    comm: tracker
                        .comm(sample.tgid, sample.start_time)
                        .map(str::to_string),
                    cgroup: tracker
                        .cgroup(sample.tgid, sample.start_time)
                        .map(str::to_string),
                    interposers: tracker.interposers(sample.tgid, sample.start_time),
                };
                let read = ClockRead {
                    cause: syscall_cause(sample.read, user.first(), tracker),
                    ..sample.read
                };
                let normalized = NormalizedSample {
                    pid: sample.tgid,
                    start_time: sample.start_time,
                    process: self.processes.get(&identity, |p| Arc::new(p.clone())),
                    read,
                    user: self.user_stacks.get(&user, |v| Arc::from(v)),
                    user_lost: matches!(sample.user_stack, RawStack::Lost(_)),
                    sampled_out: matches!(sample.user_stack, RawStack::SampledOut(_)),
                    unwound: matches!(sample.user_stack, RawStack::Unwound(_)),
                    exact_depth: exact_depth(sample),
                    kernel: self
                        .kernel_stacks
                        .get(ips(&sample.kernel_stack), |v| Arc::from(v)),
                };
                (normalized, sample.count)
            })
            .collect()
    }

    pub(super) fn locate(
        &mut self,
        tracker: &mut ProcTracker,
        (pid, start_time): (u32, u64),
        address: u64,
    ) -> UserLocation {
        match tracker.lookup(pid, start_time, address) {
            // The vDSO is symbolized from this kernel's image (VdsoImage).
            Some(mapping) if mapping.path.starts_with('[') && mapping.path != VDSO => {
                UserLocation::Special(self.paths.get(&mapping.path, |v| Arc::from(v)))
            }
            Some(mapping) => {
                let offset = mapping.file_offset_of(address);
                let file = mapping.file;
                UserLocation::File {
                    path: self.paths.get(&mapping.path, |v| Arc::from(v)),
                    file,
                    offset,
                }
            }
            None => match self
                .perf_maps
                .name(pid, tracker.owner(pid, start_time), address)
            {
                Some(name) => UserLocation::Jit(self.paths.get(name, |v| Arc::from(v))),
                None => UserLocation::Unknown,
            },
        }
    }
}

pub(super) fn ips(stack: &RawStack) -> &[u64] {
    match stack {
        RawStack::Ips(ips) | RawStack::SampledOut(ips) | RawStack::Unwound(ips) => ips,
        RawStack::NotCaptured | RawStack::Lost(_) => &[],
    }
}

/// The user stack, innermost first, with the callers the frame chain skipped
/// put back where the kernel side found them: at depth 1 the caller of a
/// function caught without its frame (uprobe at entry, vDSO prologue or
/// epilogue), at depth 2 the caller of a frameless wrapper (glibc around the
/// vDSO).
pub(super) fn user_ips(sample: &RawSample) -> Vec<u64> {
    with_callers(ips(&sample.user_stack), sample)
}

/// How many of the innermost frames of user_ips are known for every event
/// of the sample's key: those that come from the user ip and the first
/// return address (what a sampled-out event keeps), with the callers put
/// back between them.
/// An unwound stack shares its user ip with its key (the only frame the
/// kernel side keeps for a process unwound with DWARF).
pub(super) fn exact_depth(sample: &RawSample) -> usize {
    let ips = ips(&sample.user_stack);
    if matches!(sample.user_stack, RawStack::Unwound(_)) {
        return ips.len().min(1);
    }
    with_callers(&ips[..ips.len().min(2)], sample).len()
}

pub(super) fn with_callers(ips: &[u64], sample: &RawSample) -> Vec<u64> {
    let mut ips = ips.to_vec();
    for (depth, caller) in [(1, sample.caller_ip), (2, sample.wrapper_caller_ip)] {
        if caller != 0 && depth <= ips.len() && ips.get(depth) != Some(&caller) {
            ips.insert(depth, caller);
        }
    }
    ips
}

/// The root frame of a process's stacks: its command, `swapper` for the
/// idle tasks (PID 0, as perf names them), `[interrupt]` for reads in
/// interrupt context, `[pid N]` when unknown.
pub fn process_name(pid: u32, comm: Option<&str>) -> String {
    match (pid, comm) {
        (INTERRUPT_TGID, _) => interrupt::ROOT.to_string(),
        (_, Some(comm)) => comm.to_string(),
        (0, None) => "swapper".to_string(),
        (_, None) => format!("[pid {pid}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::ClockRead;

    /// Two processes running the same code at different addresses
    /// normalize to one shared stack; a process gone keeps its name.
    #[test]
    fn stacks_normalize_to_one_shared_copy_and_gone_processes_keep_their_name() {
        let mut tracker = ProcTracker::start().unwrap();
        let pid = std::process::id();
        tracker.snapshot_pid(pid);
        let here = stacks_normalize_to_one_shared_copy_and_gone_processes_keep_their_name
            as *const () as u64;
        let raw = |tgid, count| RawSample {
            tgid,
            start_time: 0,
            read: ClockRead::new(
                profiler_common::sources::syscall::TIME,
                profiler_common::CLOCK_ID_NONE,
            ),
            user_stack: RawStack::Ips(vec![here, here + 1]),
            kernel_stack: RawStack::NotCaptured,
            caller_ip: 0,
            wrapper_caller_ip: 0,
            count,
        };
        let mut normalizer = Normalizer::default();
        let first = normalizer.normalize(&[raw(pid, 3)], &mut tracker);
        let second = normalizer.normalize(&[raw(pid, 4)], &mut tracker);
        let (a, b) = (&first[0].0, &second[0].0);
        assert_eq!((first[0].1, second[0].1), (3, 4));
        assert!(Arc::ptr_eq(&a.user, &b.user));
        assert!(Arc::ptr_eq(&a.process, &b.process));
        assert!(
            matches!(&a.user[0], UserLocation::File { .. }),
            "{:?}",
            a.user
        );
        let gone = a.clone().of_gone_process();
        assert_eq!((gone.pid, gone.start_time), (0, 0));
        assert_eq!(gone.process.comm, a.process.comm);
        assert_eq!(gone.user, a.user);
        let unnamed = NormalizedSample {
            process: Arc::new(ProcessIdentity::default()),
            ..a.clone()
        };
        assert_eq!(
            unnamed.of_gone_process().process.comm.as_deref(),
            Some(format!("[pid {pid}]").as_str())
        );
    }

    #[test]
    fn skipped_caller_is_put_back_once() {
        let sample = |stack: Vec<u64>, caller_ip, wrapper_caller_ip| RawSample {
            tgid: 1,
            start_time: 0,
            read: ClockRead::new(0, 0),
            user_stack: RawStack::Ips(stack),
            kernel_stack: RawStack::NotCaptured,
            caller_ip,
            wrapper_caller_ip,
            count: 1,
        };
        assert_eq!(user_ips(&sample(vec![10, 30], 20, 0)), vec![10, 20, 30]);
        assert_eq!(user_ips(&sample(vec![10, 20, 30], 20, 0)), vec![10, 20, 30]);
        assert_eq!(user_ips(&sample(vec![10, 30], 0, 0)), vec![10, 30]);
        assert_eq!(user_ips(&sample(vec![], 20, 0)), Vec::<u64>::new());
        // vdso, glibc wrapper, [skipped caller], main.
        assert_eq!(user_ips(&sample(vec![1, 2, 4], 0, 3)), vec![1, 2, 3, 4]);
        // vdso prologue: glibc and its caller both skipped.
        assert_eq!(user_ips(&sample(vec![1, 4], 2, 3)), vec![1, 2, 3, 4]);
        assert_eq!(user_ips(&sample(vec![1, 2, 3, 4], 2, 3)), vec![1, 2, 3, 4]);
    }
}

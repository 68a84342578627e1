//! The lives of one PID: every process that had it during the recording,
//! oldest first, so that a sample is named and symbolized by the process
//! that made it, also after its PID went to another.
//!
//! Samples carry their process's start time S (the group leader's
//! `task_struct.start_time`, CLOCK_MONOTONIC ns). The side-band stamps its
//! records with CLOCK_MONOTONIC too, and each life is kept with a time it
//! had begun by (`began`):
//!
//! - a life seen forking: its FORK record's time. copy_process sets the
//!   child's start_time (ktime_get_ns) before perf_event_fork emits the
//!   record (stamped with ktime_get_mono_fast_ns, the same clock, read
//!   microseconds later, after the cgroup and scheduler setup), so S <= began;
//! - a life known from /proc: a time read after /proc showed it alive, so
//!   again S <= began.
//!
//! A PID is given again only after its process was reaped, so the next life
//! of a PID starts (S') after the previous one's record or snapshot:
//! `began < S'`. Lives are therefore ordered S1 <= began1 < S2 <= began2 < ...,
//! and the life of a sample with start time S is the first whose `began`
//! is at or after S. Exec keeps a life (start_time survives exec; a thread
//! that execs takes its leader's), so it only replaces the life's mappings.

use super::process::Process;

/// One process that had the PID.
#[derive(Debug, Clone, Default)]
pub(super) struct Life {
    /// A CLOCK_MONOTONIC time at or after its start and before the next
    /// life's start (see the module's comment).
    pub(super) began: u64,
    pub(super) process: Process,
}

/// Every life of one PID, oldest first.
#[derive(Debug, Clone, Default)]
pub(super) struct Lives(Vec<Life>);

impl Lives {
    pub(super) fn latest(&self) -> Option<&Life> {
        self.0.last()
    }

    pub(super) fn latest_mut(&mut self) -> Option<&mut Life> {
        self.0.last_mut()
    }

    /// The latest life's process, made if the PID had none: records of a
    /// process whose start was not seen (it ran before the side-band
    /// opened, or its fork record was lost) began by `time`.
    pub(super) fn current(&mut self, time: u64) -> &mut Process {
        if self.0.is_empty() {
            self.begin(time, Process::default());
        }
        &mut self.0.last_mut().expect("one life at least").process
    }

    /// Adds a new life, which began by `began`. The earlier ones have
    /// exited (a PID is given again only after its process was reaped),
    /// also where their exit record was lost: they retire as exited ones do.
    pub(super) fn begin(&mut self, began: u64, process: Process) -> &mut Process {
        for life in &mut self.0 {
            life.process.exited = true;
        }
        self.0.push(Life { began, process });
        &mut self.0.last_mut().expect("just pushed").process
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every life remembered, oldest first.
    pub(super) fn all(&self) -> impl Iterator<Item = &Life> {
        self.0.iter()
    }

    /// Drops the lives marked retiring by the previous `mark_retiring`;
    /// returns when each had begun by.
    pub(super) fn forget_retiring(&mut self) -> Vec<u64> {
        let mut forgotten = Vec::new();
        self.0.retain(|life| {
            if life.process.retiring {
                forgotten.push(life.began);
            }
            !life.process.retiring
        });
        forgotten
    }

    /// Marks the lives that have exited, to be forgotten at the next
    /// `forget_retiring`.
    pub(super) fn mark_retiring(&mut self) {
        for life in &mut self.0 {
            life.process.retiring = life.process.exited;
        }
    }

    /// The index of the life that started at `start_time`; 0 (unknown)
    /// stands for the latest. `None`: a life after every one known.
    pub(super) fn index_of(&self, start_time: u64) -> Option<usize> {
        if start_time == 0 {
            return self.0.len().checked_sub(1);
        }
        let index = self.0.partition_point(|life| life.began < start_time);
        (index < self.0.len()).then_some(index)
    }

    pub(super) fn of(&self, start_time: u64) -> Option<&Process> {
        Some(&self.0[self.index_of(start_time)?].process)
    }

    /// Whether the life that started at `start_time` is the latest and not
    /// known to have exited: only then can /proc still show it.
    pub(super) fn may_still_run(&self, start_time: u64) -> bool {
        match self.index_of(start_time) {
            Some(index) => index + 1 == self.0.len() && !self.0[index].process.exited,
            // Newer than every life known: its start was missed.
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(comm: &str) -> Process {
        Process {
            comm: comm.to_string(),
            ..Process::default()
        }
    }

    #[test]
    fn samples_find_the_life_they_started_in() {
        let mut lives = Lives::default();
        // Known from /proc at 100 (started before), then reused: forked at
        // 250 (started at 240), then at 400 (started at 390).
        lives.begin(100, named("old"));
        lives.begin(250, named("second"));
        lives.begin(400, named("third"));
        let comm = |start| lives.of(start).map(|p| p.comm.as_str());
        assert_eq!(comm(5), Some("old"));
        assert_eq!(comm(100), Some("old"));
        assert_eq!(comm(240), Some("second"));
        assert_eq!(comm(250), Some("second"));
        assert_eq!(comm(390), Some("third"));
        assert_eq!(comm(400), Some("third"));
        // Unknown start time: the latest; later than all: none known.
        assert_eq!(comm(0), Some("third"));
        assert_eq!(comm(401), None);
        assert!(lives.may_still_run(390));
        assert!(!lives.may_still_run(240));
        assert!(lives.may_still_run(401));
        // A new life means the earlier ones have ended.
        assert!(lives.of(240).is_some_and(|p| p.exited));
        lives.latest_mut().unwrap().process.exited = true;
        assert!(!lives.may_still_run(390));
        assert_eq!(Lives::default().of(0).map(|p| p.comm.as_str()), None);
    }
}

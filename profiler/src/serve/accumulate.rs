//! The stacks of a stretch of time (one profile window, one push interval),
//! merged as they arrive so memory follows distinct stacks, not reads, and
//! capped at MAX_WINDOW_STACKS.

use std::collections::HashMap;
use std::time::Duration;

use super::limits::MAX_WINDOW_STACKS;
use super::Batch;
use crate::aggregate::{add_count, Profile, RecordingInfo};
use crate::collect::LostCounts;
use crate::sources::ClockRead;
use crate::symbolize::{Frame, StackState, SymbolizedSample};

/// Two processes that had one PID in turn are two (pid, start time).
type StackKey = (u32, u64, ClockRead, Vec<Frame>, StackState);

#[derive(Default)]
pub struct Accumulated {
    stacks: HashMap<StackKey, SymbolizedSample>,
    lost: LostCounts,
}

impl Accumulated {
    /// Adds a batch; returns the reads on new stacks past the cap (dropped).
    pub fn add(&mut self, batch: &Batch) -> u64 {
        let mut dropped = 0;
        for sample in &batch.samples {
            let key = (
                sample.pid,
                sample.start_time,
                sample.read,
                sample.frames.clone(),
                sample.state,
            );
            let full = self.stacks.len() >= MAX_WINDOW_STACKS;
            match self.stacks.get_mut(&key) {
                Some(stack) => add_count(&mut stack.count, sample.count),
                None if full => add_count(&mut dropped, sample.count),
                None => {
                    self.stacks.insert(key, sample.clone());
                }
            }
        }
        self.lost.add(&batch.lost);
        dropped
    }

    /// The profile of what was added, as `record` would write it for a
    /// recording of `duration`; empties this.
    pub fn take_profile(&mut self, info: &RecordingInfo, duration: Duration) -> Profile {
        let samples: Vec<SymbolizedSample> =
            std::mem::take(&mut self.stacks).into_values().collect();
        let info = RecordingInfo {
            duration,
            lost: std::mem::take(&mut self.lost),
            ..info.clone()
        };
        Profile::new(samples, info)
    }
}

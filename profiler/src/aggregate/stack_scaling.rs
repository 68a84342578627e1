//! `--stack-every N`: every event is counted exactly under the frames that
//! name its calling function (the clock-reading code, the callers the kernel
//! side recovers and the first return address), but only one event in N
//! takes its whole user stack. Here the exact count of each group of events
//! with the same innermost frames is spread over the whole stacks sampled in
//! that group, in proportion to how often each was sampled, with
//! largest-remainder rounding: summed per calling function, the folded counts
//! are the exact counts. Pure: it sees symbolized samples, however they were
//! collected or drained.

use std::collections::BTreeMap;

use crate::sources::ClockRead;
use crate::symbolize::{Frame, StackState, SymbolizedSample};

/// Stands for the frames above the exact ones of a group no event of which
/// took its whole stack.
pub const UNSAMPLED: &str = "[unsampled]";

/// A group: one process, one clock read, the same exact innermost user
/// frames (outermost first).
/// (pid, start time, name): one process, as the profile counts them, also
/// where a PID was reused and among processes gone (PID 0, by name).
type GroupKey = ((u32, u64, String), ClockRead, Vec<Frame>);

#[derive(Default)]
struct Group {
    /// Events that took their stack, by distinct sample.
    sampled: Vec<SymbolizedSample>,
    /// Stacks unwound with DWARF: weights only, their events are counted
    /// in `sampled_out_count` (see StackState::Unwound).
    unwound: Vec<SymbolizedSample>,
    /// Events that did not: their frames are the exact ones only.
    sampled_out: Option<SymbolizedSample>,
    sampled_out_count: u64,
}

/// The exact user frames of a sample: its `exact_frames` innermost user
/// frames.
fn exact_frames(sample: &SymbolizedSample) -> Vec<Frame> {
    let user_end = sample
        .frames
        .iter()
        .position(|f| f.kernel)
        .unwrap_or(sample.frames.len());
    let start = user_end.saturating_sub(sample.exact_frames);
    sample.frames[start..user_end].to_vec()
}

/// Spreads each group's exact count over its sampled stacks, which become
/// `Estimated`; a group without any is one `Unsampled` stack, its exact
/// frames under `[unsampled]`. Groups in which every event took its stack
/// (N = 1, or sources that always take it) come out unchanged, as do lost
/// stacks (no frames to group by). Stacks unwound with DWARF are spread the
/// same way; where every event of a group was unwound (N = 1, no stack
/// lost) each gets exactly its own count and stays `Complete`.
pub fn scale_sampled_stacks(samples: Vec<SymbolizedSample>) -> Vec<SymbolizedSample> {
    if samples
        .iter()
        .all(|s| !matches!(s.state, StackState::Unsampled | StackState::Unwound))
    {
        return samples;
    }
    let mut out = Vec::with_capacity(samples.len());
    let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
    for sample in samples {
        let group = match sample.state {
            StackState::Complete
            | StackState::Estimated
            | StackState::Unsampled
            | StackState::Unwound => groups
                .entry((
                    (sample.pid, sample.start_time, sample.comm.clone()),
                    sample.read,
                    exact_frames(&sample),
                ))
                .or_default(),
            StackState::UserStackLost => {
                out.push(sample);
                continue;
            }
        };
        match sample.state {
            StackState::Unsampled => {
                super::add_count(&mut group.sampled_out_count, sample.count);
                group.sampled_out.get_or_insert(sample);
            }
            StackState::Unwound => group.unwound.push(sample),
            _ => group.sampled.push(sample),
        }
    }
    for (_, group) in groups {
        if group.sampled_out_count == 0 {
            // Unwound stacks whose events were not drained (a recording cut
            // short) weigh nothing.
            out.extend(group.sampled);
            continue;
        }
        if group.sampled.is_empty() && group.unwound.is_empty() {
            let mut sample = group.sampled_out.expect("a sampled-out count has a sample");
            sample.frames.insert(
                0,
                Frame {
                    function: UNSAMPLED.to_string(),
                    module: None,
                    kernel: false,
                },
            );
            sample.count = group.sampled_out_count;
            out.push(sample);
            continue;
        }
        let unwound_weight = super::sum_counts(group.unwound.iter().map(|s| s.count));
        let every_event_unwound =
            group.sampled.is_empty() && unwound_weight == group.sampled_out_count;
        let total = super::sum_counts(group.sampled.iter().map(|s| s.count))
            .saturating_add(group.sampled_out_count);
        let mut sampled = group.sampled;
        sampled.extend(group.unwound);
        // Ties in rounding go to the first stack in a fixed order.
        sampled.sort_by(|a, b| a.frames.cmp(&b.frames).then(a.comm.cmp(&b.comm)));
        let weights: Vec<u64> = sampled.iter().map(|s| s.count).collect();
        for (mut sample, count) in sampled.into_iter().zip(largest_remainder(total, &weights)) {
            sample.count = count;
            sample.state = if every_event_unwound {
                StackState::Complete
            } else {
                StackState::Estimated
            };
            out.push(sample);
        }
    }
    out
}

/// `total` split in proportion to `weights`, in whole numbers that sum to
/// `total`: each gets the floor of its quota, and what is left goes one each
/// to the largest fractional remainders, ties to the earlier weight. All
/// zero weights get nothing.
pub fn largest_remainder(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|&w| w as u128).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let quotas: Vec<(u64, u128)> = weights
        .iter()
        .map(|&w| {
            let exact = total as u128 * w as u128;
            ((exact / sum) as u64, exact % sum)
        })
        .collect();
    let given: u64 = quotas.iter().map(|(floor, _)| floor).sum();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    // Stable: equal remainders keep their order.
    order.sort_by(|&a, &b| quotas[b].1.cmp(&quotas[a].1));
    let mut shares: Vec<u64> = quotas.iter().map(|(floor, _)| *floor).collect();
    for &i in order.iter().take((total - given) as usize) {
        shares[i] += 1;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_sum_to_the_total_and_follow_the_weights() {
        assert_eq!(largest_remainder(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(largest_remainder(100, &[3, 1]), vec![75, 25]);
        assert_eq!(largest_remainder(7, &[2, 3, 5]), vec![1, 2, 4]);
        assert_eq!(largest_remainder(0, &[2, 3]), vec![0, 0]);
        assert_eq!(largest_remainder(5, &[0, 0]), vec![0, 0]);
        assert_eq!(largest_remainder(5, &[]), Vec::<u64>::new());
        for total in [1, 9, 1000, 4001, u64::MAX / 2] {
            for weights in [
                &[1u64, 2, 3][..],
                &[7],
                &[5, 5, 5, 5, 1],
                &[u64::MAX / 3, 1],
            ] {
                let shares = largest_remainder(total, weights);
                assert_eq!(shares.iter().sum::<u64>(), total, "{total} {weights:?}");
                let sum: u128 = weights.iter().map(|&w| w as u128).sum();
                for (&share, &w) in shares.iter().zip(weights) {
                    let quota = total as u128 * w as u128;
                    // Within one of the exact quota.
                    assert!((share as u128) * sum <= quota + sum, "{total} {weights:?}");
                    assert!((share as u128 + 1) * sum > quota, "{total} {weights:?}");
                }
            }
        }
    }

    #[test]
    fn ties_go_to_the_earlier_weight_whatever_the_input_order_of_equal_ones() {
        assert_eq!(largest_remainder(2, &[1, 1, 1]), vec![1, 1, 0]);
        assert_eq!(largest_remainder(1, &[1, 1]), vec![1, 0]);
        assert_eq!(largest_remainder(5, &[2, 2, 2, 2]), vec![2, 1, 1, 1]);
    }

    fn frame(name: &str) -> Frame {
        Frame {
            function: name.into(),
            module: None,
            kernel: false,
        }
    }

    fn sample(frames: &[&str], exact: usize, state: StackState, count: u64) -> SymbolizedSample {
        SymbolizedSample {
            pid: 7,
            start_time: 0,
            comm: "fixture".into(),
            cgroup: None,
            interposers: Default::default(),
            read: ClockRead::new(profiler_common::sources::syscall::CLOCK_GETTIME, 1),
            frames: frames.iter().map(|f| frame(f)).collect(),
            state,
            exact_frames: exact,
            count,
        }
    }

    fn lines(samples: &[SymbolizedSample]) -> Vec<(String, u64, StackState)> {
        let mut lines: Vec<_> = samples
            .iter()
            .map(|s| {
                let names: Vec<&str> = s.frames.iter().map(|f| f.function.as_str()).collect();
                (names.join(";"), s.count, s.state)
            })
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn each_group_keeps_its_exact_count_spread_over_its_sampled_stacks() {
        use StackState::*;
        let samples = vec![
            // hot, called from main through x (3 samples) and y (1 sample),
            // 996 more events without a stack.
            sample(&["main", "x", "relay", "hot"], 2, Complete, 3),
            sample(&["main", "y", "relay", "hot"], 2, Complete, 1),
            sample(&["relay", "hot"], 2, Unsampled, 996),
            // cold: never sampled.
            sample(&["main", "cold"], 2, Unsampled, 40),
            // warm: every event took its stack.
            sample(&["main", "warm"], 2, Complete, 5),
            sample(&["[lost stack]"], 0, UserStackLost, 2),
        ];
        let scaled = scale_sampled_stacks(samples);
        assert_eq!(
            lines(&scaled),
            vec![
                ("[lost stack]".into(), 2, UserStackLost),
                ("[unsampled];main;cold".into(), 40, Unsampled),
                ("main;warm".into(), 5, Complete),
                ("main;x;relay;hot".into(), 750, Estimated),
                ("main;y;relay;hot".into(), 250, Estimated),
            ]
        );
    }

    #[test]
    fn unwound_stacks_weigh_their_keys_exact_count_and_add_none() {
        use StackState::*;
        let samples = vec![
            // Every event of `a` unwound: each stack keeps its own count.
            sample(&["main", "x", "a"], 1, Unwound, 3),
            sample(&["main", "y", "a"], 1, Unwound, 1),
            sample(&["a"], 1, Unsampled, 4),
            // `b`: 1 event in 10 unwound (or its stack lost to a full ring).
            sample(&["main", "x", "b"], 1, Unwound, 2),
            sample(&["b"], 1, Unsampled, 20),
            // Unwound stacks of events not counted (yet) weigh nothing.
            sample(&["main", "c"], 1, Unwound, 5),
        ];
        let scaled = scale_sampled_stacks(samples);
        assert_eq!(
            lines(&scaled),
            vec![
                ("main;x;a".into(), 3, Complete),
                ("main;x;b".into(), 20, Estimated),
                ("main;y;a".into(), 1, Complete),
            ]
        );
    }

    #[test]
    fn nothing_changes_when_every_event_took_its_stack() {
        let samples = vec![
            sample(&["main", "a"], 2, StackState::Complete, 3),
            sample(&["main", "b"], 2, StackState::Complete, 4),
        ];
        assert_eq!(scale_sampled_stacks(samples.clone()), samples);
    }

    #[test]
    fn groups_are_told_apart_by_process_and_clock() {
        let mut other_clock = sample(&["relay", "hot"], 2, StackState::Unsampled, 10);
        other_clock.read.clock_id = 0;
        let mut other_pid = sample(&["relay", "hot"], 2, StackState::Unsampled, 20);
        other_pid.pid = 8;
        // Another process that had PID 7, and one of another name.
        let mut other_life = sample(&["relay", "hot"], 2, StackState::Unsampled, 30);
        other_life.start_time = 5;
        let mut other_name = sample(&["relay", "hot"], 2, StackState::Unsampled, 40);
        other_name.comm = "other".into();
        let samples = vec![
            sample(&["main", "relay", "hot"], 2, StackState::Complete, 1),
            sample(&["relay", "hot"], 2, StackState::Unsampled, 3),
            other_clock,
            other_pid,
            other_life,
            other_name,
        ];
        let scaled = scale_sampled_stacks(samples);
        let total: u64 = scaled.iter().map(|s| s.count).sum();
        assert_eq!(total, 104);
        let estimated: Vec<u64> = scaled
            .iter()
            .filter(|s| s.state == StackState::Estimated)
            .map(|s| s.count)
            .collect();
        assert_eq!(estimated, vec![4]);
        assert_eq!(
            scaled
                .iter()
                .filter(|s| s.frames[0].function == UNSAMPLED)
                .count(),
            4
        );
    }
}

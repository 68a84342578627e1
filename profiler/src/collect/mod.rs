//! Drains the kernel's maps into plain samples: counts per key with the raw
//! instruction pointers of their stacks, and the lost-event counters. The
//! one place that reads the kernel's count, stack and lost maps.

pub mod generations;

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use aya::maps::{HashMap as KernelHashMap, MapData, PerCpuArray, PerCpuHashMap, StackTraceMap};
use aya::Ebpf;
use profiler_common::{
    lost, names, CountKey, StackFrames, SPILLED_STACK, STACK_NOT_CAPTURED, STACK_SAMPLED_OUT,
};
use serde::Serialize;

use crate::sources::{ClockRead, Source};

/// A stack as the kernel gave it: innermost frame first.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RawStack {
    /// The source does not capture this stack.
    NotCaptured,
    /// Capture failed in the kernel with this errno (map full, hash collision,
    /// unreadable user stack).
    Lost(i32),
    Ips(Vec<u64>),
    /// `--stack-every N`: the event did not take its stack; these are its
    /// innermost frames (the user ip and the first return address, where
    /// readable), which a taken stack starts with.
    SampledOut(Vec<u64>),
    /// One event's stack unwound with DWARF in user space (unwind.rs): a
    /// weight for spreading its key's exact count, which the key's
    /// `SampledOut` sample carries (stack_scaling), not a count of its own.
    Unwound(Vec<u64>),
}

#[derive(Clone, Debug)]
pub struct RawSample {
    pub tgid: u32,
    /// The process's start time (see CountKey): which life of `tgid`.
    pub start_time: u64,
    pub read: ClockRead,
    pub user_stack: RawStack,
    pub kernel_stack: RawStack,
    /// Return addresses the frame chain skipped, at depth 1 and 2 of the user
    /// stack (see CountKey); 0 when none.
    pub caller_ip: u64,
    pub wrapper_caller_ip: u64,
    pub count: u64,
}

/// What the kernel side could not keep, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LostCounts {
    /// Events not counted at all because the count map was full.
    pub events: u64,
    pub user_stacks: u64,
    pub kernel_stacks: u64,
    /// Children of COMMAND that could not be added to the PID filter.
    pub followed_processes: u64,
    /// User stacks to unwind with DWARF that found the ring full: their
    /// events are counted, their group's stacks estimated. Left out of
    /// JSON when none were.
    #[serde(skip_serializing_if = "is_zero")]
    pub dwarf_stacks: u64,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

impl LostCounts {
    pub fn any(&self) -> bool {
        *self != LostCounts::default()
    }

    /// What was lost since `earlier`, a reading of the same counters.
    pub fn since(&self, earlier: &LostCounts) -> LostCounts {
        LostCounts {
            events: self.events.saturating_sub(earlier.events),
            user_stacks: self.user_stacks.saturating_sub(earlier.user_stacks),
            kernel_stacks: self.kernel_stacks.saturating_sub(earlier.kernel_stacks),
            followed_processes: self
                .followed_processes
                .saturating_sub(earlier.followed_processes),
            dwarf_stacks: self.dwarf_stacks.saturating_sub(earlier.dwarf_stacks),
        }
    }

    pub fn add(&mut self, more: &LostCounts) {
        // Saturating: a serve of months adds these up without end.
        self.events = self.events.saturating_add(more.events);
        self.user_stacks = self.user_stacks.saturating_add(more.user_stacks);
        self.kernel_stacks = self.kernel_stacks.saturating_add(more.kernel_stacks);
        self.followed_processes = self
            .followed_processes
            .saturating_add(more.followed_processes);
        self.dwarf_stacks = self.dwarf_stacks.saturating_add(more.dwarf_stacks);
    }
}

pub struct Collected {
    pub samples: Vec<RawSample>,
    pub lost: LostCounts,
}

fn map<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a aya::maps::Map> {
    ebpf.map(name)
        .ok_or_else(|| anyhow!("the eBPF object has no {name} map"))
}

/// Reads every count of `generation` with its stacks, then clears both of
/// its maps. Call only on the generation the programs do not write to
/// (generations.rs): then every increment is read exactly once.
pub fn drain(ebpf: &mut Ebpf, generation: usize) -> Result<Collected> {
    let counts = read_counts(ebpf, generation)?;
    let stacks = Stacks {
        by_id: StackTraceMap::try_from(map(ebpf, names::STACKS[generation])?)?,
        spilled: KernelHashMap::try_from(map(ebpf, names::SPILLED_STACKS[generation])?)?,
    };
    let mut read: HashMap<i64, RawStack> = HashMap::new();
    let mut resolve =
        |id: i64| -> RawStack { read.entry(id).or_insert_with(|| stacks.read(id)).clone() };
    let samples = counts
        .iter()
        .map(|&(key, count)| {
            let user_stack = resolve(key.user_stack_id);
            let kernel_stack = resolve(key.kernel_stack_id);
            sample(&key, user_stack, kernel_stack, count)
        })
        .collect();
    // Every stack, also those of keys the count map had no room for.
    let mut by_id = StackTraceMap::try_from(map_mut(ebpf, names::STACKS[generation])?)?;
    let ids: Vec<u32> = by_id.stack_ids().filter_map(Result::ok).collect();
    for id in ids {
        remove_entry(by_id.remove(&id))?;
    }
    let mut spilled: StackMap<&mut MapData> =
        KernelHashMap::try_from(map_mut(ebpf, names::SPILLED_STACKS[generation])?)?;
    let ids: Vec<u64> = spilled.keys().filter_map(Result::ok).collect();
    for id in ids {
        remove_entry(spilled.remove(&id))?;
    }
    let mut count_map: PerCpuHashMap<_, CountKey, u64> =
        PerCpuHashMap::try_from(map_mut(ebpf, names::COUNTS[generation])?)?;
    // Keys are read once more: a key counted 0 times in total is still an entry.
    let keys: Vec<CountKey> = count_map.keys().filter_map(Result::ok).collect();
    for key in keys {
        remove_entry(count_map.remove(&key))?;
    }
    Ok(Collected {
        samples,
        lost: lost_counts(ebpf)?,
    })
}

/// An entry gone already is as good as removed.
fn remove_entry(removed: Result<(), aya::maps::MapError>) -> Result<()> {
    match removed {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(err))
            if err.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => Ok(other?),
    }
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name)
        .ok_or_else(|| anyhow!("the eBPF object has no {name} map"))
}

/// The sample of one key, given the stacks its ids stand for.
pub fn sample(
    key: &CountKey,
    user_stack: RawStack,
    kernel_stack: RawStack,
    count: u64,
) -> RawSample {
    let user_stack = if key.user_stack_id == STACK_SAMPLED_OUT {
        RawStack::SampledOut(
            [key.user_ip, key.first_return]
                .into_iter()
                .take_while(|&ip| ip != 0)
                .collect(),
        )
    } else {
        user_stack
    };
    RawSample {
        tgid: key.tgid,
        start_time: key.start_time,
        read: clock_read(key),
        user_stack,
        kernel_stack,
        caller_ip: key.caller_ip,
        wrapper_caller_ip: key.wrapper_caller_ip,
        count,
    }
}

/// The eBPF side's spill maps: frames by a hash of them.
type StackMap<T> = KernelHashMap<T, u64, StackFrames>;

/// One generation's stacks: by the stack-trace map's id, or spilled.
struct Stacks<'a> {
    by_id: StackTraceMap<&'a MapData>,
    spilled: StackMap<&'a MapData>,
}

impl Stacks<'_> {
    fn read(&self, id: i64) -> RawStack {
        if id == STACK_NOT_CAPTURED {
            return RawStack::NotCaptured;
        }
        if id == STACK_SAMPLED_OUT {
            // Its frames are in the key (see `sample`).
            return RawStack::SampledOut(Vec::new());
        }
        if id < 0 {
            return RawStack::Lost(i32::try_from(-id).unwrap_or(libc::EINVAL));
        }
        let frames = if id & SPILLED_STACK != 0 {
            self.spilled
                .get(&(id as u64), 0)
                .map(|frames| frames.iter().copied().take_while(|&ip| ip != 0).collect())
        } else {
            u32::try_from(id)
                .map_err(|_| aya::maps::MapError::KeyNotFound)
                .and_then(|id| self.by_id.get(&id, 0))
                .map(|trace| trace.frames().iter().map(|f| f.ip).collect())
        };
        match frames {
            Ok(ips) => RawStack::Ips(ips),
            Err(_) => RawStack::Lost(libc::ENOENT),
        }
    }
}

fn lost_counts(ebpf: &Ebpf) -> Result<LostCounts> {
    let lost_map: PerCpuArray<_, u64> = PerCpuArray::try_from(map(ebpf, names::LOST)?)?;
    let lost_slot = |slot: u32| -> Result<u64> {
        Ok(lost_map
            .get(&slot, 0)?
            .iter()
            .fold(0, |a, &b| u64::saturating_add(a, b)))
    };
    Ok(LostCounts {
        events: lost_slot(lost::COUNT_MAP_FULL)?,
        user_stacks: lost_slot(lost::USER_STACK)?,
        kernel_stacks: lost_slot(lost::KERNEL_STACK)?,
        followed_processes: lost_slot(lost::TARGET_MAP_FULL)?,
        dwarf_stacks: lost_slot(lost::DWARF_STACK)?,
    })
}

/// The counts of `generation`, summed over CPUs, without their stacks.
fn read_counts(ebpf: &Ebpf, generation: usize) -> Result<Vec<(CountKey, u64)>> {
    let count_map: PerCpuHashMap<_, CountKey, u64> =
        PerCpuHashMap::try_from(map(ebpf, names::COUNTS[generation])?)?;
    let mut counts = Vec::new();
    for entry in count_map.iter() {
        let (key, per_cpu) = entry?;
        // Every key enters here: past this check each ClockRead names a
        // declared event, so ClockRead::source never has to guess one.
        if Source::of_event(key.event).is_none() {
            bail!(
                "the eBPF program counted event id {}, which no source declares: clockprof and its eBPF object disagree (a bug)",
                key.event
            );
        }
        let count = per_cpu.iter().fold(0, |a, &b| u64::saturating_add(a, b));
        if count > 0 {
            counts.push((key, count));
        }
    }
    Ok(counts)
}

/// Which clock read a key counts.
pub fn clock_read(key: &CountKey) -> ClockRead {
    ClockRead::new(key.event, key.clock_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_counts_since_an_earlier_reading() {
        let reading = |events, user_stacks| LostCounts {
            events,
            user_stacks,
            ..LostCounts::default()
        };
        let mut total = LostCounts::default();
        total.add(&reading(5, 1).since(&reading(2, 1)));
        total.add(&reading(5, 4).since(&reading(5, 1)));
        assert_eq!(total, reading(3, 3));
        assert!(!reading(2, 2).since(&reading(2, 2)).any());
    }
}

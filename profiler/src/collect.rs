//! Drains the kernel's maps into plain samples: counts per key with the raw
//! instruction pointers of their stacks, and the lost-event counters.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use aya::maps::{MapData, PerCpuArray, PerCpuHashMap, StackTraceMap};
use aya::Ebpf;
use profiler_common::{lost, names, CountKey, STACK_NOT_CAPTURED, STACK_SAMPLED_OUT};
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
}

#[derive(Clone, Debug)]
pub struct RawSample {
    pub tgid: u32,
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
}

impl LostCounts {
    pub fn any(&self) -> bool {
        *self != LostCounts::default()
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

/// Reads every count with its stacks. Call after the workload stopped (or for a
/// live view, repeatedly: the kernel keeps counting meanwhile).
pub fn collect(ebpf: &Ebpf) -> Result<Collected> {
    let Counts { counts, lost } = collect_counts(ebpf)?;
    let stacks = StackTraceMap::try_from(map(ebpf, names::STACKS)?)?;
    let mut stack_cache: HashMap<i32, RawStack> = HashMap::new();
    let mut resolve = |id: i32| -> RawStack {
        stack_cache
            .entry(id)
            .or_insert_with(|| read_stack(&stacks, id))
            .clone()
    };
    let samples = counts
        .into_iter()
        .map(|(key, count)| {
            let user_stack = resolve(key.user_stack_id);
            let kernel_stack = resolve(key.kernel_stack_id);
            sample(&key, user_stack, kernel_stack, count)
        })
        .collect();
    Ok(Collected { samples, lost })
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
        read: clock_read(key),
        user_stack,
        kernel_stack,
        caller_ip: key.caller_ip,
        wrapper_caller_ip: key.wrapper_caller_ip,
        count,
    }
}

fn read_stack(stacks: &StackTraceMap<&MapData>, id: i32) -> RawStack {
    if id == STACK_NOT_CAPTURED {
        return RawStack::NotCaptured;
    }
    if id == STACK_SAMPLED_OUT {
        // Its frames are in the key (see `sample`).
        return RawStack::SampledOut(Vec::new());
    }
    if id < 0 {
        return RawStack::Lost(-id);
    }
    match stacks.get(&(id as u32), 0) {
        Ok(trace) => RawStack::Ips(trace.frames().iter().map(|f| f.ip).collect()),
        Err(_) => RawStack::Lost(libc::ENOENT),
    }
}

fn lost_counts(ebpf: &Ebpf) -> Result<LostCounts> {
    let lost_map: PerCpuArray<_, u64> = PerCpuArray::try_from(map(ebpf, names::LOST)?)?;
    let lost_slot = |slot: u32| -> Result<u64> { Ok(lost_map.get(&slot, 0)?.iter().sum()) };
    Ok(LostCounts {
        events: lost_slot(lost::COUNT_MAP_FULL)?,
        user_stacks: lost_slot(lost::USER_STACK)?,
        kernel_stacks: lost_slot(lost::KERNEL_STACK)?,
        followed_processes: lost_slot(lost::TARGET_MAP_FULL)?,
    })
}

/// Cumulative counts per key, without their stacks.
pub struct Counts {
    pub counts: Vec<(CountKey, u64)>,
    pub lost: LostCounts,
}

/// Reads the counts only: a live view does this every refresh, and the stack
/// behind an id never changes while the maps live, so it fetches each stack
/// once, with `stack`, and only when it needs one.
pub fn collect_counts(ebpf: &Ebpf) -> Result<Counts> {
    let count_map: PerCpuHashMap<_, CountKey, u64> =
        PerCpuHashMap::try_from(map(ebpf, names::COUNTS)?)?;
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
        let count: u64 = per_cpu.iter().sum();
        if count > 0 {
            counts.push((key, count));
        }
    }
    Ok(Counts {
        counts,
        lost: lost_counts(ebpf)?,
    })
}

/// Which clock read a key counts.
pub fn clock_read(key: &CountKey) -> ClockRead {
    ClockRead {
        event: key.event,
        clock_id: key.clock_id,
    }
}

/// The stack a `CountKey` stack id stands for.
pub fn stack(ebpf: &Ebpf, id: i32) -> Result<RawStack> {
    let stacks = StackTraceMap::try_from(map(ebpf, names::STACKS)?)?;
    Ok(read_stack(&stacks, id))
}

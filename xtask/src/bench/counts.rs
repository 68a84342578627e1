//! What a tracer said it counted, read back from its output, so every row can be
//! checked exact: clockprof's JSON profile and bpftrace's printed map.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

/// One stack of a clockprof JSON profile, with the fields the checks use.
struct Stack {
    pid: Option<u32>,
    comm: String,
    functions: Vec<String>,
    count: u64,
}

pub struct ClockprofCounts {
    stacks: Vec<Stack>,
    pub lost_events: u64,
    pub lost_user_stacks: u64,
    /// Stack copies the DWARF ring had no room for (counts stay exact).
    pub lost_dwarf_stacks: u64,
    /// Side-band records (forks, execs, mappings) the kernel dropped: names
    /// and mappings clockprof may be missing.
    pub lost_mapping_records: u64,
}

impl ClockprofCounts {
    pub fn read(path: &Path) -> Result<ClockprofCounts> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("{} is not clockprof's JSON", path.display()))
    }

    fn parse(text: &str) -> Result<ClockprofCounts> {
        let json: Value = serde_json::from_str(text)?;
        let lost = |what: &str| json["lost"][what].as_u64().unwrap_or(0);
        let stacks = json["stacks"]
            .as_array()
            .context("no stacks array")?
            .iter()
            .map(|s| Stack {
                pid: s["pid"].as_u64().and_then(|p| u32::try_from(p).ok()),
                comm: s["comm"].as_str().unwrap_or_default().to_string(),
                functions: s["frames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["function"].as_str().map(str::to_string))
                    .collect(),
                count: s["count"].as_u64().unwrap_or(0),
            })
            .collect();
        Ok(ClockprofCounts {
            stacks,
            lost_events: lost("events"),
            lost_user_stacks: lost("user_stacks"),
            lost_dwarf_stacks: lost("dwarf_stacks"),
            lost_mapping_records: json["lost_mapping_records"].as_u64().unwrap_or(0),
        })
    }

    fn sum(&self, keep: impl Fn(&Stack) -> bool) -> u64 {
        self.stacks
            .iter()
            .filter(|s| keep(s))
            .map(|s| s.count)
            .sum()
    }

    pub fn of_pid(&self, pid: u32) -> u64 {
        self.sum(|s| s.pid == Some(pid))
    }

    /// Events of `pid` whose stack goes through `function`.
    pub fn of_pid_in(&self, pid: u32, function: &str) -> u64 {
        self.sum(|s| s.pid == Some(pid) && s.functions.iter().any(|f| f == function))
    }

    pub fn of_comm(&self, comm: &str) -> u64 {
        self.sum(|s| s.comm == comm)
    }

    /// Events of processes named for want of a name (`[pid N]`).
    pub fn unnamed(&self) -> u64 {
        self.sum(|s| s.comm.starts_with("[pid "))
    }

    /// Events of processes named `comm` whose stack goes through `function`.
    pub fn of_comm_in(&self, comm: &str, function: &str) -> u64 {
        self.sum(|s| s.comm == comm && s.functions.iter().any(|f| f == function))
    }

    /// How many different PIDs named `comm` the profile holds.
    pub fn pids_of_comm(&self, comm: &str) -> usize {
        let mut pids: Vec<u32> = self
            .stacks
            .iter()
            .filter(|s| s.comm == comm)
            .filter_map(|s| s.pid)
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids.len()
    }
}

/// Sum of the counts of bpftrace map entries `@[PID, <stack lines>]: COUNT` or
/// `@[PID]: COUNT`.
pub fn bpftrace_count_for_pid(stdout: &[String], pid: u32) -> u64 {
    let mut current_pid = None;
    let mut total = 0;
    for line in stdout {
        if let Some(key) = line.strip_prefix("@[") {
            current_pid = key
                .split([',', ']'])
                .next()
                .and_then(|p| p.trim().parse::<u32>().ok());
        }
        if let Some(count) = line.trim_start().strip_prefix("]: ").or_else(|| {
            // A key without a stack closes on the same line: `@[123]: 5`.
            line.strip_prefix("@[")
                .and_then(|l| l.split_once("]: "))
                .map(|(_, c)| c)
        }) {
            if current_pid == Some(pid) {
                total += count.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

/// The kernel keeps 15 bytes of a process name (TASK_COMM_LEN 16).
pub fn comm_of(name: &str) -> String {
    name.chars().take(15).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clockprof_json_sums_by_pid_comm_and_function() {
        let json = r#"{
          "lost": {"events": 0, "user_stacks": 3, "kernel_stacks": 0, "dwarf_stacks": 9},
          "stacks": [
            {"pid": 7, "comm": "churn_a", "frames": [{"function": "main"},
              {"function": "churn_clock_reads"}], "count": 10},
            {"pid": 8, "comm": "churn_a", "frames": [{"function": "[lost stack]"}], "count": 4},
            {"pid": 9, "comm": "churn_b", "frames": [{"function": "churn_clock_reads"}], "count": 7},
            {"pid": null, "comm": "[interrupt]", "frames": [], "count": 2}
          ]}"#;
        let counts = ClockprofCounts::parse(json).unwrap();
        assert_eq!(counts.of_comm("churn_a"), 14);
        assert_eq!(counts.of_comm_in("churn_a", "churn_clock_reads"), 10);
        assert_eq!(counts.of_pid(9), 7);
        assert_eq!(counts.of_pid_in(8, "churn_clock_reads"), 0);
        assert_eq!(counts.pids_of_comm("churn_a"), 2);
        assert_eq!(counts.lost_user_stacks, 3);
        assert_eq!(counts.lost_dwarf_stacks, 9);
        assert_eq!(counts.lost_events, 0);
    }

    #[test]
    fn bpftrace_map_counts_by_pid() {
        let out: Vec<String> = "Attaching 1 probe...\n\n\n@[5799, \n    0x55d1\n    0x7fa9\n]: 5000\n\
                                @[42, \n    0x1\n]: 3\n@[5799, \n    0x55d2\n]: 10000\n@[5799]: 1\n"
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(bpftrace_count_for_pid(&out, 5799), 15001);
        assert_eq!(bpftrace_count_for_pid(&out, 42), 3);
    }

    #[test]
    fn comms_are_cut_like_the_kernel_cuts_them() {
        assert_eq!(comm_of("bench_clock_loop"), "bench_clock_loo");
    }
}

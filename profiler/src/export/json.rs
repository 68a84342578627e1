//! JSON: what was recorded how, per-process totals by source, per-stack counts.

use std::collections::BTreeMap;

use anyhow::Result;
use profiler_common::INTERRUPT_TGID;
use serde::Serialize;

use super::Format;
use crate::aggregate::Profile;
use crate::attachment::{debug_registers_taken, Attachment};
use crate::collect::LostCounts;
use crate::host::interposer::Interposer;
use crate::sources::{Source, SyscallCause};
use crate::symbolize::{Frame, StackState};

#[derive(Serialize)]
struct JsonProfile<'a> {
    /// Which clockprof wrote it, as `clockprof --version` names it.
    clockprof: JsonVersion,
    duration_secs: f64,
    sources: &'a [Source],
    backends: Vec<String>,
    hooks: &'a [Attachment],
    /// Debug registers the kernel source took on every CPU (of 4 on x86),
    /// one per function watched by hardware breakpoint.
    debug_registers_per_cpu: usize,
    total: u64,
    lost: LostCounts,
    lost_mapping_records: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sample_frequency_hz: Option<u64>,
    /// `--stack-every N`: one event in N per CPU took its user stack. Above
    /// each stack's `exact_frames` innermost user frames, stacks whose state
    /// is `estimated` hold a share of their calling function's exact count.
    stack_every: u32,
    /// Default sources this kernel could not serve, with all that is known
    /// of why (the kernel source's refusals, function by function).
    unavailable: BTreeMap<Source, String>,
    processes: Vec<JsonProcess<'a>>,
    stacks: Vec<JsonStack<'a>>,
}

#[derive(Serialize)]
struct JsonVersion {
    version: &'static str,
    commit: &'static str,
    built: &'static str,
}

const CLOCKPROF: JsonVersion = JsonVersion {
    version: crate::version::VERSION,
    commit: crate::version::COMMIT,
    built: crate::version::BUILD_DATE,
};

#[derive(Serialize)]
struct JsonProcess<'a> {
    #[serde(serialize_with = "pid_or_null")]
    pid: u32,
    #[serde(skip_serializing_if = "is_unknown")]
    start_time_ns: u64,
    comm: &'a str,
    /// The cgroup the process ran in, unless the root one.
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup: Option<&'a str>,
    /// The container id (64 hex digits) its cgroup names, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    container_id: Option<&'a str>,
    total: u64,
    by_source: &'a BTreeMap<Source, u64>,
    /// Its clock system calls by why each was one (sources::SyscallCause).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    syscalls_by_cause: &'a BTreeMap<SyscallCause, u64>,
    /// The libraries that take its clock calls over, and how they were
    /// loaded where known.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    interposers: &'a [Interposer],
    /// What walked its user stacks: `frame_pointers` (in the kernel) or
    /// `dwarf` (its stacks copied and unwound with its binaries' unwind
    /// tables, `--unwind`).
    unwinder: &'static str,
    /// Estimated CPU time in vDSO clock reads (vdso samples x period).
    #[serde(skip_serializing_if = "Option::is_none")]
    vdso_cpu_ms: Option<f64>,
}

#[derive(Serialize)]
struct JsonStack<'a> {
    #[serde(serialize_with = "pid_or_null")]
    pid: u32,
    #[serde(skip_serializing_if = "is_unknown")]
    start_time_ns: u64,
    comm: &'a str,
    source: Source,
    call: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    clock: Option<String>,
    leaf: String,
    /// Why a clock system call was one: `vdso-fallback`, `unserved-clock`,
    /// `direct` or `interposer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<SyscallCause>,
    /// `estimated` (frames above `exact_frames` sampled, count a share of
    /// the exact count, see stack_every) or `unsampled` (no event with these
    /// exact frames took its stack) under `--stack-every`.
    state: StackState,
    /// Outermost first.
    frames: &'a [Frame],
    /// How many innermost user frames hold for every event counted here.
    #[serde(skip_serializing_if = "Option::is_none")]
    exact_frames: Option<usize>,
    /// Events for counting sources, samples for sampled ones.
    count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    est_cpu_ms: Option<f64>,
}

/// When the process started (CLOCK_MONOTONIC ns, as its task's
/// start_time): with the PID it names one process, so two processes that had
/// one PID in turn are two entries. Left out where unknown (interrupt
/// context, a kernel without BTF).
fn is_unknown(start_time: &u64) -> bool {
    *start_time == 0
}

/// Reads in interrupt context (comm `[interrupt]`) have no PID: null.
fn pid_or_null<S: serde::Serializer>(pid: &u32, serializer: S) -> Result<S::Ok, S::Error> {
    match *pid {
        INTERRUPT_TGID => serializer.serialize_none(),
        pid => serializer.serialize_u32(pid),
    }
}

pub const FORMAT: Format = Format {
    name: "json",
    extension: "json",
    help: "JSON: what was recorded how, totals per process and source, counts and frames per stack",
    render,
};

fn render(profile: &Profile) -> Result<Vec<u8>> {
    let json = JsonProfile {
        clockprof: CLOCKPROF,
        duration_secs: profile.info.duration.as_secs_f64(),
        sources: &profile.info.sources,
        backends: profile.info.backends(),
        hooks: &profile.info.attachments,
        debug_registers_per_cpu: debug_registers_taken(&profile.info.attachments),
        total: profile.total,
        lost: profile.info.lost,
        lost_mapping_records: profile.info.lost_mapping_records,
        sample_frequency_hz: profile.info.sample_frequency,
        stack_every: profile.info.stack_every.max(1),
        unavailable: profile
            .info
            .unavailable
            .iter()
            .map(|(source, reason)| (*source, reason.detail()))
            .collect(),
        processes: profile
            .processes
            .iter()
            .map(|p| JsonProcess {
                pid: p.pid,
                start_time_ns: p.start_time,
                comm: &p.comm,
                cgroup: p.cgroup.as_deref(),
                container_id: p
                    .cgroup
                    .as_deref()
                    .and_then(crate::host::container::container_id),
                total: p.total,
                by_source: &p.by_source,
                syscalls_by_cause: &p.syscalls_by_cause,
                interposers: &p.interposers,
                unwinder: profile.info.unwinder(p.pid, p.start_time),
                vdso_cpu_ms: crate::sources::sampled_counts(&p.by_source)
                    .reduce(|a, b| a + b)
                    .and_then(|samples| profile.info.sampled_cpu_ms(samples)),
            })
            .collect(),
        stacks: profile
            .stacks
            .iter()
            .map(|s| JsonStack {
                pid: s.pid,
                start_time_ns: s.start_time,
                comm: &s.comm,
                source: s.read.source(),
                call: s.read.call(&profile.info.kernel_functions),
                clock: s.read.clock(),
                leaf: s.read.leaf(&profile.info.kernel_functions),
                cause: s.read.cause,
                state: s.state,
                frames: &s.frames,
                exact_frames: matches!(s.state, StackState::Estimated | StackState::Unsampled)
                    .then_some(s.exact_frames),
                count: s.count,
                est_cpu_ms: s
                    .read
                    .source()
                    .is_sampled()
                    .then(|| profile.info.sampled_cpu_ms(s.count))
                    .flatten(),
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&json)?;
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::test_profile::{self, CONTAINER_ID};

    fn frame(function: &str, module: &str, kernel: bool) -> String {
        format!(
            "        {{\n          \"function\": \"{function}\",\n          \"module\": \"{module}\",\n          \"kernel\": {kernel}\n        }}"
        )
    }

    /// Two processes that had one PID in turn: two entries, told apart by
    /// their start times.
    #[test]
    fn a_reused_pid_is_two_entries_with_their_start_times() {
        let mut profile = test_profile::profile();
        let mut stacks = profile.stacks[..2].to_vec();
        for (stack, start_time) in stacks.iter_mut().zip([100, 200]) {
            stack.pid = 42;
            stack.start_time = start_time;
        }
        profile = Profile::new(stacks, profile.info);
        let json: serde_json::Value =
            serde_json::from_slice(&FORMAT.render(&profile).unwrap()).unwrap();
        let entries = |list: &str| -> Vec<(u64, u64)> {
            let mut entries: Vec<(u64, u64)> = json[list]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["pid"].as_u64().unwrap(),
                        p["start_time_ns"].as_u64().unwrap(),
                    )
                })
                .collect();
            entries.sort();
            entries
        };
        assert_eq!(entries("processes"), [(42, 100), (42, 200)]);
        assert_eq!(entries("stacks"), [(42, 100), (42, 200)]);
    }

    #[test]
    fn renders_the_fixed_profile_exactly() {
        let json = FORMAT.render(&test_profile::profile()).unwrap();
        let server = |f| frame(f, "/usr/bin/server", false);
        let do_syscall = frame("do_syscall_64", "kernel", true);
        // Stacks and processes most reads first; by_source in -s's order of
        // sources; CPU estimates only for the sampled vdso source (1000 Hz:
        // one sample is 1 ms); interrupt-context reads have a null pid.
        let expected = format!(
            r#"{{
  "clockprof": {{
    "version": "{version}",
    "commit": "{commit}",
    "built": "{built}"
  }},
  "duration_secs": 2.5,
  "sources": [
    "syscall",
    "kernel",
    "libc",
    "vdso"
  ],
  "backends": [
    "breakpoint",
    "perf_event",
    "tracepoint",
    "uprobe"
  ],
  "hooks": [
    {{
      "source": "syscall",
      "hook": "syscalls:sys_enter_clock_gettime",
      "backend": "tracepoint"
    }},
    {{
      "source": "kernel",
      "hook": "ktime_get",
      "backend": "breakpoint"
    }},
    {{
      "source": "libc",
      "hook": "/usr/lib/x86_64-linux-gnu/libc.so.6:__clock_gettime",
      "backend": "uprobe"
    }},
    {{
      "source": "vdso",
      "hook": "cpu-clock",
      "backend": "perf_event"
    }}
  ],
  "debug_registers_per_cpu": 1,
  "total": 61,
  "lost": {{
    "events": 1,
    "user_stacks": 2,
    "kernel_stacks": 0,
    "followed_processes": 0
  }},
  "lost_mapping_records": 3,
  "sample_frequency_hz": 1000,
  "stack_every": 1,
  "unavailable": {{
    "go": "no Go binary is running"
  }},
  "processes": [
    {{
      "pid": 100,
      "comm": "server",
      "cgroup": "/system.slice/docker-{CONTAINER_ID}.scope",
      "container_id": "{CONTAINER_ID}",
      "total": 42,
      "by_source": {{
        "syscall": 30,
        "vdso": 12
      }},
      "unwinder": "frame_pointers",
      "vdso_cpu_ms": 12.0
    }},
    {{
      "pid": 200,
      "comm": "cron",
      "total": 12,
      "by_source": {{
        "syscall": 5,
        "libc": 7
      }},
      "unwinder": "frame_pointers"
    }},
    {{
      "pid": null,
      "comm": "[interrupt]",
      "total": 4,
      "by_source": {{
        "kernel": 4
      }},
      "unwinder": "frame_pointers"
    }},
    {{
      "pid": 101,
      "comm": "server",
      "total": 3,
      "by_source": {{
        "vdso": 3
      }},
      "unwinder": "dwarf",
      "vdso_cpu_ms": 3.0
    }}
  ],
  "stacks": [
    {{
      "pid": 100,
      "comm": "server",
      "source": "syscall",
      "call": "clock_gettime",
      "clock": "MONOTONIC",
      "leaf": "[syscall clock_gettime MONOTONIC]",
      "state": "complete",
      "frames": [
{main},
{handle},
{do_syscall}
      ],
      "count": 30
    }},
    {{
      "pid": 100,
      "comm": "server",
      "source": "vdso",
      "call": "sample",
      "leaf": "[vdso sample]",
      "state": "complete",
      "frames": [
{main},
{tick}
      ],
      "count": 12,
      "est_cpu_ms": 12.0
    }},
    {{
      "pid": 200,
      "comm": "cron",
      "source": "libc",
      "call": "clock_gettime",
      "clock": "REALTIME",
      "leaf": "[libc clock_gettime REALTIME]",
      "state": "complete",
      "frames": [
{cron_main},
{poll}
      ],
      "count": 7
    }},
    {{
      "pid": 200,
      "comm": "cron",
      "source": "syscall",
      "call": "time",
      "leaf": "[syscall time]",
      "state": "user_stack_lost",
      "frames": [
        {{
          "function": "[lost stack]",
          "kernel": false
        }},
{do_syscall}
      ],
      "count": 5
    }},
    {{
      "pid": null,
      "comm": "[interrupt]",
      "source": "kernel",
      "call": "ktime_get",
      "leaf": "[kernel ktime_get]",
      "state": "complete",
      "frames": [
{irq_entry},
{hrtimer}
      ],
      "count": 4
    }},
    {{
      "pid": 101,
      "comm": "server",
      "source": "vdso",
      "call": "sample",
      "leaf": "[vdso sample]",
      "state": "complete",
      "frames": [
{main},
{tick}
      ],
      "count": 3,
      "est_cpu_ms": 3.0
    }}
  ]
}}
"#,
            main = server("main"),
            handle = server("handle"),
            tick = server("tick"),
            cron_main = frame("main", "/usr/sbin/cron", false),
            irq_entry = frame("asm_sysvec_apic_timer_interrupt", "kernel", true),
            hrtimer = frame("hrtimer_interrupt", "kernel", true),
            poll = frame("poll", "/usr/lib/x86_64-linux-gnu/libc.so.6", false),
            version = crate::version::VERSION,
            commit = crate::version::COMMIT,
            built = crate::version::BUILD_DATE,
        );
        let json = String::from_utf8(json).unwrap();
        if json != expected {
            for (line, (got, want)) in json.lines().zip(expected.lines()).enumerate() {
                assert_eq!(got, want, "first difference on line {}", line + 1);
            }
        }
        assert_eq!(json, expected);
    }
}

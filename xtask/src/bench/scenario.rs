//! The rows of the bench table. A row is a workload plus, optionally, a tracer
//! attached while it runs; adding a row (another clockprof source, a uprobe or
//! vDSO-sampling comparison) means adding an entry to `scenarios()`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::daemon::{Finished, ReadyWhen, Stream};

/// What `bench_clock_loop` does: its MODE argument.
#[derive(PartialEq, Eq)]
pub struct Workload {
    pub mode: &'static str,
    pub describe: &'static str,
}

pub const SYSCALL_LOOP: Workload = Workload {
    mode: "syscall",
    describe: "raw clock_gettime(CLOCK_MONOTONIC) syscalls",
};

pub const LIBC_LOOP: Workload = Workload {
    mode: "libc",
    describe: "glibc clock_gettime(CLOCK_MONOTONIC) through the vDSO",
};

pub enum Tracer {
    /// `clockprof record -a -s SOURCES -o FILE.folded`.
    Clockprof { sources: &'static str },
    /// `bpftrace -e PROGRAM`; PROGRAM keys a count by `[pid, ...]`.
    Bpftrace { program: &'static str },
}

pub struct Scenario {
    pub name: &'static str,
    pub workload: &'static Workload,
    pub tracer: Option<Tracer>,
    /// The row whose added cost this row's added cost is divided by.
    pub compare_with: Option<&'static str>,
}

pub const BPFTRACE_SYSCALL_ROW: &str = "bpftrace tracepoint";
pub const BPFTRACE_PROFILE_ROW: &str = "bpftrace profile:hz:999";
pub const BPFTRACE_UPROBE_ROW: &str = "bpftrace uprobe __clock_gettime";

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "baseline (no tracer)",
            workload: &SYSCALL_LOOP,
            tracer: None,
            compare_with: None,
        },
        Scenario {
            name: "clockprof -s syscall",
            workload: &SYSCALL_LOOP,
            tracer: Some(Tracer::Clockprof { sources: "syscall" }),
            compare_with: Some(BPFTRACE_SYSCALL_ROW),
        },
        Scenario {
            name: BPFTRACE_SYSCALL_ROW,
            workload: &SYSCALL_LOOP,
            // The same job as clockprof's syscall source: count per process and user
            // stack, aggregated in the kernel.
            tracer: Some(Tracer::Bpftrace {
                program:
                    "tracepoint:syscalls:sys_enter_clock_gettime { @[pid, ustack] = count(); }",
            }),
            compare_with: None,
        },
        Scenario {
            name: "baseline vDSO loop (no tracer)",
            workload: &LIBC_LOOP,
            tracer: None,
            compare_with: None,
        },
        Scenario {
            name: "clockprof -s vdso (sampling)",
            workload: &LIBC_LOOP,
            tracer: Some(Tracer::Clockprof { sources: "vdso" }),
            compare_with: Some(BPFTRACE_PROFILE_ROW),
        },
        Scenario {
            name: BPFTRACE_PROFILE_ROW,
            workload: &LIBC_LOOP,
            // The nearest bpftrace job: sample every CPU at the same rate and
            // count per process and user stack (it cannot keep only vDSO hits).
            tracer: Some(Tracer::Bpftrace {
                program: "profile:hz:999 { @[pid, ustack] = count(); }",
            }),
            compare_with: None,
        },
        Scenario {
            name: "clockprof -s libc (uprobe)",
            workload: &LIBC_LOOP,
            tracer: Some(Tracer::Clockprof { sources: "libc" }),
            compare_with: Some(BPFTRACE_UPROBE_ROW),
        },
        Scenario {
            name: BPFTRACE_UPROBE_ROW,
            workload: &LIBC_LOOP,
            tracer: Some(Tracer::Bpftrace {
                program: "uprobe:/lib/x86_64-linux-gnu/libc.so.6:__clock_gettime { @[pid, ustack] = count(); }",
            }),
            compare_with: None,
        },
    ]
}

/// What a tracer needs to know about where things are.
pub struct Paths<'a> {
    pub clockprof: &'a Path,
    pub run_dir: &'a Path,
    /// Whether the host has tracefs mounted (see host_tracefs).
    pub host_tracefs: bool,
}

const TRACEFS: &str = "/sys/kernel/tracing";

/// bpftrace finds tracepoints through tracefs, which a fresh machine of this
/// kind does not mount (KERNEL.md); without it bpftrace fails with "tracepoint
/// not found". (clockprof mounts one for itself.)
pub fn host_tracefs() -> bool {
    Path::new(TRACEFS).join("events").exists()
        || Path::new("/sys/kernel/debug/tracing/events").exists()
}

/// Runs the command in a mount namespace of its own with tracefs mounted in
/// it: the mount exists for that process only and ends with it, so the bench
/// never leaves a mount on the host, even when it is killed.
fn with_private_tracefs(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure makes only async-signal-safe
    // system calls (unshare, mount) on static C strings, and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let check = |rc: libc::c_int| {
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Private first: a shared root would propagate the mount to the host.
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                c"nodev".as_ptr(),
                c"/sys/kernel/tracing".as_ptr(),
                c"tracefs".as_ptr(),
                0,
                std::ptr::null(),
            ))
        });
    }
}

impl Tracer {
    pub fn is_clockprof(&self) -> bool {
        matches!(self, Tracer::Clockprof { .. })
    }

    /// The command, and the file it writes its profile to, if any.
    pub fn command(&self, paths: &Paths, file_stem: &str) -> (Command, Option<PathBuf>) {
        match self {
            Tracer::Clockprof { sources } => {
                let out = paths.run_dir.join(format!("{file_stem}.folded"));
                let mut cmd = Command::new(paths.clockprof);
                cmd.args(["record", "-a", "-s", sources, "-o"]).arg(&out);
                (cmd, Some(out))
            }
            Tracer::Bpftrace { program } => {
                let mut cmd = Command::new("bpftrace");
                cmd.args(["-e", program]);
                if !paths.host_tracefs {
                    with_private_tracefs(&mut cmd);
                }
                (cmd, None)
            }
        }
    }

    pub fn ready_when(&self) -> ReadyWhen {
        match self {
            // clockprof's promise: this line comes once every probe is attached.
            Tracer::Clockprof { .. } => ReadyWhen {
                stream: Stream::Stderr,
                line_contains: "clockprof: recording",
                settle: Duration::ZERO,
            },
            // bpftrace prints this just before it attaches, hence the extra second.
            Tracer::Bpftrace { .. } => ReadyWhen {
                stream: Stream::Stdout,
                line_contains: "Attaching ",
                settle: Duration::from_secs(1),
            },
        }
    }

    /// How many of the workload's clock reads the tracer reported: a check that
    /// the row measured a tracer that really traced.
    pub fn events_seen(
        &self,
        finished: &Finished,
        profile: Option<&Path>,
        workload_pid: u32,
        workload_comm: &str,
    ) -> Option<u64> {
        match self {
            Tracer::Clockprof { .. } => {
                let folded = fs::read_to_string(profile?).ok()?;
                Some(folded_count_for_root(&folded, workload_comm))
            }
            Tracer::Bpftrace { .. } => Some(bpftrace_count_for_pid(&finished.stdout, workload_pid)),
        }
    }
}

/// Sum of `ROOT;...;LEAF COUNT` lines whose ROOT (the comm) is `comm`.
fn folded_count_for_root(folded: &str, comm: &str) -> u64 {
    folded
        .lines()
        .filter(|line| line.split(';').next() == Some(comm))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

/// Sum of the counts of bpftrace map entries `@[PID, <stack lines>]: COUNT`.
fn bpftrace_count_for_pid(stdout: &[String], pid: u32) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_counts_only_matching_root() {
        let folded =
            "bench_clock_loo;main;clock_loop_syscall;[syscall clock_gettime MONOTONIC] 1999990\n\
                      bench_clock_loo;[unknown];[syscall clock_gettime MONOTONIC] 10\n\
                      sshd;main;[syscall clock_gettime MONOTONIC] 7\n";
        assert_eq!(folded_count_for_root(folded, "bench_clock_loo"), 2_000_000);
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
    fn every_compared_row_exists_and_traced_rows_have_a_baseline() {
        let rows = scenarios();
        for row in &rows {
            if let Some(reference) = row.compare_with {
                assert!(rows.iter().any(|r| r.name == reference), "{reference}");
            }
            if row.tracer.is_some() {
                assert!(rows
                    .iter()
                    .any(|r| r.tracer.is_none() && r.workload == row.workload));
            }
        }
    }
}

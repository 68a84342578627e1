//! The rows of the bench table. A scenario is a workload plus, optionally, a
//! tracer attached while it runs, and what its counts must be; a row of the
//! issue's list (`--rows`) is one or more scenarios compared with a reference
//! scenario over the same rounds. Adding a row means adding its scenarios to
//! `all()`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::ValueEnum;

use super::daemon::{ReadyWhen, Stream};

/// The rows `--rows` selects. A row brings along its reference and baseline
/// scenarios, whichever row they belong to.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum RowId {
    /// syscall source with every stack vs bpftrace `@[pid, ustack] = count()`.
    Syscall,
    /// `--stack-every 64` vs the same bpftrace one-liner.
    Every64,
    /// DWARF stacks (`--unwind dwarf`: the stack copied, unwound in the
    /// daemon) at `--stack-every` 1 and 64 vs the frame-pointer syscall row,
    /// and `perf record --call-graph dwarf` vs them, with stacks and events lost.
    Dwarf,
    /// A `-p PID` recording's cost to another process's clock syscalls vs
    /// bpftrace's host-wide `@[pid] = count()`.
    Pid,
    /// vdso sampling vs bpftrace `profile:hz:999`.
    Vdso,
    /// libc uprobe vs bpftrace's uprobe.
    Libc,
    /// Host-wide recording while 20,000 short processes run (once, not per round).
    Churn,
    /// `clockprof top`'s own CPU and memory (once, not per round).
    Top,
    /// `serve`'s CPU and memory scraped every second over plain HTTP vs
    /// TLS with basic auth, and a 1-minute window's size as a Connect push
    /// and as OTLP (once).
    Transport,
    /// Start-up: `record -s syscall -- PROBE` vs bpftrace's one-liner `-c
    /// PROBE`, to COMMAND's first instruction and to exit, CPU and peak RSS;
    /// and `serve` to its first /healthz 200 (once, 5 interleaved rounds).
    Startup,
    /// The daemon's peak memory recording Debian's python3 and redis-server with `--unwind
    /// dwarf` vs `--unwind fp`: the unwind tables and the stack ring (once).
    UnwindMemory,
    /// `serve` for --hostile-minutes beside an unprivileged user who tries to
    /// hang, grow or lock it out (once; not in the default rows: it measures
    /// robustness, not cost, and takes over ten minutes).
    Hostile,
    /// The parsers' fuzz targets, each for --fuzz-seconds (not in the default
    /// rows: it measures robustness, not cost, and takes minutes).
    Fuzz,
}

/// What `bench_clock_loop` does, and how many calls a run makes.
#[derive(PartialEq, Eq)]
pub struct Workload {
    pub mode: &'static str,
    pub short: &'static str,
    pub describe: &'static str,
    /// The function making the calls (every call of the loop is made there).
    pub function: &'static str,
    /// Calls per run = --iterations x this / that: uprobes cost ~20 us per call
    /// here, vDSO reads ~20 ns, so one count for all would make the uprobe rows
    /// take minutes or the vDSO rows milliseconds.
    pub scale: (u64, u64),
    /// Clock reads a run makes outside the loop that this workload's tracers see
    /// (the two vDSO timing reads, for the libc uprobe).
    pub extra_reads: u64,
}

impl Workload {
    pub fn iterations(&self, base: u64) -> u64 {
        (base * self.scale.0 / self.scale.1).max(1)
    }
}

pub const SYSCALL_LOOP: Workload = Workload {
    mode: "syscall",
    short: "syscall loop",
    describe: "raw clock_gettime(CLOCK_MONOTONIC) syscalls",
    function: "clock_loop_syscall",
    scale: (1, 1),
    extra_reads: 0,
};

pub const VDSO_LOOP: Workload = Workload {
    mode: "libc",
    short: "vDSO loop",
    describe: "glibc clock_gettime(CLOCK_MONOTONIC) through the vDSO",
    function: "clock_loop_libc",
    scale: (5, 1),
    extra_reads: 2,
};

pub const UPROBE_LOOP: Workload = Workload {
    mode: "libc",
    short: "uprobe loop",
    describe: "glibc clock_gettime(CLOCK_MONOTONIC), each call trapped by a uprobe",
    function: "clock_loop_libc",
    scale: (1, 20),
    extra_reads: 2,
};

/// A clockprof binary: the one built here, or another given to compare with.
#[derive(Clone)]
pub struct Clockprof {
    pub label: String,
    pub path: PathBuf,
    /// The words of its `record --help`, to tell which flags this build has.
    pub record_help: Vec<String>,
}

impl Clockprof {
    pub fn new(label: &str, path: PathBuf) -> Clockprof {
        let help = Command::new(&path)
            .args(["record", "--help"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        Clockprof {
            label: label.to_string(),
            path,
            record_help: help
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|w| w.starts_with("--"))
                .map(str::to_string)
                .collect(),
        }
    }

    pub fn lists(&self, flag: &str) -> bool {
        self.record_help.iter().any(|w| w == flag)
    }

    /// What makes a recording take every user stack: builds with
    /// `--stack-every` sample host-wide stacks by default.
    pub fn every_stack_args(&self) -> &'static [&'static str] {
        if self.lists("--stack-every") {
            &["--stack-every", "1"]
        } else {
            &[]
        }
    }
}

pub enum Tracer {
    /// `clockprof record ARGS -o FILE.json`; `PID` in ARGS is the idle target's.
    Clockprof {
        bin: Clockprof,
        args: &'static [&'static str],
        /// A flag this scenario needs, which older builds lack (their `record
        /// --help` then does not list it, and the row is "not available").
        needs_flag: Option<&'static str>,
        /// Whether it takes every user stack, whatever the build's default.
        every_stack: bool,
    },
    /// `bpftrace -e PROGRAM`; PROGRAM keys a count by `[pid, ...]`.
    Bpftrace { program: &'static str },
    /// `perf record -a -e EVENT --call-graph dwarf`, its perf.data in a
    /// directory of its own that goes with the run.
    PerfDwarf { event: &'static str },
}

/// What the tracer must have counted in each run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Every call of the loop (and its extra reads), exactly, all of the loop's
    /// calls in its function where the tracer names functions.
    EveryCall,
    /// Samples, not calls: reported, never called exact.
    Samples,
    /// None of the loop's calls (it is not followed), and exactly the idle
    /// target's `TARGET_READS`, in the loop's function.
    OnlyTarget,
}

/// Clock syscalls the `-p` row's idle target makes once the workload is over.
pub const TARGET_READS: u64 = 10_000;

pub struct Scenario {
    pub name: String,
    pub row: RowId,
    pub workload: &'static Workload,
    pub tracer: Option<Tracer>,
    pub expect: Expect,
    /// The scenario whose same-round added cost this one's is divided by.
    pub compare_with: Option<String>,
    /// More scenarios this one's added cost is divided by, given in the notes.
    pub also_compare_with: Vec<String>,
    /// The bound on that ratio.
    pub bound: Option<f64>,
}

pub const BPFTRACE_USTACK: &str = "bpftrace syscall @[pid, ustack]";
pub const BPFTRACE_COUNT: &str = "bpftrace syscall @[pid] (count only)";
pub const BPFTRACE_PROFILE: &str = "bpftrace profile:hz:999 @[pid, ustack]";
pub const BPFTRACE_UPROBE: &str = "bpftrace uprobe @[pid, ustack]";
pub const PERF_DWARF: &str = "perf record -a --call-graph dwarf";

/// The DWARF rows of a clockprof binary, at --stack-every 1 and 64.
fn dwarf_row_names(bin: &Clockprof) -> [String; 2] {
    [1, 64].map(|n| {
        format!(
            "{} -a -s syscall --unwind dwarf --stack-every {n}",
            bin.label
        )
    })
}

/// perf doing what the DWARF rows do (copy each event's user stack for an
/// unwind in user space), compared with the first binary's DWARF rows.
fn perf_dwarf(bins: &[Clockprof]) -> Scenario {
    let references = bins.first().map(dwarf_row_names);
    Scenario {
        name: PERF_DWARF.to_string(),
        row: RowId::Dwarf,
        workload: &SYSCALL_LOOP,
        tracer: Some(Tracer::PerfDwarf {
            event: "syscalls:sys_enter_clock_gettime",
        }),
        // perf drops what its ring cannot hold: a count of samples, not calls.
        expect: Expect::Samples,
        compare_with: references.as_ref().map(|[every, _]| every.clone()),
        also_compare_with: references
            .map(|[_, sampled]| vec![sampled])
            .unwrap_or_default(),
        bound: None,
    }
}

fn baseline(workload: &'static Workload, row: RowId) -> Scenario {
    Scenario {
        name: format!("baseline, {} (no tracer)", workload.short),
        row,
        workload,
        tracer: None,
        expect: Expect::EveryCall,
        compare_with: None,
        also_compare_with: Vec::new(),
        bound: None,
    }
}

fn bpftrace(
    name: &str,
    row: RowId,
    workload: &'static Workload,
    program: &'static str,
) -> Scenario {
    Scenario {
        name: name.to_string(),
        row,
        workload,
        tracer: Some(Tracer::Bpftrace { program }),
        expect: if workload == &VDSO_LOOP {
            Expect::Samples
        } else {
            Expect::EveryCall
        },
        compare_with: None,
        also_compare_with: Vec::new(),
        bound: None,
    }
}

/// The clockprof scenarios of one binary.
fn clockprof_rows(bin: &Clockprof) -> Vec<Scenario> {
    let frame_pointers = format!("{} -a -s syscall", bin.label);
    let row = |row: RowId,
               what: &str,
               workload: &'static Workload,
               args: &'static [&'static str],
               needs_flag: Option<&'static str>,
               expect: Expect,
               reference: &str,
               bound: Option<f64>| Scenario {
        name: format!("{} {what}", bin.label),
        row,
        workload,
        tracer: Some(Tracer::Clockprof {
            bin: bin.clone(),
            args,
            needs_flag,
            every_stack: !args.contains(&"--stack-every"),
        }),
        expect,
        compare_with: Some(reference.to_string()),
        also_compare_with: Vec::new(),
        bound,
    };
    vec![
        row(
            RowId::Syscall,
            "-a -s syscall",
            &SYSCALL_LOOP,
            &["-a", "-s", "syscall"],
            None,
            Expect::EveryCall,
            BPFTRACE_USTACK,
            Some(0.9),
        ),
        row(
            RowId::Every64,
            "-a -s syscall --stack-every 64",
            &SYSCALL_LOOP,
            &["-a", "-s", "syscall", "--stack-every", "64"],
            Some("--stack-every"),
            Expect::EveryCall,
            BPFTRACE_USTACK,
            Some(0.5),
        ),
        row(
            RowId::Dwarf,
            "-a -s syscall --unwind dwarf --stack-every 1",
            &SYSCALL_LOOP,
            &[
                "-a",
                "-s",
                "syscall",
                "--unwind",
                "dwarf",
                "--stack-every",
                "1",
            ],
            Some("--unwind"),
            Expect::EveryCall,
            &frame_pointers,
            None,
        ),
        row(
            RowId::Dwarf,
            "-a -s syscall --unwind dwarf --stack-every 64",
            &SYSCALL_LOOP,
            &[
                "-a",
                "-s",
                "syscall",
                "--unwind",
                "dwarf",
                "--stack-every",
                "64",
            ],
            Some("--unwind"),
            Expect::EveryCall,
            &frame_pointers,
            None,
        ),
        row(
            RowId::Pid,
            "-p IDLE -s syscall (cost to others)",
            &SYSCALL_LOOP,
            &["-p", "PID", "-s", "syscall"],
            None,
            Expect::OnlyTarget,
            BPFTRACE_COUNT,
            Some(1.0),
        ),
        row(
            RowId::Vdso,
            "-a -s vdso",
            &VDSO_LOOP,
            &["-a", "-s", "vdso"],
            None,
            Expect::Samples,
            BPFTRACE_PROFILE,
            None,
        ),
        row(
            RowId::Libc,
            "-a -s libc",
            &UPROBE_LOOP,
            &["-a", "-s", "libc"],
            None,
            Expect::EveryCall,
            BPFTRACE_UPROBE,
            None,
        ),
    ]
}

/// Every scenario of the selected rows, in the order a round runs them:
/// each workload's baseline, then for each row its clockprof scenarios (every
/// binary's) and its reference.
pub fn selected(bins: &[Clockprof], rows: &[RowId]) -> Vec<Scenario> {
    let mut all = vec![
        baseline(&SYSCALL_LOOP, RowId::Syscall),
        bpftrace(
            BPFTRACE_USTACK,
            RowId::Syscall,
            &SYSCALL_LOOP,
            // The same job as clockprof's syscall source: count per process and
            // user stack, aggregated in the kernel.
            "tracepoint:syscalls:sys_enter_clock_gettime { @[pid, ustack] = count(); }",
        ),
        bpftrace(
            BPFTRACE_COUNT,
            RowId::Pid,
            &SYSCALL_LOOP,
            // The cheapest host-wide job: a count per process, no stack.
            "tracepoint:syscalls:sys_enter_clock_gettime { @[pid] = count(); }",
        ),
        baseline(&VDSO_LOOP, RowId::Vdso),
        bpftrace(
            BPFTRACE_PROFILE,
            RowId::Vdso,
            &VDSO_LOOP,
            // The nearest bpftrace job: sample every CPU at the same rate and
            // count per process and user stack (it cannot keep only vDSO hits).
            "profile:hz:999 { @[pid, ustack] = count(); }",
        ),
        baseline(&UPROBE_LOOP, RowId::Libc),
        bpftrace(
            BPFTRACE_UPROBE,
            RowId::Libc,
            &UPROBE_LOOP,
            "uprobe:/lib/x86_64-linux-gnu/libc.so.6:__clock_gettime { @[pid, ustack] = count(); }",
        ),
        perf_dwarf(bins),
    ];
    for bin in bins {
        all.extend(clockprof_rows(bin));
    }
    // What the selected rows measure, then what they are compared with.
    let wanted: Vec<&Scenario> = all
        .iter()
        .filter(|s| rows.contains(&s.row) && s.tracer.is_some())
        .collect();
    // References of references too (the dwarf row compares with the
    // frame-pointer row, which compares with bpftrace).
    let mut references: Vec<String> = wanted
        .iter()
        .filter_map(|s| s.compare_with.clone())
        .collect();
    loop {
        let more: Vec<String> = all
            .iter()
            .filter(|s| references.contains(&s.name))
            .filter_map(|s| s.compare_with.clone())
            .filter(|r| !references.contains(r))
            .collect();
        if more.is_empty() {
            break;
        }
        references.extend(more);
    }
    let workloads: Vec<&Workload> = wanted.iter().map(|s| s.workload).collect();
    let keep: Vec<bool> = all
        .iter()
        .map(|s| {
            wanted.iter().any(|w| std::ptr::eq(*w, s))
                || references.contains(&s.name)
                || (s.tracer.is_none() && workloads.contains(&s.workload))
        })
        .collect();
    let mut kept: Vec<Scenario> = all
        .into_iter()
        .zip(keep)
        .filter_map(|(s, k)| k.then_some(s))
        .collect();
    // Grouped by workload so a round runs a baseline next to the rows it serves.
    let order = |w: &Workload| {
        [&SYSCALL_LOOP, &VDSO_LOOP, &UPROBE_LOOP]
            .iter()
            .position(|x| *x == w)
    };
    kept.sort_by_key(|s| (order(s.workload), s.tracer.is_some()));
    kept
}

/// What a tracer needs to know about where things are.
pub struct Paths<'a> {
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
pub fn with_private_tracefs(cmd: &mut Command) {
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
    /// Whether the scenario follows an idle process of its own (`-p PID`).
    pub fn follows_target(&self) -> bool {
        matches!(self, Tracer::Clockprof { args, .. } if args.contains(&"PID"))
    }

    /// The command, and the file it writes its profile to, if any; perf
    /// writes its (large) perf.data into `scratch`, which the caller removes.
    pub fn command(
        &self,
        paths: &Paths,
        file_stem: &str,
        target: Option<u32>,
        scratch: &Path,
    ) -> (Command, Option<PathBuf>) {
        match self {
            Tracer::Clockprof {
                bin,
                args,
                every_stack,
                ..
            } => {
                let out = paths.run_dir.join(format!("{file_stem}.json"));
                let mut cmd = Command::new(&bin.path);
                cmd.arg("record");
                if *every_stack {
                    cmd.args(bin.every_stack_args());
                }
                for arg in *args {
                    match (*arg, target) {
                        ("PID", Some(pid)) => cmd.arg(pid.to_string()),
                        _ => cmd.arg(arg),
                    };
                }
                cmd.arg("-o").arg(&out);
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
            Tracer::PerfDwarf { event } => {
                let out = scratch.join("perf.data");
                let mut cmd = Command::new("perf");
                cmd.args(["record", "-a", "-e", event, "--call-graph", "dwarf"])
                    // Start disabled and say "Events enabled" once attached.
                    .args(["--delay", "10"])
                    // No build-id pass over the whole perf.data at exit, and
                    // nothing copied into ~/.debug.
                    .args(["--no-buildid", "--no-buildid-cache"])
                    .arg("-o")
                    .arg(&out);
                if !paths.host_tracefs {
                    with_private_tracefs(&mut cmd);
                }
                (cmd, Some(out))
            }
        }
    }

    /// perf record, once it wrote its perf.data on SIGINT, kills itself with
    /// the same signal, as a shell expects of a program stopped by Ctrl-C.
    pub fn dies_of_sigint(&self, status: std::process::ExitStatus) -> bool {
        use std::os::unix::process::ExitStatusExt;
        matches!(self, Tracer::PerfDwarf { .. }) && status.signal() == Some(libc::SIGINT)
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
            // With --delay, perf says so once its events are enabled.
            Tracer::PerfDwarf { .. } => ReadyWhen {
                stream: Stream::Stderr,
                line_contains: "Events enabled",
                settle: Duration::ZERO,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bins() -> Vec<Clockprof> {
        vec![Clockprof::new("clockprof", "/nonexistent/clockprof".into())]
    }

    #[test]
    fn every_stack_is_asked_for_only_where_the_flag_exists() {
        let mut bin = bins().remove(0);
        assert!(bin.every_stack_args().is_empty());
        bin.record_help = vec!["--pid".into(), "--stack-every".into()];
        assert_eq!(bin.every_stack_args(), ["--stack-every", "1"]);
    }

    #[test]
    fn every_compared_row_exists_and_traced_rows_have_a_baseline() {
        let rows = selected(&bins(), RowId::value_variants());
        for row in &rows {
            for reference in row.compare_with.iter().chain(&row.also_compare_with) {
                assert!(rows.iter().any(|r| &r.name == reference), "{reference}");
            }
            if row.tracer.is_some() {
                assert!(rows
                    .iter()
                    .any(|r| r.tracer.is_none() && r.workload == row.workload));
            }
        }
    }

    #[test]
    fn a_row_brings_its_reference_and_baseline_only() {
        let rows = selected(&bins(), &[RowId::Every64]);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "baseline, syscall loop (no tracer)",
                BPFTRACE_USTACK,
                "clockprof -a -s syscall --stack-every 64",
            ]
        );
        assert!(selected(&bins(), &[RowId::Churn]).is_empty());
        assert!(selected(&bins(), &[RowId::Hostile]).is_empty());
    }

    #[test]
    fn the_dwarf_row_brings_the_frame_pointer_row_and_its_reference() {
        let rows = selected(&bins(), &[RowId::Dwarf]);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "baseline, syscall loop (no tracer)",
                BPFTRACE_USTACK,
                PERF_DWARF,
                "clockprof -a -s syscall",
                "clockprof -a -s syscall --unwind dwarf --stack-every 1",
                "clockprof -a -s syscall --unwind dwarf --stack-every 64",
            ]
        );
        let perf = rows.iter().find(|r| r.name == PERF_DWARF).unwrap();
        assert_eq!(perf.compare_with.as_deref(), Some(rows[4].name.as_str()));
        assert_eq!(perf.also_compare_with, [rows[5].name.clone()]);
    }

    #[test]
    fn without_clockprof_the_rows_keep_their_bpftrace_scenarios() {
        let rows = selected(&[], &[RowId::Syscall, RowId::Pid]);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "baseline, syscall loop (no tracer)",
                BPFTRACE_USTACK,
                BPFTRACE_COUNT
            ]
        );
    }

    #[test]
    fn iterations_scale_per_workload() {
        assert_eq!(SYSCALL_LOOP.iterations(2_000_000), 2_000_000);
        assert_eq!(UPROBE_LOOP.iterations(2_000_000), 100_000);
        assert_eq!(UPROBE_LOOP.iterations(1), 1);
    }
}

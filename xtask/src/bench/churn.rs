//! The churn row: a host-wide `clockprof record -a -s syscall` while many short
//! processes run, each exec'd (so each has its own address layout and its own
//! stacks) and each making a known number of clock syscalls in one named
//! function. Counts must be exact per process name and function with no stack
//! lost, and the daemon's peak memory after 1/10 of the processes and after all
//! of them must stay within 20% of each other: memory bounded by what is live,
//! not by how many processes ever ran.

use std::fs;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::counts::ClockprofCounts;
use super::daemon::{Daemon, ReadyWhen, Stream};
use super::scenario::{Clockprof, Paths};

const SOURCE: &str = "tests/fixtures/bench_churn.c";
/// The function every short process makes its reads in.
const FUNCTION: &str = "churn_clock_reads";
/// Two names (comms), each with its own number of reads, so a count that lands
/// under the wrong name shows.
const PROGRAMS: [(&str, u64); 2] = [("churn_a", 10), ("churn_b", 7)];
/// Processes alive at once: one per CPU of this 2-CPU machine.
const PARALLEL: u64 = 2;
/// Memory is read this long after the processes stopped: record drains about
/// every second, so what they left is drained by then.
const SETTLE: Duration = Duration::from_millis(2500);
/// The bound the issue sets on peak memory after all processes vs after 1/10.
const MEMORY_BOUND: f64 = 0.20;

pub struct Spawner {
    bin: PathBuf,
    programs: Vec<PathBuf>,
}

impl Spawner {
    /// The fixture, and the same binary under each short process's name.
    pub fn compile(bench_dir: &Path) -> Result<Spawner> {
        let bin = super::compile(bench_dir, SOURCE, "bench_churn")?;
        let mut programs = Vec::new();
        for (name, _) in PROGRAMS {
            let path = bench_dir.join(name);
            let _ = fs::remove_file(&path);
            fs::hard_link(&bin, &path)
                .with_context(|| format!("could not link {}", path.display()))?;
            programs.push(path);
        }
        Ok(Spawner { bin, programs })
    }
}

struct NameCount {
    name: &'static str,
    processes: u64,
    expected: u64,
    counted: u64,
    in_function: u64,
    pids: usize,
}

pub struct ChurnResult {
    label: String,
    /// The arguments after `record -a -s syscall`.
    extra_args: String,
    processes: u64,
    checkpoint: u64,
    seconds: f64,
    names: Vec<NameCount>,
    lost_user_stacks: u64,
    lost_events: u64,
    peak_kib_at_checkpoint: u64,
    peak_kib_at_end: u64,
    cpu_ms: f64,
    exited_cleanly: bool,
}

pub fn measure(
    bin: &Clockprof,
    spawner: &Spawner,
    processes: u64,
    paths: &Paths,
) -> Result<ChurnResult> {
    let checkpoint = processes / 10;
    let out = paths.run_dir.join(format!("churn-{}.json", bin.label));
    let mut cmd = Command::new(&bin.path);
    // Every stack, the case that filled the stack map; what a build without
    // --stack-every does anyway.
    cmd.args(["record", "-a", "-s", "syscall"])
        .args(bin.every_stack_args())
        .arg("-o")
        .arg(&out);
    let ready = ReadyWhen {
        stream: Stream::Stderr,
        line_contains: "clockprof: recording",
        settle: Duration::ZERO,
    };
    let name = format!("{} under churn", bin.label);
    let daemon = Daemon::start(&name, cmd, &ready)?;

    let started = Instant::now();
    let mut child = Command::new(&spawner.bin)
        .arg("spawn")
        .args([processes, checkpoint, PARALLEL].map(|n| n.to_string()))
        .args(
            spawner
                .programs
                .iter()
                .zip(PROGRAMS)
                .flat_map(|(path, (_, reads))| {
                    [path.as_os_str().to_owned(), reads.to_string().into()]
                }),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {}", spawner.bin.display()))?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut expect_line = |prefix: &str| -> Result<()> {
        match lines.next() {
            Some(Ok(line)) if line.starts_with(prefix) => Ok(()),
            other => bail!("the churn spawner said {other:?}, not {prefix:?}"),
        }
    };
    expect_line("checkpoint ")?;
    sleep(SETTLE);
    let at_checkpoint = daemon.usage()?;
    eprintln!(
        "xtask: churn ({}): {checkpoint} processes done, daemon peak {:.1} MiB",
        bin.label,
        at_checkpoint.peak_rss_kib as f64 / 1024.0
    );
    writeln!(stdin, "go")?;
    expect_line("done ")?;
    let status = child.wait()?;
    if !status.success() {
        bail!("the churn spawner failed ({status})");
    }
    let seconds = started.elapsed().as_secs_f64();
    sleep(SETTLE);
    let at_end = daemon.usage()?;
    let finished = daemon.stop()?;
    fs::write(
        paths.run_dir.join(format!("churn-{}.log", bin.label)),
        finished.stderr.join("\n"),
    )?;
    let counts = ClockprofCounts::read(&out)?;
    let per_name = processes / PROGRAMS.len() as u64;
    let names = PROGRAMS
        .iter()
        .enumerate()
        .map(|(i, &(name, reads))| {
            // The spawner alternates, starting with the first name.
            let processes = per_name + u64::from((i as u64) < processes % PROGRAMS.len() as u64);
            NameCount {
                name,
                processes,
                expected: processes * reads,
                counted: counts.of_comm(name),
                in_function: counts.of_comm_in(name, FUNCTION),
                pids: counts.pids_of_comm(name),
            }
        })
        .collect();
    Ok(ChurnResult {
        label: bin.label.clone(),
        extra_args: bin.every_stack_args().join(" "),
        processes,
        checkpoint,
        seconds,
        names,
        lost_user_stacks: counts.lost_user_stacks,
        lost_events: counts.lost_events,
        peak_kib_at_checkpoint: at_checkpoint.peak_rss_kib,
        peak_kib_at_end: at_end.peak_rss_kib,
        cpu_ms: at_end.cpu_ms,
        exited_cleanly: finished.status.success(),
    })
}

impl ChurnResult {
    fn exact(&self) -> bool {
        self.names
            .iter()
            .all(|n| n.counted == n.expected && n.in_function == n.expected)
    }

    fn memory_growth(&self) -> f64 {
        self.peak_kib_at_end as f64 / self.peak_kib_at_checkpoint.max(1) as f64 - 1.0
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.exact() {
            problems.push("counts not exact".to_string());
        }
        if self.lost_user_stacks > 0 || self.lost_events > 0 {
            problems.push(format!(
                "{} stacks and {} events lost",
                self.lost_user_stacks, self.lost_events
            ));
        }
        if self.memory_growth().abs() > MEMORY_BOUND {
            problems.push(format!(
                "peak memory {:+.0}% from {} to {} processes",
                self.memory_growth() * 100.0,
                self.checkpoint,
                self.processes
            ));
        }
        if !self.exited_cleanly {
            problems.push("bad exit".to_string());
        }
        problems
    }

    fn verdict(&self) -> String {
        let problems = self.problems();
        if problems.is_empty() {
            "PASS".to_string()
        } else {
            format!("FAIL ({})", problems.join("; "))
        }
    }

    pub fn print(&self) {
        println!(
            "\nChurn: {} record -a -s syscall {}while {} short processes ran ({PARALLEL} at a \
             time, each exec'd), {:.1} s:",
            self.label,
            if self.extra_args.is_empty() {
                String::new()
            } else {
                format!("{} ", self.extra_args)
            },
            self.processes,
            self.seconds
        );
        for n in &self.names {
            println!(
                "  {:<8} {} processes: {} of {} events, {} of them in {FUNCTION}{} \
                 ({} PIDs in the profile)",
                n.name,
                n.processes,
                n.counted,
                n.expected,
                n.in_function,
                if n.counted == n.expected && n.in_function == n.expected {
                    " (exact)"
                } else {
                    " (NOT EXACT)"
                },
                n.pids
            );
        }
        println!(
            "  lost: {} user stacks, {} events",
            self.lost_user_stacks, self.lost_events
        );
        println!(
            "  daemon peak memory (VmHWM): {:.1} MiB after {} processes, {:.1} MiB after {}: \
             {:+.0}% (bound: within {:.0}%)",
            self.peak_kib_at_checkpoint as f64 / 1024.0,
            self.checkpoint,
            self.peak_kib_at_end as f64 / 1024.0,
            self.processes,
            self.memory_growth() * 100.0,
            MEMORY_BOUND * 100.0
        );
        println!("  daemon CPU: {:.0} ms", self.cpu_ms);
        println!("  verdict: {}", self.verdict());
    }

    pub fn json(&self) -> Value {
        json!({
            "processes": self.processes,
            "parallel": PARALLEL,
            "seconds": self.seconds,
            "function": FUNCTION,
            "names": self.names.iter().map(|n| json!({
                "name": n.name,
                "processes": n.processes,
                "expected": n.expected,
                "counted": n.counted,
                "in_function": n.in_function,
                "pids": n.pids,
            })).collect::<Vec<_>>(),
            "lost_user_stacks": self.lost_user_stacks,
            "lost_events": self.lost_events,
            "vm_hwm_kib_at_checkpoint": self.peak_kib_at_checkpoint,
            "checkpoint_processes": self.checkpoint,
            "vm_hwm_kib_at_end": self.peak_kib_at_end,
            "memory_growth": self.memory_growth(),
            "daemon_cpu_ms": self.cpu_ms,
            "verdict": self.verdict(),
        })
    }
}

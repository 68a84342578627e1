//! The churn row: a host-wide `clockprof record -a -s syscall` (or, with
//! `--churn-daemon serve`, `clockprof serve -s syscall`, read through its
//! /metrics: the soak of a daemon left running) while many short processes run, each exec'd (so each has its own address layout and its own
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

/// Which daemon the churn row runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ChurnDaemon {
    /// `record -a -s syscall`, counts read from its JSON.
    Record,
    /// `serve -s syscall`, counts read from its /metrics at the end.
    Serve,
}

/// Where the serve soak listens: loopback, off serve's default port.
const SERVE_LISTEN: &str = "127.0.0.1:19743";

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
    /// Side-band records the kernel dropped: where a read may lose its
    /// process's name without a stack or event lost.
    lost_mapping_records: u64,
    /// Reads under no process name (`[pid N]`), or under serve's `[other]`
    /// (its series cap): where reads missing from a name went.
    unnamed_reads: u64,
    daemon: ChurnDaemon,
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
    kind: ChurnDaemon,
) -> Result<ChurnResult> {
    let checkpoint = processes / 10;
    let out = paths.run_dir.join(format!("churn-{}.json", bin.label));
    let mut cmd = Command::new(&bin.path);
    // Every stack, the case that filled the stack map; what a build without
    // --stack-every does anyway.
    let ready = match kind {
        ChurnDaemon::Record => {
            cmd.args(["record", "-a", "-s", "syscall"])
                .args(bin.every_stack_args())
                .arg("-o")
                .arg(&out);
            ReadyWhen {
                stream: Stream::Stderr,
                line_contains: "clockprof: recording",
                settle: Duration::ZERO,
            }
        }
        ChurnDaemon::Serve => {
            cmd.args(["serve", "--listen", SERVE_LISTEN, "-s", "syscall"])
                .args(bin.every_stack_args());
            ReadyWhen {
                stream: Stream::Stderr,
                line_contains: "clockprof: serving",
                settle: Duration::ZERO,
            }
        }
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
    let metrics = match kind {
        ChurnDaemon::Serve => {
            let metrics = ServeMetrics::scrape()?;
            // Kept to tell where reads went if a count is off.
            fs::write(
                paths.run_dir.join(format!("churn-{}.metrics", bin.label)),
                &metrics.0,
            )?;
            Some(metrics)
        }
        ChurnDaemon::Record => None,
    };
    let finished = daemon.stop()?;
    fs::write(
        paths.run_dir.join(format!("churn-{}.log", bin.label)),
        finished.stderr.join("\n"),
    )?;
    let (counts, lost_user_stacks, lost_events, lost_mapping_records, unnamed_reads) =
        match &metrics {
            Some(metrics) => (
                None,
                metrics.lost("user_stack"),
                metrics.lost("count_map_full"),
                metrics.lost("mapping_record"),
                metrics.unnamed_reads(),
            ),
            None => {
                let counts = ClockprofCounts::read(&out)?;
                let (user, events) = (counts.lost_user_stacks, counts.lost_events);
                let (records, unnamed) = (counts.lost_mapping_records, counts.unnamed());
                (Some(counts), user, events, records, unnamed)
            }
        };
    let per_name = processes / PROGRAMS.len() as u64;
    let names = PROGRAMS
        .iter()
        .enumerate()
        .map(|(i, &(name, reads))| {
            // The spawner alternates, starting with the first name.
            let processes = per_name + u64::from((i as u64) < processes % PROGRAMS.len() as u64);
            match (&counts, &metrics) {
                (Some(counts), _) => NameCount {
                    name,
                    processes,
                    expected: processes * reads,
                    counted: counts.of_comm(name),
                    in_function: counts.of_comm_in(name, FUNCTION),
                    pids: counts.pids_of_comm(name),
                },
                // /metrics has no function or PID label: the count per
                // process name is what serve exports.
                (None, metrics) => {
                    let counted = metrics.as_ref().map_or(0, |m| m.reads_of(name));
                    NameCount {
                        name,
                        processes,
                        expected: processes * reads,
                        counted,
                        in_function: counted,
                        pids: 0,
                    }
                }
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
        lost_user_stacks,
        lost_events,
        lost_mapping_records,
        unnamed_reads,
        daemon: kind,
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
            "\nChurn: {} {} {}while {} short processes ran ({PARALLEL} at a \
             time, each exec'd), {:.1} s:",
            self.label,
            match self.daemon {
                ChurnDaemon::Record => "record -a -s syscall",
                ChurnDaemon::Serve => "serve -s syscall (counts from /metrics)",
            },
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
            "  lost: {} user stacks, {} events, {} mapping records; {} reads under no \
             process name ([pid N], [other]: any host process's)",
            self.lost_user_stacks, self.lost_events, self.lost_mapping_records, self.unnamed_reads
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
            "daemon": format!("{:?}", self.daemon).to_lowercase(),
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
            "lost_mapping_records": self.lost_mapping_records,
            "unnamed_reads": self.unnamed_reads,
            "vm_hwm_kib_at_checkpoint": self.peak_kib_at_checkpoint,
            "checkpoint_processes": self.checkpoint,
            "vm_hwm_kib_at_end": self.peak_kib_at_end,
            "memory_growth": self.memory_growth(),
            "daemon_cpu_ms": self.cpu_ms,
            "verdict": self.verdict(),
        })
    }
}

/// serve's /metrics, as text.
struct ServeMetrics(String);

impl ServeMetrics {
    /// One plain HTTP/1.0 GET: the bench needs no client library for it.
    fn scrape() -> Result<ServeMetrics> {
        use std::io::Read as _;
        let mut stream = std::net::TcpStream::connect(SERVE_LISTEN)
            .with_context(|| format!("could not connect to serve on {SERVE_LISTEN}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            stream,
            "GET /metrics HTTP/1.0\r\nHost: {SERVE_LISTEN}\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        match response.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
                Ok(ServeMetrics(body.to_string()))
            }
            _ => bail!("serve's /metrics answered {:?}", response.lines().next()),
        }
    }

    /// The sum of the samples of `metric` whose labels include `label`.
    fn sum(&self, metric: &str, label: &str) -> u64 {
        self.sum_where(metric, |labels| labels.split(',').any(|l| l == label))
    }

    /// The sum of the samples of `metric` whose labels `keep` accepts.
    fn sum_where(&self, metric: &str, keep: impl Fn(&str) -> bool) -> u64 {
        self.0
            .lines()
            .filter_map(|line| line.strip_prefix(metric)?.strip_prefix('{'))
            .filter_map(|rest| rest.split_once("} "))
            .filter(|(labels, _)| keep(labels))
            .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
            .map(|value| value as u64)
            .sum()
    }

    fn reads_of(&self, comm: &str) -> u64 {
        self.sum(
            "clockprof_clock_reads_total",
            &format!("process=\"{comm}\""),
        )
    }

    /// Reads under `[pid N]` (no name known) or `[other]` (the series cap).
    fn unnamed_reads(&self) -> u64 {
        self.sum_where("clockprof_clock_reads_total", |labels| {
            labels.contains("process=\"[pid ") || labels.contains("process=\"[other]\"")
        })
    }

    fn lost(&self, reason: &str) -> u64 {
        self.sum(
            "clockprof_lost_events_total",
            &format!("reason=\"{reason}\""),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_per_process_and_reason() {
        let metrics = ServeMetrics(
            [
                "# TYPE clockprof_clock_reads_total counter",
                r#"clockprof_clock_reads_total{process="churn_a",source="syscall",clock="MONOTONIC"} 70"#,
                r#"clockprof_clock_reads_total{process="churn_a",source="syscall",clock="REALTIME"} 5"#,
                r#"clockprof_clock_reads_total{process="churn_ab",source="syscall",clock="MONOTONIC"} 9"#,
                r#"clockprof_lost_events_total{reason="user_stack"} 3"#,
                r#"clockprof_lost_events_total{reason="push"} 4"#,
            ]
            .join("\n"),
        );
        assert_eq!(metrics.reads_of("churn_a"), 75);
        assert_eq!(metrics.reads_of("churn_b"), 0);
        assert_eq!(metrics.lost("user_stack"), 3);
        assert_eq!(metrics.lost("count_map_full"), 0);
    }
}

//! `cargo xtask bench`: the added cost per traced clock read, for clockprof and
//! for bpftrace doing the same job, in one run on one machine (published
//! per-hook costs are only comparable within one run, KERNEL.md); the daemons'
//! CPU and memory; a host-wide recording under process churn; `clockprof top`.
//!
//! Rounds interleave the scenarios (baseline, clockprof, bpftrace, ...; every
//! other round in reverse order), and each row's ratio to its reference is taken
//! within a round, then the median over rounds is reported: single sequential
//! runs on a shared machine misled by up to ±30%. Each traced run starts a fresh
//! tracer, so every sample includes a full attach/detach and no state carries
//! over. Every run's counts are checked exact against the calls made.

mod churn;
mod counts;
mod daemon;
mod fuzz;
mod hostile;
mod procfs;
mod report;
mod scenario;
mod startup;
mod top_cost;
mod transport;
mod unwind_memory;

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, ValueEnum};

use crate::setup::{self, SetupArgs};
use crate::{build, process, workspace};
use counts::{bpftrace_count_for_pid, comm_of, ClockprofCounts};
use daemon::{Daemon, Finished};
use scenario::{Clockprof, Expect, Paths, RowId, Scenario, Tracer, Workload, TARGET_READS};

#[derive(Args)]
pub struct BenchArgs {
    /// Clock syscalls per workload run (the vDSO loop makes 5x as many reads,
    /// the uprobe loop 1/20).
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    iterations: u64,
    /// Rounds; each runs every scenario once, and the table reports medians.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Only these rows (comma-separated), with their references and baselines.
    /// Default: all.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "ROW")]
    rows: Vec<RowId>,
    /// Short processes the churn row runs (memory is also read after 1/10 of them).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(20..))]
    churn_processes: u64,
    /// Seconds each fuzz target runs in the fuzz row.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    fuzz_seconds: u64,
    /// The daemon the churn row runs: `record`, or `serve` for a soak of the
    /// daemon left running (counts read from its /metrics); with a large
    /// --churn-processes (about 1,350 processes a second here: 400000 is five
    /// minutes).
    #[arg(long, value_enum, default_value = "record")]
    churn_daemon: churn::ChurnDaemon,
    /// Minutes the hostile row runs serve beside the hostile user.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    hostile_minutes: u64,
    /// Leave out the clockprof rows and skip building it (e.g. while it does not build).
    #[arg(long, conflicts_with_all = ["clockprof_bin", "compare_bin"])]
    skip_clockprof: bool,
    /// Benchmark this clockprof binary instead of building target/release/clockprof
    /// (e.g. an older build, to compare versions).
    #[arg(long, value_name = "PATH")]
    clockprof_bin: Option<PathBuf>,
    /// Also run every clockprof scenario with this other build, in the same
    /// rounds, its rows named LABEL (e.g. `before=/path/to/old/clockprof`).
    #[arg(long, value_name = "LABEL=PATH", value_parser = parse_compare_bin)]
    compare_bin: Option<Clockprof>,
}

impl BenchArgs {
    /// Only the fuzz row: no eBPF, no root, no tracers.
    pub fn fuzz_only(&self) -> bool {
        self.rows == [RowId::Fuzz]
    }
}

fn parse_compare_bin(text: &str) -> Result<Clockprof, String> {
    let (label, path) = text
        .split_once('=')
        .filter(|(l, p)| !l.is_empty() && !p.is_empty())
        .ok_or("expected LABEL=PATH")?;
    Ok(Clockprof::new(label, PathBuf::from(path)))
}

/// One workload run, with the tracer's numbers if one was attached.
pub struct Sample {
    /// CPU time (user + system) of the workload per call: unlike its wall
    /// time, it leaves out the time other processes of a shared machine held
    /// the CPU, while a tracer's programs run in the workload's own syscalls
    /// and traps. NaN for a run that did not happen (its tracer never attached).
    pub ns_per_call: f64,
    /// Wall time per call, for the record.
    pub wall_ns_per_call: f64,
    pub tracer: Option<TracerSample>,
}

pub struct TracerSample {
    /// Why the tracer never got attached (it exited or did not say it was
    /// ready); the other fields are then zero.
    pub attach_error: Option<String>,
    /// From start to just before SIGINT: attach + the workload run.
    pub cpu_ms_total: f64,
    /// While the workload ran only.
    pub cpu_ms_during_workload: f64,
    pub peak_rss_kib: u64,
    pub counted: Counted,
    /// Stacks or events the tracer dropped, of those the loop should have
    /// given it; None where the tracer does not say.
    pub lost: Option<Lost>,
    /// Bytes the tracer wrote (perf's perf.data).
    pub output_bytes: Option<u64>,
    pub exited_cleanly: bool,
}

/// What a tracer dropped: `lost` of `of` (events, or the stacks the events
/// that take one should have given).
#[derive(Clone, Copy)]
pub struct Lost {
    pub lost: u64,
    pub of: u64,
    pub what: &'static str,
}

impl Lost {
    pub fn share(&self) -> f64 {
        (self.lost as f64 / self.of.max(1) as f64).min(1.0)
    }
}

/// A run's counts against what the workload did.
pub enum Counted {
    /// Exactly what the scenario expects.
    Exact,
    /// Samples of the workload, which have no exact value.
    Samples(u64),
    /// Not what the scenario expects: the account, starting with what it saw.
    Off(String),
}

const LOOP_SOURCE: &str = "tests/fixtures/bench_clock_loop.c";
const LOOP_NAME: &str = "bench_clock_loop";

pub fn run(args: &BenchArgs) -> Result<()> {
    // The fuzz row loads no eBPF and needs neither root nor the tracers: alone,
    // it runs before (and instead of) all that.
    if args.fuzz_only() {
        let (results, json) = fuzz::run(args.fuzz_seconds)?;
        let dir = workspace::target_dir().join("bench");
        fs::create_dir_all(&dir)?;
        let json_path = dir.join("results.json");
        fs::write(
            &json_path,
            serde_json::to_string_pretty(&serde_json::json!({ "fuzz": json }))? + "\n",
        )
        .with_context(|| format!("could not write {}", json_path.display()))?;
        println!("JSON: {}", json_path.display());
        let failures: u64 = results.iter().map(|r| r.failures).sum();
        ensure!(
            failures == 0,
            "the fuzz targets found {failures} failing inputs"
        );
        return Ok(());
    }
    ensure!(
        workspace::is_root(),
        "the bench loads eBPF programs (clockprof, bpftrace) and must run as root; \
         re-run it with sudo"
    );
    setup::run(&SetupArgs::default())?;
    let rows: Vec<RowId> = if args.rows.is_empty() {
        RowId::value_variants()
            .iter()
            .copied()
            .filter(|row| !matches!(row, RowId::Fuzz | RowId::Hostile))
            .collect()
    } else {
        args.rows.clone()
    };
    let mut bins = Vec::new();
    if !args.skip_clockprof {
        let path = match &args.clockprof_bin {
            Some(bin) => bin.clone(),
            None => {
                build::build_profiler().context(
                    "could not build clockprof; fix the build, or pass --skip-clockprof to \
                     measure only the rows without it",
                )?;
                workspace::release_bin(build::CLOCKPROF_BIN)
            }
        };
        bins.push(Clockprof::new("clockprof", path));
        bins.extend(args.compare_bin.clone());
        for bin in &bins {
            ensure!(
                bin.path.is_file(),
                "{} does not exist; build the profiler or pass --skip-clockprof",
                bin.path.display()
            );
        }
    }
    let scenarios = scenario::selected(&bins, &rows);
    let unavailable: Vec<Option<String>> = scenarios.iter().map(unavailable_in_build).collect();
    let tracefs = scenario::host_tracefs();
    if !tracefs {
        eprintln!(
            "xtask: no tracefs mounted on the host: bpftrace gets one in a private mount \
             namespace of its own, which ends with it"
        );
    }

    let bench_dir = workspace::target_dir().join("bench");
    // Logs and profiles of this run only, to look at when a number is surprising.
    let run_dir = bench_dir.join("last-run");
    if run_dir.exists() {
        fs::remove_dir_all(&run_dir)
            .with_context(|| format!("could not clear {}", run_dir.display()))?;
    }
    fs::create_dir_all(&run_dir)
        .with_context(|| format!("could not create {}", run_dir.display()))?;
    let loop_bin = compile(&bench_dir, LOOP_SOURCE, LOOP_NAME)?;
    let paths = Paths {
        run_dir: &run_dir,
        host_tracefs: tracefs,
    };

    // Untimed first run of each workload: page cache, CPU frequency ramp-up.
    for (i, s) in scenarios.iter().enumerate() {
        if scenarios[..i]
            .iter()
            .all(|earlier| earlier.workload != s.workload)
        {
            run_workload(
                &loop_bin,
                s.workload.iterations(args.iterations),
                s.workload,
            )?;
        }
    }
    let mut samples: Vec<Vec<Sample>> = scenarios.iter().map(|_| Vec::new()).collect();
    for round in 1..=args.runs {
        let mut order: Vec<usize> = (0..scenarios.len()).collect();
        // Every other round backwards, so no row always runs right after the
        // same neighbour or at the same point of a round.
        if round % 2 == 0 {
            order.reverse();
        }
        for i in order {
            if unavailable[i].is_some() {
                continue;
            }
            let scenario = &scenarios[i];
            let sample = measure(scenario, &loop_bin, args.iterations, &paths, round)?;
            eprintln!(
                "xtask: bench round {round}/{}: {:<56} {:8.1} CPU ns/call ({:.1} wall){}",
                args.runs,
                scenario.name,
                sample.ns_per_call,
                sample.wall_ns_per_call,
                match sample.tracer.as_ref().map(|t| &t.counted) {
                    Some(Counted::Off(why)) => format!("  counts OFF: {why}"),
                    _ => String::new(),
                }
            );
            samples[i].push(sample);
        }
    }

    let mut json = serde_json::json!({});
    if !scenarios.is_empty() {
        let table_rows = report::summarize(&scenarios, &samples, &unavailable, args.iterations);
        println!();
        println!(
            "Added cost per clock read ({} syscalls per run, {} rounds, medians of same-round \
             figures; logs in {})",
            args.iterations,
            args.runs,
            run_dir.display()
        );
        print!("{}", report::table(&table_rows));
        print!("{}", report::legend(&scenarios, args.iterations));
        json = report::json(&table_rows, args.iterations, args.runs);
    }
    for bin in &bins {
        if rows.contains(&RowId::Churn) {
            let spawner = churn::Spawner::compile(&bench_dir)?;
            // A row that could not run says why; the rows after it still run.
            match churn::measure(
                bin,
                &spawner,
                args.churn_processes,
                &paths,
                args.churn_daemon,
            ) {
                Ok(result) => {
                    result.print();
                    json["churn"][&bin.label] = result.json();
                }
                Err(err) => {
                    println!("\nChurn: {} did not run: {err:#}", bin.label);
                    json["churn"][&bin.label] = serde_json::json!({ "error": format!("{err:#}") });
                }
            }
        }
    }
    if rows.contains(&RowId::Top) {
        if let Some(bin) = bins.first() {
            let fixture = compile_fixture(&bench_dir)?;
            let cost = top_cost::measure(&bin.path, &fixture).context("measuring clockprof top")?;
            cost.print();
            json["clockprof_top"] = cost.json();
        }
    }
    if rows.contains(&RowId::Transport) {
        if let Some(bin) = bins.first() {
            let fixture = compile_fixture(&bench_dir)?;
            match transport::measure(&bin.path, &fixture) {
                Ok(result) => {
                    result.print();
                    json["transport"] = result.json();
                }
                Err(err) => {
                    println!("\nTransport: did not run: {err:#}");
                    json["transport"] = serde_json::json!({ "error": format!("{err:#}") });
                }
            }
        }
    }
    if rows.contains(&RowId::Startup) {
        if let Some(bin) = bins.first() {
            match startup::measure(&bin.path, &bench_dir, tracefs) {
                Ok(result) => {
                    result.print();
                    json["startup"] = result.json();
                }
                Err(err) => {
                    println!("\nStart-up: did not run: {err:#}");
                    json["startup"] = serde_json::json!({ "error": format!("{err:#}") });
                }
            }
        }
    }
    if rows.contains(&RowId::UnwindMemory) {
        if let Some(bin) = bins.first() {
            match unwind_memory::measure(bin, args.runs) {
                Ok(memory) => {
                    memory.print();
                    json["unwind_memory"] = memory.json();
                }
                Err(err) => {
                    println!("\nUnwind memory: did not run: {err:#}");
                    json["unwind_memory"] = serde_json::json!({ "error": format!("{err:#}") });
                }
            }
        }
    }
    if rows.contains(&RowId::Hostile) {
        if let Some(bin) = bins.first() {
            match hostile::measure(bin, &bench_dir, args.hostile_minutes) {
                Ok(result) => {
                    result.print();
                    json["hostile"] = result.json();
                }
                Err(err) => {
                    println!("\nHostile user: did not run: {err:#}");
                    json["hostile"] = serde_json::json!({ "error": format!("{err:#}") });
                }
            }
        }
    }
    let mut fuzz_failures = 0;
    if rows.contains(&RowId::Fuzz) {
        let (results, fuzz_json) = fuzz::run(args.fuzz_seconds)?;
        fuzz_failures = results.iter().map(|r| r.failures).sum();
        json["fuzz"] = fuzz_json;
    }
    let json_path = bench_dir.join("results.json");
    fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("could not write {}", json_path.display()))?;
    println!("JSON: {}", json_path.display());
    ensure!(
        fuzz_failures == 0,
        "the fuzz targets found {fuzz_failures} failing inputs"
    );
    Ok(())
}

/// Why this scenario's clockprof build cannot run it: a flag its `record
/// --help` does not list (an older build, or one before the flag landed).
fn unavailable_in_build(scenario: &Scenario) -> Option<String> {
    let Some(Tracer::Clockprof {
        bin,
        needs_flag: Some(flag),
        ..
    }) = &scenario.tracer
    else {
        return None;
    };
    (!bin.lists(flag)).then(|| format!("`{} record --help` lists no {flag}", bin.label))
}

/// Compiled with frame pointers, so tracers walk the same user stack a real
/// caller would have.
pub fn compile(bench_dir: &Path, source: &str, name: &str) -> Result<PathBuf> {
    let bin = bench_dir.join(name);
    process::run(
        Command::new("gcc")
            .args(["-O2", "-fno-omit-frame-pointer", "-Wall", "-Wextra", "-o"])
            .arg(&bin)
            .arg(workspace::root().join(source)),
    )?;
    Ok(bin)
}

/// The test fixture, whose `stacks` mode reads the clock from 4096 stacks.
fn compile_fixture(bench_dir: &Path) -> Result<PathBuf> {
    let bin = bench_dir.join("stack_tree_fixture");
    process::run(
        Command::new("gcc")
            .args(["-O1", "-fno-omit-frame-pointer", "-o"])
            .arg(&bin)
            .arg(workspace::root().join("tests/fixtures/syscall_fixture.c")),
    )?;
    Ok(bin)
}

struct WorkloadRun {
    pid: u32,
    cpu_ns_per_call: f64,
    wall_ns_per_call: f64,
}

fn run_workload(loop_bin: &Path, iterations: u64, workload: &Workload) -> Result<WorkloadRun> {
    let child = Command::new(loop_bin)
        .arg(iterations.to_string())
        .arg(workload.mode)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {}", loop_bin.display()))?;
    let pid = child.id();
    let output = child.wait_with_output()?;
    let (cpu_ns_per_call, wall_ns_per_call) = parse_loop_output(loop_bin, &output)?;
    Ok(WorkloadRun {
        pid,
        cpu_ns_per_call,
        wall_ns_per_call,
    })
}

/// (CPU ns per call, wall ns per call) from the loop's output line.
fn parse_loop_output(loop_bin: &Path, output: &std::process::Output) -> Result<(f64, f64)> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "{} failed ({}): {stdout}",
            loop_bin.display(),
            output.status
        );
    }
    let field = |name: &str| {
        stdout
            .split_whitespace()
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("no {name}= in {LOOP_NAME}'s output: {stdout:?}"))
    };
    Ok((field("cpu_ns_per_call")?, field("ns_per_call")?))
}

/// The `-p` row's process: idle (no clock read) until its stdin closes, then
/// TARGET_READS clock syscalls, then exit.
struct IdleTarget {
    child: Option<std::process::Child>,
}

impl IdleTarget {
    fn start(loop_bin: &Path) -> Result<IdleTarget> {
        let child = Command::new(loop_bin)
            .args([&TARGET_READS.to_string(), "syscall", "wait"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start {}", loop_bin.display()))?;
        Ok(IdleTarget { child: Some(child) })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Lets it make its reads and waits for it.
    fn release(mut self, loop_bin: &Path) -> Result<()> {
        let mut child = self.child.take().expect("running");
        drop(child.stdin.take());
        let output = child.wait_with_output()?;
        parse_loop_output(loop_bin, &output).map(|_| ())
    }
}

impl Drop for IdleTarget {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How long a `-p` recording may take to write its output once its process exited.
const SELF_STOP_TIMEOUT: Duration = Duration::from_secs(30);

fn measure(
    scenario: &Scenario,
    loop_bin: &Path,
    base_iterations: u64,
    paths: &Paths,
    round: u32,
) -> Result<Sample> {
    let iterations = scenario.workload.iterations(base_iterations);
    let Some(tracer) = &scenario.tracer else {
        let run = run_workload(loop_bin, iterations, scenario.workload)?;
        return Ok(Sample {
            ns_per_call: run.cpu_ns_per_call,
            wall_ns_per_call: run.wall_ns_per_call,
            tracer: None,
        });
    };
    let target = if tracer.follows_target() {
        Some(IdleTarget::start(loop_bin)?)
    } else {
        None
    };
    let stem = format!("{}-run{round}", slug(&scenario.name));
    // perf.data goes here (gigabytes at a million stacks), and with it.
    let scratch = tempfile::Builder::new()
        .prefix("clockprof-bench-")
        .tempdir()
        .context("could not create a temporary directory")?;
    let (cmd, profile) = tracer.command(
        paths,
        &stem,
        target.as_ref().map(IdleTarget::pid),
        scratch.path(),
    );
    let command_line = format!("{cmd:?}");
    let daemon = match Daemon::start(&scenario.name, cmd, &tracer.ready_when()) {
        Ok(daemon) => daemon,
        // The row then says it traced nothing, rather than the whole bench
        // stopping or a ratio against a tracer that was never there.
        Err(err) => {
            eprintln!("xtask: warning: {err:#}");
            return Ok(Sample {
                ns_per_call: f64::NAN,
                wall_ns_per_call: f64::NAN,
                tracer: Some(TracerSample {
                    attach_error: Some(format!("{err:#}")),
                    cpu_ms_total: 0.0,
                    cpu_ms_during_workload: 0.0,
                    peak_rss_kib: 0,
                    counted: Counted::Off("not run: the tracer did not attach".into()),
                    lost: None,
                    output_bytes: None,
                    exited_cleanly: false,
                }),
            });
        }
    };
    let before = daemon.usage()?;
    let run = run_workload(loop_bin, iterations, scenario.workload)?;
    let after = daemon.usage()?;
    let target_pid = target.as_ref().map(IdleTarget::pid);
    let finished = match target {
        // clockprof stops by itself once its one process exited.
        Some(target) => {
            target.release(loop_bin)?;
            daemon.wait_then_stop(SELF_STOP_TIMEOUT)?
        }
        None => daemon.stop()?,
    };

    let mut log = fs::File::create(paths.run_dir.join(format!("{stem}.log")))?;
    writeln!(
        log,
        "$ {command_line}\n{}\n--- stderr ---\n{}",
        finished.stdout.join("\n"),
        finished.stderr.join("\n")
    )?;
    let exited_cleanly = finished.status.success() || tracer.dies_of_sigint(finished.status);
    if !exited_cleanly {
        eprintln!(
            "xtask: warning: {} exited with {} (see {stem}.log)",
            scenario.name, finished.status
        );
    }
    let Checked {
        counted,
        lost,
        output_bytes,
    } = check_counts(
        scenario,
        tracer,
        &finished,
        profile.as_deref(),
        run.pid,
        target_pid,
        iterations,
    );
    Ok(Sample {
        ns_per_call: run.cpu_ns_per_call,
        wall_ns_per_call: run.wall_ns_per_call,
        tracer: Some(TracerSample {
            attach_error: None,
            cpu_ms_total: after.cpu_ms,
            cpu_ms_during_workload: after.cpu_ms - before.cpu_ms,
            peak_rss_kib: after.peak_rss_kib,
            counted,
            lost,
            output_bytes,
            exited_cleanly,
        }),
    })
}

/// What a run's tracer reported, against what the workload did.
struct Checked {
    counted: Counted,
    lost: Option<Lost>,
    output_bytes: Option<u64>,
}

impl From<Counted> for Checked {
    fn from(counted: Counted) -> Checked {
        Checked {
            counted,
            lost: None,
            output_bytes: None,
        }
    }
}

/// The run's counts against what the workload (and the idle target) did.
fn check_counts(
    scenario: &Scenario,
    tracer: &Tracer,
    finished: &Finished,
    profile: Option<&Path>,
    loop_pid: u32,
    target_pid: Option<u32>,
    iterations: u64,
) -> Checked {
    let calls = iterations + scenario.workload.extra_reads;
    let function = scenario.workload.function;
    let judge = |seen: u64, expected: u64, what: String| {
        if seen == expected {
            Counted::Exact
        } else {
            Counted::Off(format!("{seen} of {expected} {what}"))
        }
    };
    match tracer {
        // bpftrace's stacks are raw addresses here: checked per process only.
        Tracer::Bpftrace { .. } => {
            let seen = bpftrace_count_for_pid(&finished.stdout, loop_pid);
            match scenario.expect {
                Expect::Samples => Counted::Samples(seen).into(),
                _ => judge(seen, calls, format!("calls of {}", comm_of(LOOP_NAME))).into(),
            }
        }
        Tracer::PerfDwarf { .. } => {
            let Some(data) = profile else {
                return Counted::Off("0: no perf.data".into()).into();
            };
            match perf_samples_of_pid(data, loop_pid) {
                Ok(kept) => Checked {
                    counted: Counted::Samples(kept),
                    lost: Some(Lost {
                        lost: calls.saturating_sub(kept),
                        of: calls,
                        what: "events",
                    }),
                    output_bytes: fs::metadata(data).ok().map(|m| m.len()),
                },
                Err(err) => Counted::Off(format!("0 of {calls}: {err:#}")).into(),
            }
        }
        Tracer::Clockprof { args, .. } => {
            let counts = match profile.map(ClockprofCounts::read) {
                Some(Ok(counts)) => counts,
                Some(Err(err)) => return Counted::Off(format!("0 of {calls}: {err:#}")).into(),
                None => return Counted::Off("0: no profile".into()).into(),
            };
            // Stacks are lost host-wide; of those, the loop's are nearly all
            // (events at 1 in N take a stack).
            let every = args
                .iter()
                .position(|a| *a == "--stack-every")
                .and_then(|i| args.get(i + 1)?.parse::<u64>().ok())
                .unwrap_or(1);
            let lost = Some(Lost {
                lost: counts.lost_user_stacks + counts.lost_dwarf_stacks,
                of: calls.div_ceil(every),
                what: "stacks",
            });
            let counted = match (scenario.expect, target_pid) {
                (Expect::Samples, _) => Counted::Samples(counts.of_pid(loop_pid)),
                (Expect::EveryCall, _) => {
                    let all = counts.of_pid(loop_pid);
                    let in_function = counts.of_pid_in(loop_pid, function);
                    if all == calls && in_function == iterations && counts.lost_events == 0 {
                        Counted::Exact
                    } else {
                        Counted::Off(format!(
                            "{all} of {calls} calls, {in_function} of {iterations} in \
                             {function}, {} events lost",
                            counts.lost_events
                        ))
                    }
                }
                (Expect::OnlyTarget, Some(target)) => {
                    let unfollowed = counts.of_pid(loop_pid);
                    let followed = counts.of_pid(target);
                    let in_function = counts.of_pid_in(target, function);
                    if unfollowed == 0 && followed == TARGET_READS && in_function == TARGET_READS {
                        Counted::Exact
                    } else {
                        Counted::Off(format!(
                            "{followed} of the followed process's {TARGET_READS} calls \
                             ({in_function} in {function}), {unfollowed} of the unfollowed \
                             loop's (0 expected)"
                        ))
                    }
                }
                (Expect::OnlyTarget, None) => Counted::Off("0: no process to follow".into()),
            };
            Checked {
                counted,
                // The -p row's stacks are the idle target's, not the loop's.
                lost: lost.filter(|_| target_pid.is_none()),
                output_bytes: None,
            }
        }
    }
}

/// The samples of `pid` in a perf.data: `perf script -F pid` prints one line
/// per sample, and unwinds nothing for it.
fn perf_samples_of_pid(data: &Path, pid: u32) -> Result<u64> {
    let output = Command::new("perf")
        .args(["script", "-F", "pid", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()
        .context("could not run perf script")?;
    ensure!(
        output.status.success(),
        "perf script -i {} failed ({})",
        data.display(),
        output.status
    );
    Ok(count_pid_lines(
        &String::from_utf8_lossy(&output.stdout),
        pid,
    ))
}

fn count_pid_lines(text: &str, pid: u32) -> u64 {
    let pid = pid.to_string();
    text.lines().filter(|l| l.trim() == pid).count() as u64
}

fn slug(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_file_stems() {
        assert_eq!(slug("clockprof -s syscall"), "clockprof-s-syscall");
        assert_eq!(slug("baseline (no tracer)"), "baseline-no-tracer");
    }

    #[test]
    fn the_loop_reports_cpu_and_wall_time_per_call() {
        use std::os::unix::process::ExitStatusExt;
        let output = |stdout: &str, code: i32| std::process::Output {
            status: std::process::ExitStatus::from_raw(code << 8),
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
        };
        let line = "mode=syscall iterations=10 ns_per_call=512.500 cpu_ns_per_call=300.250\n";
        assert_eq!(
            parse_loop_output(Path::new("loop"), &output(line, 0)).unwrap(),
            (300.25, 512.5)
        );
        assert!(parse_loop_output(Path::new("loop"), &output(line, 1)).is_err());
        let old = "mode=syscall iterations=10 ns_per_call=512.500\n";
        assert!(parse_loop_output(Path::new("loop"), &output(old, 0)).is_err());
    }

    #[test]
    fn perf_script_pid_lines_are_counted_per_pid() {
        assert_eq!(count_pid_lines(" 7020 \n 7020 \n  311 \n70200\n", 7020), 2);
    }

    #[test]
    fn compare_bin_is_label_and_path() {
        let bin = parse_compare_bin("before=/a/b=c").unwrap();
        assert_eq!(bin.label, "before");
        assert_eq!(bin.path, PathBuf::from("/a/b=c"));
        assert!(parse_compare_bin("/a/b").is_err());
        assert!(parse_compare_bin("=/a").is_err());
    }
}

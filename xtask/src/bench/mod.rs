//! `cargo xtask bench`: the added cost per traced `clock_gettime` syscall, for
//! clockprof and for bpftrace doing the same job, in one run on one machine
//! (published per-hook costs are only comparable within one run, KERNEL.md).
//!
//! Rounds interleave the scenarios (baseline, clockprof, bpftrace, baseline, ...)
//! so slow drift of the machine (frequency, noisy neighbours) spreads over every
//! row instead of biasing one. Each traced run starts a fresh tracer, so every
//! sample includes a full attach/detach and no state carries over.

mod daemon;
mod procfs;
mod report;
mod scenario;
mod top_cost;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;

use crate::setup::{self, SetupArgs};
use crate::{build, process, workspace};
use daemon::Daemon;
use scenario::{Paths, Scenario, Workload};

#[derive(Args)]
pub struct BenchArgs {
    /// Clock reads per workload run.
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    iterations: u64,
    /// Runs per scenario; the table reports the median.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Leave out the clockprof rows and skip building it (e.g. while it does not build).
    #[arg(long, conflicts_with = "clockprof_bin")]
    skip_clockprof: bool,
    /// Benchmark this clockprof binary instead of building target/release/clockprof
    /// (e.g. an older build, to compare versions).
    #[arg(long, value_name = "PATH")]
    clockprof_bin: Option<PathBuf>,
}

/// One workload run, with the tracer's numbers if one was attached.
pub struct Sample {
    pub ns_per_call: f64,
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
    pub events_seen: Option<u64>,
    pub exited_cleanly: bool,
}

const LOOP_SOURCE: &str = "tests/fixtures/bench_clock_loop.c";
const LOOP_NAME: &str = "bench_clock_loop";

pub fn run(args: &BenchArgs) -> Result<()> {
    ensure!(
        workspace::is_root(),
        "the bench loads eBPF programs (clockprof, bpftrace) and must run as root; \
         re-run it with sudo"
    );
    setup::run(&SetupArgs::default())?;
    let scenarios: Vec<Scenario> = scenario::scenarios()
        .into_iter()
        .filter(|s| !(args.skip_clockprof && s.tracer.as_ref().is_some_and(|t| t.is_clockprof())))
        .collect();
    let clockprof = match &args.clockprof_bin {
        Some(bin) => bin.clone(),
        None => workspace::release_bin(build::CLOCKPROF_BIN),
    };
    if !args.skip_clockprof {
        if args.clockprof_bin.is_none() {
            build::build_profiler().context(
                "could not build clockprof; fix the build, or pass --skip-clockprof to \
                 measure only the rows without it",
            )?;
        }
        ensure!(
            clockprof.is_file(),
            "{} does not exist; build the profiler or pass --skip-clockprof",
            clockprof.display()
        );
    }
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
    let loop_bin = compile_loop(&bench_dir)?;
    let paths = Paths {
        clockprof: &clockprof,
        run_dir: &run_dir,
        host_tracefs: tracefs,
    };

    // Untimed first run of each workload: page cache, CPU frequency ramp-up.
    for (i, s) in scenarios.iter().enumerate() {
        if scenarios[..i]
            .iter()
            .all(|earlier| earlier.workload != s.workload)
        {
            run_workload(&loop_bin, args.iterations, s.workload)?;
        }
    }
    let mut samples: Vec<Vec<Sample>> = scenarios.iter().map(|_| Vec::new()).collect();
    for round in 1..=args.runs {
        for (scenario, samples) in scenarios.iter().zip(&mut samples) {
            let sample = measure(scenario, &loop_bin, args.iterations, &paths, round)?;
            eprintln!(
                "xtask: bench run {round}/{}: {:<24} {:8.1} ns/call",
                args.runs, scenario.name, sample.ns_per_call
            );
            samples.push(sample);
        }
    }

    let rows = report::summarize(&scenarios, &samples, args.iterations);
    println!();
    println!(
        "Added cost per clock_gettime syscall ({} calls x {} runs, medians; logs in {})",
        args.iterations,
        args.runs,
        run_dir.display()
    );
    print!("{}", report::table(&rows));
    let top = if args.skip_clockprof {
        None
    } else {
        let fixture = compile_fixture(&bench_dir)?;
        let cost = top_cost::measure(&clockprof, &fixture).context("measuring clockprof top")?;
        cost.print();
        Some(cost)
    };
    let json_path = bench_dir.join("results.json");
    let mut json = report::json(&rows, args.iterations, args.runs);
    if let Some(top) = &top {
        json["clockprof_top"] = top.json();
    }
    fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("could not write {}", json_path.display()))?;
    println!("JSON: {}", json_path.display());
    Ok(())
}

fn compile_loop(bench_dir: &Path) -> Result<PathBuf> {
    let bin = bench_dir.join(LOOP_NAME);
    // Frame pointers so tracers walk the same user stack a real caller would have.
    process::run(
        Command::new("gcc")
            .args(["-O2", "-fno-omit-frame-pointer", "-Wall", "-Wextra", "-o"])
            .arg(&bin)
            .arg(workspace::root().join(LOOP_SOURCE)),
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
    ns_per_call: f64,
}

fn run_workload(loop_bin: &Path, iterations: u64, workload: &Workload) -> Result<WorkloadRun> {
    let child = Command::new(loop_bin)
        .arg(iterations.to_string())
        .arg(workload.mode)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {}", loop_bin.display()))?;
    let pid = child.id();
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "{} failed ({}): {stdout}",
            loop_bin.display(),
            output.status
        );
    }
    let ns_per_call = stdout
        .split_whitespace()
        .find_map(|f| f.strip_prefix("ns_per_call="))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no ns_per_call= in {LOOP_NAME}'s output: {stdout:?}"))?;
    Ok(WorkloadRun { pid, ns_per_call })
}

fn measure(
    scenario: &Scenario,
    loop_bin: &Path,
    iterations: u64,
    paths: &Paths,
    round: u32,
) -> Result<Sample> {
    let Some(tracer) = &scenario.tracer else {
        let run = run_workload(loop_bin, iterations, scenario.workload)?;
        return Ok(Sample {
            ns_per_call: run.ns_per_call,
            tracer: None,
        });
    };
    let stem = format!("{}-run{round}", slug(scenario.name));
    let (cmd, profile) = tracer.command(paths, &stem);
    let daemon = match Daemon::start(scenario.name, cmd, &tracer.ready_when()) {
        Ok(daemon) => daemon,
        // The row then says it traced nothing, rather than the whole bench
        // stopping or a ratio against a tracer that was never there.
        Err(err) => {
            eprintln!("xtask: warning: {err:#}");
            return Ok(Sample {
                ns_per_call: f64::NAN,
                tracer: Some(TracerSample {
                    attach_error: Some(format!("{err:#}")),
                    cpu_ms_total: 0.0,
                    cpu_ms_during_workload: 0.0,
                    peak_rss_kib: 0,
                    events_seen: None,
                    exited_cleanly: false,
                }),
            });
        }
    };
    let before = daemon.usage()?;
    let run = run_workload(loop_bin, iterations, scenario.workload)?;
    let after = daemon.usage()?;
    let finished = daemon.stop()?;

    fs::write(
        paths.run_dir.join(format!("{stem}.stdout")),
        finished.stdout.join("\n"),
    )?;
    fs::write(
        paths.run_dir.join(format!("{stem}.stderr")),
        finished.stderr.join("\n"),
    )?;
    if !finished.status.success() {
        eprintln!(
            "xtask: warning: {} exited with {} after SIGINT (see {}.stderr)",
            scenario.name, finished.status, stem
        );
    }
    let events_seen =
        tracer.events_seen(&finished, profile.as_deref(), run.pid, &comm_of(LOOP_NAME));
    Ok(Sample {
        ns_per_call: run.ns_per_call,
        tracer: Some(TracerSample {
            attach_error: None,
            cpu_ms_total: after.cpu_ms,
            cpu_ms_during_workload: after.cpu_ms - before.cpu_ms,
            peak_rss_kib: after.peak_rss_kib,
            events_seen,
            exited_cleanly: finished.status.success(),
        }),
    })
}

/// The kernel keeps 15 bytes of a process name (TASK_COMM_LEN 16).
fn comm_of(name: &str) -> String {
    name.chars().take(15).collect()
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
        assert_eq!(comm_of("bench_clock_loop"), "bench_clock_loo");
    }
}

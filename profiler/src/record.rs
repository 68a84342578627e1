//! `clockprof record`: checks the request, attaches the probes, runs COMMAND or
//! waits, then drives the one-way pipeline collect -> symbolize -> aggregate ->
//! export. Every early return drops what was set up, in reverse order, so no
//! probe stays attached and no partial output file remains.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use profiler_common::target;
use tokio::signal::unix::{signal, SignalKind};

use crate::aggregate::{Profile, RecordingInfo};
use crate::cli::RecordArgs;
use crate::export::{self, Format, OutputFile};
use crate::probes::{ProbeConfig, Probes};
use crate::proc_tracker::ProcTracker;
use crate::{collect, privileges, symbolize, target as command};

/// How often the mapping side-band is drained while recording, so its ring
/// buffers never fill on a host that starts many processes.
const DRAIN_INTERVAL: Duration = Duration::from_millis(100);

/// Why the recording stopped.
enum Stop {
    CommandExited(std::process::ExitStatus),
    DurationElapsed,
    /// Every process given with -p exited (as `perf record -p` does).
    TargetsExited,
    Signal(i32),
}

/// Whether `pid` still runs: present in /proc and not a zombie.
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

fn check_pids(pids: &[u32]) -> Result<()> {
    for &pid in pids {
        if pid == 0 || !process_alive(pid) {
            bail!("no process with PID {pid} exists");
        }
    }
    Ok(())
}

pub async fn record(args: RecordArgs) -> Result<i32> {
    privileges::require()?;
    check_pids(&args.pids)?;
    if let Some(secs) = args.duration {
        if !(secs > 0.0 && secs.is_finite()) {
            bail!("the duration -d must be a positive number of seconds, not {secs}");
        }
    }
    let output = match &args.output {
        Some(path) => {
            let format = Format::resolve(args.format, path)?;
            Some((OutputFile::create(path)?, format))
        }
        None => None,
    };
    let has_command = !args.command.is_empty();
    let filter_by_pid = !args.all && (!args.pids.is_empty() || has_command);

    // The side-band must be open before the /proc snapshots and before any
    // process we profile can start, so no mapping falls in between.
    let mut tracker = ProcTracker::start()
        .context("could not open the perf side-band that tracks process mappings")?;
    let mut probes = Probes::load(&ProbeConfig {
        filter_by_pid,
        follow_children: has_command,
        count_entries: args.count_entries,
        stack_entries: args.stack_entries,
    })?;
    for &pid in &args.pids {
        probes.add_target(pid, target::ONLY)?;
    }
    probes.attach(&args.sources.0, args.backend)?;
    if filter_by_pid {
        args.pids.iter().for_each(|&pid| tracker.snapshot_pid(pid));
    } else {
        tracker.snapshot_all();
    }

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut child = if has_command {
        Some(command::spawn(&args.command, probes.targets_fd()?)?)
    } else {
        None
    };
    eprintln!(
        "clockprof: recording {} clock reads{}; Ctrl-C stops",
        args.sources,
        match (&args.pids[..], has_command) {
            (_, true) => " of COMMAND".to_string(),
            ([], false) => " host-wide".to_string(),
            (pids, false) => format!(
                " of PID {}",
                pids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    );

    let started = Instant::now();
    let deadline = args
        .duration
        .map(|secs| tokio::time::Instant::now() + Duration::from_secs_f64(secs));
    let mut drain = tokio::time::interval(DRAIN_INTERVAL);
    let stop = loop {
        tokio::select! {
            status = async { child.as_mut().unwrap().wait().await }, if child.is_some() => {
                break Stop::CommandExited(status.context("could not wait for COMMAND")?);
            }
            _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => {
                break Stop::DurationElapsed;
            }
            _ = sigint.recv() => break Stop::Signal(libc::SIGINT),
            _ = sigterm.recv() => break Stop::Signal(libc::SIGTERM),
            _ = drain.tick() => {
                tracker.drain();
                if !has_command && !args.pids.is_empty() && !args.pids.iter().any(|&p| process_alive(p)) {
                    break Stop::TargetsExited;
                }
            }
        }
    };
    let duration = started.elapsed();

    let collected = collect::collect(probes.ebpf())?;
    let attachments = probes.attachments().to_vec();
    drop(probes);
    tracker.drain();
    let samples = symbolize::symbolize(&collected.samples, &mut tracker);
    let profile = Profile::new(
        samples,
        RecordingInfo {
            sources: args.sources.0.clone(),
            attachments,
            duration,
            lost: collected.lost,
            lost_mapping_records: tracker.lost_records(),
        },
    );
    match output {
        Some((file, format)) => {
            let path = file.path().display().to_string();
            file.commit(&export::render(&profile, format)?)?;
            eprintln!(
                "clockprof: wrote {} clock reads in {} stacks to {path}",
                profile.total,
                profile.stacks.len()
            );
        }
        None => print!("{}", export::summary(&profile)),
    }
    if profile.info.lost.any() {
        eprintln!(
            "clockprof: warning: the kernel lost {} events and {} stacks; raise --count-entries / --stack-entries",
            profile.info.lost.events,
            profile.info.lost.user_stacks + profile.info.lost.kernel_stacks
        );
    }

    Ok(match stop {
        Stop::CommandExited(status) => command::exit_code(status),
        Stop::DurationElapsed | Stop::TargetsExited => 0,
        Stop::Signal(signal) => match child.as_mut() {
            // COMMAND shares our terminal, so it saw Ctrl-C itself; a SIGTERM
            // sent to us alone is passed on. Then we return its status.
            Some(child) => {
                if signal == libc::SIGTERM {
                    if let Some(pid) = child.id() {
                        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                    }
                }
                command::exit_code(child.wait().await?)
            }
            None => 0,
        },
    })
}

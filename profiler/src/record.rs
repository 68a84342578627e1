//! `clockprof record`: checks the request, attaches the probes, runs COMMAND or
//! waits, then drives the one-way pipeline collect -> symbolize -> aggregate ->
//! export. Every early return drops what was set up, in reverse order, so no
//! probe stays attached and no partial output file remains.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::signal::unix::{signal, SignalKind};

use crate::aggregate::{Profile, RecordingInfo};
use crate::cli::RecordArgs;
use crate::export::{self, Format, OutputFile};
use crate::session::{self, Session};
use crate::source::Source;
use crate::{symbolize, target as command};

/// Why the recording stopped.
enum Stop {
    CommandExited(std::process::ExitStatus),
    DurationElapsed,
    /// Every process given with -p exited (as `perf record -p` does).
    TargetsExited,
    Signal(i32),
}

pub async fn record(args: RecordArgs) -> Result<i32> {
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
    let mut session = Session::start(&args.probe.session_config(args.all, has_command))?;

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut child = if has_command {
        let targets_fd = session.probes.targets_fd()?;
        let sources = &args.probe.sources.0;
        Some(command::spawn(&args.command, targets_fd, |pid| {
            session.attach_for_command(sources, pid, &args.command[0])
        })?)
    } else {
        None
    };
    // The sources really recording: a default one the kernel cannot serve is out.
    let sources: Vec<Source> = args
        .probe
        .sources
        .0
        .iter()
        .copied()
        .filter(|s| !session.unavailable.iter().any(|(u, _)| u == s))
        .collect();
    eprintln!(
        "clockprof: recording {} clock reads{}; Ctrl-C stops",
        sources
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(","),
        match (&args.probe.pids[..], has_command) {
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
    let mut drain = tokio::time::interval(session::DRAIN_INTERVAL);
    let stop = loop {
        tokio::select! {
            status = async { (&mut child.as_mut().unwrap().exit).await }, if child.is_some() => {
                let status = status.context("could not wait for COMMAND")?;
                break Stop::CommandExited(status.context("could not wait for COMMAND")?);
            }
            _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => {
                break Stop::DurationElapsed;
            }
            _ = sigint.recv() => break Stop::Signal(libc::SIGINT),
            _ = sigterm.recv() => break Stop::Signal(libc::SIGTERM),
            _ = drain.tick() => {
                session.tracker.drain();
                if !has_command && !args.probe.pids.is_empty() && !args.probe.pids.iter().any(|&p| session::process_alive(p)) {
                    break Stop::TargetsExited;
                }
            }
        }
    };
    let duration = started.elapsed();

    let collected = session.collect()?;
    let attachments = session.attachments();
    // Detach before the slow part: symbolization needs only the tracker.
    let Session {
        probes,
        mut tracker,
        unavailable,
    } = session;
    drop(probes);
    tracker.drain();
    let samples = symbolize::symbolize(&collected.samples, &mut tracker);
    let profile = Profile::new(
        samples,
        RecordingInfo {
            sources,
            attachments,
            duration,
            lost: collected.lost,
            lost_mapping_records: tracker.lost_records(),
            sample_frequency: args
                .probe
                .sources
                .0
                .contains(&Source::Vdso)
                .then_some(args.probe.frequency),
            unavailable,
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
                    unsafe { libc::kill(child.pid as i32, libc::SIGTERM) };
                }
                command::exit_code((&mut child.exit).await??)
            }
            None => 0,
        },
    })
}

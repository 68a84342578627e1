//! `clockprof record`: checks the request, attaches the probes, runs COMMAND or
//! waits, draining the kernel's maps every second into a running total
//! (collect and normalize), then names the stacks and exports (symbolize ->
//! aggregate -> export). Every early return drops what was set up, in reverse order, so no
//! probe stays attached and no partial output file remains.

pub mod options;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::aggregate::{add_count, Profile, RecordingInfo};
use crate::export::{self, Existing, Format, OutputFile};
use crate::say::{note, say, warning};
use crate::session::command;
use crate::session::credentials;
use crate::session::wakeups::{Wakeup, Wakeups};
use crate::session::{self, Drained, Session};
use crate::symbolize;
use crate::symbolize::NormalizedSample;
use options::RecordArgs;

/// Why the recording stopped.
enum Stop {
    CommandExited(std::process::ExitStatus),
    DurationElapsed,
    /// Every process given with -p exited (as `perf record -p` does).
    TargetsExited,
    Signal(i32),
}

/// Where the profile goes.
enum Output {
    File(OutputFile, Format),
    /// `-o -`.
    Stdout(Format),
    Summary,
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .context("could not write the profile to standard output")
}

fn describe_target(args: &RecordArgs, user: &str) -> String {
    match (&args.probe.pids[..], args.command.is_empty()) {
        (_, false) => format!(" of COMMAND as {user}"),
        ([], true) => " host-wide".to_string(),
        (pids, true) => format!(
            " of PID {}",
            pids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

pub async fn record(args: RecordArgs) -> Result<i32> {
    Ok(record_profile(&args, Summary::Print).await?.exit_code)
}

/// Whether a recording without `-o` prints its summary (`check` prints its
/// budget table instead).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    Print,
    Skip,
}

/// A finished recording, its outputs written.
pub struct Recording {
    pub profile: Profile,
    /// What clockprof exits with: COMMAND's status where there is one.
    pub exit_code: i32,
}

/// Records as `record` does and writes its `-o` output, returning the profile
/// for more judging.
pub async fn record_profile(args: &RecordArgs, summary: Summary) -> Result<Recording> {
    // Everything that can be checked is, before anything is attached or
    // COMMAND started (the CLI bounds -d, -F and the map sizes).
    args.probe.check()?;
    let output = match &args.output {
        Some(path) if path.as_os_str() == "-" => {
            Output::Stdout(args.format.unwrap_or(options::STDOUT_FORMAT))
        }
        Some(path) => {
            let format = Format::resolve(args.format, path)?;
            Output::File(OutputFile::create(path, Existing::Replace)?, format)
        }
        None => Output::Summary,
    };
    let has_command = !args.command.is_empty();
    let run_as = if has_command {
        credentials::command_user(args.user.as_deref())?
    } else {
        None
    };
    let session_config = args.probe.session_config(args.all, has_command);
    let stack_every = session_config.stack_every;
    let mut session = Session::start(&session_config)?;

    command::watch_interrupt_origin()?;
    // Signals are caught from before COMMAND starts.
    let mut wakeups = Wakeups::new(
        &session,
        tokio::time::Instant::now() + session::MAP_DRAIN_INTERVAL,
        session::MAP_DRAIN_INTERVAL,
    )?;
    let mut child = if has_command {
        let targets_fd = session.probes.targets_fd()?;
        let sources = &args.probe.sources;
        Some(command::spawn(
            &args.command,
            targets_fd,
            run_as.as_ref(),
            |pid| {
                session.classify_command(pid, &args.command[0]);
                session.attach_for_command(sources, &args.command[0])
            },
        )?)
    } else {
        None
    };
    let sources = session.recording(&args.probe.sources.sources);
    let user = match &run_as {
        Some(user) => user.to_string(),
        None => credentials::current_user(),
    };
    let recording = format!(
        "recording {} clock reads{}",
        sources
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(","),
        describe_target(args, &user)
    );
    say!("{recording}; Ctrl-C stops");
    crate::host::notify::ready(&recording);

    // The summary names them; a profile written elsewhere is named here.
    if !matches!(output, Output::Summary) {
        for (source, why) in &session.unavailable {
            say!("the {source} source is skipped: {why}");
        }
    }
    crate::say::test_panic_point("record");

    let started = Instant::now();
    let deadline = args
        .duration
        .map(|secs| tokio::time::Instant::now() + Duration::from_secs_f64(secs));
    let mut totals = Totals::default();
    let stop = loop {
        tokio::select! {
            status = async { (&mut child.as_mut().unwrap().exit).await }, if child.is_some() => {
                let status = status.context("could not wait for COMMAND")?;
                break Stop::CommandExited(status.context("could not wait for COMMAND")?);
            }
            _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => {
                break Stop::DurationElapsed;
            }
            wakeup = wakeups.next() => match wakeup {
                Wakeup::Signal(signal) => break Stop::Signal(signal),
                Wakeup::DrainMaps => totals.add(session.drain()?),
                Wakeup::SideBand => {
                    session.drain_side_band();
                    if !has_command && !args.probe.pids.is_empty() && !args.probe.pids.iter().any(|&p| session::process_alive(p)) {
                        break Stop::TargetsExited;
                    }
                }
            },
        }
    };
    let duration = started.elapsed();
    // COMMAND starts stopping while the profile is written: it may not
    // outlive us, and its status is ours.
    match (&stop, &child) {
        (Stop::Signal(signal), Some(child)) => child.forward(*signal),
        (Stop::DurationElapsed, Some(child)) => child.signal(libc::SIGTERM),
        _ => {}
    }

    // What was counted up to now, the workload stopped.
    totals.add(session.drain()?);
    let attachments = session.attachments();
    let dwarf_processes = session.unwound_with_dwarf().into_iter().collect();
    // Detach before the slow part: naming needs only the tracker's files.
    let Session {
        probes,
        mut tracker,
        unavailable,
        kernel_functions,
        ..
    } = session;
    drop(probes);
    let samples = symbolize::StackSymbolizer::new(kernel_functions.clone())
        .name(totals.samples(), &mut tracker);
    let unmatched = tracker.files_not_in_overlay_layers();
    if unmatched > 0 {
        say!(
            "{unmatched} file(s) mapped through an overlay were found in none of its layers' \
             directories (not visible from here, or renamed within the overlay): their frames \
             are unnamed, as the overlay's own file cannot be told to be the one mapped"
        );
    }
    let lost = totals.lost;
    drop(totals);
    let profile = Profile::new(
        samples,
        RecordingInfo {
            sources,
            attachments,
            duration,
            lost,
            lost_mapping_records: tracker.lost_records(),
            sample_frequency: args
                .probe
                .sources
                .sources
                .iter()
                .any(|s| s.is_sampled())
                .then_some(args.probe.frequency),
            unavailable,
            kernel_functions,
            stack_every,
            dwarf_processes,
            clock: Some(crate::host::clocksource::ClockFacts::gather()),
        },
    );
    match output {
        Output::File(file, format) => {
            let path = file.path().display().to_string();
            file.commit(&format.render(&profile)?)?;
            say!(
                "wrote {} clock reads in {} stacks to {path}",
                profile.total,
                profile.stacks.len()
            );
        }
        Output::Stdout(format) => write_stdout(&format.render(&profile)?)?,
        Output::Summary if summary == Summary::Print => {
            // A terminal gone with SIGHUP takes the summary with it.
            let _ = write_stdout(export::summary(&profile).as_bytes());
        }
        Output::Summary => {}
    }
    let lost = profile.info.lost;
    if lost.dwarf_stacks > 0 {
        note!(
            "{} of the stacks to unwind with DWARF found the ring full (more than ~100,000 a second); their counts are exact, the stacks above the clock-reading function estimated (--stack-every N takes fewer)",
            lost.dwarf_stacks
        );
    }
    if (crate::collect::LostCounts {
        dwarf_stacks: 0,
        ..lost
    })
    .any()
    {
        warning!(
            "the kernel lost {} events and {} stacks; raise --count-entries / --stack-entries",
            profile.info.lost.events,
            profile.info.lost.user_stacks + profile.info.lost.kernel_stacks
        );
    }

    let exit_code = match (stop, child) {
        (Stop::CommandExited(status), _) => command::exit_code(status),
        (Stop::Signal(_) | Stop::DurationElapsed, Some(child)) => {
            command::exit_code(wait_for_command(child, &mut wakeups).await?)
        }
        _ => 0,
    };
    Ok(Recording { profile, exit_code })
}

/// Processes that exited during a recording keep their own PID in the
/// output up to this many; past it the oldest are merged per name, so a
/// churn of short processes costs memory per program, not per process.
const EXITED_KEPT_APART: usize = 1000;

/// Everything drained so far: the kernel's maps hold only what was counted
/// since the last drain. Live processes' samples are kept per pid, as are
/// the last EXITED_KEPT_APART processes that exited; older ones are merged
/// per name (`NormalizedSample::of_gone_process`).
#[derive(Default)]
struct Totals {
    live: HashMap<u32, HashMap<NormalizedSample, u64>>,
    exited: std::collections::VecDeque<HashMap<NormalizedSample, u64>>,
    gone: HashMap<NormalizedSample, u64>,
    lost: crate::collect::LostCounts,
}

impl Totals {
    fn add(&mut self, drained: Drained) {
        for (sample, count) in drained.samples {
            add_count(
                self.live
                    .entry(sample.pid)
                    .or_default()
                    .entry(sample)
                    .or_default(),
                count,
            );
        }
        for (pid, started_by) in drained.gone {
            let Some(samples) = self.live.get_mut(&pid) else {
                continue;
            };
            // A later process with this PID keeps its own samples live.
            let (ended, later): (HashMap<_, _>, HashMap<_, _>) = std::mem::take(samples)
                .into_iter()
                .partition(|(sample, _)| sample.start_time <= started_by);
            if later.is_empty() {
                self.live.remove(&pid);
            } else {
                *samples = later;
            }
            if ended.is_empty() {
                continue;
            }
            self.exited.push_back(ended);
            if self.exited.len() > EXITED_KEPT_APART {
                for (sample, count) in self.exited.pop_front().into_iter().flatten() {
                    add_count(
                        self.gone.entry(sample.of_gone_process()).or_default(),
                        count,
                    );
                }
            }
        }
        self.lost.add(&drained.lost);
    }

    fn samples(&self) -> impl Iterator<Item = (&NormalizedSample, u64)> + Clone {
        self.live
            .values()
            .flatten()
            .chain(self.exited.iter().flatten())
            .chain(&self.gone)
            .map(|(sample, &count)| (sample, count))
    }
}

/// After a stopping signal, COMMAND's status is ours. One that ignores the
/// signal it was passed gets SIGKILL at the next one.
async fn wait_for_command(
    mut child: command::Spawned,
    wakeups: &mut Wakeups,
) -> Result<std::process::ExitStatus> {
    loop {
        tokio::select! {
            status = &mut child.exit => {
                return status.context("could not wait for COMMAND")?.context("could not wait for COMMAND");
            }
            // The probes are gone: only a signal matters now.
            wakeup = wakeups.next() => if let Wakeup::Signal(_) = wakeup {
                child.signal(libc::SIGKILL);
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbolize::{ProcessIdentity, UserLocation};
    use std::sync::Arc;

    fn sample(pid: u32, comm: &Arc<ProcessIdentity>) -> NormalizedSample {
        NormalizedSample {
            pid,
            start_time: 0,
            process: Arc::clone(comm),
            read: crate::sources::ClockRead::new(
                profiler_common::sources::syscall::TIME,
                profiler_common::CLOCK_ID_NONE,
            ),
            user: Arc::from(vec![UserLocation::Unknown]),
            user_lost: false,
            sampled_out: false,
            unwound: false,
            exact_depth: 1,
            kernel: Arc::from(Vec::new()),
        }
    }

    /// Many runs of one program: each is kept per pid while it may still
    /// count and for the last EXITED_KEPT_APART that exited, then merged
    /// under its name, so the totals stay bounded whatever the churn.
    #[test]
    fn exited_processes_keep_their_pid_until_many_exited_then_merge_per_name() {
        let short = Arc::new(ProcessIdentity {
            comm: Some("short".into()),
            cgroup: None,
            interposers: Default::default(),
        });
        let mut totals = Totals::default();
        let runs = EXITED_KEPT_APART as u32 + 100;
        let last = 100 + runs - 1;
        for pid in 100..=last {
            totals.add(Drained {
                samples: vec![(sample(pid, &short), 2)],
                lost: Default::default(),
                gone: if pid > 100 {
                    vec![(pid - 1, 0)]
                } else {
                    vec![]
                },
            });
        }
        assert_eq!(totals.live.len(), 1);
        assert_eq!(totals.exited.len(), EXITED_KEPT_APART);
        assert_eq!(totals.gone.len(), 1);
        let all: Vec<(u32, u64)> = totals.samples().map(|(s, c)| (s.pid, c)).collect();
        assert_eq!(all.len(), EXITED_KEPT_APART + 2);
        assert!(all.contains(&(last, 2)), "the live one");
        assert!(
            all.contains(&(last - 1, 2)),
            "the last to exit keeps its pid"
        );
        let merged = 2 * u64::from(runs - 1 - EXITED_KEPT_APART as u32);
        assert!(all.contains(&(0, merged)), "the oldest merged: {merged}");
        assert_eq!(all.iter().map(|(_, c)| c).sum::<u64>(), 2 * u64::from(runs));
    }

    /// A PID reused while recording: the process gone and the one that has
    /// the PID now stay two, told apart by their start times.
    #[test]
    fn a_reused_pid_keeps_the_later_process_live() {
        let identity = |comm: &str| {
            Arc::new(ProcessIdentity {
                comm: Some(comm.into()),
                cgroup: None,
                interposers: Default::default(),
            })
        };
        let life = |start_time, comm| NormalizedSample {
            start_time,
            ..sample(7, &identity(comm))
        };
        let mut totals = Totals::default();
        totals.add(Drained {
            samples: vec![(life(100, "old"), 3), (life(200, "new"), 5)],
            lost: Default::default(),
            gone: vec![],
        });
        // The old life had begun by 150 and is forgotten.
        totals.add(Drained {
            samples: vec![],
            lost: Default::default(),
            gone: vec![(7, 150)],
        });
        let mut all: Vec<(u32, u64, String, u64)> = totals
            .samples()
            .map(|(s, c)| (s.pid, s.start_time, s.process.comm.clone().unwrap(), c))
            .collect();
        all.sort();
        assert_eq!(
            all,
            vec![
                (7, 100, "old".to_string(), 3),
                (7, 200, "new".to_string(), 5)
            ]
        );
        assert_eq!(totals.live[&7].len(), 1, "only the later life is live");
        assert_eq!(totals.exited.len(), 1);
    }
}

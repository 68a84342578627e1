//! `clockprof top`: attaches the probes, then every refresh drains the
//! kernel's maps, turns what was counted into rates and redraws; keys,
//! resizes and signals are served in between. Stacks are normalized as they
//! are drained and named only for the process the user drills into or
//! exports, and each only once.
//!
//! Every way out (q, Ctrl-C, SIGTERM, SIGHUP, an error, a panic) drops the
//! full-screen terminal, which restores it, and the session, which detaches
//! every probe.
//!
//! Its parts: `model` (rates, pure), `stacks`, `labels` and `export` (pure,
//! reaching the kernel and /proc through `model::Stages`), and the terminal
//! side: `app` (UI state), `keys`, `view`, `format`, `terminal`.

mod app;
mod export;
mod format;
mod keys;
mod labels;
mod model;
pub mod options;
mod stacks;
mod terminal;
mod view;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use crossterm::event::{Event, EventStream};
use futures_util::StreamExt;
use ratatui::backend::Backend;

use crate::aggregate::RecordingInfo;
use crate::host::clocksource::Clocksource;
use crate::say::say;
use crate::session::wakeups::{Wakeup, Wakeups};
use crate::session::Session;
use crate::symbolize::{NormalizedSample, StackSymbolizer, SymbolizedSample};
use crate::top::options::TopArgs;
use app::{App, Effect, Screen};
use export::Scope;
use keys::Action;
use labels::Labeler;
use model::{RateModel, Snapshot, Stages};
use stacks::{process_stacks, StackCache, StackRow};
use terminal::{FullScreen, Terminal};
use view::{Context, Data};

pub async fn top(args: TopArgs) -> Result<i32> {
    let refresh = check(&args)?;
    terminal::require_terminal()?;
    let mut top = Top::start(args, refresh)?;
    crate::host::notify::ready("showing the top clock readers");
    let mut screen = FullScreen::enter()?;
    crate::say::test_panic_point("top");
    let stop = top.run(&mut screen.terminal).await;
    drop(screen);
    match stop? {
        Stop::Quit | Stop::Signal => Ok(0),
        // The terminal is gone with its user: say why where it may still be
        // seen, without failing on a closed stderr.
        Stop::TerminalLost(err) => {
            say!("lost the terminal: {err}.");
            Ok(1)
        }
    }
}

/// Checks what can be checked before anything is attached; returns the
/// refresh interval.
fn check(args: &TopArgs) -> Result<Duration> {
    // The CLI bounds -i (cli::interval).
    let secs = args.interval;
    args.probe.check()?;
    if !args.export_dir.is_dir() {
        bail!(
            "the export directory {} does not exist; create it or pick another with --export-dir",
            args.export_dir.display()
        );
    }
    Ok(Duration::from_secs_f64(secs))
}

enum Stop {
    Quit,
    Signal,
    TerminalLost(std::io::Error),
}

/// The running view: the session and everything derived from it.
struct Top {
    app: App,
    session: Session,
    model: RateModel,
    labeler: Labeler,
    stacks: StackCache,
    symbolizer: StackSymbolizer,
    context: Context,
    /// Sources and hooks, for the title of exported flamegraphs.
    recording: RecordingInfo,
    export_dir: std::path::PathBuf,
    latest: Arc<Snapshot>,
    /// What the screen shows: `latest`, unless the view is frozen.
    shown: Arc<Snapshot>,
    started: Instant,
    last_refresh: Instant,
    /// Pids and stack ids on screen, in order, and rows per page, from the
    /// last frame drawn: what keys move through.
    process_ids: Vec<u64>,
    stack_ids: Vec<u64>,
    page: usize,
}

impl Top {
    /// Attaches the probes for arguments that passed `check`.
    fn start(args: TopArgs, refresh: Duration) -> Result<Top> {
        let session_config = args.probe.session_config(false, false);
        let session = Session::start(&session_config)?;
        let recording = RecordingInfo {
            sources: args.probe.sources.sources.clone(),
            attachments: session.attachments(),
            kernel_functions: session.kernel_functions.clone(),
            stack_every: session_config.stack_every,
            dwarf_processes: Default::default(),
            ..RecordingInfo::default()
        };
        let target = match &args.probe.pids[..] {
            [] => "host-wide".to_string(),
            pids => format!(
                "PID {}",
                pids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        };
        // A source the kernel refused everywhere (its warning went to stderr
        // before the screen was taken) counts nothing: say so, not "0/s". A
        // uprobe source with nothing to probe yet follows new processes.
        let recording_sources = session.recording(&args.probe.sources.sources);
        let (sources, unavailable) = args.probe.sources.sources.iter().partition(|&&s| {
            recording.attachments.iter().any(|a| a.source == s)
                || (s.uprobe_binary().is_some() && recording_sources.contains(&s))
        });
        let context = Context {
            sources,
            unavailable,
            backends: recording.backends(),
            clocksource: Clocksource::read(),
            target,
            refresh,
            kernel_functions: recording.kernel_functions.clone(),
        };
        Ok(Top {
            app: App::new(&context.sources),
            session,
            model: RateModel::new(refresh),
            labeler: Labeler::default(),
            stacks: StackCache::default(),
            symbolizer: StackSymbolizer::new(recording.kernel_functions.clone()),
            context,
            recording,
            export_dir: args.export_dir,
            latest: Arc::new(Snapshot::default()),
            shown: Arc::new(Snapshot::default()),
            started: Instant::now(),
            last_refresh: Instant::now(),
            process_ids: Vec::new(),
            stack_ids: Vec::new(),
            page: 10,
        })
    }

    async fn run(&mut self, terminal: &mut Terminal) -> Result<Stop> {
        let refresh = self.context.refresh;
        let mut events = EventStream::new();
        // The first refresh comes after a full interval: an earlier one would
        // turn a few milliseconds of counts into a noisy rate.
        let mut wakeups = Wakeups::new(
            &self.session,
            tokio::time::Instant::now() + refresh,
            refresh,
        )?;
        if let Err(err) = self.draw(terminal) {
            return Ok(Stop::TerminalLost(err));
        }
        loop {
            tokio::select! {
                wakeup = wakeups.next() => match wakeup {
                    Wakeup::Signal(_) => return Ok(Stop::Signal),
                    Wakeup::SideBand => {
                        self.session.drain_side_band();
                        continue;
                    }
                    Wakeup::DrainMaps => self.refresh()?,
                },
                event = events.next() => match event {
                    Some(Ok(Event::Key(key))) => {
                        let Some(action) = keys::action(key, self.app.input_mode()) else {
                            continue;
                        };
                        if self.act(action, terminal) == Effect::Quit {
                            return Ok(Stop::Quit);
                        }
                    }
                    Some(Ok(Event::Resize(..))) => {}
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => return Ok(Stop::TerminalLost(err)),
                    None => return Ok(Stop::TerminalLost(std::io::ErrorKind::UnexpectedEof.into())),
                },
            }
            if let Err(err) = self.draw(terminal) {
                return Ok(Stop::TerminalLost(err));
            }
        }
    }

    fn refresh(&mut self) -> Result<()> {
        let drained = self.session.drain()?;
        let now = Instant::now();
        let interval = now - std::mem::replace(&mut self.last_refresh, now);
        let labeler = &mut self.labeler;
        self.latest = self.model.update(
            drained.samples,
            drained.lost,
            interval,
            now - self.started,
            |pid, identity| labeler.label(pid, identity),
        );
        labeler.end_refresh();
        if !self.app.frozen {
            self.shown = Arc::clone(&self.latest);
        }
        self.context.clocksource = Clocksource::read();
        Ok(())
    }

    /// The drilled-in process's stacks, symbolizing those not seen before.
    fn stack_rows(&mut self) -> Vec<StackRow> {
        let Screen::Stacks { pid } = self.app.screen else {
            return Vec::new();
        };
        let keys = self.shown.keys_of(pid);
        let mut stages = SessionStages {
            session: &mut self.session,
            symbolizer: &self.symbolizer,
        };
        self.stacks
            .resolve(keys.iter().map(|k| &k.key), &mut stages);
        process_stacks(keys, &self.stacks)
    }

    /// Carries out one key's action; what is left to the caller is quitting.
    fn act<B: Backend>(&mut self, action: Action, terminal: &mut ratatui::Terminal<B>) -> Effect {
        let effect = self
            .app
            .handle(action, &self.process_ids, &self.stack_ids, self.page);
        if let Effect::Export(scope) = effect {
            self.export(terminal, scope);
        }
        if !self.app.frozen {
            self.shown = Arc::clone(&self.latest);
        }
        effect
    }

    fn draw<B: Backend>(&mut self, terminal: &mut ratatui::Terminal<B>) -> Result<(), B::Error> {
        let stacks = self.stack_rows();
        let shown = Arc::clone(&self.shown);
        let processes = self.app.visible_processes(&shown);
        self.process_ids = processes.iter().map(|p| u64::from(p.pid)).collect();
        self.stack_ids = stacks.iter().map(|s| s.id).collect();
        self.app.processes.sync(&self.process_ids);
        self.app.stacks.sync(&self.stack_ids);
        let data = Data {
            context: &self.context,
            snapshot: &shown,
            processes: &processes,
            stacks: &stacks,
        };
        let app = &mut self.app;
        let frame = terminal.draw(|frame| view::render(frame, app, &data))?;
        self.page = view::page_rows(frame.area.height);
        Ok(())
    }

    fn export<B: Backend>(&mut self, terminal: &mut ratatui::Terminal<B>, scope: Scope) {
        // Symbolizing everything can take a moment: say so first.
        self.app.set_status("exporting…".into(), false);
        let _ = self.draw(terminal);
        let info = RecordingInfo {
            duration: self.shown.elapsed,
            lost: self.shown.lost,
            lost_mapping_records: self.session.tracker.lost_records(),
            attachments: self.session.attachments(),
            ..self.recording.clone()
        };
        let exported = export::export(
            &self.shown,
            scope,
            &mut self.stacks,
            &mut SessionStages {
                session: &mut self.session,
                symbolizer: &self.symbolizer,
            },
            info,
            &self.export_dir,
        );
        match exported {
            Ok(exported) => self.app.set_status(
                format!(
                    "wrote {} reads to {} and {}",
                    exported.reads,
                    exported.svg.display(),
                    exported.folded.display()
                ),
                false,
            ),
            Err(err) => self.app.set_status(format!("export failed: {err:#}"), true),
        }
    }
}

/// The live view's `Stages`: the session's process tracker (the files it
/// opened), through the same naming stage as `record`.
struct SessionStages<'a> {
    session: &'a mut Session,
    symbolizer: &'a StackSymbolizer,
}

impl Stages for SessionStages<'_> {
    fn name(&mut self, samples: &[NormalizedSample]) -> Vec<SymbolizedSample> {
        self.symbolizer
            .name(samples.iter().map(|s| (s, 0)), &mut self.session.tracker)
    }
}

#[cfg(test)]
mod tests {
    //! The live view drawn from a real run: the C fixture making clock
    //! syscalls, real probes, rates and symbolized stacks, on ratatui's
    //! TestBackend. Needs root, like everything that attaches eBPF.

    use std::path::Path;
    use std::process::{Child, Command};

    use clap::Parser;
    use ratatui::backend::TestBackend;

    use super::*;

    /// `clockprof top`'s options alone, parsed as the command line does.
    #[derive(Parser)]
    struct TopCommandLine {
        #[command(flatten)]
        args: TopArgs,
    }

    /// `fixture_spin` making clock_gettime syscalls for a while.
    struct SpinFixture {
        child: Child,
        dir: tempfile::TempDir,
    }

    const FIXTURE_COMM: &str = "topfixture";

    impl SpinFixture {
        fn start() -> SpinFixture {
            let dir = tempfile::Builder::new()
                .prefix("clockprof-top-test-")
                .tempdir()
                .unwrap();
            let source =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/syscall_fixture.c");
            let exe = dir.path().join(FIXTURE_COMM);
            let status = Command::new("gcc")
                .args(["-O1", "-g", "-fno-omit-frame-pointer", "-o"])
                .arg(&exe)
                .arg(&source)
                .status()
                .expect("gcc runs");
            assert!(status.success(), "gcc failed on {}", source.display());
            let child = Command::new(&exe).args(["spin", "30"]).spawn().unwrap();
            SpinFixture { child, dir }
        }
    }

    impl Drop for SpinFixture {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn draws_a_real_fixture_run_in_80x24_and_drills_into_its_hot_function() {
        let fixture = SpinFixture::start();
        let pid = fixture.child.id().to_string();
        let cli = TopCommandLine::try_parse_from([
            "top",
            "-p",
            &pid,
            "-s",
            "syscall",
            "-i",
            "0.5",
            "--export-dir",
            fixture.dir.path().to_str().unwrap(),
        ])
        .unwrap();
        let args = cli.args;
        let refresh = check(&args).unwrap();
        // Everything below runs on this thread, which alone moves into the
        // private namespace where a host without tracefs gets one.
        crate::host::tracefs::prepare();
        let mut top = Top::start(args, refresh).expect("attaching the probes (run as root)");
        let mut terminal = ratatui::Terminal::new(TestBackend::new(80, 24)).unwrap();
        for _ in 0..2 {
            std::thread::sleep(Duration::from_millis(500));
            top.session.drain_side_band();
            top.refresh().unwrap();
        }

        top.draw(&mut terminal).unwrap();
        let screen = crate::top::terminal::screen_text(&terminal);
        let row = screen
            .lines()
            .find(|line| line.contains(&pid) && line.contains(FIXTURE_COMM))
            .unwrap_or_else(|| panic!("no row for the fixture:\n{screen}"));
        assert!(row.starts_with('▶'), "the fixture is selected:\n{screen}");
        assert!(row.contains("100.0%"), "it makes every read:\n{screen}");
        // Hundreds of thousands of syscalls per second, in human units.
        let rate = top.shown.rate(top.shown.host.delta);
        assert!(rate > 10_000.0, "{rate}/s\n{screen}");
        assert!(row.contains(&crate::top::format::count(rate)), "{screen}");
        for expected in ["READS/S▼", "SHARE", "clocksource ", "backend ", "? help"] {
            assert!(screen.contains(expected), "{expected}:\n{screen}");
        }
        assert_eq!(screen.lines().count(), 24);

        top.act(Action::DrillIn, &mut terminal);
        top.draw(&mut terminal).unwrap();
        let screen = crate::top::terminal::screen_text(&terminal);
        assert!(screen.contains(&format!("PID {pid}")), "{screen}");
        let hottest = screen
            .lines()
            .find(|line| line.starts_with('▶'))
            .unwrap_or_else(|| panic!("no stack selected:\n{screen}"));
        assert!(hottest.contains("100.0%"), "{screen}");
        assert!(hottest.contains("fixture_spin ← main"), "{screen}");
        assert!(hottest.contains("clock_gettime MONOTONIC"), "{screen}");
        // The fixture's raw syscall instruction: a direct call.
        assert!(hottest.ends_with("direct"), "{screen}");
        assert!(screen.contains("▶ fixture_spin"), "{screen}");

        top.act(Action::ExportSelection, &mut terminal);
        let status = top.app.current_status().expect("export says where").clone();
        assert!(!status.error, "{}", status.text);
        let folded_path = std::fs::read_dir(fixture.dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| path.extension().is_some_and(|e| e == "folded"))
            .expect("a folded file was written");
        assert!(status.text.contains(folded_path.to_str().unwrap()));
        let folded = std::fs::read_to_string(&folded_path).unwrap();
        assert!(
            folded.lines().any(|line| line.starts_with(FIXTURE_COMM)
                && line.contains(";main;fixture_spin;[syscall clock_gettime MONOTONIC direct] ")),
            "{folded}"
        );

        top.act(Action::Back, &mut terminal);
        top.draw(&mut terminal).unwrap();
        assert!(crate::top::terminal::screen_text(&terminal).contains("COMMAND"));
    }
}

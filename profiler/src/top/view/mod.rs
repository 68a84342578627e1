//! Draws one frame: header, the process list or one process's stacks, and a
//! footer with the keys. Everything comes from the snapshot and the UI state;
//! drawing never touches the kernel.

mod processes;
mod stacks;

use std::time::Duration;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::app::{App, Screen};
use super::format::{count, duration, sparkline};
use crate::host::clocksource::Clocksource;
use crate::sources::Source;
use crate::top::model::{ProcessReads, Snapshot};
use crate::top::stacks::StackRow;

/// What stays the same for the whole session.
pub struct Context {
    /// Sources counting, in `-s` order.
    pub sources: Vec<Source>,
    /// Sources asked for that no hook could be attached for.
    pub unavailable: Vec<Source>,
    pub backends: Vec<String>,
    pub clocksource: Clocksource,
    /// `host-wide` or `PID 12,34`.
    pub target: String,
    pub refresh: Duration,
    /// The kernel functions watched, by slot: they name kernel reads.
    pub kernel_functions: Vec<String>,
}

/// What one frame shows.
pub struct Data<'a> {
    pub context: &'a Context,
    pub snapshot: &'a Snapshot,
    /// Filtered and sorted.
    pub processes: &'a [&'a ProcessReads],
    /// The drilled-in process's stacks, best first.
    pub stacks: &'a [StackRow],
}

const HEADER_ROWS: u16 = 3;

/// Rows the list shows on a terminal `height` rows high: a page for PgUp/PgDn.
pub fn page_rows(height: u16) -> usize {
    height.saturating_sub(HEADER_ROWS + 2).into()
}

pub fn render(frame: &mut Frame, app: &mut App, data: &Data) {
    let area = frame.area();
    let footer = footer_lines(app, area.width);
    let [header_area, body, footer_area] = Layout::vertical([
        Constraint::Length(HEADER_ROWS),
        Constraint::Fill(1),
        Constraint::Length(footer.len() as u16),
    ])
    .areas(area);
    render_header(frame, header_area, app, data);
    match app.screen {
        Screen::Processes => processes::render(frame, body, app, data),
        Screen::Stacks { pid } => stacks::render(frame, body, app, data, pid),
    }
    frame.render_widget(Paragraph::new(footer), footer_area);
    if app.help {
        render_help(frame, area, app);
    }
}

fn key(text: &str) -> Span<'static> {
    Span::styled(text.to_string(), Style::new().bold().fg(Color::Cyan))
}

fn render_header(frame: &mut Frame, area: Rect, app: &App, data: &Data) {
    let snapshot = data.snapshot;
    let context = data.context;
    let host = &snapshot.host;
    let [first, second, third] = Layout::vertical([Constraint::Length(1); 3]).areas(area);

    let mut summary = vec![Span::styled(
        "clockprof top",
        Style::new().bold().fg(Color::Cyan),
    )];
    if app.frozen {
        summary.push(Span::raw("  "));
        summary.push(Span::styled(
            " FROZEN ",
            Style::new().bold().reversed().yellow(),
        ));
    }
    summary.extend([
        Span::raw("  "),
        Span::styled(count(snapshot.rate(host.delta)), Style::new().bold()),
        Span::raw(" reads/s"),
        Span::raw(format!(
            "  {} in {}",
            count(host.total as f64),
            duration(snapshot.elapsed)
        )),
    ]);
    if !app.filter.is_empty() && !app.editing_filter {
        summary.push(Span::raw("  filter "));
        summary.push(Span::styled(
            format!("\"{}\"", app.filter),
            Style::new().bold(),
        ));
    }
    let summary = Line::from(summary);
    let spark_width = first
        .width
        .saturating_sub(summary.width() as u16 + 2)
        .min(60);
    let [summary_area, spark_area] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(spark_width)]).areas(first);
    frame.render_widget(Paragraph::new(summary), summary_area);
    frame.render_widget(
        Paragraph::new(sparkline(&host.history, spark_width.into()).green()),
        spark_area,
    );

    let mut sources = Vec::new();
    for (i, source) in context.sources.iter().enumerate() {
        let delta = host.by_source.get(source).copied().unwrap_or(0);
        // Sampled sources count samples, not reads: say so.
        let unit = if source.is_sampled() { " samples" } else { "" };
        if i > 0 {
            sources.push(Span::raw(" · "));
        }
        sources.push(Span::raw(format!("{source} ")));
        sources.push(Span::styled(
            format!("{}{unit}/s", count(snapshot.rate(delta))),
            Style::new().bold(),
        ));
    }
    for source in &context.unavailable {
        sources.push(Span::raw(format!(" · {source} unavailable")).dim());
    }
    frame.render_widget(Paragraph::new(Line::from(sources)), second);

    let mut facts = vec![Span::raw("clocksource ")];
    let clocksource = context.clocksource.name.as_deref().unwrap_or("unknown");
    if context.clocksource.forces_syscalls() {
        facts.push(Span::styled(
            format!("{clocksource}: every clock read is a syscall!"),
            Style::new().bold().red(),
        ));
    } else {
        facts.push(Span::raw(clocksource.to_string()));
    }
    let lost = snapshot.lost;
    if lost.any() {
        facts.push(Span::raw("  lost "));
        facts.push(Span::styled(
            format!(
                "{} events, {} stacks",
                count(lost.events as f64),
                count((lost.user_stacks + lost.kernel_stacks) as f64)
            ),
            Style::new().yellow(),
        ));
    } else {
        facts.push(Span::raw("  lost 0"));
    }
    facts.push(Span::raw(format!(
        "  backend {}  {}  every {}s",
        context.backends.join(","),
        context.target,
        context.refresh.as_secs_f64()
    )));
    frame.render_widget(Paragraph::new(Line::from(facts)).dim(), third);
}

fn header_style() -> Style {
    Style::new().bold().bg(Color::DarkGray).fg(Color::White)
}

fn selected_style() -> Style {
    Style::new().add_modifier(Modifier::REVERSED)
}

/// A right-aligned cell.
fn right(text: String) -> Cell<'static> {
    Cell::from(Line::from(text).right_aligned())
}

fn sorted_title(title: &str, sorted: bool) -> String {
    if sorted {
        format!("{title}▼")
    } else {
        title.to_string()
    }
}

/// Widths shared by both tables.
const MARK: u16 = 1;
const NUMBER: u16 = 8;
const SHARE: u16 = 6;
const TOTAL: u16 = 6;

/// Keys first, so they are on screen whatever else is; a message replaces
/// them for a while and wraps rather than hiding where a file went.
fn footer_lines(app: &App, width: u16) -> Vec<Line<'static>> {
    if app.editing_filter {
        return vec![Line::from(vec![
            key("/"),
            Span::raw(app.filter.clone()),
            Span::raw("█").slow_blink(),
            Span::raw("   "),
            key("Enter"),
            Span::raw(" keep  "),
            key("Esc"),
            Span::raw(" clear"),
        ])];
    }
    if let Some(status) = app.current_status() {
        let style = if status.error {
            Style::new().bold().red()
        } else {
            Style::new().green()
        };
        return wrap(&status.text, width as usize, style, 3);
    }
    let items: &[(&str, &str)] = match app.screen {
        Screen::Processes => &[
            ("?", "help"),
            ("q", "quit"),
            ("↑↓", "move"),
            ("Enter", "stacks"),
            ("/", "filter"),
            ("s", "sort"),
            ("Space", "freeze"),
            ("e/E", "export"),
        ],
        Screen::Stacks { .. } => &[
            ("?", "help"),
            ("q", "quit"),
            ("↑↓", "move"),
            ("Esc", "back"),
            ("Space", "freeze"),
            ("e/E", "export"),
        ],
    };
    let length: usize = items
        .iter()
        .map(|(keys, what)| keys.chars().count() + 1 + what.len())
        .sum();
    // Two spaces between items where they fit, else one.
    let gap = if length + 2 * (items.len() - 1) <= width as usize {
        "  "
    } else {
        " "
    };
    let mut spans = Vec::new();
    for (i, (keys, what)) in items.iter().enumerate() {
        if i > 0 {
            spans.push(Span::raw(gap));
        }
        spans.push(key(keys));
        spans.push(Span::raw(format!(" {what}")));
    }
    vec![Line::from(spans)]
}

/// `text` in lines of `width` characters, at most `lines` of them.
fn wrap(text: &str, width: usize, style: Style, lines: usize) -> Vec<Line<'static>> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(width.max(1))
        .take(lines)
        .map(|chunk| Line::styled(chunk.iter().collect::<String>(), style))
        .collect()
}

fn render_help(frame: &mut Frame, area: Rect, app: &App) {
    let mut sorts = vec!["reads/s".to_string()];
    if app.sources.len() > 1 {
        sorts.push("each source".into());
    }
    sorts.extend(["total", "PID", "command"].map(String::from));
    let entries = [
        ("↑ ↓  k j", "move the selection".to_string()),
        ("PgUp PgDn g G", "page up, page down, first, last".into()),
        (
            "Enter",
            "the selected process's stacks, hottest first".into(),
        ),
        (
            "Esc",
            "back to the processes; there, clear the filter".into(),
        ),
        (
            "/",
            "filter by command, cgroup or PID (Enter keeps it)".into(),
        ),
        ("s", format!("cycle the sort: {}", sorts.join(", "))),
        ("Space", "freeze the view (counting goes on)".into()),
        (
            "e",
            "export the selected process as SVG and folded flamegraph".into(),
        ),
        (
            "E",
            "export every process as SVG and folded flamegraph".into(),
        ),
        ("q  Ctrl-C", "quit".into()),
    ];
    let mut lines: Vec<Line> = entries
        .iter()
        .map(|(keys, what)| {
            Line::from(vec![
                Span::styled(format!(" {keys:<14}"), Style::new().bold().fg(Color::Cyan)),
                Span::raw(what.clone()),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    lines.extend(
        [
            " READS/S  clock reads per second over the last refresh",
            " SHARE    part of all reads on the host (of the process's, for stacks)",
            " TOTAL    reads since clockprof top started",
            " HOT FRAME  the innermost named function of the program (marked ▶),",
            "            then its callers",
        ]
        .map(|text| Line::from(text).dim()),
    );
    for source in app.sources.iter().filter(|s| s.is_sampled()) {
        lines.push(
            Line::from(format!(
                " {source} counts cpu-clock samples in its functions, not every read"
            ))
            .dim(),
        );
    }
    let width = area.width.min(78);
    let height = (lines.len() as u16 + 2).min(area.height);
    let popup = area.centered(Constraint::Length(width), Constraint::Length(height));
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" clockprof top: keys (any key closes) ")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::*;
    use crate::symbolize::{Frame, StackState};
    use crate::top::keys::Action;
    use crate::top::model::{Label, Reads};
    use crate::top::stacks::SymbolizedStack;

    fn context(clocksource: &str, sources: &[Source]) -> Context {
        Context {
            sources: sources.to_vec(),
            unavailable: vec![Source::of(&profiler_common::sources::kernel::SPEC)],
            backends: vec!["tracepoint".into()],
            clocksource: Clocksource {
                name: Some(clocksource.into()),
            },
            target: "host-wide".into(),
            refresh: Duration::from_secs(1),
            kernel_functions: Vec::new(),
        }
    }

    fn snapshot() -> Snapshot {
        let process = |pid, comm: &str, delta| ProcessReads {
            pid,
            label: Label {
                comm: comm.into(),
                group: Some("docker:0123456789ab".into()),
                // The idle one makes its clock calls through libfaketime.
                interposer: (pid == 7).then(|| "libfaketime.so.1".to_string()),
            },
            reads: Reads {
                delta,
                total: delta * 10,
                by_source: [(Source::of(&profiler_common::sources::syscall::SPEC), delta)].into(),
                history: vec![delta; 60],
            },
        };
        Snapshot {
            interval: Duration::from_secs(1),
            elapsed: Duration::from_secs(75),
            processes: vec![process(4242, "busy", 1_200_000), process(7, "idle", 3)],
            host: Reads {
                delta: 1_200_003,
                total: 12_000_030,
                by_source: [(
                    Source::of(&profiler_common::sources::syscall::SPEC),
                    1_200_003,
                )]
                .into(),
                history: vec![1_200_003; 60],
            },
            ..Snapshot::default()
        }
    }

    fn stack_rows() -> Vec<StackRow> {
        let frame = |function: &str, kernel| Frame {
            function: function.into(),
            module: Some(if kernel { "kernel" } else { "/srv/busy" }.into()),
            kernel,
        };
        vec![StackRow {
            id: 1,
            read: crate::sources::ClockRead::new(
                profiler_common::sources::syscall::CLOCK_GETTIME,
                1,
            ),
            stack: Arc::new(SymbolizedStack {
                frames: vec![
                    frame("main", false),
                    frame("poll_loop", false),
                    frame("do_syscall_64", true),
                ],
                state: StackState::Complete,
                exact_frames: 0,
            }),
            delta: 1_200_000,
            total: 12_000_000,
        }]
    }

    /// The column just after the first `text` in `line`.
    fn end_of(line: &str, text: &str) -> usize {
        let at = line
            .find(text)
            .unwrap_or_else(|| panic!("{text} in {line}"));
        line[..at].chars().count() + text.chars().count()
    }

    /// Draws the view like `top` does and returns the screen as text.
    fn draw(width: u16, height: u16, app: &mut App, context: &Context) -> String {
        let snapshot = snapshot();
        let processes = app.visible_processes(&snapshot);
        let ids: Vec<u64> = processes.iter().map(|p| u64::from(p.pid)).collect();
        app.processes.sync(&ids);
        let stacks = match app.screen {
            Screen::Stacks { .. } => stack_rows(),
            Screen::Processes => Vec::new(),
        };
        app.stacks
            .sync(&stacks.iter().map(|s| s.id).collect::<Vec<_>>());
        let data = Data {
            context,
            snapshot: &snapshot,
            processes: &processes,
            stacks: &stacks,
        };
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| render(frame, app, &data)).unwrap();
        crate::top::terminal::screen_text(&terminal)
    }

    #[test]
    fn list_at_80x24_has_aligned_columns_and_every_key() {
        let context = context(
            "tsc",
            &[Source::of(&profiler_common::sources::syscall::SPEC)],
        );
        let screen = draw(80, 24, &mut App::new(&context.sources), &context);
        let lines: Vec<&str> = screen.lines().collect();
        assert!(
            lines[0].starts_with("clockprof top  1.2M reads/s  12.0M in 1:15"),
            "{screen}"
        );
        assert_eq!(
            lines[1].trim_end(),
            "syscall 1.2M/s · kernel unavailable",
            "{screen}"
        );
        assert!(
            lines[2].starts_with("clocksource tsc  lost 0  backend tracepoint"),
            "{screen}"
        );
        assert!(!screen.contains("syscall!"), "{screen}");
        let header = lines[3];
        let busy = lines[4];
        let idle = lines[5];
        assert!(busy.starts_with("▶    4242 busy"), "{screen}");
        // Numbers end in the column where their titles end.
        for (title, value) in [("PID", "4242"), ("READS/S▼", "1.2M"), ("SHARE", "100.0%")] {
            assert_eq!(
                end_of(header, title),
                end_of(busy, value),
                "{title}:\n{screen}"
            );
        }
        assert!(idle.contains("idle") && idle.contains("0.0%"), "{screen}");
        // An interposer is named beside the process it takes over.
        assert!(idle.contains("idle via libfa"), "{screen}");
        assert!(screen.contains("docker:0123456789ab"), "{screen}");
        let footer = lines[23];
        for key in [
            "? help",
            "q quit",
            "Enter stacks",
            "/ filter",
            "s sort",
            "Space freeze",
            "e/E export",
        ] {
            assert!(footer.contains(key), "{key}:\n{screen}");
        }
    }

    #[test]
    fn warns_when_the_clocksource_forces_syscalls() {
        let context = context(
            "hpet",
            &[Source::of(&profiler_common::sources::syscall::SPEC)],
        );
        let screen = draw(80, 24, &mut App::new(&context.sources), &context);
        assert!(
            screen.contains("clocksource hpet: every clock read is a syscall!"),
            "{screen}"
        );
    }

    #[test]
    fn stacks_show_the_hot_frame_with_its_callers() {
        let context = context(
            "tsc",
            &[Source::of(&profiler_common::sources::syscall::SPEC)],
        );
        let mut app = App::new(&context.sources);
        app.processes.sync(&[4242, 7]);
        app.handle(Action::DrillIn, &[4242, 7], &[], 10);
        let screen = draw(80, 24, &mut app, &context);
        assert!(
            screen.contains("PID 4242  busy  1.2M/s, 100.0% of host"),
            "{screen}"
        );
        let row = screen.lines().find(|l| l.starts_with('▶')).unwrap();
        assert!(row.contains("poll_loop ← main"), "{screen}");
        assert!(row.contains("clock_gettime MONOTONIC"), "{screen}");
        // Innermost first: the kernel frame, then the hot frame, marked.
        let detail: Vec<&str> = screen
            .lines()
            .skip_while(|l| !l.contains("stack 1 of 1"))
            .collect();
        assert!(
            detail[1].contains("[syscall clock_gettime MONOTONIC]"),
            "{screen}"
        );
        assert!(detail[2].contains("do_syscall_64 [k]"), "{screen}");
        assert!(detail[3].starts_with("▶ poll_loop"), "{screen}");
        assert!(detail[4].contains("main"), "{screen}");
        assert!(
            screen.lines().last().unwrap().contains("Esc back"),
            "{screen}"
        );
    }

    #[test]
    fn help_frozen_and_filter_show_where_they_should() {
        let context = context(
            "tsc",
            &[
                Source::of(&profiler_common::sources::syscall::SPEC),
                Source::of(&profiler_common::sources::vdso::SPEC),
            ],
        );
        let mut app = App::new(&context.sources);
        app.handle(Action::ToggleFreeze, &[], &[], 10);
        app.handle(Action::StartFilter, &[], &[], 10);
        app.handle(Action::FilterInput('z'), &[], &[], 10);
        let screen = draw(80, 24, &mut app, &context);
        assert!(
            screen.lines().next().unwrap().contains("FROZEN"),
            "{screen}"
        );
        assert!(screen.contains("no process matches the filter"), "{screen}");
        assert!(screen.lines().last().unwrap().starts_with("/z"), "{screen}");
        assert!(
            screen.lines().nth(1).unwrap().contains("vdso 0 samples/s"),
            "{screen}"
        );
        app.handle(Action::FilterCancel, &[], &[], 10);
        app.handle(Action::ToggleHelp, &[], &[], 10);
        let screen = draw(80, 24, &mut app, &context);
        for entry in ["Space", "freeze the view", "export every process", "Ctrl-C"] {
            assert!(screen.contains(entry), "{entry}:\n{screen}");
        }
    }

    #[test]
    fn any_size_draws_without_panicking() {
        let context = context(
            "tsc",
            &[
                Source::of(&profiler_common::sources::syscall::SPEC),
                Source::of(&profiler_common::sources::vdso::SPEC),
            ],
        );
        for (width, height) in [(1, 1), (10, 3), (40, 10), (80, 24), (250, 80)] {
            for screen in [Screen::Processes, Screen::Stacks { pid: 4242 }] {
                let mut app = App::new(&context.sources);
                app.screen = screen;
                app.help = width == 40;
                draw(width, height, &mut app, &context);
            }
        }
    }
}

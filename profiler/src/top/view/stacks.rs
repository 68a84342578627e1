//! One process's stacks: a table of them, best first, each named by its hot
//! frame and callers, and the selected one in full below it.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::{header_style, right, selected_style, sorted_title, Data, MARK, NUMBER, SHARE, TOTAL};
use crate::sources::Source;
use crate::symbolize::{StackState, UNKNOWN};
use crate::top::app::App;
use crate::top::format::{count, share, truncate};
use crate::top::stacks::StackRow;

/// The clock read a stack ends in, as its leaf names it without brackets
/// (and without its cause, which has a column of its own).
fn read_name(row: &StackRow, sources: &[Source], kernel_functions: &[String]) -> String {
    let read = crate::sources::ClockRead {
        cause: None,
        ..row.read
    };
    let leaf = read.leaf(kernel_functions);
    let leaf = leaf.trim_start_matches('[').trim_end_matches(']');
    // With one source its name is on every row; say it once, in the header.
    match leaf.split_once(' ') {
        Some((_, call)) if sources.len() == 1 => call.to_string(),
        _ => leaf.to_string(),
    }
}

pub fn render(frame: &mut Frame, area: Rect, app: &mut App, data: &Data, pid: u32) {
    let snapshot = data.snapshot;
    let stacks = data.stacks;
    let process = snapshot.process(pid);
    let process_delta = process.map_or(0, |p| p.reads.delta);

    let mut title = vec![Span::styled(format!("PID {pid}"), Style::new().bold())];
    match process {
        Some(process) => {
            title.push(Span::styled(
                format!("  {}", process.label.comm),
                Style::new().bold().fg(Color::Cyan),
            ));
            title.push(Span::raw(format!(
                "  {}/s, {} of host, {} in all, {} stack{}",
                count(snapshot.rate(process_delta)),
                share(snapshot.share(process_delta)),
                count(process.reads.total as f64),
                stacks.len(),
                if stacks.len() == 1 { "" } else { "s" }
            )));
            if let Some(group) = &process.label.group {
                title.push(Span::raw(format!("  {group}")).dim());
            }
        }
        None => title.push(Span::raw("  no clock reads in the last minute").dim()),
    }

    // The table takes at most half: the selected stack's frames need room.
    let half = (area.height.saturating_sub(1) / 2).max(2);
    let table_height = (stacks.len() as u16 + 1).clamp(2, half);
    let [title_area, table_area, detail_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(table_height),
        Constraint::Fill(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(Line::from(title)), title_area);

    let names: Vec<String> = stacks
        .iter()
        .map(|row| read_name(row, &data.context.sources, &data.context.kernel_functions))
        .collect();
    // Why each clock system call was one, where any row is one.
    // As wide as the longest shown, so that the clock read keeps its room.
    let cause_width = stacks
        .iter()
        .filter_map(|row| row.read.cause)
        .map(|cause| cause.name().len().max("CAUSE".len()) as u16)
        .max()
        .unwrap_or(0);
    let fixed = MARK + NUMBER + SHARE + TOTAL + 5 + cause_width + u16::from(cause_width > 0);
    let room = table_area.width.saturating_sub(fixed);
    let longest_read = names.iter().map(|n| n.chars().count()).max().unwrap_or(10) as u16;
    let read_width = longest_read.max(10).min(room.saturating_sub(20));
    let frame_width = room - read_width;
    let header = Row::new([
        Cell::from(""),
        right(sorted_title("READS/S", true)),
        right("SHARE".into()),
        right("TOTAL".into()),
        Cell::from("HOT FRAME"),
        Cell::from("CLOCK READ"),
        Cell::from("CAUSE"),
    ])
    .style(header_style());
    let height = table_height.saturating_sub(1) as usize;
    let offset = app.stacks.scroll(height);
    let selected = app.stacks.index;
    let rows = stacks
        .iter()
        .zip(&names)
        .enumerate()
        .skip(offset)
        .take(height)
        .map(|(index, (row, name))| {
            let (hot, callers) = hot_and_callers(row);
            let share = if process_delta > 0 {
                share(row.delta as f64 / process_delta as f64)
            } else {
                "-".into()
            };
            let row_style = if index == selected {
                selected_style()
            } else {
                Style::new()
            };
            Row::new([
                Cell::from(if index == selected { "▶" } else { " " }),
                right(count(snapshot.rate(row.delta))).bold(),
                right(share),
                right(count(row.total as f64)).dim(),
                Cell::from(frame_cell(hot, &callers, frame_width.into())),
                Cell::from(truncate(name, read_width.into())).magenta(),
                Cell::from(row.read.cause.map_or("", |cause| cause.name())).yellow(),
            ])
            .style(row_style)
        });
    let widths = [
        MARK,
        NUMBER,
        SHARE,
        TOTAL,
        frame_width,
        read_width,
        cause_width,
    ]
    .map(Constraint::Length);
    frame.render_widget(
        Table::new(rows, widths).header(header).column_spacing(1),
        table_area,
    );

    match stacks.get(selected) {
        Some(row) => render_stack_detail(frame, detail_area, row, selected, stacks.len(), data),
        None => {
            // Keys without rows: their stacks could not be read (the
            // footer says why).
            let message = if snapshot.keys_of(pid).is_empty() {
                "no clock reads counted for this process"
            } else {
                "no stacks to show"
            };
            frame.render_widget(
                Paragraph::new(Line::from(message).centered().dim()),
                detail_area,
            );
        }
    }
}

/// A stack's hot frame, and the functions that called it, nearest first.
fn hot_and_callers(row: &StackRow) -> (&str, Vec<&str>) {
    let frames = &row.stack.frames;
    match row.stack.hot_frame() {
        Some(hot) => (
            frames[hot].function.as_str(),
            frames[..hot]
                .iter()
                .rev()
                .filter(|f| !f.kernel)
                .map(|f| f.function.as_str())
                .collect(),
        ),
        None => (UNKNOWN, Vec::new()),
    }
}

/// `hot ← caller ← caller`, the hot frame standing out, cut to `width`.
fn frame_cell(hot: &str, callers: &[&str], width: usize) -> Line<'static> {
    let hot = truncate(hot, width);
    let room = width.saturating_sub(hot.chars().count());
    let chain: String = callers.iter().map(|c| format!(" ← {c}")).collect();
    Line::from(vec![
        Span::styled(hot, Style::new().bold().yellow()),
        Span::raw(truncate(&chain, room)).dim(),
    ])
}

/// The selected stack, innermost frame first, its hot frame marked.
fn render_stack_detail(
    frame: &mut Frame,
    area: Rect,
    row: &StackRow,
    index: usize,
    of: usize,
    data: &Data,
) {
    let stack = &row.stack;
    let hot = stack.hot_frame();
    let block = Block::new()
        .borders(Borders::TOP)
        .title(format!(
            " stack {} of {of}, innermost frame first ",
            index + 1
        ))
        .dim();
    let inner = block.inner(area);
    frame.render_widget(block, area);

    let function_width = stack
        .frames
        .iter()
        .map(|f| f.function.chars().count() + if f.kernel { 4 } else { 0 })
        .max()
        .unwrap_or(0)
        .min((inner.width as usize).saturating_sub(24).max(16));
    let mut lines = vec![Line::from(vec![
        Span::raw("  "),
        Span::styled(
            row.read.leaf(&data.context.kernel_functions),
            Style::new().magenta(),
        ),
    ])];
    for (depth, frame) in stack.frames.iter().enumerate().rev() {
        let is_hot = hot == Some(depth);
        let name = if frame.kernel {
            format!("{} [k]", frame.function)
        } else {
            frame.function.clone()
        };
        let module = frame
            .module
            .as_deref()
            .map(|m| m.rsplit('/').next().unwrap_or(m))
            .unwrap_or("");
        let style = if is_hot {
            Style::new().bold().yellow()
        } else if frame.kernel {
            Style::new().dim()
        } else {
            Style::new()
        };
        lines.push(Line::from(vec![
            Span::styled(if is_hot { "▶ " } else { "  " }, style),
            Span::styled(
                format!("{:<function_width$}", truncate(&name, function_width)),
                style,
            ),
            Span::styled(format!("  {module}"), Style::new().dim()),
        ]));
    }
    if stack.state == StackState::UserStackLost {
        lines.push(Line::from("  (the kernel could not capture the user stack)").dim());
    }
    let room = inner.height as usize;
    if lines.len() > room && room > 0 {
        let hidden = lines.len() - (room - 1);
        lines.truncate(room - 1);
        lines.push(Line::from(format!("  … {hidden} more frames towards main")).dim());
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

//! The process list: one row per process that read the clock within the last
//! minute, with the columns that fit the terminal.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Stylize;
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::{header_style, right, selected_style, sorted_title, Data, MARK, NUMBER, SHARE, TOTAL};
use crate::sources::Source;
use crate::top::app::{App, SortKey};
use crate::top::format::{count, share, sparkline, truncate};
use crate::top::model::{ProcessReads, Snapshot};

const PID: u16 = 7;
const COMMAND: u16 = 15;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Column {
    /// `▶` on the selected row, for terminals without colour.
    Mark,
    Pid,
    Command,
    /// Container or cgroup.
    Group,
    Rate,
    Source(Source),
    Share,
    Total,
    Spark,
}

impl Column {
    fn title(self, sort: SortKey) -> Cell<'static> {
        match self {
            Column::Mark => Cell::from(""),
            Column::Pid => right(sorted_title("PID", sort == SortKey::Pid)),
            Column::Command => Cell::from(sorted_title("COMMAND", sort == SortKey::Command)),
            Column::Group => Cell::from("CGROUP"),
            Column::Rate => right(sorted_title("READS/S", sort == SortKey::Rate)),
            Column::Source(source) => {
                let name = truncate(&source.name().to_uppercase(), NUMBER as usize - 1);
                right(sorted_title(&name, sort == SortKey::Source(source)))
            }
            Column::Share => right("SHARE".into()),
            Column::Total => right(sorted_title("TOTAL", sort == SortKey::Total)),
            Column::Spark => Cell::from("LAST MINUTE"),
        }
    }

    fn cell(
        self,
        process: &ProcessReads,
        snapshot: &Snapshot,
        selected: bool,
        width: u16,
    ) -> Cell<'static> {
        let reads = &process.reads;
        match self {
            Column::Mark => Cell::from(if selected { "▶" } else { " " }),
            Column::Pid => right(process.pid.to_string()),
            // An interposer is named beside the name: every clock read of
            // the process pays for its code.
            Column::Command => match &process.label.interposer {
                Some(library) => Cell::from(truncate(
                    &format!("{} via {library}", process.label.comm),
                    width.into(),
                ))
                .yellow(),
                None => Cell::from(truncate(&process.label.comm, width.into())),
            },
            Column::Group => {
                let group = process.label.group.as_deref().unwrap_or("");
                Cell::from(truncate(group, width.into())).dim()
            }
            Column::Rate => right(count(snapshot.rate(reads.delta))).bold(),
            Column::Source(source) => {
                let delta = reads.by_source.get(&source).copied().unwrap_or(0);
                right(count(snapshot.rate(delta)))
            }
            Column::Share => right(share(snapshot.share(reads.delta))),
            Column::Total => right(count(reads.total as f64)).dim(),
            Column::Spark => Cell::from(sparkline(&reads.history, width.into())).green(),
        }
    }
}

/// The columns of a list `width` wide, in order, with their widths. Rate and
/// share always stay; then come the sparkline, the total, the group and the
/// per-source rates, each if it fits. Spare room goes to the group (names can
/// be long), then to a minute of sparkline, then to longer commands.
fn plan(width: u16, sources: &[Source], any_group: bool) -> Vec<(Column, u16)> {
    let mut left = width.saturating_sub(MARK + PID + COMMAND + NUMBER + SHARE + 4);
    let mut take = |needed: u16| {
        let fits = left >= needed;
        if fits {
            left -= needed;
        }
        fits
    };
    // Room for its title, "LAST MINUTE".
    let mut spark = if take(12) { 11 } else { 0 };
    let total = take(TOTAL + 1);
    let mut group = if any_group && take(13) { 12 } else { 0 };
    let per_source = sources.len() > 1 && take(sources.len() as u16 * (NUMBER + 1));
    let mut command = COMMAND;
    let mut grow = |width: &mut u16, up_to: u16| {
        if *width > 0 {
            let extra = up_to.saturating_sub(*width).min(left);
            *width += extra;
            left -= extra;
        }
    };
    grow(&mut group, 20);
    grow(&mut spark, 60);
    grow(&mut command, 24);
    grow(&mut group, 40);

    let mut columns = vec![
        (Column::Mark, MARK),
        (Column::Pid, PID),
        (Column::Command, command),
    ];
    if group > 0 {
        columns.push((Column::Group, group));
    }
    columns.push((Column::Rate, NUMBER));
    if per_source {
        columns.extend(sources.iter().map(|&s| (Column::Source(s), NUMBER)));
    }
    columns.push((Column::Share, SHARE));
    if total {
        columns.push((Column::Total, TOTAL));
    }
    if spark > 0 {
        columns.push((Column::Spark, spark));
    }
    columns
}

pub fn render(frame: &mut Frame, area: Rect, app: &mut App, data: &Data) {
    let any_group = data.processes.iter().any(|p| p.label.group.is_some());
    let columns = plan(area.width, &data.context.sources, any_group);
    let header =
        Row::new(columns.iter().map(|(column, _)| column.title(app.sort))).style(header_style());
    let height = area.height.saturating_sub(1) as usize;
    let offset = app.processes.scroll(height);
    let rows =
        data.processes
            .iter()
            .enumerate()
            .skip(offset)
            .take(height)
            .map(|(index, process)| {
                let selected = index == app.processes.index;
                let row =
                    Row::new(columns.iter().map(|&(column, width)| {
                        column.cell(process, data.snapshot, selected, width)
                    }));
                if selected {
                    row.style(selected_style())
                } else {
                    row
                }
            });
    let widths = columns.iter().map(|&(_, width)| Constraint::Length(width));
    frame.render_widget(
        Table::new(rows, widths).header(header).column_spacing(1),
        area,
    );

    if data.processes.is_empty() {
        let message = if app.filter.is_empty() {
            "no clock reads in the last minute"
        } else {
            "no process matches the filter (Esc clears it)"
        };
        let [_, line] =
            Layout::vertical([Constraint::Length(2), Constraint::Length(1)]).areas(area);
        frame.render_widget(Paragraph::new(Line::from(message).centered().dim()), line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widths(columns: &[(Column, u16)]) -> u16 {
        columns.iter().map(|(_, w)| w + 1).sum::<u16>() - 1
    }

    #[test]
    fn plan_fills_80_columns_and_grows_with_the_terminal() {
        let narrow = plan(
            80,
            &[Source::of(&profiler_common::sources::syscall::SPEC)],
            true,
        );
        assert_eq!(
            narrow,
            vec![
                (Column::Mark, 1),
                (Column::Pid, 7),
                (Column::Command, 15),
                (Column::Group, 19),
                (Column::Rate, 8),
                (Column::Share, 6),
                (Column::Total, 6),
                (Column::Spark, 11),
            ]
        );
        assert_eq!(widths(&narrow), 80);

        let sources = [
            Source::of(&profiler_common::sources::syscall::SPEC),
            Source::of(&profiler_common::sources::libc::SPEC),
            Source::of(&profiler_common::sources::vdso::SPEC),
        ];
        let wide = plan(160, &sources, true);
        for column in sources.map(Column::Source) {
            assert!(wide.iter().any(|&(c, _)| c == column), "{wide:?}");
        }
        assert!(wide.contains(&(Column::Group, 20)) && wide.contains(&(Column::Spark, 60)));
        assert!(widths(&wide) <= 160);

        // No group column where no process has one.
        assert!(!plan(
            80,
            &[Source::of(&profiler_common::sources::syscall::SPEC)],
            false
        )
        .iter()
        .any(|&(c, _)| c == Column::Group));
        // Too narrow for extras: the essentials stay.
        let tiny: Vec<Column> = plan(
            45,
            &[Source::of(&profiler_common::sources::syscall::SPEC)],
            true,
        )
        .into_iter()
        .map(|(c, _)| c)
        .collect();
        assert_eq!(
            tiny,
            [
                Column::Mark,
                Column::Pid,
                Column::Command,
                Column::Rate,
                Column::Share
            ]
        );
    }
}

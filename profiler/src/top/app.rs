//! What the user is looking at: which screen, which row, filter, sort,
//! frozen or not. Pure: actions in, effects out, for `top` to carry out.

use std::time::{Duration, Instant};

use super::keys::{Action, InputMode};
use crate::sources::Source;
use crate::top::export::Scope;
use crate::top::model::{ProcessReads, Snapshot};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    Processes,
    /// One process's stacks.
    Stacks {
        pid: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// Reads per second in the last interval.
    Rate,
    /// Reads per second of one source.
    Source(Source),
    /// Reads since the view started.
    Total,
    Pid,
    Command,
}

/// The selected row, followed by identity (pid, stack id) as rows reorder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub index: usize,
    pub id: Option<u64>,
    /// First row shown: kept across refreshes, so the list does not jump.
    pub offset: usize,
}

impl Cursor {
    /// Finds the selected row among `ids` (the rows in order); if it is gone,
    /// the selection stays at the same place.
    pub fn sync(&mut self, ids: &[u64]) {
        if let Some(index) = self.id.and_then(|id| ids.iter().position(|&i| i == id)) {
            self.index = index;
        }
        self.index = self.index.min(ids.len().saturating_sub(1));
        self.id = ids.get(self.index).copied();
    }

    fn move_to(&mut self, index: usize, ids: &[u64]) {
        self.index = index.min(ids.len().saturating_sub(1));
        self.id = ids.get(self.index).copied();
    }

    fn move_by(&mut self, rows: isize, ids: &[u64]) {
        self.move_to(self.index.saturating_add_signed(rows), ids);
    }

    /// The first row to show in `height` rows so that the selection is visible.
    pub fn scroll(&mut self, height: usize) -> usize {
        if height == 0 {
            return self.offset;
        }
        if self.index < self.offset {
            self.offset = self.index;
        } else if self.index >= self.offset + height {
            self.offset = self.index + 1 - height;
        }
        self.offset
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub text: String,
    pub error: bool,
    pub since: Instant,
}

/// How long a message stays in the footer.
const STATUS_TIME: Duration = Duration::from_secs(15);

/// What `top` must do after an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    Quit,
    Export(Scope),
}

#[derive(Clone, Debug)]
pub struct App {
    pub screen: Screen,
    pub processes: Cursor,
    pub stacks: Cursor,
    pub filter: String,
    pub editing_filter: bool,
    pub sort: SortKey,
    pub frozen: bool,
    pub help: bool,
    pub status: Option<Status>,
    /// The sources being counted, in `-s` order: one sort key each when
    /// there are several.
    pub sources: Vec<Source>,
}

impl App {
    pub fn new(sources: &[Source]) -> App {
        App {
            screen: Screen::Processes,
            processes: Cursor::default(),
            stacks: Cursor::default(),
            filter: String::new(),
            editing_filter: false,
            sort: SortKey::Rate,
            frozen: false,
            help: false,
            status: None,
            sources: sources.to_vec(),
        }
    }

    pub fn input_mode(&self) -> InputMode {
        if self.help {
            InputMode::Help
        } else if self.editing_filter {
            InputMode::Filter
        } else {
            InputMode::Normal
        }
    }

    pub fn set_status(&mut self, text: String, error: bool) {
        self.status = Some(Status {
            text,
            error,
            since: Instant::now(),
        });
    }

    /// The message to show now, if any.
    pub fn current_status(&self) -> Option<&Status> {
        self.status
            .as_ref()
            .filter(|status| status.since.elapsed() < STATUS_TIME)
    }

    fn sort_keys(&self) -> Vec<SortKey> {
        let mut keys = vec![SortKey::Rate];
        if self.sources.len() > 1 {
            keys.extend(self.sources.iter().map(|&s| SortKey::Source(s)));
        }
        keys.extend([SortKey::Total, SortKey::Pid, SortKey::Command]);
        keys
    }

    /// The processes to list, filtered and sorted.
    pub fn visible_processes<'a>(&self, snapshot: &'a Snapshot) -> Vec<&'a ProcessReads> {
        let filter = self.filter.to_lowercase();
        let mut rows: Vec<&ProcessReads> = snapshot
            .processes
            .iter()
            .filter(|p| filter.is_empty() || matches_filter(p, &filter))
            .collect();
        let source_rate = |p: &ProcessReads, s: Source| p.reads.by_source.get(&s).copied();
        rows.sort_by(|a, b| {
            let by_rate = b
                .reads
                .delta
                .cmp(&a.reads.delta)
                .then(b.reads.total.cmp(&a.reads.total));
            match self.sort {
                SortKey::Rate => by_rate,
                SortKey::Source(s) => source_rate(b, s).cmp(&source_rate(a, s)).then(by_rate),
                SortKey::Total => b.reads.total.cmp(&a.reads.total).then(by_rate),
                SortKey::Pid => a.pid.cmp(&b.pid),
                SortKey::Command => a.label.comm.cmp(&b.label.comm).then(by_rate),
            }
            .then(a.pid.cmp(&b.pid))
        });
        rows
    }

    /// Applies `action`. `process_ids` and `stack_ids` are the rows on screen,
    /// in order; `page` is how many fit.
    pub fn handle(
        &mut self,
        action: Action,
        process_ids: &[u64],
        stack_ids: &[u64],
        page: usize,
    ) -> Effect {
        let page = page.max(1) as isize;
        let (cursor, ids) = match self.screen {
            Screen::Processes => (&mut self.processes, process_ids),
            Screen::Stacks { .. } => (&mut self.stacks, stack_ids),
        };
        match action {
            Action::Up => cursor.move_by(-1, ids),
            Action::Down => cursor.move_by(1, ids),
            Action::PageUp => cursor.move_by(-page, ids),
            Action::PageDown => cursor.move_by(page, ids),
            Action::First => cursor.move_to(0, ids),
            Action::Last => cursor.move_to(usize::MAX, ids),
            Action::DrillIn => {
                if let (Screen::Processes, Some(pid)) = (self.screen, self.processes.id) {
                    self.screen = Screen::Stacks { pid: pid as u32 };
                    self.stacks = Cursor::default();
                }
            }
            Action::Back => match self.screen {
                Screen::Stacks { .. } => self.screen = Screen::Processes,
                Screen::Processes => self.filter.clear(),
            },
            Action::StartFilter => {
                self.screen = Screen::Processes;
                self.editing_filter = true;
            }
            // The list filters as one types.
            Action::FilterInput(c) => self.filter.push(c),
            Action::FilterDelete => {
                self.filter.pop();
            }
            Action::FilterAccept => self.editing_filter = false,
            Action::FilterCancel => {
                self.filter.clear();
                self.editing_filter = false;
            }
            Action::CycleSort => {
                let keys = self.sort_keys();
                let next = keys
                    .iter()
                    .position(|&k| k == self.sort)
                    .map_or(0, |i| i + 1);
                self.sort = keys[next % keys.len()];
            }
            Action::ToggleFreeze => self.frozen = !self.frozen,
            Action::ExportSelection => {
                let pid = match self.screen {
                    Screen::Stacks { pid } => Some(pid),
                    Screen::Processes => self.processes.id.map(|id| id as u32),
                };
                return match pid {
                    Some(pid) => Effect::Export(Scope::Process(pid)),
                    None => {
                        self.set_status("no process selected to export".into(), true);
                        Effect::None
                    }
                };
            }
            Action::ExportAll => return Effect::Export(Scope::All),
            Action::ToggleHelp => self.help = !self.help,
            Action::Quit => return Effect::Quit,
        }
        Effect::None
    }
}

/// Name (command or group) contains the filter, or the PID starts with it.
fn matches_filter(process: &ProcessReads, lowercase_filter: &str) -> bool {
    process.label.comm.to_lowercase().contains(lowercase_filter)
        || process
            .label
            .group
            .as_ref()
            .is_some_and(|g| g.to_lowercase().contains(lowercase_filter))
        || process.pid.to_string().starts_with(lowercase_filter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::{Label, Reads};

    fn process(pid: u32, comm: &str, delta: u64, total: u64) -> ProcessReads {
        ProcessReads {
            pid,
            label: Label {
                comm: comm.into(),
                group: (pid == 30).then(|| "docker:0123456789ab".to_string()),
                interposer: None,
            },
            reads: Reads {
                delta,
                total,
                ..Reads::default()
            },
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            processes: vec![
                process(10, "nginx", 5, 500),
                process(20, "fixture", 50, 60),
                process(30, "worker", 0, 900),
            ],
            ..Snapshot::default()
        }
    }

    fn pids(app: &App, snapshot: &Snapshot) -> Vec<u32> {
        app.visible_processes(snapshot)
            .iter()
            .map(|p| p.pid)
            .collect()
    }

    fn ids(app: &App, snapshot: &Snapshot) -> Vec<u64> {
        pids(app, snapshot).into_iter().map(u64::from).collect()
    }

    #[test]
    fn sorts_and_cycles_through_sort_keys() {
        let snapshot = snapshot();
        let mut app = App::new(&[Source::of(&profiler_common::sources::syscall::SPEC)]);
        assert_eq!(pids(&app, &snapshot), vec![20, 10, 30]);
        let mut seen = vec![];
        for _ in 0..4 {
            app.handle(Action::CycleSort, &[], &[], 10);
            seen.push((app.sort, pids(&app, &snapshot)));
        }
        assert_eq!(
            seen,
            vec![
                (SortKey::Total, vec![30, 10, 20]),
                (SortKey::Pid, vec![10, 20, 30]),
                (SortKey::Command, vec![20, 10, 30]),
                (SortKey::Rate, vec![20, 10, 30]),
            ]
        );
    }

    #[test]
    fn filters_by_name_group_or_pid() {
        let snapshot = snapshot();
        let mut app = App::new(&[Source::of(&profiler_common::sources::syscall::SPEC)]);
        app.handle(Action::StartFilter, &[], &[], 10);
        assert_eq!(app.input_mode(), InputMode::Filter);
        for c in "FIX".chars() {
            app.handle(Action::FilterInput(c), &[], &[], 10);
        }
        assert_eq!(pids(&app, &snapshot), vec![20]);
        app.handle(Action::FilterAccept, &[], &[], 10);
        assert_eq!(app.input_mode(), InputMode::Normal);
        assert_eq!(pids(&app, &snapshot), vec![20]);
        app.filter = "docker".into();
        assert_eq!(pids(&app, &snapshot), vec![30]);
        app.filter = "10".into();
        assert_eq!(pids(&app, &snapshot), vec![10]);
        // Esc on the list clears the filter.
        app.handle(Action::Back, &[], &[], 10);
        assert_eq!(pids(&app, &snapshot).len(), 3);
    }

    #[test]
    fn selection_follows_its_process_and_drills_in_and_back() {
        let mut snapshot = snapshot();
        let mut app = App::new(&[Source::of(&profiler_common::sources::syscall::SPEC)]);
        let list = ids(&app, &snapshot);
        app.processes.sync(&list);
        app.handle(Action::Down, &list, &[], 10);
        assert_eq!(app.processes.id, Some(10));
        // nginx overtakes the fixture: the selection stays on nginx.
        snapshot.processes[0].reads.delta = 500;
        let list = ids(&app, &snapshot);
        app.processes.sync(&list);
        assert_eq!((app.processes.index, app.processes.id), (0, Some(10)));
        app.handle(Action::Last, &list, &[], 10);
        assert_eq!(app.processes.id, Some(30));
        app.handle(Action::Down, &list, &[], 10);
        assert_eq!(app.processes.id, Some(30));
        app.handle(Action::DrillIn, &list, &[], 10);
        assert_eq!(app.screen, Screen::Stacks { pid: 30 });
        assert_eq!(
            app.handle(Action::ExportSelection, &list, &[], 10),
            Effect::Export(Scope::Process(30))
        );
        app.handle(Action::Back, &list, &[], 10);
        assert_eq!(app.screen, Screen::Processes);
        assert_eq!(
            app.handle(Action::ExportAll, &list, &[], 10),
            Effect::Export(Scope::All)
        );
        assert_eq!(app.handle(Action::Quit, &list, &[], 10), Effect::Quit);
    }

    #[test]
    fn an_empty_list_has_no_selection() {
        let mut app = App::new(&[Source::of(&profiler_common::sources::syscall::SPEC)]);
        app.processes.sync(&[]);
        app.handle(Action::Down, &[], &[], 10);
        app.handle(Action::DrillIn, &[], &[], 10);
        assert_eq!(app.screen, Screen::Processes);
        assert_eq!(
            app.handle(Action::ExportSelection, &[], &[], 10),
            Effect::None
        );
        assert!(app.current_status().unwrap().error);
    }

    #[test]
    fn scrolling_keeps_the_selection_visible() {
        let mut cursor = Cursor {
            index: 12,
            ..Cursor::default()
        };
        assert_eq!(cursor.scroll(5), 8);
        cursor.index = 10;
        assert_eq!(cursor.scroll(5), 8);
        cursor.index = 3;
        assert_eq!(cursor.scroll(5), 3);
    }
}

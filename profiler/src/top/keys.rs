//! Which key does what. The footer and the help screen describe these.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Up,
    Down,
    PageUp,
    PageDown,
    First,
    Last,
    DrillIn,
    Back,
    StartFilter,
    FilterInput(char),
    FilterDelete,
    FilterAccept,
    FilterCancel,
    CycleSort,
    ToggleFreeze,
    ExportSelection,
    ExportAll,
    ToggleHelp,
    Quit,
}

/// What the keyboard is typing into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputMode {
    Normal,
    Filter,
    Help,
}

pub fn action(key: KeyEvent, mode: InputMode) -> Option<Action> {
    // Without the kitty protocol only presses arrive; with it, releases would
    // act twice.
    if key.kind == KeyEventKind::Release {
        return None;
    }
    // Raw mode turns Ctrl-C into a key; it must quit from anywhere.
    if key.modifiers.contains(KeyModifiers::CONTROL) {
        return matches!(key.code, KeyCode::Char('c')).then_some(Action::Quit);
    }
    match mode {
        InputMode::Filter => match key.code {
            KeyCode::Enter => Some(Action::FilterAccept),
            KeyCode::Esc => Some(Action::FilterCancel),
            KeyCode::Backspace => Some(Action::FilterDelete),
            KeyCode::Char(c) => Some(Action::FilterInput(c)),
            _ => None,
        },
        // Any key leaves help, and only leaves it, except quitting.
        InputMode::Help => Some(match key.code {
            KeyCode::Char('q') => Action::Quit,
            _ => Action::ToggleHelp,
        }),
        InputMode::Normal => Some(match key.code {
            KeyCode::Up | KeyCode::Char('k') => Action::Up,
            KeyCode::Down | KeyCode::Char('j') => Action::Down,
            KeyCode::PageUp => Action::PageUp,
            KeyCode::PageDown => Action::PageDown,
            KeyCode::Home | KeyCode::Char('g') => Action::First,
            KeyCode::End | KeyCode::Char('G') => Action::Last,
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => Action::DrillIn,
            KeyCode::Esc | KeyCode::Left | KeyCode::Backspace | KeyCode::Char('h') => Action::Back,
            KeyCode::Char('/') => Action::StartFilter,
            KeyCode::Char('s') => Action::CycleSort,
            KeyCode::Char(' ') => Action::ToggleFreeze,
            KeyCode::Char('e') => Action::ExportSelection,
            KeyCode::Char('E') => Action::ExportAll,
            KeyCode::Char('?') | KeyCode::F(1) => Action::ToggleHelp,
            KeyCode::Char('q') => Action::Quit,
            _ => return None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn normal_keys() {
        let normal = |code| action(press(code), InputMode::Normal);
        assert_eq!(normal(KeyCode::Char('j')), Some(Action::Down));
        assert_eq!(normal(KeyCode::Up), Some(Action::Up));
        assert_eq!(normal(KeyCode::Enter), Some(Action::DrillIn));
        assert_eq!(normal(KeyCode::Esc), Some(Action::Back));
        assert_eq!(normal(KeyCode::Char('/')), Some(Action::StartFilter));
        assert_eq!(normal(KeyCode::Char('s')), Some(Action::CycleSort));
        assert_eq!(normal(KeyCode::Char(' ')), Some(Action::ToggleFreeze));
        assert_eq!(normal(KeyCode::Char('e')), Some(Action::ExportSelection));
        assert_eq!(normal(KeyCode::Char('E')), Some(Action::ExportAll));
        assert_eq!(normal(KeyCode::Char('?')), Some(Action::ToggleHelp));
        assert_eq!(normal(KeyCode::Char('q')), Some(Action::Quit));
        assert_eq!(normal(KeyCode::Char('x')), None);
    }

    #[test]
    fn filter_mode_types_letters_that_are_keys_elsewhere() {
        let filter = |code| action(press(code), InputMode::Filter);
        assert_eq!(filter(KeyCode::Char('q')), Some(Action::FilterInput('q')));
        assert_eq!(filter(KeyCode::Char('j')), Some(Action::FilterInput('j')));
        assert_eq!(filter(KeyCode::Backspace), Some(Action::FilterDelete));
        assert_eq!(filter(KeyCode::Enter), Some(Action::FilterAccept));
        assert_eq!(filter(KeyCode::Esc), Some(Action::FilterCancel));
    }

    #[test]
    fn ctrl_c_quits_from_every_mode_and_help_closes_on_any_key() {
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        for mode in [InputMode::Normal, InputMode::Filter, InputMode::Help] {
            assert_eq!(action(ctrl_c, mode), Some(Action::Quit));
        }
        assert_eq!(
            action(press(KeyCode::Char('x')), InputMode::Help),
            Some(Action::ToggleHelp)
        );
        assert_eq!(
            action(press(KeyCode::Char('q')), InputMode::Help),
            Some(Action::Quit)
        );
    }
}

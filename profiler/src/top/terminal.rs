//! `clockprof top`'s terminal: given back as it was found on every way out.

use std::io::{self, IsTerminal, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use anyhow::{bail, Context, Result};
use crossterm::cursor::Show;
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;

use crate::say;

pub type Terminal = ratatui::Terminal<CrosstermBackend<Stdout>>;

/// The full-screen terminal; dropping it restores the terminal, and a panic
/// restores it before its message is printed, so the message is readable.
pub struct FullScreen {
    pub terminal: Terminal,
}

/// Whether the terminal is ours: raw, on the alternate screen.
static FULL_SCREEN: AtomicBool = AtomicBool::new(false);

/// Gives the terminal back, once: a panic restores it from its hook, then
/// again as the guard drops, and leaving the alternate screen twice moves the
/// cursor back over the panic's message. Errors are ignored: with the terminal
/// gone (SIGHUP) there is nothing left to restore.
fn restore() {
    if FULL_SCREEN.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
        say::screen_is_yours();
    }
}

/// Fails unless keys come from and frames go to a terminal; checked before
/// anything is attached.
pub fn require_terminal() -> Result<()> {
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        bail!("top needs a terminal to draw in; use `clockprof record -o FILE` for a profile written to a file");
    }
    Ok(())
}

impl FullScreen {
    pub fn enter() -> Result<FullScreen> {
        static PANIC_HOOK: Once = Once::new();
        PANIC_HOOK.call_once(|| {
            let print_panic = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                print_panic(info);
            }));
        });
        FULL_SCREEN.store(true, Ordering::SeqCst);
        // A message on stderr would scribble over the view.
        say::screen_is_ours();
        let setup = || -> io::Result<Terminal> {
            enable_raw_mode()?;
            execute!(io::stdout(), EnterAlternateScreen)?;
            let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
            terminal.hide_cursor()?;
            terminal.clear()?;
            Ok(terminal)
        };
        match setup() {
            Ok(terminal) => Ok(FullScreen { terminal }),
            Err(err) => {
                restore();
                Err(err).context("could not set up the terminal for clockprof top")
            }
        }
    }
}

impl Drop for FullScreen {
    fn drop(&mut self) {
        // Tell ratatui the cursor is back, or its own drop would try again and
        // print an error to a terminal that may be gone.
        let _ = self.terminal.show_cursor();
        restore();
    }
}

/// A test terminal's screen as text, one line per row.
#[cfg(test)]
pub fn screen_text(terminal: &ratatui::Terminal<ratatui::backend::TestBackend>) -> String {
    let buffer = terminal.backend().buffer();
    buffer
        .content()
        .chunks(buffer.area.width.into())
        .map(|row| row.iter().map(|cell| cell.symbol()).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

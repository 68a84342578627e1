//! What clockprof says to the user that is not a command's own output, all
//! on stderr and all through here: `say!` (what it does, an error),
//! `warning!` (something the user asked for is not done as asked), `note!`
//! (something found on the way and left alone), each one line starting
//! `clockprof: `; the one line a panic prints, and the fault injection the
//! tests use to reach it.
//!
//! `top` owns the terminal while it draws: it calls `screen_is_ours`, and
//! until `screen_is_yours` nothing is said, so nothing scribbles over its view.
//!
//! The lowest layer: it imports nothing of the crate, so anything may use it.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether a full-screen view owns the terminal (see `screen_is_ours`).
static SCREEN_OURS: AtomicBool = AtomicBool::new(false);

/// A full-screen view now owns the terminal: what would be said is dropped.
pub fn screen_is_ours() {
    SCREEN_OURS.store(true, Ordering::Relaxed);
}

/// The terminal is given back: messages go to stderr again.
pub fn screen_is_yours() {
    SCREEN_OURS.store(false, Ordering::Relaxed);
}

/// The one line of a message of `kind` (`""`, `"warning: "`, `"note: "`).
fn line(kind: &str, message: std::fmt::Arguments) -> String {
    format!("clockprof: {kind}{message}")
}

/// Writes one message to stderr, unless a full-screen view owns the
/// terminal. Never fails: after SIGHUP the terminal is gone, and the
/// recording must still be written.
#[doc(hidden)]
pub fn emit(kind: &str, message: std::fmt::Arguments) {
    use std::io::Write;
    if SCREEN_OURS.load(Ordering::Relaxed) {
        return;
    }
    let _ = writeln!(std::io::stderr(), "{}", line(kind, message));
}

/// `clockprof: ...` on stderr: what clockprof does, or the error it stops on.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say::emit("", format_args!($($arg)*))
    };
}

/// `clockprof: warning: ...` on stderr: what the user asked for is not
/// done quite as asked (a source skipped in part, a binary left out).
macro_rules! warning {
    ($($arg:tt)*) => {
        $crate::say::emit("warning: ", format_args!($($arg)*))
    };
}

/// `clockprof: note: ...` on stderr: something found on the way and left
/// alone (a refused perf map, a debug file that does not match).
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::say::emit("note: ", format_args!($($arg)*))
    };
}

pub(crate) use {note, say, warning};

/// The one line a panic prints: a bug, said so, where, without a backtrace.
fn panic_line(payload: &(dyn std::any::Any + Send), place: Option<String>) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    line(
        "internal error: ",
        format_args!(
            "{}{}; this is a bug, please report it with the command line",
            message.replace(['\n', '\r'], " "),
            place.map(|at| format!(" at {at}")).unwrap_or_default()
        ),
    )
}

/// Fault injection for the end-to-end tests of the panic path (one line, a
/// restored terminal, nothing left behind): `CLOCKPROF_TEST_PANIC=STAGE`
/// panics at that stage as a bug would there. No argument reaches it, and
/// only a build with the `test-panic` feature (the tests' own) has it.
#[cfg(feature = "test-panic")]
pub fn test_panic_point(stage: &str) {
    if std::env::var_os("CLOCKPROF_TEST_PANIC").is_some_and(|v| v == stage) {
        panic!("deliberate panic at {stage} (CLOCKPROF_TEST_PANIC)");
    }
}

#[cfg(not(feature = "test-panic"))]
pub fn test_panic_point(_stage: &str) {}

/// A panic is a bug: say so in one line a user can paste into an issue,
/// without the backtrace, unless RUST_BACKTRACE asks for it. (top wraps this
/// hook with one that first gives the terminal back.)
pub fn install_panic_hook() {
    if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| !v.is_empty() && v != "0") {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        use std::io::Write;
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        let _ = writeln!(std::io::stderr(), "{}", panic_line(info.payload(), place));
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_is_one_line_starting_with_the_programs_name() {
        assert_eq!(
            line("", format_args!("wrote {}", "x.svg")),
            "clockprof: wrote x.svg"
        );
        assert_eq!(
            line("warning: ", format_args!("a {} b", 1)),
            "clockprof: warning: a 1 b"
        );
        assert_eq!(line("note: ", format_args!("n")), "clockprof: note: n");
    }

    #[test]
    fn a_panic_is_one_line_naming_a_bug() {
        let line = panic_line(&"index out of\nbounds", Some("src/x.rs:3".to_string()));
        assert_eq!(
            line,
            "clockprof: internal error: index out of bounds at src/x.rs:3; this is a bug, please report it with the command line"
        );
        let owned = panic_line(&String::from("boom"), None);
        assert!(
            owned.starts_with("clockprof: internal error: boom; this is a bug"),
            "{owned}"
        );
    }
}

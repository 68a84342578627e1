//! What clockprof says to the user that is not a command's own output: the
//! one line a panic prints, and the fault injection the tests use to reach it.

/// The one line a panic prints: a bug, said so, where, without a backtrace.
fn panic_line(payload: &(dyn std::any::Any + Send), place: Option<String>) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    format!(
        "clockprof: internal error: {}{}; this is a bug, please report it with the command line",
        message.replace(['\n', '\r'], " "),
        place.map(|at| format!(" at {at}")).unwrap_or_default()
    )
}

/// Fault injection for the end-to-end tests of the panic path (one line, a
/// restored terminal, nothing left behind): `CLOCKPROF_TEST_PANIC=STAGE`
/// panics at that stage as a bug would there. No argument reaches it.
pub fn test_panic_point(stage: &str) {
    if std::env::var_os("CLOCKPROF_TEST_PANIC").is_some_and(|v| v == stage) {
        panic!("deliberate panic at {stage} (CLOCKPROF_TEST_PANIC)");
    }
}

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

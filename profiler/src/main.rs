//! clockprof: finds which processes and call stacks read the clock most.
//!
//! Data flows one way, one module per stage:
//! probes (attach) -> kernel maps -> collect -> symbolize (with proc_tracker's
//! mappings) -> aggregate -> export, or for `top`: collect -> top's model
//! (rates) -> its view, symbolizing only what is looked at.

mod aggregate;
mod attach_queue;
mod attachment;
mod binaries;
mod check;
mod cli;
mod clocksource;
mod collect;
mod command;
mod container;
mod credentials;
mod debuginfo;
mod diff;
mod doctor;
mod export;
mod generations;
mod host_facts;
mod interrupt;
mod printable;
mod privileges;
mod probes;
mod proc_tracker;
mod record;
mod recorded;
mod safe_open;
mod serve;
mod session;
mod sources;
mod stack_scaling;
mod symbolize;
mod top;
mod tracefs;
mod unwind;

use clap::Parser;

use crate::cli::{Cli, Command};

/// Parses the command line. Help and version print as clap has them; a bad
/// argument is reported in clap's first line only, so every error is one
/// sentence (clap's usage block would follow it otherwise).
fn parse_command_line() -> Cli {
    Cli::try_parse().unwrap_or_else(|err| {
        use clap::error::ErrorKind;
        if matches!(
            err.kind(),
            ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        ) {
            err.exit();
        }
        let rendered = err.to_string();
        let first = rendered.lines().next().unwrap_or("error: bad arguments");
        eprintln!("{first}{}", valid_values(&err));
        std::process::exit(2);
    })
}

/// `; possible values: a, b` for a value outside a `ValueEnum` (such as -f's
/// table of formats): clap lists them below its first line, which is all
/// that is printed.
fn valid_values(err: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    match err.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(values)) if !values.is_empty() => {
            format!("; possible values: {}", values.join(", "))
        }
        _ => String::new(),
    }
}

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
fn install_panic_hook() {
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

fn main() {
    install_panic_hook();
    let cli = parse_command_line();
    // Before the runtime starts its threads: see tracefs::prepare.
    if matches!(
        cli.command,
        Command::Record(_)
            | Command::Top(_)
            | Command::Doctor(_)
            | Command::Check(_)
            | Command::Serve(_)
    ) {
        tracefs::prepare();
    }
    // serve answers HTTP on a worker thread while its read loop symbolizes
    // on this one; everything else runs on this thread alone.
    let builder = match cli.command {
        Command::Serve(_) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(1);
            builder
        }
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match { builder }.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("clockprof: could not start the async runtime: {err}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Record(args) => record::record(args).await,
            Command::Top(args) => top::top(args).await,
            Command::Doctor(args) => doctor::doctor(args),
            Command::Check(args) => check::check(args).await,
            Command::Diff(args) => diff::diff(args),
            Command::Serve(args) => serve::serve(args).await,
        }
    });
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("clockprof: {err:#}.");
            std::process::exit(1);
        }
    }
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

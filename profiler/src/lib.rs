//! clockprof: finds which processes and call stacks read the clock most.
//!
//! A library only so that one more program can read the command line:
//! `main.rs` (the `clockprof` binary) calls [`main`], and
//! `examples/generate_docs.rs` renders the man pages and shell completions
//! from [`command`], so they never drift from `--help`. Nothing else is
//! public.
//!
//! Data flows one way, one module per stage:
//! probes (attach) -> kernel maps -> collect -> symbolize (with proc_tracker's
//! mappings) -> aggregate -> export, or for `top`: collect -> top's model
//! (rates) -> its view, symbolizing only what is looked at.

// The stages, lowest first: a file imports only its own layer or lower
// (`cargo xtask lint`; docs/design.md).
mod aggregate;
mod attachment;
mod collect;
mod export;
#[cfg(test)]
mod fuzz;
mod host;
mod probes;
mod proc_tracker;
mod say;
mod session;
mod sources;
mod symbolize;
mod unwind;
mod version;
// The commands, and the command line that dispatches to them.
mod check;
mod cli;
mod doctor;
mod record;
mod serve;
mod top;

use clap::{CommandFactory, Parser};

use crate::say::say;

use crate::cli::{Cli, Command};

/// The command line as clap declares it (`cli.rs`): every command, option
/// and help text, for the man pages and shell completions.
pub fn command() -> clap::Command {
    Cli::command()
}

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

/// The `clockprof` program: parse the command line, run the command, exit
/// with its status.
pub fn main() {
    say::install_panic_hook();
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
        host::tracefs::prepare();
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
            say!("could not start the async runtime: {err}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Record(args) => record::record(args).await,
            Command::Top(args) => top::top(args).await,
            Command::Doctor(args) => doctor::doctor(args),
            Command::Check(args) => check::check(args).await,
            Command::Diff(args) => check::diff::diff(args),
            Command::Serve(args) => serve::serve(args).await,
        }
    });
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            say!("{err:#}.");
            std::process::exit(1);
        }
    }
}

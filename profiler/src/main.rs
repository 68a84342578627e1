//! clockprof: finds which processes and call stacks read the clock most.
//!
//! Data flows one way, one module per stage:
//! probes (attach) -> kernel maps -> collect -> symbolize (with proc_tracker's
//! mappings) -> aggregate -> export, or for `top`: collect -> live (rates) ->
//! tui, symbolizing only what is looked at.

mod aggregate;
mod binaries;
mod cli;
mod collect;
mod container;
mod doctor;
mod export;
mod host_facts;
mod kernel_btf;
mod live;
mod printable;
mod privileges;
mod probes;
mod proc_tracker;
mod record;
mod safe_open;
mod session;
mod source;
mod symbolize;
mod target;
mod top;
mod tui;

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
        eprintln!(
            "{}",
            rendered.lines().next().unwrap_or("error: bad arguments")
        );
        std::process::exit(2);
    })
}

fn main() {
    let cli = parse_command_line();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
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

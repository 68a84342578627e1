//! `clockprof record`'s options: the shared probe options, then what to
//! record for how long and where to write it.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Args;

use crate::export::Format;
use crate::session::options::{duration, ProbeArgs};

/// `clockprof record`.
#[derive(Args, Debug)]
pub struct RecordArgs {
    #[command(flatten)]
    pub probe: ProbeArgs,

    /// Profile every process on the host (the default without -p or COMMAND).
    #[arg(short = 'a', long = "all-cpus", conflicts_with = "pids")]
    pub all: bool,

    /// Stop after SECS seconds, at most a year (default: when COMMAND exits,
    /// or on Ctrl-C, SIGTERM or SIGHUP). COMMAND still running then gets
    /// SIGTERM.
    #[arg(short = 'd', long = "duration", value_name = "SECS", value_parser = duration)]
    pub duration: Option<f64>,

    #[arg(short = 'o', long = "output", value_name = "FILE", help = output_help())]
    pub output: Option<PathBuf>,

    /// Output format (default: the one -o's extension names).
    #[arg(short = 'f', long = "format", value_name = "FORMAT", value_enum)]
    pub format: Option<Format>,

    /// Run COMMAND as USER (a name or a numeric uid). Default: under sudo,
    /// the user who ran sudo (SUDO_UID, SUDO_GID, that user's groups and
    /// HOME); else as clockprof runs. `--user root` keeps root.
    #[arg(long, value_name = "USER", requires = "command")]
    pub user: Option<String>,

    /// Start COMMAND once every probe is attached, profile it and the processes
    /// it starts until it exits, then exit with its status. SIGTERM and SIGHUP
    /// are passed on to it (Ctrl-C reaches it from the terminal), and it gets
    /// SIGTERM if clockprof dies.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// `-o`'s help; the extensions come from the table of formats.
fn output_help() -> String {
    format!(
        "Write the profile here (format from -f, else from the extension: \
         {}), replacing a regular file atomically. Never through a symlink, \
         FIFO or device: those are refused (/dev/null too). Under sudo the \
         file is the user's who ran sudo, unless in a directory that user \
         cannot write. `-o -` writes to standard output ({} unless -f says \
         otherwise). Without -o, print a summary",
        Format::extensions(),
        STDOUT_FORMAT
    )
}

/// What `-o -` writes without `-f`: text a pipe can take.
pub const STDOUT_FORMAT: Format = crate::export::folded::FORMAT;

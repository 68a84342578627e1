//! `clockprof top`'s options.

use std::path::PathBuf;

use clap::Args;

use crate::session::options::{interval, ProbeArgs};

/// `clockprof top`.
#[derive(Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    pub probe: ProbeArgs,

    /// Refresh the view every SECS seconds (0.1 to 3600).
    #[arg(
        short = 'i',
        long = "interval",
        value_name = "SECS",
        default_value_t = 1.0,
        value_parser = interval
    )]
    pub interval: f64,

    /// Write flamegraphs exported with `e`/`E` into this directory.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub export_dir: PathBuf,
}

//! `clockprof check`'s options (`diff`'s are in diff.rs).

use std::path::PathBuf;

use clap::Args;

use crate::record::options::RecordArgs;

/// `clockprof check`: `record`'s options and COMMAND, then the budgets.
#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub record: RecordArgs,

    /// The clock reads of the stacks holding a frame that matches PATTERN (a
    /// frame name as in the folded output, or a glob) may not exceed COUNT.
    /// Counts are exact events; vdso samples are left out. `PATTERN=10ms`
    /// judges vdso samples as CPU time instead (needs -s naming vdso).
    /// Repeatable.
    #[arg(long = "max", value_name = "PATTERN=COUNT")]
    pub max: Vec<String>,

    /// As --max, in clock reads per second of COMMAND's run time. Repeatable.
    #[arg(long = "max-rate", value_name = "PATTERN=PER_SEC")]
    pub max_rate: Vec<String>,

    /// An earlier recording (folded or JSON, as clockprof writes them) to
    /// compare with, frame by frame.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,

    /// With --baseline: fail when a frame's clock reads grew by more than PCT
    /// percent (a frame the baseline lacks fails too).
    #[arg(long = "max-increase", value_name = "PCT")]
    pub max_increase: Option<f64>,

    /// A TOML file with the same rules: [max], [max-rate] tables of
    /// "PATTERN" = LIMIT, and [baseline] file and max-increase.
    #[arg(long, value_name = "FILE")]
    pub budget: Option<PathBuf>,

    /// Also write JUnit XML here: one test case per budget.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

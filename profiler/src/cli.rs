//! The command line, as ../shared/DESIGN.md fixes it (tests outside the project
//! rely on these names).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::attachment::Backend;
use crate::export::Format;
use crate::session::SessionConfig;
use crate::sources::{SourceSet, DEFAULT_SOURCES};

#[derive(Parser, Debug)]
#[command(
    name = "clockprof",
    version,
    about = "Find which processes and call stacks read the clock most (eBPF).",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Count clock reads per process and call stack, then write them in one
    /// of the output formats (see -f) or print a summary.
    Record(RecordArgs),
    /// Live full-screen view: processes by clock reads per second, their
    /// stacks, flamegraph export.
    Top(TopArgs),
    /// What this kernel and user allow: each hook type really tried (with the
    /// kernel's reason where refused), the clocksource, and which backend and
    /// program variant each source would use.
    Doctor(DoctorArgs),
    /// Record COMMAND as `record -- COMMAND` does, then judge its clock reads
    /// against budgets: exit 0 within every budget, 3 over one; COMMAND's own
    /// failure status wins over both.
    // check judges the COMMAND it runs: -p and -a are not offered (and are
    // refused if given anyway).
    #[command(mut_arg("pids", |a| a.hide(true)), mut_arg("all", |a| a.hide(true)))]
    Check(CheckArgs),
    /// What grew and shrank between two recordings (folded or JSON), by the
    /// functions that read the clock; -o writes a differential flamegraph.
    Diff(DiffArgs),
    /// Run as a daemon for a fleet: keep the probes attached host-wide and
    /// serve Prometheus metrics and pprof clock profiles over HTTP, and
    /// optionally push profiles to Pyroscope.
    #[command(mut_arg("pids", |a| a.hide(true)), after_help = crate::serve::limits::help())]
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What to attach, for whom: shared by `record` and `top`.
#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// Only this process (all its threads); repeatable. Default: every
    /// process on the host.
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    #[arg(short = 's', long = "sources", value_name = "SOURCES",
          default_value = DEFAULT_SOURCES, long_help = crate::sources::help())]
    pub sources: SourceSet,

    /// Sampling frequency of the vdso source, in Hz per CPU (1 to 100000).
    #[arg(short = 'F', long = "frequency", value_name = "HZ", default_value_t = 999,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub frequency: u64,

    /// Attach every hook through this backend only (default: the cheapest one
    /// the kernel accepts: fentry, then kprobe, then tracepoint or breakpoint;
    /// for syscalls raw_tracepoint before tracepoint where the clocksource
    /// makes every clock read a syscall, after it elsewhere).
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub backend: Option<Backend>,

    /// A kernel clock function for the kernel source; repeatable (up to 8).
    /// Replaces the default list. Each may take a debug register (hardware
    /// breakpoint, up to 4) where fentry and kprobe cannot reach it.
    #[arg(long = "kernel-fn", value_name = "FUNCTION",
          value_parser = kernel_function)]
    pub kernel_functions: Vec<String>,

    /// Distinct (process, stack, clock) entries the kernel can count between
    /// two drains of its maps (every second in record, every refresh in
    /// top), 1 to 4194304; events beyond it are counted as lost.
    #[arg(long, value_name = "N", default_value_t = 65536,
          value_parser = clap::value_parser!(u32).range(1..=MAX_COUNT_ENTRIES))]
    pub count_entries: u32,

    /// Distinct stacks the kernel can keep between two drains (each takes
    /// ~1 KiB, twice: the maps come in two generations, plus a quarter as
    /// many for kernel stacks and those the kernel walks), 1 to 262144; stacks
    /// beyond it are reported as lost, their events still counted.
    #[arg(long, value_name = "N", default_value_t = 16384,
          value_parser = clap::value_parser!(u32).range(1..=MAX_STACK_ENTRIES))]
    pub stack_entries: u32,

    /// Take the user stack of one clock read in N per CPU (1 to 65536), at
    /// random gaps averaging N. Counts stay exact per process, clock and
    /// calling function; the frames above the caller are sampled, and each
    /// calling function's exact count is spread over its sampled stacks
    /// (marked estimated in JSON). The stack walk is most of the cost per
    /// event. Default: 1 (every stack) with -p or COMMAND, 64 host-wide.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=MAX_STACK_EVERY))]
    pub stack_every: Option<u32>,

    /// How user stacks are walked: `auto` unwinds a process whose
    /// executable has no frame pointers with its binaries' DWARF unwind
    /// tables (the top of its stack is copied, 16 KiB per stack taken, and
    /// unwound in clockprof), every other with frame pointers; `fp` and
    /// `dwarf` use one for every process. Default: `auto` with -p or
    /// COMMAND, `fp` host-wide, where nearly every distro process would be
    /// copied for and its calling function would no longer be exact.
    #[arg(long, value_name = "HOW", value_enum)]
    pub unwind: Option<UnwindMode>,
}

/// `--unwind`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnwindMode {
    Auto,
    #[value(name = "fp")]
    FramePointers,
    Dwarf,
}

impl UnwindMode {
    /// The eBPF side's `UNWIND_MODE`.
    pub fn kernel_value(self) -> u32 {
        match self {
            UnwindMode::Auto => profiler_common::unwind::AUTO,
            UnwindMode::FramePointers => profiler_common::unwind::FRAME_POINTERS,
            UnwindMode::Dwarf => profiler_common::unwind::DWARF,
        }
    }
}

/// `--stack-every` by default when the whole host is profiled: there most
/// events are other programs', and a host whose clocksource fell back to
/// syscalls makes millions a second (see README, costs).
pub const HOST_WIDE_STACK_EVERY: u32 = 64;
const MAX_STACK_EVERY: i64 = 1 << 16;

/// Map sizes beyond these cost more kernel memory than any profile needs
/// (the stack map alone would pass 256 MiB).
const MAX_COUNT_ENTRIES: i64 = 1 << 22;
const MAX_STACK_ENTRIES: i64 = 1 << 18;

/// The longest `-d`: a year, far beyond any recording, well inside what
/// timers can represent.
const MAX_DURATION_SECS: f64 = 366.0 * 24.0 * 3600.0;
/// `top -i`: faster refreshes cost more than they show; slower ones are a
/// frozen screen.
pub const MIN_INTERVAL_SECS: f64 = 0.1;
const MAX_INTERVAL_SECS: f64 = 3600.0;

/// Seconds as a finite number in `min..=max` (`min` itself excluded when
/// `min_excluded`), for -d and -i.
fn seconds(text: &str, min: f64, min_excluded: bool, max: f64) -> Result<f64, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| "not a number of seconds".to_string())?;
    let too_small = if min_excluded {
        secs <= min
    } else {
        secs < min
    };
    if !secs.is_finite() || too_small || secs > max {
        let lower = if min_excluded {
            format!("more than {min}")
        } else {
            format!("at least {min}")
        };
        return Err(format!("must be {lower} and at most {max} seconds"));
    }
    Ok(secs)
}

fn duration(text: &str) -> Result<f64, String> {
    seconds(text, 0.0, true, MAX_DURATION_SECS)
}

fn interval(text: &str) -> Result<f64, String> {
    seconds(text, MIN_INTERVAL_SECS, false, MAX_INTERVAL_SECS)
}

/// A kernel symbol name: what kallsyms can hold, nothing a path could smuggle.
fn kernel_function(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !valid {
        return Err("not a kernel function name".to_string());
    }
    Ok(name.to_string())
}

impl ProbeArgs {
    /// What clap cannot check alone; runs before anything is attached.
    pub fn check(&self) -> anyhow::Result<()> {
        let max = profiler_common::MAX_KERNEL_FNS as usize;
        if self.kernel_functions.len() > max {
            anyhow::bail!(
                "at most {max} --kernel-fn can be watched at once, not {}",
                self.kernel_functions.len()
            );
        }
        Ok(())
    }

    /// The session these options ask for; `all` and `command` come from the
    /// subcommand.
    pub fn session_config(&self, all: bool, command: bool) -> SessionConfig<'_> {
        let host_wide = all || (self.pids.is_empty() && !command);
        SessionConfig {
            pids: &self.pids,
            all,
            command,
            sources: &self.sources.sources,
            sources_explicit: self.sources.explicit(),
            backend: self.backend,
            count_entries: self.count_entries,
            stack_entries: self.stack_entries,
            stack_every: self.stack_every.unwrap_or(if host_wide {
                HOST_WIDE_STACK_EVERY
            } else {
                1
            }),
            frequency: self.frequency,
            kernel_functions: &self.kernel_functions,
            unwind: self.unwind.unwrap_or(if host_wide {
                UnwindMode::FramePointers
            } else {
                UnwindMode::Auto
            }),
        }
    }
}

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
         FIFO or device: those are refused (/dev/null too). `-o -` writes to \
         standard output ({} unless -f says otherwise). Without -o, print a \
         summary",
        Format::extensions(),
        STDOUT_FORMAT
    )
}

/// What `-o -` writes without `-f`: text a pipe can take.
pub const STDOUT_FORMAT: Format = crate::export::folded::FORMAT;

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

/// `clockprof diff BASE NEW`.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The earlier recording: folded stacks or JSON written by clockprof.
    #[arg(value_name = "BASE")]
    pub base: PathBuf,

    /// The later recording.
    #[arg(value_name = "NEW")]
    pub new: PathBuf,

    #[arg(short = 'o', long = "output", value_name = "FILE", help = crate::diff::output_help())]
    pub output: Option<PathBuf>,

    /// How many functions to list in each direction.
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub top: u64,
}

/// `clockprof serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub probe: ProbeArgs,

    /// Serve HTTP on this address. Anything but loopback exposes the
    /// endpoints to the network: choose it on purpose.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9742")]
    pub listen: std::net::SocketAddr,

    /// Push each interval's profile to this Pyroscope server (plain http,
    /// e.g. http://pyroscope:4040; the push API's path is added).
    #[arg(long, value_name = "URL", value_parser = crate::serve::push::endpoint)]
    pub push: Option<hyper::Uri>,

    /// Seconds between pushes (1 to 3600).
    #[arg(long, value_name = "SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub push_interval: u64,

    /// A label added to every metric and pushed profile (host, cluster);
    /// repeatable.
    #[arg(long = "label", value_name = "K=V", value_parser = fixed_label)]
    pub labels: Vec<(String, String)>,
}

/// Label names clockprof sets itself.
const RESERVED_LABELS: &[&str] = &[
    "process",
    "source",
    "clock",
    "container_id",
    "reason",
    "clocksource",
    "vdso_capable",
    "service_name",
];

/// `--label K=V`: a Prometheus label name that is not one of ours, and a
/// value without control characters.
fn fixed_label(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once('=').ok_or_else(|| "not K=V".to_string())?;
    let mut chars = name.chars();
    let valid_name = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__");
    if !valid_name {
        return Err(format!(
            "`{}` is not a label name (letters, digits and _, not starting with a digit or __)",
            crate::printable::printable(name)
        ));
    }
    if RESERVED_LABELS.contains(&name) {
        return Err(format!("`{name}` is a label clockprof sets itself"));
    }
    if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
        return Err(
            "the value must be 1 to 256 characters, without control characters".to_string(),
        );
    }
    Ok((name.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        Cli::try_parse_from(args).map_err(|e| e.to_string().lines().next().unwrap().to_string())
    }

    #[test]
    fn out_of_range_values_are_refused_in_one_line() {
        for args in [
            &["clockprof", "record", "-d", "1e20"][..],
            &["clockprof", "record", "-d", "nan"],
            &["clockprof", "record", "-d", "inf"],
            &["clockprof", "record", "-d", "0"],
            &["clockprof", "record", "-d=-1"],
            &["clockprof", "record", "-d", "soon"],
            &["clockprof", "top", "-i", "1e20"],
            &["clockprof", "top", "-i", "0"],
            &["clockprof", "top", "-i", "nan"],
            &["clockprof", "record", "-F", "0"],
            &["clockprof", "record", "-F", "1000000"],
            &["clockprof", "record", "--stack-entries", "0"],
            &["clockprof", "record", "--count-entries", "0"],
            &["clockprof", "record", "--stack-entries", "99999999"],
            &["clockprof", "record", "--count-entries", "4294967295"],
            &["clockprof", "record", "--kernel-fn", "../x"],
            &["clockprof", "record", "--user", "root"],
            &["clockprof", "record", "--stack-every", "0"],
            &["clockprof", "top", "--stack-every", "65537"],
            &["clockprof", "record", "--stack-every", "-1"],
            &["clockprof", "serve", "--listen", "localhost"],
            &["clockprof", "serve", "--push", "https://pyroscope:4040"],
            &["clockprof", "serve", "--push-interval", "0"],
            &["clockprof", "serve", "--label", "host"],
            &["clockprof", "serve", "--label", "9x=1"],
            &["clockprof", "serve", "--label", "__name__=x"],
            &["clockprof", "serve", "--label", "process=x"],
            &["clockprof", "serve", "--label", "host=a\nb"],
            &["clockprof", "serve", "--label", "host="],
        ] {
            let err = parse(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} was accepted"));
            assert!(err.starts_with("error: "), "{args:?}: {err}");
        }
    }

    #[test]
    fn sane_values_pass() {
        let cli = parse(&["clockprof", "record", "-d", "0.5", "--stack-entries", "1"]).unwrap();
        let Command::Record(args) = cli.command else {
            panic!("not record")
        };
        assert_eq!(args.duration, Some(0.5));
        assert!(parse(&["clockprof", "top", "-i", "0.1"]).is_ok());
        assert!(parse(&["clockprof", "record", "--user", "root", "--", "true"]).is_ok());
        let cli = parse(&[
            "clockprof",
            "serve",
            "--label",
            "host=web-1",
            "--label",
            "cluster=eu",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.listen.to_string(), "127.0.0.1:9742");
        assert_eq!(args.push_interval, 15);
        assert_eq!(
            args.labels,
            [
                ("host".to_string(), "web-1".to_string()),
                ("cluster".to_string(), "eu".to_string())
            ]
        );
    }

    #[test]
    fn stack_every_defaults_to_every_stack_unless_host_wide() {
        let record = |args: &[&str]| -> u32 {
            let Command::Record(record) = parse(args).unwrap().command else {
                panic!("not record")
            };
            let command = !record.command.is_empty();
            record.probe.session_config(record.all, command).stack_every
        };
        assert_eq!(record(&["clockprof", "record", "--", "true"]), 1);
        assert_eq!(record(&["clockprof", "record", "-p", "1"]), 1);
        assert_eq!(record(&["clockprof", "record"]), HOST_WIDE_STACK_EVERY);
        assert_eq!(
            record(&["clockprof", "record", "-a"]),
            HOST_WIDE_STACK_EVERY
        );
        assert_eq!(
            record(&["clockprof", "record", "--stack-every", "7", "--", "true"]),
            7
        );
        assert_eq!(record(&["clockprof", "record", "--stack-every", "1"]), 1);
        let Command::Top(top) = parse(&["clockprof", "top"]).unwrap().command else {
            panic!("not top")
        };
        assert_eq!(
            top.probe.session_config(false, false).stack_every,
            HOST_WIDE_STACK_EVERY
        );
    }

    #[test]
    fn unwinding_defaults_to_auto_unless_host_wide() {
        let unwind = |args: &[&str]| -> UnwindMode {
            let Command::Record(record) = parse(args).unwrap().command else {
                panic!("not record")
            };
            let command = !record.command.is_empty();
            record.probe.session_config(record.all, command).unwind
        };
        assert_eq!(
            unwind(&["clockprof", "record", "--", "true"]),
            UnwindMode::Auto
        );
        assert_eq!(
            unwind(&["clockprof", "record", "-p", "1"]),
            UnwindMode::Auto
        );
        assert_eq!(
            unwind(&["clockprof", "record", "-a"]),
            UnwindMode::FramePointers
        );
        assert_eq!(
            unwind(&["clockprof", "record", "-a", "--unwind", "auto"]),
            UnwindMode::Auto
        );
        assert_eq!(
            unwind(&["clockprof", "record", "--unwind", "fp", "--", "true"]),
            UnwindMode::FramePointers
        );
    }
}

//! The command line, as ../shared/DESIGN.md fixes it (tests outside the project
//! rely on these names).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::export::Format;
use crate::probes::Backend;
use crate::session::SessionConfig;
use crate::source::{SourceSet, DEFAULT_SOURCES};

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
    /// Count clock reads per process and call stack, then write a flamegraph,
    /// folded stacks or JSON (or print a summary).
    Record(RecordArgs),
    /// Live full-screen view: processes by clock reads per second, their
    /// stacks, flamegraph export.
    Top(TopArgs),
    /// What this kernel and user allow: each hook type really tried, the
    /// clocksource, and which backend each source would use.
    Doctor(DoctorArgs),
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

const SOURCES_HELP: &str =
    "Clock sources, comma-separated, or `all`. `default`: syscall,kernel,vdso,
the ones that cost little on every hot path (a default one the kernel cannot
serve is skipped and noted in the output; a named one warns, or fails alone).
Costs are per clock read, measured by `cargo xtask bench`.
  syscall  clock_gettime/gettimeofday/time system calls (fentry, kprobe or
           tracepoint; ~0.9 us per syscall with its user stack; exact counts).
           Most clock reads never enter the kernel (vDSO); syscalls show
           CPU-time clocks and hosts whose clocksource cannot serve the vDSO.
  kernel   kernel-internal clock functions (--kernel-fn; default
           ktime_get_mono_fast_ns, ktime_get, ktime_get_ts64,
           ktime_get_real_ts64) by fentry or kprobe, or a hardware breakpoint
           for notrace ones; ~0.1-1 us per call with kernel and user stacks.
           Skipped with a warning where the kernel allows none of them.
  vdso     cpu-clock samples landing in the vDSO's clock functions, where
           glibc's clock_gettime/gettimeofday/time, Go's time.Now and Rust's
           Instant::now read the clock without a syscall. Costs what the
           sampling rate (-F) costs, whatever the call rate; counts are samples.
  libc     uprobe on glibc's __clock_gettime: exact counts, but each call traps
           (0.3-1 us on bare metal, ~20 us under nested virtualization: 10x to
           1000x a 20-30 ns vDSO read). Opt-in; scoped to -p/COMMAND
           when given. gettimeofday and time are glibc IFUNCs that jump
           straight into the vDSO: only vdso sees them.
  go       uprobes on time.now, runtime.nanotime1, runtime.walltime of Go
           binaries (needs their symbols): exact counts, same trap cost.
           Opt-in; host-wide it covers the Go binaries running at start.";

/// What to attach, for whom: shared by `record` and `top`.
#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// Only this process (all its threads); repeatable. Default: every
    /// process on the host.
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    #[arg(short = 's', long = "sources", value_name = "SOURCES",
          default_value = DEFAULT_SOURCES, long_help = SOURCES_HELP)]
    pub sources: SourceSet,

    /// Sampling frequency of the vdso source, in Hz per CPU.
    #[arg(short = 'F', long = "frequency", value_name = "HZ", default_value_t = 999,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub frequency: u64,

    /// Attach every hook through this backend only (default: the cheapest one
    /// the kernel accepts: fentry, then kprobe, then tracepoint or breakpoint).
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub backend: Option<Backend>,

    /// A kernel clock function for the kernel source; repeatable (up to 8).
    /// Replaces the default list.
    #[arg(long = "kernel-fn", value_name = "FUNCTION")]
    pub kernel_functions: Vec<String>,

    /// Distinct (process, stack, clock) entries the kernel can count; events
    /// beyond it are counted as lost.
    #[arg(long, value_name = "N", default_value_t = 65536)]
    pub count_entries: u32,

    /// Distinct stacks the kernel can keep (each takes ~1 KiB); stacks beyond it
    /// are reported as lost, their events still counted.
    #[arg(long, value_name = "N", default_value_t = 16384)]
    pub stack_entries: u32,
}

impl ProbeArgs {
    /// The session these options ask for; `all` and `command` come from the
    /// subcommand.
    pub fn session_config(&self, all: bool, command: bool) -> SessionConfig<'_> {
        SessionConfig {
            pids: &self.pids,
            all,
            command,
            sources: &self.sources.0,
            sources_explicit: self.sources.explicit(),
            backend: self.backend,
            count_entries: self.count_entries,
            stack_entries: self.stack_entries,
            frequency: self.frequency,
            kernel_functions: &self.kernel_functions,
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

    /// Stop after SECS seconds (default: when COMMAND exits, or on Ctrl-C).
    #[arg(short = 'd', long = "duration", value_name = "SECS")]
    pub duration: Option<f64>,

    /// Write the profile here (format from -f, else from the extension:
    /// .svg, .folded, .json, .pb.gz). Without it, print a summary.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Output format: svg, folded, json or pprof.
    #[arg(short = 'f', long = "format", value_name = "FORMAT")]
    pub format: Option<Format>,

    /// Start COMMAND once every probe is attached, profile it and the processes
    /// it starts until it exits, then exit with its status.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    pub probe: ProbeArgs,

    /// Refresh the view every SECS seconds.
    #[arg(
        short = 'i',
        long = "interval",
        value_name = "SECS",
        default_value_t = 1.0
    )]
    pub interval: f64,

    /// Write flamegraphs exported with `e`/`E` into this directory.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub export_dir: PathBuf,
}

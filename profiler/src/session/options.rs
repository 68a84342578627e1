//! The options every recording command shares (`record`, `top`, `check`,
//! `serve`): what to attach, for whom, and how to walk stacks. They become a
//! `SessionConfig`; the commands flatten them into their own options.

use clap::Args;

use super::SessionConfig;
use crate::attachment::Backend;
use crate::probes::UnwindMode;
use crate::sources::{SourceSet, DEFAULT_SOURCES};

/// What to attach, for whom: shared by `record`, `top`, `check` and `serve`.
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
pub fn seconds(text: &str, min: f64, min_excluded: bool, max: f64) -> Result<f64, String> {
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

pub fn duration(text: &str) -> Result<f64, String> {
    seconds(text, 0.0, true, MAX_DURATION_SECS)
}

pub fn interval(text: &str) -> Result<f64, String> {
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

//! What a "clock read" is: the sources a user can choose with `-s`, and the
//! exact call each counted event stands for (the leaf of every stack).

use std::fmt;
use std::str::FromStr;

use profiler_common::{event, CLOCK_ID_NONE};
use serde::Serialize;

/// A family of clock reads, chosen with `-s`. Each maps to one or more hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `clock_gettime`, `gettimeofday` and `time` system calls.
    Syscall,
    /// Kernel-internal clock functions (ktime_get_mono_fast_ns, ktime_get, ...).
    Kernel,
    /// Entry of glibc's `__clock_gettime` (uprobe).
    Libc,
    /// Entries of Go's `time.now`, `runtime.nanotime1`, `runtime.walltime` (uprobes).
    Go,
    /// cpu-clock samples that land in the vDSO's clock functions.
    Vdso,
}

impl Source {
    pub const ALL: &'static [Source] = &[
        Source::Syscall,
        Source::Kernel,
        Source::Libc,
        Source::Go,
        Source::Vdso,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Source::Syscall => "syscall",
            Source::Kernel => "kernel",
            Source::Libc => "libc",
            Source::Go => "go",
            Source::Vdso => "vdso",
        }
    }

    /// Sources that put a uprobe (~1 us trap) on every clock read they count.
    pub fn is_uprobe(self) -> bool {
        matches!(self, Source::Libc | Source::Go)
    }

    /// Whether counts are exact events (or, for sampling, samples).
    pub fn is_sampled(self) -> bool {
        self == Source::Vdso
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A de-duplicated, ordered set of sources parsed from `-s a,b,c`, `-s all`
/// or the default, and whether the user named them: a default source the
/// kernel cannot serve is skipped quietly, a named one is not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceSet(pub Vec<Source>, pub Requested);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requested {
    ByDefault,
    /// `all` (with or without names): like the defaults, whatever does not
    /// apply is skipped and named.
    All,
    Explicitly,
}

/// `-s`'s default: the sources that cost little on every hot path.
pub const DEFAULT_SOURCES: &str = "default";
const DEFAULT_LIST: &[Source] = &[Source::Syscall, Source::Kernel, Source::Vdso];

impl FromStr for SourceSet {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, String> {
        if list == DEFAULT_SOURCES {
            return Ok(SourceSet(DEFAULT_LIST.to_vec(), Requested::ByDefault));
        }
        let mut sources = Vec::new();
        let mut requested = Requested::Explicitly;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "all" {
                sources.extend_from_slice(Source::ALL);
                requested = Requested::All;
                continue;
            }
            let source = Source::ALL
                .iter()
                .copied()
                .find(|s| s.name() == name)
                .ok_or_else(|| {
                    let names: Vec<&str> = Source::ALL.iter().map(|s| s.name()).collect();
                    format!(
                        "unknown source `{name}`; choose from {} or all",
                        names.join(",")
                    )
                })?;
            sources.push(source);
        }
        if sources.is_empty() {
            return Err("no source given".into());
        }
        sources.sort();
        sources.dedup();
        Ok(SourceSet(sources, requested))
    }
}

impl fmt::Display for SourceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|s| s.name()).collect();
        f.write_str(&names.join(","))
    }
}

impl SourceSet {
    /// Whether the user named each source (not `all`, not the defaults):
    /// then one that does not apply is a warning, or an error alone.
    pub fn explicit(&self) -> bool {
        self.1 == Requested::Explicitly
    }
}

/// One kind of counted event: which hook fired and, where known, which clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClockRead {
    pub event: u32,
    pub clock_id: i32,
}

impl ClockRead {
    pub fn source(self) -> Source {
        match self.event {
            event::LIBC_CLOCK_GETTIME => Source::Libc,
            event::GO_TIME_NOW | event::GO_NANOTIME1 | event::GO_WALLTIME => Source::Go,
            event::VDSO_SAMPLE => Source::Vdso,
            event::KERNEL_FN => Source::Kernel,
            _ => Source::Syscall,
        }
    }

    /// The call's name within its source, e.g. `clock_gettime`.
    pub fn call(self) -> &'static str {
        match self.event {
            event::SYSCALL_CLOCK_GETTIME | event::LIBC_CLOCK_GETTIME => "clock_gettime",
            event::SYSCALL_GETTIMEOFDAY => "gettimeofday",
            event::SYSCALL_TIME => "time",
            event::GO_TIME_NOW => "time.now",
            event::GO_NANOTIME1 => "runtime.nanotime1",
            event::GO_WALLTIME => "runtime.walltime",
            event::VDSO_SAMPLE => "sample",
            event::KERNEL_FN => usize::try_from(self.clock_id)
                .ok()
                .and_then(|slot| kernel_functions().get(slot).copied())
                .unwrap_or("unknown"),
            _ => "unknown",
        }
    }

    /// The clock read, where the hook knows it (kernel events carry their
    /// function's slot instead).
    pub fn clock(self) -> Option<String> {
        if self.event == event::KERNEL_FN {
            return None;
        }
        clock_name(self.clock_id)
    }

    /// The leaf frame of folded stacks: `[syscall clock_gettime MONOTONIC]`.
    pub fn leaf(self) -> String {
        match self.clock() {
            Some(clock) => format!("[{} {} {}]", self.source(), self.call(), clock),
            None => format!("[{} {}]", self.source(), self.call()),
        }
    }
}

/// The kernel clock functions of this run, by slot: set once when the
/// kernel source is attached, read when naming its events.
static KERNEL_FUNCTIONS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();

pub fn set_kernel_functions(functions: &[String]) {
    // One run watches one list; leaking it lets every ClockRead name it.
    let names = functions
        .iter()
        .map(|f| &*Box::leak(f.clone().into_boxed_str()))
        .collect();
    let _ = KERNEL_FUNCTIONS.set(names);
}

fn kernel_functions() -> &'static [&'static str] {
    KERNEL_FUNCTIONS.get().map(Vec::as_slice).unwrap_or(&[])
}

/// Names a clock id the way `<time.h>` does, without the `CLOCK_` prefix.
/// Negative ids are dynamic CPU-time clocks of a given process or thread
/// (`clock_getcpuclockid`, `pthread_getcpuclockid`), which always take the syscall.
pub fn clock_name(clock_id: i32) -> Option<String> {
    const NAMES: [&str; 12] = [
        "REALTIME",
        "MONOTONIC",
        "PROCESS_CPUTIME_ID",
        "THREAD_CPUTIME_ID",
        "MONOTONIC_RAW",
        "REALTIME_COARSE",
        "MONOTONIC_COARSE",
        "BOOTTIME",
        "REALTIME_ALARM",
        "BOOTTIME_ALARM",
        "SGI_CYCLE",
        "TAI",
    ];
    if clock_id == CLOCK_ID_NONE {
        return None;
    }
    Some(match usize::try_from(clock_id) {
        Ok(id) if id < NAMES.len() => NAMES[id].to_string(),
        Ok(id) => format!("CLOCK_{id}"),
        // CPUCLOCK_PERTHREAD_MASK is bit 2 of the encoded id.
        Err(_) if clock_id & 4 != 0 => "THREAD_CPUCLOCK".to_string(),
        Err(_) => "PROCESS_CPUCLOCK".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_all() {
        assert_eq!(
            "syscall".parse::<SourceSet>().unwrap().0,
            vec![Source::Syscall]
        );
        assert_eq!("all".parse::<SourceSet>().unwrap().0, Source::ALL.to_vec());
        assert_eq!(
            "syscall,syscall".parse::<SourceSet>().unwrap().0,
            vec![Source::Syscall]
        );
        let err = "nonsense".parse::<SourceSet>().unwrap_err();
        assert!(err.contains("unknown source `nonsense`"), "{err}");
        assert!("".parse::<SourceSet>().is_err());
        let default = DEFAULT_SOURCES.parse::<SourceSet>().unwrap();
        assert_eq!(
            default.0,
            vec![Source::Syscall, Source::Kernel, Source::Vdso]
        );
        assert!(!default.explicit());
        assert!("syscall".parse::<SourceSet>().unwrap().explicit());
        assert!(!"all".parse::<SourceSet>().unwrap().explicit());
        assert!(!"syscall,all".parse::<SourceSet>().unwrap().explicit());
    }

    #[test]
    fn names_leaves() {
        let read = |event, clock_id| ClockRead { event, clock_id }.leaf();
        assert_eq!(
            read(event::SYSCALL_CLOCK_GETTIME, 1),
            "[syscall clock_gettime MONOTONIC]"
        );
        assert_eq!(
            read(event::SYSCALL_CLOCK_GETTIME, 0),
            "[syscall clock_gettime REALTIME]"
        );
        assert_eq!(
            read(event::SYSCALL_GETTIMEOFDAY, CLOCK_ID_NONE),
            "[syscall gettimeofday]"
        );
        assert_eq!(read(event::SYSCALL_TIME, CLOCK_ID_NONE), "[syscall time]");
        assert_eq!(
            read(event::LIBC_CLOCK_GETTIME, 1),
            "[libc clock_gettime MONOTONIC]"
        );
        assert_eq!(read(event::GO_TIME_NOW, CLOCK_ID_NONE), "[go time.now]");
        assert_eq!(read(event::VDSO_SAMPLE, CLOCK_ID_NONE), "[vdso sample]");
        set_kernel_functions(&["ktime_get".to_string(), "ktime_get_ts64".to_string()]);
        assert_eq!(read(event::KERNEL_FN, 1), "[kernel ktime_get_ts64]");
        assert_eq!(read(event::KERNEL_FN, 9), "[kernel unknown]");
        // clock_getcpuclockid(pid 1234) = ~1234 << 3 | 2 (CPUCLOCK_SCHED)
        assert_eq!(
            read(event::SYSCALL_CLOCK_GETTIME, (!1234 << 3) | 2),
            "[syscall clock_gettime PROCESS_CPUCLOCK]"
        );
    }
}

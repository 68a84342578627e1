//! The clock sources a user can choose with `-s`, as the daemon uses them,
//! and the exact call each counted event stands for (the leaf of every
//! stack).
//!
//! Each source declares everything about itself in its module of
//! profiler-common's `sources` folder: its `SPEC` (name and help, event ids
//! and how they are named, how it attaches, whether it is on by default)
//! and the ids the eBPF programs count with. Nothing here names a source:
//! `Source` is a handle on one row of that table, and session, doctor,
//! `--help` and the exporters read the row. Matches on how a source
//! attaches (`Attach`) have no wildcard arm, so a new kind of attaching is a
//! compile error wherever it must be handled.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use profiler_common::sources as table;
use profiler_common::CLOCK_ID_NONE;
use serde::{Serialize, Serializer};

pub use profiler_common::sources::{
    Attach, Call, Event, Hook, HookPoint, SourceSpec, Uprobe, UprobeBinary,
};

/// A family of clock reads, chosen with `-s`: one row of the table of
/// sources. Sources compare and sort by `SourceSpec::order`, which is
/// unique, so the order of every list of sources is the table's.
#[derive(Clone, Copy)]
pub struct Source(&'static SourceSpec);

impl PartialEq for Source {
    fn eq(&self, other: &Source) -> bool {
        self.0.order == other.0.order
    }
}

impl Eq for Source {}

impl PartialOrd for Source {
    fn partial_cmp(&self, other: &Source) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Source {
    fn cmp(&self, other: &Source) -> std::cmp::Ordering {
        self.0.order.cmp(&other.0.order)
    }
}

impl Hash for Source {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.order.hash(state);
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Source {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// The table's sources by `order`, sorted when compiling.
const BY_ORDER: [Source; table::ALL.len()] = {
    let mut all = [Source(table::ALL[0]); table::ALL.len()];
    let mut i = 0;
    while i < all.len() {
        all[i] = Source(table::ALL[i]);
        // Insertion sort: a const fn cannot call sort.
        let mut j = i;
        while j > 0 && all[j - 1].0.order > all[j].0.order {
            let earlier = all[j - 1];
            all[j - 1] = all[j];
            all[j] = earlier;
            j -= 1;
        }
        i += 1;
    }
    all
};

impl Source {
    /// Every source, in the table's order.
    pub const ALL: &'static [Source] = &BY_ORDER;

    /// The source `spec` declares, for code that names one source
    /// (`Source::of(&profiler_common::sources::kernel::SPEC)`).
    pub const fn of(spec: &'static SourceSpec) -> Source {
        Source(spec)
    }

    pub fn spec(self) -> &'static SourceSpec {
        self.0
    }

    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// The source that declares event id `event`, from the table.
    pub fn of_event(event: u32) -> Option<Source> {
        Source::ALL
            .iter()
            .copied()
            .find(|source| source.spec().events.iter().any(|e| e.id == event))
    }

    /// Which binary of a process its uprobes go into, for uprobe sources.
    pub fn uprobe_binary(self) -> Option<UprobeBinary> {
        match self.spec().attach {
            Attach::Uprobes { binary, .. } => Some(binary),
            Attach::KernelHooks(_) | Attach::KernelFunctions | Attach::Sampling => None,
        }
    }

    /// Its hooks at fixed kernel places, best backend first, if it has any.
    pub fn kernel_hooks(self) -> &'static [Hook] {
        match self.spec().attach {
            Attach::KernelHooks(hooks) => hooks,
            Attach::KernelFunctions | Attach::Sampling | Attach::Uprobes { .. } => &[],
        }
    }

    /// Whether counts are samples rather than exact events.
    pub fn is_sampled(self) -> bool {
        self.spec().sampled
    }
}

/// The counts of the sampled sources among `by_source`: samples, not reads.
pub fn sampled_counts(
    by_source: &std::collections::BTreeMap<Source, u64>,
) -> impl Iterator<Item = u64> + '_ {
    by_source
        .iter()
        .filter(|(source, _)| source.is_sampled())
        .map(|(_, &count)| count)
}

/// `-s`'s long help: the sources on by default first, each with its cost.
pub fn help() -> String {
    let defaults: Vec<&str> = default_sources().iter().map(|s| s.name()).collect();
    let mut help = format!(
        "Clock sources, comma-separated, or `all`. `default`: {},
the ones that cost little on every hot path. With the defaults or `all`, a
source that does not apply (a kernel without its hooks, go on a program that
is not Go, libc on a static binary) is skipped and named in the output; it is
an error only when none applies. A source named on its own that does not
apply is an error; named with others, a warning. `all` includes the uprobe
sources libc and go: host-wide, that puts a trap on every glibc
clock_gettime and Go clock call of every running process (see below).
Costs are per clock read, measured by `cargo xtask bench`.",
        defaults.join(",")
    );
    let (on, off): (Vec<Source>, Vec<Source>) =
        Source::ALL.iter().partition(|s| s.spec().on_by_default);
    for source in on.into_iter().chain(off) {
        for (i, line) in source.spec().help.lines().enumerate() {
            let name = if i == 0 { source.name() } else { "" };
            help.push_str(&format!("\n  {name:<8} {line}"));
        }
    }
    help
}

fn default_sources() -> Vec<Source> {
    Source::ALL
        .iter()
        .copied()
        .filter(|s| s.spec().on_by_default)
        .collect()
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
pub struct SourceSet {
    pub sources: Vec<Source>,
    pub requested: Requested,
}

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

impl FromStr for SourceSet {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, String> {
        if list == DEFAULT_SOURCES {
            return Ok(SourceSet {
                sources: default_sources(),
                requested: Requested::ByDefault,
            });
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
        Ok(SourceSet { sources, requested })
    }
}

impl fmt::Display for SourceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.sources.iter().map(|s| s.name()).collect();
        f.write_str(&names.join(","))
    }
}

impl SourceSet {
    /// Whether the user named each source (not `all`, not the defaults):
    /// then one that does not apply is a warning, or an error alone.
    pub fn explicit(&self) -> bool {
        self.requested == Requested::Explicitly
    }
}

/// One kind of counted event: which hook fired, where known which clock,
/// and for a clock system call, why it was one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClockRead {
    pub event: u32,
    pub clock_id: i32,
    /// Set while naming (symbolize::cause), from where the call was made:
    /// the eBPF key has no room for it and needs none.
    pub cause: Option<SyscallCause>,
}

/// Why a clock read cost a system call, when the vDSO serves most clocks in
/// user space for a few nanoseconds. Decided from the clock and the mapping
/// that holds the instruction that made the call (symbolize::cause).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyscallCause {
    /// Made by the vDSO itself: it cannot read this host's clocksource from
    /// user space (hpet, acpi_pm, a tsc the kernel marked unstable, a
    /// kvm-clock without its stable bit).
    VdsoFallback,
    /// A clock the vDSO never serves: the CPU-time clocks (their value lives
    /// in the kernel's task accounting) and the alarm clocks.
    UnservedClock,
    /// Made by the program, or a library, without going through the vDSO:
    /// `syscall(SYS_clock_gettime, ...)`, inline assembly, a static binary
    /// or a runtime that bypasses it.
    Direct,
    /// Made from a library that replaces the clock functions (LD_PRELOAD,
    /// /etc/ld.so.preload), such as libfaketime.
    Interposer,
}

impl SyscallCause {
    pub const ALL: [SyscallCause; 4] = [
        SyscallCause::VdsoFallback,
        SyscallCause::UnservedClock,
        SyscallCause::Direct,
        SyscallCause::Interposer,
    ];

    /// The name in leaves, labels and JSON.
    pub fn name(self) -> &'static str {
        match self {
            SyscallCause::VdsoFallback => "vdso-fallback",
            SyscallCause::UnservedClock => "unserved-clock",
            SyscallCause::Direct => "direct",
            SyscallCause::Interposer => "interposer",
        }
    }

    /// What to do about it, in one sentence (the fallback's sentence names
    /// the clocksource, see export::summary).
    pub fn fix(self) -> &'static str {
        match self {
            SyscallCause::VdsoFallback => {
                "the vDSO could not read the clocksource: switch to one it reads (tsc, or kvm-clock with its stable bit) through /sys/devices/system/clocksource/clocksource0/current_clocksource or the clocksource= boot option, and on a VM check that the hypervisor exposes an invariant, stable TSC"
            }
            SyscallCause::UnservedClock => {
                "CPU-time and alarm clocks always cost a system call: read them less often, or read CLOCK_MONOTONIC where wall or elapsed time will do"
            }
            SyscallCause::Direct => {
                "the code that makes the system call bypasses the vDSO: call clock_gettime through libc (or your runtime's clock) from the frame the stack names"
            }
            SyscallCause::Interposer => {
                "a preloaded library replaces the clock functions: remove it from LD_PRELOAD (or /etc/ld.so.preload) where it is not wanted"
            }
        }
    }
}

impl fmt::Display for SyscallCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `leaf` without the cause it names last (`[syscall time direct]` gives
/// `[syscall time]`); `None` for a leaf without one.
pub fn leaf_without_cause(leaf: &str) -> Option<String> {
    let inner = leaf.strip_prefix('[')?.strip_suffix(']')?;
    let (rest, last) = inner.rsplit_once(' ')?;
    SyscallCause::ALL
        .iter()
        .any(|cause| cause.name() == last)
        .then(|| format!("[{rest}]"))
}

/// Whether this kernel's vDSO answers `clock_id` in user space when the
/// clocksource allows it (x86-64 since 5.3: the high-resolution, raw and
/// coarse clocks). `CLOCK_ID_NONE` (gettimeofday, time) counts as served.
pub fn vdso_serves(clock_id: i32) -> bool {
    const REALTIME: i32 = 0;
    const MONOTONIC: i32 = 1;
    const MONOTONIC_RAW: i32 = 4;
    const REALTIME_COARSE: i32 = 5;
    const MONOTONIC_COARSE: i32 = 6;
    const BOOTTIME: i32 = 7;
    const TAI: i32 = 11;
    clock_id == CLOCK_ID_NONE
        || matches!(
            clock_id,
            REALTIME
                | MONOTONIC
                | MONOTONIC_RAW
                | REALTIME_COARSE
                | MONOTONIC_COARSE
                | BOOTTIME
                | TAI
        )
}

impl ClockRead {
    /// A read as the eBPF key has it: no cause yet.
    pub const fn new(event: u32, clock_id: i32) -> ClockRead {
        ClockRead {
            event,
            clock_id,
            cause: None,
        }
    }

    /// Whether the syscall source counted it.
    pub fn is_syscall(self) -> bool {
        self.source() == Source::of(&table::syscall::SPEC)
    }

    fn event(self) -> Option<(Source, &'static Event)> {
        Source::ALL.iter().find_map(|&source| {
            let event = source.spec().events.iter().find(|e| e.id == self.event)?;
            Some((source, event))
        })
    }

    /// The source whose program counted it. Every id our eBPF object counts
    /// is declared by one source (sources::tests checks the ids of
    /// profiler_common::event), and collect::collect_counts refuses a key
    /// whose id is not, so an undeclared id here is a bug, not input.
    pub fn source(self) -> Source {
        Source::of_event(self.event).unwrap_or_else(|| {
            panic!(
                "clock read of event id {}, which no source declares",
                self.event
            )
        })
    }

    /// The call's name within its source, e.g. `clock_gettime`; a kernel
    /// event names the function in its slot of the recording's
    /// `kernel_functions`.
    pub fn call(self, kernel_functions: &[String]) -> &str {
        match self.event().map(|(_, event)| &event.call) {
            Some(Call::Named(name)) => name,
            Some(Call::KernelFunction) => usize::try_from(self.clock_id)
                .ok()
                .and_then(|slot| kernel_functions.get(slot))
                .map_or("unknown", String::as_str),
            None => "unknown",
        }
    }

    /// The clock read, where the hook knows it (kernel events carry their
    /// function's slot instead).
    pub fn clock(self) -> Option<String> {
        if let Some((
            _,
            Event {
                call: Call::KernelFunction,
                ..
            },
        )) = self.event()
        {
            return None;
        }
        clock_name(self.clock_id)
    }

    /// The leaf frame of folded stacks: `[syscall clock_gettime MONOTONIC]`,
    /// and the cause where it is known: `[syscall clock_gettime MONOTONIC
    /// vdso-fallback]`.
    pub fn leaf(self, kernel_functions: &[String]) -> String {
        let mut leaf = format!("[{} {}", self.source(), self.call(kernel_functions));
        for word in [self.clock(), self.cause.map(|c| c.name().to_string())]
            .into_iter()
            .flatten()
        {
            leaf.push(' ');
            leaf.push_str(&word);
        }
        leaf.push(']');
        leaf
    }
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
            "syscall".parse::<SourceSet>().unwrap().sources,
            vec![Source::of(&table::syscall::SPEC)]
        );
        assert_eq!(
            "all".parse::<SourceSet>().unwrap().sources,
            Source::ALL.to_vec()
        );
        assert_eq!(
            "syscall,syscall".parse::<SourceSet>().unwrap().sources,
            vec![Source::of(&table::syscall::SPEC)]
        );
        let err = "nonsense".parse::<SourceSet>().unwrap_err();
        assert!(err.contains("unknown source `nonsense`"), "{err}");
        assert!("".parse::<SourceSet>().is_err());
        let default = DEFAULT_SOURCES.parse::<SourceSet>().unwrap();
        assert_eq!(
            default.sources,
            vec![
                Source::of(&table::syscall::SPEC),
                Source::of(&table::kernel::SPEC),
                Source::of(&table::vdso::SPEC)
            ]
        );
        assert!(!default.explicit());
        assert!("syscall".parse::<SourceSet>().unwrap().explicit());
        assert!(!"all".parse::<SourceSet>().unwrap().explicit());
        assert!(!"syscall,all".parse::<SourceSet>().unwrap().explicit());
    }

    #[test]
    fn every_event_names_its_source_and_the_table_is_in_order() {
        for &source in Source::ALL {
            for event in source.spec().events {
                assert_eq!(Source::of_event(event.id), Some(source));
            }
        }
        assert_eq!(Source::of_event(u32::MAX), None);
        assert!(Source::ALL
            .windows(2)
            .all(|w| w[0].spec().order < w[1].spec().order));
        assert_eq!(Source::ALL.len(), table::ALL.len());
    }

    #[test]
    fn help_lists_defaults_first_with_their_costs() {
        let help = help();
        assert!(help.starts_with(
            "Clock sources, comma-separated, or `all`. `default`: syscall,kernel,vdso,\n"
        ));
        let order: Vec<usize> = [
            "\n  syscall  ",
            "\n  kernel   ",
            "\n  vdso     ",
            "\n  libc     ",
            "\n  go       ",
        ]
        .iter()
        .map(|name| {
            help.find(name)
                .unwrap_or_else(|| panic!("{name} in {help}"))
        })
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    }

    #[test]
    fn names_leaves() {
        let kernel_functions = ["ktime_get".to_string(), "ktime_get_ts64".to_string()];
        let read = |event, clock_id| ClockRead::new(event, clock_id).leaf(&kernel_functions);
        assert_eq!(
            read(table::syscall::CLOCK_GETTIME, 1),
            "[syscall clock_gettime MONOTONIC]"
        );
        assert_eq!(
            read(table::syscall::CLOCK_GETTIME, 0),
            "[syscall clock_gettime REALTIME]"
        );
        assert_eq!(
            read(table::syscall::GETTIMEOFDAY, CLOCK_ID_NONE),
            "[syscall gettimeofday]"
        );
        assert_eq!(read(table::syscall::TIME, CLOCK_ID_NONE), "[syscall time]");
        assert_eq!(
            read(table::libc::CLOCK_GETTIME, 1),
            "[libc clock_gettime MONOTONIC]"
        );
        assert_eq!(read(table::go::TIME_NOW, CLOCK_ID_NONE), "[go time.now]");
        assert_eq!(read(table::vdso::SAMPLE, CLOCK_ID_NONE), "[vdso sample]");
        assert_eq!(read(table::kernel::FUNCTION, 1), "[kernel ktime_get_ts64]");
        assert_eq!(read(table::kernel::FUNCTION, 9), "[kernel unknown]");
        // clock_getcpuclockid(pid 1234) = ~1234 << 3 | 2 (CPUCLOCK_SCHED)
        assert_eq!(
            read(table::syscall::CLOCK_GETTIME, (!1234 << 3) | 2),
            "[syscall clock_gettime PROCESS_CPUCLOCK]"
        );
    }
}

//! A profiling session: the probes attached for the chosen sources and
//! processes, and the process tracker that remembers their mappings. Both
//! `record` and `top` start one; dropping it detaches everything.

pub mod command;
pub mod credentials;
pub mod options;
pub mod privileges;
mod unavailable;
pub mod wakeups;

use std::time::Duration;

use std::ffi::OsStr;

use anyhow::{bail, Context, Result};
use profiler_common::target;

use crate::attachment::{Attachment, Backend};
use crate::collect::generations::Generations;
use crate::collect::{self, LostCounts};
use crate::host::binaries::{self, Binary, GoBinary};
use crate::probes::UnwindMode;
use crate::probes::{KernelFunction, ProbeConfig, Probes, Refusal};
use crate::proc_tracker::ProcTracker;
use crate::say::warning;
use crate::sources::{Attach, Source, SourceSet, UprobeBinary};
use crate::symbolize::{NormalizedSample, Normalizer};
use crate::unwind::DwarfStacks;
pub use unavailable::Unavailable;

/// The kernel source watches each function it can. None at all is an error
/// when the user asked for the kernel source alone, a warning when named with
/// others, and, as a default source, a note in the output (returned here), so
/// a kernel without kprobes, fentry or breakpoints still gets the rest. Each
/// says it in one sentence that points to `doctor`, which says why; a part
/// of the functions the user named is skipped with each one's reason.
/// Only ktime_get_mono_fast_ns of the defaults may take a debug register;
/// each function named with --kernel-fn may (up to the four there are).
fn attach_kernel(probes: &mut Probes, config: &SessionConfig) -> Result<Option<Unavailable>> {
    let functions = KernelFunction::chosen(config.kernel_functions);
    let outcomes = probes.attach_kernel_functions(&functions, config.backend)?;
    let watched = functions.len();
    let refused: Vec<(String, Vec<Refusal>)> = functions
        .into_iter()
        .zip(outcomes)
        .filter_map(|(function, outcome)| Some((function.name, outcome.err()?)))
        .collect();
    if refused.is_empty() {
        return Ok(None);
    }
    let none = refused.len() == watched;
    // Some of the functions the user chose: each with its own reason (a
    // debug register short is not the kernel's refusal).
    let skipped: Vec<String> = refused
        .iter()
        .map(|(function, refusals)| format!("{function}: {}", Refusal::all_said(refusals)))
        .collect();
    let skipped = skipped.join("; ");
    let unavailable = Unavailable::KernelRefusesAll(refused);
    match (config.sources_explicit, none) {
        (true, true) if config.sources.len() == 1 => {
            bail!("the kernel source cannot watch any kernel clock function here: {unavailable}")
        }
        (true, true) => {
            warning!("the kernel source is unavailable here: {unavailable}; recording without it")
        }
        (true, false) => {
            warning!("the kernel source skips {skipped}")
        }
        (false, _) => return Ok(Some(unavailable)),
    }
    Ok(None)
}

fn check_go(path: &std::path::Path, what: &str) -> Result<()> {
    match binaries::go_binary(path) {
        GoBinary::Named => Ok(()),
        GoBinary::NotGo => bail!("{what} is not a Go program, so the go source has nothing to probe in it"),
        GoBinary::Unnamed => bail!(
            "{what} is a Go program whose functions cannot be found: it has no symbol table (built with -ldflags=-s) and no Go function table clockprof reads (Go 1.18 or later); -s vdso samples it without names"
        ),
    }
}

fn attach_to_process(
    probes: &mut Probes,
    source: Source,
    which: UprobeBinary,
    pid: u32,
) -> Result<()> {
    let binary = match which {
        UprobeBinary::Libc => binaries::libc_of(pid).with_context(|| {
            format!(
                "PID {pid} does not map glibc, so the {source} source has nothing to probe in it"
            )
        })?,
        UprobeBinary::GoExecutable => {
            let exe = binaries::exe_of(pid)
                .with_context(|| format!("the executable of PID {pid} cannot be read"))?;
            check_go(&exe.fd_path(), &format!("PID {pid}"))?;
            exe
        }
    };
    probes.attach_uprobes(source, &binary, Some(pid))?;
    Ok(())
}

/// Whether `path` is an ELF executable without an interpreter: a static
/// binary maps no glibc for the libc source to probe. Anything unreadable or
/// not ELF (a script) is given the benefit of the doubt.
fn is_static_executable(path: &std::path::Path) -> bool {
    use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let data = object::ReadCache::new(file);
    let Ok(elf) = ElfFile64::<object::Endianness, _>::parse(&data) else {
        return false;
    };
    let endian = elf.endian();
    let Ok(headers) = elf.elf_header().program_headers(endian, &data) else {
        return false;
    };
    !headers
        .iter()
        .any(|header| header.p_type(endian) == object::elf::PT_INTERP)
}

/// Host-wide, every distinct file of the source that runs now gets the
/// uprobes; those processes start with later get them through the attach
/// queue (`Probes::follow_new_processes`), so a source with nothing to probe
/// yet is not skipped.
fn attach_host_wide(probes: &mut Probes, source: Source, which: UprobeBinary) {
    let pids = binaries::all_pids();
    let candidates = match which {
        UprobeBinary::Libc => {
            binaries::distinct(pids.iter().filter_map(|&pid| binaries::libc_of(pid)))
        }
        UprobeBinary::GoExecutable => {
            binaries::distinct(pids.iter().filter_map(|&pid| binaries::exe_of(pid)))
                .into_iter()
                .filter(|exe| match binaries::go_binary(&exe.fd_path()) {
                    GoBinary::Named => true,
                    GoBinary::Unnamed => {
                        warning!(
                            "{} is a Go program whose functions cannot be found (no symbol table, no Go 1.18+ function table); the {source} source skips it",
                            exe.shown.display()
                        );
                        false
                    }
                    GoBinary::NotGo => false,
                })
                .collect()
        }
    };
    for binary in candidates {
        // A process may exit between the scan and the attach; only the
        // remaining binaries matter.
        if let Err(err) = probes.attach_uprobes(source, &binary, None) {
            warning!("{err:#}");
        }
    }
}

/// The uprobes of `source` on the processes of the session, or host-wide:
/// returns why the source does not apply when it is skipped.
fn attach_uprobes(
    probes: &mut Probes,
    config: &SessionConfig,
    source: Source,
    which: UprobeBinary,
) -> Result<Option<Unavailable>> {
    if config.all || (config.pids.is_empty() && !config.command) {
        attach_host_wide(probes, source, which);
        return Ok(None);
    }
    if config.pids.is_empty() {
        // COMMAND gets its own before exec (attach_for_command).
        return Ok(None);
    }
    // Scoped uprobes fire only in these processes: the rest of the host does
    // not pay the trap.
    let mut refusals = Vec::new();
    for &pid in config.pids {
        match attach_to_process(probes, source, which, pid) {
            Ok(()) => {}
            Err(err) if config.sources_explicit => return Err(err),
            Err(err) => refusals.push(format!("{err:#}")),
        }
    }
    if refusals.len() == config.pids.len() {
        return Ok(Some(Unavailable::NothingToProbe(refusals.join("; "))));
    }
    for refusal in refusals {
        warning!("the {source} source skips {refusal}");
    }
    Ok(None)
}

/// With the defaults or `all`, sources that do not apply are skipped; none
/// applying at all is an error.
fn require_some_source(sources: &[Source], unavailable: &[(Source, Unavailable)]) -> Result<()> {
    if sources
        .iter()
        .all(|source| unavailable.iter().any(|(skipped, _)| skipped == source))
    {
        let reasons: Vec<String> = unavailable
            .iter()
            .map(|(source, why)| format!("{source}: {why}"))
            .collect();
        bail!("no clock source applies here ({})", reasons.join("; "));
    }
    Ok(())
}

/// How often the mapping side-band must be drained, so its ring buffers never
/// fill on a host that starts many processes.
const DRAIN_INTERVAL: Duration = Duration::from_millis(100);

/// The same when stacks are unwound with DWARF: the copies' ring, read on
/// the same tick (its stacks are unwound while their mappings are known),
/// holds 2,048 of them, so the tick bounds the stacks a second it keeps:
/// ~20,000 at 100 ms, ~100,000 at 20 ms (docs/costs.md, "DWARF ring").
const DWARF_DRAIN_INTERVAL: Duration = Duration::from_millis(20);

/// How often `record` drains the count and stack maps: their entries are
/// freed at that pace, so they hold about a second of distinct stacks.
pub const MAP_DRAIN_INTERVAL: Duration = Duration::from_secs(1);

pub struct SessionConfig<'a> {
    /// Processes to profile (all their threads); empty with `all` or a command.
    pub pids: &'a [u32],
    /// Profile the whole host even if `pids` or a command are given.
    pub all: bool,
    /// A COMMAND will be started and followed through its forks.
    pub command: bool,
    pub sources: &'a [Source],
    /// Whether the user named the sources (else they are the defaults).
    pub sources_explicit: bool,
    pub backend: Option<Backend>,
    pub count_entries: u32,
    pub stack_entries: u32,
    /// One event in this many takes its user stack (`--stack-every`).
    pub stack_every: u32,
    /// Sampling frequency of the vdso source, in Hz.
    pub frequency: u64,
    /// Kernel clock functions of the kernel source (empty: the defaults).
    pub kernel_functions: &'a [String],
    /// `--unwind`.
    pub unwind: UnwindMode,
}

pub struct Session {
    // Probes first: they are detached before the tracker closes.
    pub probes: Probes,
    pub tracker: ProcTracker,
    /// Default sources this kernel cannot serve, with the reason: skipped,
    /// and named in the output.
    pub unavailable: Vec<(Source, Unavailable)>,
    /// The kernel functions watched, by slot: they name the kernel
    /// source's events.
    pub kernel_functions: Vec<String>,
    generations: Generations,
    normalizer: Normalizer,
    /// Stacks unwound with DWARF (`--unwind auto` or `dwarf`).
    dwarf: Option<DwarfStacks>,
    /// The kernel's lost counters at the last drain (they only grow).
    lost_so_far: LostCounts,
}

/// What the kernel counted since the previous drain.
pub struct Drained {
    /// Counts per normalized sample (several keys may normalize to one).
    pub samples: Vec<(NormalizedSample, u64)>,
    pub lost: LostCounts,
    /// Processes that exited and whose last events are in this drain or an
    /// earlier one: their pids may be reused from now on. Each is its PID
    /// and a start-time bound (see `ProcTracker::forget_exited`): samples of
    /// the PID that started at or before it were made by processes gone.
    pub gone: Vec<(u32, u64)>,
}

/// Whether `pid` still runs: present in /proc and not a zombie.
pub fn process_alive(pid: u32) -> bool {
    use procfs::process::{ProcState, Process};
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    let state = Process::new(pid).and_then(|process| process.stat()?.state());
    matches!(state, Ok(state) if !matches!(state, ProcState::Zombie | ProcState::Dead))
}

impl Session {
    /// Checks privileges and PIDs, then attaches every probe. Nothing is
    /// attached if any step fails.
    pub fn start(config: &SessionConfig) -> Result<Session> {
        privileges::require()?;
        crate::host::facts::require_host_pid_namespace()?;
        for &pid in config.pids {
            if pid == 0 || !process_alive(pid) {
                bail!("no process with PID {pid} exists");
            }
        }
        let filter_by_pid = !config.all && (!config.pids.is_empty() || config.command);
        // The side-band must be open before the /proc snapshots and before any
        // process we profile can start, so no mapping falls in between.
        let mut tracker = ProcTracker::start()
            .context("could not open the perf side-band that tracks process mappings")?;
        if config.sources.iter().any(|s| s.uprobe_binary().is_some()) {
            // From the side-band's start: no process starts unseen.
            tracker.watch_new_files();
        }
        let attaches =
            |kind: fn(&Attach) -> bool| config.sources.iter().any(|s| kind(&s.spec().attach));
        let mut probes = Probes::load(&ProbeConfig {
            filter_by_pid,
            follow_children: config.command,
            count_entries: config.count_entries,
            stack_entries: config.stack_entries,
            stack_every: config.stack_every,
            unwind: config.unwind,
            vdso: attaches(|a| matches!(a, Attach::Sampling)),
            kernel: attaches(|a| matches!(a, Attach::KernelFunctions)),
        })?;
        for &pid in config.pids {
            probes.add_target(pid, target::ONLY)?;
        }
        let mut unavailable = Vec::new();
        // In this order whatever the sources: the fixed kernel hooks, the
        // kernel functions, sampling, then the uprobes, which depend on the
        // processes.
        let phases: [fn(&Attach) -> bool; 4] = [
            |a| matches!(a, Attach::KernelHooks(_)),
            |a| matches!(a, Attach::KernelFunctions),
            |a| matches!(a, Attach::Sampling),
            |a| matches!(a, Attach::Uprobes { .. }),
        ];
        for phase in phases {
            for &source in config.sources {
                let attach = &source.spec().attach;
                if !phase(attach) {
                    continue;
                }
                let outcome = match attach {
                    Attach::KernelHooks(_) => {
                        probes.attach(&[source], config.backend).map(|()| None)
                    }
                    Attach::KernelFunctions => attach_kernel(&mut probes, config),
                    Attach::Sampling => {
                        probes.attach_vdso_sampling(config.frequency).map(|()| None)
                    }
                    &Attach::Uprobes { binary, .. } => {
                        attach_uprobes(&mut probes, config, source, binary)
                    }
                };
                if let Some(reason) = outcome? {
                    unavailable.push((source, reason));
                }
            }
        }
        if !config.command {
            require_some_source(config.sources, &unavailable)?;
            let following: Vec<Source> = config
                .sources
                .iter()
                .copied()
                .filter(|s| !unavailable.iter().any(|(u, _)| u == s))
                .collect();
            probes.follow_new_processes(&following)?;
        }
        if filter_by_pid {
            config
                .pids
                .iter()
                .for_each(|&pid| tracker.snapshot_pid(pid));
        } else {
            tracker.snapshot_all();
        }
        let kernel_functions = KernelFunction::chosen(config.kernel_functions)
            .into_iter()
            .map(|f| f.name)
            .collect();
        let dwarf = match config.unwind {
            UnwindMode::FramePointers => None,
            mode => Some(DwarfStacks::new(&mut probes, mode == UnwindMode::Auto)?),
        };
        Ok(Session {
            dwarf,
            probes,
            tracker,
            unavailable,
            kernel_functions,
            generations: Generations::new()?,
            normalizer: Normalizer::default(),
            lost_so_far: LostCounts::default(),
        })
    }

    /// The sources of `requested` really recording: one this host cannot
    /// serve (skipped, with its reason in `unavailable`) is out.
    pub fn recording(&self, requested: &[Source]) -> Vec<Source> {
        requested
            .iter()
            .copied()
            .filter(|s| !self.unavailable.iter().any(|(u, _)| u == s))
            .collect()
    }

    /// Puts the uprobes of the chosen user-space sources on the files COMMAND
    /// will map, for it and the processes it will start, between its fork
    /// and its exec (see command::spawn). With the
    /// defaults or `all`, a source that does not apply to COMMAND is skipped;
    /// an error here means COMMAND is never executed.
    pub fn attach_for_command(&mut self, sources: &SourceSet, program: &OsStr) -> Result<()> {
        for &source in &sources.sources {
            let Some(which) = source.uprobe_binary() else {
                continue;
            };
            let attached = self.attach_one_for_command(source, which, program);
            match attached {
                Err(err) if !sources.explicit() => {
                    self.unavailable
                        .push((source, Unavailable::NothingToProbe(format!("{err:#}"))));
                }
                result => result?,
            }
        }
        require_some_source(&sources.sources, &self.unavailable)?;
        // What COMMAND's processes map besides (a Go program its shell
        // runs, another libc) gets uprobes as they map it.
        let following = self.recording(&sources.sources);
        self.probes.follow_new_processes(&following)
    }

    fn attach_one_for_command(
        &mut self,
        source: Source,
        which: UprobeBinary,
        program: &OsStr,
    ) -> Result<()> {
        let command = format!("COMMAND `{}`", program.to_string_lossy());
        let path = binaries::resolve_command(program)
            .with_context(|| format!("{command} was not found in PATH"))?;
        let executable = Binary::open(&path, path.clone(), None)
            .with_context(|| format!("{command} is not a regular file that can be read"))?;
        let binary = match which {
            // COMMAND has not exec'd yet; it will map the host's libc, the
            // one this process maps, unless it is static.
            UprobeBinary::Libc => {
                if is_static_executable(&executable.fd_path()) {
                    bail!("{command} is statically linked, so the {source} source has nothing to probe in it");
                }
                binaries::libc_of(std::process::id()).with_context(|| {
                    format!("this host's glibc was not found, so the {source} source has nothing to probe")
                })?
            }
            UprobeBinary::GoExecutable => {
                check_go(&executable.fd_path(), &command)?;
                executable
            }
        };
        // On the whole file, for every process that maps it: the PID filter
        // keeps COMMAND and the processes it starts, which map the file from
        // their first instruction on, so none of their calls is missed.
        // Other processes using the file trap too, and are dropped in eBPF.
        self.probes.attach_uprobes(source, &binary, None)?;
        Ok(())
    }

    /// The ticks drain_side_band runs on. A late tick is delayed, not made
    /// up in a burst: a drain that took longer than the interval (stacks
    /// to unwind from a tight loop) must not be followed at once by the
    /// next, or the loop never waits and the runtime never gets to see a
    /// signal or COMMAND's exit.
    pub fn side_band_ticks(&self) -> tokio::time::Interval {
        let mut ticks = tokio::time::interval(if self.dwarf.is_some() {
            DWARF_DRAIN_INTERVAL
        } else {
            DRAIN_INTERVAL
        });
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    }

    /// Applies the side-band's pending records to the process tracker
    /// (every ~100 ms), and sends the binaries processes started with since
    /// to the attach queue.
    /// Then unwinds the DWARF stacks that came meanwhile, while their
    /// processes' mappings are known.
    pub fn drain_side_band(&mut self) {
        self.tracker.drain();
        self.probes.follow_new_files(&mut self.tracker);
        if let Some(dwarf) = &mut self.dwarf {
            dwarf.poll(&mut self.probes, &mut self.tracker);
        }
    }

    /// `--unwind auto`: COMMAND, between its fork and its exec, is
    /// classified by the program it is about to run, so its first clock
    /// read is already unwound the way it needs.
    pub fn classify_command(&mut self, pid: u32, program: &OsStr) {
        if let (Some(dwarf), Some(path)) = (&mut self.dwarf, binaries::resolve_command(program)) {
            dwarf.classify_command(&mut self.probes, pid, &path);
        }
    }

    /// Everything the kernel counted since the previous drain, its user
    /// stacks normalized, and the kernel's entries freed. The programs move
    /// to the other generation of maps first, and the drain waits until none
    /// still writes to the one it reads, so no count is lost or read twice.
    /// The mapping records up to now are applied before the stacks are
    /// normalized; processes whose last events this drain read are then
    /// forgotten (`ProcTracker::forget_exited`).
    pub fn drain(&mut self) -> Result<Drained> {
        let old = self.generations.flip(self.probes.ebpf_mut())?;
        self.drain_side_band();
        let mut collected = collect::drain(self.probes.ebpf_mut(), old)?;
        if let Some(dwarf) = &mut self.dwarf {
            collected.samples.extend(dwarf.take_samples());
        }
        let samples = self
            .normalizer
            .normalize(&collected.samples, &mut self.tracker);
        let gone = self.tracker.forget_exited();
        self.probes.sweep_late_uprobes(&self.tracker);
        if let Some(dwarf) = &mut self.dwarf {
            dwarf.forget(&mut self.probes, &gone);
        }
        let lost = collected.lost.since(&self.lost_so_far);
        self.lost_so_far = collected.lost;
        Ok(Drained {
            samples: merge(samples),
            lost,
            gone,
        })
    }

    /// For a run that names each drain's samples at once and drops them
    /// (serve): lets go of the interned paths, stacks and identities no
    /// sample holds, and closes the files only forgotten processes mapped.
    /// Returns how many files were closed.
    pub fn release_unreferenced(&mut self) -> usize {
        self.normalizer.release_unreferenced();
        self.tracker.close_unmapped_files()
    }

    /// Processes (PID, start time) whose stacks were unwound with DWARF.
    pub fn unwound_with_dwarf(&self) -> Vec<(u32, u64)> {
        self.dwarf
            .as_ref()
            .map(DwarfStacks::served)
            .unwrap_or_default()
    }

    /// Every hook attached so far, those of binaries processes started
    /// with since the start included.
    pub fn attachments(&self) -> Vec<Attachment> {
        self.probes.attachments()
    }
}

/// Samples equal once normalized (other stack ids of the same frames, or
/// the same stack in two generations) as one.
fn merge(samples: Vec<(NormalizedSample, u64)>) -> Vec<(NormalizedSample, u64)> {
    let mut merged: std::collections::HashMap<NormalizedSample, u64> =
        std::collections::HashMap::with_capacity(samples.len());
    for (sample, count) in samples {
        // Saturating, as aggregate::add_count (a layer above) sums counts.
        let total: &mut u64 = merged.entry(sample).or_default();
        *total = total.saturating_add(count);
    }
    merged.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zombies_and_vanished_pids_are_not_alive() {
        assert!(process_alive(std::process::id()));
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id();
        // Exited but not waited for: a zombie until `wait`.
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z"))
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!process_alive(pid));
        child.wait().unwrap();
        assert!(!process_alive(pid));
        assert!(!process_alive(u32::MAX));
    }
}

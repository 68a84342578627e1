//! What to attach where: loads the embedded eBPF object, sizes its maps, fills
//! the PID filter and attaches one program per clock-read hook of each chosen
//! source. Dropping `Probes` detaches everything (links are fd-based), so no
//! probe outlives the process, whatever way it exits.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{HashMap, Map, MapData};
use aya::programs::{FEntry, KProbe, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};
use profiler_common::names;
use serde::Serialize;

use crate::source::Source;

/// The eBPF object built by build.rs (profiler-ebpf for bpfel-unknown-none).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/clockprof"));

/// How a hook is attached, best (cheapest) first: the first one the kernel
/// accepts is used, unless `--backend` forces one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Fentry,
    Kprobe,
    Tracepoint,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Fentry => "fentry",
            Backend::Kprobe => "kprobe",
            Backend::Tracepoint => "tracepoint",
        })
    }
}

/// One way to attach a hook: a program of the eBPF object and where it goes
/// (a kernel function, or `category:name` of a tracepoint).
#[derive(Clone, Copy, Debug)]
struct HookPoint {
    backend: Backend,
    program: &'static str,
    target: &'static str,
}

/// A clock-read hook with its ways of attaching, best first.
struct Hook {
    points: &'static [HookPoint],
}

const fn point(backend: Backend, program: &'static str, target: &'static str) -> HookPoint {
    HookPoint {
        backend,
        program,
        target,
    }
}

const SYSCALL_HOOKS: &[Hook] = &[
    Hook {
        points: &[
            point(
                Backend::Fentry,
                "fentry_clock_gettime",
                "__x64_sys_clock_gettime",
            ),
            point(
                Backend::Kprobe,
                "kprobe_clock_gettime",
                "__x64_sys_clock_gettime",
            ),
            point(
                Backend::Tracepoint,
                "sys_enter_clock_gettime",
                "syscalls:sys_enter_clock_gettime",
            ),
        ],
    },
    Hook {
        points: &[
            point(
                Backend::Fentry,
                "fentry_gettimeofday",
                "__x64_sys_gettimeofday",
            ),
            point(
                Backend::Kprobe,
                "kprobe_gettimeofday",
                "__x64_sys_gettimeofday",
            ),
            point(
                Backend::Tracepoint,
                "sys_enter_gettimeofday",
                "syscalls:sys_enter_gettimeofday",
            ),
        ],
    },
    Hook {
        points: &[
            point(Backend::Fentry, "fentry_time", "__x64_sys_time"),
            point(Backend::Kprobe, "kprobe_time", "__x64_sys_time"),
            point(
                Backend::Tracepoint,
                "sys_enter_time",
                "syscalls:sys_enter_time",
            ),
        ],
    },
];

fn hooks(source: Source) -> &'static [Hook] {
    match source {
        Source::Syscall => SYSCALL_HOOKS,
    }
}

/// One attached hook, for the record of what was measured how.
#[derive(Clone, Debug, Serialize)]
pub struct Attachment {
    pub source: Source,
    pub hook: String,
    pub backend: Backend,
}

pub struct ProbeConfig {
    /// Count only processes in the target map (`-p`, `-- COMMAND`).
    pub filter_by_pid: bool,
    /// Follow forks of targets added with `FOLLOW_CHILDREN`.
    pub follow_children: bool,
    pub count_entries: u32,
    pub stack_entries: u32,
}

pub struct Probes {
    // Declared first so it is dropped (detached) before tracefs is unmounted.
    ebpf: Ebpf,
    attachments: Vec<Attachment>,
    /// BTF of the running kernel, loaded on first use by fentry.
    btf: Option<Result<Btf, String>>,
    _tracefs: Option<TracefsMount>,
}

const TRACEFS: &str = "/sys/kernel/tracing";

/// tracefs mounted by us because the host had none; unmounted again on drop so
/// the host is left as we found it.
struct TracefsMount;

impl TracefsMount {
    fn ensure() -> Result<Option<TracefsMount>> {
        if Path::new(TRACEFS).join("events").exists()
            || Path::new("/sys/kernel/debug/tracing/events").exists()
        {
            return Ok(None);
        }
        let status = std::process::Command::new("mount")
            .args(["-t", "tracefs", "nodev", TRACEFS])
            .status()
            .context("could not run mount to mount tracefs")?;
        if !status.success() {
            bail!("tracefs is not mounted and mounting it at {TRACEFS} failed; mount it with `mount -t tracefs nodev {TRACEFS}`");
        }
        Ok(Some(TracefsMount))
    }
}

impl Drop for TracefsMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(TRACEFS).status();
    }
}

fn tracefs_events() -> &'static Path {
    if Path::new(TRACEFS).join("events").exists() {
        Path::new("/sys/kernel/tracing/events")
    } else {
        Path::new("/sys/kernel/debug/tracing/events")
    }
}

/// Reads a field's offset from a tracepoint's format file. The layout of
/// `sched_process_fork` changed (comm became `__data_loc`), so it is not fixed.
fn tracepoint_field_offset(category: &str, name: &str, field: &str) -> Result<u32> {
    let path = tracefs_events().join(category).join(name).join("format");
    let format = std::fs::read_to_string(&path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let needle = format!(" {field};");
    format
        .lines()
        .find(|line| line.contains(&needle))
        .and_then(|line| line.split("offset:").nth(1))
        .and_then(|rest| rest.split(';').next())
        .and_then(|offset| offset.trim().parse().ok())
        .ok_or_else(|| anyhow!("no field {field} in {}", path.display()))
}

impl Probes {
    pub fn load(config: &ProbeConfig) -> Result<Self> {
        let tracefs = TracefsMount::ensure()?;
        let fork_offset = if config.follow_children {
            tracepoint_field_offset("sched", "sched_process_fork", "child_pid")?
        } else {
            0
        };
        let filter = u32::from(config.filter_by_pid);
        let ebpf = EbpfLoader::new()
            .override_global(names::FILTER_BY_PID, &filter, true)
            .override_global(names::FORK_CHILD_PID_OFFSET, &fork_offset, true)
            .map_max_entries(names::COUNTS, config.count_entries)
            .map_max_entries(names::STACKS, config.stack_entries)
            .load(EBPF_OBJECT)
            .map_err(|err| {
                anyhow!("the kernel refused clockprof's eBPF maps or programs ({err}); run `clockprof doctor` to see what this kernel allows")
            })?;
        let mut probes = Probes {
            ebpf,
            attachments: Vec::new(),
            btf: None,
            _tracefs: tracefs,
        };
        if config.follow_children {
            probes
                .attach_tracepoint("sched_process_fork", "sched:sched_process_fork")
                .context("could not follow the processes COMMAND starts")?;
        }
        Ok(probes)
    }

    fn attach_tracepoint(&mut self, program: &str, target: &str) -> Result<()> {
        let (category, name) = target
            .split_once(':')
            .expect("tracepoint targets are category:name");
        let tracepoint: &mut TracePoint = self.program(program)?.try_into()?;
        tracepoint.load()?;
        if let Err(err) = tracepoint.attach(category, name) {
            let _ = tracepoint.unload();
            return Err(err.into());
        }
        Ok(())
    }

    fn attach_kprobe(&mut self, program: &str, function: &str) -> Result<()> {
        let kprobe: &mut KProbe = self.program(program)?.try_into()?;
        kprobe.load()?;
        if let Err(err) = kprobe.attach(function, 0) {
            let _ = kprobe.unload();
            return Err(err.into());
        }
        Ok(())
    }

    fn attach_fentry(&mut self, program: &str, function: &str) -> Result<()> {
        let btf = self
            .btf
            .get_or_insert_with(|| {
                Btf::from_sys_fs().map_err(|err| format!("the kernel has no usable BTF ({err})"))
            })
            .clone()
            .map_err(|reason| anyhow!(reason))?;
        let fentry: &mut FEntry = self.program(program)?.try_into()?;
        fentry.load(function, &btf)?;
        if let Err(err) = fentry.attach() {
            let _ = fentry.unload();
            return Err(err.into());
        }
        Ok(())
    }

    fn program(&mut self, name: &str) -> Result<&mut aya::programs::Program> {
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))
    }

    /// Loads and attaches one way of a hook. A program the kernel loads but
    /// will not attach is unloaded again, so a failed try leaves nothing behind.
    fn attach_point(&mut self, point: HookPoint) -> Result<()> {
        match point.backend {
            Backend::Fentry => self.attach_fentry(point.program, point.target),
            Backend::Kprobe => self.attach_kprobe(point.program, point.target),
            Backend::Tracepoint => self.attach_tracepoint(point.program, point.target),
        }
    }

    /// Attaches every hook of every source, each through the best backend the
    /// kernel accepts (or only `forced`). On error, what was attached is
    /// detached when `self` is dropped by the caller.
    pub fn attach(&mut self, sources: &[Source], forced: Option<Backend>) -> Result<()> {
        for &source in sources {
            for hook in hooks(source) {
                let mut refusals = Vec::new();
                let mut attached = None;
                let candidates = hook
                    .points
                    .iter()
                    .filter(|p| forced.is_none_or(|backend| p.backend == backend));
                for &point in candidates {
                    match self.attach_point(point) {
                        Ok(()) => {
                            attached = Some(point);
                            break;
                        }
                        Err(err) => {
                            refusals.push(format!("{} {}: {err:#}", point.backend, point.target))
                        }
                    }
                }
                let Some(point) = attached else {
                    let tried = if refusals.is_empty() {
                        "it has no hook of the chosen backend".to_string()
                    } else {
                        refusals.join("; ")
                    };
                    bail!("could not attach the {source} source ({tried}); run `clockprof doctor` to see what this kernel allows");
                };
                self.attachments.push(Attachment {
                    source,
                    hook: point.target.to_string(),
                    backend: point.backend,
                });
            }
        }
        Ok(())
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    fn targets(&mut self) -> Result<HashMap<&mut MapData, u32, u32>> {
        let map = self
            .ebpf
            .map_mut(names::TARGETS)
            .ok_or_else(|| anyhow!("the eBPF object has no {} map", names::TARGETS))?;
        Ok(HashMap::try_from(map)?)
    }

    pub fn add_target(&mut self, tgid: u32, flags: u32) -> Result<()> {
        self.targets()?
            .insert(tgid, flags, 0)
            .with_context(|| format!("could not add PID {tgid} to the kernel's PID filter"))
    }

    /// The raw fd of the target map, for a child to register itself before exec.
    pub fn targets_fd(&self) -> Result<RawFd> {
        match self.ebpf.map(names::TARGETS) {
            Some(Map::HashMap(data)) => Ok(data.fd().as_fd().as_raw_fd()),
            _ => bail!("the eBPF object has no {} hash map", names::TARGETS),
        }
    }

    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }
}

//! What to attach where: loads the embedded eBPF object, sizes its maps, fills
//! the PID filter and attaches one program per clock-read hook of each chosen
//! source. Dropping `Probes` detaches everything (links are fd-based), so no
//! probe outlives the process, whatever way it exits.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{HashMap, Map, MapData};
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};
use profiler_common::names;
use serde::Serialize;

use crate::source::Source;

/// The eBPF object built by build.rs (profiler-ebpf for bpfel-unknown-none).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/clockprof"));

/// How a hook is attached. The best one the kernel accepts is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Tracepoint,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Tracepoint => "tracepoint",
        })
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

/// The hooks of each source: (program name, tracepoint category, tracepoint name).
fn tracepoints(source: Source) -> &'static [(&'static str, &'static str)] {
    match source {
        Source::Syscall => &[
            ("syscalls", "sys_enter_clock_gettime"),
            ("syscalls", "sys_enter_gettimeofday"),
            ("syscalls", "sys_enter_time"),
        ],
    }
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
            _tracefs: tracefs,
        };
        if config.follow_children {
            probes.attach_tracepoint("sched_process_fork", "sched", "sched_process_fork")?;
        }
        Ok(probes)
    }

    fn attach_tracepoint(&mut self, program: &str, category: &str, name: &str) -> Result<()> {
        let tracepoint: &mut TracePoint = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| anyhow!("the eBPF object has no program {program}"))?
            .try_into()?;
        tracepoint
            .load()
            .with_context(|| format!("the kernel refused to load the program for {category}:{name}"))?;
        tracepoint
            .attach(category, name)
            .with_context(|| format!("could not attach to tracepoint {category}:{name}"))?;
        Ok(())
    }

    /// Attaches every hook of every source; on error, what was attached is
    /// detached when `self` is dropped by the caller.
    pub fn attach(&mut self, sources: &[Source]) -> Result<()> {
        for &source in sources {
            for &(category, name) in tracepoints(source) {
                self.attach_tracepoint(name, category, name)?;
                self.attachments.push(Attachment {
                    source,
                    hook: format!("{category}:{name}"),
                    backend: Backend::Tracepoint,
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

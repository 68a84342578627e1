//! The PID filter: the `TARGETS` map of the processes a recording is
//! limited to (`-p`, `-- COMMAND` and, when followed, their children).

use std::os::fd::{AsFd, AsRawFd, RawFd};

use anyhow::{bail, Context, Result};
use aya::maps::{HashMap, Map, MapData};
use profiler_common::names;

use super::Probes;

impl Probes {
    fn targets(&mut self) -> Result<HashMap<&mut MapData, u32, u32>> {
        self.hash_map(names::TARGETS)
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
}

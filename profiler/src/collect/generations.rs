//! Which generation of the count and stack maps the eBPF programs write to,
//! and the flip that hands the other one to the daemon to drain.
//!
//! The programs read `GENERATION` once per event and write that
//! generation's count and stack maps. After flipping it, the daemon waits
//! for every program that may still run on the old value: non-sleepable BPF
//! programs run under RCU, and updating an element of a map-in-map from
//! user space returns only after `synchronize_rcu()` (kernel/bpf/syscall.c,
//! `maybe_wait_bpf_programs`, there since 4.13, so on every kernel clockprof
//! supports). So a one-slot array of maps, updated after each flip, is the
//! fence. Then nothing writes to the old generation until the next flip, and
//! it can be read and cleared without losing an increment.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use anyhow::{anyhow, Context, Result};
use aya::maps::{Array, ArrayOfMaps, Map, MapData};
use aya::Ebpf;
use profiler_common::names;

/// The generation the programs write to, and the fence.
pub struct Generations {
    current: usize,
    fence: Fence,
}

impl Generations {
    /// Programs start on generation 0 (the map starts zeroed).
    pub fn new() -> Result<Generations> {
        Ok(Generations {
            current: 0,
            fence: Fence::create()?,
        })
    }

    /// Makes the programs write to the other generation and returns once no
    /// program still writes to the one they used: that one, returned, is
    /// the daemon's to read and clear until the next flip.
    pub fn flip(&mut self, ebpf: &mut Ebpf) -> Result<usize> {
        let old = self.current;
        let new = 1 - old;
        let map = ebpf
            .map_mut(names::GENERATION)
            .ok_or_else(|| anyhow!("the eBPF object has no {} map", names::GENERATION))?;
        let mut generation: Array<&mut MapData, u32> = Array::try_from(map)?;
        generation
            .set(0, new as u32, 0)
            .context("could not switch the eBPF programs to the other map generation")?;
        self.current = new;
        self.fence.wait()?;
        Ok(old)
    }
}

/// A one-slot array of maps whose only purpose is the grace period its
/// update waits for.
struct Fence {
    outer: ArrayOfMaps<MapData, MapData>,
    inner: MapData,
}

impl Fence {
    fn create() -> Result<Fence> {
        let inner = create_map(BPF_MAP_TYPE_ARRAY, None)
            .context("could not create the map that fences map generations")?;
        let outer = create_map(BPF_MAP_TYPE_ARRAY_OF_MAPS, Some(inner.as_fd()))
            .context("could not create the array of maps that fences map generations")?;
        let outer = ArrayOfMaps::try_from(Map::ArrayOfMaps(MapData::from_fd(outer)?))?;
        Ok(Fence {
            outer,
            inner: MapData::from_fd(inner)?,
        })
    }

    /// Returns after an RCU grace period: every BPF program that started
    /// before the call has finished.
    fn wait(&mut self) -> Result<()> {
        self.outer
            .set(0, &self.inner, 0)
            .context("could not wait for running eBPF programs")?;
        Ok(())
    }
}

/// The leading fields of `union bpf_attr` for BPF_MAP_CREATE (the kernel
/// reads the rest as zero when given a shorter attribute).
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// A one-slot array of u32 (or of maps like `inner`). By hand: aya 0.14
/// creates maps of maps only from an eBPF object's BTF map definitions.
fn create_map(map_type: u32, inner: Option<BorrowedFd>) -> std::io::Result<OwnedFd> {
    let attr = MapCreateAttr {
        map_type,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_flags: 0,
        inner_map_fd: inner.map_or(0, |fd| fd.as_raw_fd() as u32),
    };
    // SAFETY: `attr` is a valid, initialised prefix of bpf_attr for
    // BPF_MAP_CREATE, and its size is passed along.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &attr as *const MapCreateAttr,
            std::mem::size_of::<MapCreateAttr>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root, like everything that creates BPF maps.
    #[test]
    fn the_fence_waits_for_a_grace_period() {
        let mut fence = Fence::create().unwrap();
        let started = std::time::Instant::now();
        for _ in 0..3 {
            fence.wait().unwrap();
        }
        // synchronize_rcu takes at least a scheduler tick or so; a map
        // update that did not wait would take microseconds.
        let each = started.elapsed() / 3;
        eprintln!("fence: {each:?} per wait");
        assert!(each > std::time::Duration::from_micros(200), "{each:?}");
    }
}

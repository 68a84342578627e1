//! The DWARF side of the maps: which processes copy their stacks for
//! unwinding in user space (`DWARF_TARGETS`, for `--unwind auto`) and the
//! ring of copied stacks (`DWARF_STACKS`).

use anyhow::{anyhow, Result};
use aya::maps::{HashMap, MapData, RingBuf};
use profiler_common::{dwarf_target, names, GoLayout};

use super::Probes;

impl Probes {
    fn dwarf_targets(&mut self) -> Result<HashMap<&mut MapData, u32, u32>> {
        self.hash_map(names::DWARF_TARGETS)
    }

    /// From now on, `tgid`'s stacks are copied for DWARF unwinding; those
    /// of a cgo program whose layout is known (`go`) with the frames of the
    /// goroutine that called into C.
    pub fn unwind_with_dwarf(&mut self, tgid: u32, go: Option<GoLayout>) -> Result<()> {
        let mut flags = dwarf_target::UNWIND;
        if let Some(layout) = go {
            self.go_layouts()?.insert(tgid, layout, 0)?;
            flags |= dwarf_target::GOROUTINE_FRAMES;
        }
        Ok(self.dwarf_targets()?.insert(tgid, flags, 0)?)
    }

    fn go_layouts(&mut self) -> Result<HashMap<&mut MapData, u32, GoLayout>> {
        self.hash_map(names::GO_LAYOUTS)
    }

    /// `tgid` is walked with frame pointers again (it exited, or exec'd a
    /// program that has them).
    pub fn unwind_with_frame_pointers(&mut self, tgid: u32) {
        if let Ok(mut targets) = self.dwarf_targets() {
            // Not there: as good.
            let _ = targets.remove(&tgid);
        }
        if let Ok(mut layouts) = self.go_layouts() {
            let _ = layouts.remove(&tgid);
        }
    }

    /// The ring the copied stacks come in; taken once, by the session.
    pub fn take_dwarf_ring(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(names::DWARF_STACKS)
            .ok_or_else(|| anyhow!("the eBPF object has no {} map", names::DWARF_STACKS))?;
        Ok(RingBuf::try_from(map)?)
    }
}

//! The uprobe sources' entry uprobes: on the binaries mapped when the
//! session starts (symbols read and uprobes attached through aya), then,
//! through the attach queue, on those processes start with later.

use std::num::NonZeroU32;
use std::os::fd::{AsFd, BorrowedFd};

use anyhow::{bail, Context, Result};
use aya::programs::uprobe::UProbeScope;
use aya::programs::UProbe;

use super::Probes;
use crate::attachment::{Attachment, Backend};
use crate::host::binaries::Binary;
use crate::probes::attach_queue::{AttachQueue, Wanted};
use crate::proc_tracker::ProcTracker;
use crate::sources::{Attach, Source, Uprobe};

impl Probes {
    /// Entry uprobes of `source` on `binary`, for one process or all that map
    /// it. Returns how many were attached; an error names the binary.
    /// Symbols are read from, and the uprobes attached to, the one open file
    /// (through its /proc/self/fd path): the kernel keys uprobes by inode, so
    /// they land in exactly the file whose symbols gave the offsets.
    pub fn attach_uprobes(
        &mut self,
        source: Source,
        binary: &Binary,
        pid: Option<u32>,
    ) -> Result<usize> {
        let path = binary.fd_path();
        let scope = match pid.and_then(NonZeroU32::new) {
            Some(pid) => UProbeScope::OneProcess(pid),
            None => UProbeScope::AllProcesses,
        };
        let mut attached = 0;
        let mut missing = Vec::new();
        let uprobes = match source.spec().attach {
            Attach::Uprobes { uprobes, .. } => uprobes,
            Attach::KernelHooks(_) | Attach::KernelFunctions | Attach::Sampling => &[],
        };
        for &Uprobe { program, symbols } in uprobes {
            let first_use = self.loaded.insert(program);
            let uprobe: &mut UProbe = self.program(program)?.try_into()?;
            if first_use {
                uprobe.load()?;
            }
            let found = symbols
                .iter()
                .find(|&&symbol| uprobe.attach(symbol, &path, scope).is_ok())
                .copied()
                // A stripped Go executable: the entry from its .gopclntab.
                .or_else(|| {
                    let (symbol, offset) = super::uprobe::symbol_offset(&path, symbols)?;
                    uprobe.attach(offset, &path, scope).ok().map(|_| symbol)
                });
            match found {
                Some(symbol) => {
                    attached += 1;
                    self.attachments.push(Attachment {
                        source,
                        hook: format!("{}:{symbol}", binary.shown.display()),
                        backend: Backend::Uprobe,
                    });
                }
                None => missing.push(symbols[0]),
            }
        }
        if attached == 0 {
            bail!(
                "could not put the {source} uprobes on {}: it has none of {}",
                binary.shown.display(),
                missing.join(", ")
            );
        }
        self.uprobe_files.insert(binary.key());
        Ok(attached)
    }

    /// Loads the uprobe program `name` once; returns its descriptor.
    fn uprobe_program(&mut self, name: &'static str) -> Result<BorrowedFd<'_>> {
        let first_use = self.loaded.insert(name);
        let uprobe: &mut UProbe = self.program(name)?.try_into()?;
        if first_use {
            uprobe.load()?;
        }
        Ok(uprobe.fd()?.as_fd())
    }

    /// From now on, the uprobes of `sources` follow new processes: each
    /// binary a process maps later that a source wants gets that source's
    /// uprobes (see `attach_queue`), as the side-band brings it
    /// (`follow_new_files`).
    pub fn follow_new_processes(&mut self, sources: &[Source]) -> Result<()> {
        let mut wanted = Vec::new();
        for &source in sources {
            let Attach::Uprobes { binary, uprobes } = source.spec().attach else {
                continue;
            };
            let mut programs = Vec::new();
            for &Uprobe { program, symbols } in uprobes {
                let fd = self.uprobe_program(program)?.try_clone_to_owned()?;
                programs.push((symbols, fd));
            }
            wanted.push(Wanted {
                source,
                which: binary,
                programs,
            });
        }
        if !wanted.is_empty() {
            self.late = Some(
                AttachQueue::start(wanted)
                    .context("could not start the thread that attaches uprobes to new processes")?,
            );
        }
        Ok(())
    }

    /// Sends the files processes mapped since the last call (the tracker
    /// just drained) to the attach queue: those a recorded process maps
    /// and no uprobe covers yet.
    pub fn follow_new_files(&mut self, tracker: &mut ProcTracker) {
        let Some(queue) = self.late.as_mut() else {
            return;
        };
        let new_files = tracker.take_new_files();
        let targets = match self.ebpf.map(profiler_common::names::TARGETS) {
            Some(map) if self.filter_by_pid => {
                aya::maps::HashMap::<_, u32, u32>::try_from(map).ok()
            }
            _ => None,
        };
        for (pid, mapping) in new_files {
            let recorded = !self.filter_by_pid
                || targets
                    .as_ref()
                    .is_some_and(|targets| targets.get(&pid, 0).is_ok());
            let Some(key) = mapping.file else { continue };
            if !recorded || self.uprobe_files.contains(&key) || !queue.is_new(&mapping) {
                continue;
            }
            if let Some(binary) = tracker.binary(key, &mapping.path) {
                queue.consider(binary);
            }
        }
    }

    /// Detaches the late uprobes of files no live process maps any more
    /// (see `AttachQueue::sweep`).
    pub fn sweep_late_uprobes(&mut self, tracker: &ProcTracker) {
        if let Some(queue) = self.late.as_mut() {
            queue.sweep(&tracker.files_mapped_by_live_processes());
        }
    }
}

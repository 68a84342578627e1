//! /proc snapshots: what existed before the side-band events were opened,
//! and what only /proc can say (owner, cgroup) while a process lives.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;

use super::address_space::{Mapping, Model};
use super::process::Process;
use crate::host::maps::parse_maps_line;

impl Model {
    /// Replaces what is known about `pid` by /proc/PID/{maps,comm}; a vanished pid is skipped.
    pub(super) fn snapshot_pid(&mut self, pid: u32) {
        // maps may be unreadable (another namespace, LSM) while comm still is.
        let maps = fs::read_to_string(format!("/proc/{pid}/maps"));
        let comm = fs::read_to_string(format!("/proc/{pid}/comm"));
        if maps.is_err() && comm.is_err() {
            return;
        }
        let mappings: BTreeMap<u64, Mapping> = maps
            .iter()
            .flat_map(|maps| maps.lines())
            .filter_map(parse_maps_line)
            .filter(|line| line.executable)
            .take(super::address_space::MAX_MAPPINGS)
            .map(|line| (line.mapping.start, line.mapping))
            .collect();
        for mapping in mappings.values() {
            self.files.open_mapped(pid, mapping);
        }
        // Read after /proc showed the process: it had started by then.
        let seen = super::ring::monotonic_ns();
        let lives = self.processes.entry(pid).or_default();
        let process = match lives.latest() {
            // The life known is still running: this is a newer view of it.
            Some(life) if !life.process.exited => &mut lives.latest_mut().expect("latest").process,
            // A zombie or kernel thread of a PID whose process is known to
            // have exited tells nothing new.
            Some(_) if mappings.is_empty() => return,
            // The PID's known process exited: this is the next one.
            _ => lives.begin(seen, Process::default()),
        };
        if let Ok(comm) = comm {
            process.comm = comm.trim_end_matches('\n').to_owned();
        }
        // Empty maps mean a kernel thread or a zombie; for a zombie the events already
        // told us more than /proc still can.
        if !mappings.is_empty() {
            // Libraries that may interpose, looked at once the executable
            // (the lowest mapping) is known.
            let libraries: Vec<Mapping> = mappings
                .values()
                .filter(|m| m.file.is_some() && !crate::host::interposer::is_c_library(&m.path))
                .cloned()
                .collect();
            process.mappings = mappings;
            process.exited = false;
            process.read_identity(pid);
            for library in &libraries {
                self.files.note_interposer(pid, process, library);
            }
        }
    }

    /// Snapshots every process in /proc.
    pub(super) fn snapshot_all(&mut self) {
        // Read by hand, not through procfs: this is the side-band's start-up
        // path, run over every process before the first drain.
        let Ok(entries) = fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                self.snapshot_pid(pid);
            }
        }
    }
}

impl Process {
    /// Reads what only /proc can say, while the process lives.
    pub(super) fn read_identity(&mut self, pid: u32) {
        if let Ok(meta) = fs::metadata(format!("/proc/{pid}")) {
            self.owner = Some(meta.uid());
        }
        if let Ok(file) = fs::read_to_string(format!("/proc/{pid}/cgroup")) {
            self.cgroup = crate::host::container::cgroup_path(&file);
        }
    }
}

//! /proc snapshots: what existed before the side-band events were opened,
//! and what only /proc can say (owner, cgroup) while a process lives.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;

use super::address_space::{Mapping, Model, Process};
use crate::safe_open::FileKey;

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
            process.mappings = mappings;
            process.exited = false;
            process.read_identity(pid);
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
            self.cgroup = crate::container::cgroup_path(&file);
        }
    }
}

/// One line of /proc/PID/maps that names something: a file or a special
/// region such as `[vdso]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsLine {
    pub mapping: Mapping,
    pub executable: bool,
}

/// Parses a line of /proc/PID/maps:
/// `start-end perms offset dev inode   path`, path padded and possibly absent.
/// The path is everything after the padding, spaces and ` (deleted)` kept.
/// The one parser of maps lines: the snapshots, the libc finder and the vDSO
/// lookup all read them through it.
pub fn parse_maps_line(line: &str) -> Option<MapsLine> {
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let inode: u64 = fields.next()?.parse().ok()?;
    let path = fields.next()?.trim_start();
    if path.is_empty() {
        return None;
    }
    let file = (inode != 0).then_some(FileKey::new(
        u32::from_str_radix(major, 16).ok()?,
        u32::from_str_radix(minor, 16).ok()?,
        inode,
    ));
    Some(MapsLine {
        mapping: Mapping {
            start: u64::from_str_radix(start, 16).ok()?,
            end: u64::from_str_radix(end, 16).ok()?,
            file_offset: u64::from_str_radix(offset, 16).ok()?,
            path: path.to_owned(),
            file,
        },
        executable: perms.contains('x'),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse() {
        let line = "7f1c2a228000-7f1c2a37d000 r-xp 00028000 fe:01 1234   /tmp/my lib.so (deleted)";
        let expected = Mapping {
            start: 0x7f1c2a228000,
            end: 0x7f1c2a37d000,
            file_offset: 0x28000,
            path: "/tmp/my lib.so (deleted)".into(),
            file: Some(FileKey::new(0xfe, 1, 1234)),
        };
        let parsed = parse_maps_line(line).unwrap();
        assert_eq!(parsed.mapping, expected);
        assert!(parsed.executable);
        assert_eq!(
            parse_maps_line(
                "7ffd1000-7ffd3000 r-xp 00000000 00:00 0                          [vdso]"
            )
            .unwrap()
            .mapping
            .path,
            "[vdso]"
        );
        let data =
            parse_maps_line("55d0000-55d1000 r--p 00000000 fe:01 1234   /usr/bin/x").unwrap();
        assert!(!data.executable);
        assert_eq!(data.mapping.path, "/usr/bin/x");
        assert_eq!(
            parse_maps_line("7f00000-7f01000 rwxp 00000000 00:00 0 "),
            None
        );
    }
}

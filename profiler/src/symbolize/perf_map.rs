//! JIT code named by the process's own perf map.
//!
//! A JIT runtime's `/tmp/perf-PID.map` (`START SIZE NAME` per line, hex) is
//! the convention perf defined and node --perf-basic-prof, the JVM's agents
//! and others follow. blazesym reads these only for live processes through
//! /proc; the file outlives the process, so it is read here directly, under
//! perf's rules (`safe_open::open_perf_map`): anyone can create files in
//! /tmp.
//!
//! Whoever writes the file sets what it costs to read, so each version of
//! a file (device, inode, size, mtime) is parsed once and shared by every
//! PID that links to it, a file's entries are bounded by `MAX_MAP_COST`
//! and all parsed maps together by `MAX_CACHE_COST`, and names are cut at
//! `MAX_NAME_BYTES`. A map not used in the last two drains is dropped.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::sync::Arc;

use super::lookup::{capped_name, MAX_NAME_BYTES};
use crate::host::safe_open::{self, PerfMapRefusal, PerfMapVersion};
use crate::say::note;

/// What one map's entries may cost in memory (each: its range, the name and
/// the name's bytes); entries past it are left unnamed.
const MAX_MAP_COST: usize = 32 << 20;
/// What all the maps kept may cost together; a map that would go past it
/// is not read this drain.
const MAX_CACHE_COST: usize = 128 << 20;
/// Paths whose refusal was noted, kept to say each once; past this many,
/// refusals are no longer noted.
const MAX_NOTED: usize = 1024;

/// One version of a perf map: ranges with names, by start.
#[derive(Default)]
pub(super) struct PerfMap {
    entries: Vec<(u64, u64, Box<str>)>,
    cost: usize,
}

impl PerfMap {
    fn parse(reader: impl std::io::Read) -> (PerfMap, bool) {
        let mut map = PerfMap::default();
        let mut truncated = false;
        let mut line = Vec::new();
        let mut reader = BufReader::new(reader);
        loop {
            line.clear();
            // A line is read in full only up to the longest a good line
            // can be; the rest of a longer one is skipped.
            match std::io::Read::take(&mut reader, MAX_NAME_BYTES as u64 + 64)
                .read_until(b'\n', &mut line)
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if line.last() != Some(&b'\n') && skip_line(&mut reader) {
                truncated = true;
            }
            let Some((start, end, name)) = parse_line(&line) else {
                continue;
            };
            let cost = std::mem::size_of::<(u64, u64, Box<str>)>() + name.len();
            if map.cost + cost > MAX_MAP_COST {
                truncated = true;
                break;
            }
            map.cost += cost;
            map.entries.push((start, end, name));
        }
        map.entries.sort();
        (map, truncated)
    }

    pub(super) fn name(&self, address: u64) -> Option<&str> {
        let index = self
            .entries
            .partition_point(|(start, _, _)| *start <= address);
        let (_, end, name) = self.entries.get(index.checked_sub(1)?)?;
        (address < *end).then_some(name)
    }
}

/// Skips to the end of the current line; whether there was anything.
fn skip_line(reader: &mut impl BufRead) -> bool {
    let mut skipped = false;
    loop {
        let Ok(buffer) = reader.fill_buf() else {
            return skipped;
        };
        if buffer.is_empty() {
            return skipped;
        }
        match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => {
                reader.consume(at + 1);
                return true;
            }
            None => {
                let all = buffer.len();
                reader.consume(all);
                skipped = true;
            }
        }
    }
}

fn parse_line(line: &[u8]) -> Option<(u64, u64, Box<str>)> {
    let line = String::from_utf8_lossy(line);
    let mut fields = line.trim_end_matches('\n').splitn(3, ' ');
    let start = u64::from_str_radix(fields.next()?.trim_start_matches("0x"), 16).ok()?;
    let size = u64::from_str_radix(fields.next()?.trim_start_matches("0x"), 16).ok()?;
    let name = capped_name(fields.next()?.trim());
    Some((start, start.checked_add(size)?, name.into()))
}

/// The perf maps read so far, shared by version, and each PID's for the
/// current drain.
#[derive(Default)]
pub(super) struct PerfMaps {
    /// By version: the map, and the drain that last used it.
    parsed: HashMap<PerfMapVersion, (Arc<PerfMap>, u64)>,
    cost: usize,
    /// This drain's map of each PID that needed one (`None`: it has none).
    of_pid: HashMap<u32, Option<Arc<PerfMap>>>,
    drain: u64,
    noted: HashSet<String>,
}

impl PerfMaps {
    /// A new drain: each PID's file is looked at again (it may have grown),
    /// and maps no PID used in the last two drains are let go.
    pub(super) fn begin_drain(&mut self) {
        self.of_pid.clear();
        self.drain += 1;
        let drain = self.drain;
        self.parsed.retain(|_, (_, used)| *used + 2 > drain);
        self.cost = self.parsed.values().map(|(map, _)| map.cost).sum();
    }

    /// The name `pid`'s perf map gives `address`; `owner` is the process's
    /// user, who alone (with root) may have written it.
    pub(super) fn name(&mut self, pid: u32, owner: Option<u32>, address: u64) -> Option<&str> {
        if !self.of_pid.contains_key(&pid) {
            let map = self.load(pid, owner);
            self.of_pid.insert(pid, map);
        }
        self.of_pid.get(&pid)?.as_deref()?.name(address)
    }

    fn load(&mut self, pid: u32, owner: Option<u32>) -> Option<Arc<PerfMap>> {
        let path = format!("/tmp/perf-{pid}.map");
        let (reader, version) = match safe_open::open_perf_map(
            std::path::Path::new(&path),
            owner,
            safe_open::MAX_PERF_MAP_SIZE,
        ) {
            Ok(opened) => opened,
            Err(refusal) => {
                let why = match refusal {
                    PerfMapRefusal::Absent => return None,
                    PerfMapRefusal::NotRegular => "it is not a regular file".to_string(),
                    PerfMapRefusal::ForeignOwner(uid) => {
                        format!("it belongs to uid {uid}, neither root nor the process's user")
                    }
                    PerfMapRefusal::TooLarge(size) => format!(
                        "it is {} MiB, over the {} MiB limit",
                        size >> 20,
                        safe_open::MAX_PERF_MAP_SIZE >> 20
                    ),
                };
                self.note_once(&path, &why);
                return None;
            }
        };
        if let Some((map, used)) = self.parsed.get_mut(&version) {
            *used = self.drain;
            return Some(Arc::clone(map));
        }
        if self.cost >= MAX_CACHE_COST {
            self.note_once(
                &path,
                &format!(
                    "the perf maps read already take the {} MiB allowed",
                    MAX_CACHE_COST >> 20
                ),
            );
            return None;
        }
        let (map, truncated) = PerfMap::parse(reader);
        if truncated {
            self.note_once(
                &path,
                &format!(
                    "only its first {} entries are used (lines up to {MAX_NAME_BYTES}-byte names, {} MiB of entries)",
                    map.entries.len(),
                    MAX_MAP_COST >> 20
                ),
            );
        }
        let map = Arc::new(map);
        self.cost += map.cost;
        self.parsed.insert(version, (Arc::clone(&map), self.drain));
        Some(map)
    }

    fn note_once(&mut self, path: &str, why: &str) {
        if self.noted.len() < MAX_NOTED && self.noted.insert(path.to_string()) {
            note!("ignoring {path} in part or whole: {why}");
        }
    }
}

/// The fuzz target's body: any bytes, as a user's file in /tmp holds.
#[cfg(test)]
pub(super) fn fuzz(data: &[u8]) -> bool {
    let (map, _) = PerfMap::parse(data);
    assert!(map.cost <= MAX_MAP_COST);
    for address in [0, 0x1000, u64::MAX] {
        if let Some(name) = map.name(address) {
            assert!(name.len() <= MAX_NAME_BYTES);
        }
    }
    !map.entries.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_map_names_jit_ranges() {
        let text = "1000 10 hot\n2000 100 LazyCompile:*tick app.js:3\nnot a line\n";
        let (map, truncated) = PerfMap::parse(text.as_bytes());
        assert!(!truncated);
        assert_eq!(map.name(0x1000), Some("hot"));
        assert_eq!(map.name(0x100f), Some("hot"));
        assert_eq!(map.name(0x1010), None);
        assert_eq!(map.name(0x20ff), Some("LazyCompile:*tick app.js:3"));
        assert_eq!(map.name(0xfff), None);
        assert_eq!(PerfMap::default().name(0x1000), None);
    }

    #[test]
    fn a_long_name_is_cut_and_a_huge_line_skipped() {
        let long = "n".repeat(5000);
        let text = format!(
            "1000 10 {}\n2000 10 {long}\n3000 10 after\n",
            "é".repeat(400)
        );
        let (map, truncated) = PerfMap::parse(text.as_bytes());
        assert!(truncated);
        let first = map.name(0x1000).unwrap();
        assert!(
            first.len() <= MAX_NAME_BYTES && first.ends_with("..."),
            "{first}"
        );
        // The 5000-byte line's start is a line cut short, not read whole.
        assert!(map.name(0x2000).is_some_and(|n| n.len() <= MAX_NAME_BYTES));
        assert_eq!(map.name(0x3000), Some("after"));
    }

    #[test]
    fn entries_stop_at_the_maps_cost() {
        // Short lines cost more in entries than in bytes: a map of them
        // stops at MAX_MAP_COST rather than grow ~10x its size.
        let line = "1 1 x\n";
        let lines = MAX_MAP_COST / std::mem::size_of::<(u64, u64, Box<str>)>() + 1000;
        let text = line.repeat(lines);
        let (map, truncated) = PerfMap::parse(text.as_bytes());
        assert!(truncated);
        assert!(map.cost <= MAX_MAP_COST);
    }
}

//! JIT code named by the process's own perf map.

use crate::host::safe_open::{self, PerfMapRefusal};
use crate::say::note;

/// A JIT runtime's `/tmp/perf-PID.map` (`START SIZE NAME` per line, hex), the
/// convention perf defined and node --perf-basic-prof, the JVM's agents and
/// others follow. blazesym reads these only for live processes through
/// /proc; the file outlives the process, so it is read here directly, under
/// perf's rules (safe_open::read_perf_map): anyone can create files in /tmp.
#[derive(Default)]
pub(crate) struct PerfMap(pub(super) Vec<(u64, u64, String)>);

impl PerfMap {
    pub(super) fn load(pid: u32, owner: Option<u32>) -> PerfMap {
        let path = format!("/tmp/perf-{pid}.map");
        let text = match safe_open::read_perf_map(
            std::path::Path::new(&path),
            owner,
            safe_open::MAX_PERF_MAP_SIZE,
        ) {
            Ok(text) => text,
            Err(refusal) => {
                let why = match refusal {
                    PerfMapRefusal::Absent => None,
                    PerfMapRefusal::NotRegular => Some("it is not a regular file".to_string()),
                    PerfMapRefusal::ForeignOwner(uid) => Some(format!(
                        "it belongs to uid {uid}, neither root nor the process's user"
                    )),
                    PerfMapRefusal::TooLarge(size) => Some(format!(
                        "it is {} MiB, over the {} MiB limit",
                        size >> 20,
                        safe_open::MAX_PERF_MAP_SIZE >> 20
                    )),
                };
                if let Some(why) = why {
                    note_once(format!("ignoring {path}: {why}"));
                }
                String::new()
            }
        };
        PerfMap::parse(&text)
    }

    /// The entries of a perf map's text, sorted; lines that are not
    /// `START SIZE NAME` are skipped, as perf skips them.
    pub(crate) fn parse(text: &str) -> PerfMap {
        let mut entries: Vec<(u64, u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.splitn(3, ' ');
                let start =
                    u64::from_str_radix(fields.next()?.trim_start_matches("0x"), 16).ok()?;
                let size = u64::from_str_radix(fields.next()?.trim_start_matches("0x"), 16).ok()?;
                Some((
                    start,
                    start.checked_add(size)?,
                    fields.next()?.trim().to_string(),
                ))
            })
            .collect();
        entries.sort();
        PerfMap(entries)
    }

    pub(crate) fn name(&self, address: u64) -> Option<&str> {
        let index = self.0.partition_point(|(start, _, _)| *start <= address);
        let (_, end, name) = self.0.get(index.checked_sub(1)?)?;
        (address < *end).then_some(name.as_str())
    }
}

/// Notes said already: a map is loaded again on every drain while a frame
/// of its process is unnamed, and its refusal was said each time.
static NOTED: std::sync::Mutex<Option<std::collections::HashSet<String>>> =
    std::sync::Mutex::new(None);

/// Past this many distinct notes (a host of refused maps) no more are kept or
/// said: the set must not grow with what users put in /tmp.
const MAX_NOTED: usize = 1024;

/// Says `message` unless it was said before in this run; true when it was said.
fn note_once(message: String) -> bool {
    let mut noted = NOTED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let noted = noted.get_or_insert_with(Default::default);
    if noted.len() >= MAX_NOTED || noted.contains(&message) {
        return false;
    }
    note!("{message}");
    noted.insert(message);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_said_once_per_file() {
        let message = || "ignoring /tmp/perf-4000000000.map: a test".to_string();
        assert!(note_once(message()));
        assert!(!note_once(message()));
        assert!(note_once(
            "ignoring /tmp/perf-4000000001.map: a test".to_string()
        ));
    }

    #[test]
    fn parse_skips_lines_that_are_not_entries() {
        let map = PerfMap::parse("0x1000 10 hot\nnonsense\n2000 ffffffffffffffff wraps\n1 1\n");
        assert_eq!(map.0, vec![(0x1000, 0x1010, "hot".to_string())]);
    }

    #[test]
    fn perf_map_names_jit_ranges() {
        let map = PerfMap(vec![
            (0x1000, 0x1010, "hot".to_string()),
            (0x2000, 0x2100, "LazyCompile:*tick app.js:3".to_string()),
        ]);
        assert_eq!(map.name(0x1000), Some("hot"));
        assert_eq!(map.name(0x100f), Some("hot"));
        assert_eq!(map.name(0x1010), None);
        assert_eq!(map.name(0x20ff), Some("LazyCompile:*tick app.js:3"));
        assert_eq!(map.name(0xfff), None);
        assert_eq!(PerfMap::default().name(0x1000), None);
    }
}

//! JIT code named by the process's own perf map.

use crate::host::safe_open::{self, PerfMapRefusal};
use crate::say::note;

/// A JIT runtime's `/tmp/perf-PID.map` (`START SIZE NAME` per line, hex), the
/// convention perf defined and node --perf-basic-prof, the JVM's agents and
/// others follow. blazesym reads these only for live processes through
/// /proc; the file outlives the process, so it is read here directly, under
/// perf's rules (safe_open::read_perf_map): anyone can create files in /tmp.
#[derive(Default)]
pub(super) struct PerfMap(pub(super) Vec<(u64, u64, String)>);

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
                    note!("ignoring {path}: {why}");
                }
                String::new()
            }
        };
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

    pub(super) fn name(&self, address: u64) -> Option<&str> {
        let index = self.0.partition_point(|(start, _, _)| *start <= address);
        let (_, end, name) = self.0.get(index.checked_sub(1)?)?;
        (address < *end).then_some(name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

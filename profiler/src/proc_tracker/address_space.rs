//! The address-space model: each process's executable mappings, name,
//! owner and cgroup, kept after it exits, and the mapped files themselves,
//! opened while the process lived. Side-band records update it; /proc
//! snapshots (snapshot.rs) seed it.
//!
//! The paths in mmap records are the process's own view (a container's
//! filesystem) and can be swapped at any time by whoever owns them. So each
//! mapped file is opened while the process lives, through
//! /proc/PID/map_files/ (or /proc/PID/root/), checked against the device and
//! inode of the record, and kept open, keyed by that identity, to be
//! symbolized at the end, also after the process exited.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use linux_perf_event_reader::constants::PERF_RECORD_MISC_MMAP_BUILD_ID;
use linux_perf_event_reader::{EventRecord, Mmap2FileId, RawEventRecord, RecordType};

use super::lives::Lives;
pub(super) use super::process::Process;
pub use crate::host::maps::Mapping;
use crate::host::overlay;
use crate::host::safe_open::{self, FileKey, Opened};

/// The mapped files opened so far, by identity.
#[derive(Default)]
pub(super) struct OpenFiles {
    files: HashMap<FileKey, Opened>,
    /// Files mapped through an overlay that no layer's directory showed
    /// (bounded: one entry per distinct file, kept to say why they are
    /// unnamed).
    pub(super) not_in_overlay_layers: std::collections::HashSet<FileKey>,
    /// The clock functions each file exports (host/interposer.rs), read
    /// once per file and dropped with it.
    pub(super) clock_exports: HashMap<FileKey, std::sync::Arc<[&'static str]>>,
}

/// Files kept open at most: each holds a descriptor until the end, and half
/// the descriptors stay free for everything else (the limit is not raised:
/// COMMAND would inherit it). Past that, a file is opened by its host path
/// at symbolization time, still checked.
fn max_open_files() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid rlimit to fill.
        let soft = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } {
            0 => usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX),
            _ => 1024,
        };
        (soft / 2).min(8192)
    })
}

impl OpenFiles {
    /// Opens the file of `mapping` in `pid` unless it is already open: through
    /// map_files (the very file mapped there), else the process's root, else
    /// the host's path (a process that already exited); each must be the
    /// file of the record.
    pub(super) fn open_mapped(&mut self, pid: u32, mapping: &Mapping) {
        let Some(key) = mapping.file else { return };
        // safe_open refuses files on FUSE by their mount, before it asks
        // their filesystem anything; no answer is kept, as device numbers
        // and mounts are given again once unmounted.
        if self.files.contains_key(&key) || self.files.len() >= max_open_files() {
            return;
        }
        let open =
            |path: &Path| safe_open::open_regular(path, Some(key), safe_open::MAX_ELF_SIZE).ok();
        // A path is looked up only where no FUSE mount lies on the way.
        let by_path = |path: &Path, view: Option<u32>| {
            let usable = mapping.path.starts_with('/')
                && !safe_open::path_crosses_user_space(&mapping.path, view);
            usable.then(|| open(path)).flatten()
        };
        let map_files = format!(
            "/proc/{pid}/map_files/{:x}-{:x}",
            mapping.start, mapping.end
        );
        let in_root = format!("/proc/{pid}/root{}", mapping.path);
        let opened = open(Path::new(&map_files))
            .or_else(|| by_path(Path::new(&in_root), Some(pid)))
            .or_else(|| by_path(Path::new(&mapping.path), None))
            .or_else(|| {
                through_overlay_layers(pid, mapping, open, || {
                    self.not_in_overlay_layers.insert(key);
                })
            });
        if let Some(opened) = opened {
            self.not_in_overlay_layers.remove(&key);
            self.files.insert(key, opened);
        }
    }
}

/// A file the process mapped through an overlay: the record names the
/// layer's inode, every path the overlay's (host/overlay.rs), so it is looked
/// for in each layer's directory: in the process's view while it runs, then
/// in ours (also where a container's table names its layers by the host's
/// paths). `open` checks each candidate against the record's device and
/// inode. `not_found` is told when the path is on an overlay but no layer
/// had the file.
fn through_overlay_layers(
    pid: u32,
    mapping: &Mapping,
    open: impl Fn(&Path) -> Option<Opened>,
    mut not_found: impl FnMut(),
) -> Option<Opened> {
    let views = [
        (
            format!("/proc/{pid}/mountinfo"),
            format!("/proc/{pid}/root"),
            Some(pid),
        ),
        ("/proc/self/mountinfo".to_string(), String::new(), None),
    ];
    let mut on_overlay = false;
    for (table, root, view) in views {
        let Ok(table) = std::fs::read_to_string(table) else {
            continue;
        };
        for layer_path in overlay::layer_paths(&table, &mapping.path) {
            on_overlay = true;
            if safe_open::path_crosses_user_space(&layer_path, view) {
                continue;
            }
            if let Some(opened) = open(Path::new(&format!("{root}{layer_path}"))) {
                return Some(opened);
            }
        }
    }
    if on_overlay {
        not_found();
    }
    None
}

/// Executable mappings kept per process: a large JVM or browser has a few
/// thousand.
pub(super) const MAX_MAPPINGS: usize = 16_384;

/// Every process seen, each PID with all its lives, and the files they mapped.
#[derive(Default)]
pub(super) struct Model {
    pub(super) processes: HashMap<u32, Lives>,
    pub(super) lost_records: u64,
    pub(super) files: OpenFiles,
    /// File mappings applied since they were last taken, with their
    /// process, while someone takes them (`watch_new_files`).
    pub(super) new_files: Option<Vec<(u32, Mapping)>>,
}

impl Model {
    /// Applies one side-band record.
    pub(super) fn apply(&mut self, record: RawEventRecord) {
        let wanted = [
            RecordType::MMAP2,
            RecordType::COMM,
            RecordType::FORK,
            RecordType::EXIT,
            RecordType::LOST,
        ];
        // We never ask for build ids (so records carry device and inode), and
        // their parser asserts on a bad length.
        let bad_build_id = record.record_type == RecordType::MMAP2
            && record.misc & PERF_RECORD_MISC_MMAP_BUILD_ID != 0;
        if !wanted.contains(&record.record_type) || bad_build_id {
            self.lost_records += u64::from(bad_build_id);
            return;
        }
        // The ring drops records without a time, so 0 is never used.
        let time = record.timestamp().unwrap_or(0);
        let Ok(event) = record.parse() else {
            self.lost_records += 1;
            return;
        };
        // Record pids are tgids and never negative, so the casts are lossless.
        match event {
            EventRecord::Mmap2(r) => {
                let process = self
                    .processes
                    .entry(r.pid as u32)
                    .or_default()
                    .current(time);
                let end = r.address.saturating_add(r.length);
                // Whatever was mapped there before is gone, even if the new mapping is
                // anonymous (JIT code), which we do not keep.
                remove_range(&mut process.mappings, r.address, end);
                let path = String::from_utf8_lossy(&r.path.as_slice()).into_owned();
                if !path.is_empty() && path != "//anon" && end > r.address {
                    let file = match r.file_id {
                        Mmap2FileId::InodeAndVersion(id) if id.inode != 0 => {
                            Some(FileKey::new(id.major, id.minor, id.inode))
                        }
                        _ => None,
                    };
                    let mapping = Mapping {
                        start: r.address,
                        end,
                        file_offset: r.page_offset,
                        path,
                        file,
                    };
                    // A process that maps without end (each mapping a
                    // path of up to 4 KiB, copied on every fork) is known
                    // by its first MAX_MAPPINGS; the rest count as lost.
                    if process.mappings.len() >= MAX_MAPPINGS {
                        self.lost_records += 1;
                        return;
                    }
                    self.files.open_mapped(r.pid as u32, &mapping);
                    if let (Some(new_files), Some(_)) = (&mut self.new_files, mapping.file) {
                        new_files.push((r.pid as u32, mapping.clone()));
                    }
                    process.mappings.insert(r.address, mapping.clone());
                    self.files.note_interposer(r.pid as u32, process, &mapping);
                }
            }
            // A thread's name is not the process's name.
            EventRecord::Comm(r) if r.pid == r.tid => {
                let comm = String::from_utf8_lossy(&r.name.as_slice()).into_owned();
                let process = self
                    .processes
                    .entry(r.pid as u32)
                    .or_default()
                    .current(time);
                // Exec keeps the life (and its start time), also when a
                // thread execs after its leader's exit record.
                if r.is_execve {
                    process.interposers = Default::default();
                    // The new image's mappings follow this record.
                    process.mappings.clear();
                    process.exited = false;
                    process.retiring = false;
                    process.read_identity(r.pid as u32);
                }
                process.comm = comm;
            }
            // pid == ppid is a new thread, which shares the address space.
            EventRecord::Fork(r) if r.pid != r.ppid => {
                let inherited = self
                    .latest(r.ppid as u32)
                    .map(|parent| Process {
                        exited: false,
                        retiring: false,
                        ..parent.clone()
                    })
                    .unwrap_or_default();
                let lives = self.processes.entry(r.pid as u32).or_default();
                match lives.latest() {
                    // A /proc snapshot taken after this fork already saw the
                    // child (its record waited in the ring): the same life,
                    // and the snapshot is the newer view of it.
                    Some(life) if life.began >= time => {}
                    // A new life: a PID is reused only after its process
                    // was reaped, so any earlier life has ended.
                    _ => {
                        lives.begin(time, inherited);
                    }
                }
            }
            EventRecord::Exit(r) if r.pid == r.tid => {
                if let Some(life) = self
                    .processes
                    .get_mut(&(r.pid as u32))
                    .and_then(Lives::latest_mut)
                {
                    life.process.exited = true;
                }
            }
            EventRecord::Lost(r) => self.lost_records = self.lost_records.saturating_add(r.count),
            _ => {}
        }
    }

    /// Forgets the lives that had exited when it was last called, and
    /// marks those that have exited since for the next call. Called after
    /// each drain of the count maps has been normalized: a life whose exit
    /// was applied before drain k's flip has no event left after drain k,
    /// and one whose exit came later is marked at drain k and forgotten at
    /// drain k+1, after its last events. Returns each life forgotten as its
    /// PID and the time it had begun by: the samples of that PID whose start
    /// time is at or before it were its own or an earlier life's.
    pub(super) fn forget_exited(&mut self) -> Vec<(u32, u64)> {
        let mut forgotten = Vec::new();
        self.processes.retain(|&pid, lives| {
            forgotten.extend(
                lives
                    .forget_retiring()
                    .into_iter()
                    .map(|began| (pid, began)),
            );
            lives.mark_retiring();
            !lives.is_empty()
        });
        forgotten
    }

    /// The latest life of `pid`.
    pub(super) fn latest(&self, pid: u32) -> Option<&Process> {
        Some(&self.processes.get(&pid)?.latest()?.process)
    }

    /// The life of `pid` that started at `start_time` (0: the latest).
    pub(super) fn life(&self, pid: u32, start_time: u64) -> Option<&Process> {
        self.processes.get(&pid)?.of(start_time)
    }

    /// The mapping containing `addr` in the address space, as last known, of
    /// the life of `pid` that started at `start_time`.
    pub(super) fn find(&self, pid: u32, start_time: u64, addr: u64) -> Option<&Mapping> {
        let mappings = &self.life(pid, start_time)?.mappings;
        let (_, mapping) = mappings.range(..=addr).next_back()?;
        (addr < mapping.end).then_some(mapping)
    }

    /// The files mapped by a process that has not exited, as last known.
    pub(super) fn files_mapped_by_live_processes(&self) -> std::collections::HashSet<FileKey> {
        self.processes
            .values()
            .filter_map(Lives::latest)
            .filter(|life| !life.process.exited)
            .flat_map(|life| life.process.mappings.values().filter_map(|m| m.file))
            .collect()
    }

    /// Closes the opened files that no remembered life maps any more (their
    /// processes exited and were forgotten); returns how many. What stays
    /// open is then bounded by the processes that run, not by how many ran.
    pub(super) fn close_unmapped_files(&mut self) -> usize {
        let mapped: std::collections::HashSet<FileKey> = self
            .processes
            .values()
            .flat_map(Lives::all)
            .flat_map(|life| life.process.mappings.values().filter_map(|m| m.file))
            .collect();
        let before = self.files.files.len();
        self.files.files.retain(|key, _| mapped.contains(key));
        self.files
            .not_in_overlay_layers
            .retain(|key| mapped.contains(key));
        self.files
            .clock_exports
            .retain(|key, _| mapped.contains(key));
        before - self.files.files.len()
    }

    /// A second descriptor of the file `file`, as it was opened while a
    /// process mapped it; `None` if it was not.
    pub(super) fn opened(&self, file: FileKey) -> Option<Opened> {
        let opened = self.files.files.get(&file)?;
        Some(Opened {
            file: opened.file.try_clone().ok()?,
            key: opened.key,
        })
    }

    /// A path that opens exactly the file `file` named `path` (see
    /// `ProcTracker::elf_path`).
    pub(super) fn elf_path(&mut self, file: FileKey, path: &str) -> Option<PathBuf> {
        self.files.elf_path(file, path)
    }
}

impl OpenFiles {
    /// See `Model::elf_path`.
    fn elf_path(&mut self, file: FileKey, path: &str) -> Option<PathBuf> {
        if let Some(opened) = self.files.get(&file) {
            return Some(opened.fd_path());
        }
        if safe_open::path_crosses_user_space(path, None) {
            return None;
        }
        // Not opened at first sight (too many files open): the host's path,
        // if it is still that file.
        let opened =
            safe_open::open_regular(Path::new(path), Some(file), safe_open::MAX_ELF_SIZE).ok()?;
        let fd_path = opened.fd_path();
        self.files.insert(file, opened);
        Some(fd_path)
    }

    /// The clock functions the file `file` (named `path`) exports, read once
    /// through the descriptor opened while a process mapped it.
    fn clock_exports(&mut self, file: FileKey, path: &str) -> std::sync::Arc<[&'static str]> {
        if let Some(found) = self.clock_exports.get(&file) {
            return found.clone();
        }
        let found: std::sync::Arc<[&'static str]> = match self.elf_path(file, path) {
            Some(elf) => crate::host::interposer::exported_clock_functions(&elf).into(),
            None => std::sync::Arc::from([]),
        };
        self.clock_exports.insert(file, found.clone());
        found
    }

    /// Whether the file `file`, named `path`, exports a clock function and
    /// is not the C library's own.
    pub(super) fn is_interposer(&mut self, file: FileKey, path: &str) -> bool {
        !crate::host::interposer::is_c_library(path) && !self.clock_exports(file, path).is_empty()
    }

    /// Notes `mapping`, just added to `process` (PID `pid`, running), as an
    /// interposer of its clock calls if its file is one and not the
    /// process's executable (its lowest file mapping). Done as the mapping
    /// arrives, while the process runs, so that how the library was loaded
    /// (its environment's LD_PRELOAD) can still be read.
    pub(super) fn note_interposer(&mut self, pid: u32, process: &mut Process, mapping: &Mapping) {
        let Some(file) = mapping.file else {
            return;
        };
        let executable = process.mappings.values().find_map(|m| m.file);
        if executable == Some(file)
            || process
                .interposers
                .iter()
                .any(|i| i.library == mapping.path)
            || !self.is_interposer(file, &mapping.path)
        {
            return;
        }
        let functions = self.clock_exports(file, &mapping.path).to_vec();
        let mut interposers = process.interposers.to_vec();
        interposers.push(crate::host::interposer::Interposer {
            library: mapping.path.clone(),
            functions,
            preload: crate::host::interposer::how_preloaded(pid, &mapping.path),
        });
        process.interposers = interposers.into();
    }
}

/// Removes [start, end) from non-overlapping `mappings`, trimming partly covered ones.
fn remove_range(mappings: &mut BTreeMap<u64, Mapping>, start: u64, end: u64) {
    // Non-overlapping mappings sorted by start are also sorted by end.
    let overlapping: Vec<u64> = mappings
        .range(..end)
        .rev()
        .take_while(|(_, m)| m.end > start)
        .map(|(&key, _)| key)
        .collect();
    for key in overlapping {
        let Some(old) = mappings.remove(&key) else {
            continue;
        };
        if old.start < start {
            let head = Mapping {
                end: start,
                ..old.clone()
            };
            mappings.insert(head.start, head);
        }
        if old.end > end {
            let tail = Mapping {
                start: end,
                file_offset: old.file_offset.saturating_add(end - old.start),
                ..old
            };
            mappings.insert(tail.start, tail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process whose exit is seen is kept through the next drain (its
    /// last events may be in it), and forgotten at the one after; one that
    /// exec'd again in between is not.
    #[test]
    fn exited_processes_are_forgotten_one_drain_later() {
        let mut model = Model::default();
        let mut insert = |pid: u32, began: u64, exited: bool| {
            model.processes.entry(pid).or_default().begin(
                began,
                Process {
                    comm: "x".into(),
                    exited,
                    ..Process::default()
                },
            );
        };
        insert(1, 10, true);
        insert(2, 20, false);
        insert(3, 30, true);
        assert!(model.forget_exited().is_empty());
        assert_eq!(model.processes.len(), 3);
        // 3 is a new program under the same pid (exec) before the next drain.
        let reused = &mut model
            .processes
            .get_mut(&3)
            .unwrap()
            .latest_mut()
            .unwrap()
            .process;
        reused.exited = false;
        reused.retiring = false;
        model
            .processes
            .get_mut(&2)
            .unwrap()
            .latest_mut()
            .unwrap()
            .process
            .exited = true;
        assert_eq!(model.forget_exited(), vec![(1, 10)]);
        let mut left: Vec<u32> = model.processes.keys().copied().collect();
        left.sort();
        assert_eq!(left, vec![2, 3]);
        assert_eq!(model.forget_exited(), vec![(2, 20)]);
        assert!(model.forget_exited().is_empty());
        assert_eq!(model.processes.keys().copied().collect::<Vec<_>>(), vec![3]);
    }

    /// A reused PID: its earlier life is forgotten one drain after the new
    /// one began (a PID is given again only after its process was reaped),
    /// and the new life stays.
    #[test]
    fn an_earlier_life_of_a_reused_pid_is_forgotten_alone() {
        let mut model = Model::default();
        let named = |comm: &str| Process {
            comm: comm.into(),
            ..Process::default()
        };
        let lives = model.processes.entry(7).or_default();
        lives.begin(100, named("old"));
        lives.begin(200, named("new"));
        assert!(model.forget_exited().is_empty());
        assert_eq!(model.forget_exited(), vec![(7, 100)]);
        assert_eq!(model.life(7, 150).map(|p| p.comm.as_str()), Some("new"));
        assert!(model.forget_exited().is_empty());
        assert_eq!(model.latest(7).map(|p| p.comm.as_str()), Some("new"));
    }

    #[test]
    fn new_mapping_replaces_overlapped_parts() {
        let mapping = |start, end, file_offset| Mapping {
            start,
            end,
            file_offset,
            path: "/lib/x".into(),
            file: None,
        };
        let mut mappings = BTreeMap::from([
            (0x1000, mapping(0x1000, 0x5000, 0)),
            (0x6000, mapping(0x6000, 0x7000, 0x9000)),
        ]);
        remove_range(&mut mappings, 0x2000, 0x3000);
        let expected = [
            mapping(0x1000, 0x2000, 0),
            mapping(0x3000, 0x5000, 0x2000),
            mapping(0x6000, 0x7000, 0x9000),
        ];
        assert!(mappings.values().eq(expected.iter()));
        remove_range(&mut mappings, 0x1800, 0x6800);
        let expected = [mapping(0x1000, 0x1800, 0), mapping(0x6800, 0x7000, 0x9800)];
        assert!(mappings.values().eq(expected.iter()));
    }
}

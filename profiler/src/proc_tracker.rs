//! Remembers every process's executable mappings and name, also after it exits.
//!
//! Symbolization runs at the end of a recording, when short-lived processes are gone
//! and /proc/PID/maps is empty. Like `perf record`, we therefore open host-wide
//! "side-band" perf events (mmap, comm/exec, fork, exit), which the kernel emits
//! synchronously, and replay them into a model of each address space. /proc snapshots
//! cover what existed before the events were opened.
//!
//! The paths in mmap records are the process's own view (a container's
//! filesystem) and can be swapped at any time by whoever owns them. So each
//! mapped file is opened while the process lives, through
//! /proc/PID/map_files/ (or /proc/PID/root/), checked against the device and
//! inode of the record, and kept open, keyed by that identity, to be
//! symbolized at the end, also after the process exited.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::{fs, io, mem, ptr, slice};

use anyhow::{bail, Result};
use linux_perf_event_reader::constants::PERF_RECORD_MISC_MMAP_BUILD_ID;
use linux_perf_event_reader::{
    BranchSampleFormat, Endianness, EventRecord, Mmap2FileId, RawData, RawEventRecord, ReadFormat,
    RecordIdParseInfo, RecordParseInfo, RecordType, SampleFormat,
};
use perf_event_open_sys::bindings as sys;

use crate::safe_open::{self, FileKey, Opened};

/// 256 KiB per CPU: room for well over a hundred execs per CPU between two drains.
const DEFAULT_DATA_PAGES: usize = 64;
const HEADER_SIZE: usize = 8;

/// One executable mapping of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`, in bytes.
    pub file_offset: u64,
    /// File path or a special name like "[vdso]"; deleted files end in " (deleted)".
    pub path: String,
    /// Device and inode of the mapped file; `None` for the vDSO and the like.
    pub file: Option<FileKey>,
}

impl Mapping {
    pub fn file_offset_of(&self, addr: u64) -> u64 {
        addr - self.start + self.file_offset
    }
}

#[derive(Debug, Clone, Default)]
struct Process {
    comm: String,
    mappings: BTreeMap<u64, Mapping>,
    exited: bool,
    /// The user the process runs as, read while it lived.
    owner: Option<u32>,
    /// Its cgroup path (`/system.slice/x.service`), read while it lived.
    cgroup: Option<String>,
}

impl Process {
    /// Reads what only /proc can say, while the process lives.
    fn read_identity(&mut self, pid: u32) {
        if let Ok(meta) = fs::metadata(format!("/proc/{pid}")) {
            self.owner = Some(meta.uid());
        }
        if let Ok(file) = fs::read_to_string(format!("/proc/{pid}/cgroup")) {
            self.cgroup = crate::container::cgroup_path(&file);
        }
    }
}

/// The mapped files opened so far, by identity.
#[derive(Default)]
struct OpenFiles {
    files: HashMap<FileKey, Opened>,
    /// Devices whose files a user-space daemon serves (FUSE): never touched.
    user_space_devices: HashMap<u64, bool>,
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
    fn open_mapped(&mut self, pid: u32, mapping: &Mapping) {
        let Some(key) = mapping.file else { return };
        if self.files.contains_key(&key)
            || self.files.len() >= max_open_files()
            || self.served_by_user_space(key, Some(pid))
        {
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
            .or_else(|| by_path(Path::new(&mapping.path), None));
        if let Some(opened) = opened {
            self.files.insert(key, opened);
        }
    }

    fn served_by_user_space(&mut self, key: FileKey, pid: Option<u32>) -> bool {
        *self
            .user_space_devices
            .entry(key.dev)
            .or_insert_with(|| safe_open::served_by_user_space(key.dev, pid))
    }
}

/// Host-wide model of process address spaces, fed by perf side-band events.
pub struct ProcTracker {
    rings: Vec<Ring>,
    model: Model,
    /// Pids whose /proc maps `lookup` re-read since the last drain: at most once each.
    refreshed: HashSet<u32>,
}

/// Kept apart from the rings so records borrowed from them can be applied to it.
#[derive(Default)]
struct Model {
    processes: HashMap<u32, Process>,
    lost_records: u64,
    files: OpenFiles,
}

impl ProcTracker {
    /// Opens the per-CPU side-band events. Needs root/CAP_PERFMON.
    pub fn start() -> Result<Self> {
        Self::start_with_ring_pages(DEFAULT_DATA_PAGES)
    }

    /// Like `start`, with `data_pages` (a power of two) ring-buffer pages per CPU.
    pub fn start_with_ring_pages(data_pages: usize) -> Result<Self> {
        if !data_pages.is_power_of_two() {
            bail!("the side-band ring buffer needs a power-of-two page count, not {data_pages}");
        }
        let rings = crate::host_facts::online_cpus()?
            .into_iter()
            .map(|cpu| Ring::open(cpu as i32, data_pages))
            .collect::<Result<_>>()?;
        Ok(Self {
            rings,
            model: Model::default(),
            refreshed: HashSet::new(),
        })
    }

    /// Replaces what is known about `pid` by /proc/PID/{maps,comm}; a vanished pid is skipped.
    pub fn snapshot_pid(&mut self, pid: u32) {
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
            .map(|m| (m.start, m))
            .collect();
        for mapping in mappings.values() {
            self.model.files.open_mapped(pid, mapping);
        }
        let process = self.model.processes.entry(pid).or_default();
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

    pub fn snapshot_all(&mut self) {
        let Ok(entries) = fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                self.snapshot_pid(pid);
            }
        }
    }

    /// Applies every pending record. Called every ~100 ms and once at the end.
    ///
    /// Each CPU has its own ring, but one process's records can land on several CPUs
    /// (the parent forks on one, the child execs on the other; exec itself may migrate).
    /// Records therefore carry a timestamp and are applied in time order across rings.
    /// Records newer than the drain's start wait for the next drain, because an older
    /// record on another ring might not have been published yet.
    pub fn drain(&mut self) {
        self.refreshed.clear();
        let limit = monotonic_ns();
        let mut pending = Vec::new();
        let mut stops = Vec::with_capacity(self.rings.len());
        for (index, ring) in self.rings.iter().enumerate() {
            stops.push(ring.collect(index, limit, &mut pending, &mut self.model.lost_records));
        }
        // Stable sort: equal timestamps keep their order within a ring.
        pending.sort_by_key(|&(time, index, _)| (time, index));
        for (_, _, record) in pending {
            self.model.apply(record);
        }
        for (ring, stop) in self.rings.iter_mut().zip(stops) {
            ring.release(stop);
        }
    }

    /// Records the kernel dropped (ring full) plus records skipped as unparsable: either
    /// way, mappings or names we may be missing.
    pub fn lost_records(&self) -> u64 {
        self.model.lost_records
    }

    /// Process name (main thread comm) as last known, also after exit.
    pub fn comm(&self, pid: u32) -> Option<&str> {
        let comm = &self.model.processes.get(&pid)?.comm;
        (!comm.is_empty()).then_some(comm.as_str())
    }

    /// The mapping containing `addr` in pid's address space as last known. If none is known
    /// and the process is still alive, re-read /proc/PID/maps once and retry.
    pub fn lookup(&mut self, pid: u32, addr: u64) -> Option<&Mapping> {
        if self.find(pid, addr).is_none() {
            let alive = self.model.processes.get(&pid).is_none_or(|p| !p.exited);
            if alive && self.refreshed.insert(pid) {
                self.snapshot_pid(pid);
            }
        }
        self.find(pid, addr)
    }

    /// A path that opens exactly the file `file` named `path` (a fd of ours,
    /// opened while the process lived), or `None` if that file cannot be had:
    /// then its frames stay `[unknown]` rather than be named from another file.
    pub fn elf_path(&mut self, file: FileKey, path: &str) -> Option<PathBuf> {
        if let Some(opened) = self.model.files.files.get(&file) {
            return Some(opened.fd_path());
        }
        if self.model.files.served_by_user_space(file, None)
            || safe_open::path_crosses_user_space(path, None)
        {
            return None;
        }
        // Not opened at first sight (too many files open): the host's path,
        // if it is still that file.
        let opened =
            safe_open::open_regular(Path::new(path), Some(file), safe_open::MAX_ELF_SIZE).ok()?;
        let fd_path = opened.fd_path();
        self.model.files.files.insert(file, opened);
        Some(fd_path)
    }

    /// The user `pid` runs (or ran) as, if known.
    pub fn owner(&self, pid: u32) -> Option<u32> {
        self.model.processes.get(&pid)?.owner
    }

    /// The cgroup path of `pid` as read while it lived (`None` for the root
    /// cgroup or if never read).
    pub fn cgroup(&self, pid: u32) -> Option<&str> {
        self.model.processes.get(&pid)?.cgroup.as_deref()
    }

    fn find(&self, pid: u32, addr: u64) -> Option<&Mapping> {
        let mappings = &self.model.processes.get(&pid)?.mappings;
        let (_, mapping) = mappings.range(..=addr).next_back()?;
        (addr < mapping.end).then_some(mapping)
    }
}

impl Model {
    fn apply(&mut self, record: RawEventRecord) {
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
        let Ok(event) = record.parse() else {
            self.lost_records += 1;
            return;
        };
        // Record pids are tgids and never negative, so the casts are lossless.
        match event {
            EventRecord::Mmap2(r) => {
                let process = self.processes.entry(r.pid as u32).or_default();
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
                    self.files.open_mapped(r.pid as u32, &mapping);
                    process.mappings.insert(r.address, mapping);
                }
            }
            // A thread's name is not the process's name.
            EventRecord::Comm(r) if r.pid == r.tid => {
                let comm = String::from_utf8_lossy(&r.name.as_slice()).into_owned();
                let process = self.processes.entry(r.pid as u32).or_default();
                if r.is_execve {
                    // The new image's mappings follow this record.
                    process.mappings.clear();
                    process.exited = false;
                    process.read_identity(r.pid as u32);
                }
                process.comm = comm;
            }
            // pid == ppid is a new thread, which shares the address space.
            EventRecord::Fork(r) if r.pid != r.ppid => {
                let inherited = self.processes.get(&(r.ppid as u32)).map(|parent| Process {
                    exited: false,
                    ..parent.clone()
                });
                let child = self.processes.entry(r.pid as u32).or_default();
                match inherited {
                    Some(process) => *child = process,
                    // Parent gone before our /proc snapshot: keep the child's snapshot,
                    // unless it belongs to an earlier process with the same pid.
                    None if child.exited => *child = Process::default(),
                    None => {}
                }
            }
            EventRecord::Exit(r) if r.pid == r.tid => {
                if let Some(process) = self.processes.get_mut(&(r.pid as u32)) {
                    process.exited = true;
                }
            }
            EventRecord::Lost(r) => self.lost_records += r.count,
            _ => {}
        }
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

/// Parses an executable line of /proc/PID/maps:
/// `start-end perms offset dev inode   path`, path padded and possibly absent.
fn parse_maps_line(line: &str) -> Option<Mapping> {
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let inode: u64 = fields.next()?.parse().ok()?;
    let path = fields.next()?.trim_start();
    if !perms.contains('x') || path.is_empty() {
        return None;
    }
    let file = (inode != 0).then_some(FileKey::new(
        u32::from_str_radix(major, 16).ok()?,
        u32::from_str_radix(minor, 16).ok()?,
        inode,
    ));
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        file_offset: u64::from_str_radix(offset, 16).ok()?,
        path: path.to_owned(),
        file,
    })
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What our events put in each record: the body, then (sample_id_all) a u64 timestamp.
fn parse_info() -> RecordParseInfo {
    RecordParseInfo {
        endian: Endianness::NATIVE,
        sample_format: SampleFormat::TIME,
        branch_sample_format: BranchSampleFormat::empty(),
        read_format: ReadFormat::empty(),
        common_data_offset_from_end: Some(8),
        sample_regs_user: 0,
        user_regs_count: 0,
        sample_regs_intr: 0,
        intr_regs_count: 0,
        id_parse_info: RecordIdParseInfo {
            nonsample_record_id_offset_from_end: None,
            sample_record_id_offset_from_start: None,
        },
        nonsample_record_time_offset_from_end: Some(8),
        sample_record_time_offset_from_start: Some(0),
    }
}

/// One CPU's side-band event and its mmapped ring buffer.
struct Ring {
    _fd: OwnedFd,
    base: *mut u8,
    map_len: usize,
    page_size: usize,
    data_size: u64,
    tail: u64,
}

// SAFETY: the mapping is owned by this Ring alone and the kernel side is synchronized
// through data_head/data_tail, so moving it to another thread is sound.
unsafe impl Send for Ring {}

impl Ring {
    fn open(cpu: i32, data_pages: usize) -> Result<Self> {
        let mut attr = sys::perf_event_attr {
            size: mem::size_of::<sys::perf_event_attr>() as u32,
            type_: sys::PERF_TYPE_SOFTWARE,
            config: u64::from(sys::PERF_COUNT_SW_DUMMY),
            sample_type: u64::from(sys::PERF_SAMPLE_TIME),
            // Same clock as `monotonic_ns`, so drain can tell which records are settled.
            clockid: libc::CLOCK_MONOTONIC,
            ..Default::default()
        };
        attr.set_mmap(1);
        // Without attr.build_id, MMAP2 records carry the device and inode
        // that mapped files are checked against.
        attr.set_mmap2(1);
        attr.set_comm(1);
        attr.set_comm_exec(1);
        attr.set_task(1);
        attr.set_sample_id_all(1);
        attr.set_use_clockid(1);
        // SAFETY: attr is a valid, fully initialized perf_event_attr.
        let fd = unsafe {
            perf_event_open_sys::perf_event_open(
                &mut attr,
                -1,
                cpu,
                -1,
                sys::PERF_FLAG_FD_CLOEXEC.into(),
            )
        };
        if fd < 0 {
            let err = io::Error::last_os_error();
            bail!(
                "opening the process-tracking perf event on CPU {cpu} failed ({err}); \
                 run as root or with CAP_PERFMON"
            );
        }
        // SAFETY: fd was just returned by perf_event_open and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let map_len = (1 + data_pages) * page_size;
        // SAFETY: a fresh shared mapping of the perf fd; checked for failure below.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            let err = io::Error::last_os_error();
            bail!("mapping the perf ring buffer of CPU {cpu} failed ({err}); raise `ulimit -l` or kernel.perf_event_mlock_kb");
        }
        Ok(Self {
            _fd: fd,
            base: base.cast(),
            map_len,
            page_size,
            data_size: (data_pages * page_size) as u64,
            tail: 0,
        })
    }

    fn control(&self) -> *mut sys::perf_event_mmap_page {
        self.base.cast()
    }

    /// The `len` (at most data_size) bytes at ring position `pos`, in one or two pieces.
    /// Only for bytes between data_tail and data_head, which the kernel leaves alone
    /// until `release`; no reference ever covers the part the kernel is writing.
    fn bytes(&self, pos: u64, len: usize) -> RawData<'_> {
        let start = (pos % self.data_size) as usize;
        let first_len = len.min(self.data_size as usize - start);
        // SAFETY: both pieces lie inside the data area that follows the control page.
        unsafe {
            let data = self.base.add(self.page_size);
            let first = slice::from_raw_parts(data.add(start), first_len);
            match len - first_len {
                0 => RawData::Single(first),
                rest => RawData::Split(first, slice::from_raw_parts(data, rest)),
            }
        }
    }

    /// Pushes (time, ring index, record) for each record up to `limit`, and returns the
    /// position up to which the ring may be released once they have been applied.
    fn collect<'a>(
        &'a self,
        index: usize,
        limit: u64,
        out: &mut Vec<(u64, usize, RawEventRecord<'a>)>,
        lost: &mut u64,
    ) -> u64 {
        // SAFETY: data_head is a u64 in the control page, which the kernel updates
        // atomically; Acquire makes the record bytes before it visible.
        let head = unsafe {
            (*ptr::addr_of!((*self.control()).data_head).cast::<AtomicU64>())
                .load(Ordering::Acquire)
        };
        let info = parse_info();
        let mut pos = self.tail;
        while pos < head {
            let mut header = [0u8; HEADER_SIZE];
            let size = match self.bytes(pos, HEADER_SIZE).read_exact(&mut header) {
                Ok(()) => u64::from(u16::from_ne_bytes([header[6], header[7]])),
                Err(_) => 0,
            };
            if size < HEADER_SIZE as u64
                || !size.is_multiple_of(8)
                || size > self.data_size
                || pos + size > head
            {
                // Without a trustworthy size there is no next record to find.
                *lost += 1;
                return head;
            }
            let record_type = RecordType(u32::from_ne_bytes([
                header[0], header[1], header[2], header[3],
            ]));
            let misc = u16::from_ne_bytes([header[4], header[5]]);
            if record_type.is_builtin_type() {
                let body = self.bytes(pos + HEADER_SIZE as u64, size as usize - HEADER_SIZE);
                let record = RawEventRecord::new(record_type, misc, body, info);
                match record.timestamp() {
                    Some(time) if time > limit => return pos,
                    Some(time) => out.push((time, index, record)),
                    None => *lost += 1,
                }
            }
            pos += size;
        }
        pos
    }

    fn release(&mut self, stop: u64) {
        self.tail = stop;
        // SAFETY: as for data_head; Release keeps our reads before the kernel reuses the space.
        unsafe {
            (*ptr::addr_of!((*self.control()).data_tail).cast::<AtomicU64>())
                .store(stop, Ordering::Release)
        };
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: base/map_len describe the mapping created in `open`; the fd closes after.
        unsafe { libc::munmap(self.base.cast(), self.map_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    const PT_LOAD: u32 = 1;
    const PT_PHDR: u32 = 6;

    /// File offset of runtime `addr` in the ELF at `path`, whose program headers were
    /// loaded at `at_phdr` (AT_PHDR): computed from the file, independently of /proc.
    fn elf_file_offset(path: &Path, at_phdr: u64, addr: u64) -> u64 {
        let elf = fs::read(path).unwrap();
        let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
        let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
        let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
        let phdrs: Vec<(u32, u64, u64, u64)> = (0..phnum)
            .map(|i| phoff + i * phentsize)
            .map(|o| {
                (
                    u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()),
                    u64_at(o + 8),
                    u64_at(o + 16),
                    u64_at(o + 40),
                )
            })
            .collect();
        let phdr_vaddr = phdrs
            .iter()
            .find(|p| p.0 == PT_PHDR)
            .expect("PIE has PT_PHDR")
            .2;
        let vaddr = addr - (at_phdr - phdr_vaddr);
        let (_, offset, seg_vaddr, _) = phdrs
            .iter()
            .find(|&&(ty, _, v, memsz)| ty == PT_LOAD && (v..v + memsz).contains(&vaddr))
            .expect("address inside a PT_LOAD segment");
        vaddr - seg_vaddr + offset
    }

    fn exited(tracker: &ProcTracker, pid: u32) -> Option<bool> {
        tracker.model.processes.get(&pid).map(|p| p.exited)
    }

    fn has_mapping(tracker: &ProcTracker, pid: u32, path_part: &str) -> bool {
        let process = &tracker.model.processes[&pid];
        process
            .mappings
            .values()
            .any(|m| m.path.contains(path_part))
    }

    #[test]
    fn exited_command_keeps_comm_and_mappings() {
        let mut tracker = ProcTracker::start().unwrap();
        let child = Command::new("/bin/sleep").arg("0.2").spawn().unwrap();
        let pid = child.id();
        child.wait_with_output().unwrap();
        tracker.drain();
        assert_eq!(tracker.comm(pid), Some("sleep"));
        assert_eq!(exited(&tracker, pid), Some(true));
        assert!(has_mapping(&tracker, pid, "/usr/bin/sleep"));
        assert!(has_mapping(&tracker, pid, "libc.so"));
        assert!(has_mapping(&tracker, pid, "[vdso]"));
    }

    fn copy_of(binary: &str, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        fs::copy(binary, &path).unwrap();
        path
    }

    /// A file replaced at its path after its process exited is not the file
    /// that was mapped: it is not used. A file replaced while its process
    /// lives was already opened, and stays the one read.
    #[test]
    fn mapped_files_are_the_very_files_mapped() {
        let dir = std::env::temp_dir().join(format!("proc_tracker_swap_{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mapped_key = |tracker: &ProcTracker, pid: u32, name: &str| {
            let process = &tracker.model.processes[&pid];
            let mapping = process
                .mappings
                .values()
                .find(|m| m.path.ends_with(name))
                .unwrap_or_else(|| panic!("{name} is mapped"));
            (
                mapping.file.expect("a file has an inode"),
                mapping.path.clone(),
            )
        };

        // Exited, then swapped: refused.
        let mut tracker = ProcTracker::start().unwrap();
        let gone = copy_of("/bin/true", &dir, "gone");
        let mut child = Command::new(&gone).spawn().unwrap();
        child.wait().unwrap();
        fs::rename(copy_of("/bin/false", &dir, "swap"), &gone).unwrap();
        tracker.drain();
        let (key, path) = mapped_key(&tracker, child.id(), "/gone");
        assert!(tracker.elf_path(key, &path).is_none());

        // Opened while alive, then swapped: still the original file.
        let mut tracker = ProcTracker::start().unwrap();
        let live = copy_of("/bin/sleep", &dir, "live");
        let mut child = Command::new(&live).arg("1").spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        tracker.drain();
        let (key, path) = mapped_key(&tracker, child.id(), "/live");
        fs::rename(copy_of("/bin/true", &dir, "swap"), &live).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let kept = tracker.elf_path(key, &path).expect("opened while it lived");
        assert_eq!(fs::read(kept).unwrap(), fs::read("/bin/sleep").unwrap());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn exited_c_program_addresses_resolve_to_file_offsets() {
        let dir = std::env::temp_dir().join(format!("proc_tracker_probe_{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (source, binary) = (dir.join("probe.c"), dir.join("probe"));
        fs::write(
            &source,
            "#include <stdio.h>\n#include <sys/auxv.h>\n#include <time.h>\n\
             int main(void) { printf(\"%lx %lx %lx\\n\", (unsigned long)&main,\n\
             getauxval(AT_PHDR), (unsigned long)&clock_gettime); return 0; }\n",
        )
        .unwrap();
        let gcc = Command::new("gcc")
            .args(["-O1", "-pie", "-fPIE", "-o"])
            .arg(&binary)
            .arg(&source)
            .status()
            .unwrap();
        assert!(gcc.success());

        let mut tracker = ProcTracker::start().unwrap();
        let child = Command::new(&binary)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let output = child.wait_with_output().unwrap();
        tracker.drain();
        let fields: Vec<u64> = String::from_utf8(output.stdout)
            .unwrap()
            .split_whitespace()
            .map(|f| u64::from_str_radix(f, 16).unwrap())
            .collect();
        let (main_addr, at_phdr, clock_gettime_addr) = (fields[0], fields[1], fields[2]);

        assert_eq!(tracker.comm(pid), Some("probe"));
        let mapping = tracker
            .lookup(pid, main_addr)
            .expect("main is mapped")
            .clone();
        assert_eq!(Path::new(&mapping.path), fs::canonicalize(&binary).unwrap());
        assert_eq!(
            mapping.file_offset_of(main_addr),
            elf_file_offset(&binary, at_phdr, main_addr)
        );
        let libc = tracker
            .lookup(pid, clock_gettime_addr)
            .expect("libc is mapped");
        assert!(libc.path.contains("libc.so"), "{libc:?}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn forked_child_inherits_mappings_and_keeps_its_own_name() {
        let mut tracker = ProcTracker::start().unwrap();
        let own_pid = std::process::id();
        tracker.snapshot_pid(own_pid);
        let own_comm = tracker.comm(own_pid).unwrap().to_owned();
        // A thread's name must not become the process's name.
        std::thread::Builder::new()
            .name("renamed_thread".into())
            .spawn(|| ())
            .unwrap()
            .join()
            .unwrap();

        // SAFETY: the child only calls async-signal-safe functions before _exit.
        let child = unsafe { libc::fork() };
        if child == 0 {
            unsafe {
                libc::prctl(libc::PR_SET_NAME, c"forked_child".as_ptr());
                libc::_exit(0);
            }
        }
        assert!(child > 0);
        let mut status = 0;
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        tracker.drain();

        let child = child as u32;
        assert_eq!(tracker.comm(child), Some("forked_child"));
        assert_eq!(exited(&tracker, child), Some(true));
        let addr = forked_child_inherits_mappings_and_keeps_its_own_name as *const () as u64;
        let mapping = tracker
            .lookup(child, addr)
            .expect("inherited mapping")
            .clone();
        assert_eq!(
            Path::new(&mapping.path),
            fs::read_link("/proc/self/exe").unwrap()
        );
        assert_eq!(tracker.comm(own_pid), Some(own_comm.as_str()));
    }

    #[test]
    fn snapshot_of_self_maps_own_code_to_its_file_offset() {
        let mut tracker = ProcTracker::start().unwrap();
        let pid = std::process::id();
        let exe: PathBuf = fs::read_link("/proc/self/exe").unwrap();
        let addr = snapshot_of_self_maps_own_code_to_its_file_offset as *const () as u64;
        // Not known yet, but alive: lookup snapshots it on its own.
        assert!(tracker.find(pid, addr).is_none());
        assert!(tracker.lookup(pid, addr).is_some());
        tracker.snapshot_pid(pid);
        let mapping = tracker
            .lookup(pid, addr)
            .expect("own code is mapped")
            .clone();
        assert_eq!(Path::new(&mapping.path), exe);
        // SAFETY: getauxval has no preconditions.
        let at_phdr = unsafe { libc::getauxval(libc::AT_PHDR) };
        assert_eq!(
            mapping.file_offset_of(addr),
            elf_file_offset(&exe, at_phdr, addr)
        );
        assert_eq!(exited(&tracker, pid), Some(false));
    }

    /// Runs `batches` batches of `per_batch` concurrent /bin/true, draining after each,
    /// and checks that every one of them is fully known.
    fn check_true_batches(ring_pages: usize, batches: usize, per_batch: usize) {
        let mut tracker = ProcTracker::start_with_ring_pages(ring_pages).unwrap();
        let mut pids = Vec::new();
        for _ in 0..batches {
            let children: Vec<_> = (0..per_batch)
                .map(|_| Command::new("/bin/true").spawn().unwrap())
                .collect();
            for mut child in children {
                pids.push(child.id());
                child.wait().unwrap();
            }
            tracker.drain();
        }
        assert_eq!(tracker.lost_records(), 0);
        for pid in pids {
            assert_eq!(tracker.comm(pid), Some("true"), "pid {pid}");
            assert!(has_mapping(&tracker, pid, "/usr/bin/true"), "pid {pid}");
            assert!(has_mapping(&tracker, pid, "libc.so"), "pid {pid}");
            assert_eq!(exited(&tracker, pid), Some(true));
        }
    }

    /// Parent (fork) and child (exec) records often land on different CPUs' rings;
    /// applied ring by ring instead of in time order, this fails nearly every run.
    #[test]
    fn many_short_commands_all_resolve() {
        check_true_batches(DEFAULT_DATA_PAGES, 5, 40);
    }

    /// A 16 KiB ring wraps every ~25 commands, so records straddle its end.
    #[test]
    fn records_across_the_ring_end_parse() {
        check_true_batches(4, 150, 1);
    }

    #[test]
    fn overflow_is_counted_as_lost() {
        let mut tracker = ProcTracker::start_with_ring_pages(1).unwrap();
        for _ in 0..50 {
            Command::new("/bin/true").status().unwrap();
        }
        // The kernel reports the loss with the first record that fits again.
        tracker.drain();
        Command::new("/bin/true").status().unwrap();
        tracker.drain();
        assert!(tracker.lost_records() > 0);
    }

    #[test]
    fn snapshot_all_is_fast_and_complete() {
        let mut tracker = ProcTracker::start().unwrap();
        let listed: Vec<u32> = fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        let started = std::time::Instant::now();
        tracker.snapshot_all();
        let elapsed = started.elapsed();
        let count = tracker.model.processes.len() as u128;
        eprintln!("snapshot_all: {count} processes in {elapsed:?}");
        assert!(elapsed.as_millis() < 50 * (1 + count / 100), "{elapsed:?}");
        for pid in listed {
            let alive = Path::new(&format!("/proc/{pid}")).exists();
            assert!(
                !alive || tracker.model.processes.contains_key(&pid),
                "{pid}"
            );
        }
        let own_code = snapshot_all_is_fast_and_complete as *const () as u64;
        assert!(tracker.find(std::process::id(), own_code).is_some());
    }

    #[test]
    fn tracker_is_send() {
        fn send<T: Send>() {}
        send::<ProcTracker>();
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
        assert_eq!(parse_maps_line(line), Some(expected));
        assert_eq!(
            parse_maps_line(
                "7ffd1000-7ffd3000 r-xp 00000000 00:00 0                          [vdso]"
            )
            .unwrap()
            .path,
            "[vdso]"
        );
        assert_eq!(
            parse_maps_line("55d0000-55d1000 r--p 00000000 fe:01 1234   /usr/bin/x"),
            None
        );
        assert_eq!(
            parse_maps_line("7f00000-7f01000 rwxp 00000000 00:00 0 "),
            None
        );
    }
}

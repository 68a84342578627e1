//! Remembers every process's executable mappings and name, also after it exits.
//!
//! Symbolization runs at the end of a recording, when short-lived processes are gone
//! and /proc/PID/maps is empty. Like `perf record`, we therefore open host-wide
//! "side-band" perf events (mmap, comm/exec, fork, exit), which the kernel emits
//! synchronously, and replay them into a model of each address space. /proc snapshots
//! cover what existed before the events were opened.
//!
//! A PID can be had by several processes, one after another: each is a life
//! of that PID (`lives`), and a sample names its own by its process's start
//! time (`CountKey::start_time`). Every query takes (pid, start_time).
//!
//! Four parts: `ring` reads the events, `address_space` is the model they
//! update, `lives` tells the processes of one PID apart, `snapshot` reads
//! /proc.

mod address_space;
mod lives;
mod process;
mod ring;
mod snapshot;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;

pub use address_space::Mapping;
use address_space::Model;
use ring::{Rings, DEFAULT_DATA_PAGES};

use crate::host::interposer::Interposer;
use crate::host::safe_open::FileKey;

/// Host-wide model of process address spaces, fed by perf side-band events.
pub struct ProcTracker {
    rings: Rings,
    model: Model,
    /// Lives whose /proc maps `lookup` re-read since the last drain: at most once each.
    refreshed: HashSet<(u32, u64)>,
}

impl ProcTracker {
    /// Opens the per-CPU side-band events. Needs root/CAP_PERFMON.
    pub fn start() -> Result<Self> {
        Self::start_with_ring_pages(DEFAULT_DATA_PAGES)
    }

    /// Like `start`, with `data_pages` (a power of two) ring-buffer pages per CPU.
    pub fn start_with_ring_pages(data_pages: usize) -> Result<Self> {
        Ok(Self {
            rings: Rings::open(data_pages)?,
            model: Model::default(),
            refreshed: HashSet::new(),
        })
    }

    /// Replaces what is known about `pid` by /proc/PID/{maps,comm}; a vanished pid is skipped.
    pub fn snapshot_pid(&mut self, pid: u32) {
        self.model.snapshot_pid(pid);
    }

    pub fn snapshot_all(&mut self) {
        self.model.snapshot_all();
    }

    /// Applies every pending record, in time order. Called every ~100 ms and once at the end.
    /// Returns how many were applied.
    pub fn drain(&mut self) -> usize {
        self.refreshed.clear();
        let model = &mut self.model;
        let mut lost = 0;
        let mut applied = 0;
        self.rings.drain(&mut lost, |record| {
            applied += 1;
            model.apply(record)
        });
        model.lost_records = model.lost_records.saturating_add(lost);
        applied
    }

    /// Drops the mappings, name and cgroup of processes (lives of a PID)
    /// whose last events have been drained (see `Model::forget_exited`):
    /// call once after each drain of the count maps, once its samples are
    /// normalized. What stays is bounded by the live processes, not by how
    /// many ever ran. Returns the processes forgotten, each as its PID and a
    /// bound: the samples of that PID with a start time at or before it
    /// were made by it or by an earlier process with that PID.
    pub fn forget_exited(&mut self) -> Vec<(u32, u64)> {
        self.model.forget_exited()
    }

    /// Closes the files that only forgotten processes mapped, and returns how
    /// many: for a long run (serve) that names each drain's samples at once.
    /// A recording that names its samples at the end must not call it: the
    /// samples of exited processes still need their files.
    pub fn close_unmapped_files(&mut self) -> usize {
        self.model.close_unmapped_files()
    }

    /// From now on, remember each file mapping the side-band brings, for
    /// `take_new_files`.
    pub fn watch_new_files(&mut self) {
        self.model.new_files.get_or_insert_with(Vec::new);
    }

    /// The file mappings applied since the last call (with `watch_new_files`),
    /// each with its process: what processes mapped as they started.
    pub fn take_new_files(&mut self) -> Vec<(u32, Mapping)> {
        self.model
            .new_files
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The files some process that has not exited maps, as last known.
    pub fn files_mapped_by_live_processes(&self) -> HashSet<FileKey> {
        self.model.files_mapped_by_live_processes()
    }

    /// The file `file` as it was opened while a process mapped it (see
    /// `address_space`), shown as `path`; `None` if it could not be had.
    pub fn binary(&self, file: FileKey, path: &str) -> Option<crate::host::binaries::Binary> {
        Some(crate::host::binaries::Binary {
            shown: PathBuf::from(path),
            opened: self.model.opened(file)?,
        })
    }

    /// How many files mapped through an overlay were found in none of its
    /// layers' directories: their frames stay unnamed (host/overlay.rs).
    pub fn files_not_in_overlay_layers(&self) -> usize {
        self.model.files.not_in_overlay_layers.len()
    }

    /// The running processes (PID, name) that map a file found in none of
    /// its overlay's layers' directories, by PID: their frames in it stay
    /// unnamed.
    pub fn processes_mapping_files_not_in_overlay_layers(&self) -> Vec<(u32, String)> {
        let hidden = &self.model.files.not_in_overlay_layers;
        let mut found: Vec<(u32, String)> = self
            .model
            .processes
            .keys()
            .filter_map(|&pid| {
                let process = self.model.latest(pid)?;
                let maps_hidden = process
                    .mappings
                    .values()
                    .any(|m| m.file.is_some_and(|key| hidden.contains(&key)));
                (!process.exited && maps_hidden).then(|| (pid, process.comm.clone()))
            })
            .collect();
        found.sort();
        found
    }

    /// Records the kernel dropped (ring full) plus records skipped as unparsable: either
    /// way, mappings or names we may be missing.
    pub fn lost_records(&self) -> u64 {
        self.model.lost_records
    }

    /// Process name (main thread comm) as last known, also after exit, of
    /// the life of `pid` that started at `start_time` (0: the latest).
    pub fn comm(&self, pid: u32, start_time: u64) -> Option<&str> {
        let comm = &self.model.life(pid, start_time)?.comm;
        (!comm.is_empty()).then_some(comm.as_str())
    }

    /// The mapping containing `addr` in the address space, as last known, of
    /// the life of `pid` that started at `start_time`. If none is known and
    /// that life may still run, re-read /proc/PID/maps once and retry.
    pub fn lookup(&mut self, pid: u32, start_time: u64, addr: u64) -> Option<&Mapping> {
        if self.model.find(pid, start_time, addr).is_none() {
            let may_run = self
                .model
                .processes
                .get(&pid)
                .is_none_or(|lives| lives.may_still_run(start_time));
            if may_run && self.refreshed.insert((pid, start_time)) {
                self.snapshot_pid(pid);
            }
        }
        self.model.find(pid, start_time, addr)
    }

    /// Whether `addr` is in a mapping known, from what was applied so far,
    /// of the life of `pid` that started at `start_time`.
    pub fn maps(&self, pid: u32, start_time: u64, addr: u64) -> bool {
        self.model.find(pid, start_time, addr).is_some()
    }

    /// The executable mappings of the life of `pid` started at
    /// `start_time`, as last known, by start address.
    pub fn mappings(&self, pid: u32, start_time: u64) -> impl Iterator<Item = &Mapping> {
        self.model
            .life(pid, start_time)
            .into_iter()
            .flat_map(|process| process.mappings.values())
    }

    /// Each running process's executable: the file-backed mapping lowest
    /// in its address space (executables load below the libraries, PIE
    /// ones too), by PID.
    pub fn executables(&self) -> impl Iterator<Item = (u32, &Mapping)> {
        self.model.processes.iter().filter_map(|(&pid, lives)| {
            let process = &lives.latest()?.process;
            if process.exited {
                return None;
            }
            let exe = process.mappings.values().find(|m| m.file.is_some())?;
            Some((pid, exe))
        })
    }

    /// A path that opens exactly the file `file` named `path` (a fd of ours,
    /// opened while the process lived), or `None` if that file cannot be had:
    /// then its frames stay `[unknown]` rather than be named from another file.
    pub fn elf_path(&mut self, file: FileKey, path: &str) -> Option<PathBuf> {
        self.model.elf_path(file, path)
    }

    /// The libraries that take the clock calls of the life of `pid` started
    /// at `start_time` over (host/interposer.rs): every mapped library but
    /// the executable and the C library's own that exports a clock
    /// function, noted as it was mapped.
    pub fn interposers(&self, pid: u32, start_time: u64) -> Arc<[Interposer]> {
        self.model
            .life(pid, start_time)
            .map(|process| process.interposers.clone())
            .unwrap_or_default()
    }

    /// The running processes (PID, name, interposers) whose clock calls a
    /// library takes over, by PID.
    pub fn processes_with_interposers(&self) -> Vec<(u32, String, Arc<[Interposer]>)> {
        let mut found: Vec<(u32, String, Arc<[Interposer]>)> = self
            .model
            .processes
            .keys()
            .filter_map(|&pid| {
                let process = self.model.latest(pid)?;
                (!process.exited && !process.interposers.is_empty())
                    .then(|| (pid, process.comm.clone(), process.interposers.clone()))
            })
            .collect();
        found.sort_by_key(|(pid, _, _)| *pid);
        found
    }

    /// Whether the file `file`, named `path`, exports a clock function and
    /// is not the C library's own: calls made from it are an interposer's.
    pub fn is_interposer_file(&mut self, file: FileKey, path: &str) -> bool {
        self.model.files.is_interposer(file, path)
    }

    /// The user the life of `pid` started at `start_time` runs (or ran) as, if known.
    pub fn owner(&self, pid: u32, start_time: u64) -> Option<u32> {
        self.model.life(pid, start_time)?.owner
    }

    /// The cgroup path of the life of `pid` started at `start_time`, as read
    /// while it lived (`None` for the root cgroup or if never read).
    pub fn cgroup(&self, pid: u32, start_time: u64) -> Option<&str> {
        self.model.life(pid, start_time)?.cgroup.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::ring::DEFAULT_DATA_PAGES;
    use super::*;
    use std::fs;
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
        tracker.model.latest(pid).map(|p| p.exited)
    }

    fn has_mapping(tracker: &ProcTracker, pid: u32, path_part: &str) -> bool {
        let process = tracker.model.latest(pid).expect("pid is known");
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
        assert_eq!(tracker.comm(pid, 0), Some("sleep"));
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

    /// Spawns a program just copied. Another test thread forking at the moment
    /// of the copy holds its write descriptor until that child execs, so exec
    /// can fail with ETXTBSY for a moment: retry briefly.
    fn spawn_copied(command: &mut Command) -> std::process::Child {
        for _ in 0..100 {
            match command.spawn() {
                Err(err) if err.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                spawned => return spawned.unwrap(),
            }
        }
        panic!("{command:?} stayed busy (ETXTBSY) for 2 s");
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
            let process = tracker.model.latest(pid).expect("pid is known");
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
        let mut child = spawn_copied(&mut Command::new(&gone));
        child.wait().unwrap();
        fs::rename(copy_of("/bin/false", &dir, "swap"), &gone).unwrap();
        tracker.drain();
        let (key, path) = mapped_key(&tracker, child.id(), "/gone");
        assert!(tracker.elf_path(key, &path).is_none());

        // Opened while alive, then swapped: still the original file.
        let mut tracker = ProcTracker::start().unwrap();
        let live = copy_of("/bin/sleep", &dir, "live");
        let mut child = spawn_copied(Command::new(&live).arg("1"));
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

        assert_eq!(tracker.comm(pid, 0), Some("probe"));
        let mapping = tracker
            .lookup(pid, 0, main_addr)
            .expect("main is mapped")
            .clone();
        assert_eq!(Path::new(&mapping.path), fs::canonicalize(&binary).unwrap());
        assert_eq!(
            mapping.file_offset_of(main_addr),
            elf_file_offset(&binary, at_phdr, main_addr)
        );
        let libc = tracker
            .lookup(pid, 0, clock_gettime_addr)
            .expect("libc is mapped");
        assert!(libc.path.contains("libc.so"), "{libc:?}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn forked_child_inherits_mappings_and_keeps_its_own_name() {
        let mut tracker = ProcTracker::start().unwrap();
        let own_pid = std::process::id();
        tracker.snapshot_pid(own_pid);
        let own_comm = tracker.comm(own_pid, 0).unwrap().to_owned();
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
        assert_eq!(tracker.comm(child, 0), Some("forked_child"));
        assert_eq!(exited(&tracker, child), Some(true));
        let addr = forked_child_inherits_mappings_and_keeps_its_own_name as *const () as u64;
        let mapping = tracker
            .lookup(child, 0, addr)
            .expect("inherited mapping")
            .clone();
        assert_eq!(
            Path::new(&mapping.path),
            fs::read_link("/proc/self/exe").unwrap()
        );
        assert_eq!(tracker.comm(own_pid, 0), Some(own_comm.as_str()));
    }

    #[test]
    fn snapshot_of_self_maps_own_code_to_its_file_offset() {
        let mut tracker = ProcTracker::start().unwrap();
        let pid = std::process::id();
        let exe: PathBuf = fs::read_link("/proc/self/exe").unwrap();
        let addr = snapshot_of_self_maps_own_code_to_its_file_offset as *const () as u64;
        // Not known yet, but alive: lookup snapshots it on its own.
        assert!(tracker.model.find(pid, 0, addr).is_none());
        assert!(tracker.lookup(pid, 0, addr).is_some());
        tracker.snapshot_pid(pid);
        let mapping = tracker
            .lookup(pid, 0, addr)
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
            assert_eq!(tracker.comm(pid, 0), Some("true"), "pid {pid}");
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
        assert!(tracker
            .model
            .find(std::process::id(), 0, own_code)
            .is_some());
    }

    #[test]
    fn tracker_is_send() {
        fn send<T: Send>() {}
        send::<ProcTracker>();
    }
}

//! Uprobes for the binaries processes start with after the session began:
//! a Go program started after `serve`, a container's own libc, a program
//! COMMAND's shell runs from another file.
//!
//! Fed by the perf side-band (`proc_tracker`), not by an exec tracepoint:
//! the side-band already brings every new executable mapping host-wide,
//! with the file's device and inode and the very file opened while its
//! process lives (`/proc/PID/map_files/`), which an exec hook would have to
//! find again through /proc, racing the process's exit. It also sees a
//! library mapped after exec (dlopen) and a libc first mapped by
//! `ld.so`, which `sched_process_exec` does not.
//!
//! The drain loop only sends each new file here once (`consider`); a worker
//! thread tells whether a source wants it (a glibc, a Go program with its
//! symbols), finds the symbols' offsets and opens the uprobes, for every
//! process that maps the file (the PID filter scopes them in eBPF). So the
//! loop never waits for an ELF parse or for the kernel to put breakpoints
//! into every process mapping the file. A file no live process maps for two
//! sweeps in a row is detached, and considered again if a process maps it
//! later: a daemon running for weeks holds uprobes only on what runs.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::attachment::{Attachment, Backend};
use crate::host::binaries::{self, Binary, GoBinary};
use crate::host::safe_open::FileKey;
use crate::probes::uprobe;
use crate::proc_tracker::Mapping;
use crate::say::warning;
use crate::sources::{Source, UprobeBinary};

/// The late hooks a recording lists at most: a daemon running for weeks
/// on a host that builds and runs new binaries stays bounded.
const MAX_DESCRIBED_HOOKS: usize = 1000;

/// A source that follows new processes, with its loaded uprobe programs.
pub struct Wanted {
    pub source: Source,
    pub which: UprobeBinary,
    /// Each uprobe's names and its program (a descriptor of our own).
    pub programs: Vec<(&'static [&'static str], OwnedFd)>,
}

enum Request {
    Consider(Binary),
    Detach(FileKey),
}

/// What the worker attached, for the recording's description.
#[derive(Default)]
struct Attached {
    /// Every hook attached since the start, detached ones included: what
    /// the recording describes.
    hooks: Vec<Attachment>,
}

pub struct AttachQueue {
    /// Dropped first: the worker then finishes and closes every uprobe.
    requests: Option<mpsc::Sender<Request>>,
    worker: Option<JoinHandle<()>>,
    attached: Arc<Mutex<Attached>>,
    /// Files sent to the worker (and not detached since).
    considered: HashSet<FileKey>,
    /// Considered files no live process mapped at the last sweep.
    unmapped: HashSet<FileKey>,
    /// Whether a file must be a glibc to be wanted (no Go source).
    libc_only: bool,
}

fn lock(attached: &Mutex<Attached>) -> MutexGuard<'_, Attached> {
    attached.lock().unwrap_or_else(|e| e.into_inner())
}

impl AttachQueue {
    pub fn start(wanted: Vec<Wanted>) -> std::io::Result<AttachQueue> {
        let libc_only = wanted.iter().all(|w| w.which == UprobeBinary::Libc);
        let (requests, received) = mpsc::channel();
        let attached = Arc::new(Mutex::new(Attached::default()));
        let shared = attached.clone();
        let worker = std::thread::Builder::new()
            .name("attach-queue".to_string())
            .spawn(move || work(&wanted, &received, &shared))?;
        Ok(AttachQueue {
            requests: Some(requests),
            worker: Some(worker),
            attached,
            considered: HashSet::new(),
            unmapped: HashSet::new(),
            libc_only,
        })
    }

    /// Whether the file of `mapping` is new here and may be one a source
    /// wants (then it is sent to the worker through `binary`).
    pub fn is_new(&self, mapping: &Mapping) -> bool {
        mapping.file.is_some_and(|key| {
            !self.considered.contains(&key) && (!self.libc_only || binaries::is_libc(&mapping.path))
        })
    }

    /// Sends a file `is_new` chose to the worker.
    pub fn consider(&mut self, binary: Binary) {
        if self.considered.insert(binary.key()) {
            self.send(Request::Consider(binary));
        }
    }

    /// Detaches the files no live process (`mapped` holds the files live
    /// processes map) mapped at this sweep and the last, and forgets the
    /// files considered that neither did: a process mapping one later has
    /// it considered again.
    pub fn sweep(&mut self, mapped: &HashSet<FileKey>) {
        let gone: Vec<FileKey> = self
            .considered
            .iter()
            .filter(|key| !mapped.contains(key))
            .copied()
            .collect();
        let unmapped_before = std::mem::take(&mut self.unmapped);
        for key in gone {
            if unmapped_before.contains(&key) {
                self.considered.remove(&key);
                self.send(Request::Detach(key));
            } else {
                self.unmapped.insert(key);
            }
        }
    }

    /// Every hook attached so far, detached ones included.
    pub fn attachments(&self) -> Vec<Attachment> {
        lock(&self.attached).hooks.clone()
    }

    fn send(&self, request: Request) {
        // The worker only stops when `requests` is dropped.
        if let Some(requests) = &self.requests {
            let _ = requests.send(request);
        }
    }
}

impl Drop for AttachQueue {
    /// Waits for the worker, so every uprobe is closed when this returns.
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn wants(which: UprobeBinary, binary: &Binary) -> bool {
    match which {
        UprobeBinary::Libc => binaries::is_libc(&binary.shown.to_string_lossy()),
        UprobeBinary::GoExecutable => binaries::go_binary(&binary.fd_path()) == GoBinary::Named,
    }
}

fn work(wanted: &[Wanted], requests: &mpsc::Receiver<Request>, attached: &Mutex<Attached>) {
    let mut uprobes: HashMap<FileKey, Vec<OwnedFd>> = HashMap::new();
    for request in requests {
        let binary = match request {
            Request::Detach(key) => {
                uprobes.remove(&key);
                continue;
            }
            Request::Consider(binary) => binary,
        };
        let path = binary.fd_path();
        let mut events = Vec::new();
        let mut hooks = Vec::new();
        for wanted in wanted.iter().filter(|w| wants(w.which, &binary)) {
            for (symbols, program) in &wanted.programs {
                let Some((symbol, offset)) = uprobe::symbol_offset(&path, symbols) else {
                    continue;
                };
                match uprobe::open(program.as_fd(), &path, offset) {
                    Ok(event) => {
                        events.push(event);
                        hooks.push(Attachment {
                            source: wanted.source,
                            hook: format!("{}:{symbol}", binary.shown.display()),
                            backend: Backend::Uprobe,
                        });
                    }
                    Err(err) => warning!(
                        "could not put the {} uprobe on {}: {err:#}",
                        wanted.source,
                        binary.shown.display()
                    ),
                }
            }
        }
        if events.is_empty() {
            continue;
        }
        uprobes.insert(binary.key(), events);
        let mut attached = lock(attached);
        for hook in hooks {
            // A file detached and mapped again is one hook; past the bound
            // the description stops growing, the uprobes do not stop.
            let known = attached
                .hooks
                .iter()
                .any(|h| h.source == hook.source && h.hook == hook.hook);
            if !known && attached.hooks.len() < MAX_DESCRIBED_HOOKS {
                attached.hooks.push(hook);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file is sent to the worker once; unmapped at one sweep it stays,
    /// unmapped at two in a row it is detached and new again.
    #[test]
    fn a_file_unmapped_at_two_sweeps_in_a_row_is_new_again() {
        let mut queue = AttachQueue::start(Vec::new()).unwrap();
        let exe = binaries::exe_of(std::process::id()).unwrap();
        let key = exe.key();
        let mapping = Mapping {
            start: 0x1000,
            end: 0x2000,
            file_offset: 0,
            path: "/usr/lib/x86_64-linux-gnu/libc.so.6".to_string(),
            file: Some(key),
        };
        assert!(queue.is_new(&mapping));
        queue.consider(exe);
        assert!(!queue.is_new(&mapping));
        let mapped = HashSet::from([key]);
        let unmapped = HashSet::new();
        queue.sweep(&unmapped);
        queue.sweep(&mapped);
        queue.sweep(&unmapped);
        assert!(!queue.is_new(&mapping), "unmapped once since it was mapped");
        queue.sweep(&unmapped);
        assert!(queue.is_new(&mapping));
        // Without a Go source, only a glibc is wanted.
        let other = Mapping {
            path: "/usr/bin/true".to_string(),
            ..mapping
        };
        assert!(!queue.is_new(&other));
    }
}

//! Turns raw instruction pointers into function names with blazesym.
//!
//! Two steps. As samples are drained from the kernel, `Normalizer` turns
//! their user addresses into (file, file offset) through the process
//! tracker, which remembers the mappings of processes until their last
//! events are drained; that is why a 5 ms COMMAND is symbolized as well as a
//! long-running daemon. Normalized stacks no longer depend on where a
//! process was loaded, so the stacks of every run of a program are one
//! interned stack. Then, at the end or when someone looks, `StackSymbolizer`
//! names each distinct location once.

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use blazesym::symbolize::source::{Elf, Kernel, Source as BlazeSource};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};

use profiler_common::INTERRUPT_TGID;

use crate::collect::{RawSample, RawStack};
use crate::debuginfo::{self, DebugInfo};
use crate::interrupt;
use crate::proc_tracker::ProcTracker;
use crate::safe_open::{self, FileKey, PerfMapRefusal};
use crate::sources::ClockRead;

pub const UNKNOWN: &str = "[unknown]";
/// Stands for the user stack when the kernel could not capture it.
pub const LOST_STACK: &str = "[lost stack]";

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Frame {
    pub function: String,
    /// The file the code lives in (the kernel for kernel frames), where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    pub kernel: bool,
}

impl Frame {
    fn unknown(module: Option<String>, kernel: bool) -> Frame {
        Frame {
            function: UNKNOWN.to_string(),
            module,
            kernel,
        }
    }

    /// The frame's name in folded stacks: kernel frames carry `_[k]`.
    pub fn folded_name(&self) -> String {
        if self.kernel {
            format!("{}_[k]", self.function)
        } else {
            self.function.clone()
        }
    }
}

/// How a stack ended up, besides its frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StackState {
    Complete,
    /// The kernel could not capture the user stack; frames are missing.
    UserStackLost,
    /// `--stack-every N`: the frames above the exact ones (exact_frames)
    /// were sampled from one event in N, and the count of this stack is its
    /// share of the exact count of the events with those frames.
    Estimated,
    /// `--stack-every N`: no event with these exact frames took its whole
    /// stack; the frames are the exact ones only (under `[unsampled]` once
    /// aggregated).
    Unsampled,
    /// A stack unwound with DWARF from one event's copy: its count weighs
    /// how the exact count of its group (its process, clock read and user
    /// ip) is spread, as for sampled stacks; stack_scaling turns it into
    /// `Complete` (every event's stack was unwound) or `Estimated`.
    Unwound,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolizedSample {
    pub pid: u32,
    /// The process's start time (CLOCK_MONOTONIC ns, 0: unknown): with
    /// `pid`, it names one process, also where a PID was reused.
    pub start_time: u64,
    pub comm: String,
    /// The process's cgroup path, where it is not the root cgroup.
    pub cgroup: Option<String>,
    pub read: ClockRead,
    /// Outermost first: user frames, then kernel frames.
    pub frames: Vec<Frame>,
    pub state: StackState,
    /// How many of the innermost user frames every event of this sample's
    /// key had for certain: the clock-reading code, the callers the kernel
    /// side recovered and the first return address. Under `--stack-every`
    /// they name the group whose exact count stack_scaling spreads.
    pub exact_frames: usize,
    pub count: u64,
}

/// Where a user address lives: a file and an offset into it, JIT code named
/// by the process's perf map, or nowhere known.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UserLocation {
    /// `file` is `None` for the vDSO, which has no file.
    File {
        path: Arc<str>,
        file: Option<FileKey>,
        offset: u64,
    },
    Special(Arc<str>),
    Jit(Arc<str>),
    Unknown,
}

/// What names a process in the output, read while it lived.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessIdentity {
    pub comm: Option<String>,
    /// The cgroup path, where it is not the root cgroup.
    pub cgroup: Option<String>,
}

/// A drained sample with its stacks made independent of the process's
/// address space: everything naming needs, without the process's mappings.
/// Stacks and identities are interned (`Normalizer`), so a sample costs a
/// few pointers whatever its depth.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NormalizedSample {
    pub pid: u32,
    /// The process's start time (see `SymbolizedSample::start_time`).
    pub start_time: u64,
    pub process: Arc<ProcessIdentity>,
    pub read: ClockRead,
    /// Innermost first, with the callers the frame chain skipped.
    pub user: Arc<[UserLocation]>,
    /// The kernel could not capture the user stack.
    pub user_lost: bool,
    /// The event's user stack was sampled out: `user` holds the innermost
    /// frames only.
    pub sampled_out: bool,
    /// One event's stack unwound with DWARF (RawStack::Unwound).
    pub unwound: bool,
    /// How many of `user`'s innermost frames every event of the key shares
    /// (see `exact_depth`).
    pub exact_depth: usize,
    /// Kernel return addresses as captured, innermost first.
    pub kernel: Arc<[u64]>,
}

/// A JIT runtime's `/tmp/perf-PID.map` (`START SIZE NAME` per line, hex), the
/// convention perf defined and node --perf-basic-prof, the JVM's agents and
/// others follow. blazesym reads these only for live processes through
/// /proc; the file outlives the process, so it is read here directly, under
/// perf's rules (safe_open::read_perf_map): anyone can create files in /tmp.
#[derive(Default)]
struct PerfMap(Vec<(u64, u64, String)>);

/// Whether refused perf maps are reported on stderr (not under `top`'s screen).
static PERF_MAP_NOTES: AtomicBool = AtomicBool::new(true);

/// Keeps perf-map notes off stderr (for `top`, which owns the terminal).
pub fn quiet_perf_map_notes() {
    PERF_MAP_NOTES.store(false, Ordering::Relaxed);
}

impl PerfMap {
    fn load(pid: u32, owner: Option<u32>) -> PerfMap {
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
                if let Some(why) = why.filter(|_| PERF_MAP_NOTES.load(Ordering::Relaxed)) {
                    eprintln!("clockprof: note: ignoring {path}: {why}");
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

    fn name(&self, address: u64) -> Option<&str> {
        let index = self.0.partition_point(|(start, _, _)| *start <= address);
        let (_, end, name) = self.0.get(index.checked_sub(1)?)?;
        (address < *end).then_some(name.as_str())
    }
}

/// The address to look up for the `depth`-th frame (0 = innermost). Frames
/// above the innermost hold return addresses, which point past the call and
/// may belong to the next function; one byte back is inside the call.
fn lookup_address(ip: u64, depth: usize) -> u64 {
    if depth == 0 {
        ip
    } else {
        ip.saturating_sub(1)
    }
}

/// Names of the function at each looked-up location, outermost (inlining)
/// first, keyed by location.
type NameTable<K> = HashMap<K, Vec<String>>;

/// The function and the inlined functions blazesym found at an address,
/// outermost first; None where it found none.
pub(crate) fn names_of(symbolized: &Symbolized) -> Option<Vec<String>> {
    match symbolized {
        Symbolized::Sym(sym) => {
            let mut names = vec![sym.name.to_string()];
            names.extend(sym.inlined.iter().map(|f| f.name.to_string()));
            Some(names)
        }
        _ => None,
    }
}

/// The vDSO has no file: this kernel's image, copied from our own address
/// space (every process maps the same one) into an anonymous memory file,
/// stands in. blazesym reads it by its /proc/self/fd path; no name exists in
/// any directory, so nothing can be planted there and nothing is left
/// behind, whatever way clockprof exits.
const VDSO: &str = "[vdso]";

struct VdsoImage(std::fs::File);

impl VdsoImage {
    fn dump() -> Option<VdsoImage> {
        let image = crate::host_facts::own_vdso_image()?;
        // SAFETY: a valid NUL-terminated name; the flags are known to memfd_create.
        let fd = unsafe { libc::memfd_create(c"clockprof-vdso".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: memfd_create just returned this descriptor, owned by nobody else.
        let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        std::io::Write::write_all(&mut file, &image).ok()?;
        Some(VdsoImage(file))
    }

    fn path(&self) -> std::path::PathBuf {
        use std::os::fd::AsRawFd;
        std::path::PathBuf::from(format!("/proc/self/fd/{}", self.0.as_raw_fd()))
    }
}

fn symbolize_files(
    symbolizer: &Symbolizer,
    vdso: &OnceCell<Option<VdsoImage>>,
    debuginfo: &RefCell<DebugInfo>,
    tracker: &mut ProcTracker,
    locations: &BTreeSet<UserLocation>,
) -> NameTable<UserLocation> {
    let mut by_file: HashMap<(&Arc<str>, Option<FileKey>), Vec<u64>> = HashMap::new();
    for location in locations {
        if let UserLocation::File { path, file, offset } = location {
            by_file.entry((path, *file)).or_default().push(*offset);
        }
    }
    let mut table = HashMap::new();
    let vdso = by_file
        .keys()
        .any(|&(path, key)| &**path == VDSO && key.is_none())
        .then(|| vdso.get_or_init(VdsoImage::dump).as_ref())
        .flatten();
    for ((path, key), offsets) in by_file {
        let path_arc = path;
        let path: &str = path;
        // Only the very file that was mapped, as opened by the tracker; a file
        // that cannot be had leaves its frames `[unknown]`, with the module named.
        let file = match (vdso, path, key) {
            (Some(image), VDSO, None) => image.path(),
            (_, _, Some(key)) => match tracker.elf_path(key, path) {
                Some(file) => file,
                None => continue,
            },
            _ => continue,
        };
        // DWARF first, for inlined functions; where blazesym cannot read a
        // file's debug information (seen with Debian's libc and its debug
        // link), its ELF symbols still name the functions. A file that is
        // not ELF leaves its frames `[unknown]`, with the module named.
        let debug_syms = path == VDSO || debuginfo::may_follow_debug_link(&file);
        let symbolize = |debug_syms: bool| {
            let mut elf = Elf::new(&file);
            elf.debug_syms = debug_syms;
            symbolizer.symbolize(&BlazeSource::Elf(elf), Input::FileOffset(&offsets))
        };
        let Ok(results) = symbolize(debug_syms).or_else(|_| symbolize(false)) else {
            continue;
        };
        let unnamed: Vec<u64> = offsets
            .iter()
            .zip(results.iter())
            .filter(|(_, result)| names_of(result).is_none())
            .map(|(offset, _)| *offset)
            .collect();
        if path != VDSO && !unnamed.is_empty() {
            let named = debuginfo
                .borrow_mut()
                .name_unnamed(symbolizer, &file, path, &unnamed);
            for (offset, names) in named {
                let location = UserLocation::File {
                    path: Arc::clone(path_arc),
                    file: key,
                    offset,
                };
                table.insert(location, names);
            }
        }
        for (offset, result) in offsets.iter().zip(results.iter()) {
            if let Some(mut names) = names_of(result) {
                if path == VDSO {
                    // The vDSO exports each function twice (clock_gettime and
                    // __vdso_clock_gettime); the prefixed name tells it apart
                    // from glibc's clock_gettime in the same stack.
                    for name in names.iter_mut().filter(|n| !n.starts_with("__vdso_")) {
                        name.insert_str(0, "__vdso_");
                    }
                }
                let location = UserLocation::File {
                    path: Arc::clone(path_arc),
                    file: key,
                    offset: *offset,
                };
                table.insert(location, names);
            }
        }
    }
    table
}

fn symbolize_kernel(symbolizer: &Symbolizer, addresses: &BTreeSet<u64>) -> NameTable<u64> {
    let addresses: Vec<u64> = addresses.iter().copied().collect();
    let source = BlazeSource::Kernel(Kernel::default());
    let Ok(results) = symbolizer.symbolize(&source, Input::AbsAddr(&addresses)) else {
        return HashMap::new();
    };
    addresses
        .iter()
        .zip(results.iter())
        .filter_map(|(addr, result)| Some((*addr, names_of(result)?)))
        .collect()
}

impl NormalizedSample {
    /// The sample as kept once its process is gone: under its name, not
    /// its pid and start time (0), so every run of a program adds to one
    /// entry per stack.
    /// A process never named is named by its pid now; interrupt-context
    /// reads and the idle tasks keep their pseudo-processes.
    pub fn of_gone_process(mut self) -> NormalizedSample {
        if self.pid == INTERRUPT_TGID || self.pid == 0 {
            return self;
        }
        if self.process.comm.is_none() {
            self.process = Arc::new(ProcessIdentity {
                comm: Some(process_name(self.pid, None)),
                cgroup: self.process.cgroup.clone(),
            });
        }
        self.pid = 0;
        self.start_time = 0;
        self
    }
}

/// One shared copy of each value: what a long run accumulates is its
/// distinct stacks, not one copy per process that ran them.
struct Interned<T: ?Sized + Eq + std::hash::Hash>(HashSet<Arc<T>>);

impl<T: ?Sized + Eq + std::hash::Hash> Default for Interned<T> {
    fn default() -> Self {
        Interned(HashSet::new())
    }
}

impl<T: ?Sized + Eq + std::hash::Hash> Interned<T> {
    fn get(&mut self, value: &T, make: impl FnOnce(&T) -> Arc<T>) -> Arc<T> {
        if let Some(known) = self.0.get(value) {
            return Arc::clone(known);
        }
        let value = make(value);
        self.0.insert(Arc::clone(&value));
        value
    }
}

/// Normalizes drained samples while their processes' mappings are known,
/// sharing one copy of every path, stack and process identity.
#[derive(Default)]
pub struct Normalizer {
    paths: Interned<str>,
    user_stacks: Interned<[UserLocation]>,
    kernel_stacks: Interned<[u64]>,
    processes: Interned<ProcessIdentity>,
}

impl Normalizer {
    /// `samples` normalized, with their counts. Call before the tracker
    /// forgets the processes that ran them.
    pub fn normalize(
        &mut self,
        samples: &[RawSample],
        tracker: &mut ProcTracker,
    ) -> Vec<(NormalizedSample, u64)> {
        // Read at most once per drain, for the addresses no mapping covers.
        let mut perf_maps = HashMap::new();
        samples
            .iter()
            .map(|sample| {
                let user: Vec<UserLocation> = user_ips(sample)
                    .iter()
                    .enumerate()
                    .map(|(depth, &ip)| {
                        self.locate(
                            tracker,
                            &mut perf_maps,
                            (sample.tgid, sample.start_time),
                            lookup_address(ip, depth),
                        )
                    })
                    .collect();
                let identity = ProcessIdentity {
                    comm: tracker
                        .comm(sample.tgid, sample.start_time)
                        .map(str::to_string),
                    cgroup: tracker
                        .cgroup(sample.tgid, sample.start_time)
                        .map(str::to_string),
                };
                let normalized = NormalizedSample {
                    pid: sample.tgid,
                    start_time: sample.start_time,
                    process: self.processes.get(&identity, |p| Arc::new(p.clone())),
                    read: sample.read,
                    user: self.user_stacks.get(&user, |v| Arc::from(v)),
                    user_lost: matches!(sample.user_stack, RawStack::Lost(_)),
                    sampled_out: matches!(sample.user_stack, RawStack::SampledOut(_)),
                    unwound: matches!(sample.user_stack, RawStack::Unwound(_)),
                    exact_depth: exact_depth(sample),
                    kernel: self
                        .kernel_stacks
                        .get(ips(&sample.kernel_stack), |v| Arc::from(v)),
                };
                (normalized, sample.count)
            })
            .collect()
    }

    fn locate(
        &mut self,
        tracker: &mut ProcTracker,
        perf_maps: &mut HashMap<u32, PerfMap>,
        (pid, start_time): (u32, u64),
        address: u64,
    ) -> UserLocation {
        match tracker.lookup(pid, start_time, address) {
            // The vDSO is symbolized from this kernel's image (VdsoImage).
            Some(mapping) if mapping.path.starts_with('[') && mapping.path != VDSO => {
                UserLocation::Special(self.paths.get(&mapping.path, |v| Arc::from(v)))
            }
            Some(mapping) => {
                let offset = mapping.file_offset_of(address);
                let file = mapping.file;
                UserLocation::File {
                    path: self.paths.get(&mapping.path, |v| Arc::from(v)),
                    file,
                    offset,
                }
            }
            None => match perf_maps
                .entry(pid)
                .or_insert_with(|| PerfMap::load(pid, tracker.owner(pid, start_time)))
                .name(address)
            {
                Some(name) => UserLocation::Jit(self.paths.get(name, |v| Arc::from(v))),
                None => UserLocation::Unknown,
            },
        }
    }
}

fn ips(stack: &RawStack) -> &[u64] {
    match stack {
        RawStack::Ips(ips) | RawStack::SampledOut(ips) | RawStack::Unwound(ips) => ips,
        RawStack::NotCaptured | RawStack::Lost(_) => &[],
    }
}

/// The user stack, innermost first, with the callers the frame chain skipped
/// put back where the kernel side found them: at depth 1 the caller of a
/// function caught without its frame (uprobe at entry, vDSO prologue or
/// epilogue), at depth 2 the caller of a frameless wrapper (glibc around the
/// vDSO).
fn user_ips(sample: &RawSample) -> Vec<u64> {
    with_callers(ips(&sample.user_stack), sample)
}

/// How many of the innermost frames of user_ips are known for every event
/// of the sample's key: those that come from the user ip and the first
/// return address (what a sampled-out event keeps), with the callers put
/// back between them.
/// An unwound stack shares its user ip with its key (the only frame the
/// kernel side keeps for a process unwound with DWARF).
fn exact_depth(sample: &RawSample) -> usize {
    let ips = ips(&sample.user_stack);
    if matches!(sample.user_stack, RawStack::Unwound(_)) {
        return ips.len().min(1);
    }
    with_callers(&ips[..ips.len().min(2)], sample).len()
}

fn with_callers(ips: &[u64], sample: &RawSample) -> Vec<u64> {
    let mut ips = ips.to_vec();
    for (depth, caller) in [(1, sample.caller_ip), (2, sample.wrapper_caller_ip)] {
        if caller != 0 && depth <= ips.len() && ips.get(depth) != Some(&caller) {
            ips.insert(depth, caller);
        }
    }
    ips
}

/// One per run: blazesym keeps every file it parsed (and checks its device,
/// inode, size and mtime before reusing it), so the live view's drill-ins and
/// exports do not parse the same ELF and DWARF again; the vDSO image is
/// dumped once.
pub struct StackSymbolizer {
    blazesym: Symbolizer,
    vdso: OnceCell<Option<VdsoImage>>,
    /// Separate debug files and debuginfod, for what files leave unnamed.
    debuginfo: RefCell<DebugInfo>,
    /// The session's kernel functions, by slot: a kernel stack is cut at
    /// the one its event names.
    kernel_functions: Vec<String>,
}

impl StackSymbolizer {
    pub fn new(kernel_functions: Vec<String>) -> Self {
        StackSymbolizer {
            blazesym: Symbolizer::builder()
                .enable_code_info(false)
                .enable_inlined_fns(true)
                .set_debug_dirs(Some(debuginfo::debug_dirs()))
                .build(),
            vdso: OnceCell::new(),
            debuginfo: RefCell::new(DebugInfo::from_env()),
            kernel_functions,
        }
    }

    /// Names the frames of normalized samples, each distinct location once.
    /// Samples whose process name is unknown are named `[pid N]`.
    /// The tracker only lends the files it opened while their processes
    /// lived.
    pub fn name<'a>(
        &self,
        samples: impl Iterator<Item = (&'a NormalizedSample, u64)> + Clone,
        tracker: &mut ProcTracker,
    ) -> Vec<SymbolizedSample> {
        let distinct: BTreeSet<UserLocation> = samples
            .clone()
            .flat_map(|(s, _)| s.user.iter().cloned())
            .collect();
        let user_names = symbolize_files(
            &self.blazesym,
            &self.vdso,
            &self.debuginfo,
            tracker,
            &distinct,
        );
        let kernel_addresses: BTreeSet<u64> = samples
            .clone()
            .flat_map(|(s, _)| {
                s.kernel
                    .iter()
                    .enumerate()
                    .map(|(depth, &ip)| lookup_address(ip, depth))
            })
            .collect();
        let kernel_names = symbolize_kernel(&self.blazesym, &kernel_addresses);
        samples
            .map(|(sample, count)| {
                let (frames, exact_frames) =
                    frames_of(sample, &user_names, &kernel_names, &self.kernel_functions);
                let mut symbolized = SymbolizedSample {
                    pid: sample.pid,
                    start_time: sample.start_time,
                    comm: process_name(sample.pid, sample.process.comm.as_deref()),
                    cgroup: sample.process.cgroup.clone(),
                    read: sample.read,
                    frames,
                    state: if sample.user_lost {
                        StackState::UserStackLost
                    } else if sample.sampled_out {
                        StackState::Unsampled
                    } else if sample.unwound {
                        StackState::Unwound
                    } else {
                        StackState::Complete
                    },
                    exact_frames,
                    count,
                };
                interrupt::attribute(&mut symbolized);
                symbolized
            })
            .collect()
    }
}

/// The frames of one sample, outermost first, and how many of the innermost
/// user frames every event of its key shares.
fn frames_of(
    sample: &NormalizedSample,
    user_names: &NameTable<UserLocation>,
    kernel_names: &NameTable<u64>,
    kernel_functions: &[String],
) -> (Vec<Frame>, usize) {
    let mut frames = Vec::new();
    if sample.user_lost {
        frames.push(Frame::unknown(None, false));
        frames[0].function = LOST_STACK.to_string();
    }
    let mut exact_frames = 0;
    for (depth, location) in sample.user.iter().enumerate().rev() {
        let before = frames.len();
        match (location, user_names.get(location)) {
            (UserLocation::File { path, .. }, Some(names)) => {
                frames.extend(names.iter().map(|name| Frame {
                    function: name.clone(),
                    module: Some(path.to_string()),
                    kernel: false,
                }))
            }
            (UserLocation::File { path, .. }, None) => {
                frames.push(Frame::unknown(Some(path.to_string()), false))
            }
            (UserLocation::Special(name), _) => frames.push(Frame {
                function: name.to_string(),
                module: None,
                kernel: false,
            }),
            (UserLocation::Jit(name), _) => frames.push(Frame {
                function: name.to_string(),
                module: Some("[jit]".to_string()),
                kernel: false,
            }),
            (UserLocation::Unknown, _) => frames.push(Frame::unknown(None, false)),
        }
        if depth < sample.exact_depth {
            exact_frames += frames.len() - before;
        }
    }
    for (depth, &ip) in sample.kernel.iter().enumerate().rev() {
        match kernel_names.get(&lookup_address(ip, depth)) {
            Some(names) => frames.extend(names.iter().map(|name| Frame {
                function: name.clone(),
                module: Some("kernel".to_string()),
                kernel: true,
            })),
            None => frames.push(Frame::unknown(Some("kernel".to_string()), true)),
        }
    }
    end_at_watched_function(&mut frames, sample.read, kernel_functions);
    (frames, exact_frames)
}

/// A kernel-source stack ends in the watched function. An fentry program
/// takes its stack from inside itself, so the program and its trampoline
/// come inside the function (named after whatever kernel symbol precedes
/// BPF memory): they are cut off.
fn end_at_watched_function(frames: &mut Vec<Frame>, read: ClockRead, kernel_functions: &[String]) {
    if read.event != profiler_common::sources::kernel::FUNCTION {
        return;
    }
    let call = read.call(kernel_functions);
    if let Some(innermost) = frames
        .iter()
        .rposition(|frame| frame.kernel && frame.function == call)
    {
        frames.truncate(innermost + 1);
    }
}

/// The root frame of a process's stacks: its command, `swapper` for the
/// idle tasks (PID 0, as perf names them), `[interrupt]` for reads in
/// interrupt context, `[pid N]` when unknown.
pub fn process_name(pid: u32, comm: Option<&str>) -> String {
    match (pid, comm) {
        (INTERRUPT_TGID, _) => interrupt::ROOT.to_string(),
        (_, Some(comm)) => comm.to_string(),
        (0, None) => "swapper".to_string(),
        (_, None) => format!("[pid {pid}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two processes running the same code at different addresses
    /// normalize to one shared stack; a process gone keeps its name.
    #[test]
    fn stacks_normalize_to_one_shared_copy_and_gone_processes_keep_their_name() {
        let mut tracker = ProcTracker::start().unwrap();
        let pid = std::process::id();
        tracker.snapshot_pid(pid);
        let here = stacks_normalize_to_one_shared_copy_and_gone_processes_keep_their_name
            as *const () as u64;
        let raw = |tgid, count| RawSample {
            tgid,
            start_time: 0,
            read: ClockRead {
                event: profiler_common::sources::syscall::TIME,
                clock_id: profiler_common::CLOCK_ID_NONE,
            },
            user_stack: RawStack::Ips(vec![here, here + 1]),
            kernel_stack: RawStack::NotCaptured,
            caller_ip: 0,
            wrapper_caller_ip: 0,
            count,
        };
        let mut normalizer = Normalizer::default();
        let first = normalizer.normalize(&[raw(pid, 3)], &mut tracker);
        let second = normalizer.normalize(&[raw(pid, 4)], &mut tracker);
        let (a, b) = (&first[0].0, &second[0].0);
        assert_eq!((first[0].1, second[0].1), (3, 4));
        assert!(Arc::ptr_eq(&a.user, &b.user));
        assert!(Arc::ptr_eq(&a.process, &b.process));
        assert!(
            matches!(&a.user[0], UserLocation::File { .. }),
            "{:?}",
            a.user
        );
        let gone = a.clone().of_gone_process();
        assert_eq!((gone.pid, gone.start_time), (0, 0));
        assert_eq!(gone.process.comm, a.process.comm);
        assert_eq!(gone.user, a.user);
        let unnamed = NormalizedSample {
            process: Arc::new(ProcessIdentity::default()),
            ..a.clone()
        };
        assert_eq!(
            unnamed.of_gone_process().process.comm.as_deref(),
            Some(format!("[pid {pid}]").as_str())
        );
    }

    #[test]
    fn return_addresses_step_back_into_the_call() {
        assert_eq!(lookup_address(0x1000, 0), 0x1000);
        assert_eq!(lookup_address(0x1000, 1), 0xfff);
        assert_eq!(lookup_address(0, 3), 0);
    }

    #[test]
    fn skipped_caller_is_put_back_once() {
        let sample = |stack: Vec<u64>, caller_ip, wrapper_caller_ip| RawSample {
            tgid: 1,
            start_time: 0,
            read: ClockRead {
                event: 0,
                clock_id: 0,
            },
            user_stack: RawStack::Ips(stack),
            kernel_stack: RawStack::NotCaptured,
            caller_ip,
            wrapper_caller_ip,
            count: 1,
        };
        assert_eq!(user_ips(&sample(vec![10, 30], 20, 0)), vec![10, 20, 30]);
        assert_eq!(user_ips(&sample(vec![10, 20, 30], 20, 0)), vec![10, 20, 30]);
        assert_eq!(user_ips(&sample(vec![10, 30], 0, 0)), vec![10, 30]);
        assert_eq!(user_ips(&sample(vec![], 20, 0)), Vec::<u64>::new());
        // vdso, glibc wrapper, [skipped caller], main.
        assert_eq!(user_ips(&sample(vec![1, 2, 4], 0, 3)), vec![1, 2, 3, 4]);
        // vdso prologue: glibc and its caller both skipped.
        assert_eq!(user_ips(&sample(vec![1, 4], 2, 3)), vec![1, 2, 3, 4]);
        assert_eq!(user_ips(&sample(vec![1, 2, 3, 4], 2, 3)), vec![1, 2, 3, 4]);
    }

    #[test]
    fn vdso_image_is_a_symbolizable_elf_in_memory() {
        let image = VdsoImage::dump().expect("this process has a vDSO");
        let path = image.path();
        let target = std::fs::read_link(&path).unwrap();
        assert!(
            target
                .to_string_lossy()
                .starts_with("/memfd:clockprof-vdso"),
            "{target:?}"
        );
        let symbolizer = Symbolizer::new();
        let source = BlazeSource::Elf(Elf::new(&path));
        // Symbolize every offset of the image: clock_gettime lives somewhere in it.
        let size = std::fs::metadata(&path).unwrap().len();
        let offsets: Vec<u64> = (0..size).step_by(16).collect();
        let names: Vec<String> = symbolizer
            .symbolize(&source, Input::FileOffset(&offsets))
            .unwrap()
            .iter()
            .filter_map(|s| names_of(s))
            .flatten()
            .collect();
        assert!(
            names.iter().any(|n| n.contains("clock_gettime")),
            "{names:?}"
        );
        drop(image);
        assert!(!path.exists());
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

    #[test]
    fn kernel_stacks_end_in_the_watched_function() {
        let kernel_functions = ["ktime_get".to_string()];
        let frame = |function: &str, kernel| Frame {
            function: function.into(),
            module: None,
            kernel,
        };
        let read = ClockRead {
            event: profiler_common::sources::kernel::FUNCTION,
            clock_id: 0,
        };
        let mut frames = vec![
            frame("main", false),
            frame("do_syscall_64", true),
            frame("ktime_get", true),
            frame("__init_scratch_end", true),
            frame("__init_scratch_end", true),
        ];
        end_at_watched_function(&mut frames, read, &kernel_functions);
        let names: Vec<&str> = frames.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(names, ["main", "do_syscall_64", "ktime_get"]);
        // A syscall's kernel frames, or a stack without the function, stay.
        let mut other = vec![frame("main", false), frame("x", true)];
        end_at_watched_function(&mut other, read, &kernel_functions);
        assert_eq!(other.len(), 2);
    }

    #[test]
    fn kernel_frames_are_suffixed() {
        let frame = Frame {
            function: "do_syscall_64".into(),
            module: None,
            kernel: true,
        };
        assert_eq!(frame.folded_name(), "do_syscall_64_[k]");
        assert_eq!(Frame::unknown(None, false).folded_name(), "[unknown]");
    }
}

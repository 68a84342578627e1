//! `StackSymbolizer`: names the distinct locations of normalized samples
//! once, and builds each sample's frames, outermost first.

use std::cell::{OnceCell, RefCell};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use blazesym::symbolize::Symbolizer;

use super::debuginfo::{self, DebugInfo};
use super::frames::{
    Frame, NormalizedSample, StackState, SymbolizedSample, UserLocation, LOST_STACK,
};
use super::interrupt;
use super::lookup::{lookup_address, NameTable};
use super::normalize::process_name;
use super::resolve::{symbolize_files, symbolize_kernel};
use super::vdso::VdsoImage;
use crate::proc_tracker::ProcTracker;
use crate::sources::ClockRead;

/// How long blazesym may keep files whose processes are gone: it holds a
/// descriptor, a mapping and the parsed data of every file it read, and
/// evicts none, so a long run starts it afresh this long after the first
/// file it holds was closed by the tracker. Releasing sooner would parse the
/// host's common libraries again at every process exit.
const RELEASE_AFTER: Duration = Duration::from_secs(20);

/// One per run: blazesym keeps every file it parsed (and checks its device,
/// inode, size and mtime before reusing it), so the live view's drill-ins and
/// exports do not parse the same ELF and DWARF again; the vDSO image is
/// dumped once. A long run lets go of the files of exited processes with
/// `release_closed_files`.
pub struct StackSymbolizer {
    blazesym: Symbolizer,
    /// Since when blazesym has held files the tracker closed.
    holds_closed_files_since: Option<Instant>,
    vdso: OnceCell<Option<VdsoImage>>,
    /// Separate debug files and debuginfod, for what files leave unnamed.
    debuginfo: RefCell<DebugInfo>,
    /// The session's kernel functions, by slot: a kernel stack is cut at
    /// the one its event names.
    kernel_functions: Vec<String>,
}

impl StackSymbolizer {
    /// For a daemon that names every read's samples and must not wait:
    /// debuginfod fetches on a worker of its own.
    pub fn for_daemon(kernel_functions: Vec<String>) -> Self {
        Self::with_debuginfo(kernel_functions, DebugInfo::from_env_in_background())
    }

    pub fn new(kernel_functions: Vec<String>) -> Self {
        Self::with_debuginfo(kernel_functions, DebugInfo::from_env())
    }

    fn with_debuginfo(kernel_functions: Vec<String>, debuginfo: DebugInfo) -> Self {
        StackSymbolizer {
            blazesym: new_blazesym(),
            holds_closed_files_since: None,
            vdso: OnceCell::new(),
            debuginfo: RefCell::new(debuginfo),
            kernel_functions,
        }
    }

    /// The tracker closed `closed` files (`ProcTracker::close_unmapped_files`):
    /// blazesym's copies of them, and the separate debug files, are let go
    /// once they have been held `RELEASE_AFTER`, so descriptors, mappings
    /// and parsed debug information follow the processes that run.
    pub fn release_closed_files(&mut self, closed: usize) {
        let now = Instant::now();
        if closed > 0 && self.holds_closed_files_since.is_none() {
            self.holds_closed_files_since = Some(now);
        }
        if self
            .holds_closed_files_since
            .is_some_and(|since| now.duration_since(since) >= RELEASE_AFTER)
        {
            self.blazesym = new_blazesym();
            self.debuginfo.get_mut().release_debug_files();
            self.holds_closed_files_since = None;
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
                    interposers: sample.process.interposers.clone(),
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

fn new_blazesym() -> Symbolizer {
    Symbolizer::builder()
        .enable_code_info(false)
        .enable_inlined_fns(true)
        .set_debug_dirs(Some(debuginfo::debug_dirs()))
        .build()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_stacks_end_in_the_watched_function() {
        let kernel_functions = ["ktime_get".to_string()];
        let frame = |function: &str, kernel| Frame {
            function: function.into(),
            module: None,
            kernel,
        };
        let read = ClockRead::new(profiler_common::sources::kernel::FUNCTION, 0);
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
}

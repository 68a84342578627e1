//! Symbolized stacks for the live view, paid for only when looked at.
//!
//! Drained samples carry their stacks normalized (file and offset), the
//! same for every process of a program, so each distinct stack is named
//! once, the first time someone drills into a process with it or exports it.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use profiler_common::INTERRUPT_TGID;

use super::model::{KeyCount, Stages};
use crate::sources::ClockRead;
use crate::symbolize::{Frame, NormalizedSample, StackState, UserLocation};

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SymbolizedStack {
    /// Outermost first: user frames, then kernel frames.
    pub frames: Vec<Frame>,
    pub state: StackState,
    /// SymbolizedSample::exact_frames.
    pub exact_frames: usize,
}

impl SymbolizedStack {
    /// The frame to show for the stack: the innermost user function with a
    /// name. The C library's clock functions are the same in every stack, so
    /// their caller is what tells stacks apart. Without any name, the
    /// innermost frame says why (`[lost stack]`, `[unknown]`).
    pub fn hot_frame(&self) -> Option<usize> {
        let named = |f: &Frame| !f.function.starts_with('[');
        let user = |f: &Frame| named(f) && !f.kernel;
        let outside_libc = |f: &Frame| f.module.as_deref().is_none_or(|m| !is_c_library(m));
        self.frames
            .iter()
            .rposition(|f| user(f) && outside_libc(f))
            .or_else(|| self.frames.iter().rposition(user))
            .or_else(|| self.frames.iter().rposition(named))
            .or_else(|| self.frames.len().checked_sub(1))
    }
}

fn is_c_library(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or(path);
    ["libc.so", "libc-", "ld-linux", "libpthread"]
        .iter()
        .any(|prefix| file.starts_with(prefix))
}

/// What decides a sample's frames: its stacks, the kernel function read (a
/// kernel function's stack is cut at that function) and whether it was read in
/// interrupt context. Not the process: normalized stacks mean the same in
/// every process.
type StackIdentity = (ClockRead, Arc<[UserLocation]>, bool, Arc<[u64]>, bool);

fn identity(key: &NormalizedSample) -> StackIdentity {
    let cut_at = match key.read.event {
        profiler_common::sources::kernel::FUNCTION => key.read,
        _ => ClockRead::new(0, 0),
    };
    (
        cut_at,
        Arc::clone(&key.user),
        key.user_lost,
        Arc::clone(&key.kernel),
        key.pid == INTERRUPT_TGID,
    )
}

#[derive(Default)]
pub struct StackCache {
    symbolized: HashMap<StackIdentity, Arc<SymbolizedStack>>,
    /// One allocation per distinct stack, so that keys with equal frames
    /// share it and merging them is comparing pointers.
    distinct: HashSet<Arc<SymbolizedStack>>,
}

impl StackCache {
    /// Symbolizes the stacks of `keys` not symbolized before.
    pub fn resolve<'a>(
        &mut self,
        keys: impl IntoIterator<Item = &'a NormalizedSample>,
        stages: &mut impl Stages,
    ) {
        let mut seen = HashSet::new();
        let missing: Vec<NormalizedSample> = keys
            .into_iter()
            .filter(|key| {
                !self.symbolized.contains_key(&identity(key)) && seen.insert(identity(key))
            })
            .cloned()
            .collect();
        if missing.is_empty() {
            return;
        }
        let symbolized = stages.name(&missing);
        for (key, sample) in missing.iter().zip(symbolized) {
            // Shown on the terminal: a symbol's control characters, escaped.
            let frames = sample
                .frames
                .into_iter()
                .map(|mut frame| {
                    frame.function =
                        crate::host::printable::printable(&frame.function).into_owned();
                    frame
                })
                .collect();
            let stack = SymbolizedStack {
                frames,
                state: sample.state,
                exact_frames: sample.exact_frames,
            };
            self.insert(key, stack);
        }
    }

    fn insert(&mut self, key: &NormalizedSample, stack: SymbolizedStack) {
        let stack = match self.distinct.get(&stack) {
            Some(known) => Arc::clone(known),
            None => {
                let stack = Arc::new(stack);
                self.distinct.insert(Arc::clone(&stack));
                stack
            }
        };
        self.symbolized.insert(identity(key), stack);
    }

    pub fn get(&self, key: &NormalizedSample) -> Option<&Arc<SymbolizedStack>> {
        self.symbolized.get(&identity(key))
    }
}

/// One stack of a process, as the user sees it: keys whose stacks symbolize
/// to the same frames are merged.
#[derive(Clone, Debug)]
pub struct StackRow {
    /// Stable while the view runs, so the selection can follow the stack.
    pub id: u64,
    pub read: ClockRead,
    pub stack: Arc<SymbolizedStack>,
    pub delta: u64,
    pub total: u64,
}

/// The symbolized stacks of `keys` (one process's), most reads in the last
/// interval first, then most reads overall. Keys not resolved yet are left out.
pub fn process_stacks(keys: &[KeyCount], cache: &StackCache) -> Vec<StackRow> {
    let mut rows: Vec<StackRow> = Vec::new();
    // Equal frames share one allocation in the cache (see `distinct`).
    let mut index: HashMap<(ClockRead, *const SymbolizedStack), usize> = HashMap::new();
    for count in keys {
        let Some(stack) = cache.get(&count.key) else {
            continue;
        };
        let read = count.key.read;
        let merge_key = (read, Arc::as_ptr(stack));
        let row = *index.entry(merge_key).or_insert_with(|| {
            let mut hasher = DefaultHasher::new();
            merge_key.hash(&mut hasher);
            rows.push(StackRow {
                id: hasher.finish(),
                read,
                stack: Arc::clone(stack),
                delta: 0,
                total: 0,
            });
            rows.len() - 1
        });
        crate::aggregate::add_count(&mut rows[row].delta, count.delta);
        crate::aggregate::add_count(&mut rows[row].total, count.total);
    }
    rows.sort_by(|a, b| {
        b.delta
            .cmp(&a.delta)
            .then(b.total.cmp(&a.total))
            .then(a.id.cmp(&b.id))
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::test_key;

    fn frame(function: &str, module: &str, kernel: bool) -> Frame {
        Frame {
            function: function.into(),
            module: Some(module.into()),
            kernel,
        }
    }

    fn stack(frames: Vec<Frame>) -> SymbolizedStack {
        SymbolizedStack {
            frames,
            state: StackState::Complete,
            exact_frames: 0,
        }
    }

    #[test]
    fn hot_frame_is_the_innermost_named_user_function_outside_libc() {
        let syscall = stack(vec![
            frame("main", "/bin/app", false),
            frame("fixture_spin", "/bin/app", false),
            frame("do_syscall_64", "kernel", true),
        ]);
        assert_eq!(syscall.hot_frame(), Some(1));
        let via_libc = stack(vec![
            frame("main", "/bin/app", false),
            frame("poll_time", "/bin/app", false),
            frame(
                "__clock_gettime",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                false,
            ),
            frame("[unknown]", "/bin/app", false),
        ]);
        assert_eq!(via_libc.hot_frame(), Some(1));
        let only_libc = stack(vec![frame(
            "__clock_gettime",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            false,
        )]);
        assert_eq!(only_libc.hot_frame(), Some(0));
        let kernel_only = stack(vec![
            frame("[unknown]", "kernel", false),
            frame("worker_thread", "kernel", true),
            frame("ktime_get", "kernel", true),
        ]);
        assert_eq!(kernel_only.hot_frame(), Some(2));
        let lost = stack(vec![frame("[lost stack]", "", false)]);
        assert_eq!(lost.hot_frame(), Some(0));
        assert_eq!(stack(vec![]).hot_frame(), None);
    }

    fn key(user: u64, clock_id: i32) -> NormalizedSample {
        test_key(
            1,
            user,
            clock_id,
            profiler_common::sources::syscall::CLOCK_GETTIME,
        )
    }

    #[test]
    fn merges_equal_frames_and_sorts_by_recent_reads() {
        let mut cache = StackCache::default();
        let hot = || stack(vec![frame("hot", "/bin/app", false)]);
        // Two call sites in `hot` have two stack ids but the same frames.
        cache.insert(&key(1, 1), hot());
        cache.insert(&key(2, 1), hot());
        cache.insert(&key(3, 1), stack(vec![frame("warm", "/bin/app", false)]));
        let count = |key, delta, total| KeyCount { key, delta, total };
        let keys = [
            count(key(1, 1), 10, 100),
            count(key(2, 1), 5, 50),
            count(key(3, 1), 20, 20),
            // Another clock from the same stack is another row.
            count(key(3, 0), 0, 7),
            // Not symbolized yet.
            count(key(4, 1), 99, 99),
        ];
        let rows = process_stacks(&keys, &cache);
        let summary: Vec<(&str, i32, u64, u64)> = rows
            .iter()
            .map(|r| {
                (
                    r.stack.frames[0].function.as_str(),
                    r.read.clock_id,
                    r.delta,
                    r.total,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![("warm", 1, 20, 20), ("hot", 1, 15, 150), ("warm", 0, 0, 7)]
        );
        assert_eq!(process_stacks(&keys, &cache)[1].id, rows[1].id);
    }
}

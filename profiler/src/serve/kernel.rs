//! The one place `serve` reads the kernel: what was counted since the
//! previous read. The kernel maps are cumulative, so this diffs their counts
//! per key; when `Session::drain()` (counts since the last drain, maps
//! cleared) lands, `read` becomes a call to it.

use std::collections::HashMap;

use anyhow::Result;
use profiler_common::CountKey;

use crate::collect::{self, Collected, Counts, LostCounts, RawStack};
use crate::session::Session;

#[derive(Default)]
pub struct SinceLastRead {
    /// Each key's cumulative count at the last read.
    seen: HashMap<CountKey, u64>,
    lost: LostCounts,
}

impl SinceLastRead {
    /// The samples and losses counted since the previous call (everything
    /// so far on the first).
    pub fn read(&mut self, session: &Session) -> Result<Collected> {
        let ebpf = session.probes.ebpf();
        let Counts { counts, lost } = collect::collect_counts(ebpf)?;
        let mut stacks: HashMap<i32, RawStack> = HashMap::new();
        let mut stack = |id: i32| -> Result<RawStack> {
            if let Some(stack) = stacks.get(&id) {
                return Ok(stack.clone());
            }
            let read = collect::stack(ebpf, id)?;
            stacks.insert(id, read.clone());
            Ok(read)
        };
        let mut samples = Vec::new();
        for (key, total) in counts {
            let before = self.seen.insert(key, total).unwrap_or(0);
            let new = total.saturating_sub(before);
            if new == 0 {
                continue;
            }
            let user = stack(key.user_stack_id)?;
            let kernel = stack(key.kernel_stack_id)?;
            samples.push(collect::sample(&key, user, kernel, new));
        }
        let since = |now: u64, then: u64| now.saturating_sub(then);
        let lost_now = LostCounts {
            events: since(lost.events, self.lost.events),
            user_stacks: since(lost.user_stacks, self.lost.user_stacks),
            kernel_stacks: since(lost.kernel_stacks, self.lost.kernel_stacks),
            followed_processes: since(lost.followed_processes, self.lost.followed_processes),
        };
        self.lost = lost;
        Ok(Collected {
            samples,
            lost: lost_now,
        })
    }
}

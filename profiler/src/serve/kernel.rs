//! The one place `serve` reads the kernel: what was counted since the
//! previous read, symbolized. The kernel maps are cumulative, so this diffs
//! their counts per key; when `Session::drain()` (counts since the last
//! drain, maps cleared, stacks normalized) lands, the body of `read` becomes
//! a call to it and to `StackSymbolizer::name`.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Result;
use profiler_common::CountKey;

use crate::collect::{self, Counts, LostCounts, RawStack};
use crate::session::Session;
use crate::symbolize::{StackSymbolizer, SymbolizedSample};

pub struct SinceLastRead {
    /// One for the run: blazesym keeps what it parsed.
    symbolizer: StackSymbolizer,
    /// Each key's cumulative count at the last read.
    seen: HashMap<CountKey, u64>,
    lost: LostCounts,
    lost_mapping_records: u64,
}

/// What one read brought.
pub struct Read {
    /// When the kernel's counts were read.
    pub at: Instant,
    pub samples: Vec<SymbolizedSample>,
    pub lost: LostCounts,
    /// Mapping records the side-band dropped since the last read.
    pub lost_mapping_records: u64,
}

impl SinceLastRead {
    pub fn new(session: &Session) -> SinceLastRead {
        SinceLastRead {
            symbolizer: StackSymbolizer::new(session.kernel_functions.clone()),
            seen: HashMap::new(),
            lost: LostCounts::default(),
            lost_mapping_records: session.tracker.lost_records(),
        }
    }

    /// The samples and losses counted since the previous call (everything
    /// so far on the first).
    pub fn read(&mut self, session: &mut Session) -> Result<Read> {
        let ebpf = session.probes.ebpf();
        let Counts { counts, lost } = collect::collect_counts(ebpf)?;
        let at = Instant::now();
        let mut stacks: HashMap<i32, RawStack> = HashMap::new();
        let mut stack = |id: i32| -> Result<RawStack> {
            if let Some(stack) = stacks.get(&id) {
                return Ok(stack.clone());
            }
            let read = collect::stack(ebpf, id)?;
            stacks.insert(id, read.clone());
            Ok(read)
        };
        let mut raw = Vec::new();
        for (key, total) in counts {
            let before = self.seen.insert(key, total).unwrap_or(0);
            let new = total.saturating_sub(before);
            if new == 0 {
                continue;
            }
            let user = stack(key.user_stack_id)?;
            let kernel = stack(key.kernel_stack_id)?;
            raw.push(collect::sample(&key, user, kernel, new));
        }
        let since = |now: u64, then: u64| now.saturating_sub(then);
        let lost_now = LostCounts {
            events: since(lost.events, self.lost.events),
            user_stacks: since(lost.user_stacks, self.lost.user_stacks),
            kernel_stacks: since(lost.kernel_stacks, self.lost.kernel_stacks),
            followed_processes: since(lost.followed_processes, self.lost.followed_processes),
        };
        self.lost = lost;
        // The mappings up to now, before the stacks are named.
        session.tracker.drain();
        let records = session.tracker.lost_records();
        let lost_mapping_records = since(records, self.lost_mapping_records);
        self.lost_mapping_records = records;
        Ok(Read {
            at,
            samples: self.symbolizer.symbolize(&raw, &mut session.tracker),
            lost: lost_now,
            lost_mapping_records,
        })
    }
}

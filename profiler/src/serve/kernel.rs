//! The one place `serve` reads the kernel: what was counted since the
//! previous read, named. `Session::drain()` flips the maps' generation,
//! drains and clears the other one, and normalizes the user stacks while
//! the processes' mappings are known; this names the frames (one symbolizer
//! for the run) for the metrics, the profile windows and the pushes.

use std::time::Instant;

use anyhow::Result;

use crate::collect::LostCounts;
use crate::session::Session;
use crate::symbolize::{StackSymbolizer, SymbolizedSample};

pub struct SinceLastRead {
    /// One for the run: blazesym keeps what it parsed.
    symbolizer: StackSymbolizer,
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
            symbolizer: StackSymbolizer::for_daemon(session.kernel_functions.clone()),
            lost_mapping_records: session.tracker.lost_records(),
        }
    }

    /// The samples and losses counted since the previous call (everything
    /// so far on the first).
    pub fn read(&mut self, session: &mut Session) -> Result<Read> {
        let drained = session.drain()?;
        let at = Instant::now();
        let records = session.tracker.lost_records();
        let lost_mapping_records = records.saturating_sub(self.lost_mapping_records);
        self.lost_mapping_records = records;
        let samples = self.symbolizer.name(
            drained
                .samples
                .iter()
                .map(|(sample, count)| (sample, *count)),
            &mut session.tracker,
        );
        // Named: what only the processes gone and these normalized samples
        // held is needed no more.
        drop(drained.samples);
        let closed = session.release_unreferenced();
        self.symbolizer.release_closed_files(closed);
        Ok(Read {
            at,
            samples,
            lost: drained.lost,
            lost_mapping_records,
        })
    }
}

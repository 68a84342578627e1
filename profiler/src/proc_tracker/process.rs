//! One process as the tracker knows it: its name, its executable mappings,
//! and what /proc said of it while it lived. Kept by `lives` (one per life of
//! a PID) and filled in by `address_space` from the side-band's records.

use std::collections::BTreeMap;

use crate::host::interposer::Interposer;
use crate::host::maps::Mapping;

#[derive(Debug, Clone, Default)]
pub(super) struct Process {
    pub(super) comm: String,
    pub(super) mappings: BTreeMap<u64, Mapping>,
    pub(super) exited: bool,
    /// Exited, and seen so by one `Model::forget_exited` already: the next
    /// one forgets it.
    pub(super) retiring: bool,
    /// The user the process runs as, read while it lived.
    pub(super) owner: Option<u32>,
    /// Its cgroup path (`/system.slice/x.service`), read while it lived.
    pub(super) cgroup: Option<String>,
    /// The libraries it maps that take its clock calls over, noted as
    /// they were mapped (OpenFiles::note_interposer).
    pub(super) interposers: std::sync::Arc<[Interposer]>,
}

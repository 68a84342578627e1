//! Names processes on screen: their command, and the container or cgroup they
//! run in, as the process tracker read it while the process lived (host/container.rs).

use std::collections::HashMap;

use super::model::Label;
use crate::symbolize::ProcessIdentity;

/// Remembers each listed process's group name, so it is worked out once per
/// process and not once per refresh.
#[derive(Default)]
pub struct Labeler {
    /// Group by pid, with the refresh that last asked for it.
    groups: HashMap<u32, (Option<String>, u64)>,
    refresh: u64,
}

impl Labeler {
    pub fn label(&mut self, pid: u32, identity: &ProcessIdentity) -> Label {
        let refresh = self.refresh;
        let entry = self.groups.entry(pid).or_insert_with(|| {
            let group = identity
                .cgroup
                .as_deref()
                .and_then(crate::host::container::short_name);
            (group, refresh)
        });
        entry.1 = refresh;
        Label {
            comm: crate::host::printable::printable(&crate::symbolize::process_name(
                pid,
                identity.comm.as_deref(),
            ))
            .into_owned(),
            group: entry.0.clone(),
            interposer: identity.interposers.first().map(|i| {
                let name = i.library.rsplit('/').next().unwrap_or(&i.library);
                crate::host::printable::printable(name).into_owned()
            }),
        }
    }

    /// Forgets processes no longer listed: their pids may be reused by
    /// processes in other groups.
    pub fn end_refresh(&mut self) {
        let refresh = self.refresh;
        self.groups.retain(|_, (_, asked)| *asked == refresh);
        self.refresh += 1;
    }
}

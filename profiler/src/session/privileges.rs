//! Checks, before anything is loaded, that we may load eBPF and open perf events,
//! so a user without them gets one sentence naming what is missing.

use anyhow::{bail, Result};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set of this process, from /proc/self/status.
pub fn effective_capabilities() -> u64 {
    procfs::process::Process::myself()
        .and_then(|me| me.status())
        .map_or(0, |status| status.capeff)
}

/// Names the capabilities `caps` lacks for loading and attaching our programs:
/// CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN which implies both.
pub fn missing_capabilities(caps: u64) -> Vec<&'static str> {
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|&(cap, _)| !has(cap))
        .map(|(_, name)| name)
        .collect()
}

pub fn require() -> Result<()> {
    let missing = missing_capabilities(effective_capabilities());
    if !missing.is_empty() {
        bail!(
            "clockprof needs root or the capabilities CAP_BPF and CAP_PERFMON, and this process lacks {}; run it with sudo",
            missing.join(" and ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_missing() {
        assert_eq!(missing_capabilities(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_capabilities(1 << CAP_BPF), vec!["CAP_PERFMON"]);
        assert!(missing_capabilities((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert!(missing_capabilities(1 << CAP_SYS_ADMIN).is_empty());
    }

    /// The tests run as root, whose effective set holds CAP_SYS_ADMIN.
    #[test]
    fn reads_our_own_capabilities() {
        assert_ne!(effective_capabilities() & (1 << CAP_SYS_ADMIN), 0);
    }
}

//! Facts about this host that several stages read: the online CPUs (one perf
//! event each), this process's vDSO (the same image every process of this
//! kernel maps), and whether we see the host's PIDs.

use std::ops::Range;

use anyhow::{anyhow, Result};

/// The online CPUs (aya parses /sys/devices/system/cpu/online).
pub fn online_cpus() -> Result<Vec<u32>> {
    aya::util::online_cpus()
        .map_err(|(path, err)| anyhow!("could not read the online CPUs from {path}: {err}"))
}

/// The address range of this process's [vdso] mapping.
pub fn own_vdso() -> Result<Range<u64>> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    maps.lines()
        .filter_map(crate::host::maps::parse_maps_line)
        .find(|line| line.mapping.path == "[vdso]")
        .map(|line| line.mapping.start..line.mapping.end)
        .ok_or_else(|| anyhow!("this process has no [vdso] mapping"))
}

/// This process's vDSO, copied: the image every process of this kernel maps.
pub fn own_vdso_image() -> Option<Vec<u8>> {
    let range = own_vdso().ok()?;
    let mut image = vec![0u8; usize::try_from(range.end.checked_sub(range.start)?).ok()?];
    let mem = std::fs::File::open("/proc/self/mem").ok()?;
    std::os::unix::fs::FileExt::read_exact_at(&mem, &mut image, range.start).ok()?;
    Some(image)
}

/// The inode of the initial PID namespace, fixed by the kernel
/// (PROC_PID_INIT_INO), so it can be recognised from inside another one.
const INITIAL_PID_NAMESPACE_INODE: u64 = 0xEFFF_FFFC;

/// Refuses to run outside the host's PID namespace. The eBPF programs see
/// and filter by the host's PIDs while we name processes by ours, so a
/// recording there would silently count nothing of the processes asked for.
pub fn require_host_pid_namespace() -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata("/proc/self/ns/pid").map(|m| m.ino());
    // NSpid lists one PID per namespace level when /proc is the host's.
    let levels = procfs::process::Process::myself()
        .and_then(|me| me.status())
        .ok()
        .and_then(|status| Some(status.nspid?.len()));
    match (own, levels) {
        (Ok(INITIAL_PID_NAMESPACE_INODE), None | Some(1)) => Ok(()),
        _ => Err(anyhow!(
            "clockprof must run in the host's PID namespace (it runs in a container's or another \
             nested one, where its eBPF programs would see other PIDs than it does and count \
             nothing); run it on the host or with the host's PIDs (e.g. `docker run --pid=host`)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_online_cpus() {
        assert!(!online_cpus().unwrap().is_empty());
    }

    #[test]
    fn the_tests_run_in_the_host_pid_namespace() {
        require_host_pid_namespace().unwrap();
    }

    #[test]
    fn finds_our_vdso() {
        let vdso = own_vdso().unwrap();
        assert!(vdso.end > vdso.start);
    }
}

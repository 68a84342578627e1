//! Facts about this host that several stages read: the online CPUs (one perf
//! event each), this process's vDSO (the same image every process of this
//! kernel maps), and whether we see the host's PIDs.

use std::ops::Range;

use anyhow::{anyhow, Context, Result};

/// The online CPUs, from /sys/devices/system/cpu/online.
pub fn online_cpus() -> Result<Vec<u32>> {
    let path = "/sys/devices/system/cpu/online";
    let list = std::fs::read_to_string(path).context("could not read the online CPUs")?;
    parse_cpu_list(&list).with_context(|| format!("could not parse {path}"))
}

/// Parses a kernel CPU list such as "0-3,6,8-9".
fn parse_cpu_list(list: &str) -> Result<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        cpus.extend(first.parse::<u32>()?..=last.parse::<u32>()?);
    }
    Ok(cpus)
}

/// The address range of this process's [vdso] mapping.
pub fn own_vdso() -> Result<Range<u64>> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    maps.lines()
        .filter_map(crate::proc_tracker::parse_maps_line)
        .find(|line| line.mapping.path == "[vdso]")
        .map(|line| line.mapping.start..line.mapping.end)
        .ok_or_else(|| anyhow!("this process has no [vdso] mapping"))
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
    fn parses_cpu_lists() {
        assert_eq!(parse_cpu_list("0-2,5\n").unwrap(), vec![0, 1, 2, 5]);
        assert_eq!(parse_cpu_list("0").unwrap(), vec![0]);
        assert!(parse_cpu_list("x").is_err());
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

//! Facts about this host that several stages read: the online CPUs (one perf
//! event each) and this process's vDSO (the same image every process of this
//! kernel maps).

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
        .find(|line| line.ends_with("[vdso]"))
        .and_then(|line| {
            let (start, end) = line.split_whitespace().next()?.split_once('-')?;
            Some(u64::from_str_radix(start, 16).ok()?..u64::from_str_radix(end, 16).ok()?)
        })
        .ok_or_else(|| anyhow!("this process has no [vdso] mapping"))
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
    fn finds_our_vdso() {
        let vdso = own_vdso().unwrap();
        assert!(vdso.end > vdso.start);
    }
}

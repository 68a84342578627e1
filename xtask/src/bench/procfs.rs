//! The two numbers the bench reads about a tracer daemon, straight from /proc.

use std::fs;

use anyhow::{anyhow, Context, Result};

/// User + system CPU time of the whole process (all threads), in milliseconds.
pub fn cpu_time_ms(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("could not read /proc/{pid}/stat"))?;
    let ticks = parse_cpu_ticks(&stat).ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(ticks as f64 * 1000.0 / ticks_per_sec.max(1) as f64)
}

/// utime + stime (fields 14 and 15). Fields are counted after the last ')', since
/// comm (field 2) may itself contain spaces and parentheses.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(11); // field 3 is index 0
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Peak resident set size (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("could not read /proc/{pid}/status"))?;
    parse_vm_hwm_kib(&status).ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))
}

fn parse_vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_survive_odd_comm() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(12));
    }

    #[test]
    fn vm_hwm_parses() {
        let status =
            "Name:\tbpftrace\nVmPeak:\t  9000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t 50000 kB\n";
        assert_eq!(parse_vm_hwm_kib(status), Some(51234));
    }
}

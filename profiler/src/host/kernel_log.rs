//! The kernel's log (/dev/kmsg), read for what it says of the clocksource:
//! why the vDSO stopped reading it (`clocksource: Marking clocksource 'tsc'
//! as unstable because the skew is too large`) and when the kernel switched
//! to another. Read without blocking, a bounded number of records at a
//! time; it needs CAP_SYSLOG, and without it nothing is said.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

/// One line of the kernel log about the clocksource.
#[derive(Clone, Debug, PartialEq)]
pub struct ClocksourceLine {
    /// When it was logged, in seconds since boot (CLOCK_MONOTONIC).
    pub seconds: f64,
    /// The message, made printable.
    pub message: String,
}

impl ClocksourceLine {
    /// `[12.345678] clocksource: ...`, as dmesg shows it.
    pub fn quoted(&self) -> String {
        format!("[{:.6}] {}", self.seconds, self.message)
    }

    /// Whether it says why the vDSO lost the clocksource (the watchdog's
    /// verdict or a switch away from it), not a registration.
    pub fn is_a_change(&self) -> bool {
        self.message.contains("unstable") || self.message.contains("Switched to clocksource")
    }
}

/// Records read per call at most: the log holds a few hundred KiB.
const MAX_RECORDS: usize = 20_000;
/// Lines kept: the latest ones matter.
const MAX_LINES: usize = 32;

/// Every clocksource change the kernel log still holds (at most the latest
/// MAX_LINES); none when the log cannot be read.
pub fn clocksource_changes() -> Vec<ClocksourceLine> {
    let Ok(mut log) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/kmsg")
    else {
        return Vec::new();
    };
    let mut lines = std::collections::VecDeque::new();
    // One read returns one record; 8 KiB holds the longest the kernel
    // writes (a shorter buffer fails the read with EINVAL).
    let mut record = vec![0u8; 8192];
    for _ in 0..MAX_RECORDS {
        match log.read(&mut record) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(line) = parse_record(&record[..n]).filter(ClocksourceLine::is_a_change)
                {
                    if lines.len() == MAX_LINES {
                        lines.pop_front();
                    }
                    lines.push_back(line);
                }
            }
            // Records overwritten before we read them: the next read goes on
            // from the oldest one left.
            Err(err) if err.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => break,
        }
    }
    lines.into()
}

/// A /dev/kmsg record: `PRI,SEQ,USECS,FLAGS[,...];MESSAGE\n`, then
/// continuation lines that start with a space. Only messages about the
/// clocksource are kept.
fn parse_record(record: &[u8]) -> Option<ClocksourceLine> {
    let text = String::from_utf8_lossy(record);
    let (prefix, rest) = text.split_once(';')?;
    let message = rest.lines().next()?.trim_end();
    if !message.starts_with("clocksource:") && !message.contains("clocksource '") {
        return None;
    }
    let usecs: u64 = prefix.split(',').nth(2)?.parse().ok()?;
    Some(ClocksourceLine {
        seconds: usecs as f64 / 1e6,
        message: crate::host::printable::printable(message).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_about_the_clocksource_are_kept_with_their_time() {
        let line = parse_record(
            b"4,712,3084537,-;clocksource: Marking clocksource 'tsc' as unstable because the skew is too large:\n SUBSYSTEM=clocksource\n",
        )
        .unwrap();
        assert_eq!(line.seconds, 3.084537);
        assert_eq!(
            line.message,
            "clocksource: Marking clocksource 'tsc' as unstable because the skew is too large:"
        );
        assert!(line.is_a_change());
        assert_eq!(
            line.quoted(),
            "[3.084537] clocksource: Marking clocksource 'tsc' as unstable because the skew is too large:"
        );
        let switched =
            parse_record(b"6,713,3090001,-;clocksource: Switched to clocksource hpet\n").unwrap();
        assert!(switched.is_a_change());
        let registered =
            parse_record(b"6,100,12,-;clocksource: tsc-early: mask: 0xffffffffffffffff\n").unwrap();
        assert!(!registered.is_a_change());
        assert_eq!(parse_record(b"6,1,2,-;usb 1-1: new device\n"), None);
        assert_eq!(parse_record(b"garbage"), None);
        assert_eq!(parse_record(b"6,1,notanumber,-;clocksource: x\n"), None);
    }

    #[test]
    fn this_hosts_log_is_read_without_blocking() {
        // Whatever it holds (the test runs as root: CAP_SYSLOG), a read
        // returns, and every line is a change of the clocksource.
        let lines = clocksource_changes();
        assert!(lines.len() <= MAX_LINES);
        assert!(lines.iter().all(|l| l.message.contains("clocksource")));
        assert!(lines.iter().all(ClocksourceLine::is_a_change));
    }
}

//! The e2e lock: everything that loads eBPF (`test`, `vm-test`, `bench`)
//! holds it for its whole run. The end-to-end tests assert that no program of
//! clockprof's is left loaded, so two runs side by side (two checkouts, a
//! developer's run beside CI's) would fail each other. A second run waits
//! for the first instead.
//!
//! A plain `flock` on a file in /run/lock, so a shell can take the same lock
//! (`flock /run/lock/clockprof-e2e.lock cargo test ...`), and the kernel drops
//! it when the holder dies, however it ends.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub const PATH: &str = "/run/lock/clockprof-e2e.lock";

/// Held until dropped (or the process ends).
pub struct E2eLock(#[allow(dead_code)] File);

/// Takes the lock, waiting for another holder and saying so once.
pub fn take() -> Result<E2eLock> {
    take_at(std::path::Path::new(PATH))
}

fn take_at(path: &std::path::Path) -> Result<E2eLock> {
    let shown = path.display();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("could not open the e2e lock {shown}"))?;
    let started = Instant::now();
    let mut said = false;
    loop {
        // SAFETY: a valid open descriptor; LOCK_NB never blocks.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            if said {
                eprintln!(
                    "xtask: took the e2e lock after {:.0} s",
                    started.elapsed().as_secs_f64()
                );
            }
            return Ok(E2eLock(file));
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err).with_context(|| format!("could not lock {shown}"));
        }
        if !said {
            eprintln!("xtask: another run that loads eBPF holds {shown}; waiting for it");
            said = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_until_the_first_drops() {
        // flock locks belong to the open file description: a second open in
        // the same process contends like another process would.
        // A lock of its own: the real one is held by `cargo xtask test`,
        // which runs this test.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e2e.lock");
        let first = take_at(&path).unwrap();
        let second = OpenOptions::new().write(true).open(&path).unwrap();
        // SAFETY: a valid open descriptor; LOCK_NB never blocks.
        let busy = unsafe { libc::flock(second.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(busy, -1, "the lock was taken twice");
        drop(first);
        // SAFETY: as above.
        let free = unsafe { libc::flock(second.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(free, 0, "the lock stayed held after its holder dropped it");
    }
}

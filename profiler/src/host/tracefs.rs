//! tracefs for a host that has none mounted. It is mounted in a mount
//! namespace of clockprof's own, so it goes away with the process however it
//! ends (SIGKILL included), never shows on the host, and two clockprofs never
//! race to mount or unmount it. COMMAND is sent back to the host's namespace
//! (see session/command.rs), so it sees the host's mounts, not ours, from
//! clockprof's own root: setns() resets the root to the namespace's, which
//! would let a COMMAND started inside a chroot out of it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};

pub const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// The host's mount namespace, root and working directory, kept from before
/// the unshare, for COMMAND to return to.
pub struct HostNamespace {
    mount_namespace: OwnedFd,
    root: OwnedFd,
    cwd: OwnedFd,
}

/// The raw descriptors of a `HostNamespace`, for a child between fork and
/// exec.
#[derive(Clone, Copy)]
pub struct HostPlace {
    pub mount_namespace: RawFd,
    /// clockprof's root directory, which is not the namespace's under chroot.
    pub root: RawFd,
    pub cwd: RawFd,
}

impl HostNamespace {
    pub fn place(&self) -> HostPlace {
        HostPlace {
            mount_namespace: self.mount_namespace.as_raw_fd(),
            root: self.root.as_raw_fd(),
            cwd: self.cwd.as_raw_fd(),
        }
    }
}

/// Set once by `prepare`, only when it left the host's namespace.
static HOST: OnceLock<HostNamespace> = OnceLock::new();
/// Why tracefs could not be mounted, for the error `require` gives.
static MOUNT_FAILURE: OnceLock<String> = OnceLock::new();

pub fn host_namespace() -> Option<&'static HostNamespace> {
    HOST.get()
}

pub fn events_dir() -> &'static Path {
    if Path::new(TRACEFS).join("events").exists() {
        Path::new("/sys/kernel/tracing/events")
    } else {
        Path::new("/sys/kernel/debug/tracing/events")
    }
}

/// Whether tracefs is mounted where aya looks for it, read from mountinfo:
/// looking into /sys/kernel/debug/tracing would automount it on the host.
fn present() -> bool {
    // thread-self: the namespace of this thread, which may be the only one
    // that moved (see prepare).
    std::fs::read_to_string("/proc/thread-self/mountinfo")
        .map(|mountinfo| has_tracefs_mount(&mountinfo))
        .unwrap_or(false)
}

fn has_tracefs_mount(mountinfo: &str) -> bool {
    super::mountinfo::mounts(mountinfo).any(|mount| {
        mount.fs_type == "tracefs"
            && matches!(mount.mount_point.as_str(), TRACEFS | DEBUGFS_TRACING)
    })
}

fn check(ret: libc::c_int, what: &str) -> Result<libc::c_int> {
    if ret < 0 {
        bail!("{what} failed: {}", io::Error::last_os_error());
    }
    Ok(ret)
}

fn open(path: &str, flags: libc::c_int) -> Result<OwnedFd> {
    let c_path = CString::new(path).expect("a constant path");
    let fd = check(
        unsafe { libc::open(c_path.as_ptr(), flags | libc::O_CLOEXEC) },
        &format!("opening {path}"),
    )?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn mount_privately() -> Result<HostNamespace> {
    let host = HostNamespace {
        mount_namespace: open("/proc/thread-self/ns/mnt", libc::O_RDONLY)?,
        root: open("/", libc::O_PATH | libc::O_DIRECTORY)?,
        cwd: open(".", libc::O_PATH | libc::O_DIRECTORY)?,
    };
    check(
        unsafe { libc::unshare(libc::CLONE_NEWNS) },
        "unshare(CLONE_NEWNS)",
    )?;
    // Slave: the host's later mounts still reach us, ours never reach it.
    let root = CString::new("/").unwrap();
    check(
        unsafe {
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            )
        },
        "making / a slave mount",
    )?;
    let target = CString::new(TRACEFS).unwrap();
    let fstype = CString::new("tracefs").unwrap();
    check(
        unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            )
        },
        &format!("mounting tracefs at {TRACEFS}"),
    )?;
    Ok(host)
}

/// Mounts tracefs privately if the host has none. Must run before any thread
/// exists: unshare(CLONE_NEWNS) moves only the calling thread, and a thread
/// left in the host's namespace would not see the mount. A failure is kept
/// for `require`, so a user without privileges hears about the privileges
/// first.
pub fn prepare() {
    if present() {
        return;
    }
    match mount_privately() {
        Ok(host) => {
            let _ = HOST.set(host);
        }
        Err(err) => {
            let _ = MOUNT_FAILURE.set(format!("{err:#}"));
        }
    }
}

/// Fails, in one sentence, when no tracefs is to be found.
pub fn require() -> Result<()> {
    if present() {
        return Ok(());
    }
    let why = MOUNT_FAILURE
        .get()
        .map(String::as_str)
        .unwrap_or("clockprof did not try");
    bail!("tracefs is not mounted and clockprof could not mount it privately ({why}); mount it with `mount -t tracefs nodev {TRACEFS}`")
}

/// Reads a field's offset from a tracepoint's format file: record layouts
/// change between kernels (`sched_process_fork`'s comm became `__data_loc`),
/// so none is assumed fixed.
pub fn tracepoint_field_offset(category: &str, name: &str, field: &str) -> Result<u32> {
    let path = events_dir().join(category).join(name).join("format");
    let format = std::fs::read_to_string(&path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let needle = format!(" {field};");
    format
        .lines()
        .find(|line| line.contains(&needle))
        .and_then(|line| line.split("offset:").nth(1))
        .and_then(|rest| rest.split(';').next())
        .and_then(|offset| offset.trim().parse().ok())
        .ok_or_else(|| anyhow!("no field {field} in {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tracefs_mounts_from_mountinfo() {
        assert!(has_tracefs_mount(
            "42 23 0:13 / /sys/kernel/tracing rw,relatime - tracefs nodev rw"
        ));
        assert!(has_tracefs_mount(
            "50 30 0:13 / /sys/kernel/debug/tracing rw shared:7 - tracefs tracefs rw"
        ));
        assert!(!has_tracefs_mount(
            "42 23 0:13 / /mnt/elsewhere rw,relatime - tracefs nodev rw"
        ));
        assert!(!has_tracefs_mount("24 1 0:22 / /sys rw - sysfs sysfs rw"));
    }
}

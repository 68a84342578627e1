//! Starting `-- COMMAND` so that not one of its clock reads is missed: the forked
//! child adds its own PID to the kernel's filter map before it execs, so the
//! filter holds it from its first instruction on, with no window and no
//! handshake. Its children follow through the sched_process_fork program.

use std::ffi::OsString;
use std::io;
use std::os::fd::RawFd;

use anyhow::{bail, Result};
use profiler_common::target;
use tokio::process::{Child, Command};

/// `union bpf_attr` as BPF_MAP_UPDATE_ELEM reads it.
#[repr(C)]
struct MapUpdateAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;

/// Runs in the forked child between fork and exec, so it may only make
/// async-signal-safe calls: getpid and bpf are plain system calls.
fn register_self(targets_fd: RawFd) -> io::Result<()> {
    let pid: u32 = unsafe { libc::getpid() } as u32;
    let flags: u32 = target::FOLLOW_CHILDREN;
    let attr = MapUpdateAttr {
        map_fd: targets_fd as u32,
        _pad: 0,
        key: &pid as *const u32 as u64,
        value: &flags as *const u32 as u64,
        flags: 0,
    };
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_ELEM,
            &attr as *const MapUpdateAttr,
            std::mem::size_of::<MapUpdateAttr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Starts COMMAND with its PID already in the filter map behind `targets_fd`.
pub fn spawn(command: &[OsString], targets_fd: RawFd) -> Result<Child> {
    let Some((program, args)) = command.split_first() else {
        bail!("no COMMAND given after --");
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    unsafe {
        cmd.pre_exec(move || register_self(targets_fd));
    }
    match cmd.spawn() {
        Ok(child) => Ok(child),
        Err(err) => bail!(
            "could not start COMMAND `{}`: {err}",
            program.to_string_lossy()
        ),
    }
}

/// The shell convention for a status: the exit code, or 128 + the signal.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

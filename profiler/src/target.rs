//! Starting `-- COMMAND` so that not one of its clock reads is missed: the forked
//! child adds its own PID to the kernel's filter map, reports the PID, and waits
//! until the daemon has attached what is scoped to that PID (uprobes) before it
//! execs. Its children follow through the sched_process_fork program.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus};

use anyhow::{anyhow, bail, Result};
use profiler_common::target;
use tokio::task::JoinHandle;

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

/// A pipe whose ends close on exec, so COMMAND never inherits them.
fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// A started COMMAND.
pub struct Spawned {
    pub pid: u32,
    /// Resolves when COMMAND exits (std's wait, on a blocking thread).
    pub exit: JoinHandle<io::Result<ExitStatus>>,
}

fn start_error(program: &OsString, err: impl std::fmt::Display) -> anyhow::Error {
    anyhow!(
        "could not start COMMAND `{}`: {err}",
        program.to_string_lossy()
    )
}

/// Starts COMMAND with its PID already in the filter map behind `targets_fd`,
/// after `before_exec(pid)` has run in the daemon. If that fails, COMMAND is
/// never executed.
pub fn spawn(
    command: &[OsString],
    targets_fd: RawFd,
    before_exec: impl FnOnce(u32) -> Result<()>,
) -> Result<Spawned> {
    let Some((program, args)) = command.split_first() else {
        bail!("no COMMAND given after --");
    };
    let (mut pid_read, pid_write) = pipe()?;
    let (go_read, mut go_write) = pipe()?;
    let fds = [
        pid_read.as_raw_fd(),
        pid_write.as_raw_fd(),
        go_read.as_raw_fd(),
        go_write.as_raw_fd(),
    ];
    let mut cmd = Command::new(program);
    cmd.args(args);
    // Runs in the forked child, so only async-signal-safe calls: plain syscalls.
    unsafe {
        cmd.pre_exec(move || {
            let [pid_read, pid_write, go_read, go_write] = fds;
            // The daemon's ends: closed here so the child sees EOF if it dies.
            libc::close(pid_read);
            libc::close(go_write);
            register_self(targets_fd)?;
            let pid = libc::getpid().to_ne_bytes();
            if libc::write(pid_write, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
                return Err(io::Error::last_os_error());
            }
            let mut go = 0u8;
            if libc::read(go_read, (&mut go as *mut u8).cast(), 1) != 1 {
                return Err(io::Error::other("clockprof could not attach its probes"));
            }
            Ok(())
        });
    }
    // std's spawn returns only once the child has exec'd, which it does only
    // after our go-ahead below, so spawn runs on its own thread. That thread
    // keeps the child's pipe ends open until the fork is done, then closes
    // them, so a child that dies early reads as EOF on `pid_read`.
    let spawner = std::thread::spawn(move || {
        let child = cmd.spawn();
        drop(pid_write);
        drop(go_read);
        child
    });
    let mut pid = [0u8; 4];
    if pid_read.read_exact(&mut pid).is_err() {
        return Err(match spawner.join() {
            Ok(Err(err)) => start_error(program, err),
            _ => start_error(program, "the child died before exec"),
        });
    }
    let pid = u32::from_ne_bytes(pid);
    if let Err(err) = before_exec(pid) {
        drop(go_write);
        let _ = spawner.join();
        return Err(err);
    }
    go_write.write_all(&[1])?;
    drop(go_write);
    let mut child = match spawner.join() {
        Ok(Ok(child)) => child,
        Ok(Err(err)) => return Err(start_error(program, err)),
        Err(_) => return Err(start_error(program, "the spawning thread panicked")),
    };
    let exit = tokio::task::spawn_blocking(move || child.wait());
    Ok(Spawned { pid, exit })
}

/// The shell convention for a status: the exit code, or 128 + the signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

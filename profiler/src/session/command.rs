//! Starting `-- COMMAND` so that not one of its clock reads is missed: the forked
//! child adds its own PID to the kernel's filter map, reports the PID, and waits
//! until the daemon has put the uprobes on the files it will map before it
//! execs. The processes it starts follow through the task_newtask program.
//!
//! COMMAND never outlives clockprof (PR_SET_PDEATHSIG), runs in the host's
//! mount namespace, and as the user who ran sudo (see credentials.rs).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{anyhow, bail, Result};
use profiler_common::target;
use tokio::sync::oneshot;

use crate::host::tracefs::{self, HostPlace};
use crate::session::credentials::RunAs;

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
    pidfd: OwnedFd,
    /// Resolves when COMMAND exits.
    pub exit: oneshot::Receiver<io::Result<ExitStatus>>,
}

fn start_error(program: &OsString, err: impl std::fmt::Display) -> anyhow::Error {
    anyhow!(
        "could not start COMMAND `{}`: {err}",
        program.to_string_lossy()
    )
}

/// What the child does between fork and exec, in this order: join the
/// filter map (needs our privileges), report its PID, wait for the probes,
/// go back to the host's mount namespace, root and working directory, drop to
/// `run_as`, then ask for SIGTERM when clockprof dies. The last comes after
/// setuid, which clears it, and is checked against a clockprof that died
/// before it was set. Only async-signal-safe calls: plain system calls on
/// data prepared before the fork.
struct ChildSetup {
    targets_fd: RawFd,
    pid_read: RawFd,
    pid_write: RawFd,
    go_read: RawFd,
    go_write: RawFd,
    /// The host's mount namespace, root and working directory, when we left
    /// its namespace.
    host: Option<HostPlace>,
    run_as: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    clockprof: libc::pid_t,
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl ChildSetup {
    fn run(&self) -> io::Result<()> {
        unsafe {
            // The daemon's ends: closed here so the child sees EOF if it dies.
            libc::close(self.pid_read);
            libc::close(self.go_write);
            register_self(self.targets_fd)?;
            let pid = libc::getpid().to_ne_bytes();
            if libc::write(self.pid_write, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
                return Err(io::Error::last_os_error());
            }
            let mut go = 0u8;
            if libc::read(self.go_read, (&mut go as *mut u8).cast(), 1) != 1 {
                return Err(io::Error::other("clockprof could not attach its probes"));
            }
            if let Some(host) = self.host {
                check(libc::setns(host.mount_namespace, libc::CLONE_NEWNS))?;
                // setns set the root to the namespace's own: a clockprof run
                // in a chroot (a container's root, a build root) would start
                // COMMAND outside it. Back to clockprof's root, then its cwd.
                check(libc::fchdir(host.root))?;
                check(libc::chroot(c".".as_ptr()))?;
                check(libc::fchdir(host.cwd))?;
            }
            if let Some((uid, gid, groups)) = &self.run_as {
                check(libc::setgroups(groups.len(), groups.as_ptr()))?;
                check(libc::setgid(*gid))?;
                check(libc::setuid(*uid))?;
            }
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0))?;
            if libc::getppid() != self.clockprof {
                return Err(io::Error::other("clockprof exited before COMMAND started"));
            }
        }
        Ok(())
    }
}

/// Starts COMMAND with its PID already in the filter map behind `targets_fd`,
/// after `before_exec(pid)` has run in the daemon, as `run_as` if given. If
/// anything fails, COMMAND is never executed.
pub fn spawn(
    command: &[OsString],
    targets_fd: RawFd,
    run_as: Option<&RunAs>,
    before_exec: impl FnOnce(u32) -> Result<()>,
) -> Result<Spawned> {
    let Some((program, args)) = command.split_first() else {
        bail!("no COMMAND given after --");
    };
    let (mut pid_read, pid_write) = pipe()?;
    let (go_read, mut go_write) = pipe()?;
    let setup = ChildSetup {
        targets_fd,
        pid_read: pid_read.as_raw_fd(),
        pid_write: pid_write.as_raw_fd(),
        go_read: go_read.as_raw_fd(),
        go_write: go_write.as_raw_fd(),
        host: tracefs::host_namespace().map(|host| host.place()),
        run_as: run_as.map(|user| (user.uid, user.gid, user.groups.clone())),
        clockprof: std::process::id() as libc::pid_t,
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_remove(crate::host::notify::SOCKET_VARIABLE);
    if let Some(user) = run_as {
        cmd.env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
    }
    unsafe {
        cmd.pre_exec(move || setup.run());
    }
    // std's spawn returns only once the child has exec'd, which it does only
    // after our go-ahead below, so spawn runs on its own thread. That thread
    // keeps the child's pipe ends open until the fork is done, then closes
    // them, so a child that dies early reads as EOF on `pid_read`. It then
    // waits for COMMAND: PR_SET_PDEATHSIG fires when the forking *thread*
    // exits, so it must outlive COMMAND (it ends with the process).
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (exit_tx, exit) = oneshot::channel();
    std::thread::spawn(move || {
        let child = cmd.spawn();
        drop(pid_write);
        drop(go_read);
        match child {
            Ok(mut child) => {
                let _ = started_tx.send(Ok(()));
                let _ = exit_tx.send(child.wait());
            }
            Err(err) => {
                let _ = started_tx.send(Err(err));
            }
        }
    });
    let started = move || match started_rx.recv() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(start_error(program, err)),
        Err(_) => Err(start_error(program, "the spawning thread panicked")),
    };
    let mut pid = [0u8; 4];
    if pid_read.read_exact(&mut pid).is_err() {
        return Err(match started() {
            Err(err) => err,
            Ok(()) => start_error(program, "the child died before exec"),
        });
    }
    let pid = u32::from_ne_bytes(pid);
    // The child waits for our go-ahead and nothing reaps it before spawn
    // returns, so this PID is still ours.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        let err = io::Error::last_os_error();
        drop(go_write);
        let _ = started();
        return Err(start_error(program, format!("pidfd_open: {err}")));
    }
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    if let Err(err) = before_exec(pid) {
        drop(go_write);
        let _ = started();
        return Err(err);
    }
    go_write.write_all(&[1])?;
    drop(go_write);
    started()?;
    Ok(Spawned { pidfd, exit })
}

/// The shell convention for a status: the exit code, or 128 + the signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Whether the last SIGINT came from the terminal (si_code SI_KERNEL): then
/// it went to the whole foreground process group, COMMAND included, and is
/// not passed on again. A SIGINT sent with kill() reached only us.
static SIGINT_FROM_TERMINAL: AtomicBool = AtomicBool::new(false);

extern "C" fn note_sigint_origin(
    _signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO.
    let from_terminal = unsafe { (*info).si_code } == libc::SI_KERNEL;
    SIGINT_FROM_TERMINAL.store(from_terminal, Ordering::SeqCst);
}

/// Installs the SIGINT origin recorder. Must run before tokio's own SIGINT
/// handler is registered: tokio's registry keeps this one and calls it first.
pub fn watch_interrupt_origin() -> io::Result<()> {
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = note_sigint_origin as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Spawned {
    /// Passes a stopping signal on to COMMAND, unless it already got it
    /// from the terminal. Through a pidfd: once COMMAND is reaped its PID may
    /// name another process.
    pub fn forward(&self, signal: libc::c_int) {
        if signal == libc::SIGINT && SIGINT_FROM_TERMINAL.load(Ordering::SeqCst) {
            return;
        }
        self.signal(signal);
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: pidfd_send_signal reads nothing through the null siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

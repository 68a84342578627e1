//! Waiting until clockprof is ready, by the machine-readable signal it gives
//! for that: `READY=1` sent to the datagram socket NOTIFY_SOCKET names (the
//! sd_notify protocol; profiler/src/host/notify.rs), once every probe is
//! attached. The sentences on its stderr are for people and may change.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::TempDir;

/// How long attaching may take: the VM tests attach under emulation.
pub const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// A socket in a fresh directory of the fixture directory for clockprof to
/// say READY=1 on.
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: TempDir,
}

impl NotifySocket {
    pub fn new() -> NotifySocket {
        let dir = TempDir::new("notify");
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path)
            .unwrap_or_else(|e| panic!("could not bind {}: {e}", path.display()));
        // clockprof may run as another user (serve as nobody).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        NotifySocket {
            socket,
            path,
            _dir: dir,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `command` with NOTIFY_SOCKET naming this socket.
    pub fn pass_to<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        command.env("NOTIFY_SOCKET", &self.path)
    }

    /// Waits for a message holding the line READY=1 and returns it; fails the
    /// test when `child` (clockprof, or what runs it) exits first or
    /// READY_TIMEOUT passes.
    pub fn wait_ready(&self, child: &mut Child) -> String {
        let started = Instant::now();
        let mut buffer = [0u8; 4096];
        loop {
            match self.socket.recv(&mut buffer) {
                Ok(n) => {
                    let message = String::from_utf8_lossy(&buffer[..n]).to_string();
                    if message.lines().any(|line| line == "READY=1") {
                        return message;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("reading {}: {e}", self.path.display()),
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("process {} exited ({status}) before READY=1", child.id());
            }
            if started.elapsed() > READY_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no READY=1 within {READY_TIMEOUT:?}");
            }
        }
    }
}

impl Default for NotifySocket {
    fn default() -> Self {
        NotifySocket::new()
    }
}

/// Starts clockprof as `command` (its stderr piped here) and returns once it
/// said READY=1, with a thread that keeps reading its stderr, so clockprof
/// never blocks on a full pipe, and returns all of it at the end. A failure
/// to get ready fails the test with that stderr.
pub fn start_until_ready(command: &mut Command) -> (Child, JoinHandle<String>) {
    let notify = NotifySocket::new();
    let mut child = notify
        .pass_to(command)
        .stderr(Stdio::piped())
        .spawn()
        .expect("clockprof starts");
    let mut stderr = child.stderr.take().unwrap();
    let all = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = stderr.read_to_string(&mut all);
        all
    });
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        notify.wait_ready(&mut child);
    }));
    if let Err(panic) = waited {
        let _ = child.kill();
        let _ = child.wait();
        let said = all.join().unwrap_or_default();
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "clockprof did not get ready".to_string());
        panic!("{why}: {said}");
    }
    (child, all)
}

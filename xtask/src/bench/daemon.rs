//! A tracer running in the background while the workload runs: started, waited on
//! until its probes are attached, measured, then stopped with SIGINT like a user
//! would. Dropping a Daemon that was not stopped kills it, so no error path leaves a
//! tracer attached.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::procfs;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How to tell that a tracer has attached its probes.
pub struct ReadyWhen {
    pub stream: Stream,
    pub line_contains: &'static str,
    /// Extra wait after the line, for tracers that announce before attaching.
    pub settle: Duration,
}

pub struct Usage {
    pub cpu_ms: f64,
    pub peak_rss_kib: u64,
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

type Lines = Arc<Mutex<Vec<String>>>;

pub struct Daemon {
    name: String,
    child: Option<Child>,
    stdout: Lines,
    stderr: Lines,
    readers: Vec<JoinHandle<()>>,
}

const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// bpftrace symbolizes and prints its maps on SIGINT, which takes a moment;
/// clockprof symbolizes thousands of exited processes after the churn row.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(20);

impl Daemon {
    pub fn start(name: &str, mut cmd: Command, ready: &ReadyWhen) -> Result<Daemon> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start {name}"))?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout: Lines = Arc::default();
        let stderr: Lines = Arc::default();
        let marker =
            |s: Stream| (s == ready.stream).then(|| (ready.line_contains, ready_tx.clone()));
        let readers = vec![
            collect_lines(
                child.stdout.take().expect("piped"),
                stdout.clone(),
                marker(Stream::Stdout),
            ),
            collect_lines(
                child.stderr.take().expect("piped"),
                stderr.clone(),
                marker(Stream::Stderr),
            ),
        ];
        let mut daemon = Daemon {
            name: name.to_string(),
            child: Some(child),
            stdout,
            stderr,
            readers,
        };

        let started = Instant::now();
        loop {
            if ready_rx.recv_timeout(POLL).is_ok() {
                break;
            }
            if let Some(status) = daemon.child_mut().try_wait()? {
                bail!(
                    "{name} exited ({status}) before attaching; its output:\n{}",
                    daemon.output_tail()
                );
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "{name} did not print {:?} within {} s; its output:\n{}",
                    ready.line_contains,
                    READY_TIMEOUT.as_secs(),
                    daemon.output_tail()
                );
            }
        }
        thread::sleep(ready.settle);
        Ok(daemon)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn usage(&self) -> Result<Usage> {
        let pid = self.pid();
        Ok(Usage {
            cpu_ms: procfs::cpu_time_ms(pid)?,
            peak_rss_kib: procfs::peak_rss_kib(pid)?,
        })
    }

    /// SIGINT, as a user's Ctrl-C, so the tracer writes its output and detaches.
    pub fn stop(self) -> Result<Finished> {
        self.finish(Duration::ZERO)
    }

    /// Waits up to `timeout` for a tracer that stops by itself (clockprof once
    /// every `-p` process exited), then stops it as `stop` does: a SIGINT
    /// while it writes its output could cut that short.
    pub fn wait_then_stop(self, timeout: Duration) -> Result<Finished> {
        self.finish(timeout)
    }

    fn finish(mut self, wait_first: Duration) -> Result<Finished> {
        let name = self.name.clone();
        let mut child = self.child.take().expect("running");
        let waited = Instant::now();
        let mut exited = child.try_wait()?;
        while exited.is_none() && waited.elapsed() < wait_first {
            thread::sleep(POLL);
            exited = child.try_wait()?;
        }
        let status = match exited {
            Some(status) => status,
            None => interrupt(&name, &mut child)?,
        };
        // A grandchild that inherited the pipes can keep them open after the tracer
        // exits; take what was read by then instead of waiting for EOF forever.
        let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < drain_deadline {
            thread::sleep(POLL);
        }
        if self.readers.iter().any(|r| !r.is_finished()) {
            eprintln!("xtask: warning: {name} exited but something still holds its output open");
        }
        self.readers.clear();
        Ok(Finished {
            status,
            stdout: std::mem::take(&mut *self.stdout.lock().unwrap()),
            stderr: std::mem::take(&mut *self.stderr.lock().unwrap()),
        })
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("running")
    }

    fn output_tail(&self) -> String {
        let mut lines = self.stdout.lock().unwrap().clone();
        lines.extend(self.stderr.lock().unwrap().iter().cloned());
        let start = lines.len().saturating_sub(20);
        lines[start..].join("\n")
    }
}

/// SIGINT, then SIGKILL if it is ignored for STOP_TIMEOUT.
fn interrupt(name: &str, child: &mut Child) -> Result<ExitStatus> {
    // SAFETY: kill has no memory-safety preconditions; the pid is our own child,
    // not yet reaped, so it cannot have been reused.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let status = child.wait()?;
            eprintln!(
                "xtask: warning: {name} ignored SIGINT for {} s; killed",
                STOP_TIMEOUT.as_secs()
            );
            return Ok(status);
        }
        thread::sleep(POLL);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Drains a pipe into `sink` (a full pipe would stall the tracer) and signals once
/// when a line contains the readiness marker.
fn collect_lines(
    pipe: impl Read + Send + 'static,
    sink: Lines,
    marker: Option<(&'static str, mpsc::Sender<()>)>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut marker = marker;
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if marker.as_ref().is_some_and(|(m, _)| line.contains(m)) {
                let (_, tx) = marker.take().expect("checked");
                let _ = tx.send(());
            }
            sink.lock().unwrap().push(line);
        }
    })
}

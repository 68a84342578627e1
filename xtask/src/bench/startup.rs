//! Start-up (issue 25): what one look costs before it sees anything, in
//! rounds interleaved with bpftrace's one-liner doing the same job.
//!
//! - `clockprof record -s syscall -o x.folded -- PROBE` against
//!   `bpftrace -e 'tracepoint:syscalls:sys_enter_clock_gettime { @[pid,
//!   ustack] = count(); }' -c PROBE`: the time from the profiler's exec to
//!   PROBE's first instruction (PROBE, tests/fixtures/startup_probe.c, writes
//!   CLOCK_MONOTONIC first thing in main), the time to the profiler's exit,
//!   and its CPU (user + system, COMMAND's included: it is a few
//!   microseconds) and peak RSS, from wait4.
//! - `clockprof serve` up to its first `/healthz` 200: the time, and its CPU
//!   and peak RSS by then (it is stopped at once after).
//!
//! Medians of the rounds; the ratio is clockprof over bpftrace.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::process;

const ROUNDS: usize = 5;
const BPFTRACE_PROGRAM: &str =
    "tracepoint:syscalls:sys_enter_clock_gettime { @[pid, ustack] = count(); }";

/// One start measured.
#[derive(Clone, Copy, Default)]
struct Start {
    /// From just before the spawn to COMMAND's first instruction (or, for
    /// serve, to its first /healthz 200).
    to_ready: Duration,
    /// From just before the spawn to the exit.
    to_exit: Duration,
    cpu: Duration,
    peak_rss_mib: f64,
}

pub struct Startup {
    clockprof: Vec<Start>,
    bpftrace: Vec<Start>,
    serve: Vec<Start>,
}

fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Waits for `pid` and returns its rusage (the children it waited for
/// included).
fn wait_rusage(pid: u32) -> Result<(i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain data, filled by wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: our own child's pid, and valid out-pointers.
    let waited = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    if waited != pid as i32 {
        bail!("wait4({pid}) failed: {}", std::io::Error::last_os_error());
    }
    Ok((status, usage))
}

fn cpu_of(usage: &libc::rusage) -> Duration {
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Runs a profiler whose COMMAND is the probe, and measures it.
fn measure_one(mut cmd: Command, probe_out: &Path) -> Result<Start> {
    let _ = std::fs::remove_file(probe_out);
    let before = monotonic_ns();
    let started = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("could not start {}", process::describe(&cmd)))?;
    let (status, usage) = wait_rusage(child.id())?;
    let to_exit = started.elapsed();
    // The child is reaped by wait4; forget the handle so its Drop does not wait.
    std::mem::forget(child);
    if status != 0 {
        bail!(
            "`{}` exited with status {status:#x}",
            process::describe(&cmd)
        );
    }
    let first: u64 = std::fs::read_to_string(probe_out)
        .with_context(|| format!("the probe wrote no {}", probe_out.display()))?
        .trim()
        .parse()
        .context("the probe's time")?;
    Ok(Start {
        to_ready: Duration::from_nanos(first.saturating_sub(before)),
        to_exit,
        cpu: cpu_of(&usage),
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
    })
}

/// `serve` up to its first /healthz 200, then SIGTERM.
fn measure_serve(clockprof: &Path) -> Result<Start> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let started = Instant::now();
    let child = Command::new(clockprof)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("could not start clockprof serve")?;
    let deadline = started + Duration::from_secs(60);
    let to_ready = loop {
        if healthy(port) {
            break started.elapsed();
        }
        if Instant::now() > deadline {
            // SAFETY: our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = wait_rusage(child.id());
            std::mem::forget(child);
            bail!("serve never answered /healthz with 200 within 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // SAFETY: our own child; SIGTERM makes serve detach and exit.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (_, usage) = wait_rusage(child.id())?;
    let to_exit = started.elapsed();
    std::mem::forget(child);
    Ok(Start {
        to_ready,
        to_exit,
        cpu: cpu_of(&usage),
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
    })
}

fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = [0u8; 16];
    let mut read = 0;
    while read < answer.len() {
        match stream.read(&mut answer[read..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    answer[..read].starts_with(b"HTTP/1.1 200") || answer[..read].starts_with(b"HTTP/1.0 200")
}

/// `host_tracefs`: whether the host has tracefs mounted; if not, bpftrace
/// gets one in a mount namespace of its own, as clockprof makes for itself.
pub fn measure(clockprof: &Path, bench_dir: &Path, host_tracefs: bool) -> Result<Startup> {
    let probe = bench_dir.join("startup_probe");
    process::run(
        Command::new("gcc")
            .args(["-O2", "-static", "-o"])
            .arg(&probe)
            .arg(crate::workspace::root().join("tests/fixtures/startup_probe.c")),
    )?;
    let probe_out = bench_dir.join("startup_probe.out");
    let folded = bench_dir.join("startup.folded");
    let mut result = Startup {
        clockprof: Vec::new(),
        bpftrace: Vec::new(),
        serve: Vec::new(),
    };
    for _ in 0..ROUNDS {
        let mut clockprof_cmd = Command::new(clockprof);
        clockprof_cmd
            .args(["record", "-s", "syscall", "-o"])
            .arg(&folded)
            .arg("--")
            .arg(&probe)
            .arg(&probe_out)
            .stdout(Stdio::null());
        result
            .clockprof
            .push(measure_one(clockprof_cmd, &probe_out)?);
        // bpftrace splits -c on spaces: the bench directory has none.
        let mut bpftrace_cmd = Command::new("bpftrace");
        bpftrace_cmd
            .args(["-e", BPFTRACE_PROGRAM, "-c"])
            .arg(format!("{} {}", probe.display(), probe_out.display()))
            .stdout(Stdio::null());
        if !host_tracefs {
            super::scenario::with_private_tracefs(&mut bpftrace_cmd);
        }
        result.bpftrace.push(measure_one(bpftrace_cmd, &probe_out)?);
        result.serve.push(measure_serve(clockprof)?);
    }
    Ok(result)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

struct Medians {
    to_ready_ms: f64,
    to_exit_ms: f64,
    cpu_ms: f64,
    peak_rss_mib: f64,
}

fn medians(starts: &[Start]) -> Medians {
    let ms = |f: fn(&Start) -> Duration| {
        median(starts.iter().map(|s| f(s).as_secs_f64() * 1000.0).collect())
    };
    Medians {
        to_ready_ms: ms(|s| s.to_ready),
        to_exit_ms: ms(|s| s.to_exit),
        cpu_ms: ms(|s| s.cpu),
        peak_rss_mib: median(starts.iter().map(|s| s.peak_rss_mib).collect()),
    }
}

impl Startup {
    pub fn print(&self) {
        let (c, b, s) = (
            medians(&self.clockprof),
            medians(&self.bpftrace),
            medians(&self.serve),
        );
        println!(
            "\nStart-up (medians of {ROUNDS} interleaved rounds; ratio = clockprof / bpftrace):"
        );
        println!(
            "  {:<44} {:>12} {:>10} {:>9} {:>10}",
            "", "to COMMAND", "to exit", "CPU", "peak RSS"
        );
        let line = |name: &str, m: &Medians| {
            println!(
                "  {name:<44} {:>9.0} ms {:>7.0} ms {:>6.0} ms {:>6.1} MiB",
                m.to_ready_ms, m.to_exit_ms, m.cpu_ms, m.peak_rss_mib
            )
        };
        line("clockprof record -s syscall -- PROBE", &c);
        line("bpftrace @[pid, ustack] = count() -c PROBE", &b);
        println!(
            "  {:<44} {:>11.2}x {:>9.2}x {:>8.2}x {:>10.2}x",
            "ratio",
            c.to_ready_ms / b.to_ready_ms,
            c.to_exit_ms / b.to_exit_ms,
            c.cpu_ms / b.cpu_ms,
            c.peak_rss_mib / b.peak_rss_mib
        );
        println!(
            "  clockprof serve to its first /healthz 200: {:.0} ms, {:.0} ms CPU, {:.1} MiB peak RSS",
            s.to_ready_ms, s.cpu_ms, s.peak_rss_mib
        );
    }

    pub fn json(&self) -> serde_json::Value {
        let one = |m: Medians| {
            json!({
                "to_command_ms": m.to_ready_ms,
                "to_exit_ms": m.to_exit_ms,
                "cpu_ms": m.cpu_ms,
                "peak_rss_mib": m.peak_rss_mib,
            })
        };
        json!({
            "rounds": ROUNDS,
            "clockprof_record": one(medians(&self.clockprof)),
            "bpftrace": one(medians(&self.bpftrace)),
            "clockprof_serve_to_healthz": one(medians(&self.serve)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_take_the_middle_round() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![5.0, 1.0, 4.0, 2.0, 3.0]), 3.0);
        assert!(median(Vec::new()).is_nan());
    }
}

//! The daemon's own cost in `clockprof top`: CPU and memory at a 1 s refresh
//! while a fixture reads the clock from 4096 distinct stacks, first on the
//! process list (counts only), then drilled into the process (its stacks
//! symbolized and redrawn every second). `top` needs a terminal: tmux gives it one.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::procfs;

const SOCKET: &str = "clockprof-bench";
const WARM_UP: Duration = Duration::from_secs(5);
const MEASURE: Duration = Duration::from_secs(20);

pub struct TopCost {
    pub list_cpu_percent: f64,
    pub drilled_cpu_percent: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

fn tmux(args: &[&str]) -> Result<String> {
    let out = Command::new("tmux")
        .arg("-L")
        .arg(SOCKET)
        .args(args)
        .output()
        .context("could not run tmux")?;
    if !out.status.success() {
        bail!(
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The clockprof process inside the pane (the pane's shell may exec it or
/// fork it).
fn find_clockprof(pane_pid: u32) -> Option<u32> {
    let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm(pane_pid).trim() == "clockprof" {
        return Some(pane_pid);
    }
    let children =
        std::fs::read_to_string(format!("/proc/{pane_pid}/task/{pane_pid}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .find(|&pid| comm(pid).trim() == "clockprof")
}

fn vm_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// CPU percent of one core used by `pid` over `window`.
fn cpu_percent(pid: u32, window: Duration) -> Result<f64> {
    let before = procfs::cpu_time_ms(pid)?;
    let started = Instant::now();
    sleep(window);
    let after = procfs::cpu_time_ms(pid)?;
    Ok(100.0 * (after - before) / started.elapsed().as_millis() as f64)
}

const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `pid` (not our child: the tmux server reaps it) is gone in time.
fn exits_within(pid: u32, timeout: Duration) -> bool {
    let started = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        if started.elapsed() > timeout {
            return false;
        }
        sleep(Duration::from_millis(50));
    }
    true
}

struct Cleanup(Child);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = Command::new("tmux")
            .args(["-L", SOCKET, "kill-server"])
            .status();
    }
}

pub fn measure(clockprof: &Path, fixture: &Path) -> Result<TopCost> {
    let fixture_run = Command::new(fixture)
        .args(["stacks", "120"])
        .stdout(Stdio::null())
        .spawn()
        .context("could not start the stack-tree fixture")?;
    let _cleanup = Cleanup(fixture_run);
    let command = format!("exec {} top -s syscall -i 1", clockprof.display());
    tmux(&["new-session", "-d", "-x", "120", "-y", "40", &command])?;
    let pane_pid: u32 = tmux(&["display", "-p", "#{pane_pid}"])?
        .trim()
        .parse()
        .context("tmux gave no pane pid")?;
    sleep(WARM_UP);
    let pid = find_clockprof(pane_pid).context("clockprof top is not running in the tmux pane")?;
    let list_cpu_percent = cpu_percent(pid, MEASURE)?;
    tmux(&["send-keys", "Enter"])?;
    sleep(Duration::from_secs(3));
    let drilled_cpu_percent = cpu_percent(pid, MEASURE)?;
    let rss_mib = vm_rss_mib(pid);
    let peak_rss_mib = procfs::peak_rss_kib(pid)? as f64 / 1024.0;
    tmux(&["send-keys", "q"])?;
    // Killing the tmux server (Cleanup) hangs up on top: it must have quit by
    // then, or it is not the clean exit (probes detached, its tracefs
    // unmounted) that a user's `q` gives.
    if !exits_within(pid, QUIT_TIMEOUT) {
        eprintln!(
            "xtask: warning: clockprof top did not quit within {} s of `q`",
            QUIT_TIMEOUT.as_secs()
        );
    }
    Ok(TopCost {
        list_cpu_percent,
        drilled_cpu_percent,
        rss_mib,
        peak_rss_mib,
    })
}

impl TopCost {
    pub fn print(&self) {
        println!(
            "\nclockprof top, 1 s refresh, a fixture reading the clock from 4096 distinct stacks \
             ({} s each):",
            MEASURE.as_secs()
        );
        println!(
            "  process list   {:5.2}% of one core",
            self.list_cpu_percent
        );
        println!(
            "  drilled in     {:5.2}% of one core",
            self.drilled_cpu_percent
        );
        println!(
            "  memory         {:.1} MiB resident, {:.1} MiB peak",
            self.rss_mib, self.peak_rss_mib
        );
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "refresh_secs": 1,
            "distinct_stacks": 4096,
            "list_cpu_percent": self.list_cpu_percent,
            "drilled_cpu_percent": self.drilled_cpu_percent,
            "rss_mib": self.rss_mib,
            "peak_rss_mib": self.peak_rss_mib,
        })
    }
}

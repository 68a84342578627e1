//! Boots a kernel under QEMU with the host's root shared read-only over 9p and a
//! run directory shared writable, streams the serial console to the terminal and
//! a log file, and turns QEMU's exit into an outcome.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::guest::HEARTBEAT_FILE;
use super::initramfs::{HOST_ROOT_TAG, INIT_FAILED, OUT_TAG};
use super::kernel::Kernel;

const QEMU: &str = "qemu-system-x86_64";
/// /init's first console line; the host takes its arrival as "booted".
const INIT_MARKER: &str = "xtask-vm: init started";

/// - panic=-1: reboot at once on a panic, which -no-reboot turns into an exit.
/// - oops=panic: an oops (TCG's int3 in __schedule, VM.md) ends the boot at
///   once instead of leaving the tests to hang or fail on a broken kernel; the
///   host then finds the oops on the console and reruns (mod.rs).
/// - quiet: the serial console is slow under TCG; the log needs only /init's
///   lines and the kernel's errors.
///
/// The clocksource parameter comes from the run (GuestClock).
///
/// Not nokaslr, which would make the RIPs of a stop report plain kernel
/// addresses: with it, three 6.12 boots in a row oopsed in TCG's int3 (see
/// mod.rs), where one in several did before. guest.sh prints where the
/// kernel text is instead.
const KERNEL_CMDLINE: &str = "console=ttyS0 panic=-1 oops=panic quiet rdinit=/init";

/// A guest whose heartbeat (guest.rs) has not changed for this long has
/// stopped: the heartbeat is a shell loop writing every 10 s, which any guest
/// that still schedules runs, however slow the test. Seen under TCG on 5.10
/// and 6.1, in tests that put fentry on ktime_get: both CPUs spin in the int3
/// exception that text patching leaves (asm_exc_int3, ktime_get+0), which
/// TCG's stale translation keeps executing. Before the heartbeat, the 900 s
/// timeout waited for nothing and failed the run.
pub const HEARTBEAT_STOPPED_AFTER: Duration = Duration::from_secs(90);

/// A console silent this long, the heartbeat going on, is a guest stuck in
/// a test (a task blocked in the kernel, seen on 6.1 under TCG in an overlay
/// test): the guest printed where its tasks were at 300 s (guest.rs), and the
/// boot is given up as a stopped one. The longest test takes about two
/// minutes, and the guest's watchdog kills a clockprof after four.
pub const CONSOLE_SILENT_AFTER: Duration = Duration::from_secs(420);

pub struct Boot<'a> {
    pub kernel: &'a Kernel,
    /// Appended to KERNEL_CMDLINE, e.g. `clocksource=hpet`.
    pub kernel_param: &'a str,
    pub initramfs: &'a Path,
    /// Shared writable as OUT_TAG: holds guest.sh, receives rc and guest.log.
    pub run_dir: &'a Path,
    pub console_log: &'a Path,
    pub timeout: Duration,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// guest.sh ran and exited with this status (from the rc file).
    Finished(i32),
    /// /init failed before it could run guest.sh (it says why on the console).
    InitFailed,
    /// The guest rebooted, which with panic=-1 and -no-reboot means a panic.
    Panicked,
    /// Killed after the timeout.
    TimedOut,
    /// Killed because the guest's heartbeat stopped (the guest kernel, or
    /// QEMU's emulation of it, no longer runs anything) or its console fell
    /// silent (a test stuck): why, then what QEMU's monitor said of the
    /// CPUs, or why it said nothing.
    Stopped(Vec<String>),
    /// Anything else: QEMU's own failure (bad option, missing firmware...).
    QemuFailed(i32),
}

pub struct Report {
    pub outcome: Outcome,
    /// From QEMU's start to /init's first line.
    pub boot: Option<Duration>,
    pub total: Duration,
    pub accel: &'static str,
}

pub fn boot(b: &Boot) -> Result<Report> {
    let (accel, cpu) = accelerator();
    // The monitor, asked for the CPUs' registers when the guest stops. Its socket
    // lives in a private temporary directory: a unix socket path must be short,
    // and no one else may talk to the monitor.
    let monitor_dir = tempfile::Builder::new()
        .prefix("xtask-qemu-monitor-")
        .tempdir()
        .context("could not create a directory for QEMU's monitor socket")?;
    let monitor = monitor_dir.path().join("monitor.sock");
    let mut cmd = Command::new(QEMU);
    cmd.args(["-accel", accel, "-cpu", cpu, "-smp", "2", "-m", "2G"])
        // What -nographic does (serial console on stdio, no window) without its
        // SeaBIOS serial console, which sends ESC c and ESC[?7l: they reset the
        // developer's terminal and leave line wrapping off after the run.
        .args(["-display", "none", "-serial", "stdio", "-monitor"])
        .arg(format!("unix:{},server=on,wait=off", monitor.display()))
        .args(["-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&b.kernel.vmlinuz)
        .arg("-initrd")
        .arg(b.initramfs)
        .arg("-append")
        .arg(format!("{KERNEL_CMDLINE} {}", b.kernel_param))
        // The whole host root, read-only: the guest runs the host's binaries at
        // their paths. multidevs=remap keeps inode numbers unique across the host's
        // mounts (otherwise 9p warns and files can alias).
        .arg("-fsdev")
        .arg(format!(
            "local,id={HOST_ROOT_TAG},path=/,readonly=on,security_model=none,multidevs=remap"
        ))
        .arg("-device")
        .arg(format!(
            "virtio-9p-pci,fsdev={HOST_ROOT_TAG},mount_tag={HOST_ROOT_TAG}"
        ))
        .arg("-fsdev")
        .arg(format!(
            "local,id={OUT_TAG},path={},security_model=none",
            b.run_dir.display()
        ))
        .arg("-device")
        .arg(format!("virtio-9p-pci,fsdev={OUT_TAG},mount_tag={OUT_TAG}"))
        // The guest writes its status to port 0xf4 to power off with it.
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        // No stdin: QEMU must not put a CI runner's or the developer's terminal in
        // raw mode, and nothing is typed into the guest.
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!("xtask: $ {}", crate::process::describe(&cmd));

    let mut log = File::create(b.console_log)
        .with_context(|| format!("could not create {}", b.console_log.display()))?;
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start {QEMU} (package qemu-system-x86)"))?;
    let stdout = child.stdout.take().context("QEMU has no stdout")?;
    let (booted_tx, booted_rx) = mpsc::channel();
    let pump = thread::spawn(move || stream_console(stdout, &mut log, started, booted_tx));

    let mut heartbeat = StandingStill::heartbeat(b.run_dir.join(HEARTBEAT_FILE));
    let mut console = StandingStill::console(b.console_log.to_path_buf());
    let mut stopped = None;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        let now = Instant::now();
        let heartbeat_silent = heartbeat.silent_for(now);
        let why = match (heartbeat_silent, console.silent_for(now)) {
            (Some(silent), _) if silent > HEARTBEAT_STOPPED_AFTER => Some(format!(
                "the guest's heartbeat stopped {} s ago",
                silent.as_secs()
            )),
            // Only once guest.sh runs (the heartbeat started): boot and /init
            // are the timeout's business.
            (Some(_), Some(silent)) if silent > CONSOLE_SILENT_AFTER => Some(format!(
                "the console has been silent for {} s, the heartbeat going on",
                silent.as_secs()
            )),
            _ => None,
        };
        if let Some(why) = why {
            eprintln!(
                "\nxtask: vm: {why}: asking QEMU's monitor where the CPUs are, then killing QEMU"
            );
            let mut report = vec![why];
            report.extend(cpu_states(&monitor));
            for line in &report {
                eprintln!("xtask: vm:   {line}");
            }
            stopped = Some(report);
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        if started.elapsed() > b.timeout {
            eprintln!(
                "\nxtask: vm: guest still running after {} s: killing QEMU",
                b.timeout.as_secs()
            );
            // Ours to kill: the child we spawned, by its id.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(200));
    };
    let total = started.elapsed();
    // The pump ends at EOF, which follows QEMU's exit.
    let _ = pump.join();
    let boot = booted_rx.try_recv().ok();

    let rc = read_rc(b.run_dir);
    let outcome = match (status, stopped) {
        (None, Some(cpus)) => Outcome::Stopped(cpus),
        (None, None) => Outcome::TimedOut,
        (Some(status), _) => classify(status.code(), rc),
    };
    Ok(Report {
        outcome,
        boot,
        total,
        accel,
    })
}

/// Decides from QEMU's exit code and the rc file the guest may have written.
/// isa-debug-exit makes QEMU exit with (byte << 1) | 1; a guest that rebooted
/// (a panic, given panic=-1 and -no-reboot) makes it exit 0.
fn classify(qemu_code: Option<i32>, rc: Option<i32>) -> Outcome {
    match (qemu_code, rc) {
        // The rc file is authoritative: the exit code keeps only 7 bits of it.
        // Exit 0 with an rc file: isa-debug-exit failed and /init's fallback
        // `poweroff -f` ended the guest after the tests.
        (Some(code), Some(rc)) if code % 2 == 1 || code == 0 => Outcome::Finished(rc),
        (Some(0), _) => Outcome::Panicked,
        (Some(code), None) if code == (i32::from(INIT_FAILED) << 1) | 1 => Outcome::InitFailed,
        (Some(code), _) => Outcome::QemuFailed(code),
        // Killed by a signal: not by us (that is TimedOut), so someone else.
        (None, _) => Outcome::QemuFailed(-1),
    }
}

/// A file watched from the host: how long what `stamp` reads of it has
/// stood unchanged. Nothing until a first stamp is read (boot and /init are
/// the timeout's business).
struct StandingStill<S> {
    path: PathBuf,
    stamp: fn(&Path) -> Option<S>,
    last: Option<(S, Instant)>,
}

impl StandingStill<String> {
    /// The guest's heartbeat file: its content, where a write caught
    /// half-way (empty) is not a beat.
    fn heartbeat(path: PathBuf) -> Self {
        StandingStill {
            path,
            stamp: |path| {
                fs::read_to_string(path)
                    .ok()
                    .filter(|beat| !beat.trim().is_empty())
            },
            last: None,
        }
    }
}

impl StandingStill<u64> {
    /// The console log: its size, which only grows.
    fn console(path: PathBuf) -> Self {
        StandingStill {
            path,
            stamp: |path| fs::metadata(path).ok().map(|meta| meta.len()),
            last: None,
        }
    }
}

impl<S: PartialEq> StandingStill<S> {
    /// How long the stamp has stood unchanged, as of `now`.
    fn silent_for(&mut self, now: Instant) -> Option<Duration> {
        if let Some(stamp) = (self.stamp)(&self.path) {
            if self.last.as_ref().is_none_or(|(last, _)| *last != stamp) {
                self.last = Some((stamp, now));
            }
        }
        self.last
            .as_ref()
            .map(|(_, since)| now.saturating_duration_since(*since))
    }
}

/// Asks QEMU's human monitor for each CPU's registers, and keeps the lines
/// that say where a CPU is (RIP, flags, halted). A monitor that does not
/// answer in a few seconds means QEMU itself is stuck, which is said instead.
fn cpu_states(monitor: &Path) -> Vec<String> {
    use std::os::unix::net::UnixStream;
    let ask = || -> io::Result<String> {
        let mut stream = UnixStream::connect(monitor)?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        stream.write_all(b"info registers -a\n")?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 16384];
        let deadline = Instant::now() + Duration::from_secs(10);
        // The monitor never closes the stream: read until it falls quiet.
        while Instant::now() < deadline {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e),
            }
        }
        Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    match ask() {
        Ok(answer) => {
            let lines = where_the_cpus_are(&answer);
            if lines.is_empty() {
                vec![format!(
                    "QEMU's monitor gave no CPU state (QEMU itself may be stuck): {:?}",
                    answer.chars().take(200).collect::<String>()
                )]
            } else {
                lines
            }
        }
        Err(e) => vec![format!(
            "QEMU's monitor did not answer ({e}): QEMU itself may be stuck"
        )],
    }
}

/// From `info registers -a`: each CPU's RIP line with its halted flag (HLT=1
/// is an idle CPU, HLT=0 one that spins), named by the `CPU#N` line before it.
fn where_the_cpus_are(answer: &str) -> Vec<String> {
    let mut cpu = None;
    let mut lines = Vec::new();
    for line in answer.lines().map(str::trim) {
        if line.starts_with("CPU#") {
            cpu = Some(line);
        } else if line.starts_with("RIP=") {
            lines.push(format!("{} {line}", cpu.unwrap_or("CPU#?")));
        }
    }
    lines
}

fn read_rc(run_dir: &Path) -> Option<i32> {
    fs::read_to_string(run_dir.join("rc"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Copies the console to our stdout and the log as it comes, and reports when
/// /init's first line arrives (the boot time).
fn stream_console(
    mut from: impl Read,
    log: &mut File,
    started: Instant,
    booted: mpsc::Sender<Duration>,
) {
    let mut buf = [0u8; 8192];
    let mut line = Vec::new();
    let mut seen_init = false;
    let stdout = io::stdout();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        // A full disk or a closed terminal must not stop the guest: ignore errors.
        let _ = log.write_all(chunk);
        let mut out = stdout.lock();
        let _ = out.write_all(chunk);
        let _ = out.flush();
        if !seen_init {
            for &byte in chunk {
                if byte == b'\n' {
                    if String::from_utf8_lossy(&line).contains(INIT_MARKER) {
                        seen_init = true;
                        let _ = booted.send(started.elapsed());
                        break;
                    }
                    line.clear();
                } else {
                    line.push(byte);
                }
            }
        }
    }
}

/// KVM only where it really works: /dev/kvm here is a nested "PVM" module on
/// which stock kernels abort (`failed to set MSR 0x10a`, VM.md), so it must open
/// read-write AND be the real kvm_intel or kvm_amd. Otherwise TCG with every
/// feature it emulates.
fn accelerator() -> (&'static str, &'static str) {
    let kvm_usable = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
        && ["/sys/module/kvm_intel", "/sys/module/kvm_amd"]
            .iter()
            .any(|m| Path::new(m).exists());
    if kvm_usable {
        ("kvm", "host")
    } else {
        ("tcg", "max")
    }
}

/// A fresh run directory `target/vm/run-<kernel>/`, emptied first so an rc file
/// can only come from this boot.
pub fn fresh_run_dir(vm_dir: &Path, kernel_line: &str) -> Result<PathBuf> {
    let dir = vm_dir.join(format!("run-{kernel_line}"));
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("could not empty {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_is_silent_only_after_it_started_and_stood_still() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heartbeat");
        let mut beat = StandingStill::heartbeat(path.clone());
        let t0 = Instant::now();
        assert_eq!(
            beat.silent_for(t0),
            None,
            "no beat yet: the boot is the timeout's"
        );
        fs::write(&path, "12.5\n").unwrap();
        assert_eq!(beat.silent_for(t0), Some(Duration::ZERO));
        let t1 = t0 + Duration::from_secs(100);
        assert_eq!(beat.silent_for(t1), Some(Duration::from_secs(100)));
        // A write caught half-way is not a beat.
        fs::write(&path, "").unwrap();
        assert_eq!(beat.silent_for(t1), Some(Duration::from_secs(100)));
        fs::write(&path, "22.5\n").unwrap();
        assert_eq!(beat.silent_for(t1), Some(Duration::ZERO));
    }

    #[test]
    fn a_console_is_silent_from_its_last_growth() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut console = StandingStill::console(path.clone());
        let t0 = Instant::now();
        assert_eq!(console.silent_for(t0), None, "no log yet");
        fs::write(&path, "booting\n").unwrap();
        assert_eq!(console.silent_for(t0), Some(Duration::ZERO));
        let t1 = t0 + Duration::from_secs(400);
        assert_eq!(console.silent_for(t1), Some(Duration::from_secs(400)));
        fs::write(&path, "booting\ntest x ... ok\n").unwrap();
        assert_eq!(console.silent_for(t1), Some(Duration::ZERO));
    }

    #[test]
    fn keeps_where_each_cpu_is_from_the_monitor() {
        let answer = "QEMU 7.2.15 monitor - type 'help' for more information\r\n\
            (qemu) info cpus\r\n\
            * CPU #0: thread_id=1234\r\n\
              CPU #1: thread_id=1235\r\n\
            (qemu) info registers -a\r\n\
            \r\n\
            CPU#0\r\n\
            RAX=0000000000000000 RBX=ffffffff82613940 RCX=0000000000000001 RDX=0000000000000000\r\n\
            RIP=ffffffff81b2a0ae RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\r\n";
        assert_eq!(
            where_the_cpus_are(answer),
            ["CPU#0 RIP=ffffffff81b2a0ae RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1"]
        );
    }

    #[test]
    fn classifies_qemu_exits() {
        assert_eq!(classify(Some(1), Some(0)), Outcome::Finished(0));
        assert_eq!(classify(Some(203), Some(101)), Outcome::Finished(101));
        // rc 200 survives although the exit code keeps only 7 bits of it.
        assert_eq!(classify(Some(145), Some(200)), Outcome::Finished(200));
        assert_eq!(classify(Some(0), None), Outcome::Panicked);
        assert_eq!(classify(Some(0), Some(3)), Outcome::Finished(3));
        assert_eq!(classify(Some(251), None), Outcome::InitFailed);
        assert_eq!(classify(Some(1), None), Outcome::QemuFailed(1));
        assert_eq!(classify(None, None), Outcome::QemuFailed(-1));
    }
}

//! The hostile row: `clockprof serve -s syscall` left running for
//! `--hostile-minutes` (default 10) on a host where an unprivileged user
//! (`nobody`) does, all at once, what issue 21 found could hang, grow or
//! lock out the root daemon:
//! - runs a binary whose `.gnu_debugaltlink` names the user's FIFO;
//! - runs JIT processes whose /tmp/perf-PID.map are 20 hard links to one
//!   64 MiB map of short lines;
//! - runs 2,000 distinct short-lived binaries (copies of one);
//! - runs 6,000 processes, each under a name of its own;
//! - holds 64 idle keep-alive connections to serve;
//! - runs a binary whose DWARF nests 100,000 inlined calls deep;
//! - keeps a process running from a FUSE mount whose daemon is stopped
//!   (go-fuse's loopback, tests/fixtures/fusefs), in a mount namespace
//!   serve's table does not list. /dev/fuse is root's alone here, so root
//!   mounts it and runs that process, as a user would in a user namespace
//!   of their own. At the end it makes its reads (MONOTONIC, from
//!   anonymous code, `jitwait`) under the beside fixture's name, whose
//!   series is live: a new label set then would be `[other]`, the user's
//!   6,000 names filling the label cap for --series-ttl.
//!
//! Every 5 s: /healthz and /metrics must answer 200 within 3 s, and serve's
//! resident memory and descriptors are read. A fixture beside the user
//! (root's, its own name) makes 100 clock_gettime(MONOTONIC) calls every
//! 30 s and must be counted exactly. One minute after the user stops,
//! serve's descriptors must be back at their idle level.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::daemon::{Daemon, ReadyWhen, Stream};
// One writer of the crafted DWARF for the suite and this soak (see its header).
#[path = "../../../tests/src/crafted_dwarf.rs"]
mod crafted_dwarf;
use super::scenario::Clockprof;
use crate::{process, workspace};
use crafted_dwarf::deeply_inlined_dwarf;

const NOBODY: u32 = 65534;
const LISTEN: &str = "127.0.0.1:19744";
const DISTINCT_BINARIES: usize = 2_000;
const RENAMED_PROCESSES: usize = 6_000;
const IDLE_CONNECTIONS: usize = 64;
const PERF_MAP_LINKS: usize = 20;
const PERF_MAP_BYTES: usize = 64 << 20;
const DWARF_DEPTH: usize = 100_000;
const BESIDE_READS: u64 = 100;
const ON_FUSE_READS: u64 = 100;
const BESIDE_EVERY: Duration = Duration::from_secs(30);
const PROBE_EVERY: Duration = Duration::from_secs(5);
const ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// How long after the user stops serve must be back at its idle descriptors.
const SETTLE: Duration = Duration::from_secs(60);

pub struct Hostile {
    minutes: u64,
    probes: usize,
    health_failures: Vec<String>,
    scrape_failures: Vec<String>,
    idle_rss_kib: u64,
    peak_rss_kib: u64,
    idle_fds: usize,
    peak_fds: usize,
    settled_fds: usize,
    settled_rss_kib: u64,
    beside_expected: u64,
    beside_counted: f64,
    /// Whether the process on the stopped FUSE mount made its reads and
    /// exited (they are then among the beside reads expected).
    on_fuse_finished: bool,
    user_actions: UserActions,
}

#[derive(Default, Clone)]
struct UserActions {
    distinct_binaries: usize,
    renamed: usize,
    jit_processes: usize,
    fifo_runs: usize,
    deep_dwarf_runs: usize,
}

/// What the user runs, prepared in a directory of theirs.
#[derive(Clone)]
struct UserFiles {
    dir: PathBuf,
    fixture: PathBuf,
    altlinked: PathBuf,
    deep_dwarf: PathBuf,
    big_map: PathBuf,
}

fn nobodys(path: &Path) -> Result<()> {
    chown(path, Some(NOBODY), Some(NOBODY))
        .with_context(|| format!("could not give {} to nobody", path.display()))
}

fn objcopy(args: &[String], input: &Path, output: &Path) -> Result<()> {
    let status = Command::new("objcopy")
        .args(args)
        .arg(input)
        .arg(output)
        .status()
        .context("could not run objcopy")?;
    if !status.success() {
        bail!("objcopy {args:?} failed");
    }
    nobodys(output)
}

fn symbol_range(path: &Path, name: &str) -> Result<(u64, u64)> {
    let output = Command::new("nm")
        .args(["-S", "--defined-only"])
        .arg(path)
        .output()
        .context("could not run nm")?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields[..] {
                [address, size, _, symbol] if symbol == name => Some((
                    u64::from_str_radix(address, 16).ok()?,
                    u64::from_str_radix(size, 16).ok()?,
                )),
                _ => None,
            }
        })
        .with_context(|| format!("{name} is not in {}", path.display()))
}

impl UserFiles {
    fn prepare(bench_dir: &Path, fixture: &Path) -> Result<UserFiles> {
        let dir = bench_dir.join("hostile-user");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        nobodys(&dir)?;
        let user_fixture = dir.join("fixture");
        std::fs::copy(fixture, &user_fixture)?;
        nobodys(&user_fixture)?;

        let fifo = dir.join("fifo");
        let c_fifo = std::ffi::CString::new(fifo.to_str().context("path")?)?;
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o666) } != 0 {
            bail!("could not make {}", fifo.display());
        }
        nobodys(&fifo)?;
        let mut altlink = fifo.to_str().context("path")?.as_bytes().to_vec();
        altlink.push(0);
        altlink.extend_from_slice(&[0x5a; 20]);
        let altlink_file = dir.join("altlink.section");
        std::fs::write(&altlink_file, altlink)?;
        let altlinked = dir.join("altlinked");
        objcopy(
            &[format!(
                "--add-section=.gnu_debugaltlink={}",
                altlink_file.display()
            )],
            &user_fixture,
            &altlinked,
        )?;

        let (low, size) = symbol_range(fixture, "fixture_hot")?;
        let (info, abbrev) = deeply_inlined_dwarf(low, size, DWARF_DEPTH);
        let (info_file, abbrev_file) = (dir.join("info.section"), dir.join("abbrev.section"));
        std::fs::write(&info_file, info)?;
        std::fs::write(&abbrev_file, abbrev)?;
        let deep_dwarf = dir.join("deepdwarf");
        objcopy(
            &[
                format!("--update-section=.debug_info={}", info_file.display()),
                format!("--update-section=.debug_abbrev={}", abbrev_file.display()),
                "--remove-section=.debug_aranges".to_string(),
                "--remove-section=.debug_rnglists".to_string(),
                "--remove-section=.debug_line".to_string(),
            ],
            &user_fixture,
            &deep_dwarf,
        )?;

        let big_map = dir.join("big.map");
        let line = b"1 1 x\n";
        let mut text = Vec::with_capacity(PERF_MAP_BYTES);
        while text.len() + line.len() <= PERF_MAP_BYTES {
            text.extend_from_slice(line);
        }
        std::fs::write(&big_map, text)?;
        nobodys(&big_map)?;
        Ok(UserFiles {
            dir,
            fixture: user_fixture,
            altlinked,
            deep_dwarf,
            big_map,
        })
    }
}

fn as_nobody(program: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn run_quietly(command: &mut Command) {
    let _ = command.status();
}

/// JIT processes whose perf maps are hard links, made by the user, to one
/// big map: started waiting, linked, released, reaped; the links removed.
fn jit_processes_with_linked_maps(files: &UserFiles) -> usize {
    let mut started: Vec<Child> = Vec::new();
    for _ in 0..PERF_MAP_LINKS {
        let Ok(mut child) = as_nobody(&files.fixture)
            .args(["jitwait", "2000"])
            .stdout(Stdio::piped())
            .spawn()
        else {
            continue;
        };
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let link = format!("/tmp/perf-{}.map", child.id());
        run_quietly(
            as_nobody(Path::new("/bin/ln"))
                .arg(&files.big_map)
                .arg(&link),
        );
        started.push(child);
    }
    let count = started.len();
    for mut child in started {
        // SAFETY: signalling a child we started.
        unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
        let _ = child.wait();
        let _ = std::fs::remove_file(format!("/tmp/perf-{}.map", child.id()));
    }
    count
}

/// The user's script, until `stop`: what it did.
fn hostile_user(files: &UserFiles, until: Instant, stop: &AtomicBool) -> UserActions {
    let mut done = UserActions::default();
    let rounds = DISTINCT_BINARIES.max(1);
    let total = until.saturating_duration_since(Instant::now());
    let pace = total / rounds as u32;
    let mut round = 0;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        if done.distinct_binaries < DISTINCT_BINARIES {
            let copy = files.dir.join(format!("copy{round}"));
            if std::fs::copy(&files.fixture, &copy).is_ok() && nobodys(&copy).is_ok() {
                run_quietly(as_nobody(&copy).args(["counts", "4"]));
                let _ = std::fs::remove_file(&copy);
                done.distinct_binaries += 1;
            }
        }
        for _ in 0..RENAMED_PROCESSES.div_ceil(rounds) {
            if done.renamed < RENAMED_PROCESSES {
                run_quietly(
                    as_nobody(&files.fixture)
                        .args(["counts", "1"])
                        .env("CLOCKPROF_FIXTURE_COMM", format!("n{}", done.renamed)),
                );
                done.renamed += 1;
            }
        }
        if round % 20 == 0 {
            run_quietly(as_nobody(&files.altlinked).args(["counts", "10"]));
            done.fifo_runs += 1;
            run_quietly(as_nobody(&files.deep_dwarf).args(["counts", "10"]));
            done.deep_dwarf_runs += 1;
        }
        if round % 200 == 0 {
            done.jit_processes += jit_processes_with_linked_maps(files);
        }
        round += 1;
        if let Some(rest) = pace.checked_sub(started.elapsed()) {
            thread::sleep(rest);
        }
    }
    done
}

/// Holds IDLE_CONNECTIONS idle connections, opening a new one for each that
/// serve closes, as a user bent on taking every slot would: a process of
/// the unprivileged user (serve tells loopback clients apart by the socket's
/// owner, so connections of the bench's own, root, would share the probes'
/// slots). Python, Debian's: the bench has no other program to run as them.
const HOLD_IDLE_CONNECTIONS: &str = r#"
import socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def idle():
    try:
        s = socket.create_connection((host, port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.setblocking(False)
        return s
    except OSError:
        return None
held = [idle() for _ in range(count)]
while True:
    for i, s in enumerate(held):
        closed = s is None
        while s is not None:
            try:
                if not s.recv(4096):
                    closed = True
                    break
            except BlockingIOError:
                break
            except OSError:
                closed = True
                break
        if closed:
            if s is not None:
                s.close()
            held[i] = idle()
    time.sleep(0.5)
"#;

fn hold_idle_connections() -> Result<Child> {
    let (host, port) = LISTEN.split_once(':').context("LISTEN is host:port")?;
    as_nobody(Path::new("/usr/bin/python3"))
        .args(["-c", HOLD_IDLE_CONNECTIONS, host, port])
        .arg(IDLE_CONNECTIONS.to_string())
        .spawn()
        .context("could not start /usr/bin/python3 as nobody")
}

/// The status of `GET PATH`, if serve answered within ANSWER_WITHIN.
/// A process running from a FUSE mount whose daemon is then stopped (see
/// the module's comment), in a private mount namespace; its PID is written
/// to `dir/state` once the daemon is stopped. SIGUSR1 makes it read the
/// clock ON_FUSE_READS times and exit; the namespace's script then lets the
/// daemon go on and ends it.
fn stopped_fuse_mount(bench_dir: &Path, fixture: &Path) -> Result<(Child, u32)> {
    let fusefs = bench_dir.join("fusefs");
    process::run(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&fusefs)
            .arg(".")
            .current_dir(workspace::root().join("tests/fixtures/fusefs"))
            .env("GOFLAGS", "-mod=readonly")
            .env("GOTOOLCHAIN", "local"),
    )?;
    let dir = bench_dir.join("stopped-fuse");
    let _ = std::fs::remove_dir_all(&dir);
    let (lower, mount) = (dir.join("lower"), dir.join("mnt"));
    std::fs::create_dir_all(&lower)?;
    std::fs::create_dir_all(&mount)?;
    std::fs::copy(fixture, lower.join("onfuse"))?;
    let state = dir.join("state");
    let script = workspace::root().join("tests/fixtures/stopped_fuse.sh");
    let mut namespace = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh"])
        .arg(&script)
        .args(["jitwait", &ON_FUSE_READS.to_string()])
        .env("CLOCKPROF_FIXTURE_COMM", "beside")
        .env("FUSEFS", &fusefs)
        .env("LOWER", &lower)
        .env("MNT", &mount)
        .env("STATE", &state)
        .stdout(Stdio::null())
        .spawn()
        .context("could not start the FUSE mount's namespace")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // "DAEMON_PID FIXTURE_PID", once the daemon is stopped.
        if let Ok(pids) = std::fs::read_to_string(&state) {
            let fixture = pids.split_whitespace().nth(1).context("no fixture PID")?;
            return Ok((namespace, fixture.parse()?));
        }
        if namespace.try_wait()?.is_some() || Instant::now() > deadline {
            let _ = namespace.kill();
            bail!("the FUSE mount did not come up");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn get(path: &str) -> Result<u16> {
    let mut stream = TcpStream::connect(LISTEN)?;
    stream.set_read_timeout(Some(ANSWER_WITHIN))?;
    stream.set_write_timeout(Some(ANSWER_WITHIN))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {LISTEN}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let head = String::from_utf8_lossy(&response);
    head.split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .context("no status line")
}

fn metrics() -> Result<String> {
    let mut stream = TcpStream::connect(LISTEN)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {LISTEN}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .to_string();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

pub fn measure(bin: &Clockprof, bench_dir: &Path, minutes: u64) -> Result<Hostile> {
    let fixture = bench_dir.join("hostile_fixture");
    process::run(
        Command::new("gcc")
            .args(["-O1", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(&fixture)
            .arg(workspace::root().join("tests/fixtures/syscall_fixture.c")),
    )?;
    let files = UserFiles::prepare(bench_dir, &fixture)?;
    let mut serve = Command::new(&bin.path);
    serve.args(["serve", "-s", "syscall", "--listen", LISTEN]);
    let daemon = Daemon::start(
        "clockprof serve",
        serve,
        &ReadyWhen {
            stream: Stream::Stderr,
            line_contains: "serving",
            settle: Duration::from_secs(1),
        },
    )?;
    let pid = daemon.pid();
    thread::sleep(Duration::from_secs(10));
    let (idle_rss_kib, idle_fds) = (rss_kib(pid), fds(pid));

    let (mut fuse_namespace, on_fuse) = stopped_fuse_mount(bench_dir, &fixture)?;
    let until = Instant::now() + Duration::from_secs(minutes * 60);
    let stop = Arc::new(AtomicBool::new(false));
    let mut idle_connections = hold_idle_connections()?;
    let user = {
        let stop = Arc::clone(&stop);
        let files = files.clone();
        thread::spawn(move || hostile_user(&files, until, &stop))
    };
    let mut result = Hostile {
        minutes,
        probes: 0,
        health_failures: Vec::new(),
        scrape_failures: Vec::new(),
        idle_rss_kib,
        peak_rss_kib: idle_rss_kib,
        idle_fds,
        peak_fds: idle_fds,
        settled_fds: 0,
        settled_rss_kib: 0,
        beside_expected: 0,
        beside_counted: 0.0,
        on_fuse_finished: false,
        user_actions: UserActions::default(),
    };
    let started = Instant::now();
    let mut next_beside = Instant::now();
    while Instant::now() < until {
        if Instant::now() >= next_beside {
            let status = Command::new(&fixture)
                .args(["counts", &BESIDE_READS.to_string()])
                .env("CLOCKPROF_FIXTURE_COMM", "beside")
                .stdout(Stdio::null())
                .status()?;
            if status.success() {
                result.beside_expected += BESIDE_READS;
            }
            next_beside += BESIDE_EVERY;
        }
        let at = started.elapsed().as_secs();
        match get("/healthz") {
            Ok(200) => {}
            Ok(status) => result.health_failures.push(format!("{at} s: {status}")),
            Err(err) => result.health_failures.push(format!("{at} s: {err}")),
        }
        match get("/metrics") {
            Ok(200) => {}
            Ok(status) => result.scrape_failures.push(format!("{at} s: {status}")),
            Err(err) => result.scrape_failures.push(format!("{at} s: {err}")),
        }
        result.probes += 1;
        result.peak_rss_kib = result.peak_rss_kib.max(rss_kib(pid));
        result.peak_fds = result.peak_fds.max(fds(pid));
        thread::sleep(PROBE_EVERY);
    }
    stop.store(true, Ordering::Relaxed);
    result.user_actions = user.join().unwrap_or_default();
    let _ = idle_connections.kill();
    let _ = idle_connections.wait();
    // SAFETY: signalling the process the namespace's script started.
    unsafe { libc::kill(on_fuse as i32, libc::SIGUSR1) };
    result.on_fuse_finished = fuse_namespace.wait()?.success();
    if result.on_fuse_finished {
        result.beside_expected += ON_FUSE_READS;
    }
    thread::sleep(SETTLE);
    result.settled_fds = fds(pid);
    result.settled_rss_kib = rss_kib(pid);
    let text = metrics().unwrap_or_default();
    result.beside_counted = text
        .lines()
        .filter(|l| l.starts_with("clockprof_clock_reads_total{process=\"beside\""))
        .filter(|l| l.contains("clock=\"MONOTONIC\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();

    let finished = daemon.stop()?;
    if !finished.status.success() {
        bail!(
            "serve ended with {}: {}",
            finished.status,
            finished.stderr.join("\n")
        );
    }
    let _ = std::fs::remove_dir_all(&files.dir);
    Ok(result)
}

impl Hostile {
    fn verdicts(&self) -> Vec<(&'static str, bool)> {
        vec![
            (
                "/healthz 200 at every probe",
                self.health_failures.is_empty(),
            ),
            (
                "/metrics 200 at every probe",
                self.scrape_failures.is_empty(),
            ),
            (
                "the process on the stopped FUSE mount ran to its end",
                self.on_fuse_finished,
            ),
            (
                "the fixtures beside counted exactly",
                self.beside_counted == self.beside_expected as f64,
            ),
            (
                "descriptors back to idle (+4) a minute after",
                self.settled_fds <= self.idle_fds + 4,
            ),
            (
                "peak RSS under 2x idle + 128 MiB (perf map cache) + 64 MiB",
                self.peak_rss_kib <= 2 * self.idle_rss_kib + (192 << 10),
            ),
        ]
    }

    pub fn print(&self) {
        let done = &self.user_actions;
        println!(
            "\nHostile user beside serve for {} min ({} probes, every {} s):",
            self.minutes,
            self.probes,
            PROBE_EVERY.as_secs()
        );
        println!(
            "  the user ran {} distinct binaries, {} renamed processes, {} JIT processes \
             with linked {} MiB perf maps, {} altlink-FIFO runs, {} deep-DWARF runs, \
             held {IDLE_CONNECTIONS} idle connections, and kept a process running from a FUSE mount \
             whose daemon was stopped",
            done.distinct_binaries,
            done.renamed,
            done.jit_processes,
            PERF_MAP_BYTES >> 20,
            done.fifo_runs,
            done.deep_dwarf_runs
        );
        println!(
            "  RSS: idle {} MiB, peak {} MiB, a minute after {} MiB; fds: idle {}, peak {}, a \
             minute after {}",
            self.idle_rss_kib >> 10,
            self.peak_rss_kib >> 10,
            self.settled_rss_kib >> 10,
            self.idle_fds,
            self.peak_fds,
            self.settled_fds
        );
        println!(
            "  beside: {} of {} reads counted ({ON_FUSE_READS} of them from the stopped FUSE mount)",
            self.beside_counted, self.beside_expected
        );
        for (what, held) in self.verdicts() {
            println!("  {} {what}", if held { "ok  " } else { "FAIL" });
        }
        for failure in self.health_failures.iter().take(5) {
            println!("    /healthz {failure}");
        }
        for failure in self.scrape_failures.iter().take(5) {
            println!("    /metrics {failure}");
        }
    }

    pub fn json(&self) -> Value {
        let done = &self.user_actions;
        json!({
            "minutes": self.minutes,
            "probes": self.probes,
            "health_failures": self.health_failures,
            "scrape_failures": self.scrape_failures,
            "idle_rss_kib": self.idle_rss_kib,
            "peak_rss_kib": self.peak_rss_kib,
            "settled_rss_kib": self.settled_rss_kib,
            "idle_fds": self.idle_fds,
            "peak_fds": self.peak_fds,
            "settled_fds": self.settled_fds,
            "beside_expected": self.beside_expected,
            "beside_counted": self.beside_counted,
            "on_fuse_reads": ON_FUSE_READS,
            "on_fuse_finished": self.on_fuse_finished,
            "user": {
                "distinct_binaries": done.distinct_binaries,
                "renamed": done.renamed,
                "jit_processes": done.jit_processes,
                "fifo_runs": done.fifo_runs,
                "deep_dwarf_runs": done.deep_dwarf_runs,
            },
            "verdicts": self.verdicts().into_iter().map(|(what, held)| json!({"check": what, "held": held})).collect::<Vec<_>>(),
        })
    }
}

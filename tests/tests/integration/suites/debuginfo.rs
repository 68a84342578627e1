//! Debug information where it exists: a stripped fixture's two static
//! functions, named through a separate debug file found by build id under a
//! debug directory, through Debian's debuginfod serving the split debug file
//! on loopback (then from clockprof's cache), and, without any, as
//! `FILE+0xADDR`, two different names.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clockprof_tests::*;
use object::{Object, ObjectSymbol};

const CALLS: u64 = 1000;
const MONOTONIC: &str = "[syscall clock_gettime MONOTONIC direct]";
const REALTIME: &str = "[syscall clock_gettime REALTIME direct]";

/// The debuginfo fixture, built with -g and split as distributions do:
/// `full` (with its symbols), `debug/fixture.debug` (objcopy
/// --only-keep-debug), `stripped` (--strip-all: only .dynsym, which has
/// neither static function nor main) and `linked` (stripped, with a
/// .gnu_debuglink to the debug file, which is not beside it).
struct Fixture {
    dir: TempDir,
    full: PathBuf,
    debug: PathBuf,
    stripped: PathBuf,
    linked: PathBuf,
    /// An empty debug directory: the host's /usr/lib/debug is not looked in.
    no_debug_dirs: PathBuf,
}

fn run_tool(program: &str, args: &[&OsStr]) {
    let status = Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?} failed");
}

impl Fixture {
    fn build(name: &str, optimization: &str) -> Fixture {
        let dir = TempDir::new(name);
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/debuginfo_fixture.c");
        let full = dir.join("full");
        let debug_dir = dir.join("debug");
        std::fs::create_dir(&debug_dir).unwrap();
        let debug = debug_dir.join("fixture.debug");
        let stripped = dir.join("stripped");
        let linked = dir.join("linked");
        let no_debug_dirs = dir.join("no-debug-dirs");
        std::fs::create_dir(&no_debug_dirs).unwrap();
        run_tool(
            "gcc",
            &[
                OsStr::new(optimization),
                OsStr::new("-g"),
                OsStr::new("-fno-omit-frame-pointer"),
                OsStr::new("-Wl,--build-id"),
                OsStr::new("-o"),
                full.as_os_str(),
                source.as_os_str(),
            ],
        );
        run_tool(
            "objcopy",
            &[
                OsStr::new("--only-keep-debug"),
                full.as_os_str(),
                debug.as_os_str(),
            ],
        );
        run_tool(
            "objcopy",
            &[
                OsStr::new("--strip-all"),
                full.as_os_str(),
                stripped.as_os_str(),
            ],
        );
        std::fs::copy(&stripped, &linked).unwrap();
        let link = format!("--add-gnu-debuglink={}", debug.display());
        run_tool("objcopy", &[OsStr::new(&link), linked.as_os_str()]);
        for binary in [&full, &stripped, &linked] {
            std::fs::set_permissions(binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Fixture {
            dir,
            full,
            debug,
            stripped,
            linked,
            no_debug_dirs,
        }
    }

    fn build_id(&self) -> Vec<u8> {
        let data = std::fs::read(&self.full).unwrap();
        let elf = object::File::parse(&*data).unwrap();
        elf.build_id()
            .unwrap()
            .expect("gcc gave a build id")
            .to_vec()
    }

    /// [start, end) of a function in the unstripped build.
    fn range_of(&self, function: &str) -> (u64, u64) {
        let data = std::fs::read(&self.full).unwrap();
        let elf = object::File::parse(&*data).unwrap();
        let symbol = elf
            .symbols()
            .find(|s| s.name() == Ok(function))
            .unwrap_or_else(|| panic!("{function} is in the symbol table"));
        (symbol.address(), symbol.address() + symbol.size())
    }

    /// `DIR/.build-id/xx/rest.debug`, as distributions install it.
    fn install_debug_file(&self, debug_dir: &Path, debug_file: &Path) {
        let id: String = self.build_id().iter().map(|b| format!("{b:02x}")).collect();
        let sub = debug_dir.join(".build-id").join(&id[..2]);
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::copy(debug_file, sub.join(format!("{}.debug", &id[2..]))).unwrap();
    }
}

/// `clockprof record -s syscall -o OUT.folded -- BINARY 1000` with `env`;
/// its folded lines, stderr and how long it took.
fn record(
    fixture: &Fixture,
    binary: &Path,
    env: &[(&str, &OsStr)],
) -> (Vec<(String, u64)>, String, Duration) {
    // A hang (a debug file opened blocking) fails the test, not the suite.
    let mut clockprof = Clockprof::record()
        .sources("syscall")
        .output(&fixture.dir.join("out.folded"))
        .deadline(Duration::from_secs(120))
        .env_remove("DEBUGINFOD_URLS")
        .env("CLOCKPROF_DEBUG_DIRS", &fixture.no_debug_dirs);
    for (name, value) in env {
        clockprof = clockprof.env(name, value);
    }
    let started = Instant::now();
    let run = clockprof.run([binary.as_os_str(), os(&CALLS.to_string())]);
    let took = started.elapsed();
    assert!(run.status.success(), "{}", run.stderr);
    (run.folded(), run.stderr, took)
}

/// The user frames of the stack ending in `leaf`, outermost first (the root
/// and the leaf left out); there must be exactly one, of CALLS reads.
fn frames_to(folded: &[(String, u64)], leaf: &str) -> Vec<String> {
    let stacks: Vec<&(String, u64)> = folded
        .iter()
        .filter(|(stack, _)| stack.ends_with(leaf))
        .collect();
    assert_eq!(stacks.len(), 1, "{folded:?}");
    assert_eq!(stacks[0].1, CALLS, "{folded:?}");
    let frames: Vec<String> = stacks[0].0.split(';').map(str::to_string).collect();
    frames[1..frames.len() - 1].to_vec()
}

/// `binary+0xADDR` split into the file name and the address.
fn file_and_address(frame: &str) -> (&str, u64) {
    let (file, address) = frame
        .split_once("+0x")
        .unwrap_or_else(|| panic!("{frame} is not FILE+0xADDR"));
    (file, u64::from_str_radix(address, 16).unwrap())
}

#[test]
fn stripped_functions_are_named_by_file_and_virtual_address() {
    let fixture = Fixture::build("stripped-names", "-O1");
    let (folded, stderr, _) = record(&fixture, &fixture.stripped, &[]);
    let alpha = frames_to(&folded, MONOTONIC);
    let beta = frames_to(&folded, REALTIME);
    let (file, alpha_address) = file_and_address(alpha.last().unwrap());
    assert_eq!(file, "stripped", "{alpha:?}");
    let (file, beta_address) = file_and_address(beta.last().unwrap());
    assert_eq!(file, "stripped", "{beta:?}");
    assert_ne!(alpha_address, beta_address);
    // The addresses are the ELF virtual addresses of the syscalls, inside
    // each function as the unstripped build's symbol table has it (what
    // addr2line -e and nm speak).
    let (start, end) = fixture.range_of("static_clock_alpha");
    assert!(
        (start..end).contains(&alpha_address),
        "{alpha_address:#x} in {start:#x}..{end:#x}"
    );
    let (start, end) = fixture.range_of("static_clock_beta");
    assert!(
        (start..end).contains(&beta_address),
        "{beta_address:#x} in {start:#x}..{end:#x}"
    );
    // main, unnamed too, called both: its two call sites.
    let (start, end) = fixture.range_of("main");
    for frames in [&alpha, &beta] {
        let (file, caller) = file_and_address(&frames[frames.len() - 2]);
        assert_eq!(file, "stripped");
        assert!(
            (start..end).contains(&caller),
            "{caller:#x} in {start:#x}..{end:#x}"
        );
    }
    assert!(!stderr.contains("note:"), "{stderr}");
}

#[test]
fn debug_file_under_a_debug_dir_names_static_functions_by_build_id() {
    let fixture = Fixture::build("debug-dir", "-O1");
    let debug_dir = fixture.dir.join("usr-lib-debug");
    fixture.install_debug_file(&debug_dir, &fixture.debug);
    // `stripped` has no .gnu_debuglink: the build id alone finds the file.
    let (folded, stderr, _) = record(
        &fixture,
        &fixture.stripped,
        &[("CLOCKPROF_DEBUG_DIRS", debug_dir.as_os_str())],
    );
    let alpha = frames_to(&folded, MONOTONIC);
    let beta = frames_to(&folded, REALTIME);
    assert_eq!(
        alpha[alpha.len() - 2..],
        ["main", "static_clock_alpha"],
        "{folded:?}"
    );
    assert_eq!(
        beta[beta.len() - 2..],
        ["main", "static_clock_beta"],
        "{folded:?}"
    );
    assert!(!stderr.contains("note:"), "{stderr}");
}

#[test]
fn debug_file_of_another_build_is_not_used() {
    let fixture = Fixture::build("debug-dir-other", "-O1");
    let other = Fixture::build("debug-dir-other-build", "-O2");
    assert_ne!(fixture.build_id(), other.build_id());
    let debug_dir = fixture.dir.join("usr-lib-debug");
    // Another build's debug file, under this build's id.
    fixture.install_debug_file(&debug_dir, &other.debug);
    let (folded, _, _) = record(
        &fixture,
        &fixture.stripped,
        &[("CLOCKPROF_DEBUG_DIRS", debug_dir.as_os_str())],
    );
    for leaf in [MONOTONIC, REALTIME] {
        let frames = frames_to(&folded, leaf);
        assert_eq!(
            file_and_address(frames.last().unwrap()).0,
            "stripped",
            "{folded:?}"
        );
    }
}

/// Debian's debuginfod serving DIR on a free loopback port, stopped on drop
/// (its database lives in the test's directory).
struct DebuginfodServer {
    child: Child,
    url: String,
}

impl DebuginfodServer {
    fn start(served: &Path, database: &Path, build_id: &[u8]) -> DebuginfodServer {
        let port = free_port();
        let child = Command::new("debuginfod")
            .args(["-F", "-p", &port.to_string(), "-d"])
            .arg(database)
            .arg(served)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("debuginfod runs (Debian's debuginfod package: cargo xtask setup installs it)");
        let server = DebuginfodServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        // It scans DIR in the background: wait until it serves the file.
        let id: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_status(port, &format!("/buildid/{id}/debuginfo")) != Some(200) {
            assert!(Instant::now() < deadline, "debuginfod never served {id}");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }
}

impl Drop for DebuginfodServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

#[test]
fn debuginfod_names_static_functions_and_its_cache_keeps_them() {
    let fixture = Fixture::build("debuginfod", "-O1");
    let id: String = fixture
        .build_id()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let served = fixture.debug.parent().unwrap();
    let server = DebuginfodServer::start(
        served,
        &fixture.dir.join("debuginfod.sqlite"),
        &fixture.build_id(),
    );
    let cache_parent = fixture.dir.join("cache");
    std::fs::create_dir(&cache_parent).unwrap();
    let cache = cache_parent.join("debuginfod");
    let url = server.url.clone();
    let env = [
        ("DEBUGINFOD_URLS", OsStr::new(&url)),
        ("DEBUGINFOD_CACHE_PATH", cache.as_os_str()),
    ];
    // `linked` has a .gnu_debuglink, but its debug file is only on the server.
    let (folded, stderr, fetching) = record(&fixture, &fixture.linked, &env);
    let alpha = frames_to(&folded, MONOTONIC);
    let beta = frames_to(&folded, REALTIME);
    assert_eq!(
        alpha[alpha.len() - 2..],
        ["main", "static_clock_alpha"],
        "{folded:?}"
    );
    assert_eq!(
        beta[beta.len() - 2..],
        ["main", "static_clock_beta"],
        "{folded:?}"
    );
    assert!(!stderr.contains("note:"), "{stderr}");
    // The cache: a private directory and the very debug file.
    let meta = std::fs::symlink_metadata(&cache).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    let cached = cache.join(format!("{id}.debug"));
    assert_eq!(
        std::fs::metadata(&cached).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        std::fs::read(&fixture.debug).unwrap()
    );

    // The server gone, the cache names them; the refused connection (for
    // the other files' build ids) is said once.
    drop(server);
    let (folded, stderr, cached_run) = record(&fixture, &fixture.linked, &env);
    let alpha = frames_to(&folded, MONOTONIC);
    assert_eq!(
        alpha[alpha.len() - 2..],
        ["main", "static_clock_alpha"],
        "{folded:?}"
    );
    let failures = stderr.matches("debuginfod server").count();
    assert!(failures <= 1, "{stderr}");
    eprintln!(
        "recording with the debug file fetched: {} ms; from the cache: {} ms",
        fetching.as_millis(),
        cached_run.as_millis()
    );
}

/// A server that accepts connections and never answers.
struct SilentServer {
    url: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentServer {
    fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                if let Ok((stream, _)) = listener.accept() {
                    held.push(stream);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        SilentServer {
            url,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn a_silent_debuginfod_server_costs_at_most_its_timeout_once() {
    let fixture = Fixture::build("debuginfod-silent", "-O1");
    let (_, _, baseline) = record(&fixture, &fixture.stripped, &[]);
    let server = SilentServer::start();
    let cache_parent = fixture.dir.join("cache");
    std::fs::create_dir(&cache_parent).unwrap();
    let cache = cache_parent.join("debuginfod");
    let (folded, stderr, took) = record(
        &fixture,
        &fixture.stripped,
        &[
            ("DEBUGINFOD_URLS", OsStr::new(&server.url)),
            ("DEBUGINFOD_CACHE_PATH", cache.as_os_str()),
            ("DEBUGINFOD_TIMEOUT", OsStr::new("2")),
        ],
    );
    drop(server);
    // Named as without a server, and the failure said once, though several
    // files (the fixture, libc, ld.so) had frames to ask about.
    for leaf in [MONOTONIC, REALTIME] {
        let frames = frames_to(&folded, leaf);
        assert_eq!(
            file_and_address(frames.last().unwrap()).0,
            "stripped",
            "{folded:?}"
        );
    }
    assert_eq!(
        stderr.matches("did not answer within 2000 ms").count(),
        1,
        "{stderr}"
    );
    assert_eq!(stderr.matches("note:").count(), 1, "{stderr}");
    let extra = took.saturating_sub(baseline);
    eprintln!(
        "recording without a server: {} ms; with a silent one: {} ms",
        baseline.as_millis(),
        took.as_millis()
    );
    assert!(
        extra < Duration::from_millis(3500),
        "{} ms more",
        extra.as_millis()
    );
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
}

#[test]
fn a_fifo_named_like_the_debug_link_beside_a_users_binary_is_never_opened() {
    let fixture = Fixture::build("debuglink-fifo", "-O1");
    // `linked` in a directory of an unprivileged user, who planted a FIFO
    // under the name its .gnu_debuglink gives: opening it would block.
    let users = fixture.dir.join("users");
    std::fs::create_dir(&users).unwrap();
    let binary = users.join("linked");
    std::fs::copy(&fixture.linked, &binary).unwrap();
    let fifo = std::ffi::CString::new(users.join("fixture.debug").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0);
    let users_c = std::ffi::CString::new(users.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::chown(users_c.as_ptr(), 65534, 65534) }, 0);
    // No debug file anywhere: blazesym, following the link, would try the
    // directory beside the binary last.
    let (folded, stderr, _) = record(&fixture, &binary, &[]);
    let alpha = frames_to(&folded, MONOTONIC);
    let (file, address) = file_and_address(alpha.last().unwrap());
    assert_eq!(file, "linked", "{folded:?}");
    let (start, end) = fixture.range_of("static_clock_alpha");
    assert!(
        (start..end).contains(&address),
        "{address:#x} in {start:#x}..{end:#x}"
    );
    assert!(!stderr.contains("note:"), "{stderr}");
}

/// The status of `GET /healthz` on `port`, or 0 without an answer in 2 s.
fn healthz(port: u16) -> u16 {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let _ = write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or(0)
}

/// serve names every read at once, so a debuginfod server that never
/// answers must not hold its read loop: fetches run on a worker of their
/// own. With 30 s to spend on the silent server, /healthz stays 200 while
/// a stripped binary's unnamed frames wait for their debug file (it went
/// 503 after 5 s, until the budget was spent).
#[test]
fn a_silent_debuginfod_server_does_not_hold_serves_read_loop() {
    let fixture = Fixture::build("debuginfod-serve", "-O1");
    let server = SilentServer::start();
    let cache_parent = fixture.dir.join("cache");
    std::fs::create_dir(&cache_parent).unwrap();
    let cache = cache_parent.join("debuginfod");
    let port = free_port();
    let (mut serve, stderr) = start_until_ready(
        Command::new(clockprof())
            .args(["serve", "-s", "syscall", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("DEBUGINFOD_URLS", &server.url)
            .env("DEBUGINFOD_CACHE_PATH", &cache)
            .env("DEBUGINFOD_TIMEOUT", "30")
            .env("CLOCKPROF_DEBUG_DIRS", &fixture.no_debug_dirs)
            .stdout(Stdio::null()),
    );
    let status = Command::new(&fixture.stripped)
        .arg(CALLS.to_string())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mut answers = Vec::new();
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        answers.push(healthz(port));
        std::thread::sleep(Duration::from_millis(500));
    }
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    let exit = wait_with_timeout(&mut serve, Duration::from_secs(10));
    let stderr = stderr.join().unwrap();
    drop(server);
    assert!(exit.success(), "{stderr}");
    assert!(
        answers.iter().all(|&status| status == 200),
        "/healthz answered {answers:?}: {stderr}"
    );
    assert_no_clockprof_programs_left();
}

//! What an unprivileged user (`nobody`) can do to the root profiler on a
//! shared host, done as that user: binaries whose debug sections name a
//! FIFO, and many distinct short-lived binaries under a long-running serve.
//! Each must leave clockprof counting, named and bounded.

use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clockprof_tests::crafted_dwarf::deeply_inlined_dwarf;
use clockprof_tests::*;

const NOBODY: u32 = 65534;

/// A directory of `nobody`'s inside `dir`, as a user's home or /tmp
/// directory is: whatever is in it, nobody put there.
fn users_directory(dir: &TempDir) -> PathBuf {
    let users = dir.join("nobody");
    std::fs::create_dir(&users).unwrap();
    chown(&users, Some(NOBODY), Some(NOBODY)).unwrap();
    users
}

/// A copy of the C fixture at `path`, nobody's.
fn users_copy_of_fixture(path: &Path) {
    std::fs::copy(c_fixture(), path).unwrap();
    chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `program ARGS` as nobody, to its end.
fn run_as_nobody(program: &Path, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{} failed", program.display());
}

/// `nobody`'s FIFO at `path`, with no writer: opening it blocks.
fn users_fifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

/// The C fixture with section `section` added, holding `contents`.
fn fixture_with_section(dir: &Path, name: &str, section: &str, contents: &[u8]) -> PathBuf {
    let data = dir.join(format!("{name}.section"));
    std::fs::write(&data, contents).unwrap();
    let out = dir.join(name);
    let status = Command::new("objcopy")
        .arg(format!("--add-section={section}={}", data.display()))
        .arg(c_fixture())
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "objcopy failed");
    chown(&out, Some(NOBODY), Some(NOBODY)).unwrap();
    out
}

/// A binary of nobody's whose `.gnu_debugaltlink` (dwz's common debug file,
/// opened by path) and another whose `.debug_sup` (DWARF 5's supplementary
/// file) name nobody's FIFO run while a host-wide recording runs. Opening
/// the FIFO would block clockprof for good, beyond SIGTERM; the recording
/// must end on time, count both exactly and name their functions from
/// their ELF symbols.
#[test]
fn debug_sections_naming_a_users_fifo_do_not_hang_a_host_wide_recording() {
    let dir = TempDir::new("altlink-fifo");
    let users = users_directory(&dir);
    let fifo = users.join("fifo");
    users_fifo(&fifo);
    let mut altlink = fifo.to_str().unwrap().as_bytes().to_vec();
    altlink.push(0);
    altlink.extend_from_slice(&[0x5a; 20]); // the build id dwz writes
    let altlinked = fixture_with_section(&users, "altlinked", ".gnu_debugaltlink", &altlink);
    // version 5, not supplementary, the name, a zero-length checksum.
    let mut sup = vec![5, 0, 0];
    sup.extend_from_slice(fifo.to_str().unwrap().as_bytes());
    sup.extend_from_slice(&[0, 0]);
    let supped = fixture_with_section(&users, "supped", ".debug_sup", &sup);

    let out = dir.join("host.json");
    let (mut recorder, stderr) = Clockprof::record()
        .args(["-a", "-d", "4"])
        .sources("syscall")
        .output(&out)
        .start();
    run_as_nobody(&altlinked, &["counts", "400"]);
    run_as_nobody(&supped, &["counts", "400"]);
    let status = wait_with_timeout(&mut recorder, Duration::from_secs(30));
    let stderr = stderr.join().unwrap();
    assert!(status.success(), "{stderr}");
    let json = read_json(&out);
    for comm in ["altlinked", "supped"] {
        let hot: u64 = json["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["comm"] == comm)
            .filter(|s| {
                s["frames"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f["function"] == "fixture_hot")
            })
            .map(|s| s["count"].as_u64().unwrap())
            .sum();
        assert_eq!(hot, 400, "{comm}: {json}");
    }
}

/// Descriptors `pid` holds open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Serve opens every file a process maps, to name its frames after it
/// exits. Under a serve that runs for months, those of exited processes
/// must be let go: 100 distinct copies of a binary, run briefly by nobody,
/// each counted exactly, and within a minute serve holds no more
/// descriptors than before them (it kept every one, in the tracker and in
/// blazesym, until EMFILE).
#[test]
fn serve_lets_go_of_the_files_of_exited_processes() {
    const COPIES: usize = 100;
    let dir = TempDir::new("fd-copies");
    let users = users_directory(&dir);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (mut serve, stderr) = start_until_ready(
        Command::new(clockprof())
            .args(["serve", "-s", "syscall", "--listen", &listen])
            .stdout(Stdio::null()),
    );
    let pid = serve.id();
    std::thread::sleep(Duration::from_secs(2));
    let idle = open_fds(pid);
    for copy in 0..COPIES {
        let path = users.join(format!("fdcopy{copy}"));
        users_copy_of_fixture(&path);
        run_as_nobody(&path, &["counts", "8"]);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut held = open_fds(pid);
    while held > idle + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(2));
        held = open_fds(pid);
    }
    let metrics = http_get(port, "/metrics");
    let monotonic: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("clockprof_clock_reads_total{process=\"fdcopy"))
        .filter(|l| l.contains("clock=\"MONOTONIC\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = wait_with_timeout(&mut serve, Duration::from_secs(10));
    let stderr = stderr.join().unwrap();
    assert!(status.success(), "{stderr}");
    assert_eq!(monotonic, (8 * COPIES) as f64, "{metrics}");
    assert!(
        held <= idle + 2,
        "serve held {held} descriptors a minute after {COPIES} binaries ran and exited, {idle} before them"
    );
    assert_no_clockprof_programs_left();
}

/// The body of `GET PATH` on `port`, as text.
fn http_get(port: u16, path: &str) -> String {
    String::from_utf8_lossy(&http(port, "GET", path).1).into_owned()
}

/// The address and size of function `name` in the ELF file `path`.
fn symbol_range(path: &Path, name: &str) -> (u64, u64) {
    use object::{Object, ObjectSymbol};
    let data = std::fs::read(path).unwrap();
    let elf = object::File::parse(&*data).unwrap();
    let symbol = elf
        .symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("{name} is not in {}", path.display()));
    (symbol.address(), symbol.size())
}

/// A user's binary whose DWARF nests 200,000 inlined calls around the
/// function that reads the clock. blazesym recurses once per level when it
/// reports inlined calls, and would overflow clockprof's stack; clockprof
/// does not ask it for them today (code information is off), so the old
/// build named the frame from the crafted DWARF (`deep`) rather than
/// crash. DWARF nested deeper than compilers nest is not read at all: the
/// recording ends well, exact, the function named from the ELF symbols.
#[test]
fn deeply_nested_dwarf_in_a_users_binary_does_not_abort_clockprof() {
    let dir = TempDir::new("deep-dwarf");
    let users = users_directory(&dir);
    let (low, size) = symbol_range(c_fixture(), "fixture_hot");
    let (info, abbrev) = deeply_inlined_dwarf(low, size, 200_000);
    let (info_file, abbrev_file) = (dir.join("info"), dir.join("abbrev"));
    std::fs::write(&info_file, info).unwrap();
    std::fs::write(&abbrev_file, abbrev).unwrap();
    let deep = users.join("deepdwarf");
    let status = Command::new("objcopy")
        .arg(format!(
            "--update-section=.debug_info={}",
            info_file.display()
        ))
        .arg(format!(
            "--update-section=.debug_abbrev={}",
            abbrev_file.display()
        ))
        .args([
            "--remove-section=.debug_aranges",
            "--remove-section=.debug_rnglists",
        ])
        .args([
            "--remove-section=.debug_ranges",
            "--remove-section=.debug_line",
        ])
        .arg(c_fixture())
        .arg(&deep)
        .status()
        .unwrap();
    assert!(status.success(), "objcopy failed");
    chown(&deep, Some(NOBODY), Some(NOBODY)).unwrap();
    let run = Clockprof::record()
        .sources("syscall")
        .args(["--user", "nobody"])
        .output(&dir.join("deep.folded"))
        .deadline(Duration::from_secs(60))
        .run([
            deep.as_os_str(),
            std::ffi::OsStr::new("counts"),
            std::ffi::OsStr::new("300"),
        ]);
    assert!(run.status.success(), "{}", run.stderr);
    let folded = run.folded();
    assert_eq!(count_under(&folded, "fixture_hot"), 300, "{folded:?}");
}

/// A process running a binary from a FUSE mount whose daemon is stopped:
/// any stat of that file waits on the daemon, for good. `doctor` (and
/// host-wide `-s go`) open every process's /proc/PID/exe, and took its
/// stat before any check: they hung. The mount must be recognised from the
/// opened descriptor's own mount, before the filesystem is asked anything.
///
/// A user mounts such a filesystem in a user and mount namespace of their
/// own. Here /dev/fuse is root's alone (0600), so no user can: root mounts
/// it in a mount namespace of its own instead, which clockprof's mount
/// table does not list either, as a user's would not.
#[test]
fn a_binary_on_a_stopped_fuse_mount_does_not_hang_doctor() {
    let dir = TempDir::new("stopped-fuse");
    let lower = dir.join("lower");
    std::fs::create_dir(&lower).unwrap();
    std::fs::copy(c_fixture(), lower.join("onfuse")).unwrap();
    let mount = dir.join("mnt");
    std::fs::create_dir(&mount).unwrap();
    let state = dir.join("state");
    // In a private mount namespace: mount, start the fixture from the
    // mount, stop the daemon, say so, and wait.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/stopped_fuse.sh");
    let mut namespace = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh"])
        .arg(&script)
        .args(["wait", "1"])
        .env("FUSEFS", fusefs())
        .env("LOWER", &lower)
        .env("MNT", &mount)
        .env("STATE", &state)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !state.exists() && Instant::now() < deadline {
        assert!(
            namespace.try_wait().unwrap().is_none(),
            "the FUSE mount failed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pids = std::fs::read_to_string(&state).expect("the fixture started from FUSE");
    let pids: Vec<i32> = pids
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    // The daemon's attributes expire (go-fuse's default: 1 s): from then
    // on, a stat asks the stopped daemon.
    std::thread::sleep(Duration::from_secs(2));
    let mut doctor = Command::new(clockprof())
        .arg("doctor")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = doctor.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(60) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Let the daemon answer (a hung doctor then ends too), the fixture end,
    // and with it the namespace and its mount.
    unsafe { libc::kill(pids[0], libc::SIGCONT) };
    unsafe { libc::kill(pids[1], libc::SIGUSR1) };
    let _ = doctor.kill();
    let _ = doctor.wait();
    let _ = wait_with_timeout(&mut namespace, Duration::from_secs(20));
    let status =
        status.expect("doctor did not end within 60 s: it waits on the stopped FUSE daemon");
    assert!(status.success(), "doctor failed: {status}");
}

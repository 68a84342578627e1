//! End-to-end tests of how clockprof starts and ends: stopping signals with
//! `-- COMMAND` running, SIGKILL, output files that never go through a link,
//! COMMAND's user under sudo, `-s all` on a C program, and tracefs mounted
//! only privately. Real eBPF, as root, one at a time.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clockprof_tests::*;

/// A running `clockprof record`, once it said it is recording; its stderr
/// keeps being read (so it never blocks on a full pipe) and is kept.
struct Recording {
    child: Child,
    stderr: std::thread::JoinHandle<String>,
}

fn start(args: &[&OsStr], env: &[(&str, &str)]) -> Recording {
    let (child, stderr) = start_until_ready(
        Command::new(clockprof())
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null()),
    );
    Recording { child, stderr }
}

impl Recording {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// COMMAND: the one child of clockprof (waits for it to show).
    fn command_pid(&self) -> i32 {
        let start = Instant::now();
        loop {
            let children: Vec<i32> = std::fs::read_dir(format!("/proc/{}/task", self.pid()))
                .unwrap()
                .filter_map(|task| {
                    std::fs::read_to_string(task.unwrap().path().join("children")).ok()
                })
                .flat_map(|list| {
                    list.split_whitespace()
                        .map(|p| p.parse().unwrap())
                        .collect::<Vec<i32>>()
                })
                .collect();
            if let [pid] = children[..] {
                return pid;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "no COMMAND: {children:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait(mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("clockprof did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, self.stderr.join().unwrap())
    }
}

/// Whether `pid` is gone: no such process, or dead and waiting for its new
/// parent to reap it.
fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat.rsplit_once(')').unwrap().1.trim_start().chars().next();
            matches!(state, Some('Z') | Some('X'))
        }
    }
}

fn wait_until_gone(pid: i32) {
    let start = Instant::now();
    while !process_gone(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "COMMAND (PID {pid}) outlived clockprof"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spin_command<'a>(fixture: &'a Path, out: &'a Path) -> Vec<&'a OsStr> {
    vec![
        os("record"),
        os("-s"),
        os("syscall"),
        os("-o"),
        out.as_os_str(),
        os("--"),
        fixture.as_os_str(),
        os("spin"),
        os("60"),
    ]
}

/// SIGHUP (an ssh session dropping), SIGINT and SIGTERM sent to clockprof
/// alone: the recording is written, COMMAND gets the signal and dies of it,
/// clockprof exits with COMMAND's status, nothing else is left.
#[test]
fn stopping_signals_write_the_output_and_stop_command() {
    let fixture = c_fixture();
    for signal in [libc::SIGHUP, libc::SIGINT, libc::SIGTERM] {
        let dir = TempDir::new("stop-signal");
        let out = dir.join("s.folded");
        let recording = start(&spin_command(fixture, &out), &[]);
        let command = recording.command_pid();
        std::thread::sleep(Duration::from_millis(500));
        unsafe { libc::kill(recording.pid(), signal) };
        let (status, stderr) = recording.wait(Duration::from_secs(20));
        assert_eq!(
            status.code(),
            Some(128 + signal),
            "signal {signal}: clockprof must exit with COMMAND's status: {stderr}"
        );
        wait_until_gone(command);
        let text = std::fs::read_to_string(&out)
            .unwrap_or_else(|e| panic!("signal {signal}: no output ({e}): {stderr}"));
        let folded = parse_folded(&text);
        assert!(count_under(&folded, "fixture_spin") > 1000, "{text}");
        assert_eq!(dir.entries(), vec!["s.folded"], "signal {signal}");
        assert_no_clockprof_programs_left();
    }
}

/// `-d` with COMMAND still running: the recording is written, COMMAND gets
/// SIGTERM (it may not outlive clockprof) and its status is clockprof's.
#[test]
fn duration_ends_command_and_returns_its_status() {
    let fixture = c_fixture();
    let dir = TempDir::new("duration");
    let out = dir.join("d.folded");
    let mut args = spin_command(fixture, &out);
    args.splice(1..1, [os("-d"), os("1")]);
    let started = Instant::now();
    let recording = start(&args, &[]);
    let command = recording.command_pid();
    let (status, stderr) = recording.wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
    wait_until_gone(command);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        count_under(&parse_folded(&text), "fixture_spin") > 1000,
        "{text}"
    );
    assert_no_clockprof_programs_left();
}

/// SIGKILL leaves nothing: no output, no temporary file, no program, and
/// COMMAND gets SIGTERM through PR_SET_PDEATHSIG.
#[test]
fn sigkill_leaves_nothing_behind_and_command_gone() {
    let fixture = c_fixture();
    let dir = TempDir::new("sigkill");
    let out = dir.join("k.folded");
    let recording = start(&spin_command(fixture, &out), &[]);
    let command = recording.command_pid();
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(recording.pid(), libc::SIGKILL) };
    let (status, _) = recording.wait(Duration::from_secs(10));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    wait_until_gone(command);
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
    assert_no_clockprof_programs_left();
}

fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
}

/// Runs clockprof with a deadline: a FIFO it wrongly opened would block it.
fn run_with_timeout(args: &[&OsStr]) -> std::process::Output {
    let mut child = Command::new(clockprof())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("clockprof hung on {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `-o` through a symlink to a FIFO, a FIFO itself and a device are refused
/// in one line before anything starts; the FIFO and the link stay as they
/// were, COMMAND never runs.
#[test]
fn output_through_a_link_or_to_a_fifo_or_device_is_refused() {
    let dir = TempDir::new("fifo");
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let link = dir.join("p.folded");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    let marker = dir.join("marker");
    for (destination, what) in [
        (link.clone(), "it is a symbolic link"),
        (fifo.clone(), "it is a FIFO"),
        (PathBuf::from("/dev/null"), "it is a device"),
    ] {
        let output = run_with_timeout(&[
            os("record"),
            os("-f"),
            os("folded"),
            os("-o"),
            destination.as_os_str(),
            os("--"),
            os("touch"),
            marker.as_os_str(),
        ]);
        let err = stderr(&output);
        assert!(!output.status.success(), "{err}");
        assert!(err.contains(what), "{destination:?}: {err}");
        assert!(err.contains("`-o -`"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(!marker.exists(), "COMMAND ran");
        assert_no_clockprof_programs_left();
    }
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(dir.entries(), vec!["fifo", "p.folded"]);
}

/// A regular file is replaced atomically, and `-o -` streams to stdout.
#[test]
fn output_replaces_a_file_or_streams_to_stdout() {
    let dir = TempDir::new("replace");
    let out = dir.join("r.folded");
    std::fs::write(&out, "old contents\n").unwrap();
    let fixture = c_fixture();
    let output = record_to(
        &out,
        &["-s", "syscall"],
        &[fixture.as_os_str(), os("counts"), os("100")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        count_under(&parse_folded(&text), "fixture_hot"),
        100,
        "{text}"
    );
    assert_eq!(dir.entries(), vec!["r.folded"]);

    let output = run(&[
        os("record"),
        os("-s"),
        os("syscall"),
        os("-o"),
        os("-"),
        os("--"),
        fixture.as_os_str(),
        os("counts"),
        os("100"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        count_under(&parse_folded(&text), "fixture_hot"),
        100,
        "{text}"
    );
    assert_no_clockprof_programs_left();
}

/// A directory anyone can write, outside the checkout (which another user
/// may not be able to reach).
struct SharedDir {
    dir: tempfile::TempDir,
}

impl SharedDir {
    fn new(name: &str) -> SharedDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("clockprof-{name}-"))
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        SharedDir { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A throwaway user with a supplementary group, removed on drop.
struct ThrowawayUser {
    name: String,
    group: String,
}

impl ThrowawayUser {
    fn new() -> ThrowawayUser {
        let id = std::process::id() % 100_000;
        let user = ThrowawayUser {
            name: format!("cpfuser{id}"),
            group: format!("cpfgroup{id}"),
        };
        user.remove();
        let ok = |cmd: &mut Command| assert!(cmd.status().unwrap().success(), "{cmd:?}");
        ok(Command::new("groupadd").arg(&user.group));
        ok(Command::new("useradd")
            .args(["--no-create-home", "--user-group", "--home-dir"])
            .arg(format!("/home/{}", user.name))
            .args(["--groups", &user.group, &user.name]));
        user
    }

    fn remove(&self) {
        let quiet = |cmd: &mut Command| {
            let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        quiet(Command::new("userdel").arg(&self.name));
        quiet(Command::new("groupdel").arg(&self.group));
    }

    /// `id -u`, `id -g`, `id -G` of the user as the system reports them.
    fn ids(&self) -> (String, String, String) {
        let id = |flag: &str| {
            let out = Command::new("id")
                .arg(flag)
                .arg(&self.name)
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        (id("-u"), id("-g"), id("-G"))
    }
}

impl Drop for ThrowawayUser {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Runs `record -s syscall [EXTRA] -- sh -c 'id ...; echo $HOME ...' > FILE`
/// under the given environment; returns the lines COMMAND wrote and stderr.
fn command_identity(env: &[(&str, &str)], extra: &[&str]) -> (Vec<String>, String) {
    let dir = SharedDir::new("whoami");
    let file = dir.path().join("ids");
    let script = format!(
        "{{ id -u; id -g; id -G; echo \"$HOME\"; echo \"$USER\"; echo \"$LOGNAME\"; pwd; }} > {}",
        file.display()
    );
    let mut args = vec![os("record"), os("-s"), os("syscall"), os("-o"), os("-")];
    args.extend(extra.iter().map(|a| os(a)));
    args.extend([os("--"), os("sh"), os("-c"), os(&script)]);
    let output = Command::new(clockprof())
        .args(&args)
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    let lines = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("COMMAND wrote nothing ({e}): {err}"))
        .lines()
        .map(str::to_string)
        .collect();
    assert_no_clockprof_programs_left();
    (lines, err)
}

/// Under sudo, COMMAND runs as the user who ran sudo: uid, primary group,
/// supplementary groups, HOME/USER/LOGNAME, in the directory it was started
/// from; the recording line says so.
#[test]
fn command_runs_as_the_user_who_ran_sudo() {
    let user = ThrowawayUser::new();
    let (uid, gid, groups) = user.ids();
    assert_eq!(groups.split_whitespace().count(), 2, "{groups}");
    let env = [
        ("SUDO_UID", uid.as_str()),
        ("SUDO_GID", gid.as_str()),
        ("SUDO_USER", user.name.as_str()),
    ];
    let (lines, err) = command_identity(&env, &[]);
    let mut got_groups: Vec<&str> = lines[2].split_whitespace().collect();
    got_groups.sort();
    let mut want_groups: Vec<&str> = groups.split_whitespace().collect();
    want_groups.sort();
    assert_eq!(lines[0], uid);
    assert_eq!(lines[1], gid);
    assert_eq!(got_groups, want_groups);
    assert_eq!(lines[3], format!("/home/{}", user.name));
    assert_eq!(lines[4], user.name);
    assert_eq!(lines[5], user.name);
    assert!(
        lines[6].starts_with(&std::env::temp_dir().to_string_lossy().to_string()),
        "{lines:?}"
    );
    assert!(
        err.contains(&format!("as user {} (uid {uid})", user.name)),
        "{err}"
    );

    // --user picks another one, by name or uid.
    let (lines, err) = command_identity(&env, &["--user", "nobody"]);
    assert_eq!(lines[0], "65534");
    assert!(err.contains("as user nobody (uid 65534)"), "{err}");
}

/// `--user root` keeps root under sudo, with root's home.
#[test]
fn user_root_keeps_root() {
    let env = [
        ("SUDO_UID", "65534"),
        ("SUDO_GID", "65534"),
        ("SUDO_USER", "nobody"),
    ];
    let (lines, err) = command_identity(&env, &["--user", "root"]);
    assert_eq!(&lines[..2], ["0", "0"]);
    assert_eq!(lines[3], "/root");
    assert!(err.contains("as user root (uid 0)"), "{err}");
}

#[test]
fn unknown_user_is_one_line_and_command_never_runs() {
    let dir = TempDir::new("nouser");
    let marker = dir.join("marker");
    let output = run(&[
        os("record"),
        os("--user"),
        os("no-such-user-here"),
        os("--"),
        os("touch"),
        marker.as_os_str(),
    ]);
    let err = stderr(&output);
    assert!(!output.status.success());
    assert!(err.contains("no such user"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!marker.exists());
    assert_no_clockprof_programs_left();
}

/// `-s all` on a C program: go does not apply, is skipped and named, and
/// the rest records exactly; as COMMAND and with -p.
#[test]
fn all_sources_on_a_c_program_skip_go_and_name_it() {
    let fixture = c_fixture();
    let dir = TempDir::new("all-c");
    let out = dir.join("a.json");
    let output = record_to(
        &out,
        &["-s", "all"],
        &[fixture.as_os_str(), os("counts"), os("100")],
    );
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    assert!(err.contains("the go source is skipped"), "{err}");
    assert!(!err.contains("warning"), "{err}");
    let json = read_json(&out);
    let go = json["unavailable"]["go"].as_str().unwrap_or_default();
    assert!(go.contains("is not a Go program"), "{json}");
    let sources = json["sources"].as_array().unwrap();
    assert!(
        sources.contains(&"syscall".into()) && sources.contains(&"libc".into()),
        "{sources:?}"
    );
    assert!(!sources.contains(&"go".into()), "{sources:?}");
    let syscall_hot: u64 = json["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["source"] == "syscall")
        .filter(|s| {
            s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["function"] == "fixture_hot")
        })
        .map(|s| s["count"].as_u64().unwrap())
        .sum();
    assert_eq!(syscall_hot, 100, "{json}");
    assert_no_clockprof_programs_left();

    // With -p, on a running C process.
    let mut target = Command::new(fixture)
        .args(["wait", "300"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(target.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let pid = target.id().to_string();
    let out = dir.join("p.json");
    let recording = start(
        &[
            os("record"),
            os("-p"),
            os(&pid),
            os("-s"),
            os("all"),
            os("-o"),
            out.as_os_str(),
        ],
        &[],
    );
    unsafe { libc::kill(target.id() as i32, libc::SIGUSR1) };
    assert!(target.wait().unwrap().success());
    let (status, err) = recording.wait(Duration::from_secs(20));
    assert!(status.success(), "{err}");
    let json = read_json(&out);
    assert!(
        json["unavailable"]["go"]
            .as_str()
            .unwrap_or_default()
            .contains("is not a Go program"),
        "{json}"
    );
    assert_no_clockprof_programs_left();
}

/// Puts the host's tracefs mounts back as they were.
struct TracefsRestore(Vec<String>);

impl Drop for TracefsRestore {
    fn drop(&mut self) {
        for point in &self.0 {
            if !tracefs_mounts().contains(point) {
                let _ = Command::new("mount")
                    .args(["-t", "tracefs", "nodev", point])
                    .status();
            }
        }
        set_tracefs_baseline(tracefs_mounts());
    }
}

/// A host without tracefs: clockprof mounts it in its own mount namespace,
/// records exactly, and the host never sees it, also after SIGKILL; COMMAND
/// runs in the host's namespace; two clockprofs at once do not race.
#[test]
fn tracefs_is_mounted_privately_and_never_left_on_the_host() {
    let fixture = c_fixture();
    let before = tracefs_mounts();
    let _restore = TracefsRestore(before.clone());
    for point in before.iter().rev() {
        assert!(
            Command::new("umount")
                .arg(point)
                .status()
                .unwrap()
                .success(),
            "umount {point}"
        );
    }
    assert!(tracefs_mounts().is_empty());
    set_tracefs_baseline(Vec::new());

    let dir = SharedDir::new("tracefs");
    let out = dir.path().join("t.folded");
    let seen = dir.path().join("command-mounts");
    let script = format!(
        "grep -c ' - tracefs ' /proc/self/mountinfo > {}; exec {} counts 100",
        seen.display(),
        fixture.display()
    );
    let output = record_to(&out, &["-s", "syscall"], &[os("sh"), os("-c"), os(&script)]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        count_under(&parse_folded(&text), "fixture_hot"),
        100,
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap().trim(),
        "0",
        "COMMAND saw our tracefs"
    );
    assert!(tracefs_mounts().is_empty());
    assert_no_clockprof_programs_left();

    // Two at once, then both killed.
    let first = start(&spin_command(fixture, &dir.path().join("1.folded")), &[]);
    let second = start(&spin_command(fixture, &dir.path().join("2.folded")), &[]);
    let commands = [first.command_pid(), second.command_pid()];
    assert!(tracefs_mounts().is_empty());
    for recording in [first, second] {
        unsafe { libc::kill(recording.pid(), libc::SIGKILL) };
        recording.wait(Duration::from_secs(10));
    }
    commands.into_iter().for_each(wait_until_gone);
    assert!(tracefs_mounts().is_empty());
    assert_no_clockprof_programs_left();
}

/// The leftover check itself knows every program of the object, not a few.
#[test]
fn leftover_check_covers_every_program() {
    let names = clockprof_program_names();
    for expected in [
        "sys_enter_clock",
        "task_newtask",
        "sched_process_e",
        "vdso_sample",
    ] {
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(expected) || expected.starts_with(n.as_str())),
            "{expected} missing from {names:?}"
        );
    }
    assert!(names.iter().all(|n| n.len() <= 15), "{names:?}");
}

/// Ctrl-C in a terminal reaches COMMAND from the terminal itself: clockprof
/// stops, writes, does not pass a second SIGINT on, and exits with the
/// status COMMAND chose. A SIGINT sent to clockprof alone (kill) is passed
/// on, once.
#[test]
fn sigint_reaches_command_exactly_once() {
    use std::io::Write;
    let counter = interrupt_counter();
    let dir = SharedDir::new("ctrl-c");
    let out = dir.path().join("c.folded");
    let seen = dir.path().join("interrupts");

    // From a terminal.
    let command_line = format!(
        "exec {} record -s syscall -o {} -- {} {}",
        clockprof().display(),
        out.display(),
        counter.display(),
        seen.display()
    );
    let notify = NotifySocket::new();
    let mut terminal = notify
        .pass_to(Command::new("script").args(["-qec", &command_line, "/dev/null"]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut screen = terminal.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut shown = String::new();
        let _ = screen.read_to_string(&mut shown);
        shown
    });
    notify.wait_ready(&mut terminal);
    std::thread::sleep(Duration::from_millis(500));
    // ^C typed on the terminal: the line discipline signals the foreground
    // process group, clockprof and COMMAND alike.
    terminal.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
    terminal.stdin.as_mut().unwrap().flush().unwrap();
    let status = wait_with_timeout(&mut terminal, Duration::from_secs(20));
    let shown = reader.join().unwrap();
    assert_eq!(status.code(), Some(7), "{shown}");
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "1\n", "{shown}");
    let text = std::fs::read_to_string(&out).unwrap();
    let reads: u64 = parse_folded(&text).iter().map(|(_, count)| count).sum();
    assert!(reads > 1000, "{text}");
    assert_no_clockprof_programs_left();

    // With kill, to clockprof alone.
    std::fs::remove_file(&seen).unwrap();
    let recording = start(
        &[
            os("record"),
            os("-s"),
            os("syscall"),
            os("-o"),
            out.as_os_str(),
            os("--"),
            counter.as_os_str(),
            seen.as_os_str(),
        ],
        &[],
    );
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(recording.pid(), libc::SIGINT) };
    let (status, stderr) = recording.wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(7), "{stderr}");
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "1\n", "{stderr}");
    assert_no_clockprof_programs_left();
}

/// Processes whose command line is exactly `argv`.
fn processes_running(argv: &[&OsStr]) -> Vec<u32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| a.as_encoded_bytes().iter().copied().chain([0]))
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .filter(|&pid| !process_gone(pid as i32))
        .collect()
}

/// A bug (a deliberate panic, as no argument reaches one) is one line with
/// the hint, unless RUST_BACKTRACE asks for more; it still leaves nothing:
/// no program, no file, no COMMAND.
/// The panic above is the test-panic build's: the shipped binary has no
/// way to be made to panic on purpose, not even the variable's name.
#[test]
fn the_shipped_binary_has_no_deliberate_panic() {
    let shipped = std::fs::read(clockprof()).unwrap();
    let needle = b"CLOCKPROF_TEST_PANIC";
    assert!(
        !shipped.windows(needle.len()).any(|w| w == needle),
        "{} honours CLOCKPROF_TEST_PANIC",
        clockprof().display()
    );
    let variant = std::fs::read(clockprof_test_panic()).unwrap();
    assert!(variant.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn a_panic_is_one_line_and_leaves_nothing() {
    let fixture = c_fixture();
    let dir = TempDir::new("panic");
    let out = dir.join("p.folded");
    let command = [fixture.as_os_str(), os("spin"), os("61")];
    let mut args = vec![
        os("record"),
        os("-s"),
        os("syscall"),
        os("-o"),
        out.as_os_str(),
        os("--"),
    ];
    args.extend(command);
    let output = Command::new(clockprof_test_panic())
        .args(&args)
        .env("CLOCKPROF_TEST_PANIC", "record")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(101), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].starts_with("clockprof: recording"), "{err}");
    assert!(
        lines[1].starts_with("clockprof: internal error: deliberate panic at record (CLOCKPROF_TEST_PANIC) at profiler/src/")
            && lines[1].ends_with("; this is a bug, please report it with the command line"),
        "{err}"
    );
    let start = Instant::now();
    while !processes_running(&command).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "COMMAND outlived clockprof"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
    assert_no_clockprof_programs_left();

    let output = Command::new(clockprof_test_panic())
        .args(&args)
        .env("CLOCKPROF_TEST_PANIC", "record")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = stderr(&output);
    assert!(
        err.contains("panicked at") && err.contains("stack backtrace"),
        "{err}"
    );
    assert!(!err.contains("internal error"), "{err}");
    assert_no_clockprof_programs_left();
}

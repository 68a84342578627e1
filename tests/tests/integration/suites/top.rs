//! End-to-end tests of `clockprof top`: the real binary in a real terminal
//! (tmux), real eBPF, and the C fixture spinning on clock syscalls in
//! `fixture_spin`. Each test reads the screen as a user would, and checks that
//! every way out gives the terminal back and leaves no program loaded. Run as
//! root, one at a time.

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use clockprof_tests::*;

/// A tmux server of our own, so the tests neither see nor disturb the user's.
const SOCKET: &str = "clockprof-tests";

fn tmux(args: &[&str]) -> Output {
    Command::new("tmux")
        .args(["-L", SOCKET])
        .args(args)
        .output()
        .expect("tmux runs")
}

/// `clockprof ARGS` in a detached tmux window of the given size. The shell
/// around it prints clockprof's exit status and the terminal's settings when
/// clockprof is gone, then stays, so the pane can still be read.
struct Screen {
    session: String,
}

impl Screen {
    fn start(name: &str, width: u16, height: u16, dir: &Path, args: &str) -> Screen {
        let session = format!("{name}-{}", std::process::id());
        let command = format!(
            "{} {args}; echo \"exit=$?\"; stty -a; echo settings-shown; sleep 600",
            clockprof().display()
        );
        let out = tmux(&[
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "-c",
            dir.to_str().unwrap(),
            &command,
        ]);
        assert!(out.status.success(), "tmux new-session: {}", stderr(&out));
        Screen { session }
    }

    fn text(&self) -> String {
        let out = tmux(&["capture-pane", "-p", "-t", &self.session]);
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Polls the screen until `ready` holds, for at most 15 s.
    fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.text();
            if ready(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {what}; screen:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        assert!(tmux(&args).status.success());
    }

    fn type_text(&self, text: &str) {
        assert!(tmux(&["send-keys", "-t", &self.session, "-l", text])
            .status
            .success());
    }

    fn alternate_screen_on(&self) -> bool {
        let out = tmux(&["display", "-p", "-t", &self.session, "#{alternate_on}"]);
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    /// The clockprof process: the only child of the pane's shell while it runs.
    fn clockprof_pid(&self) -> u32 {
        let out = tmux(&["display", "-p", "-t", &self.session, "#{pane_pid}"]);
        let shell: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let children =
            std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
        children
            .split_whitespace()
            .next()
            .expect("clockprof runs in the pane")
            .parse()
            .unwrap()
    }

    /// After clockprof exited: it exited with 0 and the terminal is back in
    /// cooked mode on the main screen.
    fn assert_left_cleanly(&self, clockprof: u32) -> String {
        // The shell prints the status, then the terminal settings: read both.
        let text = self.wait_for("clockprof to exit", |t| {
            t.contains("exit=") && t.contains("settings-shown")
        });
        assert!(text.contains("exit=0"), "{text}");
        assert!(!self.alternate_screen_on(), "still on the alternate screen");
        let settings: Vec<&str> = text
            .split("exit=0")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect();
        for setting in ["icanon", "echo", "isig"] {
            assert!(
                settings.contains(&setting),
                "terminal left with {setting} off:\n{text}"
            );
        }
        assert!(
            !process_exists(clockprof),
            "clockprof {clockprof} still runs"
        );
        assert_no_clockprof_programs_left();
        text
    }
}

impl Drop for Screen {
    /// Also after a failed assertion: the pane's clockprof gets SIGHUP and is
    /// waited for (it detaches its probes on the way out), so the next test
    /// does not see its programs still loaded.
    fn drop(&mut self) {
        let running = tmux(&["display", "-p", "-t", &self.session, "#{pane_pid}"]);
        let shell = String::from_utf8_lossy(&running.stdout).trim().to_string();
        let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
            .unwrap_or_default();
        tmux(&["kill-session", "-t", &self.session]);
        let deadline = Instant::now() + Duration::from_secs(10);
        for pid in children.split_whitespace() {
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The C fixture in `fixture_spin` for a minute; killed when dropped.
struct Spinner(Child);

impl Spinner {
    fn start() -> Spinner {
        Spinner(
            Command::new(c_fixture())
                .args(["spin", "60"])
                .spawn()
                .expect("the fixture starts"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The process list's row of `pid`, once it shows.
fn wait_for_row(screen: &Screen, pid: u32) -> String {
    let pid = pid.to_string();
    let comm = comm_of(c_fixture());
    let text = screen.wait_for("the fixture's row", |t| {
        t.lines()
            .any(|line| line.contains(&pid) && line.contains(&comm))
    });
    text.lines()
        .find(|line| line.contains(&pid) && line.contains(&comm))
        .unwrap()
        .to_string()
}

#[test]
fn shows_the_fixture_drills_into_its_hot_function_and_quits_cleanly() {
    let spinner = Spinner::start();
    let dir = TempDir::new("top-drill");
    let screen = Screen::start("drill", 100, 30, dir.path(), "top -s syscall");
    let row = wait_for_row(&screen, spinner.pid());
    let text = screen.text();
    assert!(text.starts_with("clockprof top"), "{text}");
    assert!(text.contains("clocksource "), "{text}");
    assert!(text.contains("backend "), "{text}");
    assert!(text.contains("host-wide"), "{text}");
    assert!(row.contains("/s") || row.contains('%'), "{row}");

    // Host-wide, other processes may read the clock too: pick the fixture by
    // name, then open it.
    screen.keys(&["/"]);
    screen.type_text(&comm_of(c_fixture()));
    screen.keys(&["Enter"]);
    let pid = spinner.pid().to_string();
    screen.wait_for("the fixture selected", |t| {
        t.lines().any(|l| l.starts_with('▶') && l.contains(&pid))
    });
    screen.keys(&["Enter"]);
    let text = screen.wait_for("the fixture's stacks", |t| {
        t.contains(&format!("PID {pid}")) && t.contains("fixture_spin")
    });
    let hottest = text
        .lines()
        .find(|line| line.starts_with('▶'))
        .unwrap_or_else(|| panic!("no stack selected:\n{text}"));
    assert!(hottest.contains("fixture_spin"), "{text}");
    assert!(hottest.contains("clock_gettime MONOTONIC"), "{text}");
    assert!(text.contains("▶ fixture_spin"), "{text}");

    screen.keys(&["Escape"]);
    screen.wait_for("the process list", |t| t.contains("COMMAND"));
    let clockprof = screen.clockprof_pid();
    screen.keys(&["q"]);
    screen.assert_left_cleanly(clockprof);
}

#[test]
fn exports_the_selected_process_and_says_where() {
    let spinner = Spinner::start();
    let dir = TempDir::new("top-export");
    let screen = Screen::start(
        "export",
        100,
        30,
        dir.path(),
        &format!("top -s syscall -p {}", spinner.pid()),
    );
    wait_for_row(&screen, spinner.pid());
    screen.keys(&["e"]);
    let text = screen.wait_for("the export's message", |t| t.contains("wrote "));
    let svg = dir
        .entries()
        .into_iter()
        .find(|name| name.ends_with(".svg"))
        .unwrap_or_else(|| panic!("no SVG in {}:\n{text}", dir.path().display()));
    let folded = svg.replace(".svg", ".folded");
    // The message names the files; it may wrap, so compare without line breaks.
    let message: String = text.lines().map(str::trim_end).collect();
    assert!(
        message.contains(&svg) && message.contains(&folded),
        "{text}"
    );
    let folded = std::fs::read_to_string(dir.join(&folded)).unwrap();
    let stacks = parse_folded(&folded);
    assert!(
        count_under(&stacks, "fixture_spin") > 1000,
        "few reads in fixture_spin:\n{folded}"
    );
    assert!(std::fs::read_to_string(dir.join(&svg))
        .unwrap()
        .contains("fixture_spin"));
    let clockprof = screen.clockprof_pid();
    screen.keys(&["C-c"]);
    screen.assert_left_cleanly(clockprof);
}

#[test]
fn fits_80x24_and_follows_a_resize() {
    let spinner = Spinner::start();
    let dir = TempDir::new("top-resize");
    let screen = Screen::start(
        "resize",
        80,
        24,
        dir.path(),
        &format!("top -s syscall -p {}", spinner.pid()),
    );
    let row = wait_for_row(&screen, spinner.pid());
    assert!(row.contains("100.0%"), "{row}");
    let text = screen.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 24, "{text}");
    assert!(
        lines[3].contains("PID") && lines[3].contains("READS/S"),
        "{text}"
    );
    for key in [
        "? help",
        "q quit",
        "Enter stacks",
        "/ filter",
        "s sort",
        "e/E export",
    ] {
        assert!(lines[23].contains(key), "{key} not in the footer:\n{text}");
    }

    tmux(&[
        "resize-window",
        "-t",
        &screen.session,
        "-x",
        "120",
        "-y",
        "40",
    ]);
    let text = screen.wait_for("the view to fill 120x40", |t| {
        t.lines().count() == 40 && t.lines().last().unwrap().contains("? help")
    });
    assert!(text.contains("LAST MINUTE"), "{text}");

    screen.keys(&["?"]);
    screen.wait_for("the help", |t| t.contains("freeze the view"));
    screen.keys(&["x"]);
    screen.wait_for("the help to close", |t| !t.contains("freeze the view"));
    let clockprof = screen.clockprof_pid();
    screen.keys(&["q"]);
    screen.assert_left_cleanly(clockprof);
}

fn restores_the_terminal_on(signal: i32, name: &str) {
    let spinner = Spinner::start();
    let dir = TempDir::new(name);
    let screen = Screen::start(
        name,
        100,
        30,
        dir.path(),
        &format!("top -s syscall -p {}", spinner.pid()),
    );
    wait_for_row(&screen, spinner.pid());
    assert!(screen.alternate_screen_on());
    let clockprof = screen.clockprof_pid();
    assert_eq!(unsafe { libc::kill(clockprof as i32, signal) }, 0);
    screen.assert_left_cleanly(clockprof);
}

#[test]
fn restores_the_terminal_on_sigterm() {
    restores_the_terminal_on(libc::SIGTERM, "top-term");
}

#[test]
fn restores_the_terminal_on_sighup() {
    restores_the_terminal_on(libc::SIGHUP, "top-hup");
}

#[test]
fn a_closed_terminal_leaves_nothing_behind() {
    let spinner = Spinner::start();
    let dir = TempDir::new("top-close");
    let screen = Screen::start(
        "close",
        100,
        30,
        dir.path(),
        &format!("top -s syscall -p {}", spinner.pid()),
    );
    wait_for_row(&screen, spinner.pid());
    let clockprof = screen.clockprof_pid();
    tmux(&["kill-session", "-t", &screen.session]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_exists(clockprof) {
        assert!(Instant::now() < deadline, "clockprof outlived its terminal");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_no_clockprof_programs_left();
}

#[test]
fn without_a_terminal_it_says_so_and_attaches_nothing() {
    let output = Command::new(clockprof())
        .args(["top", "-s", "syscall"])
        .output()
        .unwrap();
    let err = stderr(&output);
    assert!(!output.status.success());
    assert!(err.contains("top needs a terminal"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_no_clockprof_programs_left();
}

#[test]
fn bad_interval_and_missing_pid_are_one_sentence_errors() {
    for (args, needle) in [
        (
            vec!["top", "-i", "0"],
            "for '--interval <SECS>': must be at least 0.1 and at most 3600 seconds",
        ),
        (
            vec!["top", "-p", "999999999"],
            "no process with PID 999999999 exists",
        ),
    ] {
        // A terminal, so the error is about the arguments and not its absence.
        let output = Command::new("script")
            .args(["-qec"])
            .arg(format!("{} {}", clockprof().display(), args.join(" ")))
            .arg("/dev/null")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(!output.status.success(), "{args:?}: {text}");
        assert!(text.contains(needle), "{args:?}: {text}");
        assert_eq!(text.trim_end().lines().count(), 1, "{text}");
        assert_no_clockprof_programs_left();
    }
}

/// A bug in top (a deliberate panic: no argument reaches one) gives the
/// terminal back first, then says one line with the hint, not a backtrace.
#[test]
fn a_panic_restores_the_terminal_then_says_one_line() {
    let dir = TempDir::new("top-panic");
    let session = format!("top-panic-{}", std::process::id());
    let command = format!(
        "env -u RUST_BACKTRACE CLOCKPROF_TEST_PANIC=top {} top -s syscall; echo \"exit=$?\"; stty -a; echo settings-shown; sleep 600",
        clockprof_test_panic().display()
    );
    let out = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "220",
        "-y",
        "30",
        "-c",
        dir.path().to_str().unwrap(),
        &command,
    ]);
    assert!(out.status.success(), "tmux new-session: {}", stderr(&out));
    let screen = Screen { session };
    // The shell prints the status, then the terminal settings: read both.
    let text = screen.wait_for("clockprof to exit", |t| {
        t.contains("exit=") && t.contains("settings-shown")
    });
    assert!(text.contains("exit=101"), "{text}");
    assert!(
        !screen.alternate_screen_on(),
        "still on the alternate screen"
    );
    let said: Vec<&str> = text.lines().filter(|l| l.contains("clockprof")).collect();
    assert_eq!(said.len(), 1, "{text}");
    assert!(
        said[0].starts_with("clockprof: internal error: deliberate panic at top")
            && said[0]
                .trim_end()
                .ends_with("please report it with the command line"),
        "{text}"
    );
    let settings: Vec<&str> = text
        .split("exit=101")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    for setting in ["icanon", "echo", "isig"] {
        assert!(
            settings.contains(&setting),
            "terminal left with {setting} off:\n{text}"
        );
    }
    assert_no_clockprof_programs_left();
}

/// clockprof's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// A shell starting the C fixture (`counts 8`) one run after another until
/// killed: ~1,000 short processes a second here.
struct Churn(Child);

impl Churn {
    fn start() -> Churn {
        let script = format!(
            "while :; do {} counts 8 || exit 1; done",
            c_fixture().display()
        );
        Churn(
            Command::new("sh")
                .args(["-c", &script])
                .spawn()
                .expect("the churn starts"),
        )
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `top` while short processes churn: it drains the kernel's maps every
/// refresh, so no event is lost for want of room, and what it keeps is
/// bounded by the processes of the last interval plus one entry per stack
/// of the ones gone: its memory stops growing once the list is full (at
/// most MAX_IDLE_LISTED idle processes), whatever the number of processes
/// that ran. Bound: less than 8 MiB of growth over 30 s (~30,000
/// processes) after a 10 s warm-up; before draining it grew 30 MB in 27 s.
/// (4 MiB was within the run-to-run spread of what the caches issue 21
/// bounds still keep: issue 21 tightens it again.)
#[test]
fn under_a_churn_of_short_processes_nothing_is_lost_and_memory_stays_flat() {
    let dir = TempDir::new("top-churn");
    let screen = Screen::start("churn", 120, 30, dir.path(), "top -s syscall -i 1");
    screen.wait_for("the header", |t| t.contains("lost 0"));
    let clockprof = screen.clockprof_pid();
    let churn = Churn::start();
    let comm = comm_of(c_fixture());
    screen.wait_for("the churn's processes", |t| t.contains(&comm));
    std::thread::sleep(Duration::from_secs(10));
    let warm = rss_kib(clockprof);
    let mut peak = warm;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_secs(1));
        peak = peak.max(rss_kib(clockprof));
    }
    drop(churn);
    let text = screen.text();
    let header = text.lines().nth(2).unwrap_or_default().to_string();
    eprintln!("RSS after the warm-up {warm} KiB, peak over 30 s more {peak} KiB; {header}");
    assert!(header.contains("lost 0  "), "events were lost:\n{text}");
    assert!(peak < warm + 8192, "{warm} KiB -> {peak} KiB");
    screen.keys(&["q"]);
    screen.assert_left_cleanly(clockprof);
}

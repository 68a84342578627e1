//! What runs inside the guest (guest.sh, written into the run directory per boot)
//! and what the host reads back out of the console log.

use std::path::Path;

use super::initramfs::GUEST_OUT_DIR;

/// Where the tests write: a tmpfs in the guest (the host root is read-only there).
pub const GUEST_FIXTURE_DIR: &str = "/tmp/fixtures";

/// No test runs one clockprof this long, even under TCG (the longest take
/// about a minute); the guest's watchdog reports and kills one that does.
const CLOCKPROF_HUNG_AFTER_SECS: u32 = 240;

/// The file in the run directory that the guest rewrites with its uptime
/// every HEARTBEAT_SECS while guest.sh runs: the host's proof that the guest
/// kernel still schedules (qemu.rs).
pub const HEARTBEAT_FILE: &str = "heartbeat";
const HEARTBEAT_SECS: u32 = 10;
/// A test silent this long is stuck: the guest says where its tasks are,
/// ahead of the host's CONSOLE_SILENT_AFTER (qemu.rs). The longest VM test
/// takes about two minutes under TCG.
const QUIET_AFTER_SECS: u32 = 300;

pub struct GuestCommand<'a> {
    pub clockprof: &'a Path,
    pub c_fixture: &'a Path,
    pub go_fixture: &'a Path,
    pub cgo_fixture: &'a Path,
    pub test_exe: &'a Path,
    /// Arguments after `--ignored --test-threads=1`: filters, `--skip`, `--exact`.
    pub test_args: &'a [String],
}

/// guest.sh: runs chrooted into the host's root as root, under /bin/sh (dash).
/// Its exit status is the test binary's, which /init hands back through the rc
/// file and isa-debug-exit.
pub fn script(c: &GuestCommand) -> String {
    let mut test_cmd = vec![
        sh_quote(&c.test_exe.to_string_lossy()),
        "--ignored".to_string(),
        "--test-threads=1".to_string(),
    ];
    test_cmd.extend(c.test_args.iter().map(|f| sh_quote(f)));
    format!(
        r#"# guest.sh of `cargo xtask vm-test` (written by xtask/src/vm/guest.rs).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
export RUST_BACKTRACE=1
export CLOCKPROF_BIN={clockprof}
export CLOCKPROF_FIXTURE_DIR={fixture_dir}
export CLOCKPROF_C_FIXTURE={c_fixture}
export CLOCKPROF_GO_FIXTURE={go_fixture}
export CLOCKPROF_CGO_FIXTURE={cgo_fixture}
mkdir -p "$CLOCKPROF_FIXTURE_DIR"
secs_up() {{ cut -d' ' -f1 /proc/uptime; }}
# The host reads this file to tell a slow test from a guest kernel that stopped
# scheduling altogether. And a test that has printed nothing for
# {quiet_after} s is stuck in a way the clockprof watchdog does not see (seen
# under TCG: the console silent, the heartbeat going on): say where every task
# is, once, before the host gives up on the boot (qemu.rs). Only stat, wchan and
# stack are read: cmdline would wait on a stuck process's memory lock.
heartbeat() {{
    last_size=-1; quiet=0; told=0
    while :; do
        secs_up > {out_dir}/{heartbeat_file}
        size=$(stat -c %s {out_dir}/guest.log 2>/dev/null || echo 0)
        if [ "$size" = "$last_size" ]; then quiet=$((quiet + {heartbeat_secs})); else quiet=0; told=0; fi
        last_size=$size
        if [ $quiet -ge {quiet_after} ] && [ $told -eq 0 ]; then
            told=1
            echo "xtask-vm: no test output for $quiet s; every task now (pid comm state wchan):"
            for task in /proc/[0-9]*/task/[0-9]*; do
                state=$(cut -d' ' -f3 $task/stat 2>/dev/null)
                echo "xtask-vm:   ${{task#/proc/}} $(cat $task/comm 2>/dev/null) $state $(cat $task/wchan 2>/dev/null)"
                case $state in D|T|t) sed 's/^/xtask-vm:     /' $task/stack 2>/dev/null ;; esac
            done
            echo "xtask-vm: the kernel's list of blocked tasks (sysrq w):"
            echo w > /proc/sysrq-trigger
        fi
        # Not on the tests' pipe: a last sleep would hold /init's tee open.
        sleep {heartbeat_secs} >/dev/null 2>&1
    done
}}
heartbeat 2>/dev/null &
heartbeat_pid=$!
cs=/sys/devices/system/clocksource/clocksource0
echo "xtask-vm: kernel $(uname -r), clocksource $(cat $cs/current_clocksource) (available: $(cat $cs/available_clocksource))"
# Where KASLR put the kernel text: a stop report's RIPs minus this, plus
# 0xffffffff81000000, are the kernel's own addresses (developing.md).
echo "xtask-vm: kernel text at $(grep -m1 ' _text$' /proc/kallsyms | cut -d' ' -f1)"
# doctor is newer than this script may be: run it only where it exists.
if "$CLOCKPROF_BIN" --help 2>/dev/null | grep -q '^ *doctor'; then
    echo "xtask-vm: clockprof doctor:"
    "$CLOCKPROF_BIN" doctor 2>&1
    echo "xtask-vm: clockprof doctor exited $?"
fi
# A clockprof that runs far longer than any test needs is hung: print where
# each of its threads is (kernel stack, and user stack where gdb exists) and
# kill it, so the test fails with that instead of QEMU being killed silently.
watchdog() {{
    while sleep 20; do
        for pid in $(pgrep -x clockprof); do
            age=$(ps -o etimes= -p "$pid" 2>/dev/null | tr -d ' ')
            [ -n "$age" ] && [ "$age" -ge {hung_after} ] || continue
            echo "xtask-vm: clockprof $pid still running after $age s: $(tr '\0' ' ' < /proc/$pid/cmdline)"
            for task in /proc/$pid/task/*; do
                echo "xtask-vm:   thread $(cat $task/comm) state $(cut -d' ' -f3 $task/stat) wchan $(cat $task/wchan) syscall $(cut -d' ' -f1 $task/syscall)"
                sed 's/^/xtask-vm:     /' $task/stack
            done
            if command -v gdb >/dev/null; then
                timeout 120 gdb -p "$pid" -batch -nx -ex 'thread apply all bt 40' 2>&1 \
                    | grep -E '^(#|Thread)' | sed 's/^/xtask-vm:   /'
            fi
            kill -9 "$pid"
        done
    done
}}
watchdog &
watchdog_pid=$!
echo "xtask-vm: tests start, uptime $(secs_up) s"
{test_cmd}
rc=$?
kill $watchdog_pid $heartbeat_pid 2>/dev/null
echo "xtask-vm: tests exited $rc, uptime $(secs_up) s"
if [ $rc -ne 0 ]; then
    echo "xtask-vm: kernel messages since /init started (last 30):"
    dmesg | sed -n '/Run \/init/,$p' | tail -n 30
fi
# Leave nothing for {GUEST_OUT_DIR}'s unmount to wait on.
sync
exit $rc
"#,
        clockprof = sh_quote(&c.clockprof.to_string_lossy()),
        fixture_dir = sh_quote(GUEST_FIXTURE_DIR),
        c_fixture = sh_quote(&c.c_fixture.to_string_lossy()),
        go_fixture = sh_quote(&c.go_fixture.to_string_lossy()),
        cgo_fixture = sh_quote(&c.cgo_fixture.to_string_lossy()),
        test_cmd = test_cmd.join(" "),
        hung_after = CLOCKPROF_HUNG_AFTER_SECS,
        out_dir = GUEST_OUT_DIR,
        heartbeat_file = HEARTBEAT_FILE,
        heartbeat_secs = HEARTBEAT_SECS,
        quiet_after = QUIET_AFTER_SECS,
    )
}

/// Single-quoted for sh: safe for any path or filter.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What the host echoes from the console log after a boot.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    /// `xtask-vm: kernel ...` (release and clocksource).
    pub kernel_line: Option<String>,
    /// libtest's `running N tests`, `test X ... FAILED` and `test result:` lines.
    pub test_lines: Vec<String>,
    /// Guest uptime at `tests start` and `tests exited`.
    pub tests_secs: Option<f64>,
    /// The kernel's `Kernel panic - not syncing: ...` line, if it panicked.
    pub panic_line: Option<String>,
}

pub fn summarize(console: &str) -> Summary {
    let mut summary = Summary::default();
    let (mut start, mut end) = (None, None);
    for line in console.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(at) = line.find("Kernel panic - ") {
            summary
                .panic_line
                .get_or_insert_with(|| line[at..].to_string());
        } else if line.starts_with("xtask-vm: kernel ") {
            summary.kernel_line = Some(line.to_string());
        } else if let Some(rest) = line.strip_prefix("xtask-vm: tests start, uptime ") {
            start = leading_f64(rest);
        } else if let Some(rest) = line.strip_prefix("xtask-vm: tests exited ") {
            end = rest
                .split_once("uptime ")
                .and_then(|(_, up)| leading_f64(up));
        } else if line.starts_with("running ")
            || line.starts_with("test result:")
            || (line.starts_with("test ") && line.ends_with(" FAILED"))
        {
            summary.test_lines.push(line.to_string());
        }
    }
    if let (Some(s), Some(e)) = (start, end) {
        summary.tests_secs = Some(e - s);
    }
    summary
}

/// How many console lines of a crash the host prints: the oops line, then
/// CPU, hardware, RIP and the first registers or call frames.
const CRASH_LINES: usize = 8;

/// The first lines of a guest kernel crash (oops, BUG, general protection
/// fault or panic) on the console, if there was one. Under TCG a stock kernel
/// sometimes oopses on its own (int3 in __schedule while text_poke patches a
/// static key, VM.md), which says nothing about the tests that were running.
///
/// Only kernel lines count: those with a printk timestamp `[   12.345678] `
/// (Debian's kernels set PRINTK_TIME) whose text starts with a crash marker,
/// so test output that mentions "BUG:" or "Oops" is not a crash. The lines
/// shown are the kernel's lines from the first marker on, without timestamps.
pub fn crash_report(console: &str) -> Option<Vec<String>> {
    let kernel_lines: Vec<&str> = console
        .lines()
        .filter_map(|l| printk_text(l.trim_end_matches('\r')))
        .collect();
    let first = kernel_lines.iter().position(|l| is_crash_line(l))?;
    Some(
        kernel_lines[first..]
            .iter()
            .take(CRASH_LINES)
            .map(|l| l.to_string())
            .collect(),
    )
}

/// The text of a printk line, None for any other console line. The kernel
/// may start its line where the tests left theirs unfinished (libtest prints
/// `test NAME ... ` and waits for the result), so the timestamp is looked for
/// anywhere in the line.
fn printk_text(line: &str) -> Option<&str> {
    line.match_indices('[').find_map(|(at, _)| {
        let (stamp, text) = line[at + 1..].split_once("] ")?;
        stamp.trim().parse::<f64>().is_ok().then_some(text)
    })
}

fn is_crash_line(text: &str) -> bool {
    const MARKERS: &[&str] = &[
        "Oops",
        "Kernel panic - ",
        "BUG:",
        "general protection fault",
    ];
    // Before 6.8 an oops line has no "Oops: " prefix: `int3: 0000 [#1] PREEMPT SMP`;
    // the die counter `[#N]` after the error code marks it.
    MARKERS.iter().any(|m| text.starts_with(m)) || is_die_line(text)
}

fn is_die_line(text: &str) -> bool {
    text.split_once(": ")
        .and_then(|(_, rest)| rest.split_once(" [#"))
        .is_some_and(|(code, counter)| {
            code.len() == 4
                && code.chars().all(|c| c.is_ascii_hexdigit())
                && counter
                    .split_once(']')
                    .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
}

fn leading_f64(s: &str) -> Option<f64> {
    s.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_sh() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn script_runs_ignored_tests_with_filters() {
        let filters = ["kprobe".to_string(), "--exact".to_string()];
        let s = script(&GuestCommand {
            clockprof: Path::new("/w/target/release/clockprof"),
            c_fixture: Path::new("/w/target/vm/cfixture"),
            go_fixture: Path::new("/w/target/vm/gofixture"),
            cgo_fixture: Path::new("/w/target/vm/cgofixture"),
            test_exe: Path::new("/w/target/release/deps/vm_kernel-1"),
            test_args: &filters,
        });
        assert!(s.contains(
            "\n'/w/target/release/deps/vm_kernel-1' --ignored --test-threads=1 'kprobe' '--exact'\n"
        ));
        assert!(s.contains("export CLOCKPROF_BIN='/w/target/release/clockprof'\n"));
        assert!(s.contains("export CLOCKPROF_FIXTURE_DIR='/tmp/fixtures'\n"));
        assert!(s.contains("export CLOCKPROF_GO_FIXTURE='/w/target/vm/gofixture'\n"));
        // The heartbeat the host watches for a stopped guest, stopped with the tests.
        assert!(s.contains("        secs_up > /run/xtask/heartbeat\n"));
        assert!(s.contains("if [ $quiet -ge 300 ] && [ $told -eq 0 ]; then"));
        assert!(s.contains("kill $watchdog_pid $heartbeat_pid"));
    }

    /// The oops VM.md describes (6.12 under TCG, no clockprof involved), as
    /// the serial console shows it, between a test's output lines.
    const INT3_OOPS_6_12: &str = "test kprobe_backend_counts_syscalls_exactly ... ok\r\n\
        test kernel_source_counts_clock_functions_under_the_user_caller ... [   41.207315] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\r\n\
        [   41.208112] CPU: 1 UID: 0 PID: 212 Comm: clockprof Not tainted 6.12.57+deb12-amd64 #1  Debian 6.12.57-1~deb12u1\r\n\
        [   41.209003] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.3-debian-1.16.3-2~bpo12+1 04/01/2014\r\n\
        [   41.209871] RIP: 0010:__schedule+0x3e1/0x1480\r\n\
        [   41.210433] Code: 89 df e8 91 f5 ff ff 48 8b 44 24 08 cc 1f 44 00 00 <0f> 1f 44 00 00 65 8b 05\r\n\
        [   41.211325] RSP: 0018:ffffb04bc0517d20 EFLAGS: 00000046\r\n\
        [   41.211889] RAX: 0000000000000001 RBX: ffff9a3a03a5c300 RCX: 0000000000000000\r\n\
        [   41.212541] RDX: 0000000000000000 RSI: 0000000000000000 RDI: ffff9a3a3ec33700\r\n\
        [   41.213301] Call Trace:\r\n";

    #[test]
    fn finds_an_oops_and_keeps_its_first_lines() {
        let report = crash_report(INT3_OOPS_6_12).expect("an oops");
        assert_eq!(report.len(), CRASH_LINES);
        assert_eq!(report[0], "Oops: int3: 0000 [#1] PREEMPT SMP NOPTI");
        assert_eq!(report[3], "RIP: 0010:__schedule+0x3e1/0x1480");
    }

    /// Captured from a 6.12 guest made to crash (`echo c > /proc/sysrq-trigger`
    /// in guest.sh) under `cargo xtask vm-test --kernel 6.12-hpet`.
    const SYSRQ_PANIC_6_12: &str = "xtask-vm: clockprof doctor exited 0\r\n\
        [   16.071000] sysrq: Trigger a crash\r\n\
        [   16.072609] Kernel panic - not syncing: sysrq triggered crash\r\n\
        [   16.074233] CPU: 0 UID: 0 PID: 166 Comm: sh Not tainted 6.12.117+deb12-amd64 #1  Debian 6.12.117-1~deb12u1\r\n\
        [   16.075484] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.3-debian-1.16.3-2~bpo12+1 04/01/2014\r\n\
        [   16.076983] Call Trace:\r\n\
        [   16.078087]  <TASK>\r\n\
        [   16.078523]  panic+0x344/0x3a0\r\n";

    #[test]
    fn finds_a_real_panic() {
        let report = crash_report(SYSRQ_PANIC_6_12).expect("a panic");
        assert_eq!(
            report[0],
            "Kernel panic - not syncing: sysrq triggered crash"
        );
        assert_eq!(report[1].split_whitespace().next(), Some("CPU:"));
        assert_eq!(report.len(), 6);
    }

    #[test]
    fn finds_every_kind_of_crash() {
        for (console, first) in [
            // 6.1 prints no "Oops: " prefix.
            (
                "[   12.500000] int3: 0000 [#1] PREEMPT SMP NOPTI\r\n[   12.5] CPU: 0 PID: 1\r\n",
                "int3: 0000 [#1] PREEMPT SMP NOPTI",
            ),
            (
                "[    9.1] BUG: kernel NULL pointer dereference, address: 0000000000000008\n",
                "BUG: kernel NULL pointer dereference, address: 0000000000000008",
            ),
            (
                "[    9.1] general protection fault, probably for non-canonical address 0xdead: 0000 [#1] SMP\n",
                "general protection fault, probably for non-canonical address 0xdead: 0000 [#1] SMP",
            ),
            (
                "[    3.25] Kernel panic - not syncing: sysrq triggered crash\n",
                "Kernel panic - not syncing: sysrq triggered crash",
            ),
        ] {
            let report = crash_report(console).unwrap_or_else(|| panic!("no crash in {console:?}"));
            assert_eq!(report[0], first);
        }
    }

    #[test]
    fn test_output_is_not_a_crash() {
        let console = "[    5.1] clocksource: Switched to clocksource tsc\r\n\
            xtask-vm: tests start, uptime 7.50 s\r\n\
            thread 'x' panicked at tests/tests/vm_kernel.rs:9:5:\r\n\
            BUG: this is a test's own message, not the kernel's\r\n\
            assertion failed: Oops in a JSON string\r\n\
            [    8.2] WARNING: CPU: 0 PID: 1 at kernel/x.c:1 f+0x1/0x2\r\n\
            test result: FAILED. 1 passed; 1 failed; 0 ignored\r\n";
        assert_eq!(crash_report(console), None);
    }

    #[test]
    fn summarizes_the_console() {
        let console = "boot noise\r\n\
            xtask-vm: kernel 6.12.1, clocksource tsc (available: tsc hpet)\r\n\
            xtask-vm: tests start, uptime 7.50 s\r\n\
            running 2 tests\r\n\
            test a ... ok\r\n\
            test b ... FAILED\r\n\
            test result: FAILED. 1 passed; 1 failed; 0 ignored\r\n\
            xtask-vm: tests exited 101, uptime 19.75 s\r\n";
        let s = summarize(console);
        assert_eq!(
            s.kernel_line.as_deref(),
            Some("xtask-vm: kernel 6.12.1, clocksource tsc (available: tsc hpet)")
        );
        assert_eq!(
            s.test_lines,
            [
                "running 2 tests",
                "test b ... FAILED",
                "test result: FAILED. 1 passed; 1 failed; 0 ignored"
            ]
        );
        assert_eq!(s.tests_secs, Some(12.25));
        assert_eq!(s.panic_line, None);
        let s = summarize("[    3.25] Kernel panic - not syncing: VFS: Unable to mount root\r\n");
        assert_eq!(
            s.panic_line.as_deref(),
            Some("Kernel panic - not syncing: VFS: Unable to mount root")
        );
    }
}

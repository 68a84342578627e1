//! What runs inside the guest (guest.sh, written into the run directory per boot)
//! and what the host reads back out of the console log.

use std::path::Path;

use super::initramfs::GUEST_OUT_DIR;

/// Where the tests write: a tmpfs in the guest (the host root is read-only there).
pub const GUEST_FIXTURE_DIR: &str = "/tmp/fixtures";

pub struct GuestCommand<'a> {
    pub clockprof: &'a Path,
    pub c_fixture: &'a Path,
    pub test_exe: &'a Path,
    pub filters: &'a [String],
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
    test_cmd.extend(c.filters.iter().map(|f| sh_quote(f)));
    format!(
        r#"# guest.sh of `cargo xtask vm-test` (written by xtask/src/vm/guest.rs).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
export RUST_BACKTRACE=1
export CLOCKPROF_BIN={clockprof}
export CLOCKPROF_FIXTURE_DIR={fixture_dir}
export CLOCKPROF_C_FIXTURE={c_fixture}
mkdir -p "$CLOCKPROF_FIXTURE_DIR"
secs_up() {{ cut -d' ' -f1 /proc/uptime; }}
cs=/sys/devices/system/clocksource/clocksource0
echo "xtask-vm: kernel $(uname -r), clocksource $(cat $cs/current_clocksource) (available: $(cat $cs/available_clocksource))"
# doctor is newer than this script may be: run it only where it exists.
if "$CLOCKPROF_BIN" --help 2>/dev/null | grep -q '^ *doctor'; then
    echo "xtask-vm: clockprof doctor:"
    "$CLOCKPROF_BIN" doctor 2>&1
    echo "xtask-vm: clockprof doctor exited $?"
fi
echo "xtask-vm: tests start, uptime $(secs_up) s"
{test_cmd}
rc=$?
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
        test_cmd = test_cmd.join(" "),
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
            test_exe: Path::new("/w/target/release/deps/vm_kernel-1"),
            filters: &filters,
        });
        assert!(s.contains(
            "\n'/w/target/release/deps/vm_kernel-1' --ignored --test-threads=1 'kprobe' '--exact'\n"
        ));
        assert!(s.contains("export CLOCKPROF_BIN='/w/target/release/clockprof'\n"));
        assert!(s.contains("export CLOCKPROF_FIXTURE_DIR='/tmp/fixtures'\n"));
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

//! Bad input gets one clear sentence on stderr, a non-zero exit, and nothing
//! left behind: no program loaded, no output file.

mod common;

use std::ffi::OsStr;
use std::process::Command;

use common::*;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Asserts a failed run with a one-line message containing `needle`.
fn assert_clear_error(output: &std::process::Output, needle: &str) {
    let err = stderr(output);
    assert!(!output.status.success(), "expected failure, stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(
        err.starts_with("clockprof: ") || err.starts_with("error: "),
        "{err}"
    );
    assert_no_clockprof_programs_left();
}

#[test]
fn unknown_source() {
    let output = run(&[os("record"), os("-s"), os("nonsense"), os("-d"), os("1")]);
    assert_clear_error(&output, "unknown source `nonsense`");
}

#[test]
fn pid_that_does_not_exist() {
    let output = run(&[os("record"), os("-p"), os("999999999"), os("-d"), os("1")]);
    assert_clear_error(&output, "no process with PID 999999999 exists");
}

#[test]
fn unwritable_output_path() {
    let output = run(&[
        os("record"),
        os("-d"),
        os("1"),
        os("-o"),
        os("/nonexistent-dir/p.svg"),
    ]);
    assert_clear_error(
        &output,
        "cannot write the output file /nonexistent-dir/p.svg",
    );
}

#[test]
fn output_extension_without_format() {
    let dir = TempDir::new("ext");
    let output = run(&[
        os("record"),
        os("-d"),
        os("1"),
        os("-o"),
        dir.join("p.txt").as_os_str(),
    ]);
    assert_clear_error(&output, "cannot tell the output format");
    assert!(dir.entries().is_empty());
}

#[test]
fn command_that_cannot_start_leaves_no_output() {
    let dir = TempDir::new("nocmd");
    let out = dir.join("p.folded");
    let output = run(&[
        os("record"),
        os("-o"),
        out.as_os_str(),
        os("--"),
        os("/nonexistent/command"),
    ]);
    assert_clear_error(&output, "could not start COMMAND `/nonexistent/command`");
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
}

#[test]
fn not_root_names_the_missing_capabilities() {
    // The checkout may sit where `nobody` cannot reach (e.g. under /root):
    // run a world-readable copy from /tmp instead.
    let copy = std::env::temp_dir().join(format!("clockprof-nonroot-{}", std::process::id()));
    std::fs::copy(clockprof(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(&copy)
        .args(["record", "-d", "1"])
        .current_dir("/")
        .output()
        .expect("setpriv runs");
    std::fs::remove_file(&copy).unwrap();
    assert_clear_error(
        &output,
        "needs root or the capabilities CAP_BPF and CAP_PERFMON",
    );
    assert!(stderr(&output).contains("sudo"));
}

//! Bad input gets one clear sentence on stderr, a non-zero exit, and nothing
//! left behind: no program loaded, no output file.

use std::ffi::OsStr;
use std::process::Command;

use clockprof_tests::*;

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
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("clockprof-nonroot-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("clockprof");
    std::fs::copy(clockprof(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
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
    assert_clear_error(
        &output,
        "needs root or the capabilities CAP_BPF and CAP_PERFMON",
    );
    assert!(stderr(&output).contains("sudo"));
}

/// Every out-of-range value is one line from the CLI: nothing attached and
/// COMMAND never started (it would create the marker).
#[test]
fn every_out_of_range_value_is_one_line_and_starts_nothing() {
    let dir = TempDir::new("range");
    let marker = dir.join("marker");
    let cases: &[(&[&str], &str)] = &[
        (&["record", "-d", "1e20"], "--duration"),
        (&["record", "-d", "nan"], "--duration"),
        (&["record", "-d", "inf"], "--duration"),
        (&["record", "-d", "0"], "--duration"),
        (&["record", "-d=-1"], "--duration"),
        (&["record", "-F", "0"], "--frequency"),
        (&["record", "-F", "1000000"], "--frequency"),
        (&["record", "--stack-entries", "0"], "--stack-entries"),
        (&["record", "--count-entries", "0"], "--count-entries"),
        (
            &["record", "--stack-entries", "4294967295"],
            "--stack-entries",
        ),
        (
            &["record", "--count-entries", "99999999"],
            "--count-entries",
        ),
        (&["record", "--kernel-fn", "../../x"], "--kernel-fn"),
        (&["top", "-i", "1e20"], "--interval"),
        (&["top", "-i", "0"], "--interval"),
        (&["top", "-i", "nan"], "--interval"),
        (&["top", "--stack-entries", "0"], "--stack-entries"),
    ];
    for (args, needle) in cases {
        let mut argv: Vec<&OsStr> = args.iter().map(|a| os(a)).collect();
        if args[0] == "record" {
            argv.extend([os("--"), os("touch"), marker.as_os_str()]);
        }
        let output = Command::new(clockprof())
            .args(&argv)
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        assert_clear_error(&output, needle);
        assert!(!stderr(&output).contains("internal error"), "{args:?}");
        assert!(!marker.exists(), "{args:?} started COMMAND");
    }
    // Nine --kernel-fn pass clap one by one: the count is checked before
    // anything is attached.
    let mut argv = vec![os("record")];
    for _ in 0..9 {
        argv.extend([os("--kernel-fn"), os("ktime_get")]);
    }
    argv.extend([os("--"), os("touch"), marker.as_os_str()]);
    let output = run(&argv);
    assert_clear_error(&output, "at most 8 --kernel-fn");
    assert!(!marker.exists());
}

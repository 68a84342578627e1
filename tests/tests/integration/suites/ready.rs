//! Readiness as a signal for machines: with NOTIFY_SOCKET set, clockprof
//! sends `READY=1` (the sd_notify protocol) once every probe is attached, so
//! a systemd unit of Type=notify, or a test, knows when it counts.

use std::process::{Command, Stdio};
use std::time::Duration;

use clockprof_tests::*;

/// A host-wide recording says READY=1 (and what it records, as STATUS=)
/// only once its probes are attached: a fixture started the moment READY=1
/// arrives has every one of its clock syscalls counted.
#[test]
fn ready_arrives_only_once_every_probe_is_attached() {
    let dir = TempDir::new("ready");
    let out = dir.join("ready.folded");
    let notify = NotifySocket::new();
    let mut recorder = notify
        .pass_to(
            Command::new(clockprof())
                .args(["record", "-a", "-s", "syscall", "-o"])
                .arg(&out),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let message = notify.wait_ready(&mut recorder);
    let status = Command::new(c_fixture())
        .args(["counts", "1000"])
        .env("CLOCKPROF_FIXTURE_COMM", "ready_counted")
        .status()
        .unwrap();
    assert!(status.success());
    unsafe { libc::kill(recorder.id() as i32, libc::SIGINT) };
    let status = wait_with_timeout(&mut recorder, Duration::from_secs(60));
    let output = recorder.wait_with_output().unwrap();
    assert!(status.success(), "{}", stderr(&output));
    assert!(
        message
            .lines()
            .any(|line| line.starts_with("STATUS=recording ") && line.contains("clock reads")),
        "{message:?}"
    );

    let text = std::fs::read_to_string(&out).unwrap();
    let ours: Vec<(String, u64)> = parse_folded(&text)
        .into_iter()
        .filter(|(stack, _)| stack.starts_with("ready_counted;"))
        .collect();
    assert_eq!(count_under(&ours, "fixture_hot"), 1000, "{text}");
    assert_eq!(count_under(&ours, "fixture_warm"), 500, "{text}");
    assert_eq!(count_under(&ours, "fixture_gettimeofday"), 250, "{text}");
    assert_eq!(count_under(&ours, "fixture_time"), 200, "{text}");
    assert_no_clockprof_programs_left();
}

/// `record -- COMMAND` says READY=1 too, and COMMAND does not inherit
/// NOTIFY_SOCKET: clockprof's readiness is not COMMAND's to report.
#[test]
fn command_does_not_inherit_the_notify_socket() {
    let dir = TempDir::new("ready-command");
    let out = dir.join("c.folded");
    let (mut recorder, stderr) = start_until_ready(
        Command::new(clockprof())
            .args(["record", "-s", "syscall", "-o"])
            .arg(&out)
            .args(["--", "sh", "-c", r#"test -z "$NOTIFY_SOCKET""#]),
    );
    let status = wait_with_timeout(&mut recorder, Duration::from_secs(60));
    let stderr = stderr.join().unwrap();
    assert!(
        status.success(),
        "COMMAND saw NOTIFY_SOCKET: {status}: {stderr}"
    );
    assert_no_clockprof_programs_left();
}

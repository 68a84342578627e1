//! Tests of the hooks this host's kernel lacks (kprobes, fentry, hardware
//! breakpoints). They are ignored on the host, where they could only fail or
//! pretend, and run under stock Debian kernels in QEMU through
//! `cargo xtask vm-test` (part of `cargo xtask test`), which passes
//! `--ignored`. Each asserts exact results against the C fixture.

mod common;

use std::ffi::OsStr;

use common::*;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// `clockprof record ARGS -o DIR/p.json -- cfixture MODE N`: the JSON profile.
fn record_json(dir: &TempDir, args: &[&str], fixture_args: &[&str]) -> serde_json::Value {
    let out = dir.join("p.json");
    let mut argv = vec![os("record")];
    argv.extend(args.iter().map(|a| os(a)));
    argv.extend([os("-o"), out.as_os_str(), os("--"), c_fixture().as_os_str()]);
    argv.extend(fixture_args.iter().map(|a| os(a)));
    let output = run(&argv);
    assert!(
        output.status.success(),
        "clockprof failed: {}",
        stderr(&output)
    );
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).expect("valid JSON")
}

/// Sum of counts of the stacks whose frames include `function` and whose
/// leaf is `leaf`.
fn count(json: &serde_json::Value, function: &str, leaf: &str) -> u64 {
    json["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["leaf"] == leaf)
        .filter(|s| {
            s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["function"] == function)
        })
        .map(|s| s["count"].as_u64().unwrap())
        .sum()
}

fn assert_exact_syscall_counts(backend: &str) {
    let dir = TempDir::new(backend);
    let json = record_json(
        &dir,
        &["-s", "syscall", "--backend", backend],
        &["counts", "2000"],
    );
    assert_eq!(json["backends"], serde_json::json!([backend]), "{json}");
    assert_eq!(
        count(&json, "fixture_hot", "[syscall clock_gettime MONOTONIC]"),
        2000
    );
    assert_eq!(
        count(&json, "fixture_warm", "[syscall clock_gettime REALTIME]"),
        1000
    );
    assert_eq!(
        count(&json, "fixture_gettimeofday", "[syscall gettimeofday]"),
        500
    );
    assert_eq!(count(&json, "fixture_time", "[syscall time]"), 400);
    assert_eq!(json["total"], 3900, "{json}");
}

#[test]
#[ignore = "needs kprobes, fentry or hardware breakpoints: runs in the VM (cargo xtask vm-test)"]
fn kprobe_backend_counts_syscalls_exactly() {
    assert_exact_syscall_counts("kprobe");
}

#[test]
#[ignore = "needs kprobes, fentry or hardware breakpoints: runs in the VM (cargo xtask vm-test)"]
fn fentry_backend_counts_syscalls_exactly() {
    assert_exact_syscall_counts("fentry");
}

#[test]
#[ignore = "needs kprobes, fentry or hardware breakpoints: runs in the VM (cargo xtask vm-test)"]
fn automatic_choice_prefers_fentry() {
    let dir = TempDir::new("auto");
    let json = record_json(&dir, &["-s", "syscall"], &["counts", "100"]);
    assert_eq!(json["backends"], serde_json::json!(["fentry"]), "{json}");
    assert_eq!(json["total"], 195);
}

/// clock_gettime(MONOTONIC) reads ktime_get_ts64 in the kernel and
/// clock_gettime(REALTIME) ktime_get_real_ts64: the kernel source sees them
/// under the fixture's functions, with the kernel frames in between.
#[test]
#[ignore = "needs kprobes, fentry or hardware breakpoints: runs in the VM (cargo xtask vm-test)"]
fn kernel_source_counts_clock_functions_under_the_user_caller() {
    let dir = TempDir::new("kernel");
    let json = record_json(
        &dir,
        &[
            "-s",
            "kernel",
            "--kernel-fn",
            "ktime_get_ts64",
            "--kernel-fn",
            "ktime_get_real_ts64",
        ],
        &["counts", "3000"],
    );
    assert_eq!(
        count(&json, "fixture_hot", "[kernel ktime_get_ts64]"),
        3000,
        "{json}"
    );
    assert_eq!(
        count(&json, "fixture_warm", "[kernel ktime_get_real_ts64]"),
        1500,
        "{json}"
    );
    let hot = json["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["leaf"] == "[kernel ktime_get_ts64]" && s["count"] == 3000)
        .expect("one stack holds all of fixture_hot's reads");
    let kernel_frames: Vec<&str> = hot["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kernel"] == true)
        .map(|f| f["function"].as_str().unwrap())
        .collect();
    assert!(
        kernel_frames.iter().any(|f| f.contains("clock_gettime")),
        "no syscall frame in the kernel stack: {kernel_frames:?}"
    );
}

/// ktime_get_mono_fast_ns is notrace: no kprobe or fentry reaches it, an
/// execute breakpoint does. Perf records timestamped with CLOCK_MONOTONIC
/// (clockprof's own mapping side-band) read it on every fork and exec.
#[test]
#[ignore = "needs kprobes, fentry or hardware breakpoints: runs in the VM (cargo xtask vm-test)"]
fn breakpoint_reaches_the_notrace_mono_fast_clock() {
    let dir = TempDir::new("breakpoint");
    let json = record_json(
        &dir,
        &["-s", "kernel", "--kernel-fn", "ktime_get_mono_fast_ns"],
        &["fork", "100"],
    );
    assert_eq!(
        json["backends"],
        serde_json::json!(["breakpoint"]),
        "{json}"
    );
    let reads: u64 = json["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["leaf"] == "[kernel ktime_get_mono_fast_ns]")
        .map(|s| s["count"].as_u64().unwrap())
        .sum();
    assert!(reads > 0, "the breakpoint never fired: {json}");
}

#[test]
#[ignore = "needs kprobes, fentry or hardware breakpoints: runs in the VM (cargo xtask vm-test)"]
fn doctor_sees_every_backend_on_a_stock_kernel() {
    let output = run(&[os("doctor"), os("--json")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let works = |name: &str| {
        report["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .map(|h| h["works"] == true)
            .unwrap_or(false)
    };
    assert!(works("fentry (syscall)"), "{report}");
    assert!(works("kprobe (syscall)"), "{report}");
    assert!(works("kprobe on ktime_get_ts64"), "{report}");
    assert!(
        !works("kprobe on ktime_get_mono_fast_ns"),
        "notrace should refuse kprobes: {report}"
    );
    assert!(
        works("hardware breakpoint on ktime_get_mono_fast_ns"),
        "{report}"
    );
    assert_eq!(report["sources"][0]["backend"], "fentry");
    assert_eq!(report["sources"][1]["backend"], "fentry");
    assert_no_clockprof_programs_left();
}

/// The clocksource fallback. On hpet (which the vDSO cannot read) Go's
/// time.Now() still calls the vDSO, and the vDSO makes the clock_gettime
/// syscalls itself: one CLOCK_REALTIME and one CLOCK_MONOTONIC per call
/// (Go's time·now asm). `-s syscall` must count each under the Go function
/// that called time.Now(), and doctor must say the clocksource forces
/// syscalls. `cargo xtask vm-test` boots a guest with clocksource=hpet for
/// this test only (`--kernel 6.12-hpet`) and skips it on the others; on a
/// guest that is not on hpet it fails rather than pass on vDSO reads.
#[test]
#[ignore = "needs a guest on the hpet clocksource: runs in the VM (cargo xtask vm-test --kernel 6.12-hpet)"]
fn hpet_clocksource_go_time_now_counts_as_syscalls_under_the_caller() {
    let current =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .expect("sysfs names the current clocksource");
    assert_eq!(
        current.trim(),
        "hpet",
        "this guest is not on hpet, so Go's clock reads would never reach a syscall; \
         boot it with clocksource=hpet (cargo xtask vm-test --kernel 6.12-hpet)"
    );

    let doctor = run(&[os("doctor")]);
    assert!(doctor.status.success(), "{}", stderr(&doctor));
    let doctor = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        doctor.contains(
            "every clock read on this host is a system call because the clocksource is hpet"
        ),
        "doctor does not say that hpet forces syscalls:\n{doctor}"
    );

    let go_fixture = std::env::var_os("CLOCKPROF_GO_FIXTURE").expect(
        "CLOCKPROF_GO_FIXTURE names the Go fixture built on the host (cargo xtask vm-test sets it)",
    );
    let dir = TempDir::new("hpet-go");
    let out = dir.join("p.json");
    let output = run(&[
        os("record"),
        os("-s"),
        os("syscall"),
        os("-o"),
        out.as_os_str(),
        os("--"),
        &go_fixture,
        os("3000"),
    ]);
    assert!(
        output.status.success(),
        "clockprof failed: {}",
        stderr(&output)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).expect("valid JSON");
    for (caller, calls) in [("main.hotLoop", 3000), ("main.warmLoop", 1500)] {
        for leaf in [
            "[syscall clock_gettime REALTIME]",
            "[syscall clock_gettime MONOTONIC]",
        ] {
            assert_eq!(count(&json, caller, leaf), calls, "{caller} {leaf}: {json}");
        }
    }
    assert_no_clockprof_programs_left();
}

//! Tests of the hooks this host's kernel lacks (kprobes, fentry, hardware
//! breakpoints). They are ignored on the host, where they could only fail or
//! pretend, and run under stock Debian kernels in QEMU through
//! `cargo xtask vm-test` (part of `cargo xtask test`), which passes
//! `--ignored`. Each asserts exact results against the C fixture.

use std::ffi::OsStr;

use clockprof_tests::count_in_json as count;
use clockprof_tests::*;

/// `clockprof record ARGS -o DIR/p.json -- cfixture MODE N`: the JSON profile.
fn record_json(dir: &TempDir, args: &[&str], fixture_args: &[&str]) -> serde_json::Value {
    let mut command = vec![c_fixture().as_os_str()];
    command.extend(fixture_args.iter().map(|a| os(a)));
    let json = Clockprof::record()
        .args(args)
        .output(&dir.join("p.json"))
        .run(command)
        .success()
        .json();
    assert_start_times(&json);
    json
}

/// Every process but the idle task (PID 0) and `[interrupt]` (no PID) has
/// the start time the programs read through BTF offsets, on every kernel
/// and backend: it tells processes that had one PID apart.
fn assert_start_times(json: &serde_json::Value) {
    for process in json["processes"].as_array().unwrap() {
        if process["pid"].as_u64().is_some_and(|pid| pid > 0) {
            assert!(
                process["start_time_ns"].as_u64().is_some_and(|t| t > 0),
                "no start time: {process}"
            );
        }
    }
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
        count(
            &json,
            "fixture_hot",
            "[syscall clock_gettime MONOTONIC direct]"
        ),
        2000
    );
    assert_eq!(
        count(
            &json,
            "fixture_warm",
            "[syscall clock_gettime REALTIME direct]"
        ),
        1000
    );
    assert_eq!(
        count(
            &json,
            "fixture_gettimeofday",
            "[syscall gettimeofday direct]"
        ),
        500
    );
    assert_eq!(count(&json, "fixture_time", "[syscall time direct]"), 400);
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
fn tracepoint_backend_counts_syscalls_exactly() {
    assert_exact_syscall_counts("tracepoint");
}

/// DWARF unwinding on each kernel: the programs that copy stacks and walk
/// a cgo program's goroutine pass this kernel's verifier, and the counts
/// stay exact. `--unwind dwarf` copies every stack of the C fixture (built
/// with frame pointers, and with the unwind tables every gcc build has).
#[test]
#[ignore = "needs kprobes, fentry or hardware breakpoints: runs in the VM (cargo xtask vm-test)"]
fn dwarf_unwinding_counts_exactly_and_reaches_cgos_go_callers() {
    let dir = TempDir::new("dwarf");
    let json = record_json(
        &dir,
        &["-s", "syscall", "--unwind", "dwarf"],
        &["counts", "2000"],
    );
    assert_eq!(
        count(
            &json,
            "fixture_hot",
            "[syscall clock_gettime MONOTONIC direct]"
        ),
        2000,
        "{json}"
    );
    assert_eq!(count(&json, "fixture_time", "[syscall time direct]"), 400);
    assert_eq!(json["total"], 3900, "{json}");
    assert!(
        json["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["unwinder"] == "dwarf"),
        "no process was unwound with DWARF: {json}"
    );
    assert_no_clockprof_programs_left();

    let cgo_fixture = std::env::var_os("CLOCKPROF_CGO_FIXTURE").expect(
        "CLOCKPROF_CGO_FIXTURE names the cgo fixture built on the host (cargo xtask vm-test sets it)",
    );
    let out = dir.join("cgo.json");
    let output = run(&[
        os("record"),
        os("-s"),
        os("syscall"),
        os("--unwind"),
        os("auto"),
        os("-o"),
        out.as_os_str(),
        os("--"),
        &cgo_fixture,
        os("3000"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json = read_json(&out);
    // Its C function's raw syscalls, every one under the Go function that
    // called C (on hpet, Go's runtime makes syscalls of its own, not under
    // cgo_inner).
    let under_both: u64 = stacks(&json)
        .iter()
        .filter(|s| s["leaf"] == "[syscall clock_gettime MONOTONIC direct]")
        .filter(|s| {
            let frames = frame_names(s);
            frames.contains(&"cgo_inner") && frames.contains(&"main.goCaller")
        })
        .map(|s| s["count"].as_u64().unwrap())
        .sum();
    assert_eq!(under_both, 3000, "{json}");
    assert_eq!(
        count(
            &json,
            "cgo_inner",
            "[syscall clock_gettime MONOTONIC direct]"
        ),
        3000,
        "{json}"
    );
    assert_no_clockprof_programs_left();
}

/// The running kernel's (major, minor).
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

/// Whether ftrace may trace `function` here (what decides whether kprobes
/// and fentry reach it: ktime_get_mono_fast_ns became notrace after 5.10).
fn ftrace_lists(function: &str) -> bool {
    let list = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|dir| std::fs::read_to_string(format!("{dir}/available_filter_functions")).ok())
        .expect("tracefs lists the traceable functions");
    list.lines()
        .any(|l| l.split_whitespace().next() == Some(function))
}

/// The syscall tracepoint programs come in two variants: one finds the user
/// registers with bpf_task_pt_regs (5.15+), the other at the top of the
/// task's kernel stack (Debian 11's 5.10 has neither helper). doctor names
/// the one probing picked; each variant this kernel loads counts exactly and
/// recovers the caller that glibc's frameless wrapper hides (CPU-time clocks
/// always reach the syscall from the vDSO); the helper variant forced on an
/// older kernel is refused, and the error carries the verifier's own words.
#[test]
#[ignore = "needs kprobes, fentry or hardware breakpoints: runs in the VM (cargo xtask vm-test)"]
fn tracepoint_program_variants_follow_the_kernels_helpers() {
    let has_helpers = kernel_version() >= (5, 15);
    let doctor = run(&[os("doctor"), os("--json")]);
    assert!(doctor.status.success(), "{}", stderr(&doctor));
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let probed = if has_helpers {
        "task-pt-regs"
    } else {
        "kernel-stack"
    };
    assert_eq!(report["tracepoint_variant"], probed, "{report}");
    assert_eq!(
        report["sources"][0]["variant"], "wrapper-argument",
        "{report}"
    );

    for variant in ["task-pt-regs", "kernel-stack"] {
        let dir = TempDir::new(variant);
        let out = dir.join("p.json");
        let output = std::process::Command::new(clockprof())
            .env("CLOCKPROF_PROGRAM_VARIANT", variant)
            .args(["record", "-s", "syscall", "--backend", "tracepoint", "-o"])
            .arg(&out)
            .arg("--")
            .arg(c_fixture())
            .args(["cputime", "2000"])
            .output()
            .unwrap();
        if variant == "task-pt-regs" && !has_helpers {
            let err = stderr(&output);
            assert!(!output.status.success(), "{err}");
            assert!(
                err.contains("the verifier refused the tracepoint program (EINVAL)")
                    && err.contains("func")
                    && (err.contains("#158") || err.contains("#175")),
                "the refusal does not quote the verifier: {err}"
            );
            eprintln!("refused as it should be: {err}");
            continue;
        }
        assert!(output.status.success(), "{variant}: {}", stderr(&output));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(
            count(
                &json,
                "fixture_cputime",
                "[syscall clock_gettime PROCESS_CPUTIME_ID unserved-clock]"
            ),
            2000,
            "{variant}: {json}"
        );
    }
    assert_no_clockprof_programs_left();
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

/// ktime_get_mono_fast_ns is notrace (on 6.1 and 6.12): no kprobe or fentry
/// reaches it, an execute breakpoint does. Perf records timestamped with
/// CLOCK_MONOTONIC (clockprof's own mapping side-band) read it on every fork
/// and exec. Where ftrace still lists it (5.10), fentry would be chosen, so
/// the breakpoint is asked for by name.
#[test]
#[ignore = "needs kprobes, fentry or hardware breakpoints: runs in the VM (cargo xtask vm-test)"]
fn breakpoint_reaches_the_notrace_mono_fast_clock() {
    let dir = TempDir::new("breakpoint");
    let mut args = vec!["-s", "kernel", "--kernel-fn", "ktime_get_mono_fast_ns"];
    if ftrace_lists("ktime_get_mono_fast_ns") {
        args.extend(["--backend", "breakpoint"]);
    }
    let json = record_json(&dir, &args, &["fork", "100"]);
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
    assert!(works("fentry on ktime_get_ts64"), "{report}");
    // Tried on a slot of its own, not refused as "already loaded" by the
    // ktime_get_ts64 check's program: fentry reaches whatever ftrace does.
    assert_eq!(
        works("fentry on ktime_get_mono_fast_ns"),
        ftrace_lists("ktime_get_mono_fast_ns"),
        "{report}"
    );
    assert!(works("tracepoint (syscall)"), "{report}");
    // What the user-space sources load (their counts are tested on the host).
    assert!(works("uprobe (libc __clock_gettime)"), "{report}");
    assert!(works("perf_event cpu-clock sampling"), "{report}");
    if ftrace_lists("ktime_get_mono_fast_ns") {
        assert!(works("kprobe on ktime_get_mono_fast_ns"), "{report}");
    } else {
        for backend in ["kprobe", "fentry"] {
            let name = format!("{backend} on ktime_get_mono_fast_ns");
            let refusal = report["hooks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["name"] == name.as_str())
                .expect("doctor tries kprobe and fentry on the notrace clock");
            assert_eq!(
                refusal["works"], false,
                "notrace should refuse {backend}: {report}"
            );
            assert!(
                refusal["detail"].as_str().unwrap().contains(
                    "ktime_get_mono_fast_ns is notrace (not in available_filter_functions)"
                ),
                "doctor should say why, from tracefs: {report}"
            );
        }
    }
    assert!(
        works("hardware breakpoint on ktime_get_mono_fast_ns"),
        "{report}"
    );
    // Only a notrace ktime_get_mono_fast_ns needs a debug register.
    let takes = usize::from(!ftrace_lists("ktime_get_mono_fast_ns"));
    assert_eq!(
        report["debug_registers"],
        serde_json::json!({"per_cpu": 4, "default_recording_takes": takes, "free_now": 4}),
        "{report}"
    );
    assert_eq!(report["interrupt_context"]["works"], true, "{report}");
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
    // Measured, not told from the name: the vDSO's own call became one.
    assert!(
        doctor.contains("measured     clock_gettime through the vDSO became a system call"),
        "doctor did not measure the fallback:\n{doctor}"
    );
    assert!(
        doctor.contains("kernel log   [") && doctor.contains("Switched to clocksource hpet"),
        "doctor does not quote the kernel's switch to hpet:\n{doctor}"
    );

    // C through glibc falls back too, each read under its caller; the raw
    // system calls beside them are direct, and each cause is exact.
    let dir = TempDir::new("hpet-c");
    let c = record_json(&dir, &["-s", "syscall"], &["libc", "2000"]);
    assert_eq!(
        count(
            &c,
            "fixture_libc_hot",
            "[syscall clock_gettime MONOTONIC vdso-fallback]"
        ),
        2000,
        "{c}"
    );
    assert_eq!(
        count(
            &c,
            "fixture_libc_warm",
            "[syscall clock_gettime REALTIME vdso-fallback]"
        ),
        1000,
        "{c}"
    );
    assert_eq!(
        c["processes"][0]["syscalls_by_cause"],
        serde_json::json!({"vdso-fallback": 3000}),
        "{c}"
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
            "[syscall clock_gettime REALTIME vdso-fallback]",
            "[syscall clock_gettime MONOTONIC vdso-fallback]",
        ] {
            assert_eq!(count(&json, caller, leaf), calls, "{caller} {leaf}: {json}");
        }
    }
    assert_no_clockprof_programs_left();

    // What a fleet alerts on: serve's clocksource metric says the fallback,
    // measured. While serve runs, the clocksource is switched to acpi_pm and
    // back: serve counts both changes and says each with the kernel log's
    // line.
    let clocksource = "/sys/devices/system/clocksource/clocksource0/current_clocksource";
    let (metrics, said) = serve_metrics_once(|| {
        for to in ["acpi_pm", "hpet"] {
            std::fs::write(clocksource, to).expect("the clocksource can be switched");
            std::thread::sleep(std::time::Duration::from_secs(3));
        }
    });
    assert!(
        metrics.lines().any(
            |l| l == r#"clockprof_clocksource_info{clocksource="hpet",vdso_capable="false",vdso_works="false"} 1"#
        ),
        "serve does not report the hpet fallback:\n{metrics}"
    );
    for (from, to) in [("hpet", "acpi_pm"), ("acpi_pm", "hpet")] {
        let line = format!(r#"clockprof_clocksource_changes_total{{from="{from}",to="{to}"}} 1"#);
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
        assert!(
            said.contains(&format!(
                "the clocksource changed from {from} to {to}; kernel log: ["
            )) && said.contains(&format!("clocksource: Switched to clocksource {to}")),
            "serve does not say the change to {to}:\n{said}"
        );
    }
    assert_no_clockprof_programs_left();
}

/// The guest's init leaves the loopback interface down; serve listens on it.
fn loopback_up() {
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(socket >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *slot = *byte as libc::c_char;
        }
        assert_eq!(libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request), 0);
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        assert_eq!(
            libc::ioctl(socket, libc::SIOCSIFFLAGS, &request),
            0,
            "bringing lo up: {}",
            std::io::Error::last_os_error()
        );
        libc::close(socket);
    }
}

/// Starts `clockprof serve -s syscall` on loopback, runs `during`, reads
/// /metrics once, and stops it with SIGTERM (which must succeed): the
/// scrape's response and what serve said.
fn serve_metrics_once(during: impl FnOnce()) -> (String, String) {
    use std::io::{Read, Write};
    loopback_up();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (mut serve, stderr) = start_until_ready(std::process::Command::new(clockprof()).args([
        "serve",
        "-s",
        "syscall",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]));
    during();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    let status = wait_with_timeout(&mut serve, std::time::Duration::from_secs(20));
    assert!(status.success(), "serve: {status}");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    (response, stderr.join().unwrap_or_default())
}

// Issue 8: the kernel source is honest (interrupt context, kernel threads)
// and light (one debug register per CPU by default).

/// Kernel functions that begin interrupt handling or run softirqs on x86-64,
/// and the timer interrupt's handler: none may appear in a task's stack.
fn is_interrupt_frame(function: &str) -> bool {
    ["asm_sysvec_", "sysvec_", "__sysvec_"]
        .iter()
        .any(|prefix| function.starts_with(prefix))
        || [
            "asm_common_interrupt",
            "common_interrupt",
            "asm_exc_nmi",
            "exc_nmi",
            "irq_exit_rcu",
            "__irq_exit_rcu",
            "do_softirq",
            "__do_softirq",
            "handle_softirqs",
            "hrtimer_interrupt",
        ]
        .contains(&function)
}

fn stacks(json: &serde_json::Value) -> &Vec<serde_json::Value> {
    json["stacks"].as_array().unwrap()
}

fn frame_names(stack: &serde_json::Value) -> Vec<&str> {
    stack["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap())
        .collect()
}

/// `clockprof record ARGS -o DIR/p.json -- COMMAND`: the JSON profile and stderr.
fn record_command_json(
    dir: &TempDir,
    args: &[&str],
    command: &[&OsStr],
) -> (serde_json::Value, String) {
    let run = Clockprof::record()
        .args(args)
        .output(&dir.join("p.json"))
        .run(command)
        .success();
    let json = run.json();
    assert_start_times(&json);
    (json, run.stderr)
}

/// Host-wide, while the fixture makes its exact syscalls and then sleeps
/// (idle CPUs take timer interrupts that read ktime_get): reads in interrupt
/// context are under `[interrupt]`, with kernel frames only and no PID,
/// and no task's stack holds an interrupt frame; the fixture's own reads are
/// still exact under its functions.
#[test]
#[ignore = "needs kprobes, fentry or hardware breakpoints: runs in the VM (cargo xtask vm-test)"]
fn interrupt_context_reads_go_under_their_own_root() {
    let dir = TempDir::new("interrupt");
    let script = format!("{} counts 3000 && sleep 0.5", c_fixture().display());
    let (json, _) = record_command_json(
        &dir,
        &[
            "-a",
            "-s",
            "kernel",
            "--kernel-fn",
            "ktime_get",
            "--kernel-fn",
            "ktime_get_ts64",
        ],
        &[os("/bin/sh"), os("-c"), os(&script)],
    );
    assert_eq!(
        count(&json, "fixture_hot", "[kernel ktime_get_ts64]"),
        3000,
        "{json}"
    );
    let interrupt: Vec<&serde_json::Value> = stacks(&json)
        .iter()
        .filter(|s| s["comm"] == "[interrupt]")
        .collect();
    let interrupt_reads: u64 = interrupt.iter().map(|s| s["count"].as_u64().unwrap()).sum();
    assert!(interrupt_reads > 0, "no read under [interrupt]: {json}");
    for stack in &interrupt {
        assert!(stack["pid"].is_null(), "{stack}");
        assert!(
            stack["frames"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["kernel"] == true),
            "a user frame under [interrupt]: {stack}"
        );
    }
    assert!(
        interrupt
            .iter()
            .any(|s| frame_names(s).contains(&"hrtimer_interrupt")),
        "no timer interrupt under [interrupt]: {json}"
    );
    // The fixture's own clock_gettime reads, and nothing else of it, are
    // ktime_get_ts64 under its root (its exec also reads ktime_get, in
    // task context, which is its own).
    let fixture = comm_of(c_fixture());
    let fixture_ts64: u64 = stacks(&json)
        .iter()
        .filter(|s| s["comm"] == fixture.as_str() && s["leaf"] == "[kernel ktime_get_ts64]")
        .map(|s| s["count"].as_u64().unwrap())
        .sum();
    assert_eq!(fixture_ts64, 3000, "{json}");
    for stack in stacks(&json).iter().filter(|s| s["comm"] != "[interrupt]") {
        assert!(
            !frame_names(stack).iter().any(|f| is_interrupt_frame(f)),
            "an interrupt charged to a task: {stack}"
        );
    }
    let processes = json["processes"].as_array().unwrap();
    let root = processes
        .iter()
        .find(|p| p["comm"] == "[interrupt]")
        .expect("[interrupt] is listed as a process");
    assert_eq!(root["total"].as_u64(), Some(interrupt_reads));
}

/// The eBPF side tells interrupt context by itself: under a PID filter it
/// drops interrupts at once, so none reaches the daemon, whose frame check
/// would otherwise have moved them under `[interrupt]`, though timer
/// interrupts hit the spinning fixture all along (a second of ticks, each
/// reprogramming the timer with ktime_get).
#[test]
#[ignore = "needs kprobes, fentry or hardware breakpoints: runs in the VM (cargo xtask vm-test)"]
fn a_pid_filter_keeps_interrupts_out_in_the_kernel() {
    let dir = TempDir::new("interrupt-filtered");
    let (json, _) = record_command_json(
        &dir,
        &[
            "-s",
            "kernel",
            "--kernel-fn",
            "ktime_get",
            "--kernel-fn",
            "ktime_get_ts64",
        ],
        &[c_fixture().as_os_str(), os("spin"), os("1")],
    );
    assert!(
        count(&json, "fixture_spin", "[kernel ktime_get_ts64]") > 0,
        "{json}"
    );
    for stack in stacks(&json) {
        assert_ne!(stack["comm"], "[interrupt]", "{json}");
        assert!(
            !frame_names(stack).iter().any(|f| is_interrupt_frame(f)),
            "an interrupt charged to the fixture: {stack}"
        );
    }
}

/// Kernel threads (the idle tasks among them) have no user stack: their
/// reads count with none lost, and the lost user stacks the output reports
/// are exactly those of user tasks (a stack map hash collision can lose one).
#[test]
#[ignore = "needs kprobes, fentry or hardware breakpoints: runs in the VM (cargo xtask vm-test)"]
fn kernel_threads_lose_no_user_stacks() {
    let dir = TempDir::new("kthreads");
    let (json, _) = record_command_json(
        &dir,
        &["-a", "-s", "kernel", "--kernel-fn", "ktime_get"],
        &[os("/bin/sleep"), os("1")],
    );
    let kernel_thread = |s: &&serde_json::Value| {
        let comm = s["comm"].as_str().unwrap();
        s["pid"] == 0
            || ["kworker/", "ksoftirqd/", "rcu_", "kthreadd"]
                .iter()
                .any(|prefix| comm.starts_with(prefix))
    };
    let kernel_thread_stacks: Vec<&serde_json::Value> =
        stacks(&json).iter().filter(kernel_thread).collect();
    assert!(
        !kernel_thread_stacks.is_empty(),
        "no kernel thread read the clock: {json}"
    );
    let idle = kernel_thread_stacks
        .iter()
        .find(|s| s["pid"] == 0)
        .expect("the idle task reads ktime_get entering idle");
    assert_eq!(idle["comm"], "swapper", "{idle}");
    for stack in &kernel_thread_stacks {
        assert_eq!(stack["state"], "complete", "{stack}");
        assert!(
            stack["frames"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["kernel"] == true),
            "{stack}"
        );
    }
    // Every lost user stack is a user task's, counted under it.
    let lost_under_tasks: u64 = stacks(&json)
        .iter()
        .filter(|s| s["state"] == "user_stack_lost")
        .map(|s| {
            assert!(!kernel_thread(&s), "{s}");
            s["count"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(json["lost"]["user_stacks"], lost_under_tasks, "{json}");
    for stack in stacks(&json) {
        assert_kernel_stack_ends_in(stack, "ktime_get");
    }
}

/// Every kernel stack ends in the clock function, whatever the backend (a
/// kernel stack the stack map lost on a hash collision has no frames).
fn assert_kernel_stack_ends_in(stack: &serde_json::Value, function: &str) {
    let kernel_frames: Vec<&str> = stack["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kernel"] == true)
        .map(|f| f["function"].as_str().unwrap())
        .collect();
    if !kernel_frames.is_empty() {
        assert_eq!(kernel_frames.last(), Some(&function), "{stack}");
    }
}

fn kernel_address(function: &str) -> u64 {
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
    kallsyms
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.next()?;
            fields.next()?;
            (fields.next()? == function).then(|| u64::from_str_radix(address, 16).unwrap())
        })
        .unwrap_or_else(|| panic!("no {function} in /proc/kallsyms"))
}

/// How many execute breakpoints (one debug register each) can still be
/// reserved on `cpu`: opens disabled ones until the kernel says no space is
/// left, then closes them all.
fn free_debug_registers(cpu: i32) -> usize {
    // perf_event_attr up to bp_len (PERF_ATTR_SIZE_VER1, 72 bytes), as u64s:
    // type, size | config | sample_period | sample_type | read_format |
    // flags | wakeup_events, bp_type | bp_addr | bp_len.
    const PERF_TYPE_BREAKPOINT: u64 = 5;
    const HW_BREAKPOINT_X: u64 = 4;
    const DISABLED: u64 = 1;
    let address = kernel_address("ktime_get_mono_fast_ns");
    let attr: [u64; 9] = [
        PERF_TYPE_BREAKPOINT | (72 << 32),
        0,
        0,
        0,
        0,
        DISABLED,
        HW_BREAKPOINT_X << 32,
        address,
        8,
    ];
    let mut fds = Vec::new();
    loop {
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                attr.as_ptr(),
                -1,
                cpu,
                -1,
                libc::c_ulong::from(1u8 << 3), // PERF_FLAG_FD_CLOEXEC
            )
        };
        if fd < 0 {
            let err = std::io::Error::last_os_error();
            assert_eq!(
                err.raw_os_error(),
                Some(libc::ENOSPC),
                "perf_event_open of a breakpoint: {err}"
            );
            break;
        }
        fds.push(fd as i32);
        assert!(fds.len() <= 8, "more than 8 debug registers on CPU {cpu}?");
    }
    for fd in &fds {
        unsafe { libc::close(*fd) };
    }
    fds.len()
}

fn online_cpus() -> Vec<i32> {
    (0..unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } as i32).collect()
}

/// A default recording takes one debug register per CPU, for
/// ktime_get_mono_fast_ns: the other three stay free for gdb and perf, as
/// counted by reserving them while it runs, and the output says 1. Where
/// ftrace still lists that function (5.10), fentry reaches it and the
/// recording takes none.
#[test]
#[ignore = "needs kprobes, fentry or hardware breakpoints: runs in the VM (cargo xtask vm-test)"]
fn default_recording_takes_one_debug_register_per_cpu() {
    let (takes, mono_fast_backend) = if ftrace_lists("ktime_get_mono_fast_ns") {
        (0, "fentry")
    } else {
        (1, "breakpoint")
    };
    for cpu in online_cpus() {
        assert_eq!(free_debug_registers(cpu), 4, "CPU {cpu} before recording");
    }
    let dir = TempDir::new("debugregs");
    let out = dir.join("p.json");
    // Until SIGINT, not for a duration: a slow guest must not see the
    // recording end while it counts.
    let (mut child, err) = start_until_ready(std::process::Command::new(clockprof()).args([
        os("record"),
        os("-o"),
        out.as_os_str(),
    ]));
    let free_while_recording: Vec<usize> = online_cpus()
        .into_iter()
        .map(free_debug_registers)
        .collect();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let said = err.join().unwrap();
    assert!(status.success(), "{said}");
    assert!(
        free_while_recording.iter().all(|&free| free == 4 - takes),
        "free debug registers per CPU while recording: {free_while_recording:?}"
    );
    let json = read_json(&out);
    assert_eq!(json["debug_registers_per_cpu"], takes, "{json}");
    let kernel_hooks: Vec<(&str, &str)> = json["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["source"] == "kernel")
        .map(|h| (h["hook"].as_str().unwrap(), h["backend"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kernel_hooks,
        [
            ("ktime_get_mono_fast_ns", mono_fast_backend),
            ("ktime_get", "fentry"),
            ("ktime_get_ts64", "fentry"),
            ("ktime_get_real_ts64", "fentry")
        ],
        "{json}"
    );
    for cpu in online_cpus() {
        assert_eq!(free_debug_registers(cpu), 4, "CPU {cpu} after recording");
    }
    // Whatever the backend of each function (5.10 reaches the mono fast
    // clock by fentry, whose program and trampoline once showed as frames
    // past it: `ktime_get_mono_fast_ns;p9_poll_lock;force_legacy`), every
    // kernel stack ends in the function its reads are counted under.
    let with_kernel_frames = stacks(&json)
        .iter()
        .filter(|s| {
            s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["kernel"] == true)
        })
        .inspect(|stack| {
            let leaf = stack["leaf"].as_str().unwrap();
            let function = leaf
                .strip_prefix("[kernel ")
                .and_then(|rest| rest.strip_suffix(']'))
                .unwrap_or_else(|| panic!("a kernel-source leaf names its function: {stack}"));
            assert_kernel_stack_ends_in(stack, function);
        })
        .count();
    assert!(
        with_kernel_frames > 0,
        "no kernel stack was recorded: {json}"
    );
}

/// Functions named with --kernel-fn may take a breakpoint each, up to the
/// four debug registers; a fifth is refused with the reason. Breakpoint
/// counts of task-context reads are exact (the #DB exception's own NMI
/// level is not taken for an interrupt).
#[test]
#[ignore = "needs kprobes, fentry or hardware breakpoints: runs in the VM (cargo xtask vm-test)"]
fn named_functions_take_at_most_four_debug_registers() {
    let dir = TempDir::new("fourregs");
    let (json, err) = record_command_json(
        &dir,
        &[
            "-s",
            "kernel",
            "--backend",
            "breakpoint",
            "--kernel-fn",
            "ktime_get_mono_fast_ns",
            "--kernel-fn",
            "ktime_get",
            "--kernel-fn",
            "ktime_get_ts64",
            "--kernel-fn",
            "ktime_get_real_ts64",
            "--kernel-fn",
            "ktime_get_coarse_real_ts64",
        ],
        &[c_fixture().as_os_str(), os("counts"), os("400")],
    );
    assert_eq!(json["debug_registers_per_cpu"], 4, "{json}");
    assert!(
        err.contains("ktime_get_coarse_real_ts64: all 4 debug registers are taken"),
        "{err}"
    );
    assert_eq!(
        count(&json, "fixture_hot", "[kernel ktime_get_ts64]"),
        400,
        "{json}"
    );
    assert_eq!(
        count(&json, "fixture_warm", "[kernel ktime_get_real_ts64]"),
        200,
        "{json}"
    );
}

/// The kprobe backend (through ftrace at function entry) reads the traced
/// code's preempt count as fentry does: task-context reads stay exact under
/// the fixture, none is taken for an interrupt.
#[test]
#[ignore = "needs kprobes, fentry or hardware breakpoints: runs in the VM (cargo xtask vm-test)"]
fn kprobe_kernel_source_keeps_task_reads_exact() {
    let dir = TempDir::new("kprobe-kernel");
    let json = record_json(
        &dir,
        &[
            "-s",
            "kernel",
            "--backend",
            "kprobe",
            "--kernel-fn",
            "ktime_get_ts64",
        ],
        &["counts", "500"],
    );
    assert_eq!(json["backends"], serde_json::json!(["kprobe"]), "{json}");
    assert_eq!(
        count(&json, "fixture_hot", "[kernel ktime_get_ts64]"),
        500,
        "{json}"
    );
    for stack in stacks(&json) {
        assert_kernel_stack_ends_in(stack, "ktime_get_ts64");
    }
}

/// The text summary and doctor's text say how many debug registers the
/// kernel source takes per CPU (none where fentry reaches
/// ktime_get_mono_fast_ns, as on 5.10).
#[test]
#[ignore = "needs kprobes, fentry or hardware breakpoints: runs in the VM (cargo xtask vm-test)"]
fn summary_and_doctor_say_how_many_debug_registers_are_taken() {
    let notrace = !ftrace_lists("ktime_get_mono_fast_ns");
    let output = run(&[
        os("record"),
        os("-s"),
        os("kernel"),
        os("--"),
        c_fixture().as_os_str(),
        os("counts"),
        os("10"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let summary = String::from_utf8_lossy(&output.stdout);
    let expected = if notrace {
        "kernel: 1 of 4 debug registers per CPU taken (breakpoints on ktime_get_mono_fast_ns)"
    } else {
        "kernel: 0 of 4 debug registers per CPU taken"
    };
    assert!(summary.contains(expected), "{summary}");
    let doctor = run(&[os("doctor")]);
    assert!(doctor.status.success(), "{}", stderr(&doctor));
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        text.contains(&format!(
            "debug registers    a default recording takes {} of 4 per CPU",
            usize::from(notrace)
        )),
        "{text}"
    );
    assert!(text.contains("4 free now on CPU 0"), "{text}");
    assert!(text.contains("interrupt context  yes"), "{text}");
}

/// README's "The same job inside a VM": `clockprof check` judges a budget in
/// the guest as on the host, here through the fentry backend the host
/// refuses, and hands back its status, table and JUnit file.
#[test]
#[ignore = "needs kprobes, fentry or hardware breakpoints: runs in the VM (cargo xtask vm-test)"]
fn check_judges_a_clock_budget_through_fentry() {
    let dir = TempDir::new("vm-check");
    let junit = dir.join("clock.xml");
    let check = |budget: &str| {
        run(&[
            os("check"),
            os("-s"),
            os("syscall"),
            os("--backend"),
            os("fentry"),
            os("--max"),
            os(budget),
            os("--junit"),
            junit.as_os_str(),
            os("--"),
            c_fixture().as_os_str(),
            os("counts"),
            os("2000"),
        ])
    };
    let within = check("fixture_hot=2000");
    assert_eq!(within.status.code(), Some(0), "{}", stderr(&within));
    let over = check("fixture_hot=1999");
    assert_eq!(over.status.code(), Some(3), "{}", stderr(&over));
    let table = String::from_utf8_lossy(&over.stdout);
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("max fixture_hot=1999 "))
        .unwrap_or_else(|| panic!("no budget row in:\n{table}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[2..], ["2000", "1999", "FAIL"], "{table}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(
            "message=\"stacks with a frame matching `fixture_hot` made 2000 clock reads, over the limit of 1999\""
        ),
        "{xml}"
    );
}

/// An overlay mounted over `lower` at `dir/NAME`, its upper layer in `dir`
/// (the guest's tmpfs); unmounted on drop.
struct Overlay(std::path::PathBuf);

impl Overlay {
    fn mount(dir: &TempDir, name: &str, lower: &std::path::Path) -> Overlay {
        let [upper, work, merged] = ["upper", "work", "merged"].map(|part| {
            let path = dir.join(&format!("{name}-{part}"));
            std::fs::create_dir_all(&path).unwrap();
            path
        });
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let status = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(&merged)
            .status()
            .unwrap();
        assert!(status.success(), "mount -t overlay -o {options}");
        Overlay(merged)
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A binary through an overlay whose lower layer was detached, so that no
/// directory shows it (tests/src/hidden_overlay.rs). 5.10 and 6.1 name the
/// layer's device in the mapping: the fixture is counted exactly, its frames
/// stay unnamed, and doctor and the summary say why. Newer kernels name the
/// overlay's own device, and it is named.
#[test]
#[ignore = "needs kernels that name an overlay's layer in mappings: runs in the VM (cargo xtask vm-test)"]
fn binaries_through_an_overlay_with_hidden_layers_are_unnamed_and_said_why() {
    let names_the_layer =
        clockprof_tests::hidden_overlay::record_and_judge(&TempDir::new("overlay_hidden"), false);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    if release.starts_with("5.10.") || release.starts_with("6.1.") {
        assert!(names_the_layer, "{release} was measured to name the layer");
    }
}

/// Binaries reached through an overlay whose lower layer is 9p (the host's
/// tree, shared the way virtme-style kernel CI runners share it) are named,
/// as they are through an overlay over tmpfs. These kernels name the mapped
/// file by the layer's device and inode, while every path (map_files too)
/// opens the overlay's file, whose stat gives another device: clockprof finds
/// the file in the overlay's layers and checks it there (host/overlay.rs).
/// The host's suite covers newer kernels, which name the overlay's device.
#[test]
#[ignore = "needs a 9p root to lay an overlay over: runs in the VM (cargo xtask vm-test)"]
fn binaries_through_an_overlay_over_9p_are_named() {
    let dir = TempDir::new("overlay");
    let name = c_fixture().file_name().unwrap();
    let on_tmpfs = dir.join("tmpfs-lower");
    std::fs::create_dir_all(&on_tmpfs).unwrap();
    std::fs::copy(c_fixture(), on_tmpfs.join(name)).unwrap();
    let lowers = [
        ("9p", c_fixture().parent().unwrap().to_path_buf()),
        ("tmpfs", on_tmpfs),
    ];
    for (kind, lower) in lowers {
        let overlay = Overlay::mount(&dir, kind, &lower);
        let fixture = overlay.0.join(name);
        let json = Clockprof::record()
            .args(["-s", "syscall"])
            .output(&dir.join(&format!("{kind}.json")))
            .run([fixture.as_os_str(), os("counts"), os("2000")])
            .success()
            .json();
        assert_eq!(
            count(
                &json,
                "fixture_hot",
                "[syscall clock_gettime MONOTONIC direct]"
            ),
            2000,
            "through an overlay over {kind}: {json}"
        );
        assert_eq!(
            json["total"], 3900,
            "through an overlay over {kind}: {json}"
        );
    }
}

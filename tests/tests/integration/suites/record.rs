//! End-to-end tests of `clockprof record`: the real binary, real eBPF, real
//! fixture processes with exact clock-call counts. Run as root, one at a time
//! (`cargo xtask test` does both).

use std::ffi::OsStr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clockprof_tests::*;

use crate::rust_fixture;

/// Runs `clockprof record -s syscall -o OUT -- FIXTURE ARGS` and returns
/// (exit status, folded stacks).
fn record_command(out: &std::path::Path, command: &[&OsStr]) -> (Run, String) {
    let run = Clockprof::record()
        .sources("syscall")
        .output(out)
        .run(command);
    let text = run.text();
    (run, text)
}

#[test]
fn c_fixture_exact_counts_per_function_and_clock() {
    let dir = TempDir::new("c-exact");
    let out = dir.join("c.folded");
    let fixture = c_fixture();
    let (output, text) = record_command(&out, &[fixture.as_os_str(), os("counts"), os("20000")]);
    assert!(
        output.status.success(),
        "clockprof failed: {}",
        output.stderr
    );
    let folded = parse_folded(&text);
    let comm = comm_of(fixture);
    assert!(
        folded
            .iter()
            .all(|(stack, _)| stack.starts_with(&format!("{comm};"))),
        "{text}"
    );
    assert_eq!(count_under(&folded, "fixture_hot"), 20000, "{text}");
    assert_eq!(count_under(&folded, "fixture_warm"), 10000, "{text}");
    assert_eq!(count_under(&folded, "fixture_gettimeofday"), 5000, "{text}");
    assert_eq!(count_under(&folded, "fixture_time"), 4000, "{text}");
    assert_eq!(
        leaves_under(&folded, "fixture_hot")
            .into_iter()
            .collect::<Vec<_>>(),
        vec![(
            "[syscall clock_gettime MONOTONIC direct]".to_string(),
            20000
        )]
    );
    assert_eq!(
        leaves_under(&folded, "fixture_warm")
            .into_iter()
            .collect::<Vec<_>>(),
        vec![("[syscall clock_gettime REALTIME direct]".to_string(), 10000)]
    );
    assert_eq!(
        leaves_under(&folded, "fixture_gettimeofday")
            .into_iter()
            .collect::<Vec<_>>(),
        vec![("[syscall gettimeofday direct]".to_string(), 5000)]
    );
    assert_eq!(
        leaves_under(&folded, "fixture_time")
            .into_iter()
            .collect::<Vec<_>>(),
        vec![("[syscall time direct]".to_string(), 4000)]
    );
    // The caller chain is intact: main calls each hot function.
    assert!(
        text.contains(";main;fixture_hot;[syscall clock_gettime MONOTONIC direct] "),
        "{text}"
    );
    // Nothing else is in the output: the fixture made no other clock syscall.
    assert_eq!(folded.iter().map(|(_, c)| c).sum::<u64>(), 39000, "{text}");
    assert_eq!(
        dir.entries(),
        vec!["c.folded"],
        "a temporary file was left behind"
    );
    assert_no_clockprof_programs_left();
}

#[test]
fn rust_fixture_exact_counts_per_function() {
    let dir = TempDir::new("rust-exact");
    let out = dir.join("r.folded");
    let fixture = rust_fixture();
    let (output, text) = record_command(&out, &[fixture.as_os_str(), os("30000")]);
    assert!(
        output.status.success(),
        "clockprof failed: {}",
        output.stderr
    );
    let folded = parse_folded(&text);
    assert_eq!(
        count_under(&folded, "fixture_rust::rust_hot"),
        30000,
        "{text}"
    );
    assert_eq!(
        count_under(&folded, "fixture_rust::rust_warm"),
        15000,
        "{text}"
    );
    assert!(
        text.contains(
            "fixture_rust::main;fixture_rust::rust_hot;[syscall clock_gettime MONOTONIC direct] 30000"
        ),
        "{text}"
    );
}

#[test]
fn exits_with_the_status_of_command() {
    let dir = TempDir::new("status");
    let fixture = c_fixture();
    let (output, _) = record_command(
        &dir.join("s.folded"),
        &[fixture.as_os_str(), os("counts"), os("10"), os("7")],
    );
    assert_eq!(output.status.code(), Some(7), "{}", output.stderr);
}

#[test]
fn follows_processes_that_command_forks() {
    let dir = TempDir::new("fork");
    let out = dir.join("f.folded");
    let fixture = c_fixture();
    let (output, text) = record_command(&out, &[fixture.as_os_str(), os("fork"), os("6000")]);
    assert!(output.status.success(), "{}", output.stderr);
    let folded = parse_folded(&text);
    assert_eq!(count_under(&folded, "fixture_child"), 6000, "{text}");
    assert_eq!(count_under(&folded, "fixture_parent"), 3000, "{text}");
}

/// Starts `clockprof ARGS` and waits until it says it is recording.
fn spawn_fixture(args: &[&str]) -> Child {
    Command::new(c_fixture())
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn pid_filter_counts_only_the_given_process_and_stops_when_it_exits() {
    let dir = TempDir::new("pid");
    let out = dir.join("p.folded");
    let mut target = ready_c_fixture(&["wait", "7000"]);
    let mut other = spawn_fixture(&["spin", "3"]);
    let pid = target.id().to_string();
    let (mut recorder, _stderr) = Clockprof::record()
        .args(["-p", &pid])
        .sources("syscall")
        .output(&out)
        .start();
    unsafe { libc::kill(target.id() as i32, libc::SIGUSR1) };
    assert!(target.wait().unwrap().success());
    let status = wait_with_timeout(&mut recorder, Duration::from_secs(10));
    assert!(status.success());
    let _ = other.kill();
    let _ = other.wait();
    let text = std::fs::read_to_string(&out).unwrap();
    let folded = parse_folded(&text);
    assert_eq!(count_under(&folded, "fixture_triggered"), 7000, "{text}");
    assert_eq!(
        leaves_under(&folded, "fixture_triggered")
            .keys()
            .collect::<Vec<_>>(),
        vec!["[syscall clock_gettime BOOTTIME direct]"]
    );
    assert_eq!(
        count_under(&folded, "fixture_spin"),
        0,
        "another process leaked in: {text}"
    );
    assert_eq!(folded.iter().map(|(_, c)| c).sum::<u64>(), 7000, "{text}");
}

#[test]
fn all_processes_mode_sees_a_running_fixture() {
    let dir = TempDir::new("all");
    let out = dir.join("a.folded");
    let mut spinner = spawn_fixture(&["spin", "4"]);
    let output = run(&[
        os("record"),
        os("-a"),
        os("-d"),
        os("1.5"),
        os("-s"),
        os("syscall"),
        os("-o"),
        out.as_os_str(),
    ]);
    let _ = spinner.kill();
    let _ = spinner.wait();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(&out).unwrap();
    let folded = parse_folded(&text);
    let comm = comm_of(c_fixture());
    let spins = count_under(&folded, "fixture_spin");
    assert!(
        spins > 1000,
        "expected the spinning fixture's reads, got {spins}:\n{text}"
    );
    assert!(
        folded
            .iter()
            .any(|(stack, _)| stack.starts_with(&format!("{comm};"))
                && stack.contains(";fixture_spin;")),
        "{text}"
    );
}

#[test]
fn svg_is_well_formed_and_names_the_hot_function() {
    let dir = TempDir::new("svg");
    let out = dir.join("flame.svg");
    let fixture = c_fixture();
    let (output, svg) = record_command(&out, &[fixture.as_os_str(), os("counts"), os("2000")]);
    assert!(output.status.success(), "{}", output.stderr);
    assert!(
        svg.contains("fixture_hot"),
        "the SVG does not name fixture_hot"
    );
    assert!(svg.contains("clockprof: 3900 clock reads"), "title missing");
    assert!(svg.contains("syscall"), "title does not name the source");
    let parsed = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(parsed.success(), "the SVG is not well-formed XML");
}

#[test]
fn json_has_process_totals_by_source_and_stack_counts() {
    let dir = TempDir::new("json");
    let out = dir.join("p.json");
    let fixture = c_fixture();
    let (output, text) = record_command(&out, &[fixture.as_os_str(), os("counts"), os("1000")]);
    assert!(output.status.success(), "{}", output.stderr);
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(json["total"], 1950);
    assert_eq!(json["backends"], serde_json::json!(["tracepoint"]));
    let process = &json["processes"][0];
    assert_eq!(process["comm"], comm_of(fixture));
    assert_eq!(process["total"], 1950);
    assert_eq!(process["by_source"]["syscall"], 1950);
    let hot: Vec<&serde_json::Value> = json["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["function"] == "fixture_hot")
        })
        .collect();
    assert_eq!(hot.len(), 1, "{text}");
    assert_eq!(hot[0]["count"], 1000);
    assert_eq!(hot[0]["clock"], "MONOTONIC");
    assert_eq!(hot[0]["call"], "clock_gettime");
}

#[test]
fn summary_without_output_names_process_and_function() {
    let fixture = c_fixture();
    let output = run(&[
        os("record"),
        os("-s"),
        os("syscall"),
        os("--"),
        fixture.as_os_str(),
        os("counts"),
        os("3000"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("5850 clock reads"), "{text}");
    assert!(text.contains("Top processes"), "{text}");
    assert!(text.contains(&comm_of(fixture)), "{text}");
    assert!(text.contains("fixture_hot"), "{text}");
}

#[test]
fn interrupt_and_terminate_stop_cleanly_and_still_write() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let dir = TempDir::new("signal");
        let out = dir.join("s.folded");
        let mut spinner = spawn_fixture(&["spin", "3"]);
        let (mut recorder, _stderr) = Clockprof::record().sources("syscall").output(&out).start();
        std::thread::sleep(Duration::from_millis(300));
        unsafe { libc::kill(recorder.id() as i32, signal) };
        let status = wait_with_timeout(&mut recorder, Duration::from_secs(10));
        let _ = spinner.kill();
        let _ = spinner.wait();
        assert!(status.success(), "signal {signal}: {status:?}");
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(
            count_under(&parse_folded(&text), "fixture_spin") > 0,
            "{text}"
        );
        assert_no_clockprof_programs_left();
    }
}

#[test]
fn full_stack_map_counts_lost_stacks_but_keeps_counts_exact() {
    let dir = TempDir::new("lost");
    let out = dir.join("l.json");
    let fixture = c_fixture();
    let output = record_to(
        &out,
        &["-s", "syscall", "--stack-entries", "1"],
        &[fixture.as_os_str(), os("counts"), os("1000")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let json = read_json(&out);
    assert_eq!(
        json["total"], 1950,
        "every event is counted even without its stack"
    );
    // One entry in the stack-trace map and one in the spill map (for a
    // stack whose bucket is taken): the smallest two functions' stacks
    // (250 + 200 reads) at least find no room.
    let lost = json["lost"]["user_stacks"].as_u64().unwrap();
    assert!(
        lost >= 450,
        "expected the stacks of at least 2 of 4 functions lost, got {lost}"
    );
    assert!(json["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["state"] == "user_stack_lost"));
    assert!(
        stderr(&output).contains("lost"),
        "no warning: {}",
        stderr(&output)
    );
}

#[test]
fn full_count_map_counts_lost_events() {
    let dir = TempDir::new("lost-events");
    let out = dir.join("l.json");
    let fixture = c_fixture();
    let output = record_to(
        &out,
        &["-s", "syscall", "--count-entries", "1"],
        &[fixture.as_os_str(), os("counts"), os("1000")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let json = read_json(&out);
    let counted = json["total"].as_u64().unwrap();
    let lost = json["lost"]["events"].as_u64().unwrap();
    assert_eq!(counted + lost, 1950, "counted {counted} + lost {lost}");
    assert!(lost >= 950, "{lost}");
    assert!(stderr(&output).contains("lost"), "{}", stderr(&output));
}

/// A COMMAND that lives well under a millisecond is gone before any /proc read
/// could see it; its stacks must be symbolized all the same.
#[test]
fn short_lived_command_is_still_symbolized() {
    let dir = TempDir::new("short");
    let out = dir.join("s.folded");
    let fixture = c_fixture();
    for _ in 0..5 {
        let (output, text) = record_command(&out, &[fixture.as_os_str(), os("counts"), os("20")]);
        assert!(output.status.success(), "{}", output.stderr);
        let folded = parse_folded(&text);
        assert_eq!(count_under(&folded, "fixture_hot"), 20, "{text}");
        assert_eq!(count_under(&folded, "fixture_time"), 4, "{text}");
        assert!(text.contains(";main;fixture_warm;"), "{text}");
    }
}

/// A default source this kernel cannot serve (here: `kernel` without kprobes,
/// fentry or breakpoints) is left out quietly and named in the output; where
/// the kernel serves it, it is attached.
#[test]
fn default_sources_the_kernel_lacks_are_noted_not_warned() {
    let dir = TempDir::new("defaults");
    let out = dir.join("d.json");
    let fixture = c_fixture();
    let output = record_to(&out, &[], &[fixture.as_os_str(), os("counts"), os("100")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let err = stderr(&output);
    let json = read_json(&out);
    let kernel_hooks = json["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["source"] == "kernel")
        .count();
    match json["unavailable"]["kernel"].as_str() {
        Some(reason) => {
            assert_eq!(kernel_hooks, 0);
            assert!(!reason.is_empty());
            // Other warnings (a lost stack, say) are not this test's business.
            assert!(
                !err.lines()
                    .any(|l| l.contains("warning") && l.contains("kernel source")),
                "a default source warned: {err}"
            );
            assert!(!json["sources"]
                .as_array()
                .unwrap()
                .contains(&"kernel".into()));
        }
        None => assert!(
            kernel_hooks > 0,
            "kernel neither attached nor noted: {json}"
        ),
    }
    assert_eq!(count_under(&parse_folded_json(&json), "fixture_hot"), 100);
}

/// (stack, count) pairs of a JSON profile's stacks, as folded text would give.
fn parse_folded_json(json: &serde_json::Value) -> Vec<(String, u64)> {
    json["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["source"] == "syscall")
        .map(|s| {
            let frames: Vec<&str> = s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["function"].as_str().unwrap())
                .collect();
            (frames.join(";"), s["count"].as_u64().unwrap())
        })
        .collect()
}

/// CPU-time clocks are never served from user space: glibc's frameless
/// wrapper calls the vDSO, whose fallback makes the syscall. The function
/// that called glibc is recovered in the kernel (the frame chain skips it).
#[test]
fn syscall_from_glibc_and_the_vdso_keeps_the_calling_function() {
    let dir = TempDir::new("cputime");
    let out = dir.join("c.folded");
    let fixture = c_fixture();
    let (output, text) = record_command(&out, &[fixture.as_os_str(), os("cputime"), os("4000")]);
    assert!(output.status.success(), "{}", output.stderr);
    let folded = parse_folded(&text);
    assert_eq!(
        leaves_under(&folded, "fixture_cputime")
            .into_iter()
            .collect::<Vec<_>>(),
        vec![(
            "[syscall clock_gettime PROCESS_CPUTIME_ID unserved-clock]".to_string(),
            4000
        )],
        "{text}"
    );
    assert!(
        text.contains(";main;fixture_cputime;clock_gettime;__vdso_clock_gettime;[syscall clock_gettime PROCESS_CPUTIME_ID unserved-clock] 4000"),
        "{text}"
    );
}

/// The same through the tracepoint variant for kernels before 5.15 (forced
/// here: this kernel has bpf_task_pt_regs), which finds the user registers at
/// the top of the task's kernel stack instead.
#[test]
fn the_kernel_stack_variant_keeps_the_calling_function_too() {
    let dir = TempDir::new("cputime-kstack");
    let out = dir.join("c.folded");
    let output = std::process::Command::new(clockprof())
        .env("CLOCKPROF_PROGRAM_VARIANT", "kernel-stack")
        .args(["record", "-s", "syscall", "--backend", "tracepoint", "-o"])
        .arg(&out)
        .arg("--")
        .arg(c_fixture())
        .args(["cputime", "4000"])
        .output()
        .expect("clockprof runs");
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains(";main;fixture_cputime;clock_gettime;__vdso_clock_gettime;[syscall clock_gettime PROCESS_CPUTIME_ID unserved-clock] 4000"),
        "{text}"
    );
}

/// pprof output (.pb.gz) as `go tool pprof` reads it: exact cumulative counts
/// per function, the clock read as the leaf.
#[test]
fn pprof_output_reads_back_in_go_tool_pprof() {
    let dir = TempDir::new("pprof");
    let out = dir.join("p.pb.gz");
    let fixture = c_fixture();
    let (output, _) = record_command(&out, &[fixture.as_os_str(), os("counts"), os("3000")]);
    assert!(output.status.success(), "{}", output.stderr);
    let top = std::process::Command::new("go")
        .args(["tool", "pprof", "-top", "-nodecount=100"])
        .arg(&out)
        .env("HOME", dir.path().as_os_str())
        .output()
        .expect("go tool pprof runs (cargo xtask setup installs golang-go)");
    assert!(
        top.status.success(),
        "{}",
        String::from_utf8_lossy(&top.stderr)
    );
    let text = String::from_utf8_lossy(&top.stdout);
    // Columns: flat flat% sum% cum cum% name.
    let cumulative = |name: &str| -> Option<u64> {
        text.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 6 && fields[5..].join(" ") == name).then(|| fields[3].parse().ok())?
        })
    };
    assert_eq!(cumulative("fixture_hot"), Some(3000), "{text}");
    assert_eq!(cumulative("fixture_warm"), Some(1500), "{text}");
    assert_eq!(
        cumulative("[syscall clock_gettime MONOTONIC direct]"),
        Some(3000),
        "{text}"
    );
    assert!(text.contains("Total samples = 5850"), "{text}");
}

/// `clockprof --version`'s line, checked: `clockprof VERSION (commit HASH,
/// built YYYY-MM-DD)`, VERSION the workspace's, HASH 12 hex digits (with
/// `-dirty` for a tree with changes) or `unknown` outside a git checkout.
fn version_line() -> String {
    let output = Command::new(clockprof()).arg("--version").output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let line = String::from_utf8(output.stdout).unwrap();
    assert_eq!(line.lines().count(), 1, "{line:?}");
    let line = line.trim_end().to_string();
    let rest = line
        .strip_prefix(&format!("clockprof {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{line:?}"));
    let (commit, rest) = rest
        .split_once(", built ")
        .unwrap_or_else(|| panic!("{line:?}"));
    let hash = commit.strip_suffix("-dirty").unwrap_or(commit);
    assert!(
        hash == "unknown" || (hash.len() == 12 && hash.bytes().all(|b| b.is_ascii_hexdigit())),
        "{line:?}"
    );
    let date = rest.strip_suffix(')').unwrap_or_else(|| panic!("{line:?}"));
    let parts: Vec<&str> = date.split('-').collect();
    assert!(
        parts.len() == 3
            && [4, 2, 2] == [parts[0].len(), parts[1].len(), parts[2].len()]
            && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()))
            && parts[0] >= "2024"
            && ("01".."13").contains(&parts[1])
            && ("01".."32").contains(&parts[2]),
        "{line:?}"
    );
    line
}

#[test]
fn version_names_version_commit_and_build_date() {
    let line = version_line();
    let short = Command::new(clockprof()).arg("-V").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&short.stdout).trim_end(), line);
}

/// The JSON and pprof outputs of a real recording name the clockprof that
/// wrote them exactly as `--version` does.
#[test]
fn json_and_pprof_outputs_name_the_version() {
    let line = version_line();
    let dir = TempDir::new("version");
    let fixture = c_fixture();

    let json_out = dir.join("v.json");
    let (output, text) = record_command(&json_out, &[fixture.as_os_str(), os("counts"), os("10")]);
    assert!(output.status.success(), "{}", output.stderr);
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let named = &json["clockprof"];
    let from_json = format!(
        "clockprof {} (commit {}, built {})",
        named["version"].as_str().unwrap(),
        named["commit"].as_str().unwrap(),
        named["built"].as_str().unwrap()
    );
    assert_eq!(from_json, line, "{named}");

    let pprof_out = dir.join("v.pb.gz");
    let (output, _) = record_command(&pprof_out, &[fixture.as_os_str(), os("counts"), os("10")]);
    assert!(output.status.success(), "{}", output.stderr);
    let comments = Command::new("go")
        .args(["tool", "pprof", "-comments"])
        .arg(&pprof_out)
        .output()
        .expect("go tool pprof runs (cargo xtask setup installs golang-go)");
    assert!(comments.status.success(), "{}", stderr(&comments));
    let comments = String::from_utf8_lossy(&comments.stdout);
    assert!(comments.lines().any(|l| l == line), "{comments}");
}

/// Debian's libfaketime, the interposer the issue measured.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Records `-s syscall` of `command` into JSON.
fn record_causes(dir: &TempDir, name: &str, command: &[&OsStr]) -> serde_json::Value {
    Clockprof::record()
        .sources("syscall")
        .output(&dir.join(&format!("{name}.json")))
        .run(command)
        .success()
        .json()
}

/// Each cause of a clock system call is exact: a CPU-time clock always
/// costs one (unserved-clock, though glibc sends it through the vDSO), and
/// `syscall(SYS_clock_gettime)` through libc or the raw instruction in the
/// program bypasses the vDSO (direct). The leaf and the process's totals
/// name the cause.
#[test]
fn each_clock_syscall_is_counted_under_its_cause() {
    let dir = TempDir::new("causes");
    let fixture = c_fixture();
    for (mode, calls, leaf, cause, count) in [
        (
            "cputime",
            "3000",
            "[syscall clock_gettime PROCESS_CPUTIME_ID unserved-clock]",
            "unserved-clock",
            3000,
        ),
        (
            "libcsyscall",
            "2500",
            "[syscall clock_gettime MONOTONIC direct]",
            "direct",
            2500,
        ),
        (
            "counts",
            "1000",
            "[syscall clock_gettime MONOTONIC direct]",
            "direct",
            1950,
        ),
    ] {
        let json = record_causes(&dir, mode, &[fixture.as_os_str(), os(mode), os(calls)]);
        assert_eq!(
            json["processes"][0]["syscalls_by_cause"],
            serde_json::json!({ cause: count }),
            "{mode}: {json}"
        );
        let under_leaf: u64 = json["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["leaf"] == leaf && s["cause"] == cause)
            .map(|s| s["count"].as_u64().unwrap())
            .sum();
        let expected: u64 = calls.parse().unwrap();
        assert_eq!(under_leaf, expected, "{mode}: {json}");
    }
}

/// A library preloaded to replace `clock_gettime` with a system call of its
/// own: every call it makes is the interposer's, exactly, under the
/// function that called the clock; the process is named as interposed,
/// with the LD_PRELOAD that loaded the library.
#[test]
fn an_interposer_making_its_own_system_calls_is_named_and_counted() {
    let dir = TempDir::new("interposer");
    let library = clock_shim(&dir);
    let preload = format!("LD_PRELOAD={}", library.display());
    // Recorded by PID while it waits, as a service would be: its
    // environment is read while it runs.
    let mut fixture = Command::new(c_fixture())
        .env("LD_PRELOAD", &library)
        .args(["libcwait", "2000"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the C fixture starts");
    wait_until_ready(&mut fixture);
    let out = dir.join("shim.json");
    let (mut recorder, _stderr) = Clockprof::record()
        .args(["-p", &fixture.id().to_string()])
        .sources("syscall")
        .output(&out)
        .start();
    unsafe { libc::kill(fixture.id() as i32, libc::SIGUSR1) };
    assert!(fixture.wait().unwrap().success());
    assert!(recorder.wait().unwrap().success());
    let json = read_json(&out);
    let process = &json["processes"][0];
    assert_eq!(
        process["syscalls_by_cause"],
        serde_json::json!({"interposer": 2000}),
        "{json}"
    );
    assert_eq!(
        process["interposers"],
        serde_json::json!([{
            "library": library.display().to_string(),
            "functions": ["clock_gettime"],
            "preload": preload,
        }]),
        "{json}"
    );
    let under = |function: &str, leaf: &str| count_in_json(&json, function, leaf);
    assert_eq!(
        under(
            "fixture_libc_hot",
            "[syscall clock_gettime MONOTONIC interposer]"
        ),
        2000,
        "{json}"
    );
}

/// Debian's libfaketime, preloaded: the vDSO still serves the real reads
/// (no system call on this host), and the process is named as interposed,
/// with the library, the functions it replaces and the LD_PRELOAD, in the
/// JSON and the summary; the libc source sees each call go through it.
#[test]
fn libfaketime_preloaded_is_named_as_an_interposer() {
    let dir = TempDir::new("faketime");
    let preload = format!("LD_PRELOAD={LIBFAKETIME}");
    let fixture = c_fixture();
    let command = [
        os("env"),
        os(&preload),
        os("FAKETIME=-1d"),
        fixture.as_os_str(),
        os("libc"),
        os("3000"),
    ];
    let json = Clockprof::record()
        .sources("syscall,libc")
        .output(&dir.join("faketime.json"))
        .run(command)
        .success()
        .json();
    let process = &json["processes"][0];
    assert_eq!(process["interposers"][0]["library"], LIBFAKETIME, "{json}");
    assert_eq!(
        process["interposers"][0]["preload"],
        preload.as_str(),
        "{json}"
    );
    let functions = process["interposers"][0]["functions"].as_array().unwrap();
    for f in ["clock_gettime", "gettimeofday", "time"] {
        assert!(functions.iter().any(|g| g == f), "{f}: {json}");
    }
    assert_eq!(process["by_source"].get("syscall"), None, "{json}");
    // Each of the 4,500 calls reaches libc's clock_gettime through the
    // library (the issue measured two reads per call).
    let through: u64 = json["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["function"].as_str().unwrap_or("").contains("libfaketime"))
        })
        .map(|s| s["count"].as_u64().unwrap())
        .sum();
    assert!(through >= 4500, "{through}: {json}");

    let summary = Clockprof::record()
        .sources("syscall,libc")
        .run(command)
        .success()
        .stdout;
    assert!(
        summary.contains(&format!(
            "makes its clock calls through {LIBFAKETIME} (clock_gettime, gettimeofday, time, timespec_get, ftime; {preload})"
        )),
        "{summary}"
    );
}

//! DWARF unwinding (`--unwind`, issue 12): stacks through code without
//! frame pointers reach their callers, from the binaries' own unwind
//! tables, with the counts still exact. Real binaries: an `-O2
//! -fomit-frame-pointer` C fixture, a Rust fixture on Debian's shared std,
//! Debian's python3 and redis-server.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use clockprof_tests::*;

/// The Rust fixture on Debian's std: built by Debian's rustc 1.63 (which
/// `cargo xtask setup` keeps in target/debian-rustc, as the package conflicts
/// with rustc-web) with `-C prefer-dynamic`, so std's code runs in Debian's
/// libstd-*.so, built without frame pointers; the fixture's own code has
/// none either (rustc's default at -O2).
fn debian_std_fixture() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let rustc = std::env::var_os("CLOCKPROF_DEBIAN_RUSTC")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian-rustc/rustc")
            });
        assert!(
            rustc.exists(),
            "Debian's rustc 1.63 is missing at {} (cargo xtask setup)",
            rustc.display()
        );
        let out = fixture_dir().join(format!("rsdebstd{}", std::process::id() % 1000));
        let source =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/rust_debian_std_fixture.rs");
        let status = Command::new(&rustc)
            .args([
                "--sysroot",
                "/usr",
                "-C",
                "prefer-dynamic",
                "-C",
                "opt-level=2",
            ])
            .arg("-o")
            .arg(&out)
            .arg(&source)
            .status()
            .expect("Debian's rustc runs");
        assert!(status.success(), "rustc failed on {}", source.display());
        out
    })
}

/// Records `command` with `args` into `name` (JSON) and its folded twin.
fn record(dir: &TempDir, args: &[&str], command: &[&OsStr]) -> (serde_json::Value, String) {
    let profile = Clockprof::record()
        .args(args)
        .output(&dir.join("profile.json"))
        .run(command)
        .success()
        .json();
    let folded = profile["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stack| {
            let frames: Vec<&str> = stack["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["function"].as_str().unwrap())
                .collect();
            format!(
                "{};{} {}",
                stack["comm"].as_str().unwrap(),
                frames.join(";"),
                stack["count"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    (profile, folded)
}

fn unwinder_of(profile: &serde_json::Value, comm: &str) -> String {
    profile["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["comm"] == comm)
        .unwrap_or_else(|| panic!("no process {comm}: {profile}"))["unwinder"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Every read sits under main -> outer -> inner, exactly, in stacks the
/// frame pointers could not give: the default `auto` picks DWARF for the
/// fixture before its exec.
fn assert_exact_under(folded: &str, path: &[&str], n: u64) {
    let stacks = parse_folded(folded);
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    assert_eq!(total, n, "{folded}");
    let under: u64 = stacks
        .iter()
        .filter(|(stack, _)| stack.contains(&path.join(";")))
        .map(|(_, c)| c)
        .sum();
    assert_eq!(under, n, "{folded}");
}

#[test]
fn clock_syscalls_of_code_without_frame_pointers_sit_under_their_callers_exactly() {
    let dir = TempDir::new("dwarf-c");
    let fixture = dwarf_fixture();
    let comm = comm_of(fixture);
    let (profile, folded) = record(
        &dir,
        &["-s", "syscall"],
        &[fixture.as_os_str(), os("cputime"), os("20000")],
    );
    assert_exact_under(
        &folded,
        &["main", "dwarf_outer", "dwarf_inner", "clock_gettime"],
        20000,
    );
    assert_eq!(unwinder_of(&profile, &comm), "dwarf");
    // The same with frame pointers forced: the unwound frames were not
    // there to be had without the unwind tables.
    let (profile, folded) = record(
        &dir,
        &["-s", "syscall", "--unwind", "fp"],
        &[fixture.as_os_str(), os("cputime"), os("2000")],
    );
    assert_eq!(unwinder_of(&profile, &comm), "frame_pointers");
    assert_eq!(
        count_under(&parse_folded(&folded), "dwarf_outer"),
        0,
        "{folded}"
    );
}

#[test]
fn glibc_syscall_wrapper_does_not_hide_its_caller() {
    // glibc's syscall() has no frame: the frame-pointer walk skips the
    // function that called it; its unwind table does not.
    let dir = TempDir::new("dwarf-syscall");
    let fixture = dwarf_fixture();
    let (_, folded) = record(
        &dir,
        &["-s", "syscall", "--stack-every", "1"],
        &[fixture.as_os_str(), os("syscall"), os("5000")],
    );
    assert_exact_under(
        &folded,
        &[
            "main",
            "dwarf_syscall_outer",
            "dwarf_syscall_inner",
            "syscall",
        ],
        5000,
    );
}

/// With frame pointers too: the kernel side recovers the caller of
/// glibc's frameless syscall() from the code after its `syscall`
/// (`cmp $-4095,%rax; jae; ret`), so the C fixture's function is named.
#[test]
fn frame_pointer_walk_names_the_caller_of_glibc_syscall() {
    let dir = TempDir::new("fp-syscall");
    let fixture = c_fixture();
    let (profile, folded) = record(
        &dir,
        &["-s", "syscall"],
        &[fixture.as_os_str(), os("libcsyscall"), os("3000")],
    );
    assert_eq!(unwinder_of(&profile, &comm_of(fixture)), "frame_pointers");
    assert_exact_under(&folded, &["main", "fixture_libc_syscall", "syscall"], 3000);
}

#[test]
fn sampled_dwarf_stacks_keep_the_counts_exact() {
    let dir = TempDir::new("dwarf-every");
    let fixture = dwarf_fixture();
    let (profile, folded) = record(
        &dir,
        &["-s", "syscall", "--stack-every", "64"],
        &[fixture.as_os_str(), os("cputime"), os("20000")],
    );
    assert_exact_under(
        &folded,
        &["main", "dwarf_outer", "dwarf_inner", "clock_gettime"],
        20000,
    );
    assert!(
        profile["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "estimated"),
        "{profile}"
    );
}

/// Rust's std as Debian ships it, a shared library without frame pointers:
/// every `Instant::now` (glibc's `clock_gettime`, counted exactly by the
/// libc uprobe) sits under std's frame, the fixture's function and main,
/// and below main under std's `lang_start_internal`, both std frames in
/// Debian's libstd-*.so. 2,000 reads fit the DWARF ring (2,048 copies)
/// whatever the drain's timing, so every stack is one really unwound
/// (`complete`), not spread from others.
#[test]
fn rust_std_without_frame_pointers_unwinds_to_its_callers() {
    let dir = TempDir::new("dwarf-rust-std");
    let fixture = debian_std_fixture();
    let comm = comm_of(fixture);
    let (profile, folded) = record(
        &dir,
        &["-s", "libc", "--unwind", "auto"],
        &[fixture.as_os_str(), os("2000")],
    );
    assert_exact_under(
        &folded,
        &[
            "main",
            "std::rt::lang_start_internal",
            "std::rt::lang_start::{{closure}}",
            "std::sys_common::backtrace::__rust_begin_short_backtrace",
            "rust_debian_std_fixture::main",
            "rust_debian_std_fixture::debian_std_clock_loop",
            "std::time::Instant::now",
            "clock_gettime",
        ],
        2000,
    );
    assert_eq!(unwinder_of(&profile, &comm), "dwarf");
    for stack in profile["stacks"].as_array().unwrap() {
        assert_eq!(stack["state"], "complete", "{stack}");
        for frame in stack["frames"].as_array().unwrap() {
            if frame["function"]
                .as_str()
                .unwrap()
                .starts_with("std::rt::lang_start_internal")
                || frame["function"] == "std::time::Instant::now"
            {
                let module = frame["module"].as_str().unwrap();
                assert!(
                    module.starts_with("/usr/lib/x86_64-linux-gnu/libstd-")
                        && module.ends_with(".so"),
                    "{frame}"
                );
            }
        }
    }
    // With frame pointers forced the walk stops at std's frame (recovered
    // from the return address at the uprobe): the callers above it were not
    // there to be had without the unwind tables.
    let (profile, folded) = record(
        &dir,
        &["-s", "libc", "--unwind", "fp"],
        &[fixture.as_os_str(), os("2000")],
    );
    assert_eq!(unwinder_of(&profile, &comm), "frame_pointers");
    let stacks = parse_folded(&folded);
    assert_eq!(
        count_under(&stacks, "std::time::Instant::now"),
        2000,
        "{folded}"
    );
    assert_eq!(
        count_under(&stacks, "rust_debian_std_fixture::debian_std_clock_loop"),
        0,
        "{folded}"
    );
}

/// Debian's python3 calling time.time() (the vDSO) in a loop: its stacks
/// reach the interpreter loop.
#[test]
fn python_stacks_reach_the_interpreter_loop() {
    let python = Path::new("/usr/bin/python3");
    assert!(
        python.exists(),
        "Debian's python3 is missing (cargo xtask setup)"
    );
    let dir = TempDir::new("dwarf-python");
    let script = dir.join("loop.py");
    std::fs::write(
        &script,
        "import time\nend = time.monotonic() + 2\nwhile time.monotonic() < end:\n    time.time()\n",
    )
    .unwrap();
    let (profile, folded) = record(
        &dir,
        &["-s", "vdso"],
        &[python.as_os_str(), script.as_os_str()],
    );
    let stacks = parse_folded(&folded);
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    let interpreted = count_under(&stacks, "_PyEval_EvalFrameDefault");
    eprintln!("python3: {interpreted} of {total} vDSO samples under _PyEval_EvalFrameDefault");
    assert!(total > 100, "{folded}");
    assert!(
        interpreted * 10 >= total * 9,
        "{interpreted} of {total}: {folded}"
    );
    assert_eq!(unwinder_of(&profile, "python3"), "dwarf");
}

/// Frames that name a function: not `[unknown]`, not `FILE+0xADDR`.
fn named(frame: &str) -> bool {
    !frame.starts_with('[') && !frame.contains("+0x")
}

/// Debian's stripped redis-server under redis-benchmark: at least 80% of
/// its clock reads have 5 or more named frames and sit under `call`,
/// `processCommand` or `aeMain`. Our own instance, on a free port in a
/// temporary directory, killed once recorded.
/// Its clock reads are the vDSO's (gettimeofday, clock_gettime), sampled.
#[test]
fn redis_stacks_reach_its_event_loop() {
    let redis = Path::new("/usr/bin/redis-server");
    let benchmark = Path::new("/usr/bin/redis-benchmark");
    assert!(
        redis.exists() && benchmark.exists(),
        "Debian's redis-server and redis-tools are missing (cargo xtask setup)"
    );
    let dir = TempDir::new("dwarf-redis");
    let port = free_port().to_string();
    let mut server = Command::new(redis)
        .args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err() {
        assert!(std::time::Instant::now() < deadline, "redis did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let json = dir.join("profile.json");
    let pid = server.id().to_string();
    let mut recording = Command::new(clockprof());
    recording.args([
        os("record"),
        os("-p"),
        os(&pid),
        // Clock reads are ~1% of redis's CPU: sample often enough to see
        // a few hundred of them.
        os("-F"),
        os("10000"),
        os("-o"),
        json.as_os_str(),
    ]);
    let (mut clockprof, stderr) = start_until_ready(&mut recording);
    // The samples grow with the requests served, not with time: 100000
    // gave 52 to 148 samples on a fast 2-core host, too near the 100 below,
    // and 400000 gave 136 to 891.
    let bench = Command::new(benchmark)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-q",
            "-n",
            "1000000",
            "-c",
            "8",
            "-t",
            "set,get",
        ])
        .output()
        .unwrap();
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(clockprof.id() as i32, libc::SIGINT) };
    wait_with_timeout(&mut clockprof, Duration::from_secs(30));
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        bench.status.success(),
        "{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    let stderr = stderr.join().unwrap();
    let profile = read_json(&json);
    let stacks = profile["stacks"].as_array().unwrap();
    let (mut total, mut good) = (0, 0);
    for stack in stacks.iter().filter(|s| s["comm"] == "redis-server") {
        let frames: Vec<&str> = stack["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["function"].as_str().unwrap())
            .collect();
        let count = stack["count"].as_u64().unwrap();
        total += count;
        let under_loop = frames
            .iter()
            .any(|f| ["call", "processCommand", "aeMain"].contains(f));
        if under_loop && frames.iter().filter(|f| named(f)).count() >= 5 {
            good += count;
        }
    }
    eprintln!("redis-server: {good} of {total} clock reads under call/processCommand/aeMain with >= 5 named frames");
    assert!(total > 100, "{stderr}\n{profile}");
    assert!(good * 10 >= total * 8, "{good} of {total}: {profile}");
    assert_eq!(unwinder_of(&profile, "redis-server"), "dwarf");
}

/// The cgo walk on one Go release of the matrix. The fixture is built with
/// Go's default CGO_CFLAGS: its C code has no frame pointers and reuses
/// %rbp. Each of its clock syscalls is made by cgo_inner, called by
/// cgo_outer, called through cgo by main.goCaller: the stack unwinds the C
/// frames with their DWARF tables up to runtime.asmcgocall, then continues
/// on the goroutine's stack, from the frames Go saved as it switched
/// stacks, every frame named and none between.
fn assert_cgo_stacks_continue_into_the_go_callers(go: Go) {
    let name = go.name();
    let dir = TempDir::new("dwarf-cgo");
    let fixture = go.cgo_fixture();
    let comm = comm_of(fixture);
    let (profile, folded) = record(
        &dir,
        &["-s", "syscall"],
        &[fixture.as_os_str(), os("20000")],
    );
    assert_eq!(unwinder_of(&profile, &comm), "dwarf", "{name}");
    // cgo names the C wrapper of cgo_outer after a hash of the build.
    let stacks: Vec<(String, u64)> = parse_folded(&folded)
        .into_iter()
        .map(|(stack, count)| {
            let frames: Vec<&str> = stack
                .split(';')
                .map(|frame| match frame.strip_prefix("_cgo_") {
                    Some(rest) if rest.ends_with("_Cfunc_cgo_outer") => "_cgo_*_Cfunc_cgo_outer",
                    _ => frame,
                })
                .collect();
            (frames.join(";"), count)
        })
        .collect();
    let expected = format!(
        "{comm};runtime.goexit.abi0;runtime.main;main.main;main.goCaller;\
         main._Cfunc_cgo_outer.abi0;runtime.cgocall;runtime.asmcgocall.abi0;\
         _cgo_*_Cfunc_cgo_outer;cgo_outer;cgo_inner;syscall"
    );
    assert_eq!(
        stacks,
        [(expected, 20000)],
        "{name}: every clock syscall on the one stack from C into the Go callers:\n{folded}"
    );
    // Frame pointers alone stop in the C code, as perf does.
    let (_, folded) = record(
        &dir,
        &["-s", "syscall", "--unwind", "fp"],
        &[fixture.as_os_str(), os("2000")],
    );
    assert_eq!(
        count_under(&parse_folded(&folded), "main.goCaller"),
        0,
        "{name}:\n{folded}"
    );
}

#[test]
fn cgo_stacks_continue_from_c_into_the_go_callers_on_go_1_19() {
    assert_cgo_stacks_continue_into_the_go_callers(Go::V1_19);
}

#[test]
fn cgo_stacks_continue_from_c_into_the_go_callers_on_go_1_23() {
    assert_cgo_stacks_continue_into_the_go_callers(Go::V1_23);
}

#[test]
fn cgo_stacks_continue_from_c_into_the_go_callers_on_the_current_go() {
    assert_cgo_stacks_continue_into_the_go_callers(Go::Current);
}

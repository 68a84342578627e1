//! Processes are told apart across PID reuse: a PID given again, forced
//! through /proc/sys/kernel/ns_last_pid, names two processes with their own
//! names, functions and counts; and a followed process's PID, once it
//! exited, does not make an unrelated process that gets it followed.
//!
//! ns_last_pid is the last PID given in this namespace: writing N makes the
//! next fork get N + 1 if it is free. The write is one-shot (the kernel goes
//! on counting from there), so there is nothing to restore; another fork on
//! the host may take the PID first, so each test tries again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clockprof_tests::*;

const NS_LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";
const ATTEMPTS: usize = 50;

/// Spawns `command` so that it gets `pid`, if no other fork takes it first.
fn spawn_as(pid: u32, command: &mut Command) -> Child {
    std::fs::write(NS_LAST_PID, (pid - 1).to_string()).expect("root may write ns_last_pid");
    command.spawn().expect("the fixture starts")
}

/// The C fixture (or a copy) in `wait N` mode named `comm`, once ready.
fn waiting_fixture(binary: &Path, comm: &str, reads: &str, pid: Option<u32>) -> Child {
    let mut command = Command::new(binary);
    command
        .args(["wait", reads])
        .env("CLOCKPROF_FIXTURE_COMM", comm)
        .stdout(Stdio::piped());
    let mut child = match pid {
        Some(pid) => spawn_as(pid, &mut command),
        None => command.spawn().expect("the fixture starts"),
    };
    wait_until_ready(&mut child);
    child
}

fn signal(child: &Child, signal: i32) {
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

/// Host-wide clockprof writing JSON to `out`, once it records.
fn record_host(out: &Path) -> (Child, std::thread::JoinHandle<String>) {
    Clockprof::record()
        .args(["-a"])
        .sources("syscall")
        .output(out)
        .start()
}

fn stop(mut clockprof: Child, stderr: std::thread::JoinHandle<String>) {
    signal(&clockprof, libc::SIGINT);
    let status = wait_with_timeout(&mut clockprof, Duration::from_secs(60));
    let stderr = stderr.join().unwrap();
    assert!(status.success(), "{stderr}");
}

/// Events per function of the stacks named `comm` in a JSON profile, and
/// the module each fixture function was found in, summed over every
/// process of that name.
fn functions_of(
    json: &serde_json::Value,
    comm: &str,
) -> (std::collections::BTreeMap<String, u64>, Vec<String>) {
    let mut counts = std::collections::BTreeMap::new();
    let mut modules = Vec::new();
    for stack in json["stacks"].as_array().unwrap() {
        if stack["comm"] != comm {
            continue;
        }
        let frames = stack["frames"].as_array().unwrap();
        let fixture = frames
            .iter()
            .rev()
            .find(|f| f["function"].as_str().unwrap().starts_with("fixture_"));
        let name = fixture.map_or("(none)", |f| f["function"].as_str().unwrap());
        *counts.entry(name.to_string()).or_default() += stack["count"].as_u64().unwrap();
        if let Some(module) = fixture.and_then(|f| f["module"].as_str()) {
            modules.push(module.to_string());
        }
    }
    modules.sort();
    modules.dedup();
    (counts, modules)
}

/// Process A makes a known number of clock syscalls and exits; process B,
/// another binary with another name, gets A's PID and makes its own. One
/// host-wide recording shows each under its own name, function and
/// binary, exactly, as two processes under the PID with their start times
/// in the order they ran.
#[test]
fn a_reused_pid_is_two_processes_with_their_own_names_and_stacks() {
    let dir = TempDir::new("pid_reuse");
    let out = dir.join("reuse.json");
    // B is another file: A's addresses resolved in B's mappings would name
    // B's binary (or nothing), not A's.
    let second_binary = dir.join("second_fixture");
    std::fs::copy(c_fixture(), &second_binary).unwrap();
    let (clockprof, stderr) = record_host(&out);

    let mut reused = None;
    // Every attempt's A makes its reads, whatever PID B then got.
    let mut first_runs = 0;
    let mut first_pids = Vec::new();
    for _ in 0..ATTEMPTS {
        let first = Command::new(c_fixture())
            .args(["counts", "1000"])
            .env("CLOCKPROF_FIXTURE_COMM", "reuse_first")
            .spawn()
            .unwrap();
        let pid = first.id();
        assert!(first.wait_with_output().unwrap().status.success());
        first_runs += 1;
        first_pids.push(pid);
        let mut second = waiting_fixture(&second_binary, "reuse_second", "700", Some(pid));
        if second.id() == pid {
            reused = Some((pid, second));
            break;
        }
        // Another fork took the PID: this B never read the clock.
        second.kill().unwrap();
        second.wait().unwrap();
    }
    let (pid, mut second) = reused.expect("no attempt got the same PID twice");
    signal(&second, libc::SIGUSR1);
    assert!(second.wait().unwrap().success());
    stop(clockprof, stderr);

    let json = read_json(&out);
    let named = |comm: &str| -> Vec<(u64, u64, Option<u64>)> {
        json["processes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["comm"] == comm)
            .map(|p| {
                (
                    p["pid"].as_u64().unwrap(),
                    p["total"].as_u64().unwrap(),
                    p["start_time_ns"].as_u64(),
                )
            })
            .collect()
    };
    let (firsts, seconds) = (named("reuse_first"), named("reuse_second"));
    let summary = format!("PID {pid}: A {firsts:?}, B {seconds:?}");
    // counts 1000: 1000 + 500 + 250 + 200 syscalls, in each attempt's A.
    let total = |lives: &[(u64, u64, Option<u64>)]| lives.iter().map(|l| l.1).sum::<u64>();
    assert_eq!(total(&firsts), 1950 * first_runs, "{summary}");
    assert_eq!(total(&seconds), 700, "{summary}");
    // Every process is under its own PID with its start time: record keeps
    // the last 1,000 processes gone apart, and far fewer ran here.
    for &(life_pid, total, start) in &firsts {
        assert!(first_pids.contains(&(life_pid as u32)), "{summary}");
        assert!(start.is_some(), "{summary}");
        assert_eq!(total, 1950, "one A per entry: {summary}");
    }
    assert_eq!(firsts.len() as u64, first_runs, "{summary}");
    let at_pid = |lives: &[(u64, u64, Option<u64>)]| -> Vec<(u64, Option<u64>)> {
        lives
            .iter()
            .filter(|l| l.0 == u64::from(pid))
            .map(|l| (l.1, l.2))
            .collect()
    };
    let (first_at, second_at) = (at_pid(&firsts), at_pid(&seconds));
    assert_eq!(first_at.len(), 1, "{summary}");
    assert_eq!(
        seconds.len(),
        1,
        "only the B that got the PID read: {summary}"
    );
    assert_eq!(second_at, [(700, second_at[0].1)], "{summary}");
    // Two processes with one PID, in the order they ran.
    assert!(
        first_at[0].1.unwrap() < second_at[0].1.unwrap(),
        "{summary}"
    );

    let (counts, modules) = functions_of(&json, "reuse_first");
    let expected: Vec<(&str, u64)> = vec![
        ("fixture_gettimeofday", 250 * first_runs),
        ("fixture_hot", 1000 * first_runs),
        ("fixture_time", 200 * first_runs),
        ("fixture_warm", 500 * first_runs),
    ];
    let counts: Vec<(&str, u64)> = counts.iter().map(|(f, &c)| (f.as_str(), c)).collect();
    assert_eq!(counts, expected);
    assert_eq!(modules, [c_fixture().to_string_lossy()]);

    let (counts, modules) = functions_of(&json, "reuse_second");
    let counts: Vec<(&str, u64)> = counts.iter().map(|(f, &c)| (f.as_str(), c)).collect();
    assert_eq!(counts, [("fixture_triggered", 700)]);
    assert_eq!(
        modules,
        [std::fs::canonicalize(&second_binary)
            .unwrap()
            .to_string_lossy()]
    );
}

/// `record -- COMMAND` follows processes, not threads, and forgets each when
/// it exits: COMMAND (Python) runs a thread and a child process that both
/// end; unrelated processes then given the thread's id and the child's PID
/// are not recorded, while the child COMMAND starts last still is.
#[test]
fn a_followed_pid_given_to_an_unrelated_process_is_not_recorded() {
    let dir = TempDir::new("pid_prune");
    let out = dir.join("prune.json");
    let ids_file = dir.join("ids");
    let go_file = dir.join("go");
    let script = r#"
import os, subprocess, sys, threading, time
ids = []
thread = threading.Thread(target=lambda: ids.append(threading.get_native_id()))
thread.start()
thread.join()
child = subprocess.Popen(["/bin/true"])
child.wait()
ids.append(child.pid)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(" ".join(map(str, ids)))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while not os.path.exists(sys.argv[2]):
    time.sleep(0.02)
env = dict(os.environ, CLOCKPROF_FIXTURE_COMM="followed")
subprocess.run([sys.argv[3], "counts", "100"], env=env, check=True)
"#;
    let (clockprof, stderr) = start_until_ready(
        Command::new(clockprof())
            .args(["record", "-s", "syscall", "-o"])
            .arg(&out)
            .args(["--", "python3", "-c", script])
            .arg(&ids_file)
            .arg(&go_file)
            .arg(c_fixture())
            .stdout(Stdio::null()),
    );
    let started = std::time::Instant::now();
    while !ids_file.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "COMMAND wrote no ids"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ids: Vec<u32> = std::fs::read_to_string(&ids_file)
        .unwrap()
        .split_whitespace()
        .map(|id| id.parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");

    // Each unrelated process reads the clock 300 times, whatever PID it got.
    let mut given = Vec::new();
    for &id in &ids {
        for _ in 0..ATTEMPTS {
            let mut stranger = waiting_fixture(c_fixture(), "stranger", "300", Some(id));
            let got = stranger.id();
            signal(&stranger, libc::SIGUSR1);
            assert!(stranger.wait().unwrap().success());
            if got == id {
                given.push(id);
                break;
            }
        }
    }
    assert_eq!(given, ids, "the ids were never given again");
    std::fs::write(&go_file, "").unwrap();
    let mut clockprof = clockprof;
    let status = wait_with_timeout(&mut clockprof, Duration::from_secs(60));
    let stderr = stderr.join().unwrap();
    assert!(status.success(), "{stderr}");

    let json = read_json(&out);
    let processes: Vec<(u64, String, u64)> = json["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["pid"].as_u64().unwrap(),
                p["comm"].as_str().unwrap().to_string(),
                p["total"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        processes.iter().all(|(_, comm, _)| comm != "stranger"),
        "an unrelated process was recorded: {processes:?}"
    );
    // COMMAND's processes are still followed: its last child, exactly
    // (counts 100: 100 + 50 + 25 + 20 syscalls).
    let followed: Vec<u64> = processes
        .iter()
        .filter(|(_, comm, _)| comm == "followed")
        .map(|p| p.2)
        .collect();
    assert_eq!(followed, [195], "{processes:?}");
}

/// A static program without libc whose `clock_fn` makes the clock_gettime
/// syscall at the same address in both variants: `framed` keeps 8 bytes
/// of frame around the syscall (`sub $8,%rsp` ... `add $8,%rsp; ret`),
/// the other returns right after it. `caller` calls clock_fn `reads` times
/// (through a frameless `caller`, so the eBPF decoding names it) once a
/// byte or end of file is read from stdin.
fn decode_program(dir: &Path, name: &str, framed: bool, caller: &str, reads: u32) -> PathBuf {
    // Both prologues are 4 bytes (sub $8,%rsp | a 4-byte nop), so the
    // instruction after `syscall` is at one address in both programs.
    let (prologue, epilogue) = if framed {
        ("sub $8, %rsp", "add $8, %rsp\n    ret")
    } else {
        // nopl 0x0(%rax), spelled out: `as` drops a zero displacement.
        (".byte 0x0f, 0x1f, 0x40, 0x00", "ret")
    };
    let source = format!(
        r#"
    .text
    .globl clock_fn
    .type clock_fn, @function
clock_fn:
    {prologue}
    mov $228, %eax
    xor %edi, %edi
    lea ts(%rip), %rsi
    syscall
    {epilogue}
    .size clock_fn, .-clock_fn
    .globl {caller}
    .type {caller}, @function
{caller}:
    call clock_fn
    ret
    .size {caller}, .-{caller}
    .globl _start
    .type _start, @function
_start:
    xor %eax, %eax
    xor %edi, %edi
    lea ts(%rip), %rsi
    mov $1, %edx
    syscall
    mov ${reads}, %ebx
1:  call {caller}
    dec %ebx
    jnz 1b
    mov $60, %eax
    xor %edi, %edi
    syscall
    .size _start, .-_start
    .bss
ts: .zero 16
"#
    );
    let source_path = dir.join(format!("{name}.S"));
    std::fs::write(&source_path, source).unwrap();
    let binary = dir.join(name);
    let built = Command::new("cc")
        .args(["-nostdlib", "-static", "-no-pie", "-o"])
        .arg(&binary)
        .arg(&source_path)
        .status()
        .expect("cc runs");
    assert!(built.success(), "{name} builds");
    binary
}

/// The functions between `_start` and `clock_fn` of the stacks of `pid`,
/// root first, with their counts.
fn decode_stacks(json: &serde_json::Value, pid: u32) -> Vec<(Vec<String>, u64)> {
    json["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|stack| stack["pid"] == pid)
        .map(|stack| {
            let names: Vec<String> = stack["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["function"].as_str().unwrap().to_string())
                .filter(|name| {
                    ["_start", "first_caller", "second_caller", "clock_fn"].contains(&name.as_str())
                })
                .collect();
            (names, stack["count"].as_u64().unwrap())
        })
        .collect()
}

/// The eBPF decoding of the code around a clock syscall is cached per CPU,
/// and addresses only mean one code within one life of a PID: process B,
/// which got process A's PID on A's CPU, runs other code at the very
/// address where A's syscall returned. Its reads are under its own caller,
/// not under the frame A's decoding would have found in B's stack.
#[test]
fn a_reused_pid_decodes_its_own_code_at_the_same_address() {
    let dir = TempDir::new("pid_reuse_decode");
    let out = dir.join("decode.json");
    let first = decode_program(dir.path(), "decode_first", true, "first_caller", 1000);
    let second = decode_program(dir.path(), "decode_second", false, "second_caller", 700);
    // Both on the last CPU, where nothing else of this test runs.
    let cpus = std::thread::available_parallelism().unwrap().get();
    let cpu = (cpus - 1).to_string();
    let pinned = |binary: &Path| {
        let mut command = Command::new("taskset");
        command.args(["-c", &cpu]).arg(binary);
        command
    };
    let (clockprof, stderr) = record_host(&out);

    let mut first_pids = Vec::new();
    let mut reused = None;
    for _ in 0..ATTEMPTS {
        let mut first_run = pinned(&first).stdin(Stdio::null()).spawn().unwrap();
        let pid = first_run.id();
        assert!(first_run.wait().unwrap().success());
        first_pids.push(pid);
        let mut second_run = spawn_as(pid, pinned(&second).stdin(Stdio::piped()));
        if second_run.id() == pid {
            reused = Some((pid, second_run));
            break;
        }
        // Another fork took the PID: this B never read the clock.
        second_run.kill().unwrap();
        second_run.wait().unwrap();
    }
    let (pid, mut second_run) = reused.expect("no attempt got the same PID twice");
    // End of file on stdin starts B's reads.
    drop(second_run.stdin.take());
    assert!(second_run.wait().unwrap().success());
    stop(clockprof, stderr);

    let json = read_json(&out);
    let summary = format!("PID {pid}: {}", json["stacks"]);
    // The A that ran last under the PID (every attempt's A read 1000
    // times, each under its own PID), then B. With A's decoding, B's reads
    // would be under `_start;clock_fn`: A's frame skipped second_caller.
    let stack = |names: [&str; 3]| names.map(String::from).to_vec();
    let mut found = decode_stacks(&json, pid);
    found.sort();
    assert_eq!(
        found,
        [
            (stack(["_start", "first_caller", "clock_fn"]), 1000),
            (stack(["_start", "second_caller", "clock_fn"]), 700)
        ],
        "{summary}"
    );
}

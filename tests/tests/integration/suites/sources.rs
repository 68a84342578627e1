//! End-to-end tests of the user-space sources: libc and Go uprobes (exact
//! counts under the calling function) and vDSO sampling (most samples under
//! the hot function), on real fixtures, as root.

use std::ffi::OsStr;
use std::path::Path;

use clockprof_tests::*;

/// `clockprof record -s SOURCES -o DIR/out.folded -- COMMAND...`, returning
/// the folded stacks; asserts success.
fn record(dir: &TempDir, sources: &str, extra: &[&str], command: &[&OsStr]) -> Vec<(String, u64)> {
    Clockprof::record()
        .sources(sources)
        .output(&dir.join("out.folded"))
        .args(extra)
        .run(command)
        .success()
        .folded()
}

fn show(folded: &[(String, u64)]) -> String {
    folded.iter().map(|(s, c)| format!("{s} {c}\n")).collect()
}

/// The C fixture's `libc 30000` run, exactly: 30,000 glibc clock_gettime
/// calls from fixture_libc_hot and 15,000 from fixture_libc_warm, each named
/// as libc's MONOTONIC read.
fn assert_libc_fixture_counts(folded: &[(String, u64)]) {
    let text = show(folded);
    assert_eq!(count_under(folded, "fixture_libc_hot"), 30000, "{text}");
    assert_eq!(count_under(folded, "fixture_libc_warm"), 15000, "{text}");
    assert_eq!(
        leaves_under(folded, "fixture_libc_hot")
            .into_iter()
            .collect::<Vec<_>>(),
        vec![("[libc clock_gettime MONOTONIC]".to_string(), 30000)]
    );
}

#[test]
fn libc_source_counts_glibc_calls_exactly_under_the_caller() {
    let dir = TempDir::new("libc");
    let fixture = c_fixture();
    let folded = record(
        &dir,
        "libc",
        &[],
        &[fixture.as_os_str(), os("libc"), os("30000")],
    );
    let text = show(&folded);
    assert_libc_fixture_counts(&folded);
    // The caller the entry uprobe would lose is there, right below libc's function.
    assert!(
        text.contains(";main;fixture_libc_hot;clock_gettime;[libc clock_gettime MONOTONIC] 30000"),
        "{text}"
    );
    assert_eq!(folded.iter().map(|(_, c)| c).sum::<u64>(), 45000, "{text}");
}

/// COMMAND's children are followed by the uprobes too: a shell that runs
/// the fixture (forked, then exec'd) has every one of its glibc calls
/// counted, from its first instruction.
#[test]
fn libc_source_counts_the_calls_of_commands_children_exactly() {
    let dir = TempDir::new("libc-child");
    let script = format!("{} libc 30000; true", c_fixture().display());
    let folded = record(&dir, "libc", &[], &[os("sh"), os("-c"), os(&script)]);
    assert_libc_fixture_counts(&folded);
    assert_no_clockprof_programs_left();
}

/// A Go program that starts after a host-wide recording did, from a file
/// no process mapped when it started, gets the go uprobes: its time.Now
/// calls (made after the attach had time to land) are counted exactly, and
/// the recording names the hooks attached to it.
#[test]
fn go_source_host_wide_probes_a_go_program_started_after_it() {
    let dir = TempDir::new("go-late");
    let late = dir.join("golate");
    std::fs::copy(go_fixture(), &late).unwrap();
    let out = dir.join("out.json");
    let (mut recorder, stderr) = start_until_ready(
        std::process::Command::new(clockprof())
            .args(["record", "-a", "-s", "go", "--stack-every", "1", "-o"])
            .arg(&out),
    );
    // The loops start 500 ms after exec; the attach lands within tens.
    let status = std::process::Command::new(&late)
        .args(["20000", "500"])
        .status()
        .unwrap();
    assert!(status.success());
    // Its last reads are in the kernel's maps; SIGINT drains them.
    unsafe { libc::kill(recorder.id() as i32, libc::SIGINT) };
    let status = wait_with_timeout(&mut recorder, std::time::Duration::from_secs(30));
    let stderr = stderr.join().unwrap();
    assert!(status.success(), "{stderr}");
    let json = read_json(&out);
    let hooks: Vec<&str> = json["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["hook"].as_str())
        .collect();
    let shown = format!("{}:time.now", late.display());
    assert!(hooks.contains(&shown.as_str()), "{hooks:?}");
    let now_under = |function: &str| -> u64 {
        json["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|stack| stack["comm"] == "golate" && stack["leaf"] == "[go time.now]")
            .filter(|stack| {
                stack["frames"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|frame| frame["function"] == function)
            })
            .map(|stack| stack["count"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(now_under("main.hotLoop"), 20000, "{json}");
    assert_eq!(now_under("main.warmLoop"), 10000, "{json}");
    assert_no_clockprof_programs_left();
}

/// The profile's stacks of `comm`, folded with their leaves:
/// `COMM;ROOT;...;FUNCTION;[LEAF] COUNT`.
fn folded_with_leaves(profile: &serde_json::Value, comm: &str) -> Vec<(String, u64)> {
    profile["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|stack| stack["comm"] == comm)
        .map(|stack| {
            let mut frames = vec![comm];
            frames.extend(
                stack["frames"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|frame| frame["function"].as_str().unwrap()),
            );
            frames.push(stack["leaf"].as_str().unwrap());
            (frames.join(";"), stack["count"].as_u64().unwrap())
        })
        .collect()
}

/// Whether the ELF file `path` has a symbol `name`.
fn has_symbol(path: &Path, name: &str) -> bool {
    use object::{Object, ObjectSymbol};
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let found = file.symbols().any(|symbol| symbol.name() == Ok(name));
    found
}

/// The go source on one Go release of the matrix: each of the fixture's
/// time.Now calls is counted once, under its caller, on the frame-pointer
/// stack Go keeps (what `--unwind auto` picks for a Go program), every frame
/// named from the goroutine's root down to time.now.
fn assert_go_source_counts_time_now_exactly(go: Go) {
    let name = go.name();
    let fixture = go.go_fixture();
    let comm = comm_of(fixture);
    let dir = TempDir::new("go");
    let profile = Clockprof::record()
        .sources("go")
        .output(&dir.join("out.json"))
        .run([fixture.as_os_str(), os("40000")])
        .success()
        .json();
    let folded = folded_with_leaves(&profile, &comm);
    let text = show(&folded);
    let unwinder = profile["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|process| process["comm"] == comm.as_str())
        .unwrap_or_else(|| panic!("{name}: no process {comm}:\n{profile}"))["unwinder"]
        .clone();
    assert_eq!(unwinder, "frame_pointers", "{name}");
    let now = time_now_frames(fixture);
    for (caller, calls) in [("main.hotLoop", 40000), ("main.warmLoop", 20000)] {
        assert_eq!(
            stacks_through(&folded, caller),
            [(
                format!(
                    "{comm};runtime.goexit.abi0;runtime.main;main.main;{caller};{now};[go time.now]"
                ),
                calls
            )],
            "{name}: {caller}'s time.Now calls, exactly, on one stack:\n{text}"
        );
    }
}

/// The frames from time.Now down to time.now in a fixture's stacks: from Go
/// 1.24 or 1.25 on (1.26 here), time.Now reads the clock through
/// time.runtimeNow (synctest's fake clock hooks in there).
fn time_now_frames(fixture: &Path) -> &'static str {
    if has_symbol(fixture, "time.runtimeNow") {
        "time.Now;time.runtimeNow;time.now"
    } else {
        "time.Now;time.now"
    }
}

/// The folded stacks that pass through `caller`, with their counts.
fn stacks_through(folded: &[(String, u64)], caller: &str) -> Vec<(String, u64)> {
    folded
        .iter()
        .filter(|(stack, _)| stack.split(';').any(|frame| frame == caller))
        .cloned()
        .collect()
}

#[test]
fn go_source_counts_time_now_exactly_on_go_1_19() {
    assert_go_source_counts_time_now_exactly(Go::V1_19);
}

#[test]
fn go_source_counts_time_now_exactly_on_go_1_23() {
    assert_go_source_counts_time_now_exactly(Go::V1_23);
}

#[test]
fn go_source_counts_time_now_exactly_on_the_current_go() {
    assert_go_source_counts_time_now_exactly(Go::Current);
}

#[test]
fn vdso_source_puts_most_samples_under_the_hot_function() {
    let dir = TempDir::new("vdso");
    let fixture = c_fixture();
    let folded = record(
        &dir,
        "vdso",
        &["-F", "2000"],
        &[fixture.as_os_str(), os("vdso"), os("2")],
    );
    let text = show(&folded);
    let total: u64 = folded.iter().map(|(_, c)| c).sum();
    assert!(
        total > 500,
        "too few vDSO samples ({total}) in 2 s of clock reads at 2 kHz:\n{text}"
    );
    let under_hot = count_under(&folded, "fixture_vdso_spin");
    assert!(
        under_hot * 10 >= total * 9,
        "only {under_hot} of {total} vDSO samples under fixture_vdso_spin:\n{text}"
    );
    // Every sample ends in a vDSO clock function, named from the vDSO image.
    for (stack, _) in &folded {
        assert!(stack.ends_with(";[vdso sample]"), "{stack}");
        assert!(stack.contains(";__vdso_clock_gettime;"), "{stack}");
    }
    // glibc's frameless wrapper sits between the caller and the vDSO.
    assert!(
        text.contains(";main;fixture_vdso_spin;clock_gettime;__vdso_clock_gettime;[vdso sample] "),
        "{text}"
    );
}

#[test]
fn go_source_on_a_c_program_is_a_clear_error() {
    let fixture = c_fixture();
    let output = run(&[
        os("record"),
        os("-s"),
        os("go"),
        os("--"),
        fixture.as_os_str(),
        os("counts"),
        os("10"),
    ]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("is not a Go program"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_no_clockprof_programs_left();
}

/// `strip`ped (what `-ldflags=-s -w` leaves: no symbol table, no DWARF), a
/// Go program still has the function table its runtime reads, .gopclntab.
/// The go source finds time.now there and counts it exactly, and the
/// frames are named from it. What the table does not have: the ABI suffix
/// the linker adds to symbol names only (`runtime.goexit.abi0` is
/// `runtime.goexit`).
fn assert_stripped_go_is_counted_and_named_from_its_function_table(go: Go) {
    let name = go.name();
    let dir = TempDir::new("go-stripped");
    let stripped = dir.join("gostripped");
    let status = std::process::Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(go.go_fixture())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        !has_symbol(&stripped, "runtime.main"),
        "{name}: still has symbols"
    );
    let comm = comm_of(&stripped);
    let profile = Clockprof::record()
        .sources("go")
        .output(&dir.join("out.json"))
        .run([stripped.as_os_str(), os("30000")])
        .success()
        .json();
    let folded = folded_with_leaves(&profile, &comm);
    let text = show(&folded);
    let now = time_now_frames(go.go_fixture());
    for (caller, calls) in [("main.hotLoop", 30000), ("main.warmLoop", 15000)] {
        assert_eq!(
            stacks_through(&folded, caller),
            [(
                format!(
                    "{comm};runtime.goexit;runtime.main;main.main;{caller};{now};[go time.now]"
                ),
                calls
            )],
            "{name}: {caller}'s time.Now calls in the stripped build, exactly, named:\n{text}"
        );
    }
}

#[test]
fn stripped_go_is_counted_and_named_from_its_function_table_on_go_1_19() {
    assert_stripped_go_is_counted_and_named_from_its_function_table(Go::V1_19);
}

#[test]
fn stripped_go_is_counted_and_named_from_its_function_table_on_the_current_go() {
    assert_stripped_go_is_counted_and_named_from_its_function_table(Go::Current);
}

/// A Go program whose function table does not read (here its magic is
/// overwritten, as in a Go release before 1.18) and without symbols: the go
/// source says so in one sentence, and leaves the file as it was.
#[test]
fn a_go_binary_without_symbols_or_a_function_table_is_a_clear_error() {
    use object::{Object, ObjectSection};
    let dir = TempDir::new("go-unnamed");
    let stripped = dir.join("gounnamed");
    let status = std::process::Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(go_fixture())
        .status()
        .unwrap();
    assert!(status.success());
    let mut data = std::fs::read(&stripped).unwrap();
    let (table_at, _) = object::File::parse(&*data)
        .unwrap()
        .section_by_name(".gopclntab")
        .unwrap()
        .file_range()
        .unwrap();
    let table_at = usize::try_from(table_at).unwrap();
    data[table_at..table_at + 4].copy_from_slice(&0xffff_fffau32.to_le_bytes());
    std::fs::write(&stripped, &data).unwrap();
    let output = run(&[
        os("record"),
        os("-s"),
        os("go"),
        os("--"),
        stripped.as_os_str(),
        os("10"),
    ]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("whose functions cannot be found"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(std::fs::read(&stripped).unwrap(), data);
    assert_no_clockprof_programs_left();
}

#[test]
fn pid_scoped_libc_uprobe_counts_only_that_process() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = TempDir::new("libc-pid");
    let out = dir.join("p.folded");
    // A process that waits for SIGUSR1 and then makes raw syscalls only, and a
    // second one calling glibc in a loop that must not be counted.
    let mut other = Command::new(c_fixture())
        .args(["vdso", "4"])
        .spawn()
        .unwrap();
    let mut target = Command::new(c_fixture())
        .args(["wait", "100"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(target.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let pid = target.id().to_string();
    let output = run(&[
        os("record"),
        os("-s"),
        os("libc"),
        os("-p"),
        os(&pid),
        os("-d"),
        os("1"),
        os("-o"),
        out.as_os_str(),
    ]);
    let _ = other.kill();
    let _ = other.wait();
    unsafe { libc::kill(target.id() as i32, libc::SIGUSR1) };
    let _ = target.wait();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        count_under(&parse_folded(&text), "fixture_vdso_spin"),
        0,
        "another process leaked in:\n{text}"
    );
}

/// JIT code lives in anonymous memory; runtimes name it in /tmp/perf-PID.map.
/// The fixture copies a clock-syscall loop into such memory, names it
/// jit_hot_loop, runs it and exits: the name must survive the process.
#[test]
fn jit_frames_are_named_from_the_perf_map() {
    let dir = TempDir::new("jit");
    let out = dir.join("j.json");
    let fixture = c_fixture();
    let output = record_to(
        &out,
        &["-s", "syscall"],
        &[fixture.as_os_str(), os("jit"), os("2500")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let json = read_json(&out);
    let pid = json["processes"][0]["pid"].as_u64().unwrap();
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    let stack = &json["stacks"][0];
    assert_eq!(stack["count"], 2500, "{json}");
    let functions: Vec<&str> = stack["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap())
        .collect();
    assert_eq!(
        functions[functions.len() - 2..],
        ["fixture_jit", "jit_hot_loop"],
        "{functions:?}"
    );
    assert_eq!(
        stack["frames"].as_array().unwrap().last().unwrap()["module"],
        "[jit]"
    );
}

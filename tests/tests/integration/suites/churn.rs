//! A recording while thousands of short processes run: the kernel's maps are
//! drained every second while they churn, and what each process counted is
//! read exactly once. Run as root, one at a time (`cargo xtask test` does).

use std::collections::BTreeMap;
use std::ffi::OsStr;

use clockprof_tests::*;

/// Processes started, one after another, by a shell loop.
const PROCESSES: u64 = 10_000;
/// `counts 8`: fixture_hot 8 x MONOTONIC, fixture_warm 4 x REALTIME,
/// fixture_gettimeofday 2, fixture_time 1.
const PER_PROCESS: u64 = 8;

/// Host-wide, `-- sh -c 'loop'` starting the C fixture 10,000 times: every
/// clock read of every run is counted exactly once, across the ~10 drains
/// the run takes (a count drained twice, or lost at a flip, would show),
/// with its stack: nothing is lost, neither for want of room nor to a
/// collision in the stack map, and every read is under the function that
/// made it. Only the last 1,000 processes gone keep their own pid; older ones
/// are merged per name: the profile holds far fewer stacks than processes ran.
#[test]
fn ten_thousand_short_processes_are_counted_exactly_across_drains() {
    require_root();
    let dir = TempDir::new("churn");
    let out = dir.join("churn.json");
    let fixture = c_fixture();
    let comm = comm_of(fixture);
    let script = format!(
        "i=0; while [ $i -lt {PROCESSES} ]; do {} counts {PER_PROCESS} || exit 1; i=$((i+1)); done",
        fixture.display()
    );
    let started = std::time::Instant::now();
    let output = record_to(
        &out,
        &["-a", "-s", "syscall"],
        &[OsStr::new("sh"), OsStr::new("-c"), OsStr::new(&script)],
    );
    let elapsed = started.elapsed();
    assert!(output.status.success(), "{}", stderr(&output));
    let json = read_json(&out);
    eprintln!(
        "{PROCESSES} processes in {elapsed:?}; lost: {}",
        json["lost"]
    );
    assert_eq!(json["lost_mapping_records"], 0);

    // Per function and clock read, every stack of the fixture's processes.
    let mut per_function = BTreeMap::<(String, String), u64>::new();
    let mut stacks = 0;
    for stack in json["stacks"].as_array().unwrap() {
        if stack["comm"] != comm.as_str() {
            continue;
        }
        stacks += 1;
        let frames = stack["frames"].as_array().unwrap();
        let reader = frames
            .last()
            .map_or("", |f| f["function"].as_str().unwrap());
        *per_function
            .entry((
                reader.to_string(),
                stack["leaf"].as_str().unwrap().to_string(),
            ))
            .or_default() += stack["count"].as_u64().unwrap();
    }
    let expected = |function: &str, leaf: &str, share: u64| {
        ((function.to_string(), leaf.to_string()), PROCESSES * share)
    };
    assert_eq!(
        per_function,
        BTreeMap::from([
            expected(
                "fixture_hot",
                "[syscall clock_gettime MONOTONIC direct]",
                PER_PROCESS
            ),
            expected(
                "fixture_warm",
                "[syscall clock_gettime REALTIME direct]",
                PER_PROCESS / 2
            ),
            expected(
                "fixture_gettimeofday",
                "[syscall gettimeofday direct]",
                PER_PROCESS / 4
            ),
            expected("fixture_time", "[syscall time direct]", PER_PROCESS / 5),
        ])
    );
    assert_eq!(
        json["lost"],
        serde_json::json!({"events": 0, "user_stacks": 0, "kernel_stacks": 0, "followed_processes": 0})
    );
    eprintln!("{stacks} stacks for {PROCESSES} processes");
    assert!(
        stacks < PROCESSES,
        "{stacks} stacks: gone processes are not merged"
    );
}

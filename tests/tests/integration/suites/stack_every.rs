//! `--stack-every N`: one event in N takes its user stack, yet the folded
//! counts summed per calling function are the exact counts, and the JSON
//! marks the stacks estimated with N.

use clockprof_tests::*;

/// Records `fixture ARGS` with `--stack-every N` (and `extra` options) into
/// `name` under a fresh directory; returns the file's text.
fn record(dir: &TempDir, name: &str, every: u32, extra: &[&str], fixture: &[&str]) -> String {
    let mut command = vec![c_fixture().as_os_str()];
    command.extend(fixture.iter().map(|a| os(a)));
    Clockprof::record()
        .stack_every(every)
        .args(extra)
        .output(&dir.join(name))
        .run(command)
        .success()
        .text()
}

/// `relay 3000`: fixture_relay_read 3000 reads through fixture_relay, from
/// fixture_via_x (2250) and fixture_via_y (750) interleaved, then
/// fixture_hot 1000 and fixture_once 1.
fn assert_relay_counts_exact(folded: &str, what: &str) {
    let folded = parse_folded(folded);
    let total: u64 = folded.iter().map(|(_, c)| c).sum();
    assert_eq!(total, 4001, "{what}: {folded:?}");
    // The calling functions, and their callers up to the first return
    // address: exact.
    assert_eq!(
        count_under(&folded, "fixture_relay_read"),
        3000,
        "{what}: {folded:?}"
    );
    assert_eq!(
        count_under(&folded, "fixture_relay"),
        3000,
        "{what}: {folded:?}"
    );
    assert_eq!(
        count_under(&folded, "fixture_hot"),
        1000,
        "{what}: {folded:?}"
    );
    assert_eq!(
        count_under(&folded, "fixture_once"),
        1,
        "{what}: {folded:?}"
    );
    // Above them, estimated: the two paths share the exact 3000, and the
    // random gaps between stacks see both (a fixed gap of 64 in an x x x y
    // loop would only ever see one).
    let x = count_under(&folded, "fixture_via_x");
    let y = count_under(&folded, "fixture_via_y");
    assert_eq!(x + y, 3000, "{what}: {folded:?}");
    assert!(x > y && y > 0, "{what}: x {x}, y {y}: {folded:?}");
}

#[test]
fn per_function_counts_stay_exact_with_sampled_stacks() {
    let dir = TempDir::new("stack-every-folded");
    for every in [64, 7, 1] {
        for backend in ["raw_tracepoint", "tracepoint"] {
            let folded = record(
                &dir,
                &format!("{every}-{backend}.folded"),
                every,
                &["-s", "syscall", "--backend", backend],
                &["relay", "3000"],
            );
            assert_relay_counts_exact(&folded, &format!("--stack-every {every}, {backend}"));
            if every == 1 {
                assert!(!folded.contains("[unsampled]"), "{folded}");
            }
        }
    }
}

#[test]
fn recovered_callers_stay_exact_with_sampled_stacks() {
    // glibc's frameless wrapper around the vDSO's syscall fallback: the
    // calling function is one the frame walk skips, recovered in the kernel
    // for sampled-out events too.
    let dir = TempDir::new("stack-every-cputime");
    for backend in ["raw_tracepoint", "tracepoint"] {
        let folded = record(
            &dir,
            &format!("{backend}.folded"),
            64,
            &["-s", "syscall", "--backend", backend],
            &["cputime", "3000"],
        );
        let folded = parse_folded(&folded);
        assert_eq!(count_under(&folded, "fixture_cputime"), 3000, "{folded:?}");
    }
}

#[test]
fn uprobe_counts_stay_exact_with_sampled_stacks() {
    let dir = TempDir::new("stack-every-libc");
    let folded = record(&dir, "libc.folded", 64, &["-s", "libc"], &["libc", "3000"]);
    let folded = parse_folded(&folded);
    assert_eq!(count_under(&folded, "fixture_libc_hot"), 3000, "{folded:?}");
    assert_eq!(
        count_under(&folded, "fixture_libc_warm"),
        1500,
        "{folded:?}"
    );
}

#[test]
fn json_marks_estimated_stacks_and_gives_n() {
    let dir = TempDir::new("stack-every-json");
    let json = record(&dir, "64.json", 64, &["-s", "syscall"], &["relay", "3000"]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["stack_every"], 64, "{json}");
    assert_eq!(json["total"], 4001, "{json}");
    let stacks = json["stacks"].as_array().unwrap();
    let names = |stack: &serde_json::Value| -> Vec<String> {
        stack["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["function"].as_str().unwrap().to_string())
            .collect()
    };
    let relay: Vec<&serde_json::Value> = stacks
        .iter()
        .filter(|s| names(s).iter().any(|f| f == "fixture_relay_read"))
        .collect();
    assert!(relay.len() >= 2, "{json}");
    for stack in &relay {
        assert_eq!(stack["state"], "estimated", "{stack}");
        // fixture_relay_read and the return into fixture_relay.
        assert_eq!(stack["exact_frames"], 2, "{stack}");
    }
    for stack in stacks {
        let state = stack["state"].as_str().unwrap();
        assert!(
            ["estimated", "unsampled", "complete"].contains(&state),
            "{stack}"
        );
        if state == "unsampled" {
            assert_eq!(names(stack)[0], "[unsampled]", "{stack}");
        }
    }

    let every = record(&dir, "1.json", 1, &["-s", "syscall"], &["relay", "3000"]);
    let every: serde_json::Value = serde_json::from_str(&every).unwrap();
    assert_eq!(every["stack_every"], 1, "{every}");
    for stack in every["stacks"].as_array().unwrap() {
        assert_eq!(stack["state"], "complete", "{stack}");
        assert!(stack.get("exact_frames").is_none(), "{stack}");
    }
}

#[test]
fn summary_says_stacks_are_sampled_and_names_the_backend() {
    let output = run(&[
        os("record"),
        os("-s"),
        os("syscall"),
        os("--backend"),
        os("raw_tracepoint"),
        os("--stack-every"),
        os("64"),
        os("--"),
        c_fixture().as_os_str(),
        os("relay"),
        os("300"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(
        summary.contains("user stacks sampled 1 in 64 per CPU"),
        "{summary}"
    );
    assert!(summary.contains("backend: raw_tracepoint"), "{summary}");
}

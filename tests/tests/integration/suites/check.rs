//! End-to-end tests of `clockprof check` and `clockprof diff`: the real
//! binary, real eBPF, the C fixture's exact clock-syscall counts (counts N:
//! fixture_hot N, fixture_warm N/2, fixture_gettimeofday N/4, fixture_time N/5).
//! Run as root, one at a time (`cargo xtask test` does both).

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

use clockprof_tests::*;

/// `clockprof check ARGS -- FIXTURE FIXTURE_ARGS`.
fn check(args: &[&OsStr], fixture_args: &[&str]) -> Output {
    let mut argv: Vec<&OsStr> = vec![os("check")];
    argv.extend_from_slice(args);
    argv.push(os("--"));
    argv.push(c_fixture().as_os_str());
    argv.extend(fixture_args.iter().map(|a| os(a)));
    run(&argv)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// The table row of the budget `name`, split on whitespace after the name:
/// [measured, limit, result].
fn row(table: &str, name: &str) -> Vec<String> {
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no row for `{name}` in:\n{table}"));
    line[name.len()..]
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// A JUnit file read by Python's XML parser: (suite tests, suite failures,
/// [(test case name, failure message)]).
fn read_junit(path: &Path) -> (u64, u64, Vec<(String, Option<String>)>) {
    let script = r#"
import json, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suite = root.find("testsuite")
cases = []
for case in suite.findall("testcase"):
    failure = case.find("failure")
    cases.append([case.get("name"), None if failure is None else failure.get("message")])
print(json.dumps([int(suite.get("tests")), int(suite.get("failures")), cases]))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the JUnit file is not well-formed XML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cases = parsed[2]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c[0].as_str().unwrap().to_string(),
                c[1].as_str().map(String::from),
            )
        })
        .collect();
    (
        parsed[0].as_u64().unwrap(),
        parsed[1].as_u64().unwrap(),
        cases,
    )
}

fn assert_one_line_error(output: &Output, needle: &str) {
    let err = stderr(output);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("clockprof: ") && last.contains(needle),
        "expected one error sentence with `{needle}`, got:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn over_budget_exits_3_with_the_table_and_a_junit_failure() {
    let dir = TempDir::new("check-over");
    let junit = dir.join("clock.xml");
    let output = check(
        &[
            os("-s"),
            os("syscall"),
            os("--max"),
            os("fixture_hot=1999"),
            os("--max"),
            os("fixture_*=3900"),
            os("--max"),
            os("[syscall gettimeofday]=500"),
            os("--junit"),
            junit.as_os_str(),
        ],
        &["counts", "2000"],
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let table = stdout(&output);
    assert_eq!(
        row(&table, "max fixture_hot=1999"),
        ["2000", "1999", "FAIL"]
    );
    assert_eq!(row(&table, "max fixture_*=3900"), ["3900", "3900", "pass"]);
    assert_eq!(
        row(&table, "max [syscall gettimeofday]=500"),
        ["500", "500", "pass"]
    );
    assert!(table.contains("1 of 3 budgets exceeded"), "{table}");
    let (tests, failures, cases) = read_junit(&junit);
    assert_eq!((tests, failures), (3, 1));
    assert_eq!(
        cases,
        vec![
            (
                "max fixture_hot=1999".to_string(),
                Some("stacks with a frame matching `fixture_hot` made 2000 clock reads, over the limit of 1999".to_string())
            ),
            ("max fixture_*=3900".to_string(), None),
            ("max [syscall gettimeofday]=500".to_string(), None),
        ]
    );
    assert_eq!(
        dir.entries(),
        vec!["clock.xml"],
        "a temporary file was left"
    );
    assert_no_clockprof_programs_left();
}

#[test]
fn within_budget_exits_0_and_writes_the_same_output_as_record() {
    let dir = TempDir::new("check-within");
    let out = dir.join("p.folded");
    let output = check(
        &[
            os("-s"),
            os("syscall"),
            os("-o"),
            out.as_os_str(),
            os("--max"),
            os("fixture_hot=20000"),
            os("--max"),
            os("fixture_time=4000"),
            os("--max-rate"),
            os("fixture_warm=1e12"),
        ],
        &["counts", "20000"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let table = stdout(&output);
    assert_eq!(
        row(&table, "max fixture_hot=20000"),
        ["20000", "20000", "pass"]
    );
    assert_eq!(
        row(&table, "max fixture_time=4000"),
        ["4000", "4000", "pass"]
    );
    let rate = row(&table, "max-rate fixture_warm=1000000000000/s");
    assert_eq!(rate[2], "pass", "{table}");
    assert!(rate[0].ends_with("/s"), "{table}");
    assert!(table.contains("0 of 3 budgets exceeded"), "{table}");
    // -o is written exactly as record writes it; no summary on stdout.
    let folded = parse_folded(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(count_under(&folded, "fixture_hot"), 20000);
    assert_eq!(folded.iter().map(|(_, c)| c).sum::<u64>(), 39000);
    assert!(!table.contains("Top processes"), "{table}");
}

#[test]
fn failing_command_status_wins_over_budgets() {
    let dir = TempDir::new("check-status");
    let junit = dir.join("j.xml");
    let over = check(
        &[
            os("-s"),
            os("syscall"),
            os("--max"),
            os("fixture_hot=1"),
            os("--junit"),
            junit.as_os_str(),
        ],
        &["counts", "100", "7"],
    );
    assert_eq!(over.status.code(), Some(7), "{}", stderr(&over));
    // The budgets are still judged and reported.
    assert_eq!(
        row(&stdout(&over), "max fixture_hot=1"),
        ["100", "1", "FAIL"]
    );
    let (tests, failures, cases) = read_junit(&junit);
    assert_eq!((tests, failures), (2, 2));
    assert_eq!(
        cases[0],
        (
            "COMMAND exits 0".to_string(),
            Some("COMMAND exited with status 7".to_string())
        )
    );
    let within = check(
        &[os("-s"), os("syscall"), os("--max"), os("fixture_hot=100")],
        &["counts", "100", "5"],
    );
    assert_eq!(within.status.code(), Some(5), "{}", stderr(&within));
}

#[test]
fn a_pattern_that_matches_no_frame_is_an_error() {
    let dir = TempDir::new("check-typo");
    let junit = dir.join("j.xml");
    let output = check(
        &[
            os("-s"),
            os("syscall"),
            os("--max"),
            os("fixture_hot=100000"),
            os("--max"),
            os("fixture_hott=100000"),
            os("--junit"),
            junit.as_os_str(),
        ],
        &["counts", "100"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_one_line_error(&output, "`fixture_hott` matches no frame");
    assert!(stdout(&output).is_empty(), "{}", stdout(&output));
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
    // A bad limit fails before anything is recorded.
    let bad = check(&[os("--max"), os("fixture_hot=lots")], &["counts", "100"]);
    assert_eq!(bad.status.code(), Some(1));
    assert_one_line_error(&bad, "`lots` is neither a count");
    assert!(!stderr(&bad).contains("recording"), "{}", stderr(&bad));
    // A CPU time past Duration's range panicked ("cannot convert float
    // seconds to Duration").
    let long = check(
        &[os("--max"), os("main=100000000000000000000s")],
        &["counts", "100"],
    );
    assert_eq!(long.status.code(), Some(1), "{}", stderr(&long));
    assert_one_line_error(&long, "`100000000000000000000s` is too long to hold");
}

/// The JUnit file is written as -o is: never through a link planted at its
/// path, refused before anything is recorded.
#[test]
fn junit_is_never_written_through_a_link() {
    let dir = TempDir::new("check-junit-link");
    let victim = dir.join("victim");
    std::fs::write(&victim, "keep\n").unwrap();
    let link = dir.join("clock.xml");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let output = check(
        &[
            os("-s"),
            os("syscall"),
            os("--max"),
            os("fixture_hot=1"),
            os("--junit"),
            link.as_os_str(),
        ],
        &["counts", "100"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_one_line_error(&output, "symbolic link");
    assert!(
        !stderr(&output).contains("recording"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(dir.entries(), vec!["clock.xml", "victim"]);
}

#[test]
fn baseline_regression_exits_3_and_an_unchanged_run_passes() {
    let dir = TempDir::new("check-baseline");
    let base = dir.join("base.json");
    let fixture = c_fixture();
    let recorded = record_to(
        &base,
        &["-s", "syscall"],
        &[fixture.as_os_str(), os("counts"), os("1000")],
    );
    assert!(recorded.status.success(), "{}", stderr(&recorded));

    let grown = check(
        &[
            os("-s"),
            os("syscall"),
            os("--baseline"),
            base.as_os_str(),
            os("--max-increase"),
            os("50"),
        ],
        &["counts", "10000"],
    );
    assert_eq!(grown.status.code(), Some(3), "{}", stderr(&grown));
    let table = stdout(&grown);
    let name = format!("baseline {} max-increase +50%", base.display());
    let verdict = row(&table, &name);
    assert_eq!(verdict.last().unwrap(), "FAIL", "{table}");
    assert_eq!(verdict[0], "+900.0%", "{table}");
    // The function that reads the clock comes first among the frames that
    // grew as much (its callers grew with it).
    let first_frame = table
        .lines()
        .skip_while(|l| !l.starts_with("baseline "))
        .nth(1)
        .unwrap();
    assert_eq!(
        first_frame.trim(),
        "fixture_hot: 1000 -> 10000 reads (+900.0%)",
        "{table}"
    );

    let same = check(
        &[
            os("-s"),
            os("syscall"),
            os("--baseline"),
            base.as_os_str(),
            os("--max-increase"),
            os("0"),
        ],
        &["counts", "1000"],
    );
    assert_eq!(same.status.code(), Some(0), "{}", stdout(&same));
    assert_eq!(
        row(&stdout(&same), &name.replace("+50%", "+0%"))
            .last()
            .unwrap(),
        "pass"
    );
}

#[test]
fn budget_file_holds_the_rules() {
    let dir = TempDir::new("check-budget");
    let base = dir.join("main.folded");
    let fixture = c_fixture();
    let recorded = record_to(
        &base,
        &["-s", "syscall"],
        &[fixture.as_os_str(), os("counts"), os("4000")],
    );
    assert!(recorded.status.success(), "{}", stderr(&recorded));
    let budget = dir.join("clock-budget.toml");
    std::fs::write(
        &budget,
        r#"
[max]
fixture_hot = 4000
"fixture_*" = 7799
"[syscall time]" = 800

[max-rate]
fixture_warm = 1e12

[baseline]
file = "main.folded"
max-increase = 10
"#,
    )
    .unwrap();
    let output = check(
        &[os("-s"), os("syscall"), os("--budget"), budget.as_os_str()],
        &["counts", "4000"],
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let table = stdout(&output);
    assert_eq!(
        row(&table, "max fixture_hot=4000"),
        ["4000", "4000", "pass"]
    );
    assert_eq!(row(&table, "max fixture_*=7799"), ["7800", "7799", "FAIL"]);
    assert_eq!(
        row(&table, "max [syscall time]=800"),
        ["800", "800", "pass"]
    );
    assert_eq!(
        row(&table, "max-rate fixture_warm=1000000000000/s")[2],
        "pass"
    );
    let baseline = format!("baseline {} max-increase +10%", base.display());
    assert_eq!(row(&table, &baseline).last().unwrap(), "pass", "{table}");
    assert!(table.contains("1 of 5 budgets exceeded"), "{table}");

    std::fs::write(&budget, "[max]\nfixture_hot = 4000\n[maxx]\n").unwrap();
    let typo = check(&[os("--budget"), budget.as_os_str()], &["counts", "10"]);
    assert_eq!(typo.status.code(), Some(1));
    assert_one_line_error(&typo, "line 3: unknown field `maxx`");
}

/// vdso samples depend on load: COUNT budgets never see them; with -s naming
/// vdso they are judged as CPU time.
#[test]
fn vdso_samples_are_judged_only_as_cpu_time() {
    let dir = TempDir::new("check-vdso");
    let out = dir.join("v.folded");
    let counted = check(
        &[
            os("-o"),
            out.as_os_str(),
            os("--max"),
            os("fixture_vdso_spin=1000000000"),
        ],
        &["vdso", "0.3"],
    );
    assert_eq!(counted.status.code(), Some(1), "{}", stderr(&counted));
    assert_one_line_error(
        &counted,
        "`fixture_vdso_spin` matches no frame of the counted clock reads",
    );
    // The default sources did sample it: the samples were left out on purpose.
    let folded = parse_folded(&std::fs::read_to_string(&out).unwrap());
    assert!(count_under(&folded, "fixture_vdso_spin") > 0, "{folded:?}");

    let timed = check(
        &[
            os("-s"),
            os("syscall,vdso"),
            os("--max"),
            os("fixture_vdso_spin=1ms"),
            os("--max"),
            os("fixture_vdso_spin=10s"),
        ],
        &["vdso", "0.3"],
    );
    assert_eq!(timed.status.code(), Some(3), "{}", stderr(&timed));
    let table = stdout(&timed);
    let tight = row(&table, "max fixture_vdso_spin=1ms");
    assert_eq!(tight[2], "FAIL", "{table}");
    assert!(tight[0].ends_with("ms"), "{table}");
    assert_eq!(row(&table, "max fixture_vdso_spin=10s")[2], "pass");

    let unnamed = check(
        &[os("--max"), os("fixture_vdso_spin=1ms")],
        &["vdso", "0.1"],
    );
    assert_eq!(unnamed.status.code(), Some(1));
    assert_one_line_error(&unnamed, "name the vdso source with -s");
}

/// Counts are events, not samples: the same COMMAND gives the same numbers
/// on an idle and on a loaded machine, with the default sources (vdso
/// sampling included). cputime makes glibc's clock_gettime fall back from
/// the vDSO to the syscall, so COMMAND both samples in the vDSO and counts.
#[test]
fn counted_budgets_do_not_depend_on_load() {
    let judge = || {
        let output = check(
            &[os("--max"), os("fixture_cputime=20000")],
            &["cputime", "20000"],
        );
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        row(&stdout(&output), "max fixture_cputime=20000")
    };
    let idle = judge();
    // Two CPU hogs on this 2-CPU machine, not traced (not COMMAND), killed
    // however the test ends.
    struct Hogs(Vec<std::process::Child>);
    impl Drop for Hogs {
        fn drop(&mut self) {
            for hog in &mut self.0 {
                let _ = hog.kill();
                let _ = hog.wait();
            }
        }
    }
    let hogs = Hogs(
        (0..2)
            .map(|_| {
                Command::new(c_fixture())
                    .args(["vdso", "20"])
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let loaded = judge();
    drop(hogs);
    assert_eq!(idle, ["20000", "20000", "pass"]);
    assert_eq!(loaded, idle);
}

#[test]
fn diff_lists_the_grown_function_first_and_draws_a_differential_flamegraph() {
    let dir = TempDir::new("diff");
    let small = dir.join("small.folded");
    let large = dir.join("large.json");
    let fixture = c_fixture();
    for (out, size) in [(&small, "1000"), (&large, "10000")] {
        let recorded = record_to(
            out,
            &["-s", "syscall"],
            &[fixture.as_os_str(), os("counts"), os(size)],
        );
        assert!(recorded.status.success(), "{}", stderr(&recorded));
    }
    let svg = dir.join("d.svg");
    let output = run(&[
        os("diff"),
        small.as_os_str(),
        large.as_os_str(),
        os("-o"),
        svg.as_os_str(),
        os("--top"),
        os("3"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains(": 1950 clock reads;") && lines[0].contains(": 19500 clock reads"),
        "{text}"
    );
    let grew = lines
        .iter()
        .position(|l| l.starts_with("Grew most"))
        .unwrap();
    let first: Vec<&str> = lines[grew + 2].split_whitespace().collect();
    assert_eq!(
        first,
        ["1000", "10000", "+9000", "+900.0%", "fixture_hot"],
        "{text}"
    );
    let second: Vec<&str> = lines[grew + 3].split_whitespace().collect();
    assert_eq!(second.last(), Some(&"fixture_warm"), "{text}");
    assert!(lines[grew + 5].contains("and 1 more"), "{text}");
    let shrank = lines
        .iter()
        .position(|l| l.starts_with("Shrank most"))
        .unwrap();
    assert_eq!(lines[shrank + 2].trim(), "(none)", "{text}");

    let parsed = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as ET; r = ET.parse(sys.argv[1]).getroot(); print(r.tag)",
        ])
        .arg(&svg)
        .output()
        .unwrap();
    assert!(parsed.status.success(), "the SVG is not well-formed XML");
    assert_eq!(
        String::from_utf8_lossy(&parsed.stdout).trim(),
        "{http://www.w3.org/2000/svg}svg"
    );
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(
        drawn.contains("fixture_hot"),
        "the SVG does not name fixture_hot"
    );

    let two_column = dir.join("d.folded");
    let output = run(&[
        os("diff"),
        small.as_os_str(),
        large.as_os_str(),
        os("-o"),
        two_column.as_os_str(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let folded = std::fs::read_to_string(&two_column).unwrap();
    let hot: Vec<&str> = folded
        .lines()
        .filter(|l| l.contains(";fixture_hot;"))
        .collect();
    assert_eq!(hot.len(), 1, "{folded}");
    assert!(hot[0].ends_with(" 1000 10000"), "{folded}");
    assert_eq!(folded.lines().count(), 4, "{folded}");
}

#[test]
fn diff_of_bad_input_is_one_sentence() {
    let dir = TempDir::new("diff-bad");
    let garbage = dir.join("garbage.folded");
    std::fs::write(&garbage, "main;hot 12\nnot a count here\n").unwrap();
    let good = dir.join("good.folded");
    std::fs::write(&good, "fx;main;hot;[syscall time] 3\n").unwrap();
    let missing = dir.join("missing.json");
    let overflow = dir.join("overflow.folded");
    std::fs::write(&overflow, format!("a;b 1\na;c {}\n", u64::MAX)).unwrap();
    let cases: [(&Path, &Path, &str); 4] = [
        (&missing, &good, "cannot read BASE"),
        (&good, &garbage, "line 2 is not `STACK COUNT`"),
        (&good, dir.path(), "not a regular file"),
        (
            &good,
            &overflow,
            "its counts add up to more than 18446744073709551615",
        ),
    ];
    for (base, new, needle) in cases {
        let output = run(&[os("diff"), base.as_os_str(), new.as_os_str()]);
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        assert_one_line_error(&output, needle);
        assert_eq!(stderr(&output).lines().count(), 1, "{}", stderr(&output));
    }
}

/// The commands of README's "In CI" jobs (GitHub Actions' `run:` block and
/// GitLab's `script:` items, with their continuation lines), as words.
fn readme_ci_commands(readme: &str, starts: &str) -> Vec<Vec<String>> {
    let section: Vec<&str> = readme
        .lines()
        .skip_while(|l| l.trim() != "### In CI")
        .take_while(|l| !l.starts_with("## "))
        .collect();
    let indent = |line: &str| line.len() - line.trim_start().len();
    let mut commands = Vec::new();
    for (i, line) in section.iter().enumerate() {
        let Some(at) = line.find(starts) else {
            continue;
        };
        let mut words: Vec<String> = line[at..]
            .split_whitespace()
            .filter(|w| *w != "\\")
            .map(String::from)
            .collect();
        // A shell line ending in `\`, or a YAML plain scalar folded onto the
        // next, more indented line that is no list item: both continue there.
        if let Some(next) = section.get(i + 1) {
            let folded = indent(next) > indent(line) && !next.trim_start().starts_with("- ");
            if line.trim_end().ends_with('\\') || folded {
                words.extend(next.split_whitespace().map(String::from));
            }
        }
        commands.push(words);
    }
    commands
}

/// README's CI jobs, run as written: the test binary built by the jobs'
/// own gcc line from the fixture's source, and the jobs' `clockprof check`
/// line with the budget file the project ships, in a directory laid out as
/// the job's checkout (only `sudo` dropped: the tests run as root). Both jobs
/// run the same command; it passes, and its JUnit report says so.
#[test]
fn the_readme_ci_jobs_budget_check_passes_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let builds = readme_ci_commands(&readme, "gcc ");
    let checks = readme_ci_commands(&readme, "sudo clockprof check ");
    assert_eq!(builds.len(), 2, "a gcc line in each job: {builds:?}");
    assert_eq!(checks.len(), 2, "a check in each job: {checks:?}");
    assert_eq!(builds[0], builds[1], "both jobs build the same way");
    assert_eq!(checks[0], checks[1], "both jobs check the same way");

    let dir = TempDir::new("readme-ci");
    let checkout = dir.join("checkout");
    for file in [
        "tests/fixtures/syscall_fixture.c",
        "packaging/ci-budget.toml",
    ] {
        let to = checkout.join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root.join(file), &to).unwrap();
    }
    let built = Command::new(&builds[0][0])
        .args(&builds[0][1..])
        .current_dir(&checkout)
        .status()
        .unwrap();
    assert!(built.success(), "{:?}", builds[0]);

    let check = &checks[0];
    assert_eq!(&check[..2], ["sudo", "clockprof"], "{check:?}");
    let output = Command::new(clockprof())
        .args(&check[2..])
        .current_dir(&checkout)
        .output()
        .unwrap();
    let table = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{table}{}", stderr(&output));
    assert_eq!(
        row(&table, "max fixture_hot=20000")[..2],
        ["20000", "20000"],
        "{table}"
    );
    assert_eq!(
        row(&table, "max fixture_warm=10000")[..2],
        ["10000", "10000"],
        "{table}"
    );
    let junit = checkout.join("clock-junit.xml");
    let (tests, failures, _) = read_junit(&junit);
    assert_eq!((tests, failures), (4, 0), "{table}");
    assert_no_clockprof_programs_left();
}

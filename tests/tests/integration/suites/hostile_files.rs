//! Files and names that an unprivileged user controls, met by clockprof
//! running as root: a FIFO or a forged perf map planted in /tmp for a traced
//! process, and a process name with a newline and terminal escapes.

use std::ffi::CString;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clockprof_tests::*;

/// Starts `clockprof ARGS` and waits until it says it is recording, with a
/// thread collecting its stderr.
/// Removes the planted file however the test ends.
struct Planted(String);
impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Records the `jitwait` fixture by PID with `plant` done to its
/// /tmp/perf-PID.map first; returns the JIT loop's frames (innermost last)
/// with their count, and clockprof's stderr.
fn record_jit_with_planted_map(
    name: &str,
    plant: impl FnOnce(&Path),
) -> (Vec<(String, String)>, u64, String) {
    let dir = TempDir::new(name);
    let out = dir.join("jit.json");
    let mut fixture = ready_c_fixture(&["jitwait", "3000"]);
    let planted = Planted(format!("/tmp/perf-{}.map", fixture.id()));
    plant(Path::new(&planted.0));
    let pid = fixture.id().to_string();
    let (mut recorder, stderr) = Clockprof::record()
        .args(["-p", &pid])
        .sources("syscall")
        .output(&out)
        .start();
    unsafe { libc::kill(fixture.id() as i32, libc::SIGUSR1) };
    assert!(fixture.wait().unwrap().success());
    let status = wait_with_timeout(&mut recorder, Duration::from_secs(20));
    let stderr = stderr.join().unwrap();
    assert!(status.success(), "{stderr}");
    let json = read_json(&out);
    assert_eq!(json["total"], 3000, "{json}");
    let stack = &json["stacks"][0];
    let frames = stack["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["function"].as_str().unwrap().to_string(),
                f["module"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    (frames, stack["count"].as_u64().unwrap(), stderr)
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
}

/// A perf map that covers every address, naming it all `name`.
fn write_covering_map(path: &Path, name: &str, uid: u32) {
    std::fs::write(path, format!("1000 7ffffffff000 {name}\n")).unwrap();
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
}

/// A FIFO with no writer as /tmp/perf-PID.map: reading it by name would
/// block clockprof forever. The recording must finish with exact counts,
/// the JIT frame left unnamed.
#[test]
fn fifo_planted_as_perf_map_does_not_block_the_recording() {
    let (frames, count, stderr) = record_jit_with_planted_map("fifo-map", mkfifo);
    assert_eq!(count, 3000);
    let names: Vec<&str> = frames.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        names[names.len() - 2..],
        ["fixture_jit_unnamed", "[unknown]"],
        "{frames:?}"
    );
    assert!(stderr.contains("is not a regular file"), "{stderr}");
}

/// A perf map owned by another user than root and the process's (root
/// here) is a forgery: ignored. The same file owned by root is read, which
/// shows that the rule, not the map's content, made the difference.
#[test]
fn perf_map_owned_by_another_user_is_ignored() {
    let (frames, count, stderr) = record_jit_with_planted_map("forged-map", |path| {
        write_covering_map(path, "forged_by_nobody", 65534)
    });
    assert_eq!(count, 3000);
    assert!(
        frames.iter().all(|(f, _)| f != "forged_by_nobody"),
        "{frames:?}"
    );
    assert_eq!(frames.last().unwrap().0, "[unknown]", "{frames:?}");
    assert!(stderr.contains("belongs to uid 65534"), "{stderr}");

    let (frames, count, _) = record_jit_with_planted_map("root-map", |path| {
        write_covering_map(path, "named_by_root", 0)
    });
    assert_eq!(count, 3000);
    assert_eq!(
        frames.last().unwrap(),
        &("named_by_root".to_string(), "[jit]".to_string()),
        "{frames:?}"
    );
}

/// A process that names itself "a\nb x 99" plus a terminal escape: every
/// folded line is still one stack with its count, no line is forged, and
/// the summary carries no ESC.
#[test]
fn newline_in_process_name_cannot_forge_folded_lines() {
    let name = "a\nb x 99\x1b[2J";
    let dir = TempDir::new("newline-comm");
    let out = dir.join("n.folded");
    let fixture = c_fixture();
    let output = Command::new(clockprof())
        .args([os("record"), os("-s"), os("syscall"), os("-o")])
        .arg(&out)
        .arg("--")
        .arg(fixture)
        .args(["counts", "1000"])
        .env("CLOCKPROF_FIXTURE_COMM", name)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(&out).unwrap();
    let folded = parse_folded(&text);
    let root = "a\\nb x 99\\x1b[2J";
    for (stack, _) in &folded {
        assert!(
            stack.starts_with(&format!("{root};")),
            "forged line {stack:?} in {text}"
        );
        assert!(!stack.contains(['\x1b', '\r']), "{stack:?}");
    }
    assert_eq!(count_under(&folded, "fixture_hot"), 1000, "{text}");
    assert_eq!(count_under(&folded, "fixture_warm"), 500, "{text}");
    assert_eq!(count_under(&folded, "fixture_gettimeofday"), 250, "{text}");
    assert_eq!(count_under(&folded, "fixture_time"), 200, "{text}");
    assert_eq!(folded.iter().map(|(_, c)| c).sum::<u64>(), 1950, "{text}");

    let summary = Command::new(clockprof())
        .args(["record", "-s", "syscall", "--"])
        .arg(fixture)
        .args(["counts", "1000"])
        .env("CLOCKPROF_FIXTURE_COMM", name)
        .output()
        .unwrap();
    assert!(summary.status.success(), "{}", stderr(&summary));
    let text = String::from_utf8(summary.stdout).unwrap();
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(text.contains(root), "{text}");
    assert!(text.contains("fixture_hot"), "{text}");
}

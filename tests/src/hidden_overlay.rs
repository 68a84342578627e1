//! A binary run through an overlay whose lower layer was detached
//! (`umount -l`), as a runtime does that keeps its layers out of the
//! container's sight: no directory, ours or the process's, shows the mapped
//! file. Shared by the host suite and the VM suite, as kernels differ in
//! what the mapping names:
//! - the overlay's own device and inode (newer kernels): the file opened
//!   through the overlay is that one, so it is named;
//! - the layer's (5.10, 6.1): nothing proves which file an open through the
//!   overlay gives, so its frames stay unnamed (never named from another
//!   file), counted exactly, and both `doctor`, while it runs, and the
//!   recording's summary say why.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{c_fixture, clockprof, count_under, os, parse_folded, stderr, Clockprof, TempDir};

const READS: u64 = 3456;

/// $1: the namespace's tmpfs; $2: the C fixture; $3: a directory both
/// sides see, for the fixture's PID, its ready line and the go-ahead.
const SCRIPT: &str = r#"set -e
mount -t tmpfs none "$1"
mkdir "$1/lower" "$1/upper" "$1/work" "$1/merged"
mount -t tmpfs none "$1/lower"
cp "$2" "$1/lower/ovfixture"
mount -t overlay overlay -o "lowerdir=$1/lower,upperdir=$1/upper,workdir=$1/work" "$1/merged"
umount -l "$1/lower"
"$1/merged/ovfixture" wait 3456 > "$3/ready" &
fixture=$!
echo $fixture > "$3/pid"
while [ ! -e "$3/go" ]; do sleep 0.02; done
kill -USR1 $fixture
wait $fixture
# Detached, not unmounted: record keeps the files of processes gone open
# until it symbolizes them at its end.
umount -l "$1/merged" "$1"
"#;

/// Records the scenario (`-s syscall`), inside `unshare -m` if
/// `own_mount_namespace`, runs `doctor` while the fixture waits, and asserts
/// what this kernel's mapping allows. Returns whether the mapping named the
/// layer (the unnamed case).
///
/// The VM's tests run chrooted, where /proc/PID/maps of a process in
/// another mount namespace names its files from that namespace's root
/// (`/newroot/...`), a path no mount table has: there the scenario runs in
/// the guest's own namespace.
pub fn record_and_judge(dir: &TempDir, own_mount_namespace: bool) -> bool {
    let scratch = dir.join("scratch");
    let signals = dir.join("signals");
    std::fs::create_dir(&scratch).unwrap();
    std::fs::create_dir(&signals).unwrap();
    let out = dir.join("o.folded");
    let unshare = [os("unshare"), os("-m"), os("--propagation"), os("private")];
    let namespace: &[&std::ffi::OsStr] = if own_mount_namespace { &unshare } else { &[] };
    let command: Vec<OsString> = namespace
        .iter()
        .chain(&[
            os("sh"),
            os("-c"),
            os(SCRIPT),
            os("sh"),
            scratch.as_os_str(),
            c_fixture().as_os_str(),
            signals.as_os_str(),
        ])
        .map(|a| a.to_os_string())
        .collect();
    let out_path = out.clone();
    let recording = std::thread::spawn(move || {
        Clockprof::record()
            .sources("syscall")
            .output(&out_path)
            .deadline(Duration::from_secs(120))
            .run(command)
    });
    let started = Instant::now();
    while std::fs::read_to_string(signals.join("ready")).map_or(true, |r| r.is_empty()) {
        assert!(
            started.elapsed() < Duration::from_secs(30) && !recording.is_finished(),
            "the fixture never got ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid: u32 = std::fs::read_to_string(signals.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let names_the_layer = mapping_names_a_layer(pid, &scratch);
    let doctor = Command::new(clockprof()).arg("doctor").output().unwrap();
    std::fs::write(signals.join("go"), "").unwrap();
    let recorded = recording.join().unwrap();

    let doctor_said = String::from_utf8_lossy(&doctor.stdout).to_string();
    assert!(doctor.status.success(), "{}", stderr(&doctor));
    let overlays = doctor_said
        .lines()
        .find(|line| line.starts_with("overlays"))
        .unwrap_or_else(|| panic!("doctor said nothing of overlays: {doctor_said}"));
    let listed = overlays.contains(&format!("ovfixture ({pid})"));
    let said = &recorded.stderr;
    assert!(recorded.status.success(), "{said}");
    let summary_says = said.contains(
        "1 file(s) mapped through an overlay were found in none of its layers' directories",
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let folded = parse_folded(&text);
    let context = format!("mapping names the layer: {names_the_layer}\n{overlays}\n{said}\n{text}");
    assert_eq!(count_under(&folded, "ovfixture"), READS, "{context}");
    if names_the_layer {
        assert!(
            listed && overlays.contains("none of its layers' directories shows"),
            "{context}"
        );
        assert!(summary_says, "{context}");
        assert_eq!(count_under(&folded, "fixture_triggered"), 0, "{context}");
    } else {
        assert!(!listed, "{context}");
        assert!(!summary_says, "{context}");
        assert_eq!(
            count_under(&folded, "fixture_triggered"),
            READS,
            "{context}"
        );
    }
    names_the_layer
}

/// Whether the fixture's mapping of its executable names another device
/// than the overlay's own (the layer's, as older kernels do).
fn mapping_names_a_layer(pid: u32, scratch: &std::path::Path) -> bool {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps
        .lines()
        .find(|line| line.ends_with("/merged/ovfixture"))
        .unwrap_or_else(|| panic!("the fixture maps no ovfixture: {maps}"));
    let device = line.split_whitespace().nth(3).unwrap();
    let (major, minor) = device.split_once(':').unwrap();
    let mapped = (
        u32::from_str_radix(major, 16).unwrap(),
        u32::from_str_radix(minor, 16).unwrap(),
    );
    let merged = format!("/proc/{pid}/root{}/merged", scratch.display());
    let overlay = std::fs::metadata(merged).unwrap().dev();
    mapped != (libc::major(overlay), libc::minor(overlay))
}

//! Containers: a binary that exists only in a process's own mount
//! namespace, clockprof itself inside a PID namespace, and processes
//! labelled with the cgroup and container id they ran in.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clockprof_tests::*;

/// A binary copied onto a tmpfs mounted inside `unshare -m`: on the host its
/// path is an empty directory. The fixture lives long enough for clockprof
/// to see its mappings, then makes its reads and exits; symbolized at the
/// end, after it exited, its hot function is named with the exact count.
#[test]
fn binary_only_in_another_mount_namespace_is_named() {
    let dir = TempDir::new("mntns");
    let mount_point = dir.join("only-in-the-namespace");
    std::fs::create_dir(&mount_point).unwrap();
    let out = dir.join("m.folded");
    let output = record_fixture_in_mount_namespace(
        &out,
        &mount_point,
        r#"cp "$2" "$1/nsfixture""#,
        "nsfixture",
        4321,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    // The host never saw the file.
    assert!(!mount_point.join("nsfixture").exists());
    let text = std::fs::read_to_string(&out).unwrap();
    let folded = parse_folded(&text);
    assert_eq!(count_under(&folded, "nsfixture"), 4321, "{text}");
    assert_eq!(count_under(&folded, "fixture_triggered"), 4321, "{text}");
    assert_eq!(
        leaves_under(&folded, "fixture_triggered")
            .keys()
            .collect::<Vec<_>>(),
        vec!["[syscall clock_gettime BOOTTIME direct]"]
    );
}

/// A binary run from an overlay whose lower layer is a filesystem of its
/// own (a container's root over several filesystems, or a kernel CI guest's
/// overlay over its 9p share), mounted inside `unshare -m`. The kernel names
/// the mapped file by the overlay's device (this host's kernel) or by the
/// layer's (older ones; the VM test covers those), and a stat of the
/// overlay's file gives neither: the fixture's functions are still named,
/// with the exact counts.
#[test]
fn binary_run_from_an_overlay_over_another_filesystem_is_named() {
    let dir = TempDir::new("overlay");
    let scratch = dir.join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let out = dir.join("o.folded");
    let setup = r#"mkdir "$1/lower" "$1/upper" "$1/work" "$1/merged"
mount -t tmpfs none "$1/lower"
cp "$2" "$1/lower/ovfixture"
mount -t overlay overlay -o "lowerdir=$1/lower,upperdir=$1/upper,workdir=$1/work" "$1/merged""#;
    let output = record_fixture_in_mount_namespace(&out, &scratch, setup, "merged/ovfixture", 2345);
    let said = stderr(&output);
    assert!(output.status.success(), "{said}");
    assert!(!said.contains("through an overlay"), "{said}");
    let text = std::fs::read_to_string(&out).unwrap();
    let folded = parse_folded(&text);
    assert_eq!(count_under(&folded, "ovfixture"), 2345, "{text}");
    assert_eq!(count_under(&folded, "fixture_triggered"), 2345, "{text}");
}

/// The same overlay with its lower layer then detached, so that no
/// directory shows the mapped file: this kernel names the overlay's own
/// device in the mapping, so the file is still proven and named
/// (tests/src/hidden_overlay.rs; the VM test covers kernels that name the
/// layer's, where it stays unnamed and clockprof says why).
#[test]
fn binary_through_an_overlay_whose_layers_are_hidden_is_named_or_said_why() {
    let names_the_layer = hidden_overlay::record_and_judge(&TempDir::new("overlay_hidden"), true);
    assert!(
        !names_the_layer,
        "this kernel was expected to name the overlay's device"
    );
}

/// `record -s syscall` of `unshare -m`: a tmpfs on `mount_point` seen only
/// in that namespace, `setup` (sh; `$1` the mount point, `$2` the C
/// fixture), then the fixture at `$1/FIXTURE` waiting for SIGUSR1 and making
/// `reads` reads. It lives long enough for clockprof to see its mappings (it
/// drains them every 100 ms) before it reads the clock and exits.
fn record_fixture_in_mount_namespace(
    out: &Path,
    mount_point: &Path,
    setup: &str,
    fixture: &str,
    reads: u32,
) -> std::process::Output {
    let script = format!(
        r#"set -e
mount -t tmpfs none "$1"
{setup}
"$1/{fixture}" wait {reads} > "$1/ready" &
fixture=$!
while [ ! -s "$1/ready" ]; do sleep 0.02; done
sleep 0.5
kill -USR1 $fixture
wait $fixture
"#
    );
    record_to(
        out,
        &["-s", "syscall"],
        &[
            os("unshare"),
            os("-m"),
            os("--propagation"),
            os("private"),
            os("sh"),
            os("-c"),
            os(&script),
            os("sh"),
            mount_point.as_os_str(),
            c_fixture().as_os_str(),
        ],
    )
}

/// Inside a PID namespace the eBPF side sees host PIDs: clockprof refuses
/// with one sentence instead of recording 0 reads.
#[test]
fn refuses_to_run_inside_a_pid_namespace() {
    let output = Command::new("unshare")
        .args(["-p", "-f", "--mount-proc"])
        .arg(clockprof())
        .args(["record", "-s", "syscall", "--", "true"])
        .output()
        .unwrap();
    let stderr = stderr(&output);
    assert!(!output.status.success(), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("PID namespace"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

const CONTAINER_ID: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

/// The cgroup v2 hierarchy: /sys/fs/cgroup, or /sys/fs/cgroup/unified on a
/// hybrid host.
fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(fields[1]))
        })
        .expect("a cgroup2 hierarchy is mounted")
}

/// A cgroup at `path` under the cgroup2 root, as a runtime or a user makes
/// it; on drop (after its processes exited) the directories it made are
/// removed, innermost first, and those that were there are left.
struct ContainerCgroup {
    made: Vec<PathBuf>,
    scope: PathBuf,
    /// The path as /proc/PID/cgroup shows it.
    path: String,
}

impl ContainerCgroup {
    /// Where docker's systemd driver puts a container.
    fn docker() -> ContainerCgroup {
        ContainerCgroup::at(&format!("/system.slice/docker-{CONTAINER_ID}.scope"))
    }

    fn at(path: &str) -> ContainerCgroup {
        let root = cgroup2_root();
        let mut made = Vec::new();
        let mut dir = root.clone();
        for component in path.split('/').filter(|c| !c.is_empty()) {
            dir = dir.join(component);
            if !dir.exists() {
                std::fs::create_dir(&dir).unwrap();
                made.push(dir.clone());
            }
        }
        ContainerCgroup {
            made,
            scope: dir,
            path: path.to_string(),
        }
    }

    fn enter(&self, pid: u32) {
        std::fs::write(self.scope.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        for dir in self.made.iter().rev() {
            // rmdir fails while a process is still inside; they exit quickly.
            let start = Instant::now();
            while std::fs::remove_dir(dir).is_err() && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Runs the `wait` fixture inside `cgroup` and records it by PID to `out`.
fn record_fixture_in(cgroup: &ContainerCgroup, out: &Path) {
    let mut fixture = ready_c_fixture(&["wait", "1234"]);
    cgroup.enter(fixture.id());
    let pid = fixture.id().to_string();
    let (mut recorder, _stderr) = Clockprof::record()
        .args(["-p", &pid])
        .sources("syscall")
        .output(out)
        .start();
    unsafe { libc::kill(fixture.id() as i32, libc::SIGUSR1) };
    assert!(fixture.wait().unwrap().success());
    let status = recorder.wait().unwrap();
    assert!(status.success());
}

#[test]
fn processes_are_labelled_with_cgroup_and_container_id() {
    let cgroup = ContainerCgroup::docker();
    let dir = TempDir::new("labels");

    let json_path = dir.join("c.json");
    record_fixture_in(&cgroup, &json_path);
    let json = read_json(&json_path);
    let process = &json["processes"][0];
    assert_eq!(process["total"], 1234, "{json}");
    assert_eq!(process["cgroup"], cgroup.path.as_str(), "{json}");
    assert_eq!(process["container_id"], CONTAINER_ID, "{json}");

    let pprof_path = dir.join("c.pb.gz");
    record_fixture_in(&cgroup, &pprof_path);
    // go tool pprof -raw prints each sample with its labels.
    let raw = Command::new("go")
        .args(["tool", "pprof", "-raw"])
        .arg(&pprof_path)
        .output()
        .expect("go tool pprof runs");
    assert!(raw.status.success(), "{}", stderr(&raw));
    let text = String::from_utf8_lossy(&raw.stdout);
    assert!(
        text.contains(&format!("container_id:[{CONTAINER_ID}]")),
        "{text}"
    );
    assert!(
        text.contains(&format!("cgroup:[{}]", cgroup.path)),
        "{text}"
    );
    assert!(text.contains("1234:"), "{text}");
}

/// Uprobes go into the file the process maps, not into whatever its path
/// names now: the fixture maps glibc, then, in its own mount namespace, a
/// copy of glibc (same symbols, another inode) is bind-mounted over that
/// path. `-s libc -p PID` must still count its calls exactly; a uprobe put
/// on the path looked up again would land in the copy and count nothing.
#[test]
fn libc_uprobe_lands_in_the_mapped_file_when_its_path_is_swapped() {
    let dir = TempDir::new("swapped-libc");
    let maps_libc = {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.rsplit('/').next().unwrap().starts_with("libc.so"))
            .expect("the test maps glibc")
            .to_string()
    };
    let copy = dir.join("libc-copy.so");
    std::fs::copy(&maps_libc, &copy).unwrap();
    let ready = dir.join("ready");
    let script = r#"set -e
"$1" libcwait 3000 > "$2" &
fixture=$!
while [ ! -s "$2" ]; do sleep 0.02; done
mount --bind "$3" "$4"
echo "$fixture"
wait $fixture
"#;
    let mut namespace = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(c_fixture())
        .arg(&ready)
        .arg(&copy)
        .arg(&maps_libc)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(namespace.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid: u32 = line
        .trim()
        .parse()
        .expect("the script prints the fixture's PID");
    // The path now names the copy, in the fixture's view.
    let swapped = std::fs::metadata(format!("/proc/{pid}/root{maps_libc}")).unwrap();
    let copied = std::fs::metadata(&copy).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((swapped.dev(), swapped.ino()), (copied.dev(), copied.ino()));

    let out = dir.join("l.folded");
    let pid_arg = pid.to_string();
    let (mut recorder, _stderr) = Clockprof::record()
        .sources("libc")
        .args(["-p", &pid_arg])
        .output(&out)
        .start();
    unsafe { libc::kill(pid as i32, libc::SIGUSR1) };
    assert!(namespace.wait().unwrap().success());
    assert!(recorder.wait().unwrap().success());
    let text = std::fs::read_to_string(&out).unwrap();
    let folded = parse_folded(&text);
    assert_eq!(count_under(&folded, "fixture_libc_hot"), 3000, "{text}");
}

/// A user can make cgroups only where systemd delegates to them, under
/// user@UID.service; a scope there named as docker names its own
/// (`systemd-run --user --scope --unit=docker-ID`) claims no container id.
/// This host runs no systemd, so the test delegates as systemd does (the
/// user's user@UID.service cgroup is theirs, and root puts their first
/// process in it), and then `nobody` makes the scope and enters it itself.
#[test]
fn a_scope_a_user_makes_named_as_dockers_claims_no_container_id() {
    let mut delegated = ContainerCgroup::at("/user.slice/user-65534.slice/user@65534.service");
    for file in [
        "",
        "cgroup.procs",
        "cgroup.threads",
        "cgroup.subtree_control",
    ] {
        let path = delegated.scope.join(file);
        let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::chown(path.as_ptr(), 65534, 65534) }, 0);
    }
    let scope_path = format!("{}/app.slice/docker-{CONTAINER_ID}.scope", delegated.path);
    let scope = cgroup2_root().join(scope_path.trim_start_matches('/'));
    let script = r#"set -e
read -r delegated
mkdir -p "$1"
echo $$ > "$1/cgroup.procs"
exec "$2" wait 2345
"#;
    let mut user = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&scope)
        .arg(c_fixture())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Not yet: the shell is still in root's cgroup, which nobody cannot
    // leave; root (systemd, on a real host) puts it in the delegated one.
    delegated.enter(user.id());
    {
        use std::io::Write;
        writeln!(user.stdin.take().unwrap(), "go").unwrap();
    }
    wait_until_ready(&mut user);
    // The user's own cgroups go, before the delegated one, on drop.
    delegated.made.push(scope.parent().unwrap().to_path_buf());
    delegated.made.push(scope.clone());
    let in_cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", user.id())).unwrap();
    assert!(
        in_cgroup.contains(&format!("0::{scope_path}\n")),
        "{in_cgroup}"
    );
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&scope).unwrap());
    assert_eq!(owner, 65534, "nobody made the scope");

    let dir = TempDir::new("user-scope");
    let out = dir.join("u.json");
    let pid = user.id().to_string();
    let (mut recorder, _stderr) = Clockprof::record()
        .args(["-p", &pid])
        .sources("syscall")
        .output(&out)
        .start();
    unsafe { libc::kill(user.id() as i32, libc::SIGUSR1) };
    assert!(user.wait().unwrap().success());
    assert!(recorder.wait().unwrap().success());
    let json = read_json(&out);
    let process = &json["processes"][0];
    assert_eq!(process["total"], 2345, "{json}");
    assert_eq!(process["cgroup"], scope_path.as_str(), "{json}");
    assert!(process.get("container_id").is_none(), "{json}");
}

//! Files a user asked for are the user's: under sudo, what record, check and
//! diff write goes to the user who ran sudo (given with fchown before the
//! file has a name) where that user could have made it themselves, and stays
//! root's elsewhere and without sudo. Sudo is faked: clockprof runs as root
//! with SUDO_UID, SUDO_GID and SUDO_USER naming `nobody`.

use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clockprof_tests::*;

const NOBODY: u32 = 65534;
const SUDO_BY_NOBODY: [(&str, &str); 3] = [
    ("SUDO_UID", "65534"),
    ("SUDO_GID", "65534"),
    ("SUDO_USER", "nobody"),
];

/// A directory of nobody's, `mode`, inside `dir`.
fn users_directory(dir: &TempDir, mode: u32) -> PathBuf {
    let users = dir.join("nobody");
    std::fs::create_dir(&users).unwrap();
    chown(&users, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(mode)).unwrap();
    users
}

fn owner(path: &Path) -> (u32, u32) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    (meta.uid(), meta.gid())
}

/// clockprof ARGS, as if `nobody` had run it with sudo (`sudo: true`), or
/// as root with no trace of sudo in its environment.
fn clockprof_as(sudo: bool, args: &[&std::ffi::OsStr]) -> Output {
    let mut command = Command::new(clockprof());
    command.args(args);
    for (name, value) in SUDO_BY_NOBODY {
        match sudo {
            true => command.env(name, value),
            false => command.env_remove(name),
        };
    }
    command.output().expect("clockprof runs")
}

/// `record -s syscall -o OUT -- true` (COMMAND runs as nobody under sudo).
fn record(sudo: bool, out: &Path) -> Output {
    clockprof_as(
        sudo,
        &[
            os("record"),
            os("-s"),
            os("syscall"),
            os("-o"),
            out.as_os_str(),
            os("--"),
            os("true"),
        ],
    )
}

/// Under sudo, in nobody's directory: record's new file, record's file
/// replacing one of root's (host-wide, no COMMAND), check's JUnit file and
/// diff's flamegraph are all nobody's, and nothing else is left there.
#[test]
fn outputs_under_sudo_are_the_users_who_ran_it() {
    let dir = TempDir::new("sudo-owner");
    let users = users_directory(&dir, 0o755);

    let svg = users.join("out.svg");
    let output = record(true, &svg);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("as user nobody (uid 65534)"),
        "{}",
        stderr(&output)
    );
    assert_eq!(owner(&svg), (NOBODY, NOBODY));
    assert_eq!(std::fs::metadata(&svg).unwrap().mode() & 0o777, 0o644);

    let json = users.join("host.json");
    std::fs::write(&json, b"root's").unwrap();
    assert_eq!(owner(&json), (0, 0));
    let output = clockprof_as(
        true,
        &[
            os("record"),
            os("-s"),
            os("syscall"),
            os("-d"),
            os("1"),
            os("-o"),
            json.as_os_str(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(owner(&json), (NOBODY, NOBODY));
    read_json(&json);

    let junit = users.join("clock.xml");
    let fixture = c_fixture();
    let output = clockprof_as(
        true,
        &[
            os("check"),
            os("-s"),
            os("syscall"),
            os("--max"),
            os("fixture_hot=1000"),
            os("--junit"),
            junit.as_os_str(),
            os("--"),
            fixture.as_os_str(),
            os("counts"),
            os("10"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(owner(&junit), (NOBODY, NOBODY));

    let (base, new) = (dir.join("base.folded"), dir.join("new.folded"));
    std::fs::write(&base, "app;main;tick;[syscall time] 10\n").unwrap();
    std::fs::write(&new, "app;main;tick;[syscall time] 30\n").unwrap();
    let diff = users.join("diff.svg");
    let output = clockprof_as(
        true,
        &[
            os("diff"),
            base.as_os_str(),
            new.as_os_str(),
            os("-o"),
            diff.as_os_str(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(owner(&diff), (NOBODY, NOBODY));

    let mut names: Vec<String> = std::fs::read_dir(&users)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["clock.xml", "diff.svg", "host.json", "out.svg"]);
    assert_no_clockprof_programs_left();
}

/// A symlink or FIFO planted at the output path in the user's own
/// directory is refused under sudo as without it: nothing is written
/// through it, what the link points to stays root's and as it was.
#[test]
fn a_planted_link_or_fifo_is_still_refused_under_sudo() {
    let dir = TempDir::new("sudo-planted");
    let users = users_directory(&dir, 0o755);
    let precious = dir.join("precious");
    std::fs::write(&precious, b"root's").unwrap();
    let link = users.join("out.svg");
    std::os::unix::fs::symlink(&precious, &link).unwrap();
    chown_link(&link);
    let fifo = users.join("out.folded");
    let c_fifo = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o666) }, 0);
    chown(&fifo, Some(NOBODY), Some(NOBODY)).unwrap();

    for (path, kind) in [(&link, "a symbolic link"), (&fifo, "a FIFO")] {
        let output = record(true, path);
        let err = stderr(&output);
        assert!(!output.status.success(), "{err}");
        assert!(err.contains(&format!("it is {kind}")), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    assert_eq!(std::fs::read(&precious).unwrap(), b"root's");
    assert_eq!(owner(&precious), (0, 0));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_dir(&users).unwrap().count(), 2);
    assert_no_clockprof_programs_left();
}

/// nobody's own link, as a user would plant it.
fn chown_link(link: &Path) {
    std::os::unix::fs::lchown(link, Some(NOBODY), Some(NOBODY)).unwrap();
}

/// Without SUDO_* (root itself), and with root's own sudo (SUDO_UID=0),
/// the file stays root's, in nobody's directory too.
#[test]
fn without_sudo_the_output_stays_roots() {
    let dir = TempDir::new("no-sudo");
    let users = users_directory(&dir, 0o755);
    let out = users.join("out.folded");
    let output = record(false, &out);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(owner(&out), (0, 0));

    let out = users.join("roots-sudo.folded");
    let output = Command::new(clockprof())
        .args(["record", "-s", "syscall", "-o"])
        .arg(&out)
        .args(["--", "true"])
        .envs([("SUDO_UID", "0"), ("SUDO_GID", "0"), ("SUDO_USER", "root")])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(owner(&out), (0, 0));
}

/// Under sudo, where the user could not have written the file (a
/// directory of root's, 0755, as /etc is) it stays root's; where anyone
/// may (a sticky world-writable directory, as /tmp is) it is the user's.
#[test]
fn only_where_the_user_could_have_written_it_is_it_theirs() {
    let dir = TempDir::new("sudo-dirs");
    let out = dir.join("out.folded");
    let output = record(true, &out);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(owner(&out), (0, 0));

    let shared = dir.join("tmp");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = shared.join("out.folded");
    let output = record(true, &out);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(owner(&out), (NOBODY, NOBODY));
}

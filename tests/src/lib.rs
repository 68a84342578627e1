//! Shared helpers of the end-to-end tests (tests/tests/integration, the suites,
//! and tests/tests/vm_kernel.rs, the VM tests): find the clockprof binary and
//! the fixtures (built by build.rs), run recordings and read their output.

mod builder;
pub mod crafted_dwarf;
pub mod hidden_overlay;
mod ready;

pub use builder::{os, Clockprof, Run};
pub use ready::{start_until_ready, NotifySocket, READY_TIMEOUT};

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The tests load real eBPF programs: without root they cannot say anything,
/// so they fail loudly instead of passing.
pub fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the end-to-end tests attach real eBPF programs and must run as root (use `cargo xtask test` under sudo)"
    );
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `clockprof` as built by `cargo xtask build` (or given by CLOCKPROF_BIN).
pub fn clockprof() -> PathBuf {
    require_root();
    // What the host had before any clockprof ran from this test binary.
    let _ = tracefs_baseline();
    let path = std::env::var_os("CLOCKPROF_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/clockprof"));
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo xtask build`",
        path.display()
    );
    path
}

/// The `test-panic` build of clockprof (CLOCKPROF_TEST_PANIC=STAGE panics at
/// STAGE), which `cargo xtask test` builds beside the shipped one, or
/// CLOCKPROF_TEST_PANIC_BIN.
pub fn clockprof_test_panic() -> PathBuf {
    require_root();
    let _ = tracefs_baseline();
    let path = std::env::var_os("CLOCKPROF_TEST_PANIC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/clockprof-test-panic"));
    assert!(
        path.exists(),
        "{} is missing: `cargo xtask test` builds it (cargo build --release -p profiler --features test-panic, copied there)",
        path.display()
    );
    path
}

pub fn fixture_dir() -> PathBuf {
    let dir = std::env::var_os("CLOCKPROF_FIXTURE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/fixtures"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The C fixture with frame pointers, built by build.rs (or prebuilt and
/// named by CLOCKPROF_C_FIXTURE, as in the VM, where the build script's path
/// on the host is not there).
pub fn c_fixture() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| fixture("CLOCKPROF_C_FIXTURE", env!("CLOCKPROF_C_FIXTURE_BIN")))
}

/// The Go fixture built by the current Go (build.rs), or the one named by
/// CLOCKPROF_GO_FIXTURE.
pub fn go_fixture() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| match std::env::var_os("CLOCKPROF_GO_FIXTURE") {
        Some(path) => fixture("CLOCKPROF_GO_FIXTURE", &path.to_string_lossy()),
        None => Go::Current.go_fixture().to_path_buf(),
    })
}

/// The cgo fixture built by the current Go (build.rs), or the one named by
/// CLOCKPROF_CGO_FIXTURE.
pub fn cgo_fixture() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| match std::env::var_os("CLOCKPROF_CGO_FIXTURE") {
        Some(path) => fixture("CLOCKPROF_CGO_FIXTURE", &path.to_string_lossy()),
        None => Go::Current.cgo_fixture().to_path_buf(),
    })
}

/// A Go release the Go tests run on; build.rs builds each Go fixture with
/// each, by the `go` at an explicit path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Go {
    /// Debian 12's golang-go.
    V1_19,
    /// bookworm-backports' golang-1.23-go.
    V1_23,
    /// The current release: /usr/local/go, or a `go` 1.24 or newer on PATH.
    Current,
}

impl Go {
    pub const ALL: [Go; 3] = [Go::V1_19, Go::V1_23, Go::Current];

    /// The version that built the fixtures (`go1.23.5`), empty when none did.
    pub fn version(self) -> &'static str {
        match self {
            Go::V1_19 => env!("CLOCKPROF_GO_1_19_VERSION"),
            Go::V1_23 => env!("CLOCKPROF_GO_1_23_VERSION"),
            Go::Current => env!("CLOCKPROF_GO_CURRENT_VERSION"),
        }
    }

    /// How assertions name it: `Go 1.23 (go1.23.5)`, `current Go (go1.26.8)`.
    pub fn name(self) -> String {
        let release = match self {
            Go::V1_19 => "Go 1.19",
            Go::V1_23 => "Go 1.23",
            Go::Current => "current Go",
        };
        format!("{release} ({})", self.about())
    }

    /// The version and path of its `go`, or why there is none.
    fn about(self) -> &'static str {
        match self {
            Go::V1_19 => env!("CLOCKPROF_GO_1_19_ABOUT"),
            Go::V1_23 => env!("CLOCKPROF_GO_1_23_ABOUT"),
            Go::Current => env!("CLOCKPROF_GO_CURRENT_ABOUT"),
        }
    }

    /// tests/fixtures/go_fixture.go as this Go built it.
    pub fn go_fixture(self) -> &'static Path {
        self.built(match self {
            Go::V1_19 => env!("CLOCKPROF_GO_FIXTURE_1_19"),
            Go::V1_23 => env!("CLOCKPROF_GO_FIXTURE_1_23"),
            Go::Current => env!("CLOCKPROF_GO_FIXTURE_CURRENT"),
        })
    }

    /// tests/fixtures/cgo_fixture.go as this Go built it.
    pub fn cgo_fixture(self) -> &'static Path {
        self.built(match self {
            Go::V1_19 => env!("CLOCKPROF_CGO_FIXTURE_1_19"),
            Go::V1_23 => env!("CLOCKPROF_CGO_FIXTURE_1_23"),
            Go::Current => env!("CLOCKPROF_CGO_FIXTURE_CURRENT"),
        })
    }

    /// `path`, which must exist: a Go that was missing when the tests were
    /// built fails the test that needs it, naming that Go.
    fn built(self, path: &'static str) -> &'static Path {
        assert!(
            !self.version().is_empty(),
            "no fixture of {}: install it, and the next build of the tests builds its fixtures",
            self.name()
        );
        let path = Path::new(path);
        assert!(
            path.exists(),
            "{} is missing, though {} built it: rebuild the tests",
            path.display(),
            self.name()
        );
        path
    }
}

/// The C fixture built as Debian builds its binaries (build.rs): -O2, no
/// frame pointers, no -g.
pub fn dwarf_fixture() -> &'static Path {
    Path::new(env!("CLOCKPROF_DWARF_FIXTURE"))
}

/// go-fuse's loopback filesystem (tests/fixtures/fusefs, build.rs):
/// `fusefs DIR MOUNTPOINT` serves DIR there, printing "mounted" once it does.
pub fn fusefs() -> &'static Path {
    Path::new(env!("CLOCKPROF_FUSEFS_BIN"))
}

/// A SIGINT-counting C program (tests/fixtures/interrupt_counter.c, build.rs).
pub fn interrupt_counter() -> &'static Path {
    Path::new(env!("CLOCKPROF_INTERRUPT_COUNTER"))
}

/// The fixture named by the run-time variable `variable`, else the one the
/// build script made, which must exist.
fn fixture(variable: &str, built: &str) -> PathBuf {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(built), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: the build script could not build it (is gcc or go installed? `cargo xtask setup`)",
        path.display()
    );
    path
}

pub fn comm_of(path: &Path) -> String {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    name.chars().take(15).collect()
}

/// A loopback port nobody listens on now (the kernel's pick, released for
/// the daemon to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory under the fixture directory, removed on drop (by
/// tempfile, which picks an unused name).
pub struct TempDir {
    dir: tempfile::TempDir,
}

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir_in(fixture_dir())
            .unwrap();
        // As a plain mkdir leaves it: COMMANDs run as another user look in.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn join(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }
    pub fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        names
    }
}

pub fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(clockprof())
        .args(args)
        .output()
        .expect("clockprof runs")
}

/// `clockprof record ARGS -o OUT -- COMMAND...`, for tests that look at
/// the whole `Output` (see `Clockprof` for the rest).
pub fn record_to(out: &Path, args: &[&str], command: &[&std::ffi::OsStr]) -> Output {
    let argv = Clockprof::record().args(args).output(out).argv(command);
    Command::new(clockprof())
        .args(argv)
        .output()
        .expect("clockprof runs")
}

/// Reads a JSON profile that clockprof wrote.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid JSON")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// Folded lines as (stack, count).
pub fn parse_folded(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .map(|line| {
            let (stack, count) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("folded line without a count: {line:?}"));
            let count = count
                .parse()
                .unwrap_or_else(|_| panic!("folded line with a bad count: {line:?}"));
            (stack.to_string(), count)
        })
        .collect()
}

/// Sum of counts of the stacks whose frames include `frame` exactly.
pub fn count_under(folded: &[(String, u64)], frame: &str) -> u64 {
    folded
        .iter()
        .filter(|(stack, _)| stack.split(';').any(|f| f == frame))
        .map(|(_, count)| count)
        .sum()
}

/// Counts per leaf (clock read), for stacks that contain `frame`.
pub fn leaves_under(folded: &[(String, u64)], frame: &str) -> BTreeMap<String, u64> {
    let mut leaves = BTreeMap::new();
    for (stack, count) in folded {
        if stack.split(';').any(|f| f == frame) {
            *leaves
                .entry(stack.rsplit(';').next().unwrap().to_string())
                .or_default() += count;
        }
    }
    leaves
}

/// The names of every program in clockprof's eBPF object, cut to 15
/// characters as the kernel keeps them. The object is embedded in the
/// clockprof binary: the one ELF image in it for the BPF machine.
pub fn clockprof_program_names() -> &'static [String] {
    use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let binary = std::fs::read(clockprof()).unwrap();
        const EM_BPF: u16 = 247;
        let start = binary
            .windows(20)
            .position(|w| {
                w.starts_with(b"\x7fELF")
                    && w[4] == 2
                    && w[5] == 1
                    && u16::from_le_bytes([w[18], w[19]]) == EM_BPF
            })
            .expect("clockprof embeds its eBPF object");
        let elf = object::File::parse(&binary[start..]).expect("the embedded eBPF object parses");
        let mut names: Vec<String> = elf
            .symbols()
            .filter(|symbol| symbol.kind() == SymbolKind::Text && symbol.is_global())
            .filter(|symbol| {
                let section = symbol
                    .section_index()
                    .and_then(|i| elf.section_by_index(i).ok());
                section
                    .and_then(|s| s.name().ok())
                    .is_some_and(|name| name != ".text")
            })
            .filter_map(|symbol| symbol.name().ok())
            .map(|name| name.chars().take(15).collect())
            .collect();
        names.sort();
        names.dedup();
        assert!(names.len() >= 10, "too few programs found: {names:?}");
        names
    })
}

/// The tracefs mount points of the host (this test's mount namespace).
pub fn tracefs_mounts() -> Vec<String> {
    let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| {
            let (mount, filesystem) = line.split_once(" - ")?;
            (filesystem.split_whitespace().next()? == "tracefs")
                .then(|| mount.split_whitespace().nth(4).unwrap().to_string())
        })
        .collect();
    points.sort();
    points
}

/// The host's tracefs mounts before this test binary ran clockprof, or as a
/// test that changes them says they should be.
static TRACEFS_BASELINE: std::sync::Mutex<Option<Vec<String>>> = std::sync::Mutex::new(None);

fn tracefs_baseline() -> Vec<String> {
    TRACEFS_BASELINE
        .lock()
        .unwrap()
        .get_or_insert_with(tracefs_mounts)
        .clone()
}

/// For a test that unmounts or restores tracefs itself.
pub fn set_tracefs_baseline(mounts: Vec<String>) {
    *TRACEFS_BASELINE.lock().unwrap() = Some(mounts);
}

fn bpftool_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("bpftool runs (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "bpftool {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return serde_json::Value::Array(Vec::new());
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bpftool {args:?}: {e}: {text}"))
}

/// Nothing of clockprof may outlive it: no program of its eBPF object
/// loaded, no perf event or link with one of them attached (nor any perf
/// event still held by a clockprof process), and no tracefs mount on the
/// host that was not there before.
pub fn assert_no_clockprof_programs_left() {
    let names = clockprof_program_names();
    let programs = bpftool_json(&["prog", "show"]);
    let ours: Vec<&serde_json::Value> = programs
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| names.iter().any(|ours| ours == n))
        })
        .collect();
    assert!(
        ours.is_empty(),
        "clockprof programs are still loaded: {ours:?}"
    );

    let perf = bpftool_json(&["perf", "show"]);
    for event in perf.as_array().unwrap() {
        let pid = event["pid"].as_u64().unwrap_or(0);
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_ne!(
            comm.trim(),
            "clockprof",
            "a clockprof process still holds a perf event: {event}"
        );
    }
    let links = bpftool_json(&["link", "show"]);
    for link in links.as_array().unwrap() {
        let Some(id) = link["prog_id"].as_u64() else {
            continue;
        };
        let program = programs
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"].as_u64() == Some(id));
        let name = program.and_then(|p| p["name"].as_str()).unwrap_or("");
        assert!(
            !names.iter().any(|n| n == name),
            "a clockprof program is still linked: {link}"
        );
    }

    let baseline = tracefs_baseline();
    let now = tracefs_mounts();
    let mut extra = now.clone();
    for point in &baseline {
        if let Some(i) = extra.iter().position(|p| p == point) {
            extra.remove(i);
        }
    }
    assert!(
        extra.is_empty(),
        "tracefs mounts left on the host: {extra:?} (before: {baseline:?})"
    );
}

/// Waits for `child`, killing it and failing the test after `timeout`.
pub fn wait_with_timeout(
    child: &mut std::process::Child,
    timeout: std::time::Duration,
) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within {timeout:?}", child.id());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The C fixture started with `args` (a waiting mode such as `wait N` or
/// `jitwait N`), returned once it has printed "ready".
pub fn ready_c_fixture(args: &[&str]) -> std::process::Child {
    let mut fixture = Command::new(c_fixture())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the C fixture starts");
    wait_until_ready(&mut fixture);
    fixture
}

/// Waits for a fixture started with its stdout piped to print its first
/// line, "ready" (it then waits for its signal to read the clock).
pub fn wait_until_ready(fixture: &mut std::process::Child) {
    use std::io::{BufRead, BufReader};
    let mut ready = String::new();
    BufReader::new(
        fixture
            .stdout
            .take()
            .expect("the fixture's stdout is piped"),
    )
    .read_line(&mut ready)
    .unwrap();
    assert_eq!(ready.trim(), "ready");
}

/// One HTTP/1.1 request on its own connection: the status and the body.
pub fn http(port: u16, method: &str, path: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, response[split + 4..].to_vec())
}

/// Builds, in `dir`, `libclockshim.so`: an interposer of `clock_gettime`
/// (what LD_PRELOAD puts before libc) that makes the system call itself,
/// once per call, from its own code.
pub fn clock_shim(dir: &TempDir) -> PathBuf {
    let source = dir.join("clockshim.c");
    std::fs::write(
        &source,
        r#"#include <time.h>
#include <sys/syscall.h>
int clock_gettime(clockid_t clock, struct timespec *ts) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "0"((long)SYS_clock_gettime), "D"((long)clock), "S"(ts) : "rcx", "r11", "memory");
    return (int)ret;
}
"#,
    )
    .unwrap();
    let library = dir.join("libclockshim.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&library)
        .arg(&source)
        .status()
        .expect("cc runs");
    assert!(built.success(), "the shim builds");
    library
}

/// Sum of the counts of a JSON profile's stacks whose frames include
/// `function` and whose leaf is `leaf`.
pub fn count_in_json(json: &serde_json::Value, function: &str, leaf: &str) -> u64 {
    json["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["leaf"] == leaf)
        .filter(|s| {
            s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["function"] == function)
        })
        .map(|s| s["count"].as_u64().unwrap())
        .sum()
}

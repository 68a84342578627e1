//! Shared helpers of the end-to-end tests: find the clockprof binary, build the
//! fixtures, run recordings and read their output.
#![allow(dead_code)]

use std::collections::BTreeMap;
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

pub fn fixture_dir() -> PathBuf {
    let dir = std::env::var_os("CLOCKPROF_FIXTURE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/fixtures"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The C fixture, compiled once per test binary with frame pointers (or
/// prebuilt and named by CLOCKPROF_C_FIXTURE, as in the VM, where compiling
/// under emulation would be slow).
pub fn c_fixture() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(prebuilt) = std::env::var_os("CLOCKPROF_C_FIXTURE") {
            return PathBuf::from(prebuilt);
        }
        // The binary's name is its comm, the root of every folded stack.
        let out = fixture_dir().join(format!("cfixture{}", std::process::id() % 1000));
        let source = workspace_root().join("tests/fixtures/syscall_fixture.c");
        let status = Command::new("gcc")
            .args(["-O1", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(&out)
            .arg(&source)
            .status()
            .expect("gcc runs");
        assert!(status.success(), "gcc failed on {}", source.display());
        out
    })
}

/// The Rust fixture, built by cargo with frame pointers (.cargo/config.toml).
pub fn rust_fixture() -> PathBuf {
    let exe = std::env::var_os("CARGO_BIN_EXE_fixture-rust")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_fixture-rust")));
    assert!(exe.exists(), "{} is missing", exe.display());
    exe
}

pub fn comm_of(path: &Path) -> String {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    name.chars().take(15).collect()
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = fixture_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(clockprof())
        .args(args)
        .output()
        .expect("clockprof runs")
}

/// `clockprof record ARGS -o OUT -- COMMAND...`.
pub fn record_to(out: &Path, args: &[&str], command: &[&std::ffi::OsStr]) -> Output {
    use std::ffi::OsStr;
    let mut argv: Vec<&OsStr> = vec![OsStr::new("record")];
    argv.extend(args.iter().map(OsStr::new));
    argv.extend([OsStr::new("-o"), out.as_os_str(), OsStr::new("--")]);
    argv.extend_from_slice(command);
    run(&argv)
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

/// No clockprof program may stay loaded after clockprof exits. bpftool lists
/// every BPF program in the kernel (installed by `cargo xtask setup`).
pub fn assert_no_clockprof_programs_left() {
    let out = Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .expect("bpftool runs (cargo xtask setup installs it)");
    assert!(out.status.success(), "bpftool prog show failed");
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["sys_enter_clock", "sys_enter_getti", "sched_process_f"] {
        assert!(
            !text.contains(name),
            "clockprof program {name} is still loaded:\n{text}"
        );
    }
}

/// The Go fixture, built once per test binary with Debian's Go toolchain.
pub fn go_fixture() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = fixture_dir().join(format!("gofixture{}", std::process::id() % 1000));
        let source = workspace_root().join("tests/fixtures/go_fixture.go");
        let status = Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&out)
            .arg(&source)
            .env("GOCACHE", fixture_dir().join("go-cache"))
            .env("GOPATH", fixture_dir().join("go-path"))
            .env("GOFLAGS", "-mod=mod")
            .env("GO111MODULE", "off")
            .status()
            .expect("go runs (cargo xtask setup installs golang-go)");
        assert!(status.success(), "go build failed on {}", source.display());
        out
    })
}

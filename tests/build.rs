//! Compiles the C and Go fixtures once, when they change, rather than once per
//! test binary and run. Each lands in OUT_DIR and its path reaches the tests as
//! a compile-time variable (`CLOCKPROF_C_FIXTURE_BIN` ...; the library's
//! `c_fixture()` and friends read them). Tests that build a variant on purpose
//! (a copy under a hostile path, a stripped or debuglinked build) still build
//! it at run time.
//!
//! The Go fixtures are built by each Go release the Go tests run on (Go 1.19,
//! 1.23 and the current release), each `go` named by its path with
//! GOTOOLCHAIN=local, so nothing is fetched and the PATH's `go` decides
//! nothing: `CLOCKPROF_GO_FIXTURE_1_19`, `CLOCKPROF_CGO_FIXTURE_1_23`,
//! `CLOCKPROF_GO_FIXTURE_CURRENT` ..., with `CLOCKPROF_GO_<KEY>_VERSION`
//! (`go1.26.8`, empty when missing) and `CLOCKPROF_GO_<KEY>_ABOUT` (the
//! version and path, or why there is none). A missing Go is a warning: the
//! tests that need its fixtures fail saying which Go is missing.
//!
//! A fixture's file name is its comm, the root of every folded stack: a
//! number derived from OUT_DIR follows the name, so two worktrees' fixtures
//! running on one host never share a comm.

use std::env;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

/// (variable, source under fixtures/, name, gcc flags).
const C_FIXTURES: &[(&str, &str, &str, &[&str])] = &[
    // Frame pointers and debug info: the exact stacks most tests assert.
    (
        "CLOCKPROF_C_FIXTURE_BIN",
        "syscall_fixture.c",
        "cfixture",
        &["-O1", "-g", "-fno-omit-frame-pointer"],
    ),
    // As Debian builds its binaries: -O2, no frame pointers and no -g, so
    // only .eh_frame is left to unwind with (dwarf.rs).
    (
        "CLOCKPROF_DWARF_FIXTURE",
        "dwarf_fixture.c",
        "dwfixture",
        &["-O2", "-fomit-frame-pointer"],
    ),
    // Counts the SIGINTs it is sent (lifecycle.rs).
    (
        "CLOCKPROF_INTERRUPT_COUNTER",
        "interrupt_counter.c",
        "intcounter",
        &["-O1"],
    ),
];

/// (variable prefix, source under fixtures/, name): each built by every Go
/// of GO_RELEASES with its defaults (cgo's C with `-g -O2`), as the tests
/// always built them, into `PREFIX_KEY` (`CLOCKPROF_GO_FIXTURE_1_19` ...).
const GO_FIXTURES: &[(&str, &str, &str)] = &[
    ("CLOCKPROF_GO_FIXTURE", "go_fixture.go", "gofix"),
    ("CLOCKPROF_CGO_FIXTURE", "cgo_fixture.go", "cgofix"),
];

/// A Go release the Go tests run on: its key in the variables' names, the
/// `go` commands tried for it, by explicit path (never whichever `go` is
/// first on PATH, but for `current`), and the versions it accepts.
struct GoRelease {
    key: &'static str,
    /// In the fixtures' file names, so a test's comm tells the release.
    short: &'static str,
    candidates: fn() -> Vec<PathBuf>,
    accepts: fn((u32, u32)) -> bool,
    /// What installs it, for the warning when it is missing.
    install: &'static str,
}

/// Debian 12's Go (golang-go), bookworm-backports' (golang-1.23-go), and the
/// current release: /usr/local/go, or the `go` on PATH when it is 1.24 or
/// newer. `cargo xtask setup` installs the first two.
const GO_RELEASES: &[GoRelease] = &[
    GoRelease {
        key: "1_19",
        short: "119",
        candidates: || vec![PathBuf::from("/usr/lib/go-1.19/bin/go")],
        accepts: |version| version == (1, 19),
        install: "`cargo xtask setup` installs it (Debian's golang-go)",
    },
    GoRelease {
        key: "1_23",
        short: "123",
        candidates: || vec![PathBuf::from("/usr/lib/go-1.23/bin/go")],
        accepts: |version| version == (1, 23),
        install: "`cargo xtask setup` installs it (golang-1.23-go from bookworm-backports)",
    },
    GoRelease {
        key: "CURRENT",
        short: "cur",
        candidates: || {
            let mut candidates = vec![PathBuf::from("/usr/local/go/bin/go")];
            candidates.extend(
                env::var_os("PATH")
                    .iter()
                    .flat_map(env::split_paths)
                    .map(|dir| dir.join("go"))
                    .find(|go| go.is_file()),
            );
            candidates
        },
        accepts: |version| version >= (1, 24),
        install: "install the current Go release at /usr/local/go (https://go.dev/dl/), \
                  or put a Go 1.24 or newer first on PATH",
    },
];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let fixtures = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap()).join("fixtures");
    let suffix = {
        let mut hasher = DefaultHasher::new();
        out_dir.hash(&mut hasher);
        hasher.finish() % 1000
    };
    println!("cargo:rerun-if-changed=build.rs");

    for (variable, source, name, flags) in C_FIXTURES {
        let source = fixtures.join(source);
        let out = out_dir.join(format!("{name}{suffix}"));
        let mut gcc = Command::new("gcc");
        gcc.args(*flags).arg("-o").arg(&out).arg(&source);
        build(variable, &source, &out, gcc);
    }
    for release in GO_RELEASES {
        let key = release.key;
        let go = find_go(release);
        // What the tests say of this release: its version, or why it is missing.
        let (version, about) = match &go {
            Ok((path, version)) => (version.clone(), format!("{version} ({})", path.display())),
            Err(why) => {
                let release = match key {
                    "CURRENT" => "current Go".to_string(),
                    version => format!("Go {}", version.replace('_', ".")),
                };
                println!("cargo:warning=no {release} for its Go fixtures: {why}");
                (String::new(), format!("missing: {why}"))
            }
        };
        println!("cargo:rustc-env=CLOCKPROF_GO_{key}_VERSION={version}");
        println!("cargo:rustc-env=CLOCKPROF_GO_{key}_ABOUT={about}");
        for (prefix, source, name) in GO_FIXTURES {
            let source = fixtures.join(source);
            let out = out_dir.join(format!("{name}{}{suffix}", release.short));
            let variable = format!("{prefix}_{key}");
            let Ok((go, _)) = &go else {
                println!("cargo:rerun-if-changed={}", source.display());
                println!("cargo:rustc-env={variable}={}", out.display());
                let _ = std::fs::remove_file(&out);
                continue;
            };
            let mut command = Command::new(go);
            command
                .arg("build")
                .arg("-o")
                .arg(&out)
                .arg(&source)
                .env("GOCACHE", out_dir.join(format!("go-cache-{key}")))
                .env("GOPATH", out_dir.join("go-path"))
                .env("GOFLAGS", "-mod=mod")
                .env("GOTOOLCHAIN", "local")
                .env("GO111MODULE", "off");
            build(&variable, &source, &out, command);
        }
    }
    // A FUSE daemon for the tests of a stalled FUSE mount: go-fuse's
    // loopback filesystem, a Go module fetched through the module proxy
    // (its version and hashes pinned in go.mod and go.sum).
    let module = fixtures.join("fusefs");
    let out = out_dir.join(format!("fusefs{suffix}"));
    let mut go = Command::new("go");
    go.arg("build")
        .arg("-o")
        .arg(&out)
        .arg(".")
        .current_dir(&module)
        .env("GOCACHE", out_dir.join("go-cache"))
        .env("GOPATH", out_dir.join("go-path"))
        .env("GOFLAGS", "-mod=readonly -modcacherw")
        .env("GOTOOLCHAIN", "local")
        .env("GO111MODULE", "on");
    for file in ["go.mod", "go.sum"] {
        println!("cargo:rerun-if-changed={}", module.join(file).display());
    }
    build("CLOCKPROF_FUSEFS_BIN", &module.join("main.go"), &out, go);
}

/// The first of `release`'s candidates that runs and reports a version it
/// accepts, with that version (`go1.23.5`), or why there is none.
fn find_go(release: &GoRelease) -> Result<(PathBuf, String), String> {
    let mut tried = Vec::new();
    for go in (release.candidates)() {
        println!("cargo:rerun-if-changed={}", watched(&go).display());
        let output = Command::new(&go)
            .args(["env", "GOVERSION"])
            .env("GOTOOLCHAIN", "local")
            .output();
        let said = match output {
            Ok(output) if output.status.success() => {
                String::from_utf8_lossy(&output.stdout).trim().to_string()
            }
            Ok(output) => {
                tried.push(format!("{} failed ({})", go.display(), output.status));
                continue;
            }
            Err(err) => {
                tried.push(format!("{} does not run ({err})", go.display()));
                continue;
            }
        };
        match go_version(&said) {
            Some(version) if (release.accepts)(version) => return Ok((go, said)),
            _ => tried.push(format!("{} is {said:?}", go.display())),
        }
    }
    Err(format!("{}; {}", tried.join(", "), release.install))
}

/// What to watch for `go` appearing or changing: itself where it is; for a
/// Debian toolchain not installed, dpkg's status (which installing it
/// changes); else the nearest directory that is there. A path that is not
/// there would rerun this script on every build.
fn watched(go: &Path) -> PathBuf {
    if go.exists() {
        return go.to_path_buf();
    }
    if go.starts_with("/usr/lib") {
        return PathBuf::from("/var/lib/dpkg/status");
    }
    go.ancestors()
        .find(|dir| dir.is_dir())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

/// (major, minor) of what `go env GOVERSION` prints: `go1.23.5`, `go1.26rc1`,
/// `go1.26.8 X:nocoverageredesign`.
fn go_version(goversion: &str) -> Option<(u32, u32)> {
    let version = goversion.split_whitespace().next()?.strip_prefix("go")?;
    let mut parts = version.split('.').map(|part| {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    });
    Some((parts.next()??, parts.next()??))
}

/// Runs `command` to build `out` from `source` and names `out` in `variable`.
/// A missing compiler is a warning, not a build failure: the workspace still
/// builds, and the tests that need the fixture fail saying it is missing.
fn build(variable: &str, source: &Path, out: &Path, mut command: Command) {
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rustc-env={variable}={}", out.display());
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("{command:?} failed ({status}) on {}", source.display()),
        Err(err) => {
            let _ = std::fs::remove_file(out);
            println!(
                "cargo:warning=could not run {:?} for {} ({err}); `cargo xtask setup` installs it",
                command.get_program(),
                source.display()
            );
        }
    }
}

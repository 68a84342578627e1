//! Compiles the C and Go fixtures once, when they change, rather than once per
//! test binary and run. Each lands in OUT_DIR and its path reaches the tests as
//! a compile-time variable (`CLOCKPROF_C_FIXTURE_BIN` ...; the library's
//! `c_fixture()` and friends read them). Tests that build a variant on purpose
//! (a copy under a hostile path, a stripped or debuglinked build) still build
//! it at run time.
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

/// (variable, source under fixtures/, name): built by `go` from PATH with its
/// defaults (cgo's C with `-g -O2`), as the tests always built them.
const GO_FIXTURES: &[(&str, &str, &str)] = &[
    ("CLOCKPROF_GO_FIXTURE_BIN", "go_fixture.go", "gofixture"),
    ("CLOCKPROF_CGO_FIXTURE_BIN", "cgo_fixture.go", "cgofixture"),
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
    for (variable, source, name) in GO_FIXTURES {
        let source = fixtures.join(source);
        let out = out_dir.join(format!("{name}{suffix}"));
        let mut go = Command::new("go");
        go.arg("build")
            .arg("-o")
            .arg(&out)
            .arg(&source)
            .env("GOCACHE", out_dir.join("go-cache"))
            .env("GOPATH", out_dir.join("go-path"))
            .env("GOFLAGS", "-mod=mod")
            .env("GO111MODULE", "off");
        build(variable, &source, &out, go);
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

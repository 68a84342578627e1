//! The fuzz targets: one per parser of input a user controls.

use std::time::Duration;

use super::Target;

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

fn recorded(data: &[u8]) -> bool {
    let Ok(recorded) = crate::check::recorded::Recorded::parse(&text(data)) else {
        return false;
    };
    let _ = recorded.folded_lines();
    let _ = recorded.total();
    for stack in &recorded.stacks {
        let _ = stack.reader();
        let _ = stack.frames().count();
    }
    true
}

fn proc_maps(data: &[u8]) -> bool {
    let mut any = false;
    for line in text(data).lines() {
        any |= crate::host::maps::parse_maps_line(line).is_some();
    }
    any
}

/// Small ELF files of this machine: the vDSO (what unwind/ reads from
/// memory) and, when small, /bin/true.
fn elf_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = crate::host::facts::own_vdso_image().into_iter().collect();
    if let Ok(binary) = std::fs::read("/bin/true") {
        if binary.len() <= 256 << 10 {
            seeds.push(binary);
        }
    }
    seeds
}

fn none() -> Vec<Vec<u8>> {
    Vec::new()
}

const TEXT_MAX: usize = 64 << 10;
const ELF_MAX: usize = 256 << 10;

pub const TARGETS: &[Target] = &[
    Target {
        name: "folded",
        run: recorded,
        extra_seeds: none,
        tokens: &[
            b";",
            b" ",
            b"\n",
            b" 18446744073709551615",
            b"[vdso sample]",
            b"\x1b",
        ],
        max_len: TEXT_MAX,
    },
    Target {
        name: "json",
        run: recorded,
        extra_seeds: none,
        tokens: &[
            b"{",
            b"}",
            b"[",
            b"]",
            b",",
            b"\"",
            b"\"frames\"",
            b"\"count\"",
            b"1e999",
            b"18446744073709551616",
            b"\\u0000",
        ],
        max_len: TEXT_MAX,
    },
    Target {
        name: "budget",
        run: |data| crate::check::fuzz_budget(&text(data)),
        extra_seeds: none,
        tokens: &[
            b"[max]\n",
            b"[max-rate]\n",
            b"[baseline]\n",
            b"=",
            b"\"",
            b"ms",
            b"s",
            b"us",
            b"e308",
            b"[",
            b"{",
            b"1e999",
            b"100000000000000000000",
        ],
        max_len: TEXT_MAX,
    },
    Target {
        name: "perf_map",
        run: |data| crate::symbolize::fuzz_perf_map(&text(data)),
        extra_seeds: none,
        tokens: &[b" ", b"\n", b"0x", b"ffffffffffffffff", b"\0"],
        max_len: TEXT_MAX,
    },
    Target {
        name: "proc_maps",
        run: proc_maps,
        extra_seeds: none,
        tokens: &[
            b" ",
            b"-",
            b":",
            b"\n",
            b" (deleted)",
            b"ffffffffffffffff",
            b"[vdso]",
        ],
        max_len: TEXT_MAX,
    },
    Target {
        name: "elf_facts",
        run: crate::symbolize::debuginfo::fuzz_elf_facts,
        extra_seeds: elf_seeds,
        tokens: &[
            b"\x7fELF",
            b".gnu_debuglink\0",
            b"\xff\xff\xff\xff\xff\xff\xff\xff",
        ],
        max_len: ELF_MAX,
    },
    Target {
        name: "unwind_sections",
        run: crate::unwind::fuzz_unwind_sections,
        extra_seeds: elf_seeds,
        tokens: &[
            b".eh_frame\0",
            b".eh_frame_hdr\0",
            b".debug_frame\0",
            b"\xff\xff\xff\xff",
            b"\0\0\0\0",
        ],
        max_len: ELF_MAX,
    },
    Target {
        name: "go_layout",
        run: crate::unwind::fuzz_go_layout,
        extra_seeds: elf_seeds,
        tokens: &[
            b".debug_info\0",
            b".debug_abbrev\0",
            b".tbss\0",
            b"runtime.g\0",
            b"runtime.tlsg\0",
            b"\xff\xff\xff\xff",
        ],
        max_len: ELF_MAX,
    },
];

/// Each target for this long in the unit tests: enough to run every seed
/// and a few thousand mutants of the text ones.
const FUZZ_SMOKE: Duration = Duration::from_millis(300);

#[test]
fn fuzz_targets_briefly() {
    let mut failed = Vec::new();
    for (index, target) in TARGETS.iter().enumerate() {
        let outcome = super::run(target, FUZZ_SMOKE, 0x5eed + index as u64);
        if outcome.failed() {
            failed.push(format!(
                "{} (inputs: {:?})",
                outcome.line(target.name),
                outcome.saved
            ));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// What `cargo xtask bench --rows fuzz` runs: CLOCKPROF_FUZZ_SECONDS per
/// target (default 60), the targets CLOCKPROF_FUZZ_TARGETS names (default
/// all), one `fuzz NAME: ...` line each.
#[test]
#[ignore]
fn fuzz_long() {
    let secs: f64 = std::env::var("CLOCKPROF_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60.0);
    let only = std::env::var("CLOCKPROF_FUZZ_TARGETS").ok();
    let seed = std::env::var("CLOCKPROF_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("fuzz seed {seed}");
    let mut failed = Vec::new();
    for (index, target) in TARGETS.iter().enumerate() {
        if only
            .as_deref()
            .is_some_and(|only| !only.split(',').any(|name| name == target.name))
        {
            continue;
        }
        let outcome = super::run(target, Duration::from_secs_f64(secs), seed + index as u64);
        println!("{}", outcome.line(target.name));
        for path in &outcome.saved {
            println!("fuzz {}: failing input {}", target.name, path.display());
        }
        if outcome.failed() {
            failed.push(target.name);
        }
    }
    assert!(failed.is_empty(), "fuzz targets with failures: {failed:?}");
}

/// Runs one saved input with the panic hook in place, for its message and
/// backtrace: CLOCKPROF_FUZZ_REPLAY=TARGET:PATH.
#[test]
#[ignore]
fn fuzz_replay() {
    let spec = std::env::var("CLOCKPROF_FUZZ_REPLAY").expect("CLOCKPROF_FUZZ_REPLAY=TARGET:PATH");
    let (name, path) = spec.split_once(':').expect("TARGET:PATH");
    let target = TARGETS
        .iter()
        .find(|t| t.name == name)
        .expect("a target's name");
    let accepted = (target.run)(&std::fs::read(path).unwrap());
    println!("fuzz {name}: {path} accepted: {accepted}");
}

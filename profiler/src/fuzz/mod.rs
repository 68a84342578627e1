//! Fuzzing of the parsers of user-controlled input, on stable Rust, as unit
//! tests of this crate (the parsers are private to the clockprof binary; a
//! library target or a fuzz crate would have to make them public).
//!
//! No coverage guidance (cargo-fuzz needs a nightly compiler, which this
//! project's toolchain is not): each target starts from its seed corpus
//! (`profiler/fuzz-corpus/TARGET/`, small files, plus seeds made at run time
//! such as this machine's vDSO) and mutates it: byte flips, inserted and
//! deleted runs, repeated chunks, splices of two seeds and tokens the parsers
//! care about. A mutant that reaches new behaviour is not kept; what this
//! finds is panics, slow inputs and allocations out of proportion to the
//! input, which is what "cannot crash, hang or balloon" asks.
//!
//! - `targets::fuzz_targets_briefly`, a unit test: every target for a
//!   moment (FUZZ_SMOKE per target), so a crash in a seed shows up at once.
//! - `targets::fuzz_long`, ignored: every target (or CLOCKPROF_FUZZ_TARGETS)
//!   for CLOCKPROF_FUZZ_SECONDS each, one report line per target; what
//!   `cargo xtask bench --rows fuzz` runs. Failing inputs are written to
//!   target/fuzz/TARGET/.

pub mod alloc;
mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One parser's target: it gets any bytes, and says whether the parser
/// accepted them (how deep the mutants reach, without coverage).
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]) -> bool,
    /// Seeds besides the corpus files, made at run time.
    pub extra_seeds: fn() -> Vec<Vec<u8>>,
    /// Tokens worth inserting: the parser's separators and keywords.
    pub tokens: &'static [&'static [u8]],
    /// Mutants grow at most to this many bytes.
    pub max_len: usize,
}

/// An exec slower than this is reported as a hang.
const SLOW: Duration = Duration::from_secs(1);
/// An exec that allocates more than this much at once, beyond BALLOON_FACTOR
/// times its input, is reported as ballooning.
const BALLOON_SLACK: usize = 16 << 20;
const BALLOON_FACTOR: usize = 64;
const GROWTH_FROM: usize = 1024;

#[derive(Debug, Default)]
pub struct Outcome {
    pub execs: u64,
    /// Execs whose input the parser accepted.
    pub accepted: u64,
    pub elapsed: Duration,
    pub crashes: u64,
    pub hangs: u64,
    pub balloons: u64,
    pub slowest: Duration,
    /// Peak bytes allocated by one exec over its input's length, for inputs
    /// of GROWTH_FROM bytes or more (a small one's fixed costs say nothing).
    pub worst_growth: f64,
    pub seeds: usize,
    /// Where the first failing inputs were written.
    pub saved: Vec<PathBuf>,
}

impl Outcome {
    pub fn failed(&self) -> bool {
        self.crashes + self.hangs + self.balloons > 0
    }

    pub fn line(&self, name: &str) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        format!(
            "fuzz {name}: {} execs in {:.1} s ({:.0}/s), {} crashes, {} hangs, {} balloons; seeds {}, accepted {:.0}%, slowest {:.1} ms, worst growth {:.1}x",
            self.execs,
            secs,
            self.execs as f64 / secs,
            self.crashes,
            self.hangs,
            self.balloons,
            self.seeds,
            self.accepted as f64 * 100.0 / self.execs.max(1) as f64,
            self.slowest.as_secs_f64() * 1e3,
            self.worst_growth,
        )
    }
}

pub fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz-corpus")
        .join(name)
}

fn seeds(target: &Target) -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    if let Ok(entries) = std::fs::read_dir(corpus_dir(target.name)) {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        seeds.extend(paths.iter().filter_map(|p| std::fs::read(p).ok()));
    }
    seeds.extend((target.extra_seeds)());
    if seeds.is_empty() {
        seeds.push(Vec::new());
    }
    seeds
}

/// xorshift64*: reproducible from its seed, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// In 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four mutations of `seed`, spliced with `other` at times.
pub fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8], target: &Target) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next() as u8;
            }
            2 if len > 0 => {
                // An interesting value where a field may be.
                let i = rng.below(len);
                let values: [&[u8]; 6] = [
                    &[0],
                    &[0xff],
                    &[0x7f],
                    &[0x80],
                    &[0xff, 0xff, 0xff, 0xff],
                    &[0, 0, 0, 0x80],
                ];
                let value = values[rng.below(values.len())];
                let end = (i + value.len()).min(len);
                data[i..end].copy_from_slice(&value[..end - i]);
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                data.drain(start..end);
            }
            4 if !target.tokens.is_empty() => {
                let token = target.tokens[rng.below(target.tokens.len())];
                let at = rng.below(len + 1);
                let times = if rng.below(8) == 0 {
                    1 + rng.below(4096)
                } else {
                    1
                };
                let insert: Vec<u8> = token.repeat(times);
                data.splice(at..at, insert);
            }
            5 if len > 0 => {
                // A chunk repeated: deep nesting, long lines, many entries.
                let start = rng.below(len);
                let end = (start + 1 + rng.below(32)).min(len);
                let chunk = data[start..end].repeat(1 + rng.below(256));
                let at = rng.below(len + 1);
                data.splice(at..at, chunk);
            }
            6 if !other.is_empty() => {
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            7 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(i..i, bytes);
            }
            _ if len > 0 => {
                // Cut short: truncated headers and tables.
                data.truncate(rng.below(len));
            }
            _ => data.push(rng.next() as u8),
        }
    }
    data.truncate(target.max_len);
    data
}

/// Runs `target` over its seeds, then over mutants until `budget` is spent.
pub fn run(target: &Target, budget: Duration, rng_seed: u64) -> Outcome {
    let seeds = seeds(target);
    let mut outcome = Outcome {
        seeds: seeds.len(),
        ..Outcome::default()
    };
    let mut rng = Rng::new(rng_seed);
    let started = Instant::now();
    let mut index = 0usize;
    // A panic's message once per target, not once per crashing input.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    loop {
        let input = if index < seeds.len() {
            seeds[index].clone()
        } else {
            if started.elapsed() >= budget {
                break;
            }
            let seed = &seeds[rng.below(seeds.len())];
            let other = &seeds[rng.below(seeds.len())];
            mutate(&mut rng, seed, other, target)
        };
        index += 1;
        let baseline = alloc::reset_peak();
        let exec_started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| (target.run)(&input)));
        let took = exec_started.elapsed();
        let peak = alloc::peak().saturating_sub(baseline);
        outcome.execs += 1;
        outcome.slowest = outcome.slowest.max(took);
        if input.len() >= GROWTH_FROM {
            outcome.worst_growth = outcome.worst_growth.max(peak as f64 / input.len() as f64);
        }
        if result.as_ref().is_ok_and(|&accepted| accepted) {
            outcome.accepted += 1;
        }
        let failure = if result.is_err() {
            outcome.crashes += 1;
            Some("crash")
        } else if took > SLOW {
            outcome.hangs += 1;
            Some("hang")
        } else if peak > BALLOON_SLACK + BALLOON_FACTOR * input.len() {
            outcome.balloons += 1;
            Some("balloon")
        } else {
            None
        };
        if let Some(kind) = failure {
            if outcome.saved.len() < 8 {
                outcome.saved.extend(save(target.name, kind, &input));
            }
        }
    }
    std::panic::set_hook(hook);
    outcome.elapsed = started.elapsed();
    outcome
}

fn save(name: &str, kind: &str, input: &[u8]) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/fuzz")
        .join(name);
    std::fs::create_dir_all(&dir).ok()?;
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let path = dir.join(format!("{kind}-{hash:016x}"));
    std::fs::write(&path, input).ok()?;
    Some(path)
}

//! `--rows fuzz`: the profiler's fuzz targets (profiler/src/fuzz/), each for
//! `--fuzz-seconds`, through the ignored unit test that runs them; its
//! `fuzz NAME: ...` lines are the figures.

use std::process::Stdio;

use anyhow::{bail, Context, Result};

use crate::process;

/// The figures of one target, as the test prints them.
pub struct TargetResult {
    pub name: String,
    pub execs: u64,
    pub secs: f64,
    pub failures: u64,
}

impl TargetResult {
    /// `fuzz NAME: E execs in S s (R/s), C crashes, H hangs, B balloons; ...`
    fn parse(line: &str) -> Option<TargetResult> {
        let rest = line.strip_prefix("fuzz ")?;
        let (name, figures) = rest.split_once(": ")?;
        let words: Vec<&str> = figures.split_whitespace().collect();
        let number = |after: &str| -> Option<f64> {
            let at = words
                .iter()
                .position(|w| w.trim_end_matches([',', ';']) == after)?;
            words.get(at.checked_sub(1)?)?.parse().ok()
        };
        Some(TargetResult {
            name: name.to_string(),
            execs: number("execs")? as u64,
            secs: words.get(3)?.parse().ok()?,
            failures: (number("crashes")? + number("hangs")? + number("balloons")?) as u64,
        })
    }
}

pub fn run(seconds: u64) -> Result<(Vec<TargetResult>, serde_json::Value)> {
    println!("\nFuzz: every parser target for {seconds} s (profiler/src/fuzz/)");
    // The test profile, not --release: its overflow checks turn an
    // arithmetic overflow into a crash the run reports, where the release
    // build silently wraps (gimli's .eh_frame_hdr subtraction was found so,
    // at a fifth of the release build's execs per second). Turning them on
    // for release instead would change its profile and rebuild every
    // dependency of the cached release build.
    let mut cmd = process::cargo([
        "test",
        "-p",
        "profiler",
        "--lib",
        "--",
        "--ignored",
        "--exact",
        "fuzz::targets::fuzz_long",
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd.env("CLOCKPROF_FUZZ_SECONDS", seconds.to_string())
        .stdout(Stdio::piped());
    let output = cmd
        .spawn()
        .and_then(|child| child.wait_with_output())
        .context("could not run the fuzz targets")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut results = Vec::new();
    for line in stdout.lines().filter(|l| l.starts_with("fuzz ")) {
        println!("{line}");
        results.extend(TargetResult::parse(line));
    }
    let json = serde_json::json!({
        "seconds_per_target": seconds,
        "targets": results
            .iter()
            .map(|r| (r.name.clone(), serde_json::json!({
                "execs": r.execs,
                "secs": r.secs,
                "execs_per_sec": r.execs as f64 / r.secs.max(1e-9),
                "failures": r.failures,
            })))
            .collect::<serde_json::Map<_, _>>(),
    });
    if results.is_empty() {
        bail!(
            "the fuzz test printed no figures (its exit: {})",
            output.status
        );
    }
    let failures: u64 = results.iter().map(|r| r.failures).sum();
    if failures > 0 || !output.status.success() {
        println!("Fuzz: {failures} failing inputs, written to target/fuzz/TARGET/: each is a bug to fix and a regression test to add");
    }
    Ok((results, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_figures_line() {
        let r = TargetResult::parse(
            "fuzz folded: 1234 execs in 60.0 s (21/s), 1 crashes, 0 hangs, 2 balloons; seeds 2, slowest 1.0 ms, worst growth 3.0x",
        )
        .unwrap();
        assert_eq!(r.name, "folded");
        assert_eq!(r.execs, 1234);
        assert_eq!(r.secs, 60.0);
        assert_eq!(r.failures, 3);
    }
}

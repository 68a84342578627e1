//! Adds up libtest's `test result:` lines, so `cargo xtask test` can close
//! with one plain `N passed, N failed` line over the host and the VM runs
//! (CI reads a run's closing lines to tell that tests really ran).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Tally {
    /// Counts a `test result: ok. 6 passed; 0 failed; 2 ignored; ...` line.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim_start().strip_prefix("test result:") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(number)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            match kind {
                "passed" => self.passed += number,
                "failed" => self.failed += number,
                "ignored" => self.ignored += number,
                _ => {}
            }
        }
    }

    pub fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }
}

/// Runs `cmd`, passing its stdout through line by line, and tallies it.
pub fn run_tallied(cmd: &mut Command) -> Result<(ExitStatus, Tally)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {cmd:?}"))?;
    let mut tally = Tally::default();
    let stdout = child.stdout.take().context("no stdout")?;
    let mut out = std::io::stdout();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        tally.add_line(&line);
        let _ = writeln!(out, "{line}");
    }
    Ok((child.wait()?, tally))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_up_result_lines() {
        let mut tally = Tally::default();
        tally.add_line("test result: ok. 15 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 15.12s");
        tally.add_line("  test result: FAILED. 1 passed; 2 failed; 6 ignored; 0 measured");
        tally.add_line("running 6 tests");
        tally.add_line("test foo ... ok");
        assert_eq!(
            tally,
            Tally {
                passed: 16,
                failed: 2,
                ignored: 6
            }
        );
    }
}

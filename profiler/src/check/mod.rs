//! `clockprof check`: records COMMAND as `record -- COMMAND` does (same
//! sources, options and `-o` output), then judges the clock reads against
//! budgets. Exit status: 0 within every budget, 3 over one, COMMAND's own
//! non-zero status over both; a pattern that matches nothing is an error.
//!
//! Everything that can be checked before the recording is (budget syntax,
//! the budget and baseline files, the JUnit path), so a typo costs no run.

mod budget;
pub mod diff;
mod judge;
pub mod options;
mod pattern;
pub mod recorded;
mod report;

/// The fuzz target of budget files (fuzz/targets.rs): any text as TOML, and
/// each line as a --max and a --max-rate value.
#[cfg(test)]
pub(crate) fn fuzz_budget(text: &str) -> bool {
    for line in text.lines().take(64) {
        let _ = budget::parse_max_limit(line).map(|limit| limit.to_string());
        let _ = budget::parse_rate_limit(line).map(|limit| limit.to_string());
    }
    budget::parse_file(text, std::path::Path::new("/budgets")).is_ok()
}

use anyhow::{bail, Result};

use crate::check::recorded::Recorded;
use crate::export::{Existing, OutputFile};
use crate::record::{self, Summary};
use crate::say::say;
use crate::sources::Source;
use budget::{Budget, BudgetFlags, Limit};
use judge::{Measures, Unmatched};
use options::CheckArgs;

/// Exit status when a budget is exceeded.
pub const OVER_BUDGET: i32 = 3;

pub async fn check(args: CheckArgs) -> Result<i32> {
    if args.record.command.is_empty() {
        bail!("check runs a command: give it after `--`, e.g. clockprof check --max 'main=1000' -- ./fixture");
    }
    if args.record.all || !args.record.probe.pids.is_empty() {
        bail!("check judges the COMMAND it runs; -a and -p are for clockprof record");
    }
    if args.record.output.as_deref() == Some(std::path::Path::new("-")) {
        bail!("check prints its budget table on standard output; write the profile to a file with -o FILE");
    }
    let budget = Budget::assemble(&BudgetFlags {
        max: &args.max,
        max_rate: &args.max_rate,
        baseline: args.baseline.as_deref(),
        max_increase: args.max_increase,
        file: args.budget.as_deref(),
    })?;
    let sources = &args.record.probe.sources;
    let vdso_named = sources.explicit()
        && sources
            .sources
            .contains(&Source::of(&profiler_common::sources::vdso::SPEC));
    if let Some(rule) = budget
        .rules
        .iter()
        .find(|r| matches!(r.limit, Limit::CpuTime(_)))
    {
        if !vdso_named {
            bail!(
                "the CPU-time budget `{}` judges vdso samples: name the vdso source with -s, e.g. -s syscall,vdso",
                rule.name()
            );
        }
    }
    let base = match &budget.baseline {
        Some(baseline) => Some(Recorded::load(&baseline.file, "the baseline")?),
        None => None,
    };
    let junit = args
        .junit
        .as_deref()
        .map(|path| OutputFile::create(path, Existing::Replace))
        .transpose()?;

    let recording = record::record_profile(&args.record, Summary::Skip).await?;
    let profile = &recording.profile;
    let command_failure = (recording.exit_code != 0).then_some(recording.exit_code);
    if let Some(status) = command_failure {
        say!("COMMAND exited with status {status}; check exits with it");
    }
    let recorded = Recorded::from_profile(profile);
    let measures = Measures {
        recorded: &recorded,
        duration: profile.info.duration,
        sample_frequency: profile.info.sample_frequency,
    };
    let mut verdicts = match judge::judge_rules(&budget.rules, &measures) {
        Ok(verdicts) => verdicts,
        Err(unmatched) => {
            say!("{}.", describe_unmatched(&unmatched));
            // No judgement was made: no JUnit file either.
            return Ok(command_failure.unwrap_or(1));
        }
    };
    if let (Some(baseline), Some(base)) = (&budget.baseline, &base) {
        verdicts.push(judge::judge_baseline(baseline, base, &recorded));
    }

    print!("{}", report::table(&verdicts));
    if let Some(file) = junit {
        let path = file.path().display().to_string();
        file.commit(report::junit(&verdicts, command_failure, profile.info.duration).as_bytes())?;
        say!("wrote JUnit XML to {path}");
    }
    let over_budget = verdicts.iter().any(|v| !v.passed);
    Ok(match command_failure {
        Some(status) => status,
        None if over_budget => OVER_BUDGET,
        None => 0,
    })
}

/// One sentence for every pattern that matched nothing.
fn describe_unmatched(unmatched: &[Unmatched]) -> String {
    let list = |cpu_time: bool| -> Vec<String> {
        unmatched
            .iter()
            .filter(|u| u.cpu_time == cpu_time)
            .map(|u| format!("`{}`", u.pattern))
            .collect()
    };
    let (counted, sampled) = (list(false), list(true));
    let mut parts = Vec::new();
    if !counted.is_empty() {
        parts.push(format!(
            "{} {} no frame of the counted clock reads",
            counted.join(", "),
            if counted.len() == 1 {
                "matches"
            } else {
                "match"
            }
        ));
    }
    if !sampled.is_empty() {
        parts.push(format!(
            "{} {} no frame of the vdso samples",
            sampled.join(", "),
            if sampled.len() == 1 {
                "matches"
            } else {
                "match"
            }
        ));
    }
    format!(
        "the budget {} {}; check the spelling against the folded output (process name, functions, clock read), or drop the budget",
        if unmatched.len() == 1 { "pattern" } else { "patterns" },
        parts.join(", and ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmatched_patterns_are_one_sentence() {
        let text = describe_unmatched(&[
            Unmatched {
                pattern: "fixture_hott".into(),
                cpu_time: false,
            },
            Unmatched {
                pattern: "spin".into(),
                cpu_time: true,
            },
        ]);
        assert_eq!(
            text,
            "the budget patterns `fixture_hott` matches no frame of the counted clock reads, and `spin` matches no frame of the vdso samples; check the spelling against the folded output (process name, functions, clock read), or drop the budget"
        );
    }
}

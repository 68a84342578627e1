//! Budgets, from the command line (`--max`, `--max-rate`, `--baseline`,
//! `--max-increase`) and from a TOML budget file holding the same rules:
//!
//! ```toml
//! [max]                      # PATTERN = COUNT, or a CPU time for vdso samples
//! fixture_hot = 25000
//! "fixture_*" = 60000
//! "[syscall time]" = 5000
//! render_frame = "10ms"
//!
//! [max-rate]                 # PATTERN = clock reads per second of COMMAND's run
//! fixture_hot = 2000000
//!
//! [baseline]                 # file: relative to the budget file's directory
//! file = "clockprof-main.json"
//! max-increase = 50          # percent
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use serde::Deserialize;

use super::pattern::FramePattern;
use crate::check::recorded::read_input_file;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    /// Counted clock reads (events of the counting sources).
    Count(u64),
    /// CPU time in the vDSO's clock reads: vdso samples over the sampling frequency.
    CpuTime(Duration),
    /// Counted clock reads per second of COMMAND's run time.
    Rate(f64),
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Count(count) => write!(f, "{count}"),
            Limit::CpuTime(time) => f.write_str(&format_cpu_time(*time)),
            Limit::Rate(rate) => write!(f, "{}/s", format_number(*rate)),
        }
    }
}

/// `12.5ms`, `3s`, `250us`: the shortest unit that keeps the number >= 1.
pub fn format_cpu_time(time: Duration) -> String {
    let secs = time.as_secs_f64();
    let (value, unit) = if secs >= 1.0 {
        (secs, "s")
    } else if secs >= 1e-3 {
        (secs * 1e3, "ms")
    } else if secs >= 1e-6 {
        (secs * 1e6, "us")
    } else {
        (secs * 1e9, "ns")
    };
    format!("{}{unit}", format_number(value))
}

/// At most one decimal, none when the number is whole.
pub fn format_number(value: f64) -> String {
    let rounded = format!("{value:.1}");
    rounded
        .strip_suffix(".0")
        .map(String::from)
        .unwrap_or(rounded)
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub pattern: FramePattern,
    pub limit: Limit,
}

impl Rule {
    /// How the rule is written on the command line: `max 'fixture_hot=1000'`.
    pub fn name(&self) -> String {
        let flag = match self.limit {
            Limit::Count(_) | Limit::CpuTime(_) => "max",
            Limit::Rate(_) => "max-rate",
        };
        format!("{flag} {}={}", self.pattern.as_str(), self.limit)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Baseline {
    pub file: PathBuf,
    /// Percent: a frame whose reads grew by more than this fails.
    pub max_increase: f64,
}

#[derive(Clone, Debug, Default)]
pub struct Budget {
    pub rules: Vec<Rule>,
    pub baseline: Option<Baseline>,
}

/// The budget flags as given; `assemble` checks and merges them.
pub struct BudgetFlags<'a> {
    pub max: &'a [String],
    pub max_rate: &'a [String],
    pub baseline: Option<&'a Path>,
    pub max_increase: Option<f64>,
    pub file: Option<&'a Path>,
}

impl Budget {
    /// The budget file's rules, then the flags' rules; a `--baseline` or
    /// `--max-increase` flag overrides the file's.
    pub fn assemble(flags: &BudgetFlags) -> Result<Budget> {
        let file = match flags.file {
            Some(path) => load_file(path)?,
            None => BudgetFile::default().into_parts(Path::new("."))?,
        };
        let mut rules = file.rules;
        for spec in flags.max {
            rules.push(parse_flag(spec, "--max", parse_max_limit)?);
        }
        for spec in flags.max_rate {
            rules.push(parse_flag(spec, "--max-rate", parse_rate_limit)?);
        }
        let baseline_file = flags.baseline.map(Path::to_path_buf).or(file.baseline_file);
        let max_increase = flags.max_increase.or(file.max_increase);
        let baseline = match (baseline_file, max_increase) {
            (Some(file), Some(max_increase)) => {
                check_percent(max_increase)?;
                Some(Baseline { file, max_increase })
            }
            (None, None) => None,
            (Some(_), None) => bail!("a baseline needs --max-increase PCT, the growth it allows"),
            (None, Some(_)) => bail!("--max-increase needs --baseline FILE to compare with"),
        };
        if rules.is_empty() && baseline.is_none() {
            bail!("check needs a budget: --max 'PATTERN=COUNT', --max-rate, --baseline with --max-increase, or --budget FILE");
        }
        Ok(Budget { rules, baseline })
    }
}

fn check_percent(pct: f64) -> Result<()> {
    if !(pct >= 0.0 && pct.is_finite()) {
        bail!("the allowed increase must be a percentage of 0 or more, not {pct}");
    }
    Ok(())
}

/// `PATTERN=VALUE`; the value never holds `=`, the pattern may.
fn parse_flag(spec: &str, flag: &str, limit: fn(&str) -> Result<Limit>) -> Result<Rule> {
    let Some((pattern, value)) = spec.rsplit_once('=') else {
        bail!("{flag} `{spec}` has no `=`; write it as 'PATTERN=LIMIT'");
    };
    make_rule(pattern, value, limit).map_err(|err| anyhow::anyhow!("{flag} `{spec}`: {err}"))
}

fn make_rule(pattern: &str, value: &str, limit: fn(&str) -> Result<Limit>) -> Result<Rule> {
    Ok(Rule {
        pattern: FramePattern::new(pattern)?,
        limit: limit(value.trim())?,
    })
}

/// A count of clock reads (`25000`) or a CPU time (`10ms`, `1.5s`, `250us`).
pub fn parse_max_limit(value: &str) -> Result<Limit> {
    if let Ok(count) = value.parse::<u64>() {
        return Ok(Limit::Count(count));
    }
    if let Some(time) = parse_cpu_time(value) {
        return time.map(Limit::CpuTime);
    }
    bail!("`{value}` is neither a count of clock reads nor a CPU time such as 10ms")
}

/// Clock reads per second.
pub fn parse_rate_limit(value: &str) -> Result<Limit> {
    match value.parse::<f64>() {
        Ok(rate) if rate >= 0.0 && rate.is_finite() => Ok(Limit::Rate(rate)),
        _ if parse_cpu_time(value).is_some_and(|time| time.is_ok()) => {
            bail!("a rate is clock reads per second; a CPU time budget goes in --max 'PATTERN={value}'")
        }
        _ => bail!("`{value}` is not a number of clock reads per second"),
    }
}

/// None when `value` is not a number with a time unit; an error when it is
/// one but no `Duration` holds it (`Duration::from_secs_f64` would panic).
fn parse_cpu_time(value: &str) -> Option<Result<Duration>> {
    let split = value.find(|c: char| c.is_ascii_alphabetic() || c == 'µ')?;
    let (number, unit) = value.split_at(split);
    let scale = match unit {
        "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        _ => return None,
    };
    let number: f64 = number.trim().parse().ok()?;
    if !(number >= 0.0 && number.is_finite()) {
        return None;
    }
    Some(
        Duration::try_from_secs_f64(number * scale)
            .map_err(|_| anyhow::anyhow!("the CPU time `{value}` is too long to hold")),
    )
}

/// Tables keep the file's order (toml's preserve_order), so the report lists
/// budgets as the file does.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct BudgetFile {
    #[serde(default)]
    max: toml::Table,
    #[serde(default)]
    max_rate: toml::Table,
    baseline: Option<FileBaseline>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileBaseline {
    file: Option<PathBuf>,
    max_increase: Option<f64>,
}

/// A limit as TOML has it: `25000`, `1.5e6` or `"10ms"`, as the flags write it.
fn limit_text(value: &toml::Value) -> Result<String> {
    match value {
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(x) => Ok(x.to_string()),
        toml::Value::String(text) => Ok(text.clone()),
        _ => bail!("a limit is a number or a string such as \"10ms\""),
    }
}

pub(super) struct FileParts {
    rules: Vec<Rule>,
    baseline_file: Option<PathBuf>,
    max_increase: Option<f64>,
}

impl BudgetFile {
    fn into_parts(self, dir: &Path) -> Result<FileParts> {
        let mut rules = Vec::new();
        for (section, entries, limit) in [
            (
                "max",
                self.max,
                parse_max_limit as fn(&str) -> Result<Limit>,
            ),
            ("max-rate", self.max_rate, parse_rate_limit),
        ] {
            for (pattern, value) in entries {
                let rule = limit_text(&value)
                    .and_then(|text| make_rule(&pattern, &text, limit))
                    .map_err(|err| anyhow::anyhow!("[{section}] `{pattern}`: {err}"))?;
                rules.push(rule);
            }
        }
        let (baseline_file, max_increase) = match self.baseline {
            Some(baseline) => (baseline.file.map(|f| dir.join(f)), baseline.max_increase),
            None => (None, None),
        };
        Ok(FileParts {
            rules,
            baseline_file,
            max_increase,
        })
    }
}

fn load_file(path: &Path) -> Result<FileParts> {
    let text = read_input_file(path, "the budget file")?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse_file(&text, dir)
        .map_err(|err| anyhow::anyhow!("the budget file {}: {err:#}", path.display()))
}

pub(super) fn parse_file(text: &str, dir: &Path) -> Result<FileParts> {
    let file: BudgetFile = toml::from_str(text).map_err(|err| {
        // toml's own rendering quotes the source over several lines: keep
        // the message and the line it is about.
        let line = err
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let message = err.message().trim().replace('\n', " ");
        match line {
            Some(line) => anyhow::anyhow!("line {line}: {message}"),
            None => anyhow::anyhow!("{message}"),
        }
    })?;
    file.into_parts(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags<'a>(max: &'a [String], max_rate: &'a [String]) -> BudgetFlags<'a> {
        BudgetFlags {
            max,
            max_rate,
            baseline: None,
            max_increase: None,
            file: None,
        }
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_give_counts_times_and_rates() {
        let max = strings(&[
            "fixture_hot=1000",
            "a=b=7",
            "render=10ms",
            "x=1.5s",
            "y=250us",
        ]);
        let rate = strings(&["fixture_*=2500.5"]);
        let budget = Budget::assemble(&flags(&max, &rate)).unwrap();
        let got: Vec<(String, Limit)> = budget
            .rules
            .iter()
            .map(|r| (r.pattern.as_str().to_string(), r.limit))
            .collect();
        assert_eq!(
            got,
            vec![
                ("fixture_hot".into(), Limit::Count(1000)),
                ("a=b".into(), Limit::Count(7)),
                ("render".into(), Limit::CpuTime(Duration::from_millis(10))),
                ("x".into(), Limit::CpuTime(Duration::from_millis(1500))),
                ("y".into(), Limit::CpuTime(Duration::from_micros(250))),
                ("fixture_*".into(), Limit::Rate(2500.5)),
            ]
        );
        assert_eq!(budget.rules[0].name(), "max fixture_hot=1000");
        assert_eq!(budget.rules[2].name(), "max render=10ms");
        assert_eq!(budget.rules[5].name(), "max-rate fixture_*=2500.5/s");
    }

    #[test]
    fn bad_flags_are_one_sentence() {
        let err = |max: &[&str], rate: &[&str]| {
            Budget::assemble(&flags(&strings(max), &strings(rate)))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(&["fixture_hot"], &[]),
            "--max `fixture_hot` has no `=`; write it as 'PATTERN=LIMIT'"
        );
        assert_eq!(
            err(&["f=lots"], &[]),
            "--max `f=lots`: `lots` is neither a count of clock reads nor a CPU time such as 10ms"
        );
        assert!(err(&["f=-3"], &[]).contains("neither a count"));
        assert!(err(&["f=10min"], &[]).contains("neither a count"));
        assert!(err(&["=5"], &[]).contains("empty pattern"));
        assert!(err(&[], &["f=10ms"]).contains("--max 'PATTERN=10ms'"));
        assert!(err(&[], &["f=-1"]).contains("not a number of clock reads per second"));
        assert!(err(&[], &[]).starts_with("check needs a budget"));
        assert_eq!(
            err(&["main=100000000000000000000s"], &[]),
            "--max `main=100000000000000000000s`: the CPU time `100000000000000000000s` is too long to hold"
        );
        assert!(err(&["f=100000000000000000000000ms"], &[]).contains("too long"));
        for message in [err(&["f=lots"], &[]), err(&[], &["f=x"])] {
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn baseline_needs_both_flags() {
        let none: Vec<String> = Vec::new();
        let mut f = flags(&none, &none);
        f.baseline = Some(Path::new("base.json"));
        assert!(Budget::assemble(&f)
            .unwrap_err()
            .to_string()
            .contains("--max-increase"));
        f.max_increase = Some(50.0);
        assert_eq!(
            Budget::assemble(&f).unwrap().baseline,
            Some(Baseline {
                file: "base.json".into(),
                max_increase: 50.0
            })
        );
        f.max_increase = Some(-1.0);
        assert!(Budget::assemble(&f).is_err());
        f.baseline = None;
        f.max_increase = Some(5.0);
        assert!(Budget::assemble(&f)
            .unwrap_err()
            .to_string()
            .contains("--baseline"));
    }

    #[test]
    fn budget_file_holds_the_same_rules() {
        let text = r#"
            [max]
            fixture_hot = 25_000
            "fixture_*" = 60000
            "[syscall time]" = 5000
            render = "10ms"

            [max-rate]
            fixture_hot = 2000000
            fixture_warm = 1.5e6

            [baseline]
            file = "main.json"
            max-increase = 50
        "#;
        let parts = parse_file(text, Path::new("/ci/budgets")).unwrap();
        let got: Vec<String> = parts.rules.iter().map(Rule::name).collect();
        assert_eq!(
            got,
            vec![
                "max fixture_hot=25000",
                "max fixture_*=60000",
                "max [syscall time]=5000",
                "max render=10ms",
                "max-rate fixture_hot=2000000/s",
                "max-rate fixture_warm=1500000/s",
            ]
        );
        assert_eq!(
            parts.baseline_file,
            Some(PathBuf::from("/ci/budgets/main.json"))
        );
        assert_eq!(parts.max_increase, Some(50.0));
    }

    /// Input can nest as deep as it likes; the parsers must not recurse as
    /// deep (a stack overflow aborts, no error to report).
    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let depth = 200_000;
        let arrays = format!("[max]\nf = {}{}\n", "[".repeat(depth), "]".repeat(depth));
        assert!(parse_file(&arrays, Path::new(".")).is_err());
        let tables = format!("[max]\nf = {}{}\n", "{a=".repeat(depth), "}".repeat(depth));
        assert!(parse_file(&tables, Path::new(".")).is_err());
    }

    #[test]
    fn budget_file_errors_name_the_line() {
        let dir = Path::new(".");
        let err = |text: &str| parse_file(text, dir).err().unwrap().to_string();
        let typo = err("[max]\nfixture_hot = 5\n\n[maxx]\nf = 1\n");
        assert!(typo.starts_with("line 4: unknown field `maxx`"), "{typo}");
        assert!(!typo.contains('\n'), "{typo}");
        let bad_value = err("[max]\nfixture_hot = \"lots\"\n");
        assert_eq!(
            bad_value,
            "[max] `fixture_hot`: `lots` is neither a count of clock reads nor a CPU time such as 10ms"
        );
        assert!(err("[max\n").starts_with("line 1:"));
        assert_eq!(
            err("[max]\nf = [1]\n"),
            "[max] `f`: a limit is a number or a string such as \"10ms\""
        );
        assert!(err("[baseline]\nfile = \"x\"\nmax_increase = 5\n").contains("line 3"));
    }

    #[test]
    fn flags_add_to_the_file_and_override_its_baseline() {
        let scratch = tempfile::Builder::new()
            .prefix("clockprof-budget-")
            .tempdir()
            .unwrap();
        let dir = scratch.path();
        let path = dir.join("budget.toml");
        std::fs::write(
            &path,
            "[max]\nfixture_hot = 10\n[baseline]\nfile = \"b.folded\"\nmax-increase = 20\n",
        )
        .unwrap();
        let max = strings(&["fixture_warm=5"]);
        let none: Vec<String> = Vec::new();
        let mut f = flags(&max, &none);
        f.file = Some(&path);
        let budget = Budget::assemble(&f).unwrap();
        assert_eq!(budget.rules.len(), 2);
        assert_eq!(
            budget.baseline,
            Some(Baseline {
                file: dir.join("b.folded"),
                max_increase: 20.0
            })
        );
        f.max_increase = Some(75.0);
        assert_eq!(budget_increase(&f), 75.0);
        std::fs::remove_dir_all(dir).unwrap();
        let err = Budget::assemble(&f).unwrap_err().to_string();
        assert!(err.starts_with("cannot read the budget file"), "{err}");
    }

    fn budget_increase(f: &BudgetFlags) -> f64 {
        Budget::assemble(f).unwrap().baseline.unwrap().max_increase
    }

    #[test]
    fn limits_print_as_written() {
        assert_eq!(format_cpu_time(Duration::from_millis(10)), "10ms");
        assert_eq!(format_cpu_time(Duration::from_micros(12_500)), "12.5ms");
        assert_eq!(format_cpu_time(Duration::from_secs(3)), "3s");
        assert_eq!(format_cpu_time(Duration::from_micros(250)), "250us");
    }
}

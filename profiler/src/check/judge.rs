//! Measures each budget on a recording and says whether it holds.
//!
//! Counts and rates judge the counting sources' events only: they are exact,
//! so the same COMMAND gives the same numbers on a busy and an idle machine.
//! vdso samples depend on load; they are judged only as CPU time
//! (`PATTERN=10ms`: samples / sampling frequency).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::budget::{format_cpu_time, format_number, Baseline, Limit, Rule};
use super::pattern::FramePattern;
use crate::check::recorded::Recorded;

/// Frames listed under a failed baseline budget, worst first.
const BASELINE_FRAMES_SHOWN: usize = 10;

#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// The budget as written: `max fixture_hot=1000`, `baseline base.json +50%`.
    pub budget: String,
    pub measured: String,
    pub limit: String,
    pub passed: bool,
    /// Names the pattern, the limit and the value.
    pub message: String,
    /// More lines for a failure (the frames over a baseline's limit).
    pub details: Vec<String>,
}

/// What a recording holds besides its stacks that budgets need.
pub struct Measures<'a> {
    pub recorded: &'a Recorded,
    /// COMMAND's run time.
    pub duration: Duration,
    /// Of the vdso source, when it sampled.
    pub sample_frequency: Option<u64>,
}

impl Measures<'_> {
    /// Sum of the counts of the stacks (counted, or sampled) with a frame
    /// matching `pattern`; None when no frame of those stacks matches.
    fn reads_under(&self, pattern: &FramePattern, sampled: bool) -> Option<u64> {
        let mut matched = false;
        let mut total = 0;
        for stack in self.recorded.stacks.iter().filter(|s| s.sampled == sampled) {
            if stack.frames().any(|frame| pattern.matches(frame)) {
                matched = true;
                // Parsing refused input whose counts overflow; saturate anyway.
                total = u64::saturating_add(total, stack.count);
            }
        }
        matched.then_some(total)
    }
}

/// A pattern no frame of the stacks it judges matched: a typo, or a budget
/// on reads the recording does not count.
#[derive(Clone, Debug, PartialEq)]
pub struct Unmatched {
    pub pattern: String,
    pub cpu_time: bool,
}

pub fn judge_rules(rules: &[Rule], measures: &Measures) -> Result<Vec<Verdict>, Vec<Unmatched>> {
    let mut verdicts = Vec::new();
    let mut unmatched = Vec::new();
    for rule in rules {
        let cpu_time = matches!(rule.limit, Limit::CpuTime(_));
        let Some(reads) = measures.reads_under(&rule.pattern, cpu_time) else {
            unmatched.push(Unmatched {
                pattern: rule.pattern.as_str().to_string(),
                cpu_time,
            });
            continue;
        };
        verdicts.push(judge_rule(rule, reads, measures));
    }
    if unmatched.is_empty() {
        Ok(verdicts)
    } else {
        Err(unmatched)
    }
}

fn judge_rule(rule: &Rule, reads: u64, measures: &Measures) -> Verdict {
    let pattern = rule.pattern.as_str();
    let (measured, passed, what) = match rule.limit {
        Limit::Count(max) => (
            reads.to_string(),
            reads <= max,
            format!("{reads} clock reads"),
        ),
        Limit::Rate(max) => {
            let secs = measures.duration.as_secs_f64().max(1e-9);
            let rate = reads as f64 / secs;
            let measured = format!("{}/s", format_number(rate));
            let what = format!("{measured} ({reads} clock reads in {secs:.3} s)");
            (measured, rate <= max, what)
        }
        Limit::CpuTime(max) => {
            // check refuses a CPU-time budget unless vdso is sampling.
            let hz = measures.sample_frequency.unwrap_or(1).max(1);
            // u64::MAX samples at 1 Hz is past Duration's range, where
            // from_secs_f64 panics; such a time is over any budget anyway.
            let time =
                Duration::try_from_secs_f64(reads as f64 / hz as f64).unwrap_or(Duration::MAX);
            let measured = format_cpu_time(time);
            let what =
                format!("{measured} of CPU in vDSO clock reads ({reads} samples at {hz} Hz)");
            (measured, time <= max, what)
        }
    };
    let relation = if passed { "within" } else { "over" };
    Verdict {
        budget: rule.name(),
        measured,
        limit: rule.limit.to_string(),
        passed,
        message: format!(
            "stacks with a frame matching `{pattern}` made {what}, {relation} the limit of {}",
            rule.limit
        ),
        details: Vec::new(),
    }
}

/// Reads per frame: the counted reads of the stacks holding it (once per
/// stack, however often recursion repeats it), the process name and the
/// clock-read leaf included.
pub fn reads_per_frame(recorded: &Recorded) -> BTreeMap<&str, u64> {
    let mut reads = BTreeMap::new();
    for stack in recorded.stacks.iter().filter(|s| !s.sampled) {
        let frames: BTreeSet<&str> = stack.frames().collect();
        for frame in frames {
            let reads: &mut u64 = reads.entry(frame).or_default();
            *reads = reads.saturating_add(stack.count);
        }
    }
    reads
}

#[derive(Clone, Debug, PartialEq)]
struct Growth<'a> {
    frame: &'a str,
    base: u64,
    new: u64,
}

impl Growth<'_> {
    /// Percent; infinite for a frame new in NEW.
    fn percent(&self) -> f64 {
        if self.base == 0 {
            f64::INFINITY
        } else {
            (self.new as f64 - self.base as f64) * 100.0 / self.base as f64
        }
    }

    fn added(&self) -> u64 {
        self.new.saturating_sub(self.base)
    }

    fn describe(&self) -> String {
        if self.base == 0 {
            format!(
                "{}: new, {} reads (none in the baseline)",
                self.frame, self.new
            )
        } else {
            format!(
                "{}: {} -> {} reads ({:+.1}%)",
                self.frame,
                self.base,
                self.new,
                self.percent()
            )
        }
    }
}

/// Compares per-frame reads with a baseline recording. A frame fails when its
/// reads grew by more than the allowed percentage. A frame the baseline lacks
/// grew from nothing: it fails (a function that starts reading the clock is
/// what the gate is for; a new baseline accepts it). A frame missing from the
/// new recording shrank by 100% and passes. vdso samples are left out of both.
pub fn judge_baseline(baseline: &Baseline, base: &Recorded, new: &Recorded) -> Verdict {
    let base_reads = reads_per_frame(base);
    let new_reads = reads_per_frame(new);
    let mut growths: Vec<Growth> = new_reads
        .iter()
        .map(|(&frame, &new)| Growth {
            frame,
            base: base_reads.get(frame).copied().unwrap_or(0),
            new,
        })
        .collect();
    // Worst first: by percentage; among equals, the functions that read the
    // clock themselves before their callers (which grow with them), then by
    // the reads added.
    let readers: BTreeSet<&str> = new
        .stacks
        .iter()
        .filter(|s| !s.sampled)
        .map(|s| s.reader())
        .collect();
    growths.sort_by(|a, b| {
        b.percent()
            .total_cmp(&a.percent())
            .then(readers.contains(b.frame).cmp(&readers.contains(a.frame)))
            .then(b.added().cmp(&a.added()))
            .then(a.frame.cmp(b.frame))
    });
    let over: Vec<&Growth> = growths
        .iter()
        .filter(|g| g.percent() > baseline.max_increase)
        .collect();
    let limit = format!("+{}%", format_number(baseline.max_increase));
    let measured = match growths.first() {
        Some(worst) if worst.base == 0 => "new frame".to_string(),
        Some(worst) => format!("{:+.1}%", worst.percent()),
        None => "no reads".to_string(),
    };
    let file = baseline.file.display();
    let passed = over.is_empty();
    let message = if passed {
        let most = growths
            .first()
            .map_or("no reads".to_string(), Growth::describe);
        format!("no frame's clock reads grew by more than {limit} over the baseline {file}; the most: {most}")
    } else {
        format!(
            "{} frames' clock reads grew by more than {limit} over the baseline {file}, the most: {}",
            over.len(),
            over[0].describe()
        )
    };
    let mut details: Vec<String> = over
        .iter()
        .take(BASELINE_FRAMES_SHOWN)
        .map(|g| g.describe())
        .collect();
    if over.len() > BASELINE_FRAMES_SHOWN {
        details.push(format!(
            "... and {} more frames",
            over.len() - BASELINE_FRAMES_SHOWN
        ));
    }
    Verdict {
        budget: format!("baseline {file} max-increase {limit}"),
        measured,
        limit,
        passed,
        message,
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::super::budget::{parse_max_limit, parse_rate_limit};
    use super::*;
    use crate::check::recorded::RecordedStack;

    /// Stacks as folded text, for tests.
    fn recorded(lines: &[(&str, u64)]) -> Recorded {
        Recorded {
            stacks: lines
                .iter()
                .map(|(stack, count)| {
                    RecordedStack::new(stack.split(';'), *count, stack.ends_with("[vdso sample]"))
                })
                .collect(),
        }
    }

    fn rule(pattern: &str, limit: Limit) -> Rule {
        Rule {
            pattern: FramePattern::new(pattern).unwrap(),
            limit,
        }
    }

    fn fixture() -> Recorded {
        recorded(&[
            ("fx;main;hot;[syscall clock_gettime MONOTONIC]", 2000),
            ("fx;main;warm;[syscall clock_gettime REALTIME]", 1000),
            ("fx;main;hot;[vdso] __vdso_clock_gettime;[vdso sample]", 30),
            ("fx;main;spin;[vdso] __vdso_clock_gettime;[vdso sample]", 12),
        ])
    }

    fn measures(recorded: &Recorded) -> Measures<'_> {
        Measures {
            recorded,
            duration: Duration::from_secs(2),
            sample_frequency: Some(1000),
        }
    }

    #[test]
    fn counts_exclude_vdso_samples_and_cpu_time_counts_only_them() {
        let recorded = fixture();
        let m = measures(&recorded);
        let rules = [
            rule("hot", parse_max_limit("2000").unwrap()),
            rule("main", parse_max_limit("2999").unwrap()),
            rule("hot", parse_max_limit("29ms").unwrap()),
            rule("fx", parse_max_limit("42ms").unwrap()),
            rule("[syscall clock_gettime REALTIME]", Limit::Count(1000)),
        ];
        let verdicts = judge_rules(&rules, &m).unwrap();
        let got: Vec<(&str, bool)> = verdicts
            .iter()
            .map(|v| (v.measured.as_str(), v.passed))
            .collect();
        assert_eq!(
            got,
            vec![
                ("2000", true),
                ("3000", false),
                ("30ms", false),
                ("42ms", true),
                ("1000", true)
            ]
        );
        assert_eq!(
            verdicts[1].message,
            "stacks with a frame matching `main` made 3000 clock reads, over the limit of 2999"
        );
        assert_eq!(
            verdicts[2].message,
            "stacks with a frame matching `hot` made 30ms of CPU in vDSO clock reads (30 samples at 1000 Hz), over the limit of 29ms"
        );
    }

    #[test]
    fn rates_are_per_second_of_the_run() {
        let recorded = fixture();
        let m = measures(&recorded);
        let rules = [
            rule("hot", parse_rate_limit("1000").unwrap()),
            rule("h*", parse_rate_limit("999.5").unwrap()),
        ];
        let verdicts = judge_rules(&rules, &m).unwrap();
        assert_eq!(verdicts[0].measured, "1000/s");
        assert!(verdicts[0].passed);
        assert!(!verdicts[1].passed);
        assert_eq!(verdicts[1].budget, "max-rate h*=999.5/s");
        assert!(
            verdicts[1].message.contains("`h*`"),
            "{}",
            verdicts[1].message
        );
        assert!(
            verdicts[1].message.contains("999.5/s"),
            "{}",
            verdicts[1].message
        );
    }

    #[test]
    fn a_pattern_matching_nothing_judged_is_reported() {
        let recorded = fixture();
        let m = measures(&recorded);
        let rules = [
            rule("hott", Limit::Count(1)),
            rule("hot", Limit::Count(5000)),
            // spin reads the clock only through the vDSO: no counted read.
            rule("spin", Limit::Count(5)),
            rule("warm", parse_max_limit("1ms").unwrap()),
        ];
        assert_eq!(
            judge_rules(&rules, &m).unwrap_err(),
            vec![
                Unmatched {
                    pattern: "hott".into(),
                    cpu_time: false
                },
                Unmatched {
                    pattern: "spin".into(),
                    cpu_time: false
                },
                Unmatched {
                    pattern: "warm".into(),
                    cpu_time: true
                },
            ]
        );
    }

    fn baseline(pct: f64) -> Baseline {
        Baseline {
            file: "base.folded".into(),
            max_increase: pct,
        }
    }

    #[test]
    fn baseline_fails_on_growth_beyond_the_limit() {
        let base = recorded(&[
            ("fx;main;hot;[syscall time]", 100),
            ("fx;main;warm;[syscall time]", 100),
        ]);
        let new = recorded(&[
            ("fx;main;hot;[syscall time]", 150),
            ("fx;main;warm;[syscall time]", 300),
            ("fx;main;spin;[vdso sample]", 10_000),
        ]);
        let verdict = judge_baseline(&baseline(50.0), &base, &new);
        assert!(!verdict.passed);
        assert_eq!(verdict.measured, "+200.0%");
        assert_eq!(verdict.limit, "+50%");
        assert_eq!(
            verdict.details,
            vec![
                "warm: 100 -> 300 reads (+200.0%)",
                "[syscall time]: 200 -> 450 reads (+125.0%)",
                "fx: 200 -> 450 reads (+125.0%)",
                "main: 200 -> 450 reads (+125.0%)",
            ]
        );
        // hot grew by exactly 50%: not more than allowed.
        assert!(!verdict.details.iter().any(|d| d.starts_with("hot")));
        assert!(
            verdict.message.contains("base.folded"),
            "{}",
            verdict.message
        );
        assert!(verdict.message.contains("+50%"), "{}", verdict.message);
        assert!(judge_baseline(&baseline(200.0), &base, &new).passed);
    }

    #[test]
    fn baseline_new_frames_fail_and_vanished_ones_pass() {
        let base = recorded(&[("fx;main;old;[syscall time]", 100)]);
        let new = recorded(&[
            ("fx;main;old;[syscall time]", 10),
            ("fx;main;fresh;[syscall time]", 1),
        ]);
        let verdict = judge_baseline(&baseline(1000.0), &base, &new);
        assert!(!verdict.passed);
        assert_eq!(verdict.measured, "new frame");
        assert_eq!(
            verdict.details,
            vec!["fresh: new, 1 reads (none in the baseline)"]
        );
        let gone = recorded(&[("fx;main;[syscall time]", 100)]);
        let verdict = judge_baseline(&baseline(0.0), &base, &gone);
        assert!(verdict.passed, "{verdict:?}");
        assert_eq!(verdict.measured, "+0.0%");
        assert!(
            verdict
                .message
                .ends_with("the most: main: 100 -> 100 reads (+0.0%)"),
            "{}",
            verdict.message
        );
    }
}

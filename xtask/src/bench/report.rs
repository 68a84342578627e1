//! Turns the samples into the table the user reads and target/bench/results.json.
//!
//! Costs are compared within a round: a row's added cost in round r is its
//! ns/call minus the same workload's baseline in round r, and its ratio is that
//! divided by its reference's added cost in round r. The table gives the median
//! over rounds of each, so slow drift of the machine cancels out of the ratio.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::scenario::{RowId, Scenario, Tracer};
use super::{Counted, Lost, Sample, TracerSample};

pub struct Row {
    name: String,
    row: RowId,
    workload: &'static str,
    iterations: u64,
    /// CPU ns per call, one per round; NaN where the tracer did not attach.
    samples_ns: Vec<f64>,
    /// Wall ns per call, one per round.
    wall_samples_ns: Vec<f64>,
    median_ns: f64,
    /// Median over rounds of (this run - the same round's baseline).
    added_ns: Option<f64>,
    compare_with: Option<String>,
    /// Median, min and max over rounds of added / the reference's added.
    ratio: Option<(f64, f64, f64)>,
    /// The same, against each of `also_compare_with` that gave one.
    also_ratios: Vec<(String, (f64, f64, f64))>,
    bound: Option<f64>,
    tracer: Option<TracerSummary>,
    /// Why this build cannot run the row.
    unavailable: Option<String>,
    /// Whether the reference's counts were exact in every round.
    reference_exact: bool,
    /// Why there is no ratio although both sides traced.
    ratio_note: Option<String>,
}

/// A reference adding less than this share of the baseline's ns/call gives no
/// ratio.
const NOISE_FLOOR: f64 = 0.02;

struct TracerSummary {
    cpu_ms_total: f64,
    cpu_ms_during_workload: f64,
    peak_rss_mib: f64,
    counts: CountsSummary,
    /// Median, min and max share lost over runs, and of what.
    lost: Option<(f64, f64, f64, &'static str)>,
    /// Median MB written (perf.data).
    output_mb: Option<f64>,
    all_exited_cleanly: bool,
    /// Runs that traced nothing (did not attach, or counted 0), left out of
    /// every figure: why, per run.
    left_out: Vec<String>,
    runs: usize,
}

enum CountsSummary {
    /// Exact in every run.
    Exact,
    /// Sampled: the median number of samples of the workload.
    Samples(u64),
    /// Not exact in some run: the first such run's account.
    Off {
        runs: usize,
        of: usize,
        first: String,
    },
}

impl TracerSummary {
    /// Why this tracer's numbers measure no tracing at all: no run where it
    /// attached and counted something.
    fn traced_nothing(&self) -> Option<String> {
        (self.left_out.len() == self.runs)
            .then(|| self.left_out.first().cloned())
            .flatten()
    }
}

/// Why a run measured no tracing: its tracer did not attach, or counted nothing.
fn run_traced_nothing(t: &TracerSample) -> Option<String> {
    if let Some(err) = &t.attach_error {
        return Some(format!("did not attach ({})", last_line(err)));
    }
    match &t.counted {
        Counted::Samples(0) => Some("took no sample of the workload".to_string()),
        Counted::Off(why) if why.starts_with("0 of ") => Some(format!("counted {why}")),
        _ => None,
    }
}

/// A tracer's error ends with its own words (e.g. bpftrace's "ERROR: ...").
fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

impl Row {
    fn traced_nothing(&self) -> Option<String> {
        self.tracer.as_ref().and_then(TracerSummary::traced_nothing)
    }

    fn exact(&self) -> bool {
        self.tracer
            .as_ref()
            .is_some_and(|t| matches!(t.counts, CountsSummary::Exact))
    }

    /// None for a row whose tracer traced nothing: its cost is not a tracer's.
    fn added(&self) -> Option<f64> {
        self.traced_nothing().is_none().then_some(self.added_ns?)
    }

    /// PASS only with a ratio within the bound and exact counts on both sides.
    fn verdict(&self) -> Option<String> {
        let bound = self.bound?;
        if let Some(why) = &self.unavailable {
            return Some(format!("NOT AVAILABLE ({why})"));
        }
        let Some((ratio, _, _)) = self.ratio else {
            return Some("FAIL (no ratio)".to_string());
        };
        let mut problems = Vec::new();
        if ratio > bound {
            problems.push(format!("{ratio:.2} > {bound}"));
        }
        if !self.exact() {
            problems.push("counts not exact".to_string());
        }
        if !self.reference_exact {
            problems.push("reference's counts not exact".to_string());
        }
        Some(if problems.is_empty() {
            "PASS".to_string()
        } else {
            format!("FAIL ({})", problems.join(", "))
        })
    }
}

pub fn summarize(
    scenarios: &[Scenario],
    samples: &[Vec<Sample>],
    unavailable: &[Option<String>],
    iterations: u64,
) -> Vec<Row> {
    let baseline_of = |scenario: &Scenario| {
        scenarios
            .iter()
            .position(|s| s.tracer.is_none() && s.workload == scenario.workload)
    };
    // A run whose tracer traced nothing measured no tracer: left out.
    let ns = |i: usize| -> Vec<f64> {
        samples[i]
            .iter()
            .map(|s| match &s.tracer {
                Some(t) if run_traced_nothing(t).is_some() => f64::NAN,
                _ => s.ns_per_call,
            })
            .collect()
    };
    // Per round: this run minus the same round's baseline.
    let added_per_round = |i: usize| -> Vec<f64> {
        let base = baseline_of(&scenarios[i]).map(ns).unwrap_or_default();
        ns(i)
            .iter()
            .zip(base)
            .map(|(run, base)| run - base)
            .collect()
    };
    let mut rows: Vec<Row> = scenarios
        .iter()
        .enumerate()
        .map(|(i, scenario)| Row {
            name: scenario.name.clone(),
            row: scenario.row,
            workload: scenario.workload.describe,
            iterations: scenario.workload.iterations(iterations),
            samples_ns: ns(i),
            wall_samples_ns: samples[i].iter().map(|s| s.wall_ns_per_call).collect(),
            median_ns: median(ns(i).into_iter()),
            added_ns: (scenario.tracer.is_some() && baseline_of(scenario).is_some())
                .then(|| median(added_per_round(i).into_iter()))
                .filter(|a| !a.is_nan()),
            compare_with: scenario.compare_with.clone(),
            ratio: None,
            also_ratios: Vec::new(),
            bound: scenario.bound,
            tracer: scenario
                .tracer
                .as_ref()
                .filter(|_| unavailable[i].is_none())
                .map(|_| summarize_tracer(&samples[i])),
            unavailable: unavailable[i].clone(),
            reference_exact: true,
            ratio_note: None,
        })
        .collect();
    for i in 0..rows.len() {
        let Some(reference) = rows[i]
            .compare_with
            .as_ref()
            .and_then(|name| rows.iter().position(|r| &r.name == name))
        else {
            continue;
        };
        rows[i].reference_exact = rows[reference].exact();
        let (Some(_), Some(reference_added)) = (rows[i].added(), rows[reference].added()) else {
            continue;
        };
        let base = baseline_of(&scenarios[reference]).map_or(f64::NAN, |b| rows[b].median_ns);
        // A ratio to a cost the noise swamps is noise itself (vdso sampling adds
        // well under a nanosecond to a 28 ns read).
        if reference_added < NOISE_FLOOR * base {
            rows[i].ratio_note = Some(format!(
                "none for {}: {} adds {reference_added:.1} ns, under {:.0}% of the baseline's \
                 {base:.1} ns: within noise",
                rows[i].name,
                rows[reference].name,
                NOISE_FLOOR * 100.0
            ));
            continue;
        }
        let ratios: Vec<f64> = added_per_round(i)
            .into_iter()
            .zip(added_per_round(reference))
            .map(|(a, r)| a / r)
            .filter(|r| r.is_finite())
            .collect();
        if !ratios.is_empty() {
            let (lo, hi) = min_max(&ratios);
            rows[i].ratio = Some((median(ratios.into_iter()), lo, hi));
        }
    }
    for (i, scenario) in scenarios.iter().enumerate() {
        if rows[i].added().is_none() {
            continue;
        }
        for name in &scenario.also_compare_with {
            let Some(reference) = rows.iter().position(|r| &r.name == name) else {
                continue;
            };
            if rows[reference].added().is_none() {
                continue;
            }
            let ratios: Vec<f64> = added_per_round(i)
                .into_iter()
                .zip(added_per_round(reference))
                .filter(|(_, r)| *r > 0.0)
                .map(|(a, r)| a / r)
                .filter(|r| r.is_finite())
                .collect();
            if !ratios.is_empty() {
                let (lo, hi) = min_max(&ratios);
                let ratio = (median(ratios.into_iter()), lo, hi);
                rows[i].also_ratios.push((name.clone(), ratio));
            }
        }
    }
    rows
}

/// Median, min and max share lost over the runs that say.
fn summarize_lost(runs: &[&TracerSample]) -> Option<(f64, f64, f64, &'static str)> {
    let lost: Vec<Lost> = runs.iter().filter_map(|t| t.lost).collect();
    let what = lost.first()?.what;
    let shares: Vec<f64> = lost.iter().map(Lost::share).collect();
    let (lo, hi) = min_max(&shares);
    Some((median(shares.into_iter()), lo, hi, what))
}

fn summarize_tracer(samples: &[Sample]) -> TracerSummary {
    let all: Vec<&TracerSample> = samples.iter().filter_map(|s| s.tracer.as_ref()).collect();
    let left_out: Vec<String> = all.iter().filter_map(|t| run_traced_nothing(t)).collect();
    let runs: Vec<&TracerSample> = all
        .iter()
        .copied()
        .filter(|t| run_traced_nothing(t).is_none())
        .collect();
    let off: Vec<&String> = runs
        .iter()
        .filter_map(|t| match &t.counted {
            Counted::Off(why) => Some(why),
            _ => None,
        })
        .collect();
    let counts = if let Some(first) = off.first() {
        CountsSummary::Off {
            runs: off.len(),
            of: runs.len(),
            first: (*first).clone(),
        }
    } else if runs
        .iter()
        .any(|t| matches!(t.counted, Counted::Samples(_)))
    {
        CountsSummary::Samples(
            median(runs.iter().map(|t| match t.counted {
                Counted::Samples(n) => n as f64,
                _ => f64::NAN,
            }))
            .max(0.0) as u64,
        )
    } else {
        CountsSummary::Exact
    };
    TracerSummary {
        cpu_ms_total: median(runs.iter().map(|t| t.cpu_ms_total)),
        cpu_ms_during_workload: median(runs.iter().map(|t| t.cpu_ms_during_workload)),
        // Peak means peak: the largest over the runs.
        peak_rss_mib: runs.iter().map(|t| t.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0,
        counts,
        lost: summarize_lost(&runs),
        output_mb: Some(median(
            runs.iter()
                .filter_map(|t| t.output_bytes)
                .map(|b| b as f64 / 1e6),
        ))
        .filter(|mb| !mb.is_nan()),
        all_exited_cleanly: all.iter().all(|t| t.exited_cleanly),
        left_out,
        runs: all.len(),
    }
}

/// Median of the values that are numbers (NaN marks a run that did not happen).
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.filter(|v| !v.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .filter(|v| !v.is_nan())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

fn opt(value: Option<f64>, precision: usize) -> String {
    value
        .filter(|v| !v.is_nan())
        .map_or_else(|| "-".to_string(), |v| format!("{v:.precision$}"))
}

/// e.g. `88% events (79..90%)`: the median share lost, its range over runs.
fn lost_cell(row: &Row) -> String {
    let Some((share, lo, hi, what)) = row
        .tracer
        .as_ref()
        .filter(|t| t.traced_nothing().is_none())
        .and_then(|t| t.lost)
    else {
        return "-".into();
    };
    let pct = |v: f64| v * 100.0;
    if lo == hi {
        format!("{:.0}% {what}", pct(share))
    } else {
        format!(
            "{:.0}% {what} ({:.0}..{:.0}%)",
            pct(share),
            pct(lo),
            pct(hi)
        )
    }
}

fn counts_cell(row: &Row) -> String {
    if row.unavailable.is_some() {
        return "-".into();
    }
    let Some(t) = &row.tracer else {
        return "-".into();
    };
    let text = match t.traced_nothing() {
        Some(why) if why.starts_with("did not attach") => "NOT ATTACHED".to_string(),
        Some(_) => "NOTHING".to_string(),
        None => {
            let counts = match &t.counts {
                CountsSummary::Exact => "exact".to_string(),
                CountsSummary::Samples(n) => format!("{n} samples"),
                CountsSummary::Off { runs, of, .. } => format!("OFF in {runs}/{of} runs"),
            };
            if t.left_out.is_empty() {
                counts
            } else {
                format!("{counts}, {}/{} runs left out", t.left_out.len(), t.runs)
            }
        }
    };
    if t.all_exited_cleanly {
        text
    } else {
        format!("{text} (bad exit)")
    }
}

pub fn table(rows: &[Row]) -> String {
    let header = [
        "scenario",
        "CPU ns/call",
        "added ns",
        "added/ref",
        "min..max",
        "bound",
        "verdict",
        "CPU ms",
        "CPU ms loop",
        "VmHWM MiB",
        "counts",
        "lost",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            if r.unavailable.is_some() {
                let mut cells = vec![r.name.clone()];
                cells.extend(["-"; 5].map(String::from));
                cells.push("NOT AVAILABLE".to_string());
                cells.extend(["-"; 5].map(String::from));
                return cells;
            }
            let t = r.tracer.as_ref();
            vec![
                r.name.clone(),
                opt(Some(r.median_ns), 1),
                opt(r.added(), 1),
                opt(r.ratio.map(|(m, _, _)| m), 2),
                r.ratio
                    .map_or("-".into(), |(_, lo, hi)| format!("{lo:.2}..{hi:.2}")),
                r.bound.map_or("-".into(), |b| format!("<= {b}")),
                r.verdict().unwrap_or_else(|| "-".into()),
                opt(t.map(|t| t.cpu_ms_total), 0),
                opt(t.map(|t| t.cpu_ms_during_workload), 0),
                opt(t.map(|t| t.peak_rss_mib), 1),
                counts_cell(r),
                lost_cell(r),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let mut line = |cols: &[&str]| {
        for (i, col) in cols.iter().enumerate() {
            // Names and verdicts left-aligned, numbers right-aligned.
            if i == 0 {
                let _ = write!(out, "{col:<w$}", w = widths[i]);
            } else if i == 6 || i >= 10 {
                let _ = write!(out, "  {col:<w$}", w = widths[i]);
            } else {
                let _ = write!(out, "  {col:>w$}", w = widths[i]);
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    };
    line(&header);
    for row in &cells {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    for r in rows {
        if let Some(why) = &r.unavailable {
            let _ = writeln!(out, "{}: not available in this build ({why})", r.name);
        }
        if let Some(why) = r.traced_nothing() {
            let _ = writeln!(
                out,
                "{}: traced nothing: {why}; no cost or ratio is given for it",
                r.name
            );
        }
        if let Some(t) = r.tracer.as_ref().filter(|t| t.traced_nothing().is_none()) {
            if let Some(first) = t.left_out.first() {
                let _ = writeln!(
                    out,
                    "{}: {} of {} runs traced nothing and are left out of every figure: {first}",
                    r.name,
                    t.left_out.len(),
                    t.runs
                );
            }
        }
        if let Some(CountsSummary::Off { first, .. }) = r.tracer.as_ref().map(|t| &t.counts) {
            let _ = writeln!(out, "{}: counts not exact: {first}", r.name);
        }
    }
    for r in rows {
        let Some(reference) = &r.compare_with else {
            continue;
        };
        if r.unavailable.is_some() {
            continue;
        }
        if let Some(note) = &r.ratio_note {
            let _ = writeln!(out, "added/ref: {note}");
        } else if r.ratio.is_some() {
            let _ = writeln!(
                out,
                "added/ref: {}: its added ns / {reference}'s, per round",
                r.name
            );
        } else if let Some(why) = rows
            .iter()
            .find(|x| &x.name == reference)
            .and_then(Row::traced_nothing)
        {
            let _ = writeln!(
                out,
                "added/ref: none for {}: {reference} traced nothing ({why})",
                r.name
            );
        }
    }
    for r in rows {
        for (name, (ratio, lo, hi)) in &r.also_ratios {
            let _ = writeln!(
                out,
                "added/ref: {}: {ratio:.2}x ({lo:.2}..{hi:.2}) of {name}'s added ns, per round",
                r.name
            );
        }
        if let Some(mb) = r.tracer.as_ref().and_then(|t| t.output_mb) {
            let _ = writeln!(out, "output: {}: wrote {mb:.0} MB (median)", r.name);
        }
    }
    for r in rows {
        let reference = r
            .compare_with
            .as_ref()
            .and_then(|name| rows.iter().find(|x| &x.name == name));
        let (Some(ours), Some(theirs)) = (
            r.tracer.as_ref().filter(|t| t.traced_nothing().is_none()),
            reference.and_then(|x| x.tracer.as_ref().filter(|t| t.traced_nothing().is_none())),
        ) else {
            continue;
        };
        let _ = writeln!(
            out,
            "daemon: {}: CPU {:.0} ms vs {:.0} ms ({:.2}x), peak {:.1} MiB vs {:.1} MiB ({:.2}x) \
             for {}",
            r.name,
            ours.cpu_ms_total,
            theirs.cpu_ms_total,
            ours.cpu_ms_total / theirs.cpu_ms_total,
            ours.peak_rss_mib,
            theirs.peak_rss_mib,
            ours.peak_rss_mib / theirs.peak_rss_mib,
            reference.map_or("", |x| x.name.as_str()),
        );
    }
    out.push_str(
        "CPU ns/call: the workload's user+system time per call (getrusage), which leaves out \
         other processes' turns on the CPU and holds the tracer's in-kernel work; wall times \
         are in the JSON. added ns and added/ref: medians over rounds of the same-round \
         differences to the baseline. CPU ms: tracer's utime+stime from start (attach included) to SIGINT; \
         CPU ms loop: during the workload only; VmHWM: peak resident, largest over rounds. \
         counts: what the tracer reported against the calls made, checked in every run \
         (per process, and per function where the tracer names functions). lost: median \
         (min..max) share of the loop's events a tracer dropped, or of the stacks its \
         events that take one (1 in --stack-every) should have given; clockprof's are \
         host-wide lost.user_stacks + lost.dwarf_stacks, its counts exact regardless.\n",
    );
    out
}

/// What the short names in the table stand for.
pub fn legend(scenarios: &[Scenario], iterations: u64) -> String {
    let mut out = String::new();
    for (i, s) in scenarios.iter().enumerate() {
        if s.tracer.is_none() && scenarios[..i].iter().all(|e| e.workload != s.workload) {
            let _ = writeln!(
                out,
                "{}: {}, {} per run, in {}()",
                s.workload.short,
                s.workload.describe,
                s.workload.iterations(iterations),
                s.workload.function
            );
        }
    }
    let mut bins: Vec<(&str, &std::path::Path)> = Vec::new();
    for s in scenarios {
        match &s.tracer {
            Some(Tracer::Bpftrace { program }) => {
                let _ = writeln!(out, "{}: bpftrace -e '{program}'", s.name);
            }
            Some(Tracer::PerfDwarf { event }) => {
                let _ = writeln!(
                    out,
                    "{}: perf record -a -e {event} --call-graph dwarf (8 KiB of stack per \
                     sample), counted with perf script -F pid",
                    s.name
                );
            }
            Some(Tracer::Clockprof { bin, .. })
                if !bins.iter().any(|(label, _)| *label == bin.label) =>
            {
                bins.push((&bin.label, &bin.path));
            }
            _ => {}
        }
    }
    for (label, path) in bins {
        let _ = writeln!(out, "{label}: {}", path.display());
    }
    out
}

pub fn json(rows: &[Row], iterations: u64, runs: u32) -> Value {
    let scenarios: Vec<Value> = rows
        .iter()
        .map(|r| {
            let tracer = r.tracer.as_ref().map(|t| {
                let counts = match &t.counts {
                    CountsSummary::Exact => json!({ "exact": true }),
                    CountsSummary::Samples(n) => json!({ "samples_median": n }),
                    CountsSummary::Off { runs, of, first } => {
                        json!({ "exact": false, "runs_off": runs, "runs": of, "first": first })
                    }
                };
                json!({
                    "cpu_ms_total_median": t.cpu_ms_total,
                    "cpu_ms_during_workload_median": t.cpu_ms_during_workload,
                    "vm_hwm_mib_max": t.peak_rss_mib,
                    "counts": counts,
                    "lost": t.lost.map(|(median, min, max, what)| json!({
                        "of": what, "share_median": median, "share_min": min, "share_max": max,
                    })),
                    "output_mb_median": t.output_mb,
                    "all_exited_cleanly": t.all_exited_cleanly,
                    "traced_nothing": t.traced_nothing(),
                    "runs_left_out": t.left_out,
                })
            });
            let num = |v: f64| Some(v).filter(|v| !v.is_nan());
            json!({
                "name": r.name,
                "row": format!("{:?}", r.row).to_lowercase(),
                "workload": r.workload,
                "iterations": r.iterations,
                "unavailable": r.unavailable,
                "cpu_ns_per_call_per_round": r.samples_ns.iter().map(|v| num(*v)).collect::<Vec<_>>(),
                "cpu_ns_per_call_median": num(r.median_ns),
                "added_cpu_ns_per_call_median": r.added(),
                "wall_ns_per_call_per_round": r.wall_samples_ns.iter().map(|v| num(*v)).collect::<Vec<_>>(),
                "wall_ns_per_call_median": num(median(r.wall_samples_ns.iter().copied())),
                "compared_with": r.compare_with,
                "added_ratio_median": r.ratio.map(|(m, _, _)| m),
                "added_ratio_min": r.ratio.map(|(_, lo, _)| lo),
                "added_ratio_max": r.ratio.map(|(_, _, hi)| hi),
                "also_compared_with": r.also_ratios.iter().map(|(name, (m, lo, hi))| json!({
                    "name": name, "added_ratio_median": m, "added_ratio_min": lo,
                    "added_ratio_max": hi,
                })).collect::<Vec<_>>(),
                "bound": r.bound,
                "verdict": r.verdict(),
                "tracer": tracer,
            })
        })
        .collect();
    json!({
        "iterations": iterations,
        "runs": runs,
        "statistic": "median over rounds of same-round differences and ratios",
        "machine": machine_facts(),
        "scenarios": scenarios,
    })
}

/// What makes numbers from two machines incomparable, recorded next to them.
fn machine_facts() -> Value {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let cpu_model = read("/proc/cpuinfo").and_then(|info| {
        info.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    json!({
        "kernel": read("/proc/sys/kernel/osrelease"),
        "cpu_model": cpu_model,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "clocksource": read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::scenario::{Clockprof, Expect, SYSCALL_LOOP};

    fn sample(ns: f64, counted: Counted, attach_error: Option<&str>) -> Sample {
        Sample {
            ns_per_call: ns,
            wall_ns_per_call: ns,
            tracer: Some(TracerSample {
                attach_error: attach_error.map(str::to_string),
                cpu_ms_total: 10.0,
                cpu_ms_during_workload: 5.0,
                peak_rss_kib: 1024,
                counted,
                lost: None,
                output_bytes: None,
                exited_cleanly: attach_error.is_none(),
            }),
        }
    }

    fn exact(ns: f64) -> Sample {
        sample(ns, Counted::Exact, None)
    }

    fn untraced(ns: f64) -> Sample {
        Sample {
            ns_per_call: ns,
            wall_ns_per_call: ns,
            tracer: None,
        }
    }

    fn scenario(name: &str, tracer: Option<Tracer>, reference: Option<&str>) -> Scenario {
        Scenario {
            name: name.into(),
            row: RowId::Syscall,
            workload: &SYSCALL_LOOP,
            tracer,
            expect: Expect::EveryCall,
            compare_with: reference.map(String::from),
            also_compare_with: Vec::new(),
            bound: reference.map(|_| 0.9),
        }
    }

    /// baseline, clockprof (compared with bpftrace), bpftrace.
    fn three_rows(clockprof: Vec<Sample>, bpftrace: Vec<Sample>) -> Vec<Row> {
        let bin = Clockprof::new("clockprof", "/nonexistent/clockprof".into());
        let scenarios = [
            scenario("baseline", None, None),
            scenario(
                "clockprof",
                Some(Tracer::Clockprof {
                    bin,
                    args: &[],
                    needs_flag: None,
                    every_stack: true,
                }),
                Some("bpftrace"),
            ),
            scenario("bpftrace", Some(Tracer::Bpftrace { program: "" }), None),
        ];
        let rounds = clockprof.len();
        let baseline = [100.0, 200.0, 100.0][..rounds]
            .iter()
            .map(|&ns| untraced(ns))
            .collect();
        let samples = vec![baseline, clockprof, bpftrace];
        summarize(&scenarios, &samples, &[None, None, None], 1000)
    }

    #[test]
    fn ratios_are_taken_within_a_round() {
        // Round 2 runs twice as slow across the board: per-round ratios stay
        // 0.5, where ratios of medians over rounds would not.
        let rows = three_rows(
            vec![exact(150.0), exact(300.0)],
            vec![exact(200.0), exact(400.0)],
        );
        assert_eq!(rows[1].ratio, Some((0.5, 0.5, 0.5)));
        assert_eq!(rows[1].added(), Some(75.0));
        assert_eq!(rows[1].verdict().as_deref(), Some("PASS"));
        let text = table(&rows);
        assert!(
            text.contains("added/ref: clockprof: its added ns / bpftrace's"),
            "{text}"
        );
        assert!(
            text.contains(
                "daemon: clockprof: CPU 10 ms vs 10 ms (1.00x), peak 1.0 MiB vs 1.0 MiB (1.00x) \
                 for bpftrace"
            ),
            "{text}"
        );
    }

    #[test]
    fn no_ratio_to_a_cost_within_noise() {
        let rows = three_rows(
            vec![exact(101.0), exact(201.0)],
            vec![exact(101.0), exact(202.0)],
        );
        assert_eq!(rows[1].ratio, None);
        let text = table(&rows);
        assert!(
            text.contains("added/ref: none for clockprof: bpftrace adds 1.5 ns, under 2% of"),
            "{text}"
        );
        // Faster than no tracer at all: noise too.
        let rows = three_rows(
            vec![exact(101.0), exact(201.0)],
            vec![exact(90.0), exact(190.0)],
        );
        assert_eq!(rows[1].ratio, None);
    }

    #[test]
    fn a_ratio_within_bound_with_counts_off_fails() {
        let rows = three_rows(
            vec![
                exact(150.0),
                sample(300.0, Counted::Off("5 of 1000".into()), None),
            ],
            vec![exact(200.0), exact(400.0)],
        );
        assert_eq!(
            rows[1].verdict().as_deref(),
            Some("FAIL (counts not exact)")
        );
        let text = table(&rows);
        assert!(text.contains("OFF in 1/2 runs"), "{text}");
        assert!(
            text.contains("clockprof: counts not exact: 5 of 1000"),
            "{text}"
        );
    }

    #[test]
    fn no_ratio_against_a_baseline_that_counted_nothing() {
        let rows = three_rows(
            vec![exact(150.0), exact(300.0)],
            vec![
                sample(101.0, Counted::Off("0 of 1000 calls".into()), None),
                sample(201.0, Counted::Off("0 of 1000 calls".into()), None),
            ],
        );
        assert_eq!(rows[2].added(), None);
        assert_eq!(rows[1].ratio, None);
        assert_eq!(rows[1].verdict().as_deref(), Some("FAIL (no ratio)"));
        let text = table(&rows);
        assert!(
            text.contains("bpftrace: traced nothing: counted 0 of 1000 calls"),
            "{text}"
        );
        assert!(
            text.contains("added/ref: none for clockprof: bpftrace traced nothing"),
            "{text}"
        );
        assert!(text.contains("NOTHING"), "{text}");
    }

    #[test]
    fn a_round_whose_reference_traced_nothing_is_left_out() {
        let rows = three_rows(
            vec![exact(150.0), exact(300.0), exact(150.0)],
            vec![
                exact(200.0),
                sample(120.0, Counted::Off("0 of 1000 calls".into()), None),
                exact(200.0),
            ],
        );
        assert_eq!(rows[1].ratio, Some((0.5, 0.5, 0.5)));
        assert_eq!(rows[1].verdict().as_deref(), Some("PASS"));
        let text = table(&rows);
        assert!(text.contains("exact, 1/3 runs left out"), "{text}");
        assert!(
            text.contains(
                "bpftrace: 1 of 3 runs traced nothing and are left out of every figure: \
                 counted 0 of 1000 calls"
            ),
            "{text}"
        );
    }

    #[test]
    fn no_ratio_against_a_baseline_that_never_attached() {
        let err = "bpftrace exited (exit status: 1) before attaching; its output:\n\
                   ERROR: tracepoint not found: syscalls:sys_enter_clock_gettime";
        let rows = three_rows(
            vec![exact(150.0), exact(300.0)],
            vec![
                sample(f64::NAN, Counted::Off("not run".into()), Some(err)),
                sample(f64::NAN, Counted::Off("not run".into()), Some(err)),
            ],
        );
        assert_eq!(rows[1].ratio, None);
        assert!(rows[2].median_ns.is_nan());
        let text = table(&rows);
        assert!(
            text.contains(
                "bpftrace: traced nothing: did not attach (ERROR: tracepoint not found: \
                 syscalls:sys_enter_clock_gettime)"
            ),
            "{text}"
        );
        assert!(text.contains("NOT ATTACHED"), "{text}");
        let json = json(&rows, 1000, 2);
        assert_eq!(json["scenarios"][2]["cpu_ns_per_call_median"], Value::Null);
        assert_eq!(json["scenarios"][1]["added_ratio_median"], Value::Null);
    }

    #[test]
    fn a_row_this_build_cannot_run_is_never_a_pass() {
        let bin = Clockprof::new("clockprof", "/nonexistent/clockprof".into());
        let scenarios = [
            scenario("baseline", None, None),
            scenario(
                "every64",
                Some(Tracer::Clockprof {
                    bin,
                    args: &[],
                    needs_flag: Some("--stack-every"),
                    every_stack: false,
                }),
                Some("bpftrace"),
            ),
            scenario("bpftrace", Some(Tracer::Bpftrace { program: "" }), None),
        ];
        let samples = vec![vec![untraced(100.0)], vec![], vec![exact(200.0)]];
        let why = Some("record --help lists no --stack-every".to_string());
        let rows = summarize(&scenarios, &samples, &[None, why, None], 1000);
        let verdict = rows[1].verdict().unwrap();
        assert!(verdict.starts_with("NOT AVAILABLE"), "{verdict}");
        let text = table(&rows);
        assert!(
            text.contains(
                "every64: not available in this build (record --help lists no --stack-every)"
            ),
            "{text}"
        );
        assert!(!text.contains("PASS"), "{text}");
    }

    #[test]
    fn lost_shares_and_second_references_are_reported() {
        let lossy = |ns: f64, lost: u64| {
            let mut s = sample(ns, Counted::Samples(1000 - lost), None);
            let t = s.tracer.as_mut().unwrap();
            t.lost = Some(Lost {
                lost,
                of: 1000,
                what: "events",
            });
            t.output_bytes = Some(2_000_000);
            s
        };
        let mut perf = scenario("perf", Some(Tracer::PerfDwarf { event: "e" }), Some("dw1"));
        perf.bound = None;
        perf.also_compare_with = vec!["dw64".into()];
        let scenarios = [
            scenario("baseline", None, None),
            perf,
            scenario("dw1", Some(Tracer::Bpftrace { program: "" }), None),
            scenario("dw64", Some(Tracer::Bpftrace { program: "" }), None),
        ];
        let samples = vec![
            vec![untraced(100.0), untraced(100.0)],
            vec![lossy(500.0, 600), lossy(700.0, 800)],
            vec![exact(300.0), exact(300.0)],
            vec![exact(200.0), exact(200.0)],
        ];
        let rows = summarize(&scenarios, &samples, &[None, None, None, None], 1000);
        assert_eq!(rows[1].ratio, Some((2.5, 2.0, 3.0)));
        assert_eq!(rows[1].also_ratios, [("dw64".to_string(), (5.0, 4.0, 6.0))]);
        assert_eq!(lost_cell(&rows[1]), "70% events (60..80%)");
        assert_eq!(lost_cell(&rows[2]), "-");
        let text = table(&rows);
        assert!(
            text.contains("added/ref: perf: 5.00x (4.00..6.00) of dw64's added ns"),
            "{text}"
        );
        assert!(text.contains("output: perf: wrote 2 MB (median)"), "{text}");
        let json = json(&rows, 1000, 2);
        assert_eq!(json["scenarios"][1]["tracer"]["lost"]["share_median"], 0.7);
        assert_eq!(
            json["scenarios"][1]["also_compared_with"][0]["added_ratio_median"],
            5.0
        );
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert_eq!(median([f64::NAN, 1.0].into_iter()), 1.0);
        assert!(median(std::iter::empty()).is_nan());
    }
}

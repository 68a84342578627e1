//! Turns the samples into the table the user reads and target/bench/results.json.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::scenario::Scenario;
use super::Sample;

pub struct Row {
    name: &'static str,
    workload: &'static str,
    samples_ns: Vec<f64>,
    median_ns: f64,
    baseline_ns: Option<f64>,
    compare_with: Option<&'static str>,
    added_vs_reference: Option<f64>,
    tracer: Option<TracerSummary>,
}

struct TracerSummary {
    cpu_ms_total: f64,
    cpu_ms_during_workload: f64,
    peak_rss_mib: f64,
    /// The fewest events it reported over the runs, against the calls made.
    events_seen_min: Option<u64>,
    expected_events: u64,
    all_exited_cleanly: bool,
}

impl Row {
    fn added_ns(&self) -> Option<f64> {
        let base = self.baseline_ns?;
        self.tracer.as_ref().map(|_| self.median_ns - base)
    }

    fn ratio(&self) -> Option<f64> {
        self.baseline_ns.map(|base| self.median_ns / base)
    }
}

pub fn summarize(scenarios: &[Scenario], samples: &[Vec<Sample>], iterations: u64) -> Vec<Row> {
    let medians: Vec<f64> = samples
        .iter()
        .map(|s| median(s.iter().map(|x| x.ns_per_call)))
        .collect();
    let baseline_of = |scenario: &Scenario| {
        scenarios
            .iter()
            .zip(&medians)
            .find(|(s, _)| s.tracer.is_none() && s.workload == scenario.workload)
            .map(|(_, m)| *m)
    };
    let mut rows: Vec<Row> = scenarios
        .iter()
        .zip(samples)
        .zip(&medians)
        .map(|((scenario, samples), &median_ns)| Row {
            name: scenario.name,
            workload: scenario.workload.describe,
            samples_ns: samples.iter().map(|s| s.ns_per_call).collect(),
            median_ns,
            baseline_ns: baseline_of(scenario),
            compare_with: scenario.compare_with,
            added_vs_reference: None,
            tracer: scenario
                .tracer
                .as_ref()
                .map(|_| summarize_tracer(samples, iterations)),
        })
        .collect();
    // Reference rows can come later in the table, so this needs every row first.
    for i in 0..rows.len() {
        let reference = rows[i]
            .compare_with
            .and_then(|name| rows.iter().find(|r| r.name == name))
            .and_then(Row::added_ns);
        rows[i].added_vs_reference = rows[i].added_ns().zip(reference).map(|(a, r)| a / r);
    }
    rows
}

fn summarize_tracer(samples: &[Sample], iterations: u64) -> TracerSummary {
    let runs: Vec<_> = samples.iter().filter_map(|s| s.tracer.as_ref()).collect();
    TracerSummary {
        cpu_ms_total: median(runs.iter().map(|t| t.cpu_ms_total)),
        cpu_ms_during_workload: median(runs.iter().map(|t| t.cpu_ms_during_workload)),
        // Peak means peak: the largest over the runs.
        peak_rss_mib: runs.iter().map(|t| t.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0,
        events_seen_min: runs.iter().map(|t| t.events_seen).min().flatten(),
        expected_events: iterations,
        all_exited_cleanly: runs.iter().all(|t| t.exited_cleanly),
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
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

fn opt(value: Option<f64>, precision: usize) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.precision$}"))
}

pub fn table(rows: &[Row]) -> String {
    let header = [
        "scenario",
        "ns/call",
        "min..max",
        "added ns",
        "x base",
        "added/ref",
        "CPU ms",
        "CPU ms loop",
        "VmHWM MiB",
        "counted",
    ];
    let cells: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            let (min, max) = r
                .samples_ns
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            let t = r.tracer.as_ref();
            [
                r.name.to_string(),
                format!("{:.1}", r.median_ns),
                format!("{min:.0}..{max:.0}"),
                opt(r.added_ns(), 1),
                opt(r.ratio(), 2),
                opt(r.added_vs_reference, 2),
                opt(t.map(|t| t.cpu_ms_total), 0),
                opt(t.map(|t| t.cpu_ms_during_workload), 0),
                opt(t.map(|t| t.peak_rss_mib), 1),
                t.map_or("-".into(), |t| {
                    let seen = t.events_seen_min.map_or("?".into(), |n| {
                        format!("{:.1}%", n as f64 * 100.0 / t.expected_events as f64)
                    });
                    if t.all_exited_cleanly {
                        seen
                    } else {
                        format!("{seen} (bad exit)")
                    }
                }),
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
            // Names left-aligned, numbers right-aligned.
            if i == 0 {
                let _ = write!(out, "{col:<w$}", w = widths[i]);
            } else {
                let _ = write!(out, "  {col:>w$}", w = widths[i]);
            }
        }
        out.push('\n');
    };
    line(&header);
    for row in &cells {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    for r in rows {
        if let Some(reference) = r.compare_with.filter(|_| r.added_vs_reference.is_some()) {
            let _ = writeln!(
                out,
                "added/ref: {}'s added ns divided by {reference}'s",
                r.name
            );
        }
    }
    out.push_str(
        "CPU ms: tracer's utime+stime from start (attach included) to SIGINT; \
         CPU ms loop: during the workload only. counted: events it reported / calls made.\n",
    );
    out
}

pub fn json(rows: &[Row], iterations: u64, runs: u32) -> Value {
    let scenarios: Vec<Value> = rows
        .iter()
        .map(|r| {
            let tracer = r.tracer.as_ref().map(|t| {
                json!({
                    "cpu_ms_total_median": t.cpu_ms_total,
                    "cpu_ms_during_workload_median": t.cpu_ms_during_workload,
                    "vm_hwm_mib_max": t.peak_rss_mib,
                    "events_seen_min": t.events_seen_min,
                    "events_expected": t.expected_events,
                    "all_exited_cleanly": t.all_exited_cleanly,
                })
            });
            json!({
                "name": r.name,
                "workload": r.workload,
                "ns_per_call_samples": r.samples_ns,
                "ns_per_call_median": r.median_ns,
                "baseline_ns_per_call": r.baseline_ns,
                "added_ns_per_call": r.added_ns(),
                "ratio_vs_baseline": r.ratio(),
                "compared_with": r.compare_with,
                "added_cost_ratio_vs_compared": r.added_vs_reference,
                "tracer": tracer,
            })
        })
        .collect();
    json!({
        "iterations": iterations,
        "runs": runs,
        "statistic": "median over runs",
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

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert!(median(std::iter::empty()).is_nan());
    }
}

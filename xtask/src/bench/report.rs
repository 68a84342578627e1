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
    /// The first run's reason when some run never attached.
    attach_error: Option<String>,
}

impl TracerSummary {
    /// Why this tracer's numbers measure no tracing at all: a run where it
    /// did not attach, or one where it attached but counted nothing.
    fn traced_nothing(&self) -> Option<String> {
        if let Some(err) = &self.attach_error {
            return Some(format!("did not attach ({})", last_line(err)));
        }
        (self.events_seen_min == Some(0))
            .then(|| format!("counted 0 of {} calls in a run", self.expected_events))
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

    /// None for a row whose tracer traced nothing: its cost is not a tracer's.
    fn added_ns(&self) -> Option<f64> {
        let base = self.baseline_ns?;
        let tracer = self.tracer.as_ref()?;
        tracer
            .traced_nothing()
            .is_none()
            .then_some(self.median_ns - base)
    }

    fn ratio(&self) -> Option<f64> {
        if self.traced_nothing().is_some() {
            return None;
        }
        self.baseline_ns.map(|base| self.median_ns / base)
    }
}

pub fn summarize(scenarios: &[Scenario], samples: &[Vec<Sample>], iterations: u64) -> Vec<Row> {
    // A run whose tracer never attached ran no workload (NaN).
    let medians: Vec<f64> = samples
        .iter()
        .map(|s| median(s.iter().map(|x| x.ns_per_call).filter(|v| !v.is_nan())))
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
            samples_ns: samples
                .iter()
                .map(|s| s.ns_per_call)
                .filter(|v| !v.is_nan())
                .collect(),
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
        attach_error: runs.iter().find_map(|t| t.attach_error.clone()),
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
                opt(Some(r.median_ns).filter(|m| !m.is_nan()), 1),
                if r.samples_ns.is_empty() {
                    "-".to_string()
                } else {
                    format!("{min:.0}..{max:.0}")
                },
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
                    if t.attach_error.is_some() {
                        "NOT ATTACHED".to_string()
                    } else if t.events_seen_min == Some(0) {
                        "NOTHING".to_string()
                    } else if t.all_exited_cleanly {
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
        if let Some(why) = r.traced_nothing() {
            let _ = writeln!(
                out,
                "{}: traced nothing: {why}; no cost or ratio is given for it",
                r.name
            );
        }
    }
    for r in rows {
        let Some(reference) = r.compare_with else {
            continue;
        };
        if r.added_vs_reference.is_some() {
            let _ = writeln!(
                out,
                "added/ref: {}'s added ns divided by {reference}'s",
                r.name
            );
        } else if let Some(why) = rows
            .iter()
            .find(|x| x.name == reference)
            .and_then(Row::traced_nothing)
        {
            let _ = writeln!(
                out,
                "added/ref: none for {}: {reference} traced nothing ({why})",
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
                    "traced_nothing": t.traced_nothing(),
                })
            });
            json!({
                "name": r.name,
                "workload": r.workload,
                "ns_per_call_samples": r.samples_ns,
                "ns_per_call_median": Some(r.median_ns).filter(|m| !m.is_nan()),
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

    fn sample(ns: f64, events: Option<u64>, attach_error: Option<&str>) -> Sample {
        Sample {
            ns_per_call: ns,
            tracer: Some(crate::bench::TracerSample {
                attach_error: attach_error.map(str::to_string),
                cpu_ms_total: 10.0,
                cpu_ms_during_workload: 5.0,
                peak_rss_kib: 1024,
                events_seen: events,
                exited_cleanly: attach_error.is_none(),
            }),
        }
    }

    fn untraced(ns: f64) -> Sample {
        Sample {
            ns_per_call: ns,
            tracer: None,
        }
    }

    /// baseline, clockprof (compared with bpftrace), bpftrace.
    fn three_rows(bpftrace: Vec<Sample>) -> Vec<Row> {
        use crate::bench::scenario::{Tracer, SYSCALL_LOOP};
        let scenarios = [
            Scenario {
                name: "baseline",
                workload: &SYSCALL_LOOP,
                tracer: None,
                compare_with: None,
            },
            Scenario {
                name: "clockprof",
                workload: &SYSCALL_LOOP,
                tracer: Some(Tracer::Clockprof { sources: "syscall" }),
                compare_with: Some("bpftrace"),
            },
            Scenario {
                name: "bpftrace",
                workload: &SYSCALL_LOOP,
                tracer: Some(Tracer::Bpftrace { program: "" }),
                compare_with: None,
            },
        ];
        let samples = vec![
            vec![untraced(100.0), untraced(102.0)],
            vec![
                sample(150.0, Some(1000), None),
                sample(152.0, Some(1000), None),
            ],
            bpftrace,
        ];
        summarize(&scenarios, &samples, 1000)
    }

    #[test]
    fn a_baseline_that_traced_gives_a_ratio() {
        let rows = three_rows(vec![
            sample(200.0, Some(1000), None),
            sample(202.0, Some(1000), None),
        ]);
        assert_eq!(rows[1].added_vs_reference, Some(0.5));
        assert!(table(&rows).contains("added/ref: clockprof's added ns divided by bpftrace's"));
    }

    #[test]
    fn no_ratio_against_a_baseline_that_counted_nothing() {
        let rows = three_rows(vec![
            sample(101.0, Some(0), None),
            sample(101.0, Some(1000), None),
        ]);
        assert_eq!(rows[2].added_ns(), None);
        assert_eq!(rows[2].ratio(), None);
        assert_eq!(rows[1].added_vs_reference, None);
        let text = table(&rows);
        assert!(
            text.contains("bpftrace: traced nothing: counted 0 of 1000 calls in a run"),
            "{text}"
        );
        assert!(
            text.contains("added/ref: none for clockprof: bpftrace traced nothing"),
            "{text}"
        );
        assert!(text.contains("NOTHING"), "{text}");
    }

    #[test]
    fn no_ratio_against_a_baseline_that_never_attached() {
        let err = "bpftrace exited (exit status: 1) before attaching; its output:\n\
                   ERROR: tracepoint not found: syscalls:sys_enter_clock_gettime";
        let rows = three_rows(vec![
            sample(f64::NAN, None, Some(err)),
            sample(f64::NAN, None, Some(err)),
        ]);
        assert_eq!(rows[1].added_vs_reference, None);
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
        assert_eq!(json["scenarios"][2]["ns_per_call_median"], Value::Null);
        assert_eq!(
            json["scenarios"][1]["added_cost_ratio_vs_compared"],
            Value::Null
        );
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert!(median(std::iter::empty()).is_nan());
    }
}

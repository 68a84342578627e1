//! `/metrics`: clock reads per process, source and clock, vdso samples and
//! the CPU they stand for, the clocksource, losses, and the daemon's own
//! CPU and memory, in the Prometheus text format written by
//! prometheus-client. Labels name processes (comm) and containers, never
//! PIDs, so the series stay bounded on a host with churn.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use profiler_common::INTERRUPT_TGID;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::TypedMetric;
use prometheus_client::registry::Registry;

use super::series::Series;
use crate::collect::LostCounts;
use crate::host::clocksource::Clocksource;
use crate::symbolize::SymbolizedSample;

type Labels = Vec<(String, String)>;

/// Why events were not counted, as `clockprof_lost_events_total{reason}`.
pub mod reason {
    pub const COUNT_MAP_FULL: &str = "count_map_full";
    pub const USER_STACK: &str = "user_stack";
    pub const KERNEL_STACK: &str = "kernel_stack";
    pub const FOLLOWED_PROCESS: &str = "followed_process";
    pub const MAPPING_RECORD: &str = "mapping_record";
    pub const PROFILE_STACKS: &str = "profile_stacks";
    pub const PUSH: &str = "push";
    pub const ALL: [&str; 7] = [
        COUNT_MAP_FULL,
        USER_STACK,
        KERNEL_STACK,
        FOLLOWED_PROCESS,
        MAPPING_RECORD,
        PROFILE_STACKS,
        PUSH,
    ];
}

/// The process label of reads whose process is past the series cap.
pub const OTHER_PROCESSES: &str = "[other]";

pub struct Metrics {
    registry: Registry,
    clock_reads: Family<Labels, Counter>,
    vdso_samples: Family<Labels, Counter>,
    vdso_cpu_seconds: Family<Labels, Counter<f64, AtomicU64>>,
    lost: Family<Labels, Counter>,
    push_failures: Family<Labels, Counter>,
    clock_syscalls: Family<Labels, Counter>,
    interposers: Family<Labels, prometheus_client::metrics::gauge::Gauge>,
    clocksource_changes: Family<Labels, Counter>,
    /// The clocksource at the last drain, to count its changes.
    clocksource: Mutex<Option<String>>,
    /// Label sets handed out per family (clock reads; the two vdso
    /// families; clock system calls by cause; interposers), to hold them
    /// under MAX_SERIES and drop the idle ones.
    series: Mutex<[Series<Labels>; 4]>,
    /// Hz of the vdso sampling: one sample stands for 1/Hz s of CPU.
    sample_frequency: u64,
}

impl Metrics {
    /// `fixed` (from --label) goes on every series; at most `max_series`
    /// label sets per family, and one without reads for `series_ttl` is
    /// dropped.
    pub fn new(
        fixed: &[(String, String)],
        sample_frequency: u64,
        max_series: usize,
        series_ttl: Duration,
    ) -> Metrics {
        let mut registry = Registry::with_labels(
            fixed
                .iter()
                .map(|(k, v)| (k.clone().into(), v.clone().into())),
        );
        let clock_reads = Family::<Labels, Counter>::default();
        registry.register(
            "clockprof_clock_reads",
            "Clock reads counted, per process name, clock source and clock",
            clock_reads.clone(),
        );
        let vdso_samples = Family::<Labels, Counter>::default();
        registry.register(
            "clockprof_vdso_samples",
            "Timer samples that found the process inside the vDSO's clock code",
            vdso_samples.clone(),
        );
        let vdso_cpu_seconds = Family::<Labels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "clockprof_vdso_cpu_seconds",
            "CPU time spent in the vDSO's clock code, estimated from the samples",
            vdso_cpu_seconds.clone(),
        );
        let lost = Family::<Labels, Counter>::default();
        registry.register(
            "clockprof_lost_events",
            "Events, stacks and pushes clockprof could not keep, per reason",
            lost.clone(),
        );
        for why in reason::ALL {
            let _ = lost.get_or_create(&vec![("reason".to_string(), why.to_string())]);
        }
        let push_failures = Family::<Labels, Counter>::default();
        registry.register(
            "clockprof_push_failures",
            "Pushes dropped, per endpoint (pyroscope, otlp) and cause: queue_full, connect, \
             tls, timeout, closed, render, or http_ and the status the server answered",
            push_failures.clone(),
        );
        let clock_syscalls = Family::<Labels, Counter>::default();
        registry.register(
            "clockprof_clock_syscalls",
            "Clock system calls, per process name, clock and cause: vdso-fallback (the vDSO \
             cannot read the clocksource), unserved-clock (a CPU-time or alarm clock), direct \
             (made without the vDSO), interposer (made by a library that replaces the clock \
             functions)",
            clock_syscalls.clone(),
        );
        let interposers = Family::<Labels, prometheus_client::metrics::gauge::Gauge>::default();
        registry.register(
            "clockprof_clock_interposer_info",
            "A library, other than the C library, that takes a process's clock calls over \
             (LD_PRELOAD, /etc/ld.so.preload), with how it was preloaded where known",
            interposers.clone(),
        );
        let clocksource_changes = Family::<Labels, Counter>::default();
        registry.register(
            "clockprof_clocksource_changes",
            "Changes of the kernel's clocksource seen while serving, from and to",
            clocksource_changes.clone(),
        );
        registry.register_collector(Box::new(ClocksourceCollector::new()));
        registry.register_collector(Box::new(OwnProcessCollector));
        Metrics {
            registry,
            clock_reads,
            vdso_samples,
            vdso_cpu_seconds,
            lost,
            push_failures,
            clock_syscalls,
            interposers,
            clocksource_changes,
            clocksource: Mutex::new(Clocksource::read().name),
            series: Mutex::new([
                Series::new(max_series, series_ttl),
                Series::new(max_series, series_ttl),
                Series::new(max_series, series_ttl),
                Series::new(max_series, series_ttl),
            ]),
            sample_frequency,
        }
    }

    /// Adds one read's samples, then drops the label sets idle for the TTL.
    pub fn record(&self, samples: &[SymbolizedSample]) {
        self.record_at(samples, Instant::now());
    }

    fn record_at(&self, samples: &[SymbolizedSample], now: Instant) {
        // First, so the room they leave goes to this read's new processes.
        // A vanished series is what Prometheus sees of any exporter's
        // process that went away; a name that comes back starts from 0, a
        // counter reset rate() handles.
        {
            let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
            for labels in series[0].expire(now) {
                self.clock_reads.remove(&labels);
            }
            for labels in series[1].expire(now) {
                self.vdso_samples.remove(&labels);
                self.vdso_cpu_seconds.remove(&labels);
            }
            for labels in series[2].expire(now) {
                self.clock_syscalls.remove(&labels);
            }
            for labels in series[3].expire(now) {
                self.interposers.remove(&labels);
            }
        }
        self.count_clocksource_change();
        // Unwound stacks only weigh their key's count (StackState::Unwound).
        for sample in samples
            .iter()
            .filter(|s| s.state != crate::symbolize::StackState::Unwound)
        {
            let source = sample.read.source();
            if source.is_sampled() {
                let labels = self.bounded(1, process_labels(sample), now);
                self.vdso_samples
                    .get_or_create(&labels)
                    .inc_by(sample.count);
                self.vdso_cpu_seconds
                    .get_or_create(&labels)
                    .inc_by(sample.count as f64 / self.sample_frequency as f64);
            } else {
                let mut labels = process_labels(sample);
                labels.push(("source".to_string(), source.name().to_string()));
                if let Some(clock) = sample.read.clock() {
                    labels.push(("clock".to_string(), clock));
                }
                let labels = self.bounded(0, labels, now);
                self.clock_reads.get_or_create(&labels).inc_by(sample.count);
            }
            if let Some(cause) = sample.read.cause {
                let mut labels = process_labels(sample);
                labels.push((
                    "clock".to_string(),
                    sample
                        .read
                        .clock()
                        .unwrap_or_else(|| sample.read.call(&[]).to_string()),
                ));
                labels.push(("cause".to_string(), cause.name().to_string()));
                let labels = self.bounded(2, labels, now);
                self.clock_syscalls
                    .get_or_create(&labels)
                    .inc_by(sample.count);
            }
            for interposer in sample.interposers.iter() {
                let mut labels = process_labels(sample);
                labels.push(("library".to_string(), interposer.library.clone()));
                labels.push((
                    "preload".to_string(),
                    interposer.preload.clone().unwrap_or_default(),
                ));
                let labels = self.bounded(3, labels, now);
                self.interposers.get_or_create(&labels).set(1);
            }
        }
    }

    /// Counts a change of the clocksource since the last drain (the kernel
    /// switches away from a TSC its watchdog marked unstable), and says it
    /// with what the kernel log said.
    fn count_clocksource_change(&self) {
        let now = Clocksource::read().name;
        let mut last = self.clocksource.lock().unwrap_or_else(|e| e.into_inner());
        if now == *last {
            return;
        }
        let from = last.clone().unwrap_or_default();
        let to = now.clone().unwrap_or_default();
        self.clocksource_changes
            .get_or_create(&vec![
                ("from".to_string(), from.clone()),
                ("to".to_string(), to.clone()),
            ])
            .inc();
        let why = crate::host::kernel_log::clocksource_changes()
            .last()
            .map(|line| format!("; kernel log: {}", line.quoted()))
            .unwrap_or_default();
        crate::say!("the clocksource changed from {from} to {to}{why}");
        *last = now;
    }

    pub fn record_lost(&self, lost: &LostCounts, mapping_records: u64) {
        for (why, count) in [
            (reason::COUNT_MAP_FULL, lost.events),
            (reason::USER_STACK, lost.user_stacks + lost.dwarf_stacks),
            (reason::KERNEL_STACK, lost.kernel_stacks),
            (reason::FOLLOWED_PROCESS, lost.followed_processes),
            (reason::MAPPING_RECORD, mapping_records),
        ] {
            self.lose(why, count);
        }
    }

    /// A push to `endpoint` was dropped: counted as lost (reason `push`)
    /// and by its cause.
    pub fn push_failed(&self, endpoint: &str, cause: &str) {
        self.lose(reason::PUSH, 1);
        self.push_failures
            .get_or_create(&vec![
                ("endpoint".to_string(), endpoint.to_string()),
                ("cause".to_string(), cause.to_string()),
            ])
            .inc();
    }

    pub fn lose(&self, why: &'static str, count: u64) {
        if count > 0 {
            self.lost
                .get_or_create(&vec![("reason".to_string(), why.to_string())])
                .inc_by(count);
        }
    }

    /// `labels` if its family has room for it (or has it), else the same
    /// labels for process `[other]`, without a container; read at `now`.
    fn bounded(&self, family: usize, labels: Labels, now: Instant) -> Labels {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let set = &mut series[family];
        if set.admit(&labels, now) {
            return labels;
        }
        let other: Labels = labels
            .into_iter()
            .filter(|(k, _)| k != "container_id")
            .map(|(k, v)| match k.as_str() {
                "process" => (k, OTHER_PROCESSES.to_string()),
                _ => (k, v),
            })
            .collect();
        set.keep(&other, now);
        other
    }

    /// The text Prometheus scrapes.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// `process` (and `container_id` where the cgroup names one) of a sample.
/// A process whose name is unknown is `[unknown]`: its `[pid N]` would be a
/// PID label.
fn process_labels(sample: &SymbolizedSample) -> Labels {
    let name = if sample.pid != INTERRUPT_TGID && sample.comm.starts_with("[pid ") {
        "[unknown]".to_string()
    } else {
        sample.comm.clone()
    };
    let mut labels = vec![("process".to_string(), name)];
    if let Some(id) = sample
        .cgroup
        .as_deref()
        .and_then(crate::host::container::container_id)
    {
        labels.push(("container_id".to_string(), id.to_string()));
    }
    labels
}

/// `clockprof_clocksource_info`, read at each scrape: the kernel can switch
/// clocksource at run time (an unstable TSC), and that is what fleets alert
/// on. `vdso_capable` is the answer of the clocksource's name;
/// `vdso_works` is measured at each scrape (clocksource::VdsoProbe): a
/// kvm-clock without its stable bit has a capable name and yet makes every
/// read a system call.
#[derive(Debug)]
struct ClocksourceCollector {
    vdso: Option<crate::host::clocksource::VdsoProbe>,
}

impl ClocksourceCollector {
    /// Made at start-up, where tracefs is mounted: the probe keeps the
    /// tracepoint's id, so later scrapes need no tracefs.
    fn new() -> ClocksourceCollector {
        ClocksourceCollector {
            vdso: crate::host::clocksource::VdsoProbe::new().ok(),
        }
    }
}

impl Collector for ClocksourceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let clocksource = Clocksource::read();
        let vdso_works = match self.vdso.as_ref().map(|probe| probe.vdso_reads()) {
            Some(Ok(works)) => works.to_string(),
            _ => "unknown".to_string(),
        };
        let labels: Labels = vec![
            (
                "clocksource".to_string(),
                clocksource.name.clone().unwrap_or_default(),
            ),
            (
                "vdso_capable".to_string(),
                clocksource.vdso_capable().to_string(),
            ),
            ("vdso_works".to_string(), vdso_works),
        ];
        let info = ConstGauge::new(1i64);
        let mut metric = encoder.encode_descriptor(
            "clockprof_clocksource_info",
            "The kernel's clocksource; vdso_capable=\"false\" (by its name) or vdso_works=\"false\" (measured) means every clock read is a system call",
            None,
            ConstGauge::<i64>::TYPE,
        )?;
        info.encode(metric.encode_family(&labels)?)
    }
}

/// The daemon's own CPU time and resident memory, under the names every
/// Prometheus client library gives them.
#[derive(Debug)]
struct OwnProcessCollector;

impl Collector for OwnProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use procfs::WithCurrentSystemInfo;
        let Ok(stat) = procfs::process::Process::myself().and_then(|p| p.stat()) else {
            return Ok(());
        };
        let cpu = (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64;
        let counter = ConstCounter::new(cpu);
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time clockprof has used",
            None,
            ConstCounter::<f64>::TYPE,
        )?)?;
        let rss = ConstGauge::new(stat.rss_bytes().get() as i64);
        rss.encode(encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "clockprof's resident memory",
            None,
            ConstGauge::<i64>::TYPE,
        )?)
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::serve::limits::MAX_SERIES;
    use crate::sources::ClockRead;
    use crate::symbolize::StackState;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn sample(
        pid: u32,
        comm: &str,
        event: u32,
        cgroup: Option<String>,
        count: u64,
    ) -> SymbolizedSample {
        SymbolizedSample {
            pid,
            start_time: 0,
            comm: comm.to_string(),
            cgroup,
            interposers: Default::default(),
            read: ClockRead::new(event, 1),
            frames: Vec::new(),
            state: StackState::Complete,
            exact_frames: 0,
            count,
        }
    }

    fn series(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn reads_add_up_per_process_without_pids_and_with_fixed_labels() {
        let metrics = Metrics::new(
            &[("host".to_string(), "web-1".to_string())],
            1000,
            MAX_SERIES,
            Duration::from_secs(600),
        );
        let docker = Some(format!("/system.slice/docker-{ID}.scope"));
        metrics.record(&[
            sample(
                10,
                "server",
                profiler_common::sources::syscall::CLOCK_GETTIME,
                None,
                30,
            ),
            sample(
                11,
                "server",
                profiler_common::sources::syscall::CLOCK_GETTIME,
                None,
                12,
            ),
            sample(
                12,
                "[pid 12]",
                profiler_common::sources::syscall::CLOCK_GETTIME,
                None,
                5,
            ),
            sample(
                13,
                "app",
                profiler_common::sources::syscall::CLOCK_GETTIME,
                docker.clone(),
                7,
            ),
            sample(
                13,
                "app",
                profiler_common::sources::vdso::SAMPLE,
                docker,
                250,
            ),
        ]);
        metrics.record(&[sample(
            10,
            "server",
            profiler_common::sources::syscall::CLOCK_GETTIME,
            None,
            8,
        )]);
        metrics.record_lost(
            &LostCounts {
                user_stacks: 3,
                ..LostCounts::default()
            },
            2,
        );
        let text = metrics.encode();
        let lines = series(&text);
        for expected in [
            r#"clockprof_clock_reads_total{host="web-1",process="server",source="syscall",clock="MONOTONIC"} 50"#,
            r#"clockprof_clock_reads_total{host="web-1",process="[unknown]",source="syscall",clock="MONOTONIC"} 5"#,
            &format!(
                r#"clockprof_clock_reads_total{{host="web-1",process="app",container_id="{ID}",source="syscall",clock="MONOTONIC"}} 7"#
            ),
            &format!(
                r#"clockprof_vdso_samples_total{{host="web-1",process="app",container_id="{ID}"}} 250"#
            ),
            &format!(
                r#"clockprof_vdso_cpu_seconds_total{{host="web-1",process="app",container_id="{ID}"}} 0.25"#
            ),
            r#"clockprof_lost_events_total{host="web-1",reason="user_stack"} 3"#,
            r#"clockprof_lost_events_total{host="web-1",reason="mapping_record"} 2"#,
            r#"clockprof_lost_events_total{host="web-1",reason="push"} 0"#,
        ] {
            assert!(lines.contains(&expected), "{expected} not in\n{text}");
        }
        assert!(!text.contains("pid"), "{text}");
        assert!(
            text.contains("# TYPE clockprof_clock_reads_total counter"),
            "{text}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(r#"clockprof_clocksource_info{host="web-1",clocksource=""#)),
            "{text}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("process_resident_memory_bytes{")),
            "{text}"
        );
    }

    #[test]
    fn processes_past_the_series_cap_count_as_other() {
        let metrics = Metrics::new(&[], 1000, MAX_SERIES, Duration::from_secs(600));
        let samples: Vec<SymbolizedSample> = (0..MAX_SERIES as u32 + 10)
            .map(|i| {
                sample(
                    i + 1,
                    &format!("p{i}"),
                    profiler_common::sources::syscall::CLOCK_GETTIME,
                    None,
                    1,
                )
            })
            .collect();
        metrics.record(&samples);
        metrics.record(&samples[..1]);
        let text = metrics.encode();
        let reads: Vec<&str> = series(&text)
            .into_iter()
            .filter(|l| l.starts_with("clockprof_clock_reads_total"))
            .collect();
        assert_eq!(reads.len(), MAX_SERIES + 1);
        assert!(reads.contains(&r#"clockprof_clock_reads_total{process="[other]",source="syscall",clock="MONOTONIC"} 10"#));
        assert!(reads.contains(
            &r#"clockprof_clock_reads_total{process="p0",source="syscall",clock="MONOTONIC"} 2"#
        ));
    }

    #[test]
    fn idle_label_sets_are_dropped_and_make_room_for_new_processes() {
        let ttl = Duration::from_secs(600);
        let metrics = Metrics::new(&[], 1000, MAX_SERIES, ttl);
        let start = Instant::now();
        let read = |comm: &str, event| sample(1, comm, event, None, 1);
        let renamed: Vec<SymbolizedSample> = (0..MAX_SERIES)
            .map(|i| {
                read(
                    &format!("r{i}"),
                    profiler_common::sources::syscall::CLOCK_GETTIME,
                )
            })
            .collect();
        metrics.record_at(&renamed, start);
        metrics.record_at(
            &[
                read("late", profiler_common::sources::syscall::CLOCK_GETTIME),
                read("v", profiler_common::sources::vdso::SAMPLE),
            ],
            start,
        );
        let text = metrics.encode();
        assert!(text.contains(r#"process="[other]""#), "{text}");
        assert!(!text.contains(r#"process="late""#), "{text}");
        assert!(
            text.contains(r#"clockprof_vdso_samples_total{process="v"}"#),
            "{text}"
        );
        // "r0" keeps reading; the rest of the renamed go quiet for the TTL.
        let half = start + ttl / 2;
        metrics.record_at(&renamed[..1], half);
        let after = start + ttl;
        metrics.record_at(
            &[read(
                "late",
                profiler_common::sources::syscall::CLOCK_GETTIME,
            )],
            after,
        );
        let text = metrics.encode();
        let mut reads: Vec<&str> = series(&text)
            .into_iter()
            .filter(|l| l.starts_with("clockprof_clock_reads_total"))
            .collect();
        reads.sort();
        assert_eq!(
            reads,
            vec![
                r#"clockprof_clock_reads_total{process="late",source="syscall",clock="MONOTONIC"} 1"#,
                r#"clockprof_clock_reads_total{process="r0",source="syscall",clock="MONOTONIC"} 2"#,
            ],
            "{text}"
        );
        assert!(!text.contains("clockprof_vdso_samples_total{"), "{text}");
    }
}

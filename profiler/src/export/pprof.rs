//! pprof: gzipped `perftools.profiles.Profile` protobuf, as `go tool pprof`,
//! Grafana Pyroscope and speedscope read it. The messages are the subset of
//! profile.proto clockprof fills, declared with prost's derive (field tags as
//! in the .proto), so no protoc is needed at build time.

use std::collections::HashMap;
use std::io::Write;

use anyhow::Result;
use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;

use super::Format;
use crate::aggregate::Profile;

#[derive(Clone, PartialEq, Message)]
struct PprofProfile {
    #[prost(message, repeated, tag = "1")]
    sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    sample: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    string_table: Vec<String>,
    #[prost(int64, tag = "10")]
    duration_nanos: i64,
    #[prost(int64, repeated, tag = "13")]
    comment: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
struct ValueType {
    #[prost(int64, tag = "1")]
    r#type: i64,
    #[prost(int64, tag = "2")]
    unit: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Sample {
    /// Leaf first.
    #[prost(uint64, repeated, tag = "1")]
    location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    label: Vec<Label>,
}

#[derive(Clone, PartialEq, Message)]
struct Label {
    #[prost(int64, tag = "1")]
    key: i64,
    #[prost(int64, tag = "2")]
    str: i64,
    #[prost(int64, tag = "3")]
    num: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Location {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(message, repeated, tag = "4")]
    line: Vec<Line>,
}

#[derive(Clone, PartialEq, Message)]
struct Line {
    #[prost(uint64, tag = "1")]
    function_id: u64,
}

#[derive(Clone, PartialEq, Message)]
struct Function {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int64, tag = "2")]
    name: i64,
    #[prost(int64, tag = "4")]
    filename: i64,
}

/// Interns strings, functions and locations (one location per function:
/// clockprof's frames are already symbolized names).
#[derive(Default)]
struct Tables {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    locations: HashMap<(String, String), u64>,
    location: Vec<Location>,
    function: Vec<Function>,
}

impl Tables {
    fn string(&mut self, s: &str) -> i64 {
        if self.strings.is_empty() {
            // Index 0 is the empty string, by the format's rule.
            self.strings.push(String::new());
            self.string_ids.insert(String::new(), 0);
        }
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(s.to_string());
        self.string_ids.insert(s.to_string(), id);
        id
    }

    fn location(&mut self, name: &str, module: &str) -> u64 {
        let key = (name.to_string(), module.to_string());
        if let Some(&id) = self.locations.get(&key) {
            return id;
        }
        let id = self.location.len() as u64 + 1;
        let function = Function {
            id,
            name: self.string(name),
            filename: self.string(module),
        };
        self.function.push(function);
        self.location.push(Location {
            id,
            line: vec![Line { function_id: id }],
        });
        self.locations.insert(key, id);
        id
    }
}

pub const FORMAT: Format = Format {
    name: "pprof",
    extension: "pb.gz",
    help: "gzipped pprof protobuf, for go tool pprof, Grafana Pyroscope, speedscope",
    render,
};

fn render(profile: &Profile) -> Result<Vec<u8>> {
    let mut tables = Tables::default();
    let sample_type = vec![ValueType {
        r#type: tables.string("clock_reads"),
        unit: tables.string("count"),
    }];
    let cause_key = tables.string("cause");
    let keys = [
        tables.string("pid"),
        tables.string("comm"),
        tables.string("source"),
        tables.string("cgroup"),
        tables.string("container_id"),
    ];
    let mut samples = Vec::with_capacity(profile.stacks.len());
    for stack in &profile.stacks {
        // pprof lists a sample's locations leaf first; the clock read is the leaf.
        let mut location_id =
            vec![tables.location(&stack.read.leaf(&profile.info.kernel_functions), "")];
        for frame in stack.frames.iter().rev() {
            location_id
                .push(tables.location(&frame.folded_name(), frame.module.as_deref().unwrap_or("")));
        }
        let mut label = Vec::with_capacity(5);
        // Reads in interrupt context (comm `[interrupt]`) have no PID.
        if stack.pid != profiler_common::INTERRUPT_TGID {
            label.push(Label {
                key: keys[0],
                str: 0,
                num: stack.pid as i64,
            });
        }
        label.extend([
            Label {
                key: keys[1],
                str: tables.string(&stack.comm),
                num: 0,
            },
            Label {
                key: keys[2],
                str: tables.string(stack.read.source().name()),
                num: 0,
            },
        ]);
        // Why a clock system call was one (`go tool pprof -tagfocus
        // cause=vdso-fallback`).
        if let Some(cause) = stack.read.cause {
            label.push(Label {
                key: cause_key,
                str: tables.string(cause.name()),
                num: 0,
            });
        }
        // Labels only where there is something to say: a process in the
        // root cgroup has neither.
        if let Some(cgroup) = &stack.cgroup {
            let container_id = crate::host::container::container_id(cgroup);
            label.push(Label {
                key: keys[3],
                str: tables.string(cgroup),
                num: 0,
            });
            if let Some(id) = container_id {
                label.push(Label {
                    key: keys[4],
                    str: tables.string(id),
                    num: 0,
                });
            }
        }
        samples.push(Sample {
            location_id,
            value: vec![stack.count as i64],
            label,
        });
    }
    // What was recorded, then which clockprof recorded it (pprof has no
    // field for the producer; `go tool pprof -comments` prints both).
    let comment = vec![
        tables.string(&super::svg::title(profile)),
        tables.string(&crate::version::line()),
    ];
    let message = PprofProfile {
        sample_type,
        sample: samples,
        location: tables.location,
        function: tables.function,
        string_table: tables.strings,
        duration_nanos: profile.info.duration.as_nanos() as i64,
        comment,
    };
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&message.encode_to_vec())?;
    Ok(gz.finish()?)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::GzDecoder;

    use super::*;
    use crate::aggregate::test_profile::{self, CONTAINER_ID};

    /// A sample with its ids resolved: locations leaf first as (function,
    /// file), its values, and labels as (key, string, number).
    type Resolved = (Vec<(String, String)>, Vec<i64>, Vec<(String, String, i64)>);

    fn decode(bytes: &[u8]) -> PprofProfile {
        let mut raw = Vec::new();
        GzDecoder::new(bytes).read_to_end(&mut raw).unwrap();
        PprofProfile::decode(&raw[..]).unwrap()
    }

    fn resolve(profile: &PprofProfile) -> Vec<Resolved> {
        let string = |id: i64| profile.string_table[id as usize].clone();
        let function = |id: u64| {
            let f = profile.function.iter().find(|f| f.id == id).unwrap();
            (string(f.name), string(f.filename))
        };
        let location = |id: u64| {
            let l = profile.location.iter().find(|l| l.id == id).unwrap();
            assert_eq!(l.line.len(), 1, "one line per location");
            function(l.line[0].function_id)
        };
        profile
            .sample
            .iter()
            .map(|s| {
                (
                    s.location_id.iter().map(|&id| location(id)).collect(),
                    s.value.clone(),
                    s.label
                        .iter()
                        .map(|l| (string(l.key), string(l.str), l.num))
                        .collect(),
                )
            })
            .collect()
    }

    fn locations(names: &[(&str, &str)]) -> Vec<(String, String)> {
        names
            .iter()
            .map(|(f, m)| (f.to_string(), m.to_string()))
            .collect()
    }

    fn labels(
        pid: Option<i64>,
        comm: &str,
        source: &str,
        container: bool,
    ) -> Vec<(String, String, i64)> {
        let mut labels: Vec<(String, String, i64)> = pid
            .map(|pid| ("pid".to_string(), String::new(), pid))
            .into_iter()
            .collect();
        labels.push(("comm".to_string(), comm.to_string(), 0));
        labels.push(("source".to_string(), source.to_string(), 0));
        if container {
            let cgroup = format!("/system.slice/docker-{CONTAINER_ID}.scope");
            labels.push(("cgroup".to_string(), cgroup, 0));
            labels.push(("container_id".to_string(), CONTAINER_ID.to_string(), 0));
        }
        labels
    }

    #[test]
    fn renders_the_fixed_profile_exactly() {
        let bytes = FORMAT.render(&test_profile::profile()).unwrap();
        let profile = decode(&bytes);

        assert_eq!(
            profile.string_table[0], "",
            "pprof's rule: string 0 is empty"
        );
        let sample_type: Vec<(String, String)> = profile
            .sample_type
            .iter()
            .map(|t| {
                let s = |id: i64| profile.string_table[id as usize].clone();
                (s(t.r#type), s(t.unit))
            })
            .collect();
        assert_eq!(sample_type, locations(&[("clock_reads", "count")]));
        assert_eq!(profile.duration_nanos, 2_500_000_000);
        let comments: Vec<&str> = profile
            .comment
            .iter()
            .map(|&id| profile.string_table[id as usize].as_str())
            .collect();
        assert_eq!(
            comments,
            [
                "clockprof: 61 clock reads over 2.5 s (syscall, kernel, libc, vdso; backend breakpoint, perf_event, tracepoint, uprobe)",
                &crate::version::line(),
            ]
        );
        // One location and one function per distinct (name, file), ids 1..=n.
        let ids: Vec<u64> = profile.location.iter().map(|l| l.id).collect();
        assert_eq!(ids, (1..=14).collect::<Vec<u64>>());
        let ids: Vec<u64> = profile.function.iter().map(|f| f.id).collect();
        assert_eq!(ids, (1..=14).collect::<Vec<u64>>());

        const SERVER: &str = "/usr/bin/server";
        let expected: Vec<Resolved> = vec![
            (
                locations(&[
                    ("[syscall clock_gettime MONOTONIC]", ""),
                    ("do_syscall_64_[k]", "kernel"),
                    ("handle", SERVER),
                    ("main", SERVER),
                ]),
                vec![30],
                labels(Some(100), "server", "syscall", true),
            ),
            (
                locations(&[("[vdso sample]", ""), ("tick", SERVER), ("main", SERVER)]),
                vec![12],
                labels(Some(100), "server", "vdso", true),
            ),
            (
                locations(&[
                    ("[libc clock_gettime REALTIME]", ""),
                    ("poll", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
                    ("main", "/usr/sbin/cron"),
                ]),
                vec![7],
                labels(Some(200), "cron", "libc", false),
            ),
            (
                locations(&[
                    ("[syscall time]", ""),
                    ("do_syscall_64_[k]", "kernel"),
                    ("[lost stack]", ""),
                ]),
                vec![5],
                labels(Some(200), "cron", "syscall", false),
            ),
            // Interrupt context: no pid label.
            (
                locations(&[
                    ("[kernel ktime_get]", ""),
                    ("hrtimer_interrupt_[k]", "kernel"),
                    ("asm_sysvec_apic_timer_interrupt_[k]", "kernel"),
                ]),
                vec![4],
                labels(None, "[interrupt]", "kernel", false),
            ),
            (
                locations(&[("[vdso sample]", ""), ("tick", SERVER), ("main", SERVER)]),
                vec![3],
                labels(Some(101), "server", "vdso", false),
            ),
        ];
        assert_eq!(resolve(&profile), expected);
    }
}

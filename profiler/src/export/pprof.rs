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
        let mut location_id = vec![tables.location(&stack.read.leaf(), "")];
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
        // Labels only where there is something to say: a process in the
        // root cgroup has neither.
        if let Some(cgroup) = &stack.cgroup {
            let container_id = crate::container::container_id(cgroup);
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
    let comment = vec![tables.string(&super::svg::title(profile))];
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

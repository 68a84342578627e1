//! `--otlp`: each window as one OTLP `ExportProfilesServiceRequest`
//! (profiles `v1development`, protos v1.10.0 through opentelemetry-proto),
//! posted as gzipped protobuf to an OTLP/HTTP receiver such as the
//! Collector.
//! - One resource per process: `service.name` and
//!   `process.executable.name` (its name), `process.pid`, `container.id`
//!   where known, `host.name`, and serve's `--label`s.
//! - One profile per clock source in it, of sample type `clock_reads`
//!   (count) for counting sources or `vdso_samples` for the sampled one,
//!   whose samples carry their `clock` as an attribute.
//! - Stacks leaf first, as the format has them: the leaf is the clock read
//!   (`[syscall clock_gettime MONOTONIC]`, as in folded stacks), then the
//!   functions, each in a mapping named after its file where known.
//! - Every table is shared through the request's dictionary, whose entry
//!   0 is the empty one the format asks for.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::SystemTime;

use anyhow::Result;
use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development as otlp;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::client::Outgoing;
use crate::aggregate::Profile;
use crate::sources::Source;
use crate::symbolize::SymbolizedSample;

/// The protobuf media type OTLP/HTTP takes.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// The header the Collector's OTLP receiver checks the profiles' wire
/// version against while profiles are in development: the Collector since
/// v0.148.0 (pdata v1.54.0, protos v1.10.0) takes version 1, this
/// encoding, and answers 400 to any other.
pub const VERSION_HEADER: &str = "OTLP-Profiles-Development-Version";
pub const VERSION: u32 = 1;

/// One interval's reads, as the read loop hands them over.
pub struct Window {
    pub profile: Profile,
    /// serve's `--label`s, as resource attributes.
    pub fixed: Vec<(String, String)>,
    /// The window's wall-clock end.
    pub end: SystemTime,
    /// The VERSION_HEADER sent (VERSION, but in the version-skew test).
    pub version: u32,
}

impl Window {
    pub fn encode(self) -> Result<Outgoing> {
        let version = self.version;
        let request = self.request(&host_name());
        // Gzipped, as OTLP/HTTP exporters send by default: a window's
        // names and tables shrink about tenfold.
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&request.encode_to_vec())?;
        Ok(Outgoing {
            query: String::new(),
            content_type: CONTENT_TYPE,
            protocol_headers: vec![
                (VERSION_HEADER, version.to_string()),
                ("content-encoding", "gzip".to_string()),
            ],
            body: Bytes::from(gz.finish()?),
            partial_failure: Some(partial_failure),
        })
    }

    fn request(self, host: &str) -> ExportProfilesServiceRequest {
        let info = &self.profile.info;
        let duration_nano = info.duration.as_nanos() as u64;
        let end_nano = self
            .end
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let start_nano = end_nano.saturating_sub(duration_nano);
        let mut tables = Dictionary::new();
        let mut processes: BTreeMap<ProcessKey, BTreeMap<Source, Vec<&SymbolizedSample>>> =
            BTreeMap::new();
        for stack in &self.profile.stacks {
            let key = ProcessKey {
                pid: stack.pid,
                start_time: stack.start_time,
                comm: stack.comm.clone(),
                container: stack
                    .cgroup
                    .as_deref()
                    .and_then(crate::host::container::container_id)
                    .map(str::to_string),
            };
            processes
                .entry(key)
                .or_default()
                .entry(stack.read.source())
                .or_default()
                .push(stack);
        }
        let resource_profiles = processes
            .into_iter()
            .map(|(process, sources)| {
                let profiles = sources
                    .into_iter()
                    .map(|(source, stacks)| {
                        let (kind, unit) = match source.is_sampled() {
                            true => ("vdso_samples", "count"),
                            false => ("clock_reads", "count"),
                        };
                        let sample_type = Some(otlp::ValueType {
                            type_strindex: tables.string(kind),
                            unit_strindex: tables.string(unit),
                        });
                        let (period_type, period) = match info.sample_frequency {
                            Some(hz) if source.is_sampled() && hz > 0 => (
                                Some(otlp::ValueType {
                                    type_strindex: tables.string("cpu"),
                                    unit_strindex: tables.string("nanoseconds"),
                                }),
                                (1_000_000_000 / hz) as i64,
                            ),
                            _ => (None, 0),
                        };
                        let source_attribute = tables.attribute("clockprof.source", source.name());
                        otlp::Profile {
                            sample_type,
                            samples: stacks
                                .into_iter()
                                .map(|stack| tables.sample(stack, &info.kernel_functions))
                                .collect(),
                            time_unix_nano: start_nano,
                            duration_nano,
                            period_type,
                            period,
                            attribute_indices: vec![source_attribute],
                            ..Default::default()
                        }
                    })
                    .collect();
                otlp::ResourceProfiles {
                    resource: Some(Resource {
                        attributes: process.attributes(host, &self.fixed),
                        ..Default::default()
                    }),
                    scope_profiles: vec![otlp::ScopeProfiles {
                        scope: Some(InstrumentationScope {
                            name: "clockprof".to_string(),
                            version: crate::version::FULL.to_string(),
                            ..Default::default()
                        }),
                        profiles,
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            })
            .collect();
        ExportProfilesServiceRequest {
            resource_profiles,
            dictionary: Some(tables.finish()),
        }
    }
}

/// What an ExportProfilesServiceResponse says the receiver rejected.
fn partial_failure(body: &[u8]) -> Option<String> {
    let response = ExportProfilesServiceResponse::decode(body).ok()?;
    let partial = response.partial_success?;
    if partial.rejected_profiles == 0 && partial.error_message.is_empty() {
        return None;
    }
    Some(format!(
        "{} profile(s) rejected{}",
        partial.rejected_profiles,
        super::client::one_line(&partial.error_message)
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    ))
}

/// A process as a resource: reads of one PID (and start time: a reused
/// PID is another process) under one name and container.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct ProcessKey {
    pid: u32,
    start_time: u64,
    comm: String,
    container: Option<String>,
}

impl ProcessKey {
    fn attributes(&self, host: &str, fixed: &[(String, String)]) -> Vec<KeyValue> {
        let mut attributes = vec![
            string_attribute("service.name", &self.comm),
            string_attribute("process.executable.name", &self.comm),
        ];
        // Reads in interrupt context have no process.
        if self.pid != profiler_common::INTERRUPT_TGID {
            attributes.push(KeyValue {
                key: "process.pid".to_string(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::IntValue(i64::from(self.pid))),
                }),
                ..Default::default()
            });
        }
        if let Some(id) = &self.container {
            attributes.push(string_attribute("container.id", id));
        }
        if !host.is_empty() {
            attributes.push(string_attribute("host.name", host));
        }
        attributes.extend(fixed.iter().map(|(k, v)| string_attribute(k, v)));
        attributes
    }
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(string_value(value)),
        ..Default::default()
    }
}

fn string_value(value: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(value.to_string())),
    }
}

/// This host's name, as `uname -n` gives it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}

/// The request's shared tables, each interning what it holds.
struct Dictionary {
    strings: Vec<String>,
    string_index: HashMap<String, i32>,
    mappings: Vec<otlp::Mapping>,
    mapping_index: HashMap<String, i32>,
    functions: Vec<otlp::Function>,
    locations: Vec<otlp::Location>,
    /// (function name, file) to its location (one per function: the
    /// frames are symbolized names, without addresses).
    location_index: HashMap<(String, String), i32>,
    stacks: Vec<otlp::Stack>,
    stack_index: HashMap<Vec<i32>, i32>,
    attributes: Vec<otlp::KeyValueAndUnit>,
    attribute_index: HashMap<(String, String), i32>,
}

impl Dictionary {
    fn new() -> Dictionary {
        let mut tables = Dictionary {
            strings: Vec::new(),
            string_index: HashMap::new(),
            mappings: vec![otlp::Mapping::default()],
            mapping_index: HashMap::new(),
            functions: vec![otlp::Function::default()],
            locations: vec![otlp::Location::default()],
            location_index: HashMap::new(),
            stacks: vec![otlp::Stack::default()],
            stack_index: HashMap::new(),
            attributes: vec![otlp::KeyValueAndUnit::default()],
            attribute_index: HashMap::new(),
        };
        tables.string("");
        tables
    }

    fn string(&mut self, text: &str) -> i32 {
        if let Some(&index) = self.string_index.get(text) {
            return index;
        }
        let index = self.strings.len() as i32;
        self.strings.push(text.to_string());
        self.string_index.insert(text.to_string(), index);
        index
    }

    fn attribute(&mut self, key: &str, value: &str) -> i32 {
        let entry = (key.to_string(), value.to_string());
        if let Some(&index) = self.attribute_index.get(&entry) {
            return index;
        }
        let index = self.attributes.len() as i32;
        let key_strindex = self.string(key);
        self.attributes.push(otlp::KeyValueAndUnit {
            key_strindex,
            value: Some(string_value(value)),
            unit_strindex: 0,
        });
        self.attribute_index.insert(entry, index);
        index
    }

    fn mapping(&mut self, file: &str) -> i32 {
        if file.is_empty() {
            return 0;
        }
        if let Some(&index) = self.mapping_index.get(file) {
            return index;
        }
        let index = self.mappings.len() as i32;
        let filename_strindex = self.string(file);
        self.mappings.push(otlp::Mapping {
            filename_strindex,
            ..Default::default()
        });
        self.mapping_index.insert(file.to_string(), index);
        index
    }

    fn location(&mut self, function: &str, file: &str) -> i32 {
        let key = (function.to_string(), file.to_string());
        if let Some(&index) = self.location_index.get(&key) {
            return index;
        }
        let name_strindex = self.string(function);
        let function_index = self.functions.len() as i32;
        self.functions.push(otlp::Function {
            name_strindex,
            system_name_strindex: name_strindex,
            ..Default::default()
        });
        let mapping_index = self.mapping(file);
        let index = self.locations.len() as i32;
        self.locations.push(otlp::Location {
            mapping_index,
            lines: vec![otlp::Line {
                function_index,
                ..Default::default()
            }],
            ..Default::default()
        });
        self.location_index.insert(key, index);
        index
    }

    fn stack(&mut self, locations: Vec<i32>) -> i32 {
        if let Some(&index) = self.stack_index.get(&locations) {
            return index;
        }
        let index = self.stacks.len() as i32;
        self.stacks.push(otlp::Stack {
            location_indices: locations.clone(),
        });
        self.stack_index.insert(locations, index);
        index
    }

    fn sample(&mut self, stack: &SymbolizedSample, kernel_functions: &[String]) -> otlp::Sample {
        let mut locations = Vec::with_capacity(stack.frames.len() + 1);
        locations.push(self.location(&stack.read.leaf(kernel_functions), ""));
        for frame in stack.frames.iter().rev() {
            locations
                .push(self.location(&frame.folded_name(), frame.module.as_deref().unwrap_or("")));
        }
        let stack_index = self.stack(locations);
        let attribute_indices = stack
            .read
            .clock()
            .map(|clock| vec![self.attribute("clock", &clock)])
            .unwrap_or_default();
        otlp::Sample {
            stack_index,
            attribute_indices,
            values: vec![stack.count as i64],
            ..Default::default()
        }
    }

    fn finish(self) -> otlp::ProfilesDictionary {
        otlp::ProfilesDictionary {
            mapping_table: self.mappings,
            location_table: self.locations,
            function_table: self.functions,
            link_table: vec![otlp::Link::default()],
            string_table: self.strings,
            attribute_table: self.attributes,
            stack_table: self.stacks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::test_profile;

    /// Each sample as (service.name, source attribute, folded stack from
    /// root to leaf, clock attribute, value).
    fn resolve(
        request: &ExportProfilesServiceRequest,
    ) -> Vec<(String, String, String, String, i64)> {
        let dictionary = request.dictionary.as_ref().unwrap();
        let string = |i: i32| dictionary.string_table[i as usize].clone();
        let attribute = |i: i32| {
            let a = &dictionary.attribute_table[i as usize];
            let Some(any_value::Value::StringValue(v)) =
                a.value.as_ref().and_then(|v| v.value.clone())
            else {
                panic!("string attributes only")
            };
            (string(a.key_strindex), v)
        };
        let mut out = Vec::new();
        for resource in &request.resource_profiles {
            let service = resource
                .resource
                .as_ref()
                .unwrap()
                .attributes
                .iter()
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.clone())
                .and_then(|v| v.value)
                .map(|v| match v {
                    any_value::Value::StringValue(s) => s,
                    _ => panic!("service.name is a string"),
                })
                .unwrap();
            for profile in &resource.scope_profiles[0].profiles {
                let source = attribute(profile.attribute_indices[0]).1;
                for sample in &profile.samples {
                    let stack = &dictionary.stack_table[sample.stack_index as usize];
                    let frames: Vec<String> = stack
                        .location_indices
                        .iter()
                        .rev()
                        .map(|&l| {
                            let location = &dictionary.location_table[l as usize];
                            let function = &dictionary.function_table
                                [location.lines[0].function_index as usize];
                            string(function.name_strindex)
                        })
                        .collect();
                    let clock = sample
                        .attribute_indices
                        .first()
                        .map(|&i| attribute(i).1)
                        .unwrap_or_default();
                    out.push((
                        service.clone(),
                        source.clone(),
                        frames.join(";"),
                        clock,
                        sample.values[0],
                    ));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn windows_become_one_resource_per_process_with_exact_counts() {
        let profile = test_profile::profile();
        let folded: Vec<(String, u64)> = profile
            .stacks
            .iter()
            .map(|s| (s.folded_stack(&profile.info.kernel_functions), s.count))
            .collect();
        let window = Window {
            profile,
            fixed: vec![("cluster".to_string(), "eu-1".to_string())],
            end: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
            version: VERSION,
        };
        let request = window.request("web-1");
        let bytes = request.encode_to_vec();
        let decoded = ExportProfilesServiceRequest::decode(&bytes[..]).unwrap();
        let dictionary = decoded.dictionary.as_ref().unwrap();
        assert_eq!(dictionary.string_table[0], "");
        assert_eq!(dictionary.mapping_table[0], otlp::Mapping::default());
        assert_eq!(dictionary.stack_table[0], otlp::Stack::default());
        assert_eq!(
            dictionary.attribute_table[0],
            otlp::KeyValueAndUnit::default()
        );
        let samples = resolve(&decoded);
        // Every stack of the profile, as its folded line says (the process
        // name first), with its count.
        let mut from_otlp: Vec<(String, u64)> = samples
            .iter()
            .map(|(service, _, frames, _, count)| (format!("{service};{frames}"), *count as u64))
            .collect();
        let mut expected = folded;
        from_otlp.sort();
        expected.sort();
        assert_eq!(from_otlp, expected);
        for resource in &decoded.resource_profiles {
            let keys: Vec<&str> = resource
                .resource
                .as_ref()
                .unwrap()
                .attributes
                .iter()
                .map(|a| a.key.as_str())
                .collect();
            assert!(keys.contains(&"host.name"), "{keys:?}");
            assert!(keys.contains(&"cluster"), "{keys:?}");
            assert!(keys.contains(&"process.executable.name"), "{keys:?}");
        }
    }
}

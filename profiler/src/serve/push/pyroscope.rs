//! `--push`: a Pyroscope server gets one series per process name (and
//! container) with the `service_name` label, each a gzipped pprof as
//! `record -f pprof` writes it, in one of its two APIs (`--push-api`):
//! - `connect` (the default): `push.v1.PusherService/Push`, Connect
//!   protocol, protobuf body, every series of the window in one request;
//! - `ingest`: the older `/ingest?name=...&format=pprof`, one request per
//!   series, for gateways and proxies that let only that path through.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use anyhow::Result;
use bytes::Bytes;
use prost::Message;

use super::client::Outgoing;
use crate::aggregate::{Profile, RecordingInfo};
use crate::serve::metrics::OTHER_PROCESSES;
use crate::serve::series::Series;
use crate::symbolize::SymbolizedSample;

/// `__name__` of the pushed profiles: Pyroscope lists them as
/// `clock:clock_reads:count`.
pub const PROFILE_NAME: &str = "clock";

/// `--push-api`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IngestApi {
    /// push.v1.PusherService/Push (Connect, protobuf): one request a push.
    Connect,
    /// /ingest?format=pprof: one request per series.
    Ingest,
}

impl IngestApi {
    /// The path a `--push` URL without one gets.
    pub fn default_path(self) -> &'static str {
        match self {
            IngestApi::Connect => super::url::CONNECT_PATH,
            IngestApi::Ingest => super::url::INGEST_PATH,
        }
    }
}

/// push.v1.PushRequest, as grafana/pyroscope's api/push/v1/push.proto
/// declares it (common.v1.LabelPair for the labels).
#[derive(Clone, PartialEq, Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<RawProfileSeries>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RawProfileSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RawSample>,
}

#[derive(Clone, PartialEq, Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct RawSample {
    /// A pprof profile, gzipped as `record -f pprof` writes it.
    #[prost(bytes = "vec", tag = "1")]
    pub raw_profile: Vec<u8>,
    #[prost(string, tag = "2")]
    pub id: String,
}

/// A pushed series: process name and container id.
pub type Service = (String, Option<String>);

/// One push before it is encoded: each series' labels and stacks. The read
/// loop only groups; the pprofs are built and gzipped by the sender.
pub struct Grouped {
    api: IngestApi,
    info: RecordingInfo,
    series: Vec<(Vec<LabelPair>, Vec<SymbolizedSample>)>,
    /// The window's wall-clock end, for /ingest's `until`.
    end: SystemTime,
}

/// One series per process name (and container); past the series cap, one
/// `[other]` series, as the metrics have (its samples keep their `comm`
/// label). Read at `now`; the window ended at `end`.
pub fn group(
    profile: Profile,
    api: IngestApi,
    fixed: &[(String, String)],
    series: &mut Series<Service>,
    now: Instant,
    end: SystemTime,
) -> Grouped {
    series.expire(now);
    let mut services: BTreeMap<Service, Vec<_>> = BTreeMap::new();
    for stack in profile.stacks {
        let container = stack
            .cgroup
            .as_deref()
            .and_then(crate::host::container::container_id)
            .map(str::to_string);
        let mut service = (stack.comm.clone(), container);
        if !series.admit(&service, now) {
            service = (OTHER_PROCESSES.to_string(), None);
            series.keep(&service, now);
        }
        services.entry(service).or_default().push(stack);
    }
    let series = services
        .into_iter()
        .map(|((service, container), stacks)| {
            let mut labels = vec![
                label("__name__", PROFILE_NAME),
                label("service_name", &service),
            ];
            if let Some(id) = container {
                labels.push(label("container_id", &id));
            }
            labels.extend(fixed.iter().map(|(k, v)| label(k, v)));
            (labels, stacks)
        })
        .collect();
    Grouped {
        api,
        info: profile.info,
        series,
        end,
    }
}

impl Grouped {
    /// The push's requests: one Connect request of every series, or one
    /// /ingest request per series.
    pub fn encode(self) -> Result<Vec<Outgoing>> {
        let duration = self.info.duration;
        let mut series = Vec::with_capacity(self.series.len());
        for (labels, stacks) in self.series {
            let one = Profile::new(stacks, self.info.clone());
            let raw_profile = crate::export::pprof::FORMAT.render(&one)?;
            series.push((labels, raw_profile));
        }
        Ok(match self.api {
            IngestApi::Connect => {
                let request = PushRequest {
                    series: series
                        .into_iter()
                        .map(|(labels, raw_profile)| RawProfileSeries {
                            labels,
                            samples: vec![RawSample {
                                raw_profile,
                                id: String::new(),
                            }],
                        })
                        .collect(),
                };
                vec![Outgoing {
                    query: String::new(),
                    content_type: "application/proto",
                    protocol_headers: vec![("connect-protocol-version", "1".to_string())],
                    body: Bytes::from(request.encode_to_vec()),
                    partial_failure: None,
                }]
            }
            IngestApi::Ingest => {
                let until = unix_seconds(self.end);
                let from = until.saturating_sub(duration.as_secs().max(1));
                series
                    .into_iter()
                    .map(|(labels, raw_profile)| Outgoing {
                        query: format!(
                            "?name={}&from={from}&until={until}&format=pprof&spyName=clockprof",
                            percent_encode(&ingest_name(&labels))
                        ),
                        content_type: "application/octet-stream",
                        protocol_headers: Vec::new(),
                        body: Bytes::from(raw_profile),
                        partial_failure: None,
                    })
                    .collect()
            }
        })
    }
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// /ingest's `name`: the service, then the other labels in braces,
/// `clockprof-app{container_id=abc,host=web-1}`. The syntax has no
/// escapes, so `{`, `}`, `,` and `=` in a value (a process may name itself
/// anything) become `_`.
fn ingest_name(labels: &[LabelPair]) -> String {
    let clean = |v: &str| v.replace(['{', '}', ',', '=', '"'], "_");
    let service = labels
        .iter()
        .find(|l| l.name == "service_name")
        .map(|l| clean(&l.value))
        .unwrap_or_default();
    let rest: Vec<String> = labels
        .iter()
        .filter(|l| l.name != "service_name" && l.name != "__name__")
        .map(|l| format!("{}={}", l.name, clean(&l.value)))
        .collect();
    format!("{service}{{{}}}", rest.join(","))
}

/// Percent-encodes all but the unreserved characters (RFC 3986).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn label(name: &str, value: &str) -> LabelPair {
    LabelPair {
        name: name.to_string(),
        value: value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stack(pid: u32, comm: &str) -> SymbolizedSample {
        let read = (profiler_common::sources::syscall::CLOCK_GETTIME, 1);
        crate::aggregate::test_profile::sample(pid, comm, read, Vec::new(), 1)
    }

    fn profile(comms: &[&str]) -> Profile {
        let stacks = comms
            .iter()
            .zip(1..)
            .map(|(c, pid)| stack(pid, c))
            .collect();
        Profile::new(stacks, RecordingInfo::default())
    }

    #[test]
    fn pushes_keep_to_the_series_cap_and_idle_series_make_room() {
        let names = |push: &Grouped| -> Vec<String> {
            let mut names: Vec<String> = push
                .series
                .iter()
                .flat_map(|(labels, _)| labels)
                .filter(|l| l.name == "service_name")
                .map(|l| l.value.clone())
                .collect();
            names.sort();
            names
        };
        let ttl = Duration::from_secs(600);
        let mut series = Series::new(2, ttl);
        let start = Instant::now();
        let end = SystemTime::now();
        let api = IngestApi::Connect;
        let first = group(profile(&["a", "b"]), api, &[], &mut series, start, end);
        assert_eq!(names(&first), ["a", "b"]);
        let later = group(
            profile(&["a", "c"]),
            api,
            &[],
            &mut series,
            start + ttl / 2,
            end,
        );
        assert_eq!(names(&later), ["[other]", "a"]);
        // "b" went quiet for the TTL: "c" gets its own series.
        let past = group(profile(&["c"]), api, &[], &mut series, start + ttl, end);
        assert_eq!(names(&past), ["c"]);
        let requests = past.encode().unwrap();
        assert_eq!(requests.len(), 1);
        let decoded = PushRequest::decode(&requests[0].body[..]).unwrap();
        assert_eq!(decoded.series.len(), 1);
        assert_eq!(decoded.series[0].samples.len(), 1);
    }

    #[test]
    fn ingest_sends_one_request_per_series_named_with_its_labels() {
        let mut series = Series::new(10, Duration::from_secs(600));
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let fixed = [("host".to_string(), "web-1".to_string())];
        let mut window = profile(&["svc", "we{ir}d,x=y"]);
        window.info.duration = Duration::from_secs(15);
        let grouped = group(
            window,
            IngestApi::Ingest,
            &fixed,
            &mut series,
            Instant::now(),
            end,
        );
        let requests = grouped.encode().unwrap();
        let paths: Vec<&str> = requests.iter().map(|r| r.query.as_str()).collect();
        assert_eq!(
            paths,
            [
                "?name=svc%7Bhost%3Dweb-1%7D&from=1799999985&until=1800000000&format=pprof&spyName=clockprof",
                "?name=we_ir_d_x_y%7Bhost%3Dweb-1%7D&from=1799999985&until=1800000000&format=pprof&spyName=clockprof",
            ]
        );
        // The body is the gzipped pprof itself.
        assert_eq!(&requests[0].body[..2], &[0x1f, 0x8b]);
    }
}

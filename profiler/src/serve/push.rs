//! `--push URL`: every `--push-interval` seconds, the interval's clock reads
//! go to a Pyroscope server's push API (`/push.v1.PusherService/Push`,
//! Connect protocol, protobuf body), one series per process name with the
//! `service_name` label. The read loop only queues: a sender task posts,
//! with a timeout, from a queue of PUSH_QUEUE; a push that finds the queue
//! full, fails or times out is dropped and counted, so a down or slow server
//! costs neither the probes nor memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::sync::mpsc;

use super::accumulate::Accumulated;
use super::limits::{PUSH_QUEUE, PUSH_TIMEOUT};
use super::metrics::{reason, OTHER_PROCESSES};
use super::series::Series;
use super::{Batch, Shared};
use crate::aggregate::{Profile, RecordingInfo};
use crate::say::warning;
use crate::symbolize::SymbolizedSample;

/// The API's path, appended to a URL given without one.
pub const PUSH_PATH: &str = "/push.v1.PusherService/Push";
/// `__name__` of the pushed profiles: Pyroscope lists them as
/// `clock:clock_reads:count`.
pub const PROFILE_NAME: &str = "clock";

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

/// `--push URL`, as parsed: a URL holding credentials is let through here
/// and refused by serve with a sentence of its own, as clap's error would
/// repeat the value, password included.
#[derive(Clone, Debug)]
pub enum PushUrl {
    Endpoint(Uri),
    WithCredentials,
}

/// Why a URL with `user:password@` is refused.
pub const CREDENTIALS_IN_URL: &str = "--push: the URL holds a user or password, which anyone \
    can read in ps and logs: give --push-user with --push-password-file, or \
    --push-bearer-token-file";

/// `--push`'s value: see `endpoint`, and PushUrl.
pub fn push_url(url: &str) -> Result<PushUrl, String> {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = authority.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Ok(PushUrl::WithCredentials);
    }
    endpoint(url).map(PushUrl::Endpoint)
}

/// `--push`'s URL without credentials (push_url sets those apart): http
/// or https (verified against the system's roots and
/// `--push-ca-file`), with the API's path added if it has none.
fn endpoint(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|_| "not a URL such as https://pyroscope:4040".to_string())?;
    let scheme = match uri.scheme_str() {
        Some(scheme @ ("http" | "https")) => scheme.to_string(),
        _ => return Err("not a URL such as https://pyroscope:4040".to_string()),
    };
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL names no host".to_string());
    }
    if uri.query().is_some() {
        return Err("the URL may not have a query".to_string());
    }
    let path = match uri.path() {
        "" | "/" => PUSH_PATH.to_string(),
        path => path.to_string(),
    };
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    format!("{scheme}://{authority}{path}")
        .parse()
        .map_err(|_| "not a URL such as https://pyroscope:4040".to_string())
}

/// Where and how each push goes: the URL, the headers every push carries
/// (push_auth) and, for https, the TLS client's configuration (push_tls).
pub struct Target {
    pub url: Uri,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

pub struct Pusher {
    stacks: Accumulated,
    since: Instant,
    queue: mpsc::Sender<Grouped>,
    sender: tokio::task::JoinHandle<()>,
    fixed: Vec<(String, String)>,
    /// The series pushed, under the metrics' cap and TTL.
    series: Series<Service>,
}

/// A pushed series: process name and container id.
type Service = (String, Option<String>);

impl Pusher {
    pub fn start(
        target: Target,
        interval: Duration,
        fixed: &[(String, String)],
        max_series: usize,
        series_ttl: Duration,
        shared: Arc<Shared>,
    ) -> Pusher {
        let (queue, pushes) = mpsc::channel(PUSH_QUEUE);
        let timeout = PUSH_TIMEOUT.min(interval);
        let sender = tokio::spawn(send_all(pushes, target, timeout, shared));
        Pusher {
            stacks: Accumulated::default(),
            since: Instant::now(),
            queue,
            sender,
            fixed: fixed.to_vec(),
            series: Series::new(max_series, series_ttl),
        }
    }

    /// Returns reads dropped past the stack cap.
    pub fn feed(&mut self, batch: &Batch) -> u64 {
        self.stacks.add(batch)
    }

    /// Queues the interval's profiles, or counts them lost when the queue is
    /// full. An interval without reads pushes nothing.
    pub fn flush(&mut self, shared: &Shared) {
        let now = Instant::now();
        let profile = self
            .stacks
            .take_profile(&shared.info(), now.duration_since(self.since));
        self.since = now;
        if profile.stacks.is_empty() {
            return;
        }
        let push = group(profile, &self.fixed, &mut self.series, now);
        if self.queue.try_send(push).is_err() {
            shared.metrics.lose(reason::PUSH, 1);
        }
    }
}

impl Drop for Pusher {
    fn drop(&mut self) {
        self.sender.abort();
    }
}

/// One push before it is encoded: each series' labels and stacks. The read
/// loop only groups; the pprofs are built and gzipped by the sender, off
/// the read loop and the HTTP worker.
pub struct Grouped {
    info: RecordingInfo,
    series: Vec<(Vec<LabelPair>, Vec<SymbolizedSample>)>,
}

/// One series per process name (and container); past the series cap, one
/// `[other]` series, as the metrics have (its samples keep their `comm`
/// label). Read at `now`.
pub fn group(
    profile: Profile,
    fixed: &[(String, String)],
    series: &mut Series<Service>,
    now: Instant,
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
        info: profile.info,
        series,
    }
}

impl Grouped {
    /// The push request's body: a gzipped pprof per series.
    pub fn encode(self) -> Result<Vec<u8>> {
        let mut series = Vec::with_capacity(self.series.len());
        for (labels, stacks) in self.series {
            let one = Profile::new(stacks, self.info.clone());
            let raw_profile = crate::export::pprof::FORMAT.render(&one)?;
            series.push(RawProfileSeries {
                labels,
                samples: vec![RawSample {
                    raw_profile,
                    id: String::new(),
                }],
            });
        }
        Ok(PushRequest { series }.encode_to_vec())
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    LabelPair {
        name: name.to_string(),
        value: value.to_string(),
    }
}

/// Posts each queued body; failures are counted and said at most once a
/// minute.
async fn send_all(
    mut pushes: mpsc::Receiver<Grouped>,
    target: Target,
    timeout: Duration,
    shared: Arc<Shared>,
) {
    let mut last_warning: Option<Instant> = None;
    while let Some(push) = pushes.recv().await {
        let outcome = match tokio::task::spawn_blocking(move || push.encode()).await {
            Ok(Ok(body)) => match tokio::time::timeout(timeout, post(&target, body)).await {
                Ok(result) => result,
                Err(_) => Err(anyhow::anyhow!(
                    "no answer within {:.0} s",
                    timeout.as_secs_f64()
                )),
            },
            Ok(Err(err)) => Err(err.context("could not render it")),
            Err(err) => Err(anyhow::anyhow!("could not render it: {err}")),
        };
        if let Err(err) = outcome {
            shared.metrics.lose(reason::PUSH, 1);
            if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                last_warning = Some(Instant::now());
                warning!(
                    "a push to {} was dropped: {err:#} (counted in clockprof_lost_events_total{{reason=\"push\"}})",
                    target.url
                );
            }
        }
    }
}

/// One POST on its own connection (a push every interval needs no pool),
/// over TLS for https; dropping this future closes the connection.
async fn post(target: &Target, body: Vec<u8>) -> Result<()> {
    let url = &target.url;
    let host = url.host().unwrap_or_default().trim_matches(['[', ']']);
    let https = url.scheme_str() == Some("https");
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .context("could not connect")?;
    let authority = url.authority().map(|a| a.as_str()).unwrap_or(host);
    let mut request = Request::post(url.path())
        .header(HOST, authority)
        .header(CONTENT_TYPE, "application/proto")
        .header("connect-protocol-version", "1");
    for (name, value) in &target.headers {
        request = request.header(name, value);
    }
    let request = request.body(Full::new(Bytes::from(body)))?;
    let status = match (&target.tls, https) {
        (Some(tls), true) => {
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .context("the URL's host is not a TLS server name")?;
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, stream)
                .await
                .context("the TLS handshake failed")?;
            exchange(stream, request).await?
        }
        (None, true) => bail!("https without a TLS configuration"),
        (_, false) => exchange(stream, request).await?,
    };
    if !status.is_success() {
        bail!("the server answered {status}");
    }
    Ok(())
}

/// Sends `request` on `stream` and waits for the answer's status. The
/// connection is driven by a task of its own, so that an answer followed at
/// once by the server's close is still read: racing the two (as this did)
/// took such a push for failed, and a retry then sent it twice. Ending
/// here (or being dropped by the timeout) closes the connection.
async fn exchange<S>(stream: S, request: Request<Full<Bytes>>) -> Result<hyper::StatusCode>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await?;
    let _connection = super::AbortOnDrop(tokio::spawn(connection));
    let response = sender
        .send_request(request)
        .await
        .context("the server closed the connection or did not answer")?;
    Ok(response.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_urls_are_http_or_https_with_the_api_path_and_no_password() {
        assert_eq!(
            endpoint("http://127.0.0.1:4040").unwrap().to_string(),
            "http://127.0.0.1:4040/push.v1.PusherService/Push"
        );
        assert_eq!(
            endpoint("http://pyro:4040/").unwrap().to_string(),
            "http://pyro:4040/push.v1.PusherService/Push"
        );
        assert_eq!(
            endpoint("http://pyro/custom/Push").unwrap().to_string(),
            "http://pyro/custom/Push"
        );
        assert_eq!(
            endpoint("https://profiles.example:443")
                .unwrap()
                .to_string(),
            "https://profiles.example:443/push.v1.PusherService/Push"
        );
        for with_credentials in ["https://user:secret@x", "http://token@x/path", "u:p@x"] {
            assert!(
                matches!(push_url(with_credentials), Ok(PushUrl::WithCredentials)),
                "{with_credentials}"
            );
        }
        assert!(matches!(push_url("http://x/a@b"), Ok(PushUrl::Endpoint(_))));
        for bad in ["pyro:4040", "ftp://x", "http://", "http://x/?a=1", ""] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pushes_keep_to_the_series_cap_and_idle_series_make_room() {
        use crate::aggregate::RecordingInfo;
        use crate::sources::ClockRead;
        use crate::symbolize::{StackState, SymbolizedSample};
        let stack = |pid: u32, comm: &str| SymbolizedSample {
            pid,
            start_time: 0,
            comm: comm.to_string(),
            cgroup: None,
            read: ClockRead {
                event: profiler_common::sources::syscall::CLOCK_GETTIME,
                clock_id: 1,
            },
            frames: Vec::new(),
            state: StackState::Complete,
            exact_frames: 0,
            count: 1,
        };
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
        let profile = |comms: &[&str]| {
            let stacks = comms
                .iter()
                .zip(1..)
                .map(|(c, pid)| stack(pid, c))
                .collect();
            Profile::new(stacks, RecordingInfo::default())
        };
        let first = group(profile(&["a", "b"]), &[], &mut series, start);
        assert_eq!(names(&first), ["a", "b"]);
        let later = group(profile(&["a", "c"]), &[], &mut series, start + ttl / 2);
        assert_eq!(names(&later), ["[other]", "a"]);
        // "b" went quiet for the TTL: "c" gets its own series.
        let past = group(profile(&["c"]), &[], &mut series, start + ttl);
        assert_eq!(names(&past), ["c"]);
        let body = past.encode().unwrap();
        let decoded = PushRequest::decode(&body[..]).unwrap();
        assert_eq!(decoded.series.len(), 1);
        assert_eq!(decoded.series[0].samples.len(), 1);
    }
}

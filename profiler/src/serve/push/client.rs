//! The sender task every push target runs: it takes queued windows, has
//! them encoded off the read loop, and posts each request on a connection
//! of its own (a push every interval needs no pool), over TLS for https.
//! A request that got no answer, 429 or a 5xx is tried again with
//! exponential backoff and jitter; a push given up is counted, with why,
//! and said at most once a minute with what the server answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::sync::mpsc;

use super::Window;
use crate::say::warning;
use crate::serve::Shared;

/// Where and how each push goes: the URL, the headers every push carries
/// (push::auth) and, for https, the TLS client's configuration (push::tls).
pub struct Target {
    pub url: Uri,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// One HTTP request of a push: a Connect or OTLP push is one, an /ingest
/// push one per series.
pub struct Outgoing {
    /// `?...` after the target URL's path, or nothing.
    pub query: String,
    pub content_type: &'static str,
    /// Headers the protocol needs (Connect's version, OTLP profiles').
    pub protocol_headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    /// What a 2xx answer's body may still say went wrong (OTLP's partial
    /// success): the server took the request, but not all of it.
    pub partial_failure: Option<PartialFailure>,
}

/// Reads a 2xx answer's body: what the server did not take, if anything.
pub type PartialFailure = fn(&[u8]) -> Option<String>;

/// How many times one request is tried.
const ATTEMPTS: u32 = 3;
/// The wait before the first retry; it doubles for each next one.
const RETRY_BASE: Duration = Duration::from_millis(500);
/// How much of an error answer is read, to say what the server said.
const MAX_ERROR_BODY: usize = 4096;

/// Posts each queued window until the queue closes.
pub async fn send_all(
    mut pushes: mpsc::Receiver<Window>,
    target: Target,
    endpoint: &'static str,
    timeout: Duration,
    shared: Arc<Shared>,
) {
    let mut last_warning: Option<Instant> = None;
    while let Some(push) = pushes.recv().await {
        let outcome = match tokio::task::spawn_blocking(move || push.encode()).await {
            Ok(Ok(requests)) => send_push(&target, requests, timeout).await,
            // Rendering the same window again would fail the same way.
            Ok(Err(err)) => Err(Failure::fin("render", err.context("could not render it"))),
            Err(err) => Err(Failure::fin(
                "render",
                anyhow!("could not render it: {err}"),
            )),
        };
        if let Err(failure) = outcome {
            shared.metrics.push_failed(endpoint, &failure.cause);
            if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                last_warning = Some(Instant::now());
                warning!(
                    "a push to {} was dropped: {:#} (counted in clockprof_push_failures_total{{endpoint=\"{}\",cause=\"{}\"}})",
                    target.url,
                    failure.error,
                    endpoint,
                    failure.cause
                );
            }
        }
    }
}

/// Sends a push's requests in turn; the first that fails for good fails
/// the push (an /ingest push's series sent before it stay sent).
async fn send_push(
    target: &Target,
    requests: Vec<Outgoing>,
    timeout: Duration,
) -> Result<(), Failure> {
    for request in &requests {
        send_with_retries(target, request, timeout).await?;
    }
    Ok(())
}

async fn send_with_retries(
    target: &Target,
    request: &Outgoing,
    timeout: Duration,
) -> Result<(), Failure> {
    let mut attempt = 0;
    loop {
        let outcome = match tokio::time::timeout(timeout, post(target, request)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::retryable(
                "timeout",
                anyhow!("no answer within {:.0} s", timeout.as_secs_f64()),
            )),
        };
        attempt += 1;
        match outcome {
            Ok(()) => return Ok(()),
            Err(failure) if failure.retry && attempt < ATTEMPTS => {
                tokio::time::sleep(backoff(attempt, timeout, jitter())).await;
            }
            Err(mut failure) => {
                if failure.retry {
                    failure.error = failure.error.context(format!("{attempt} attempts"));
                }
                return Err(failure);
            }
        }
    }
}

/// The wait before try `attempt + 1`: RETRY_BASE doubled per attempt made,
/// scaled by `jitter` in [0.5, 1], and at most `limit` (the per-try
/// timeout, itself at most the interval).
fn backoff(attempt: u32, limit: Duration, jitter: f64) -> Duration {
    let doubled = RETRY_BASE.saturating_mul(1 << (attempt - 1).min(16));
    doubled.mul_f64(jitter.clamp(0.5, 1.0)).min(limit)
}

/// A factor in [0.5, 1] that differs from host to host and push to push,
/// so that a fleet whose server came back does not retry in step: from the
/// clock's nanoseconds, which is spread enough for this.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    0.5 + f64::from(nanos % 1000) / 2000.0
}

/// Why a push failed: `cause` for the metric's label (a fixed word, or
/// `http_` and the status), and whether another try may help (not after a
/// 4xx other than 429: the server refused the push as it is).
pub struct Failure {
    pub cause: String,
    pub error: anyhow::Error,
    retry: bool,
}

impl Failure {
    fn retryable(cause: &str, error: anyhow::Error) -> Failure {
        Failure {
            cause: cause.to_string(),
            error,
            retry: true,
        }
    }

    fn fin(cause: &str, error: anyhow::Error) -> Failure {
        Failure {
            cause: cause.to_string(),
            error,
            retry: false,
        }
    }
}

/// One POST on its own connection; dropping this future closes it.
async fn post(target: &Target, outgoing: &Outgoing) -> Result<(), Failure> {
    let url = &target.url;
    let host = url.host().unwrap_or_default().trim_matches(['[', ']']);
    let https = url.scheme_str() == Some("https");
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .context("could not connect")
        .map_err(|e| Failure::retryable("connect", e))?;
    let authority = url.authority().map(|a| a.as_str()).unwrap_or(host);
    let path = format!("{}{}", url.path(), outgoing.query);
    let mut request = Request::post(path.as_str())
        .header(HOST, authority)
        .header(CONTENT_TYPE, outgoing.content_type);
    for (name, value) in &outgoing.protocol_headers {
        request = request.header(*name, value.as_str());
    }
    for (name, value) in &target.headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(outgoing.body.clone()))
        .map_err(|e| Failure::fin("request", e.into()))?;
    let response = match (&target.tls, https) {
        (Some(tls), true) => {
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .context("the URL's host is not a TLS server name")
                .map_err(|e| Failure::fin("tls", e))?;
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, stream)
                .await
                .context("the TLS handshake failed")
                .map_err(|e| Failure::retryable("tls", e))?;
            exchange(stream, request).await?
        }
        (None, true) => {
            return Err(Failure::fin(
                "tls",
                anyhow!("https without a TLS configuration"),
            ))
        }
        (_, false) => exchange(stream, request).await?,
    };
    let status = response.status;
    if status.is_success() {
        let said = outgoing
            .partial_failure
            .and_then(|check| check(&response.body));
        return match said {
            Some(said) => Err(Failure::fin(
                "partial",
                anyhow!("the server took part of it: {said}"),
            )),
            None => Ok(()),
        };
    }
    let mut said = format!("the server answered {status}");
    if let Some(message) = response.message {
        said.push_str(&format!(": {message}"));
    }
    let cause = format!("http_{}", status.as_u16());
    match status.as_u16() {
        429 | 500..=599 => Err(Failure::retryable(&cause, anyhow!(said))),
        _ => Err(Failure::fin(&cause, anyhow!(said))),
    }
}

/// What came back: the status, for an error what the server said (its
/// first line of text, or an OTLP google.rpc.Status's message), and the
/// body (at most MAX_ERROR_BODY) of a success.
struct Answer {
    status: hyper::StatusCode,
    message: Option<String>,
    body: Bytes,
}

/// Sends `request` on `stream` and waits for the answer. The connection is
/// driven by a task of its own, so that an answer followed at once by the
/// server's close is still read: racing the two took such a push for
/// failed, and a retry then sent it twice. Ending here (or being dropped
/// by the timeout) closes the connection.
async fn exchange<S>(stream: S, request: Request<Full<Bytes>>) -> Result<Answer, Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::retryable("closed", e.into()))?;
    let _connection = crate::serve::AbortOnDrop(tokio::spawn(connection));
    let response = sender
        .send_request(request)
        .await
        .context("the server closed the connection or did not answer")
        .map_err(|e| Failure::retryable("closed", e))?;
    let status = response.status();
    let protobuf = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("protobuf") || t.contains("application/proto"));
    let body = Limited::new(response.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok(Answer {
        status,
        message: (!status.is_success())
            .then(|| error_message(&body, protobuf))
            .flatten(),
        body,
    })
}

/// google.rpc.Status, which OTLP receivers answer errors with.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// What an error answer says, fit for one log line: the Status message of
/// a protobuf answer, else the body's first line.
fn error_message(body: &[u8], protobuf: bool) -> Option<String> {
    let text = match protobuf {
        true => RpcStatus::decode(body).ok()?.message,
        false => String::from_utf8_lossy(body)
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
    };
    one_line(&text)
}

/// `text` fit for one log line: at most 300 characters, without control
/// characters (a hostile server writes into our log); None when empty.
pub fn one_line(text: &str) -> Option<String> {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    let clean = clean.trim();
    (!clean.is_empty()).then(|| clean.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_with_jitter_within_the_timeout() {
        let minute = Duration::from_secs(60);
        assert_eq!(backoff(1, minute, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(2, minute, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, minute, 0.5), Duration::from_secs(1));
        assert_eq!(
            backoff(2, Duration::from_millis(700), 1.0),
            Duration::from_millis(700)
        );
        assert_eq!(backoff(40, minute, 1.0), minute);
        for _ in 0..100 {
            assert!((0.5..=1.0).contains(&jitter()));
        }
    }

    #[test]
    fn error_answers_become_one_clean_line() {
        let status = RpcStatus {
            code: 3,
            message: "proto: cannot parse invalid wire-format data".to_string(),
        };
        assert_eq!(
            error_message(&status.encode_to_vec(), true).as_deref(),
            Some("proto: cannot parse invalid wire-format data")
        );
        assert_eq!(
            error_message(b"bad\x1b[31m tenant\nsecond line", false).as_deref(),
            Some("bad [31m tenant")
        );
        assert_eq!(error_message(b"", false), None);
        assert_eq!(error_message(b"\xff\xff", true), None);
        assert_eq!(error_message(&[b'x'; 1000], false).unwrap().len(), 300);
    }
}

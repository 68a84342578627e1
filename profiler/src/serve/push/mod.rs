//! Pushes: every `--push-interval` seconds the interval's clock reads go to
//! a Pyroscope server (`--push`, pyroscope) and to an OTLP receiver
//! (`--otlp`, otlp). Each target is a Pusher: the read loop feeds it and
//! only queues the interval's window; a sender task (client) encodes and
//! posts it, from a queue of PUSH_QUEUE. A window that finds the queue
//! full, or that the server does not take after its retries, is dropped
//! and counted, so a down or slow server costs neither the probes nor
//! memory.

pub mod auth;
mod client;
pub mod otlp;
mod pyroscope;
pub mod tls;
pub mod url;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use tokio::sync::mpsc;

use super::accumulate::Accumulated;
use super::limits::{PUSH_QUEUE, PUSH_TIMEOUT};
use super::series::Series;
use super::{Batch, Shared};
use crate::aggregate::Profile;
pub use client::Target;
pub use pyroscope::IngestApi;

/// What a target is sent, in which form.
#[derive(Clone, Copy, Debug)]
pub enum Protocol {
    Pyroscope(IngestApi),
    /// With the profiles version header to send (otlp::VERSION).
    Otlp(u32),
}

impl Protocol {
    /// How the target is named in metrics and warnings.
    pub fn endpoint(self) -> &'static str {
        match self {
            Protocol::Pyroscope(_) => "pyroscope",
            Protocol::Otlp(_) => "otlp",
        }
    }
}

/// What a window is grouped with before it is queued.
enum Form {
    /// The series pushed so far, under the metrics' cap and TTL.
    Pyroscope(IngestApi, Series<pyroscope::Service>),
    Otlp(u32),
}

/// Every push target, fed from one accumulation of the interval's stacks:
/// with `--push` and `--otlp` both, the reads are merged once, not once per
/// target.
pub struct Pushes {
    stacks: Accumulated,
    since: Instant,
    pushers: Vec<Pusher>,
}

impl Pushes {
    pub fn new(pushers: Vec<Pusher>) -> Pushes {
        Pushes {
            stacks: Accumulated::default(),
            since: Instant::now(),
            pushers,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pushers.is_empty()
    }

    /// Returns reads dropped past the stack cap.
    pub fn feed(&mut self, batch: &Batch) -> u64 {
        if self.pushers.is_empty() {
            return 0;
        }
        self.stacks.add(batch)
    }

    /// Hands the interval's profile to each target. An interval without
    /// reads pushes nothing.
    pub fn flush(&mut self, shared: &Shared) {
        let now = Instant::now();
        let duration = now.duration_since(self.since);
        let profile = self.stacks.take_profile(&shared.info(), duration);
        self.since = now;
        if profile.stacks.is_empty() {
            return;
        }
        let end = SystemTime::now();
        // Each target groups the profile its own way; all but the last get
        // a copy.
        let mut profile = Some(profile);
        let last = self.pushers.len().saturating_sub(1);
        for (index, pusher) in self.pushers.iter_mut().enumerate() {
            let this = if index == last {
                profile.take()
            } else {
                profile.clone()
            };
            if let Some(this) = this {
                pusher.queue_window(this, now, end, shared);
            }
        }
    }
}

/// One target: the read loop queues its windows, the sender task (client)
/// encodes and posts them.
pub struct Pusher {
    form: Form,
    queue: mpsc::Sender<Window>,
    sender: tokio::task::JoinHandle<()>,
    endpoint: &'static str,
    fixed: Vec<(String, String)>,
}

impl Pusher {
    pub fn start(
        target: Target,
        protocol: Protocol,
        interval: Duration,
        fixed: &[(String, String)],
        max_series: usize,
        series_ttl: Duration,
        shared: Arc<Shared>,
    ) -> Pusher {
        let (queue, pushes) = mpsc::channel(PUSH_QUEUE);
        let timeout = PUSH_TIMEOUT.min(interval);
        let endpoint = protocol.endpoint();
        let sender = tokio::spawn(client::send_all(pushes, target, endpoint, timeout, shared));
        let form = match protocol {
            Protocol::Pyroscope(api) => Form::Pyroscope(api, Series::new(max_series, series_ttl)),
            Protocol::Otlp(version) => Form::Otlp(version),
        };
        Pusher {
            form,
            queue,
            sender,
            endpoint,
            fixed: fixed.to_vec(),
        }
    }

    /// Queues a window, or counts it lost when the queue is full.
    fn queue_window(&mut self, profile: Profile, now: Instant, end: SystemTime, shared: &Shared) {
        let window = match &mut self.form {
            Form::Pyroscope(api, series) => Window::Pyroscope(pyroscope::group(
                profile,
                *api,
                &self.fixed,
                series,
                now,
                end,
            )),
            Form::Otlp(version) => Window::Otlp(otlp::Window {
                profile,
                fixed: self.fixed.clone(),
                end,
                version: *version,
            }),
        };
        if self.queue.try_send(window).is_err() {
            shared.metrics.push_failed(self.endpoint, "queue_full");
        }
    }
}

impl Drop for Pusher {
    fn drop(&mut self) {
        self.sender.abort();
    }
}

/// One interval's reads, grouped by the read loop for their protocol, and
/// encoded by the sender, off the read loop and the HTTP worker.
pub enum Window {
    Pyroscope(pyroscope::Grouped),
    Otlp(otlp::Window),
}

impl Window {
    fn encode(self) -> Result<Vec<client::Outgoing>> {
        match self {
            Window::Pyroscope(grouped) => grouped.encode(),
            Window::Otlp(window) => window.encode().map(|request| vec![request]),
        }
    }
}

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
pub use client::Target;
pub use pyroscope::IngestApi;

/// What a target is sent, in which form.
#[derive(Clone, Copy, Debug)]
pub enum Protocol {
    Pyroscope(IngestApi),
    /// With the profiles version header to send (otlp::VERSION).
    Otlp(u32),
}

pub struct Pusher {
    protocol: Protocol,
    stacks: Accumulated,
    since: Instant,
    queue: mpsc::Sender<Window>,
    sender: tokio::task::JoinHandle<()>,
    name: &'static str,
    fixed: Vec<(String, String)>,
    /// The Pyroscope series pushed, under the metrics' cap and TTL.
    series: Series<pyroscope::Service>,
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
        let name = target.name;
        let sender = tokio::spawn(client::send_all(pushes, target, timeout, shared));
        Pusher {
            protocol,
            stacks: Accumulated::default(),
            since: Instant::now(),
            queue,
            sender,
            name,
            fixed: fixed.to_vec(),
            series: Series::new(max_series, series_ttl),
        }
    }

    /// Returns reads dropped past the stack cap.
    pub fn feed(&mut self, batch: &Batch) -> u64 {
        self.stacks.add(batch)
    }

    /// Queues the interval's window, or counts it lost when the queue is
    /// full. An interval without reads pushes nothing.
    pub fn flush(&mut self, shared: &Shared) {
        let now = Instant::now();
        let duration = now.duration_since(self.since);
        let profile = self.stacks.take_profile(&shared.info(), duration);
        self.since = now;
        if profile.stacks.is_empty() {
            return;
        }
        let end = SystemTime::now();
        let window = match self.protocol {
            Protocol::Pyroscope(api) => Window::Pyroscope(pyroscope::group(
                profile,
                api,
                &self.fixed,
                &mut self.series,
                now,
                end,
            )),
            Protocol::Otlp(version) => Window::Otlp(otlp::Window {
                profile,
                fixed: self.fixed.clone(),
                end,
                version,
            }),
        };
        if self.queue.try_send(window).is_err() {
            shared.metrics.push_failed(self.name, "queue_full");
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

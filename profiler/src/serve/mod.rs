//! `clockprof serve`: a daemon that keeps the probes attached host-wide and
//! feeds the fleet's engines. Every READ_INTERVAL the read loop takes what
//! the kernel counted since the last read (kernel), symbolizes it once, and
//! feeds the metrics, the open profile windows and the next push; the HTTP
//! server and the push sender run beside it and only read what it made.
//! One module per endpoint and job: metrics, pprof_endpoint, health, push,
//! with their bounds in limits.

mod accumulate;
mod health;
mod http;
mod kernel;
pub mod limits;
pub mod listen;
mod metrics;
pub mod options;
mod pprof_endpoint;
pub mod push;
mod series;
pub mod web_config;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tokio::sync::Notify;

use crate::aggregate::RecordingInfo;
use crate::collect::LostCounts;
use crate::say::{say, warning};
use crate::session::wakeups::{Wakeup, Wakeups};
use crate::session::Session;
use crate::symbolize::SymbolizedSample;
use options::ServeArgs;

/// What one read of the kernel brought: the reads counted in `since..until`.
pub struct Batch {
    pub since: Instant,
    pub until: Instant,
    pub samples: Vec<SymbolizedSample>,
    pub lost: LostCounts,
}

/// What the read loop shares with the HTTP server and the push sender.
pub struct Shared {
    metrics: metrics::Metrics,
    windows: Mutex<pprof_endpoint::Windows>,
    health: health::Health,
    /// A profile window opened or closed: read the kernel now, so the window
    /// starts and ends on a read.
    read_now: Notify,
    profile_slots: pprof_endpoint::Slots,
    /// What every profile says about the recording (sources, hooks, the
    /// sampling frequency), its duration and losses filled in per profile.
    /// Its hooks grow as new processes' binaries get uprobes (`info()`).
    info: Mutex<RecordingInfo>,
}

impl Shared {
    /// What a profile says about the recording now.
    fn info(&self) -> RecordingInfo {
        self.info.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn lock_windows(&self) -> MutexGuard<'_, pprof_endpoint::Windows> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub async fn serve(args: ServeArgs) -> Result<i32> {
    args.probe.check()?;
    if !args.probe.pids.is_empty() {
        bail!("serve watches the whole host; -p is not offered (use `record -p` for one process)");
    }
    // The web config and the push's URL, credentials and roots are read
    // before anything is attached, as the port is bound: a mistake in them
    // is one sentence, and nothing to undo.
    let push_url = match &args.push {
        Some(push::url::PushUrl::WithCredentials) => {
            bail!("--push: {}", push::url::CREDENTIALS_IN_URL)
        }
        Some(push::url::PushUrl::Endpoint(url)) => Some(push::url::with_default_path(
            url,
            args.push_api.default_path(),
        )),
        None => None,
    };
    let otlp_url = match &args.otlp {
        Some(push::url::PushUrl::WithCredentials) => {
            bail!("--otlp: {}", push::url::CREDENTIALS_IN_URL)
        }
        Some(push::url::PushUrl::Endpoint(url)) => Some(push::url::with_default_path(
            url,
            push::url::OTLP_PROFILES_PATH,
        )),
        None => None,
    };
    let push_headers = match &push_url {
        Some(_) => push::auth::push_headers(
            args.push_user.as_deref(),
            args.push_password_file.as_deref(),
            args.push_bearer_token_file.as_deref(),
            args.push_tenant.as_deref(),
            &args.push_headers,
        )?,
        None => Vec::new(),
    };
    let tls_needed = [&push_url, &otlp_url].iter().any(|url| {
        url.as_ref()
            .is_some_and(|u| u.scheme_str() == Some("https"))
    });
    let push_tls = match tls_needed {
        true => Some(push::tls::client_config(args.push_ca_file.as_deref())?),
        false => None,
    };
    let web = args
        .web_config
        .as_deref()
        .map(web_config::WebConfig::load)
        .transpose()?
        .map(Arc::new);
    // Bound before anything is attached: a taken port is one sentence, and
    // nothing to undo.
    let listener = listen::Listener::bind(&args.listen, args.listen_group.as_deref())?;

    let session_config = args.probe.session_config(true, false);
    let stack_every = session_config.stack_every;
    let mut session = Session::start(&session_config)?;
    // The first read at once: /healthz answers 200 after it.
    let mut wakeups = Wakeups::new(&session, tokio::time::Instant::now(), limits::READ_INTERVAL)?;

    let sources = session.recording(&args.probe.sources.sources);
    for (source, why) in &session.unavailable {
        say!("the {source} source is skipped: {why}");
    }
    let sampled = sources.iter().any(|s| s.is_sampled());
    let shared = Arc::new(Shared {
        metrics: metrics::Metrics::new(
            &args.labels,
            args.probe.frequency,
            args.max_series as usize,
            args.series_ttl,
        ),
        windows: Mutex::default(),
        health: health::Health::new(),
        read_now: Notify::new(),
        profile_slots: pprof_endpoint::Slots::default(),
        info: Mutex::new(RecordingInfo {
            sources: sources.clone(),
            attachments: session.attachments(),
            sample_frequency: sampled.then_some(args.probe.frequency),
            unavailable: session.unavailable.clone(),
            kernel_functions: session.kernel_functions.clone(),
            stack_every,
            dwarf_processes: Default::default(),
            ..RecordingInfo::default()
        }),
    });
    let server = AbortOnDrop(tokio::spawn(http::run(
        listener,
        shared.clone(),
        web.clone(),
    )));
    let push_interval = Duration::from_secs(args.push_interval);
    let start_pusher = |url: &hyper::Uri, protocol, headers| {
        push::Pusher::start(
            push::Target {
                url: url.clone(),
                headers,
                tls: push_tls.clone(),
            },
            protocol,
            push_interval,
            &args.labels,
            args.max_series as usize,
            args.series_ttl,
            shared.clone(),
        )
    };
    // The credentials and headers are the Pyroscope server's: an OTLP
    // receiver (a node-local Collector, as a rule) gets none of them.
    let mut pushes = push::Pushes::new(
        push_url
            .iter()
            .map(|url| {
                start_pusher(
                    url,
                    push::Protocol::Pyroscope(args.push_api),
                    push_headers.clone(),
                )
            })
            .chain(otlp_url.iter().map(|url| {
                start_pusher(
                    url,
                    push::Protocol::Otlp(args.otlp_profiles_version),
                    Vec::new(),
                )
            }))
            .collect(),
    );
    let scheme = if web.as_ref().is_some_and(|w| w.tls.is_some()) {
        "https"
    } else {
        "http"
    };
    let address = match &args.listen {
        listen::Listen::Tcp(address) => format!("{scheme}://{address}"),
        unix => unix.to_string(),
    };
    say!(
        "serving {} clock reads host-wide on {address} ({}){}; SIGTERM or Ctrl-C stops",
        sources
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(","),
        http::paths(),
        push_url
            .as_ref()
            .map(|url| format!(
                ", pushing every {} s to {url}{}",
                args.push_interval,
                push::auth::described(
                    args.push_user.as_deref(),
                    args.push_bearer_token_file.is_some(),
                    args.push_tenant.as_deref()
                )
            ))
            .into_iter()
            .chain(otlp_url.as_ref().map(|url| format!(
                ", sending OTLP profiles every {} s to {url}",
                args.push_interval
            )))
            .collect::<String>()
    );
    let authenticated = web
        .as_ref()
        .is_some_and(|w| w.auth.is_some() || w.tls.is_some());
    if !authenticated {
        if args.listen.is_local() {
            say!(
                "without --web-config (TLS, basic auth), anyone on this host can read every \
                 process's clock reads and stacks from it"
            );
        } else {
            warning!(
                "listening on {}: the endpoints are open to the network, without authentication",
                args.listen
            );
        }
    }
    crate::host::notify::ready(&format!("serving on {address}"));
    crate::say::test_panic_point("serve");

    let mut kernel = kernel::SinceLastRead::new(&session);
    let mut last_read = Instant::now();
    let mut push_ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + push_interval, push_interval);
    loop {
        tokio::select! {
            _ = push_ticks.tick(), if !pushes.is_empty() => pushes.flush(&shared),
            // A profile window asks for the counts up to now.
            _ = shared.read_now.notified() => wakeups.drain_maps_now(),
            wakeup = wakeups.next() => match wakeup {
                Wakeup::Signal(libc::SIGHUP) => say!("SIGHUP ignored; serve stops on SIGTERM or SIGINT"),
                Wakeup::Signal(_) => break,
                Wakeup::SideBand => session.drain_side_band(),
                Wakeup::DrainMaps => {
                    let read = kernel.read(&mut session)?;
                    shared.info.lock().unwrap_or_else(|e| e.into_inner()).attachments = session.attachments();
                    let until = read.at;
                    shared.metrics.record_lost(&read.lost, read.lost_mapping_records);
                    let batch = Batch {
                        since: last_read,
                        until,
                        samples: read.samples,
                        lost: read.lost,
                    };
                    last_read = until;
                    shared.metrics.record(&batch.samples);
                    // The windows' lock is released before the pushes merge
                    // the batch: a profile request waits for one, not both.
                    let windows_dropped = shared.lock_windows().feed(&batch, &shared);
                    let dropped = windows_dropped.saturating_add(pushes.feed(&batch));
                    shared.metrics.lose(metrics::reason::PROFILE_STACKS, dropped);
                    shared.health.read_done();
                }
            },
        }
    }
    // The server goes first, so no request sees the probes go; then the
    // probes, with the session.
    drop(server);
    drop(pushes);
    drop(session);
    say!("stopped; every probe detached");
    Ok(0)
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

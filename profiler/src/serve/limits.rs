//! Every bound `serve` puts on what requests and a push server can make it
//! hold: `--help` prints them from here, and the handlers check them here.

use std::time::Duration;

/// `?seconds=` of the profile endpoint: Go's net/http/pprof default when
/// absent, and at most five minutes (a window's stacks stay in memory).
pub const DEFAULT_PROFILE_SECONDS: u64 = 30;
pub const MAX_PROFILE_SECONDS: u64 = 300;
/// Profile windows open at once; one more is answered 429.
pub const MAX_PROFILE_REQUESTS: usize = 4;
/// Profile windows one client holds at once, so one client cannot
/// take every window (a request beyond it is answered 429).
pub const MAX_PROFILE_REQUESTS_PER_CLIENT: usize = MAX_PROFILE_REQUESTS / 2;
/// Distinct stacks one profile window or one push interval keeps; reads on
/// stacks beyond it are counted as lost (reason `profile_stacks`).
pub const MAX_WINDOW_STACKS: usize = 100_000;
/// Open connections; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections one client holds: its next one makes room by closing
/// its own longest-idle one, or is closed on accept when all of its are
/// answering a request.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = MAX_CONNECTIONS / 4;
/// When fewer slots than this are free, connections without a request in
/// flight (idle keep-alives, clients that never finished their headers) are
/// closed, longest idle first, so a new client always gets in: local users
/// and a local Prometheus share 127.0.0.1, so the cap per client alone would
/// not let a scrape in where they were one user.
///
/// A client is an address, and over loopback the user owning the connecting
/// socket too (host::peer), so local users are clients of their own.
pub const FREE_CONNECTIONS: usize = MAX_CONNECTIONS / 4;
/// A connection asked to close with no request in flight gets this long to
/// finish what it writes; one still sending its headers is then cut off.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// A client must send its request headers within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection is closed after this, whatever it does (kept-alive scrapers
/// reconnect).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(MAX_PROFILE_SECONDS + 60);
/// Distinct label sets per metric family (and series per push); reads of
/// processes beyond it are counted under process="[other]", so a host that
/// runs many differently named programs cannot grow the daemon or the time
/// series database.
pub const MAX_SERIES: usize = 5_000;
/// `--series-ttl`'s default: a label set without reads for this long is
/// dropped, so MAX_SERIES holds the processes that run now, not every name
/// ever seen.
pub const DEFAULT_SERIES_TTL: &str = "10m";
/// Pushes waiting for the server, per target; one more is dropped and
/// counted (clockprof_push_failures_total{cause="queue_full"}).
pub const PUSH_QUEUE: usize = 2;
/// A try of a push that takes longer than this (or the push interval, if
/// shorter) is abandoned; after its last try the push is counted as lost.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often serve reads the kernel's counts and feeds the metrics, the open
/// profile windows and the next push.
pub const READ_INTERVAL: Duration = Duration::from_secs(1);
/// /healthz answers 503 when the kernel's counts were last read longer ago
/// than this.
pub const HEALTHY_READ_AGE: Duration = Duration::from_secs(5);

/// The limits, for `serve --help`.
pub fn help() -> String {
    format!(
        "Endpoints (GET only; none changes state):\n  \
         /metrics                    Prometheus text format\n  \
         /debug/pprof/clock?seconds=N  gzipped pprof of the clock reads of the next N seconds\n  \
         /healthz                    200 while the probes are attached and read\n\n\
         Request limits: seconds is a whole number from 1 to {MAX_PROFILE_SECONDS} \
         (default {DEFAULT_PROFILE_SECONDS}); at most {MAX_PROFILE_REQUESTS} profile requests at \
         once, {MAX_PROFILE_REQUESTS_PER_CLIENT} per client (429 beyond; /metrics never \
         waits for them); at most {MAX_CONNECTIONS} open connections, {MAX_CONNECTIONS_PER_CLIENT} \
         per client; a client is an address, over loopback an address and the user owning the \
         connecting socket; when fewer than {FREE_CONNECTIONS} are free, connections without a \
         request in flight are closed, longest idle first, so a new client gets in; request \
         headers within {}s; {MAX_WINDOW_STACKS} distinct stacks per profile. Series: \
         {MAX_SERIES} label sets per metric and series per push (further processes are counted \
         as process=\"[other]\"); a label set without reads for --series-ttl is dropped. \
         Pushes (--push, --otlp): at most {PUSH_QUEUE} waiting per target, each try abandoned \
         after {}s (or the interval); a push that got no answer, 429 or 5xx is tried 3 times, \
         after 0.5 s then 1 s, each between half and all of it at random; a push that cannot \
         be queued or sent is dropped and counted in clockprof_push_failures_total{{endpoint,cause}} \
         and clockprof_lost_events_total{{reason=\"push\"}}.",
        HEADER_TIMEOUT.as_secs(),
        PUSH_TIMEOUT.as_secs()
    )
}

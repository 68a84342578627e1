//! The HTTP server: hyper's HTTP/1 on the tokio runtime, the GET routes of `ROUTES`,
//! connections capped per client and in all, idle ones reclaimed when slots
//! run low, slow clients cut off (see limits).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Notify;

use super::limits::{
    CLOSE_GRACE, CONNECTION_LIFETIME, FREE_CONNECTIONS, HEADER_TIMEOUT, MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_CLIENT,
};
use super::listen::{Accepted, Listener};
use super::pprof_endpoint::{self, Answer};
use super::web_config::WebConfig;
use super::{metrics, Shared};
use crate::host::peer::Client;

/// Accepts until the task is dropped; with `web`, over TLS and with the
/// basic auth and headers it configures.
pub async fn run(listener: Listener, shared: Arc<Shared>, web: Option<Arc<WebConfig>>) {
    let connections = Arc::new(Connections::default());
    let acceptor = web
        .as_ref()
        .and_then(|web| web.tls.clone())
        .map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors, or a connection reset before accept:
            // wait, rather than spin.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(connection) = connections.admit(client, Instant::now()) else {
            continue;
        };
        let shared = shared.clone();
        let connections = connections.clone();
        let (acceptor, web) = (acceptor.clone(), web.clone());
        tokio::spawn(async move {
            match stream {
                Accepted::Tcp(stream) => {
                    serve_stream(stream, acceptor, &connection, shared, web).await
                }
                Accepted::Unix(stream) => {
                    serve_stream(stream, acceptor, &connection, shared, web).await
                }
            }
            connections.closed(&connection);
        });
    }
}

/// Serves one connection, over TLS if `acceptor`.
async fn serve_stream<S>(
    stream: S,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    connection: &Arc<Connection>,
    shared: Arc<Shared>,
    web: Option<Arc<WebConfig>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match acceptor {
        // A client that does not finish its handshake in the time allowed
        // for headers is cut off, as a slow one is; plain HTTP on a TLS
        // port fails the handshake and is closed.
        Some(acceptor) => {
            if let Ok(Ok(tls)) = tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await
            {
                serve_connection(tls, connection, shared, web).await;
            }
        }
        None => serve_connection(stream, connection, shared, web).await,
    }
}

async fn serve_connection<S>(
    stream: S,
    connection: &Arc<Connection>,
    shared: Arc<Shared>,
    web: Option<Arc<WebConfig>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let in_service = connection.clone();
    let service = hyper::service::service_fn(move |request| {
        let shared = shared.clone();
        let web = web.clone();
        let busy = Busy::new(&in_service);
        async move {
            let response = authorized_route(request, busy.client(), &shared, web.as_deref()).await;
            // The response's body holds the connection busy until hyper has
            // written it out.
            Ok::<_, Infallible>(response.map(|body| BusyBody { body, _busy: busy }))
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(served);
    let lifetime = tokio::time::sleep(CONNECTION_LIFETIME);
    tokio::pin!(lifetime);
    tokio::select! {
        _ = &mut served => return,
        _ = &mut lifetime => return,
        _ = connection.close.notified() => {}
    }
    // Reclaimed: an idle keep-alive closes at once; a request that arrives
    // meanwhile is answered, then the connection closes; one still sending
    // its headers gets CLOSE_GRACE.
    served.as_mut().graceful_shutdown();
    let grace = tokio::time::sleep(CLOSE_GRACE);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            _ = &mut served => return,
            _ = &mut lifetime => return,
            _ = &mut grace, if connection.idle() => return,
            // Check again once a request in flight ends.
            _ = tokio::time::sleep(CLOSE_GRACE), if !connection.idle() => {}
        }
    }
}

/// The open connections, what the accept loop admits and reclaims from.
#[derive(Default)]
struct Connections {
    state: Mutex<ConnectionsState>,
}

#[derive(Default)]
struct ConnectionsState {
    /// Connections that hold a slot.
    open: Vec<Arc<Connection>>,
    /// Connections asked to close that have not yet: they hold no slot, but
    /// count against the hard bound, so a flood of clients that never finish
    /// their headers cannot pile them up.
    closing: usize,
}

struct Connection {
    client: Client,
    /// Requests being answered, from their headers to their response's end.
    in_flight: AtomicUsize,
    /// When it opened, or last started or finished a request.
    last_active: Mutex<Instant>,
    /// Set once the accept loop reclaimed its slot.
    reclaimed: std::sync::atomic::AtomicBool,
    close: Notify,
}

impl Connection {
    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
    }

    fn last_active(&self) -> Instant {
        *self.last_active.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
}

impl Connections {
    /// A slot for a new connection from `client`, made by closing idle
    /// connections where its address, or the server, is short of them; `None`
    /// when every connection it would take the place of is answering.
    fn admit(&self, client: Client, now: Instant) -> Option<Arc<Connection>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.open.len() + state.closing >= 2 * MAX_CONNECTIONS {
            return None;
        }
        let of_client = state.open.iter().filter(|c| c.client == client).count();
        if of_client >= MAX_CONNECTIONS_PER_CLIENT
            && state.reclaim_idlest(|c| c.client == client) == 0
        {
            return None;
        }
        let free = MAX_CONNECTIONS.saturating_sub(state.open.len() + 1);
        if free < FREE_CONNECTIONS {
            state.reclaim(FREE_CONNECTIONS - free, |_| true);
        }
        if state.open.len() >= MAX_CONNECTIONS {
            return None;
        }
        let connection = Arc::new(Connection {
            client,
            in_flight: AtomicUsize::new(0),
            last_active: Mutex::new(now),
            reclaimed: Default::default(),
            close: Notify::new(),
        });
        state.open.push(connection.clone());
        Some(connection)
    }

    /// Gives the slot back (or the closing place, for a reclaimed one).
    fn closed(&self, connection: &Arc<Connection>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if connection.reclaimed.load(Ordering::SeqCst) {
            state.closing -= 1;
        } else {
            state.open.retain(|c| !Arc::ptr_eq(c, connection));
        }
    }
}

impl ConnectionsState {
    /// Asks the longest-idle connection of those `which` picks to close.
    fn reclaim_idlest(&mut self, which: impl Fn(&Connection) -> bool) -> usize {
        self.reclaim(1, which)
    }

    /// Asks up to `count` connections without a request in flight, of those
    /// `which` picks, to close, longest idle first; they give their slots up
    /// at once. Returns how many.
    fn reclaim(&mut self, count: usize, which: impl Fn(&Connection) -> bool) -> usize {
        let mut idle: Vec<(Instant, usize)> = self
            .open
            .iter()
            .enumerate()
            .filter(|(_, c)| c.idle() && which(c))
            .map(|(i, c)| (c.last_active(), i))
            .collect();
        idle.sort();
        let mut chosen: Vec<usize> = idle.into_iter().take(count).map(|(_, i)| i).collect();
        chosen.sort_unstable_by(|a, b| b.cmp(a));
        for &i in &chosen {
            let connection = self.open.swap_remove(i);
            connection.reclaimed.store(true, Ordering::SeqCst);
            // notify_one keeps the permit if the task is not waiting yet.
            connection.close.notify_one();
            self.closing += 1;
        }
        chosen.len()
    }
}

/// A request in flight on a connection, until its response is written.
struct Busy(Arc<Connection>);

impl Busy {
    fn new(connection: &Arc<Connection>) -> Busy {
        connection.in_flight.fetch_add(1, Ordering::SeqCst);
        connection.touch();
        Busy(connection.clone())
    }

    fn client(&self) -> Client {
        self.0.client
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its connection busy until hyper drops it
/// (written out, or the connection gone).
struct BusyBody {
    body: Full<Bytes>,
    _busy: Busy,
}

impl hyper::body::Body for BusyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

fn text(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Every endpoint, once: the router, the index page and the start-up line
/// all read this table, so a new endpoint cannot be served unlisted.
pub struct Route {
    pub path: &'static str,
    /// The path as a client writes it, with its query.
    pub shown: &'static str,
    pub what: &'static str,
    endpoint: Endpoint,
}

#[derive(Clone, Copy)]
enum Endpoint {
    Metrics,
    Profile,
    Health,
}

pub const ROUTES: &[Route] = &[
    Route {
        path: "/metrics",
        shown: "/metrics",
        what: "Prometheus metrics",
        endpoint: Endpoint::Metrics,
    },
    Route {
        path: "/debug/pprof/clock",
        shown: "/debug/pprof/clock?seconds=N",
        what: "a pprof profile of the next N seconds of clock reads",
        endpoint: Endpoint::Profile,
    },
    Route {
        path: "/healthz",
        shown: "/healthz",
        what: "200 while the probes are attached and the maps drained",
        endpoint: Endpoint::Health,
    },
];

/// `/metrics, /debug/pprof/clock, /healthz`: the paths, for the start-up line.
pub fn paths() -> String {
    ROUTES.iter().map(|r| r.path).collect::<Vec<_>>().join(", ")
}

/// The index page: one line per endpoint.
fn index() -> String {
    let mut page = String::from("clockprof serve:\n");
    for route in ROUTES {
        page += &format!("  GET {:<30} {}\n", route.shown, route.what);
    }
    page
}

/// `route`, behind the web config's basic auth, with its headers added.
async fn authorized_route(
    request: Request<Incoming>,
    client: Client,
    shared: &Arc<Shared>,
    web: Option<&WebConfig>,
) -> Response<Full<Bytes>> {
    let Some(web) = web else {
        return route(request, client, shared).await;
    };
    let allowed = match &web.auth {
        Some(auth) => auth.allows(request.headers().get(AUTHORIZATION)).await,
        None => true,
    };
    let mut response = if allowed {
        route(request, client, shared).await
    } else {
        let mut response = text(
            401,
            "unauthorized: this serve asks for basic auth.\n".to_string(),
        );
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"clockprof\""),
        );
        response
    };
    for (name, value) in &web.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

async fn route(
    request: Request<Incoming>,
    client: Client,
    shared: &Arc<Shared>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(
            405,
            "only GET is served here: no endpoint changes anything.\n".to_string(),
        );
        response
            .headers_mut()
            .insert("allow", HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let path = request.uri().path();
    if path == "/" {
        return text(200, index());
    }
    let Some(route) = ROUTES.iter().find(|r| r.path == path) else {
        let shown: Vec<&str> = ROUTES.iter().map(|r| r.shown).collect();
        return text(
            404,
            format!(
                "no such endpoint; this is clockprof serve: GET {}\n",
                shown.join(", ")
            ),
        );
    };
    match route.endpoint {
        Endpoint::Metrics => {
            // Off the HTTP worker: with thousands of series, encoding takes
            // a while, and the other connections keep being served.
            let encoding = shared.clone();
            let Ok(page) = tokio::task::spawn_blocking(move || encoding.metrics.encode()).await
            else {
                return text(500, "could not encode the metrics.\n".to_string());
            };
            let mut response = text(200, page);
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            response
        }
        Endpoint::Profile => {
            match pprof_endpoint::respond(request.uri().query(), client, shared).await {
                Answer::Profile(bytes) => {
                    let mut response = Response::new(Full::new(Bytes::from(bytes)));
                    let headers = response.headers_mut();
                    headers.insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    );
                    headers.insert(
                        "content-disposition",
                        HeaderValue::from_static("attachment; filename=\"clock.pb.gz\""),
                    );
                    response
                }
                Answer::Refused(status, why) => text(status, why),
            }
        }
        Endpoint::Health => {
            let (status, why) = shared.health.status();
            text(status, why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_and_the_start_up_line_list_every_route() {
        let page = index();
        for route in ROUTES {
            assert!(page.contains(route.shown), "{page}");
            assert!(paths().contains(route.path));
        }
        assert_eq!(paths(), "/metrics, /debug/pprof/clock, /healthz");
    }
}

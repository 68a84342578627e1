//! The HTTP server: hyper's HTTP/1 on the tokio runtime, the GET routes of `ROUTES`,
//! connections capped and slow clients cut off (see limits).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::limits::{CONNECTION_LIFETIME, HEADER_TIMEOUT, MAX_CONNECTIONS};
use super::pprof_endpoint::{self, Answer};
use super::{metrics, Shared};

/// Accepts until the task is dropped.
pub async fn run(listener: TcpListener, shared: Arc<Shared>) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of file descriptors, or a connection reset before accept:
            // wait, rather than spin.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(request, &shared).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            drop(permit);
        });
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

async fn route(request: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
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
            let mut response = text(200, shared.metrics.encode());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            response
        }
        Endpoint::Profile => match pprof_endpoint::respond(request.uri().query(), shared).await {
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
        },
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

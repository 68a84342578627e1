//! The HTTP server: hyper's HTTP/1 on the tokio runtime, three GET routes,
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

const INDEX: &str = "clockprof serve: GET /metrics, /debug/pprof/clock?seconds=N, /healthz\n";

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
    match request.uri().path() {
        "/metrics" => {
            let mut response = text(200, shared.metrics.encode());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            response
        }
        "/debug/pprof/clock" => {
            match pprof_endpoint::respond(request.uri().query(), shared).await {
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
        "/healthz" => {
            let (status, why) = shared.health.status();
            text(status, why)
        }
        "/" => text(200, INDEX.to_string()),
        _ => text(404, format!("no such endpoint; this is {INDEX}")),
    }
}

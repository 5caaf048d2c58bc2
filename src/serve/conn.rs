//! Connections: the accept loop, the connection limit (over it: one 503 answer, then
//! close — never a reset), hyper's HTTP/1.1 settings, and graceful shutdown.
//!
//! Each connection is a tokio task, so a slow client costs a few kilobytes and a timer, not
//! a thread or one of a few slots; hyper closes a connection whose request headers have not
//! all arrived within `header_timeout` (one deadline for the whole head, not per read).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::http::{error, refuse_body};
use super::metrics::Metrics;

/// Largest request head (request line and headers); beyond it hyper answers 431.
pub(crate) const MAX_HEADER_BYTES: usize = 16 << 10;

pub(crate) struct ConnConfig {
    pub max_connections: usize,
    /// The most of a refused request's body read before closing.
    pub max_body_bytes: usize,
    pub header_timeout: Duration,
    /// How long shutdown waits for requests in flight before it gives up on them.
    pub drain_timeout: Duration,
    pub handle_signals: bool,
}

/// Serve until `stop` turns true (or SIGINT/SIGTERM when `handle_signals`), then stop
/// accepting, let the connections finish their requests in flight, and return.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    cfg: ConnConfig,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let max_body_bytes = cfg.max_body_bytes;
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(cfg.header_timeout)
        .max_header_size(MAX_HEADER_BYTES);
    // The rejecting connections answer one request and close; their head gets a short
    // deadline so a flood of them cannot linger.
    let mut busy = http1::Builder::new();
    busy.timer(TokioTimer::new())
        .header_read_timeout(cfg.header_timeout.min(Duration::from_secs(2)))
        .max_header_size(MAX_HEADER_BYTES)
        .keep_alive(false);
    let signal = shutdown_signal(cfg.handle_signals);
    tokio::pin!(signal);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
            () = &mut signal => break,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(_) => {
                // out of file descriptors or a connection reset before accept: the
                // listener is still fine; back off a little instead of spinning
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let svc = TowerToHyperService::new(router.clone());
                let conn = graceful.watch(h1.serve_connection(io, svc));
                tokio::spawn(async move {
                    // a client that goes away mid-request is not the server's error
                    let _ = conn.await;
                    drop(slot);
                });
            }
            Err(_) => {
                metrics.connection_rejected();
                let max_body = max_body_bytes;
                let svc = hyper::service::service_fn(move |req| reject(req, max_body));
                let conn = graceful.watch(busy.serve_connection(io, svc));
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        }
    }
    drop(listener);
    // closes idle connections now, the others after their request in flight
    let _ = tokio::time::timeout(cfg.drain_timeout, graceful.shutdown()).await;
}

async fn reject(req: Request<Incoming>, max_body: usize) -> Result<Response<Body>, Infallible> {
    // the client may have sent its whole request: read it before closing (see http.rs)
    refuse_body(req, max_body);
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "server busy: too many connections; retry later",
    );
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Ok(r)
}

/// Resolves on SIGINT or SIGTERM when `enabled`, never otherwise.
async fn shutdown_signal(enabled: bool) {
    if !enabled {
        return std::future::pending().await;
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {},
                    _ = term.recv() => {},
                }
            }
            // no signal handling available: serve until stopped through the handle
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

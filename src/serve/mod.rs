//! Serving: eval-mode prediction over HTTP, with dynamic batching, for programs
//! (`quadra::serve::Server`) and the command line (`quadra-train serve CKPT`, and the small
//! library demo `examples/serve_http.rs`).
//!
//! `Model::predict(&self, x)` takes `&self` and keeps nothing between calls, and `Model` is
//! `Send + Sync` (asserted below), so one `Arc<Model>` serves any number of threads.
//!
//! # HTTP API (HTTP/1.1)
//!
//! - `POST /predict` with `Content-Type: application/octet-stream`: the body is an
//!   (N, *input) f32 little-endian array, N = body bytes / (4 · per-sample elements);
//!   with `Content-Type: application/json`: a nested array of shape (N, *input) or (*input),
//!   or `{"input": …}` holding one. Every value must be finite (as an f32) in both formats.
//!   Inputs are raw (pixels in [0, 1]): the model's stored normalization
//!   (`spec.preprocess`) is applied by `Model::predict`; to serve inputs normalized by the
//!   client, clear `model.spec.preprocess`'s `normalize` first (`serve --normalized`).
//!   Answer: `{"logits": [[…], …], "argmax": […]}`. Fixed-length or chunked bodies.
//! - `GET /health`: `{"status": "ok", "model": …, "input": […], "num_classes": …}` (never
//!   behind the token: load balancers probe it).
//! - `GET /metrics`: requests by route and status, errors, latency and batch-size
//!   histograms, in the OpenMetrics text format Prometheus scrapes.
//!
//! With a token ([`ServerConfig::token`]), `/predict` and `/metrics` need
//! `Authorization: Bearer TOKEN` (401 otherwise).
//!
//! Errors are JSON `{"error": "…"}` with 400 (bad body: shape, not finite, not JSON), 401,
//! 404, 405, 408 (body not received within the request deadline), 411 (no Content-Length
//! and not chunked), 413 (body over the limit — refused while it streams, before it is read —
//! or batch over `max_batch`), 415 (content type), 503 with `Retry-After` (too many
//! predictions in flight, too many connections, no model answer within the deadline, or
//! shutting down). hyper itself answers malformed requests, conflicting `Content-Length`
//! headers and request bodies with both framings 400, and a request head over 16 KiB 431
//! (those answers have no JSON body); a head not complete within `header_timeout` closes the
//! connection. Connections are kept alive between requests. The /metrics counters see what
//! the router answers, not hyper's own 400/431s or the connection-limit 503s (those are
//! `quadra_connections_rejected_total`).
//!
//! Slow clients: one trickling its head costs a task and a timer until `header_timeout`;
//! one trickling a /predict body holds one of the `max_concurrency` slots until the request
//! deadline (so at most `max_concurrency` × `max_body_bytes` of bodies are ever buffered),
//! and once all are held further predictions get 503 — /health and /metrics never wait.
//!
//! # Threads
//!
//! A tokio runtime (`io_threads` reactor threads) moves bytes; decoding runs on its
//! blocking pool; `Model::predict` runs on the batcher's `workers` OS threads
//! (`src/serve/batch.rs` documents the batching and its rounding). So /health and
//! /metrics answer while the model computes.

mod batch;
mod conn;
mod http;
mod input;
mod metrics;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

use crate::model::Model;
use crate::{Error, Result};

pub use input::{
    argmax, input_from_f32_le, input_from_json, input_from_json_bytes, prediction_json,
};

// `Model` serves many threads: a compile-time check that it is Send + Sync.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Model>();
};

/// Limits and settings of the HTTP server. Zero counts and durations are refused by
/// [`Server::start`] (except `max_delay`, where zero turns batching off); very large ones
/// are fine (capped where a library would overflow: durations at a day, counts at 2^20).
#[derive(Clone)]
pub struct ServerConfig {
    /// Largest accepted request body in bytes (413 beyond, refused while streaming).
    pub max_body_bytes: usize,
    /// Largest accepted batch N of one request (413 beyond).
    pub max_batch: usize,
    /// Most samples the batcher merges into one model call.
    pub max_batch_size: usize,
    /// How long the batcher waits after a request for others to merge with it; zero: no
    /// batching, every request is its own model call (bit-identical to `Model::predict`).
    pub max_delay: Duration,
    /// Deadline of a request after its headers: body, decoding, queue and model (408 when
    /// the body is late, 503 when the model is).
    pub request_timeout: Duration,
    /// Deadline for a request's headers (the connection is closed after it); also how long
    /// an idle kept-alive connection stays open.
    pub header_timeout: Duration,
    /// POST /predict requests in flight at once (503 + Retry-After beyond, at once).
    pub max_concurrency: usize,
    /// Open connections (beyond: answered 503 and closed).
    pub max_connections: usize,
    /// Threads running `Model::predict` (each takes a whole batch; the model's own kernels
    /// use rayon's pool).
    pub workers: usize,
    /// Async reactor threads (they only move bytes).
    pub io_threads: usize,
    /// Bearer token required by /predict and /metrics; `None`: no authentication.
    pub token: Option<String>,
    /// Shut down gracefully on SIGINT/SIGTERM (for programs whose only job is serving).
    pub handle_signals: bool,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_batch", &self.max_batch)
            .field("max_batch_size", &self.max_batch_size)
            .field("max_delay", &self.max_delay)
            .field("request_timeout", &self.request_timeout)
            .field("header_timeout", &self.header_timeout)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_connections", &self.max_connections)
            .field("workers", &self.workers)
            .field("io_threads", &self.io_threads)
            // never print the secret
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("handle_signals", &self.handle_signals)
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 16 << 20,
            max_batch: 256,
            max_batch_size: 64,
            max_delay: Duration::from_millis(2),
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_concurrency: 64,
            max_connections: 4096,
            workers: 1,
            io_threads: 2,
            token: None,
            handle_signals: false,
        }
    }
}

const MAX_DURATION: Duration = Duration::from_secs(86400);
const MAX_COUNT: usize = 1 << 20;

impl ServerConfig {
    /// The config with its values checked and capped (see the struct doc).
    fn checked(mut self) -> Result<ServerConfig> {
        for (name, v) in [
            ("max_body_bytes", self.max_body_bytes),
            ("max_batch", self.max_batch),
            ("max_batch_size", self.max_batch_size),
            ("max_concurrency", self.max_concurrency),
            ("max_connections", self.max_connections),
            ("workers", self.workers),
            ("io_threads", self.io_threads),
        ] {
            if v == 0 {
                return Err(Error::invalid(
                    "server config",
                    format!("{name} must be at least 1"),
                ));
            }
        }
        for (name, v) in [
            ("request_timeout", self.request_timeout),
            ("header_timeout", self.header_timeout),
        ] {
            if v.is_zero() {
                return Err(Error::invalid(
                    "server config",
                    format!("{name} must be positive"),
                ));
            }
        }
        if self.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(Error::invalid("server config", "the bearer token is empty"));
        }
        // tokio's semaphores panic above usize::MAX >> 3 permits, hyper's timers on an
        // Instant overflow: cap far beyond any real setting
        self.max_concurrency = self.max_concurrency.min(MAX_COUNT);
        self.max_connections = self.max_connections.min(MAX_COUNT);
        self.workers = self.workers.min(1024);
        self.io_threads = self.io_threads.min(1024);
        self.request_timeout = self.request_timeout.min(MAX_DURATION);
        self.header_timeout = self.header_timeout.min(MAX_DURATION);
        self.max_delay = self.max_delay.min(MAX_DURATION);
        Ok(self)
    }
}

/// Stops a [`Server`] from anywhere (another thread, a signal handler of the caller's).
#[derive(Clone, Debug)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    /// Stop accepting; requests in flight finish, then the server's `wait` returns.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

/// A running HTTP server. [`Server::shutdown`] (or a [`ShutdownHandle`], or a signal with
/// [`ServerConfig::handle_signals`]) stops it gracefully: no new connections, requests in
/// flight answered, then the threads end.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Bind `addr` (port 0: any free port) and serve `model` on background threads.
    /// Binding a non-loopback address without a token prints a warning on stderr.
    pub fn start(model: Arc<Model>, addr: impl ToSocketAddrs, cfg: ServerConfig) -> Result<Server> {
        let cfg = cfg.checked()?;
        let io = |context: &str| {
            let context = context.to_string();
            move |e| Error::Io { context, source: e }
        };
        let listener =
            std::net::TcpListener::bind(addr).map_err(io("cannot bind the server address"))?;
        let local = listener.local_addr().map_err(io("server address"))?;
        listener
            .set_nonblocking(true)
            .map_err(io("server socket"))?;
        if !local.ip().is_loopback() && cfg.token.is_none() {
            eprintln!(
                "warning: serving on {local} (not loopback) without a token: anyone who can \
                 reach it can run predictions (set a token, e.g. --token-file)"
            );
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.io_threads)
            .thread_name("quadra-http")
            .enable_all()
            .build()
            .map_err(io("cannot start the server runtime"))?;
        let listener = {
            let _g = rt.enter();
            tokio::net::TcpListener::from_std(listener).map_err(io("server socket"))?
        };
        let metrics = Arc::new(metrics::Metrics::new());
        let batcher = batch::Batcher::start(
            model.clone(),
            batch::BatchConfig {
                max_samples: cfg.max_batch_size,
                max_delay: cfg.max_delay,
                workers: cfg.workers,
            },
            metrics.clone(),
        )?;
        let conn_cfg = conn::ConnConfig {
            max_connections: cfg.max_connections,
            max_body_bytes: cfg.max_body_bytes,
            header_timeout: cfg.header_timeout,
            drain_timeout: cfg.request_timeout + cfg.header_timeout,
            handle_signals: cfg.handle_signals,
        };
        let permits = Arc::new(Semaphore::new(cfg.max_concurrency));
        let app = Arc::new(http::App {
            model,
            cfg,
            batcher,
            metrics: metrics.clone(),
            permits,
        });
        let router = http::router(app.clone());
        let (stop, stop_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("quadra-http-main".into())
            .spawn(move || {
                rt.block_on(conn::serve(listener, router, conn_cfg, metrics, stop_rx));
                // every connection has finished (or the drain deadline passed): the
                // batcher answers what is queued, then its workers end
                app.batcher.stop();
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(io("cannot start the server thread"))?;
        Ok(Server {
            addr: local,
            stop: Arc::new(stop),
            thread: Some(thread),
        })
    }

    /// The address the server listens on (the port chosen when `start` was given port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that stops this server from elsewhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.stop.clone())
    }

    /// Block until the server has stopped (through a [`ShutdownHandle`] or, with
    /// `handle_signals`, SIGINT/SIGTERM) and finished its requests in flight.
    pub fn wait(mut self) {
        self.join();
    }

    /// Stop accepting, finish the requests in flight (waiting at most the request and
    /// header deadlines), and join.
    pub fn shutdown(mut self) {
        self.stop.send_replace(true);
        self.join();
    }

    fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        self.join();
    }
}

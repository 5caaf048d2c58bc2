//! The routes: POST /predict, GET /health, GET /metrics, and the layers around them
//! (metrics of every answer, bearer token, load shedding of /predict).
//!
//! Every early refusal (401, 413, 415, 503) still reads what the client already sent of its
//! body, within bounds, before the connection closes: closing a socket with unread input
//! makes the kernel send a reset, which destroys the answer before the client reads it (the
//! old server's "a full server resets clients" finding).
//!
//! A /predict request runs: token check → concurrency permit (none free: 503 at once, no
//! queueing) → body read under the size limit and the request deadline → decoding on the
//! blocking pool → the batcher's worker threads → the answer. The async reactor only moves
//! bytes, so /health answers while the model computes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::{oneshot, Semaphore};

use super::batch::{Batcher, Job};
use super::input::{f32_le_values, json_values, rows_json};
use super::metrics::{route_label, Metrics, CONTENT_TYPE};
use super::ServerConfig;
use crate::model::Model;

/// What the handlers share.
pub(crate) struct App {
    pub model: Arc<Model>,
    pub cfg: ServerConfig,
    pub batcher: Batcher,
    pub metrics: Arc<Metrics>,
    /// /predict requests in flight (`max_concurrency` permits).
    pub permits: Arc<Semaphore>,
}

/// Seconds a shed client is told to wait (`Retry-After`): long enough for a batch or two.
const RETRY_AFTER_S: &str = "1";

/// How long a refused body is still read and dropped (see the module doc); at most
/// `max_body_bytes` of it, or 1 MiB of a body over the limit.
const DRAIN_TIME: Duration = Duration::from_secs(1);
const DRAIN_OVER_LIMIT: usize = 1 << 20;

/// A JSON error answer `{"error": msg}`; 503s carry `Retry-After`, 401s `WWW-Authenticate`.
pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut r = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json!({ "error": msg.into() }).to_string(),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
    }
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

fn json_ok(v: serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        v.to_string(),
    )
        .into_response()
}

pub(crate) fn router(app: Arc<App>) -> Router {
    let protected = Router::new()
        .route(
            "/predict",
            post(predict)
                .fallback(|| async { error(StatusCode::METHOD_NOT_ALLOWED, "/predict: use POST") })
                .layer(middleware::from_fn_with_state(app.clone(), shed)),
        )
        .route(
            "/metrics",
            get(metrics)
                .fallback(|| async { error(StatusCode::METHOD_NOT_ALLOWED, "/metrics: use GET") }),
        )
        .route_layer(middleware::from_fn_with_state(app.clone(), auth));
    Router::new()
        .route(
            "/health",
            get(health)
                .fallback(|| async { error(StatusCode::METHOD_NOT_ALLOWED, "/health: use GET") }),
        )
        .merge(protected)
        .fallback(|req: Request| async move {
            error(
                StatusCode::NOT_FOUND,
                format!(
                    "no route {} {} (POST /predict, GET /health, GET /metrics)",
                    req.method(),
                    req.uri().path()
                ),
            )
        })
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

/// Counts every answer of the router by route and status, with its latency.
async fn observe(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route = route_label(req.uri().path());
    let t0 = Instant::now();
    let r = next.run(req).await;
    app.metrics
        .request(route, r.status().as_u16(), t0.elapsed());
    r
}

/// `Authorization: Bearer TOKEN` when the server has a token. The comparison takes the same
/// time wherever the first differing byte is (only the length can show).
async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(token) = &app.cfg.token {
        if !bearer_matches(req.headers(), token.as_bytes()) {
            refuse_body(req, app.cfg.max_body_bytes);
            return error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token: send `Authorization: Bearer TOKEN`",
            );
        }
    }
    next.run(req).await
}

/// Over `max_concurrency` /predict requests in flight: 503 + Retry-After at once, instead
/// of queueing the request behind the others; the permit is held until the answer.
async fn shed(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Ok(_permit) = app.permits.clone().try_acquire_owned() else {
        refuse_body(req, app.cfg.max_body_bytes);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server busy: too many predictions in flight; retry later",
        );
    };
    next.run(req).await
}

/// Read and drop (in the background, bounded) the body of a request refused before reading
/// it — unless the client waits for `100 Continue`: then it has sent nothing, and reading
/// would invite the body.
pub(crate) fn refuse_body<B>(req: axum::http::Request<B>, max: usize)
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
{
    let expects = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects {
        tokio::spawn(drain(req.into_body(), max));
    }
}

fn bearer_matches(h: &HeaderMap, token: &[u8]) -> bool {
    let Some(v) = h.get(header::AUTHORIZATION) else {
        return false;
    };
    let v = v.as_bytes();
    let Some(sp) = v.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (scheme, rest) = v.split_at(sp);
    let given = rest.trim_ascii();
    scheme.eq_ignore_ascii_case(b"bearer") && bool::from(given.ct_eq(token))
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let m = &app.model;
    json_ok(json!({
        "status": "ok",
        "model": m.spec.name,
        "input": m.spec.input,
        "num_classes": m.spec.num_classes,
    }))
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        app.metrics.encode(),
    )
        .into_response()
}

/// `Instant::now() + d`, far in the future when that overflows.
pub(crate) fn deadline_after(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(86400 * 365))
}

struct InFlight<'a>(&'a Metrics);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight().dec();
    }
}

async fn predict(State(app): State<Arc<App>>, req: Request) -> Response {
    app.metrics.in_flight().inc();
    let _g = InFlight(&app.metrics);
    // one deadline for the whole request after its headers (hyper bounds those): body,
    // decoding, queueing and the model together, not a timeout per read
    let deadline = deadline_after(app.cfg.request_timeout);
    match predict_inner(&app, req, deadline).await {
        Ok(r) | Err(r) => r,
    }
}

type Answer = std::result::Result<Response, Response>;

async fn predict_inner(app: &Arc<App>, req: Request, deadline: tokio::time::Instant) -> Answer {
    // the batcher may wait for this request until it is submitted (or answered early)
    let arriving = app.batcher.arriving();
    let h = req.headers();
    let limit = app.cfg.max_body_bytes;
    let chunked = h.contains_key(header::TRANSFER_ENCODING);
    let declared = match h.get(header::CONTENT_LENGTH) {
        // hyper has already rejected a malformed or conflicting Content-Length (400)
        Some(v) => v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()),
        None => None,
    };
    if declared.is_none() && !chunked {
        return Err(error(
            StatusCode::LENGTH_REQUIRED,
            "POST /predict needs a body with a Content-Length (or chunked)",
        ));
    }
    if declared.is_some_and(|n| n > limit as u64) {
        refuse_body(req, DRAIN_OVER_LIMIT);
        return Err(too_large(declared.unwrap_or(0), limit));
    }
    let ctype = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_json = match media.as_str() {
        "application/json" => true,
        "application/octet-stream" => false,
        m => {
            let what = if m.is_empty() {
                "missing Content-Type".to_string()
            } else {
                format!("Content-Type `{m}`")
            };
            refuse_body(req, limit);
            return Err(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "{what}: use application/json or application/octet-stream (f32 little-endian)"
                ),
            ));
        }
    };
    let body = read_body(req.into_body(), limit, deadline).await?;

    // decoding a large JSON body is tens of milliseconds of CPU: off the reactor
    let sample = app.model.spec.input.clone();
    let max_batch = app.cfg.max_batch;
    let decoded = tokio::task::spawn_blocking(move || {
        if is_json {
            json_values(&body, &sample, max_batch)
        } else {
            f32_le_values(&body, &sample).map_err(|e| (false, e))
        }
    });
    let (x, shape) = match tokio::time::timeout_at(deadline, decoded).await {
        Err(_) => return Err(timed_out(app)),
        Ok(Err(e)) => {
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("decoding failed: {e}"),
            ))
        }
        Ok(Ok(Err((over, e)))) => {
            let code = if over {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return Err(error(code, e.to_string()));
        }
        Ok(Ok(Ok(v))) => v,
    };
    let n = shape[0];
    if n > max_batch {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("batch of {n} samples exceeds the limit of {max_batch}"),
        ));
    }

    let (tx, rx) = oneshot::channel();
    let submitted = app.batcher.submit(Job { x, n, reply: tx });
    drop(arriving);
    if submitted.is_err() {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server shutting down: retry on another instance",
        ));
    }
    let logits = match tokio::time::timeout_at(deadline, rx).await {
        Err(_) => return Err(timed_out(app)),
        Ok(Err(_)) => {
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the prediction worker stopped",
            ))
        }
        Ok(Ok(Err(msg))) => {
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("prediction failed: {msg}"),
            ))
        }
        Ok(Ok(Ok(v))) => v,
    };
    let c = app.model.spec.num_classes;
    if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
        // JSON has no NaN: say so instead of answering `null`
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "the model produced a non-finite logit (sample {}, class {})",
                i / c,
                i % c
            ),
        ));
    }
    Ok(json_ok(rows_json(&logits, n, c)))
}

fn too_large(len: u64, limit: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body of {len} bytes exceeds the limit of {limit} bytes"),
    )
}

fn timed_out(app: &App) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "no prediction within the request deadline of {:?}: the server is overloaded",
            app.cfg.request_timeout
        ),
    )
}

/// The body, frame by frame: memory grows with what arrived (never with what the
/// Content-Length announces) and stops past `limit`.
async fn read_body(
    mut body: Body,
    limit: usize,
    deadline: tokio::time::Instant,
) -> std::result::Result<Vec<u8>, Response> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "body not received within the request deadline ({} bytes arrived)",
                        buf.len()
                    ),
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {e}"),
                ))
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if buf.len().saturating_add(data.len()) > limit {
            let got = buf.len() + data.len();
            tokio::spawn(drain(body, DRAIN_OVER_LIMIT));
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body exceeds the limit of {limit} bytes ({got} bytes so far)"),
            ));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf)
}

/// Read and drop at most `max` bytes (and `DRAIN_TIME`) of a refused body.
async fn drain<B>(mut body: B, max: usize)
where
    B: hyper::body::Body + Unpin,
{
    use hyper::body::Buf;
    let mut left = max;
    let end = deadline_after(DRAIN_TIME);
    while left > 0 {
        match tokio::time::timeout_at(end, body.frame()).await {
            Ok(Some(Ok(f))) => {
                left = left.saturating_sub(f.data_ref().map_or(0, |d| d.remaining()));
            }
            _ => break,
        }
    }
}

//! Serving: batched eval-mode prediction from many threads at once, input decoding (raw
//! f32 little-endian or JSON), and a small HTTP/1.1 server on `std::net` that
//! `examples/serve_http.rs` runs.
//!
//! `Model::predict(&self, x)` takes `&self` and keeps nothing between calls, and `Model` is
//! `Send + Sync` (asserted below), so one `Arc<Model>` serves any number of threads.
//!
//! # HTTP API
//!
//! - `POST /predict` with `Content-Type: application/octet-stream`: the body is an
//!   (N, *input) f32 little-endian array, N = body bytes / (4 · per-sample elements);
//!   with `Content-Type: application/json`: a nested array of shape (N, *input) or (*input),
//!   or `{"input": …}` holding one. Answer: `{"logits": [[…], …], "argmax": […]}`.
//! - `GET /health`: `{"status": "ok", "model": …, "input": […], "num_classes": …}`.
//!
//! Errors are JSON `{"error": "…"}` with 400 (bad body), 404, 405, 408 (slow client),
//! 411 (no Content-Length), 413 (body over the limit or batch over `max_batch`),
//! 415 (content type), 431 (headers too large), 503 (too many connections).
//! Every response closes the connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use crate::model::Model;
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

// `Model` serves many threads: a compile-time check that it is Send + Sync.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Model>();
};

/// Arg-max of each row of (N, classes) logits.
pub fn argmax(logits: &Tensor) -> Result<Vec<usize>> {
    let (n, c) = logits.dims2("argmax")?;
    let v = logits.to_f64_vec();
    Ok((0..n)
        .map(|i| {
            let row = &v[i * c..(i + 1) * c];
            let mut best = 0;
            for (j, &x) in row.iter().enumerate() {
                if x > row[best] {
                    best = j;
                }
            }
            best
        })
        .collect())
}

/// Logits and arg-max as JSON: `{"logits": [[…]…], "argmax": […]}`.
pub fn prediction_json(logits: &Tensor) -> Result<Value> {
    let (n, c) = logits.dims2("prediction")?;
    let v = logits.to_f64_vec();
    let rows: Vec<Vec<f64>> = (0..n).map(|i| v[i * c..(i + 1) * c].to_vec()).collect();
    Ok(json!({ "logits": rows, "argmax": argmax(logits)? }))
}

/// An (N, *sample) f32 tensor from raw little-endian f32 bytes; N is inferred.
pub fn input_from_f32_le(bytes: &[u8], sample: &[usize]) -> Result<Tensor> {
    let per: usize = sample.iter().product();
    let unit = 4 * per;
    if bytes.is_empty() || unit == 0 || bytes.len() % unit != 0 {
        return Err(Error::invalid(
            "input",
            format!(
                "{} bytes is not a whole number of samples of shape {sample:?} ({unit} bytes of f32 each)",
                bytes.len()
            ),
        ));
    }
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut shape = vec![bytes.len() / unit];
    shape.extend_from_slice(sample);
    Tensor::from_vec(v, &shape)
}

fn json_shape(v: &Value) -> Vec<usize> {
    let mut shape = Vec::new();
    let mut cur = v;
    while let Value::Array(a) = cur {
        shape.push(a.len());
        match a.first() {
            Some(x) => cur = x,
            None => break,
        }
    }
    shape
}

fn json_flatten(v: &Value, shape: &[usize], at: &mut Vec<usize>, out: &mut Vec<f32>) -> Result<()> {
    match (v, shape.split_first()) {
        (Value::Array(a), Some((&n, rest))) => {
            if a.len() != n {
                return Err(Error::invalid(
                    "input",
                    format!(
                        "ragged JSON array: element {at:?} has {} entries, expected {n}",
                        a.len()
                    ),
                ));
            }
            for (i, x) in a.iter().enumerate() {
                at.push(i);
                json_flatten(x, rest, at, out)?;
                at.pop();
            }
            Ok(())
        }
        (Value::Number(x), None) => {
            let f = x.as_f64().unwrap_or(f64::NAN);
            if !f.is_finite() {
                return Err(Error::invalid(
                    "input",
                    format!("element {at:?} is not finite"),
                ));
            }
            out.push(f as f32);
            Ok(())
        }
        _ => Err(Error::invalid(
            "input",
            format!("element {at:?} is not a number or has the wrong nesting depth"),
        )),
    }
}

/// An (N, *sample) f32 tensor from JSON: a nested array of shape (N, *sample) or
/// (*sample), or an object `{"input": array}`.
pub fn input_from_json(v: &Value, sample: &[usize]) -> Result<Tensor> {
    let v = match v {
        Value::Object(m) => m.get("input").ok_or_else(|| {
            Error::invalid("input", "JSON object without an `input` array".to_string())
        })?,
        v => v,
    };
    let shape = json_shape(v);
    let full: Vec<usize> = if shape == sample {
        let mut s = vec![1];
        s.extend_from_slice(sample);
        s
    } else if shape.len() == sample.len() + 1 && shape[1..] == *sample && shape[0] > 0 {
        shape.clone()
    } else {
        return Err(Error::invalid(
            "input",
            format!("JSON array has shape {shape:?}; expected (N, {sample:?}) or {sample:?}"),
        ));
    };
    let mut out = Vec::with_capacity(full.iter().product());
    json_flatten(
        v,
        if shape == sample { sample } else { &full },
        &mut Vec::new(),
        &mut out,
    )?;
    Tensor::from_vec(out, &full)
}

/// Limits of the HTTP server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest accepted request body (413 beyond).
    pub max_body_bytes: usize,
    /// Largest accepted batch N (413 beyond).
    pub max_batch: usize,
    /// Connections served at once (503 beyond).
    pub max_connections: usize,
    /// Read/write timeout per connection (408 when a request does not arrive in time).
    pub io_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 16 << 20,
            max_batch: 256,
            max_connections: 32,
            io_timeout: Duration::from_secs(10),
        }
    }
}

const MAX_HEADER_BYTES: usize = 16 << 10;

/// A running HTTP server; [`Server::shutdown`] stops it.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Bind `addr` (port 0: any free port) and serve `model` on a background thread.
    pub fn start(model: Arc<Model>, addr: impl ToSocketAddrs, cfg: ServerConfig) -> Result<Server> {
        let listener = TcpListener::bind(addr).map_err(|e| Error::Io {
            context: "cannot bind the server address".into(),
            source: e,
        })?;
        let local = listener.local_addr().map_err(|e| Error::Io {
            context: "server address".into(),
            source: e,
        })?;
        listener.set_nonblocking(true).map_err(|e| Error::Io {
            context: "server socket".into(),
            source: e,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let (stop2, active2) = (stop.clone(), active.clone());
        let thread = std::thread::Builder::new()
            .name("quadra-http".into())
            .spawn(move || accept_loop(listener, model, cfg, stop2, active2))
            .map_err(|e| Error::Io {
                context: "cannot start the server thread".into(),
                source: e,
            })?;
        Ok(Server {
            addr: local,
            stop,
            active,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Block until the server stops (it stops only through `shutdown` from elsewhere, so
    /// this serves forever; for programs whose only job is serving).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stop accepting, wait (at most ~10 s) for requests in flight, and join.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for _ in 0..1000 {
            if self.active.load(Ordering::SeqCst) == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn accept_loop(
    listener: TcpListener,
    model: Arc<Model>,
    cfg: ServerConfig,
    stop: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
) {
    let dtype = crate::checkpoint::state_dict(&model)
        .first()
        .map_or(DType::F32, |(_, t)| t.dtype());
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(cfg.io_timeout));
                let _ = stream.set_write_timeout(Some(cfg.io_timeout));
                if active.fetch_add(1, Ordering::SeqCst) >= cfg.max_connections {
                    active.fetch_sub(1, Ordering::SeqCst);
                    let mut s = stream;
                    let _ = respond(
                        &mut s,
                        503,
                        &json!({"error": "server busy: too many connections"}),
                    );
                    continue;
                }
                let (model, cfg, active2) = (model.clone(), cfg.clone(), active.clone());
                let spawned = std::thread::Builder::new()
                    .name("quadra-http-conn".into())
                    .spawn(move || {
                        handle(stream, &model, dtype, &cfg);
                        active2.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn respond(s: &mut TcpStream, code: u16, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    write!(
        s,
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(code),
        body.len()
    )?;
    s.flush()
}

struct HttpError(u16, String);

fn err(code: u16, msg: impl Into<String>) -> HttpError {
    HttpError(code, msg.into())
}

fn io_status(e: &std::io::Error) -> HttpError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            err(408, "timed out reading the request")
        }
        _ => err(400, format!("cannot read the request: {e}")),
    }
}

fn handle(stream: TcpStream, model: &Model, dtype: DType, cfg: &ServerConfig) {
    let mut out = match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    let (code, body) = match serve_one(stream, &mut out, model, dtype, cfg) {
        Ok(v) => (200, v),
        Err(HttpError(code, msg)) => (code, json!({ "error": msg })),
    };
    let _ = respond(&mut out, code, &body);
    let _ = out.shutdown(std::net::Shutdown::Write);
    // Discard what the client still sends (bounded: 1 MiB, 200 ms): closing a socket with
    // unread input makes the kernel reset the connection, which can destroy the answer
    // before the client reads it.
    let _ = out.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 8192];
    let mut drained = 0usize;
    while drained < (1 << 20) {
        match out.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

fn serve_one(
    stream: TcpStream,
    out: &mut TcpStream,
    model: &Model,
    dtype: DType,
    cfg: &ServerConfig,
) -> std::result::Result<Value, HttpError> {
    let mut r = BufReader::new(stream.take((MAX_HEADER_BYTES + cfg.max_body_bytes) as u64 + 1));
    // request line and headers, bounded
    let mut head_bytes = 0usize;
    let mut line = String::new();
    let mut read_line =
        |r: &mut BufReader<_>, line: &mut String| -> std::result::Result<(), HttpError> {
            line.clear();
            let n = r
                .by_ref()
                .take((MAX_HEADER_BYTES - head_bytes.min(MAX_HEADER_BYTES)) as u64 + 1)
                .read_line(line)
                .map_err(|e| io_status(&e))?;
            head_bytes += n;
            if head_bytes > MAX_HEADER_BYTES {
                return Err(err(
                    431,
                    format!("request headers exceed {MAX_HEADER_BYTES} bytes"),
                ));
            }
            if n == 0 {
                return Err(err(
                    400,
                    "connection closed before the request was complete",
                ));
            }
            Ok(())
        };
    read_line(&mut r, &mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) if v.starts_with("HTTP/1.") => (m.to_string(), t.to_string()),
        _ => return Err(err(400, "malformed request line")),
    };
    let mut content_length: Option<usize> = None;
    let mut content_type = String::new();
    let mut expect_continue = false;
    let mut chunked = false;
    loop {
        read_line(&mut r, &mut line)?;
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let Some((k, v)) = l.split_once(':') else {
            return Err(err(400, format!("malformed header line `{l}`")));
        };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                content_length = Some(
                    v.parse()
                        .map_err(|_| err(400, format!("bad Content-Length `{v}`")))?,
                )
            }
            "content-type" => content_type = v.to_ascii_lowercase(),
            "expect" => expect_continue = v.eq_ignore_ascii_case("100-continue"),
            "transfer-encoding" => chunked = !v.eq_ignore_ascii_case("identity"),
            _ => {}
        }
    }
    let path = target.split('?').next().unwrap_or("");
    match (method.as_str(), path) {
        ("GET", "/health") => {
            return Ok(json!({
                "status": "ok",
                "model": model.spec.name,
                "input": model.spec.input,
                "num_classes": model.spec.num_classes,
            }))
        }
        (_, "/health") => return Err(err(405, format!("{method} /health: use GET"))),
        ("POST", "/predict") => {}
        (_, "/predict") => return Err(err(405, format!("{method} /predict: use POST"))),
        _ => {
            return Err(err(
                404,
                format!("no route {method} {path} (POST /predict, GET /health)"),
            ))
        }
    }
    if chunked {
        return Err(err(
            411,
            "chunked bodies are not accepted: send a Content-Length",
        ));
    }
    let len = content_length.ok_or_else(|| err(411, "POST /predict needs a Content-Length"))?;
    if len > cfg.max_body_bytes {
        return Err(err(
            413,
            format!(
                "body of {len} bytes exceeds the limit of {} bytes",
                cfg.max_body_bytes
            ),
        ));
    }
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let is_json = match media.as_str() {
        "application/json" => true,
        "application/octet-stream" => false,
        "" => return Err(err(415, "missing Content-Type: use application/json or application/octet-stream (f32 little-endian)")),
        m => return Err(err(415, format!("Content-Type `{m}`: use application/json or application/octet-stream (f32 little-endian)"))),
    };
    if expect_continue {
        let _ = write!(out, "HTTP/1.1 100 Continue\r\n\r\n");
        let _ = out.flush();
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => err(
            400,
            format!("body shorter than its Content-Length ({len} bytes)"),
        ),
        _ => io_status(&e),
    })?;
    let sample = &model.spec.input;
    let x = if is_json {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| err(400, format!("body is not valid JSON: {e}")))?;
        input_from_json(&v, sample)
    } else {
        input_from_f32_le(&body, sample)
    }
    .map_err(|e| err(400, e.to_string()))?;
    let n = x.shape()[0];
    if n > cfg.max_batch {
        return Err(err(
            413,
            format!(
                "batch of {n} samples exceeds the limit of {}",
                cfg.max_batch
            ),
        ));
    }
    let x = if dtype == DType::F32 {
        x
    } else {
        x.to_dtype(dtype).map_err(|e| err(500, e.to_string()))?
    };
    let logits = model.predict(&x).map_err(|e| err(400, e.to_string()))?;
    prediction_json(&logits).map_err(|e| err(500, e.to_string()))
}

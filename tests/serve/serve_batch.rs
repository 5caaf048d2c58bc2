//! Dynamic batching (answers of concurrent clients equal sequential predictions), graceful
//! shutdown, /metrics, and an `#[ignore]`d load measurement.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use quadra::model::Model;
use quadra::serve::{Server, ServerConfig};

use crate::client::{
    self, connect, logits_of, max_abs_diff, predict_head, read_response, sample_bytes,
};

const OCTET: &str = "application/octet-stream";

/// Merged answers differ from one-at-a-time answers only by the GEMM's summation order
/// (eval-mode batch norm is per sample): a few f32 ulps of logits of magnitude ~1–10.
/// Measured on this CPU (gemm crate, AVX-512): 0 for qcnn in the test below (up to 12
/// requests merged) — its kernels sum each output in the same order whatever the row count
/// — so the bound is for other kernels (CUDA, other CPUs), not a measured drift.
pub const BATCH_TOLERANCE: f32 = 1e-5;

/// 12 clients × 4 requests of 1–3 samples each at once; every answer against
/// `Model::predict` of that request alone. Returns the largest difference and the mean
/// number of requests per model call (from /metrics).
fn concurrent_vs_sequential(model: Arc<Model>, max_delay: Duration) -> (f32, f64) {
    let server = Server::start(
        model.clone(),
        "127.0.0.1:0",
        ServerConfig {
            max_delay,
            max_batch_size: 32,
            ..Default::default()
        },
    )
    .unwrap();
    let addr = server.local_addr();
    let clients = 12;
    let barrier = Arc::new(Barrier::new(clients));
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (model, barrier) = (model.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut worst = 0f32;
                for k in 0..4 {
                    let n = 1 + (c + k) % 3;
                    let (x, raw) = sample_bytes(n, (c * 10 + k) as u64);
                    let want = model.predict(&x).unwrap().to_vec::<f32>().unwrap();
                    barrier.wait();
                    let r = client::post(addr, OCTET, &raw);
                    assert_eq!(r.code, 200, "{}", r.text);
                    let got = logits_of(&r.json());
                    worst = worst.max(max_abs_diff(&got, &want));
                    let arg: Vec<usize> = r.json()["argmax"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| a.as_u64().unwrap() as usize)
                        .collect();
                    assert_eq!(arg.len(), n);
                }
                worst
            })
        })
        .collect();
    let worst = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold(0f32, f32::max);
    let m = client::get(addr, "/metrics", "").text;
    let sum = metric(&m, "quadra_batch_requests_sum");
    let count = metric(&m, "quadra_batch_requests_count");
    assert_eq!(sum, (clients * 4) as f64, "{m}");
    server.shutdown();
    (worst, sum / count)
}

/// The value of an unlabelled sample line `name value`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn concurrent_answers_equal_sequential_with_and_without_batching() {
    let model = Arc::new(client::model("qcnn", 11));
    let (diff_on, merged) = concurrent_vs_sequential(model.clone(), Duration::from_millis(20));
    eprintln!("batching on: max |Δlogit| {diff_on:e}, {merged:.2} requests per model call");
    assert!(
        diff_on <= BATCH_TOLERANCE,
        "batched answers differ by {diff_on}"
    );
    assert!(merged > 1.0, "no request was merged ({merged} per call)");
    let (diff_off, merged) = concurrent_vs_sequential(model, Duration::ZERO);
    // off: every request is its own model call, the very computation of Model::predict
    assert_eq!(diff_off, 0.0);
    assert_eq!(merged, 1.0);
}

/// `shutdown` stops accepting at once, answers the request in flight, then returns.
#[test]
fn graceful_shutdown_finishes_the_request_in_flight() {
    let model = Arc::new(client::model("mlp", 5));
    let server = Server::start(model.clone(), "127.0.0.1:0", ServerConfig::default()).unwrap();
    let addr = server.local_addr();
    let (x, raw) = sample_bytes(2, 8);
    let mut s = connect(addr);
    s.write_all(predict_head(OCTET, raw.len(), "").as_bytes())
        .unwrap();
    s.write_all(&raw[..100]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let stopper = std::thread::spawn(move || server.shutdown());
    // the listener closes at once
    let mut refused = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(20));
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "still accepting during shutdown");
    assert!(
        !stopper.is_finished(),
        "shutdown returned before the request finished"
    );
    s.write_all(&raw[100..]).unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.code, 200, "{}", r.text);
    assert_eq!(
        logits_of(&r.json()),
        model.predict(&x).unwrap().to_vec::<f32>().unwrap()
    );
    stopper.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// /metrics is OpenMetrics text (every sample line `name{labels} value`, `# EOF` last) and
/// counts requests by route and status, errors, latencies and batch sizes.
#[test]
fn metrics_parse_and_count() {
    let server = Server::start(
        Arc::new(client::model("mlp", 5)),
        "127.0.0.1:0",
        ServerConfig::default(),
    )
    .unwrap();
    let addr = server.local_addr();
    let (_, raw) = sample_bytes(3, 1);
    for _ in 0..2 {
        assert_eq!(client::post(addr, OCTET, &raw).code, 200);
    }
    assert_eq!(client::post(addr, OCTET, &raw[..8]).code, 400);
    assert_eq!(client::get(addr, "/nothing", "").code, 404);
    assert_eq!(client::get(addr, "/health", "").code, 200);
    let r = client::get(addr, "/metrics", "");
    assert_eq!(r.code, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        r.headers
    );
    let text = r.text;
    assert_eq!(text.lines().last(), Some("# EOF"), "{text}");
    let mut samples = std::collections::HashMap::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = l
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {l:?}"));
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {l:?}"));
        assert!(
            name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && (!name.contains('{') || name.ends_with('}')),
            "bad name in {l:?}"
        );
        samples.insert(name.to_string(), v);
    }
    let get = |k: &str| *samples.get(k).unwrap_or_else(|| panic!("no {k} in {text}"));
    assert_eq!(
        get("quadra_http_requests_total{route=\"/predict\",status=\"200\"}"),
        2.0
    );
    assert_eq!(
        get("quadra_http_requests_total{route=\"/predict\",status=\"400\"}"),
        1.0
    );
    assert_eq!(
        get("quadra_http_requests_total{route=\"other\",status=\"404\"}"),
        1.0
    );
    assert_eq!(
        get("quadra_http_requests_total{route=\"/health\",status=\"200\"}"),
        1.0
    );
    assert_eq!(get("quadra_http_errors_total{route=\"/predict\"}"), 1.0);
    assert_eq!(get("quadra_http_errors_total{route=\"other\"}"), 1.0);
    assert_eq!(
        get("quadra_http_request_duration_seconds_count{route=\"/predict\"}"),
        3.0
    );
    assert_eq!(
        get("quadra_http_request_duration_seconds_bucket{le=\"+Inf\",route=\"/predict\"}"),
        3.0
    );
    assert_eq!(get("quadra_batch_samples_count"), 2.0);
    assert_eq!(get("quadra_batch_samples_sum"), 6.0);
    assert_eq!(get("quadra_predicted_samples_total"), 6.0);
    server.shutdown();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// N requests of one sample from M concurrent clients (kept-alive connections), batching on
/// and off: p50/p99 latency, throughput, errors. `QUADRA_LOAD_MODEL` (default qcnn),
/// `QUADRA_LOAD_N` (default 2000), `QUADRA_LOAD_CLIENTS` (default 16).
///
///     cargo test --release --test serve load_measurement -- --ignored --nocapture
#[test]
#[ignore]
fn load_measurement() {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let name = env("QUADRA_LOAD_MODEL", "qcnn");
    let n: usize = env("QUADRA_LOAD_N", "2000").parse().unwrap();
    let m: usize = env("QUADRA_LOAD_CLIENTS", "16").parse().unwrap();
    let model = Arc::new(client::model(&name, 1));
    for delay_ms in [2u64, 0] {
        let server = Server::start(
            model.clone(),
            "127.0.0.1:0",
            ServerConfig {
                max_delay: Duration::from_millis(delay_ms),
                ..Default::default()
            },
        )
        .unwrap();
        let addr: SocketAddr = server.local_addr();
        let mut shape = vec![1];
        shape.extend_from_slice(&model.spec.input);
        let x = quadra::Tensor::randn(&shape, quadra::DType::F32, 1.0, 3).unwrap();
        let raw = Arc::new(client::f32_le(&x));
        let t0 = Instant::now();
        let handles: Vec<_> = (0..m)
            .map(|c| {
                let raw = raw.clone();
                std::thread::spawn(move || {
                    let mut lat = Vec::new();
                    let mut errors = 0;
                    let mut s = connect(addr);
                    let head = predict_head(OCTET, raw.len(), "");
                    for _ in (c..n).step_by(m) {
                        let t = Instant::now();
                        let sent = s
                            .write_all(head.as_bytes())
                            .and_then(|()| s.write_all(&raw));
                        match sent.ok().and_then(|()| read_response(&mut s)) {
                            Some(r) if r.code == 200 => lat.push(t.elapsed()),
                            _ => {
                                errors += 1;
                                s = connect(addr);
                            }
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        let mut lat = Vec::new();
        let mut errors = 0;
        for h in handles {
            let (l, e) = h.join().unwrap();
            lat.extend(l);
            errors += e;
        }
        let wall = t0.elapsed();
        lat.sort();
        let text = client::get(addr, "/metrics", "").text;
        let calls = metric(&text, "quadra_batch_samples_count");
        eprintln!(
            "load {name}: {n} requests × 1 sample, {m} clients, batching {}: p50 {:?} p99 {:?}, {:.0} req/s, {errors} errors, {:.2} samples per model call",
            if delay_ms == 0 { "off".to_string() } else { format!("on ({delay_ms} ms)") },
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.len() as f64 / wall.as_secs_f64(),
            lat.len() as f64 / calls,
        );
        assert_eq!(errors, 0);
        server.shutdown();
    }
}

fn peak_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Peak RSS of the (in-process) server for one and for 32 concurrent 16 MiB JSON bodies
/// (mlp, ~2.8 M numbers each, batching off). Linux only (/proc/self/status).
///
///     cargo test --test serve json_body_memory -- --ignored --nocapture
#[test]
#[ignore]
fn json_body_memory() {
    let per = 784;
    let mut body = String::with_capacity(16 << 20);
    body.push('[');
    let mut n = 0usize;
    'fill: loop {
        body.push_str("[[");
        for h in 0..28 {
            body.push_str(if h == 0 { "[" } else { ",[" });
            for w in 0..28 {
                if w > 0 {
                    body.push(',');
                }
                body.push_str("0.125");
            }
            body.push(']');
        }
        body.push_str("]]");
        n += 1;
        if body.len() + 7 * per + 8 > 16 << 20 {
            break 'fill;
        }
        body.push(',');
    }
    body.push(']');
    let body = Arc::new(body.into_bytes());
    let server = Server::start(
        Arc::new(client::model("mlp", 5)),
        "127.0.0.1:0",
        ServerConfig {
            max_body_bytes: 16 << 20,
            max_batch: n,
            max_batch_size: n,
            max_concurrency: 32,
            max_delay: Duration::ZERO,
            request_timeout: Duration::from_secs(120),
            ..Default::default()
        },
    )
    .unwrap();
    let addr = server.local_addr();
    let send = |body: &[u8]| {
        let r = client::post(addr, "application/json", body);
        assert_eq!(r.code, 200, "{}", &r.text[..r.text.len().min(300)]);
    };
    let base = peak_rss_kib();
    send(&body);
    let one = peak_rss_kib();
    let handles: Vec<_> = (0..32)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                let r = client::post(addr, "application/json", &body);
                r.code
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 200);
    }
    let all = peak_rss_kib();
    eprintln!(
        "JSON body of {} bytes ({n} samples, {} numbers): peak RSS {} MiB before, +{} MiB after one, +{} MiB after 32 concurrent ({} MiB per body)",
        body.len(),
        n * per,
        base >> 10,
        (one - base) >> 10,
        (all - base) >> 10,
        ((all - base) >> 10) / 32
    );
    server.shutdown();
}

/// /health answers while a long prediction runs: the model computes on the batcher's
/// threads, never on the reactor's. (192 samples: about 0.6 s of qresnet14 on 2 threads,
/// long enough that probes land inside it however fast the engine gets; 48 samples ended
/// before the first probe once the CPU engine sped up.)
#[test]
fn health_answers_during_a_long_prediction() {
    let model = Arc::new(client::model("qresnet14", 2));
    let server = Server::start(model.clone(), "127.0.0.1:0", ServerConfig::default()).unwrap();
    let addr = server.local_addr();
    let n = 192;
    let x = quadra::Tensor::randn(&[n, 3, 32, 32], quadra::DType::F32, 1.0, 1).unwrap();
    let raw = client::f32_le(&x);
    let t0 = Instant::now();
    let long = std::thread::spawn(move || {
        let r = client::post(addr, OCTET, &raw);
        (r.code, t0.elapsed())
    });
    std::thread::sleep(Duration::from_millis(30));
    let mut probes = Vec::new();
    while !long.is_finished() && probes.len() < 20 {
        let t = Instant::now();
        let r = client::get(addr, "/health", "");
        assert_eq!(r.code, 200);
        probes.push((t.duration_since(t0), t.elapsed()));
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, took) = long.join().unwrap();
    assert_eq!(code, 200);
    let during: Vec<Duration> = probes
        .iter()
        .filter(|(at, lat)| *at + *lat < took)
        .map(|p| p.1)
        .collect();
    eprintln!(
        "prediction of {n} samples took {took:?}; {} /health probes during it, slowest {:?}",
        during.len(),
        during.iter().max()
    );
    assert!(
        !during.is_empty(),
        "the prediction ({took:?}) ended before any probe"
    );
    assert!(
        during.iter().all(|d| *d < Duration::from_millis(500)),
        "{during:?}"
    );
    server.shutdown();
}

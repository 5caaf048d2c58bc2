//! The server under hostile or careless clients: slow-trickle connections, overload,
//! oversized and malformed bodies, duplicate Content-Length, non-finite inputs, tokens.
//! Every answer is checked by status and body; none may be a reset.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quadra::serve::{Server, ServerConfig};

use crate::client::{self, connect, predict_head, read_response, sample_bytes};

const OCTET: &str = "application/octet-stream";

fn start(cfg: ServerConfig) -> Server {
    Server::start(Arc::new(client::model("mlp", 5)), "127.0.0.1:0", cfg).unwrap()
}

fn error_of(r: &client::Resp) -> String {
    r.json()["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no JSON error in {} {:?}", r.code, r.text))
        .to_string()
}

/// 150 connections trickle a request head one byte a second and 50 a /predict body; the
/// whole time, /health and /predict probes each answer within 1 s.
#[test]
fn trickle_attack_does_not_starve_probes() {
    let server = start(ServerConfig::default());
    let addr = server.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (_, raw) = sample_bytes(1, 1);
            let mut conns: Vec<(TcpStream, Vec<u8>)> = Vec::new();
            for i in 0..200 {
                let s = TcpStream::connect(addr).unwrap();
                let msg = if i < 150 {
                    b"GET /health HTTP/1.1\r\nHost: slow\r\nX-Pad: aaaaaaaaaaaaaaaaaaaa\r\n\r\n"
                        .to_vec()
                } else {
                    let mut m = predict_head(OCTET, raw.len(), "").into_bytes();
                    m.extend_from_slice(&raw);
                    m
                };
                conns.push((s, msg));
            }
            // the /predict tricklers send their head at once, then the body byte by byte
            for (s, m) in conns.iter_mut().skip(150) {
                let head = m.len() - raw.len();
                s.write_all(&m[..head]).unwrap();
                m.drain(..head);
            }
            let mut at = 0;
            while !stop.load(Ordering::SeqCst) {
                for (s, m) in conns.iter_mut() {
                    if at < m.len() {
                        let _ = s.write_all(&m[at..at + 1]);
                    }
                }
                at += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            conns.len()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (_, raw) = sample_bytes(1, 2);
    let (mut ok, mut total, mut worst) = (0, 0, Duration::ZERO);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        for predict in [false, true] {
            let t = Instant::now();
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            if predict {
                s.write_all(predict_head(OCTET, raw.len(), "").as_bytes())
                    .unwrap();
                s.write_all(&raw).unwrap();
            } else {
                s.write_all(b"GET /health HTTP/1.1\r\nHost: probe\r\n\r\n")
                    .unwrap();
            }
            let r = read_response(&mut s);
            let took = t.elapsed();
            worst = worst.max(took);
            total += 1;
            if r.is_some_and(|r| r.code == 200) && took < Duration::from_secs(1) {
                ok += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    assert_eq!(attacker.join().unwrap(), 200);
    eprintln!("trickle: {ok}/{total} probes answered 200 within 1 s (slowest {worst:?})");
    assert!(total >= 20, "only {total} probes ran");
    assert!(
        ok * 100 >= total * 99,
        "{ok}/{total} probes answered within 1 s (slowest {worst:?})"
    );
    server.shutdown();
}

/// /predict over `max_concurrency` is answered 503 + Retry-After at once; the request that
/// holds the slot still completes; over `max_connections`, a connection gets a 503 answer
/// (not a reset).
#[test]
fn overload_is_503_with_retry_after() {
    let server = start(ServerConfig {
        max_concurrency: 1,
        max_connections: 3,
        ..Default::default()
    });
    let addr = server.local_addr();
    let (x, raw) = sample_bytes(1, 3);
    // holds the only /predict slot: head and half the body
    let mut holder = connect(addr);
    holder
        .write_all(predict_head(OCTET, raw.len(), "").as_bytes())
        .unwrap();
    holder.write_all(&raw[..raw.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let r = client::post(addr, OCTET, &raw);
    assert_eq!(r.code, 503, "{}", r.text);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(error_of(&r).contains("busy"), "{}", r.text);
    // /health is not limited by the /predict slots
    assert_eq!(client::get(addr, "/health", "").code, 200);
    holder.write_all(&raw[raw.len() / 2..]).unwrap();
    let r = read_response(&mut holder).unwrap();
    assert_eq!(r.code, 200, "{}", r.text);
    let want = client::model("mlp", 5)
        .predict(&x)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(client::logits_of(&r.json()), want);
    assert_eq!(client::post(addr, OCTET, &raw).code, 200);

    // connections: `holder` (kept alive) and two idle ones fill the 3 slots
    holder
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = read_response(&mut holder).expect("the kept-alive connection was closed");
    assert_eq!(r.code, 200);
    // (the server must first see the earlier connections close, or an idle one below would
    // be the rejected one)
    std::thread::sleep(Duration::from_millis(300));
    let idle: Vec<TcpStream> = (0..2).map(|_| connect(addr)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let r = client::get(addr, "/health", "");
    assert_eq!(r.code, 503, "{}", r.text);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(error_of(&r).contains("connections"), "{}", r.text);
    drop(idle);
    drop(holder);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(client::get(addr, "/health", "").code, 200);
    let m = client::get(addr, "/metrics", "").text;
    assert!(
        m.contains("quadra_http_requests_total{route=\"/predict\",status=\"503\"} 1"),
        "{m}"
    );
    assert!(m.contains("quadra_connections_rejected_total 1"), "{m}");
    server.shutdown();
}

/// Bodies over the limit are refused while they stream: a declared length at once, a
/// chunked body as soon as the limit is passed (the rest never sent).
#[test]
fn body_over_limit_is_413_before_it_is_read() {
    let server = start(ServerConfig {
        max_body_bytes: 64 << 10,
        ..Default::default()
    });
    let addr = server.local_addr();
    // declared: 10 GB, nothing sent
    let mut s = connect(addr);
    s.write_all(predict_head(OCTET, 10_000_000_000, "").as_bytes())
        .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.code, 413, "{}", r.text);
    assert!(error_of(&r).contains("65536"), "{}", r.text);
    // near u64::MAX: no overflow anywhere (hyper refuses lengths above u64::MAX - 2 itself,
    // with 431, before the router sees them)
    for len in [u64::MAX - 2, u64::MAX] {
        let r = client::request(
            addr,
            &format!(
                "POST /predict HTTP/1.1\r\nContent-Type: {OCTET}\r\nContent-Length: {len}\r\n\r\n"
            ),
            b"",
        );
        assert!([413, 431].contains(&r.code), "{len}: {} {}", r.code, r.text);
    }
    assert_eq!(client::get(addr, "/health", "").code, 200);
    // chunked: 80 KiB of an unending body
    let mut s = connect(addr);
    s.write_all(
        format!(
            "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {OCTET}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let chunk = vec![0u8; 8 << 10];
    let t = Instant::now();
    for _ in 0..10 {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .unwrap();
        s.write_all(&chunk).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.code, 413, "{}", r.text);
    assert!(error_of(&r).contains("limit of 65536"), "{}", r.text);
    assert!(t.elapsed() < Duration::from_secs(5));
    // a chunked body under the limit is fine
    let (_, raw) = sample_bytes(2, 1);
    let mut s = connect(addr);
    let mut req = format!(
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {OCTET}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for part in raw.chunks(1000) {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    s.write_all(&req).unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.code, 200, "{}", r.text);
    server.shutdown();
}

/// Conflicting Content-Length headers are a 400 (hyper's check: the old server let the last
/// one win); equal duplicates are one length (RFC 9110 §8.6).
#[test]
fn duplicate_content_length_is_400() {
    let server = start(ServerConfig::default());
    let addr = server.local_addr();
    let (_, raw) = sample_bytes(1, 1);
    let head = format!(
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {OCTET}\r\nContent-Length: {}\r\nContent-Length: 4\r\n\r\n",
        raw.len()
    );
    let r = client::request(addr, &head, &raw);
    assert_eq!(r.code, 400, "{}", r.text);
    let head = format!(
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {OCTET}\r\nContent-Length: {0}\r\nContent-Length: {0}\r\n\r\n",
        raw.len()
    );
    assert_eq!(client::request(addr, &head, &raw).code, 200);
    let r = client::request(
        addr,
        &format!("POST /predict HTTP/1.1\r\nContent-Type: {OCTET}\r\nContent-Length: 12a\r\n\r\n"),
        b"",
    );
    assert_eq!(r.code, 400, "{}", r.text);
    server.shutdown();
}

/// Non-finite inputs are a 400 naming the value in both body formats.
#[test]
fn non_finite_inputs_are_400_in_both_formats() {
    let server = start(ServerConfig::default());
    let addr = server.local_addr();
    let (_, mut raw) = sample_bytes(2, 1);
    raw[4 * 790..4 * 791].copy_from_slice(&f32::NAN.to_le_bytes());
    let r = client::post(addr, OCTET, &raw);
    assert_eq!(r.code, 400, "{}", r.text);
    let e = error_of(&r);
    assert!(
        e.contains("NaN") && e.contains("sample 1, element 6"),
        "{e}"
    );
    raw[4 * 790..4 * 791].copy_from_slice(&f32::INFINITY.to_le_bytes());
    let e = error_of(&client::post(addr, OCTET, &raw));
    assert!(e.contains("inf") && e.contains("finite"), "{e}");
    // JSON: 1e39 is a finite f64 but not a finite f32
    let mut row = vec!["0".to_string(); 28];
    row[3] = "1e39".into();
    let img = format!("[[{}]]", vec![format!("[{}]", row.join(",")); 28].join(","));
    let r = client::post(addr, "application/json", img.as_bytes());
    assert_eq!(r.code, 400, "{}", r.text);
    let e = error_of(&r);
    assert!(e.contains("finite") && e.contains("[0, 0, 3]"), "{e}");
    // JSON's own limits: not a number, wrong nesting, ragged
    for (body, want) in [
        ("[[[1, \"a\"]]]", "[0, 0, 1] is a string, not a number"),
        ("[[[1, null]]]", "null, not a number"),
        ("[[[[[1]]]]]", "array where a number"),
        ("[[1, 2], [3]]", "ragged"),
        ("{\"x\": 1}", "without an `input`"),
        ("[1, 2", "not valid JSON"),
    ] {
        let r = client::post(addr, "application/json", body.as_bytes());
        assert_eq!(r.code, 400, "{body}: {}", r.text);
        assert!(error_of(&r).contains(want), "{body}: {}", r.text);
    }
    server.shutdown();
}

/// With a token, /predict and /metrics need it (401 otherwise); /health does not.
#[test]
fn token_is_required_when_set() {
    let server = start(ServerConfig {
        token: Some("t0ken".into()),
        ..Default::default()
    });
    let addr = server.local_addr();
    let (_, raw) = sample_bytes(1, 1);
    for extra in [
        "",
        "Authorization: Bearer wrong\r\n",
        "Authorization: Bearer t0ke\r\n",
        "Authorization: Basic t0ken\r\n",
        "Authorization: t0ken\r\n",
    ] {
        let r = client::request(addr, &predict_head(OCTET, raw.len(), extra), &raw);
        assert_eq!(r.code, 401, "{extra:?}: {}", r.text);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert!(error_of(&r).contains("bearer token"), "{}", r.text);
        assert_eq!(client::get(addr, "/metrics", extra).code, 401);
    }
    for extra in [
        "Authorization: Bearer t0ken\r\n",
        "authorization: bearer  t0ken\r\n",
    ] {
        let r = client::request(addr, &predict_head(OCTET, raw.len(), extra), &raw);
        assert_eq!(r.code, 200, "{extra:?}: {}", r.text);
        assert_eq!(client::get(addr, "/metrics", extra).code, 200);
    }
    assert_eq!(client::get(addr, "/health", "").code, 200);
    server.shutdown();
}

/// Bad settings are errors, huge ones are capped (no overflow anywhere).
#[test]
fn config_limits_are_checked_and_overflow_safe() {
    let m = Arc::new(client::model("mlp", 5));
    for cfg in [
        ServerConfig {
            max_concurrency: 0,
            ..Default::default()
        },
        ServerConfig {
            request_timeout: Duration::ZERO,
            ..Default::default()
        },
        ServerConfig {
            token: Some(" ".into()),
            ..Default::default()
        },
    ] {
        let e = Server::start(m.clone(), "127.0.0.1:0", cfg).err().unwrap();
        assert!(e.to_string().contains("server config"), "{e}");
    }
    let server = Server::start(
        m,
        "127.0.0.1:0",
        ServerConfig {
            max_body_bytes: usize::MAX,
            max_batch: usize::MAX,
            max_batch_size: usize::MAX,
            max_concurrency: usize::MAX,
            max_connections: usize::MAX,
            request_timeout: Duration::MAX,
            header_timeout: Duration::MAX,
            max_delay: Duration::from_millis(1),
            ..Default::default()
        },
    )
    .unwrap();
    let addr: SocketAddr = server.local_addr();
    let (_, raw) = sample_bytes(3, 1);
    let r = client::post(addr, OCTET, &raw);
    assert_eq!(r.code, 200, "{}", r.text);
    server.shutdown();
}

/// A client that sent its whole request (an 8 MiB body) to a full server reads a 503, not
/// a reset (or a broken pipe while it still sends): the server reads the body it refuses
/// (bounded) before it closes. Alike for the /predict slots, a wrong token, a bad type.
#[test]
fn full_server_answers_a_sent_request_not_resets_it() {
    let server = start(ServerConfig {
        max_connections: 1,
        ..Default::default()
    });
    let addr = server.local_addr();
    let _held = connect(addr);
    std::thread::sleep(Duration::from_millis(200));
    let body = vec![0u8; 8 << 20];
    for _ in 0..3 {
        let mut s = connect(addr);
        s.write_all(predict_head(OCTET, body.len(), "").as_bytes())
            .unwrap();
        s.write_all(&body).unwrap();
        let r = read_response(&mut s).expect("reset instead of an answer");
        assert_eq!(r.code, 503, "{}", r.text);
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    server.shutdown();

    let server = start(ServerConfig {
        max_concurrency: 1,
        token: Some("tok".into()),
        ..Default::default()
    });
    let addr = server.local_addr();
    let auth = "Authorization: Bearer tok\r\n";
    let (_, raw) = sample_bytes(1, 1);
    let mut holder = connect(addr);
    holder
        .write_all(predict_head(OCTET, raw.len(), auth).as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for (ctype, extra, want) in [
        (OCTET, auth, 503),
        (OCTET, "", 401),
        ("text/plain", auth, 503),
    ] {
        let mut s = connect(addr);
        s.write_all(predict_head(ctype, body.len(), extra).as_bytes())
            .unwrap();
        s.write_all(&body).unwrap();
        let r = read_response(&mut s).expect("reset instead of an answer");
        assert_eq!(r.code, want, "{}", r.text);
    }
    holder.write_all(&raw).unwrap();
    assert_eq!(read_response(&mut holder).unwrap().code, 200);
    // with the slot free, a wrong content type is a 415 after an 8 MiB body, not a reset
    let mut s = connect(addr);
    s.write_all(predict_head("text/plain", body.len(), auth).as_bytes())
        .unwrap();
    s.write_all(&body).unwrap();
    assert_eq!(read_response(&mut s).unwrap().code, 415);
    server.shutdown();
}

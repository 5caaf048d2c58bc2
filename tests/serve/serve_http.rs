//! The HTTP server (`quadra::serve::Server`, which examples/serve_http.rs runs) on
//! 127.0.0.1 with an OS-chosen port: predictions over loopback equal `Model::predict`,
//! bad requests get clear 4xx answers, and the server shuts down.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use quadra::model::Model;
use quadra::nn::spec::BuildOptions;
use quadra::serve::{Server, ServerConfig};
use quadra::{models, DType, Tensor};
use serde_json::Value;

use crate::support::tempdir;

fn request(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let code: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn post(addr: SocketAddr, ctype: &str, body: &[u8]) -> (u16, Value) {
    let head = format!(
        "POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    request(addr, &head, body)
}

fn model() -> Model {
    let spec = models::get("mlp", None, 10).unwrap();
    Model::build(
        &spec,
        BuildOptions {
            seed: 5,
            ..Default::default()
        },
    )
    .unwrap()
}

fn logits_of(v: &Value) -> Vec<f32> {
    v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect()
}

#[test]
fn predict_over_loopback() {
    let model = Arc::new(model());
    let cfg = ServerConfig {
        max_body_bytes: 64 << 10,
        max_batch: 4,
        ..Default::default()
    };
    let server = Server::start(model.clone(), "127.0.0.1:0", cfg).unwrap();
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());

    let x = Tensor::randn(&[3, 1, 28, 28], DType::F32, 1.0, 9).unwrap();
    let want = model.predict(&x).unwrap();
    let want_arg = quadra::serve::argmax(&want).unwrap();
    let want = want.to_vec::<f32>().unwrap();

    // raw f32 little-endian
    let raw: Vec<u8> = x
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let (code, v) = post(addr, "application/octet-stream", &raw);
    assert_eq!(code, 200, "{v}");
    assert_eq!(logits_of(&v), want);
    let arg: Vec<usize> = v["argmax"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(arg, want_arg);

    // JSON (N, C, H, W); f32 values print and parse back exactly
    let vals = x.to_vec::<f32>().unwrap();
    let nested: Vec<Vec<Vec<Vec<f32>>>> = (0..3)
        .map(|n| {
            vec![(0..28)
                .map(|h| vals[n * 784 + h * 28..n * 784 + h * 28 + 28].to_vec())
                .collect()]
        })
        .collect();
    let body = serde_json::to_vec(&nested).unwrap();
    let (code, v) = post(addr, "application/json", &body);
    assert_eq!(code, 200, "{v}");
    assert_eq!(logits_of(&v), want);
    // one sample without the batch dimension, inside {"input": …}
    let body = serde_json::to_vec(&serde_json::json!({ "input": nested[0] })).unwrap();
    let (code, v) = post(addr, "application/json", &body);
    assert_eq!(code, 200, "{v}");
    // (a batch of one may round differently from row 0 of a batch of three: GEMM blocking)
    let d = logits_of(&v)
        .iter()
        .zip(&want[..10])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-5, "single-sample logits differ by {d}");

    // health
    let (code, v) = request(addr, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", b"");
    assert_eq!((code, v["model"].as_str()), (200, Some("mlp")));

    // clear 4xx errors
    let (code, v) = post(addr, "application/octet-stream", &raw[..raw.len() - 4]);
    assert_eq!(code, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not a whole number of samples"),
        "{v}"
    );
    let (code, v) = post(addr, "application/json", b"[[1, 2], [3]]");
    assert_eq!(code, 400, "{v}");
    let (code, v) = post(addr, "application/json", b"{not json");
    assert_eq!(code, 400);
    assert!(v["error"].as_str().unwrap().contains("JSON"), "{v}");
    let (code, _) = post(addr, "text/plain", b"1");
    assert_eq!(code, 415);
    let big = vec![0u8; 5 * 784 * 4];
    let (code, v) = post(addr, "application/octet-stream", &big[..]);
    assert_eq!(code, 413, "{v}");
    let (code, v) = request(
        addr,
        "POST /predict HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 999999999\r\n\r\n",
        b"",
    );
    assert_eq!(code, 413);
    assert!(v["error"].as_str().unwrap().contains("limit"), "{v}");
    let (code, _) = request(
        addr,
        "POST /predict HTTP/1.1\r\nContent-Type: application/json\r\n\r\n",
        b"",
    );
    assert_eq!(code, 411);
    let (code, _) = request(addr, "GET /predict HTTP/1.1\r\n\r\n", b"");
    assert_eq!(code, 405);
    let (code, _) = request(addr, "GET /nothing HTTP/1.1\r\n\r\n", b"");
    assert_eq!(code, 404);
    let (code, _) = request(addr, "garbage\r\n\r\n", b"");
    assert_eq!(code, 400);

    server.shutdown();
    // bounded: the port no longer accepts (or refuses) within a few tries
    let mut closed = false;
    for _ in 0..50 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    assert!(closed, "server still accepting after shutdown");
}

/// The example binary itself, when cargo built it (it does for a plain `cargo test`).
#[test]
fn example_binary_serves_a_checkpoint() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_quadra-train"));
    let example = bin.parent().unwrap().join("examples").join("serve_http");
    if !example.exists() {
        eprintln!(
            "skipped: {} not built (run `cargo test` without a target filter)",
            example.display()
        );
        return;
    }
    let dir = tempdir("serve-http");
    let ck = dir.join("mlp.safetensors");
    let m = model();
    m.save(&ck).unwrap();
    let mut child = Command::new(&example)
        .args([ck.to_str().unwrap(), "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    // first line: "listening on http://127.0.0.1:PORT"
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 200 && out.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    let line = String::from_utf8(line).unwrap();
    let addr: SocketAddr = line
        .rsplit("http://")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|e| {
            let _ = child.kill();
            panic!("bad first line `{line}`: {e}")
        });
    let x = Tensor::randn(&[2, 1, 28, 28], DType::F32, 1.0, 4).unwrap();
    let raw: Vec<u8> = x
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let (code, v) = post(addr, "application/octet-stream", &raw);
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        logits_of(&v),
        m.predict(&x).unwrap().to_vec::<f32>().unwrap()
    );
}

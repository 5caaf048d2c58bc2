//! The HTTP server (`quadra::serve::Server`, which examples/serve_http.rs runs) on
//! 127.0.0.1 with an OS-chosen port: predictions over loopback equal `Model::predict`,
//! bad requests get clear 4xx answers, and the server shuts down.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use quadra::serve::{Server, ServerConfig};
use quadra::{DType, Tensor};
use serde_json::Value;

use crate::client::{self, logits_of};
use crate::support::tempdir;

fn request(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, Value) {
    let r = client::request(addr, head, body);
    (r.code, r.json())
}

fn post(addr: SocketAddr, ctype: &str, body: &[u8]) -> (u16, Value) {
    let r = client::post(addr, ctype, body);
    (r.code, r.json())
}

fn model() -> quadra::model::Model {
    client::model("mlp", 5)
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

/// Start a serving binary; its address from its first stdout line
/// (`listening on http://127.0.0.1:PORT`).
fn spawn_server(bin: &Path, args: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 200 && out.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    let line = String::from_utf8(line).unwrap();
    match line
        .strip_prefix("listening on http://")
        .map(|a| a.trim().parse())
    {
        Some(Ok(addr)) => (child, addr),
        _ => {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("bad first line `{line}` (stderr: {err})")
        }
    }
}

fn predict_two(addr: SocketAddr, m: &quadra::model::Model) {
    let (x, raw) = client::sample_bytes(2, 4);
    let (code, v) = post(addr, "application/octet-stream", &raw);
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        logits_of(&v),
        m.predict(&x).unwrap().to_vec::<f32>().unwrap()
    );
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
    let (mut child, addr) =
        spawn_server(&example, &[ck.to_str().unwrap(), "--addr", "127.0.0.1:0"]);
    predict_two(addr, &m);
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `quadra-train serve CKPT`: serves, asks for the token, and stops gracefully on SIGTERM
/// (exit status 0, "stopped" on stderr).
#[test]
fn serve_subcommand_serves_and_stops_on_sigterm() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_quadra-train"));
    let dir = tempdir("serve-cli");
    let ck = dir.join("mlp.safetensors");
    let tok = dir.join("token");
    std::fs::write(&tok, "s3cret-token\n").unwrap();
    let m = model();
    m.save(&ck).unwrap();
    let (mut child, addr) = spawn_server(
        &bin,
        &[
            "serve",
            ck.to_str().unwrap(),
            "--addr",
            "127.0.0.1:0",
            "--token-file",
            tok.to_str().unwrap(),
            "--max-delay-ms",
            "1",
        ],
    );
    let (x, raw) = client::sample_bytes(2, 4);
    let r = client::post(addr, "application/octet-stream", &raw);
    assert_eq!(r.code, 401, "{}", r.text);
    let r = client::request(
        addr,
        &client::predict_head(
            "application/octet-stream",
            raw.len(),
            "Authorization: Bearer s3cret-token\r\n",
        ),
        &raw,
    );
    assert_eq!(r.code, 200, "{}", r.text);
    assert_eq!(
        logits_of(&r.json()),
        m.predict(&x).unwrap().to_vec::<f32>().unwrap()
    );
    let (code, v) = request(addr, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", b"");
    assert_eq!((code, v["model"].as_str()), (200, Some("mlp")));

    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let mut waited = 0;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        waited += 1;
        if waited > 100 {
            let _ = child.kill();
            panic!("quadra-train serve still running 10 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    assert!(status.success(), "exit {status:?}; stderr: {err}");
    assert!(err.contains("stopped"), "{err}");
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err());

    // a bad token file is a clear error, not a panic
    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let out = Command::new(&bin)
        .args([
            "serve",
            ck.to_str().unwrap(),
            "--addr",
            "127.0.0.1:0",
            "--token-file",
        ])
        .arg(&empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("--token-file") && e.contains("empty"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

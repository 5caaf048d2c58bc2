//! A minimal HTTP/1.1 client for the serve tests: raw heads (so tests can send what real
//! clients would not — duplicate headers, trickled bytes, garbage) and a response reader
//! that follows `Content-Length`, so it works on kept-alive connections too.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use quadra::model::Model;
use quadra::nn::spec::BuildOptions;
use quadra::{models, DType, Tensor};
use serde_json::Value;

pub struct Resp {
    pub code: u16,
    /// The head's header lines, lower-cased names: `name: value`.
    pub headers: Vec<(String, String)>,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Read one response from `s` (None when the connection closed or failed first).
pub fn read_response(s: &mut TcpStream) -> Option<Resp> {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut b) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let code: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let mut body = buf[head_end..].to_vec();
    match len {
        Some(n) => {
            while body.len() < n {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => body.extend_from_slice(&b[..k]),
                }
            }
            body.truncate(n);
        }
        None => {
            let _ = s.read_to_end(&mut body);
        }
    }
    Some(Resp {
        code,
        headers,
        text: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // a head and a body in two writes would otherwise wait for the server's delayed ACK
    // (Nagle): ~40 ms a request
    s.set_nodelay(true).unwrap();
    s
}

/// One request on a fresh connection; panics when no response comes.
pub fn request(addr: SocketAddr, head: &str, body: &[u8]) -> Resp {
    let mut s = connect(addr);
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    read_response(&mut s).unwrap_or_else(|| panic!("no response to {head:?}"))
}

pub fn predict_head(ctype: &str, len: usize, extra: &str) -> String {
    format!(
        "POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: {ctype}\r\nContent-Length: {len}\r\n{extra}\r\n"
    )
}

pub fn post(addr: SocketAddr, ctype: &str, body: &[u8]) -> Resp {
    request(addr, &predict_head(ctype, body.len(), ""), body)
}

pub fn get(addr: SocketAddr, path: &str, extra: &str) -> Resp {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n"),
        b"",
    )
}

pub fn model(name: &str, seed: u64) -> Model {
    let spec = models::get(name, None, 10).unwrap();
    Model::build(
        &spec,
        BuildOptions {
            seed,
            ..Default::default()
        },
    )
    .unwrap()
}

pub fn f32_le(x: &Tensor) -> Vec<u8> {
    x.to_vec::<f32>()
        .unwrap()
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

pub fn sample_bytes(n: usize, seed: u64) -> (Tensor, Vec<u8>) {
    let x = Tensor::randn(&[n, 1, 28, 28], DType::F32, 1.0, seed).unwrap();
    let b = f32_le(&x);
    (x, b)
}

pub fn logits_of(v: &Value) -> Vec<f32> {
    v["logits"]
        .as_array()
        .unwrap_or_else(|| panic!("no logits in {v}"))
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

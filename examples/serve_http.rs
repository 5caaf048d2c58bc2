//! The serving library in a few lines: `quadra::serve::Server` on a checkpoint. POST
//! /predict with a raw f32 little-endian (N, C, H, W) body (`Content-Type:
//! application/octet-stream`) or a JSON array (`application/json`) → `{"logits": [[…]],
//! "argmax": […]}`; GET /health; GET /metrics. `quadra-train serve` is the full command
//! (token, batching and timeout flags); this demo keeps the library defaults.
//!
//!     cargo run --release --example serve_http -- CKPT [--addr 127.0.0.1:8080]
//!         [--max-body-bytes 16777216] [--max-batch 256]
//!
//!     curl -s -X POST -H 'Content-Type: application/json' \
//!          --data '[[[0.1, 0.2, …]]]' http://127.0.0.1:8080/predict
//!
//! The first line on stdout is `listening on http://ADDR` (with the real port when
//! `--addr` asks for port 0). Runs until SIGINT/SIGTERM, then stops gracefully.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use quadra::model::Model;
use quadra::serve::{Server, ServerConfig};

fn main() -> Result<()> {
    let mut ckpt = None;
    let mut addr = "127.0.0.1:8080".to_string();
    let mut cfg = ServerConfig {
        handle_signals: true,
        ..Default::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--addr" => addr = value("--addr")?,
            "--max-body-bytes" => {
                cfg.max_body_bytes = value("--max-body-bytes")?
                    .parse()
                    .context("--max-body-bytes must be a number")?
            }
            "--max-batch" => {
                cfg.max_batch = value("--max-batch")?
                    .parse()
                    .context("--max-batch must be a number")?
            }
            s if s.starts_with("--") => {
                bail!("unknown option `{s}` (expected --addr, --max-body-bytes, --max-batch)")
            }
            s if ckpt.is_none() => ckpt = Some(s.to_string()),
            s => bail!("unexpected argument `{s}`"),
        }
    }
    let ckpt = ckpt.context(
        "usage: serve_http CKPT [--addr HOST:PORT] [--max-body-bytes N] [--max-batch N]",
    )?;
    let model = Model::load(&ckpt)?;
    eprintln!(
        "model `{}`: input {:?}, {} classes",
        model.spec.name, model.spec.input, model.spec.num_classes
    );
    let server = Server::start(Arc::new(model), addr.as_str(), cfg)?;
    println!("listening on http://{}", server.local_addr());
    use std::io::Write;
    std::io::stdout().flush()?;
    server.wait();
    Ok(())
}

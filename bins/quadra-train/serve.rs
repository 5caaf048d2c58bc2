//! `quadra-train serve`: a checkpoint's eval-mode predictions over HTTP (`quadra::serve`:
//! POST /predict, GET /health, GET /metrics), with dynamic batching, until SIGINT/SIGTERM,
//! which stops it gracefully (requests in flight are answered).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use quadra::checkpoint::Checkpoint;
use quadra::serve::{Server, ServerConfig};

use crate::common::CheckpointArg;

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    checkpoint: CheckpointArg,
    /// Address to listen on (port 0: any free port). Loopback by default; another address
    /// without --token-file prints a warning.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// File holding the bearer token that /predict and /metrics require
    /// (`Authorization: Bearer TOKEN`); surrounding whitespace is ignored.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, default_value_t = 16 << 20)]
    max_body_bytes: usize,
    /// Largest batch of one request, in samples (413 beyond).
    #[arg(long, default_value_t = 256)]
    max_batch: usize,
    /// Most samples merged into one model call by the batcher.
    #[arg(long, default_value_t = 64)]
    max_batch_size: usize,
    /// How long a request waits for others to batch with, in ms; 0: no batching.
    #[arg(long, default_value_t = 2)]
    max_delay_ms: u64,
    /// Turn dynamic batching off (the same as --max-delay-ms 0).
    #[arg(long)]
    no_batching: bool,
    /// Deadline of a request after its headers, in seconds.
    #[arg(long, default_value_t = 30)]
    request_timeout_s: u64,
    /// POST /predict requests in flight at once (503 + Retry-After beyond).
    #[arg(long, default_value_t = 64)]
    max_concurrency: usize,
    /// Threads of the model's kernels (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Requests carry inputs normalized already: skip the checkpoint's normalization (by
    /// default requests carry raw pixels in [0, 1], normalized as the training set was).
    #[arg(long)]
    normalized: bool,
    /// First stdout line as JSON: {"listening": URL, "model": …}.
    #[arg(long)]
    json: bool,
}

fn read_token(p: &Path) -> Result<String> {
    let t = std::fs::read_to_string(p).with_context(|| format!("--token-file {}", p.display()))?;
    let t = t.trim();
    if t.is_empty() {
        bail!("--token-file {}: the file is empty", p.display());
    }
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "--token-file {}: the token has whitespace or control characters inside",
            p.display()
        );
    }
    Ok(t.to_string())
}

pub fn run(a: &ServeArgs) -> Result<()> {
    if a.threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(a.threads)
            .build_global()
            .context("setting up the thread pool")?;
    }
    let token = a.token_file.as_deref().map(read_token).transpose()?;
    let (_, mut model) = Checkpoint::load_model(a.checkpoint.path())?;
    // `Model::predict` (the batcher's call) applies the stored normalization; without it the
    // requests' tensors go to the first layer as they are
    let normalize = model.spec.preprocess.as_mut().and_then(|p| {
        if a.normalized {
            p.normalize.take()
        } else {
            p.normalize.clone()
        }
    });
    let cfg = ServerConfig {
        max_body_bytes: a.max_body_bytes,
        max_batch: a.max_batch,
        max_batch_size: a.max_batch_size,
        max_delay: if a.no_batching {
            Duration::ZERO
        } else {
            Duration::from_millis(a.max_delay_ms)
        },
        request_timeout: Duration::from_secs(a.request_timeout_s),
        max_concurrency: a.max_concurrency,
        token,
        handle_signals: true,
        ..Default::default()
    };
    eprintln!(
        "model `{}`: input {:?}, {} classes, {}; batching {}",
        model.spec.name,
        model.spec.input,
        model.spec.num_classes,
        match (&normalize, a.normalized) {
            (Some(n), _) => format!(
                "raw inputs in [0, 1] normalized with mean {:?} std {:?}",
                n.mean, n.std
            ),
            (None, true) => "inputs normalized by the client (--normalized)".to_string(),
            (None, false) => "inputs given to the model as they are".to_string(),
        },
        if cfg.max_delay.is_zero() {
            "off".to_string()
        } else {
            format!("up to {} samples / {:?}", cfg.max_batch_size, cfg.max_delay)
        }
    );
    let (name, input, classes) = (
        model.spec.name.clone(),
        model.spec.input.clone(),
        model.spec.num_classes,
    );
    let server = Server::start(Arc::new(model), a.addr.as_str(), cfg)
        .with_context(|| format!("serving on {}", a.addr))?;
    let url = format!("http://{}", server.local_addr());
    if a.json {
        println!(
            "{}",
            json!({ "listening": url, "model": name, "input": input, "num_classes": classes })
        );
    } else {
        println!("listening on {url}");
    }
    std::io::stdout().flush()?;
    server.wait();
    eprintln!("stopped");
    Ok(())
}

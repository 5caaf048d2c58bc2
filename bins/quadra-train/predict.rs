//! `quadra-train predict`: eval-mode logits of a safetensors file's `input`.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use quadra::checkpoint;
use quadra::model::Model;
use quadra::Tensor;

use crate::common::{read_input, CheckpointRun};

#[derive(Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    run: CheckpointRun,
    /// safetensors file with tensor `input` (N, C, H, W).
    #[arg(long)]
    input: PathBuf,
    /// safetensors file to write with tensor `logits` (N, classes).
    #[arg(long)]
    output: PathBuf,
}

fn predict_batched(model: &Model, x: &Tensor, batch: usize) -> Result<Tensor> {
    let n = x.shape()[0];
    let per: usize = x.shape()[1..].iter().product();
    let xs = x.to_f64_vec();
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let b = batch.max(1).min(n - i);
        let mut shape = x.shape().to_vec();
        shape[0] = b;
        let xb = Tensor::from_f64(&xs[i * per..(i + b) * per], &shape, x.dtype())?;
        out.extend(model.predict(&xb)?.to_f64_vec());
        i += b;
    }
    Ok(Tensor::from_f64(
        &out,
        &[n, model.spec.num_classes],
        x.dtype(),
    )?)
}

pub fn run(a: &PredictArgs) -> Result<()> {
    let (_, model, _) = a.run.load()?;
    let x = read_input(&a.input, &model)?;
    let logits = predict_batched(&model, &x, a.run.batch_size)?;
    let arg = quadra::serve::argmax(&logits)?;
    let mut meta = HashMap::new();
    meta.insert("model".to_string(), model.spec.name.clone());
    meta.insert(
        "checkpoint".to_string(),
        a.run.checkpoint.display().to_string(),
    );
    checkpoint::write_tensors(
        &a.output,
        &[("logits".to_string(), logits.clone())],
        Some(meta),
    )?;
    let n = x.shape()[0];
    if a.run.json {
        println!(
            "{}",
            json!({ "output": a.output.display().to_string(), "samples": n,
                    "classes": model.spec.num_classes, "argmax": arg })
        );
    } else {
        println!(
            "{n} samples → {} (tensor `logits` {:?}); argmax {:?}",
            a.output.display(),
            logits.shape(),
            arg
        );
    }
    Ok(())
}

//! `quadra-train predict`: the classes a checkpoint's model gives raw inputs — image files
//! (PNG, JPEG), IDX image files, CIFAR binary files, or a safetensors tensor `input` —
//! printed as the top-k classes per sample (`--json`: one object per sample), and the
//! logits optionally written to a safetensors file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use clap::Args;
use serde_json::json;

use quadra::checkpoint;
use quadra::data::cifar::{self, Cifar100Labels, CifarKind};
use quadra::data::{decode, idx, Preprocess};
use quadra::model::Model;
use quadra::Tensor;

use crate::common::{model_dtype, read_input, CheckpointRun};

#[derive(Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    run: CheckpointRun,
    /// Input files: images (.png, .jpg, .jpeg; resized to cover the model's input and
    /// center-cropped, grey or RGB as the model takes), CIFAR binary files (.bin), a
    /// safetensors file (.safetensors, tensor `input` (N, C, H, W)), or IDX image files
    /// (any other name, e.g. t10k-images-idx3-ubyte.gz). Pixels are scaled to [0, 1] and
    /// normalized as the model's training set was (see `info`).
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// A safetensors file with tensor `input` (N, C, H, W) (the same as giving it as FILE).
    #[arg(long)]
    input: Option<PathBuf>,
    /// The inputs are normalized already: give them to the model as they are (skip the
    /// checkpoint's normalization).
    #[arg(long)]
    normalized: bool,
    /// Classes printed per sample, most likely first (default 3).
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// Also write the logits (N, classes) to this safetensors file (tensor `logits`).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
}

/// One input file's samples: (N, C, H, W) raw values (or normalized, with --normalized).
fn read_file(path: &Path, model: &Model) -> Result<Tensor> {
    let shape: [usize; 3] = model.spec.input.as_slice().try_into().map_err(|_| {
        anyhow!(
            "{}: model `{}` takes {:?} inputs; files other than safetensors give images",
            path.display(),
            model.spec.name,
            model.spec.input
        )
    })?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext == "safetensors" {
        return read_input(path, model);
    }
    let image_shape = |c: usize, h: usize, w: usize| -> Result<()> {
        if [c, h, w] != shape {
            bail!(
                "{}: holds {c}×{h}×{w} images, model `{}` takes {:?}",
                path.display(),
                model.spec.name,
                shape
            );
        }
        Ok(())
    };
    let (pixels, n) = if decode::is_image_file(path) {
        let v = decode::load_sample(path, shape)?;
        return Ok(Tensor::from_vec(v, &[1, shape[0], shape[1], shape[2]])?);
    } else if ext == "bin" {
        let kind = match model.spec.num_classes {
            100 => CifarKind::Cifar100(Cifar100Labels::Fine),
            20 => CifarKind::Cifar100(Cifar100Labels::Coarse),
            _ => CifarKind::Cifar10,
        };
        let r = cifar::read(kind, path)?;
        image_shape(3, 32, 32)?;
        let n = r.len();
        (r.pixels, n)
    } else {
        let r = idx::read_images(path)?;
        image_shape(1, r.rows, r.cols)?;
        (r.pixels, r.count)
    };
    let v: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();
    Ok(Tensor::from_vec(v, &[n, shape[0], shape[1], shape[2]])?)
}

/// Eval-mode logits (N, classes) of `x`, `batch` samples at a time.
fn predict_batched(model: &Model, x: &Tensor, batch: usize, normalized: bool) -> Result<Tensor> {
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
        let y = if normalized {
            model.predict_normalized(&xb)?
        } else {
            model.predict(&xb)?
        };
        out.extend(y.to_f64_vec());
        i += b;
    }
    Ok(Tensor::from_f64(
        &out,
        &[n, model.spec.num_classes],
        x.dtype(),
    )?)
}

/// Softmax probabilities of one row of logits.
fn softmax(row: &[f64]) -> Vec<f64> {
    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// The `k` most likely classes of a row: (class, probability), most likely first (ties:
/// the lower index first, as the arg-max).
fn top_k(probs: &[f64], k: usize) -> Vec<(usize, f64)> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|i| (i, probs[i])).collect()
}

pub fn run(a: &PredictArgs) -> Result<()> {
    let mut files = a.files.clone();
    if let Some(p) = &a.input {
        files.push(p.clone());
    }
    if files.is_empty() {
        bail!("no input: give image, IDX, CIFAR or safetensors files (or --input FILE)");
    }
    if a.top_k == 0 {
        bail!("--top-k 0: must be at least 1");
    }
    let (_, model, _) = a.run.load()?;
    let dtype = model_dtype(&model);
    let pre = model.spec.preprocess.clone().unwrap_or_default();
    let mut all_logits: Vec<f64> = Vec::new();
    let mut total = 0;
    for f in &files {
        // every reader's error names the file
        let x = read_file(f, &model)?.to_dtype(dtype)?;
        let logits = predict_batched(&model, &x, a.run.batch_size, a.normalized)?;
        let (n, c) = logits.dims2("logits")?;
        let v = logits.to_f64_vec();
        for i in 0..n {
            print_sample(a, f, i, n, &v[i * c..(i + 1) * c], &pre);
        }
        all_logits.extend(v);
        total += n;
    }
    if let Some(out) = &a.output {
        let logits = Tensor::from_f64(&all_logits, &[total, model.spec.num_classes], dtype)?;
        let mut meta = HashMap::new();
        meta.insert("model".to_string(), model.spec.name.clone());
        meta.insert(
            "checkpoint".to_string(),
            a.run.checkpoint.display().to_string(),
        );
        checkpoint::write_tensors(out, &[("logits".to_string(), logits)], Some(meta))?;
        if !a.run.json {
            eprintln!(
                "{total} samples: logits ({total}, {}) written to {}",
                model.spec.num_classes,
                out.display()
            );
        }
    }
    Ok(())
}

/// One sample's answer: `FILE[#i]: name (p) name (p) …`, or its JSON object.
fn print_sample(a: &PredictArgs, f: &Path, i: usize, n: usize, row: &[f64], pre: &Preprocess) {
    let probs = softmax(row);
    let top = top_k(&probs, a.top_k);
    // the first largest logit, as `eval` and the server count it
    let argmax = (0..row.len()).fold(0, |b, j| if row[j] > row[b] { j } else { b });
    if a.run.json {
        let top: Vec<_> = top
            .iter()
            .map(|&(k, p)| {
                let mut o = json!({ "class": k, "probability": p });
                if !pre.classes.is_empty() {
                    o["name"] = json!(pre.class_name(k));
                }
                o
            })
            .collect();
        let mut o = json!({ "input": f.display().to_string(), "index": i,
                            "argmax": argmax, "top": top });
        if !pre.classes.is_empty() {
            o["name"] = json!(pre.class_name(argmax));
        }
        println!("{o}");
    } else {
        let what = if n == 1 {
            f.display().to_string()
        } else {
            format!("{}#{i}", f.display())
        };
        let classes: Vec<String> = top
            .iter()
            .map(|&(k, p)| format!("{} ({:.1}%)", pre.class_name(k), 100.0 * p))
            .collect();
        println!("{what}: {}", classes.join(", "));
    }
}

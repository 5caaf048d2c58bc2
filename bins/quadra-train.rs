//! quadra-train: train, evaluate, predict with, inspect and convert QDNN checkpoints.
//!
//!     quadra-train train --model qcnn --epochs 3 --batch-size 64 --lr 0.05 --out runs/a
//!     quadra-train train --model qcnn --epochs 6 --resume runs/a/epoch-0003.safetensors --out runs/a
//!     quadra-train eval --checkpoint runs/a/best.safetensors
//!     quadra-train predict --checkpoint CKPT --input x.safetensors --output y.safetensors
//!     quadra-train import --from torch --model qresnet14 weights.safetensors -o ck.safetensors
//!     quadra-train export --to torch CKPT -o weights.safetensors
//!     quadra-train info CKPT
//!
//! Every subcommand takes `--json` for a machine-readable summary on stdout. Errors go to
//! stderr with the file and tensor they concern, and the exit status is non-zero; no output
//! file is written (all writes are atomic).
//!
//! Training reads a `TrainConfig` (serde, unknown fields rejected) built from the flags;
//! today the data is the synthetic set and the optimizer SGD. Real datasets, a TOML config
//! file, Adam and LR schedules plug into `DataConfig` / `OptimConfig` and `build_data` /
//! `build_optimizer`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use quadra::checkpoint::{self, Checkpoint, OptimState};
use quadra::data::synthetic::Synthetic;
use quadra::model::Model;
use quadra::nn::quadratic::NeuronType;
use quadra::nn::spec::{quadratic_layers, BuildOptions, ModelSpec};
use quadra::nn::BackpropMode;
use quadra::optim::{Optimizer, Sgd};
use quadra::{DType, Device, Tensor};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Train, evaluate, serve-predict, inspect and convert QDNN checkpoints"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Train a zoo model (synthetic data, SGD for now), a checkpoint per epoch and the best.
    Train(TrainArgs),
    /// Loss and accuracy of a checkpoint (on --input or the synthetic test set).
    Eval(EvalArgs),
    /// Eval-mode logits of tensor `input` (N, C, H, W) of a safetensors file.
    Predict(PredictArgs),
    /// Convert a PyTorch state dict (safetensors) into a checkpoint.
    Import(ImportArgs),
    /// Write a checkpoint's weights as a PyTorch state dict (safetensors).
    Export(ExportArgs),
    /// Describe a checkpoint: model, parameters, training position.
    Info(InfoArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Backprop {
    Stored,
    Recompute,
}

impl From<Backprop> for BackpropMode {
    fn from(b: Backprop) -> Self {
        match b {
            Backprop::Stored => BackpropMode::Stored,
            Backprop::Recompute => BackpropMode::Recompute,
        }
    }
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// Zoo model.
    #[arg(long, default_value = "qcnn")]
    model: String,
    /// Train until this many epochs are complete (counting those of --resume).
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 0.05)]
    lr: f64,
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f64,
    #[arg(long, value_enum, default_value_t = Backprop::Stored)]
    backprop: Backprop,
    /// auto, cpu (cuda and emu: not built yet).
    #[arg(long, default_value = "auto")]
    device: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Synthetic training samples per epoch.
    #[arg(long, default_value_t = 3840)]
    train_samples: usize,
    /// Synthetic test samples.
    #[arg(long, default_value_t = 1000)]
    test_samples: usize,
    /// Output directory: epoch-NNNN.safetensors, best.safetensors, metrics.jsonl.
    #[arg(long)]
    out: PathBuf,
    /// Continue from a checkpoint written by `train`.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// JSON lines on stdout (one per epoch, then a summary).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct EvalArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// A safetensors file with `input` (N, C, H, W) and `labels` (N); default: the
    /// synthetic test set of the checkpoint's run config.
    #[arg(long)]
    input: Option<PathBuf>,
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct PredictArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// safetensors file with tensor `input` (N, C, H, W).
    #[arg(long)]
    input: PathBuf,
    /// safetensors file to write with tensor `logits` (N, classes).
    #[arg(long)]
    output: PathBuf,
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Framework {
    Torch,
}

#[derive(Args, Debug)]
struct ImportArgs {
    #[arg(long, value_enum)]
    from: Framework,
    /// Zoo model whose PyTorch state dict the file holds.
    #[arg(long)]
    model: String,
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Neuron of the quadratic layers (default quadralib-bn, the reference's).
    #[arg(long)]
    neuron: Option<String>,
    /// f32 or f64.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// The PyTorch state dict (safetensors).
    input: PathBuf,
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ExportArgs {
    #[arg(long, value_enum)]
    to: Framework,
    checkpoint: PathBuf,
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct InfoArgs {
    checkpoint: PathBuf,
    #[arg(long)]
    json: bool,
}

// ---- the training configuration ------------------------------------------------------

/// Everything a training run is, as stored in its checkpoints' `config` metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainConfig {
    model: String,
    #[serde(default = "ten")]
    num_classes: usize,
    epochs: usize,
    batch_size: usize,
    backprop: BackpropMode,
    device: String,
    seed: u64,
    data: DataConfig,
    optimizer: OptimConfig,
}

fn ten() -> usize {
    10
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum DataConfig {
    /// `quadra::data::synthetic::Synthetic` at the model's input shape.
    Synthetic {
        train_samples: usize,
        test_samples: usize,
        noise: f32,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum OptimConfig {
    Sgd {
        lr: f64,
        momentum: f64,
        weight_decay: f64,
        #[serde(default)]
        nesterov: bool,
    },
}

impl TrainConfig {
    fn from_args(a: &TrainArgs) -> TrainConfig {
        TrainConfig {
            model: a.model.clone(),
            num_classes: 10,
            epochs: a.epochs,
            batch_size: a.batch_size,
            backprop: a.backprop.into(),
            device: a.device.clone(),
            seed: a.seed,
            data: DataConfig::Synthetic {
                train_samples: a.train_samples,
                test_samples: a.test_samples,
                noise: 0.8,
            },
            optimizer: OptimConfig::Sgd {
                lr: a.lr,
                momentum: a.momentum,
                weight_decay: a.weight_decay,
                nesterov: false,
            },
        }
    }

    fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            bail!("--epochs must be at least 1");
        }
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        let DataConfig::Synthetic {
            train_samples,
            test_samples,
            ..
        } = &self.data;
        if *train_samples == 0 || *test_samples == 0 {
            bail!("--train-samples and --test-samples must be at least 1");
        }
        Ok(())
    }
}

/// The device to train on; only the CPU engine exists today.
fn resolve_device(s: &str) -> Result<Device> {
    let d: Device = s.parse()?;
    match d {
        Device::Cpu => Ok(d),
        other => bail!(
            "--device {s}: the CUDA backend is not built yet (device {other} is unavailable); use --device cpu or auto"
        ),
    }
}

/// A dataset: training batches by index, and a fixed test set.
struct Data {
    synth: Synthetic,
    train_samples: usize,
    test: (Tensor, Vec<usize>),
}

fn build_data(cfg: &TrainConfig, spec: &ModelSpec) -> Result<Data> {
    let DataConfig::Synthetic {
        train_samples,
        test_samples,
        noise,
    } = cfg.data;
    let shape: [usize; 3] = spec.input.as_slice().try_into().map_err(|_| {
        anyhow!(
            "model `{}` takes input {:?}; the synthetic dataset makes (C, H, W) images",
            spec.name,
            spec.input
        )
    })?;
    let synth = Synthetic::new(shape, spec.num_classes, noise, cfg.seed)?;
    let test = synth.batch(test_samples, test_seed(cfg.seed))?;
    Ok(Data {
        synth,
        train_samples,
        test,
    })
}

fn test_seed(seed: u64) -> u64 {
    seed ^ 0x7E57_7E57_7E57_7E57
}

/// The seed of training batch `index` (all of a run's batches, in order): a resumed run
/// draws the same batches as an uninterrupted one.
fn batch_seed(seed: u64, index: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(index)
}

fn build_optimizer(cfg: &TrainConfig, resume: Option<&OptimState>) -> Result<Box<dyn Optimizer>> {
    let OptimConfig::Sgd {
        lr,
        momentum,
        weight_decay,
        nesterov,
    } = cfg.optimizer;
    let mut opt = Sgd::new(lr, momentum, weight_decay, nesterov)?;
    if let Some(s) = resume {
        if s.kind != "sgd" {
            bail!(
                "the checkpoint's optimizer is `{}`, this run uses sgd",
                s.kind
            );
        }
        // momentum buffers and step counts: the resumed run continues exactly
        opt.load_state(&s.to_optim()?)?;
    }
    Ok(Box::new(opt))
}

fn evaluate(model: &Model, x: &Tensor, y: &[usize], batch: usize) -> Result<(f64, f64)> {
    let n = y.len();
    let per: usize = x.shape()[1..].iter().product();
    let xs = x.to_f64_vec();
    let (mut loss, mut correct) = (0.0, 0usize);
    let mut i = 0;
    while i < n {
        let b = batch.min(n - i);
        let mut shape = x.shape().to_vec();
        shape[0] = b;
        let xb = Tensor::from_f64(&xs[i * per..(i + b) * per], &shape, x.dtype())?;
        let out = model.evaluate(&xb, &y[i..i + b])?;
        loss += out.loss * b as f64;
        correct += out.correct;
        i += b;
    }
    Ok((loss / n as f64, correct as f64 / n as f64))
}

fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("{}: cannot open", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("{}: cannot write", path.display()))?;
    f.sync_all()
        .with_context(|| format!("{}: cannot sync", path.display()))?;
    Ok(())
}

fn train(a: &TrainArgs) -> Result<()> {
    let mut cfg = TrainConfig::from_args(a);
    cfg.validate()?;
    resolve_device(&cfg.device)?;
    // round trip through serde: the config that checkpoints record is the one used
    let cfg_json = serde_json::to_value(&cfg)?;
    cfg = serde_json::from_value(cfg_json.clone())?;

    let (mut model, start_epoch, mut step, resume_optim, mut best) = match &a.resume {
        Some(p) => {
            let (ck, mut model) = Checkpoint::load_model(p)?;
            if ck.spec.name != cfg.model {
                bail!(
                    "{}: the checkpoint holds model `{}`, --model is `{}`",
                    p.display(),
                    ck.spec.name,
                    cfg.model
                );
            }
            model.set_backprop(cfg.backprop, Default::default())?;
            let best = ck
                .metrics
                .as_ref()
                .and_then(|m| m["best_test_acc"].as_f64())
                .unwrap_or(-1.0);
            (model, ck.epoch as usize, ck.step, ck.optim, best)
        }
        None => {
            let mut spec = quadra::models::get(&cfg.model, None, cfg.num_classes)?;
            spec.backprop = cfg.backprop;
            let model = Model::build(
                &spec,
                BuildOptions {
                    dtype: DType::F32,
                    seed: cfg.seed,
                },
            )?;
            (model, 0, 0, None, -1.0)
        }
    };
    let data = build_data(&cfg, &model.spec)?;
    let mut opt = build_optimizer(&cfg, resume_optim.as_ref())?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("{}: cannot create the output directory", a.out.display()))?;
    let metrics_path = a.out.join("metrics.jsonl");
    let steps = data.train_samples.div_ceil(cfg.batch_size);
    let tty = std::io::stderr().is_terminal();
    let params = model.num_params();
    if !a.json {
        println!(
            "model {} ({} parameters), backprop {}, {} epochs × {} steps of {}, device cpu{}",
            cfg.model,
            params,
            cfg.backprop,
            cfg.epochs,
            steps,
            cfg.batch_size,
            match &a.resume {
                Some(p) => format!(", resumed from {} at epoch {start_epoch}", p.display()),
                None => String::new(),
            }
        );
    }
    let mut best_path = a.out.join("best.safetensors");
    let mut last_metrics = Value::Null;
    for epoch in start_epoch..cfg.epochs {
        let t0 = Instant::now();
        let bar = if tty {
            let b = indicatif::ProgressBar::new(steps as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})",
                )?
                .progress_chars("=> "),
            );
            b.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
        for s in 0..steps {
            let b = cfg.batch_size.min(data.train_samples - s * cfg.batch_size);
            let index = (epoch * steps + s) as u64;
            let (x, y) = data.synth.batch(b, batch_seed(cfg.seed, index))?;
            let out = model.train_step(&x, &y, opt.as_mut())?;
            if !out.loss.is_finite() {
                bail!(
                    "epoch {}, step {}: the loss is {} (lower --lr?)",
                    epoch + 1,
                    s + 1,
                    out.loss
                );
            }
            loss_sum += out.loss * b as f64;
            correct += out.correct;
            seen += b;
            step += 1;
            bar.inc(1);
            bar.set_message(format!("loss {:.4}", loss_sum / seen as f64));
        }
        bar.finish_and_clear();
        let (test_loss, test_acc) = evaluate(&model, &data.test.0, &data.test.1, 256)?;
        let secs = t0.elapsed().as_secs_f64();
        let is_best = test_acc > best;
        if is_best {
            best = test_acc;
        }
        let ck_path = a.out.join(format!("epoch-{:04}.safetensors", epoch + 1));
        let metrics = json!({
            "event": "epoch",
            "epoch": epoch + 1,
            "step": step,
            "train_loss": loss_sum / seen as f64,
            "train_acc": correct as f64 / seen as f64,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "best_test_acc": best,
            "seconds": secs,
            "images_per_s": seen as f64 / secs,
            "checkpoint": ck_path.display().to_string(),
        });
        let mut ck = Checkpoint::from_model(&model)?;
        ck.epoch = (epoch + 1) as u64;
        ck.step = step;
        ck.seed = Some(cfg.seed);
        ck.rng = Some(json!({
            "scheme": "batch_seed(seed, index)",
            "next_batch_index": (epoch + 1) * steps,
            "test_seed": test_seed(cfg.seed),
        }));
        ck.config = Some(cfg_json.clone());
        ck.metrics = Some(metrics.clone());
        ck.optim = Some(OptimState::from_optim(opt.state()?));
        let bytes = ck.to_bytes()?;
        checkpoint::write_atomic(&ck_path, &bytes)?;
        if is_best {
            best_path = a.out.join("best.safetensors");
            checkpoint::write_atomic(&best_path, &bytes)?;
        }
        append_line(&metrics_path, &metrics.to_string())?;
        if a.json {
            println!("{metrics}");
        } else {
            println!(
                "epoch {}/{}: train loss {:.4}, train acc {:.1}%, test loss {:.4}, test acc {:.1}%{}, {:.1} s → {}",
                epoch + 1,
                cfg.epochs,
                loss_sum / seen as f64,
                100.0 * correct as f64 / seen as f64,
                test_loss,
                100.0 * test_acc,
                if is_best { " (best)" } else { "" },
                secs,
                ck_path.display()
            );
        }
        last_metrics = metrics;
    }
    let summary = json!({
        "event": "done",
        "epochs": cfg.epochs,
        "start_epoch": start_epoch,
        "step": step,
        "best_test_acc": best,
        "best": if best >= 0.0 { Value::String(best_path.display().to_string()) } else { Value::Null },
        "last": last_metrics,
        "metrics": metrics_path.display().to_string(),
    });
    if a.json {
        println!("{summary}");
    } else if start_epoch >= cfg.epochs {
        println!(
            "nothing to do: the checkpoint has {start_epoch} epochs, --epochs is {}",
            cfg.epochs
        );
    } else {
        println!(
            "best test accuracy {:.1}% → {}",
            100.0 * best,
            best_path.display()
        );
    }
    Ok(())
}

// ---- eval, predict -------------------------------------------------------------------

/// Labels (N) of a safetensors file: any integer dtype, or integral floats.
fn read_labels(path: &Path, name: &str) -> Result<Vec<usize>> {
    use safetensors::tensor::{Dtype, SafeTensors};
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("{}: invalid safetensors file: {e}", path.display()))?;
    let v = st
        .tensor(name)
        .map_err(|_| anyhow!("{}: no tensor `{name}`", path.display()))?;
    let d = v.data();
    let vals: Vec<f64> = match v.dtype() {
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::I32 => d
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::U8 => d.iter().map(|&b| b as f64).collect(),
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        other => bail!(
            "{}: tensor `{name}` has dtype {other:?}; expected integer labels",
            path.display()
        ),
    };
    vals.iter()
        .enumerate()
        .map(|(i, &x)| {
            if x >= 0.0 && x.fract() == 0.0 {
                Ok(x as usize)
            } else {
                Err(anyhow!(
                    "{}: tensor `{name}`[{i}] = {x} is not a class index",
                    path.display()
                ))
            }
        })
        .collect()
}

/// Tensor `input` of a safetensors file, checked against the model's input.
fn read_input(path: &Path, model: &Model) -> Result<Tensor> {
    let (mut t, _) = checkpoint::read_tensors_filtered(path, &|k| k == "input")?;
    let Some((_, x)) = t.pop() else {
        let names: Vec<String> = checkpoint::list_tensors(path)?.into_keys().collect();
        bail!(
            "{}: no tensor `input` (the file has: {})",
            path.display(),
            if names.is_empty() {
                "no tensors".to_string()
            } else {
                names.join(", ")
            }
        );
    };
    model
        .check_input(&x)
        .map_err(|e| anyhow!("{}: tensor `input`: {e}", path.display()))?;
    let dtype = checkpoint::state_dict(model)
        .first()
        .map_or(DType::F32, |(_, t)| t.dtype());
    Ok(x.to_dtype(dtype)?)
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

fn eval(a: &EvalArgs) -> Result<()> {
    let (ck, model) = Checkpoint::load_model(&a.checkpoint)?;
    let (x, y, source) = match &a.input {
        Some(p) => {
            let x = read_input(p, &model)?;
            let y = read_labels(p, "labels")?;
            if y.len() != x.shape()[0] {
                bail!(
                    "{}: tensor `labels` has {} entries, `input` {} samples",
                    p.display(),
                    y.len(),
                    x.shape()[0]
                );
            }
            if let Some(bad) = y.iter().find(|&&c| c >= model.spec.num_classes) {
                bail!(
                    "{}: tensor `labels` holds class {bad}, the model has {}",
                    p.display(),
                    model.spec.num_classes
                );
            }
            (x, y, p.display().to_string())
        }
        None => {
            let cfg: TrainConfig = match &ck.config {
                Some(c) => serde_json::from_value(c.clone()).with_context(|| {
                    format!("{}: metadata `config` is not a training config", a.checkpoint.display())
                })?,
                None => bail!(
                    "{}: the checkpoint has no training config (an import?): pass --input DATA.safetensors",
                    a.checkpoint.display()
                ),
            };
            let d = build_data(&cfg, &model.spec)?;
            (d.test.0, d.test.1, "synthetic test set".to_string())
        }
    };
    let (loss, acc) = evaluate(&model, &x, &y, a.batch_size.max(1))?;
    let out = json!({ "checkpoint": a.checkpoint.display().to_string(), "data": source,
                      "samples": y.len(), "loss": loss, "accuracy": acc });
    if a.json {
        println!("{out}");
    } else {
        println!(
            "{} on {source}: {} samples, loss {loss:.4}, accuracy {:.2}%",
            a.checkpoint.display(),
            y.len(),
            100.0 * acc
        );
    }
    Ok(())
}

fn predict(a: &PredictArgs) -> Result<()> {
    let (_, model) = Checkpoint::load_model(&a.checkpoint)?;
    let x = read_input(&a.input, &model)?;
    let logits = predict_batched(&model, &x, a.batch_size)?;
    let arg = quadra::serve::argmax(&logits)?;
    let mut meta = HashMap::new();
    meta.insert("model".to_string(), model.spec.name.clone());
    meta.insert("checkpoint".to_string(), a.checkpoint.display().to_string());
    checkpoint::write_tensors(
        &a.output,
        &[("logits".to_string(), logits.clone())],
        Some(meta),
    )?;
    let n = x.shape()[0];
    if a.json {
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

// ---- import, export, info ------------------------------------------------------------

fn import(a: &ImportArgs) -> Result<()> {
    let Framework::Torch = a.from;
    let neuron: Option<NeuronType> = a
        .neuron
        .as_deref()
        .map(|n| serde_json::from_value(Value::String(n.into())))
        .transpose()
        .context("--neuron")?;
    let dtype = match a.dtype.as_str() {
        "f32" => DType::F32,
        "f64" => DType::F64,
        d => bail!("--dtype {d}: expected f32 or f64"),
    };
    let spec = quadra::models::get(&a.model, neuron, a.classes)?;
    let mut model = checkpoint::import_torch(&a.input, &spec, dtype)?;
    let mut ck = Checkpoint::from_model(&model)?;
    ck.config =
        Some(json!({ "imported_from": a.input.display().to_string(), "framework": "torch" }));
    ck.save(&a.output)?;
    let out = json!({ "model": spec.name, "tensors": ck.state.len(), "params": model.num_params(),
                      "dtype": dtype.to_string(), "output": a.output.display().to_string() });
    if a.json {
        println!("{out}");
    } else {
        println!(
            "imported {} ({} tensors, {} parameters) → {}",
            spec.name,
            ck.state.len(),
            out["params"],
            a.output.display()
        );
    }
    Ok(())
}

fn export(a: &ExportArgs) -> Result<()> {
    let Framework::Torch = a.to;
    let (ck, model) = Checkpoint::load_model(&a.checkpoint)?;
    checkpoint::export_torch(&model, &a.output)?;
    if a.json {
        println!(
            "{}",
            json!({ "model": ck.spec.name, "tensors": ck.state.len(), "output": a.output.display().to_string() })
        );
    } else {
        println!(
            "exported {} ({} tensors) → {}",
            ck.spec.name,
            ck.state.len(),
            a.output.display()
        );
    }
    Ok(())
}

fn info(a: &InfoArgs) -> Result<()> {
    let (ck, mut model) = Checkpoint::load_model(&a.checkpoint)?;
    let bytes = std::fs::metadata(&a.checkpoint)
        .map(|m| m.len())
        .unwrap_or(0);
    let mut quad = Vec::new();
    quadratic_layers(&ck.spec.layers, "", &mut quad);
    let state_elems: usize = ck.state.iter().map(|(_, t)| t.numel()).sum();
    let out = json!({
        "file": a.checkpoint.display().to_string(),
        "bytes": bytes,
        "format": checkpoint::FORMAT,
        "model": ck.spec.name,
        "input": ck.spec.input,
        "num_classes": ck.spec.num_classes,
        "dtype": ck.dtype.to_string(),
        "params": model.num_params(),
        "state_tensors": ck.state.len(),
        "state_elements": state_elems,
        "top_level_layers": ck.spec.layers.len(),
        "quadratic_layers": quad.len(),
        "backprop": ck.spec.backprop.to_string(),
        "epoch": ck.epoch,
        "step": ck.step,
        "seed": ck.seed,
        "optimizer": ck.optim.as_ref().map(|o| o.kind.clone()),
        "optimizer_tensors": ck.optim.as_ref().map_or(0, |o| o.tensors.len()),
        "config": ck.config,
        "metrics": ck.metrics,
    });
    if a.json {
        println!("{out}");
    } else {
        println!(
            "{} ({bytes} bytes, {})",
            a.checkpoint.display(),
            checkpoint::FORMAT
        );
        println!(
            "  model      {}: input {:?}, {} classes, {}",
            ck.spec.name, ck.spec.input, ck.spec.num_classes, ck.dtype
        );
        println!(
            "  params     {} ({} state tensors, {} elements)",
            out["params"],
            ck.state.len(),
            state_elems
        );
        println!(
            "  quadratic  {} layers, backprop {}",
            quad.len(),
            ck.spec.backprop
        );
        println!("  position   epoch {}, step {}", ck.epoch, ck.step);
        if let Some(o) = &ck.optim {
            println!(
                "  optimizer  {} ({} state tensors) {}",
                o.kind,
                o.tensors.len(),
                o.scalars
            );
        }
        if let Some(m) = &ck.metrics {
            println!("  metrics    {m}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match &cli.cmd {
        Cmd::Train(a) => train(a),
        Cmd::Eval(a) => eval(a),
        Cmd::Predict(a) => predict(a),
        Cmd::Import(a) => import(a),
        Cmd::Export(a) => export(a),
        Cmd::Info(a) => info(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

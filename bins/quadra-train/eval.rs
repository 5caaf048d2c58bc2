//! `quadra-train eval`: loss and accuracy of a checkpoint.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::json;

use quadra::train::{
    build_data, checkpoint_data, evaluate, evaluate_tensors, DatasetKind, TrainConfig,
};

use crate::common::{read_input, CheckpointRun};

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    run: CheckpointRun,
    /// A safetensors file with `input` (N, C, H, W) raw pixels in [0, 1] and `labels` (N);
    /// default: the test set of the checkpoint's run config.
    #[arg(long, conflicts_with_all = ["dataset", "data_dir"])]
    input: Option<PathBuf>,
    /// Evaluate on this dataset's test split (needed for a checkpoint without a training
    /// config, e.g. a converted or imported one).
    #[arg(long, value_name = "DATASET")]
    dataset: Option<DatasetKind>,
    /// Where the dataset's files are.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `--input`'s tensor is normalized already: give it to the model as it is (by default
    /// it holds raw pixels in [0, 1], normalized as the model's training set was).
    #[arg(long, requires = "input")]
    normalized: bool,
}

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

pub fn run(a: &EvalArgs) -> Result<()> {
    let (ck, model, device) = a.run.load()?;
    let (loss, acc, n, source) = match &a.input {
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
            let (loss, acc) =
                evaluate_tensors(&model, &x, &y, a.run.batch_size.max(1), a.normalized)?;
            (loss, acc, y.len(), p.display().to_string())
        }
        None => {
            let cfg: TrainConfig = match (&ck.config, &a.dataset) {
                (_, Some(_)) => {
                    checkpoint_data(&ck, &model, a.dataset.clone(), a.data_dir.as_ref(), 0, 2)?.0
                }
                (Some(c), None) => serde_json::from_value(c.clone()).with_context(|| {
                    format!("{}: metadata `config` is not a training config of this version", a.run.checkpoint.display())
                })?,
                (None, None) => bail!(
                    "{}: the checkpoint has no training config (converted or imported?): pass --dataset NAME or --input DATA.safetensors",
                    a.run.checkpoint.display()
                ),
            };
            let mut cfg = cfg;
            if a.data_dir.is_some() {
                cfg.data_dir = a.data_dir.clone();
            }
            let d = build_data(&cfg, &model.spec)?;
            let (loss, acc) = evaluate(&model, &d.test)?;
            (
                loss,
                acc,
                d.test.dataset().len(),
                format!("{} test set", cfg.dataset),
            )
        }
    };
    let out = json!({ "checkpoint": a.run.checkpoint.display().to_string(), "data": source,
                      "device": device.to_string(), "samples": n, "loss": loss, "accuracy": acc });
    if a.run.json {
        println!("{out}");
    } else {
        println!(
            "{} on {source}: {} samples, loss {loss:.4}, accuracy {:.2}%",
            a.run.checkpoint.display(),
            n,
            100.0 * acc
        );
    }
    Ok(())
}

//! What several subcommands share: the model source flags, the framework flag, reading
//! `input` tensors, output folders.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};

use quadra::checkpoint::{self, Checkpoint};
use quadra::model::Model;
use quadra::nn::spec::ModelSpec;
use quadra::train::{model_to_device, resolve_device};
use quadra::{DType, Tensor};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Framework {
    Torch,
}

/// A model: a zoo name or a spec file (JSON, as `convert` writes).
#[derive(Args, Debug)]
pub struct SpecSource {
    /// Zoo model (qcnn, cnn, qresnet14, resnet20, …).
    #[arg(long, conflicts_with = "spec", required_unless_present = "spec")]
    pub model: Option<String>,
    /// Model spec file (JSON).
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Classes of a zoo model.
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
}

impl SpecSource {
    pub fn load(&self) -> Result<ModelSpec> {
        match (&self.model, &self.spec) {
            (_, Some(p)) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("--spec {}", p.display()))?;
                Ok(ModelSpec::from_json(&text)
                    .with_context(|| format!("--spec {}", p.display()))?)
            }
            (Some(m), None) => Ok(quadra::models::get(m, None, self.classes)
                .with_context(|| format!("--model {m}"))?),
            (None, None) => bail!("pass --model NAME or --spec FILE.json"),
        }
    }
}

/// The checkpoint of `info`, `export` and `serve`: `--checkpoint CKPT`, as every subcommand
/// that reads one takes it (the positional CKPT of earlier releases is still accepted,
/// hidden from the help).
#[derive(Args, Debug)]
pub struct CheckpointArg {
    /// Checkpoint file (safetensors, as train, import and convert write).
    #[arg(
        long = "checkpoint",
        value_name = "CKPT",
        required_unless_present = "checkpoint_positional"
    )]
    flag: Option<PathBuf>,
    #[arg(value_name = "CKPT", hide = true, conflicts_with = "flag")]
    checkpoint_positional: Option<PathBuf>,
}

impl CheckpointArg {
    pub fn path(&self) -> &Path {
        self.flag
            .as_deref()
            .or(self.checkpoint_positional.as_deref())
            .expect("clap requires one of --checkpoint and CKPT")
    }
}

/// A checkpoint run on a device: the flags `eval` and `predict` share.
#[derive(Args, Debug)]
pub struct CheckpointRun {
    /// Checkpoint file (safetensors, as train, import and convert write).
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: PathBuf,
    /// Samples per model call.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// auto, cpu, cuda, cuda:N or emu: where the model runs (default auto).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Machine-readable output: JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

impl CheckpointRun {
    /// The checkpoint and its model, on the device `--device` names.
    pub fn load(&self) -> Result<(Checkpoint, Model, quadra::Device)> {
        let device = resolve_device(&self.device).context("--device")?;
        let (ck, mut model) = Checkpoint::load_model(&self.checkpoint)?;
        model_to_device(&mut model, device)?;
        Ok((ck, model, device))
    }
}

/// Tensor `input` of a safetensors file, checked against the model's input.
pub fn read_input(path: &Path, model: &Model) -> Result<Tensor> {
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
    Ok(x.to_dtype(model_dtype(model))?)
}

/// The dtype of a model's weights (f32 for a model without any).
pub fn model_dtype(model: &Model) -> DType {
    checkpoint::state_dict(model)
        .first()
        .map_or(DType::F32, |(_, t)| t.dtype())
}

pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("--output {}: creating it", dir.display()))
}

pub fn paths(files: &[PathBuf]) -> Vec<String> {
    files.iter().map(|f| f.display().to_string()).collect()
}

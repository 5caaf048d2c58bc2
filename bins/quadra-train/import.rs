//! `quadra-train import`: a PyTorch state dict (safetensors) into a checkpoint.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use quadra::checkpoint::{self, Checkpoint};
use quadra::nn::quadratic::NeuronType;
use quadra::DType;

use crate::common::Framework;

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The format of the file (torch: a PyTorch state dict in safetensors, the default).
    #[arg(long, value_enum, default_value_t = Framework::Torch)]
    from: Framework,
    /// Zoo model whose PyTorch state dict the file holds.
    #[arg(long)]
    model: String,
    /// Classes of the zoo model.
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Neuron of the quadratic layers (default quadralib-bn, the reference's).
    #[arg(long)]
    neuron: Option<String>,
    /// f32 or f64.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Widen F16/BF16 tensors of the state dict to f32 (exact); without it they are an
    /// error, so a dtype never changes unasked.
    #[arg(long)]
    widen_half: bool,
    /// The PyTorch state dict (safetensors).
    input: PathBuf,
    /// The checkpoint to write.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Machine-readable output: one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &ImportArgs) -> Result<()> {
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
    let widen = if a.widen_half {
        checkpoint::Widen::Half
    } else {
        checkpoint::Widen::Refuse
    };
    // without --widen-half a half tensor is an error of the import itself: count them
    // (a second read of the header) only when they are widened
    let half = match widen {
        checkpoint::Widen::Half => checkpoint::list_tensors(&a.input)?
            .values()
            .filter(|(d, _)| d == "F16" || d == "BF16")
            .count(),
        checkpoint::Widen::Refuse => 0,
    };
    let model = checkpoint::import_torch(&a.input, &spec, dtype, widen)?;
    if half > 0 {
        eprintln!("note: widened {half} F16/BF16 tensors to f32 (exact)");
    }
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

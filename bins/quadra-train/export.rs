//! `quadra-train export`: a checkpoint's model as a PyTorch state dict (safetensors) or as an
//! ONNX graph.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use serde_json::json;

use quadra::checkpoint::{self, Checkpoint};

use crate::common::CheckpointArg;

/// What `export --to` writes. Separate from `import`'s `Framework`: ONNX is written, never
/// read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// A PyTorch state dict in safetensors (PyTorch names, f32).
    Torch,
    /// An ONNX graph (opset 17) of the model in eval mode, taking raw inputs.
    Onnx,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The format to write: torch (a PyTorch state dict in safetensors, the default) or
    /// onnx (an ONNX graph of the eval-mode model; raw inputs, the stored normalization in
    /// the graph).
    #[arg(long, value_enum, default_value_t = ExportFormat::Torch)]
    to: ExportFormat,
    #[command(flatten)]
    checkpoint: CheckpointArg,
    /// The file to write.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Machine-readable output: one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &ExportArgs) -> Result<()> {
    let (ck, model) = Checkpoint::load_model(a.checkpoint.path())?;
    let format = match a.to {
        ExportFormat::Torch => {
            checkpoint::export_torch(&model, &a.output)?;
            "torch"
        }
        ExportFormat::Onnx => {
            quadra::onnx::export(&model, &a.output)?;
            "onnx"
        }
    };
    if a.json {
        let mut v = json!({
            "model": ck.spec.name,
            "format": format,
            "tensors": ck.state.len(),
            "output": a.output.display().to_string(),
        });
        if a.to == ExportFormat::Onnx {
            v["opset"] = json!(quadra::onnx::OPSET);
            v["normalized_in_graph"] = json!(ck
                .spec
                .preprocess
                .as_ref()
                .is_some_and(|p| p.normalize.is_some()));
        }
        println!("{v}");
    } else if a.to == ExportFormat::Onnx {
        println!(
            "exported {} ({} tensors) as ONNX (opset {}) → {}",
            ck.spec.name,
            ck.state.len(),
            quadra::onnx::OPSET,
            a.output.display()
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

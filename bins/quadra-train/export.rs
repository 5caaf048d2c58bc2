//! `quadra-train export`: a checkpoint's weights as a PyTorch state dict (safetensors).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use quadra::checkpoint::{self, Checkpoint};

use crate::common::{CheckpointArg, Framework};

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The format to write (torch: a PyTorch state dict in safetensors, the default).
    #[arg(long, value_enum, default_value_t = Framework::Torch)]
    to: Framework,
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
    let Framework::Torch = a.to;
    let (ck, model) = Checkpoint::load_model(a.checkpoint.path())?;
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

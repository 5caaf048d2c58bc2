//! `quadra-train export`: a checkpoint's weights as a PyTorch state dict (safetensors).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use quadra::checkpoint::{self, Checkpoint};

use crate::common::Framework;

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[arg(long, value_enum)]
    to: Framework,
    checkpoint: PathBuf,
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn run(a: &ExportArgs) -> Result<()> {
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

//! `quadra-train info`: a checkpoint's model, parameters and training position.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use quadra::checkpoint::{self, Checkpoint};
use quadra::nn::spec::quadratic_layers;

use crate::common::CheckpointArg;

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    checkpoint: CheckpointArg,
    /// Machine-readable output: one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &InfoArgs) -> Result<()> {
    let path = a.checkpoint.path();
    let (ck, model) = Checkpoint::load_model(path)?;
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut quad = Vec::new();
    quadratic_layers(&ck.spec.layers, "", &mut quad);
    let state_elems: usize = ck.state.iter().map(|(_, t)| t.numel()).sum();
    let norm = ck
        .spec
        .preprocess
        .as_ref()
        .and_then(|p| p.normalize.as_ref());
    let out = json!({
        "file": path.display().to_string(),
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
        // what raw inputs get before the first layer (null: nothing recorded)
        "mean": norm.map(|n| n.mean.clone()),
        "std": norm.map(|n| n.std.clone()),
        "class_names": ck.spec.preprocess.as_ref().map(|p| p.classes.clone()),
    });
    if a.json {
        println!("{out}");
    } else {
        println!("{} ({bytes} bytes, {})", path.display(), checkpoint::FORMAT);
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
        match (&ck.spec.preprocess, norm) {
            (_, Some(n)) => println!(
                "  inputs     pixels in [0, 1], normalized with mean {:?}, std {:?}",
                n.mean, n.std
            ),
            (Some(_), None) => println!("  inputs     pixels in [0, 1], not normalized"),
            (None, None) => println!(
                "  inputs     no preprocessing recorded (never trained): given as they are"
            ),
        }
        if let Some(p) = ck
            .spec
            .preprocess
            .as_ref()
            .filter(|p| !p.classes.is_empty())
        {
            println!("  classes    {}", p.classes.join(", "));
        }
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

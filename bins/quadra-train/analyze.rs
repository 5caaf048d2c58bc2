//! `quadra-train analyze`: distributions of a model's layer outputs, weights and gradients.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use quadra::train::resolve_device;

use crate::common::{create_dir, paths, SpecSource};

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    #[command(flatten)]
    source: SpecSource,
    /// Samples of the analysed batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Histogram bins.
    #[arg(long, default_value_t = 64)]
    bins: usize,
    /// Where the model runs and the statistics are computed: auto (the default), cpu, emu,
    /// cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Also write activations.{png,svg} and analysis.json to this directory (without it
    /// the summary is printed only).
    #[arg(short = 'o', long = "output", alias = "out", value_name = "DIR")]
    out: Option<PathBuf>,
    /// Machine-readable output: one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &AnalyzeArgs) -> Result<()> {
    use quadra::analysis::{self, StatKind};
    let spec = a.source.load()?;
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let device = resolve_device(&a.device).context("--device")?;
    if let Some(out) = &a.out {
        create_dir(out)?;
    }
    let report = {
        let (mut model, data) = analysis::train_briefly(&spec, 0, a.batch, 1)?;
        model.to_device(device)?;
        let (x, y) = data.batch(a.batch, 1001)?;
        analysis::analyze(&mut model, &x, &y, a.bins.max(1))?
    };
    let acts: Vec<_> = report
        .of_kind(StatKind::Activation)
        .filter(|e| !e.describe.starts_with("ReLU"))
        .collect();
    let mut files = Vec::new();
    if let Some(out) = &a.out {
        files = analysis::plot::write_histogram_grid(
            &format!("{}: layer outputs (batch {})", report.model, report.batch),
            &acts,
            4,
            &out.join("activations"),
        )?;
        let dump = out.join("analysis.json");
        quadra::profile::write_atomic(&dump, serde_json::to_string(&report)?.as_bytes())?;
        files.push(dump);
    }
    if a.json {
        println!(
            "{}",
            json!({ "model": report.model, "batch": report.batch, "loss": report.loss,
                    "entries": report.entries.len(), "files": paths(&files) })
        );
    } else {
        println!(
            "{}: batch {}, loss {:.4}, {} distributions ({} layer outputs plotted)",
            report.model,
            report.batch,
            report.loss,
            report.entries.len(),
            acts.len()
        );
        for f in &files {
            println!("wrote {}", f.display());
        }
    }
    Ok(())
}

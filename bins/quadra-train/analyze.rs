//! `quadra-train analyze`: distributions of a model's layer outputs, weights and gradients:
//! of a trained checkpoint on a batch of its dataset (`--checkpoint`), or of a zoo model or
//! spec briefly trained on synthetic data.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use quadra::checkpoint::Checkpoint;
use quadra::train::{checkpoint_data, resolve_device, samples_of, DatasetKind};

use crate::common::{create_dir, paths, SpecSource};

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// Zoo model (qcnn, cnn, qresnet14, …), analysed after one training step on synthetic
    /// data.
    #[arg(
        long,
        conflicts_with_all = ["spec", "checkpoint"],
        required_unless_present_any = ["spec", "checkpoint"]
    )]
    model: Option<String>,
    /// Model spec file (JSON), analysed like --model.
    #[arg(long, conflicts_with = "checkpoint")]
    spec: Option<PathBuf>,
    /// Classes of a zoo model.
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// A trained checkpoint, analysed on the first --batch samples of its dataset's test
    /// split (its training config's dataset, or --dataset).
    #[arg(long, value_name = "CKPT")]
    checkpoint: Option<PathBuf>,
    /// With --checkpoint: the dataset whose test split is used.
    #[arg(long, value_name = "DATASET", requires = "checkpoint")]
    dataset: Option<DatasetKind>,
    /// Where the dataset's files are.
    #[arg(long, requires = "checkpoint")]
    data_dir: Option<PathBuf>,
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
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let device = resolve_device(&a.device).context("--device")?;
    if let Some(out) = &a.out {
        create_dir(out)?;
    }
    let (report, source) = match &a.checkpoint {
        Some(p) => {
            // the trained weights on real samples, as the loader gives them (normalized)
            let (ck, mut model) = Checkpoint::load_model(p)?;
            let (cfg, d) =
                checkpoint_data(&ck, &model, a.dataset.clone(), a.data_dir.as_ref(), 0, 2)?;
            let (x, y) = samples_of(&d.test, a.batch, false, cfg.seed)?;
            model.to_device(device)?;
            let r = analysis::analyze(&mut model, &x, &y, a.bins.max(1))
                .with_context(|| p.display().to_string())?;
            let n = y.len();
            (
                r,
                format!("{}, {n} test samples of {}", p.display(), cfg.dataset),
            )
        }
        None => {
            let spec = SpecSource {
                model: a.model.clone(),
                spec: a.spec.clone(),
                classes: a.classes,
            }
            .load()?;
            let (mut model, data) = analysis::train_briefly(&spec, 0, a.batch, 1)?;
            model.to_device(device)?;
            let (x, y) = data.batch(a.batch, 1001)?;
            let r = analysis::analyze(&mut model, &x, &y, a.bins.max(1))?;
            (r, "synthetic batch".to_string())
        }
    };
    let acts: Vec<_> = report
        .of_kind(StatKind::Activation)
        .filter(|e| !e.describe.starts_with("ReLU"))
        .collect();
    let mut files = Vec::new();
    if let Some(out) = &a.out {
        files = analysis::plot::write_histogram_grid(
            &format!("{}: layer outputs ({source})", report.model),
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
                    "data": source, "entries": report.entries.len(), "files": paths(&files) })
        );
    } else {
        println!(
            "{} ({source}): batch {}, loss {:.4}, {} distributions ({} layer outputs plotted)",
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

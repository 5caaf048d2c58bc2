//! `quadra-train importance`: a checkpoint's quadratic layers ranked by importance.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use quadra::checkpoint::Checkpoint;
use quadra::train::{checkpoint_data, samples_of, DatasetKind};

#[derive(Args, Debug)]
pub struct ImportanceArgs {
    /// The QDNN checkpoint whose quadratic layers are ranked.
    #[arg(long, value_name = "CKPT")]
    checkpoint: PathBuf,
    /// Dataset of the test split (default: the checkpoint's training config's, else synthetic).
    #[arg(long, value_name = "DATASET")]
    dataset: Option<DatasetKind>,
    /// Where the dataset's files are.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Test samples used (default 1000).
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Machine-readable output: one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// The importance ranking of a checkpoint's quadratic layers on `samples` test samples of
/// its dataset (see `checkpoint_data`); also the samples used and the dataset's name.
pub fn rank_layers(
    ck_path: &Path,
    dataset: Option<DatasetKind>,
    data_dir: Option<&PathBuf>,
    samples: usize,
) -> Result<(quadra::convert::ImportanceReport, usize, String)> {
    let (ck, model) = Checkpoint::load_model(ck_path)?;
    if samples == 0 {
        bail!("--samples must be at least 1");
    }
    let (cfg, d) = checkpoint_data(&ck, &model, dataset, data_dir, samples, 64)?;
    let (x, y) = samples_of(&d.test, samples, false, cfg.seed)?;
    let report = quadra::convert::layer_importance(&model, &x, &y)
        .with_context(|| format!("{}", ck_path.display()))?;
    Ok((report, y.len(), cfg.dataset.name().to_string()))
}

pub fn run(a: &ImportanceArgs) -> Result<()> {
    let (report, n, data) = rank_layers(
        &a.checkpoint,
        a.dataset.clone(),
        a.data_dir.as_ref(),
        a.samples,
    )?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{} on {n} test samples of {data}:", a.checkpoint.display());
        print!("{}", report.table());
    }
    Ok(())
}

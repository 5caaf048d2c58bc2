//! `quadra-train analyze`: distributions of a model's layer outputs, weights and gradients:
//! of a trained checkpoint on a batch of its dataset (`--checkpoint`), or of a zoo model or
//! spec briefly trained on synthetic data.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use quadra::analysis::{self, FeatureMap};
use quadra::checkpoint::Checkpoint;
use quadra::model::Model;
use quadra::train::{checkpoint_data, resolve_device, samples_of, DatasetKind};
use quadra::Tensor;

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
    /// Also map this layer's output for one input image (channel mean; e.g. `relu1`), of
    /// the model and of --beside's, written as maps.{png,svg} (needs --output).
    #[arg(long, value_name = "LAYER", requires = "out")]
    feature_maps: Option<String>,
    /// The model whose feature map goes beside the first one (QuadraLib's figure: a CNN
    /// beside its quadratic twin): a checkpoint (.safetensors), a spec file (.json) or a
    /// zoo name; the same input image for both.
    #[arg(long, value_name = "MODEL", requires = "feature_maps")]
    beside: Option<String>,
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
    use quadra::analysis::StatKind;
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let device = resolve_device(&a.device).context("--device")?;
    if let Some(out) = &a.out {
        create_dir(out)?;
    }
    let (report, source, maps) = match &a.checkpoint {
        Some(p) => {
            // the trained weights on real samples, as the loader gives them (normalized)
            let (ck, mut model) = Checkpoint::load_model(p)?;
            let (cfg, d) =
                checkpoint_data(&ck, &model, a.dataset.clone(), a.data_dir.as_ref(), 0, 2)?;
            let (x, y) = samples_of(&d.test, a.batch, false, cfg.seed)?;
            model.to_device(device)?;
            let maps = feature_maps(a, &model, &x, device)?;
            let r = analysis::analyze(&mut model, &x, &y, a.bins.max(1))
                .with_context(|| p.display().to_string())?;
            let n = y.len();
            (
                r,
                format!("{}, {n} test samples of {}", p.display(), cfg.dataset),
                maps,
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
            let maps = feature_maps(a, &model, &x, device)?;
            let r = analysis::analyze(&mut model, &x, &y, a.bins.max(1))?;
            (r, "synthetic batch".to_string(), maps)
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
        if let Some(maps) = &maps {
            let layer = a.feature_maps.as_deref().unwrap_or_default();
            files.extend(analysis::plot::write_feature_maps(
                &format!("`{layer}` output, channel mean, for one input image ({source})"),
                maps,
                &out.join("maps"),
            )?);
        }
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

/// `--feature-maps LAYER`: the input image (the first of `x`) and LAYER's output for it, of
/// `model` and of `--beside`'s model (a checkpoint's weights, or a zoo/spec model's fresh
/// ones drawn with the same seed as the first).
fn feature_maps(
    a: &AnalyzeArgs,
    model: &Model,
    x: &Tensor,
    device: quadra::Device,
) -> Result<Option<Vec<FeatureMap>>> {
    let Some(layer) = &a.feature_maps else {
        return Ok(None);
    };
    let (_, c, h, w) = x.dims4("analyze input")?;
    let one = Tensor::from_f64(&x.to_f64_vec()[..c * h * w], &[1, c, h, w], x.dtype())?;
    let mut maps = vec![analysis::channel_mean(&one, "input", "image")?];
    maps.push(analysis::channel_mean_map(model, &one, layer).context("--feature-maps")?);
    if let Some(b) = &a.beside {
        let mut other = if b.ends_with(".safetensors") {
            Checkpoint::load_model(b)
                .with_context(|| format!("--beside {b}"))?
                .1
        } else {
            let (model, spec) = if b.ends_with(".json") {
                (None, Some(b.into()))
            } else {
                (Some(b.clone()), None)
            };
            let spec = SpecSource {
                model,
                spec,
                classes: a.classes,
            }
            .load()?;
            analysis::train_briefly(&spec, 0, 1, 1)?.0
        };
        other.to_device(device)?;
        maps.push(
            analysis::channel_mean_map(&other, &one, layer)
                .with_context(|| format!("--beside {b}: --feature-maps"))?,
        );
    }
    Ok(Some(maps))
}

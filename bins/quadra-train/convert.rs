//! `quadra-train convert`: a model's layers to quadratic neurons (a spec, or a checkpoint
//! with function-preserving weights).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use quadra::checkpoint::Checkpoint;
use quadra::nn::quadratic::NeuronType;
use quadra::train::{checkpoint_data, samples_of, DatasetKind};

use crate::common::SpecSource;

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The model to convert (without --checkpoint).
    #[arg(long, conflicts_with_all = ["spec", "checkpoint"])]
    model: Option<String>,
    /// Model spec file (JSON) to convert.
    #[arg(long, conflicts_with = "checkpoint")]
    spec: Option<PathBuf>,
    /// Classes of a zoo model.
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Convert this checkpoint's model and weights; -o is then a checkpoint.
    #[arg(long, value_name = "CKPT")]
    checkpoint: Option<PathBuf>,
    /// Neuron type of the converted layers (quadralib-bn, t1, …).
    #[arg(long)]
    neuron: String,
    /// Layers to convert: `all`, a path, an index, a glob (repeatable; default all).
    #[arg(long)]
    select: Vec<String>,
    /// Layers to leave alone (same forms as --select; repeatable).
    #[arg(long)]
    exclude: Vec<String>,
    /// Seed of the fresh second-order weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// With --checkpoint: calibrate the BatchNorm statistics the conversion cannot know
    /// (quadralib-bn BN_a, BN_b; BN_c without a following BatchNorm) on this many training
    /// samples (0: off). The outputs do not change; eval and train mode agree from the
    /// first fine-tuning step.
    #[arg(long, default_value_t = 0)]
    calibrate: usize,
    /// With --checkpoint: compare the converted model with the original on this many test
    /// samples (max |logit difference|, both accuracies; an exact conversion that differs
    /// is an error). 0: off.
    #[arg(long, default_value_t = 0)]
    check: usize,
    /// Dataset for --calibrate / --check (default: the checkpoint's training config's).
    #[arg(long, value_name = "DATASET", requires = "checkpoint")]
    dataset: Option<DatasetKind>,
    /// Where the dataset's files are.
    #[arg(long, requires = "checkpoint")]
    data_dir: Option<PathBuf>,
    /// Output: the converted spec (JSON), or with --checkpoint the converted checkpoint.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Machine-readable output: one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &ConvertArgs) -> Result<()> {
    use quadra::convert::{self, ConvertOptions, Selector};
    let neuron: NeuronType = a
        .neuron
        .parse()
        .with_context(|| format!("--neuron {}", a.neuron))?;
    let mut opts = ConvertOptions::new(neuron);
    opts.seed = a.seed;
    for s in &a.select {
        opts.select
            .push(Selector::parse(s).with_context(|| format!("--select {s}"))?);
    }
    for s in &a.exclude {
        opts.exclude
            .push(Selector::parse(s).with_context(|| format!("--exclude {s}"))?);
    }
    if a.checkpoint.is_none()
        && (a.calibrate > 0 || a.check > 0 || a.dataset.is_some() || a.data_dir.is_some())
    {
        bail!("--calibrate, --check, --dataset and --data-dir need --checkpoint (they work on trained weights)");
    }
    let mut extra = json!({});
    let mut notes = Vec::new();
    let (name, layers, params, macs) = if let Some(ck_path) = &a.checkpoint {
        let (ck, model) = Checkpoint::load_model(ck_path)?;
        let (mut q, report) = convert::convert_model(&model, &opts)
            .with_context(|| format!("converting {}", ck_path.display()))?;
        if a.calibrate > 0 || a.check > 0 {
            let (cfg, d) = checkpoint_data(
                &ck,
                &model,
                a.dataset.clone(),
                a.data_dir.as_ref(),
                a.check,
                a.calibrate,
            )
            .with_context(|| format!("{}: data for --calibrate/--check", ck_path.display()))?;
            if a.calibrate > 0 {
                let (x, _) = samples_of(&d.train, a.calibrate, true, cfg.seed ^ 0xca11)?;
                let r = convert::calibrate(&mut q, &report.layers, &x, 256)
                    .with_context(|| format!("calibrating {}", ck_path.display()))?;
                notes.push(format!(
                    "calibrated {} BatchNorms on {} training samples of {} (largest |σ_running/σ_data − 1| before: {:.3})",
                    r.bns.len(),
                    r.samples,
                    cfg.dataset.name(),
                    r.bns.iter().fold(0.0f64, |m, b| m.max(b.max_std_ratio_error))
                ));
                extra["calibration"] = serde_json::to_value(&r)?;
            }
            if a.check > 0 {
                let (x, y) = samples_of(&d.test, a.check, false, 0)?;
                let (diff, scale) = convert::max_output_diff(&model, &q, &x)?;
                let acc0 = convert::accuracy(&model, &x, &y)?;
                let acc1 = convert::accuracy(&q, &x, &y)?;
                notes.push(format!(
                    "check on {} test samples of {}: max |converted − original| logit {diff:.3e} (max |logit| {scale:.2}); accuracy {:.2}% (original {:.2}%)",
                    y.len(),
                    cfg.dataset.name(),
                    100.0 * acc1,
                    100.0 * acc0
                ));
                extra["check"] = json!({ "samples": y.len(), "dataset": cfg.dataset.name(),
                    "max_abs_diff": diff, "max_abs_logit": scale,
                    "accuracy_original": acc0, "accuracy_converted": acc1 });
                if report.function_preserving && diff > 1e-4 * (1.0 + scale) {
                    bail!(
                        "{}: the converted model does not reproduce the original: max |logit difference| {diff:.3e} (max |logit| {scale:.2})",
                        ck_path.display()
                    );
                }
            }
        }
        Checkpoint::from_model(&q)?.save(&a.output)?;
        (
            report.model,
            report.layers,
            (report.params_before, report.params_after),
            (report.macs_before, report.macs_after),
        )
    } else {
        let source = SpecSource {
            model: a.model.clone(),
            spec: a.spec.clone(),
            classes: a.classes,
        };
        let spec = source.load()?;
        let conv = convert::convert_spec(&spec, &opts)?;
        let (before, after) = (convert::cost(&spec)?, convert::cost(&conv.spec)?);
        quadra::profile::write_atomic(&a.output, conv.spec.to_json().as_bytes())?;
        (
            spec.name.clone(),
            conv.layers,
            (before.total_params, after.total_params),
            (before.total_macs, after.total_macs),
        )
    };
    let mut out = json!({ "model": name, "neuron": neuron, "output": a.output.display().to_string(),
                      "layers": layers.iter().map(|l| l.path.clone()).collect::<Vec<_>>(),
                      "params_before": params.0, "params_after": params.1,
                      "macs_before": macs.0, "macs_after": macs.1 });
    if let (Some(o), Value::Object(e)) = (out.as_object_mut(), extra) {
        o.extend(e);
    }
    if a.json {
        println!("{out}");
    } else {
        println!(
            "converted {name}: {} layers to {neuron} {:?}; params {} → {}, MACs {} → {}; wrote {}",
            layers.len(),
            layers.iter().map(|l| l.path.as_str()).collect::<Vec<_>>(),
            params.0,
            params.1,
            macs.0,
            macs.1,
            a.output.display()
        );
        for n in &notes {
            println!("{n}");
        }
    }
    Ok(())
}

//! `quadra-train reduce`: a QDNN checkpoint reduced to a parameter or MAC budget along its
//! importance ranking.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::json;

use quadra::checkpoint::Checkpoint;
use quadra::model::Model;
use quadra::train::DatasetKind;
use quadra::DType;

use crate::importance::rank_layers;

#[derive(Args, Debug)]
pub struct ReduceArgs {
    /// The trained QDNN checkpoint.
    #[arg(long, value_name = "CKPT")]
    checkpoint: PathBuf,
    /// Parameter budget: a count, or a percentage of the model's (`70%`).
    #[arg(
        long,
        conflicts_with = "budget_macs",
        required_unless_present = "budget_macs"
    )]
    budget_params: Option<String>,
    /// MAC (multiply-accumulate per sample) budget: a count or a percentage (`50%`).
    #[arg(long)]
    budget_macs: Option<String>,
    /// The ranking: a file of `importance --json` output; default: ranked here on the test
    /// split (--dataset, --samples).
    #[arg(long, conflicts_with_all = ["dataset", "data_dir", "samples"])]
    importance: Option<PathBuf>,
    /// Dataset of the test split (default: the checkpoint's training config's, else synthetic).
    #[arg(long, value_name = "DATASET")]
    dataset: Option<DatasetKind>,
    /// Where the dataset's files are.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Test samples of the ranking (default 1000).
    #[arg(long)]
    samples: Option<usize>,
    /// The reduced model spec (JSON): `train --model FILE` trains it.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Also write the reduced model with the QDNN's weights as a checkpoint (`train --init`
    /// fine-tunes it).
    #[arg(long)]
    save_checkpoint: Option<PathBuf>,
    /// Machine-readable output: one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// A budget flag: a count, or `P%` of `of`.
fn parse_budget(flag: &str, v: &str, of: u64) -> Result<u64> {
    let v = v.trim();
    let n = match v.strip_suffix('%') {
        Some(p) => {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| anyhow!("{flag} {v}: not a percentage"))?;
            if !(p > 0.0 && p <= 100.0) {
                bail!("{flag} {v}: the percentage must be in (0, 100]");
            }
            (of as f64 * p / 100.0).floor() as u64
        }
        None => v
            .parse()
            .map_err(|_| anyhow!("{flag} {v}: expected a count (20000) or a percentage (70%)"))?,
    };
    if n == 0 {
        bail!("{flag} {v}: the budget must be positive");
    }
    Ok(n)
}

pub fn run(a: &ReduceArgs) -> Result<()> {
    use quadra::convert::{self, Budget, ImportanceReport};
    let (_, model) = Checkpoint::load_model(&a.checkpoint)?;
    let full = convert::cost(&model.spec)?;
    let budget = match (&a.budget_params, &a.budget_macs) {
        (Some(p), None) => Budget::Params(parse_budget("--budget-params", p, full.total_params)?),
        (None, Some(m)) => Budget::Macs(parse_budget("--budget-macs", m, full.total_macs)?),
        _ => bail!("pass one of --budget-params, --budget-macs"),
    };
    let ranking: ImportanceReport = match &a.importance {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("--importance {}", p.display()))?;
            let r: ImportanceReport = serde_json::from_str(text.trim()).with_context(|| {
                format!(
                    "--importance {}: not the output of `quadra-train importance --json`",
                    p.display()
                )
            })?;
            if r.model != model.spec.name || r.total_params != full.total_params {
                bail!(
                    "--importance {}: it ranks model `{}` ({} parameters), the checkpoint holds `{}` ({} parameters)",
                    p.display(),
                    r.model,
                    r.total_params,
                    model.spec.name,
                    full.total_params
                );
            }
            r
        }
        None => {
            rank_layers(
                &a.checkpoint,
                a.dataset.clone(),
                a.data_dir.as_ref(),
                a.samples.unwrap_or(1000),
            )?
            .0
        }
    };
    let red = convert::reduce(
        &model.spec,
        &convert::state_dict_of(&model),
        &ranking,
        budget,
    )
    .with_context(|| format!("{}", a.checkpoint.display()))?;
    quadra::profile::write_atomic(&a.output, red.spec.to_json().as_bytes())?;
    if let Some(p) = &a.save_checkpoint {
        let m = convert::model_from_state_dict(&red.spec, &red.state_dict, model_dtype(&model), 0)?;
        Checkpoint::from_model(&m)?.save(p)?;
    }
    if a.json {
        let mut v = serde_json::to_value(&red.report)?;
        v["output"] = json!(a.output.display().to_string());
        if let Some(p) = &a.save_checkpoint {
            v["checkpoint"] = json!(p.display().to_string());
        }
        println!("{v}");
    } else {
        print!("{}", red.report.table());
        println!(
            "wrote {}{}",
            a.output.display(),
            a.save_checkpoint
                .as_ref()
                .map(|p| format!(", {}", p.display()))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn model_dtype(m: &Model) -> DType {
    quadra::convert::state_dict_of(m)
        .first()
        .map_or(DType::F32, |(_, t)| t.dtype())
}

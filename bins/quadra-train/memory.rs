//! `quadra-train memory`: memory profile of training steps, budget plans verified by
//! measurement, charts and an HTML report.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use quadra::train::resolve_device;

use crate::common::{create_dir, paths, SpecSource};

#[derive(Args, Debug)]
pub struct MemoryArgs {
    #[command(flatten)]
    source: SpecSource,
    /// Samples per profiled training step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Threads of the profiled steps (0: all cores).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Timed steps per configuration.
    #[arg(long, default_value_t = 2)]
    steps: usize,
    /// Where the steps run: auto (a usable CUDA GPU, else the CPU; the default), cpu, emu
    /// (the CUDA backend on the kernel emulator), cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// A memory budget in bytes to plan for and verify (repeatable).
    #[arg(long)]
    memory_budget: Vec<u64>,
    /// A memory budget in MiB to plan for and verify (repeatable).
    #[arg(long)]
    budget_mib: Vec<f64>,
    /// Also write timeline.{png,svg}, layers.{png,svg}, report.json and report.html to this
    /// directory (without it the table is printed only).
    #[arg(short = 'o', long = "output", alias = "out", value_name = "DIR")]
    out: Option<PathBuf>,
    /// Machine-readable output: one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &MemoryArgs) -> Result<()> {
    use quadra::profile::{self, chart, html, mib, BudgetPlan, ProfileOptions};
    let spec = a.source.load()?;
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let device = resolve_device(&a.device).context("--device")?;
    if let Some(out) = &a.out {
        create_dir(out)?;
    }
    let opts = ProfileOptions {
        batch: a.batch,
        steps: a.steps.max(1),
        threads: a.threads,
        device,
        ..ProfileOptions::default()
    };
    // a model, then a batch, that cannot fit is refused before anything of its size is
    // allocated (the model first: its error must not blame --batch)
    spec.check_build_fits(opts.dtype)?;
    let fit = profile::check_fits(&spec, &opts).context("--batch")?;
    if !a.json {
        println!(
            "batch {}: predicted peak {:.1} MiB (stored mode; {:.1} MiB fixed + {:.3} MiB per sample), {:.1} MiB available on {device}",
            a.batch,
            mib(fit.predicted_peak),
            mib(fit.fixed),
            mib(fit.per_sample),
            mib(fit.available.min(u64::MAX / 2)),
        );
    }
    let mut cmp = profile::compare_modes_with(&spec, &opts)?;
    if !a.json {
        print!("{}", profile::render_table(&cmp));
    }
    let mut budgets: Vec<u64> = a.memory_budget.clone();
    for &m in &a.budget_mib {
        if !(m.is_finite() && m > 0.0) {
            bail!("--budget-mib {m}: expected a positive number of MiB");
        }
        budgets.push((m * 1024.0 * 1024.0) as u64);
    }
    let mut plans: Vec<BudgetPlan> = Vec::new();
    let middle = budgets.len().div_ceil(2);
    let mut planned = None;
    for (k, &budget) in budgets.iter().enumerate() {
        let (plan, prof) = profile::plan_and_verify(&spec, &cmp, budget, &opts)
            .with_context(|| format!("budget {budget} bytes ({:.2} MiB)", mib(budget)))?;
        if !a.json {
            println!(
                "budget {:>8.2} MiB: recompute {:>2} layers ({:.3} GFLOP), predicted {:.2} MiB, measured {:.2} MiB, fits {}, step {:.3} s",
                mib(budget),
                plan.recomputed_layers,
                plan.recompute_flops as f64 / 1e9,
                mib(plan.predicted_peak),
                mib(prof.peak_total),
                plan.fits_measured.unwrap_or(false),
                prof.step_time_s,
            );
        }
        if k + 1 == middle {
            let mut p = prof;
            p.label = "planned".into();
            planned = Some(p);
        }
        plans.push(plan);
    }
    if let Some(p) = planned {
        cmp.profiles.push(p);
        cmp = profile::ModeComparison::from_profiles(cmp.profiles, cmp.steps)?;
    }
    let mut files = Vec::new();
    if let Some(out) = &a.out {
        files = chart::write_timeline_chart(&cmp, &out.join("timeline"))?;
        files.extend(chart::write_layer_chart(&cmp, &out.join("layers"), false)?);
        let report = out.join("report.html");
        html::write_report(
            &report,
            &html::ReportInputs {
                comparison: &cmp,
                plans: &plans,
                analysis: None,
                feature_maps: None,
            },
        )?;
        files.push(report);
        let dump = out.join("report.json");
        profile::write_atomic(
            &dump,
            serde_json::to_string(&json!({ "comparison": cmp, "plans": plans }))?.as_bytes(),
        )?;
        files.push(dump);
    }
    let peaks: serde_json::Map<String, Value> = cmp
        .profiles
        .iter()
        .map(|p| (p.label.clone(), json!(p.peak_total)))
        .collect();
    if a.json {
        println!(
            "{}",
            json!({ "model": spec.name, "batch": a.batch, "peak_bytes": peaks,
                    "plans": plans, "files": paths(&files) })
        );
    } else {
        for f in &files {
            println!("wrote {}", f.display());
        }
    }
    Ok(())
}

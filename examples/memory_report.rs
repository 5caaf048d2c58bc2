//! The memory profiler, the budget planner and the analysis tools end to end: compare the
//! back-propagation modes of a zoo model, plan for budgets between the two modes' peaks and
//! verify each plan, take distributions and feature maps, then write charts (PNG + SVG),
//! a JSON dump and a self-contained HTML report.
//!
//!     cargo run --release --example memory_report -- --model qresnet14 --batch 64 \
//!         --threads 2 --steps 2 --budgets 3 --out target/memory-report

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use quadra::analysis::{self, StatKind};
use quadra::profile::{self, chart, html, mib, BudgetPlan, ProfileOptions};

#[derive(Parser, Debug)]
#[command(about = "Memory profile, budget plans and analysis of a zoo model")]
struct Args {
    #[arg(long, default_value = "qresnet14")]
    model: String,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Timed steps per configuration.
    #[arg(long, default_value_t = 2)]
    steps: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Budgets planned and verified, evenly between the recompute and stored peaks.
    #[arg(long, default_value_t = 3)]
    budgets: usize,
    /// Batch of the distribution analysis.
    #[arg(long, default_value_t = 16)]
    analysis_batch: usize,
    /// Skip the analysis and feature maps.
    #[arg(long)]
    no_analysis: bool,
    #[arg(long, default_value = "target/memory-report")]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let spec = quadra::models::get(&args.model, None, 10)?;
    let opts = ProfileOptions {
        batch: args.batch,
        steps: args.steps,
        threads: args.threads,
        ..ProfileOptions::default()
    };

    eprintln!("profiling {} (stored, recompute)…", args.model);
    let mut cmp = profile::compare_modes_with(&spec, &opts)?;
    print!("{}", profile::render_table(&cmp));

    let mut plans: Vec<BudgetPlan> = Vec::new();
    let (lo, hi) = (
        cmp.profile("recompute").map_or(0, |p| p.peak_total),
        cmp.profile("stored").map_or(0, |p| p.peak_total),
    );
    for k in 1..=args.budgets {
        let budget = lo + (hi - lo) * k as u64 / (args.budgets as u64 + 1);
        eprintln!("planning for {:.2} MiB…", mib(budget));
        let (plan, prof) = profile::plan_and_verify(&spec, &cmp, budget, &opts)?;
        println!(
            "budget {:>8.2} MiB: recompute {:>2} layers ({:.3} GFLOP), predicted {:.2} MiB, measured {:.2} MiB, fits {}, step {:.3} s, rounds {}",
            mib(budget),
            plan.recomputed_layers,
            plan.recompute_flops as f64 / 1e9,
            mib(plan.predicted_peak),
            mib(prof.peak_total),
            plan.fits_measured.unwrap_or(false),
            prof.step_time_s,
            plan.rounds
        );
        if k == args.budgets.div_ceil(2) {
            let mut p = prof;
            p.label = "planned".into();
            cmp.profiles.push(p);
        }
        plans.push(plan);
    }
    // the middle plan joins the comparison as "planned"
    let cmp = profile::ModeComparison::from_profiles(cmp.profiles, cmp.steps)?;
    if args.budgets > 0 {
        print!("\nwith the middle plan:\n{}", profile::render_table(&cmp));
    }

    let files = [
        chart::write_timeline_chart(&cmp, &args.out.join("timeline"))?,
        chart::write_layer_chart(&cmp, &args.out.join("layers"), false)?,
    ];

    let (report, maps) = if args.no_analysis {
        (None, None)
    } else {
        eprintln!("analysis…");
        let report = analysis::analyze_spec(&spec, args.analysis_batch, 0, 64, 1)?;
        let acts: Vec<_> = report
            .of_kind(StatKind::Activation)
            .filter(|e| !e.describe.starts_with("ReLU"))
            .collect();
        analysis::plot::write_histogram_grid(
            &format!("{}: layer outputs (batch {})", report.model, report.batch),
            &acts,
            4,
            &args.out.join("activations"),
        )?;
        let cnn = quadra::models::get("cnn", None, 10)?;
        let qcnn = quadra::models::get("qcnn", None, 10)?;
        let maps = analysis::feature_map_comparison(&[&cnn, &qcnn], "relu1", 30, 32, 3)?;
        analysis::plot::write_feature_maps(
            "relu1 output, first-order CNN vs quadratic CNN (30 training steps)",
            &maps,
            &args.out.join("feature_maps"),
        )?;
        (Some(report), Some(maps))
    };

    html::write_report(
        &args.out.join("report.html"),
        &html::ReportInputs {
            comparison: &cmp,
            plans: &plans,
            analysis: report.as_ref(),
            feature_maps: maps.as_deref(),
        },
    )?;
    let json = serde_json::json!({ "comparison": cmp, "plans": plans, "analysis": report });
    profile::write_atomic(
        &args.out.join("report.json"),
        serde_json::to_string(&json)?.as_bytes(),
    )?;
    for f in files.iter().flatten() {
        eprintln!("wrote {}", f.display());
    }
    eprintln!("wrote {}", args.out.join("report.html").display());
    Ok(())
}

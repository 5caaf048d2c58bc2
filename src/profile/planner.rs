//! The memory-budget planner: choose per quadratic layer `stored` or `recompute` so that a
//! training step's peak fits a budget with the least recomputed FLOPs.
//!
//! Inputs, measured: from the all-`stored` and the all-`recompute` profiles, each layer's
//! saved-for-backward bytes in both modes (their difference is what recomputing the layer
//! saves) and its recompute cost (the FLOPs of the forward GEMM the backward re-runs).
//!
//! Model of the peak: the step peaks when everything is kept for backward, so recomputing a
//! set R lowers the stored peak by the bytes R's layers stop keeping, but never below the
//! all-recompute peak (whose transient recompute workspace remains):
//!     predicted(R) = max(peak_recompute, peak_stored − Σ_{i∈R} Δ_i).
//! Choosing R is a covering knapsack: minimise Σ flops_i subject to Σ Δ_i ≥ peak_stored −
//! budget. Solved exactly by enumeration up to 20 candidate layers, greedily (bytes per
//! FLOP, then dropping layers that are not needed) beyond. `plan_and_verify` then runs the
//! plan, measures its peak, and if the measurement exceeds the budget asks for that much
//! more and plans again.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{mib, profile_training, MemoryProfile, ModeComparison, ProfileOptions};
use crate::nn::spec::{quadratic_layers, ModelSpec};
use crate::nn::BackpropMode;
use crate::{Error, Result};

/// One quadratic layer as the planner sees it.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    /// The quadratic layer's full path.
    pub layer: String,
    /// Saved-for-backward bytes in `stored` minus in `recompute`.
    pub bytes_saved: u64,
    /// FLOPs the backward spends recomputing the layer in `recompute` mode.
    pub recompute_flops: u64,
}

/// A plan for one budget, with its prediction and (after `plan_and_verify`) its
/// measurement.
#[derive(Clone, Debug, Serialize)]
pub struct BudgetPlan {
    /// The spec's model name.
    pub model: String,
    /// The peak the plan must fit under, bytes.
    pub budget: u64,
    /// Every quadratic layer's mode, usable as `ModelSpec.backprop_overrides`.
    pub plan: BTreeMap<String, BackpropMode>,
    /// How many layers the plan recomputes.
    pub recomputed_layers: usize,
    /// Total FLOPs the plan's recomputed layers cost per step.
    pub recompute_flops: u64,
    /// The peak the planner's model predicts for the plan, bytes.
    pub predicted_peak: u64,
    /// Whether `predicted_peak` ≤ `budget`.
    pub fits_predicted: bool,
    /// The measured peaks of the two full modes the plan was made from.
    pub stored_peak: u64,
    /// The measured peak of the all-`recompute` profile, bytes.
    pub recompute_peak: u64,
    /// The plan's measured peak, bytes (`None` until `plan_and_verify` ran it).
    pub measured_peak: Option<u64>,
    /// Whether the measured peak is ≤ `budget` (`None` until measured).
    pub fits_measured: Option<bool>,
    /// The plan's measured median step time, seconds (`None` until measured).
    pub measured_step_time_s: Option<f64>,
    /// Planning rounds (1 unless the first measurement was over budget).
    pub rounds: usize,
    /// Every quadratic layer the planner chose among, with its saving and cost.
    pub candidates: Vec<Candidate>,
}

/// The planner's inputs from a comparison holding `stored` and `recompute` profiles.
pub fn candidates(c: &ModeComparison) -> Result<(Vec<Candidate>, &MemoryProfile, &MemoryProfile)> {
    let need = |l: &str| {
        c.profile(l).ok_or_else(|| {
            Error::invalid(
                "memory planner",
                format!("the comparison has no `{l}` profile (run compare_modes first)"),
            )
        })
    };
    let (s, r) = (need("stored")?, need("recompute")?);
    let cands = s
        .layers
        .iter()
        .filter(|row| row.mode.is_some())
        .map(|row| {
            let rec = r.layer(&row.layer).map_or(0, |x| x.saved_for_backward);
            Candidate {
                layer: row.layer.clone(),
                bytes_saved: row.saved_for_backward.saturating_sub(rec),
                recompute_flops: row.recompute_flops.unwrap_or(0),
            }
        })
        .collect();
    Ok((cands, s, r))
}

/// Indices of the candidates to recompute: Σ bytes ≥ need at least FLOPs (None when even
/// all of them do not save `need`).
pub fn choose(c: &[Candidate], need: u64) -> Option<Vec<usize>> {
    if need == 0 {
        return Some(Vec::new());
    }
    let useful: Vec<usize> = (0..c.len()).filter(|&i| c[i].bytes_saved > 0).collect();
    let all: u64 = useful.iter().map(|&i| c[i].bytes_saved).sum();
    if all < need {
        return None;
    }
    if useful.len() <= 20 {
        // exact: every subset; ties go to fewer layers, then to more bytes saved
        let n = useful.len();
        let mut best: Option<(u64, u32, std::cmp::Reverse<u64>, u32)> = None;
        for mask in 1u32..(1u32 << n) {
            let (mut b, mut f) = (0u64, 0u64);
            for (j, &i) in useful.iter().enumerate() {
                if mask >> j & 1 == 1 {
                    b += c[i].bytes_saved;
                    f += c[i].recompute_flops;
                }
            }
            if b >= need {
                let key = (f, mask.count_ones(), std::cmp::Reverse(b), mask);
                if best.is_none_or(|k| key < k) {
                    best = Some(key);
                }
            }
        }
        let mask = best?.3;
        return Some(
            useful
                .iter()
                .enumerate()
                .filter(|(j, _)| mask >> j & 1 == 1)
                .map(|(_, &i)| i)
                .collect(),
        );
    }
    // greedy by bytes per FLOP, then drop what is not needed (most FLOPs first)
    let mut order = useful.clone();
    let ratio = |i: usize| c[i].bytes_saved as f64 / (c[i].recompute_flops.max(1) as f64);
    order.sort_by(|&a, &b| ratio(b).total_cmp(&ratio(a)));
    let mut picked = Vec::new();
    let mut b = 0;
    for i in order {
        if b >= need {
            break;
        }
        b += c[i].bytes_saved;
        picked.push(i);
    }
    picked.sort_by(|&a, &b| c[b].recompute_flops.cmp(&c[a].recompute_flops));
    let mut k = 0;
    while k < picked.len() {
        let i = picked[k];
        if b - c[i].bytes_saved >= need {
            b -= c[i].bytes_saved;
            picked.remove(k);
        } else {
            k += 1;
        }
    }
    picked.sort();
    Some(picked)
}

/// Plan per-layer modes for `budget` bytes from the measured `stored` and `recompute`
/// profiles in `comparison` (no measurement of the plan: see `plan_and_verify`).
///
/// Errors when `budget` is below the all-recompute peak: no plan can fit it.
pub fn plan_for_budget(comparison: &ModeComparison, budget: u64) -> Result<BudgetPlan> {
    plan_with_margin(comparison, budget, 0)
}

fn plan_with_margin(comparison: &ModeComparison, budget: u64, margin: u64) -> Result<BudgetPlan> {
    let (cands, s, r) = candidates(comparison)?;
    if budget < r.peak_total {
        return Err(Error::invalid(
            "memory budget",
            format!(
                "{budget} bytes ({:.2} MiB) is below the smallest peak this model reaches, \
                 {} bytes ({:.2} MiB) with every quadratic layer in `recompute` mode \
                 (batch {}); lower the batch size or raise the budget",
                mib(budget),
                r.peak_total,
                mib(r.peak_total),
                r.batch
            ),
        ));
    }
    let need = (s.peak_total + margin).saturating_sub(budget);
    let pick = choose(&cands, need).unwrap_or_else(|| {
        // not even all layers save enough by the model: recompute every layer that saves
        (0..cands.len())
            .filter(|&i| cands[i].bytes_saved > 0)
            .collect()
    });
    let mut plan: BTreeMap<String, BackpropMode> = cands
        .iter()
        .map(|c| (c.layer.clone(), BackpropMode::Stored))
        .collect();
    let (mut saved, mut flops) = (0u64, 0u64);
    for &i in &pick {
        plan.insert(cands[i].layer.clone(), BackpropMode::Recompute);
        saved += cands[i].bytes_saved;
        flops += cands[i].recompute_flops;
    }
    let predicted_peak = s.peak_total.saturating_sub(saved).max(r.peak_total);
    Ok(BudgetPlan {
        model: comparison.model.clone(),
        budget,
        plan,
        recomputed_layers: pick.len(),
        recompute_flops: flops,
        predicted_peak,
        fits_predicted: predicted_peak <= budget,
        stored_peak: s.peak_total,
        recompute_peak: r.peak_total,
        measured_peak: None,
        fits_measured: None,
        measured_step_time_s: None,
        rounds: 1,
        candidates: cands,
    })
}

/// Plan for `budget`, then run the plan (`opts`: the same batch and threads as the
/// comparison) and measure its peak. When the measured peak is over budget, plan again
/// asking for the overshoot more (up to 4 rounds). Returns the plan with its measurement
/// and the profile of the last run.
pub fn plan_and_verify(
    spec: &ModelSpec,
    comparison: &ModeComparison,
    budget: u64,
    opts: &ProfileOptions,
) -> Result<(BudgetPlan, MemoryProfile)> {
    let mut margin = 0u64;
    let mut round = 1;
    loop {
        let mut plan = plan_with_margin(comparison, budget, margin)?;
        let mut s = spec.clone();
        s.backprop_overrides = plan.plan.clone();
        let prof = profile_training(&s, "planned", opts)?;
        plan.rounds = round;
        plan.measured_peak = Some(prof.peak_total);
        plan.fits_measured = Some(prof.peak_total <= budget);
        plan.measured_step_time_s = Some(prof.step_time_s);
        let all_recomputed = plan.plan.values().all(|&m| m == BackpropMode::Recompute);
        if prof.peak_total <= budget || round >= 4 || all_recomputed {
            return Ok((plan, prof));
        }
        margin += prof.peak_total - budget;
        round += 1;
    }
}

/// Check a user-given per-layer plan against the spec: every name must be a quadratic
/// layer; the error lists the unknown names and the valid ones.
pub fn validate_plan(spec: &ModelSpec, plan: &BTreeMap<String, BackpropMode>) -> Result<()> {
    let mut quad = Vec::new();
    quadratic_layers(&spec.layers, "", &mut quad);
    let unknown: Vec<&str> = plan
        .keys()
        .filter(|k| !quad.contains(k))
        .map(|k| k.as_str())
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::invalid(
        "backprop plan",
        format!(
            "{} {} not a quadratic layer of `{}`; valid names: {}",
            unknown
                .iter()
                .map(|u| format!("`{u}`"))
                .collect::<Vec<_>>()
                .join(", "),
            if unknown.len() == 1 { "is" } else { "are" },
            spec.name,
            if quad.is_empty() {
                "none (the model has no quadratic layers)".to_string()
            } else {
                quad.join(", ")
            }
        ),
    ))
}

/// Parse a plan from JSON (`{"layer1.0.conv1": "recompute", …}`) and validate it.
pub fn parse_plan(spec: &ModelSpec, json: &str) -> Result<BTreeMap<String, BackpropMode>> {
    let plan: BTreeMap<String, BackpropMode> = serde_json::from_str(json).map_err(|e| {
        Error::invalid(
            "backprop plan",
            format!("not a JSON map of layer → `stored`/`recompute`: {e}"),
        )
    })?;
    validate_plan(spec, &plan)?;
    Ok(plan)
}

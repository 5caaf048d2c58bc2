//! BatchNorm calibration of a converted model: set the running statistics that the
//! function-preserving initialisation cannot know without data from the statistics of
//! real inputs (PyTorch's practice of recomputing BatchNorm statistics, e.g.
//! `torch.optim.swa_utils.update_bn`, restricted to the statistics the conversion made up).
//!
//! For each converted `quadralib-bn` layer (`ConvertedLayer`), with z_k = W_k x + b_k:
//!
//! - BN_a, BN_b: running μ, σ² ← the statistics of z_a, z_b (at conversion they are 0, 1,
//!   while the true ones differ: on the demo's cnn the batch variance of z_a is 0.05–0.87).
//!   The output does not change (γ_a = β_a = 0, so A ⊙ B = 0 whatever BN_a, BN_b
//!   normalise with), but once training moves γ_a, eval-mode A ⊙ B (running statistics)
//!   matches train-mode A ⊙ B (batch statistics) from the first step instead of only after
//!   the running averages have caught up (momentum 0.1: ~20 steps).
//! - BN_c of a layer with no BatchNorm after it (`stats_from` is `None`, e.g. a converted
//!   classifier): μ_c, σ²_c ← the statistics of z_c, with γ_c = √(σ²_c + eps), β_c = μ_c so
//!   that BN_c stays the identity in eval mode and becomes ≈ the identity in train mode
//!   too (with (0, 1) it normalises the logits per batch in train mode: on the demo, the
//!   converted cnn with its classifier converted has train-mode accuracy 67.6% against the
//!   original's 80.4%). BN_c of a layer followed by a BatchNorm already has that
//!   BatchNorm's statistics and is left alone.
//!
//! The statistics are those of training-mode forwards (every BatchNorm normalising with its
//! batch's statistics, as during fine-tuning), averaged over the batches weighted by their
//! sizes: the mean of the batch means and of the unbiased batch variances (what the running
//! statistics estimate). No weight changes, and every other running statistic is kept.

use serde::{Deserialize, Serialize};

use super::{dict_dtype, model_from_state_dict, rows, state_dict_of, ConvertedLayer};
use crate::model::Model;
use crate::nn::quadratic::{NeuronType, BN_EPS, BN_MOMENTUM};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// One calibrated BatchNorm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibratedBn {
    /// State-dict prefix (`conv1.bn1`).
    pub path: String,
    /// Largest |σ_running/σ_data − 1| over the channels before calibration: how far the
    /// conversion's statistics were from the data's.
    pub max_std_ratio_error: f64,
    /// Largest |μ_running − μ_data| / σ_data over the channels before calibration.
    pub max_mean_error: f64,
}

/// What `calibrate` did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CalibrateReport {
    /// Samples the statistics were taken over (a dropped last batch of one not counted).
    pub samples: usize,
    /// Training-mode forwards run.
    pub batches: usize,
    /// Each calibrated BatchNorm, with how far its statistics were off.
    pub bns: Vec<CalibratedBn>,
}

/// Calibrate the BatchNorms of the converted `layers` of `model` (see the module doc) on
/// the inputs `x` (N, …), in training-mode forwards of at most `batch_size` samples (a last
/// batch of one sample is dropped: BatchNorm needs two values per channel). Layers that are
/// not `quadralib-bn` have nothing to calibrate. Errors: fewer than 2 samples, a batch size
/// below 2, a layer path the model does not have.
pub fn calibrate(
    model: &mut Model,
    layers: &[ConvertedLayer],
    x: &Tensor,
    batch_size: usize,
) -> Result<CalibrateReport> {
    model.check_input(x)?;
    let n = x.shape()[0];
    if n < 2 || batch_size < 2 {
        return Err(Error::invalid(
            "BatchNorm calibration",
            format!(
                "needs batches of at least 2 samples (got {n} samples, batch size {batch_size})"
            ),
        ));
    }
    // (BN prefix, set γ, β to keep BN the identity)
    let mut targets: Vec<(String, bool)> = Vec::new();
    for l in layers
        .iter()
        .filter(|l| l.neuron == NeuronType::QuadraLibBn)
    {
        targets.push((format!("{}.bn1", l.path), false));
        targets.push((format!("{}.bn2", l.path), false));
        if l.stats_from.is_none() {
            targets.push((format!("{}.bn3", l.path), true));
        }
    }
    let mut report = CalibrateReport::default();
    if targets.is_empty() {
        return Ok(report);
    }
    let mut sd = state_dict_of(model);
    let dtype = dict_dtype(&sd);
    let find = |sd: &[(String, Tensor)], k: &str| -> Result<usize> {
        sd.iter().position(|(n, _)| n == k).ok_or_else(|| {
            Error::invalid(
                "BatchNorm calibration",
                format!(
                    "model `{}` has no entry `{k}` (is the layer list of this conversion?)",
                    model.spec.name
                ),
            )
        })
    };
    // probe: running statistics 0, 0, so that after one training forward they hold
    // momentum·(batch mean, unbiased batch variance), without rounding against old values
    let mut probe = sd.clone();
    for (p, _) in &targets {
        for s in ["running_mean", "running_var"] {
            let i = find(&probe, &format!("{p}.{s}"))?;
            let t = &probe[i].1;
            probe[i].1 = Tensor::from_f64(&vec![0.0; t.numel()], t.shape(), t.dtype())?;
        }
    }
    let mut sums: Vec<(Vec<f64>, Vec<f64>)> = targets
        .iter()
        .map(|(p, _)| {
            let c = sd[find(&sd, &format!("{p}.running_mean")).unwrap_or(0)]
                .1
                .numel();
            (vec![0.0; c], vec![0.0; c])
        })
        .collect();
    let mut counted = 0usize;
    let mut s = 0;
    while s < n {
        let e = (s + batch_size).min(n);
        if e - s < 2 {
            break;
        }
        let xb = if s == 0 && e == n {
            x.clone()
        } else {
            rows(x, s, e)?
        };
        let mut m = model_from_state_dict(&model.spec, &probe, dtype, 0)?;
        m.net_forward_for_accounting(&xb)?;
        m.net_clear();
        let got = state_dict_of(&m);
        for ((p, _), (sm, sv)) in targets.iter().zip(sums.iter_mut()) {
            let mean = got[find(&got, &format!("{p}.running_mean"))?]
                .1
                .to_f64_vec();
            let var = got[find(&got, &format!("{p}.running_var"))?].1.to_f64_vec();
            let w = (e - s) as f64;
            for c in 0..sm.len() {
                sm[c] += w * mean[c] / BN_MOMENTUM;
                sv[c] += w * var[c] / BN_MOMENTUM;
            }
        }
        counted += e - s;
        report.batches += 1;
        s = e;
    }
    report.samples = counted;
    for ((p, identity), (sm, sv)) in targets.iter().zip(sums) {
        let mean: Vec<f64> = sm.iter().map(|v| v / counted as f64).collect();
        let var: Vec<f64> = sv.iter().map(|v| v / counted as f64).collect();
        let im = find(&sd, &format!("{p}.running_mean"))?;
        let iv = find(&sd, &format!("{p}.running_var"))?;
        let (old_m, old_v) = (sd[im].1.to_f64_vec(), sd[iv].1.to_f64_vec());
        let mut bn = CalibratedBn {
            path: p.clone(),
            max_std_ratio_error: 0.0,
            max_mean_error: 0.0,
        };
        for c in 0..mean.len() {
            let sd_data = (var[c] + BN_EPS).sqrt();
            bn.max_std_ratio_error = bn
                .max_std_ratio_error
                .max(((old_v[c] + BN_EPS).sqrt() / sd_data - 1.0).abs());
            bn.max_mean_error = bn.max_mean_error.max((old_m[c] - mean[c]).abs() / sd_data);
        }
        let like = sd[im].1.clone();
        sd[im].1 = Tensor::from_f64(&mean, like.shape(), like.dtype())?;
        sd[iv].1 = Tensor::from_f64(&var, like.shape(), like.dtype())?;
        if *identity {
            let iw = find(&sd, &format!("{p}.weight"))?;
            let ib = find(&sd, &format!("{p}.bias"))?;
            let g: Vec<f64> = var.iter().map(|v| (v + BN_EPS).sqrt()).collect();
            sd[iw].1 = Tensor::from_f64(&g, like.shape(), like.dtype())?;
            sd[ib].1 = Tensor::from_f64(&mean, like.shape(), like.dtype())?;
        }
        report.bns.push(bn);
    }
    *model = model_from_state_dict(&model.spec, &sd, dtype, 0)?;
    Ok(report)
}

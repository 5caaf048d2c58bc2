//! "Does this batch fit?" — answered before a run allocates it, so that a batch too large
//! for the device is a clear error naming the sizes instead of an abort or an OOM kill.
//!
//! The peak of a training step grows linearly with the batch: parameters, gradients and
//! optimizer state are fixed, activations and what is saved for backward scale with N. Two
//! small profiled steps (batch b/2 and b with b = min(batch, 32); on the GPU itself for
//! `cuda`, else on the CPU engine) give the fixed part and the bytes per sample; the
//! prediction for the asked batch is compared with what the device has available.

use serde::Serialize;

use super::{profile_training, ProfileOptions};
use crate::nn::spec::ModelSpec;
use crate::{Device, Error, Result};

/// A predicted peak beside the device's available memory.
#[derive(Clone, Debug, Serialize)]
pub struct FitEstimate {
    /// The batch size the estimate is for (samples per step).
    pub batch: usize,
    /// Bytes at the peak that do not depend on the batch.
    pub fixed: u64,
    /// Peak bytes added per sample.
    pub per_sample: u64,
    /// fixed + per_sample · batch.
    pub predicted_peak: u64,
    /// Bytes the device can still give, and where that figure comes from.
    pub available: u64,
    /// Where `available` comes from (e.g. /proc/meminfo), or `not reported` (then
    /// `available` is `u64::MAX`).
    pub available_source: String,
    /// The largest batch whose predicted peak fits `available`.
    pub max_batch: u64,
}

/// Memory the device can still give: `MemAvailable` of /proc/meminfo for the CPU;
/// free device memory plus the caching pool's idle blocks for a GPU-path device. `None`
/// when the platform does not say.
pub fn available_bytes(device: Device) -> Option<(u64, String)> {
    device.available_memory()
}

/// The (fixed, per-sample) bytes of the peak of one training step of `spec` (its
/// back-propagation modes as given), from profiled steps on the CPU engine at batch b and
/// b/2 with b = min(batch, 32): small enough to be quick, large enough that per-thread
/// workspaces (which stop growing once every thread has images) do not inflate the slope.
pub fn estimate(spec: &ModelSpec, opts: &ProfileOptions) -> Result<(u64, u64)> {
    // on a GPU the small steps run there (fast, and exact for the GPU path's workspaces);
    // the emulator is too slow for that, so its estimate comes from the CPU engine, whose
    // saved, parameter, gradient and optimizer bytes are the same but whose workspaces
    // differ (the emulated peak measured ~10% higher on qcnn)
    let device = match opts.device {
        Device::Cuda(_) => opts.device,
        _ => Device::Cpu,
    };
    let small = |batch| {
        let o = ProfileOptions {
            batch,
            steps: 0,
            warmup: 1,
            device,
            ..opts.clone()
        };
        profile_training(spec, "fit", &o).map(|p| p.peak_total)
    };
    let b2 = opts.batch.clamp(1, 32);
    let b1 = b2 / 2;
    let p2 = small(b2)?;
    if b1 == 0 {
        return Ok((p2, 0));
    }
    let per_sample = p2.saturating_sub(small(b1)?) / (b2 - b1) as u64;
    Ok((p2.saturating_sub(per_sample * b2 as u64), per_sample))
}

/// Error (`Error::OutOfMemory`) when the predicted peak of a training step at `opts.batch`
/// exceeds what `opts.device` has available; otherwise the estimate. When the device does
/// not report its memory the estimate is returned without a verdict.
pub fn check_fits(spec: &ModelSpec, opts: &ProfileOptions) -> Result<FitEstimate> {
    let (fixed, per_sample) = estimate(spec, opts)?;
    let predicted_peak = fixed.saturating_add(per_sample.saturating_mul(opts.batch as u64));
    let (available, available_source) =
        available_bytes(opts.device).unwrap_or((u64::MAX, "not reported".into()));
    let max_batch = available
        .saturating_sub(fixed)
        .checked_div(per_sample)
        .unwrap_or(u64::MAX);
    let est = FitEstimate {
        batch: opts.batch,
        fixed,
        per_sample,
        predicted_peak,
        available,
        available_source,
        max_batch,
    };
    if predicted_peak > available {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        return Err(Error::OutOfMemory {
            device: opts.device.to_string(),
            msg: format!(
                "batch {} of `{}` needs about {:.1} MiB at its peak ({:.1} MiB fixed + {:.3} MiB \
                 per sample, measured at batch {} and {}), but only {:.1} MiB are available ({}); \
                 the largest batch that fits is about {}{}",
                opts.batch,
                spec.name,
                mib(predicted_peak),
                mib(fixed),
                mib(per_sample),
                opts.batch.clamp(1, 32) / 2,
                opts.batch.clamp(1, 32),
                mib(available),
                est.available_source,
                max_batch,
                if spec.backprop == crate::nn::BackpropMode::Stored {
                    " (`--backprop recompute` keeps less for backward)"
                } else {
                    ""
                }
            ),
        });
    }
    Ok(est)
}

/// [`check_fits`] without its cost when the answer is clear: a rough upper bound from the
/// spec first (gradients and two optimizer-state slots per parameter, four f32 copies of
/// every activation per sample), and only when that bound exceeds what the device has, the
/// measured check (two small profiled steps). So a step that fits pays nothing, and one
/// that may not is measured before it is refused.
pub fn ensure_fits(spec: &ModelSpec, opts: &ProfileOptions) -> Result<()> {
    let size = spec.size()?;
    let rough = size.elements.saturating_mul(3 * 4).saturating_add(
        size.activations
            .saturating_mul(4 * 4)
            .saturating_mul(opts.batch as u64),
    );
    if available_bytes(opts.device).is_none_or(|(available, _)| rough <= available) {
        return Ok(());
    }
    check_fits(spec, opts).map(|_| ())
}

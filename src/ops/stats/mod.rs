//! Tensor statistics for the analysis tools: count, mean, std, range, the share of
//! extreme values and a histogram over [min, max] of a tensor's finite values.
//!
//! This file is the family's tensor-level API and its one `match` on the device: `cpu.rs`
//! holds the CPU engine's two passes, `cuda.rs` the launch wrappers of `cuda/stats.cu` (run
//! on `Device::Cuda(n)` and `Device::Emu`).

pub mod cpu;
pub mod cuda;

pub use cpu::slice_stats;

use serde::Serialize;

use crate::tensor::Tensor;
use crate::{with_dtype, Device, Result};

/// Values farther than this many standard deviations from the mean count as extreme.
pub const EXTREME_SIGMAS: f64 = 3.0;

/// Counts of values in `bins` equal-width bins over [lo, hi] (the last bin includes hi).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Histogram {
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<u64>,
}

impl Histogram {
    /// The width of one bin.
    pub fn bin_width(&self) -> f64 {
        if self.counts.is_empty() {
            0.0
        } else {
            (self.hi - self.lo) / self.counts.len() as f64
        }
    }
}

/// Statistics of one tensor's finite values.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorStats {
    /// Finite values counted.
    pub count: usize,
    /// NaN and infinite values (left out of everything else).
    pub non_finite: usize,
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// Share of values with |v − mean| > `EXTREME_SIGMAS`·std.
    pub extreme_share: f64,
    pub histogram: Histogram,
}

/// Statistics of a tensor, computed on the device that holds it.
pub fn tensor_stats(t: &Tensor, bins: usize) -> Result<TensorStats> {
    match t.device() {
        Device::Cpu => with_dtype!(t.dtype(), T => Ok(cpu::slice_stats(t.as_slice::<T>()?, bins))),
        // the CUDA backend: reductions and a histogram kernel (cuda/stats.cu); only the
        // per-block partial sums come back to the host
        Device::Cuda(_) | Device::Emu => {
            let bins = bins.max(1);
            let r = cuda::tensor_stats(t, bins, EXTREME_SIGMAS)?;
            let n = r.count as usize;
            let (mean, std) = if n == 0 {
                (0.0, 0.0)
            } else {
                (r.sum / n as f64, (r.centered_ss / n as f64).sqrt())
            };
            Ok(TensorStats {
                count: n,
                non_finite: r.non_finite as usize,
                mean,
                std,
                min: r.min,
                max: r.max,
                extreme_share: if n == 0 {
                    0.0
                } else {
                    r.extreme as f64 / n as f64
                },
                histogram: Histogram {
                    lo: r.min,
                    hi: r.max,
                    counts: r.counts,
                },
            })
        }
    }
}

//! Tensor statistics on the CPU engine: moments and range, then histogram and extremes.

use super::{Histogram, TensorStats, EXTREME_SIGMAS};
use crate::tensor::Float;

/// The CPU statistics of `v` (two passes: moments and range, then histogram and extremes).
pub fn slice_stats<T: Float>(v: &[T], bins: usize) -> TensorStats {
    let bins = bins.max(1);
    let (mut n, mut bad) = (0usize, 0usize);
    let (mut sum, mut min, mut max) = (0.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &x in v {
        let x = x.f64();
        if !x.is_finite() {
            bad += 1;
            continue;
        }
        n += 1;
        sum += x;
        min = min.min(x);
        max = max.max(x);
    }
    if n == 0 {
        return TensorStats {
            count: 0,
            non_finite: bad,
            mean: 0.0,
            std: 0.0,
            min: 0.0,
            max: 0.0,
            extreme_share: 0.0,
            histogram: Histogram {
                lo: 0.0,
                hi: 0.0,
                counts: vec![0; bins],
            },
        };
    }
    let mean = sum / n as f64;
    let mut ss = 0.0;
    for &x in v {
        let x = x.f64();
        if x.is_finite() {
            ss += (x - mean) * (x - mean);
        }
    }
    let std = (ss / n as f64).sqrt();
    let mut counts = vec![0u64; bins];
    let mut extreme = 0usize;
    let width = max - min;
    for &x in v {
        let x = x.f64();
        if !x.is_finite() {
            continue;
        }
        let b = if width > 0.0 {
            (((x - min) / width * bins as f64) as usize).min(bins - 1)
        } else {
            0
        };
        counts[b] += 1;
        if (x - mean).abs() > EXTREME_SIGMAS * std {
            extreme += 1;
        }
    }
    TensorStats {
        count: n,
        non_finite: bad,
        mean,
        std,
        min,
        max,
        extreme_share: extreme as f64 / n as f64,
        histogram: Histogram {
            lo: min,
            hi: max,
            counts,
        },
    }
}

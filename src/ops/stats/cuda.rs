//! Tensor statistics on the device (cuda/stats.cu): what the analysis tools show —
//! counts, mean, std, range, histogram, extreme values — computed where the tensor lives;
//! only per-block partials (a few KiB) come back to the host.

use crate::device::alloc::Category;
use crate::device::KArg;
use crate::ops::launch::{gpu_f32, int, kernel, launch, LaunchConfig};
use crate::tensor::{DType, Tensor};
use crate::Result;

const BLOCK: u32 = 256;
const MAX_GRID: usize = 128;

/// The raw sums of one tensor's finite values.
#[derive(Clone, Debug, PartialEq)]
pub struct RawStats {
    pub count: u64,
    pub non_finite: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// Σ (x − mean)², mean = sum / count.
    pub centered_ss: f64,
    /// Histogram over [min, max] with the requested bins.
    pub counts: Vec<u64>,
    /// Values with |x − mean| > `sigmas`·std.
    pub extreme: u64,
}

fn partials(device: crate::Device, grid: usize, width: usize) -> Result<Tensor> {
    Tensor::uninit_gpu(&[grid, width], DType::F64, device, Category::Workspace)
}

/// Statistics of `t` (f32, on a CUDA-backend device) with `bins` histogram bins (1..=65536)
/// and extremes beyond `sigmas` standard deviations.
pub fn tensor_stats(t: &Tensor, bins: usize, sigmas: f64) -> Result<RawStats> {
    let op = "tensor_stats";
    let rt = gpu_f32(op, "tensor", t)?;
    crate::ensure_valid!(
        (1..=65_536).contains(&bins),
        "bins",
        "{bins}: expected 1 to 65536 histogram bins"
    );
    let n = t.numel();
    let dev = t.device();
    let grid = n.div_ceil(BLOCK as usize).clamp(1, MAX_GRID);
    let cfg = LaunchConfig::new(grid as u32, BLOCK, 0);

    let mut range = partials(dev, grid, 5)?;
    let args = [
        KArg::Ptr(t.dev_ptr()?),
        KArg::I64(n as i64),
        KArg::Ptr(range.dev_ptr_mut()?),
    ];
    // SAFETY: (const float* x, long long n, double* partial); x holds n f32 (t is f32 with
    // n elements), partial was allocated (grid, 5) f64 and the kernel writes slot
    // blockIdx.x < grid; BLOCK is a multiple of 32 ≤ 1024 as block_sum requires.
    unsafe { launch(rt, &kernel::STATS_RANGE_F32, cfg, &args)? };
    let r = range.to_vec::<f64>()?;
    let (mut count, mut bad, mut sum) = (0.0, 0.0, 0.0);
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for p in r.chunks_exact(5) {
        count += p[0];
        bad += p[1];
        sum += p[2];
        min = min.min(p[3]);
        max = max.max(p[4]);
    }
    let mut out = RawStats {
        count: count as u64,
        non_finite: bad as u64,
        sum,
        min,
        max,
        centered_ss: 0.0,
        counts: vec![0; bins],
        extreme: 0,
    };
    if out.count == 0 {
        out.min = 0.0;
        out.max = 0.0;
        return Ok(out);
    }
    let mean = sum / count;

    let mut centered = partials(dev, grid, 1)?;
    let args = [
        KArg::Ptr(t.dev_ptr()?),
        KArg::I64(n as i64),
        KArg::F64(mean),
        KArg::Ptr(centered.dev_ptr_mut()?),
    ];
    // SAFETY: (const float* x, long long n, double mean, double* partial); as above with a
    // (grid, 1) partial array.
    unsafe { launch(rt, &kernel::STATS_CENTERED_F32, cfg, &args)? };
    out.centered_ss = centered.to_vec::<f64>()?.iter().sum();
    let std = (out.centered_ss / count).sqrt();

    let width = bins + 1;
    let mut hist = partials(dev, grid, width)?;
    let shared = u32::try_from(bins * 4).unwrap_or(u32::MAX);
    let args = [
        KArg::Ptr(t.dev_ptr()?),
        KArg::I64(n as i64),
        KArg::F64(min),
        KArg::F64(max),
        KArg::I32(int(op, "bins", bins)?),
        KArg::F64(mean),
        KArg::F64(sigmas * std),
        KArg::Ptr(hist.dev_ptr_mut()?),
    ];
    // SAFETY: (x, n, lo, hi, bins, mean, threshold, partial); x holds n f32, partial was
    // allocated (grid, bins + 1) f64 and block g writes only its row; the dynamic shared
    // memory holds the kernel's `bins` ints (bins ≤ 65536 ⇒ 256 KiB at most, refused by the
    // launch with an error where a device has less).
    unsafe {
        launch(
            rt,
            &kernel::STATS_HISTOGRAM_F32,
            LaunchConfig::new(grid as u32, BLOCK, shared),
            &args,
        )?
    };
    for row in hist.to_vec::<f64>()?.chunks_exact(width) {
        for (c, &v) in out.counts.iter_mut().zip(row) {
            *c += v as u64;
        }
        out.extreme += row[bins] as u64;
    }
    Ok(out)
}

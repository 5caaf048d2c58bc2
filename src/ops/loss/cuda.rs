//! Softmax cross-entropy with label smoothing on the CUDA backend (cuda/loss.cu): the mean
//! loss, the number of correctly classified rows and dL/dlogits in one launch, one block
//! per row.
//!
//! The class targets are uploaded for the launch as a device array of `int` (a `GpuBuf`
//! charged to `Category::Data`, freed when the call returns); no tensor dtype is needed for
//! them. The per-row losses (N doubles) and correct flags (N ints) share one buffer, which
//! stays on the device until the caller reads it (`LossMetrics`): ONE copy per step — the
//! step's only host wait — or one for many steps (`LossMetrics::read_all`). The losses are
//! added on the host in row order, as the CPU engine (src/ops/loss/cpu.rs) adds them.

use crate::device::alloc::Category;
use crate::device::{GpuBuf, KArg};
use crate::ops::launch::{gpu_f32, int, kernel, launch, output, LaunchConfig, REDUCE_BLOCK};
use crate::tensor::Tensor;
use crate::Result;

use super::{LossMetrics, XentDeferred};

/// Threads per row: the class count rounded up to a warp, at most `REDUCE_BLOCK`.
fn row_block(k: usize) -> u32 {
    (k.div_ceil(32) * 32).clamp(32, REDUCE_BLOCK as usize) as u32
}

/// logits (N, K) on a GPU-path device, `targets` N class indices < K, label smoothing
/// `eps` → the rows buffer the kernel writes (`LossMetrics::Device`, read later) and
/// dL/dlogits (N, K) on the logits' device (Workspace).
/// `eps` reaches the kernel as f32 (the loss then differs from the CPU engine's by about
/// 1e-9 relative for ε = 0.1; nothing for ε = 0).
pub fn softmax_cross_entropy(logits: &Tensor, targets: &[usize], eps: f64) -> Result<XentDeferred> {
    let kern = &kernel::SOFTMAX_XENT_F32;

    let op = kern.name;
    let rt = gpu_f32(op, "logits", logits)?;
    let dev = logits.device();
    // (N, K) non-empty, N targets each < K: the kernel's reads stay in bounds
    let (n, k) = super::check_targets(op, logits, targets)?;
    let (ni, ki) = (int(op, "N", n)?, int(op, "classes", k)?);
    let bytes: Vec<u8> = targets
        .iter()
        .flat_map(|&t| (t as i32).to_le_bytes())
        .collect();
    let tgt = GpuBuf::from_host(dev, &bytes, Category::Data)?;
    // [row_loss: N f64][row_correct: N i32], read back together
    let rows = GpuBuf::new(dev, n * 12, Category::Workspace)?;
    let mut grad = output(&[n, k], dev, Category::Workspace)?;
    let args = [
        KArg::Ptr(logits.dev_ptr()?),
        KArg::Ptr(tgt.ptr()),
        KArg::Ptr(grad.dev_ptr_mut()?),
        KArg::Ptr(rows.ptr()),
        KArg::Ptr(rows.ptr() + (n * 8) as u64),
        KArg::I32(ni),
        KArg::I32(ki),
        KArg::F32(eps as f32),
    ];
    let cfg = LaunchConfig::new(n.min(65_535) as u32, row_block(k), 0);
    // SAFETY: (const float* logits, const int* targets, float* grad, double* row_loss,
    // int* row_correct, int N, int K, float eps) as in loss.cu; logits and grad hold N·K f32
    // elements (dims checked, grad just allocated with that shape), targets N ints each in
    // [0, K) (checked above, so z[y] is in the row), row_loss the first N·8 bytes of `rows`
    // and row_correct the N·4 after them (8-aligned base, so both aligned); the block is a
    // multiple of 32, ≤ 1024, as the block reductions require; grad and the two buffers are
    // fresh, so nothing aliases.
    unsafe { launch(rt, kern, cfg, &args)? };
    Ok(XentDeferred {
        metrics: LossMetrics::Device { rows, n },
        grad,
    })
}

/// (mean loss, correct rows) from the bytes of a rows buffer of N rows:
/// [N f64 losses][N i32 flags], the losses added in row order as the CPU engine adds them.
pub fn decode_rows(bytes: &[u8], n: usize) -> (f64, usize) {
    let (losses, flags) = bytes.split_at(n * 8);
    let sum: f64 = losses
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")))
        .sum();
    let correct = flags
        .chunks_exact(4)
        .filter(|c| i32::from_le_bytes((*c).try_into().expect("4-byte chunk")) != 0)
        .count();
    // × 1/N, as the CPU engine does (not ÷ N: the same rounding)
    (sum * (1.0 / n as f64), correct)
}

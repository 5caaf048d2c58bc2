//! Softmax cross-entropy with label smoothing (PyTorch's `F.cross_entropy`, reduction
//! "mean"), and top-1 accuracy. logits: (N, K) row-major; targets: N class indices, already
//! checked to be < K by the caller. Rows are independent: parallel over the batch.
//!
//! Per row i with p = softmax(z_i) and lse = log Σ_k exp z_k (computed as
//! max + log Σ exp(z − max), so no exp overflows):
//!   −log p_k = lse − z_k
//!   loss_i   = (1 − ε)(−log p_{y_i}) + ε · mean_k(−log p_k)
//!   dloss_i/dz_k = p_k − (1 − ε)·[k = y_i] − ε/K
//! and the mean over the batch divides both by N.

use rayon::prelude::*;

use crate::tensor::Float;

/// Returns the mean loss and writes dL/dlogits (N, K) into `grad`. Sums are taken in f64.
pub fn softmax_cross_entropy<T: Float>(
    logits: &[T],
    targets: &[usize],
    k: usize,
    eps: f64,
    grad: &mut [T],
) -> f64 {
    let n = targets.len();
    let inv_n = 1.0 / n as f64;
    let losses: Vec<f64> = grad
        .par_chunks_mut(k)
        .zip(logits.par_chunks(k))
        .zip(targets.par_iter())
        .map(|((gr, z), &y)| {
            let max = z.iter().map(|v| v.f64()).fold(f64::NEG_INFINITY, f64::max);
            let sum_exp: f64 = z.iter().map(|v| (v.f64() - max).exp()).sum();
            let lse = max + sum_exp.ln();
            let mean_z = z.iter().map(|v| v.f64()).sum::<f64>() / k as f64;
            let loss = (1.0 - eps) * (lse - z[y].f64()) + eps * (lse - mean_z);
            for (j, (gv, zv)) in gr.iter_mut().zip(z).enumerate() {
                let p = (zv.f64() - lse).exp();
                let t = if j == y { 1.0 - eps } else { 0.0 } + eps / k as f64;
                *gv = T::of((p - t) * inv_n);
            }
            loss
        })
        .collect();
    // summed in row order, so the result does not depend on the thread count
    losses.iter().sum::<f64>() * inv_n
}

/// How many rows of logits (N, K) have their (first) largest entry at the target class.
pub fn accuracy_count<T: Float>(logits: &[T], targets: &[usize], k: usize) -> usize {
    logits
        .par_chunks(k)
        .zip(targets.par_iter())
        .filter(|(z, &y)| {
            let mut best = 0;
            for (j, v) in z.iter().enumerate() {
                if *v > z[best] {
                    best = j;
                }
            }
            best == y
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_logits_give_log_k() {
        let z = [0.5f64; 8];
        let mut g = [0.0; 8];
        let l = softmax_cross_entropy(&z, &[1, 3], 4, 0.0, &mut g);
        assert!((l - 4f64.ln()).abs() < 1e-15);
        // p = 1/4 everywhere; target entries get 1/4 − 1, others 1/4, all over N = 2
        assert!((g[1] - (-0.375)).abs() < 1e-15 && (g[0] - 0.125).abs() < 1e-15);
    }

    #[test]
    fn huge_logits_are_stable() {
        let z = [1000.0f32, 0.0, -1000.0];
        let mut g = [0.0f32; 3];
        let l = softmax_cross_entropy(&z, &[2], 3, 0.0, &mut g);
        assert!((l - 2000.0).abs() < 1e-9, "{l}");
        assert!(g.iter().all(|v| v.is_finite()));
        assert_eq!(accuracy_count(&z, &[0], 3), 1);
        assert_eq!(accuracy_count(&z, &[2], 3), 0);
    }
}

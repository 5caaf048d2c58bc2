//! Fully connected layer math: y = x Wᵀ + b in PyTorch's layout.
//!
//! x: (N, in), W: (out, in), b: (out), y: (N, out). The whole batch is one GEMM (the `gemm`
//! crate splits it over the rayon pool), so there is no per-sample loop to parallelise.

use rayon::prelude::*;

use crate::ops::gemm::{matmul, MatRef};
use crate::tensor::Float;

/// y (N, out) = x (N, in) · Wᵀ (in, out) [+ b (out), broadcast over rows]; overwrites `y`.
#[allow(clippy::too_many_arguments)]
pub fn linear_forward<T: Float>(
    x: &[T],
    n: usize,
    fin: usize,
    fout: usize,
    w: &[T],
    bias: Option<&[T]>,
    y: &mut [T],
    threads: usize,
) {
    // W is stored (out, in) row-major, i.e. `in` columns; read transposed it is (in, out).
    matmul(
        n,
        fout,
        fin,
        y,
        fout,
        false,
        MatRef::new(x, fin),
        MatRef::trans(w, fin),
        threads,
    );
    if let Some(b) = bias {
        y.par_chunks_mut(fout.max(1)).for_each(|row| {
            for (v, &bv) in row.iter_mut().zip(b) {
                *v += bv;
            }
        });
    }
}

/// Gradients of `linear_forward` given g = dL/dy (N, out):
/// dW (out, in) = gᵀ (out, N) · x (N, in), db (out) = Σ_n g[n, :], and, when `dx` is given,
/// dx (N, in) = g (N, out) · W (out, in). Returns (dW, db).
#[allow(clippy::too_many_arguments)]
pub fn linear_backward<T: Float>(
    x: &[T],
    n: usize,
    fin: usize,
    fout: usize,
    w: &[T],
    g: &[T],
    dx: Option<&mut [T]>,
    threads: usize,
) -> (Vec<T>, Vec<T>) {
    let mut dw = vec![T::zero(); fout * fin];
    matmul(
        fout,
        fin,
        n,
        &mut dw,
        fin,
        false,
        MatRef::trans(g, fout),
        MatRef::new(x, fin),
        threads,
    );
    // db: column sums of g, parallel over output features (each reads a strided column).
    let db: Vec<T> = (0..fout)
        .into_par_iter()
        .map(|o| (0..n).map(|i| g[i * fout + o]).sum::<T>())
        .collect();
    if let Some(dx) = dx {
        matmul(
            n,
            fin,
            fout,
            dx,
            fin,
            false,
            MatRef::new(g, fout),
            MatRef::new(w, fin),
            threads,
        );
    }
    (dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_matches_hand_computation() {
        // x = [[1, 2], [3, 4], [5, 6]] (3, 2); W = [[1, 0], [0, 1], [1, 1]] (3, 2); b = [0.5, -1, 2]
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let w = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let b = [0.5, -1.0, 2.0];
        let mut y = [0.0f64; 9];
        linear_forward(&x, 3, 2, 3, &w, Some(&b), &mut y, 1);
        assert_eq!(y, [1.5, 1.0, 5.0, 3.5, 3.0, 9.0, 5.5, 5.0, 13.0]);
        let g = [1.0; 9];
        let mut dx = [0.0f64; 6];
        let (dw, db) = linear_backward(&x, 3, 2, 3, &w, &g, Some(&mut dx), 1);
        // dW[o, i] = Σ_n x[n, i]; db[o] = N; dx[n, i] = Σ_o W[o, i]
        assert_eq!(dw, vec![9.0, 12.0, 9.0, 12.0, 9.0, 12.0]);
        assert_eq!(db, vec![3.0, 3.0, 3.0]);
        assert_eq!(dx, [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]);
    }
}

//! Batch normalisation over (N, C, L) planes (L = H·W for BatchNorm2d, 1 for BatchNorm1d
//! on (N, C)). Statistics per channel c over the N·L values x[n, c, :].
//! PyTorch's conventions: the batch is normalised with the biased variance, the running
//! variance is updated with the unbiased one, `running = (1 − momentum)·running + momentum·batch`.

use rayon::prelude::*;

use crate::tensor::Float;

/// Σ f(v) over a row with 8 independent f64 accumulators (so the loop vectorizes).
#[inline(always)]
fn lane_sum_f64<T: Float>(r: &[T], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut it = r.chunks_exact(8);
    for c in &mut it {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v.f64());
        }
    }
    let mut s: f64 = it.remainder().iter().map(|&v| f(v.f64())).sum();
    for a in acc {
        s += a;
    }
    s
}

/// Per-channel batch mean and biased variance of x (N, C, L). Accumulates in f64.
pub fn batch_stats<T: Float>(x: &[T], n: usize, c: usize, l: usize) -> (Vec<T>, Vec<T>) {
    let cnt = (n * l) as f64;
    let stats: Vec<(T, T)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let rows = || (0..n).map(|i| &x[(i * c + ch) * l..(i * c + ch + 1) * l]);
            let mean = rows().map(|r| lane_sum_f64(r, |v| v)).sum::<f64>() / cnt;
            let q: f64 = rows()
                .map(|r| lane_sum_f64(r, |v| (v - mean) * (v - mean)))
                .sum();
            (T::of(mean), T::of(q / cnt))
        })
        .collect();
    stats.into_iter().unzip()
}

/// rstd = 1/√(var + eps), per channel.
pub fn rstd<T: Float>(var: &[T], eps: f64) -> Vec<T> {
    var.iter()
        .map(|v| T::of(1.0 / (v.f64() + eps).sqrt()))
        .collect()
}

/// running ← (1 − momentum)·running + momentum·batch, with the unbiased variance (N·L > 1).
pub fn update_running<T: Float>(
    rm: &mut [T],
    rv: &mut [T],
    mean: &[T],
    var: &[T],
    count: usize,
    momentum: f64,
) {
    let unbias = if count > 1 {
        count as f64 / (count as f64 - 1.0)
    } else {
        1.0
    };
    for i in 0..rm.len() {
        rm[i] = T::of((1.0 - momentum) * rm[i].f64() + momentum * mean[i].f64());
        rv[i] = T::of((1.0 - momentum) * rv[i].f64() + momentum * var[i].f64() * unbias);
    }
}

/// out = γ·(x − mean)·rstd + β per channel; x, out: (N, C, L).
#[allow(clippy::too_many_arguments)]
pub fn normalize<T: Float>(
    x: &[T],
    (n, c, l): (usize, usize, usize),
    mean: &[T],
    rstd: &[T],
    gamma: &[T],
    beta: &[T],
    out: &mut [T],
) {
    let _ = n;
    out.par_chunks_mut(c * l)
        .zip(x.par_chunks(c * l))
        .for_each(|(o, xi)| {
            for ch in 0..c {
                let a = gamma[ch] * rstd[ch];
                let b = beta[ch] - mean[ch] * a;
                for (ov, &xv) in o[ch * l..(ch + 1) * l]
                    .iter_mut()
                    .zip(&xi[ch * l..(ch + 1) * l])
                {
                    *ov = xv * a + b;
                }
            }
        });
}

/// Per-channel Σ g and Σ g·x̂ with x̂ = (x − mean)·rstd; x, g: (N, C, L).
pub fn grad_sums<T: Float>(
    x: &[T],
    g: &[T],
    (n, c, l): (usize, usize, usize),
    mean: &[T],
    rstd: &[T],
) -> (Vec<T>, Vec<T>) {
    let sums: Vec<(T, T)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            // 8 lane accumulators per sum, so the loop vectorizes
            let (mut sg, mut sgx) = ([T::zero(); 8], [T::zero(); 8]);
            let (mu, rs) = (mean[ch], rstd[ch]);
            let (mut tg, mut tgx) = (T::zero(), T::zero());
            for i in 0..n {
                let r = (i * c + ch) * l..(i * c + ch + 1) * l;
                let (gr, xr) = (&g[r.clone()], &x[r]);
                let mut gi = gr.chunks_exact(8);
                let mut xi = xr.chunks_exact(8);
                for (gc, xc) in (&mut gi).zip(&mut xi) {
                    for e in 0..8 {
                        sg[e] += gc[e];
                        sgx[e] += gc[e] * (xc[e] - mu) * rs;
                    }
                }
                for (&gv, &xv) in gi.remainder().iter().zip(xi.remainder()) {
                    tg += gv;
                    tgx += gv * (xv - mu) * rs;
                }
            }
            for e in 0..8 {
                tg += sg[e];
                tgx += sgx[e];
            }
            (tg, tgx)
        })
        .collect();
    sums.into_iter().unzip()
}

/// Training-mode input gradient: dx = γ·rstd·(g − Σg/M − x̂·Σgx̂/M), M = N·L, from the
/// sums of `grad_sums`; dγ = Σ g·x̂ and dβ = Σ g are those sums themselves.
#[allow(clippy::too_many_arguments)]
pub fn backward_input<T: Float>(
    x: &[T],
    g: &[T],
    (n, c, l): (usize, usize, usize),
    mean: &[T],
    rstd: &[T],
    gamma: &[T],
    sum_g: &[T],
    sum_gx: &[T],
    dx: &mut [T],
) {
    let m = T::of((n * l) as f64);
    dx.par_chunks_mut(c * l).enumerate().for_each(|(i, d)| {
        for ch in 0..c {
            let k = gamma[ch] * rstd[ch];
            let mg = sum_g[ch] / m;
            let mgx = sum_gx[ch] / m;
            let base = (i * c + ch) * l;
            for j in 0..l {
                let xh = (x[base + j] - mean[ch]) * rstd[ch];
                d[ch * l + j] = k * (g[base + j] - mg - xh * mgx);
            }
        }
    });
}

/// Eval-mode input gradient (statistics are constants): dx = γ·rstd·g.
pub fn backward_input_eval<T: Float>(
    g: &[T],
    (c, l): (usize, usize),
    rstd: &[T],
    gamma: &[T],
    dx: &mut [T],
) {
    dx.par_chunks_mut(c * l)
        .zip(g.par_chunks(c * l))
        .for_each(|(d, gi)| {
            for ch in 0..c {
                let k = gamma[ch] * rstd[ch];
                for (dv, &gv) in d[ch * l..(ch + 1) * l]
                    .iter_mut()
                    .zip(&gi[ch * l..(ch + 1) * l])
                {
                    *dv = k * gv;
                }
            }
        });
}

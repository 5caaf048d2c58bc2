//! 2-d convolution on the CPU by im2col + GEMM, with stride, padding, dilation and groups.
//!
//! A weight may stack `nb` branches: shape (nb·C_out, C_in/G, kh, kw), branch b's output
//! channels are rows [b·C_out, (b+1)·C_out). Groups apply within each branch, exactly as if
//! every branch were its own PyTorch `Conv2d(C_in, C_out, groups=G)`. This is how a
//! quadratic layer reads `x` once for all its first-order branches.
//!
//! Per image: cols (C_in·kh·kw, L) with L = H_out·W_out, group g's rows are the contiguous
//! block [g·Kg, (g+1)·Kg), Kg = C_in/G·kh·kw; out (nb·C_out, L) = W · cols.

use super::ConvGeom;
use crate::ops::gemm::{matmul, MatRef};
use crate::tensor::Float;

/// cols (C_in·kh·kw, Ho·Wo) from one image x (C_in, H, W); zero where the window is in the padding.
pub fn im2col<T: Float>(
    g: &ConvGeom,
    x: &[T],
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    cols: &mut [T],
) {
    let l = ho * wo;
    let (sh, sw) = g.stride;
    let (ph, pw) = g.padding;
    let (dh, dw) = g.dilation;
    for c in 0..g.c_in {
        let xc = &x[c * h * w..(c + 1) * h * w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = (c * g.kh + ky) * g.kw + kx;
                let dst = &mut cols[row * l..(row + 1) * l];
                for oy in 0..ho {
                    let iy = (oy * sh + ky * dh) as isize - ph as isize;
                    let drow = &mut dst[oy * wo..(oy + 1) * wo];
                    if iy < 0 || iy >= h as isize {
                        drow.fill(T::zero());
                        continue;
                    }
                    let xrow = &xc[iy as usize * w..(iy as usize + 1) * w];
                    let off = (kx * dw) as isize - pw as isize;
                    if sw == 1 {
                        // contiguous run: the in-bounds ox are [lo, hi)
                        let lo = (-off).max(0) as usize;
                        let hi = ((w as isize - off).max(0) as usize).min(wo);
                        if lo >= hi {
                            drow.fill(T::zero());
                            continue;
                        }
                        drow[..lo].fill(T::zero());
                        drow[hi..].fill(T::zero());
                        let s = (lo as isize + off) as usize;
                        drow[lo..hi].copy_from_slice(&xrow[s..s + (hi - lo)]);
                    } else {
                        for (ox, d) in drow.iter_mut().enumerate() {
                            let ix = (ox * sw) as isize + off;
                            *d = if ix >= 0 && ix < w as isize {
                                xrow[ix as usize]
                            } else {
                                T::zero()
                            };
                        }
                    }
                }
            }
        }
    }
}

/// dx (C_in, H, W) += col2im(dcols): the adjoint of `im2col`.
pub fn col2im<T: Float>(
    g: &ConvGeom,
    dcols: &[T],
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    dx: &mut [T],
) {
    let l = ho * wo;
    let (sh, sw) = g.stride;
    let (ph, pw) = g.padding;
    let (dh, dw) = g.dilation;
    for c in 0..g.c_in {
        let xc = &mut dx[c * h * w..(c + 1) * h * w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = (c * g.kh + ky) * g.kw + kx;
                let src = &dcols[row * l..(row + 1) * l];
                for oy in 0..ho {
                    let iy = (oy * sh + ky * dh) as isize - ph as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let xrow = &mut xc[iy as usize * w..(iy as usize + 1) * w];
                    let srow = &src[oy * wo..(oy + 1) * wo];
                    let off = (kx * dw) as isize - pw as isize;
                    if sw == 1 {
                        // contiguous run, as in `im2col`: the in-bounds ox are [lo, hi)
                        let lo = (-off).max(0) as usize;
                        let hi = ((w as isize - off).max(0) as usize).min(wo);
                        if lo < hi {
                            let s = (lo as isize + off) as usize;
                            for (d, &v) in xrow[s..s + (hi - lo)].iter_mut().zip(&srow[lo..hi]) {
                                *d += v;
                            }
                        }
                        continue;
                    }
                    for (ox, &v) in srow.iter().enumerate() {
                        let ix = (ox * sw) as isize + off;
                        if ix >= 0 && ix < w as isize {
                            xrow[ix as usize] += v;
                        }
                    }
                }
            }
        }
    }
}

/// The (row offset, row count) blocks of a stacked weight that one GEMM can cover for
/// group `gi`: the whole stack when G = 1, else one block per branch.
fn row_blocks(g: &ConvGeom, nb: usize, gi: usize) -> impl Iterator<Item = (usize, usize)> {
    let cog = g.c_out / g.groups;
    let merged = g.groups == 1;
    let n_blocks = if merged { 1 } else { nb };
    let c_out = g.c_out;
    (0..n_blocks).map(move |b| {
        if merged {
            (0, nb * c_out)
        } else {
            (b * c_out + gi * cog, cog)
        }
    })
}

/// out (nb·C_out, L) = W (nb·C_out, Kg) · cols, per group; overwrites `out`.
pub fn forward_cols<T: Float>(
    g: &ConvGeom,
    nb: usize,
    wt: &[T],
    cols: &[T],
    l: usize,
    out: &mut [T],
) {
    let kg = g.k_group();
    for gi in 0..g.groups {
        let cols_g = &cols[gi * kg * l..(gi + 1) * kg * l];
        for (r0, m) in row_blocks(g, nb, gi) {
            matmul(
                m,
                l,
                kg,
                &mut out[r0 * l..(r0 + m) * l],
                l,
                false,
                MatRef::new(&wt[r0 * kg..], kg),
                MatRef::new(cols_g, l),
                1,
            );
        }
    }
}

/// dW (nb·C_out, Kg) += dout (nb·C_out, L) · colsᵀ, per group.
pub fn backward_weight_cols<T: Float>(
    g: &ConvGeom,
    nb: usize,
    dout: &[T],
    cols: &[T],
    l: usize,
    dw: &mut [T],
) {
    let kg = g.k_group();
    for gi in 0..g.groups {
        let cols_g = &cols[gi * kg * l..(gi + 1) * kg * l];
        for (r0, m) in row_blocks(g, nb, gi) {
            matmul(
                m,
                kg,
                l,
                &mut dw[r0 * kg..(r0 + m) * kg],
                kg,
                true,
                MatRef::new(&dout[r0 * l..], l),
                MatRef::trans(cols_g, l),
                1,
            );
        }
    }
}

/// dcols (C_in·kh·kw, L) = Wᵀ · dout summed over branches, per group; overwrites `dcols`
/// unless `accumulate`.
pub fn backward_data_cols<T: Float>(
    g: &ConvGeom,
    nb: usize,
    wt: &[T],
    dout: &[T],
    l: usize,
    dcols: &mut [T],
    accumulate: bool,
) {
    let kg = g.k_group();
    for gi in 0..g.groups {
        let dcols_g = &mut dcols[gi * kg * l..(gi + 1) * kg * l];
        for (bi, (r0, m)) in row_blocks(g, nb, gi).enumerate() {
            let acc = accumulate || bi > 0;
            matmul(
                kg,
                l,
                m,
                dcols_g,
                l,
                acc,
                MatRef::trans(&wt[r0 * kg..(r0 + m) * kg], kg),
                MatRef::new(&dout[r0 * l..], l),
                1,
            );
        }
    }
}

/// Add `bias[o]` to every position of output channel o: out (M, L), bias (M).
pub fn add_bias<T: Float>(out: &mut [T], bias: &[T], l: usize) {
    for (o, &b) in bias.iter().enumerate() {
        for v in &mut out[o * l..(o + 1) * l] {
            *v += b;
        }
    }
}

/// `db[o] += Σ_l dout[o, l]` for dout (M, L).
pub fn backward_bias<T: Float>(dout: &[T], l: usize, db: &mut [T]) {
    for (o, d) in db.iter_mut().enumerate() {
        *d += crate::ops::lane_sum(&dout[o * l..(o + 1) * l]);
    }
}

/// Batched forward: out (N, nb·C_out, Ho, Wo) = conv(x) (+ bias (nb·C_out)).
/// x: (N, C_in, H, W); wt: (nb·C_out, C_in/G, kh, kw). Parallel over images.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward<T: Float>(
    g: &ConvGeom,
    nb: usize,
    x: &[T],
    (n, h, w): (usize, usize, usize),
    (ho, wo): (usize, usize),
    wt: &[T],
    bias: Option<&[T]>,
    out: &mut [T],
) {
    let l = ho * wo;
    let m = nb * g.c_out;
    let chunks = crate::ops::chunk_ranges(n).len();
    let mut cols: Vec<_> = (0..chunks)
        .map(|_| crate::ops::workspace::<T>(g.k_total() * l))
        .collect();
    crate::ops::par_item_chunks(out, m * l, n, &mut cols, |imgs, out, cols| {
        for (j, i) in imgs.enumerate() {
            let xi = &x[i * g.c_in * h * w..(i + 1) * g.c_in * h * w];
            let oi = &mut out[j * m * l..(j + 1) * m * l];
            im2col(g, xi, h, w, ho, wo, cols);
            forward_cols(g, nb, wt, cols, l, oi);
            if let Some(b) = bias {
                add_bias(oi, b, l);
            }
        }
    });
}

/// Batched backward. Returns (dW (nb·C_out·Kg), db (nb·C_out)) and writes dx (N, C_in, H, W)
/// when given. Per-thread partial weight gradients are summed in chunk order, so results
/// are deterministic for a given thread count.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward<T: Float>(
    g: &ConvGeom,
    nb: usize,
    x: &[T],
    (n, h, w): (usize, usize, usize),
    (ho, wo): (usize, usize),
    wt: &[T],
    dout: &[T],
    dx: Option<&mut [T]>,
) -> (Vec<T>, Vec<T>) {
    let l = ho * wo;
    let m = nb * g.c_out;
    let kg = g.k_group();
    let chunks = crate::ops::chunk_ranges(n).len();
    let mut scratch: Vec<_> = (0..chunks)
        .map(|_| {
            (
                crate::ops::workspace::<T>(g.k_total() * l),
                crate::ops::workspace::<T>(g.k_total() * l),
            )
        })
        .collect();
    let chw = g.c_in * h * w;
    let mut dummy = Vec::new();
    let (dx_buf, per_img, want_dx) = match dx {
        Some(d) => (d, chw, true),
        None => (&mut dummy[..], 0, false),
    };
    let parts = crate::ops::par_item_chunks(
        dx_buf,
        per_img,
        n,
        &mut scratch,
        |imgs, dxc, (cols, dcols)| {
            let mut dw = vec![T::zero(); m * kg];
            let mut db = vec![T::zero(); m];
            for (j, i) in imgs.enumerate() {
                let xi = &x[i * chw..(i + 1) * chw];
                let di = &dout[i * m * l..(i + 1) * m * l];
                im2col(g, xi, h, w, ho, wo, cols);
                backward_weight_cols(g, nb, di, cols, l, &mut dw);
                backward_bias(di, l, &mut db);
                if want_dx {
                    backward_data_cols(g, nb, wt, di, l, dcols, false);
                    let dxi = &mut dxc[j * chw..(j + 1) * chw];
                    dxi.fill(T::zero());
                    col2im(g, dcols, h, w, ho, wo, dxi);
                }
            }
            (dw, db)
        },
    );
    let (dws, dbs): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    (
        crate::ops::reduce_partials(dws),
        crate::ops::reduce_partials(dbs),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// col2im is the adjoint of im2col: <im2col(x), c> = <x, col2im(c)>, for strides,
    /// paddings and dilations that exercise both the contiguous and the general paths.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        let (h, w) = (7, 6);
        for (k, s, p, d) in [
            (3, 1, 1, 1),
            (3, 2, 1, 1),
            (1, 1, 0, 1),
            (3, 1, 2, 2),
            (2, 1, 0, 1),
        ] {
            let mut g = ConvGeom::square(2, 3, k, s, p);
            g.dilation = (d, d);
            let (ho, wo) = g.out_hw(h, w, "t").unwrap();
            let l = ho * wo;
            let x: Vec<f64> = (0..2 * h * w).map(|i| (i as f64 * 0.37).sin()).collect();
            let c: Vec<f64> = (0..g.k_total() * l)
                .map(|i| (i as f64 * 0.71).cos())
                .collect();
            let mut cols = vec![7.0; g.k_total() * l];
            im2col(&g, &x, h, w, ho, wo, &mut cols);
            let mut dx = vec![0.0; 2 * h * w];
            col2im(&g, &c, h, w, ho, wo, &mut dx);
            let lhs: f64 = cols.iter().zip(&c).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            assert!(
                (lhs - rhs).abs() < 1e-9,
                "k={k} s={s} p={p} d={d}: {lhs} vs {rhs}"
            );
        }
    }
}

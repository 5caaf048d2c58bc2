//! Depthwise convolution on the CPU, direct: groups = C_in = C_out (one filter per channel,
//! as in MobileNet's 3×3 blocks). im2col would copy every input value kh·kw times to run a
//! GEMM whose inner dimension is only kh·kw; here each output row is a sum of kh·kw scaled,
//! shifted input rows, which vectorizes along the row.
//!
//! Shapes: x (N, C, H, W), weight (C, 1, kh, kw), out (N, C, Ho, Wo).

use super::ConvGeom;
use crate::tensor::Float;

/// Whether the direct path applies: one branch, one input and one output channel per group.
pub fn applies(g: &ConvGeom, nb: usize) -> bool {
    nb == 1 && g.groups > 1 && g.groups == g.c_in && g.c_out == g.c_in
}

/// One kernel tap's valid output span on output row `oy`: `Some((iy, lo, hi, off))` when
/// input row iy is inside the image; output columns [lo, hi) read input column ox·sw + off.
fn span(
    g: &ConvGeom,
    (h, w): (usize, usize),
    wo: usize,
    (ky, kx): (usize, usize),
    oy: usize,
) -> Option<(usize, usize, usize, isize)> {
    let iy = (oy * g.stride.0 + ky * g.dilation.0) as isize - g.padding.0 as isize;
    if iy < 0 || iy >= h as isize {
        return None;
    }
    let sw = g.stride.1;
    let off = (kx * g.dilation.1) as isize - g.padding.1 as isize;
    // first ox with ox·sw + off ≥ 0, and one past the last with ox·sw + off < w
    let lo = if off >= 0 {
        0
    } else {
        ((-off) as usize).div_ceil(sw)
    };
    let hi = ((w as isize - off).max(0) as usize).div_ceil(sw).min(wo);
    Some((iy as usize, lo, hi.max(lo), off))
}

/// out (C, Ho, Wo) of one image x (C, H, W), overwritten (bias added when given).
#[allow(clippy::too_many_arguments)]
fn forward_image<T: Float>(
    g: &ConvGeom,
    x: &[T],
    (h, w): (usize, usize),
    (ho, wo): (usize, usize),
    wt: &[T],
    bias: Option<&[T]>,
    out: &mut [T],
) {
    let (l, taps, sw) = (ho * wo, g.kh * g.kw, g.stride.1);
    for c in 0..g.c_in {
        let xc = &x[c * h * w..(c + 1) * h * w];
        let oc = &mut out[c * l..(c + 1) * l];
        oc.fill(bias.map_or(T::zero(), |b| b[c]));
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let wv = wt[c * taps + ky * g.kw + kx];
                for oy in 0..ho {
                    let Some((iy, lo, hi, off)) = span(g, (h, w), wo, (ky, kx), oy) else {
                        continue;
                    };
                    let xrow = &xc[iy * w..(iy + 1) * w];
                    let orow = &mut oc[oy * wo + lo..oy * wo + hi];
                    let ix0 = (lo * sw) as isize + off;
                    if sw == 1 {
                        let xs = &xrow[ix0 as usize..ix0 as usize + (hi - lo)];
                        for (o, &v) in orow.iter_mut().zip(xs) {
                            *o += wv * v;
                        }
                    } else {
                        for (j, o) in orow.iter_mut().enumerate() {
                            *o += wv * xrow[ix0 as usize + j * sw];
                        }
                    }
                }
            }
        }
    }
}

/// One image's backward: dx (C, H, W) overwritten when given, dw (C·kh·kw) and db (C)
/// accumulated.
#[allow(clippy::too_many_arguments)]
fn backward_image<T: Float>(
    g: &ConvGeom,
    x: &[T],
    (h, w): (usize, usize),
    (ho, wo): (usize, usize),
    wt: &[T],
    dout: &[T],
    mut dx: Option<&mut [T]>,
    dw: &mut [T],
    db: &mut [T],
) {
    let (l, taps, sw) = (ho * wo, g.kh * g.kw, g.stride.1);
    if let Some(dx) = dx.as_deref_mut() {
        dx.fill(T::zero());
    }
    for c in 0..g.c_in {
        let xc = &x[c * h * w..(c + 1) * h * w];
        let dc = &dout[c * l..(c + 1) * l];
        db[c] += crate::ops::lane_sum(dc);
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let t = c * taps + ky * g.kw + kx;
                let wv = wt[t];
                let mut acc = T::zero();
                for oy in 0..ho {
                    let Some((iy, lo, hi, off)) = span(g, (h, w), wo, (ky, kx), oy) else {
                        continue;
                    };
                    let drow = &dc[oy * wo + lo..oy * wo + hi];
                    let ix0 = ((lo * sw) as isize + off) as usize;
                    let xrow = &xc[iy * w..(iy + 1) * w];
                    if sw == 1 {
                        let xs = &xrow[ix0..ix0 + (hi - lo)];
                        acc += drow.iter().zip(xs).fold(T::zero(), |a, (&d, &v)| a + d * v);
                        if let Some(dx) = dx.as_deref_mut() {
                            let dxr = &mut dx[c * h * w + iy * w + ix0..][..hi - lo];
                            for (o, &d) in dxr.iter_mut().zip(drow) {
                                *o += wv * d;
                            }
                        }
                    } else {
                        for (j, &d) in drow.iter().enumerate() {
                            let ix = ix0 + j * sw;
                            acc += d * xrow[ix];
                            if let Some(dx) = dx.as_deref_mut() {
                                dx[c * h * w + iy * w + ix] += wv * d;
                            }
                        }
                    }
                }
                dw[t] += acc;
            }
        }
    }
}

/// Batched forward, parallel over chunks of images: out (N, C, Ho, Wo).
#[allow(clippy::too_many_arguments)]
pub fn forward<T: Float>(
    g: &ConvGeom,
    x: &[T],
    (n, h, w): (usize, usize, usize),
    (ho, wo): (usize, usize),
    wt: &[T],
    bias: Option<&[T]>,
    out: &mut [T],
) {
    let (chw, per_out) = (g.c_in * h * w, g.c_out * ho * wo);
    let mut scratch = vec![(); crate::ops::chunk_ranges(n).len()];
    crate::ops::par_item_chunks(out, per_out, n, &mut scratch, |imgs, out, _| {
        for (j, i) in imgs.enumerate() {
            let xi = &x[i * chw..(i + 1) * chw];
            let oi = &mut out[j * per_out..(j + 1) * per_out];
            forward_image(g, xi, (h, w), (ho, wo), wt, bias, oi);
        }
    });
}

/// Batched backward: (dW (C·kh·kw), db (C)), dx (N, C, H, W) written when given; per-chunk
/// partials summed in chunk order (deterministic for a thread count).
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Float>(
    g: &ConvGeom,
    x: &[T],
    (n, h, w): (usize, usize, usize),
    (ho, wo): (usize, usize),
    wt: &[T],
    dout: &[T],
    dx: Option<&mut [T]>,
) -> (Vec<T>, Vec<T>) {
    let (chw, per_out) = (g.c_in * h * w, g.c_out * ho * wo);
    let want_dx = dx.is_some();
    let mut scratch = vec![(); crate::ops::chunk_ranges(n).len()];
    crate::ops::par_grad_chunks(dx, chw, n, &mut scratch, |imgs, dxc, _| {
        let mut dw = vec![T::zero(); g.c_out * g.kh * g.kw];
        let mut db = vec![T::zero(); g.c_out];
        for (j, i) in imgs.enumerate() {
            let xi = &x[i * chw..(i + 1) * chw];
            let di = &dout[i * per_out..(i + 1) * per_out];
            let dxi = want_dx.then(|| &mut dxc[j * chw..(j + 1) * chw]);
            backward_image(g, xi, (h, w), (ho, wo), wt, di, dxi, &mut dw, &mut db);
        }
        (dw, db)
    })
}

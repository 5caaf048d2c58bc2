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
    im2col_ld(g, x, h, w, ho, wo, cols, ho * wo);
}

/// `im2col` into a wider matrix: row r of this image's columns starts at `cols[r · ld]`
/// (ld ≥ Ho·Wo), so several images can sit side by side in one (K, B·L) matrix.
#[allow(clippy::too_many_arguments)]
pub(crate) fn im2col_ld<T: Float>(
    g: &ConvGeom,
    x: &[T],
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    cols: &mut [T],
    ld: usize,
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
                let dst = &mut cols[row * ld..row * ld + l];
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
    col2im_ld(g, dcols, h, w, ho, wo, dx, ho * wo);
}

/// `col2im` from a wider matrix (row r at `dcols[r · ld]`), the adjoint of `im2col_ld`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn col2im_ld<T: Float>(
    g: &ConvGeom,
    dcols: &[T],
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    dx: &mut [T],
    ld: usize,
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
                let src = &dcols[row * ld..row * ld + l];
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

/// dW (nb·C_out, Kg) [+]= dout (nb·C_out, L) · colsᵀ, per group; overwrites `dw` unless
/// `accumulate`. (A unit's first product overwrites: accumulating into a fresh zeroed
/// buffer reads its pages before writing them, which maps the zero page and then takes a
/// copy-on-write fault with a TLB shootdown on every page.)
pub fn backward_weight_cols<T: Float>(
    g: &ConvGeom,
    nb: usize,
    dout: &[T],
    cols: &[T],
    l: usize,
    dw: &mut [T],
    accumulate: bool,
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
                accumulate,
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

/// Columns one GEMM should see at least. Below this a per-image product (M × L by K) is
/// dominated by the GEMM's edge microkernels and packing (the late layers of the CIFAR nets
/// have L = 64 or 16), so small images are laid side by side: cols (K, B·L), one GEMM for B
/// images. 256 rather than 512: at 512 the 16×16 stages of resnet20/32 (L = 256, two images
/// per GEMM) lost more to the gather/scatter copies than the GEMM gained (resnet20 training
/// 0.90× the per-image build at 512, 0.97× at 256; vgg11 1.48× and 1.37×; 3 interleaved
/// rounds each).
const MIN_GEMM_COLS: usize = 256;
/// Cap on a batched column buffer (elements, 8 MiB of f32), so batching never asks for much
/// more workspace than one large image's columns would.
const MAX_BATCHED_COLS: usize = 1 << 21;

/// How many images one GEMM covers for K column rows of L positions, when a chunk holds
/// up to `chunk` images: 1 for large images, else enough for `MIN_GEMM_COLS` columns
/// within `MAX_BATCHED_COLS`.
pub(crate) fn images_per_gemm(k: usize, l: usize, chunk: usize) -> usize {
    if l == 0 || l >= MIN_GEMM_COLS {
        return 1;
    }
    let want = MIN_GEMM_COLS.div_ceil(l);
    let cap = (MAX_BATCHED_COLS / (k * l).max(1)).max(1);
    want.min(cap).min(chunk).max(1)
}

/// The image blocks [start, start + len) of a chunk of `cnt` images for blocks of at most
/// `per` images, balanced (32 images at 24 per block: 16 + 16, not 24 + 8).
pub(crate) fn image_blocks(cnt: usize, per: usize) -> impl Iterator<Item = (usize, usize)> {
    let nblocks = cnt.div_ceil(per.max(1)).max(1);
    let (base, extra) = (cnt / nblocks, cnt % nblocks);
    (0..nblocks).scan(0, move |start, i| {
        let len = base + usize::from(i < extra);
        let blk = (*start, len);
        *start += len;
        Some(blk)
    })
}

/// A 1×1 convolution with unit stride and no padding: its columns are the image itself,
/// (C_in, H·W), so im2col and col2im are skipped.
fn is_pointwise(g: &ConvGeom) -> bool {
    g.kh == 1 && g.kw == 1 && g.stride == (1, 1) && g.padding == (0, 0)
}

/// The chunks' sizes and the images per GEMM of a batched convolution over `n` images.
fn plan(g: &ConvGeom, n: usize, l: usize) -> (usize, usize) {
    let ranges = crate::ops::chunk_ranges(n);
    let chunk = ranges.iter().map(|r| r.len()).max().unwrap_or(1);
    (ranges.len(), images_per_gemm(g.k_total(), l, chunk))
}

/// Batched forward: out (N, nb·C_out, Ho, Wo) = conv(x) (+ bias (nb·C_out)).
/// x: (N, C_in, H, W); wt: (nb·C_out, C_in/G, kh, kw). Parallel over chunks of images;
/// small images go B at a time through one GEMM (`images_per_gemm`).
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
    if super::depthwise::applies(g, nb) {
        return super::depthwise::forward(g, x, (n, h, w), (ho, wo), wt, bias, out);
    }
    let l = ho * wo;
    let m = nb * g.c_out;
    let k = g.k_total();
    let chw = g.c_in * h * w;
    let (chunks, per) = plan(g, n, l);
    let pointwise = is_pointwise(g) && per == 1;
    // per chunk: the columns (K, B·L) and, when batching, the product (M, B·L)
    let mut scratch = crate::ops::par_scratch(chunks, || {
        let cols = if pointwise { 0 } else { k * l * per };
        let prod = if per > 1 { m * l * per } else { 0 };
        (
            crate::ops::workspace::<T>(cols),
            crate::ops::workspace::<T>(prod),
        )
    });
    crate::ops::par_item_chunks(out, m * l, n, &mut scratch, |imgs, out, (cols, prod)| {
        for (j0, b) in image_blocks(imgs.len(), per) {
            let x0 = (imgs.start + j0) * chw;
            let oblk = &mut out[j0 * m * l..(j0 + b) * m * l];
            if b == 1 {
                let xi = &x[x0..x0 + chw];
                let c: &[T] = if pointwise {
                    xi
                } else {
                    im2col(g, xi, h, w, ho, wo, cols);
                    cols
                };
                forward_cols(g, nb, wt, c, l, oblk);
                if let Some(bias) = bias {
                    add_bias(oblk, bias, l);
                }
                continue;
            }
            let p = b * l;
            for j in 0..b {
                let xj = &x[x0 + j * chw..x0 + (j + 1) * chw];
                im2col_ld(g, xj, h, w, ho, wo, &mut cols[j * l..], p);
            }
            forward_cols(g, nb, wt, &cols[..k * p], p, &mut prod[..m * p]);
            // (M, B·L) → (B, M, L), adding the bias on the way
            for j in 0..b {
                for o in 0..m {
                    let d = &mut oblk[(j * m + o) * l..(j * m + o + 1) * l];
                    d.copy_from_slice(&prod[o * p + j * l..o * p + (j + 1) * l]);
                    if let Some(bias) = bias {
                        d.iter_mut().for_each(|v| *v += bias[o]);
                    }
                }
            }
        }
    });
}

/// Batched backward. Returns (dW (nb·C_out·Kg), db (nb·C_out)) and writes dx (N, C_in, H, W)
/// when given. Per-thread partial weight gradients are summed in chunk order, so results
/// are deterministic for a given thread count. Small images go B at a time through each
/// GEMM, as in the forward.
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
    if super::depthwise::applies(g, nb) {
        return super::depthwise::backward(g, x, (n, h, w), (ho, wo), wt, dout, dx);
    }
    let l = ho * wo;
    let m = nb * g.c_out;
    let k = g.k_total();
    let kg = g.k_group();
    let chw = g.c_in * h * w;
    let (chunks, per) = plan(g, n, l);
    let pointwise = is_pointwise(g) && per == 1;
    let want_dx = dx.is_some();
    // per chunk: the columns and their gradient (K, B·L) and, when batching, dout's block
    // (M, B·L)
    let mut scratch = crate::ops::par_scratch(chunks, || {
        let cols = if pointwise { 0 } else { k * l * per };
        let dcols = if pointwise || !want_dx {
            0
        } else {
            k * l * per
        };
        let gblk = if per > 1 { m * l * per } else { 0 };
        (
            crate::ops::workspace::<T>(cols),
            crate::ops::workspace::<T>(dcols),
            crate::ops::workspace::<T>(gblk),
        )
    });
    crate::ops::par_grad_chunks(
        dx,
        chw,
        n,
        &mut scratch,
        |imgs, dxc, (cols, dcols, gblk)| {
            let mut dw = vec![T::zero(); m * kg];
            let mut db = vec![T::zero(); m];
            for (bi, (j0, b)) in image_blocks(imgs.len(), per).enumerate() {
                let acc = bi > 0;
                let i0 = imgs.start + j0;
                if b == 1 {
                    let xi = &x[i0 * chw..(i0 + 1) * chw];
                    let di = &dout[i0 * m * l..(i0 + 1) * m * l];
                    let c: &[T] = if pointwise {
                        xi
                    } else {
                        im2col(g, xi, h, w, ho, wo, cols);
                        cols
                    };
                    backward_weight_cols(g, nb, di, c, l, &mut dw, acc);
                    backward_bias(di, l, &mut db);
                    if want_dx {
                        let dxi = &mut dxc[j0 * chw..(j0 + 1) * chw];
                        if pointwise {
                            // dcols (C_in, H·W) is dx itself
                            backward_data_cols(g, nb, wt, di, l, dxi, false);
                        } else {
                            backward_data_cols(g, nb, wt, di, l, dcols, false);
                            dxi.fill(T::zero());
                            col2im(g, dcols, h, w, ho, wo, dxi);
                        }
                    }
                    continue;
                }
                let p = b * l;
                // dout (B, M, L) → (M, B·L)
                for j in 0..b {
                    for o in 0..m {
                        let src = ((i0 + j) * m + o) * l;
                        gblk[o * p + j * l..o * p + (j + 1) * l]
                            .copy_from_slice(&dout[src..src + l]);
                    }
                }
                for j in 0..b {
                    let xj = &x[(i0 + j) * chw..(i0 + j + 1) * chw];
                    im2col_ld(g, xj, h, w, ho, wo, &mut cols[j * l..], p);
                }
                let gb = &gblk[..m * p];
                backward_weight_cols(g, nb, gb, &cols[..k * p], p, &mut dw, acc);
                backward_bias(gb, p, &mut db);
                if want_dx {
                    backward_data_cols(g, nb, wt, gb, p, &mut dcols[..k * p], false);
                    for j in 0..b {
                        let dxj = &mut dxc[(j0 + j) * chw..(j0 + j + 1) * chw];
                        dxj.fill(T::zero());
                        col2im_ld(g, &dcols[j * l..], h, w, ho, wo, dxj, p);
                    }
                }
            }
            (dw, db)
        },
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

    /// The batched paths (several small images per GEMM, pointwise convolutions without
    /// im2col) against the per-image composition they replace: im2col, one GEMM, col2im.
    #[test]
    fn batched_and_pointwise_paths_match_the_per_image_composition() {
        // (c_in, c_out, k, stride, pad, groups, nb, h): small L (batched), large L
        // (per image), pointwise at both sizes, depthwise, stacked branches
        for (ci, co, k, s, p, gr, nb, hw) in [
            (3, 4, 3, 1, 1, 1, 1, 5),
            (4, 6, 3, 2, 1, 2, 2, 7),
            (4, 4, 3, 1, 1, 4, 1, 4),
            (3, 3, 3, 2, 1, 3, 1, 7),
            (3, 3, 3, 1, 0, 3, 1, 6),
            (2, 2, 5, 1, 2, 2, 1, 24),
            (8, 8, 3, 1, 1, 8, 1, 32),
            (8, 8, 3, 2, 1, 8, 1, 32),
            (8, 8, 3, 1, 1, 8, 1, 2),
            (5, 3, 1, 1, 0, 1, 3, 6),
            (2, 3, 1, 1, 0, 1, 1, 24),
            (2, 2, 3, 1, 1, 1, 1, 24),
        ] {
            let mut g = ConvGeom::square(ci, co, k, s, p);
            g.groups = gr;
            let n = 7;
            let (ho, wo) = g.out_hw(hw, hw, "t").unwrap();
            let (l, m, kt, chw) = (ho * wo, nb * co, g.k_total(), ci * hw * hw);
            let x: Vec<f64> = (0..n * chw).map(|i| (i as f64 * 0.37).sin()).collect();
            let wt: Vec<f64> = (0..m * g.k_group())
                .map(|i| (i as f64 * 0.53).cos())
                .collect();
            let bias: Vec<f64> = (0..m).map(|i| i as f64 * 0.1 - 0.2).collect();
            let dout: Vec<f64> = (0..n * m * l).map(|i| (i as f64 * 0.29).sin()).collect();

            let mut out = vec![0.0; n * m * l];
            conv2d_forward(
                &g,
                nb,
                &x,
                (n, hw, hw),
                (ho, wo),
                &wt,
                Some(&bias),
                &mut out,
            );
            let mut dx = vec![0.0; n * chw];
            let (dw, db) =
                conv2d_backward(&g, nb, &x, (n, hw, hw), (ho, wo), &wt, &dout, Some(&mut dx));

            let (mut cols, mut dcols) = (vec![0.0; kt * l], vec![0.0; kt * l]);
            let (mut rdw, mut rdb) = (vec![0.0; dw.len()], vec![0.0; m]);
            for i in 0..n {
                let xi = &x[i * chw..(i + 1) * chw];
                let di = &dout[i * m * l..(i + 1) * m * l];
                im2col(&g, xi, hw, hw, ho, wo, &mut cols);
                let mut oi = vec![0.0; m * l];
                forward_cols(&g, nb, &wt, &cols, l, &mut oi);
                add_bias(&mut oi, &bias, l);
                backward_weight_cols(&g, nb, di, &cols, l, &mut rdw, true);
                backward_bias(di, l, &mut rdb);
                backward_data_cols(&g, nb, &wt, di, l, &mut dcols, false);
                let mut dxi = vec![0.0; chw];
                col2im(&g, &dcols, hw, hw, ho, wo, &mut dxi);
                let case = format!("case ({ci},{co},{k},{s},{p},{gr},{nb},{hw}) image {i}");
                close(
                    &out[i * m * l..(i + 1) * m * l],
                    &oi,
                    &format!("{case}: out"),
                );
                close(&dx[i * chw..(i + 1) * chw], &dxi, &format!("{case}: dx"));
            }
            close(&dw, &rdw, "dw");
            close(&db, &rdb, "db");
        }
    }

    fn close(a: &[f64], b: &[f64], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: length");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-10 * (1.0 + y.abs()),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    #[test]
    fn image_blocks_cover_a_chunk_in_balanced_blocks() {
        let blocks: Vec<_> = image_blocks(32, 24).collect();
        assert_eq!(blocks, [(0, 16), (16, 16)]);
        let blocks: Vec<_> = image_blocks(7, 3).collect();
        assert_eq!(blocks, [(0, 3), (3, 2), (5, 2)]);
        assert_eq!(image_blocks(5, 1).count(), 5);
        assert_eq!(images_per_gemm(9, 1024, 32), 1);
        assert_eq!(images_per_gemm(9, 16, 32), 16);
        assert_eq!(images_per_gemm(9, 16, 5), 5);
        // the column buffer's cap: K·L = 2^20 allows 2 images of the 4 wanted
        assert_eq!(images_per_gemm(1 << 14, 64, 32), 2);
    }
}

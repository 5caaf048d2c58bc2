//! The CPU engine's implementation of the family's steps (see the parent module), fused
//! per chunk of images: the branch maps, the lifts and the epilogues, forward and backward,
//! for conv and linear layers alike, on host slices (quadralib-bn's fused math is in
//! `cpu_bn.rs`, the tensor-level glue in `cpu_backend.rs`).
//!
//! # Layout
//!
//! Every tensor of per-output values is a stack of planes (N, M, L): N images, M channels,
//! L positions per image (L = H_out·W_out for conv, 1 for linear, so a linear layer's
//! (N, M) matrix is the L = 1 case). The first-order branches of a layer are the `nb`
//! slices of ONE stacked weight W1 (nb·C, ·), branch k producing channels [k·C, (k+1)·C) of
//! the planes z (N, nb·C, L). Branches on a lifted input (x ⊙ x for `t2`/`fan`, the patch
//! outer products u ⊗ u for `t1`) use a second weight W2 (C, ·) producing q (N, C, L).
//!
//! Work is split into chunks of images (`par_item_chunks`, one scratch per chunk, GEMMs
//! single-threaded inside), and a chunk into *units*:
//! - conv: a unit is a block of B images (`QuadOp::images_per_unit`: B = 1 for large
//!   images, enough for 256 GEMM columns for small ones, as in `ops::conv::cpu`); its
//!   columns are the B images' im2col side by side, (K, B·L), K = C_in·kh·kw
//!   (feature-major), and z (nb·C, B·L) = W1 · cols (`ops::conv::cpu::forward_cols`, groups
//!   per branch);
//! - linear: a unit is the whole chunk of P images; its columns are the input rows
//!   X (P, F) themselves (position-major) and z (P, nb·C) = X · W1ᵀ.
//!
//! Either way a unit's planes are a contiguous (nu, M, lu) block with M·P elements: one
//! plane of lu = B·L positions per channel for conv (nu = 1), P planes of one position for
//! linear (`QuadOp::unit_l`), so the epilogues below are written once for both. Tensors
//! are (N, M, L) per image, so a conv block of B > 1 images gathers g and the kept planes
//! into its layout and scatters y and the kept planes out of it (`gather`, `scatter`);
//! for B = 1 the layouts coincide and nothing is copied.
//!
//! Weight gradients are per-chunk partials reduced in chunk order (deterministic for a
//! given thread count).

use std::ops::Range;

use rayon::prelude::*;

use super::{dense_geom, Epilogue, Lift, QuadOp};
use crate::device::alloc::TrackedVec;
use crate::ops::conv::cpu as convops;
use crate::ops::conv::ConvGeom;
use crate::ops::gemm::{matmul, MatRef};
use crate::ops::{chunk_ranges, par_item_chunks, reduce_partials, workspace};
use crate::tensor::Float;

/// One first-order map applied to a unit: conv reads feature-major columns (K, P) and
/// writes (M, P); dense reads position-major rows (P, K) and writes (P, M).
#[derive(Clone, Copy, Debug)]
pub(super) struct Map {
    geom: ConvGeom,
    dense: bool,
}

impl Map {
    /// out = W[..nb·C] applied to `inp`; overwrites `out` (M·P elements).
    pub(super) fn fwd<T: Float>(&self, nb: usize, w: &[T], inp: &[T], p: usize, out: &mut [T]) {
        if self.dense {
            let (k, m) = (self.geom.c_in, nb * self.geom.c_out);
            matmul(
                p,
                m,
                k,
                out,
                m,
                false,
                MatRef::new(inp, k),
                MatRef::trans(w, k),
                1,
            );
        } else {
            convops::forward_cols(&self.geom, nb, w, inp, p, out);
        }
    }

    /// dW (nb·C, Kg) [+]= dout ⋅ inp; overwrites unless `accumulate` (a chunk's first unit
    /// overwrites, see `convops::backward_weight_cols`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bwd_w<T: Float>(
        &self,
        nb: usize,
        dout: &[T],
        inp: &[T],
        p: usize,
        dw: &mut [T],
        accumulate: bool,
    ) {
        if self.dense {
            let (k, m) = (self.geom.c_in, nb * self.geom.c_out);
            matmul(
                m,
                k,
                p,
                dw,
                k,
                accumulate,
                MatRef::trans(dout, m),
                MatRef::new(inp, k),
                1,
            );
        } else {
            convops::backward_weight_cols(&self.geom, nb, dout, inp, p, dw, accumulate);
        }
    }

    /// dinp = Wᵀ-map of dout (summed over branches); overwrites.
    pub(super) fn bwd_in<T: Float>(
        &self,
        nb: usize,
        w: &[T],
        dout: &[T],
        p: usize,
        dinp: &mut [T],
    ) {
        if self.dense {
            let (k, m) = (self.geom.c_in, nb * self.geom.c_out);
            matmul(
                p,
                k,
                m,
                dinp,
                k,
                false,
                MatRef::new(dout, m),
                MatRef::new(w, k),
                1,
            );
        } else {
            convops::backward_data_cols(&self.geom, nb, w, dout, p, dinp, false);
        }
    }
}

/// The weights of a layer as slices (empty / None where a neuron has none).
#[derive(Clone, Copy)]
pub(super) struct Weights<'a, T> {
    /// Stacked first-order weight (nb·C, C_in/G, kh, kw) or (nb·C, F).
    pub w1: &'a [T],
    /// Stacked first-order bias (nb·C).
    pub b1: Option<&'a [T]>,
    /// Lifted weight: (C, C_in/G, kh, kw) / (C, F) on x ⊙ x, or (C, K, K) / (C, F, F) for t1.
    pub w2: &'a [T],
    /// Lifted bias (C).
    pub b2: Option<&'a [T]>,
    /// BN scale and shift over the stacked channels (3·C).
    pub gamma: &'a [T],
    pub beta: &'a [T],
}

/// Gradients of one backward, laid out like `Weights` (empty where a neuron has none).
#[derive(Debug, Default)]
pub(super) struct Grads<T> {
    pub w1: Vec<T>,
    pub b1: Vec<T>,
    pub w2: Vec<T>,
    pub b2: Vec<T>,
    pub gamma: Vec<T>,
    pub beta: Vec<T>,
}

/// Split `buf` into per-chunk slices of `per` elements per item (empty when `per` is 0).
pub(super) fn split_by<'a, T>(
    mut buf: &'a mut [T],
    per: usize,
    ranges: &[Range<usize>],
) -> Vec<&'a mut [T]> {
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        let (head, tail) = std::mem::take(&mut buf).split_at_mut(r.len() * per);
        out.push(head);
        buf = tail;
    }
    out
}

pub(super) fn ws<T: Float>(len: usize) -> TrackedVec<T> {
    workspace::<T>(len)
}

/// z (nu, mm, L) += b[o] on channel o of every image; mm = b.len().
pub(super) fn add_bias_planes<T: Float>(z: &mut [T], l: usize, b: &[T]) {
    let mm = b.len();
    for img in z.chunks_exact_mut(mm * l) {
        convops::add_bias(img, b, l);
    }
}

/// db[o] += Σ_{images, positions} d[·, o, ·] for d (nu, mm, L); mm = db.len().
pub(super) fn rowsum_planes<T: Float>(d: &[T], l: usize, db: &mut [T]) {
    let mm = db.len();
    for img in d.chunks_exact(mm * l) {
        convops::backward_bias(img, l, db);
    }
}

/// out[e] = v[e]².
fn square<T: Float>(v: &[T], out: &mut [T]) {
    for (o, &a) in out.iter_mut().zip(v) {
        *o = a * a;
    }
}

/// The outer products of a unit's input vectors: conv cols (K, P) → (K², P) with row
/// i·K + j = u_i ⊙ u_j; dense rows (P, K) → (P, K²).
fn outer<T: Float>(cols: &[T], k: usize, p: usize, dense: bool, out: &mut [T]) {
    if dense {
        for (u, o) in cols.chunks_exact(k).zip(out.chunks_exact_mut(k * k)) {
            for (i, &ui) in u.iter().enumerate() {
                for (ov, &uj) in o[i * k..(i + 1) * k].iter_mut().zip(u) {
                    *ov = ui * uj;
                }
            }
        }
    } else {
        for i in 0..k {
            let ui = &cols[i * p..(i + 1) * p];
            for j in 0..k {
                let uj = &cols[j * p..(j + 1) * p];
                let o = &mut out[(i * k + j) * p..(i * k + j + 1) * p];
                for ((ov, &a), &b) in o.iter_mut().zip(ui).zip(uj) {
                    *ov = a * b;
                }
            }
        }
    }
}

/// The adjoint of `outer` at u: du_i += Σ_j (dl_ij + dl_ji)·u_j.
fn outer_back<T: Float>(dl: &[T], cols: &[T], k: usize, p: usize, dense: bool, du: &mut [T]) {
    if dense {
        for ((u, d), dli) in cols
            .chunks_exact(k)
            .zip(du.chunks_exact_mut(k))
            .zip(dl.chunks_exact(k * k))
        {
            for i in 0..k {
                let mut s = T::zero();
                for j in 0..k {
                    s += (dli[i * k + j] + dli[j * k + i]) * u[j];
                }
                d[i] += s;
            }
        }
    } else {
        for i in 0..k {
            let d = &mut du[i * p..(i + 1) * p];
            for j in 0..k {
                let uj = &cols[j * p..(j + 1) * p];
                let r1 = &dl[(i * k + j) * p..(i * k + j + 1) * p];
                let r2 = &dl[(j * k + i) * p..(j * k + i + 1) * p];
                for (((dv, &a), &b), &u) in d.iter_mut().zip(r1).zip(r2).zip(uj) {
                    *dv += (a + b) * u;
                }
            }
        }
    }
}

/// The CPU engine's view of an op: its first-order and lifted maps, and its work units.
impl QuadOp {
    pub(super) fn map1(&self) -> Map {
        Map {
            geom: self.geom,
            dense: self.dense,
        }
    }
    pub(super) fn map2(&self) -> Map {
        match self.neuron.lift() {
            Lift::Outer => Map {
                geom: dense_geom(self.k() * self.k(), self.c()),
                dense: self.dense,
            },
            _ => self.map1(),
        }
    }
    /// Images per conv unit for a batch of `n`: small images go B at a time through each
    /// GEMM, as in `conv::cpu` (the late layers of the CIFAR nets have L = 64 or 16, where a
    /// per-image GEMM is all edge microkernels), sized over the widest column matrix the
    /// unit makes (K rows, or K lifted rows for x ⊙ x). t1's outer-product lift stays per
    /// image: its stored lift is (K², L) per image and K² rows leave no room to batch.
    pub(super) fn images_per_unit(&self, n: usize) -> usize {
        if self.dense || self.neuron.lift() == Lift::Outer {
            return 1;
        }
        let chunk = chunk_ranges(n).iter().map(|r| r.len()).max().unwrap_or(1);
        convops::images_per_gemm(self.k(), self.l(), chunk)
    }
    /// The work units of a chunk of images out of a batch of `n`: balanced blocks of up to
    /// `images_per_unit(n)` images (conv), the whole chunk (dense).
    pub(super) fn units(&self, imgs: Range<usize>, n: usize) -> Vec<Range<usize>> {
        if self.dense {
            return vec![imgs];
        }
        convops::image_blocks(imgs.len(), self.images_per_unit(n))
            .map(|(j0, b)| imgs.start + j0..imgs.start + j0 + b)
            .collect()
    }
    /// Most positions P a unit has.
    pub(super) fn pmax(&self, n: usize) -> usize {
        if self.dense {
            chunk_ranges(n).iter().map(|r| r.len()).max().unwrap_or(0)
        } else {
            self.images_per_unit(n) * self.l()
        }
    }
    /// Elements of a unit's column buffer (none for dense: its columns are the input rows).
    pub(super) fn cols_len(&self, n: usize) -> usize {
        if self.dense {
            0
        } else {
            self.k() * self.pmax(n)
        }
    }
    /// Positions per plane of a unit's planes: a block of B conv images is laid out
    /// (M, B·L), one plane of P = B·L positions per channel (the GEMM's own layout); a
    /// dense unit of P rows is (P, M), P planes of one position.
    pub(super) fn unit_l(&self, u: &Range<usize>) -> usize {
        if self.dense {
            1
        } else {
            u.len() * self.l()
        }
    }
    /// Whether unit `u`'s layout (M, B·L) differs from the tensors' (B, M, L), so planes
    /// must be gathered into it and scattered out of it.
    pub(super) fn blocked(&self, u: &Range<usize>) -> bool {
        !self.dense && u.len() > 1
    }
    /// The columns of unit `u` of `x` (the input, or a tensor shaped like it): im2col of
    /// its B images side by side (K, B·L) in `buf` (conv), or the input rows (dense).
    pub(super) fn unit_cols<'a, T: Float>(
        &self,
        x: &'a [T],
        u: &Range<usize>,
        buf: &'a mut [T],
    ) -> &'a [T] {
        let in_len = self.in_len();
        let xs = &x[u.start * in_len..u.end * in_len];
        if self.dense {
            return xs;
        }
        let (l, p) = (self.l(), u.len() * self.l());
        let buf = &mut buf[..self.k() * p];
        for (j, xj) in xs.chunks_exact(in_len).enumerate() {
            let (g, (h, w), (ho, wo)) = (&self.geom, (self.h, self.w), (self.ho, self.wo));
            convops::im2col_ld(g, xj, h, w, ho, wo, &mut buf[j * l..], p);
        }
        buf
    }
    /// dx of unit `u`'s images (B, C_in, H, W) = col2im of its column gradient (K, B·L);
    /// overwrites. Conv only.
    pub(super) fn unit_col2im<T: Float>(&self, dcols: &[T], u: &Range<usize>, dx: &mut [T]) {
        let p = u.len() * self.l();
        dx.fill(T::zero());
        for (j, dxj) in dx.chunks_exact_mut(self.in_len()).enumerate() {
            let (g, (h, w), (ho, wo)) = (&self.geom, (self.h, self.w), (self.ho, self.wo));
            convops::col2im_ld(g, &dcols[j * self.l()..], h, w, ho, wo, dxj, p);
        }
    }
}

/// (B, rows, L) image planes → the block layout (rows, B·L) of a conv unit.
pub(super) fn gather<T: Copy>(src: &[T], rows: usize, l: usize, dst: &mut [T]) {
    let p = src.len() / rows;
    for (j, img) in src.chunks_exact(rows * l).enumerate() {
        for (o, plane) in img.chunks_exact(l).enumerate() {
            dst[o * p + j * l..o * p + (j + 1) * l].copy_from_slice(plane);
        }
    }
}

/// The block layout (rows, B·L) → (B, rows, L) image planes: the inverse of `gather`.
pub(super) fn scatter<T: Copy>(src: &[T], rows: usize, l: usize, dst: &mut [T]) {
    let p = dst.len() / rows;
    for (j, img) in dst.chunks_exact_mut(rows * l).enumerate() {
        for (o, plane) in img.chunks_exact_mut(l).enumerate() {
            plane.copy_from_slice(&src[o * p + j * l..o * p + (j + 1) * l]);
        }
    }
}

/// Step 3 for one unit: y = f(z, q), z (nu, nb·C, l) the first-order planes (biases
/// added), q (nu, C, l) the lifted branch (bias added), y (nu, C, l); `None` (t2): y = q.
/// `l` is the unit's plane length (`QuadOp::unit_l`).
fn epilogue_fwd<T: Float>(
    op: &QuadOp,
    kind: Option<Epilogue>,
    l: usize,
    z: &[T],
    q: &[T],
    y: &mut [T],
) {
    let (c, m) = (op.c(), op.m());
    let nu = y.len() / (c * l);
    for j in 0..nu {
        for o in 0..c {
            let yo = &mut y[(j * c + o) * l..(j * c + o + 1) * l];
            let zb = |k: usize| &z[(j * m + k * c + o) * l..(j * m + k * c + o + 1) * l];
            let qo = || &q[(j * c + o) * l..(j * c + o + 1) * l];
            match kind {
                Some(Epilogue::T1) => {
                    for ((yv, &a), &b) in yo.iter_mut().zip(qo()).zip(zb(0)) {
                        *yv = a + b;
                    }
                }
                None => yo.copy_from_slice(qo()),
                Some(Epilogue::T3) => {
                    for (yv, &a) in yo.iter_mut().zip(zb(0)) {
                        *yv = a * a;
                    }
                }
                Some(Epilogue::T4) => {
                    for ((yv, &a), &b) in yo.iter_mut().zip(zb(0)).zip(zb(1)) {
                        *yv = a * b;
                    }
                }
                Some(Epilogue::QuadraLib) => {
                    for (((yv, &a), &b), &cc) in yo.iter_mut().zip(zb(0)).zip(zb(1)).zip(zb(2)) {
                        *yv = a * b + cc;
                    }
                }
                Some(Epilogue::Fan) => {
                    for (((yv, &a), &b), &qv) in yo.iter_mut().zip(zb(0)).zip(zb(1)).zip(qo()) {
                        *yv = a * b + qv;
                    }
                }
            }
        }
    }
}

/// Backward step 3 for one unit: the closed-form gradients of the product/square terms,
/// from the planes backward reads (nu, R·C, l) and g (nu, C, l), into dz (nu, nb·C, l),
/// `l` the unit's plane length. Not for t1 (gz is g itself).
fn epilogue_bwd<T: Float>(
    op: &QuadOp,
    kind: Epilogue,
    l: usize,
    planes: &[T],
    g: &[T],
    dz: &mut [T],
) {
    let (c, m, r) = (op.c(), op.m(), op.neuron.planes_read());
    let nu = g.len() / (c * l);
    let two = T::of(2.0);
    for j in 0..nu {
        for o in 0..c {
            let go = &g[(j * c + o) * l..(j * c + o + 1) * l];
            let pl =
                |k: usize| &planes[(j * r * c + k * c + o) * l..(j * r * c + k * c + o + 1) * l];
            let row = |k: usize| (j * m + k * c + o) * l..(j * m + k * c + o + 1) * l;
            match kind {
                Epilogue::T3 => {
                    for ((d, &a), &gv) in dz[row(0)].iter_mut().zip(pl(0)).zip(go) {
                        *d = two * a * gv;
                    }
                }
                Epilogue::T4 | Epilogue::QuadraLib | Epilogue::Fan => {
                    let (a, b) = (pl(0), pl(1));
                    for ((d, &bv), &gv) in dz[row(0)].iter_mut().zip(b).zip(go) {
                        *d = gv * bv;
                    }
                    for ((d, &av), &gv) in dz[row(1)].iter_mut().zip(a).zip(go) {
                        *d = gv * av;
                    }
                    if kind == Epilogue::QuadraLib {
                        dz[row(2)].copy_from_slice(go);
                    }
                }
                Epilogue::T1 => unreachable!("t1's branch gradient is g itself"),
            }
        }
    }
}

struct FwdScratch<'a, T> {
    cols: TrackedVec<T>,
    lc: TrackedVec<T>,
    z: TrackedVec<T>,
    q: TrackedVec<T>,
    /// A blocked unit's output (C, B·L) before it is scattered into y.
    y: TrackedVec<T>,
    kp: &'a mut [T],
    kl: &'a mut [T],
}

/// Forward of every neuron but quadralib-bn (training and inference).
///
/// x (N, C_in, H, W) or (N, F); y (N, C, L). When `stored`, also writes what backward
/// reads: `keep_planes` (N, R·C, L) the leading branch planes (biases included) and
/// `keep_lifted`: x ⊙ x (N, C_in, H, W) for t2/fan, the outer products (N, K², L) for t1.
/// Both are empty when not stored.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward<T: Float>(
    op: &QuadOp,
    n: usize,
    x: &[T],
    wt: &Weights<T>,
    y: &mut [T],
    stored: bool,
    keep_planes: &mut [T],
    keep_lifted: &mut [T],
) {
    let (c, l, m, k) = (op.c(), op.l(), op.m(), op.k());
    let (neuron, nb, r) = (op.neuron, op.neuron.branches(), op.neuron.planes_read());
    let lift = neuron.lift();
    let in_len = op.in_len();
    let ranges = chunk_ranges(n);
    let pmax = op.pmax(n);
    let batched = op.images_per_unit(n) > 1;
    // t3, t4, fan: the stored planes are all of z; a per-image unit's GEMM goes straight
    // into them
    let direct = stored && r == nb && nb > 0;
    let kp_per = if stored { r * c * l } else { 0 };
    let kl_per = if stored {
        op.kept_lifted_per_image()
    } else {
        0
    };
    let kps = split_by(keep_planes, kp_per, &ranges);
    let kls = split_by(keep_lifted, kl_per, &ranges);
    // built on the pool threads, so the zero fills run in parallel (`ops::par_scratch`)
    let mut scratch: Vec<FwdScratch<T>> = kps
        .into_par_iter()
        .zip(kls)
        .map(|(kp, kl)| FwdScratch {
            cols: ws(op.cols_len(n)),
            lc: ws(if lift == Lift::Outer && stored {
                0
            } else {
                op.lift_rows() * pmax
            }),
            z: ws(if direct && !batched { 0 } else { m * pmax }),
            q: ws(if lift == Lift::None { 0 } else { c * pmax }),
            y: ws(if batched { c * pmax } else { 0 }),
            kp,
            kl,
        })
        .collect();
    let (map1, map2) = (op.map1(), op.map2());
    par_item_chunks(y, c * l, n, &mut scratch, |imgs, yc, s| {
        let c0 = imgs.start;
        for u in op.units(imgs, n) {
            let (a, b) = (u.start - c0, u.end - c0);
            let (p, lu, blocked) = (u.len() * l, op.unit_l(&u), op.blocked(&u));
            let into_kept = direct && !blocked;
            let cols = op.unit_cols(x, &u, &mut s.cols);
            if nb > 0 {
                let zb: &mut [T] = if into_kept {
                    &mut s.kp[a * m * l..b * m * l]
                } else {
                    &mut s.z[..m * p]
                };
                map1.fwd(nb, wt.w1, cols, p, zb);
                if let Some(b1) = wt.b1 {
                    add_bias_planes(zb, lu, b1);
                }
                if stored && !into_kept && r > 0 {
                    // the R leading branches (quadralib keeps a, b but not c)
                    let kp = &mut s.kp[a * r * c * l..b * r * c * l];
                    if blocked {
                        scatter(&s.z[..r * c * p], r * c, l, kp);
                    } else {
                        for (dst, src) in
                            kp.chunks_exact_mut(r * c * l).zip(s.z.chunks_exact(m * l))
                        {
                            dst.copy_from_slice(&src[..r * c * l]);
                        }
                    }
                }
            }
            let zb: &[T] = if into_kept {
                &s.kp[a * m * l..b * m * l]
            } else {
                &s.z[..m * p]
            };
            let q = &mut s.q[..if lift == Lift::None { 0 } else { c * p }];
            match lift {
                Lift::None => {}
                Lift::Square => {
                    let lc = &mut s.lc[..k * p];
                    square(cols, lc);
                    if stored {
                        let xs = &x[u.start * in_len..u.end * in_len];
                        square(xs, &mut s.kl[a * in_len..b * in_len]);
                    }
                    map2.fwd(1, wt.w2, lc, p, q);
                }
                Lift::Outer => {
                    // per image (`images_per_unit`), so the stored layout is the unit's
                    let lc: &mut [T] = if stored {
                        &mut s.kl[a * k * k * l..b * k * k * l]
                    } else {
                        &mut s.lc[..k * k * p]
                    };
                    outer(cols, k, p, op.dense, lc);
                    map2.fwd(1, wt.w2, lc, p, q);
                }
            }
            if let (Some(b2), false) = (wt.b2, lift == Lift::None) {
                add_bias_planes(q, lu, b2);
            }
            let yu = &mut yc[a * c * l..b * c * l];
            if blocked {
                epilogue_fwd(op, neuron.epilogue(), lu, zb, q, &mut s.y[..c * p]);
                scatter(&s.y[..c * p], c, l, yu);
            } else {
                epilogue_fwd(op, neuron.epilogue(), lu, zb, q, yu);
            }
        }
    });
}

struct BwdScratch<T> {
    cols: TrackedVec<T>,
    lc: TrackedVec<T>,
    z: TrackedVec<T>,
    /// A blocked unit's g (C, B·L).
    g: TrackedVec<T>,
    dz: TrackedVec<T>,
    dcols: TrackedVec<T>,
    dlc: TrackedVec<T>,
}

/// Backward of every neuron but quadralib-bn. `planes`/`lifted` are what a stored forward
/// kept (empty in recompute mode, where the R leading branch planes are recomputed from x
/// with one GEMM per unit and the lifted input from the columns). g (N, C, L) is dL/dy;
/// writes dx (like x) and returns the weight gradients.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward<T: Float>(
    op: &QuadOp,
    n: usize,
    x: &[T],
    wt: &Weights<T>,
    g: &[T],
    stored: bool,
    planes: &[T],
    lifted: &[T],
    dx: &mut [T],
) -> Grads<T> {
    let (c, l, m, k) = (op.c(), op.l(), op.m(), op.k());
    let (neuron, nb, r) = (op.neuron, op.neuron.branches(), op.neuron.planes_read());
    let lift = neuron.lift();
    let in_len = op.in_len();
    let pmax = op.pmax(n);
    let batched = op.images_per_unit(n) > 1;
    let chunks = chunk_ranges(n).len();
    let needs_dz = !matches!(neuron.epilogue(), Some(Epilogue::T1) | None);
    let mut scratch: Vec<BwdScratch<T>> = crate::ops::par_scratch(chunks, || BwdScratch {
        cols: ws(op.cols_len(n)),
        lc: ws(match lift {
            Lift::Outer if stored => 0,
            Lift::Square if stored && op.dense => 0,
            _ => op.lift_rows() * pmax,
        }),
        z: ws(if stored && !batched { 0 } else { r * c * pmax }),
        g: ws(if batched { c * pmax } else { 0 }),
        dz: ws(if needs_dz { m * pmax } else { 0 }),
        dcols: ws(op.cols_len(n)),
        dlc: ws(op.lift_rows() * pmax),
    });
    let (map1, map2) = (op.map1(), op.map2());
    let (w1n, w2n) = (wt.w1.len(), wt.w2.len());
    let parts = par_item_chunks(dx, in_len, n, &mut scratch, |imgs, dxc, s| {
        let mut gr = Grads {
            w1: vec![T::zero(); w1n],
            b1: vec![T::zero(); wt.b1.map_or(0, |b| b.len())],
            w2: vec![T::zero(); w2n],
            b2: vec![T::zero(); wt.b2.map_or(0, |b| b.len())],
            ..Grads::default()
        };
        let c0 = imgs.start;
        for u in op.units(imgs, n) {
            let (a, b) = (u.start - c0, u.end - c0);
            let acc = u.start > c0;
            let (p, lu, blocked) = (u.len() * l, op.unit_l(&u), op.blocked(&u));
            let cols = op.unit_cols(x, &u, &mut s.cols);
            let gs: &[T] = {
                let gi = &g[u.start * c * l..u.end * c * l];
                if blocked {
                    gather(gi, c, l, &mut s.g[..c * p]);
                    &s.g[..c * p]
                } else {
                    gi
                }
            };
            // the branch planes backward reads: kept, or recomputed with one GEMM
            let pl: &[T] = if r == 0 {
                &[]
            } else if stored {
                let kept = &planes[u.start * r * c * l..u.end * r * c * l];
                if blocked {
                    gather(kept, r * c, l, &mut s.z[..r * c * p]);
                    &s.z[..r * c * p]
                } else {
                    kept
                }
            } else {
                let z = &mut s.z[..r * c * p];
                map1.fwd(r, wt.w1, cols, p, z);
                if let Some(b1) = wt.b1 {
                    add_bias_planes(z, lu, &b1[..r * c]);
                }
                z
            };
            let dzs: &[T] = match neuron.epilogue() {
                Some(Epilogue::T1) => gs,
                None => &[],
                Some(kind) => {
                    epilogue_bwd(op, kind, lu, pl, gs, &mut s.dz[..m * p]);
                    &s.dz[..m * p]
                }
            };
            {
                let dc: &mut [T] = if op.dense {
                    &mut dxc[a * in_len..b * in_len]
                } else {
                    &mut s.dcols[..k * p]
                };
                if nb > 0 {
                    map1.bwd_w(nb, dzs, cols, p, &mut gr.w1, acc);
                    if wt.b1.is_some() {
                        rowsum_planes(dzs, lu, &mut gr.b1);
                    }
                    map1.bwd_in(nb, wt.w1, dzs, p, dc);
                } else {
                    dc.fill(T::zero());
                }
                if lift != Lift::None {
                    let lr = op.lift_rows();
                    let lc: &[T] = match lift {
                        // x ⊙ x is shaped like x: its columns are the lifted columns
                        Lift::Square if stored => op.unit_cols(lifted, &u, &mut s.lc),
                        Lift::Outer if stored => &lifted[u.start * lr * l..u.end * lr * l],
                        Lift::Square => {
                            let buf = &mut s.lc[..lr * p];
                            square(cols, buf);
                            buf
                        }
                        _ => {
                            let buf = &mut s.lc[..lr * p];
                            outer(cols, k, p, op.dense, buf);
                            buf
                        }
                    };
                    map2.bwd_w(1, gs, lc, p, &mut gr.w2, acc);
                    if wt.b2.is_some() {
                        rowsum_planes(gs, lu, &mut gr.b2);
                    }
                    let dlc = &mut s.dlc[..lr * p];
                    map2.bwd_in(1, wt.w2, gs, p, dlc);
                    if lift == Lift::Square {
                        let two = T::of(2.0);
                        for ((d, &cv), &dl) in dc.iter_mut().zip(cols).zip(dlc.iter()) {
                            *d += two * cv * dl;
                        }
                    } else {
                        outer_back(dlc, cols, k, p, op.dense, dc);
                    }
                }
            }
            if !op.dense {
                op.unit_col2im(&s.dcols[..k * p], &u, &mut dxc[a * in_len..b * in_len]);
            }
        }
        gr
    });
    reduce_grads(parts)
}

pub(super) fn reduce_grads<T: Float>(parts: Vec<Grads<T>>) -> Grads<T> {
    let mut w1 = Vec::new();
    let mut b1 = Vec::new();
    let mut w2 = Vec::new();
    let mut b2 = Vec::new();
    for p in parts {
        w1.push(p.w1);
        b1.push(p.b1);
        w2.push(p.w2);
        b2.push(p.b2);
    }
    Grads {
        w1: reduce_partials(w1),
        b1: reduce_partials(b1),
        w2: reduce_partials(w2),
        b2: reduce_partials(b2),
        ..Grads::default()
    }
}

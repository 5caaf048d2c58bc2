//! Quadratic neurons on the CPU: the branch maps, the lifts and the fused epilogues,
//! forward and backward, for conv and linear layers alike.
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
//! - conv: a unit is one image; its columns are im2col(x_i): (K, L), K = C_in·kh·kw
//!   (feature-major) and z_i (nb·C, L) = W1 · cols (`ops::conv::forward_cols`, groups per
//!   branch);
//! - linear: a unit is the whole chunk of P images; its columns are the input rows
//!   X (P, F) themselves (position-major) and z (P, nb·C) = X · W1ᵀ.
//!
//! Either way a unit's planes are a contiguous (nu, M, L) block with M·P elements,
//! P = nu·L, so the epilogues below are written once for both.
//!
//! Weight gradients are per-chunk partials reduced in chunk order (deterministic for a
//! given thread count).

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::device::alloc::TrackedVec;
use crate::ops::conv::{self as convops, ConvGeom};
use crate::ops::gemm::{matmul, MatRef};
use crate::ops::{chunk_ranges, par_item_chunks, reduce_partials, workspace};
use crate::tensor::Float;
use crate::{Error, Result};

/// The quadratic neuron family (x: input, W·x a first-order conv/linear map).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NeuronType {
    /// xᵀ W_a x + W_b x (+ b): a full bilinear form per output (per im2col patch for conv).
    #[serde(rename = "t1")]
    T1,
    /// W_a (x ⊙ x) (+ b).
    #[serde(rename = "t2")]
    T2,
    /// (W_a x + b)².
    #[serde(rename = "t3")]
    T3,
    /// (W_a x + b_a) ⊙ (W_b x + b_b).
    #[serde(rename = "t4")]
    T4,
    /// (W_a x + b_a) ⊙ (W_b x + b_b) + W_c x + b_c.
    #[serde(rename = "quadralib")]
    QuadraLib,
    /// BN_a(W_a x) ⊙ BN_b(W_b x) + BN_c(W_c x).
    #[serde(rename = "quadralib-bn")]
    QuadraLibBn,
    /// (W_r x + b_r) ⊙ (W_g x + b_g) + W_b (x ⊙ x) + c.
    #[serde(rename = "fan")]
    Fan,
}

/// The input a layer's second weight reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lift {
    /// No second weight.
    None,
    /// x ⊙ x (`t2`, `fan`): the same geometry as the first-order map.
    Square,
    /// u ⊗ u for every patch/input vector u (`t1`): K² features per position.
    Outer,
}

impl NeuronType {
    pub const ALL: [NeuronType; 7] = [
        NeuronType::T1,
        NeuronType::T2,
        NeuronType::T3,
        NeuronType::T4,
        NeuronType::QuadraLib,
        NeuronType::QuadraLibBn,
        NeuronType::Fan,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NeuronType::T1 => "t1",
            NeuronType::T2 => "t2",
            NeuronType::T3 => "t3",
            NeuronType::T4 => "t4",
            NeuronType::QuadraLib => "quadralib",
            NeuronType::QuadraLibBn => "quadralib-bn",
            NeuronType::Fan => "fan",
        }
    }

    /// First-order branches stacked in the weight W1 (t1: its linear term W_b).
    pub fn branches(self) -> usize {
        match self {
            NeuronType::T2 => 0,
            NeuronType::T1 | NeuronType::T3 => 1,
            NeuronType::T4 | NeuronType::Fan => 2,
            NeuronType::QuadraLib | NeuronType::QuadraLibBn => 3,
        }
    }

    pub fn lift(self) -> Lift {
        match self {
            NeuronType::T1 => Lift::Outer,
            NeuronType::T2 | NeuronType::Fan => Lift::Square,
            _ => Lift::None,
        }
    }

    /// How many leading branch planes backward reads (what `stored` keeps of z, and what
    /// `recompute` recomputes): t3 a; t4, quadralib a, b; fan r, g; quadralib-bn all three.
    pub fn planes_read(self) -> usize {
        match self {
            NeuronType::T1 | NeuronType::T2 => 0,
            NeuronType::T3 => 1,
            NeuronType::T4 | NeuronType::QuadraLib | NeuronType::Fan => 2,
            NeuronType::QuadraLibBn => 3,
        }
    }

    pub fn has_bn(self) -> bool {
        self == NeuronType::QuadraLibBn
    }
}

impl fmt::Display for NeuronType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NeuronType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        NeuronType::ALL
            .into_iter()
            .find(|n| n.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = NeuronType::ALL.iter().map(|n| n.name()).collect();
                Error::invalid(
                    "neuron type",
                    format!("`{s}`: expected one of {}", names.join(", ")),
                )
            })
    }
}

/// One first-order map applied to a unit: conv reads feature-major columns (K, P) and
/// writes (M, P); dense reads position-major rows (P, K) and writes (P, M).
#[derive(Clone, Copy, Debug)]
struct Map {
    geom: ConvGeom,
    dense: bool,
}

impl Map {
    /// out = W[..nb·C] applied to `inp`; overwrites `out` (M·P elements).
    fn fwd<T: Float>(&self, nb: usize, w: &[T], inp: &[T], p: usize, out: &mut [T]) {
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

    /// dW (nb·C, Kg) += dout ⋅ inp.
    fn bwd_w<T: Float>(&self, nb: usize, dout: &[T], inp: &[T], p: usize, dw: &mut [T]) {
        if self.dense {
            let (k, m) = (self.geom.c_in, nb * self.geom.c_out);
            matmul(
                m,
                k,
                p,
                dw,
                k,
                true,
                MatRef::trans(dout, m),
                MatRef::new(inp, k),
                1,
            );
        } else {
            convops::backward_weight_cols(&self.geom, nb, dout, inp, p, dw);
        }
    }

    /// dinp = Wᵀ-map of dout (summed over branches); overwrites.
    fn bwd_in<T: Float>(&self, nb: usize, w: &[T], dout: &[T], p: usize, dinp: &mut [T]) {
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

/// The computation of one quadratic layer for one input size.
#[derive(Clone, Copy, Debug)]
pub struct QuadOp {
    pub neuron: NeuronType,
    /// The conv geometry of one branch; for a linear layer the 1×1 geometry with
    /// c_in = in_features, c_out = out_features.
    pub geom: ConvGeom,
    pub dense: bool,
    /// Input and output spatial size (1 for linear).
    pub h: usize,
    pub w: usize,
    pub ho: usize,
    pub wo: usize,
}

/// The 1×1, stride-1, ungrouped geometry: a dense map from `c_in` to `c_out` features.
pub fn dense_geom(c_in: usize, c_out: usize) -> ConvGeom {
    ConvGeom::square(c_in, c_out, 1, 1, 0)
}

/// The weights of a layer as slices (empty / None where a neuron has none).
#[derive(Clone, Copy)]
pub struct Weights<'a, T> {
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
pub struct Grads<T> {
    pub w1: Vec<T>,
    pub b1: Vec<T>,
    pub w2: Vec<T>,
    pub b2: Vec<T>,
    pub gamma: Vec<T>,
    pub beta: Vec<T>,
}

/// Split `buf` into per-chunk slices of `per` elements per item (empty when `per` is 0).
fn split_by<'a, T>(mut buf: &'a mut [T], per: usize, ranges: &[Range<usize>]) -> Vec<&'a mut [T]> {
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        let (head, tail) = std::mem::take(&mut buf).split_at_mut(r.len() * per);
        out.push(head);
        buf = tail;
    }
    out
}

fn ws<T: Float>(len: usize) -> TrackedVec<T> {
    workspace::<T>(len)
}

/// z (nu, mm, L) += b[o] on channel o of every image; mm = b.len().
fn add_bias_planes<T: Float>(z: &mut [T], l: usize, b: &[T]) {
    let mm = b.len();
    for img in z.chunks_exact_mut(mm * l) {
        convops::add_bias(img, b, l);
    }
}

/// db[o] += Σ_{images, positions} d[·, o, ·] for d (nu, mm, L); mm = db.len().
fn rowsum_planes<T: Float>(d: &[T], l: usize, db: &mut [T]) {
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

impl QuadOp {
    /// A conv layer's op for inputs of spatial size (h, w).
    pub fn conv(
        neuron: NeuronType,
        geom: ConvGeom,
        h: usize,
        w: usize,
        layer: &str,
    ) -> Result<Self> {
        let (ho, wo) = geom.out_hw(h, w, layer)?;
        Ok(QuadOp {
            neuron,
            geom,
            dense: false,
            h,
            w,
            ho,
            wo,
        })
    }

    /// A linear layer's op.
    pub fn dense(neuron: NeuronType, in_features: usize, out_features: usize) -> Self {
        QuadOp {
            neuron,
            geom: dense_geom(in_features, out_features),
            dense: true,
            h: 1,
            w: 1,
            ho: 1,
            wo: 1,
        }
    }

    fn c(&self) -> usize {
        self.geom.c_out
    }
    /// Stacked first-order channels nb·C.
    fn m(&self) -> usize {
        self.neuron.branches() * self.geom.c_out
    }
    /// Positions per image.
    pub fn l(&self) -> usize {
        self.ho * self.wo
    }
    /// Input elements per image.
    pub fn in_len(&self) -> usize {
        self.geom.c_in * self.h * self.w
    }
    /// Rows of a column matrix (C_in·kh·kw; F for linear).
    pub fn k(&self) -> usize {
        self.geom.k_total()
    }
    fn map1(&self) -> Map {
        Map {
            geom: self.geom,
            dense: self.dense,
        }
    }
    fn map2(&self) -> Map {
        match self.neuron.lift() {
            Lift::Outer => Map {
                geom: dense_geom(self.k() * self.k(), self.c()),
                dense: self.dense,
            },
            _ => self.map1(),
        }
    }
    /// Lifted features per position.
    fn lift_rows(&self) -> usize {
        match self.neuron.lift() {
            Lift::None => 0,
            Lift::Square => self.k(),
            Lift::Outer => self.k() * self.k(),
        }
    }
    /// Elements per image of the planes `stored` keeps: (R·C, L), R = `planes_read`.
    pub fn kept_planes_per_image(&self) -> usize {
        self.neuron.planes_read() * self.c() * self.l()
    }
    /// Elements per image of the lifted input `stored` keeps: x ⊙ x (C_in, H, W), or the
    /// outer products (K², L) for t1.
    pub fn kept_lifted_per_image(&self) -> usize {
        match self.neuron.lift() {
            Lift::None => 0,
            Lift::Square => self.in_len(),
            Lift::Outer => self.k() * self.k() * self.l(),
        }
    }
    /// The work units of a chunk of images: one per image (conv), the chunk (dense).
    fn units(&self, imgs: Range<usize>) -> Vec<Range<usize>> {
        if self.dense {
            vec![imgs]
        } else {
            imgs.map(|i| i..i + 1).collect()
        }
    }
    /// Most positions P a unit has.
    fn pmax(&self, n: usize) -> usize {
        if self.dense {
            chunk_ranges(n).iter().map(|r| r.len()).max().unwrap_or(0)
        } else {
            self.l()
        }
    }
    fn cols_len(&self) -> usize {
        if self.dense {
            0
        } else {
            self.k() * self.l()
        }
    }
    /// The columns of unit `u`: im2col(x_i) in `buf` (conv) or the input rows (dense).
    fn unit_cols<'a, T: Float>(&self, x: &'a [T], u: &Range<usize>, buf: &'a mut [T]) -> &'a [T] {
        let xs = &x[u.start * self.in_len()..u.end * self.in_len()];
        if self.dense {
            xs
        } else {
            convops::im2col(&self.geom, xs, self.h, self.w, self.ho, self.wo, buf);
            buf
        }
    }
}

/// y = f(z, q) for one unit: z (nu, nb·C, L) first-order planes (biases added),
/// q (nu, C, L) the lifted branch (bias added), y (nu, C, L). Not for quadralib-bn.
fn epilogue_fwd<T: Float>(neuron: NeuronType, c: usize, l: usize, z: &[T], q: &[T], y: &mut [T]) {
    let m = neuron.branches() * c;
    let nu = y.len() / (c * l);
    for j in 0..nu {
        for o in 0..c {
            let yo = &mut y[(j * c + o) * l..(j * c + o + 1) * l];
            let zb = |k: usize| &z[(j * m + k * c + o) * l..(j * m + k * c + o + 1) * l];
            let qo = || &q[(j * c + o) * l..(j * c + o + 1) * l];
            match neuron {
                NeuronType::T1 => {
                    for ((yv, &a), &b) in yo.iter_mut().zip(qo()).zip(zb(0)) {
                        *yv = a + b;
                    }
                }
                NeuronType::T2 => yo.copy_from_slice(qo()),
                NeuronType::T3 => {
                    for (yv, &a) in yo.iter_mut().zip(zb(0)) {
                        *yv = a * a;
                    }
                }
                NeuronType::T4 => {
                    for ((yv, &a), &b) in yo.iter_mut().zip(zb(0)).zip(zb(1)) {
                        *yv = a * b;
                    }
                }
                NeuronType::QuadraLib => {
                    for (((yv, &a), &b), &cc) in yo.iter_mut().zip(zb(0)).zip(zb(1)).zip(zb(2)) {
                        *yv = a * b + cc;
                    }
                }
                NeuronType::Fan => {
                    for (((yv, &a), &b), &qv) in yo.iter_mut().zip(zb(0)).zip(zb(1)).zip(qo()) {
                        *yv = a * b + qv;
                    }
                }
                NeuronType::QuadraLibBn => unreachable!("quadralib-bn has its own epilogue"),
            }
        }
    }
}

/// Closed-form gradients of the product/square terms for one unit: from the planes backward
/// reads (nu, R·C, L) and g (nu, C, L), write dz (nu, nb·C, L). Only t3, t4, quadralib, fan
/// (t1/t2 pass g through, quadralib-bn has its own).
fn epilogue_bwd<T: Float>(
    neuron: NeuronType,
    c: usize,
    l: usize,
    planes: &[T],
    g: &[T],
    dz: &mut [T],
) {
    let r = neuron.planes_read();
    let m = neuron.branches() * c;
    let nu = g.len() / (c * l);
    let two = T::of(2.0);
    for j in 0..nu {
        for o in 0..c {
            let go = &g[(j * c + o) * l..(j * c + o + 1) * l];
            let pl =
                |k: usize| &planes[(j * r * c + k * c + o) * l..(j * r * c + k * c + o + 1) * l];
            let row = |k: usize| (j * m + k * c + o) * l..(j * m + k * c + o + 1) * l;
            match neuron {
                NeuronType::T3 => {
                    for ((d, &a), &gv) in dz[row(0)].iter_mut().zip(pl(0)).zip(go) {
                        *d = two * a * gv;
                    }
                }
                NeuronType::T4 | NeuronType::QuadraLib | NeuronType::Fan => {
                    let (a, b) = (pl(0), pl(1));
                    for ((d, &bv), &gv) in dz[row(0)].iter_mut().zip(b).zip(go) {
                        *d = gv * bv;
                    }
                    for ((d, &av), &gv) in dz[row(1)].iter_mut().zip(a).zip(go) {
                        *d = gv * av;
                    }
                    if neuron == NeuronType::QuadraLib {
                        dz[row(2)].copy_from_slice(go);
                    }
                }
                _ => unreachable!("no product epilogue for {neuron}"),
            }
        }
    }
}

struct FwdScratch<'a, T> {
    cols: TrackedVec<T>,
    lc: TrackedVec<T>,
    z: TrackedVec<T>,
    q: TrackedVec<T>,
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
pub fn forward<T: Float>(
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
    // t3, t4, fan: the stored planes are all of z; GEMM straight into them
    let direct = stored && r == nb && nb > 0;
    let kp_per = if stored { r * c * l } else { 0 };
    let kl_per = if stored {
        op.kept_lifted_per_image()
    } else {
        0
    };
    let kps = split_by(keep_planes, kp_per, &ranges);
    let kls = split_by(keep_lifted, kl_per, &ranges);
    let mut scratch: Vec<FwdScratch<T>> = kps
        .into_iter()
        .zip(kls)
        .map(|(kp, kl)| FwdScratch {
            cols: ws(op.cols_len()),
            lc: ws(if lift == Lift::Outer && stored {
                0
            } else {
                op.lift_rows() * pmax
            }),
            z: ws(if direct { 0 } else { m * pmax }),
            q: ws(if lift == Lift::None { 0 } else { c * pmax }),
            kp,
            kl,
        })
        .collect();
    let (map1, map2) = (op.map1(), op.map2());
    par_item_chunks(y, c * l, n, &mut scratch, |imgs, yc, s| {
        let c0 = imgs.start;
        for u in op.units(imgs) {
            let (a, b) = (u.start - c0, u.end - c0);
            let p = u.len() * l;
            let cols = op.unit_cols(x, &u, &mut s.cols);
            if nb > 0 {
                let zb: &mut [T] = if direct {
                    &mut s.kp[a * m * l..b * m * l]
                } else {
                    &mut s.z[..m * p]
                };
                map1.fwd(nb, wt.w1, cols, p, zb);
                if let Some(b1) = wt.b1 {
                    add_bias_planes(zb, l, b1);
                }
                if stored && !direct && r > 0 {
                    // quadralib keeps a, b but not c
                    let kp = &mut s.kp[a * r * c * l..b * r * c * l];
                    for (dst, src) in kp.chunks_exact_mut(r * c * l).zip(s.z.chunks_exact(m * l)) {
                        dst.copy_from_slice(&src[..r * c * l]);
                    }
                }
            }
            let zb: &[T] = if direct {
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
                add_bias_planes(q, l, b2);
            }
            epilogue_fwd(neuron, c, l, zb, q, &mut yc[a * c * l..b * c * l]);
        }
    });
}

struct BwdScratch<T> {
    cols: TrackedVec<T>,
    lc: TrackedVec<T>,
    z: TrackedVec<T>,
    dz: TrackedVec<T>,
    dcols: TrackedVec<T>,
    dlc: TrackedVec<T>,
}

/// Backward of every neuron but quadralib-bn. `planes`/`lifted` are what a stored forward
/// kept (empty in recompute mode, where the R leading branch planes are recomputed from x
/// with one GEMM per unit and the lifted input from the columns). g (N, C, L) is dL/dy;
/// writes dx (like x) and returns the weight gradients.
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Float>(
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
    let chunks = chunk_ranges(n).len();
    let needs_dz = !matches!(neuron, NeuronType::T1 | NeuronType::T2);
    let mut scratch: Vec<BwdScratch<T>> = (0..chunks)
        .map(|_| BwdScratch {
            cols: ws(op.cols_len()),
            lc: ws(match lift {
                Lift::Outer if stored => 0,
                Lift::Square if stored && op.dense => 0,
                _ => op.lift_rows() * pmax,
            }),
            z: ws(if stored { 0 } else { r * c * pmax }),
            dz: ws(if needs_dz { m * pmax } else { 0 }),
            dcols: ws(op.cols_len()),
            dlc: ws(op.lift_rows() * pmax),
        })
        .collect();
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
        for u in op.units(imgs) {
            let (a, b) = (u.start - c0, u.end - c0);
            let p = u.len() * l;
            let cols = op.unit_cols(x, &u, &mut s.cols);
            let gs = &g[u.start * c * l..u.end * c * l];
            // the branch planes backward reads: kept, or recomputed with one GEMM
            let pl: &[T] = if r == 0 {
                &[]
            } else if stored {
                &planes[u.start * r * c * l..u.end * r * c * l]
            } else {
                let z = &mut s.z[..r * c * p];
                map1.fwd(r, wt.w1, cols, p, z);
                if let Some(b1) = wt.b1 {
                    add_bias_planes(z, l, &b1[..r * c]);
                }
                z
            };
            let dzs: &[T] = match neuron {
                NeuronType::T1 => gs,
                NeuronType::T2 => &[],
                _ => {
                    epilogue_bwd(neuron, c, l, pl, gs, &mut s.dz[..m * p]);
                    &s.dz[..m * p]
                }
            };
            {
                let dc: &mut [T] = if op.dense {
                    &mut dxc[a * in_len..b * in_len]
                } else {
                    &mut s.dcols[..]
                };
                if nb > 0 {
                    map1.bwd_w(nb, dzs, cols, p, &mut gr.w1);
                    if wt.b1.is_some() {
                        rowsum_planes(dzs, l, &mut gr.b1);
                    }
                    map1.bwd_in(nb, wt.w1, dzs, p, dc);
                } else {
                    dc.fill(T::zero());
                }
                if lift != Lift::None {
                    let lr = op.lift_rows();
                    let lc: &[T] = match lift {
                        Lift::Square if stored => {
                            let xx = &lifted[u.start * in_len..u.end * in_len];
                            if op.dense {
                                xx
                            } else {
                                let buf = &mut s.lc[..lr * p];
                                convops::im2col(&op.geom, xx, op.h, op.w, op.ho, op.wo, buf);
                                buf
                            }
                        }
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
                    map2.bwd_w(1, gs, lc, p, &mut gr.w2);
                    if wt.b2.is_some() {
                        rowsum_planes(gs, l, &mut gr.b2);
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
                let dxi = &mut dxc[a * in_len..b * in_len];
                dxi.fill(T::zero());
                convops::col2im(&op.geom, &s.dcols, op.h, op.w, op.ho, op.wo, dxi);
            }
        }
        gr
    });
    reduce_grads(parts)
}

fn reduce_grads<T: Float>(parts: Vec<Grads<T>>) -> Grads<T> {
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

// ---------------------------------------------------------------------------------------
// quadralib-bn: y = A ⊙ B + C, A = γ_a ẑ_a + β_a, ẑ = (z − mean)·rstd per stacked channel.
// BN over the stacked planes z (N, 3C, L) is the three per-branch BNs.

/// Σ f(v) over a row with 8 independent f64 accumulators.
#[inline(always)]
fn lane_sum<T: Float>(r: &[T], f: impl Fn(T) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut it = r.chunks_exact(8);
    for c in &mut it {
        let c: &[T; 8] = c.try_into().unwrap();
        for e in 0..8 {
            acc[e] += f(c[e]);
        }
    }
    let mut s: f64 = it.remainder().iter().map(|&v| f(v)).sum();
    for a in acc {
        s += a;
    }
    s
}

/// Per stacked channel: count, mean and Σ(z − mean)², merged with Chan's formula.
struct Moments {
    cnt: f64,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl Moments {
    fn empty(m: usize) -> Self {
        Moments {
            cnt: 0.0,
            mean: vec![0.0; m],
            m2: vec![0.0; m],
        }
    }
    /// Two-pass moments of z (nu, M, L) per channel (8-lane f64 sums, so they vectorize).
    fn of<T: Float>(z: &[T], m: usize, l: usize) -> Self {
        let nu = z.len() / (m * l);
        let cnt = (nu * l) as f64;
        let mut mo = Moments::empty(m);
        mo.cnt = cnt;
        for ch in 0..m {
            let rows = || (0..nu).map(|j| &z[(j * m + ch) * l..(j * m + ch + 1) * l]);
            let mean = rows().map(|r| lane_sum(r, |v| v.f64())).sum::<f64>() / cnt;
            mo.m2[ch] = rows()
                .map(|r| lane_sum(r, |v| (v.f64() - mean) * (v.f64() - mean)))
                .sum();
            mo.mean[ch] = mean;
        }
        mo
    }

    fn merge(&mut self, o: &Moments) {
        if o.cnt == 0.0 {
            return;
        }
        let n = self.cnt + o.cnt;
        for ch in 0..self.mean.len() {
            let d = o.mean[ch] - self.mean[ch];
            self.mean[ch] += d * o.cnt / n;
            self.m2[ch] += o.m2[ch] + d * d * self.cnt * o.cnt / n;
        }
        self.cnt = n;
    }
}

/// Per stacked channel scale γ·rstd and shift β − mean·γ·rstd (so A = z·s + t).
fn scale_shift<T: Float>(gamma: &[T], beta: &[T], mean: &[T], rstd: &[T]) -> (Vec<T>, Vec<T>) {
    let s: Vec<T> = gamma.iter().zip(rstd).map(|(&g, &r)| g * r).collect();
    let t = beta
        .iter()
        .zip(mean)
        .zip(&s)
        .map(|((&b, &mu), &sv)| b - mu * sv)
        .collect();
    (s, t)
}

/// y = (z_a s_a + t_a)(z_b s_b + t_b) + z_c s_c + t_c for z (nu, 3C, L), y (nu, C, L);
/// writes A, B into `ab` (nu, 2C, L) when given.
fn epilogue_bn_fwd<T: Float>(
    c: usize,
    l: usize,
    z: &[T],
    s: &[T],
    t: &[T],
    y: &mut [T],
    mut ab: Option<&mut [T]>,
) {
    let nu = y.len() / (c * l);
    let m = 3 * c;
    for j in 0..nu {
        for o in 0..c {
            let row = |k: usize| &z[(j * m + k * c + o) * l..(j * m + k * c + o + 1) * l];
            let (za, zb, zc) = (row(0), row(1), row(2));
            let (sa, ta, sb, tb, sc, tc) =
                (s[o], t[o], s[c + o], t[c + o], s[2 * c + o], t[2 * c + o]);
            let yo = &mut y[(j * c + o) * l..(j * c + o + 1) * l];
            match ab.as_deref_mut() {
                Some(ab) => {
                    let (ar, br) = ab[(j * 2 * c + o) * l..].split_at_mut(c * l);
                    let it = yo.iter_mut().zip(&mut ar[..l]).zip(&mut br[..l]);
                    for ((((yv, av), bv), &a), (&b, &cc)) in it.zip(za).zip(zb.iter().zip(zc)) {
                        *av = a * sa + ta;
                        *bv = b * sb + tb;
                        *yv = *av * *bv + (cc * sc + tc);
                    }
                }
                None => {
                    for (((yv, &a), &b), &cc) in yo.iter_mut().zip(za).zip(zb).zip(zc) {
                        *yv = (a * sa + ta) * (b * sb + tb) + (cc * sc + tc);
                    }
                }
            }
        }
    }
}

/// Training forward of quadralib-bn. Pass 1: z (N, 3C, L) = W1·x (+ b1), one GEMM per
/// unit, with the per-channel moments of each unit taken while it is hot. Pass 2: the fused
/// epilogue from z and the batch statistics (no normalised tensor is made), writing
/// A, B (N, 2C, L) into `ab` when given (stored mode). Returns (mean, biased var, rstd),
/// each (3C).
#[allow(clippy::too_many_arguments)]
pub fn bn_forward<T: Float>(
    op: &QuadOp,
    n: usize,
    x: &[T],
    wt: &Weights<T>,
    eps: f64,
    z: &mut [T],
    y: &mut [T],
    ab: Option<&mut [T]>,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (c, l, m) = (op.c(), op.l(), op.m());
    let ranges = chunk_ranges(n);
    let map1 = op.map1();
    let mut cols: Vec<TrackedVec<T>> = ranges.iter().map(|_| ws(op.cols_len())).collect();
    let parts = par_item_chunks(z, m * l, n, &mut cols, |imgs, zc, cbuf| {
        let c0 = imgs.start;
        let mut mo = Moments::empty(m);
        for u in op.units(imgs) {
            let p = u.len() * l;
            let zu = &mut zc[(u.start - c0) * m * l..(u.end - c0) * m * l];
            let cols = op.unit_cols(x, &u, cbuf);
            map1.fwd(3, wt.w1, cols, p, zu);
            if let Some(b1) = wt.b1 {
                add_bias_planes(zu, l, b1);
            }
            mo.merge(&Moments::of(zu, m, l));
        }
        mo
    });
    let mut mo = Moments::empty(m);
    for p in &parts {
        mo.merge(p);
    }
    let mean: Vec<T> = mo.mean.iter().map(|&v| T::of(v)).collect();
    let var: Vec<T> = mo.m2.iter().map(|&v| T::of(v / mo.cnt)).collect();
    let rstd = crate::ops::norm::rstd(&var, eps);
    let (s, t) = scale_shift(wt.gamma, wt.beta, &mean, &rstd);
    let z: &[T] = z;
    let abs: Vec<Option<&mut [T]>> = match ab {
        Some(ab) => split_by(ab, 2 * c * l, &ranges)
            .into_iter()
            .map(Some)
            .collect(),
        None => ranges.iter().map(|_| None).collect(),
    };
    let mut abs = abs;
    par_item_chunks(y, c * l, n, &mut abs, |imgs, yc, abc| {
        let zc = &z[imgs.start * m * l..imgs.end * m * l];
        epilogue_bn_fwd(c, l, zc, &s, &t, yc, abc.as_deref_mut());
    });
    (mean, var, rstd)
}

/// Inference of quadralib-bn with the given (running) statistics, one pass, nothing kept.
pub fn bn_infer<T: Float>(
    op: &QuadOp,
    n: usize,
    x: &[T],
    wt: &Weights<T>,
    mean: &[T],
    rstd: &[T],
    y: &mut [T],
) {
    let (c, l, m) = (op.c(), op.l(), op.m());
    let pmax = op.pmax(n);
    let map1 = op.map1();
    let (s, t) = scale_shift(wt.gamma, wt.beta, mean, rstd);
    let mut scratch: Vec<(TrackedVec<T>, TrackedVec<T>)> = chunk_ranges(n)
        .iter()
        .map(|_| (ws(op.cols_len()), ws(m * pmax)))
        .collect();
    par_item_chunks(y, c * l, n, &mut scratch, |imgs, yc, (cbuf, zbuf)| {
        let c0 = imgs.start;
        for u in op.units(imgs) {
            let p = u.len() * l;
            let cols = op.unit_cols(x, &u, cbuf);
            let zu = &mut zbuf[..m * p];
            map1.fwd(3, wt.w1, cols, p, zu);
            if let Some(b1) = wt.b1 {
                add_bias_planes(zu, l, b1);
            }
            let yu = &mut yc[(u.start - c0) * c * l..(u.end - c0) * c * l];
            epilogue_bn_fwd(c, l, zu, &s, &t, yu, None);
        }
    });
}

/// Per-stacked-channel constants of output channel o: [v_a, v_b, v_c].
#[inline(always)]
fn consts<T: Float>(v: &[T], c: usize, o: usize) -> [T; 3] {
    [v[o], v[c + o], v[2 * c + o]]
}

/// The rows of A and B for image j, channel o: kept (`ab`) or empty (recomputed).
#[inline(always)]
fn ab_rows<T: Float>(ab: Option<&[T]>, c: usize, l: usize, j: usize, o: usize) -> (&[T], &[T]) {
    match ab {
        Some(ab) => (
            &ab[(j * 2 * c + o) * l..(j * 2 * c + o + 1) * l],
            &ab[(j * 2 * c + c + o) * l..(j * 2 * c + c + o + 1) * l],
        ),
        None => (&[], &[]),
    }
}

/// Per-channel BN constants of one output channel, each [a, b, c].
struct Bn3<T> {
    s: [T; 3],
    t: [T; 3],
    mean: [T; 3],
    rstd: [T; 3],
}

impl<T: Float> Bn3<T> {
    fn of(s: &[T], t: &[T], mean: &[T], rstd: &[T], c: usize, o: usize) -> Self {
        Bn3 {
            s: consts(s, c, o),
            t: consts(t, c, o),
            mean: consts(mean, c, o),
            rstd: consts(rstd, c, o),
        }
    }

    /// One position of the BN backward: ([dA, dB, dC], [ẑ_a, ẑ_b, ẑ_c]) from z, g and
    /// A, B. `KEPT`: A, B are read from `abv`, else recomputed as z·s + t (the forward's
    /// formula, so both modes agree bit for bit).
    #[inline(always)]
    fn point<const KEPT: bool>(&self, z: [T; 3], abv: [T; 2], gv: T) -> ([T; 3], [T; 3]) {
        let (av, bv) = if KEPT {
            (abv[0], abv[1])
        } else {
            (z[0] * self.s[0] + self.t[0], z[1] * self.s[1] + self.t[1])
        };
        (
            [gv * bv, gv * av, gv],
            [
                (z[0] - self.mean[0]) * self.rstd[0],
                (z[1] - self.mean[1]) * self.rstd[1],
                (z[2] - self.mean[2]) * self.rstd[2],
            ],
        )
    }
}

/// The sums of one row with 8 lane accumulators (so the loop vectorizes):
/// [Σ dA, Σ dB, Σ dC, Σ dA·ẑ_a, Σ dB·ẑ_b, Σ dC·ẑ_c].
fn bn_sums_row<T: Float, const KEPT: bool>(
    zr: [&[T]; 3],
    abr: [&[T]; 2],
    g: &[T],
    k: &Bn3<T>,
) -> [T; 6] {
    let l = g.len();
    let mut acc = [[T::zero(); 8]; 6];
    let l8 = l / 8 * 8;
    for base in (0..l8).step_by(8) {
        let z8: [&[T; 8]; 3] = zr.map(|r| r[base..base + 8].try_into().unwrap());
        let g8: &[T; 8] = g[base..base + 8].try_into().unwrap();
        let ab8: [&[T]; 2] = if KEPT {
            abr.map(|r| &r[base..base + 8])
        } else {
            [&[], &[]]
        };
        for e in 0..8 {
            let abv = if KEPT {
                [ab8[0][e], ab8[1][e]]
            } else {
                [T::zero(); 2]
            };
            let (d, h) = k.point::<KEPT>([z8[0][e], z8[1][e], z8[2][e]], abv, g8[e]);
            for b in 0..3 {
                acc[b][e] += d[b];
                acc[3 + b][e] += d[b] * h[b];
            }
        }
    }
    let mut out = [T::zero(); 6];
    for i in l8..l {
        let abv = if KEPT {
            [abr[0][i], abr[1][i]]
        } else {
            [T::zero(); 2]
        };
        let (d, h) = k.point::<KEPT>([zr[0][i], zr[1][i], zr[2][i]], abv, g[i]);
        for b in 0..3 {
            out[b] += d[b];
            out[3 + b] += d[b] * h[b];
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        for v in a {
            *o += v;
        }
    }
    out
}

/// Per-channel sums of the BN backward for one unit, added into `acc` (6C: Σ dY then
/// Σ dY·ẑ, each over the 3C stacked channels), with dA = g⊙B, dB = g⊙A, dC = g.
#[allow(clippy::too_many_arguments)]
fn bn_sums<T: Float>(
    c: usize,
    l: usize,
    z: &[T],
    ab: Option<&[T]>,
    g: &[T],
    mean: &[T],
    rstd: &[T],
    s: &[T],
    t: &[T],
    acc: &mut [f64],
) {
    let nu = g.len() / (c * l);
    let m = 3 * c;
    for j in 0..nu {
        for o in 0..c {
            let zr = [0, 1, 2].map(|k| &z[(j * m + k * c + o) * l..(j * m + k * c + o + 1) * l]);
            let go = &g[(j * c + o) * l..(j * c + o + 1) * l];
            let (ar, br) = ab_rows(ab, c, l, j, o);
            let k = Bn3::of(s, t, mean, rstd, c, o);
            let sum = if ab.is_some() {
                bn_sums_row::<T, true>(zr, [ar, br], go, &k)
            } else {
                bn_sums_row::<T, false>(zr, [ar, br], go, &k)
            };
            for b in 0..3 {
                acc[b * c + o] += sum[b].f64();
                acc[m + b * c + o] += sum[3 + b].f64();
            }
        }
    }
}

/// dz of one row: dz = γ·rstd·(dY − ΣdY/M − ẑ·ΣdYẑ/M) per branch; `f` = [γ·rstd,
/// ΣdY/M, ΣdYẑ/M], each [a, b, c].
fn bn_dz_row<T: Float, const KEPT: bool>(
    zr: [&[T]; 3],
    abr: [&[T]; 2],
    g: &[T],
    k: &Bn3<T>,
    f: &[[T; 3]; 3],
    dz: [&mut [T]; 3],
) {
    let [d0, d1, d2] = dz;
    let (z0, z1, z2) = (&zr[0][..g.len()], &zr[1][..g.len()], &zr[2][..g.len()]);
    let (d0, d1, d2) = (&mut d0[..g.len()], &mut d1[..g.len()], &mut d2[..g.len()]);
    let [k1, m1, m2] = f;
    for i in 0..g.len() {
        let abv = if KEPT {
            [abr[0][i], abr[1][i]]
        } else {
            [T::zero(); 2]
        };
        let (d, h) = k.point::<KEPT>([z0[i], z1[i], z2[i]], abv, g[i]);
        d0[i] = k1[0] * (d[0] - m1[0] - h[0] * m2[0]);
        d1[i] = k1[1] * (d[1] - m1[1] - h[1] * m2[1]);
        d2[i] = k1[2] * (d[2] - m1[2] - h[2] * m2[2]);
    }
}

/// dz (nu, 3C, L) of one unit.
#[allow(clippy::too_many_arguments)]
fn bn_dz<T: Float>(
    c: usize,
    l: usize,
    z: &[T],
    ab: Option<&[T]>,
    g: &[T],
    mean: &[T],
    rstd: &[T],
    s: &[T],
    t: &[T],
    k1: &[T],
    m1: &[T],
    m2: &[T],
    dz: &mut [T],
) {
    let nu = g.len() / (c * l);
    let m = 3 * c;
    for (j, dzj) in dz.chunks_exact_mut(m * l).enumerate().take(nu) {
        let (da, rest) = dzj.split_at_mut(c * l);
        let (db, dc) = rest.split_at_mut(c * l);
        for o in 0..c {
            let zr = [0, 1, 2].map(|k| &z[(j * m + k * c + o) * l..(j * m + k * c + o + 1) * l]);
            let go = &g[(j * c + o) * l..(j * c + o + 1) * l];
            let (ar, br) = ab_rows(ab, c, l, j, o);
            let out = [
                &mut da[o * l..(o + 1) * l],
                &mut db[o * l..(o + 1) * l],
                &mut dc[o * l..(o + 1) * l],
            ];
            let k = Bn3::of(s, t, mean, rstd, c, o);
            let f = [consts(k1, c, o), consts(m1, c, o), consts(m2, c, o)];
            if ab.is_some() {
                bn_dz_row::<T, true>(zr, [ar, br], go, &k, &f, out);
            } else {
                bn_dz_row::<T, false>(zr, [ar, br], go, &k, &f, out);
            }
        }
    }
}

/// Training backward of quadralib-bn. `kept` = (z (N, 3C, L), A‖B (N, 2C, L)) in stored
/// mode; in recompute mode z is recomputed into a transient workspace with one GEMM per unit
/// (pass 1) and A, B are recomputed from it. Pass 1 takes the per-channel sums; pass 2 forms
/// dz and runs the stacked conv backward. Returns gradients including γ and β (3C).
#[allow(clippy::too_many_arguments)]
pub fn bn_backward<T: Float>(
    op: &QuadOp,
    n: usize,
    x: &[T],
    wt: &Weights<T>,
    g: &[T],
    kept: Option<(&[T], &[T])>,
    mean: &[T],
    rstd: &[T],
    dx: &mut [T],
) -> Grads<T> {
    let (c, l, m) = (op.c(), op.l(), op.m());
    let in_len = op.in_len();
    let pmax = op.pmax(n);
    let chunks = chunk_ranges(n).len();
    let map1 = op.map1();
    let (s, t) = scale_shift(wt.gamma, wt.beta, mean, rstd);
    // pass 1: sums (recomputing z when not kept)
    let mut zw = ws::<T>(if kept.is_some() { 0 } else { n * m * l });
    let mut cols: Vec<TrackedVec<T>> = (0..chunks).map(|_| ws(op.cols_len())).collect();
    let parts: Vec<Vec<f64>> = match kept {
        Some((z, ab)) => par_item_chunks(&mut [] as &mut [T], 0, n, &mut cols, |imgs, _, _| {
            let mut acc = vec![0.0; 2 * m];
            bn_sums(
                c,
                l,
                &z[imgs.start * m * l..imgs.end * m * l],
                Some(&ab[imgs.start * 2 * c * l..imgs.end * 2 * c * l]),
                &g[imgs.start * c * l..imgs.end * c * l],
                mean,
                rstd,
                &s,
                &t,
                &mut acc,
            );
            acc
        }),
        None => par_item_chunks(&mut zw, m * l, n, &mut cols, |imgs, zc, cbuf| {
            let mut acc = vec![0.0; 2 * m];
            let c0 = imgs.start;
            for u in op.units(imgs) {
                let p = u.len() * l;
                let zu = &mut zc[(u.start - c0) * m * l..(u.end - c0) * m * l];
                let cols = op.unit_cols(x, &u, cbuf);
                map1.fwd(3, wt.w1, cols, p, zu);
                if let Some(b1) = wt.b1 {
                    add_bias_planes(zu, l, b1);
                }
                let gu = &g[u.start * c * l..u.end * c * l];
                bn_sums(c, l, zu, None, gu, mean, rstd, &s, &t, &mut acc);
            }
            acc
        }),
    };
    let mut sums = vec![0.0f64; 2 * m];
    for p in parts {
        for (a, b) in sums.iter_mut().zip(p) {
            *a += b;
        }
    }
    let cnt = (n * l) as f64;
    let k1: Vec<T> = wt.gamma.iter().zip(rstd).map(|(&g, &r)| g * r).collect();
    let m1: Vec<T> = sums[..m].iter().map(|&v| T::of(v / cnt)).collect();
    let m2: Vec<T> = sums[m..].iter().map(|&v| T::of(v / cnt)).collect();
    let (zall, aball): (&[T], Option<&[T]>) = match kept {
        Some((z, ab)) => (z, Some(ab)),
        None => (&zw[..], None),
    };
    // pass 2: dz, then the stacked conv backward
    let mut scratch: Vec<(TrackedVec<T>, TrackedVec<T>, TrackedVec<T>)> = (0..chunks)
        .map(|_| (ws(op.cols_len()), ws(m * pmax), ws(op.cols_len())))
        .collect();
    let w1n = wt.w1.len();
    let parts = par_item_chunks(
        dx,
        in_len,
        n,
        &mut scratch,
        |imgs, dxc, (cbuf, dzb, dcb)| {
            let mut gr = Grads {
                w1: vec![T::zero(); w1n],
                b1: vec![T::zero(); wt.b1.map_or(0, |b| b.len())],
                ..Grads::default()
            };
            let c0 = imgs.start;
            for u in op.units(imgs) {
                let (a, b) = (u.start - c0, u.end - c0);
                let p = u.len() * l;
                let dz = &mut dzb[..m * p];
                bn_dz(
                    c,
                    l,
                    &zall[u.start * m * l..u.end * m * l],
                    aball.map(|ab| &ab[u.start * 2 * c * l..u.end * 2 * c * l]),
                    &g[u.start * c * l..u.end * c * l],
                    mean,
                    rstd,
                    &s,
                    &t,
                    &k1,
                    &m1,
                    &m2,
                    dz,
                );
                let cols = op.unit_cols(x, &u, cbuf);
                map1.bwd_w(3, dz, cols, p, &mut gr.w1);
                if wt.b1.is_some() {
                    rowsum_planes(dz, l, &mut gr.b1);
                }
                if op.dense {
                    map1.bwd_in(3, wt.w1, dz, p, &mut dxc[a * in_len..b * in_len]);
                } else {
                    map1.bwd_in(3, wt.w1, dz, p, dcb);
                    let dxi = &mut dxc[a * in_len..b * in_len];
                    dxi.fill(T::zero());
                    convops::col2im(&op.geom, dcb, op.h, op.w, op.ho, op.wo, dxi);
                }
            }
            gr
        },
    );
    let mut gr = reduce_grads(parts);
    gr.gamma = sums[m..].iter().map(|&v| T::of(v)).collect();
    gr.beta = sums[..m].iter().map(|&v| T::of(v)).collect();
    gr
}

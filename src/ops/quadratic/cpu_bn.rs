//! quadralib-bn on the CPU engine (step 4 of the parent module, fused with step 1): the
//! stacked map with the batch moments taken while each unit is hot, the normalising
//! epilogue (no normalised tensor is made), inference with the running statistics and the
//! two-pass backward.

use super::cpu::{
    add_bias_planes, gather, reduce_grads, rowsum_planes, scatter, split_by, ws, Grads, Weights,
};
use super::QuadOp;
use crate::device::alloc::TrackedVec;
use crate::ops::{chunk_ranges, par_item_chunks, par_scratch};
use crate::tensor::Float;

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

/// Per chunk: a unit's columns and, when units are blocked, its stacked planes (3C, B·L).
fn stacked_scratch<T: Float>(op: &QuadOp, n: usize) -> Vec<(TrackedVec<T>, TrackedVec<T>)> {
    let blk = if op.images_per_unit(n) > 1 {
        op.m() * op.pmax(n)
    } else {
        0
    };
    par_scratch(chunk_ranges(n).len(), || (ws(op.cols_len(n)), ws(blk)))
}

/// zu (B, 3C, L) = W1·x (+ b1) for unit `u`: one GEMM, through `zblk` when the unit is
/// blocked (its product is (3C, B·L)).
fn stacked_map<T: Float>(
    op: &QuadOp,
    x: &[T],
    wt: &Weights<T>,
    u: &std::ops::Range<usize>,
    cbuf: &mut [T],
    zblk: &mut [T],
    zu: &mut [T],
) {
    let (p, m) = (u.len() * op.l(), op.m());
    let cols = op.unit_cols(x, u, cbuf);
    if op.blocked(u) {
        op.map1().fwd(3, wt.w1, cols, p, &mut zblk[..m * p]);
        scatter(&zblk[..m * p], m, op.l(), zu);
    } else {
        op.map1().fwd(3, wt.w1, cols, p, zu);
    }
    if let Some(b1) = wt.b1 {
        add_bias_planes(zu, op.l(), b1);
    }
}

/// Training forward of quadralib-bn. Pass 1: z (N, 3C, L) = W1·x (+ b1), one GEMM per
/// unit, with the per-channel moments of each unit taken while it is hot. Pass 2: the fused
/// epilogue from z and the batch statistics (no normalised tensor is made), writing
/// A, B (N, 2C, L) into `ab` when given (stored mode). Returns (mean, biased var, rstd),
/// each (3C).
#[allow(clippy::too_many_arguments)]
pub(super) fn bn_forward<T: Float>(
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
    let mut scratch = stacked_scratch(op, n);
    let parts = par_item_chunks(z, m * l, n, &mut scratch, |imgs, zc, (cbuf, zblk)| {
        let c0 = imgs.start;
        let mut mo = Moments::empty(m);
        for u in op.units(imgs, n) {
            let zu = &mut zc[(u.start - c0) * m * l..(u.end - c0) * m * l];
            stacked_map(op, x, wt, &u, cbuf, zblk, zu);
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
    let rstd = crate::ops::norm::cpu::rstd(&var, eps);
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
pub(super) fn bn_infer<T: Float>(
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
    let yblk = if op.images_per_unit(n) > 1 {
        c * pmax
    } else {
        0
    };
    let map1 = op.map1();
    let (s, t) = scale_shift(wt.gamma, wt.beta, mean, rstd);
    let mut scratch = par_scratch(chunk_ranges(n).len(), || {
        (ws(op.cols_len(n)), ws(m * pmax), ws(yblk))
    });
    par_item_chunks(y, c * l, n, &mut scratch, |imgs, yc, (cbuf, zbuf, ybuf)| {
        let c0 = imgs.start;
        for u in op.units(imgs, n) {
            let (p, lu) = (u.len() * l, op.unit_l(&u));
            let cols = op.unit_cols(x, &u, cbuf);
            let zu = &mut zbuf[..m * p];
            map1.fwd(3, wt.w1, cols, p, zu);
            if let Some(b1) = wt.b1 {
                add_bias_planes(zu, lu, b1);
            }
            let yu = &mut yc[(u.start - c0) * c * l..(u.end - c0) * c * l];
            if op.blocked(&u) {
                epilogue_bn_fwd(c, lu, zu, &s, &t, &mut ybuf[..c * p], None);
                scatter(&ybuf[..c * p], c, l, yu);
            } else {
                epilogue_bn_fwd(c, lu, zu, &s, &t, yu, None);
            }
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
pub(super) fn bn_backward<T: Float>(
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
    let mut cols = stacked_scratch(op, n);
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
        None => par_item_chunks(&mut zw, m * l, n, &mut cols, |imgs, zc, (cbuf, zblk)| {
            let mut acc = vec![0.0; 2 * m];
            let c0 = imgs.start;
            for u in op.units(imgs, n) {
                let zu = &mut zc[(u.start - c0) * m * l..(u.end - c0) * m * l];
                stacked_map(op, x, wt, &u, cbuf, zblk, zu);
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
    // pass 2: dz, then the stacked conv backward; per chunk: columns, dz (B, 3C, L), its
    // block (3C, B·L) when blocked, the column gradient
    let dzblk = if op.images_per_unit(n) > 1 {
        m * pmax
    } else {
        0
    };
    let mut scratch = par_scratch(chunks, || {
        let cols = op.cols_len(n);
        (ws(cols), ws(m * pmax), ws(dzblk), ws(cols))
    });
    let w1n = wt.w1.len();
    let parts = par_item_chunks(
        dx,
        in_len,
        n,
        &mut scratch,
        |imgs, dxc, (cbuf, dzb, dzblk, dcb)| {
            let mut gr = Grads {
                w1: vec![T::zero(); w1n],
                b1: vec![T::zero(); wt.b1.map_or(0, |b| b.len())],
                ..Grads::default()
            };
            let c0 = imgs.start;
            for u in op.units(imgs, n) {
                let (a, b) = (u.start - c0, u.end - c0);
                let (p, lu) = (u.len() * l, op.unit_l(&u));
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
                let dz: &[T] = if op.blocked(&u) {
                    gather(dz, m, l, &mut dzblk[..m * p]);
                    &dzblk[..m * p]
                } else {
                    dz
                };
                let cols = op.unit_cols(x, &u, cbuf);
                map1.bwd_w(3, dz, cols, p, &mut gr.w1, u.start > c0);
                if wt.b1.is_some() {
                    rowsum_planes(dz, lu, &mut gr.b1);
                }
                if op.dense {
                    map1.bwd_in(3, wt.w1, dz, p, &mut dxc[a * in_len..b * in_len]);
                } else {
                    let dcols = &mut dcb[..op.k() * p];
                    map1.bwd_in(3, wt.w1, dz, p, dcols);
                    op.unit_col2im(dcols, &u, &mut dxc[a * in_len..b * in_len]);
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

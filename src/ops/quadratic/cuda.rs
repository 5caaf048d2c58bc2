//! Quadratic neurons on the CUDA backend: the fused epilogues of `cuda/quadratic.cu` and
//! their backward, the lifted inputs (x ⊙ x for t2/fan, u ⊗ u for t1) and t1's lifted map
//! (GEMMs through the runtime), and quadralib-bn's batch statistics (`bn_stats_f32` of
//! cuda/reduce.cu), running statistics and fused BN epilogues.
//!
//! Layout (the parent module's): per-output values are planes (N, M, L), L = Ho·Wo for conv
//! and 1 for linear. The first-order branches are ONE stacked map (`ops::conv::cuda`, nb
//! branches) whose output z (N, nb·C, L) holds branch k of channel c at k·C + c; an
//! epilogue turns z (and the lifted branch q (N, C, L)) into y (N, C, L). Biases are added
//! by the maps (`bias_add_f32`) before an epilogue runs, as on the CPU.

use std::ops::Range;

use super::Epilogue;
use crate::device::alloc::Category;
use crate::device::{Gemm, KArg};
use crate::ops::launch::{
    channel_grid, check_all, expect_numel, gemm, gpu_f32, int, kernel, launch, output,
    LaunchConfig, REDUCE_BLOCK,
};
use crate::tensor::Tensor;
use crate::Result;

/// The plane dims (N, C, L) of one layer call: N samples, C output channels, L positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planes {
    pub n: usize,
    pub c: usize,
    pub l: usize,
}

impl Planes {
    /// Elements of `k` stacked planes per sample: N·k·C·L.
    fn numel(&self, k: usize) -> usize {
        self.n * k * self.c * self.l
    }
    /// (N, C, L) as the kernels' `int` parameters.
    fn args(&self, op: &str) -> Result<[KArg; 3]> {
        Ok([
            KArg::I32(int(op, "N", self.n)?),
            KArg::I32(int(op, "C", self.c)?),
            KArg::I32(int(op, "L", self.l)?),
        ])
    }
}

/// An f32 output on `like`'s device of `shape`, which must hold `numel` elements.
fn out_like(op: &str, like: &Tensor, shape: &[usize], numel: usize) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    crate::ensure_shape!(
        n == numel,
        op,
        "output shape {shape:?} has {n} elements, the planes {numel}"
    );
    output(shape, like.device(), Category::Workspace)
}

/// y (`shape`, N·C·L elements) = the epilogue of z (N, nb·C, L) and, for t1 and fan, of the
/// lifted branch q (N, C, L).
pub fn epilogue_forward(
    kind: Epilogue,
    z: &Tensor,
    q: Option<&Tensor>,
    d: Planes,
    shape: &[usize],
) -> Result<Tensor> {
    let kern = match kind {
        Epilogue::T1 => &kernel::T1_FWD_F32,
        Epilogue::T3 => &kernel::T3_FWD_F32,
        Epilogue::T4 => &kernel::T4_FWD_F32,
        Epilogue::QuadraLib => &kernel::QUADRALIB_FWD_F32,
        Epilogue::Fan => &kernel::FAN_FWD_F32,
    };
    let op = kern.name;
    let rt = gpu_f32(op, "z", z)?;
    expect_numel(op, "z", z, d.numel(kind.branches()), "N, nb·C, L")?;
    let q = match (kind.has_q(), q) {
        (true, Some(q)) => {
            check_all(op, z.device(), &[("q", q)])?;
            expect_numel(op, "q", q, d.numel(1), "N, C, L")?;
            Some(q)
        }
        (false, None) => None,
        _ => {
            return Err(crate::Error::invalid(
                op,
                "the lifted branch q is given exactly for t1 and fan",
            ))
        }
    };
    let mut y = out_like(op, z, shape, d.numel(1))?;
    if d.numel(1) == 0 {
        return Ok(y);
    }
    let mut args = match (kind, q) {
        (Epilogue::T1, Some(q)) => vec![KArg::Ptr(q.dev_ptr()?), KArg::Ptr(z.dev_ptr()?)],
        (Epilogue::Fan, Some(q)) => vec![KArg::Ptr(z.dev_ptr()?), KArg::Ptr(q.dev_ptr()?)],
        _ => vec![KArg::Ptr(z.dev_ptr()?)],
    };
    args.push(KArg::Ptr(y.dev_ptr_mut()?));
    args.extend(d.args(op)?);
    // SAFETY: ([q,] z, [q,] y, N, C, L) as declared in quadratic.cu for `op`; z holds
    // N·nb·C·L f32 and q N·C·L (checked above, same device), y was just allocated with
    // N·C·L; the kernel reads z/q and writes y only below those counts.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(d.numel(1)), &args)? };
    Ok(y)
}

/// The stacked branch gradient gz from the planes backward reads and gy (N, C, L):
/// t3: a (N, C, L) → gz (N, C, L); t4 and fan: a‖b / r‖g (N, 2C, L) → gz (N, 2C, L) (one
/// kernel, `t4_bwd_f32`); quadralib: a‖b (N, 2C, L) → gz (N, 3C, L) (gc = gy).
/// t1's gz is gy itself; t2 has no first-order branch.
pub fn epilogue_backward(
    kind: Epilogue,
    planes: &Tensor,
    gy: &Tensor,
    d: Planes,
) -> Result<Tensor> {
    let (kern, kept, nb) = match kind {
        Epilogue::T3 => (&kernel::T3_BWD_F32, 1, 1),
        Epilogue::T4 | Epilogue::Fan => (&kernel::T4_BWD_F32, 2, 2),
        Epilogue::QuadraLib => (&kernel::QUADRALIB_BWD_AB_F32, 2, 3),
        Epilogue::T1 => {
            return Err(crate::Error::invalid(
                "epilogue_backward",
                "t1's branch gradient is the output gradient itself",
            ))
        }
    };
    let op = kern.name;
    let rt = gpu_f32(op, "planes", planes)?;
    check_all(op, planes.device(), &[("output gradient", gy)])?;
    expect_numel(op, "planes", planes, d.numel(kept), "N, R·C, L")?;
    expect_numel(op, "output gradient", gy, d.numel(1), "N, C, L")?;
    let mut gz = output(&[d.n, nb * d.c, d.l], gy.device(), Category::Workspace)?;
    if d.numel(1) == 0 {
        return Ok(gz);
    }
    let mut args = vec![
        KArg::Ptr(planes.dev_ptr()?),
        KArg::Ptr(gy.dev_ptr()?),
        KArg::Ptr(gz.dev_ptr_mut()?),
    ];
    args.extend(d.args(op)?);
    // SAFETY: (planes, gy, gz, N, C, L) as declared in quadratic.cu; planes holds
    // N·R·C·L f32 and gy N·C·L (checked), gz was just allocated with N·nb·C·L, and the
    // kernel's branch indices stay below those counts.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(d.numel(1)), &args)? };
    Ok(gz)
}

/// x ⊙ x, a new tensor shaped like x (the lifted input of t2 and fan).
pub fn square(x: &Tensor) -> Result<Tensor> {
    crate::ops::launch::unary(&kernel::QUAD_SQUARE_F32, x, Category::Workspace)
}

/// The adjoint of `square` at x: dx = [dx +] 2·x ⊙ dxx. With `acc` = Some(dx) it adds into
/// dx (whose storage must not be shared); else it returns a new tensor shaped like x.
pub fn square_backward(x: &Tensor, dxx: &Tensor, acc: Option<Tensor>) -> Result<Tensor> {
    let kern = &kernel::QUAD_SQUARE_BWD_F32;
    let op = kern.name;
    let rt = gpu_f32(op, "x", x)?;
    check_all(op, x.device(), &[("dxx", dxx)])?;
    let n = x.numel();
    expect_numel(op, "dxx", dxx, n, "like x")?;
    let accumulate = acc.is_some();
    let mut dx = match acc {
        Some(dx) => {
            check_all(op, x.device(), &[("dx", &dx)])?;
            expect_numel(op, "dx", &dx, n, "like x")?;
            dx
        }
        None => output(x.shape(), x.device(), Category::Workspace)?,
    };
    if n == 0 {
        return Ok(dx);
    }
    let args = [
        KArg::Ptr(x.dev_ptr()?),
        KArg::Ptr(dxx.dev_ptr()?),
        KArg::Ptr(dx.dev_ptr_mut()?),
        KArg::I64(n as i64),
        KArg::I32(accumulate as i32),
    ];
    // SAFETY: (x, dxx, dx, long long n, int accumulate); all three hold n f32 elements
    // (checked), and dx's storage is unshared (dev_ptr_mut), so it is neither x nor dxx.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(n), &args)? };
    Ok(dx)
}

/// The outer products of t1: u (N, K, L) → o (N, K², L), row i·K + j = u_i ⊙ u_j. For a
/// conv layer u is im2col(x); for a linear layer it is x itself (L = 1).
pub fn outer(u: &Tensor, n: usize, k: usize, l: usize) -> Result<Tensor> {
    let kern = &kernel::QUAD_OUTER_F32;
    let op = kern.name;
    let rt = gpu_f32(op, "u", u)?;
    expect_numel(op, "u", u, n * k * l, "N, K, L")?;
    let mut o = output(&[n, k * k, l], u.device(), Category::Workspace)?;
    let total = n * k * k * l;
    if total == 0 {
        return Ok(o);
    }
    let args = [
        KArg::Ptr(u.dev_ptr()?),
        KArg::Ptr(o.dev_ptr_mut()?),
        KArg::I32(int(op, "N", n)?),
        KArg::I32(int(op, "K", k)?),
        KArg::I32(int(op, "L", l)?),
    ];
    // SAFETY: (const float* u, float* o, int N, int K, int L); u holds N·K·L f32 (checked),
    // o was just allocated with N·K²·L; the kernel writes o below N·K²·L and reads u at
    // rows < K of each sample.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(total), &args)? };
    Ok(o)
}

/// The adjoint of `outer` at u: du_i = Σ_j (do_ij + do_ji)·u_j, a new tensor of `shape`
/// (N·K·L elements): do (N, K², L), u (N, K, L).
pub fn outer_backward(
    dout: &Tensor,
    u: &Tensor,
    n: usize,
    k: usize,
    l: usize,
    shape: &[usize],
) -> Result<Tensor> {
    let kern = &kernel::QUAD_OUTER_BWD_F32;
    let op = kern.name;
    let rt = gpu_f32(op, "u", u)?;
    check_all(op, u.device(), &[("d(u ⊗ u)", dout)])?;
    expect_numel(op, "u", u, n * k * l, "N, K, L")?;
    expect_numel(op, "d(u ⊗ u)", dout, n * k * k * l, "N, K², L")?;
    let mut du = out_like(op, u, shape, n * k * l)?;
    if n * k * l == 0 {
        return Ok(du);
    }
    let args = [
        KArg::Ptr(dout.dev_ptr()?),
        KArg::Ptr(u.dev_ptr()?),
        KArg::Ptr(du.dev_ptr_mut()?),
        KArg::I32(int(op, "N", n)?),
        KArg::I32(int(op, "K", k)?),
        KArg::I32(int(op, "L", l)?),
    ];
    // SAFETY: (do, u, du, N, K, L); do holds N·K²·L and u N·K·L f32 (checked), du was just
    // allocated with N·K·L; the kernel reads rows < K² / < K of each sample only.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(n * k * l), &args)? };
    Ok(du)
}

/// t1's lifted map: q (`shape`, N·C·L elements), q_n (C, L) = W_a (C, K²) · o_n (K², L) for
/// every sample (one strided-batched GEMM).
pub fn lifted_forward(
    w2: &Tensor,
    o: &Tensor,
    d: Planes,
    k2: usize,
    shape: &[usize],
) -> Result<Tensor> {
    let op = "quad_lifted_forward";
    gpu_f32(op, "u ⊗ u", o)?;
    check_all(op, o.device(), &[("lifted weight", w2)])?;
    expect_numel(op, "lifted weight", w2, d.c * k2, "C, K, K")?;
    expect_numel(op, "u ⊗ u", o, d.n * k2 * d.l, "N, K², L")?;
    let mut q = out_like(op, o, shape, d.numel(1))?;
    if d.numel(1) == 0 {
        return Ok(q);
    }
    if k2 == 0 {
        crate::ops::elementwise::cuda::fill(&mut q, 0.0)?;
        return Ok(q);
    }
    let gm = Gemm {
        stride_b: k2 * d.l,
        stride_c: d.c * d.l,
        batch: d.n,
        ..Gemm::dense(d.c, d.l, k2, w2.dev_ptr()?, o.dev_ptr()?, q.dev_ptr()?)
    };
    gemm(op, &gm, w2, o, &mut q)?;
    Ok(q)
}

/// The backward of `lifted_forward`: (dW_a (C, K²) = Σ_n g_n · o_nᵀ, do (N, K², L) = W_aᵀ·g_n).
pub fn lifted_backward(
    w2: &Tensor,
    o: &Tensor,
    gy: &Tensor,
    d: Planes,
    k2: usize,
) -> Result<(Tensor, Tensor)> {
    let op = "quad_lifted_backward";
    gpu_f32(op, "u ⊗ u", o)?;
    check_all(
        op,
        o.device(),
        &[("lifted weight", w2), ("output gradient", gy)],
    )?;
    expect_numel(op, "lifted weight", w2, d.c * k2, "C, K, K")?;
    expect_numel(op, "u ⊗ u", o, d.n * k2 * d.l, "N, K², L")?;
    expect_numel(op, "output gradient", gy, d.numel(1), "N, C, L")?;
    let dev = o.device();
    let mut dw = Tensor::full_in(0.0, &[d.c, k2], crate::DType::F32, dev, Category::Workspace)?;
    let mut dout = Tensor::full_in(
        0.0,
        &[d.n, k2, d.l],
        crate::DType::F32,
        dev,
        Category::Workspace,
    )?;
    if d.numel(1) == 0 || k2 == 0 {
        return Ok((dw, dout));
    }
    if d.l == 1 {
        // dW (C, K²) = gyᵀ (C, N) · o (N, K²): one GEMM over the batch
        let gm = Gemm {
            lda: d.c,
            trans_a: true,
            ..Gemm::dense(d.c, k2, d.n, gy.dev_ptr()?, o.dev_ptr()?, dw.dev_ptr()?)
        };
        gemm(op, &gm, gy, o, &mut dw)?;
    } else {
        // dW = Σ_n g_n (C, L) · o_nᵀ (L, K²): one strided-batched GEMM into per-sample
        // partials (N, C, K²), summed in sample order (as the conv weight gradient)
        let mut partial = crate::ops::launch::output(&[d.n, d.c * k2], dev, Category::Workspace)?;
        let gm = Gemm {
            ldb: d.l,
            trans_b: true,
            stride_a: d.c * d.l,
            stride_b: k2 * d.l,
            stride_c: d.c * k2,
            batch: d.n,
            ..Gemm::dense(
                d.c,
                k2,
                d.l,
                gy.dev_ptr()?,
                o.dev_ptr()?,
                partial.dev_ptr()?,
            )
        };
        gemm(op, &gm, gy, o, &mut partial)?;
        crate::ops::elementwise::cuda::add_batch_sum(&partial, &mut dw)?;
    }
    // do_n (K², L) = W_aᵀ (K², C) · g_n (C, L)
    let gm = Gemm {
        lda: k2,
        trans_a: true,
        stride_b: d.c * d.l,
        stride_c: k2 * d.l,
        batch: d.n,
        ..Gemm::dense(k2, d.l, d.c, w2.dev_ptr()?, gy.dev_ptr()?, dout.dev_ptr()?)
    };
    gemm(op, &gm, w2, gy, &mut dout)?;
    Ok((dw, dout))
}

/// Channels [c0, c0 + md) of src (N, ms, L), a new (N, md, L) tensor of `shape` charged to
/// `category`. (Stored quadralib keeps a‖b of z; recompute takes the leading rows of the
/// stacked weight, as (1, nb·C, K_g).)
#[allow(clippy::too_many_arguments)]
pub fn narrow(
    src: &Tensor,
    n: usize,
    ms: usize,
    l: usize,
    c0: usize,
    md: usize,
    shape: &[usize],
    category: Category,
) -> Result<Tensor> {
    let kern = &kernel::QUAD_NARROW_F32;
    let op = kern.name;
    let rt = gpu_f32(op, "src", src)?;
    expect_numel(op, "src", src, n * ms * l, "N, M, L")?;
    crate::ensure_shape!(c0 + md <= ms, op, "channels {c0}..{} of {ms}", c0 + md);
    let want: usize = shape.iter().product();
    crate::ensure_shape!(
        want == n * md * l,
        op,
        "output shape {shape:?} for {n}×{md}×{l}"
    );
    let mut dst = output(shape, src.device(), category)?;
    if want == 0 {
        return Ok(dst);
    }
    let args = [
        KArg::Ptr(src.dev_ptr()?),
        KArg::Ptr(dst.dev_ptr_mut()?),
        KArg::I32(int(op, "N", n)?),
        KArg::I32(int(op, "M", ms)?),
        KArg::I32(int(op, "L", l)?),
        KArg::I32(int(op, "c0", c0)?),
        KArg::I32(int(op, "M_out", md)?),
    ];
    // SAFETY: (src, dst, N, Ms, L, c0, Md); src holds N·Ms·L f32 (checked) and is read at
    // channels c0 + c < c0 + Md ≤ Ms (checked); dst was just allocated with N·Md·L.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(want), &args)? };
    Ok(dst)
}

/// Batch statistics of z (N, M, L) per channel over N·L values: (mean, biased var, rstd),
/// each (M), from `bn_stats_f32` (two passes, f64 accumulation).
pub fn bn_stats(z: &Tensor, n: usize, m: usize, l: usize, eps: f64) -> Result<[Tensor; 3]> {
    let kern = &kernel::BN_STATS_F32;
    let op = kern.name;
    let rt = gpu_f32(op, "z", z)?;
    expect_numel(op, "z", z, n * m * l, "N, M, L")?;
    crate::ensure_shape!(n * l > 0, op, "N·L = 0: no values to take statistics over");
    let dev = z.device();
    let mut mean = output(&[m], dev, Category::Workspace)?;
    let mut var = output(&[m], dev, Category::Workspace)?;
    let mut rstd = output(&[m], dev, Category::Workspace)?;
    if m == 0 {
        return Ok([mean, var, rstd]);
    }
    let args = [
        KArg::Ptr(z.dev_ptr()?),
        KArg::Ptr(mean.dev_ptr_mut()?),
        KArg::Ptr(var.dev_ptr_mut()?),
        KArg::Ptr(rstd.dev_ptr_mut()?),
        KArg::I32(int(op, "N", n)?),
        KArg::I32(int(op, "C", m)?),
        KArg::I32(int(op, "L", l)?),
        KArg::F32(eps as f32),
    ];
    // SAFETY: (x, mean, var, rstd, N, C, L, eps) as in reduce.cu; z holds N·M·L f32
    // (checked), the three outputs were just allocated with M; block REDUCE_BLOCK is a
    // multiple of 32 ≤ 1024 as block_sum requires; blocks grid-stride over channels < M.
    unsafe {
        launch(
            rt,
            kern,
            LaunchConfig::new(channel_grid(m), REDUCE_BLOCK, 0),
            &args,
        )?
    };
    Ok([mean, var, rstd])
}

/// quadralib-bn's per-stacked-channel vectors, each (3C): the statistics the forward
/// normalised with and the BN parameters.
#[derive(Clone, Copy)]
pub struct Bn<'a> {
    pub mean: &'a Tensor,
    pub rstd: &'a Tensor,
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
}

impl Bn<'_> {
    fn check(&self, op: &str, z: &Tensor, c: usize) -> Result<()> {
        let ts = [
            ("mean", self.mean),
            ("rstd", self.rstd),
            ("gamma", self.gamma),
            ("beta", self.beta),
        ];
        check_all(op, z.device(), &ts)?;
        for (what, t) in ts {
            expect_numel(op, what, t, 3 * c, "3·C")?;
        }
        Ok(())
    }
}

/// quadralib-bn forward: y (`shape`) = A ⊙ B + C with A, B, C the three branch planes of z
/// (N, 3C, L) batch-normalised with `bn`; with `keep_ab` also A‖B (N, 2C, L).
pub fn bn_forward(
    z: &Tensor,
    bn: &Bn,
    d: Planes,
    shape: &[usize],
    keep_ab: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let kern = if keep_ab {
        &kernel::QUADRALIB_BN_FWD_AB_F32
    } else {
        &kernel::QUADRALIB_BN_FWD_F32
    };
    let op = kern.name;
    let rt = gpu_f32(op, "z", z)?;
    expect_numel(op, "z", z, d.numel(3), "N, 3C, L")?;
    bn.check(op, z, d.c)?;
    let mut y = out_like(op, z, shape, d.numel(1))?;
    let mut ab = if keep_ab {
        Some(output(
            &[d.n, 2 * d.c, d.l],
            z.device(),
            Category::Workspace,
        )?)
    } else {
        None
    };
    if d.numel(1) == 0 {
        return Ok((y, ab));
    }
    let mut args = vec![
        KArg::Ptr(z.dev_ptr()?),
        KArg::Ptr(bn.mean.dev_ptr()?),
        KArg::Ptr(bn.rstd.dev_ptr()?),
        KArg::Ptr(bn.gamma.dev_ptr()?),
        KArg::Ptr(bn.beta.dev_ptr()?),
        KArg::Ptr(y.dev_ptr_mut()?),
    ];
    if let Some(ab) = ab.as_mut() {
        args.push(KArg::Ptr(ab.dev_ptr_mut()?));
    }
    args.extend(d.args(op)?);
    // SAFETY: (z, mean, rstd, gamma, beta, y, [ab,] N, C, L) as declared in quadratic.cu;
    // z holds N·3C·L f32 and the four vectors 3C (checked); y (N·C·L) and ab (N·2C·L) were
    // just allocated; the kernel indexes below those counts.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(d.numel(1)), &args)? };
    Ok((y, ab))
}

/// quadralib-bn training backward: from z (N, 3C, L), A‖B when kept (stored mode; else
/// recomputed from z), gy (N, C, L) and the batch statistics in `bn`, the stacked branch
/// gradient gz (N, 3C, L) and the BN parameters' gradients (dγ, dβ), each (3C). Two
/// launches: a per-stacked-channel reduction, then the elementwise gradient.
pub fn bn_backward(
    z: &Tensor,
    ab: Option<&Tensor>,
    gy: &Tensor,
    bn: &Bn,
    d: Planes,
) -> Result<(Tensor, Tensor, Tensor)> {
    let op = "quadralib_bn_backward";
    let rt = gpu_f32(op, "z", z)?;
    check_all(op, z.device(), &[("output gradient", gy)])?;
    expect_numel(op, "z", z, d.numel(3), "N, 3C, L")?;
    expect_numel(op, "output gradient", gy, d.numel(1), "N, C, L")?;
    if let Some(ab) = ab {
        check_all(op, z.device(), &[("A‖B", ab)])?;
        expect_numel(op, "A‖B", ab, d.numel(2), "N, 2C, L")?;
    }
    bn.check(op, z, d.c)?;
    crate::ensure_shape!(
        d.n * d.l > 0,
        op,
        "N·L = 0: no values the batch statistics were taken over"
    );
    let dev = z.device();
    let m = 3 * d.c;
    let mut dgamma = output(&[m], dev, Category::Workspace)?;
    let mut dbeta = output(&[m], dev, Category::Workspace)?;
    let mut gz = output(&[d.n, m, d.l], dev, Category::Workspace)?;
    if d.c == 0 {
        return Ok((gz, dgamma, dbeta));
    }
    let (zp, gp) = (KArg::Ptr(z.dev_ptr()?), KArg::Ptr(gy.dev_ptr()?));
    let (mp, rp) = (KArg::Ptr(bn.mean.dev_ptr()?), KArg::Ptr(bn.rstd.dev_ptr()?));
    let (gam, bet) = (
        KArg::Ptr(bn.gamma.dev_ptr()?),
        KArg::Ptr(bn.beta.dev_ptr()?),
    );
    let (dgp, dbp) = (
        KArg::Ptr(dgamma.dev_ptr_mut()?),
        KArg::Ptr(dbeta.dev_ptr_mut()?),
    );
    let gzp = KArg::Ptr(gz.dev_ptr_mut()?);
    let dims = d.args(op)?;
    let (red, ew, mut rargs, mut eargs) = match ab {
        Some(ab) => {
            let abp = KArg::Ptr(ab.dev_ptr()?);
            (
                &kernel::QUADRALIB_BN_BWD_REDUCE_AB_F32,
                &kernel::QUADRALIB_BN_BWD_AB_F32,
                vec![zp, abp, gp, mp, rp, dgp, dbp],
                vec![zp, abp, gp, mp, rp, gam, dgp, dbp, gzp],
            )
        }
        None => (
            &kernel::QUADRALIB_BN_BWD_REDUCE_F32,
            &kernel::QUADRALIB_BN_BWD_F32,
            vec![zp, gp, mp, rp, gam, bet, dgp, dbp],
            vec![zp, gp, mp, rp, gam, bet, dgp, dbp, gzp],
        ),
    };
    rargs.extend(dims);
    eargs.extend(dims);
    if ab.is_none() {
        eargs.push(KArg::I32(1)); // training: the gradient flows through the statistics
    }
    // SAFETY: the reduction's parameters as declared in quadratic.cu (z, [ab,] gy, mean,
    // rstd, [gamma, beta,] dgamma, dbeta, N, C, L); z holds N·3C·L, ab N·2C·L, gy N·C·L and
    // the vectors 3C f32 (checked above); dgamma/dbeta were just allocated with 3C; one
    // block per stacked channel kc < 3C (grid-stride beyond the grid), block REDUCE_BLOCK a
    // multiple of 32 ≤ 1024 as block_sum requires.
    unsafe {
        launch(
            rt,
            red,
            LaunchConfig::new(channel_grid(m), REDUCE_BLOCK, 0),
            &rargs,
        )?
    };
    // SAFETY: the elementwise kernel's parameters as declared in quadratic.cu; the same
    // checked extents, gz was just allocated with N·3C·L; it reads dgamma/dbeta written by
    // the launch above (same stream, so ordered).
    unsafe { launch(rt, ew, LaunchConfig::elementwise(d.numel(1)), &eargs)? };
    Ok((gz, dgamma, dbeta))
}

/// Elements `range` of `t` (flat) as a new tensor of `shape` on `t`'s device, charged to
/// `category`: one device-to-device copy of `range.len()` elements (any dtype), queued on
/// the device's stream like a launch (no host round trip).
pub fn copy_range(
    t: &Tensor,
    range: Range<usize>,
    shape: &[usize],
    category: Category,
) -> Result<Tensor> {
    let op = "quad_copy_range";
    let rt = crate::device::runtime(t.device())?;
    crate::ensure_shape!(
        range.start <= range.end && range.end <= t.numel(),
        op,
        "elements {range:?} of a tensor of {}",
        t.numel()
    );
    let want: usize = shape.iter().product();
    crate::ensure_shape!(
        want == range.len(),
        op,
        "output shape {shape:?} for {} elements",
        range.len()
    );
    let mut out = Tensor::uninit_gpu(shape, t.dtype(), t.device(), category)?;
    if want == 0 {
        return Ok(out);
    }
    let es = t.dtype().size();
    let src = t.dev_ptr()? + (range.start * es) as u64;
    let dst = out.dev_ptr_mut()?;
    // SAFETY: src lies inside t's allocation (range.end ≤ numel, checked) for want·es
    // bytes; dst is the fresh allocation of exactly want·es bytes, so the two are disjoint
    // and both live on t's runtime.
    unsafe { rt.dtod(src, dst, want * es)? };
    Ok(out)
}

//! Batch normalisation on the CUDA backend (cuda/norm.cu, and bn_stats_f32 of
//! cuda/reduce.cu): training forward with batch statistics and the running-statistics
//! update, eval forward with the running statistics, backward (dx, dγ, dβ).
//!
//! Tensors are viewed as (N, C, L) — L = H·W for BatchNorm2d, 1 or L for BatchNorm1d — as
//! in `ops::norm`, whose conventions these kernels follow: biased variance to normalise,
//! unbiased variance for the running statistics, PyTorch's momentum.

use super::{BnGrads, BnParams, BnTrain, Dims};
use crate::device::alloc::Category;
use crate::device::{KArg, Runtime};
use crate::ops::launch::{
    channel_grid, check_all, expect_numel, gpu_f32, int, kernel, launch, output, LaunchConfig,
    REDUCE_BLOCK,
};
use crate::tensor::Tensor;
use crate::Result;

/// Checks that x has N·C·L elements and every per-channel tensor C, all on x's device in
/// f32; returns the runtime and the dims as kernel ints.
fn check(
    op: &str,
    x: &Tensor,
    (n, c, l): Dims,
    channels: &[(&str, &Tensor)],
) -> Result<(&'static dyn Runtime, [KArg; 3])> {
    let rt = gpu_f32(op, "x", x)?;
    check_all(op, x.device(), channels)?;
    expect_numel(op, "x", x, n * c * l, "N, C, L")?;
    for (what, t) in channels {
        expect_numel(op, what, t, c, "C")?;
    }
    let dims = [
        KArg::I32(int(op, "N", n)?),
        KArg::I32(int(op, "C", c)?),
        KArg::I32(int(op, "L", l)?),
    ];
    Ok((rt, dims))
}

/// `check` of x and the layer's four per-channel tensors.
fn check_params(
    op: &str,
    x: &Tensor,
    dims: Dims,
    p: &BnParams,
) -> Result<(&'static dyn Runtime, [KArg; 3])> {
    let channels = [
        ("weight", p.gamma),
        ("bias", p.beta),
        ("running_mean", p.running_mean),
        ("running_var", p.running_var),
    ];
    check(op, x, dims, &channels)
}

/// Training forward: normalise x with its batch statistics (biased variance) and compute
/// the new running statistics `(1 − momentum)·running + momentum·batch` (unbiased
/// variance). N·L must be positive (the layer also refuses N·L = 1).
pub fn batch_norm_train(
    x: &Tensor,
    dims: Dims,
    p: &BnParams,
    category: Category,
) -> Result<BnTrain> {
    let op = "batch_norm_train";
    let (rt, d) = check_params(op, x, dims, p)?;
    let BnParams {
        gamma,
        beta,
        running_mean,
        running_var,
        eps,
        momentum,
    } = *p;
    let (n, c, l) = dims;
    crate::ensure_shape!(n * l > 0 && c > 0, op, "empty input {:?}", x.shape());
    let dev = x.device();
    let mut mean = output(&[c], dev, Category::SavedForBackward)?;
    let mut rstd = output(&[c], dev, Category::SavedForBackward)?;
    let mut var = output(&[c], dev, Category::Workspace)?;
    let args = [
        KArg::Ptr(x.dev_ptr()?),
        KArg::Ptr(mean.dev_ptr_mut()?),
        KArg::Ptr(var.dev_ptr_mut()?),
        KArg::Ptr(rstd.dev_ptr_mut()?),
        d[0],
        d[1],
        d[2],
        KArg::F32(eps as f32),
    ];
    // SAFETY: bn_stats_f32(x, mean, var, rstd, N, C, L, eps) of reduce.cu; x holds N·C·L
    // f32 (checked), mean/var/rstd were just allocated with C each and are distinct; the
    // block REDUCE_BLOCK is a multiple of 32 ≤ 1024 as block_sum requires.
    unsafe {
        launch(
            rt,
            &kernel::BN_STATS_F32,
            LaunchConfig::new(channel_grid(c), REDUCE_BLOCK, 0),
            &args,
        )?
    };

    let (rm, rv) = bn_running(running_mean, running_var, &mean, &var, n * l, momentum)?;

    let y = normalize(rt, x, &d, &mean, &rstd, gamma, beta, category)?;
    Ok(BnTrain {
        y,
        mean,
        rstd,
        running_mean: rm,
        running_var: rv,
    })
}

/// Eval forward: normalise x with the running statistics (nothing changes).
pub fn batch_norm_eval(x: &Tensor, dims: Dims, p: &BnParams, category: Category) -> Result<Tensor> {
    let op = "batch_norm_eval";
    let (rt, d) = check_params(op, x, dims, p)?;
    let rstd = rstd(p.running_var, p.eps)?;
    normalize(rt, x, &d, p.running_mean, &rstd, p.gamma, p.beta, category)
}

/// y = γ·(x − mean)·rstd + β; every argument checked by the caller (`check`).
#[allow(clippy::too_many_arguments)]
fn normalize(
    rt: &dyn Runtime,
    x: &Tensor,
    d: &[KArg; 3],
    mean: &Tensor,
    rstd: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    category: Category,
) -> Result<Tensor> {
    let kern = &kernel::BN_NORMALIZE_F32;

    let op = kern.name;
    check_all(op, x.device(), &[("mean", mean), ("rstd", rstd)])?;
    let c = gamma.numel();
    expect_numel(op, "mean", mean, c, "C")?;
    expect_numel(op, "rstd", rstd, c, "C")?;
    let mut y = output(x.shape(), x.device(), category)?;
    let total = x.numel();
    if total == 0 {
        return Ok(y);
    }
    let args = [
        KArg::Ptr(x.dev_ptr()?),
        KArg::Ptr(mean.dev_ptr()?),
        KArg::Ptr(rstd.dev_ptr()?),
        KArg::Ptr(gamma.dev_ptr()?),
        KArg::Ptr(beta.dev_ptr()?),
        KArg::Ptr(y.dev_ptr_mut()?),
        d[0],
        d[1],
        d[2],
    ];
    // SAFETY: bn_normalize_f32(x, mean, rstd, gamma, beta, y, N, C, L); the caller checked
    // x (N·C·L f32) and gamma/beta (C) with `check`, mean and rstd were checked to hold C
    // here; y is fresh with x's N·C·L elements.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(total), &args)? };
    Ok(y)
}

/// Training-mode backward from the saved input x, its batch mean and rstd, γ and the output
/// gradient g: dx = γ·rstd·(g − Σg/M − x̂·Σg·x̂/M), M = N·L.
pub fn batch_norm_backward(
    x: &Tensor,
    g: &Tensor,
    dims: Dims,
    mean: &Tensor,
    rstd: &Tensor,
    gamma: &Tensor,
) -> Result<BnGrads> {
    let op = "batch_norm_backward";
    let (rt, d) = check(
        op,
        x,
        dims,
        &[("mean", mean), ("rstd", rstd), ("weight", gamma)],
    )?;
    check_all(op, x.device(), &[("output gradient", g)])?;
    let (n, c, l) = dims;
    expect_numel(op, "output gradient", g, n * c * l, "N, C, L")?;
    let dev = x.device();
    let mut dgamma = output(&[c], dev, Category::Workspace)?;
    let mut dbeta = output(&[c], dev, Category::Workspace)?;
    let mut dx = output(x.shape(), dev, Category::Workspace)?;
    if n * c * l == 0 {
        crate::ops::elementwise::cuda::fill(&mut dgamma, 0.0)?;
        crate::ops::elementwise::cuda::fill(&mut dbeta, 0.0)?;
        return Ok(BnGrads { dx, dgamma, dbeta });
    }
    let args = [
        KArg::Ptr(x.dev_ptr()?),
        KArg::Ptr(g.dev_ptr()?),
        KArg::Ptr(mean.dev_ptr()?),
        KArg::Ptr(rstd.dev_ptr()?),
        KArg::Ptr(dbeta.dev_ptr_mut()?),
        KArg::Ptr(dgamma.dev_ptr_mut()?),
        d[0],
        d[1],
        d[2],
    ];
    // SAFETY: bn_grad_sums_f32(x, g, mean, rstd, sum_g, sum_gx, N, C, L); x and g hold
    // N·C·L f32, mean and rstd C (checked); sum_g/sum_gx (dbeta/dgamma) are fresh with C
    // each; block REDUCE_BLOCK is a multiple of 32 ≤ 1024 as block_sum requires.
    unsafe {
        launch(
            rt,
            &kernel::BN_GRAD_SUMS_F32,
            LaunchConfig::new(channel_grid(c), REDUCE_BLOCK, 0),
            &args,
        )?
    };
    let args = [
        KArg::Ptr(x.dev_ptr()?),
        KArg::Ptr(g.dev_ptr()?),
        KArg::Ptr(mean.dev_ptr()?),
        KArg::Ptr(rstd.dev_ptr()?),
        KArg::Ptr(gamma.dev_ptr()?),
        KArg::Ptr(dbeta.dev_ptr()?),
        KArg::Ptr(dgamma.dev_ptr()?),
        KArg::Ptr(dx.dev_ptr_mut()?),
        d[0],
        d[1],
        d[2],
    ];
    // SAFETY: bn_backward_input_f32(x, g, mean, rstd, gamma, sum_g, sum_gx, dx, N, C, L);
    // x, g hold N·C·L f32 and mean, rstd, gamma C (checked); sum_g, sum_gx hold C (allocated
    // above); dx is fresh with N·C·L, so it aliases no input.
    unsafe {
        launch(
            rt,
            &kernel::BN_BACKWARD_INPUT_F32,
            LaunchConfig::elementwise(n * c * l),
            &args,
        )?
    };
    Ok(BnGrads { dx, dgamma, dbeta })
}

/// The running statistics after one training batch of `count` values per channel:
/// (rm', rv') = ((1 − m)·rm + m·mean, (1 − m)·rv + m·var·count/(count − 1)), new tensors
/// charged to `Category::Parameter` (the old ones are only read: a state dict taken earlier
/// may share them). BatchNorm's per-channel statistics and quadralib-bn's 3C stacked ones.
pub fn bn_running(
    rm: &Tensor,
    rv: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    count: usize,
    momentum: f64,
) -> Result<(Tensor, Tensor)> {
    let kern = &kernel::BN_UPDATE_RUNNING_F32;

    let op = kern.name;
    let rt = gpu_f32(op, "running mean", rm)?;
    check_all(
        op,
        rm.device(),
        &[("running var", rv), ("mean", mean), ("var", var)],
    )?;
    let m = rm.numel();
    for (what, t) in [("running var", rv), ("mean", mean), ("var", var)] {
        expect_numel(op, what, t, m, "M")?;
    }
    let dev = rm.device();
    let mut rm2 = output(rm.shape(), dev, Category::Parameter)?;
    let mut rv2 = output(rv.shape(), dev, Category::Parameter)?;
    if m == 0 {
        return Ok((rm2, rv2));
    }
    let args = [
        KArg::Ptr(rm.dev_ptr()?),
        KArg::Ptr(rv.dev_ptr()?),
        KArg::Ptr(mean.dev_ptr()?),
        KArg::Ptr(var.dev_ptr()?),
        KArg::Ptr(rm2.dev_ptr_mut()?),
        KArg::Ptr(rv2.dev_ptr_mut()?),
        KArg::I32(int(op, "M", m)?),
        KArg::I64(count as i64),
        KArg::F32(momentum as f32),
    ];
    // SAFETY: (rm, rv, mean, var, rm_new, rv_new, int C, long long count, float momentum);
    // the four inputs hold M f32 each (checked), the two outputs were just allocated with M.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(m), &args)? };
    Ok((rm2, rv2))
}

/// rstd = 1/√(var + eps), a new tensor (eval mode from the running variance).
pub fn rstd(var: &Tensor, eps: f64) -> Result<Tensor> {
    let kern = &kernel::BN_RSTD_F32;

    let op = kern.name;
    let rt = gpu_f32(op, "var", var)?;
    let m = var.numel();
    let mut r = output(var.shape(), var.device(), Category::Workspace)?;
    if m == 0 {
        return Ok(r);
    }
    let args = [
        KArg::Ptr(var.dev_ptr()?),
        KArg::Ptr(r.dev_ptr_mut()?),
        KArg::I32(int(op, "M", m)?),
        KArg::F32(eps as f32),
    ];
    // SAFETY: (const float* var, float* rstd, int n, float eps); var holds M f32 and rstd was
    // just allocated with M.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(m), &args)? };
    Ok(r)
}

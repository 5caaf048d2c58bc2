//! Batch normalization over (N, C, L) views — L = H·W for BatchNorm2d, 1 or L for
//! BatchNorm1d — with PyTorch's conventions: biased variance to normalise, unbiased variance
//! for the running statistics, `(1 − momentum)·running + momentum·batch`.
//!
//! This file is the family's tensor-level API and its one `match` on the device: `cpu.rs`
//! holds the CPU engine's math (generic over f32/f64), `cuda.rs` the launch wrappers of
//! `cuda/norm.cu` (run on `Device::Cuda(n)` and `Device::Emu`). The quadratic family's
//! quadralib-bn uses the CPU math and the running-statistics kernels of this family too.

pub mod cpu;
pub mod cuda;

pub use cpu::{
    backward_input, backward_input_eval, batch_stats, grad_sums, normalize, rstd, update_running,
};

use crate::device::alloc::Category;
use crate::tensor::{Float, Tensor};
use crate::{with_dtype, Device, Result};

/// (N, C, L) of a batch-norm input.
pub type Dims = (usize, usize, usize);

/// A batch norm's parameters and running statistics (each (C), on the input's device, of
/// its dtype), eps and momentum.
#[derive(Clone, Copy)]
pub struct BnParams<'a> {
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub running_mean: &'a Tensor,
    pub running_var: &'a Tensor,
    pub eps: f64,
    pub momentum: f64,
}

/// What a training forward produces.
pub struct BnTrain {
    /// (N, C, L) as x's shape.
    pub y: Tensor,
    /// Batch mean (C), charged to `Category::SavedForBackward`.
    pub mean: Tensor,
    /// Batch 1/√(var + eps) (C), charged to `Category::SavedForBackward`.
    pub rstd: Tensor,
    /// The updated running mean and variance (C): new tensors (the old ones are only read,
    /// so a state dict taken earlier keeps its values), charged to `Category::Parameter`.
    pub running_mean: Tensor,
    pub running_var: Tensor,
}

/// Gradients of a training-mode batch norm.
pub struct BnGrads {
    /// (N, C, L) as x's shape.
    pub dx: Tensor,
    /// dγ = Σ g·x̂ per channel (C).
    pub dgamma: Tensor,
    /// dβ = Σ g per channel (C).
    pub dbeta: Tensor,
}

/// Training forward: normalise x with its batch statistics and compute the new running
/// statistics (new tensors: a state dict taken earlier keeps the old values). y is charged
/// to `category`, mean/rstd to saved-for-backward, the running statistics to parameter.
/// N·L must be positive (the layer also refuses N·L = 1).
pub fn batch_norm_train(
    x: &Tensor,
    dims: Dims,
    p: &BnParams,
    category: Category,
) -> Result<BnTrain> {
    match x.device() {
        Device::Cpu => with_dtype!(x.dtype(), T => train_cpu::<T>(x, dims, p, category)),
        Device::Cuda(_) | Device::Emu => cuda::batch_norm_train(x, dims, p, category),
    }
}

fn train_cpu<T: Float>(
    x: &Tensor,
    (n, c, l): Dims,
    p: &BnParams,
    category: Category,
) -> Result<BnTrain> {
    let xs = x.as_slice::<T>()?;
    let (mean, var) = cpu::batch_stats(xs, n, c, l);
    let rstd = cpu::rstd(&var, p.eps);
    let mut y = crate::ops::zeros_par(x.shape(), x.dtype(), category)?;
    cpu::normalize(
        xs,
        (n, c, l),
        &mean,
        &rstd,
        p.gamma.as_slice::<T>()?,
        p.beta.as_slice::<T>()?,
        y.data_mut::<T>()?,
    );
    let mut rm = p.running_mean.as_slice::<T>()?.to_vec();
    let mut rv = p.running_var.as_slice::<T>()?.to_vec();
    cpu::update_running(&mut rm, &mut rv, &mean, &var, n * l, p.momentum);
    Ok(BnTrain {
        y,
        mean: Tensor::from_vec_in(mean, &[c], Device::Cpu, Category::SavedForBackward)?,
        rstd: Tensor::from_vec_in(rstd, &[c], Device::Cpu, Category::SavedForBackward)?,
        running_mean: Tensor::from_vec_in(rm, &[c], Device::Cpu, Category::Parameter)?,
        running_var: Tensor::from_vec_in(rv, &[c], Device::Cpu, Category::Parameter)?,
    })
}

/// Eval forward with the running statistics: y = γ·(x − running_mean)·rstd(running_var) + β,
/// charged to `category`.
pub fn batch_norm_eval(x: &Tensor, dims: Dims, p: &BnParams, category: Category) -> Result<Tensor> {
    match x.device() {
        Device::Cpu => with_dtype!(x.dtype(), T => {
            let mut y = crate::ops::zeros_par(x.shape(), x.dtype(), category)?;
            let rstd = cpu::rstd(p.running_var.as_slice::<T>()?, p.eps);
            cpu::normalize(
                x.as_slice::<T>()?,
                dims,
                p.running_mean.as_slice::<T>()?,
                &rstd,
                p.gamma.as_slice::<T>()?,
                p.beta.as_slice::<T>()?,
                y.data_mut::<T>()?,
            );
            Ok(y)
        }),
        Device::Cuda(_) | Device::Emu => cuda::batch_norm_eval(x, dims, p, category),
    }
}

/// Training-mode backward from the saved input x, its batch mean and rstd (C), γ and the
/// output gradient g: dx = γ·rstd·(g − Σg/M − x̂·Σg·x̂/M), M = N·L; dγ = Σ g·x̂, dβ = Σ g.
/// dx is charged to workspace, dγ and dβ are fresh (C) tensors for the gradients.
pub fn batch_norm_backward(
    x: &Tensor,
    g: &Tensor,
    dims: Dims,
    mean: &Tensor,
    rstd: &Tensor,
    gamma: &Tensor,
) -> Result<BnGrads> {
    match x.device() {
        Device::Cpu => with_dtype!(x.dtype(), T => {
            let (xs, gs) = (x.as_slice::<T>()?, g.as_slice::<T>()?);
            let (mean, rstd) = (mean.as_slice::<T>()?, rstd.as_slice::<T>()?);
            // dβ = Σ g, dγ = Σ g·x̂ (per channel)
            let (sum_g, sum_gx) = cpu::grad_sums(xs, gs, dims, mean, rstd);
            let mut dx = crate::ops::zeros_par(x.shape(), x.dtype(), Category::Workspace)?;
            cpu::backward_input(
                xs,
                gs,
                dims,
                mean,
                rstd,
                gamma.as_slice::<T>()?,
                &sum_g,
                &sum_gx,
                dx.data_mut::<T>()?,
            );
            let c = dims.1;
            Ok(BnGrads {
                dx,
                dgamma: Tensor::from_vec_in(sum_gx, &[c], Device::Cpu, Category::Workspace)?,
                dbeta: Tensor::from_vec_in(sum_g, &[c], Device::Cpu, Category::Workspace)?,
            })
        }),
        Device::Cuda(_) | Device::Emu => cuda::batch_norm_backward(x, g, dims, mean, rstd, gamma),
    }
}

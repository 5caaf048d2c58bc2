//! 2-d convolution by im2col + GEMM, with stride, padding, dilation and groups; a weight
//! may stack `nb` branches (nb·C_out, C_in/G, kh, kw) — how a quadratic layer reads x once
//! for all its first-order branches.
//!
//! This file is the family's tensor-level API and its one `match` on the device: `geom.rs`
//! the geometry, `cpu.rs` the CPU engine's math (generic over f32/f64; `depthwise.rs` its direct
//! depthwise kernel), `cuda.rs` the launch
//! wrappers of `cuda/conv.cu` and cuBLAS (run on `Device::Cuda(n)` and `Device::Emu`).

pub mod cpu;
pub mod cuda;
mod depthwise;
mod geom;

pub use cpu::{
    add_bias, backward_bias, backward_data_cols, backward_weight_cols, col2im, forward_cols, im2col,
};
pub use geom::{check_input, ConvGeom};

use crate::device::alloc::Category;
use crate::tensor::Tensor;
use crate::{with_dtype, Device, Result};

/// Gradients of a convolution.
pub struct ConvGrads {
    /// (N, C_in, H, W), when asked for.
    pub dx: Option<Tensor>,
    /// (nb·C_out, C_in/G, kh, kw)
    pub dw: Tensor,
    /// (nb·C_out): Σ of dout per channel (the bias gradient; ignore it without a bias).
    pub db: Tensor,
}

/// Convolution forward: x (N, C_in, H, W), weight (nb·C_out, C_in/G, kh, kw), bias
/// (nb·C_out) → (N, nb·C_out, Ho, Wo), charged to `category`.
pub fn conv2d(
    g: &ConvGeom,
    nb: usize,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    layer: &str,
    category: Category,
) -> Result<Tensor> {
    if x.device() != Device::Cpu {
        return cuda::conv2d_forward(g, nb, x, w, bias, layer, category);
    }
    let (n, h, wd, ho, wo) = check_input(g, x, layer)?;
    let mut out = crate::ops::zeros_par(&[n, nb * g.c_out, ho, wo], x.dtype(), category)?;
    with_dtype!(x.dtype(), T => {
        let bias = bias.map(|b| b.as_slice::<T>()).transpose()?;
        let (xs, ws) = (x.as_slice::<T>()?, w.as_slice::<T>()?);
        cpu::conv2d_forward(g, nb, xs, (n, h, wd), (ho, wo), ws, bias, out.data_mut::<T>()?);
    });
    Ok(out)
}

/// Convolution backward from x, the weight and dout (N, nb·C_out, Ho, Wo): dx (when
/// `want_dx`), dW and db as fresh tensors (charged to workspace until a gradient takes them).
pub fn conv2d_backward(
    g: &ConvGeom,
    nb: usize,
    x: &Tensor,
    w: &Tensor,
    dout: &Tensor,
    want_dx: bool,
    layer: &str,
) -> Result<ConvGrads> {
    if x.device() != Device::Cpu {
        return cuda::conv2d_backward(g, nb, x, w, dout, want_dx, layer);
    }
    let (n, h, wd, ho, wo) = check_input(g, x, layer)?;
    let mut dx = match want_dx {
        true => Some(crate::ops::zeros_par(
            x.shape(),
            x.dtype(),
            Category::Workspace,
        )?),
        false => None,
    };
    let (dw, db) = with_dtype!(x.dtype(), T => {
        let dxs = dx.as_mut().map(|t| t.data_mut::<T>()).transpose()?;
        let (xs, ws, gs) = (x.as_slice::<T>()?, w.as_slice::<T>()?, dout.as_slice::<T>()?);
        let (dw, db) = cpu::conv2d_backward(g, nb, xs, (n, h, wd), (ho, wo), ws, gs, dxs);
        (
            Tensor::from_vec_in(dw, w.shape(), Device::Cpu, Category::Workspace)?,
            Tensor::from_vec_in(db, &[nb * g.c_out], Device::Cpu, Category::Workspace)?,
        )
    });
    Ok(ConvGrads { dx, dw, db })
}

//! Linear (fully connected) layers in PyTorch's layout: y (N, out) = x (N, in) · Wᵀ + b,
//! W (out, in) (or nb stacked branches (nb·out, in)).
//!
//! This file is the family's tensor-level API and its one `match` on the device: `cpu.rs`
//! holds the CPU engine's math (generic over f32/f64; one GEMM for the whole batch),
//! `cuda.rs` the cuBLAS GEMMs and bias kernels (run on `Device::Cuda(n)` and `Device::Emu`).

pub mod cpu;
pub mod cuda;

use crate::device::alloc::Category;
use crate::ops::conv::ConvGrads;
use crate::tensor::Tensor;
use crate::{with_dtype, Device, Result};

/// y (N, M) = x (N, I) · Wᵀ (+ b), W (M, I); charged to `category`. The caller checks the
/// shapes against its layer (`nn::Linear::check_input`).
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, category: Category) -> Result<Tensor> {
    match x.device() {
        Device::Cpu => with_dtype!(x.dtype(), T => {
            let (n, fin) = x.dims2("linear")?;
            let fout = w.shape()[0];
            let mut y = Tensor::zeros_in(&[n, fout], x.dtype(), category)?;
            let bias = match bias {
                Some(b) => Some(b.as_slice::<T>()?),
                None => None,
            };
            cpu::linear_forward(
                x.as_slice::<T>()?,
                n,
                fin,
                fout,
                w.as_slice::<T>()?,
                bias,
                y.data_mut::<T>()?,
                rayon::current_num_threads(),
            );
            Ok(y)
        }),
        Device::Cuda(_) | Device::Emu => cuda::linear_forward(x, w, bias, category),
    }
}

/// Gradients from x (N, I), W (M, I) and dout (N, M): dx (N, I) when `want_dx`,
/// dW (M, I) = doutᵀ·x and db (M) = Σ_n dout, as fresh tensors.
pub fn linear_backward(x: &Tensor, w: &Tensor, dout: &Tensor, want_dx: bool) -> Result<ConvGrads> {
    match x.device() {
        Device::Cpu => with_dtype!(x.dtype(), T => {
            let (n, fin) = x.dims2("linear_backward")?;
            let fout = w.shape()[0];
            let mut dx = if want_dx {
                Some(Tensor::zeros_in(x.shape(), x.dtype(), Category::Workspace)?)
            } else {
                None
            };
            let dx_slice = match &mut dx {
                Some(t) => Some(t.data_mut::<T>()?),
                None => None,
            };
            let (dw, db) = cpu::linear_backward(
                x.as_slice::<T>()?,
                n,
                fin,
                fout,
                w.as_slice::<T>()?,
                dout.as_slice::<T>()?,
                dx_slice,
                rayon::current_num_threads(),
            );
            Ok(ConvGrads {
                dx,
                dw: Tensor::from_vec_in(dw, w.shape(), Device::Cpu, Category::Workspace)?,
                db: Tensor::from_vec_in(db, &[fout], Device::Cpu, Category::Workspace)?,
            })
        }),
        Device::Cuda(_) | Device::Emu => cuda::linear_backward(x, w, dout, want_dx),
    }
}

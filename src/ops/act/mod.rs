//! Activations: ReLU (forward, backward, fused with a residual sum) and inverted dropout.
//! Flat over the elements of a tensor of any shape.
//!
//! This file is the family's tensor-level API and its one `match` on the device:
//! `cpu.rs` holds the CPU engine's math (generic over f32/f64), `cuda.rs` the launch
//! wrappers of `cuda/act.cu` (run on `Device::Cuda(n)` and `Device::Emu`).

pub mod cpu;
pub mod cuda;

use crate::device::alloc::{cpu_tracker, Category, TrackedVec};
use crate::tensor::{Float, Tensor};
use crate::{with_dtype, Device, Result};

/// y = max(x, 0), a new tensor charged to `category`; NaN propagates (as PyTorch's `relu`).
pub fn relu(x: &Tensor, category: Category) -> Result<Tensor> {
    match x.device() {
        Device::Cpu => with_dtype!(x.dtype(), T => {
            let y = cpu::relu_forward_vec(x.as_slice::<T>()?);
            Tensor::from_vec_in(y, x.shape(), Device::Cpu, category)
        }),
        Device::Cuda(_) | Device::Emu => cuda::relu_forward(x, category),
    }
}

/// dx = g where y > 0, else 0 (PyTorch's `threshold_backward` reads the output y); g and y
/// of one shape. A new tensor charged to `category`.
pub fn relu_backward(g: &Tensor, y: &Tensor, category: Category) -> Result<Tensor> {
    match g.device() {
        Device::Cpu => with_dtype!(g.dtype(), T => {
            let dx = cpu::relu_backward_vec(g.as_slice::<T>()?, y.as_slice::<T>()?);
            Tensor::from_vec_in(dx, y.shape(), Device::Cpu, category)
        }),
        Device::Cuda(_) | Device::Emu => cuda::relu_backward(g, y, category),
    }
}

/// relu(a + b), or a + b when `relu` is false (the residual block's sum); a and b of one
/// shape (the caller checks). A new tensor charged to `category`.
pub fn add_relu(a: &Tensor, b: &Tensor, relu: bool, category: Category) -> Result<Tensor> {
    match a.device() {
        Device::Cpu => with_dtype!(a.dtype(), T => {
            let out = cpu::add_relu(a.as_slice::<T>()?, b.as_slice::<T>()?, relu);
            Tensor::from_vec_in(out, a.shape(), Device::Cpu, category)
        }),
        Device::Cuda(_) | Device::Emu => {
            let mut y = crate::ops::elementwise::cuda::add(a, b, category)?;
            if relu {
                cuda::relu_inplace(&mut y)?;
            }
            Ok(y)
        }
    }
}

/// What a dropout forward leaves for its backward.
pub enum DropoutMask {
    /// CPU: one byte per element, 1 = kept; charged to the category the forward was given.
    Host(TrackedVec<u8>),
    /// CUDA backend: nothing stored — the draw (stream) from which the kernel recomputes
    /// the mask (a counter-based hash of (seed, stream, element index), see cuda/act.cu).
    Device { stream: u64 },
}

impl DropoutMask {
    /// The keep-mask bytes when it is stored (the CPU engine).
    pub fn as_host(&self) -> Option<&[u8]> {
        match self {
            DropoutMask::Host(m) => Some(m.as_slice()),
            DropoutMask::Device { .. } => None,
        }
    }
}

/// Inverted dropout of x with drop probability p in [0, 1) from draw `stream` of key
/// `seed`: x·1/(1 − p) where kept, else 0. Returns the output (charged to `category`) and
/// the mask (a stored mask is charged to `mask_category`).
///
/// The CPU draws from ChaCha8 stream `stream` of `seed` (`cpu::dropout_mask`), the CUDA
/// backend from a counter-based hash inside the kernel: different draws of the same
/// distribution, each reproducible from (seed, stream).
pub fn dropout(
    x: &Tensor,
    p: f64,
    seed: u64,
    stream: u64,
    category: Category,
    mask_category: Category,
) -> Result<(Tensor, DropoutMask)> {
    match x.device() {
        Device::Cpu => {
            let mut mask = TrackedVec::filled(0u8, x.numel(), cpu_tracker(), mask_category);
            cpu::dropout_mask(&mut mask, p, seed, stream);
            let y = dropout_apply(x, &mask, p, category)?;
            Ok((y, DropoutMask::Host(mask)))
        }
        Device::Cuda(_) | Device::Emu => {
            let y = cuda::dropout(x, p, seed, stream, category)?;
            Ok((y, DropoutMask::Device { stream }))
        }
    }
}

/// The backward of `dropout`: dx = g · mask · 1/(1 − p), the same map as the forward.
pub fn dropout_backward(
    g: &Tensor,
    mask: &DropoutMask,
    p: f64,
    seed: u64,
    category: Category,
) -> Result<Tensor> {
    match mask {
        DropoutMask::Host(m) => dropout_apply(g, m, p, category),
        DropoutMask::Device { stream } => cuda::dropout(g, p, seed, *stream, category),
    }
}

/// x · mask · 1/(1 − p) on the CPU.
fn dropout_apply(x: &Tensor, mask: &[u8], p: f64, category: Category) -> Result<Tensor> {
    fn apply<T: Float>(x: &Tensor, mask: &[u8], p: f64, category: Category) -> Result<Tensor> {
        let mut y = crate::ops::zeros_par(x.shape(), x.dtype(), category)?;
        let scale = T::of(1.0 / (1.0 - p));
        cpu::dropout_apply(x.as_slice::<T>()?, mask, scale, y.data_mut::<T>()?);
        Ok(y)
    }
    with_dtype!(x.dtype(), T => apply::<T>(x, mask, p, category))
}

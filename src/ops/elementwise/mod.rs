//! Elementwise tensor arithmetic: sums, gradient accumulation, fills. Flat over the
//! elements; shapes (or element counts) must agree.
//!
//! This file is the family's tensor-level API and its one `match` on the device: the CPU
//! side is a few loops inline here (generic over f32/f64), `cuda.rs` the launch wrappers of
//! `cuda/elementwise.cu` (run on `Device::Cuda(n)` and `Device::Emu`).

pub mod cuda;

use crate::device::alloc::Category;
use crate::tensor::Tensor;
use crate::{with_dtype, Device, Error, Result};

/// y += x, in place; x and y of one element count, dtype and device (y's storage must not
/// be shared).
pub fn add_assign(y: &mut Tensor, x: &Tensor) -> Result<()> {
    if x.numel() != y.numel() || x.dtype() != y.dtype() || x.device() != y.device() {
        return Err(Error::shape(
            "add_assign",
            format!(
                "x {:?} ({:?} on {}) does not match y {:?} ({:?} on {})",
                x.shape(),
                x.dtype(),
                x.device(),
                y.shape(),
                y.dtype(),
                y.device()
            ),
        ));
    }
    match y.device() {
        Device::Cpu => with_dtype!(y.dtype(), T => {
            for (a, &b) in y.data_mut::<T>()?.iter_mut().zip(x.as_slice::<T>()?) {
                *a += b;
            }
            Ok(())
        }),
        Device::Cuda(_) | Device::Emu => cuda::axpy(1.0, x, y),
    }
}

/// A first gradient `g` as a parameter's gradient tensor of `shape` (same element count):
/// `g` must be a fresh tensor of the layer's (its storage not shared), which is re-charged to
/// `Category::Gradient` in place — no copy, no launch, on any device.
pub fn into_gradient(g: Tensor, shape: &[usize]) -> Result<Tensor> {
    let g = g.reshape(shape)?;
    g.retag(Category::Gradient);
    Ok(g)
}

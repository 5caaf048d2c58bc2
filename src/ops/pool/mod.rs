//! 2-d pooling with PyTorch's semantics (floor mode, no dilation): max pooling (padding acts
//! as −inf, argmax indices kept for backward), average pooling (count_include_pad = True)
//! and global average pooling (adaptive_avg_pool2d(1) + flatten).
//!
//! x: (N, C, H, W) → y: (N, C, Ho, Wo), Ho = (H + 2·ph − kh)/sh + 1 (floor), likewise Wo.
//!
//! This file is the family's geometry, its tensor-level API and its one `match` on the
//! device: `cpu.rs` holds the CPU engine's math (generic over f32/f64), `cuda.rs` the launch
//! wrappers of `cuda/pool.cu` (run on `Device::Cuda(n)` and `Device::Emu`).

pub mod cpu;
pub mod cuda;

use serde::{Deserialize, Serialize};

use crate::device::alloc::{cpu_tracker, Category, TrackedVec};
use crate::tensor::{Float, Tensor};
use crate::{with_dtype, Device, Error, Result};

/// Window geometry of a pooling layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolGeom {
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub padding: (usize, usize),
}

impl PoolGeom {
    /// A square window with the same stride and padding on both axes.
    pub fn square(kernel: usize, stride: usize, padding: usize) -> Self {
        PoolGeom {
            kh: kernel,
            kw: kernel,
            stride: (stride, stride),
            padding: (padding, padding),
        }
    }

    /// Check the hyper-parameters: positive kernel and stride, and padding at most half the
    /// kernel (PyTorch: "pad should be at most half of effective kernel size"). That bound
    /// also guarantees that every floor-mode window overlaps the real input.
    pub fn validate(&self, layer: &str) -> Result<()> {
        let what = format!("pooling layer `{layer}`");
        if self.kh == 0 || self.kw == 0 {
            return Err(Error::invalid(
                what,
                format!("kernel size must be positive, got {}x{}", self.kh, self.kw),
            ));
        }
        if self.stride.0 == 0 || self.stride.1 == 0 {
            return Err(Error::invalid(
                what,
                format!("stride must be positive, got {:?}", self.stride),
            ));
        }
        if self.padding.0 > self.kh / 2 || self.padding.1 > self.kw / 2 {
            return Err(Error::invalid(
                what,
                format!(
                    "padding {:?} must be at most half of the kernel size {}x{}",
                    self.padding, self.kh, self.kw
                ),
            ));
        }
        if self.kh > 1024 || self.kw > 1024 || self.stride.0 > 1024 || self.stride.1 > 1024 {
            return Err(Error::invalid(
                what,
                "kernel and stride must be at most 1024".to_string(),
            ));
        }
        Ok(())
    }

    /// Output (Ho, Wo) for an input plane (h, w), or a shape error naming `layer`.
    pub fn out_hw(&self, h: usize, w: usize, layer: &str) -> Result<(usize, usize)> {
        let (ph, pw) = (h + 2 * self.padding.0, w + 2 * self.padding.1);
        if self.kh > ph || self.kw > pw {
            return Err(Error::shape(
                layer,
                format!(
                    "kernel {}x{} is larger than the padded input {ph}x{pw}",
                    self.kh, self.kw
                ),
            ));
        }
        Ok((
            (ph - self.kh) / self.stride.0 + 1,
            (pw - self.kw) / self.stride.1 + 1,
        ))
    }
}

/// Check the geometry (its fields are public, so it may have changed since construction),
/// that x is a non-empty (N, C, H, W) tensor and that the window fits;
/// returns (n, c, h, w, ho, wo).
pub fn check_input(
    g: &PoolGeom,
    x: &crate::Tensor,
    layer: &str,
) -> Result<(usize, usize, usize, usize, usize, usize)> {
    g.validate(layer)?;
    let (n, c, h, w) = x.dims4(layer)?;
    if n == 0 || c == 0 || h == 0 || w == 0 {
        return Err(Error::shape(
            layer,
            format!("input {:?} has a zero dimension (empty batch?)", x.shape()),
        ));
    }
    let (ho, wo) = g.out_hw(h, w, layer)?;
    Ok((n, c, h, w, ho, wo))
}

/// The argmax indices of a max pooling, where its input lived: one per output element
/// (N, C, Ho, Wo), the flat position h·W + w of the maximum within its input plane
/// (PyTorch's `indices`).
pub enum PoolIndices {
    Host(TrackedVec<u32>),
    Device(cuda::DeviceIndices),
}

impl PoolIndices {
    /// A copy on the host (for tests and inspection).
    pub fn to_vec(&self) -> Result<Vec<u32>> {
        match self {
            PoolIndices::Host(v) => Ok(v.as_slice().to_vec()),
            PoolIndices::Device(d) => d.to_vec(),
        }
    }
}

/// Max pooling: y (N, C, Ho, Wo) charged to `category` and the argmax indices charged to
/// `idx_category` (saved-for-backward in training, workspace in inference).
pub fn maxpool2d(
    g: &PoolGeom,
    x: &Tensor,
    layer: &str,
    category: Category,
    idx_category: Category,
) -> Result<(Tensor, PoolIndices)> {
    fn run<T: Float>(
        g: &PoolGeom,
        x: &Tensor,
        layer: &str,
        category: Category,
        idx_category: Category,
    ) -> Result<(Tensor, PoolIndices)> {
        let (n, c, h, w, ho, wo) = check_input(g, x, layer)?;
        if u32::try_from(h * w).is_err() {
            return Err(Error::shape(
                layer,
                format!("input plane {h}x{w} has more elements than a u32 index can address"),
            ));
        }
        let mut y = crate::ops::zeros_par(&[n, c, ho, wo], x.dtype(), category)?;
        let mut idx = TrackedVec::filled(0u32, n * c * ho * wo, cpu_tracker(), idx_category);
        cpu::maxpool2d_forward(
            g,
            x.as_slice::<T>()?,
            (h, w),
            (ho, wo),
            y.data_mut::<T>()?,
            &mut idx,
        );
        Ok((y, PoolIndices::Host(idx)))
    }
    match x.device() {
        Device::Cpu => with_dtype!(x.dtype(), T => run::<T>(g, x, layer, category, idx_category)),
        Device::Cuda(_) | Device::Emu => {
            let (y, idx) = cuda::maxpool2d_forward(g, x, layer, category, idx_category)?;
            Ok((y, PoolIndices::Device(idx)))
        }
    }
}

/// Max pooling backward: dx (N, C, H, W) (`dims`, the forward input's) from the output
/// gradient and the forward's indices; each gradient goes to its window's maximum.
pub fn maxpool2d_backward(
    g: &PoolGeom,
    gy: &Tensor,
    idx: &PoolIndices,
    dims: [usize; 4],
    layer: &str,
) -> Result<Tensor> {
    let idx = match idx {
        PoolIndices::Device(idx) => return cuda::maxpool2d_backward(g, gy, idx, dims, layer),
        PoolIndices::Host(idx) => idx,
    };
    let [n, c, h, w] = dims;
    let (ho, wo) = g.out_hw(h, w, layer)?;
    with_dtype!(gy.dtype(), T => {
        let mut dx = crate::ops::zeros_par(&[n, c, h, w], gy.dtype(), Category::Workspace)?;
        cpu::maxpool2d_backward(gy.as_slice::<T>()?, idx, (h, w), (ho, wo), dx.data_mut::<T>()?);
        Ok(dx)
    })
}

/// Average pooling: y (N, C, Ho, Wo) charged to `category`; each window's sum / kh·kw.
pub fn avgpool2d(g: &PoolGeom, x: &Tensor, layer: &str, category: Category) -> Result<Tensor> {
    match x.device() {
        Device::Cpu => with_dtype!(x.dtype(), T => {
            let (n, c, h, w, ho, wo) = check_input(g, x, layer)?;
            let mut y = crate::ops::zeros_par(&[n, c, ho, wo], x.dtype(), category)?;
            cpu::avgpool2d_forward(g, x.as_slice::<T>()?, (h, w), (ho, wo), y.data_mut::<T>()?);
            Ok(y)
        }),
        Device::Cuda(_) | Device::Emu => cuda::avgpool2d_forward(g, x, layer, category),
    }
}

/// Average pooling backward: dx (N, C, H, W) (`dims`, the forward input's).
pub fn avgpool2d_backward(
    g: &PoolGeom,
    gy: &Tensor,
    dims: [usize; 4],
    layer: &str,
) -> Result<Tensor> {
    match gy.device() {
        Device::Cpu => with_dtype!(gy.dtype(), T => {
            let [n, c, h, w] = dims;
            let (ho, wo) = g.out_hw(h, w, layer)?;
            let mut dx = crate::ops::zeros_par(&[n, c, h, w], gy.dtype(), Category::Workspace)?;
            cpu::avgpool2d_backward(g, gy.as_slice::<T>()?, (h, w), (ho, wo), dx.data_mut::<T>()?);
            Ok(dx)
        }),
        Device::Cuda(_) | Device::Emu => cuda::avgpool2d_backward(g, gy, dims, layer),
    }
}

/// Global average pooling: x (N, C, H, W) → y (N, C), the mean of each plane, charged to
/// `category`.
pub fn global_avg(x: &Tensor, layer: &str, category: Category) -> Result<Tensor> {
    match x.device() {
        Device::Cpu => with_dtype!(x.dtype(), T => {
            let (n, c, h, w) = x.dims4(layer)?;
            let mut y = crate::ops::zeros_par(&[n, c], x.dtype(), category)?;
            cpu::global_avg_forward(x.as_slice::<T>()?, h * w, y.data_mut::<T>()?);
            Ok(y)
        }),
        Device::Cuda(_) | Device::Emu => cuda::global_avg_forward(x, layer, category),
    }
}

/// Global average pooling backward: dx (N, C, H, W) = gy / (H·W) broadcast over each plane.
pub fn global_avg_backward(gy: &Tensor, dims: [usize; 4]) -> Result<Tensor> {
    match gy.device() {
        Device::Cpu => with_dtype!(gy.dtype(), T => {
            let [n, c, h, w] = dims;
            let mut dx = crate::ops::zeros_par(&[n, c, h, w], gy.dtype(), Category::Workspace)?;
            cpu::global_avg_backward(gy.as_slice::<T>()?, h * w, dx.data_mut::<T>()?);
            Ok(dx)
        }),
        Device::Cuda(_) | Device::Emu => cuda::global_avg_backward(gy, dims),
    }
}

//! Pooling layers: `MaxPool2d`, `AvgPool2d` (PyTorch semantics, floor mode) and
//! `GlobalAvgPool` (adaptive_avg_pool2d(1) followed by flatten). On a CUDA-backend device
//! they run the kernels of cuda/pool.cu (`device::kernels::pool`).

use std::any::Any;

use super::{check_grad, no_forward, LayerName, Module};
use crate::device::alloc::{cpu_tracker, Category, TrackedVec};
use crate::ops::pool::cuda::{self as kernels, PoolIndices};
use crate::ops::pool::{self as ops, PoolGeom};
use crate::tensor::{Float, Tensor};
use crate::{with_dtype, Error, Result};

/// `nn.MaxPool2d(kernel, stride, padding)`: padding acts as −inf, floor mode, no dilation.
pub struct MaxPool2d {
    name: LayerName,
    pub geom: PoolGeom,
    /// Input shape (N, C, H, W) and argmax indices (N, C, Ho, Wo) of the last training
    /// forward; each index is h·W + w within its plane (as PyTorch's `indices`). The input
    /// itself is not kept.
    saved: Option<([usize; 4], Indices)>,
}

/// Argmax indices where the input lived: host memory, or the device (CUDA backend).
enum Indices {
    Host(TrackedVec<u32>),
    Device(PoolIndices),
}

impl MaxPool2d {
    /// A square window; padding must be at most kernel/2 (as in PyTorch).
    pub fn new(path: &str, kernel: usize, stride: usize, padding: usize) -> Result<MaxPool2d> {
        let geom = PoolGeom::square(kernel, stride, padding);
        geom.validate(path)?;
        Ok(MaxPool2d {
            name: LayerName::new(path),
            geom,
            saved: None,
        })
    }

    /// (y, indices, input dims, output dims).
    #[allow(clippy::type_complexity)]
    fn run<T: Float>(
        &self,
        x: &Tensor,
        category: Category,
    ) -> Result<(Tensor, TrackedVec<u32>, [usize; 4], (usize, usize))> {
        let (n, c, h, w, ho, wo) = ops::check_input(&self.geom, x, &self.name.path)?;
        if u32::try_from(h * w).is_err() {
            return Err(Error::shape(
                &self.name.path,
                format!("input plane {h}x{w} has more elements than a u32 index can address"),
            ));
        }
        let mut y = super::zeros_par(&[n, c, ho, wo], x.dtype(), Category::Workspace)?;
        let mut idx = TrackedVec::filled(0u32, n * c * ho * wo, cpu_tracker(), category);
        ops::maxpool2d_forward(
            &self.geom,
            x.as_slice::<T>()?,
            (h, w),
            (ho, wo),
            y.data_mut::<T>()?,
            &mut idx,
        );
        Ok((y, idx, [n, c, h, w], (ho, wo)))
    }

    fn back<T: Float>(&mut self, g: &Tensor) -> Result<Tensor> {
        let ([n, c, h, w], idx) = self
            .saved
            .take()
            .ok_or_else(|| no_forward(&self.name.path))?;
        let (ho, wo) = self.geom.out_hw(h, w, &self.name.path)?;
        check_grad(&self.name.path, g, &[n, c, ho, wo], g.dtype())?;
        let idx = match idx {
            Indices::Host(idx) => idx,
            Indices::Device(idx) => {
                return kernels::maxpool2d_backward(
                    &self.geom,
                    g,
                    &idx,
                    [n, c, h, w],
                    &self.name.path,
                )
            }
        };
        let mut dx = super::zeros_par(&[n, c, h, w], g.dtype(), Category::Workspace)?;
        ops::maxpool2d_backward(
            g.as_slice::<T>()?,
            &idx,
            (h, w),
            (ho, wo),
            dx.data_mut::<T>()?,
        );
        Ok(dx)
    }
}

impl Module for MaxPool2d {
    fn path(&self) -> &str {
        &self.name.path
    }
    fn describe(&self) -> String {
        let g = &self.geom;
        format!(
            "MaxPool2d(k{}x{}, s{:?}, p{:?})",
            g.kh, g.kw, g.stride, g.padding
        )
    }
    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        // the indices are scratch here
        if x.device().is_gpu() {
            return kernels::maxpool2d_forward(
                &self.geom,
                x,
                &self.name.path,
                Category::Workspace,
                Category::Workspace,
            )
            .map(|r| r.0);
        }
        with_dtype!(x.dtype(), T => self.run::<T>(x, Category::Workspace)).map(|r| r.0)
    }
    fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        if x.device().is_gpu() {
            let (y, idx) = kernels::maxpool2d_forward(
                &self.geom,
                x,
                &self.name.path,
                Category::Workspace,
                Category::SavedForBackward,
            )?;
            let (n, c, h, w) = x.dims4(&self.name.path)?;
            self.saved = Some(([n, c, h, w], Indices::Device(idx)));
            return Ok(y);
        }
        let (y, idx, dims, _) =
            with_dtype!(x.dtype(), T => self.run::<T>(x, Category::SavedForBackward))?;
        self.saved = Some((dims, Indices::Host(idx)));
        Ok(y)
    }
    fn backward(&mut self, g: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        with_dtype!(g.dtype(), T => self.back::<T>(g))
    }
    fn clear_saved(&mut self) {
        self.saved = None;
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `nn.AvgPool2d(kernel, stride, padding)` with count_include_pad = True (PyTorch's
/// default): each window's sum is divided by kernel², padding counting as zeros.
pub struct AvgPool2d {
    name: LayerName,
    pub geom: PoolGeom,
    /// The input shape (N, C, H, W) of the last training forward; no data is kept.
    saved: Option<[usize; 4]>,
}

impl AvgPool2d {
    /// A square window; padding must be at most kernel/2 (as in PyTorch).
    pub fn new(path: &str, kernel: usize, stride: usize, padding: usize) -> Result<AvgPool2d> {
        let geom = PoolGeom::square(kernel, stride, padding);
        geom.validate(path)?;
        Ok(AvgPool2d {
            name: LayerName::new(path),
            geom,
            saved: None,
        })
    }

    fn run<T: Float>(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_gpu() {
            return kernels::avgpool2d_forward(&self.geom, x, &self.name.path, Category::Workspace);
        }
        let (n, c, h, w, ho, wo) = ops::check_input(&self.geom, x, &self.name.path)?;
        let mut y = super::zeros_par(&[n, c, ho, wo], x.dtype(), Category::Workspace)?;
        ops::avgpool2d_forward(
            &self.geom,
            x.as_slice::<T>()?,
            (h, w),
            (ho, wo),
            y.data_mut::<T>()?,
        );
        Ok(y)
    }

    fn back<T: Float>(&mut self, g: &Tensor) -> Result<Tensor> {
        let [n, c, h, w] = self
            .saved
            .take()
            .ok_or_else(|| no_forward(&self.name.path))?;
        let (ho, wo) = self.geom.out_hw(h, w, &self.name.path)?;
        check_grad(&self.name.path, g, &[n, c, ho, wo], g.dtype())?;
        if g.device().is_gpu() {
            return kernels::avgpool2d_backward(&self.geom, g, [n, c, h, w], &self.name.path);
        }
        let mut dx = super::zeros_par(&[n, c, h, w], g.dtype(), Category::Workspace)?;
        ops::avgpool2d_backward(
            &self.geom,
            g.as_slice::<T>()?,
            (h, w),
            (ho, wo),
            dx.data_mut::<T>()?,
        );
        Ok(dx)
    }
}

impl Module for AvgPool2d {
    fn path(&self) -> &str {
        &self.name.path
    }
    fn describe(&self) -> String {
        let g = &self.geom;
        format!(
            "AvgPool2d(k{}x{}, s{:?}, p{:?})",
            g.kh, g.kw, g.stride, g.padding
        )
    }
    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        with_dtype!(x.dtype(), T => self.run::<T>(x))
    }
    fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        let y = with_dtype!(x.dtype(), T => self.run::<T>(x))?;
        let (n, c, h, w) = x.dims4(&self.name.path)?;
        self.saved = Some([n, c, h, w]);
        Ok(y)
    }
    fn backward(&mut self, g: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        with_dtype!(g.dtype(), T => self.back::<T>(g))
    }
    fn clear_saved(&mut self) {
        self.saved = None;
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// (N, C, H, W) → (N, C): the mean of each plane (`adaptive_avg_pool2d(x, 1).flatten(1)`).
pub struct GlobalAvgPool {
    name: LayerName,
    /// The input shape (N, C, H, W) of the last training forward; no data is kept.
    saved: Option<[usize; 4]>,
}

impl GlobalAvgPool {
    pub fn new(path: &str) -> GlobalAvgPool {
        GlobalAvgPool {
            name: LayerName::new(path),
            saved: None,
        }
    }

    fn dims(&self, x: &Tensor) -> Result<[usize; 4]> {
        let (n, c, h, w) = x.dims4(&self.name.path)?;
        if n == 0 || c == 0 || h == 0 || w == 0 {
            return Err(Error::shape(
                &self.name.path,
                format!("input {:?} has a zero dimension (empty batch?)", x.shape()),
            ));
        }
        Ok([n, c, h, w])
    }

    fn run<T: Float>(&self, x: &Tensor) -> Result<Tensor> {
        let [n, c, h, w] = self.dims(x)?;
        if x.device().is_gpu() {
            return kernels::global_avg_forward(x, &self.name.path, Category::Workspace);
        }
        let mut y = super::zeros_par(&[n, c], x.dtype(), Category::Workspace)?;
        ops::global_avg_forward(x.as_slice::<T>()?, h * w, y.data_mut::<T>()?);
        Ok(y)
    }

    fn back<T: Float>(&mut self, g: &Tensor) -> Result<Tensor> {
        let [n, c, h, w] = self
            .saved
            .take()
            .ok_or_else(|| no_forward(&self.name.path))?;
        check_grad(&self.name.path, g, &[n, c], g.dtype())?;
        if g.device().is_gpu() {
            return kernels::global_avg_backward(g, [n, c, h, w]);
        }
        let mut dx = super::zeros_par(&[n, c, h, w], g.dtype(), Category::Workspace)?;
        ops::global_avg_backward(g.as_slice::<T>()?, h * w, dx.data_mut::<T>()?);
        Ok(dx)
    }
}

impl Module for GlobalAvgPool {
    fn path(&self) -> &str {
        &self.name.path
    }
    fn describe(&self) -> String {
        "GlobalAvgPool".to_string()
    }
    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        with_dtype!(x.dtype(), T => self.run::<T>(x))
    }
    fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        let y = with_dtype!(x.dtype(), T => self.run::<T>(x))?;
        self.saved = Some(self.dims(x)?);
        Ok(y)
    }
    fn backward(&mut self, g: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        with_dtype!(g.dtype(), T => self.back::<T>(g))
    }
    fn clear_saved(&mut self) {
        self.saved = None;
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

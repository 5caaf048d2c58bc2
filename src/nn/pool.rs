//! Pooling layers: `MaxPool2d`, `AvgPool2d` (PyTorch semantics, floor mode) and
//! `GlobalAvgPool` (adaptive_avg_pool2d(1) followed by flatten), over the `ops::pool`
//! family (which picks the device).

use std::any::Any;

use super::{check_grad, no_forward, LayerName, Module};
use crate::device::alloc::Category;
use crate::ops::pool::{self as ops, PoolGeom, PoolIndices};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// `nn.MaxPool2d(kernel, stride, padding)`: padding acts as −inf, floor mode, no dilation.
pub struct MaxPool2d {
    name: LayerName,
    pub geom: PoolGeom,
    /// Input shape (N, C, H, W) and argmax indices (N, C, Ho, Wo) of the last training
    /// forward; each index is h·W + w within its plane (as PyTorch's `indices`). The input
    /// itself is not kept.
    saved: Option<([usize; 4], PoolIndices)>,
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
        let (y, _) = ops::maxpool2d(
            &self.geom,
            x,
            &self.name.path,
            Category::Workspace,
            Category::Workspace,
        )?;
        Ok(y)
    }
    fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        let (y, idx) = ops::maxpool2d(
            &self.geom,
            x,
            &self.name.path,
            Category::Workspace,
            Category::SavedForBackward,
        )?;
        let (n, c, h, w) = x.dims4(&self.name.path)?;
        self.saved = Some(([n, c, h, w], idx));
        Ok(y)
    }
    fn backward(&mut self, g: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        let ([n, c, h, w], idx) = self
            .saved
            .take()
            .ok_or_else(|| no_forward(&self.name.path))?;
        let (ho, wo) = self.geom.out_hw(h, w, &self.name.path)?;
        check_grad(&self.name.path, g, &[n, c, ho, wo], g.dtype())?;
        ops::maxpool2d_backward(&self.geom, g, &idx, [n, c, h, w], &self.name.path)
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
        ops::avgpool2d(&self.geom, x, &self.name.path, Category::Workspace)
    }
    fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        let y = ops::avgpool2d(&self.geom, x, &self.name.path, Category::Workspace)?;
        let (n, c, h, w) = x.dims4(&self.name.path)?;
        self.saved = Some([n, c, h, w]);
        Ok(y)
    }
    fn backward(&mut self, g: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        let [n, c, h, w] = self
            .saved
            .take()
            .ok_or_else(|| no_forward(&self.name.path))?;
        let (ho, wo) = self.geom.out_hw(h, w, &self.name.path)?;
        check_grad(&self.name.path, g, &[n, c, ho, wo], g.dtype())?;
        ops::avgpool2d_backward(&self.geom, g, [n, c, h, w], &self.name.path)
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
        self.dims(x)?;
        ops::global_avg(x, &self.name.path, Category::Workspace)
    }
    fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        let dims = self.dims(x)?;
        let y = ops::global_avg(x, &self.name.path, Category::Workspace)?;
        self.saved = Some(dims);
        Ok(y)
    }
    fn backward(&mut self, g: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        let [n, c, h, w] = self
            .saved
            .take()
            .ok_or_else(|| no_forward(&self.name.path))?;
        check_grad(&self.name.path, g, &[n, c], g.dtype())?;
        ops::global_avg_backward(g, [n, c, h, w])
    }
    fn clear_saved(&mut self) {
        self.saved = None;
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

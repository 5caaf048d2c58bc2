//! Pooling layers: `MaxPool2d`, `AvgPool2d` (PyTorch semantics, floor mode) and
//! `GlobalAvgPool` (adaptive_avg_pool2d(1) followed by flatten), over the `ops::pool`
//! family (which picks the device).

use std::any::Any;

use super::{check_grad, no_forward, LayerName, Module};
use crate::device::alloc::Category;
use crate::ops::pool::{self as ops, PoolGeom, PoolIndices};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// The window pooling layers: `MaxPool2d` and `AvgPool2d` are `Pool2d` of their kind.
pub struct Pool2d<K: PoolKind> {
    name: LayerName,
    /// Window, stride and padding, in pixels.
    pub geom: PoolGeom,
    /// The input shape (N, C, H, W) of the last training forward, and for max pooling the
    /// argmax indices (N, C, Ho, Wo), each h·W + w within its plane (as PyTorch's
    /// `indices`). The input itself is not kept.
    saved: Option<([usize; 4], Option<PoolIndices>)>,
    kind: std::marker::PhantomData<K>,
}

/// What distinguishes the pooling kinds.
pub trait PoolKind: Send + Sync + 'static {
    /// `MaxPool2d`, `AvgPool2d`.
    const NAME: &'static str;
    /// Max pooling (keeps argmax indices for backward) rather than average pooling.
    const MAX: bool;
}

/// `nn.MaxPool2d(kernel, stride, padding)`: padding acts as −inf, floor mode, no dilation.
pub struct Max;
/// `nn.AvgPool2d(kernel, stride, padding)` with count_include_pad = True (PyTorch's
/// default): each window's sum is divided by kernel², padding counting as zeros.
pub struct Avg;

/// `nn.MaxPool2d(kernel, stride, padding)`: padding acts as −inf, floor mode, no dilation.
pub type MaxPool2d = Pool2d<Max>;
/// `nn.AvgPool2d(kernel, stride, padding)`, count_include_pad = True.
pub type AvgPool2d = Pool2d<Avg>;

impl PoolKind for Max {
    const NAME: &'static str = "MaxPool2d";
    const MAX: bool = true;
}

impl PoolKind for Avg {
    const NAME: &'static str = "AvgPool2d";
    const MAX: bool = false;
}

impl<K: PoolKind> Pool2d<K> {
    /// y, and the indices max pooling keeps (charged to `idx_category`).
    fn run(&self, x: &Tensor, idx_category: Category) -> Result<(Tensor, Option<PoolIndices>)> {
        let (g, path) = (&self.geom, self.name.path.as_str());
        if K::MAX {
            let (y, idx) = ops::maxpool2d(g, x, path, Category::Workspace, idx_category)?;
            return Ok((y, Some(idx)));
        }
        Ok((ops::avgpool2d(g, x, path, Category::Workspace)?, None))
    }

    /// A square window; padding must be at most kernel/2 (as in PyTorch).
    pub fn new(path: &str, kernel: usize, stride: usize, padding: usize) -> Result<Self> {
        let geom = PoolGeom::square(kernel, stride, padding);
        geom.validate(path)?;
        Ok(Pool2d {
            name: LayerName::new(path),
            geom,
            saved: None,
            kind: std::marker::PhantomData,
        })
    }
}

impl<K: PoolKind> Module for Pool2d<K> {
    fn path(&self) -> &str {
        &self.name.path
    }
    fn describe(&self) -> String {
        let g = &self.geom;
        format!(
            "{}(k{}x{}, s{:?}, p{:?})",
            K::NAME,
            g.kh,
            g.kw,
            g.stride,
            g.padding
        )
    }
    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        // max pooling's indices are scratch here
        Ok(self.run(x, Category::Workspace)?.0)
    }
    fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        let (y, idx) = self.run(x, Category::SavedForBackward)?;
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
        let (geom, path) = (&self.geom, self.name.path.as_str());
        match idx {
            Some(idx) => ops::maxpool2d_backward(geom, g, &idx, [n, c, h, w], path),
            None => ops::avgpool2d_backward(geom, g, [n, c, h, w], path),
        }
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
    /// A global average pool at layer path `path`: (N, C, H, W) → (N, C).
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

//! Parameter-free layers: ReLU, Flatten and Dropout. On a CUDA-backend device they run the
//! kernels of cuda/act.cu (`device::kernels::act`); Flatten is a reshape on any device.

use std::any::Any;

use super::{check_grad, no_forward, LayerName, Module};
use crate::device::alloc::{cpu_tracker, Category, TrackedVec};
use crate::ops::act as ops;
use crate::ops::act::cuda as kernels;
use crate::tensor::{Float, Tensor};
use crate::{with_dtype, Error, Result};

/// y = max(x, 0), any shape.
pub struct ReLU {
    name: LayerName,
    /// The output of the last training forward, y (same shape as x): its positive entries
    /// are the gradient mask. Keeping y rather than x lets the next layer share the storage
    /// (a following conv keeps the same tensor as its input).
    saved: Option<Tensor>,
}

impl ReLU {
    pub fn new(path: &str) -> ReLU {
        ReLU {
            name: LayerName::new(path),
            saved: None,
        }
    }

    fn run<T: Float>(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_gpu() {
            return kernels::relu_forward(x, Category::Workspace);
        }
        let y = ops::relu_forward_vec(x.as_slice::<T>()?);
        Tensor::from_vec_in(y, x.shape(), x.device(), Category::Workspace)
    }

    fn back<T: Float>(&mut self, g: &Tensor) -> Result<Tensor> {
        let y = self
            .saved
            .take()
            .ok_or_else(|| no_forward(&self.name.path))?;
        check_grad(&self.name.path, g, y.shape(), y.dtype())?;
        if y.device().is_gpu() {
            return kernels::relu_backward(g, &y, Category::Workspace);
        }
        let dx = ops::relu_backward_vec(g.as_slice::<T>()?, y.as_slice::<T>()?);
        Tensor::from_vec_in(dx, y.shape(), y.device(), Category::Workspace)
    }
}

impl Module for ReLU {
    fn path(&self) -> &str {
        &self.name.path
    }
    fn describe(&self) -> String {
        "ReLU".to_string()
    }
    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        with_dtype!(x.dtype(), T => self.run::<T>(x))
    }
    fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        let y = with_dtype!(x.dtype(), T => self.run::<T>(x))?;
        self.saved = Some(y.keep_for_backward());
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

/// (N, d1, d2, ...) → (N, d1·d2·...): PyTorch's `nn.Flatten()` (start_dim = 1). The output
/// shares the input's storage.
pub struct Flatten {
    name: LayerName,
    /// The input shape of the last training forward (no data is kept).
    saved: Option<Vec<usize>>,
}

impl Flatten {
    pub fn new(path: &str) -> Flatten {
        Flatten {
            name: LayerName::new(path),
            saved: None,
        }
    }

    fn out_shape(&self, x: &Tensor) -> Result<[usize; 2]> {
        let s = x.shape();
        if s.len() < 2 {
            return Err(Error::shape(
                &self.name.path,
                format!("expected an input of rank ≥ 2 (N, ...), got shape {s:?}"),
            ));
        }
        Ok([s[0], s[1..].iter().product()])
    }
}

impl Module for Flatten {
    fn path(&self) -> &str {
        &self.name.path
    }
    fn describe(&self) -> String {
        "Flatten".to_string()
    }
    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        x.reshape(&self.out_shape(x)?)
    }
    fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let y = x.reshape(&self.out_shape(x)?)?;
        self.saved = Some(x.shape().to_vec());
        Ok(y)
    }
    fn backward(&mut self, g: &Tensor) -> Result<Tensor> {
        let shape = self
            .saved
            .take()
            .ok_or_else(|| no_forward(&self.name.path))?;
        let out = [shape[0], shape[1..].iter().product()];
        check_grad(&self.name.path, g, &out, g.dtype())?;
        g.reshape(&shape)
    }
    fn clear_saved(&mut self) {
        self.saved = None;
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Inverted dropout, PyTorch's `nn.Dropout(p)`: in training each element is zeroed with
/// probability p and the survivors are scaled by 1/(1 − p); `infer` is the identity.
///
/// The k-th training forward (k = 0, 1, ...) draws its mask from ChaCha8 stream k of key
/// `seed`, so a run is reproducible from the seed and does not depend on the thread count.
///
/// On a CUDA-backend device the mask of draw k comes from a counter-based hash inside the
/// kernel (`dropout_f32` in cuda/act.cu: SplitMix64 of (seed, k, element index)), so it is
/// reproducible from (seed, k) as well, and nothing is stored for backward: the backward
/// recomputes the same mask. The CPU and device masks are different draws (ChaCha8 vs the
/// hash) — a model moved between devices drops different elements for the same seed — but
/// both keep each element independently with probability 1 − p.
pub struct Dropout {
    name: LayerName,
    pub p: f64,
    pub seed: u64,
    /// Training forwards so far: the stream the next mask is drawn from.
    pub calls: u64,
    /// The input shape and mask of the last training forward.
    saved: Option<(Vec<usize>, SavedMask)>,
}

/// The mask a training forward leaves for backward.
enum SavedMask {
    /// p = 0: the identity.
    Identity,
    /// CPU: one byte per element, 1 = kept; charged to `Category::SavedForBackward`.
    Host(TrackedVec<u8>),
    /// CUDA backend: the draw (stream) the kernel recomputes the mask from.
    Device { stream: u64 },
}

impl Dropout {
    /// p must be in [0, 1).
    pub fn new(path: &str, p: f64, seed: u64) -> Result<Dropout> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid(
                format!("dropout layer `{path}`"),
                format!("probability p must be in [0, 1), got {p}"),
            ));
        }
        Ok(Dropout {
            name: LayerName::new(path),
            p,
            seed,
            calls: 0,
            saved: None,
        })
    }

    /// The keep-mask of the last training forward on the CPU (1 = kept), while it is held
    /// (`None` on a CUDA-backend device, where the mask is never stored).
    pub fn mask(&self) -> Option<&[u8]> {
        match &self.saved {
            Some((_, SavedMask::Host(m))) => Some(m.as_slice()),
            _ => None,
        }
    }

    /// 1/(1 − p): the factor applied to kept elements.
    pub fn scale(&self) -> f64 {
        1.0 / (1.0 - self.p)
    }

    fn apply<T: Float>(x: &Tensor, mask: &[u8], scale: f64) -> Result<Tensor> {
        let mut y = super::zeros_par(x.shape(), x.dtype(), Category::Workspace)?;
        ops::dropout_apply(x.as_slice::<T>()?, mask, T::of(scale), y.data_mut::<T>()?);
        Ok(y)
    }
}

impl Module for Dropout {
    fn path(&self) -> &str {
        &self.name.path
    }
    fn describe(&self) -> String {
        format!("Dropout(p={})", self.p)
    }
    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }
    fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        if self.p == 0.0 {
            self.saved = Some((x.shape().to_vec(), SavedMask::Identity));
            return Ok(x.clone());
        }
        if x.device().is_gpu() {
            let stream = self.calls;
            let y = kernels::dropout(x, self.p, self.seed, stream, Category::Workspace)?;
            self.calls += 1;
            self.saved = Some((x.shape().to_vec(), SavedMask::Device { stream }));
            return Ok(y);
        }
        let mut mask =
            TrackedVec::filled(0u8, x.numel(), cpu_tracker(), Category::SavedForBackward);
        ops::dropout_mask(&mut mask, self.p, self.seed, self.calls);
        self.calls += 1;
        let y = with_dtype!(x.dtype(), T => Self::apply::<T>(x, &mask, self.scale()))?;
        self.saved = Some((x.shape().to_vec(), SavedMask::Host(mask)));
        Ok(y)
    }
    fn backward(&mut self, g: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        let (shape, mask) = self
            .saved
            .take()
            .ok_or_else(|| no_forward(&self.name.path))?;
        check_grad(&self.name.path, g, &shape, g.dtype())?;
        // the same map as forward: dx = g · mask · scale
        match mask {
            SavedMask::Identity => Ok(g.clone()),
            SavedMask::Host(m) => {
                with_dtype!(g.dtype(), T => Self::apply::<T>(g, &m, self.scale()))
            }
            SavedMask::Device { stream } => {
                kernels::dropout(g, self.p, self.seed, stream, Category::Workspace)
            }
        }
    }
    fn clear_saved(&mut self) {
        self.saved = None;
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

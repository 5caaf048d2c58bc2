//! Parameter-free layers: ReLU, Flatten and Dropout, over the `ops::act` family (which
//! picks the device); Flatten is a reshape on any device.

use std::any::Any;

use super::{check_grad, no_forward, LayerName, Module};
use crate::device::alloc::Category;
use crate::ops::act::{self as ops, DropoutMask};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// y = max(x, 0), any shape.
pub struct ReLU {
    name: LayerName,
    /// The output of the last training forward, y (same shape as x): its positive entries
    /// are the gradient mask. Keeping y rather than x lets the next layer share the storage
    /// (a following conv keeps the same tensor as its input).
    saved: Option<Tensor>,
}

impl ReLU {
    /// A ReLU at layer path `path` (its name in reports; it has no parameters).
    pub fn new(path: &str) -> ReLU {
        ReLU {
            name: LayerName::new(path),
            saved: None,
        }
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
        ops::relu(x, Category::Workspace)
    }
    fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        let y = ops::relu(x, Category::Workspace)?;
        self.saved = Some(y.keep_for_backward());
        Ok(y)
    }
    fn backward(&mut self, g: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        let y = self
            .saved
            .take()
            .ok_or_else(|| no_forward(&self.name.path))?;
        check_grad(&self.name.path, g, y.shape(), y.dtype())?;
        ops::relu_backward(g, &y, Category::Workspace)
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
    /// A flatten layer at layer path `path`: (N, …) → (N, product of the rest).
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
    /// Drop probability, in [0, 1).
    pub p: f64,
    /// The seed every mask is drawn from (with the draw count `calls`).
    pub seed: u64,
    /// Training forwards so far: the stream the next mask is drawn from.
    pub calls: u64,
    /// The input shape and mask of the last training forward (`None` inside for p = 0,
    /// the identity); a stored mask is charged to `Category::SavedForBackward`.
    saved: Option<(Vec<usize>, Option<DropoutMask>)>,
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
            Some((_, Some(m))) => m.as_host(),
            _ => None,
        }
    }

    /// 1/(1 − p): the factor applied to kept elements.
    pub fn scale(&self) -> f64 {
        1.0 / (1.0 - self.p)
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
            self.saved = Some((x.shape().to_vec(), None));
            return Ok(x.clone());
        }
        let (y, mask) = ops::dropout(
            x,
            self.p,
            self.seed,
            self.calls,
            Category::Workspace,
            Category::SavedForBackward,
        )?;
        self.calls += 1;
        self.saved = Some((x.shape().to_vec(), Some(mask)));
        Ok(y)
    }
    fn backward(&mut self, g: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        let (shape, mask) = self
            .saved
            .take()
            .ok_or_else(|| no_forward(&self.name.path))?;
        check_grad(&self.name.path, g, &shape, g.dtype())?;
        match mask {
            None => Ok(g.clone()),
            Some(m) => ops::dropout_backward(g, &m, self.p, self.seed, Category::Workspace),
        }
    }
    fn clear_saved(&mut self) {
        self.saved = None;
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

//! BatchNorm: PyTorch's `nn.BatchNorm1d` and `nn.BatchNorm2d` (affine, tracking running
//! statistics), on top of the per-channel math in `ops::norm`.
//!
//! Inputs are viewed as (N, C, L): L = H·W for 2-d, L = 1 for a 1-d (N, C) input and L for
//! a 1-d (N, C, L) input. Training normalises with the batch mean and *biased* variance and
//! updates running_mean / running_var with the *unbiased* variance:
//! `running = (1 − momentum)·running + momentum·batch` (PyTorch's momentum convention).
//! `infer` normalises with the running statistics and changes nothing.
//!
//! The `ops::norm` family picks the device; the layer's parameters and running statistics
//! live on the input's device (`nn::module_to_device` moves both).

use std::any::Any;
use std::collections::HashMap;

use super::{load_param, no_forward, take_entry, LayerName, Module, Param, ParamKind};
use crate::device::alloc::Category;
use crate::ops::norm::{self as ops, BnParams};
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

/// Which PyTorch class the layer mirrors; it fixes the input ranks accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnKind {
    /// `BatchNorm1d`: (N, C) or (N, C, L).
    D1,
    /// `BatchNorm2d`: (N, C, H, W).
    D2,
}

/// What a training forward keeps: x (N, C, ...) and per-channel mean, rstd (C).
struct Saved {
    x: Tensor,
    mean: Tensor,
    rstd: Tensor,
}

/// Batch normalisation over channel dim 1.
///
/// State-dict entries use PyTorch's names: `<path>.weight`, `<path>.bias` (parameters) and
/// `<path>.running_mean`, `<path>.running_var` (buffers). PyTorch's `num_batches_tracked`
/// is not kept (it only matters for momentum = None, which is not supported): `state_dict`
/// does not emit it, and `load_state_dict` accepts and discards it when present.
pub struct BatchNorm {
    name: LayerName,
    /// `BatchNorm1d` or `BatchNorm2d`: the input ranks accepted.
    pub kind: BnKind,
    /// Channels C.
    pub num_features: usize,
    /// Added to the variance before the square root.
    pub eps: f64,
    /// Running-statistics update factor (PyTorch's convention, see the module doc).
    pub momentum: f64,
    /// γ: (C), init 1.
    pub weight: Param,
    /// β: (C), init 0.
    pub bias: Param,
    /// (C), init 0; charged to `Category::Parameter` (model state, not a gradient target).
    pub running_mean: Tensor,
    /// (C), init 1; charged to `Category::Parameter`.
    pub running_var: Tensor,
    saved: Option<Saved>,
}

impl BatchNorm {
    /// `BatchNorm2d(num_features, eps, momentum)`; input (N, C, H, W). PyTorch's defaults
    /// are eps = 1e-5, momentum = 0.1.
    pub fn new_2d(
        path: &str,
        num_features: usize,
        eps: f64,
        momentum: f64,
        dtype: DType,
    ) -> Result<BatchNorm> {
        Self::new(path, BnKind::D2, num_features, eps, momentum, dtype)
    }

    /// `BatchNorm1d(num_features, eps, momentum)`; input (N, C) or (N, C, L).
    pub fn new_1d(
        path: &str,
        num_features: usize,
        eps: f64,
        momentum: f64,
        dtype: DType,
    ) -> Result<BatchNorm> {
        Self::new(path, BnKind::D1, num_features, eps, momentum, dtype)
    }

    fn new(
        path: &str,
        kind: BnKind,
        c: usize,
        eps: f64,
        momentum: f64,
        dtype: DType,
    ) -> Result<BatchNorm> {
        let what = format!("batch-norm layer `{path}`");
        if c == 0 {
            return Err(Error::invalid(what, "num_features must be positive"));
        }
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(Error::invalid(
                what,
                format!("eps must be finite and ≥ 0, got {eps}"),
            ));
        }
        if !(0.0..=1.0).contains(&momentum) {
            return Err(Error::invalid(
                what,
                format!("momentum must be in [0, 1], got {momentum}"),
            ));
        }
        let name = LayerName::new(path);
        let _s = name.scope();
        let full =
            |v: f64| Tensor::full_in(v, &[c], dtype, crate::Device::Cpu, Category::Parameter);
        Ok(BatchNorm {
            name,
            kind,
            num_features: c,
            eps,
            momentum,
            weight: Param::new(full(1.0)?, ParamKind::NormScale),
            bias: Param::new(full(0.0)?, ParamKind::NormShift),
            running_mean: full(0.0)?,
            running_var: full(1.0)?,
            saved: None,
        })
    }

    /// Check x's rank, channels, emptiness and dtype; returns (N, C, L).
    fn dims(&self, x: &Tensor) -> Result<(usize, usize, usize)> {
        let path = &self.name.path;
        let s = x.shape();
        let (n, c, l) = match (self.kind, s) {
            (BnKind::D2, &[n, c, h, w]) => (n, c, h * w),
            (BnKind::D1, &[n, c]) => (n, c, 1),
            (BnKind::D1, &[n, c, l]) => (n, c, l),
            (BnKind::D2, _) => {
                return Err(Error::shape(
                    path,
                    format!("BatchNorm2d expects a 4-d (N, C, H, W) input, got shape {s:?}"),
                ))
            }
            (BnKind::D1, _) => {
                return Err(Error::shape(
                    path,
                    format!(
                        "BatchNorm1d expects a 2-d (N, C) or 3-d (N, C, L) input, got shape {s:?}"
                    ),
                ))
            }
        };
        if c != self.num_features {
            return Err(Error::shape(
                path,
                format!(
                    "input has {c} channels, the layer expects {} (input shape {s:?})",
                    self.num_features
                ),
            ));
        }
        if n == 0 || l == 0 {
            return Err(Error::shape(
                path,
                format!("input {s:?} is empty (batch or spatial size 0)"),
            ));
        }
        super::check_dtype(path, x, &self.weight.value)?;
        Ok((n, c, l))
    }

    fn params(&self) -> BnParams<'_> {
        BnParams {
            gamma: &self.weight.value,
            beta: &self.bias.value,
            running_mean: &self.running_mean,
            running_var: &self.running_var,
            eps: self.eps,
            momentum: self.momentum,
        }
    }

    fn run_train(&mut self, x: &Tensor) -> Result<Tensor> {
        let (n, c, l) = self.dims(x)?;
        if n * l == 1 {
            return Err(Error::shape(
                &self.name.path,
                format!(
                    "expected more than 1 value per channel when training, got input shape {:?}",
                    x.shape()
                ),
            ));
        }
        let r = ops::batch_norm_train(x, (n, c, l), &self.params(), Category::Workspace)?;
        // New buffers rather than an in-place update: a state_dict taken earlier shares the
        // old storage and must keep its values.
        self.running_mean = r.running_mean;
        self.running_var = r.running_var;
        self.saved = Some(Saved {
            x: x.keep_for_backward(),
            mean: r.mean,
            rstd: r.rstd,
        });
        Ok(r.y)
    }

    fn back(&mut self, g: &Tensor) -> Result<Tensor> {
        let s = self
            .saved
            .take()
            .ok_or_else(|| no_forward(&self.name.path))?;
        let dims = self.dims(&s.x)?;
        super::check_grad(&self.name.path, g, s.x.shape(), s.x.dtype())?;
        let r = ops::batch_norm_backward(&s.x, g, dims, &s.mean, &s.rstd, &self.weight.value)?;
        drop(s);
        self.weight.accumulate_grad_tensor(r.dgamma)?;
        self.bias.accumulate_grad_tensor(r.dbeta)?;
        Ok(r.dx)
    }

    fn load_buffer(
        &self,
        map: &mut HashMap<String, Tensor>,
        leaf: &str,
        dtype: DType,
    ) -> Result<Tensor> {
        // loaded values go where the layer lives (a model on a GPU-path device loading a
        // host checkpoint keeps every tensor on its device)
        let t = take_entry(map, &self.name.key(leaf), &[self.num_features])?
            .to_dtype(dtype)?
            .to_device(self.running_mean.device())?;
        t.retag(Category::Parameter);
        Ok(t)
    }
}

impl Module for BatchNorm {
    fn path(&self) -> &str {
        &self.name.path
    }
    fn describe(&self) -> String {
        format!(
            "BatchNorm{}({}, eps={}, momentum={})",
            match self.kind {
                BnKind::D1 => "1d",
                BnKind::D2 => "2d",
            },
            self.num_features,
            self.eps,
            self.momentum
        )
    }
    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        let dims = self.dims(x)?;
        ops::batch_norm_eval(x, dims, &self.params(), Category::Workspace)
    }
    fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        self.run_train(x)
    }
    fn backward(&mut self, g: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        self.back(g)
    }
    fn visit_params(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
        f(&self.name.key("weight"), &mut self.weight);
        f(&self.name.key("bias"), &mut self.bias);
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        f(&self.name.key("running_mean"), &mut self.running_mean);
        f(&self.name.key("running_var"), &mut self.running_var);
    }
    fn state_dict(&self, out: &mut Vec<(String, Tensor)>) {
        out.push((self.name.key("weight"), self.weight.value.clone()));
        out.push((self.name.key("bias"), self.bias.value.clone()));
        out.push((self.name.key("running_mean"), self.running_mean.clone()));
        out.push((self.name.key("running_var"), self.running_var.clone()));
    }
    fn load_state_dict(&mut self, map: &mut HashMap<String, Tensor>) -> Result<()> {
        let _s = self.name.scope();
        load_param(&mut self.weight, map, &self.name.key("weight"))?;
        load_param(&mut self.bias, map, &self.name.key("bias"))?;
        let dtype = self.weight.value.dtype();
        let rm = self.load_buffer(map, "running_mean", dtype)?;
        let rv = self.load_buffer(map, "running_var", dtype)?;
        self.running_mean = rm;
        self.running_var = rv;
        // PyTorch's step counter: not used (momentum is always a number here)
        map.remove(&self.name.key("num_batches_tracked"));
        Ok(())
    }
    fn clear_saved(&mut self) {
        self.saved = None;
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

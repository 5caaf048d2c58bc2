//! SGD with momentum, dampening, Nesterov momentum and (coupled) weight decay — PyTorch's
//! `torch.optim.SGD` update, step for step:
//! d = g + wd·p; buf = d on the first step, else μ·buf + (1 − dampening)·d;
//! d = d + μ·buf (Nesterov) or buf; p ← p − lr·d.

use std::collections::HashMap;

use super::Optimizer;
use crate::device::alloc::{self, Category};
use crate::nn::{Module, Param};
use crate::tensor::{Float, Tensor};
use crate::{ensure_valid, with_dtype, Error, Result};

#[derive(Debug)]
pub struct Sgd {
    lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    /// Momentum buffer per parameter name.
    buffers: HashMap<String, Tensor>,
}

impl Sgd {
    pub fn new(lr: f64, momentum: f64, weight_decay: f64, nesterov: bool) -> Result<Sgd> {
        ensure_valid!(
            lr.is_finite() && lr > 0.0 && lr < 1e3,
            "learning rate",
            "{lr} must be positive and below 1000"
        );
        ensure_valid!(
            (0.0..1.0).contains(&momentum),
            "momentum",
            "{momentum} must be in [0, 1)"
        );
        ensure_valid!(
            weight_decay.is_finite() && (0.0..1.0).contains(&weight_decay),
            "weight decay",
            "{weight_decay} must be in [0, 1)"
        );
        ensure_valid!(
            !nesterov || momentum > 0.0,
            "nesterov",
            "Nesterov momentum needs momentum > 0"
        );
        Ok(Sgd {
            lr,
            momentum,
            dampening: 0.0,
            weight_decay,
            nesterov,
            buffers: HashMap::new(),
        })
    }

    fn update<T: Float>(&mut self, name: &str, p: &mut Param) -> Result<()> {
        let Some(g) = p.grad.take() else {
            return Ok(());
        };
        let gv = g.as_slice::<T>()?;
        let (lr, mu, wd, damp) = (
            T::of(self.lr),
            T::of(self.momentum),
            T::of(self.weight_decay),
            T::of(self.dampening),
        );
        let pv = p.value.data_mut::<T>()?;
        if self.momentum == 0.0 {
            for (w, &gi) in pv.iter_mut().zip(gv) {
                *w -= lr * (gi + wd * *w);
            }
            return Ok(());
        }
        let first = !self.buffers.contains_key(name);
        if first {
            // charged to the layer that owns the parameter (its gradient's layer), so that the
            // memory profiler's per-layer table shows each layer's optimizer state
            let _s = alloc::scope_layer(alloc::layer_id(&g.layer()));
            let b = Tensor::zeros_in(g.shape(), g.dtype(), Category::OptimizerState)?;
            self.buffers.insert(name.to_string(), b);
        }
        let buf = self
            .buffers
            .get_mut(name)
            .ok_or_else(|| Error::state("sgd: missing buffer"))?
            .data_mut::<T>()?;
        for ((w, &gi), b) in pv.iter_mut().zip(gv).zip(buf.iter_mut()) {
            let d = gi + wd * *w;
            *b = if first {
                d
            } else {
                mu * *b + (T::one() - damp) * d
            };
            let step = if self.nesterov { d + mu * *b } else { *b };
            *w -= lr * step;
        }
        Ok(())
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, net: &mut dyn Module) -> Result<()> {
        let mut res = Ok(());
        net.visit_params(&mut |name, p| {
            if res.is_ok() {
                res = with_dtype!(p.value.dtype(), T => self.update::<T>(name, p));
            }
        });
        res
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
}

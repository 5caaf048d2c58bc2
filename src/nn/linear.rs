//! Linear: PyTorch's `nn.Linear`, y = x Wᵀ + b with x (N, in), W (out, in), b (out).

use std::any::Any;
use std::collections::HashMap;

use super::conv::default_init;
use super::{no_forward, LayerName, Module, Param, ParamKind};
use crate::device::alloc::Category;
use crate::ops::linear as ops;
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

/// A fully connected layer (PyTorch's `nn.Linear`): (N, in) → (N, out), y = x·Wᵀ + b.
pub struct Linear {
    name: LayerName,
    /// Features per input sample.
    pub in_features: usize,
    /// Features per output sample.
    pub out_features: usize,
    /// W: (out, in).
    pub weight: Param,
    /// b: (out).
    pub bias: Option<Param>,
    /// The input of the last training forward, x: (N, in).
    saved: Option<Tensor>,
}

impl Linear {
    /// A linear layer with PyTorch's default init: W, b ~ U(−1/√in, 1/√in).
    pub fn new(
        path: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
        dtype: DType,
        seed: u64,
    ) -> Result<Linear> {
        if in_features == 0 || out_features == 0 {
            return Err(Error::invalid(
                format!("linear layer `{path}`"),
                format!("features must be positive (in {in_features}, out {out_features})"),
            ));
        }
        let name = LayerName::new(path);
        let _s = name.scope();
        let w = default_init(&[out_features, in_features], in_features, dtype, seed)?;
        let bias = if bias {
            Some(Param::new(
                default_init(&[out_features], in_features, dtype, seed ^ 0x5eed)?,
                ParamKind::Bias,
            ))
        } else {
            None
        };
        Ok(Linear {
            name,
            in_features,
            out_features,
            weight: Param::new(w, ParamKind::Weight),
            bias,
            saved: None,
        })
    }

    /// Check x: (N, in) with N > 0 and the layer's dtype; returns N.
    fn check_input(&self, x: &Tensor) -> Result<usize> {
        let path = &self.name.path;
        let (n, f) = x.dims2(path)?;
        if f != self.in_features {
            return Err(Error::shape(
                path,
                format!(
                    "input has {f} features, the layer expects {} (input shape {:?})",
                    self.in_features,
                    x.shape()
                ),
            ));
        }
        if n == 0 {
            return Err(Error::shape(
                path,
                format!("input batch is empty (shape {:?})", x.shape()),
            ));
        }
        super::check_dtype(path, x, &self.weight.value)?;
        Ok(n)
    }

    fn run(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        ops::linear(
            x,
            &self.weight.value,
            self.bias.as_ref().map(|b| &b.value),
            Category::Workspace,
        )
    }

    fn back(&mut self, g: &Tensor) -> Result<Tensor> {
        let x = self
            .saved
            .take()
            .ok_or_else(|| no_forward(&self.name.path))?;
        let n = self.check_input(&x)?;
        super::check_grad(&self.name.path, g, &[n, self.out_features], x.dtype())?;
        let gr = ops::linear_backward(&x, &self.weight.value, g, true)?;
        super::add_weight_bias_grads(&self.name.path, &mut self.weight, self.bias.as_mut(), gr)
    }
}

impl Module for Linear {
    fn path(&self) -> &str {
        &self.name.path
    }
    fn describe(&self) -> String {
        format!(
            "Linear({}→{}{})",
            self.in_features,
            self.out_features,
            if self.bias.is_some() { "" } else { ", no bias" }
        )
    }
    super::weight_bias_layer!();
}

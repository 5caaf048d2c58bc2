//! Conv2d: PyTorch's `nn.Conv2d` (stride, padding, dilation, groups, optional bias).

use std::any::Any;
use std::collections::HashMap;

use super::{no_forward, LayerName, Module, Param, ParamKind};
use crate::device::alloc::Category;
use crate::ops::conv::{self, ConvGeom};
use crate::tensor::{DType, Tensor};
use crate::Result;

/// A 2-D convolution (PyTorch's `nn.Conv2d`): (N, C_in, H, W) → (N, C_out, H_out, W_out).
pub struct Conv2d {
    name: LayerName,
    /// Channels, kernel, stride, padding, dilation and groups.
    pub geom: ConvGeom,
    /// W: (C_out, C_in / groups, kh, kw).
    pub weight: Param,
    /// b: (C_out); `None` for a layer without bias.
    pub bias: Option<Param>,
    /// The input of the last training forward, x: (N, C_in, H, W).
    saved: Option<Tensor>,
}

/// PyTorch's default init for conv and linear layers: U(−1/√fan_in, 1/√fan_in) for the
/// weight (kaiming-uniform with a = √5) and the bias.
pub fn default_init(shape: &[usize], fan_in: usize, dtype: DType, seed: u64) -> Result<Tensor> {
    let b = 1.0 / (fan_in.max(1) as f64).sqrt();
    Tensor::rand_uniform(shape, dtype, -b, b, seed)
}

impl Conv2d {
    /// A convolution at layer path `path` with PyTorch's default init drawn from `seed`; an
    /// error when `geom` is inconsistent (channels not divisible by groups, zero sizes).
    pub fn new(path: &str, geom: ConvGeom, bias: bool, dtype: DType, seed: u64) -> Result<Conv2d> {
        geom.validate(path)?;
        let name = LayerName::new(path);
        let _s = name.scope();
        let fan_in = geom.k_group();
        let w = default_init(
            &[geom.c_out, geom.c_in / geom.groups, geom.kh, geom.kw],
            fan_in,
            dtype,
            seed,
        )?;
        let bias = if bias {
            Some(Param::new(
                default_init(&[geom.c_out], fan_in, dtype, seed ^ 0x5eed)?,
                ParamKind::Bias,
            ))
        } else {
            None
        };
        Ok(Conv2d {
            name,
            geom,
            weight: Param::new(w, ParamKind::Weight),
            bias,
            saved: None,
        })
    }

    fn run(&self, x: &Tensor) -> Result<Tensor> {
        conv::conv2d(
            &self.geom,
            1,
            x,
            &self.weight.value,
            self.bias.as_ref().map(|b| &b.value),
            &self.name.path,
            Category::Workspace,
        )
    }

    fn back(&mut self, g: &Tensor) -> Result<Tensor> {
        let x = self
            .saved
            .take()
            .ok_or_else(|| no_forward(&self.name.path))?;
        let (n, _, _, ho, wo) = conv::check_input(&self.geom, &x, &self.name.path)?;
        super::check_grad(&self.name.path, g, &[n, self.geom.c_out, ho, wo], x.dtype())?;
        let gr = conv::conv2d_backward(
            &self.geom,
            1,
            &x,
            &self.weight.value,
            g,
            true,
            &self.name.path,
        )?;
        super::add_weight_bias_grads(&self.name.path, &mut self.weight, self.bias.as_mut(), gr)
    }
}

impl Module for Conv2d {
    fn path(&self) -> &str {
        &self.name.path
    }
    fn describe(&self) -> String {
        let g = &self.geom;
        format!(
            "Conv2d({}→{}, k{}x{}, s{:?}, p{:?}, d{:?}, g{})",
            g.c_in, g.c_out, g.kh, g.kw, g.stride, g.padding, g.dilation, g.groups
        )
    }
    super::weight_bias_layer!();
}

//! Conv2d: PyTorch's `nn.Conv2d` (stride, padding, dilation, groups, optional bias).

use std::any::Any;
use std::collections::HashMap;

use super::{no_forward, LayerName, Module, Param, ParamKind};
use crate::device::alloc::Category;
use crate::ops::conv::cuda as kernels;
use crate::ops::conv::{self, ConvGeom};
use crate::tensor::{DType, Float, Tensor};
use crate::{with_dtype, Result};

pub struct Conv2d {
    name: LayerName,
    pub geom: ConvGeom,
    pub weight: Param,
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

    fn run<T: Float>(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_gpu() {
            return kernels::conv2d_forward(
                &self.geom,
                1,
                x,
                &self.weight.value,
                self.bias.as_ref().map(|b| &b.value),
                &self.name.path,
                Category::Workspace,
            );
        }
        let (n, h, w, ho, wo) = conv::check_input(&self.geom, x, &self.name.path)?;
        let mut out = super::zeros_par(
            &[n, self.geom.c_out, ho, wo],
            x.dtype(),
            Category::Workspace,
        )?;
        let bias = match &self.bias {
            Some(b) => Some(b.value.as_slice::<T>()?),
            None => None,
        };
        conv::conv2d_forward(
            &self.geom,
            1,
            x.as_slice::<T>()?,
            (n, h, w),
            (ho, wo),
            self.weight.value.as_slice::<T>()?,
            bias,
            out.data_mut::<T>()?,
        );
        Ok(out)
    }

    fn back<T: Float>(&mut self, g: &Tensor) -> Result<Tensor> {
        let x = self
            .saved
            .take()
            .ok_or_else(|| no_forward(&self.name.path))?;
        let (n, h, w, ho, wo) = conv::check_input(&self.geom, &x, &self.name.path)?;
        super::check_grad(&self.name.path, g, &[n, self.geom.c_out, ho, wo], x.dtype())?;
        if x.device().is_gpu() {
            let gr = kernels::conv2d_backward(
                &self.geom,
                1,
                &x,
                &self.weight.value,
                g,
                true,
                &self.name.path,
            )?;
            self.weight.accumulate_grad_tensor(gr.dw)?;
            if let Some(b) = &mut self.bias {
                b.accumulate_grad_tensor(gr.db)?;
            }
            return gr
                .dx
                .ok_or_else(|| crate::Error::state("conv2d_backward: no dx"));
        }
        let mut dx = super::zeros_par(x.shape(), x.dtype(), Category::Workspace)?;
        let (dw, db) = conv::conv2d_backward(
            &self.geom,
            1,
            x.as_slice::<T>()?,
            (n, h, w),
            (ho, wo),
            self.weight.value.as_slice::<T>()?,
            g.as_slice::<T>()?,
            Some(dx.data_mut::<T>()?),
        );
        self.weight.accumulate_grad(&dw)?;
        if let Some(b) = &mut self.bias {
            b.accumulate_grad(&db)?;
        }
        Ok(dx)
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
    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        with_dtype!(x.dtype(), T => self.run::<T>(x))
    }
    fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        let y = with_dtype!(x.dtype(), T => self.run::<T>(x))?;
        self.saved = Some(x.keep_for_backward());
        Ok(y)
    }
    fn backward(&mut self, g: &Tensor) -> Result<Tensor> {
        let _s = self.name.scope();
        with_dtype!(g.dtype(), T => self.back::<T>(g))
    }
    fn visit_params(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
        super::visit_weight_bias(&self.name, &mut self.weight, &mut self.bias, f);
    }
    fn state_dict(&self, out: &mut Vec<(String, Tensor)>) {
        super::state_weight_bias(&self.name, &self.weight, &self.bias, out);
    }
    fn load_state_dict(&mut self, map: &mut HashMap<String, Tensor>) -> Result<()> {
        super::load_weight_bias(&self.name, &mut self.weight, &mut self.bias, map)
    }
    fn clear_saved(&mut self) {
        self.saved = None;
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

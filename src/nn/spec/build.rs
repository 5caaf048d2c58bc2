//! Building the module tree of a spec with fresh weights (each layer seeded from the
//! build seed and its position, so a spec and a seed give the same weights every time).

use super::layer::LayerSpec;
use super::shape::square_pool;
use super::{child_name, join};
use crate::nn::act::{Dropout, Flatten, ReLU};
use crate::nn::container::{Residual, Sequential};
use crate::nn::conv::Conv2d;
use crate::nn::linear::Linear;
use crate::nn::norm::BatchNorm;
use crate::nn::pool::{AvgPool2d, GlobalAvgPool, MaxPool2d};
use crate::nn::quadratic::{QuadConv2d, QuadLinear};
use crate::nn::{BackpropMode, Module};
use crate::tensor::DType;
use crate::Result;

/// Build-time options.
#[derive(Clone, Copy, Debug)]
pub struct BuildOptions {
    /// The element type of every parameter (default f32).
    pub dtype: DType,
    /// The seed the initial weights derive from (default 0); the same spec and seed give the
    /// same weights.
    pub seed: u64,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            dtype: DType::F32,
            seed: 0,
        }
    }
}

struct Builder {
    opts: BuildOptions,
    counter: u64,
}

impl Builder {
    fn seed(&mut self) -> u64 {
        self.counter += 1;
        self.opts
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(self.counter)
    }

    fn seq(
        &mut self,
        layers: &[LayerSpec],
        prefix: &str,
        mode: BackpropMode,
    ) -> Result<Vec<Box<dyn Module>>> {
        layers
            .iter()
            .enumerate()
            .map(|(i, l)| self.layer(l, &join(prefix, &child_name(l, i)), mode))
            .collect()
    }

    fn layer(&mut self, l: &LayerSpec, path: &str, mode: BackpropMode) -> Result<Box<dyn Module>> {
        let dt = self.opts.dtype;
        Ok(match l {
            LayerSpec::Conv2d { .. } | LayerSpec::QuadConv2d { .. } => {
                let conv = l.conv().expect("a convolution layer");
                let g = conv.geom(path)?;
                match l {
                    LayerSpec::QuadConv2d { neuron, .. } => Box::new(QuadConv2d::new(
                        path,
                        *neuron,
                        g,
                        conv.bias,
                        mode,
                        dt,
                        self.seed(),
                    )?),
                    _ => Box::new(Conv2d::new(path, g, conv.bias, dt, self.seed())?),
                }
            }
            LayerSpec::Linear {
                in_features,
                out_features,
                bias,
                ..
            } => Box::new(Linear::new(
                path,
                *in_features,
                *out_features,
                *bias,
                dt,
                self.seed(),
            )?),
            LayerSpec::QuadLinear {
                neuron,
                in_features,
                out_features,
                bias,
                ..
            } => Box::new(QuadLinear::new(
                path,
                *neuron,
                *in_features,
                *out_features,
                *bias,
                mode,
                dt,
                self.seed(),
            )?),
            LayerSpec::BatchNorm2d {
                num_features,
                eps,
                momentum,
                ..
            } => Box::new(BatchNorm::new_2d(path, *num_features, *eps, *momentum, dt)?),
            LayerSpec::BatchNorm1d {
                num_features,
                eps,
                momentum,
                ..
            } => Box::new(BatchNorm::new_1d(path, *num_features, *eps, *momentum, dt)?),
            LayerSpec::Relu { .. } => Box::new(ReLU::new(path)),
            LayerSpec::Dropout { p, .. } => Box::new(Dropout::new(path, *p, self.seed())?),
            LayerSpec::MaxPool2d {
                kernel_size,
                stride,
                padding,
                ..
            } => {
                let (k, s, p) = square_pool(path, *kernel_size, *stride, *padding)?;
                Box::new(MaxPool2d::new(path, k, s, p)?)
            }
            LayerSpec::AvgPool2d {
                kernel_size,
                stride,
                padding,
                ..
            } => {
                let (k, s, p) = square_pool(path, *kernel_size, *stride, *padding)?;
                Box::new(AvgPool2d::new(path, k, s, p)?)
            }
            LayerSpec::GlobalAvgPool { .. } => Box::new(GlobalAvgPool::new(path)),
            LayerSpec::Flatten { .. } => Box::new(Flatten::new(path)),
            LayerSpec::Sequential { layers, .. } => {
                Box::new(Sequential::new(path, self.seq(layers, path, mode)?))
            }
            LayerSpec::Residual {
                layers,
                shortcut,
                shortcut_name,
                relu,
                ..
            } => {
                let main = Sequential::new(path, self.seq(layers, path, mode)?);
                let sc = match shortcut {
                    Some(s) => {
                        let sp = join(path, shortcut_name);
                        Some(Sequential::new(&sp, self.seq(s, &sp, mode)?))
                    }
                    None => None,
                };
                Box::new(Residual::new(path, main, sc, *relu))
            }
        })
    }
}

/// The modules of `layers` (the top level of a spec), each with its quadratic layers in
/// `mode` until the spec's overrides are applied.
pub(super) fn build_layers(
    layers: &[LayerSpec],
    opts: BuildOptions,
    mode: BackpropMode,
) -> Result<Vec<Box<dyn Module>>> {
    Builder { opts, counter: 0 }.seq(layers, "", mode)
}

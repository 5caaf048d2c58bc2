//! Model specs: a serde description of a model from which the module tree is built. The
//! zoo, the converter and checkpoints all speak this format (JSON or TOML).
//!
//! Each layer has a `name`, the attribute name PyTorch would give it inside its parent
//! (`conv1`, `bn1`, `0`, …); full paths join names with dots, so parameter names follow
//! PyTorch's state-dict naming for the same structure (`layer1.0.conv1.conv2.weight`).
//! A layer without a name is named by its index in its parent, as `nn.Sequential` does.
//!
//! `build` type-checks the whole spec first (channel counts, spatial sizes, the number of
//! classes), so a bad spec is an error that names the layer, before any weight exists.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::act::{Dropout, Flatten, ReLU};
use super::container::{Residual, Sequential};
use super::conv::Conv2d;
use super::linear::Linear;
use super::norm::BatchNorm;
use super::pool::{AvgPool2d, GlobalAvgPool, MaxPool2d};
use super::quadratic::{NeuronType, QuadConv2d, QuadLinear};
use super::{BackpropMode, Module};
use crate::ops::conv::ConvGeom;
use crate::tensor::DType;
use crate::{Error, Result};

/// A size given as one number (both axes) or as [height, width].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Pair {
    One(usize),
    Two([usize; 2]),
}

impl Pair {
    pub fn hw(self) -> (usize, usize) {
        match self {
            Pair::One(v) => (v, v),
            Pair::Two([h, w]) => (h, w),
        }
    }
}

fn one() -> Pair {
    Pair::One(1)
}
fn zero() -> Pair {
    Pair::One(0)
}
fn yes() -> bool {
    true
}
fn one_group() -> usize {
    1
}
fn bn_eps() -> f64 {
    1e-5
}
fn bn_momentum() -> f64 {
    0.1
}
fn shortcut_name() -> String {
    "shortcut".to_string()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    Conv2d {
        #[serde(default)]
        name: Option<String>,
        in_channels: usize,
        out_channels: usize,
        kernel_size: Pair,
        #[serde(default = "one")]
        stride: Pair,
        #[serde(default = "zero")]
        padding: Pair,
        #[serde(default = "one")]
        dilation: Pair,
        #[serde(default = "one_group")]
        groups: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    Linear {
        #[serde(default)]
        name: Option<String>,
        in_features: usize,
        out_features: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    BatchNorm2d {
        #[serde(default)]
        name: Option<String>,
        num_features: usize,
        #[serde(default = "bn_eps")]
        eps: f64,
        #[serde(default = "bn_momentum")]
        momentum: f64,
    },
    BatchNorm1d {
        #[serde(default)]
        name: Option<String>,
        num_features: usize,
        #[serde(default = "bn_eps")]
        eps: f64,
        #[serde(default = "bn_momentum")]
        momentum: f64,
    },
    Relu {
        #[serde(default)]
        name: Option<String>,
    },
    MaxPool2d {
        #[serde(default)]
        name: Option<String>,
        kernel_size: Pair,
        /// Defaults to `kernel_size`, as in PyTorch.
        #[serde(default)]
        stride: Option<Pair>,
        #[serde(default = "zero")]
        padding: Pair,
    },
    AvgPool2d {
        #[serde(default)]
        name: Option<String>,
        kernel_size: Pair,
        #[serde(default)]
        stride: Option<Pair>,
        #[serde(default = "zero")]
        padding: Pair,
    },
    /// (N, C, H, W) → (N, C): adaptive average pooling to 1×1, then flatten.
    GlobalAvgPool {
        #[serde(default)]
        name: Option<String>,
    },
    Flatten {
        #[serde(default)]
        name: Option<String>,
    },
    Dropout {
        #[serde(default)]
        name: Option<String>,
        p: f64,
    },
    QuadConv2d {
        #[serde(default)]
        name: Option<String>,
        neuron: NeuronType,
        in_channels: usize,
        out_channels: usize,
        kernel_size: Pair,
        #[serde(default = "one")]
        stride: Pair,
        #[serde(default = "zero")]
        padding: Pair,
        #[serde(default = "one")]
        dilation: Pair,
        #[serde(default = "one_group")]
        groups: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    QuadLinear {
        #[serde(default)]
        name: Option<String>,
        neuron: NeuronType,
        in_features: usize,
        out_features: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    Sequential {
        #[serde(default)]
        name: Option<String>,
        layers: Vec<LayerSpec>,
    },
    /// relu(layers(x) + shortcut(x)); the shortcut is the identity when absent. The
    /// children of `layers` are named directly under the block (PyTorch's BasicBlock);
    /// the shortcut's under `{block}.{shortcut_name}`.
    Residual {
        #[serde(default)]
        name: Option<String>,
        layers: Vec<LayerSpec>,
        #[serde(default)]
        shortcut: Option<Vec<LayerSpec>>,
        #[serde(default = "shortcut_name")]
        shortcut_name: String,
        #[serde(default = "yes")]
        relu: bool,
    },
}

/// A whole model: its input, its classes and its layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    /// Per-sample input shape: [C, H, W] for images, [F] for vectors.
    pub input: Vec<usize>,
    pub num_classes: usize,
    pub layers: Vec<LayerSpec>,
    /// Back-propagation mode of every quadratic layer…
    #[serde(default)]
    pub backprop: BackpropMode,
    /// …except those named here (full layer path → mode).
    #[serde(default)]
    pub backprop_overrides: BTreeMap<String, BackpropMode>,
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The `name` field of any layer variant (by reference or mutable reference, following
/// the binding mode of `$e`).
macro_rules! name_field {
    ($e:expr) => {
        match $e {
            LayerSpec::Conv2d { name, .. }
            | LayerSpec::Linear { name, .. }
            | LayerSpec::BatchNorm2d { name, .. }
            | LayerSpec::BatchNorm1d { name, .. }
            | LayerSpec::Relu { name }
            | LayerSpec::MaxPool2d { name, .. }
            | LayerSpec::AvgPool2d { name, .. }
            | LayerSpec::GlobalAvgPool { name }
            | LayerSpec::Flatten { name }
            | LayerSpec::Dropout { name, .. }
            | LayerSpec::QuadConv2d { name, .. }
            | LayerSpec::QuadLinear { name, .. }
            | LayerSpec::Sequential { name, .. }
            | LayerSpec::Residual { name, .. } => name,
        }
    };
}

impl LayerSpec {
    pub fn name(&self) -> Option<&str> {
        name_field!(self).as_deref()
    }

    /// The layer's name, to set or change.
    pub fn name_mut(&mut self) -> &mut Option<String> {
        name_field!(self)
    }

    /// The spec's type name, as written in spec files.
    pub fn type_name(&self) -> &'static str {
        match self {
            LayerSpec::Conv2d { .. } => "conv2d",
            LayerSpec::Linear { .. } => "linear",
            LayerSpec::BatchNorm2d { .. } => "batch_norm2d",
            LayerSpec::BatchNorm1d { .. } => "batch_norm1d",
            LayerSpec::Relu { .. } => "relu",
            LayerSpec::MaxPool2d { .. } => "max_pool2d",
            LayerSpec::AvgPool2d { .. } => "avg_pool2d",
            LayerSpec::GlobalAvgPool { .. } => "global_avg_pool",
            LayerSpec::Flatten { .. } => "flatten",
            LayerSpec::Dropout { .. } => "dropout",
            LayerSpec::QuadConv2d { .. } => "quad_conv2d",
            LayerSpec::QuadLinear { .. } => "quad_linear",
            LayerSpec::Sequential { .. } => "sequential",
            LayerSpec::Residual { .. } => "residual",
        }
    }
}

fn geom(
    path: &str,
    (c_in, c_out): (usize, usize),
    k: Pair,
    s: Pair,
    p: Pair,
    d: Pair,
    groups: usize,
) -> Result<ConvGeom> {
    let (kh, kw) = k.hw();
    let g = ConvGeom {
        c_in,
        c_out,
        kh,
        kw,
        stride: s.hw(),
        padding: p.hw(),
        dilation: d.hw(),
        groups,
    };
    g.validate(path)?;
    // the stacked weight (up to 4 branches) must be allocatable: refuse absurd sizes here
    let too_big = (c_in / groups.max(1))
        .checked_mul(kh * kw)
        .and_then(|k| k.checked_mul(4 * c_out))
        .is_none_or(|n| n > crate::tensor::MAX_ELEMENTS);
    if too_big {
        return Err(Error::Spec(format!(
            "layer `{path}`: {c_in}→{c_out} channels with a {kh}x{kw} kernel is too large to allocate"
        )));
    }
    Ok(g)
}

fn spatial(path: &str, shape: &[usize], what: &str) -> Result<(usize, usize, usize)> {
    match shape {
        [c, h, w] => Ok((*c, *h, *w)),
        _ => Err(Error::Spec(format!(
            "layer `{path}` ({what}) needs a (C, H, W) input, but receives shape {shape:?}"
        ))),
    }
}

fn pool_out(path: &str, shape: &[usize], k: Pair, s: Option<Pair>, p: Pair) -> Result<Vec<usize>> {
    let (c, h, w) = spatial(path, shape, "pooling")?;
    let (kh, kw) = k.hw();
    let (sh, sw) = s.unwrap_or(k).hw();
    let (ph, pw) = p.hw();
    if kh == 0 || kw == 0 || sh == 0 || sw == 0 {
        return Err(Error::Spec(format!(
            "layer `{path}`: pooling kernel and stride must be positive"
        )));
    }
    if h + 2 * ph < kh || w + 2 * pw < kw {
        return Err(Error::Spec(format!(
            "layer `{path}`: pooling window {kh}x{kw} is larger than the padded input {}x{}",
            h + 2 * ph,
            w + 2 * pw
        )));
    }
    Ok(vec![
        c,
        (h + 2 * ph - kh) / sh + 1,
        (w + 2 * pw - kw) / sw + 1,
    ])
}

/// Pooling layers take one size per axis pair: (kernel, stride, padding), all square.
fn square_pool(path: &str, k: Pair, s: Option<Pair>, p: Pair) -> Result<(usize, usize, usize)> {
    let one = |v: Pair, what: &str| {
        match v.hw() {
        (a, b) if a == b => Ok(a),
        (a, b) => Err(Error::Spec(format!("layer `{path}`: pooling {what} {a}x{b} is not square; only square pooling is supported"))),
    }
    };
    Ok((
        one(k, "kernel")?,
        one(s.unwrap_or(k), "stride")?,
        one(p, "padding")?,
    ))
}

/// The per-sample output shape of `layer` for a per-sample input `shape`, or a spec error
/// naming the layer.
pub fn infer_shape(layer: &LayerSpec, path: &str, shape: &[usize]) -> Result<Vec<usize>> {
    let channels = |want: usize, what: &str| -> Result<()> {
        let have = shape.first().copied().unwrap_or(0);
        if have != want {
            return Err(Error::Spec(format!(
                "layer `{path}` ({what}) expects {want} input channels/features, but receives shape {shape:?}"
            )));
        }
        Ok(())
    };
    Ok(match layer {
        LayerSpec::Conv2d {
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            ..
        }
        | LayerSpec::QuadConv2d {
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            ..
        } => {
            let (_, h, w) = spatial(path, shape, layer.type_name())?;
            channels(*in_channels, layer.type_name())?;
            let g = geom(
                path,
                (*in_channels, *out_channels),
                *kernel_size,
                *stride,
                *padding,
                *dilation,
                *groups,
            )?;
            if let LayerSpec::QuadConv2d {
                neuron: NeuronType::T1,
                ..
            } = layer
            {
                // t1 holds a K×K bilinear form per output channel, K = C_in·kh·kw
                let k = g.k_group();
                if k.checked_mul(k)
                    .and_then(|k2| k2.checked_mul(g.c_out))
                    .is_none_or(|n| n > crate::tensor::MAX_ELEMENTS)
                {
                    return Err(Error::Spec(format!(
                        "layer `{path}`: a t1 neuron over {k}-element patches needs {k}² weights per output channel, too large to allocate"
                    )));
                }
            }
            let (ho, wo) = g
                .out_hw(h, w, path)
                .map_err(|e| Error::Spec(e.to_string()))?;
            vec![*out_channels, ho, wo]
        }
        LayerSpec::Linear {
            in_features,
            out_features,
            ..
        }
        | LayerSpec::QuadLinear {
            in_features,
            out_features,
            ..
        } => {
            let t1 = matches!(
                layer,
                LayerSpec::QuadLinear {
                    neuron: NeuronType::T1,
                    ..
                }
            );
            let too_big = in_features
                .checked_mul(if t1 { *in_features } else { 4 })
                .and_then(|n| n.checked_mul(*out_features))
                .is_none_or(|n| n > crate::tensor::MAX_ELEMENTS);
            if too_big {
                return Err(Error::Spec(format!(
                    "layer `{path}`: {in_features}→{out_features} features is too large to allocate"
                )));
            }
            if shape.len() != 1 {
                return Err(Error::Spec(format!("layer `{path}` ({}) needs a flat input, but receives shape {shape:?}; add a flatten layer", layer.type_name())));
            }
            channels(*in_features, layer.type_name())?;
            vec![*out_features]
        }
        LayerSpec::BatchNorm2d { num_features, .. } => {
            spatial(path, shape, "batch_norm2d")?;
            channels(*num_features, "batch_norm2d")?;
            shape.to_vec()
        }
        LayerSpec::BatchNorm1d { num_features, .. } => {
            if shape.len() > 2 {
                return Err(Error::Spec(format!("layer `{path}` (batch_norm1d) needs (C) or (C, L) input, but receives shape {shape:?}")));
            }
            channels(*num_features, "batch_norm1d")?;
            shape.to_vec()
        }
        LayerSpec::Relu { .. } => shape.to_vec(),
        LayerSpec::Dropout { p, .. } => {
            if !(0.0..1.0).contains(p) {
                return Err(Error::Spec(format!(
                    "layer `{path}`: dropout probability {p} is not in [0, 1)"
                )));
            }
            shape.to_vec()
        }
        LayerSpec::MaxPool2d {
            kernel_size,
            stride,
            padding,
            ..
        }
        | LayerSpec::AvgPool2d {
            kernel_size,
            stride,
            padding,
            ..
        } => {
            square_pool(path, *kernel_size, *stride, *padding)?;
            pool_out(path, shape, *kernel_size, *stride, *padding)?
        }
        LayerSpec::GlobalAvgPool { .. } => vec![spatial(path, shape, "global_avg_pool")?.0],
        LayerSpec::Flatten { .. } => vec![shape.iter().product()],
        LayerSpec::Sequential { layers, .. } => infer_seq(layers, path, shape)?,
        LayerSpec::Residual {
            layers,
            shortcut,
            shortcut_name,
            ..
        } => {
            let a = infer_seq(layers, path, shape)?;
            let b = match shortcut {
                Some(s) => infer_seq(s, &join(path, shortcut_name), shape)?,
                None => shape.to_vec(),
            };
            if a != b {
                return Err(Error::Spec(format!(
                    "residual block `{path}`: main path gives {a:?} but the shortcut gives {b:?}"
                )));
            }
            a
        }
    })
}

fn child_name(l: &LayerSpec, i: usize) -> String {
    l.name()
        .map(str::to_string)
        .unwrap_or_else(|| i.to_string())
}

fn infer_seq(layers: &[LayerSpec], prefix: &str, shape: &[usize]) -> Result<Vec<usize>> {
    let mut s = shape.to_vec();
    for (i, l) in layers.iter().enumerate() {
        s = infer_shape(l, &join(prefix, &child_name(l, i)), &s)?;
    }
    Ok(s)
}

/// Build-time options.
#[derive(Clone, Copy, Debug)]
pub struct BuildOptions {
    pub dtype: DType,
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
            LayerSpec::Conv2d {
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding,
                dilation,
                groups,
                bias,
                ..
            } => {
                let g = geom(
                    path,
                    (*in_channels, *out_channels),
                    *kernel_size,
                    *stride,
                    *padding,
                    *dilation,
                    *groups,
                )?;
                Box::new(Conv2d::new(path, g, *bias, dt, self.seed())?)
            }
            LayerSpec::QuadConv2d {
                neuron,
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding,
                dilation,
                groups,
                bias,
                ..
            } => {
                let g = geom(
                    path,
                    (*in_channels, *out_channels),
                    *kernel_size,
                    *stride,
                    *padding,
                    *dilation,
                    *groups,
                )?;
                Box::new(QuadConv2d::new(
                    path,
                    *neuron,
                    g,
                    *bias,
                    mode,
                    dt,
                    self.seed(),
                )?)
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

/// Every quadratic layer's full path, in forward order.
pub fn quadratic_layers(layers: &[LayerSpec], prefix: &str, out: &mut Vec<String>) {
    for (i, l) in layers.iter().enumerate() {
        let p = join(prefix, &child_name(l, i));
        match l {
            LayerSpec::QuadConv2d { .. } | LayerSpec::QuadLinear { .. } => out.push(p),
            LayerSpec::Sequential { layers, .. } => quadratic_layers(layers, &p, out),
            LayerSpec::Residual {
                layers,
                shortcut,
                shortcut_name,
                ..
            } => {
                quadratic_layers(layers, &p, out);
                if let Some(s) = shortcut {
                    quadratic_layers(s, &join(&p, shortcut_name), out);
                }
            }
            _ => {}
        }
    }
}

impl ModelSpec {
    /// Parse a spec from JSON; errors name the field or variant that is wrong.
    pub fn from_json(text: &str) -> Result<ModelSpec> {
        serde_json::from_str(text).map_err(|e| Error::Spec(e.to_string()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a ModelSpec always serialises")
    }

    /// Check the spec end to end: every layer's input matches the previous output, the
    /// output is (num_classes), every backprop override names a quadratic layer.
    pub fn check(&self) -> Result<()> {
        if self.input.is_empty() || self.input.contains(&0) {
            return Err(Error::Spec(format!(
                "model `{}`: input shape {:?} must be non-empty and positive",
                self.name, self.input
            )));
        }
        if self.num_classes == 0 {
            return Err(Error::Spec(format!(
                "model `{}`: num_classes must be positive",
                self.name
            )));
        }
        let out = infer_seq(&self.layers, "", &self.input)?;
        if out != [self.num_classes] {
            return Err(Error::Spec(format!(
                "model `{}` outputs shape {out:?} per sample, expected [{}] (num_classes)",
                self.name, self.num_classes
            )));
        }
        let mut quad = Vec::new();
        quadratic_layers(&self.layers, "", &mut quad);
        for k in self.backprop_overrides.keys() {
            if !quad.contains(k) {
                return Err(Error::Spec(format!(
                    "backprop override names `{k}`, which is not a quadratic layer of `{}` (quadratic layers: {})",
                    self.name,
                    if quad.is_empty() { "none".to_string() } else { quad.join(", ") }
                )));
            }
        }
        Ok(())
    }

    /// The back-propagation mode of the quadratic layer at `path`.
    pub fn mode_of(&self, path: &str) -> BackpropMode {
        self.backprop_overrides
            .get(path)
            .copied()
            .unwrap_or(self.backprop)
    }

    /// Type-check, then build the module tree with fresh weights.
    pub fn build(&self, opts: BuildOptions) -> Result<Sequential> {
        self.check()?;
        let mut b = Builder { opts, counter: 0 };
        let layers = b.seq(&self.layers, "", self.backprop)?;
        let mut net = Sequential::new("", layers);
        net.set_backprop(&|p| self.mode_of(p));
        Ok(net)
    }
}

//! [`LayerSpec`]: one layer of a spec, as spec files write it; [`ConvSpec`]: the geometry
//! both convolution layers (`conv2d`, `quad_conv2d`) share.

use serde::{Deserialize, Serialize};

use super::Pair;
use crate::nn::quadratic::NeuronType;
use crate::ops::conv::ConvGeom;
use crate::{Error, Result};

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

/// Declares [`LayerSpec`] and [`ConvSpec`] from ONE list of the convolution fields: the list
/// is spliced into both convolution variants, so spec files keep writing the fields flat
/// (`{"type": "conv2d", "in_channels": 3, …}`, unknown fields refused — which
/// `#[serde(flatten)]` would not allow), and makes up `ConvSpec`, which
/// [`LayerSpec::conv`] reads out of either variant.
macro_rules! layer_spec {
    ($($(#[$fa:meta])* $f:ident: $t:ty,)*) => {
        /// One layer of a spec, tagged by `type` in spec files (`"conv2d"`, `"linear"`, …);
        /// every variant has an optional `name` (its attribute name in its parent; the index in
        /// the parent when absent). Unknown fields are refused.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
        pub enum LayerSpec {
            /// `conv2d`: a 2-D convolution, (N, C_in, H, W) → (N, C_out, H_out, W_out).
            Conv2d {
                /// The layer's name in its parent (`"conv1"`); `None`: its index.
                #[serde(default)]
                name: Option<String>,
                $($(#[$fa])* $f: $t,)*
            },
            /// `linear`: a fully connected layer, (N, in_features) → (N, out_features); needs a
            /// flat per-sample input.
            Linear {
                /// The layer's name in its parent (`"fc"`); `None`: its index.
                #[serde(default)]
                name: Option<String>,
                /// Features per input sample.
                in_features: usize,
                /// Features per output sample.
                out_features: usize,
                /// Whether the layer adds a learned bias (default `true`).
                #[serde(default = "yes")]
                bias: bool,
            },
            /// `batch_norm2d`: batch normalization over the channels of (N, C, H, W) inputs.
            BatchNorm2d {
                /// The layer's name in its parent (`"bn1"`); `None`: its index.
                #[serde(default)]
                name: Option<String>,
                /// The number of channels C, which must match the input's.
                num_features: usize,
                /// Added to the variance before the square root (default 1e-5).
                #[serde(default = "bn_eps")]
                eps: f64,
                /// Running-statistics update factor, PyTorch's convention:
                /// `running = (1 − momentum)·running + momentum·batch` (default 0.1).
                #[serde(default = "bn_momentum")]
                momentum: f64,
            },
            /// `batch_norm1d`: batch normalization over the features of (N, C) or (N, C, L)
            /// inputs.
            BatchNorm1d {
                /// The layer's name in its parent; `None`: its index.
                #[serde(default)]
                name: Option<String>,
                /// The number of features C, which must match the input's.
                num_features: usize,
                /// Added to the variance before the square root (default 1e-5).
                #[serde(default = "bn_eps")]
                eps: f64,
                /// Running-statistics update factor, PyTorch's convention:
                /// `running = (1 − momentum)·running + momentum·batch` (default 0.1).
                #[serde(default = "bn_momentum")]
                momentum: f64,
            },
            /// `relu`: max(x, 0) elementwise; any shape.
            Relu {
                /// The layer's name in its parent; `None`: its index.
                #[serde(default)]
                name: Option<String>,
            },
            /// `max_pool2d`: max pooling of (N, C, H, W); kernel, stride and padding must be
            /// square.
            MaxPool2d {
                /// The layer's name in its parent; `None`: its index.
                #[serde(default)]
                name: Option<String>,
                /// Pooling window, in pixels.
                kernel_size: Pair,
                /// Defaults to `kernel_size`, as in PyTorch.
                #[serde(default)]
                stride: Option<Pair>,
                /// Padding on each side, in pixels (default 0).
                #[serde(default = "zero")]
                padding: Pair,
            },
            /// `avg_pool2d`: average pooling of (N, C, H, W); kernel, stride and padding must
            /// be square.
            AvgPool2d {
                /// The layer's name in its parent; `None`: its index.
                #[serde(default)]
                name: Option<String>,
                /// Pooling window, in pixels.
                kernel_size: Pair,
                /// Window step, in pixels; defaults to `kernel_size`, as in PyTorch.
                #[serde(default)]
                stride: Option<Pair>,
                /// Padding on each side, in pixels (default 0).
                #[serde(default = "zero")]
                padding: Pair,
            },
            /// (N, C, H, W) → (N, C): adaptive average pooling to 1×1, then flatten.
            GlobalAvgPool {
                /// The layer's name in its parent; `None`: its index.
                #[serde(default)]
                name: Option<String>,
            },
            /// `flatten`: (N, …) → (N, product of the rest).
            Flatten {
                /// The layer's name in its parent; `None`: its index.
                #[serde(default)]
                name: Option<String>,
            },
            /// `dropout`: in training, zeroes each element with probability `p` and scales the
            /// rest by 1/(1 − p); the identity in evaluation.
            Dropout {
                /// The layer's name in its parent; `None`: its index.
                #[serde(default)]
                name: Option<String>,
                /// Drop probability, in [0, 1) (anything else is a spec error).
                p: f64,
            },
            /// `quad_conv2d`: a quadratic convolution, (N, C_in, H, W) → (N, C_out, H_out,
            /// W_out), with the same geometry fields as `conv2d`.
            QuadConv2d {
                /// The layer's name in its parent; `None`: its index.
                #[serde(default)]
                name: Option<String>,
                /// The quadratic neuron: `"t1"`–`"t4"`, `"quadralib"`, `"quadralib-bn"`, `"fan"`.
                neuron: NeuronType,
                $($(#[$fa])* $f: $t,)*
            },
            /// `quad_linear`: a quadratic fully connected layer, (N, in_features) →
            /// (N, out_features); needs a flat per-sample input.
            QuadLinear {
                /// The layer's name in its parent; `None`: its index.
                #[serde(default)]
                name: Option<String>,
                /// The quadratic neuron: `"t1"`–`"t4"`, `"quadralib"`, `"quadralib-bn"`, `"fan"`.
                neuron: NeuronType,
                /// Features per input sample.
                in_features: usize,
                /// Features per output sample.
                out_features: usize,
                /// Whether the layer adds learned biases (default `true`).
                #[serde(default = "yes")]
                bias: bool,
            },
            /// `sequential`: the child layers applied in order (PyTorch's `nn.Sequential`).
            Sequential {
                /// The block's name in its parent (`"layer1"`); `None`: its index.
                #[serde(default)]
                name: Option<String>,
                /// The child layers, in forward order.
                layers: Vec<LayerSpec>,
            },
            /// relu(layers(x) + shortcut(x)); the shortcut is the identity when absent. The
            /// children of `layers` are named directly under the block (PyTorch's BasicBlock);
            /// the shortcut's under `{block}.{shortcut_name}`.
            Residual {
                /// The block's name in its parent (`"0"`); `None`: its index.
                #[serde(default)]
                name: Option<String>,
                /// The main branch, in forward order.
                layers: Vec<LayerSpec>,
                /// The shortcut branch (e.g. a strided 1×1 conv and a batch norm); `None`: the
                /// identity.
                #[serde(default)]
                shortcut: Option<Vec<LayerSpec>>,
                /// The name the shortcut's layers are nested under (default `"shortcut"`;
                /// torchvision writes `"downsample"`).
                #[serde(default = "shortcut_name")]
                shortcut_name: String,
                /// Whether a ReLU follows the sum (default `true`).
                #[serde(default = "yes")]
                relu: bool,
            },
        }

        /// The geometry of a convolution layer (`conv2d` or `quad_conv2d`), the fields both
        /// variants of [`LayerSpec`] hold, with the same names and defaults.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ConvSpec {
            $($(#[$fa])* pub $f: $t,)*
        }

        impl LayerSpec {
            /// The geometry of a `conv2d` or `quad_conv2d` layer; `None` for other layers.
            pub fn conv(&self) -> Option<ConvSpec> {
                match self {
                    LayerSpec::Conv2d { $($f,)* .. } | LayerSpec::QuadConv2d { $($f,)* .. } => {
                        Some(ConvSpec { $($f: *$f,)* })
                    }
                    _ => None,
                }
            }
        }
    };
}

layer_spec! {
    /// Channels C_in of the input, which must match the previous layer's output.
    in_channels: usize,
    /// Channels C_out of the output.
    out_channels: usize,
    /// Kernel size, in pixels.
    kernel_size: Pair,
    /// Kernel step, in pixels (default 1).
    #[serde(default = "one")]
    stride: Pair,
    /// Zero padding on each side, in pixels (default 0).
    #[serde(default = "zero")]
    padding: Pair,
    /// Spacing between kernel taps, in pixels (default 1).
    #[serde(default = "one")]
    dilation: Pair,
    /// Channel groups; C_in and C_out must both divide by it (default 1).
    #[serde(default = "one_group")]
    groups: usize,
    /// Whether the layer adds learned biases (default `true`).
    #[serde(default = "yes")]
    bias: bool,
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
    /// The layer's own name in its parent (`"conv1"`), `None` when the spec gives none (it is
    /// then named by its index).
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

impl ConvSpec {
    /// The validated convolution geometry at layer `path` (a spec error naming it when the
    /// sizes are inconsistent or the weights too large to allocate).
    pub fn geom(&self, path: &str) -> Result<ConvGeom> {
        let (c_in, c_out, groups) = (self.in_channels, self.out_channels, self.groups);
        let (kh, kw) = self.kernel_size.hw();
        let g = ConvGeom {
            c_in,
            c_out,
            kh,
            kw,
            stride: self.stride.hw(),
            padding: self.padding.hw(),
            dilation: self.dilation.hw(),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conv fields written once still read and write flat, in the old order, with
    /// their defaults, and unknown fields are still refused.
    #[test]
    fn conv_fields_stay_flat_in_json() {
        let l: LayerSpec = serde_json::from_str(
            r#"{"type": "quad_conv2d", "neuron": "t2", "in_channels": 3, "out_channels": 8,
                "kernel_size": 3, "padding": [1, 0]}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"{"type":"quad_conv2d","name":null,"neuron":"t2","in_channels":3,"out_channels":8,"kernel_size":3,"stride":1,"padding":[1,0],"dilation":1,"groups":1,"bias":true}"#
        );
        let want = ConvSpec {
            in_channels: 3,
            out_channels: 8,
            kernel_size: Pair::One(3),
            stride: Pair::One(1),
            padding: Pair::Two([1, 0]),
            dilation: Pair::One(1),
            groups: 1,
            bias: true,
        };
        assert_eq!(l.conv(), Some(want));
        let c: LayerSpec = serde_json::from_str(
            r#"{"type": "conv2d", "in_channels": 3, "out_channels": 8, "kernel_size": 3,
                "padding": [1, 0]}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"type":"conv2d","name":null,"in_channels":3,"out_channels":8,"kernel_size":3,"stride":1,"padding":[1,0],"dilation":1,"groups":1,"bias":true}"#
        );
        assert_eq!(c.conv(), Some(want));
        let e = serde_json::from_str::<LayerSpec>(
            r#"{"type": "conv2d", "in_channels": 3, "out_channels": 8, "kernel_size": 3,
                "padding_mode": "zeros"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("padding_mode"), "{e}");
        let relu: LayerSpec = serde_json::from_str(r#"{"type": "relu"}"#).unwrap();
        assert_eq!(relu.conv(), None);
    }
}

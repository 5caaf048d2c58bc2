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
//!
//! Files: `layer.rs` ([`LayerSpec`], [`ConvSpec`]), `shape.rs` (the type check:
//! [`infer_shape`]), `build.rs` (the module tree: [`BuildOptions`]),
//! `size.rs` (the memory a spec's model needs, checked before building: [`SpecSize`]); this
//! file holds [`ModelSpec`] and the naming of layers.

mod build;
mod layer;
mod shape;
mod size;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::container::Sequential;
use super::{BackpropMode, Module};
use crate::data::Preprocess;
use crate::{Error, Result};

pub use build::BuildOptions;
pub use layer::{ConvSpec, LayerSpec};
pub use shape::infer_shape;
pub(crate) use shape::visit_layers;
pub use size::SpecSize;

/// A size given as one number (both axes) or as [height, width].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Pair {
    /// One number for both axes: `3` means 3×3.
    One(usize),
    /// `[height, width]`, e.g. `[1, 0]`.
    Two([usize; 2]),
}

impl Pair {
    /// The size as (height, width).
    pub fn hw(self) -> (usize, usize) {
        match self {
            Pair::One(v) => (v, v),
            Pair::Two([h, w]) => (h, w),
        }
    }
}

/// A whole model: its input, its classes and its layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The model's name (`"resnet18"`), which error messages quote.
    pub name: String,
    /// Per-sample input shape: `[C, H, W]` for images, `[F]` for vectors.
    pub input: Vec<usize>,
    /// The number of classes; the last layer must output `[num_classes]` per sample.
    pub num_classes: usize,
    /// The top-level layers, in forward order.
    pub layers: Vec<LayerSpec>,
    /// Back-propagation mode of every quadratic layer…
    #[serde(default)]
    pub backprop: BackpropMode,
    /// …except those named here (full layer path → mode).
    #[serde(default)]
    pub backprop_overrides: BTreeMap<String, BackpropMode>,
    /// What raw inputs get before the first layer (normalization) and the class names:
    /// recorded by training from its dataset, applied by `Model::predict`; `None` for a
    /// model that was never trained (zoo, converted spec files) — raw inputs go in as they
    /// are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<Preprocess>,
}

/// `prefix.name` (just `name` at the root): a layer's full path.
pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The name a child gets in its parent: its own, else its index (as `nn.Sequential`).
pub(crate) fn child_name(l: &LayerSpec, i: usize) -> String {
    l.name()
        .map(str::to_string)
        .unwrap_or_else(|| i.to_string())
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

    /// The spec as pretty-printed JSON, which [`ModelSpec::from_json`] reads back.
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
        if let Some(p) = &self.preprocess {
            p.check(&self.name, &self.input, self.num_classes)?;
        }
        let out = shape::infer_seq(&self.layers, "", &self.input)?;
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

    /// Type-check, check the host can hold the model ([`ModelSpec::check_build_fits`]),
    /// then build the module tree with fresh weights.
    pub fn build(&self, opts: BuildOptions) -> Result<Sequential> {
        self.check()?;
        self.check_build_fits(opts.dtype)?;
        let layers = build::build_layers(&self.layers, opts, self.backprop)?;
        let mut net = Sequential::new("", layers);
        net.set_backprop(&|p| self.mode_of(p));
        Ok(net)
    }
}

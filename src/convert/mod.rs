//! The auto-builder (QuadraLib's "first-order model → QDNN"): convert a first-order model
//! spec (and, optionally, its trained weights) into a quadratic one, count what a model
//! costs, rank the quadratic layers of a trained QDNN by importance, and reduce its depth
//! to a parameter or FLOP budget.
//!
//! Everything here speaks `ModelSpec` and PyTorch-named state dicts (`Vec<(String,
//! Tensor)>`, as `Module::state_dict` writes them), and every report is a serde struct so
//! that a command line can print it as JSON.
//!
//! - [`builder`]: which layers (`Selector`: path, index, glob pattern), into which neuron,
//!   and the function-preserving initialisation of the new layers from trained weights
//!   (`convert_spec`, `convert_state_dict`, `convert_model`).
//! - [`calibrate`](mod@calibrate): set the BatchNorm statistics a conversion cannot know without data
//!   (quadralib-bn's BN_a, BN_b, and BN_c without a following BatchNorm) from training
//!   inputs, before fine-tuning (`calibrate`).
//! - [`cost`](mod@cost): parameters and multiply-accumulates per layer and in total (`cost`,
//!   `cost_at`, `CostReport::table`).
//! - [`importance`]: accuracy drop when each quadratic layer is masked, and the ranking
//!   RI = P_M·P_W/δ_A (`layer_importance`).
//! - [`reduce`](mod@reduce): drop or linearise the most removable quadratic layers until a budget is
//!   met (`reduce`).

pub mod builder;
pub mod calibrate;
pub mod cost;
pub mod importance;
pub mod reduce;

pub use builder::{
    convert_model, convert_spec, convert_state_dict, convertible_layers, glob_match, Conversion,
    ConvertOptions, ConvertReport, ConvertedLayer, Selector,
};
pub use calibrate::{calibrate, CalibrateReport, CalibratedBn};
pub use cost::{cost, cost_at, CostReport, LayerCost};
pub use importance::{layer_importance, ImportanceReport, LayerImportance, MaskMethod};
pub use reduce::{reduce, Budget, ReduceAction, ReduceReport, ReduceStep, Reduction};

use std::collections::HashMap;

use crate::model::Model;
use crate::nn::spec::{BuildOptions, LayerSpec, ModelSpec};
use crate::nn::Module;
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

/// A state dict as `Module::state_dict` writes it: PyTorch names, in module order.
pub type StateDict = Vec<(String, Tensor)>;

// the spec's layer naming, one definition for the builder and the converter
pub(crate) use crate::nn::spec::{child_name, join};

/// Is `key` a state-dict entry of the layer at `path` (`{path}.…`)?
pub(crate) fn under(key: &str, path: &str) -> bool {
    path.is_empty()
        || (key.len() > path.len() && key.starts_with(path) && key.as_bytes()[path.len()] == b'.')
}

fn set_name(l: &mut LayerSpec, n: String) {
    *l.name_mut() = Some(n);
}

fn name_all(layers: &mut [LayerSpec]) {
    for (i, l) in layers.iter_mut().enumerate() {
        let n = child_name(l, i);
        set_name(l, n);
        match l {
            LayerSpec::Sequential { layers, .. } => name_all(layers),
            LayerSpec::Residual {
                layers, shortcut, ..
            } => {
                name_all(layers);
                if let Some(s) = shortcut {
                    name_all(s);
                }
            }
            _ => {}
        }
    }
}

/// The same model with every layer's name written out (an unnamed layer gets its index),
/// so that removing a layer does not rename its later siblings. Paths and state-dict
/// names are unchanged.
pub fn with_explicit_names(spec: &ModelSpec) -> ModelSpec {
    let mut s = spec.clone();
    name_all(&mut s.layers);
    s
}

/// Call `f(path, layer)` for every layer (containers too, before their children), in
/// forward order (a residual block's main path, then its shortcut).
pub(crate) fn visit_layers(
    layers: &[LayerSpec],
    prefix: &str,
    f: &mut dyn FnMut(&str, &LayerSpec),
) {
    for (i, l) in layers.iter().enumerate() {
        let p = join(prefix, &child_name(l, i));
        f(&p, l);
        match l {
            LayerSpec::Sequential { layers, .. } => visit_layers(layers, &p, f),
            LayerSpec::Residual {
                layers,
                shortcut,
                shortcut_name,
                ..
            } => {
                visit_layers(layers, &p, f);
                if let Some(s) = shortcut {
                    visit_layers(s, &join(&p, shortcut_name), f);
                }
            }
            _ => {}
        }
    }
}

/// The layer at `path`, for editing.
pub(crate) fn layer_mut<'a>(
    layers: &'a mut [LayerSpec],
    prefix: &str,
    path: &str,
) -> Option<&'a mut LayerSpec> {
    for (i, l) in layers.iter_mut().enumerate() {
        let p = join(prefix, &child_name(l, i));
        if p == path {
            return Some(l);
        }
        if !under(path, &p) {
            continue;
        }
        return match l {
            LayerSpec::Sequential { layers, .. } => layer_mut(layers, &p, path),
            LayerSpec::Residual {
                layers,
                shortcut,
                shortcut_name,
                ..
            } => {
                let sp = join(&p, shortcut_name);
                if under(path, &sp) || path == sp {
                    shortcut.as_mut().and_then(|s| layer_mut(s, &sp, path))
                } else {
                    layer_mut(layers, &p, path)
                }
            }
            _ => None,
        };
    }
    None
}

/// Remove the layer at `path` from its parent; names must be explicit
/// (`with_explicit_names`) so that its siblings keep their paths.
pub(crate) fn remove_layer(layers: &mut Vec<LayerSpec>, prefix: &str, path: &str) -> bool {
    for i in 0..layers.len() {
        let p = join(prefix, &child_name(&layers[i], i));
        if p == path {
            layers.remove(i);
            return true;
        }
        if !under(path, &p) {
            continue;
        }
        return match &mut layers[i] {
            LayerSpec::Sequential { layers, .. } => remove_layer(layers, &p, path),
            LayerSpec::Residual {
                layers,
                shortcut,
                shortcut_name,
                ..
            } => {
                let sp = join(&p, shortcut_name);
                if under(path, &sp) {
                    shortcut
                        .as_mut()
                        .is_some_and(|s| remove_layer(s, &sp, path))
                } else {
                    remove_layer(layers, &p, path)
                }
            }
            _ => false,
        };
    }
    false
}

/// The dtype of a state dict's tensors (f32 when it is empty).
pub(crate) fn dict_dtype(sd: &[(String, Tensor)]) -> DType {
    sd.first().map_or(DType::F32, |(_, t)| t.dtype())
}

/// Build `spec` (fresh weights drawn with `seed`, in `dtype`) and load `sd` into it.
/// Entries the spec does not use are ignored; a missing entry is an error naming it.
pub fn model_from_state_dict(
    spec: &ModelSpec,
    sd: &[(String, Tensor)],
    dtype: DType,
    seed: u64,
) -> Result<Model> {
    let mut m = Model::build(spec, BuildOptions { dtype, seed })?;
    let mut map: HashMap<String, Tensor> = sd.iter().cloned().collect();
    m.net.load_state_dict(&mut map)?;
    Ok(m)
}

/// A model's state dict (parameters and BN running statistics, PyTorch names).
pub fn state_dict_of(model: &Model) -> StateDict {
    let mut sd = Vec::new();
    model.net.state_dict(&mut sd);
    sd
}

/// A copy of `model` (same spec, same weights) that can be changed freely.
pub fn copy_model(model: &Model) -> Result<Model> {
    let sd = state_dict_of(model);
    model_from_state_dict(&model.spec, &sd, dict_dtype(&sd), 0)
}

/// Rows `[start, end)` of a batch tensor (N, …).
pub(crate) fn rows(x: &Tensor, start: usize, end: usize) -> Result<Tensor> {
    let n = x.shape().first().copied().unwrap_or(0);
    if start > end || end > n {
        return Err(Error::shape(
            "rows",
            format!("rows {start}..{end} of a batch of {n}"),
        ));
    }
    let per: usize = x.shape()[1..].iter().product();
    let v = x.to_f64_vec();
    let mut shape = x.shape().to_vec();
    shape[0] = end - start;
    Tensor::from_f64(&v[start * per..end * per], &shape, x.dtype())
}

/// Eval-mode accuracy of `model` on (x, labels), x normalized already (the loaders'
/// batches), in batches of at most 256 samples.
pub fn accuracy(model: &Model, x: &Tensor, labels: &[usize]) -> Result<f64> {
    let n = x.shape().first().copied().unwrap_or(0);
    if n == 0 || n != labels.len() {
        return Err(Error::shape(
            "accuracy",
            format!(
                "{n} samples (input shape {:?}) but {} labels; need at least one of each, as many of both",
                x.shape(),
                labels.len()
            ),
        ));
    }
    const B: usize = 256;
    let mut correct = 0;
    let mut s = 0;
    while s < n {
        let e = (s + B).min(n);
        let xb = if s == 0 && e == n {
            x.clone()
        } else {
            rows(x, s, e)?
        };
        correct += model.evaluate_normalized(&xb, &labels[s..e])?.correct;
        s = e;
    }
    Ok(correct as f64 / n as f64)
}

/// The largest |a − b| between the eval-mode outputs of two models on `x` (normalized
/// already), and the largest |a| (to scale a tolerance).
pub fn max_output_diff(a: &Model, b: &Model, x: &Tensor) -> Result<(f64, f64)> {
    let ya = a.predict_normalized(x)?;
    let yb = b.predict_normalized(x)?;
    let scale = ya.to_f64_vec().iter().fold(0.0f64, |m, v| m.max(v.abs()));
    Ok((ya.max_abs_diff(&yb)?, scale))
}

/// The layer right after the one at `path` in the same parent (its path and spec).
pub(crate) fn next_sibling(
    layers: &[LayerSpec],
    prefix: &str,
    path: &str,
) -> Option<(String, LayerSpec)> {
    for (i, l) in layers.iter().enumerate() {
        let p = join(prefix, &child_name(l, i));
        if p == path {
            return layers
                .get(i + 1)
                .map(|n| (join(prefix, &child_name(n, i + 1)), n.clone()));
        }
        if !under(path, &p) {
            continue;
        }
        return match l {
            LayerSpec::Sequential { layers, .. } => next_sibling(layers, &p, path),
            LayerSpec::Residual {
                layers,
                shortcut,
                shortcut_name,
                ..
            } => {
                let sp = join(&p, shortcut_name);
                if under(path, &sp) {
                    shortcut.as_ref().and_then(|s| next_sibling(s, &sp, path))
                } else {
                    next_sibling(layers, &p, path)
                }
            }
            _ => None,
        };
    }
    None
}

//! Analysis tools: per-layer statistics of activations (layer outputs), weights and
//! gradients after one forward/backward on a batch — histogram (fixed number of bins over
//! [min, max]), mean, std, min, max and the share of extreme values (|v − mean| > 3·std;
//! the second-order term of quadratic neurons produces heavy tails) — and feature-map
//! views (the channel mean of a layer's output for one image, a first-order model beside
//! its quadratic twin, as in the QuadraLib paper's activation figure).
//!
//! The `quadra-train analyze` subcommand calls [`analyze`] / [`analyze_spec`],
//! [`plot::write_histogram_grid`] and [`feature_map_comparison`] /
//! [`plot::write_feature_maps`].
//!
//! Statistics are computed where the tensors live (the `ops::stats` family, re-exported
//! here): [`tensor_stats`] on any device; the CPU path is [`slice_stats`].

pub mod plot;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use serde::Serialize;

use crate::data::synthetic::Synthetic;
use crate::model::Model;
use crate::nn::spec::{BuildOptions, ModelSpec};
use crate::nn::Module;
use crate::optim::Sgd;
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

pub use crate::ops::stats::{slice_stats, tensor_stats, Histogram, TensorStats, EXTREME_SIGMAS};

/// What a statistics entry describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatKind {
    /// A layer's output in the training-mode forward.
    Activation,
    /// A parameter's values (weights, biases, norm scales and shifts).
    Weight,
    /// A parameter's gradient after the backward.
    Gradient,
}

impl StatKind {
    /// The kind's JSON and display name: `activation`, `weight` or `gradient`.
    pub fn name(self) -> &'static str {
        match self {
            StatKind::Activation => "activation",
            StatKind::Weight => "weight",
            StatKind::Gradient => "gradient",
        }
    }
}

/// Statistics of one tensor of one layer.
#[derive(Clone, Debug, Serialize)]
pub struct LayerStats {
    /// The full path of the layer the tensor belongs to.
    pub layer: String,
    /// `Module::describe()` of the layer.
    pub describe: String,
    /// Whether the layer is quadratic.
    pub quadratic: bool,
    /// Whether the tensor is an activation, a weight or a gradient.
    pub kind: StatKind,
    /// The layer path for activations, the parameter's state name for weights/gradients.
    pub name: String,
    /// The tensor's shape (activations include the batch dimension).
    pub shape: Vec<usize>,
    /// Histogram, mean, std, min, max and share of extreme values.
    pub stats: TensorStats,
}

/// Statistics of every leaf layer's output, every parameter and every gradient.
#[derive(Clone, Debug, Serialize)]
pub struct AnalysisReport {
    /// The spec's model name.
    pub model: String,
    /// Samples in the analysed batch.
    pub batch: usize,
    /// Histogram bins per entry.
    pub bins: usize,
    /// The loss of the training-mode forward on the batch.
    pub loss: f64,
    /// Activations in forward order, then each parameter's weight and gradient entries.
    pub entries: Vec<LayerStats>,
}

impl AnalysisReport {
    /// The entries of `kind`, in report order.
    pub fn of_kind(&self, kind: StatKind) -> impl Iterator<Item = &LayerStats> {
        self.entries.iter().filter(move |e| e.kind == kind)
    }
}

/// (path, describe, quadratic, leaf) of every module, in forward order.
fn tree(m: &dyn Module, out: &mut Vec<(String, String, bool, bool)>) {
    let any = m.as_any();
    let quad = any.is::<crate::nn::quadratic::QuadConv2d>()
        || any.is::<crate::nn::quadratic::QuadLinear>();
    let children = m.children();
    out.push((
        m.path().to_string(),
        m.describe(),
        quad,
        children.is_empty(),
    ));
    for c in children {
        tree(c, out);
    }
}

/// Run one training-mode forward and backward of `model` on (x, targets) and take
/// statistics of every leaf layer's output, every parameter and every gradient — on the
/// model's device (kernels on the CUDA backend; only the statistics come back). The
/// gradients are cleared afterwards and no optimizer step is taken (the model is unchanged
/// except for batch-norm running statistics).
pub fn analyze(
    model: &mut Model,
    x: &Tensor,
    targets: &[usize],
    bins: usize,
) -> Result<AnalysisReport> {
    let mut nodes = Vec::new();
    tree(&model.net, &mut nodes);
    let leaves: Vec<(String, String, bool)> = nodes
        .iter()
        .filter(|n| n.3 && !n.0.is_empty())
        .map(|n| (n.0.clone(), n.1.clone(), n.2))
        .collect();
    let found: Rc<RefCell<(Vec<LayerStats>, Option<Error>)>> = Default::default();
    let sink = found.clone();
    let leaf_set = leaves.clone();
    let previous = crate::nn::set_forward_observer(Some(Box::new(move |path, y| {
        let Some((_, describe, quad)) = leaf_set.iter().find(|l| l.0 == path) else {
            return;
        };
        let mut s = sink.borrow_mut();
        match tensor_stats(y, bins) {
            Ok(stats) => s.0.push(LayerStats {
                layer: path.to_string(),
                describe: describe.clone(),
                quadratic: *quad,
                kind: StatKind::Activation,
                name: path.to_string(),
                shape: y.shape().to_vec(),
                stats,
            }),
            Err(e) => {
                if s.1.is_none() {
                    s.1 = Some(e)
                }
            }
        }
    })));
    // statistics are taken where the model lives: a host batch is uploaded to its device
    let x = &model.input_on_device(x)?;
    let run = (|| -> Result<f64> {
        let logits = model.net_forward_for_accounting(x)?;
        let (loss, grad) = model.loss.forward(&logits, targets)?;
        drop(logits);
        model.net.backward(&grad)?;
        Ok(loss)
    })();
    crate::nn::set_forward_observer(previous);
    let loss = match run {
        Ok(l) => l,
        Err(e) => {
            model.net_clear();
            return Err(e);
        }
    };
    let (mut entries, err) = std::mem::take(&mut *found.borrow_mut());
    if let Some(e) = err {
        return Err(e);
    }
    // parameters and gradients, charged to the deepest leaf whose path prefixes the name
    let layer_of = |name: &str| -> (String, String, bool) {
        leaves
            .iter()
            .filter(|l| name.starts_with(&format!("{}.", l.0)))
            .max_by_key(|l| l.0.len())
            .cloned()
            .unwrap_or_else(|| (String::new(), String::new(), false))
    };
    let mut params = Vec::new();
    let mut res = Ok(());
    model.net.visit_params(&mut |name, p| {
        let (layer, describe, quadratic) = layer_of(name);
        for (kind, t) in [
            (StatKind::Weight, Some(&p.value)),
            (StatKind::Gradient, p.grad.as_ref()),
        ] {
            let Some(t) = t else { continue };
            match tensor_stats(t, bins) {
                Ok(stats) => params.push(LayerStats {
                    layer: layer.clone(),
                    describe: describe.clone(),
                    quadratic,
                    kind,
                    name: name.to_string(),
                    shape: t.shape().to_vec(),
                    stats,
                }),
                Err(e) => {
                    if res.is_ok() {
                        res = Err(e)
                    }
                }
            }
        }
        p.zero_grad();
    });
    res?;
    entries.extend(params);
    Ok(AnalysisReport {
        model: model.spec.name.clone(),
        batch: x.shape().first().copied().unwrap_or(0),
        bins,
        loss,
        entries,
    })
}

/// Build `spec` (seeded) and analyze it on a batch of the synthetic dataset shaped like
/// its input (after `train_steps` SGD steps on that dataset, 0 for the fresh model).
pub fn analyze_spec(
    spec: &ModelSpec,
    batch: usize,
    train_steps: usize,
    bins: usize,
    seed: u64,
) -> Result<AnalysisReport> {
    let (mut model, data) = train_briefly(spec, train_steps, batch, seed)?;
    let (x, y) = data.batch(batch, seed.wrapping_add(1000))?;
    analyze(&mut model, &x, &y, bins)
}

/// The synthetic dataset shaped like `spec`'s input (images: (C, H, W)).
pub fn synthetic_for(spec: &ModelSpec, seed: u64) -> Result<Synthetic> {
    let shape: [usize; 3] = match spec.input.as_slice() {
        [c, h, w] => [*c, *h, *w],
        [f] => [1, 1, *f],
        other => {
            return Err(Error::invalid(
                "analysis",
                format!("input shape {other:?} is neither (C, H, W) nor (F)"),
            ))
        }
    };
    Synthetic::new(shape, spec.num_classes.max(2), 0.5, seed)
}

/// Build `spec` and train it for `steps` SGD steps (lr 0.05, momentum 0.9) on the
/// synthetic dataset; returns the model and the dataset.
pub fn train_briefly(
    spec: &ModelSpec,
    steps: usize,
    batch: usize,
    seed: u64,
) -> Result<(Model, Synthetic)> {
    let mut model = Model::build(
        spec,
        BuildOptions {
            dtype: DType::F32,
            seed,
        },
    )?;
    let data = synthetic_for(spec, seed)?;
    let mut opt = Sgd::new(0.05, 0.9, 0.0, false)?;
    for i in 0..steps {
        let (x, y) = data.batch(batch, seed.wrapping_add(i as u64))?;
        let x = if spec.input.len() == 1 {
            x.reshape(&[batch, spec.input[0]])?
        } else {
            x
        };
        model.train_step(&x, &y, &mut opt)?;
    }
    Ok((model, data))
}

// ---- feature maps ----------------------------------------------------------------------------

/// The channel mean of one layer's output for one input image: an (H, W) map.
#[derive(Clone, Debug, Serialize)]
pub struct FeatureMap {
    /// The model (or "input" for the image itself).
    pub model: String,
    /// The full path of the layer whose output is shown.
    pub layer: String,
    /// Channels averaged.
    pub channels: usize,
    /// H, in pixels.
    pub height: usize,
    /// W, in pixels.
    pub width: usize,
    /// Row-major (H, W).
    pub values: Vec<f32>,
}

/// Channel mean of `t`'s first sample, t: (N, C, H, W).
pub fn channel_mean(t: &Tensor, model: &str, layer: &str) -> Result<FeatureMap> {
    let (_, c, h, w) = t.dims4("feature map")?;
    let v = t.to_f64_vec();
    let mut values = vec![0f32; h * w];
    for ch in 0..c {
        for (i, o) in values.iter_mut().enumerate() {
            *o += (v[ch * h * w + i] / c as f64) as f32;
        }
    }
    Ok(FeatureMap {
        model: model.to_string(),
        layer: layer.to_string(),
        channels: c,
        height: h,
        width: w,
        values,
    })
}

/// What the observer of `channel_mean_map` collects: the map, and every layer with a
/// spatial output (for the error message).
type MapCapture = (Option<Result<FeatureMap>>, BTreeSet<String>);

/// The channel-mean map of `layer`'s output (eval mode) for the first image of `image`
/// (N, C, H, W). Errors when `layer` is not a layer with a (N, C, H, W) output, listing
/// those that are.
pub fn channel_mean_map(model: &Model, image: &Tensor, layer: &str) -> Result<FeatureMap> {
    let found: Rc<RefCell<MapCapture>> = Default::default();
    let sink = found.clone();
    let (want, name) = (layer.to_string(), model.spec.name.clone());
    let previous = crate::nn::set_forward_observer(Some(Box::new(move |path, y| {
        let mut s = sink.borrow_mut();
        if y.rank() == 4 {
            s.1.insert(path.to_string());
            if path == want && s.0.is_none() {
                s.0 = Some(channel_mean(y, &name, path));
            }
        }
    })));
    let run = model.predict_normalized(image);
    crate::nn::set_forward_observer(previous);
    run?;
    let (map, spatial) = std::mem::take(&mut *found.borrow_mut());
    map.unwrap_or_else(|| {
        Err(Error::invalid(
            "feature map layer",
            format!(
                "`{layer}` is not a layer of `{}` with an (N, C, H, W) output; layers with one: {}",
                model.spec.name,
                spatial.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ))
    })
}

/// Train each spec briefly on the same synthetic data, then map `layer`'s output for one
/// image of it, for each model; the first map is the input image itself (channel mean).
/// For the QuadraLib figure: `first_order = cnn`, `quadratic = qcnn`, `layer = "relu1"`.
pub fn feature_map_comparison(
    specs: &[&ModelSpec],
    layer: &str,
    train_steps: usize,
    batch: usize,
    seed: u64,
) -> Result<Vec<FeatureMap>> {
    let mut maps = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let (model, data) = train_briefly(spec, train_steps, batch, seed)?;
        let (x, _) = data.batch(1, seed.wrapping_add(7777))?;
        if i == 0 {
            maps.push(channel_mean(&x, "input", "image")?);
        }
        maps.push(channel_mean_map(&model, &x, layer)?);
    }
    Ok(maps)
}

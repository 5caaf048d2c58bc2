//! Layer importance of a trained QDNN: for each quadratic layer, the accuracy drop δ_A on a
//! validation set when the layer is masked, its share of parameters P_M and of MACs P_W,
//! and RI = P_M·P_W/δ_A — large RI: a costly layer the model barely needs.
//!
//! # Masking (deterministic; always on a copy built from spec + state dict)
//!
//! - `removed` — the layer is taken out of the model (the identity replaces it) when its
//!   output shape equals its input shape: in == out channels (features), stride 1 and a
//!   padding that keeps the spatial size, and the model without it still type-checks
//!   (inside a residual branch, or anywhere the next layer accepts the same shape). Its
//!   BatchNorm and ReLU, if any, stay.
//! - `second_order_zeroed` — otherwise, for neurons with a linear term, the second-order
//!   term is set to zero and the linear term kept: `quadralib` W_a = 0, b_a = 0
//!   (a ⊙ b = 0); `quadralib-bn` γ_a = β_a = 0 (BN_a(·) = 0, so the layer is
//!   BN_c(W_c x + b_c)); `t1` W_a = 0 (W_b x + b remains).
//! - `output_zeroed` — otherwise (`t2`, `t3`, `t4`, `fan`: no linear term) every weight
//!   and bias of the layer is set to zero, so its output is 0.
//!
//! δ_A = accuracy(original) − accuracy(masked), both in eval mode, as fractions in [0, 1].
//! P_M = layer params / model params, P_W = layer MACs / model MACs (`cost`).
//!
//! # Ranking
//!
//! Most removable first. Layers with δ_A ≤ 0 (masking does not hurt, or helps) come first
//! and have no finite RI (`ri: None`); among them, larger P_M·P_W first. Then RI
//! descending. Ties keep forward order, so the ranking is a deterministic function of
//! the model and the data.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{
    accuracy, dict_dtype, model_from_state_dict, remove_layer, state_dict_of, under,
    with_explicit_names, StateDict,
};
use crate::model::Model;
use crate::nn::quadratic::NeuronType;
use crate::nn::spec::{quadratic_layers, visit_layers, LayerSpec, ModelSpec, Pair};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// How a layer was masked to measure its importance (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskMethod {
    /// Taken out of the model (its output shape equals its input shape).
    Removed,
    /// Its second-order term zeroed, its linear term kept (`quadralib`, `quadralib-bn`, `t1`).
    SecondOrderZeroed,
    /// Every weight and bias zeroed, so it outputs 0 (neurons without a linear term).
    OutputZeroed,
}

impl std::fmt::Display for MaskMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MaskMethod::Removed => "removed",
            MaskMethod::SecondOrderZeroed => "2nd-order zeroed",
            MaskMethod::OutputZeroed => "output zeroed",
        })
    }
}

/// One quadratic layer's importance: its masked accuracy, its cost shares and its RI.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerImportance {
    /// 1 = most removable.
    pub rank: usize,
    /// The layer's full path.
    pub path: String,
    /// The layer's neuron type.
    pub neuron: NeuronType,
    /// How the layer was masked.
    pub method: MaskMethod,
    /// The layer's trainable parameters.
    pub params: u64,
    /// The layer's multiply-accumulates per sample.
    pub macs: u64,
    /// Share of the model's parameters.
    pub p_m: f64,
    /// Share of the model's MACs.
    pub p_w: f64,
    /// Validation accuracy of the masked model, a fraction in [0, 1].
    pub accuracy_masked: f64,
    /// accuracy(original) − accuracy(masked).
    pub delta_a: f64,
    /// P_M·P_W/δ_A; `None` when δ_A ≤ 0 (ranked first, as the most removable).
    pub ri: Option<f64>,
}

/// What `layer_importance` measured: the baseline and every quadratic layer, ranked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportanceReport {
    /// The spec's model name.
    pub model: String,
    /// Validation samples the accuracies are over.
    pub samples: usize,
    /// Validation accuracy of the unmasked model, a fraction in [0, 1].
    pub baseline_accuracy: f64,
    /// The model's trainable parameters.
    pub total_params: u64,
    /// The model's multiply-accumulates per sample.
    pub total_macs: u64,
    /// In rank order.
    pub layers: Vec<LayerImportance>,
}

/// Every leaf layer's (input, output) per-sample shapes, by full path.
/// Per-sample (input, output) shapes of each leaf layer, by full path.
pub(crate) type IoShapes = HashMap<String, (Vec<usize>, Vec<usize>)>;

pub(crate) fn io_shapes(spec: &ModelSpec) -> Result<IoShapes> {
    let mut out = HashMap::new();
    visit_layers(&spec.layers, "", &spec.input, &mut |path, l, i, o| {
        if !matches!(l, LayerSpec::Sequential { .. } | LayerSpec::Residual { .. }) {
            out.insert(path.to_string(), (i.to_vec(), o.to_vec()));
        }
    })?;
    Ok(out)
}

/// The spec without the quadratic layer at `path` when the identity can replace it
/// (same input and output shape, stride 1, and the rest still type-checks); `named` must
/// have explicit names (`with_explicit_names`).
pub(crate) fn removal(named: &ModelSpec, path: &str) -> Result<Option<ModelSpec>> {
    let io = io_shapes(named)?;
    let Some((i, o)) = io.get(path) else {
        return Err(Error::invalid(
            "layer",
            format!("`{}` has no layer `{path}`", named.name),
        ));
    };
    if i != o {
        return Ok(None);
    }
    let mut layer = None;
    super::visit_layers(&named.layers, "", &mut |p, l| {
        if p == path {
            layer = Some(l.clone());
        }
    });
    let stride_one = match layer {
        Some(LayerSpec::QuadConv2d { stride, .. }) | Some(LayerSpec::Conv2d { stride, .. }) => {
            stride.hw() == Pair::One(1).hw()
        }
        Some(LayerSpec::QuadLinear { .. }) | Some(LayerSpec::Linear { .. }) => true,
        _ => false,
    };
    if !stride_one {
        return Ok(None);
    }
    let mut s = named.clone();
    if !remove_layer(&mut s.layers, "", path) {
        return Ok(None);
    }
    s.backprop_overrides.remove(path);
    Ok(s.check().is_ok().then_some(s))
}

/// The quadratic layer at `path`: (neuron, is conv).
pub(crate) fn quad_layer(spec: &ModelSpec, path: &str) -> Result<(NeuronType, bool)> {
    let mut found = None;
    super::visit_layers(&spec.layers, "", &mut |p, l| {
        if p == path {
            found = Some(match l {
                LayerSpec::QuadConv2d { neuron, .. } => Some((*neuron, true)),
                LayerSpec::QuadLinear { neuron, .. } => Some((*neuron, false)),
                _ => None,
            });
        }
    });
    match found {
        Some(Some(q)) => Ok(q),
        Some(None) => Err(Error::invalid(
            "layer",
            format!("`{path}` of `{}` is not a quadratic layer", spec.name),
        )),
        None => Err(Error::invalid(
            "layer",
            format!("`{}` has no layer `{path}`", spec.name),
        )),
    }
}

/// Does the neuron have a linear term (so it can be masked to, or reduced to, first order)?
pub(crate) fn has_linear_term(n: NeuronType) -> bool {
    matches!(
        n,
        NeuronType::T1 | NeuronType::QuadraLib | NeuronType::QuadraLibBn
    )
}

/// The state dict with the quadratic layer at `path` masked in place (second-order term
/// or whole output zeroed, see the module doc); returns the method used.
pub(crate) fn mask_weights(
    sd: &mut [(String, Tensor)],
    path: &str,
    neuron: NeuronType,
    conv: bool,
) -> Result<MaskMethod> {
    let p = if conv { "conv" } else { "linear" };
    let (method, leaves): (MaskMethod, Vec<String>) = match neuron {
        NeuronType::QuadraLib => (
            MaskMethod::SecondOrderZeroed,
            vec![format!("{p}1.weight"), format!("{p}1.bias")],
        ),
        NeuronType::QuadraLibBn => (
            MaskMethod::SecondOrderZeroed,
            vec!["bn1.weight".into(), "bn1.bias".into()],
        ),
        NeuronType::T1 => (MaskMethod::SecondOrderZeroed, vec!["quad.weight".into()]),
        _ => (MaskMethod::OutputZeroed, Vec::new()),
    };
    for (k, t) in sd.iter_mut() {
        if !under(k, path) {
            continue;
        }
        let leaf = &k[path.len() + 1..];
        if method == MaskMethod::OutputZeroed || leaves.iter().any(|l| l == leaf) {
            *t = Tensor::from_f64(&vec![0.0; t.numel()], t.shape(), t.dtype())?;
        }
    }
    Ok(method)
}

/// Mask the quadratic layer at `path` of (spec, sd): the masked spec and state dict, and
/// the method used. `spec` must have explicit names.
pub(crate) fn masked(
    named: &ModelSpec,
    sd: &[(String, Tensor)],
    path: &str,
) -> Result<(ModelSpec, StateDict, MaskMethod)> {
    let (neuron, conv) = quad_layer(named, path)?;
    if let Some(s) = removal(named, path)? {
        let kept = sd
            .iter()
            .filter(|(k, _)| !under(k, path))
            .cloned()
            .collect();
        return Ok((s, kept, MaskMethod::Removed));
    }
    let mut sd = sd.to_vec();
    let m = mask_weights(&mut sd, path, neuron, conv)?;
    Ok((named.clone(), sd, m))
}

/// Rank the quadratic layers of a trained `model` by importance on the validation set
/// (x: (N, *input), labels: N class indices). The model is not changed: each masked
/// variant is built from the spec and a copy of the state dict.
pub fn layer_importance(model: &Model, x: &Tensor, labels: &[usize]) -> Result<ImportanceReport> {
    let named = with_explicit_names(&model.spec);
    let mut quad = Vec::new();
    quadratic_layers(&named.layers, "", &mut quad);
    if quad.is_empty() {
        return Err(Error::invalid(
            "importance",
            format!(
                "model `{}` has no quadratic layer to rank (convert it first)",
                model.spec.name
            ),
        ));
    }
    let sd = state_dict_of(model);
    let dtype = dict_dtype(&sd);
    let base = accuracy(model, x, labels)?;
    let cost = super::cost(&named)?;
    let (tp, tm) = (cost.total_params.max(1), cost.total_macs.max(1));
    let mut rows = Vec::new();
    for path in &quad {
        let (neuron, _) = quad_layer(&named, path)?;
        let (s, msd, method) = masked(&named, &sd, path)?;
        let m = model_from_state_dict(&s, &msd, dtype, 0)?;
        let acc = accuracy(&m, x, labels)?;
        let row = cost.layers.iter().find(|r| r.path == *path);
        let (params, macs) = row.map_or((0, 0), |r| (r.params, r.macs));
        let p_m = params as f64 / tp as f64;
        let p_w = macs as f64 / tm as f64;
        let delta_a = base - acc;
        rows.push(LayerImportance {
            rank: 0,
            path: path.clone(),
            neuron,
            method,
            params,
            macs,
            p_m,
            p_w,
            accuracy_masked: acc,
            delta_a,
            ri: (delta_a > 0.0).then(|| p_m * p_w / delta_a),
        });
    }
    // stable sort: ties keep forward order
    rows.sort_by(|a, b| match (a.ri, b.ri) {
        (None, None) => (b.p_m * b.p_w).total_cmp(&(a.p_m * a.p_w)),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => y.total_cmp(&x),
    });
    for (i, r) in rows.iter_mut().enumerate() {
        r.rank = i + 1;
    }
    Ok(ImportanceReport {
        model: model.spec.name.clone(),
        samples: labels.len(),
        baseline_accuracy: base,
        total_params: cost.total_params,
        total_macs: cost.total_macs,
        layers: rows,
    })
}

impl ImportanceReport {
    /// A text table in rank order.
    pub fn table(&self) -> String {
        let pw = self
            .layers
            .iter()
            .map(|r| r.path.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut s = format!(
            "model {} — baseline accuracy {:.2}% on {} samples\n{:>4}  {:<pw$}  {:<12}  {:<16}  {:>7}  {:>7}  {:>9}  {:>8}  {:>10}\n",
            self.model,
            100.0 * self.baseline_accuracy,
            self.samples,
            "rank",
            "layer",
            "neuron",
            "mask",
            "P_M %",
            "P_W %",
            "acc %",
            "δ_A pp",
            "RI"
        );
        for r in &self.layers {
            s.push_str(&format!(
                "{:>4}  {:<pw$}  {:<12}  {:<16}  {:>7.3}  {:>7.3}  {:>9.2}  {:>8.2}  {:>10}\n",
                r.rank,
                r.path,
                r.neuron.to_string(),
                r.method.to_string(),
                100.0 * r.p_m,
                100.0 * r.p_w,
                100.0 * r.accuracy_masked,
                100.0 * r.delta_a,
                r.ri.map_or("∞ (δ_A≤0)".to_string(), |v| format!("{v:.3e}"))
            ));
        }
        s
    }
}

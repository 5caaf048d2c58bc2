//! Depth reduction: walk an importance ranking from the most removable layer and, until a
//! parameter or MAC budget is met, take each quadratic layer out of the model where shapes
//! allow (the `removed` case of `importance`), else turn it back to first order with its
//! linear-term weights:
//!
//! - `quadralib`: Conv2d/Linear with W_c, b_c (the layer loses a ⊙ b);
//! - `quadralib-bn`: eval-mode BN_c folded into the map: s = γ_c/√(σ²_c + eps),
//!   t = β_c − s·μ_c, W = s·W_c, b = s·b_c + t (always with a bias);
//! - `t1`: W_b, b (the layer loses xᵀW_a x).
//!
//! Each step is exactly the `second_order_zeroed` / `removed` mask the ranking measured,
//! so a one-step reduction predicts the masked accuracy of that layer. Neurons without a
//! linear term (t2, t3, t4, fan) that cannot be removed are skipped (listed in the report).
//! The predicted parameter and MAC counts are those of `cost` on the reduced spec.

use serde::{Deserialize, Serialize};

use super::importance::{has_linear_term, quad_layer, removal};
use super::{dict_dtype, layer_mut, model_from_state_dict, under, with_explicit_names, StateDict};
use crate::nn::quadratic::NeuronType;
use crate::nn::spec::{LayerSpec, ModelSpec};
use crate::nn::Module;
use crate::tensor::Tensor;
use crate::{Error, Result};

use super::importance::ImportanceReport;

/// An upper bound on the reduced model's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    /// At most this many trainable parameters.
    Params(u64),
    /// At most this many multiply-accumulates per sample.
    Macs(u64),
}

impl Budget {
    fn met(self, params: u64, macs: u64) -> bool {
        match self {
            Budget::Params(b) => params <= b,
            Budget::Macs(b) => macs <= b,
        }
    }
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::Params(b) => write!(f, "at most {b} parameters"),
            Budget::Macs(b) => write!(f, "at most {b} MACs per sample"),
        }
    }
}

/// What a reduction step did to a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReduceAction {
    /// Taken out of the model (the identity replaces it).
    Removed,
    /// Turned back into a Conv2d/Linear with its linear-term weights.
    FirstOrder,
}

/// One layer taken out or linearised, with the predicted size after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReduceStep {
    /// The layer's full path.
    pub path: String,
    /// What was done to it.
    pub action: ReduceAction,
    /// Predicted counts after this step.
    pub params_after: u64,
    /// Predicted multiply-accumulates per sample after this step.
    pub macs_after: u64,
}

/// What a depth reduction did: the budget, the size before and after, and each step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReduceReport {
    /// The spec's model name.
    pub model: String,
    /// The bound the reduction aimed for.
    pub budget: Budget,
    /// Trainable parameters before the reduction.
    pub params_before: u64,
    /// Trainable parameters of the reduced spec.
    pub params_after: u64,
    /// Multiply-accumulates per sample before the reduction.
    pub macs_before: u64,
    /// Multiply-accumulates per sample of the reduced spec.
    pub macs_after: u64,
    /// The layers taken out or linearised, in the order done.
    pub steps: Vec<ReduceStep>,
    /// (layer, why) for ranked layers that could be neither removed nor linearised.
    pub skipped: Vec<(String, String)>,
}

/// The reduced spec, its state dict and the report.
#[derive(Clone, Debug)]
pub struct Reduction {
    /// The reduced model's spec.
    pub spec: ModelSpec,
    /// Its weights, under PyTorch names (checked by loading them into the reduced model).
    pub state_dict: StateDict,
    /// What was done.
    pub report: ReduceReport,
}

fn vals(sd: &[(String, Tensor)], key: &str) -> Result<Vec<f64>> {
    sd.iter()
        .find(|(k, _)| k == key)
        .map(|(_, t)| t.to_f64_vec())
        .ok_or_else(|| Error::invalid("state dict", format!("missing entry `{key}`")))
}

/// Turn the quadratic layer at `path` back to first order, in spec and state dict.
fn linearise(
    spec: &mut ModelSpec,
    sd: &mut StateDict,
    path: &str,
    neuron: NeuronType,
    conv: bool,
) -> Result<()> {
    let p = if conv { "conv" } else { "linear" };
    let key = |leaf: &str| format!("{path}.{leaf}");
    let l = layer_mut(&mut spec.layers, "", path)
        .ok_or_else(|| Error::state(format!("reduce: layer `{path}` not in the spec")))?;
    let had_bias = match l {
        LayerSpec::QuadConv2d { bias, .. } | LayerSpec::QuadLinear { bias, .. } => *bias,
        _ => return Err(Error::state(format!("reduce: `{path}` is not quadratic"))),
    };
    let (wkey, bkey) = match neuron {
        NeuronType::QuadraLib | NeuronType::QuadraLibBn => {
            (key(&format!("{p}3.weight")), key(&format!("{p}3.bias")))
        }
        NeuronType::T1 => (key(&format!("{p}.weight")), key(&format!("{p}.bias"))),
        n => {
            return Err(Error::state(format!(
                "reduce: neuron {n} of `{path}` has no linear term"
            )))
        }
    };
    let wt = sd
        .iter()
        .find(|(k, _)| *k == wkey)
        .map(|(_, t)| t.clone())
        .ok_or_else(|| Error::invalid("state dict", format!("missing entry `{wkey}`")))?;
    let mut w = wt.to_f64_vec();
    let c = wt.shape()[0];
    let per = w.len() / c;
    let mut b = if had_bias {
        vals(sd, &bkey)?
    } else {
        vec![0.0; c]
    };
    let mut bias = had_bias;
    if neuron == NeuronType::QuadraLibBn {
        let g = vals(sd, &key("bn3.weight"))?;
        let beta = vals(sd, &key("bn3.bias"))?;
        let rm = vals(sd, &key("bn3.running_mean"))?;
        let rv = vals(sd, &key("bn3.running_var"))?;
        for o in 0..c {
            let s = g[o] / (rv[o] + 1e-5).sqrt();
            let t = beta[o] - s * rm[o];
            w[o * per..(o + 1) * per].iter_mut().for_each(|v| *v *= s);
            b[o] = s * b[o] + t;
        }
        bias = true;
    }
    *l = match l.clone() {
        LayerSpec::QuadConv2d {
            name,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            ..
        } => LayerSpec::Conv2d {
            name,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
        },
        LayerSpec::QuadLinear {
            name,
            in_features,
            out_features,
            ..
        } => LayerSpec::Linear {
            name,
            in_features,
            out_features,
            bias,
        },
        _ => unreachable!("checked above"),
    };
    spec.backprop_overrides.remove(path);
    sd.retain(|(k, _)| !under(k, path));
    sd.push((key("weight"), Tensor::from_f64(&w, wt.shape(), wt.dtype())?));
    if bias {
        sd.push((key("bias"), Tensor::from_f64(&b, &[c], wt.dtype())?));
    }
    Ok(())
}

/// Reduce the trained QDNN (spec, state dict) along `ranking` (from `layer_importance`)
/// until `budget` is met; see the module doc. Nothing is reduced when the model already
/// meets the budget. A budget that even every possible step cannot meet is an error that
/// gives the best achievable counts.
pub fn reduce(
    spec: &ModelSpec,
    sd: &[(String, Tensor)],
    ranking: &ImportanceReport,
    budget: Budget,
) -> Result<Reduction> {
    let mut cur = with_explicit_names(spec);
    let mut cur_sd: StateDict = sd.to_vec();
    let before = super::cost(&cur)?;
    let (mut params, mut macs) = (before.total_params, before.total_macs);
    let mut steps = Vec::new();
    let mut skipped = Vec::new();
    for layer in &ranking.layers {
        if budget.met(params, macs) {
            break;
        }
        let path = &layer.path;
        let (neuron, conv) = quad_layer(&cur, path)?;
        let action = if let Some(s) = removal(&cur, path)? {
            cur = s;
            cur_sd.retain(|(k, _)| !under(k, path));
            ReduceAction::Removed
        } else if has_linear_term(neuron) {
            linearise(&mut cur, &mut cur_sd, path, neuron, conv)?;
            ReduceAction::FirstOrder
        } else {
            skipped.push((
                path.clone(),
                format!("neuron {neuron} has no linear term and the layer changes the shape, so it can be neither removed nor turned to first order"),
            ));
            continue;
        };
        cur.check()?;
        let c = super::cost(&cur)?;
        (params, macs) = (c.total_params, c.total_macs);
        steps.push(ReduceStep {
            path: path.clone(),
            action,
            params_after: params,
            macs_after: macs,
        });
    }
    if !budget.met(params, macs) {
        return Err(Error::invalid(
            "reduction budget",
            format!(
                "`{}` cannot be reduced to {budget}: from {} parameters and {} MACs, removing or linearising every ranked quadratic layer ({} steps{}) leaves at best {params} parameters and {macs} MACs per sample",
                spec.name,
                before.total_params,
                before.total_macs,
                steps.len(),
                if skipped.is_empty() { String::new() } else { format!(", {} layers skipped", skipped.len()) }
            ),
        ));
    }
    // canonical state dict: build the reduced model, load, export (checks every entry)
    let m = model_from_state_dict(&cur, &cur_sd, dict_dtype(sd), 0)?;
    let mut out = Vec::new();
    m.net.state_dict(&mut out);
    Ok(Reduction {
        report: ReduceReport {
            model: spec.name.clone(),
            budget,
            params_before: before.total_params,
            params_after: params,
            macs_before: before.total_macs,
            macs_after: macs,
            steps,
            skipped,
        },
        spec: cur,
        state_dict: out,
    })
}

impl ReduceReport {
    /// A text summary: the budget, the size before → after, then one line per step.
    pub fn table(&self) -> String {
        let mut s = format!(
            "model {} — budget: {}\nparams {} → {} ({:+.1}%), MACs {} → {} ({:+.1}%)\n",
            self.model,
            self.budget,
            self.params_before,
            self.params_after,
            pct(self.params_before, self.params_after),
            self.macs_before,
            self.macs_after,
            pct(self.macs_before, self.macs_after)
        );
        for (i, st) in self.steps.iter().enumerate() {
            s.push_str(&format!(
                "  step {}: {} {:?} → params {}, MACs {}\n",
                i + 1,
                st.path,
                st.action,
                st.params_after,
                st.macs_after
            ));
        }
        for (p, why) in &self.skipped {
            s.push_str(&format!("  skipped {p}: {why}\n"));
        }
        s
    }
}

fn pct(a: u64, b: u64) -> f64 {
    if a == 0 {
        0.0
    } else {
        100.0 * (b as f64 - a as f64) / a as f64
    }
}

//! What a model costs: trainable parameters and multiply-accumulates per layer, for one
//! sample of a given input shape.
//!
//! # Conventions
//!
//! - `params`: trainable elements, as PyTorch's `sum(p.numel() for p in m.parameters())`
//!   (BatchNorm γ and β count; running statistics are buffers and do not).
//! - `macs`: multiply-accumulates of the weight maps only, 1 MAC per multiply-add, per
//!   sample: conv C_out·H_out·W_out·(C_in/G·kh·kw), linear in·out. A quadratic layer counts
//!   every first-order branch (k branches: k times the conv), its map on x ⊙ x (t2, fan:
//!   once more the conv), and for t1 the bilinear form: C_out·L·(K² + K) with
//!   K = C_in·kh·kw and L = H_out·W_out (v = W_a u, then uᵀv per output).
//!   FLOPs ≈ 2·MACs.
//! - `other_ops`: element-wise work, one per element and operation, in a separate column:
//!   bias adds (1 per output element per biased branch), batch norm (2 per element: scale
//!   and shift, eval mode), ReLU (1), max/avg pooling (kernel area per output element),
//!   global average pooling (1 per input element), the residual add (1 per element, +1
//!   for its ReLU), and inside quadratic layers squares (x ⊙ x: 1 per input element;
//!   t3's square: 1 per output), the branch product (1 per output), the added linear or
//!   lifted term (1 per output) and quadralib-bn's three branch norms (2 per element each).
//!   Flatten and dropout (eval) cost nothing.

use serde::{Deserialize, Serialize};

use super::{child_name, join};
use crate::nn::quadratic::NeuronType;
use crate::nn::spec::{infer_shape, LayerSpec, ModelSpec};
use crate::ops::quadratic::Lift;
use crate::Result;

/// One row of the cost table: a leaf layer, or a residual block's add (type `residual_add`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerCost {
    /// The layer's full path (the block's path for a `residual_add` row).
    pub path: String,
    /// The spec's type name (`conv2d`, `quad_conv2d`, …), with the neuron for quadratic
    /// layers (`quad_conv2d[quadralib-bn]`).
    pub kind: String,
    /// Per-sample output shape.
    pub output: Vec<usize>,
    /// Trainable parameters (BatchNorm running statistics excluded).
    pub params: u64,
    /// Multiply-accumulates of the layer's weight maps per sample.
    pub macs: u64,
    /// Element-wise operations per sample (bias, BN, ReLU, pooling, add, products).
    pub other_ops: u64,
}

/// Per-layer and total cost of one sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostReport {
    /// The spec's model name.
    pub model: String,
    /// Per-sample input shape the counts are for.
    pub input: Vec<usize>,
    /// One row per leaf layer and residual add, in forward order.
    pub layers: Vec<LayerCost>,
    /// Sum of the rows' `params`.
    pub total_params: u64,
    /// Sum of the rows' `macs`.
    pub total_macs: u64,
    /// Sum of the rows' `other_ops`.
    pub total_other_ops: u64,
    /// How the counts are defined, in words (what a MAC and an op are).
    pub convention: String,
}

const CONVENTION: &str = "per sample; params = trainable elements (BN running stats excluded); \
macs = multiply-accumulates of conv/linear weight maps, 1 MAC per multiply-add (FLOPs ~ 2 x MACs); \
other_ops = element-wise work (bias, BN, ReLU, pooling, residual add, quadratic products/squares), 1 per element per op";

/// The cost of `spec` for its own input shape.
pub fn cost(spec: &ModelSpec) -> Result<CostReport> {
    cost_at(spec, &spec.input)
}

/// The cost of `spec` for a per-sample `input` shape (e.g. another image size); a layer
/// that cannot take the shape is an error naming it.
pub fn cost_at(spec: &ModelSpec, input: &[usize]) -> Result<CostReport> {
    let mut rows = Vec::new();
    walk(&spec.layers, "", input, &mut rows)?;
    let total_params = rows.iter().map(|r| r.params).sum();
    let total_macs = rows.iter().map(|r| r.macs).sum();
    let total_other_ops = rows.iter().map(|r| r.other_ops).sum();
    Ok(CostReport {
        model: spec.name.clone(),
        input: input.to_vec(),
        layers: rows,
        total_params,
        total_macs,
        total_other_ops,
        convention: CONVENTION.to_string(),
    })
}

fn prod(s: &[usize]) -> u64 {
    s.iter().map(|&d| d as u64).product()
}

fn walk(
    layers: &[LayerSpec],
    prefix: &str,
    shape: &[usize],
    out: &mut Vec<LayerCost>,
) -> Result<Vec<usize>> {
    let mut s = shape.to_vec();
    for (i, l) in layers.iter().enumerate() {
        let p = join(prefix, &child_name(l, i));
        s = match l {
            LayerSpec::Sequential { layers, .. } => walk(layers, &p, &s, out)?,
            LayerSpec::Residual {
                layers,
                shortcut,
                shortcut_name,
                relu,
                ..
            } => {
                // type-check the whole block first (shapes of both paths must agree)
                let o = infer_shape(l, &p, &s)?;
                walk(layers, &p, &s, out)?;
                if let Some(sc) = shortcut {
                    walk(sc, &join(&p, shortcut_name), &s, out)?;
                }
                out.push(LayerCost {
                    path: p,
                    kind: "residual_add".into(),
                    output: o.clone(),
                    params: 0,
                    macs: 0,
                    other_ops: prod(&o) * (1 + u64::from(*relu)),
                });
                o
            }
            _ => {
                let o = infer_shape(l, &p, &s)?;
                out.push(leaf(l, p, &s, &o));
                o
            }
        };
    }
    Ok(s)
}

fn leaf(l: &LayerSpec, path: String, inp: &[usize], out: &[usize]) -> LayerCost {
    let n_out = prod(out);
    let n_in = prod(inp);
    let (mut params, mut macs, mut other) = (0u64, 0u64, 0u64);
    let mut kind = l.type_name().to_string();
    match l {
        LayerSpec::Conv2d {
            in_channels,
            out_channels,
            kernel_size,
            groups,
            bias,
            ..
        } => {
            let (kh, kw) = kernel_size.hw();
            let kg = (in_channels / groups * kh * kw) as u64;
            params = *out_channels as u64 * kg + if *bias { *out_channels as u64 } else { 0 };
            macs = n_out * kg;
            other = if *bias { n_out } else { 0 };
        }
        LayerSpec::Linear {
            in_features,
            out_features,
            bias,
            ..
        } => {
            let (i, o) = (*in_features as u64, *out_features as u64);
            params = i * o + if *bias { o } else { 0 };
            macs = i * o;
            other = if *bias { o } else { 0 };
        }
        LayerSpec::QuadConv2d {
            neuron,
            in_channels,
            out_channels,
            kernel_size,
            groups,
            bias,
            ..
        } => {
            let (kh, kw) = kernel_size.hw();
            let kg = (in_channels / groups * kh * kw) as u64;
            let k_total = (in_channels * kh * kw) as u64;
            (params, macs, other) = quad(
                *neuron,
                kg,
                k_total,
                *out_channels as u64,
                n_out,
                n_in,
                *bias,
            );
            kind = format!("{kind}[{neuron}]");
        }
        LayerSpec::QuadLinear {
            neuron,
            in_features,
            out_features,
            bias,
            ..
        } => {
            let k = *in_features as u64;
            (params, macs, other) = quad(*neuron, k, k, *out_features as u64, n_out, n_in, *bias);
            kind = format!("{kind}[{neuron}]");
        }
        LayerSpec::BatchNorm2d { num_features, .. }
        | LayerSpec::BatchNorm1d { num_features, .. } => {
            params = 2 * *num_features as u64;
            other = 2 * n_out;
        }
        LayerSpec::Relu { .. } => other = n_out,
        LayerSpec::MaxPool2d { kernel_size, .. } | LayerSpec::AvgPool2d { kernel_size, .. } => {
            let (kh, kw) = kernel_size.hw();
            other = n_out * (kh * kw) as u64;
        }
        LayerSpec::GlobalAvgPool { .. } => other = n_in,
        LayerSpec::Flatten { .. } | LayerSpec::Dropout { .. } => {}
        LayerSpec::Sequential { .. } | LayerSpec::Residual { .. } => {}
    }
    LayerCost {
        path,
        kind,
        output: out.to_vec(),
        params,
        macs,
        other_ops: other,
    }
}

/// (params, macs, other ops) of a quadratic layer: kg = one branch's fan-in (C_in/G·kh·kw
/// or in_features), k_total = C_in·kh·kw (t1's patch), c = C_out, n_out = C_out·L,
/// n_in = input elements.
fn quad(
    neuron: NeuronType,
    kg: u64,
    k_total: u64,
    c: u64,
    n_out: u64,
    n_in: u64,
    bias: bool,
) -> (u64, u64, u64) {
    let nb = neuron.branches() as u64;
    let b = u64::from(bias);
    let mut params = nb * c * kg + b * nb * c;
    let mut macs = nb * n_out * kg;
    let mut other = b * nb * n_out;
    match neuron.lift() {
        Lift::None => {}
        Lift::Square => {
            params += c * kg + b * c;
            macs += n_out * kg;
            other += n_in + b * n_out; // x ⊙ x, lifted bias
        }
        Lift::Outer => {
            params += c * k_total * k_total;
            macs += n_out * (k_total * k_total + k_total);
        }
    }
    other += match neuron {
        NeuronType::T1 => n_out,                          // + W_b x
        NeuronType::T2 => 0,                              // (square counted above)
        NeuronType::T3 => n_out,                          // square
        NeuronType::T4 => n_out,                          // product
        NeuronType::QuadraLib => 2 * n_out,               // product, + c
        NeuronType::QuadraLibBn => 2 * n_out + 6 * n_out, // product, + c, three BNs
        NeuronType::Fan => 2 * n_out,                     // product, + lifted
    };
    if neuron.has_bn() {
        params += 2 * 3 * c;
    }
    (params, macs, other)
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

impl CostReport {
    /// A text table: one row per layer, then the totals and the convention.
    pub fn table(&self) -> String {
        let pw = self
            .layers
            .iter()
            .map(|r| r.path.len())
            .max()
            .unwrap_or(4)
            .max(5);
        let kw = self
            .layers
            .iter()
            .map(|r| r.kind.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut s = format!(
            "model {} — input {:?}, per sample\n{:<pw$}  {:<kw$}  {:<14}  {:>12}  {:>15}  {:>13}\n",
            self.model, self.input, "layer", "type", "output", "params", "MACs", "other ops"
        );
        for r in &self.layers {
            s.push_str(&format!(
                "{:<pw$}  {:<kw$}  {:<14}  {:>12}  {:>15}  {:>13}\n",
                r.path,
                r.kind,
                format!("{:?}", r.output),
                group(r.params),
                group(r.macs),
                group(r.other_ops)
            ));
        }
        s.push_str(&format!(
            "{:<pw$}  {:<kw$}  {:<14}  {:>12}  {:>15}  {:>13}\n",
            "total",
            "",
            "",
            group(self.total_params),
            group(self.total_macs),
            group(self.total_other_ops)
        ));
        s.push_str(&format!("({})\n", self.convention));
        s
    }
}

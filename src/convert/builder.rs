//! First-order → QDNN: replace `Conv2d` / `Linear` layers by quadratic ones of the same
//! shapes, and start them from a trained first-order checkpoint so that the converted model
//! computes the same function.
//!
//! # Selection
//!
//! The convertible layers are the `conv2d` and `linear` layers, listed in forward order
//! (a residual block's main path before its shortcut); index i is the i-th of that list.
//! A [`Selector`] picks them by full path (a container's path picks every convertible
//! layer below it), by index, or by a glob pattern over full paths (`*` any run of
//! characters, dots included; `?` one character): `layer2.*`, `*.conv1`, `features.*`.
//! No selector means every convertible layer; `exclude` removes layers from the selection.
//!
//! # Function-preserving initialisation (x: layer input; W, b: the trained weights)
//!
//! The new layer's linear term takes W and b; its second-order term starts at exactly zero
//! with ONE factor zero and the other at its fresh random initialisation (PyTorch's default
//! conv/linear init, drawn with `ConvertOptions::seed`), so the gradient of the zero factor
//! is not zero and training moves it:
//!
//! | neuron | init | output at conversion |
//! |---|---|---|
//! | `quadralib` | W_a = 0, b_a = 0; W_b, b_b random; W_c = W, b_c = b | 0 ⊙ b + W x + b |
//! | `quadralib-bn` | BN_a: γ_a = 0, β_a = 0 (W_a, b_a random); W_b, b_b random, BN_b default; W_c = W, b_c = b, BN_c: running μ_c, σ²_c from the BatchNorm right after the original layer (else 0, 1), γ_c = √(σ²_c + eps), β_c = μ_c | 0 ⊙ B + W x + b |
//! | `t1` | W_a (bilinear) = 0; W_b = W, b = b | 0 + W x + b |
//! | `t4` | W_a = W, b_a = b; W_b = 0, b_b = 1 (needs biases) | (W x + b) ⊙ 1 |
//! | `fan` | W_r = W, b_r = b; W_g = 0, b_g = 1; W_b = 0, c = 0 (needs biases) | (W x + b) ⊙ 1 + 0 |
//! | `t2`, `t3` | impossible: no linear term (W(x ⊙ x), (W x + b)²) | — |
//!
//! `quadralib-bn` in detail: in eval mode BN_k(z) = γ_k (z − μ_k)/√(σ²_k + eps) + β_k with
//! the running μ_k, σ²_k. With γ_c = √(σ²_c + eps) and β_c = μ_c, BN_c(z) = z for ANY
//! running statistics, so BN_c(W_c x + b_c) = W x + b; γ_a = β_a = 0 make BN_a(·) = 0 for
//! any statistics, so A ⊙ B = 0 in train mode too (∂L/∂γ_a = Σ g·B·x̂_a ≠ 0, so γ_a moves
//! at the first step; W_a receives gradient once it has). The converted layer in eval mode
//! therefore equals the original in eval mode (exactly: γ_c·rstd_c rounds to 1 in f32).
//! The statistics: when the original layer is directly followed by a BatchNorm (as every
//! conv of the zoo models is), μ_c, σ²_c are that BatchNorm's running statistics — the
//! statistics of W x + b on the training data — so that in TRAIN mode, where BN_c uses the
//! batch's μ_B, σ²_B, BN_c(z) = √(σ²_c+eps)(z − μ_B)/√(σ²_B+eps) + μ_c ≈ z as well, and the
//! following BatchNorm keeps seeing inputs at the scale its running statistics describe.
//! Otherwise (no BatchNorm follows, e.g. a classifier) μ_c = 0, σ²_c = 1 (γ_c = √(1+eps),
//! β_c = 0): still the identity in eval mode, but in train mode BN_c normalises the layer's
//! output per batch, so fine-tuning starts from a different function (`calibrate` fixes
//! that from data). BN_a, BN_b start with running statistics 0, 1; they only matter once
//! γ_a has moved, and `calibrate` sets them to the data's.
//!
//! Why BN_c must take the following BatchNorm's statistics (issue #6): with BN_c at
//! (0, 1), the model is exact in eval mode and even in train mode (the following
//! BatchNorm undoes BN_c's per-batch normalisation), but every training step moves BN_c's
//! running statistics towards those of W x + b (on the demo's cnn: σ² 3.7 for conv1, 16.6
//! and means up to ±12.6 for conv2) while the following BatchNorm's move towards those of
//! the normalised output (0, 1). Both are running averages (momentum 0.1), so for ~20 steps
//! they disagree and the eval-mode function is off: the demo's fine-tuning took eval
//! accuracy from 82.4% to 16% after 5 steps and 56.4% after 20, while train-mode accuracy
//! rose 80.4% → 85.6%. With BN_c at the following BatchNorm's statistics every running
//! statistic already sits at its fixed point: 82.4% → 83.8% after 20 steps (the
//! first-order cnn fine-tuned alike: 83.8%); `calibrate` in addition: 83.6%.
//!
//! `t4` and `fan` need the constant 1 in their second factor, so the new layer gets
//! biases even when the original had none (an original without bias gives b = 0). Asking
//! for `bias: Some(false)` with them is an error. For `t2`, `t3` conversion of weights is
//! an error unless `approximate` is set; then the layer keeps its fresh initialisation
//! (the trained W is dropped for that layer) and the report marks it `exact: false`.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::{dict_dtype, layer_mut, model_from_state_dict, under, StateDict};
use crate::model::Model;
use crate::nn::quadratic::{NeuronType, BN_EPS};
use crate::nn::spec::{BuildOptions, LayerSpec, ModelSpec};
use crate::nn::Module;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Which convertible layers a conversion touches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    /// Every convertible layer.
    All,
    /// A full layer path (`layer1.0.conv1`); a container's path selects every convertible
    /// layer below it.
    Path(String),
    /// Position in the forward-order list of convertible layers (0-based).
    Index(usize),
    /// A glob over full paths: `*` any run of characters (dots included), `?` one.
    Pattern(String),
}

impl Selector {
    /// Parse a command-line selector: `all` or `*` → All; digits → Index; text with `*` or
    /// `?` → Pattern; anything else → Path. The prefixes `path:`, `index:`, `pattern:`
    /// force a kind (`path:3` is the top-level layer named `3`).
    pub fn parse(s: &str) -> Result<Selector> {
        let s = s.trim();
        if let Some(p) = s.strip_prefix("path:") {
            return Ok(Selector::Path(p.to_string()));
        }
        if let Some(p) = s.strip_prefix("pattern:") {
            return Ok(Selector::Pattern(p.to_string()));
        }
        if let Some(p) = s.strip_prefix("index:") {
            return p.parse().map(Selector::Index).map_err(|_| {
                Error::invalid("layer selector", format!("`{s}`: `{p}` is not an index"))
            });
        }
        if s.is_empty() {
            return Err(Error::invalid("layer selector", "empty selector"));
        }
        Ok(if s == "all" || s == "*" {
            Selector::All
        } else if s.bytes().all(|b| b.is_ascii_digit()) {
            Selector::Index(
                s.parse().map_err(|_| {
                    Error::invalid("layer selector", format!("`{s}` is not an index"))
                })?,
            )
        } else if s.contains(['*', '?']) {
            Selector::Pattern(s.to_string())
        } else {
            Selector::Path(s.to_string())
        })
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::All => f.write_str("all"),
            Selector::Path(p) => write!(f, "path `{p}`"),
            Selector::Index(i) => write!(f, "index {i}"),
            Selector::Pattern(p) => write!(f, "pattern `{p}`"),
        }
    }
}

/// `*` matches any run of characters (dots included), `?` exactly one.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// What to convert, into what.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConvertOptions {
    /// The quadratic neuron every selected layer becomes.
    pub neuron: NeuronType,
    /// Empty: every convertible layer.
    #[serde(default)]
    pub select: Vec<Selector>,
    /// Layers taken out of the selection (empty: none).
    #[serde(default)]
    pub exclude: Vec<Selector>,
    /// Biases of the new layers: `None` keeps each original layer's setting (t4 and fan
    /// always get biases, see the module doc).
    #[serde(default)]
    pub bias: Option<bool>,
    /// For neurons without a linear term (t2, t3): convert weights anyway, the layer
    /// starting from its fresh initialisation, instead of refusing.
    #[serde(default)]
    pub approximate: bool,
    /// Seed of the fresh (random) second-order weights.
    #[serde(default)]
    pub seed: u64,
}

impl ConvertOptions {
    /// Convert every convertible layer to `neuron`, keeping each layer's bias setting,
    /// refusing inexact conversions, seed 0.
    pub fn new(neuron: NeuronType) -> Self {
        ConvertOptions {
            neuron,
            select: Vec::new(),
            exclude: Vec::new(),
            bias: None,
            approximate: false,
            seed: 0,
        }
    }
}

/// One converted layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvertedLayer {
    /// The layer's full path (`layer1.0.conv1`), the same before and after.
    pub path: String,
    /// Position in the forward-order list of convertible layers.
    pub index: usize,
    /// `conv2d` or `linear`.
    pub from: String,
    /// The neuron the layer became.
    pub neuron: NeuronType,
    /// Whether the new layer has biases.
    pub bias: bool,
    /// Does the weight initialisation reproduce the original layer exactly (see the
    /// module doc)? False only for t2/t3 converted with `approximate`.
    pub exact: bool,
    /// quadralib-bn: the BatchNorm right after the original layer, whose running
    /// statistics BN_c takes (see the module doc); `None` when there is none.
    #[serde(default)]
    pub stats_from: Option<String>,
}

/// A converted spec and what was converted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Conversion {
    /// The spec with the selected layers replaced by quadratic ones.
    pub spec: ModelSpec,
    /// The converted layers, in forward order.
    pub layers: Vec<ConvertedLayer>,
}

/// What `convert_model` did, for printing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConvertReport {
    /// The spec's model name.
    pub model: String,
    /// The neuron the layers became.
    pub neuron: NeuronType,
    /// The converted layers, in forward order.
    pub layers: Vec<ConvertedLayer>,
    /// Trainable parameters of the original model (`cost`'s count).
    pub params_before: u64,
    /// Trainable parameters of the converted model.
    pub params_after: u64,
    /// Multiply-accumulates per sample of the original model.
    pub macs_before: u64,
    /// Multiply-accumulates per sample of the converted model.
    pub macs_after: u64,
    /// Every converted layer reproduces its original (so the model does, in eval mode).
    pub function_preserving: bool,
}

/// The convertible layers (conv2d, linear) of `layers`: (path, layer), forward order.
pub fn convertible_layers(spec: &ModelSpec) -> Vec<(String, LayerSpec)> {
    let mut out = Vec::new();
    super::visit_layers(&spec.layers, "", &mut |p, l| {
        if matches!(l, LayerSpec::Conv2d { .. } | LayerSpec::Linear { .. }) {
            out.push((p.to_string(), l.clone()));
        }
    });
    out
}

fn all_paths(spec: &ModelSpec) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    super::visit_layers(&spec.layers, "", &mut |p, l| {
        out.push((p.to_string(), l.type_name()))
    });
    out
}

fn list(names: &[String]) -> String {
    const MAX: usize = 12;
    if names.is_empty() {
        return "none".into();
    }
    let mut s = names
        .iter()
        .take(MAX)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX {
        s.push_str(&format!(", … ({} in all)", names.len()));
    }
    s
}

/// The indices (into `convertible_layers`) one selector picks; an error when it names
/// nothing convertible.
fn resolve(spec: &ModelSpec, conv: &[String], sel: &Selector) -> Result<Vec<usize>> {
    let what = "layer selection";
    let listing = || {
        format!(
            "convertible layers of `{}` (conv2d/linear, by index): {}",
            spec.name,
            list(
                &conv
                    .iter()
                    .enumerate()
                    .map(|(i, p)| format!("{i}:{p}"))
                    .collect::<Vec<_>>()
            )
        )
    };
    let hits: Vec<usize> = match sel {
        Selector::All => (0..conv.len()).collect(),
        Selector::Index(i) => {
            if *i >= conv.len() {
                return Err(Error::invalid(
                    what,
                    format!(
                        "index {i} is out of range: `{}` has {} convertible layers; {}",
                        spec.name,
                        conv.len(),
                        listing()
                    ),
                ));
            }
            vec![*i]
        }
        Selector::Path(p) => {
            let all = all_paths(spec);
            let Some((_, ty)) = all.iter().find(|(q, _)| q == p) else {
                return Err(Error::invalid(
                    what,
                    format!("`{}` has no layer `{p}`; {}", spec.name, listing()),
                ));
            };
            let hits: Vec<usize> = (0..conv.len())
                .filter(|&i| conv[i] == *p || under(&conv[i], p))
                .collect();
            if hits.is_empty() {
                return Err(Error::invalid(
                    what,
                    format!(
                        "layer `{p}` of `{}` is a {ty}, which is not convertible (and holds no conv2d/linear); {}",
                        spec.name,
                        listing()
                    ),
                ));
            }
            hits
        }
        Selector::Pattern(g) => (0..conv.len())
            .filter(|&i| glob_match(g, &conv[i]))
            .collect(),
    };
    if hits.is_empty() {
        return Err(Error::invalid(
            what,
            format!("{sel} matches no convertible layer; {}", listing()),
        ));
    }
    Ok(hits)
}

/// Convert the selected conv2d/linear layers of `spec` into `opts.neuron` layers of the
/// same shapes. Errors: a selector naming no layer, a non-convertible layer, or matching
/// nothing; a selection left empty by `exclude`; a result that does not type-check
/// (`ModelSpec::check`, e.g. a `t1` layer too large to allocate) — each naming what was
/// asked.
pub fn convert_spec(spec: &ModelSpec, opts: &ConvertOptions) -> Result<Conversion> {
    spec.check()?;
    let conv: Vec<String> = convertible_layers(spec).into_iter().map(|c| c.0).collect();
    if conv.is_empty() {
        return Err(Error::invalid(
            "layer selection",
            format!("`{}` has no conv2d or linear layer to convert", spec.name),
        ));
    }
    let mut chosen = BTreeSet::new();
    if opts.select.is_empty() {
        chosen.extend(0..conv.len());
    }
    for s in &opts.select {
        chosen.extend(resolve(spec, &conv, s)?);
    }
    for s in &opts.exclude {
        for i in resolve(spec, &conv, s)? {
            chosen.remove(&i);
        }
    }
    if chosen.is_empty() {
        return Err(Error::invalid(
            "layer selection",
            format!(
                "nothing left to convert in `{}`: the exclusions ({}) remove every selected layer",
                spec.name,
                opts.exclude
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let n = opts.neuron;
    let needs_bias = matches!(n, NeuronType::T4 | NeuronType::Fan);
    if needs_bias && opts.bias == Some(false) {
        return Err(Error::invalid(
            "conversion",
            format!("neuron {n} needs biases to reproduce a first-order layer ((W x + b) ⊙ 1); bias = false is impossible"),
        ));
    }
    let mut out = spec.clone();
    let mut layers = Vec::new();
    for &i in &chosen {
        let path = &conv[i];
        let l = layer_mut(&mut out.layers, "", path).ok_or_else(|| {
            Error::state(format!("converter: layer `{path}` vanished from the spec"))
        })?;
        let name = l.name().map(str::to_string);
        let (new, had_bias, from) = match l.clone() {
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
                if let Err(why) = n.check_groups(groups) {
                    return Err(Error::invalid(
                        "conversion",
                        format!("layer `{path}`: {why}"),
                    ));
                }
                let b = if needs_bias {
                    true
                } else {
                    opts.bias.unwrap_or(bias)
                };
                (
                    LayerSpec::QuadConv2d {
                        name,
                        neuron: n,
                        in_channels,
                        out_channels,
                        kernel_size,
                        stride,
                        padding,
                        dilation,
                        groups,
                        bias: b,
                    },
                    bias,
                    "conv2d",
                )
            }
            LayerSpec::Linear {
                in_features,
                out_features,
                bias,
                ..
            } => {
                let b = if needs_bias {
                    true
                } else {
                    opts.bias.unwrap_or(bias)
                };
                (
                    LayerSpec::QuadLinear {
                        name,
                        neuron: n,
                        in_features,
                        out_features,
                        bias: b,
                    },
                    bias,
                    "linear",
                )
            }
            other => {
                return Err(Error::state(format!(
                    "converter: `{path}` is a {}, not convertible",
                    other.type_name()
                )))
            }
        };
        let bias = match &new {
            LayerSpec::QuadConv2d { bias, .. } | LayerSpec::QuadLinear { bias, .. } => *bias,
            _ => had_bias,
        };
        *l = new;
        let stats_from = match super::next_sibling(&spec.layers, "", path) {
            Some((p, LayerSpec::BatchNorm2d { num_features, .. }))
            | Some((p, LayerSpec::BatchNorm1d { num_features, .. }))
                if n == NeuronType::QuadraLibBn
                    && Some(num_features) == out_features(&spec_layer(spec, path)) =>
            {
                Some(p)
            }
            _ => None,
        };
        layers.push(ConvertedLayer {
            path: path.clone(),
            index: i,
            from: from.to_string(),
            neuron: n,
            bias,
            exact: !matches!(n, NeuronType::T2 | NeuronType::T3),
            stats_from,
        });
    }
    out.check().map_err(|e| {
        Error::Spec(format!(
            "converting {} layer(s) of `{}` to {n} gives a spec that does not type-check: {e}",
            layers.len(),
            spec.name
        ))
    })?;
    Ok(Conversion { spec: out, layers })
}

fn spec_layer(spec: &ModelSpec, path: &str) -> Option<LayerSpec> {
    let mut found = None;
    super::visit_layers(&spec.layers, "", &mut |p, l| {
        if p == path {
            found = Some(l.clone());
        }
    });
    found
}

fn out_features(l: &Option<LayerSpec>) -> Option<usize> {
    match l {
        Some(LayerSpec::Conv2d { out_channels, .. }) => Some(*out_channels),
        Some(LayerSpec::Linear { out_features, .. }) => Some(*out_features),
        _ => None,
    }
}

fn tensor_like(v: Vec<f64>, like: &Tensor) -> Result<Tensor> {
    Tensor::from_f64(&v, like.shape(), like.dtype())
}

/// Initialise the converted model's weights from the original (first-order) state dict
/// `sd` of `original`, so that the converted model computes the same function in eval
/// mode (see the module doc for each neuron). Layers that were not converted keep their
/// entries unchanged. Returns the converted model's full state dict. Errors: an entry the
/// original model needs is missing from `sd`; a neuron with no linear term (t2, t3) unless
/// `opts.approximate`.
pub fn convert_state_dict(
    original: &ModelSpec,
    sd: &[(String, Tensor)],
    conversion: &Conversion,
    opts: &ConvertOptions,
) -> Result<StateDict> {
    if !opts.approximate {
        if let Some(l) = conversion.layers.iter().find(|l| !l.exact) {
            return Err(Error::invalid(
                "conversion",
                format!(
                    "neuron {} has no linear term ({}), so layer `{}` cannot start as its trained first-order original; ask for an approximate conversion to start such layers from a fresh initialisation",
                    l.neuron,
                    if l.neuron == NeuronType::T2 { "W(x ⊙ x) + b" } else { "(W x + b)²" },
                    l.path
                ),
            ));
        }
    }
    let dtype = dict_dtype(sd);
    // the original must load from sd: checks names and shapes
    model_from_state_dict(original, sd, dtype, 0).map_err(|e| {
        Error::invalid(
            "checkpoint",
            format!("it does not fit model `{}`: {e}", original.name),
        )
    })?;
    let orig: HashMap<&str, &Tensor> = sd.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let fresh = conversion.spec.build(BuildOptions {
        dtype,
        seed: opts.seed,
    })?;
    let mut init = Vec::new();
    fresh.state_dict(&mut init);
    let mut out = Vec::with_capacity(init.len());
    for (key, t) in init {
        let owner = conversion.layers.iter().find(|l| under(&key, &l.path));
        let Some(layer) = owner else {
            let o = orig
                .get(key.as_str())
                .ok_or_else(|| Error::invalid("checkpoint", format!("missing entry `{key}`")))?;
            out.push((key, (*o).clone()));
            continue;
        };
        if !layer.exact {
            out.push((key, t));
            continue;
        }
        let leaf = &key[layer.path.len() + 1..];
        let w = orig
            .get(format!("{}.weight", layer.path).as_str())
            .copied()
            .ok_or_else(|| {
                Error::invalid(
                    "checkpoint",
                    format!("missing entry `{}.weight`", layer.path),
                )
            })?;
        let b = orig.get(format!("{}.bias", layer.path).as_str()).copied();
        let zeros = || vec![0.0; t.numel()];
        let ones = || vec![1.0; t.numel()];
        let weight = || w.to_f64_vec();
        let bias = || b.map_or_else(zeros, |b| b.to_f64_vec());
        // quadralib-bn: the running statistics (μ_c, σ²_c) of the BatchNorm that follows the
        // original layer, else (0, 1)
        let bn_c = || -> Result<(Vec<f64>, Vec<f64>)> {
            let Some(bn) = &layer.stats_from else {
                return Ok((zeros(), ones()));
            };
            let get = |which: &str| -> Result<Vec<f64>> {
                let k = format!("{bn}.{which}");
                let v = orig
                    .get(k.as_str())
                    .ok_or_else(|| Error::invalid("checkpoint", format!("missing entry `{k}`")))?
                    .to_f64_vec();
                if v.len() != t.numel() {
                    return Err(Error::invalid(
                        "checkpoint",
                        format!(
                            "entry `{k}` has {} values, layer `{}` has {} output channels",
                            v.len(),
                            layer.path,
                            t.numel()
                        ),
                    ));
                }
                Ok(v)
            };
            Ok((get("running_mean")?, get("running_var")?))
        };
        let p = if layer.from == "conv2d" {
            "conv"
        } else {
            "linear"
        };
        // the entry's new value, or None to keep the fresh random initialisation
        let v: Option<Vec<f64>> = match (layer.neuron, leaf) {
            // (0·x + 0) ⊙ (W_b x + b_b) + (W x + b)
            (NeuronType::QuadraLib, l)
                if l == format!("{p}1.weight") || l == format!("{p}1.bias") =>
            {
                Some(zeros())
            }
            (NeuronType::QuadraLib | NeuronType::QuadraLibBn, l) if l == format!("{p}3.weight") => {
                Some(weight())
            }
            (NeuronType::QuadraLib | NeuronType::QuadraLibBn, l) if l == format!("{p}3.bias") => {
                Some(bias())
            }
            // BN_a ≡ 0; BN_b at its defaults; BN_c the identity in eval mode, with the
            // statistics of W x + b (≈ the identity in train mode too)
            (NeuronType::QuadraLibBn, "bn1.weight" | "bn1.bias") => Some(zeros()),
            (NeuronType::QuadraLibBn, "bn3.running_mean") => Some(bn_c()?.0),
            (NeuronType::QuadraLibBn, "bn3.running_var") => Some(bn_c()?.1),
            (NeuronType::QuadraLibBn, "bn3.weight") => {
                Some(bn_c()?.1.iter().map(|v| (v + BN_EPS).sqrt()).collect())
            }
            (NeuronType::QuadraLibBn, "bn3.bias") => Some(bn_c()?.0),
            (NeuronType::QuadraLibBn, l) if l.ends_with(".running_mean") => Some(zeros()),
            (NeuronType::QuadraLibBn, l) if l.ends_with(".running_var") => Some(ones()),
            (NeuronType::QuadraLibBn, "bn2.weight") => Some(ones()),
            (NeuronType::QuadraLibBn, "bn2.bias") => Some(zeros()),
            // xᵀ 0 x + W x + b
            (NeuronType::T1, "quad.weight") => Some(zeros()),
            (NeuronType::T1, l) if l == format!("{p}.weight") => Some(weight()),
            (NeuronType::T1, l) if l == format!("{p}.bias") => Some(bias()),
            // (W x + b) ⊙ (0·x + 1)
            (NeuronType::T4, l) if l == format!("{p}1.weight") => Some(weight()),
            (NeuronType::T4, l) if l == format!("{p}1.bias") => Some(bias()),
            (NeuronType::T4, l) if l == format!("{p}2.weight") => Some(zeros()),
            (NeuronType::T4, l) if l == format!("{p}2.bias") => Some(ones()),
            // (W x + b) ⊙ (0·x + 1) + 0·(x ⊙ x) + 0
            (NeuronType::Fan, l) if l == format!("{p}_r.weight") => Some(weight()),
            (NeuronType::Fan, l) if l == format!("{p}_r.bias") => Some(bias()),
            (NeuronType::Fan, l) if l == format!("{p}_g.weight") => Some(zeros()),
            (NeuronType::Fan, l) if l == format!("{p}_g.bias") => Some(ones()),
            (NeuronType::Fan, l) if l.starts_with(&format!("{p}_b.")) => Some(zeros()),
            _ => None,
        };
        match v {
            Some(v) => out.push((key, tensor_like(v, &t)?)),
            None => out.push((key, t)),
        }
    }
    Ok(out)
}

/// Convert a trained first-order model: the converted spec, built and loaded with the
/// function-preserving weights of `convert_state_dict`, and a report. The caller's model is
/// not changed.
pub fn convert_model(model: &Model, opts: &ConvertOptions) -> Result<(Model, ConvertReport)> {
    let conversion = convert_spec(&model.spec, opts)?;
    let sd = super::state_dict_of(model);
    let new_sd = convert_state_dict(&model.spec, &sd, &conversion, opts)?;
    let converted = model_from_state_dict(&conversion.spec, &new_sd, dict_dtype(&sd), opts.seed)?;
    let before = super::cost(&model.spec)?;
    let after = super::cost(&conversion.spec)?;
    let report = ConvertReport {
        model: model.spec.name.clone(),
        neuron: opts.neuron,
        function_preserving: conversion.layers.iter().all(|l| l.exact),
        layers: conversion.layers,
        params_before: before.total_params,
        params_after: after.total_params,
        macs_before: before.total_macs,
        macs_after: after.total_macs,
    };
    Ok((converted, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("layer2.*", "layer2.0.conv1"));
        assert!(!glob_match("layer2.*", "layer1.0.conv1"));
        assert!(glob_match("*.conv?", "layer1.0.conv2"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("conv?", "conv"));
        assert!(glob_match("a*b*c", "axxbyyc"));
    }

    #[test]
    fn selector_parse() {
        assert_eq!(Selector::parse("3").unwrap(), Selector::Index(3));
        assert_eq!(Selector::parse("all").unwrap(), Selector::All);
        assert_eq!(
            Selector::parse("layer2.*").unwrap(),
            Selector::Pattern("layer2.*".into())
        );
        assert_eq!(
            Selector::parse("path:3").unwrap(),
            Selector::Path("3".into())
        );
        assert_eq!(Selector::parse("fc").unwrap(), Selector::Path("fc".into()));
        assert!(Selector::parse("index:x").is_err());
    }
}

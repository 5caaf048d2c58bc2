//! ReLinear-style initialisation (after Fan et al., "Expressivity and trainability of
//! quadratic networks"): start every quadratic neuron close to a linear (first-order)
//! neuron, so a QDNN begins where a first-order network would and grows its second-order
//! part during training.
//!
//! `relinear_init(net, s)` changes, per neuron type (s = `scale`; s = 0 makes the output
//! exactly first-order; the branch weights not listed keep their default init):
//!
//! | neuron | what is set | output after init |
//! |---|---|---|
//! | `t1` | W_a (bilinear) ← s·W_a | W_b x + b + s·xᵀW_a x |
//! | `t2` | nothing (no first-order term to start from) | unchanged |
//! | `t3` | nothing ((W_a x + b)² has no first-order term) | unchanged |
//! | `t4` (needs bias) | W_b ← s·W_b, b_b ← 1 | (W_a x + b_a)⊙(1 + s·W_b x) |
//! | `quadralib` | W_b ← s·W_b, b_b ← 0 | W_c x + b_c + s·(W_a x + b_a)⊙(W_b x) |
//! | `quadralib-bn` | γ_b ← s, β_b ← 0 (BN of branch b) | BN_c(W_c x + b_c) + s·BN_a(·)⊙x̂_b |
//! | `fan` (needs bias) | W_g ← s·W_g, b_g ← 1, W_b (on x⊙x) ← s·W_b, c ← 0 | W_r x + b_r + s·(…) |
//!
//! Two ways exist to make a product a⊙b first-order: make one factor the constant 1
//! (weight 0, bias 1: the product is then the other factor, linear in x), or make it 0
//! (the product vanishes and the layer's separate linear term remains). For `t4` and `fan`
//! (no separate linear term) the factor-is-1 form is used — Fan et al.'s own ReLinear for
//! `fan` (w_g = 0, b_g = 1, w_b = 0, c = 0); it needs the branch bias, so layers built
//! without bias are skipped. For `quadralib` the product is made ≈ 0 so the neuron starts
//! as its own linear term W_c x + b_c; the gradient of W_b, (g⊙a)·xᵀ, is non-zero, so the
//! second-order part starts learning at once. For `quadralib-bn` scaling W_b would be
//! undone by the batch norm, so the scale γ_b of BN_b is set to s instead (its gradient
//! Σ g⊙A⊙x̂_b is non-zero). Batch-norm running statistics are not changed.
//!
//! Exactly first-order at s = 0: t1, t4 (with bias), quadralib, quadralib-bn, fan (with
//! bias). Not possible: t2, t3 (and t4/fan without bias).

use std::collections::HashMap;

use crate::nn::quadratic::{NeuronType, QuadConv2d, QuadLinear};
use crate::nn::{Module, Param};
use crate::tensor::Float;
use crate::{ensure_valid, with_dtype, Result};

/// What `relinear_init` did to one quadratic layer.
#[derive(Clone, Debug, PartialEq)]
pub enum ReLinearAction {
    /// The layer now starts (close to) first-order.
    Applied,
    /// The layer was left unchanged, with the reason.
    Skipped(String),
}

/// Per quadratic layer (path, neuron, action), in forward order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReLinearReport {
    /// (full layer path, its neuron type, what was done), one entry per quadratic layer.
    pub layers: Vec<(String, NeuronType, ReLinearAction)>,
}

impl ReLinearReport {
    /// How many layers were re-initialised (`Applied`).
    pub fn applied(&self) -> usize {
        self.layers
            .iter()
            .filter(|l| l.2 == ReLinearAction::Applied)
            .count()
    }
}

/// (path, neuron) of every quadratic layer below `m`, in forward order.
pub fn quadratic_layers(m: &dyn Module) -> Vec<(String, NeuronType)> {
    let mut out = Vec::new();
    collect(m, &mut out);
    out
}

fn collect(m: &dyn Module, out: &mut Vec<(String, NeuronType)>) {
    let any = m.as_any();
    if let Some(q) = any.downcast_ref::<QuadConv2d>() {
        out.push((q.path().to_string(), q.neuron()));
    } else if let Some(q) = any.downcast_ref::<QuadLinear>() {
        out.push((q.path().to_string(), q.neuron()));
    }
    for c in m.children() {
        collect(c, out);
    }
}

/// True when `net` holds at least one quadratic layer.
pub fn has_quadratic_layers(net: &dyn Module) -> bool {
    !quadratic_layers(net).is_empty()
}

/// Which of a layer's parameters a neuron's init touches.
#[derive(Clone, Copy)]
enum Leaf {
    StackedWeight,
    StackedBias,
    LiftedWeight,
    LiftedBias,
    BnWeight,
    BnBias,
}

fn leaf_of(name: &str) -> Option<(&str, Leaf)> {
    for (suffix, leaf) in [
        ("stacked.weight", Leaf::StackedWeight),
        ("stacked.bias", Leaf::StackedBias),
        ("lifted.weight", Leaf::LiftedWeight),
        ("lifted.bias", Leaf::LiftedBias),
        ("bn.weight", Leaf::BnWeight),
        ("bn.bias", Leaf::BnBias),
    ] {
        if let Some(prefix) = name.strip_suffix(suffix) {
            if prefix.is_empty() {
                return Some(("", leaf));
            }
            if let Some(p) = prefix.strip_suffix('.') {
                return Some((p, leaf));
            }
        }
    }
    None
}

/// One edit: elements `range of branch k` (or the whole tensor) ← scale·old or value.
enum Edit {
    /// Multiply branch `k` (k-th of `nb` equal slices) by s.
    Scale { k: usize, nb: usize },
    /// Set branch `k` of `nb` to a constant.
    Set { k: usize, nb: usize, value: f64 },
}

fn apply<T: Float>(p: &mut Param, edit: &Edit, s: f64) -> Result<()> {
    let v = p.value.data_mut::<T>()?;
    let n = v.len();
    let (k, nb) = match *edit {
        Edit::Scale { k, nb } | Edit::Set { k, nb, .. } => (k, nb),
    };
    let per = n / nb;
    for x in &mut v[k * per..(k + 1) * per] {
        *x = match *edit {
            Edit::Scale { .. } => *x * T::of(s),
            Edit::Set { value, .. } => T::of(value),
        };
    }
    Ok(())
}

/// Start every quadratic neuron in `net` close to first-order (see the module doc for what
/// is set per neuron type); `scale` ∈ [0, 1] is the size left to the second-order part
/// (0: exactly first-order where possible). Returns what was done per layer.
pub fn relinear_init(net: &mut dyn Module, scale: f64) -> Result<ReLinearReport> {
    ensure_valid!(
        scale.is_finite() && (0.0..=1.0).contains(&scale),
        "ReLinear scale",
        "{scale} must be in [0, 1]"
    );
    let layers = quadratic_layers(net);
    // which layers have a stacked bias (t4 and fan need it)
    let mut has_bias: HashMap<String, bool> = HashMap::new();
    net.visit_params(&mut |name, _| {
        if let Some((path, Leaf::StackedBias)) = leaf_of(name) {
            has_bias.insert(path.to_string(), true);
        }
    });
    let mut report = ReLinearReport::default();
    let mut plan: HashMap<String, NeuronType> = HashMap::new();
    for (path, neuron) in &layers {
        let bias = has_bias.get(path).copied().unwrap_or(false);
        let action = match neuron {
            NeuronType::T2 => {
                ReLinearAction::Skipped("t2 = W_a(x⊙x) has no first-order term".into())
            }
            NeuronType::T3 => {
                ReLinearAction::Skipped("t3 = (W_a x + b)² has no first-order term".into())
            }
            NeuronType::T4 | NeuronType::Fan if !bias => ReLinearAction::Skipped(format!(
                "{neuron} without bias: the factor cannot be set to the constant 1"
            )),
            _ => ReLinearAction::Applied,
        };
        if action == ReLinearAction::Applied {
            plan.insert(path.clone(), *neuron);
        }
        report.layers.push((path.clone(), *neuron, action));
    }
    let mut res = Ok(());
    net.visit_params(&mut |name, p| {
        if res.is_err() {
            return;
        }
        let Some((path, leaf)) = leaf_of(name) else {
            return;
        };
        let Some(&neuron) = plan.get(path) else {
            return;
        };
        let edits: Vec<Edit> = match (neuron, leaf) {
            (NeuronType::T1, Leaf::LiftedWeight) => vec![Edit::Scale { k: 0, nb: 1 }],
            (NeuronType::T4, Leaf::StackedWeight) => vec![Edit::Scale { k: 1, nb: 2 }],
            (NeuronType::T4, Leaf::StackedBias) => vec![Edit::Set {
                k: 1,
                nb: 2,
                value: 1.0,
            }],
            (NeuronType::QuadraLib, Leaf::StackedWeight) => vec![Edit::Scale { k: 1, nb: 3 }],
            (NeuronType::QuadraLib, Leaf::StackedBias) => vec![Edit::Set {
                k: 1,
                nb: 3,
                value: 0.0,
            }],
            (NeuronType::QuadraLibBn, Leaf::BnWeight) => vec![Edit::Set {
                k: 1,
                nb: 3,
                value: scale,
            }],
            (NeuronType::QuadraLibBn, Leaf::BnBias) => vec![Edit::Set {
                k: 1,
                nb: 3,
                value: 0.0,
            }],
            (NeuronType::Fan, Leaf::StackedWeight) => vec![Edit::Scale { k: 1, nb: 2 }],
            (NeuronType::Fan, Leaf::StackedBias) => vec![Edit::Set {
                k: 1,
                nb: 2,
                value: 1.0,
            }],
            (NeuronType::Fan, Leaf::LiftedWeight) => vec![Edit::Scale { k: 0, nb: 1 }],
            (NeuronType::Fan, Leaf::LiftedBias) => vec![Edit::Set {
                k: 0,
                nb: 1,
                value: 0.0,
            }],
            _ => vec![],
        };
        for e in &edits {
            if res.is_ok() {
                res = with_dtype!(p.value.dtype(), T => apply::<T>(p, e, scale));
            }
        }
        if !edits.is_empty() {
            p.grad = None;
        }
    });
    res.map(|_| report)
}

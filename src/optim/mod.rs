//! Optimizers, parameter groups, gradient clipping, learning-rate schedules and the
//! quadratic optimizer. Optimizer state (momentum buffers, Adam moments) is charged to
//! `Category::OptimizerState`.
//!
//! - [`Sgd`]: PyTorch's `torch.optim.SGD` (momentum, dampening, Nesterov, weight decay).
//! - [`Adam`]: PyTorch's `torch.optim.Adam` / `torch.optim.AdamW` (bias correction, eps
//!   added after the bias-corrected square root, optional AMSGrad).
//! - [`ParamGroup`]: per-group lr multiplier / weight decay / betas, selected by
//!   [`ParamKind`]. Groups apply per *segment*: a stacked quadratic weight whose slices have
//!   different kinds gets each slice updated with its own group's hyper-parameters.
//! - [`clip_grad_norm`]: `torch.nn.utils.clip_grad_norm_` (L2, global over all parameters).
//! - [`schedule`]: cosine annealing, step decay, multi-step, linear warm-up.
//! - [`QuadraticOptimizer`] and [`init::relinear_init`]: second-order weights in their own
//!   group, and a near-linear start for quadratic neurons.
//!
//! State export/import ([`Optimizer::state`], [`Optimizer::load_state`]) gives named tensors
//! and scalar metadata for checkpoints; loading it back resumes bit-identically.

pub mod adam;
pub mod init;
pub mod quadratic;
pub mod schedule;
pub mod sgd;

pub use adam::{Adam, AdamConfig};
pub use init::{
    has_quadratic_layers, quadratic_layers, relinear_init, ReLinearAction, ReLinearReport,
};
pub use quadratic::{BaseOptimizer, QuadraticConfig, QuadraticOptimizer};
pub use schedule::{
    Constant, CosineAnnealing, Every, LrScheduler, MultiStep, Schedule, StepDecay, Warmup,
};
pub use sgd::Sgd;

use crate::device::alloc::Category;
use crate::nn::{Module, Param, ParamKind, Segment};
use crate::tensor::Tensor;
use crate::{ensure_valid, Error, Result};

/// A parameter-update rule (SGD, Adam, the quadratic optimizer) that keeps its own state
/// (momentum buffers, moments) per parameter name between steps.
pub trait Optimizer: Send {
    /// Apply one update from the gradients accumulated in `net`'s parameters (the
    /// gradients are consumed: parameters have no gradient afterwards).
    fn step(&mut self, net: &mut dyn Module) -> Result<()>;
    /// The base learning rate (groups scale it by their `lr_scale`).
    fn lr(&self) -> f64;
    /// Set the base learning rate (what a schedule calls; 0 is allowed).
    fn set_lr(&mut self, lr: f64);
    /// The optimizer's state as named tensors and scalars (copies; for checkpoints).
    fn state(&self) -> Result<OptimState>;
    /// Replace the state with `state` (from [`Optimizer::state`] of the same kind of
    /// optimizer); continuing then gives bit-identical updates to an uninterrupted run.
    fn load_state(&mut self, state: &OptimState) -> Result<()>;
}

/// An optimizer's serialisable state.
///
/// Names: tensors `{param}.momentum_buffer` (SGD), `{param}.exp_avg`, `{param}.exp_avg_sq`,
/// `{param}.max_exp_avg_sq` (Adam, AMSGrad); scalars `lr` (base learning rate) and
/// `{param}.step` (Adam's per-parameter step count). `kind` is `sgd`, `adam` or `adamw`.
#[derive(Debug, Default)]
pub struct OptimState {
    /// Which optimizer wrote the state: `sgd`, `adam` or `adamw`.
    pub kind: String,
    /// State tensors by name (`{param}.exp_avg`, …), shaped as their parameter.
    pub tensors: Vec<(String, Tensor)>,
    /// Scalar state by name (`lr`, `{param}.step`, …).
    pub scalars: Vec<(String, f64)>,
}

impl OptimState {
    /// The scalar called `name`, `None` when the state has none.
    pub fn scalar(&self, name: &str) -> Option<f64> {
        self.scalars.iter().find(|(n, _)| n == name).map(|s| s.1)
    }
}

/// Hyper-parameters for the parameter slices whose kind is in `kinds`; the first group that
/// lists a kind wins, kinds no group lists use the optimizer's base settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamGroup {
    /// The group's name (`second_order`), quoted in error messages.
    pub name: String,
    /// The parameter kinds whose slices take this group's settings.
    pub kinds: Vec<ParamKind>,
    /// Multiplier of the base learning rate (schedules move the base; ≥ 0).
    pub lr_scale: f64,
    /// Weight decay for this group; `None`: the optimizer's.
    pub weight_decay: Option<f64>,
    /// Adam's (β1, β2) for this group; `None`: the optimizer's. SGD rejects `Some`.
    pub betas: Option<(f64, f64)>,
}

impl ParamGroup {
    /// A group with the base settings (lr_scale 1, inherited weight decay and betas).
    pub fn new(name: &str, kinds: &[ParamKind]) -> ParamGroup {
        ParamGroup {
            name: name.to_string(),
            kinds: kinds.to_vec(),
            lr_scale: 1.0,
            weight_decay: None,
            betas: None,
        }
    }
    /// The group with learning-rate multiplier `s` (checked ≥ 0 and finite by the optimizer).
    pub fn lr_scale(mut self, s: f64) -> Self {
        self.lr_scale = s;
        self
    }
    /// The group with its own weight decay `wd` (in [0, 1)).
    pub fn weight_decay(mut self, wd: f64) -> Self {
        self.weight_decay = Some(wd);
        self
    }
    /// The group with its own Adam betas (β1, β2), each in [0, 1); SGD refuses the group.
    pub fn betas(mut self, b1: f64, b2: f64) -> Self {
        self.betas = Some((b1, b2));
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let what = format!("parameter group `{}`", self.name);
        ensure_valid!(
            self.lr_scale.is_finite() && self.lr_scale >= 0.0,
            what.clone(),
            "lr_scale {} must be finite and ≥ 0",
            self.lr_scale
        );
        if let Some(wd) = self.weight_decay {
            check_weight_decay(wd).map_err(|e| Error::invalid(what.clone(), e.to_string()))?;
        }
        if let Some((b1, b2)) = self.betas {
            check_betas(b1, b2).map_err(|e| Error::invalid(what.clone(), e.to_string()))?;
        }
        Ok(())
    }
}

/// The group of `kind`, if any.
pub(crate) fn group_of(groups: &[ParamGroup], kind: ParamKind) -> Option<&ParamGroup> {
    groups.iter().find(|g| g.kinds.contains(&kind))
}

/// The segments of a parameter of `n` elements (one whole-tensor segment if it lists none).
pub(crate) fn segments_of(segs: &[Segment], n: usize) -> Vec<Segment> {
    if segs.is_empty() {
        vec![Segment {
            range: 0..n,
            kind: ParamKind::Weight,
        }]
    } else {
        segs.to_vec()
    }
}

pub(crate) fn check_lr(lr: f64) -> Result<()> {
    ensure_valid!(
        lr.is_finite() && lr > 0.0 && lr < 1e3,
        "learning rate",
        "{lr} must be positive and below 1000"
    );
    Ok(())
}

pub(crate) fn check_weight_decay(wd: f64) -> Result<()> {
    ensure_valid!(
        wd.is_finite() && (0.0..1.0).contains(&wd),
        "weight decay",
        "{wd} must be in [0, 1)"
    );
    Ok(())
}

pub(crate) fn check_betas(b1: f64, b2: f64) -> Result<()> {
    for (name, b) in [("beta1", b1), ("beta2", b2)] {
        ensure_valid!(
            b.is_finite() && (0.0..1.0).contains(&b),
            name,
            "{b} must be in [0, 1)"
        );
    }
    Ok(())
}

/// A deep copy charged to `Category::OptimizerState`.
pub(crate) fn state_copy(t: &Tensor) -> Result<Tensor> {
    t.copy_in(Category::OptimizerState)
}

/// `(param, field)` of a state tensor name `param.field`.
pub(crate) fn split_name(name: &str) -> Result<(&str, &str)> {
    name.rsplit_once('.').ok_or_else(|| {
        Error::invalid(
            "optimizer state",
            format!("entry `{name}` is not `<parameter>.<field>`"),
        )
    })
}

/// Moves an optimizer state tensor to `device` (the device of its parameter) when it is
/// elsewhere: state loaded from a checkpoint lives on the CPU until the first step of a
/// model on a GPU-path device, and follows a model moved with `Model::to_device`.
pub(crate) fn to_param_device(t: &mut Tensor, device: crate::Device) -> Result<()> {
    if t.device() != device {
        *t = t.to_device(device)?;
        t.retag(Category::OptimizerState);
    }
    Ok(())
}

/// Clip the gradients of `net` by their global L2 norm, as
/// `torch.nn.utils.clip_grad_norm_(params, max_norm)`: total = ‖(‖g_1‖, …, ‖g_n‖)‖₂;
/// every gradient is multiplied by min(1, max_norm / (total + 1e-6)). Returns the total
/// norm before clipping. Norms are accumulated in f64. Like PyTorch (error_if_nonfinite =
/// False), a non-finite total is returned and applied as is. Gradients on a GPU-path device
/// are reduced and scaled there (`ops::optim`); only the norm comes back.
pub fn clip_grad_norm(net: &mut dyn Module, max_norm: f64) -> Result<f64> {
    ensure_valid!(
        max_norm.is_finite() && max_norm > 0.0,
        "max_norm",
        "{max_norm} must be positive and finite"
    );
    // the gradients grouped by device in first-seen order, each group reduced where it lives
    let mut groups: Vec<(crate::Device, Vec<Tensor>)> = Vec::new();
    net.visit_params(&mut |_, p| {
        if let Some(g) = &p.grad {
            match groups.iter_mut().find(|(d, _)| *d == g.device()) {
                Some((_, v)) => v.push(g.clone()),
                None => groups.push((g.device(), vec![g.clone()])),
            }
        }
    });
    let mut sq = 0.0f64;
    for (_, ts) in &groups {
        let refs: Vec<&Tensor> = ts.iter().collect();
        sq += crate::ops::optim::sum_squares(&refs)?;
    }
    // the clones above share the gradients' storage: drop them before scaling in place
    drop(groups);
    let total = sq.sqrt();
    let coef = (max_norm / (total + 1e-6)).min(1.0);
    let coef = if total.is_nan() { f64::NAN } else { coef };
    try_for_each_param(net, |_, p| match p.grad.as_mut() {
        Some(g) => crate::ops::optim::scale_in_place(g, coef),
        None => Ok(()),
    })?;
    Ok(total)
}

/// `f` on every parameter of `net` in visiting order, stopping at the first error (the
/// parameters after it are left untouched), which is returned. Each call runs in the
/// parameter's layer scope, so what it allocates (optimizer state) and launches is charged
/// to the layer that owns the parameter in the memory and launch tables.
pub(crate) fn try_for_each_param(
    net: &mut dyn Module,
    mut f: impl FnMut(&str, &mut Param) -> Result<()>,
) -> Result<()> {
    use crate::device::alloc::{layer_id, scope_layer};
    let mut res = Ok(());
    net.visit_params(&mut |name, p| {
        if res.is_ok() {
            let _layer = scope_layer(layer_id(&p.value.layer()));
            res = f(name, p);
        }
    });
    res
}

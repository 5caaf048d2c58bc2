//! The quadratic optimizer: SGD or Adam(W) with the second-order weights of quadratic
//! layers in their own parameter group, and (through [`QuadraticOptimizer::for_model`]) a
//! ReLinear start ([`super::init::relinear_init`]).
//!
//! Groups (by `ParamKind`, applied per segment of stacked weights):
//! - `second_order`: `QuadWeight`, `QuadBias` — slices that enter a product or square
//!   (t3 a; t4 a, b; quadralib(-bn) a, b; fan r, g; the lifted weight of t1, t2, fan):
//!   lr = `quad_lr_scale`·lr, weight decay `quad_weight_decay` (or the base one);
//! - everything else (first-order `Weight`/`Bias`, `NormScale`/`NormShift`): the base
//!   settings.
//!
//! This follows the ReLinear recipe of Fan et al. (a smaller learning rate for the
//! quadratic terms than for the linear ones), with the roles read from `ParamKind`: note
//! that for `fan` the r branch is tagged `QuadWeight` (it enters the product), so unlike
//! the paper it also gets the second-order rate.

use super::init::{has_quadratic_layers, relinear_init, ReLinearReport};
use super::{check_weight_decay, Adam, AdamConfig, OptimState, Optimizer, ParamGroup, Sgd};
use crate::nn::{Module, ParamKind};
use crate::{ensure_valid, Result};

/// The optimizer the quadratic optimizer wraps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BaseOptimizer {
    /// SGD with these settings (as [`Sgd::new`] takes them).
    Sgd {
        /// Base learning rate.
        lr: f64,
        /// Momentum factor in [0, 1).
        momentum: f64,
        /// Weight decay in [0, 1), coupled (added to the gradient).
        weight_decay: f64,
        /// Nesterov momentum (needs momentum > 0).
        nesterov: bool,
    },
    /// Adam or AdamW (`decoupled`).
    Adam(AdamConfig),
}

/// Quadratic-optimizer settings; `Default` is what `quadra-train` uses for QDNNs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuadraticConfig {
    /// Multiplier of the base lr for `QuadWeight`/`QuadBias` segments (default 0.1).
    pub quad_lr_scale: f64,
    /// Weight decay of those segments; `None`: the base weight decay (default `None`).
    pub quad_weight_decay: Option<f64>,
    /// `Some(scale)`: apply `relinear_init(net, scale)` in `for_model` (default
    /// `Some(0.0)`: exactly first-order start where possible); `None`: keep the init.
    pub relinear: Option<f64>,
}

impl Default for QuadraticConfig {
    fn default() -> Self {
        QuadraticConfig {
            quad_lr_scale: 0.1,
            quad_weight_decay: None,
            relinear: Some(0.0),
        }
    }
}

impl QuadraticConfig {
    /// No second-order group and no ReLinear: the wrapped optimizer unchanged.
    pub fn off() -> Self {
        QuadraticConfig {
            quad_lr_scale: 1.0,
            quad_weight_decay: None,
            relinear: None,
        }
    }
    /// The parameter groups this config gives.
    pub fn groups(&self) -> Vec<ParamGroup> {
        let mut g = ParamGroup::new(
            "second_order",
            &[ParamKind::QuadWeight, ParamKind::QuadBias],
        )
        .lr_scale(self.quad_lr_scale);
        g.weight_decay = self.quad_weight_decay;
        vec![g]
    }
}

enum Inner {
    Sgd(Sgd),
    Adam(Adam),
}

/// SGD or Adam(W) with the quadratic layers' second-order weights in their own parameter
/// group (see the module doc); the optimizer a QDNN trains with.
pub struct QuadraticOptimizer {
    inner: Inner,
    cfg: QuadraticConfig,
    groups: Vec<ParamGroup>,
    relinear: Option<ReLinearReport>,
}

impl QuadraticOptimizer {
    /// The wrapped optimizer with the second-order group of `cfg` (no initialisation;
    /// `cfg.relinear` is only used by `for_model`).
    pub fn new(base: BaseOptimizer, cfg: QuadraticConfig) -> Result<QuadraticOptimizer> {
        Self::with_groups(base, cfg, cfg.groups())
    }

    fn with_groups(
        base: BaseOptimizer,
        cfg: QuadraticConfig,
        groups: Vec<ParamGroup>,
    ) -> Result<QuadraticOptimizer> {
        ensure_valid!(
            cfg.quad_lr_scale.is_finite() && cfg.quad_lr_scale > 0.0,
            "second-order lr scale",
            "{} must be positive and finite",
            cfg.quad_lr_scale
        );
        if let Some(wd) = cfg.quad_weight_decay {
            check_weight_decay(wd)?;
        }
        if let Some(s) = cfg.relinear {
            ensure_valid!(
                s.is_finite() && (0.0..=1.0).contains(&s),
                "ReLinear scale",
                "{s} must be in [0, 1]"
            );
        }
        let inner = match base {
            BaseOptimizer::Sgd {
                lr,
                momentum,
                weight_decay,
                nesterov,
            } => Inner::Sgd(
                Sgd::new(lr, momentum, weight_decay, nesterov)?.with_groups(groups.clone())?,
            ),
            BaseOptimizer::Adam(c) => Inner::Adam(Adam::new(c)?.with_groups(groups.clone())?),
        };
        Ok(QuadraticOptimizer {
            inner,
            cfg,
            groups,
            relinear: None,
        })
    }

    /// The optimizer for `net`: when `net` has quadratic layers, apply `cfg.relinear`
    /// (ReLinear init, changing `net`'s weights) and use the second-order group; for a
    /// first-order network, the plain wrapped optimizer.
    pub fn for_model(
        net: &mut dyn Module,
        base: BaseOptimizer,
        cfg: QuadraticConfig,
    ) -> Result<QuadraticOptimizer> {
        if !has_quadratic_layers(net) {
            let mut o = Self::with_groups(base, cfg, Vec::new())?;
            o.groups.clear();
            return Ok(o);
        }
        let mut o = Self::new(base, cfg)?;
        if let Some(s) = cfg.relinear {
            o.relinear = Some(relinear_init(net, s)?);
        }
        Ok(o)
    }

    /// The quadratic settings (second-order lr scale, weight decay, ReLinear scale).
    pub fn config(&self) -> &QuadraticConfig {
        &self.cfg
    }
    /// The parameter groups in use (empty for a first-order network).
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }
    /// What ReLinear did, when `for_model` applied it.
    pub fn relinear_report(&self) -> Option<&ReLinearReport> {
        self.relinear.as_ref()
    }

    fn inner(&self) -> &dyn Optimizer {
        match &self.inner {
            Inner::Sgd(o) => o,
            Inner::Adam(o) => o,
        }
    }
    fn inner_mut(&mut self) -> &mut dyn Optimizer {
        match &mut self.inner {
            Inner::Sgd(o) => o,
            Inner::Adam(o) => o,
        }
    }
}

impl Optimizer for QuadraticOptimizer {
    fn step(&mut self, net: &mut dyn Module) -> Result<()> {
        self.inner_mut().step(net)
    }
    fn lr(&self) -> f64 {
        self.inner().lr()
    }
    fn set_lr(&mut self, lr: f64) {
        self.inner_mut().set_lr(lr)
    }
    fn state(&self) -> Result<OptimState> {
        self.inner().state()
    }
    fn load_state(&mut self, state: &OptimState) -> Result<()> {
        self.inner_mut().load_state(state)
    }
}

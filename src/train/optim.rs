//! A run's optimizer, from its config: the quadratic optimizer or the plain one, resumed
//! state, gradient clipping.

use anyhow::{bail, Result};

use crate::checkpoint::OptimState;
use crate::model::Model;
use crate::optim::{
    clip_grad_norm, AdamConfig, BaseOptimizer, Optimizer, QuadraticConfig, QuadraticOptimizer,
};

use super::config::{OptimKind, TrainConfig};

/// The optimizer wrapped with gradient clipping.
struct Clipped {
    inner: Box<dyn Optimizer>,
    max_norm: f64,
}

impl Optimizer for Clipped {
    fn step(&mut self, net: &mut dyn crate::nn::Module) -> crate::Result<()> {
        clip_grad_norm(net, self.max_norm)?;
        self.inner.step(net)
    }
    fn lr(&self) -> f64 {
        self.inner.lr()
    }
    fn set_lr(&mut self, lr: f64) {
        self.inner.set_lr(lr)
    }
    fn state(&self) -> crate::Result<crate::optim::OptimState> {
        self.inner.state()
    }
    fn load_state(&mut self, s: &crate::optim::OptimState) -> crate::Result<()> {
        self.inner.load_state(s)
    }
}

/// The run's optimizer: the quadratic optimizer (second-order group; ReLinear on a fresh
/// run) for models with quadratic layers unless turned off, the plain one otherwise; with
/// `resume`, its state continues. Also a note for the run's header line (None for a model
/// without quadratic layers).
pub fn build_optimizer(
    cfg: &TrainConfig,
    model: &mut Model,
    resume: Option<&OptimState>,
) -> Result<(Box<dyn Optimizer>, Option<String>)> {
    let base = match cfg.optimizer {
        OptimKind::Sgd => BaseOptimizer::Sgd {
            lr: cfg.lr,
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
            nesterov: cfg.nesterov,
        },
        OptimKind::Adam => BaseOptimizer::Adam(AdamConfig {
            weight_decay: cfg.weight_decay,
            ..AdamConfig::adam(cfg.lr)
        }),
        OptimKind::Adamw => BaseOptimizer::Adam(AdamConfig {
            weight_decay: cfg.weight_decay,
            ..AdamConfig::adamw(cfg.lr)
        }),
    };
    let qcfg = if cfg.quadratic_optimizer {
        QuadraticConfig {
            quad_lr_scale: cfg.quad_lr_scale,
            quad_weight_decay: None,
            // a resumed or --init run continues from trained weights: never re-initialise them
            relinear: if resume.is_some() || cfg.init.is_some() {
                None
            } else {
                cfg.relinear
            },
        }
    } else {
        QuadraticConfig::off()
    };
    let quad = QuadraticOptimizer::for_model(&mut model.net, base, qcfg)?;
    let note = match (cfg.quadratic_optimizer, quad.groups().is_empty()) {
        (_, true) => None,
        (false, false) => Some("plain optimizer (--no-quadratic-optimizer)".to_string()),
        (true, false) => Some(format!(
            "quadratic optimizer: second-order lr ×{}{}",
            cfg.quad_lr_scale,
            match quad.relinear_report() {
                Some(r) => format!(
                    ", ReLinear({}) on {} layers",
                    cfg.relinear.unwrap_or(0.0),
                    r.applied()
                ),
                None => String::new(),
            }
        )),
    };
    let mut opt: Box<dyn Optimizer> = Box::new(quad);
    if let Some(s) = resume {
        let want = cfg.optimizer.state_kind();
        if s.kind != want {
            bail!(
                "the checkpoint's optimizer is `{}`, this run uses {want}",
                s.kind
            );
        }
        // momentum buffers / moments and step counts: the resumed run continues exactly
        opt.load_state(&s.to_optim()?)?;
    }
    if let Some(m) = cfg.clip_grad_norm {
        opt = Box::new(Clipped {
            inner: opt,
            max_norm: m,
        });
    }
    Ok((opt, note))
}

//! Learning-rate schedules as closed forms of a step index `t` (0-based). Whether `t`
//! counts epochs or optimizer steps is the caller's choice: [`LrScheduler`] maps
//! (epoch, step within the epoch) to `t` for either unit and sets the optimizer's base lr
//! (parameter groups keep their `lr_scale` relative to it).
//!
//! | schedule | lr(t) | PyTorch equivalent |
//! |---|---|---|
//! | [`Constant`] | base | — |
//! | [`CosineAnnealing`] | final + (base − final)·(1 + cos(π·t/T))/2 for t ≤ T, final after | `CosineAnnealingLR(T_max=T, eta_min=final)` (for t ≤ T) |
//! | [`StepDecay`] | base·γ^⌊t / step⌋ | `StepLR(step_size, gamma)` |
//! | [`MultiStep`] | base·γ^(number of milestones ≤ t) | `MultiStepLR(milestones, gamma)` |
//! | [`Warmup`] | t < W: b·(s + (1 − s)·t/W) with b = inner(0); t ≥ W: inner(t − W) | `SequentialLR([LinearLR(start_factor=s, total_iters=W), inner], milestones=[W])` |
//!
//! The cosine form is QuadraLib's reference schedule (annealing to a final lr over T
//! epochs); unlike PyTorch's (periodic) closed form it stays at `final` after T.

use super::Optimizer;
use crate::{ensure_valid, Result};

/// A learning rate per step index.
pub trait Schedule: Send + Sync {
    /// The learning rate at step index `t` (0-based).
    fn lr_at(&self, t: usize) -> f64;
}

impl Schedule for Box<dyn Schedule> {
    fn lr_at(&self, t: usize) -> f64 {
        (**self).lr_at(t)
    }
}

fn check_base(what: &str, lr: f64) -> Result<()> {
    ensure_valid!(
        lr.is_finite() && lr >= 0.0,
        what,
        "{lr} must be finite and ≥ 0"
    );
    Ok(())
}

fn check_gamma(gamma: f64) -> Result<()> {
    ensure_valid!(
        gamma.is_finite() && gamma > 0.0,
        "gamma",
        "{gamma} must be positive and finite"
    );
    Ok(())
}

/// The same learning rate at every step.
#[derive(Clone, Debug)]
pub struct Constant {
    lr: f64,
}

impl Constant {
    /// Learning rate `lr` always; an `Error::Invalid` unless it is finite and ≥ 0.
    pub fn new(lr: f64) -> Result<Constant> {
        check_base("learning rate", lr)?;
        Ok(Constant { lr })
    }
}

impl Schedule for Constant {
    fn lr_at(&self, _t: usize) -> f64 {
        self.lr
    }
}

/// Cosine annealing from `base` to `final_lr` over `t_max` steps, then `final_lr`.
#[derive(Clone, Debug)]
pub struct CosineAnnealing {
    base: f64,
    final_lr: f64,
    t_max: usize,
}

impl CosineAnnealing {
    /// Anneal `base` → `final_lr` over `t_max` steps; an `Error::Invalid` for a negative or
    /// non-finite rate or `t_max` = 0.
    pub fn new(base: f64, final_lr: f64, t_max: usize) -> Result<CosineAnnealing> {
        check_base("learning rate", base)?;
        check_base("final learning rate", final_lr)?;
        ensure_valid!(t_max > 0, "T_max", "the annealing length must be ≥ 1");
        Ok(CosineAnnealing {
            base,
            final_lr,
            t_max,
        })
    }
}

impl Schedule for CosineAnnealing {
    fn lr_at(&self, t: usize) -> f64 {
        if t >= self.t_max {
            return self.final_lr;
        }
        let c = (std::f64::consts::PI * t as f64 / self.t_max as f64).cos();
        self.final_lr + (self.base - self.final_lr) * (1.0 + c) / 2.0
    }
}

/// `base`·γ^⌊t / step_size⌋: the rate multiplied by γ every `step_size` steps.
#[derive(Clone, Debug)]
pub struct StepDecay {
    base: f64,
    step_size: usize,
    gamma: f64,
}

impl StepDecay {
    /// Decay `base` by `gamma` every `step_size` steps; an `Error::Invalid` for a negative
    /// or non-finite rate, γ ≤ 0 or `step_size` = 0.
    pub fn new(base: f64, step_size: usize, gamma: f64) -> Result<StepDecay> {
        check_base("learning rate", base)?;
        check_gamma(gamma)?;
        ensure_valid!(step_size > 0, "step_size", "must be ≥ 1");
        Ok(StepDecay {
            base,
            step_size,
            gamma,
        })
    }
}

impl Schedule for StepDecay {
    fn lr_at(&self, t: usize) -> f64 {
        self.base * self.gamma.powi((t / self.step_size) as i32)
    }
}

/// `base`·γ^k, k the number of milestones ≤ t: the rate multiplied by γ at each milestone.
#[derive(Clone, Debug)]
pub struct MultiStep {
    base: f64,
    milestones: Vec<usize>,
    gamma: f64,
}

impl MultiStep {
    /// Decay `base` by `gamma` at each of `milestones` (step indices), which must be
    /// strictly increasing; an `Error::Invalid` otherwise or for a bad rate or γ ≤ 0.
    pub fn new(base: f64, milestones: Vec<usize>, gamma: f64) -> Result<MultiStep> {
        check_base("learning rate", base)?;
        check_gamma(gamma)?;
        ensure_valid!(
            milestones.windows(2).all(|w| w[0] < w[1]),
            "milestones",
            "{milestones:?} must be strictly increasing"
        );
        Ok(MultiStep {
            base,
            milestones,
            gamma,
        })
    }
}

impl Schedule for MultiStep {
    fn lr_at(&self, t: usize) -> f64 {
        let k = self.milestones.iter().filter(|&&m| m <= t).count();
        self.base * self.gamma.powi(k as i32)
    }
}

/// Linear warm-up over `warmup` steps from `start_factor`·inner(0) to inner(0), then
/// `inner` restarted at 0.
#[derive(Clone, Debug)]
pub struct Warmup<S: Schedule> {
    inner: S,
    warmup: usize,
    start_factor: f64,
}

impl<S: Schedule> Warmup<S> {
    /// Warm `inner` up over `warmup` steps from `start_factor` (in (0, 1]) times its first
    /// rate; an `Error::Invalid` for a factor outside (0, 1].
    pub fn new(inner: S, warmup: usize, start_factor: f64) -> Result<Warmup<S>> {
        ensure_valid!(
            start_factor.is_finite() && start_factor > 0.0 && start_factor <= 1.0,
            "warm-up start factor",
            "{start_factor} must be in (0, 1]"
        );
        Ok(Warmup {
            inner,
            warmup,
            start_factor,
        })
    }
}

impl<S: Schedule> Schedule for Warmup<S> {
    fn lr_at(&self, t: usize) -> f64 {
        if t >= self.warmup {
            return self.inner.lr_at(t - self.warmup);
        }
        let s = self.start_factor;
        self.inner.lr_at(0) * (s + (1.0 - s) * t as f64 / self.warmup as f64)
    }
}

/// The unit a schedule's index counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Every {
    /// t = epoch: the lr changes between epochs.
    Epoch,
    /// t = epoch·steps_per_epoch + step: the lr changes every optimizer step.
    Step {
        /// Optimizer steps in one epoch.
        steps_per_epoch: usize,
    },
}

/// A schedule evaluated per epoch or per step.
pub struct LrScheduler {
    /// The learning rate as a function of the index `t`.
    pub schedule: Box<dyn Schedule>,
    /// What `t` counts: epochs or optimizer steps.
    pub every: Every,
}

impl LrScheduler {
    /// `schedule` indexed by epoch or by step, as `every` says.
    pub fn new(schedule: Box<dyn Schedule>, every: Every) -> LrScheduler {
        LrScheduler { schedule, every }
    }
    /// The index `t` of (epoch, step within the epoch), both 0-based.
    pub fn index(&self, epoch: usize, step: usize) -> usize {
        match self.every {
            Every::Epoch => epoch,
            Every::Step { steps_per_epoch } => epoch * steps_per_epoch + step,
        }
    }
    /// The learning rate at (epoch, step within the epoch), both 0-based.
    pub fn lr(&self, epoch: usize, step: usize) -> f64 {
        self.schedule.lr_at(self.index(epoch, step))
    }
    /// Set `opt`'s base lr for (epoch, step); call before the step's update. Returns it.
    pub fn apply(&self, opt: &mut dyn Optimizer, epoch: usize, step: usize) -> f64 {
        let lr = self.lr(epoch, step);
        opt.set_lr(lr);
        lr
    }
}

//! Adam and AdamW — PyTorch's `torch.optim.Adam` / `torch.optim.AdamW` (single-tensor path),
//! per parameter, with t its own step count:
//!
//! ```text
//! t += 1
//! Adam:  g ← g + wd·p                 AdamW: p ← p·(1 − lr·wd)
//! m ← m + (1 − β1)·(g − m)            (torch's lerp)
//! v ← β2·v + (1 − β2)·g²
//! AMSGrad: v̂ ← max(v̂, v), else v̂ = v
//! p ← p − (lr / (1 − β1ᵗ)) · m / (√v̂ / √(1 − β2ᵗ) + eps)
//! ```
//!
//! eps is added after the bias-corrected square root, as PyTorch does. With parameter
//! groups, lr (group `lr_scale`·lr), weight decay and betas are taken per segment of each
//! parameter; the step count is per parameter.
//!
//! Parameters on a GPU-path device are updated there by one multi-tensor launch per set of
//! scalars — per group — of cuda/optim.cu (the same f32 operations with the same f32
//! scalars), with their moments on the same device.

use std::collections::HashMap;
use std::ops::Range;

use super::{
    check_betas, check_lr, check_weight_decay, group_of, segments_of, split_name, state_copy,
    to_param_device, OptimState, Optimizer, ParamGroup,
};
use crate::device::alloc::Category;
use crate::nn::{Module, Param, Segment};
use crate::ops::optim::{AdamHyper, AdamUpdates, SegmentTables};
use crate::tensor::Tensor;
use crate::{ensure_valid, Error, Result};

/// Adam / AdamW hyper-parameters (PyTorch's names and defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Base learning rate: positive and below 1000 at construction (a schedule may set 0).
    pub lr: f64,
    /// (β1, β2): decay rates of the first and second moment estimates, each in [0, 1).
    pub betas: (f64, f64),
    /// Added to the bias-corrected √v̂ in the denominator; positive.
    pub eps: f64,
    /// Weight decay in [0, 1): added to the gradient (Adam) or applied to the weights
    /// (AdamW).
    pub weight_decay: f64,
    /// Divide by the running maximum of v (AMSGrad) instead of v.
    pub amsgrad: bool,
    /// AdamW (decoupled weight decay) when true.
    pub decoupled: bool,
}

impl AdamConfig {
    /// `torch.optim.Adam(lr=lr)` defaults: betas (0.9, 0.999), eps 1e-8, no weight decay.
    pub fn adam(lr: f64) -> AdamConfig {
        AdamConfig {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            decoupled: false,
        }
    }
    /// `torch.optim.AdamW(lr=lr)` defaults: as Adam with weight decay 0.01, decoupled.
    pub fn adamw(lr: f64) -> AdamConfig {
        AdamConfig {
            weight_decay: 0.01,
            decoupled: true,
            ..Self::adam(lr)
        }
    }
    /// Check every hyper-parameter's range; an `Error::Invalid` names the first that is out.
    pub fn validate(&self) -> Result<()> {
        check_lr(self.lr)?;
        check_betas(self.betas.0, self.betas.1)?;
        ensure_valid!(
            self.eps.is_finite() && self.eps > 0.0,
            "eps",
            "{} must be positive and finite",
            self.eps
        );
        check_weight_decay(self.weight_decay)
    }
}

#[derive(Debug)]
struct State {
    step: u64,
    m: Tensor,
    v: Tensor,
    vmax: Option<Tensor>,
}

/// The Adam / AdamW optimizer (see the module doc for the update), with optional parameter
/// groups.
#[derive(Debug)]
pub struct Adam {
    cfg: AdamConfig,
    groups: Vec<ParamGroup>,
    state: HashMap<String, State>,
    /// The CUDA backend's segment tables of the multi-tensor update (not state).
    tables: SegmentTables,
}

impl Adam {
    /// An optimizer with no state yet and no groups; an `Error::Invalid` when `cfg` is out
    /// of range.
    pub fn new(cfg: AdamConfig) -> Result<Adam> {
        cfg.validate()?;
        Ok(Adam {
            cfg,
            groups: Vec::new(),
            state: HashMap::new(),
            tables: SegmentTables::default(),
        })
    }

    /// Use `groups` (lr multiplier, weight decay and betas per `ParamKind`).
    pub fn with_groups(mut self, groups: Vec<ParamGroup>) -> Result<Adam> {
        for g in &groups {
            g.validate()?;
        }
        self.groups = groups;
        Ok(self)
    }

    /// The hyper-parameters (`lr` is the current base learning rate).
    pub fn config(&self) -> &AdamConfig {
        &self.cfg
    }
    /// The parameter groups in use (empty: every slice takes the base settings).
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }
    fn kind(&self) -> &'static str {
        if self.cfg.decoupled {
            "adamw"
        } else {
            "adam"
        }
    }

    /// The state of `name` on `g`'s device (created on the first step), with its step count
    /// advanced, and the per-segment scalars of this step.
    fn advance(
        &mut self,
        name: &str,
        g: &Tensor,
        segs: &[Segment],
    ) -> Result<(&mut State, Vec<AdamHyper>)> {
        let n = g.numel();
        let dev = g.device();
        let zeros = || Tensor::full_in(0.0, g.shape(), g.dtype(), dev, Category::OptimizerState);
        if !self.state.contains_key(name) {
            let st = State {
                step: 0,
                m: zeros()?,
                v: zeros()?,
                vmax: if self.cfg.amsgrad {
                    Some(zeros()?)
                } else {
                    None
                },
            };
            self.state.insert(name.to_string(), st);
        }
        let cfg = self.cfg;
        let groups = &self.groups;
        let st = self
            .state
            .get_mut(name)
            .ok_or_else(|| Error::state("adam: missing state"))?;
        if st.m.numel() != n || st.v.numel() != n {
            return Err(Error::state(format!(
                "adam: state of `{name}` has {} elements, the parameter {n}",
                st.m.numel()
            )));
        }
        if cfg.amsgrad && st.vmax.is_none() {
            st.vmax = Some(zeros()?);
        }
        to_param_device(&mut st.m, dev)?;
        to_param_device(&mut st.v, dev)?;
        if let Some(vm) = st.vmax.as_mut() {
            to_param_device(vm, dev)?;
        }
        st.step += 1;
        let t = st.step as i32;
        let hyper: Vec<AdamHyper> = segs
            .iter()
            .map(|s| {
                let grp = group_of(groups, s.kind);
                let (b1, b2) = grp.and_then(|g| g.betas).unwrap_or(cfg.betas);
                let lr = cfg.lr * grp.map_or(1.0, |g| g.lr_scale);
                let wd = grp.and_then(|g| g.weight_decay).unwrap_or(cfg.weight_decay);
                AdamHyper {
                    lr,
                    beta1: b1,
                    beta2: b2,
                    bc1: 1.0 - b1.powi(t),
                    bc2_sqrt: (1.0 - b2.powi(t)).sqrt(),
                    eps: cfg.eps,
                    weight_decay: wd,
                    decay: 1.0 - lr * wd,
                    decoupled: cfg.decoupled,
                }
            })
            .collect();
        Ok((st, hyper))
    }

    /// Adds the update of parameter `name` to this step's `updates` (per segment, its
    /// group's scalars) on the parameter, its gradient and moments.
    fn update(&mut self, updates: &mut AdamUpdates, name: &str, p: &mut Param) -> Result<()> {
        let Some(g) = p.grad.take() else {
            return Ok(());
        };
        let segs = segments_of(&p.segments, g.numel());
        let (st, hyper) = self.advance(name, &g, &segs)?;
        let segs: Vec<(Range<usize>, AdamHyper)> = segs
            .iter()
            .zip(hyper)
            .map(|(s, h)| (s.range.clone(), h))
            .collect();
        updates.add(
            &mut p.value,
            g,
            &mut st.m,
            &mut st.v,
            st.vmax.as_mut(),
            &segs,
        )
    }
}

impl Optimizer for Adam {
    fn step(&mut self, net: &mut dyn Module) -> Result<()> {
        let mut updates = AdamUpdates::new();
        super::try_for_each_param(net, |name, p| self.update(&mut updates, name, p))?;
        updates.finish(&mut self.tables)
    }
    fn lr(&self) -> f64 {
        self.cfg.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }
    fn state(&self) -> Result<OptimState> {
        let mut names: Vec<&String> = self.state.keys().collect();
        names.sort();
        let mut tensors = Vec::new();
        let mut scalars = vec![("lr".to_string(), self.cfg.lr)];
        for n in names {
            let st = &self.state[n];
            scalars.push((format!("{n}.step"), st.step as f64));
            tensors.push((format!("{n}.exp_avg"), state_copy(&st.m)?));
            tensors.push((format!("{n}.exp_avg_sq"), state_copy(&st.v)?));
            if let Some(vm) = &st.vmax {
                tensors.push((format!("{n}.max_exp_avg_sq"), state_copy(vm)?));
            }
        }
        Ok(OptimState {
            kind: self.kind().into(),
            tensors,
            scalars,
        })
    }
    fn load_state(&mut self, state: &OptimState) -> Result<()> {
        ensure_valid!(
            state.kind == self.kind(),
            "optimizer state",
            "it is `{}` state, this optimizer is {}",
            state.kind,
            self.kind()
        );
        let mut parts: HashMap<String, [Option<Tensor>; 3]> = HashMap::new();
        for (name, t) in &state.tensors {
            let (param, field) = split_name(name)?;
            let k = match field {
                "exp_avg" => 0,
                "exp_avg_sq" => 1,
                "max_exp_avg_sq" => 2,
                _ => {
                    return Err(Error::invalid(
                        "optimizer state",
                        format!("unknown Adam entry `{name}`"),
                    ))
                }
            };
            parts.entry(param.to_string()).or_default()[k] = Some(state_copy(t)?);
        }
        let mut new = HashMap::new();
        for (param, [m, v, vmax]) in parts {
            let missing =
                |f: &str| Error::invalid("optimizer state", format!("missing entry `{param}.{f}`"));
            let step = state
                .scalar(&format!("{param}.step"))
                .ok_or_else(|| missing("step"))?;
            ensure_valid!(
                step.is_finite() && step >= 0.0 && step.fract() == 0.0,
                "optimizer state",
                "`{param}.step` = {step} is not a step count"
            );
            let m = m.ok_or_else(|| missing("exp_avg"))?;
            let v = v.ok_or_else(|| missing("exp_avg_sq"))?;
            for t in [Some(&v), vmax.as_ref()].into_iter().flatten() {
                ensure_valid!(
                    t.shape() == m.shape() && t.dtype() == m.dtype(),
                    "optimizer state",
                    "entries of `{param}` disagree in shape or dtype"
                );
            }
            new.insert(
                param,
                State {
                    step: step as u64,
                    m,
                    v,
                    vmax,
                },
            );
        }
        if let Some(lr) = state.scalar("lr") {
            self.cfg.lr = lr;
        }
        self.state = new;
        Ok(())
    }
}

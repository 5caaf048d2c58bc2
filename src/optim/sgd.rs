//! SGD with momentum, dampening, Nesterov momentum and (coupled) weight decay — PyTorch's
//! `torch.optim.SGD` update, step for step:
//! d = g + wd·p; buf = d on the first step, else μ·buf + (1 − dampening)·d;
//! d = d + μ·buf (Nesterov) or buf; p ← p − lr·d.
//!
//! With parameter groups, `lr` and `wd` are taken per segment of each parameter (the
//! group's `lr_scale`·lr and weight decay); momentum, dampening and Nesterov are global.
//!
//! Parameters on a GPU-path device are updated there by one multi-tensor launch per
//! (lr, weight decay) set — per group — of cuda/optim.cu (the same f32 operations), with
//! their momentum buffers on the same device.

use std::collections::HashMap;
use std::ops::Range;

use super::{
    check_lr, check_weight_decay, group_of, segments_of, split_name, state_copy, to_param_device,
    OptimState, Optimizer, ParamGroup,
};
use crate::device::alloc::Category;
use crate::nn::{Module, Param, Segment};
use crate::ops::optim::{SegmentTables, SgdHyper, SgdUpdates};
use crate::tensor::Tensor;
use crate::{ensure_valid, Error, Result};

/// SGD with momentum, dampening, Nesterov and weight decay (see the module doc for the
/// update), with optional parameter groups.
#[derive(Debug)]
pub struct Sgd {
    lr: f64,
    /// Momentum factor μ in [0, 1) (0: plain SGD).
    pub momentum: f64,
    /// Dampening of the momentum's new gradient term (0 after `new`, as PyTorch's default).
    pub dampening: f64,
    /// Weight decay in [0, 1), added to the gradient as wd·p.
    pub weight_decay: f64,
    /// Nesterov momentum (needs momentum > 0).
    pub nesterov: bool,
    groups: Vec<ParamGroup>,
    /// Momentum buffer per parameter name.
    buffers: HashMap<String, Tensor>,
    /// The CUDA backend's segment tables of the multi-tensor update (not state: rebuilt
    /// from the parameters when they change).
    tables: SegmentTables,
}

impl Sgd {
    /// An optimizer with no momentum buffers yet, dampening 0 and no groups; an
    /// `Error::Invalid` when lr, momentum or weight decay is out of range or `nesterov` is
    /// set without momentum.
    pub fn new(lr: f64, momentum: f64, weight_decay: f64, nesterov: bool) -> Result<Sgd> {
        check_lr(lr)?;
        ensure_valid!(
            momentum.is_finite() && (0.0..1.0).contains(&momentum),
            "momentum",
            "{momentum} must be in [0, 1)"
        );
        check_weight_decay(weight_decay)?;
        ensure_valid!(
            !nesterov || momentum > 0.0,
            "nesterov",
            "Nesterov momentum needs momentum > 0"
        );
        Ok(Sgd {
            lr,
            momentum,
            dampening: 0.0,
            weight_decay,
            nesterov,
            groups: Vec::new(),
            buffers: HashMap::new(),
            tables: SegmentTables::default(),
        })
    }

    /// Use `groups` (lr multiplier and weight decay per `ParamKind`; betas are rejected).
    pub fn with_groups(mut self, groups: Vec<ParamGroup>) -> Result<Sgd> {
        for g in &groups {
            g.validate()?;
            ensure_valid!(
                g.betas.is_none(),
                format!("parameter group `{}`", g.name),
                "betas apply to Adam, not SGD"
            );
        }
        self.groups = groups;
        Ok(self)
    }

    /// The parameter groups in use (empty: every slice takes the base settings).
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// (lr, weight decay) of each segment.
    fn segment_hyper(&self, segs: &[Segment]) -> Vec<(f64, f64)> {
        segs.iter()
            .map(|s| {
                let grp = group_of(&self.groups, s.kind);
                let lr = self.lr * grp.map_or(1.0, |g| g.lr_scale);
                let wd = grp
                    .and_then(|g| g.weight_decay)
                    .unwrap_or(self.weight_decay);
                (lr, wd)
            })
            .collect()
    }

    /// The momentum buffer of `name` on `g`'s device, created (zeros) on the first step;
    /// returns it and whether this is its first step.
    fn buffer(&mut self, name: &str, g: &Tensor) -> Result<(&mut Tensor, bool)> {
        let first = !self.buffers.contains_key(name);
        if first {
            let b = Tensor::full_in(
                0.0,
                g.shape(),
                g.dtype(),
                g.device(),
                Category::OptimizerState,
            )?;
            self.buffers.insert(name.to_string(), b);
        }
        let buf = self
            .buffers
            .get_mut(name)
            .ok_or_else(|| Error::state("sgd: missing buffer"))?;
        to_param_device(buf, g.device())?;
        if buf.numel() != g.numel() {
            return Err(Error::state(format!(
                "sgd: momentum buffer of `{name}` has {} elements, the parameter {}",
                buf.numel(),
                g.numel()
            )));
        }
        Ok((buf, first))
    }

    /// Adds the update of parameter `name` to this step's `updates` (per segment, its
    /// group's lr and weight decay).
    fn update(&mut self, updates: &mut SgdUpdates, name: &str, p: &mut Param) -> Result<()> {
        let Some(g) = p.grad.take() else {
            return Ok(());
        };
        let segs = segments_of(&p.segments, g.numel());
        let hyper = self.segment_hyper(&segs);
        let (momentum, dampening, nesterov) = (self.momentum, self.dampening, self.nesterov);
        let buf = if momentum == 0.0 {
            None
        } else {
            Some(self.buffer(name, &g)?)
        };
        let first = buf.as_ref().is_some_and(|b| b.1);
        let segs: Vec<(Range<usize>, SgdHyper)> = segs
            .iter()
            .zip(&hyper)
            .map(|(s, &(lr, weight_decay))| {
                let h = SgdHyper {
                    lr,
                    weight_decay,
                    momentum,
                    dampening,
                    nesterov,
                };
                (s.range.clone(), h)
            })
            .collect();
        let b = buf.map(|b| b.0);
        updates.add(&mut p.value, g, b, &segs, first)
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, net: &mut dyn Module) -> Result<()> {
        let mut updates = SgdUpdates::new();
        super::try_for_each_param(net, |name, p| self.update(&mut updates, name, p))?;
        updates.finish(&mut self.tables)
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn state(&self) -> Result<OptimState> {
        let mut names: Vec<&String> = self.buffers.keys().collect();
        names.sort();
        let tensors = names
            .into_iter()
            .map(|n| {
                Ok((
                    format!("{n}.momentum_buffer"),
                    state_copy(&self.buffers[n])?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(OptimState {
            kind: "sgd".into(),
            tensors,
            scalars: vec![("lr".into(), self.lr)],
        })
    }
    fn load_state(&mut self, state: &OptimState) -> Result<()> {
        ensure_valid!(
            state.kind == "sgd",
            "optimizer state",
            "it is `{}` state, this optimizer is SGD",
            state.kind
        );
        let mut buffers = HashMap::new();
        for (name, t) in &state.tensors {
            let (param, field) = split_name(name)?;
            ensure_valid!(
                field == "momentum_buffer",
                "optimizer state",
                "unknown SGD entry `{name}`"
            );
            buffers.insert(param.to_string(), state_copy(t)?);
        }
        if let Some(lr) = state.scalar("lr") {
            self.lr = lr;
        }
        self.buffers = buffers;
        Ok(())
    }
}

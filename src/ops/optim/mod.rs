//! Optimizer updates: SGD (momentum, dampening, Nesterov, weight decay), Adam / AdamW /
//! AMSGrad, and the reductions of gradient-norm clipping. The optimizers in `optim/` hold
//! the state and the per-group hyper-parameters; the arithmetic of a step's updates is
//! here ([`SgdUpdates`], [`AdamUpdates`]: added parameter by parameter, finished once).
//!
//! This file is the family's tensor-level API and its one `match` on the device: `cpu.rs`
//! holds the CPU engine's math (generic over f32/f64), `cuda.rs` the launch wrappers of
//! `cuda/optim.cu` (multi-tensor kernels: every segment sharing one set of scalars — a
//! parameter group — in one launch; run on `Device::Cuda(n)` and `Device::Emu`), which take
//! the same scalars rounded to f32.

pub mod cpu;
pub mod cuda;

use std::ops::Range;

use crate::tensor::{Float, Tensor};
use crate::{with_dtype, Device, Result};

/// SGD's scalars for one segment (PyTorch's `torch.optim.SGD`):
/// d = g + wd·p; buf = d on the first step, else μ·buf + (1 − dampening)·d;
/// d = d + μ·buf (Nesterov) or buf; p ← p − lr·d.
#[derive(Clone, Copy, Debug)]
pub struct SgdHyper {
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
}

/// Adam's scalars for one segment at step t (PyTorch's single-tensor path): bc1 = 1 − β1ᵗ,
/// bc2_sqrt = √(1 − β2ᵗ), decay = 1 − lr·wd (AdamW).
#[derive(Clone, Copy, Debug)]
pub struct AdamHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub bc1: f64,
    pub bc2_sqrt: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub decay: f64,
    pub decoupled: bool,
}

/// Error unless the segment `r` lies inside every slice of the update (`lens`: the
/// parameter's, its gradient's and its state's element counts).
fn check_segment(op: &str, r: &Range<usize>, lens: &[usize]) -> Result<()> {
    crate::ensure_shape!(
        r.start <= r.end && lens.iter().all(|&n| r.end <= n),
        op,
        "segment {r:?} is outside the parameter or its gradient or state ({lens:?} elements)"
    );
    Ok(())
}

/// One optimizer step's SGD updates, added parameter by parameter: on the CPU engine each
/// parameter is updated when it is added; on the CUDA backend the segments are gathered
/// and [`SgdUpdates::finish`] updates all of them with one multi-tensor launch per distinct
/// (lr, weight decay) — per parameter group — from tables kept in `SegmentTables`.
#[derive(Default)]
pub struct SgdUpdates {
    gpu: Option<cuda::SgdGather>,
}

pub use cuda::SegmentTables;

impl SgdUpdates {
    pub fn new() -> SgdUpdates {
        SgdUpdates { gpu: None }
    }

    /// The update of parameter p (in place) from its gradient g, segment by segment
    /// (`segs`: each segment's elements and scalars), with the momentum buffer `buf` (p's
    /// element count, device and dtype) when momentum ≠ 0; `first`: the buffer's first step
    /// (buf = d). The scalars' momentum, dampening and Nesterov flag must be the same in
    /// every segment.
    pub fn add(
        &mut self,
        p: &mut Tensor,
        g: Tensor,
        buf: Option<&mut Tensor>,
        segs: &[(Range<usize>, SgdHyper)],
        first: bool,
    ) -> Result<()> {
        match p.device() {
            Device::Cpu => with_dtype!(p.dtype(), T => {
                let mut buf = match buf {
                    Some(b) => Some(b.data_mut::<T>()?),
                    None => None,
                };
                let (pv, gv) = (p.data_mut::<T>()?, g.as_slice::<T>()?);
                let lens = [pv.len(), gv.len(), buf.as_ref().map_or(pv.len(), |b| b.len())];
                for (r, h) in segs {
                    check_segment("sgd", r, &lens)?;
                    cpu::sgd(pv, gv, buf.as_deref_mut(), r.clone(), h, first);
                }
                Ok(())
            }),
            Device::Cuda(_) | Device::Emu => {
                let segs: Vec<(Range<usize>, cuda::SgdScalars)> = segs
                    .iter()
                    .map(|(r, h)| {
                        let sc = cuda::SgdScalars {
                            lr: h.lr as f32,
                            weight_decay: h.weight_decay as f32,
                            momentum: h.momentum as f32,
                            one_minus_dampening: 1.0f32 - h.dampening as f32,
                            nesterov: h.nesterov,
                            first,
                        };
                        (r.clone(), sc)
                    })
                    .collect();
                self.gpu
                    .get_or_insert_with(cuda::SgdGather::new)
                    .add(p, g, buf, &segs)
            }
        }
    }

    /// Queues the gathered CUDA-backend updates (nothing on the CPU engine, whose updates
    /// are done).
    pub fn finish(self, tables: &mut SegmentTables) -> Result<()> {
        match self.gpu {
            Some(g) => g.finish(tables),
            None => Ok(()),
        }
    }
}

/// One optimizer step's Adam updates, added parameter by parameter, as [`SgdUpdates`]: on
/// the CUDA backend one multi-tensor launch per distinct set of scalars (per group).
#[derive(Default)]
pub struct AdamUpdates {
    gpu: Option<cuda::AdamGather>,
}

impl AdamUpdates {
    pub fn new() -> AdamUpdates {
        AdamUpdates { gpu: None }
    }

    /// The update of parameter p (in place) from its gradient g and the moments m, v (and
    /// vmax for AMSGrad), all of p's element count, device and dtype, segment by segment.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        p: &mut Tensor,
        g: Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        vmax: Option<&mut Tensor>,
        segs: &[(Range<usize>, AdamHyper)],
    ) -> Result<()> {
        match p.device() {
            Device::Cpu => with_dtype!(p.dtype(), T => {
                let mut vmax = match vmax {
                    Some(t) => Some(t.data_mut::<T>()?),
                    None => None,
                };
                let (pv, gv) = (p.data_mut::<T>()?, g.as_slice::<T>()?);
                let (mv, vv) = (m.data_mut::<T>()?, v.data_mut::<T>()?);
                let vm_len = vmax.as_ref().map_or(pv.len(), |t| t.len());
                let lens = [pv.len(), gv.len(), mv.len(), vv.len(), vm_len];
                for (r, h) in segs {
                    check_segment("adam", r, &lens)?;
                    cpu::adam(pv, gv, mv, vv, vmax.as_deref_mut(), r.clone(), h);
                }
                Ok(())
            }),
            Device::Cuda(_) | Device::Emu => {
                let amsgrad = vmax.is_some();
                let segs: Vec<(Range<usize>, cuda::AdamScalars)> = segs
                    .iter()
                    .map(|(r, h)| {
                        let sc = cuda::AdamScalars {
                            step_size: (h.lr / h.bc1) as f32,
                            beta1: h.beta1 as f32,
                            beta2: h.beta2 as f32,
                            bc2_sqrt: h.bc2_sqrt as f32,
                            eps: h.eps as f32,
                            weight_decay: h.weight_decay as f32,
                            decay: h.decay as f32,
                            decoupled: h.decoupled,
                            amsgrad,
                        };
                        (r.clone(), sc)
                    })
                    .collect();
                self.gpu
                    .get_or_insert_with(cuda::AdamGather::new)
                    .add(p, g, m, v, vmax, &segs)
            }
        }
    }

    /// Queues the gathered CUDA-backend updates (nothing on the CPU engine).
    pub fn finish(self, tables: &mut SegmentTables) -> Result<()> {
        match self.gpu {
            Some(g) => g.finish(tables),
            None => Ok(()),
        }
    }
}

/// Σ over the tensors of Σ x², accumulated in f64 in tensor order; the tensors all on one
/// device (the CUDA backend reduces there and returns only the sum).
pub fn sum_squares(ts: &[&Tensor]) -> Result<f64> {
    let Some(first) = ts.first() else {
        return Ok(0.0);
    };
    match first.device() {
        Device::Cpu => {
            let mut sq = 0.0f64;
            for t in ts {
                sq += t.to_f64_vec().iter().map(|v| v * v).sum::<f64>();
            }
            Ok(sq)
        }
        Device::Cuda(_) | Device::Emu => cuda::sum_squares(ts),
    }
}

/// x ← alpha·x in place (x's storage must not be shared); alpha rounded to x's dtype.
pub fn scale_in_place(x: &mut Tensor, alpha: f64) -> Result<()> {
    fn scale<T: Float>(x: &mut Tensor, alpha: f64) -> Result<()> {
        let c = T::of(alpha);
        for v in x.data_mut::<T>()? {
            *v *= c;
        }
        Ok(())
    }
    match x.device() {
        Device::Cpu => with_dtype!(x.dtype(), T => scale::<T>(x, alpha)),
        Device::Cuda(_) | Device::Emu => cuda::scale_in_place(x, alpha as f32),
    }
}

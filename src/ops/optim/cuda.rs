//! Optimizer updates on the CUDA backend (cuda/optim.cu): fused SGD and Adam(W) steps, in
//! place on a slice of a parameter and of its state tensors, and the f64 sum of squares
//! that gradient clipping needs. `src/optim` computes the per-segment scalars exactly as
//! its CPU path does and calls these once per segment of each parameter.

use std::ops::Range;

use crate::device::alloc::Category;
use crate::device::Device;
use crate::device::{GpuBuf, KArg};
use crate::ops::launch::{check_all, gpu_f32, kernel, launch, LaunchConfig, REDUCE_BLOCK};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// SGD scalars of one segment (f32, as the CPU engine's f32 path rounds them).
#[derive(Clone, Copy, Debug)]
pub struct SgdScalars {
    pub lr: f32,
    pub weight_decay: f32,
    /// μ; 0: plain SGD (no momentum buffer).
    pub momentum: f32,
    /// 1 − dampening.
    pub one_minus_dampening: f32,
    pub nesterov: bool,
}

/// Adam(W) scalars of one segment at one step t (f32).
#[derive(Clone, Copy, Debug)]
pub struct AdamScalars {
    /// lr / (1 − β1ᵗ).
    pub step_size: f32,
    pub beta1: f32,
    pub beta2: f32,
    /// √(1 − β2ᵗ).
    pub bc2_sqrt: f32,
    pub eps: f32,
    /// Coupled (Adam) weight decay; unused when `decoupled`.
    pub weight_decay: f32,
    /// AdamW's 1 − lr·wd.
    pub decay: f32,
    pub decoupled: bool,
}

/// Error unless every tensor has `n` elements and `range` lies inside `[0, n)`.
fn check_slices(op: &str, n: usize, range: &Range<usize>, ts: &[(&str, &Tensor)]) -> Result<()> {
    for (what, t) in ts {
        crate::ensure_shape!(
            t.numel() == n,
            op,
            "{what} has shape {:?} ({} elements), the parameter {n}",
            t.shape(),
            t.numel()
        );
    }
    crate::ensure_shape!(
        range.start <= range.end && range.end <= n,
        op,
        "segment {range:?} is outside the parameter's {n} elements"
    );
    Ok(())
}

/// The device address of element `i` of a GPU tensor.
fn at(p: u64, i: usize) -> KArg {
    KArg::Ptr(p + (i * 4) as u64)
}

/// One SGD step on elements `range` of `p` from the gradient `g`; `buf` is the momentum
/// buffer (required when `s.momentum > 0`; `first`: the step that initialises it).
/// `p` and `buf` are updated in place (their storage must not be shared).
pub fn sgd_step(
    p: &mut Tensor,
    g: &Tensor,
    buf: Option<&mut Tensor>,
    range: Range<usize>,
    s: SgdScalars,
    first: bool,
) -> Result<()> {
    let kern = if s.momentum == 0.0 {
        &kernel::SGD_F32
    } else {
        &kernel::SGD_MOMENTUM_F32
    };
    let op = kern.name;
    let rt = gpu_f32(op, "parameter", p)?;
    let dev = p.device();
    let n = p.numel();
    check_all(op, dev, &[("gradient", g)])?;
    check_slices(op, n, &range, &[("gradient", g)])?;
    let len = range.len();
    if s.momentum == 0.0 {
        if len == 0 {
            return Ok(());
        }
        let args = [
            at(p.dev_ptr_mut()?, range.start),
            at(g.dev_ptr()?, range.start),
            KArg::I64(len as i64),
            KArg::F32(s.lr),
            KArg::F32(s.weight_decay),
        ];
        // SAFETY: (float* p, const float* g, long long n, float lr, float wd); p and g hold
        // numel(p) f32 elements (checked) and [start, start + n) lies inside them; p's storage
        // is unshared (dev_ptr_mut), so it does not alias g.
        return unsafe { launch(rt, kern, LaunchConfig::elementwise(len), &args) };
    }
    let buf = buf.ok_or_else(|| Error::state("sgd_step: momentum without a momentum buffer"))?;
    check_all(op, dev, &[("momentum buffer", buf)])?;
    check_slices(op, n, &range, &[("momentum buffer", buf)])?;
    if len == 0 {
        return Ok(());
    }
    let args = [
        at(p.dev_ptr_mut()?, range.start),
        at(g.dev_ptr()?, range.start),
        at(buf.dev_ptr_mut()?, range.start),
        KArg::I64(len as i64),
        KArg::F32(s.lr),
        KArg::F32(s.weight_decay),
        KArg::F32(s.momentum),
        KArg::F32(s.one_minus_dampening),
        KArg::I32(first as i32),
        KArg::I32(s.nesterov as i32),
    ];
    // SAFETY: (float* p, const float* g, float* buf, long long n, float lr, float wd,
    // float mu, float one_minus_damp, int first, int nesterov); p, g and buf hold numel(p)
    // f32 elements each (checked) and the segment lies inside them; p and buf are unshared
    // storages (dev_ptr_mut; distinct tensors), so none of the three alias.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(len), &args) }
}

/// One Adam(W) step on elements `range` of `p` from `g`, updating the moments `m`, `v` (and
/// `vmax`, AMSGrad) in place.
pub fn adam_step(
    p: &mut Tensor,
    g: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    vmax: Option<&mut Tensor>,
    range: Range<usize>,
    s: AdamScalars,
) -> Result<()> {
    let kern = &kernel::ADAM_F32;

    let op = kern.name;
    let rt = gpu_f32(op, "parameter", p)?;
    let dev = p.device();
    let n = p.numel();
    check_all(
        op,
        dev,
        &[("gradient", g), ("exp_avg", m), ("exp_avg_sq", v)],
    )?;
    check_slices(
        op,
        n,
        &range,
        &[("gradient", g), ("exp_avg", m), ("exp_avg_sq", v)],
    )?;
    if let Some(vm) = vmax.as_deref() {
        check_all(op, dev, &[("max_exp_avg_sq", vm)])?;
        check_slices(op, n, &range, &[("max_exp_avg_sq", vm)])?;
    }
    let len = range.len();
    if len == 0 {
        return Ok(());
    }
    let (vmax_arg, amsgrad) = match vmax {
        Some(vm) => (at(vm.dev_ptr_mut()?, range.start), 1),
        None => (KArg::Ptr(0), 0),
    };
    let args = [
        at(p.dev_ptr_mut()?, range.start),
        at(g.dev_ptr()?, range.start),
        at(m.dev_ptr_mut()?, range.start),
        at(v.dev_ptr_mut()?, range.start),
        vmax_arg,
        KArg::I64(len as i64),
        KArg::F32(s.step_size),
        KArg::F32(s.beta1),
        KArg::F32(s.beta2),
        KArg::F32(s.bc2_sqrt),
        KArg::F32(s.eps),
        KArg::F32(s.weight_decay),
        KArg::F32(s.decay),
        KArg::I32(s.decoupled as i32),
        KArg::I32(amsgrad),
    ];
    // SAFETY: (float* p, const float* g, float* m, float* v, float* vmax, long long n,
    // float step_size, b1, b2, bc2_sqrt, eps, wd, decay, int decoupled, int amsgrad) as in
    // optim.cu; p, g, m, v (and vmax when amsgrad = 1) hold numel(p) f32 elements each
    // (checked) and the segment lies inside them; the written tensors are unshared storages
    // (dev_ptr_mut) and distinct, so nothing aliases; vmax is null only with amsgrad = 0, when
    // the kernel does not touch it.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(len), &args) }
}

/// Most blocks one tensor's sum of squares uses.
const SUMSQ_BLOCKS: usize = 64;

/// Σ over `ts` of Σ x² (f64), for tensors on one GPU-path device: one launch per tensor
/// writes per-block partials into a shared buffer, which is read back once and added in a
/// fixed order (the result does not depend on timing).
pub fn sum_squares(ts: &[&Tensor]) -> Result<f64> {
    let kern = &kernel::SUMSQ_PARTIAL_F32;

    let op = kern.name;
    let Some(first) = ts.first() else {
        return Ok(0.0);
    };
    let rt = gpu_f32(op, "tensor", first)?;
    let dev: Device = first.device();
    let grids: Vec<usize> = ts
        .iter()
        .map(|t| {
            t.numel()
                .div_ceil(REDUCE_BLOCK as usize)
                .clamp(1, SUMSQ_BLOCKS)
        })
        .collect();
    let total: usize = grids.iter().sum();
    let partials = GpuBuf::new(dev, total * 8, Category::Workspace)?;
    let mut slot = 0;
    for (t, &grid) in ts.iter().zip(&grids) {
        check_all(op, dev, &[("tensor", t)])?;
        let args = [
            KArg::Ptr(t.dev_ptr()?),
            KArg::I64(t.numel() as i64),
            KArg::Ptr(partials.ptr() + (slot * 8) as u64),
        ];
        let cfg = LaunchConfig::new(grid as u32, REDUCE_BLOCK, 0);
        // SAFETY: (const float* x, long long n, double* partial); x holds n f32 elements
        // (n = numel, dtype checked); the kernel writes partial[0, grid), which is the slice
        // [slot, slot + grid) of `partials` (total = Σ grids doubles); block = REDUCE_BLOCK,
        // a multiple of 32 as block_sum requires.
        unsafe { launch(rt, kern, cfg, &args)? };
        slot += grid;
    }
    let mut bytes = vec![0u8; total * 8];
    partials.read(&mut bytes)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")))
        .sum())
}

/// x ← alpha · x, in place (x's storage must not be shared).
pub fn scale_in_place(x: &mut Tensor, alpha: f32) -> Result<()> {
    let kern = &kernel::SCALE_F32;

    let op = kern.name;
    let rt = gpu_f32(op, "x", x)?;
    let n = x.numel();
    if n == 0 {
        return Ok(());
    }
    let p = x.dev_ptr_mut()?;
    let args = [
        KArg::F32(alpha),
        KArg::Ptr(p),
        KArg::Ptr(p),
        KArg::I64(n as i64),
    ];
    // SAFETY: (float alpha, const float* x, float* y, long long n) of elementwise.cu, which
    // allows y to alias x (no __restrict__); x holds n f32 elements and is unshared.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(n), &args) }
}

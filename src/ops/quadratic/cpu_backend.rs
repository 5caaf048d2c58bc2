//! The CPU engine as the family's backend (`Device::Cpu`, f32 and f64): tensors in, the
//! fused steps of `cpu.rs` and `cpu_bn.rs` on their host slices, tensors and host gradients
//! out.

use std::ops::Range;

use super::cpu::{backward, forward, Grads, Weights};
use super::{
    cpu_bn, Backend, BnTrain, Call, Grad, Lift, Plain, QuadParams, Saved, Slot, BN_EPS, BN_MOMENTUM,
};
use crate::device::alloc::Category;
use crate::tensor::{Float, Tensor};
use crate::{with_dtype, Result};

/// The weights of a layer as host slices of `T` (see `QuadParams`).
fn weights<T: Float>(p: &QuadParams) -> Result<Weights<'_, T>> {
    fn sl<T: Float>(t: Option<&Tensor>) -> Result<Option<&[T]>> {
        t.map(|t| t.as_slice::<T>()).transpose()
    }
    Ok(Weights {
        w1: sl(p.value(Slot::W1))?.unwrap_or(&[]),
        b1: sl(p.value(Slot::B1))?,
        w2: sl(p.value(Slot::W2))?.unwrap_or(&[]),
        b2: sl(p.value(Slot::B2))?,
        gamma: sl(p.value(Slot::Gamma))?.unwrap_or(&[]),
        beta: sl(p.value(Slot::Beta))?.unwrap_or(&[]),
    })
}

// `cpu_bn`) on their host slices.

/// The CPU engine (`Device::Cpu`, f32 and f64).
pub(super) struct Cpu;

/// The element types of the CPU engine, with their host gradient.
pub(super) trait HostFloat: Float {
    fn grad(v: Vec<Self>) -> Grad;
}

impl HostFloat for f32 {
    fn grad(v: Vec<f32>) -> Grad {
        Grad::F32(v)
    }
}

impl HostFloat for f64 {
    fn grad(v: Vec<f64>) -> Grad {
        Grad::F64(v)
    }
}

/// The gradients of one backward by slot (empty vectors go to slots the layer lacks).
fn by_slot<T: HostFloat>(gr: Grads<T>) -> super::Grads {
    vec![
        (Slot::W1, T::grad(gr.w1)),
        (Slot::B1, T::grad(gr.b1)),
        (Slot::W2, T::grad(gr.w2)),
        (Slot::B2, T::grad(gr.b2)),
        (Slot::Gamma, T::grad(gr.gamma)),
        (Slot::Beta, T::grad(gr.beta)),
    ]
}

fn zeros(shape: &[usize], dtype: crate::DType) -> Result<Tensor> {
    crate::ops::zeros_par(shape, dtype, Category::Workspace)
}

fn forward_t<T: HostFloat>(call: &Call, p: &QuadParams, x: &Tensor, keep: bool) -> Result<Plain> {
    let (op, n) = (&call.op, call.n);
    let dtype = x.dtype();
    let (c, l) = (op.c(), op.l());
    let mut y = zeros(&op.out_shape(n), dtype)?;
    let xs = x.as_slice::<T>()?;
    let r = op.neuron.planes_read();
    let mut planes = if keep && r > 0 {
        Some(zeros(&[n, r * c, l], dtype)?)
    } else {
        None
    };
    let mut lifted = match op.neuron.lift() {
        _ if !keep => None,
        Lift::None => None,
        Lift::Square => Some(zeros(x.shape(), dtype)?),
        Lift::Outer => Some(zeros(&[n, op.k() * op.k(), l], dtype)?),
    };
    let wt = weights::<T>(p)?;
    let mut e1: [T; 0] = [];
    let mut e2: [T; 0] = [];
    let kp = match planes.as_mut() {
        Some(t) => t.data_mut::<T>()?,
        None => &mut e1[..],
    };
    let kl = match lifted.as_mut() {
        Some(t) => t.data_mut::<T>()?,
        None => &mut e2[..],
    };
    forward(op, n, xs, &wt, y.data_mut::<T>()?, keep, kp, kl);
    Ok(Plain { y, planes, lifted })
}

fn bn_forward_t<T: HostFloat>(
    call: &Call,
    p: &mut QuadParams,
    x: &Tensor,
    keep: bool,
) -> Result<BnTrain> {
    let (op, n) = (&call.op, call.n);
    let dtype = x.dtype();
    let (c, l, m) = (op.c(), op.l(), 3 * op.c());
    let mut y = zeros(&op.out_shape(n), dtype)?;
    let mut z = zeros(&[n, m, l], dtype)?;
    let mut ab = if keep {
        Some(zeros(&[n, 2 * c, l], dtype)?)
    } else {
        None
    };
    let (mean, var, rstd) = {
        let wt = weights::<T>(p)?;
        let abs = match ab.as_mut() {
            Some(t) => Some(t.data_mut::<T>()?),
            None => None,
        };
        let (xs, zs, ys) = (x.as_slice::<T>()?, z.data_mut::<T>()?, y.data_mut::<T>()?);
        cpu_bn::bn_forward(op, n, xs, &wt, BN_EPS, zs, ys, abs)
    };
    let (rm, rv) = p.running()?;
    let (mut rm, mut rv) = (rm.to_vec::<T>()?, rv.to_vec::<T>()?);
    crate::ops::norm::cpu::update_running(&mut rm, &mut rv, &mean, &var, n * l, BN_MOMENTUM);
    let dev = x.device();
    p.running_mean = Some(Tensor::from_vec_in(rm, &[m], dev, Category::Parameter)?);
    p.running_var = Some(Tensor::from_vec_in(rv, &[m], dev, Category::Parameter)?);
    Ok(BnTrain {
        y,
        z,
        ab,
        mean: Tensor::from_vec(mean, &[m])?,
        rstd: Tensor::from_vec(rstd, &[m])?,
    })
}

fn bn_infer_t<T: HostFloat>(call: &Call, p: &QuadParams, x: &Tensor) -> Result<Tensor> {
    let (op, n) = (&call.op, call.n);
    let mut y = zeros(&op.out_shape(n), x.dtype())?;
    let xs = x.as_slice::<T>()?;
    let wt = weights::<T>(p)?;
    let (rm, rv) = p.running()?;
    let (rm, rv) = (rm.to_vec::<T>()?, rv.to_vec::<T>()?);
    let rstd = crate::ops::norm::cpu::rstd(&rv, BN_EPS);
    cpu_bn::bn_infer(op, n, xs, &wt, &rm, &rstd, y.data_mut::<T>()?);
    Ok(y)
}

fn backward_t<T: HostFloat>(
    call: &Call,
    p: &QuadParams,
    sv: &Saved,
    g: &Tensor,
) -> Result<(Tensor, super::Grads)> {
    let (op, n) = (&call.op, call.n);
    let mut dx = zeros(sv.x.shape(), sv.x.dtype())?;
    let xs = sv.x.as_slice::<T>()?;
    let gs = g.as_slice::<T>()?;
    let wt = weights::<T>(p)?;
    let planes = match &sv.planes {
        Some(t) => t.as_slice::<T>()?,
        None => &[],
    };
    let lifted = match &sv.lifted {
        Some(t) => t.as_slice::<T>()?,
        None => &[],
    };
    let dxs = dx.data_mut::<T>()?;
    let gr = backward(op, n, xs, &wt, gs, sv.stored, planes, lifted, dxs);
    Ok((dx, by_slot(gr)))
}

fn bn_backward_t<T: HostFloat>(
    call: &Call,
    p: &QuadParams,
    sv: &Saved,
    g: &Tensor,
) -> Result<(Tensor, super::Grads)> {
    let (op, n) = (&call.op, call.n);
    let mut dx = zeros(sv.x.shape(), sv.x.dtype())?;
    let xs = sv.x.as_slice::<T>()?;
    let gs = g.as_slice::<T>()?;
    let wt = weights::<T>(p)?;
    let mean = Saved::kept(&sv.mean, call.path)?.as_slice::<T>()?;
    let rstd = Saved::kept(&sv.rstd, call.path)?.as_slice::<T>()?;
    let kept = match (&sv.planes, &sv.ab) {
        (Some(z), Some(ab)) if sv.stored => Some((z.as_slice::<T>()?, ab.as_slice::<T>()?)),
        _ => None,
    };
    let dxs = dx.data_mut::<T>()?;
    let gr = cpu_bn::bn_backward(op, n, xs, &wt, gs, kept, mean, rstd, dxs);
    Ok((dx, by_slot(gr)))
}

impl Backend for Cpu {
    fn forward(&self, call: &Call, p: &QuadParams, x: &Tensor, keep: bool) -> Result<Plain> {
        with_dtype!(x.dtype(), T => forward_t::<T>(call, p, x, keep))
    }
    fn bn_forward(
        &self,
        call: &Call,
        p: &mut QuadParams,
        x: &Tensor,
        keep: bool,
    ) -> Result<BnTrain> {
        with_dtype!(x.dtype(), T => bn_forward_t::<T>(call, p, x, keep))
    }
    fn bn_infer(&self, call: &Call, p: &QuadParams, x: &Tensor) -> Result<Tensor> {
        with_dtype!(x.dtype(), T => bn_infer_t::<T>(call, p, x))
    }
    fn backward(
        &self,
        call: &Call,
        p: &QuadParams,
        sv: &Saved,
        g: &Tensor,
    ) -> Result<(Tensor, super::Grads)> {
        with_dtype!(g.dtype(), T => backward_t::<T>(call, p, sv, g))
    }
    fn bn_backward(
        &self,
        call: &Call,
        p: &QuadParams,
        sv: &Saved,
        g: &Tensor,
    ) -> Result<(Tensor, super::Grads)> {
        with_dtype!(g.dtype(), T => bn_backward_t::<T>(call, p, sv, g))
    }
    fn copy_range(&self, t: &Tensor, range: Range<usize>, shape: &[usize]) -> Result<Tensor> {
        with_dtype!(t.dtype(), T => Tensor::from_vec_in(
            t.as_slice::<T>()?[range].to_vec(),
            shape,
            crate::Device::Cpu,
            Category::Workspace,
        ))
    }
}

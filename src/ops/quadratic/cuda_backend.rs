//! The CUDA backend's implementation of the family's steps (see the parent module;
//! `Device::Cuda(n)` and `Device::Emu`, f32): each step one or a few launches, step 1 and
//! the lifted map through `ops::conv::cuda` (the stacked map, nb branches), lifts,
//! epilogues and quadralib-bn through `cuda.rs` (cuda/quadratic.cu).
//!
//! | neuron | forward | backward |
//! |---|---|---|
//! | t1 | z = W_b·x (+ b); o = u ⊗ u; q = W_a·o; y = q + z | gz = gy; dW_a, do; du = outer adjoint, col2im |
//! | t2 | y = W_a·(x ⊙ x) (+ b) | dW_a, d(x ⊙ x); dx = 2·x ⊙ d(x ⊙ x) |
//! | t3, t4, quadralib | z = W1·x (+ b1); epilogue | planes (kept or recomputed) → gz |
//! | fan | z = [r, g]; q = W_b·(x ⊙ x) + c; y = r ⊙ g + q | t4's gz; q's gradient is gy |
//! | quadralib-bn | z; batch stats; y (and A‖B when stored) | reduction (dγ, dβ), gz |
//!
//! What a training forward keeps is exactly the CPU engine's (same tensors, same sizes):
//! stored t3/t4/fan keep z itself, stored quadralib a‖b (a channel slice of z), t1 u ⊗ u,
//! t2/fan x ⊙ x, quadralib-bn z, A‖B, mean, rstd; recompute keeps x (+ mean, rstd) and
//! backward recomputes the planes it reads with one stacked map (quadralib: the first two
//! branches only, through a slice of W1).

use std::ops::Range;

use super::cuda::{self as kq, Bn, Planes};
use super::{
    Backend, BnTrain, Call, Grad, Grads, Lift, NeuronType, Plain, QuadParams, Saved, Slot, BN_EPS,
    BN_MOMENTUM,
};
use crate::device::alloc::Category;
use crate::ops::conv::cuda as kconv;
use crate::ops::norm::cuda as knorm;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// The CUDA backend (the same code for `Cuda(n)` and the emulator).
pub(super) struct Cuda;

fn planes(call: &Call) -> Planes {
    Planes {
        n: call.n,
        c: call.op.c(),
        l: call.op.l(),
    }
}

/// Step 1: z (N, r·C, L), the first r branches of the stacked map applied to x, biases
/// added. r < nb (recompute of quadralib's a, b) maps through a slice of W1's leading rows.
fn first_order(call: &Call, p: &QuadParams, x: &Tensor, r: usize) -> Result<Tensor> {
    let op = &call.op;
    let (nb, c) = (op.neuron.branches(), op.c());
    let w1 = p.need(Slot::W1, "stacked weight")?;
    let b1 = p.value(Slot::B1);
    let (w, b) = if r == nb {
        (w1.clone(), b1.cloned())
    } else {
        let kg = w1.numel() / (nb * c);
        let mut shape = w1.shape().to_vec();
        shape[0] = r * c;
        let w = kq::narrow(w1, 1, nb * c, kg, 0, r * c, &shape, Category::Workspace)?;
        let b = b1
            .map(|b| kq::narrow(b, 1, nb * c, 1, 0, r * c, &[r * c], Category::Workspace))
            .transpose()?;
        (w, b)
    };
    if op.dense {
        crate::ops::linear::cuda::linear_forward(x, &w, b.as_ref(), Category::Workspace)
    } else {
        kconv::conv2d_forward(
            &op.geom,
            r,
            x,
            &w,
            b.as_ref(),
            call.path,
            Category::Workspace,
        )
    }
}

/// The vectors t1's bilinear form reads: im2col(x) (N, K, L), or x for a linear layer.
fn cols(call: &Call, x: &Tensor) -> Result<Tensor> {
    if call.op.dense {
        Ok(x.clone())
    } else {
        kconv::im2col_all(&call.op.geom, x, call.path)
    }
}

/// Step 2's lift: x ⊙ x (t2, fan) or u ⊗ u (N, K², L) (t1).
fn lift(call: &Call, x: &Tensor) -> Result<Tensor> {
    let op = &call.op;
    match op.neuron.lift() {
        Lift::Square => kq::square(x),
        Lift::Outer => kq::outer(&cols(call, x)?, call.n, op.k(), op.l()),
        Lift::None => Err(Error::state(format!(
            "neuron {} has no lifted input",
            op.neuron
        ))),
    }
}

/// Step 2's lifted map: q (the output's shape), the lifted weight applied to the lifted
/// input (+ its bias).
fn lifted_map(call: &Call, p: &QuadParams, lifted: &Tensor) -> Result<Tensor> {
    let op = &call.op;
    let w2 = p.need(Slot::W2, "lifted weight")?;
    let b2 = p.value(Slot::B2);
    match (op.neuron.lift(), op.dense) {
        (Lift::Outer, _) => kq::lifted_forward(
            w2,
            lifted,
            planes(call),
            op.k() * op.k(),
            &op.out_shape(call.n),
        ),
        (_, true) => crate::ops::linear::cuda::linear_forward(lifted, w2, b2, Category::Workspace),
        (_, false) => {
            kconv::conv2d_forward(&op.geom, 1, lifted, w2, b2, call.path, Category::Workspace)
        }
    }
}

/// The BN vectors of step 4 with the statistics `mean`, `rstd`.
fn bn<'a>(p: &'a QuadParams, mean: &'a Tensor, rstd: &'a Tensor) -> Result<Bn<'a>> {
    Ok(Bn {
        mean,
        rstd,
        gamma: p.need(Slot::Gamma, "BN scale")?,
        beta: p.need(Slot::Beta, "BN shift")?,
    })
}

impl Backend for Cuda {
    fn forward(&self, call: &Call, p: &QuadParams, x: &Tensor, keep: bool) -> Result<Plain> {
        let (op, n) = (&call.op, call.n);
        let neuron = op.neuron;
        let d = planes(call);
        let z = match neuron.branches() {
            0 => None,
            nb => Some(first_order(call, p, x, nb)?),
        };
        let lifted = match neuron.lift() {
            Lift::None => None,
            _ => Some(lift(call, x)?),
        };
        let q = match &lifted {
            Some(li) => Some(lifted_map(call, p, li)?),
            None => None,
        };
        let missing = || Error::state(format!("neuron {neuron}: a branch is missing"));
        let y = match neuron.epilogue() {
            Some(kind) => kq::epilogue_forward(
                kind,
                z.as_ref().ok_or_else(missing)?,
                q.as_ref(),
                d,
                &op.out_shape(n),
            )?,
            None => q.ok_or_else(missing)?,
        };
        if !keep {
            return Ok(Plain {
                y,
                planes: None,
                lifted: None,
            });
        }
        let planes = match neuron {
            NeuronType::T3 | NeuronType::T4 | NeuronType::Fan => z,
            NeuronType::QuadraLib => {
                let z = z.ok_or_else(missing)?;
                let (c, l) = (d.c, d.l);
                Some(kq::narrow(
                    &z,
                    n,
                    3 * c,
                    l,
                    0,
                    2 * c,
                    &[n, 2 * c, l],
                    Category::Workspace,
                )?)
            }
            _ => None,
        };
        Ok(Plain { y, planes, lifted })
    }

    fn bn_forward(
        &self,
        call: &Call,
        p: &mut QuadParams,
        x: &Tensor,
        keep: bool,
    ) -> Result<BnTrain> {
        let d = planes(call);
        let z = first_order(call, p, x, 3)?;
        let [mean, var, rstd] = kq::bn_stats(&z, d.n, 3 * d.c, d.l, BN_EPS)?;
        let (y, ab) = kq::bn_forward(&z, &bn(p, &mean, &rstd)?, d, &call.op.out_shape(d.n), keep)?;
        let (rm, rv) = p.running()?;
        let (rm, rv) = knorm::bn_running(rm, rv, &mean, &var, d.n * d.l, BN_MOMENTUM)?;
        p.running_mean = Some(rm);
        p.running_var = Some(rv);
        Ok(BnTrain {
            y,
            z,
            ab,
            mean,
            rstd,
        })
    }

    fn bn_infer(&self, call: &Call, p: &QuadParams, x: &Tensor) -> Result<Tensor> {
        let z = first_order(call, p, x, 3)?;
        let (rm, rv) = p.running()?;
        let rstd = knorm::rstd(rv, BN_EPS)?;
        let d = planes(call);
        Ok(kq::bn_forward(&z, &bn(p, rm, &rstd)?, d, &call.op.out_shape(d.n), false)?.0)
    }

    fn backward(
        &self,
        call: &Call,
        p: &QuadParams,
        sv: &Saved,
        g: &Tensor,
    ) -> Result<(Tensor, Grads)> {
        let (op, n, path) = (&call.op, call.n, call.path);
        let x = &sv.x;
        let d = planes(call);
        let neuron = op.neuron;
        let mut grads: Grads = Vec::new();
        // (a), (b): the stacked branch gradient gz (N, nb·C, L)
        let gz = match neuron.epilogue() {
            None => None, // t2: no first-order branch
            Some(super::Epilogue::T1) => Some(g.clone()),
            Some(kind) => {
                let pl = if sv.stored {
                    Saved::kept(&sv.planes, path)?.clone()
                } else {
                    first_order(call, p, x, neuron.planes_read())?
                };
                Some(kq::epilogue_backward(kind, &pl, g, d)?)
            }
        };
        // (c)
        let mut dx = match &gz {
            Some(gz) => first_order_backward(call, p, x, gz, &mut grads)?,
            None => None,
        };
        // (d)
        match neuron.lift() {
            Lift::None => {}
            Lift::Square => {
                let xx = if sv.stored {
                    Saved::kept(&sv.lifted, path)?.clone()
                } else {
                    kq::square(x)?
                };
                let w2 = p.need(Slot::W2, "lifted weight")?;
                let gr = if op.dense {
                    crate::ops::linear::cuda::linear_backward(&xx, w2, g, true)?
                } else {
                    kconv::conv2d_backward(&op.geom, 1, &xx, w2, g, true, path)?
                };
                grads.push((Slot::W2, Grad::Device(gr.dw)));
                grads.push((Slot::B2, Grad::Device(gr.db)));
                let dxx = gr
                    .dx
                    .ok_or_else(|| Error::state("lifted map backward: no input gradient"))?;
                dx = Some(kq::square_backward(x, &dxx, dx)?);
            }
            Lift::Outer => {
                let (k, l) = (op.k(), op.l());
                let cols = cols(call, x)?;
                let o = if sv.stored {
                    Saved::kept(&sv.lifted, path)?.clone()
                } else {
                    kq::outer(&cols, n, k, l)?
                };
                let w2 = p.need(Slot::W2, "lifted weight")?;
                let (dw2, dout) = kq::lifted_backward(w2, &o, g, d, k * k)?;
                grads.push((Slot::W2, Grad::Device(dw2)));
                let du_shape = if op.dense { x.shape() } else { cols.shape() };
                let du = kq::outer_backward(&dout, &cols, n, k, l, du_shape)?;
                let dxo = if op.dense {
                    du
                } else {
                    kconv::col2im_all(&op.geom, &du, x.shape(), path)?
                };
                dx = Some(match dx {
                    Some(mut acc) => {
                        crate::ops::elementwise::cuda::axpy(1.0, &dxo, &mut acc)?;
                        acc
                    }
                    None => dxo,
                });
            }
        }
        let dx = dx.ok_or_else(|| Error::state(format!("layer `{path}`: no input gradient")))?;
        Ok((dx, grads))
    }

    fn bn_backward(
        &self,
        call: &Call,
        p: &QuadParams,
        sv: &Saved,
        g: &Tensor,
    ) -> Result<(Tensor, Grads)> {
        let path = call.path;
        let x = &sv.x;
        // (a)
        let (z, ab) = if sv.stored {
            (
                Saved::kept(&sv.planes, path)?.clone(),
                Some(Saved::kept(&sv.ab, path)?.clone()),
            )
        } else {
            (first_order(call, p, x, 3)?, None)
        };
        // (b)
        let mean = Saved::kept(&sv.mean, path)?;
        let rstd = Saved::kept(&sv.rstd, path)?;
        let (gz, dgamma, dbeta) =
            kq::bn_backward(&z, ab.as_ref(), g, &bn(p, mean, rstd)?, planes(call))?;
        let mut grads: Grads = vec![
            (Slot::Gamma, Grad::Device(dgamma)),
            (Slot::Beta, Grad::Device(dbeta)),
        ];
        // (c)
        let dx = first_order_backward(call, p, x, &gz, &mut grads)?
            .ok_or_else(|| Error::state(format!("layer `{path}`: no input gradient")))?;
        Ok((dx, grads))
    }

    fn copy_range(&self, t: &Tensor, range: Range<usize>, shape: &[usize]) -> Result<Tensor> {
        kq::copy_range(t, range, shape, Category::Workspace)
    }
}

/// Backward step (c): step 1's backward from gz; pushes dW1, db1 and returns dx.
fn first_order_backward(
    call: &Call,
    p: &QuadParams,
    x: &Tensor,
    gz: &Tensor,
    grads: &mut Grads,
) -> Result<Option<Tensor>> {
    let op = &call.op;
    let w1 = p.need(Slot::W1, "stacked weight")?;
    let gr = if op.dense {
        crate::ops::linear::cuda::linear_backward(x, w1, gz, true)?
    } else {
        kconv::conv2d_backward(&op.geom, op.neuron.branches(), x, w1, gz, true, call.path)?
    };
    grads.push((Slot::W1, Grad::Device(gr.dw)));
    grads.push((Slot::B1, Grad::Device(gr.db)));
    Ok(gr.dx)
}

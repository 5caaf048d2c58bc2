//! The CUDA-backend path of the quadratic layers (`Device::Cuda(n)` and `Device::Emu`, f32):
//! the same neurons, modes and saved sets as the CPU engine (see the parent module's
//! tables), built from `kernels::conv` (the stacked first-order maps, nb branches) and
//! `kernels::quadratic` (lifts, fused epilogues, quadralib-bn).
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

use super::{Core, Saved, BN_EPS, BN_MOMENTUM};
use crate::device::alloc::Category;
use crate::nn::{no_forward, BackpropMode, Param};
use crate::ops::conv::cuda as kconv;
use crate::ops::norm::cuda as knorm;
use crate::ops::quadratic::cuda::{self as kq, Bn, Epilogue, Planes};
use crate::ops::quadratic::{Lift, NeuronType, QuadOp};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// The elementwise epilogue of a non-BN neuron (t2 has none: its output is q).
fn epilogue(neuron: NeuronType) -> Option<Epilogue> {
    match neuron {
        NeuronType::T1 => Some(Epilogue::T1),
        NeuronType::T3 => Some(Epilogue::T3),
        NeuronType::T4 => Some(Epilogue::T4),
        NeuronType::QuadraLib => Some(Epilogue::QuadraLib),
        NeuronType::Fan => Some(Epilogue::Fan),
        NeuronType::T2 | NeuronType::QuadraLibBn => None,
    }
}

fn value<'a>(p: &'a Option<Param>, what: &str) -> Result<&'a Tensor> {
    p.as_ref()
        .map(|p| &p.value)
        .ok_or_else(|| Error::state(format!("quadratic layer without its {what}")))
}

fn kept(t: &Option<Tensor>, path: &str) -> Result<Tensor> {
    t.clone().ok_or_else(|| no_forward(path))
}

/// Which parameter a gradient goes to.
#[derive(Clone, Copy)]
enum Slot {
    W1,
    B1,
    W2,
    B2,
    Gamma,
    Beta,
}

impl Core {
    fn gpu_planes(&self, n: usize, op: &QuadOp) -> Planes {
        Planes {
            n,
            c: self.geom.c_out,
            l: op.l(),
        }
    }

    /// z (N, r·C, L): the first r branches of the stacked map applied to x, biases added.
    /// r < nb (recompute of quadralib's a, b) maps through a slice of W1's leading rows.
    fn gpu_first_order(&self, x: &Tensor, r: usize) -> Result<Tensor> {
        let (nb, c) = (self.neuron.branches(), self.geom.c_out);
        let w1 = value(&self.w1, "stacked weight")?;
        let b1 = self.b1.as_ref().map(|p| &p.value);
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
        if self.dense {
            crate::ops::linear::cuda::linear_forward(x, &w, b.as_ref(), Category::Workspace)
        } else {
            kconv::conv2d_forward(
                &self.geom,
                r,
                x,
                &w,
                b.as_ref(),
                &self.name.path,
                Category::Workspace,
            )
        }
    }

    /// The vectors t1's bilinear form reads: im2col(x) (N, K, L), or x for a linear layer.
    fn gpu_cols(&self, x: &Tensor) -> Result<Tensor> {
        if self.dense {
            Ok(x.clone())
        } else {
            kconv::im2col_all(&self.geom, x, &self.name.path)
        }
    }

    /// The lifted input: x ⊙ x (t2, fan) or u ⊗ u (N, K², L) (t1).
    fn gpu_lift(&self, x: &Tensor, n: usize, op: &QuadOp) -> Result<Tensor> {
        match self.neuron.lift() {
            Lift::Square => kq::square(x),
            Lift::Outer => kq::outer(&self.gpu_cols(x)?, n, op.k(), op.l()),
            Lift::None => Err(Error::state(format!(
                "neuron {} has no lifted input",
                self.neuron
            ))),
        }
    }

    /// q (the output's shape): the lifted weight applied to the lifted input (+ its bias).
    fn gpu_lifted_map(&self, lifted: &Tensor, n: usize, op: &QuadOp) -> Result<Tensor> {
        let w2 = value(&self.w2, "lifted weight")?;
        let b2 = self.b2.as_ref().map(|p| &p.value);
        match (self.neuron.lift(), self.dense) {
            (Lift::Outer, _) => kq::lifted_forward(
                w2,
                lifted,
                self.gpu_planes(n, op),
                op.k() * op.k(),
                &self.out_shape(n, op),
            ),
            (_, true) => {
                crate::ops::linear::cuda::linear_forward(lifted, w2, b2, Category::Workspace)
            }
            (_, false) => kconv::conv2d_forward(
                &self.geom,
                1,
                lifted,
                w2,
                b2,
                &self.name.path,
                Category::Workspace,
            ),
        }
    }

    /// Output of a non-BN neuron; with `keep` also what a stored forward keeps:
    /// (y, planes, lifted).
    fn gpu_plain(
        &self,
        x: &Tensor,
        n: usize,
        op: &QuadOp,
        keep: bool,
    ) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
        let neuron = self.neuron;
        let d = self.gpu_planes(n, op);
        let z = match neuron.branches() {
            0 => None,
            nb => Some(self.gpu_first_order(x, nb)?),
        };
        let lifted = match neuron.lift() {
            Lift::None => None,
            _ => Some(self.gpu_lift(x, n, op)?),
        };
        let q = match &lifted {
            Some(li) => Some(self.gpu_lifted_map(li, n, op)?),
            None => None,
        };
        let missing = || Error::state(format!("neuron {neuron}: a branch is missing"));
        let y = match epilogue(neuron) {
            Some(kind) => kq::epilogue_forward(
                kind,
                z.as_ref().ok_or_else(missing)?,
                q.as_ref(),
                d,
                &self.out_shape(n, op),
            )?,
            None => q.ok_or_else(missing)?,
        };
        if !keep {
            return Ok((y, None, None));
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
        Ok((y, planes, lifted))
    }

    fn gpu_running(&self) -> Result<(&Tensor, &Tensor)> {
        match (&self.running_mean, &self.running_var) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Err(Error::state(
                "quadralib-bn layer without running statistics",
            )),
        }
    }

    /// Eval-mode forward on the CUDA backend: nothing kept; quadralib-bn normalises with the
    /// running statistics.
    pub(super) fn infer_gpu(&self, x: &Tensor) -> Result<Tensor> {
        let (n, op) = self.op_for(x)?;
        if !self.neuron.has_bn() {
            return Ok(self.gpu_plain(x, n, &op, false)?.0);
        }
        let z = self.gpu_first_order(x, 3)?;
        let (rm, rv) = self.gpu_running()?;
        let rstd = knorm::rstd(rv, BN_EPS)?;
        let bn = Bn {
            mean: rm,
            rstd: &rstd,
            gamma: value(&self.gamma, "BN scale")?,
            beta: value(&self.beta, "BN shift")?,
        };
        let d = self.gpu_planes(n, &op);
        Ok(kq::bn_forward(&z, &bn, d, &self.out_shape(n, &op), false)?.0)
    }

    /// Training forward on the CUDA backend; keeps what the mode says (the parent's table).
    pub(super) fn forward_gpu(&mut self, x: &Tensor) -> Result<Tensor> {
        let (n, op) = self.op_for(x)?;
        let stored = self.mode == BackpropMode::Stored;
        let mut saved = Saved {
            x: x.clone(),
            stored,
            planes: None,
            lifted: None,
            ab: None,
            mean: None,
            rstd: None,
        };
        let y = if self.neuron.has_bn() {
            let d = self.gpu_planes(n, &op);
            let z = self.gpu_first_order(x, 3)?;
            let [mean, var, rstd] = kq::bn_stats(&z, n, 3 * d.c, d.l, BN_EPS)?;
            let (y, ab) = {
                let bn = Bn {
                    mean: &mean,
                    rstd: &rstd,
                    gamma: value(&self.gamma, "BN scale")?,
                    beta: value(&self.beta, "BN shift")?,
                };
                kq::bn_forward(&z, &bn, d, &self.out_shape(n, &op), stored)?
            };
            let (rm, rv) = self.gpu_running()?;
            let (rm, rv) = knorm::bn_running(rm, rv, &mean, &var, n * d.l, BN_MOMENTUM)?;
            self.running_mean = Some(rm);
            self.running_var = Some(rv);
            saved.mean = Some(mean.keep_for_backward());
            saved.rstd = Some(rstd.keep_for_backward());
            if stored {
                saved.planes = Some(z.keep_for_backward());
                saved.ab = ab.map(|t| t.keep_for_backward());
            }
            y
        } else {
            let (y, planes, lifted) = self.gpu_plain(x, n, &op, stored)?;
            saved.planes = planes.map(|t| t.keep_for_backward());
            saved.lifted = lifted.map(|t| t.keep_for_backward());
            y
        };
        saved.x = x.keep_for_backward();
        self.saved = Some(saved);
        Ok(y)
    }

    /// Backward on the CUDA backend from what the forward kept (`sv`, taken out of the
    /// layer; dropped at the end, which releases it) and gy (checked by the caller).
    pub(super) fn backward_gpu(&mut self, sv: Saved, g: &Tensor) -> Result<Tensor> {
        let path = self.name.path.clone();
        let (n, op) = self.op_for(&sv.x)?;
        let x = &sv.x;
        let d = self.gpu_planes(n, &op);
        let neuron = self.neuron;
        let mut grads: Vec<(Slot, Tensor)> = Vec::new();
        // the stacked branch gradient gz (N, nb·C, L)
        let gz = if neuron.has_bn() {
            let (z, ab) = if sv.stored {
                (kept(&sv.planes, &path)?, Some(kept(&sv.ab, &path)?))
            } else {
                (self.gpu_first_order(x, 3)?, None)
            };
            let mean = sv.mean.as_ref().ok_or_else(|| no_forward(&path))?;
            let rstd = sv.rstd.as_ref().ok_or_else(|| no_forward(&path))?;
            let bn = Bn {
                mean,
                rstd,
                gamma: value(&self.gamma, "BN scale")?,
                beta: value(&self.beta, "BN shift")?,
            };
            let (gz, dgamma, dbeta) = kq::bn_backward(&z, ab.as_ref(), g, &bn, d)?;
            grads.push((Slot::Gamma, dgamma));
            grads.push((Slot::Beta, dbeta));
            Some(gz)
        } else {
            match neuron {
                NeuronType::T1 => Some(g.clone()),
                NeuronType::T2 => None,
                _ => {
                    let planes = if sv.stored {
                        kept(&sv.planes, &path)?
                    } else {
                        self.gpu_first_order(x, neuron.planes_read())?
                    };
                    let kind = epilogue(neuron)
                        .ok_or_else(|| Error::state(format!("no epilogue for {neuron}")))?;
                    Some(kq::epilogue_backward(kind, &planes, g, d)?)
                }
            }
        };
        let mut dx: Option<Tensor> = None;
        if let Some(gz) = &gz {
            let w1 = value(&self.w1, "stacked weight")?;
            let gr = if self.dense {
                crate::ops::linear::cuda::linear_backward(x, w1, gz, true)?
            } else {
                kconv::conv2d_backward(&self.geom, neuron.branches(), x, w1, gz, true, &path)?
            };
            grads.push((Slot::W1, gr.dw));
            grads.push((Slot::B1, gr.db));
            dx = gr.dx;
        }
        match neuron.lift() {
            Lift::None => {}
            Lift::Square => {
                let xx = if sv.stored {
                    kept(&sv.lifted, &path)?
                } else {
                    kq::square(x)?
                };
                let w2 = value(&self.w2, "lifted weight")?;
                let gr = if self.dense {
                    crate::ops::linear::cuda::linear_backward(&xx, w2, g, true)?
                } else {
                    kconv::conv2d_backward(&self.geom, 1, &xx, w2, g, true, &path)?
                };
                grads.push((Slot::W2, gr.dw));
                grads.push((Slot::B2, gr.db));
                let dxx = gr
                    .dx
                    .ok_or_else(|| Error::state("lifted map backward: no input gradient"))?;
                dx = Some(kq::square_backward(x, &dxx, dx)?);
            }
            Lift::Outer => {
                let (k, l) = (op.k(), op.l());
                let cols = self.gpu_cols(x)?;
                let o = if sv.stored {
                    kept(&sv.lifted, &path)?
                } else {
                    kq::outer(&cols, n, k, l)?
                };
                let w2 = value(&self.w2, "lifted weight")?;
                let (dw2, dout) = kq::lifted_backward(w2, &o, g, d, k * k)?;
                grads.push((Slot::W2, dw2));
                let du_shape = if self.dense { x.shape() } else { cols.shape() };
                let du = kq::outer_backward(&dout, &cols, n, k, l, du_shape)?;
                let dxo = if self.dense {
                    du
                } else {
                    kconv::col2im_all(&self.geom, &du, x.shape(), &path)?
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
        for (slot, gt) in grads {
            let p = match slot {
                Slot::W1 => &mut self.w1,
                Slot::B1 => &mut self.b1,
                Slot::W2 => &mut self.w2,
                Slot::B2 => &mut self.b2,
                Slot::Gamma => &mut self.gamma,
                Slot::Beta => &mut self.beta,
            };
            if let Some(p) = p {
                p.accumulate_grad_tensor(gt)?;
            }
        }
        drop(sv);
        dx.ok_or_else(|| Error::state(format!("layer `{path}`: no input gradient")))
    }

    /// The running statistics (quadralib-bn), for `module_to_device`.
    pub(super) fn visit_buffers(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        let keys = [
            self.name.key("bn.running_mean"),
            self.name.key("bn.running_var"),
        ];
        for (t, k) in [&mut self.running_mean, &mut self.running_var]
            .into_iter()
            .zip(&keys)
        {
            if let Some(t) = t {
                f(k, t);
            }
        }
    }
}

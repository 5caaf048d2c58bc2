//! Optimizer updates on the CPU engine, generic over f32/f64 (the scalars converted to the
//! parameter's dtype at the same points as PyTorch's single-tensor path).

use std::ops::Range;

use super::{AdamHyper, SgdHyper};
use crate::tensor::Float;

/// SGD on `p[range]` (see `ops::optim::sgd_step`); `buf` is the momentum buffer when
/// momentum ≠ 0. p, g and buf: the whole parameter's elements.
pub fn sgd<T: Float>(
    p: &mut [T],
    g: &[T],
    buf: Option<&mut [T]>,
    r: Range<usize>,
    h: &SgdHyper,
    first: bool,
) {
    let (lr, wd) = (T::of(h.lr), T::of(h.weight_decay));
    let Some(buf) = buf else {
        for (w, &gi) in p[r.clone()].iter_mut().zip(&g[r]) {
            *w -= lr * (gi + wd * *w);
        }
        return;
    };
    let (mu, damp) = (T::of(h.momentum), T::of(h.dampening));
    for ((w, &gi), b) in p[r.clone()]
        .iter_mut()
        .zip(&g[r.clone()])
        .zip(buf[r].iter_mut())
    {
        let d = gi + wd * *w;
        *b = if first {
            d
        } else {
            mu * *b + (T::one() - damp) * d
        };
        let step = if h.nesterov { d + mu * *b } else { *b };
        *w -= lr * step;
    }
}

/// Adam/AdamW/AMSGrad on `p[range]` (see `ops::optim::adam_step`); m, v (and vmax for
/// AMSGrad): the moments, the whole parameter's elements.
#[allow(clippy::too_many_arguments)]
pub fn adam<T: Float>(
    pv: &mut [T],
    gv: &[T],
    m: &mut [T],
    v: &mut [T],
    mut vmax: Option<&mut [T]>,
    r: Range<usize>,
    h: &AdamHyper,
) {
    let (wd, decay) = (T::of(h.weight_decay), T::of(h.decay));
    let (b1, b2, bc2_sqrt) = (T::of(h.beta1), T::of(h.beta2), T::of(h.bc2_sqrt));
    let eps = T::of(h.eps);
    let step_size = T::of(h.lr / h.bc1);
    for i in r {
        let mut gi = gv[i];
        if h.decoupled {
            pv[i] *= decay;
        } else if wd != T::zero() {
            gi += wd * pv[i];
        }
        m[i] += (gi - m[i]) * (T::one() - b1);
        v[i] = v[i] * b2 + gi * gi * (T::one() - b2);
        let vh = match vmax.as_deref_mut() {
            Some(vm) => {
                if v[i] > vm[i] {
                    vm[i] = v[i];
                }
                vm[i]
            }
            None => v[i],
        };
        let denom = vh.sqrt() / bc2_sqrt + eps;
        pv[i] -= step_size * (m[i] / denom);
    }
}

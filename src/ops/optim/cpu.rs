//! Optimizer updates on the CPU engine, generic over f32/f64 (the scalars converted to the
//! parameter's dtype at the same points as PyTorch's single-tensor path).

use std::ops::Range;

use rayon::prelude::*;

use super::{AdamHyper, SgdHyper};
use crate::tensor::Float;

/// Elements per parallel piece of an update: below it the update runs on the calling
/// thread (every element is updated independently, so the split changes no result).
const SPLIT: usize = 1 << 15;

/// SGD on `p[range]` (see `ops::optim::sgd_step`); `buf` is the momentum buffer when
/// momentum ≠ 0. p, g and buf: the whole parameter's elements. Large segments are split
/// over the rayon pool.
pub fn sgd<T: Float>(
    p: &mut [T],
    g: &[T],
    buf: Option<&mut [T]>,
    r: Range<usize>,
    h: &SgdHyper,
    first: bool,
) {
    let (p, g) = (&mut p[r.clone()], &g[r.clone()]);
    if p.len() <= SPLIT {
        return sgd_piece(p, g, buf.map(|b| &mut b[r]), h, first);
    }
    match buf {
        None => p
            .par_chunks_mut(SPLIT)
            .zip(g.par_chunks(SPLIT))
            .for_each(|(p, g)| sgd_piece(p, g, None, h, first)),
        Some(buf) => p
            .par_chunks_mut(SPLIT)
            .zip(g.par_chunks(SPLIT))
            .zip(buf[r].par_chunks_mut(SPLIT))
            .for_each(|((p, g), b)| sgd_piece(p, g, Some(b), h, first)),
    }
}

/// SGD on aligned pieces of p, g (and buf).
fn sgd_piece<T: Float>(p: &mut [T], g: &[T], buf: Option<&mut [T]>, h: &SgdHyper, first: bool) {
    let (lr, wd) = (T::of(h.lr), T::of(h.weight_decay));
    let Some(buf) = buf else {
        for (w, &gi) in p.iter_mut().zip(g) {
            *w -= lr * (gi + wd * *w);
        }
        return;
    };
    let (mu, damp) = (T::of(h.momentum), T::of(h.dampening));
    for ((w, &gi), b) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
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
/// AMSGrad): the moments, the whole parameter's elements. Large segments are split over
/// the rayon pool.
#[allow(clippy::too_many_arguments)]
pub fn adam<T: Float>(
    pv: &mut [T],
    gv: &[T],
    m: &mut [T],
    v: &mut [T],
    vmax: Option<&mut [T]>,
    r: Range<usize>,
    h: &AdamHyper,
) {
    if r.len() <= SPLIT {
        let vm = vmax.map(|vm| &mut vm[r.clone()]);
        return adam_piece(
            &mut pv[r.clone()],
            &gv[r.clone()],
            &mut m[r.clone()],
            &mut v[r],
            vm,
            h,
        );
    }
    let pieces = pv[r.clone()]
        .par_chunks_mut(SPLIT)
        .zip(gv[r.clone()].par_chunks(SPLIT))
        .zip(m[r.clone()].par_chunks_mut(SPLIT))
        .zip(v[r.clone()].par_chunks_mut(SPLIT));
    match vmax {
        None => pieces.for_each(|(((p, g), m), v)| adam_piece(p, g, m, v, None, h)),
        Some(vm) => pieces
            .zip(vm[r].par_chunks_mut(SPLIT))
            .for_each(|((((p, g), m), v), vm)| adam_piece(p, g, m, v, Some(vm), h)),
    }
}

/// Adam on aligned pieces of p, g, m, v (and vmax).
fn adam_piece<T: Float>(
    pv: &mut [T],
    gv: &[T],
    m: &mut [T],
    v: &mut [T],
    mut vmax: Option<&mut [T]>,
    h: &AdamHyper,
) {
    let (wd, decay) = (T::of(h.weight_decay), T::of(h.decay));
    let (b1, b2, bc2_sqrt) = (T::of(h.beta1), T::of(h.beta2), T::of(h.bc2_sqrt));
    let eps = T::of(h.eps);
    let step_size = T::of(h.lr / h.bc1);
    for i in 0..pv.len() {
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

//! Elementwise activations: ReLU and dropout. All buffers are flat views of a tensor of any
//! shape; work is split into fixed-size chunks over the rayon pool.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::tensor::Float;

/// Elements per parallel task: large enough that scheduling costs nothing next to the loop.
const CHUNK: usize = 1 << 14;

/// y = max(x, 0); x, y: same length. NaN propagates (as in PyTorch's `relu`).
pub fn relu_forward<T: Float>(x: &[T], y: &mut [T]) {
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(yc, xc)| {
            for (o, &v) in yc.iter_mut().zip(xc) {
                *o = if v < T::zero() { T::zero() } else { v };
            }
        });
}

/// dx = g where y > 0, else 0 (PyTorch's `threshold_backward` reads the output y).
pub fn relu_backward<T: Float>(g: &[T], y: &[T], dx: &mut [T]) {
    dx.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)))
        .for_each(|(dc, (gc, yc))| {
            for ((d, &gv), &yv) in dc.iter_mut().zip(gc).zip(yc) {
                *d = if yv > T::zero() { gv } else { T::zero() };
            }
        });
}

/// out = relu(a + b) (or a + b when `relu` is false), computed in parallel into a fresh
/// vector (no zero fill first); a, b: same length.
pub fn add_relu<T: Float>(a: &[T], b: &[T], relu: bool) -> Vec<T> {
    let mut out = Vec::new();
    a.par_iter()
        .zip(b.par_iter())
        .with_min_len(CHUNK)
        .map(|(&p, &q)| {
            let s = p + q;
            if relu && s < T::zero() {
                T::zero()
            } else {
                s
            }
        })
        .collect_into_vec(&mut out);
    out
}

/// `relu_forward` into a fresh vector (no zero fill first).
pub fn relu_forward_vec<T: Float>(x: &[T]) -> Vec<T> {
    let mut out = Vec::new();
    x.par_iter()
        .with_min_len(CHUNK)
        .map(|&v| if v < T::zero() { T::zero() } else { v })
        .collect_into_vec(&mut out);
    out
}

/// `relu_backward` into a fresh vector (no zero fill first).
pub fn relu_backward_vec<T: Float>(g: &[T], y: &[T]) -> Vec<T> {
    let mut out = Vec::new();
    g.par_iter()
        .zip(y.par_iter())
        .with_min_len(CHUNK)
        .map(|(&gv, &yv)| if yv > T::zero() { gv } else { T::zero() })
        .collect_into_vec(&mut out);
    out
}

/// Fill `mask` (one byte per element, 1 = kept) with a Bernoulli(1 − p) draw from the ChaCha8
/// stream `stream` of key `seed`. Element i uses the i-th 64-bit word of that stream,
/// whichever chunk computes it, so the mask depends only on (seed, stream, p) and not on the
/// thread count: each chunk jumps to its own word position.
pub fn dropout_mask(mask: &mut [u8], p: f64, seed: u64, stream: u64) {
    mask.par_chunks_mut(CHUNK).enumerate().for_each(|(ci, mc)| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        // word positions count 32-bit words; each element consumes one u64 = 2 words
        rng.set_word_pos((ci * CHUNK) as u128 * 2);
        for m in mc.iter_mut() {
            // uniform in [0, 1) with 53 random bits
            let u = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
            *m = u8::from(u >= p);
        }
    });
}

/// y = x · mask · scale (scale = 1/(1 − p)); x, mask, y: same length.
pub fn dropout_apply<T: Float>(x: &[T], mask: &[u8], scale: T, y: &mut [T]) {
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(mask.par_chunks(CHUNK)))
        .for_each(|(yc, (xc, mc))| {
            for ((o, &v), &m) in yc.iter_mut().zip(xc).zip(mc) {
                *o = if m != 0 { v * scale } else { T::zero() };
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu_and_its_gradient() {
        let x = [-1.0, 0.0, 2.0, -0.5, 3.0];
        let mut y = [0.0f64; 5];
        relu_forward(&x, &mut y);
        assert_eq!(y, [0.0, 0.0, 2.0, 0.0, 3.0]);
        let mut dx = [9.0f64; 5];
        relu_backward(&[1.0, 1.0, 1.0, 1.0, 1.0], &y, &mut dx);
        // the gradient at exactly 0 is 0, as in PyTorch
        assert_eq!(dx, [0.0, 0.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn dropout_mask_is_independent_of_chunking_and_reproducible() {
        let n = 3 * CHUNK + 17;
        let mut a = vec![0u8; n];
        let mut b = vec![0u8; n];
        dropout_mask(&mut a, 0.3, 5, 2);
        dropout_mask(&mut b, 0.3, 5, 2);
        assert_eq!(a, b);
        // one sequential stream gives the same draw
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        rng.set_stream(2);
        for (i, &m) in a.iter().enumerate() {
            let u = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
            assert_eq!(m, u8::from(u >= 0.3), "element {i}");
        }
        let kept = a.iter().filter(|&&m| m == 1).count() as f64 / n as f64;
        assert!((kept - 0.7).abs() < 0.02, "kept fraction {kept}");
        dropout_mask(&mut b, 0.3, 5, 3);
        assert_ne!(a, b, "another stream gives another mask");
    }
}

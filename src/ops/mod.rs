//! Ops: one file per op family. Each holds the CPU code (generic over `Float`, so gradient
//! checks run in f64) and, once the CUDA backend lands, the launch of its kernel beside it.

pub mod act;
pub mod conv;
pub mod counters;
pub mod elementwise;
pub(crate) mod launch;
pub mod linear;
pub mod loss;
pub mod norm;
pub mod optim;
pub mod param;
pub mod pool;
pub mod quadratic;
pub mod stats;

pub use crate::gemm;

use std::ops::Range;

use rayon::prelude::*;

use crate::device::alloc::{cpu_tracker, Category, TrackedVec};
use crate::tensor::{Float, Tensor};
use crate::Result;

/// `Tensor::zeros_in` on the CPU with the zero fill split over the rayon pool (see
/// `ops::par_zeros`); the same storage, category and accounting.
pub(crate) fn zeros_par(
    shape: &[usize],
    dtype: crate::DType,
    category: Category,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    crate::with_dtype!(dtype, T => Tensor::from_vec_in(
        par_zeros::<T>(n),
        shape,
        crate::Device::Cpu,
        category,
    ))
}

/// A zeroed host buffer charged to workspace (im2col columns, per-thread partial sums).
pub fn workspace<T: Float>(len: usize) -> TrackedVec<T> {
    TrackedVec::filled(T::zero(), len, cpu_tracker(), Category::Workspace)
}

/// Σ r with 8 independent accumulators, so the loop vectorizes (a fixed summation order:
/// deterministic, though not the sequential order).
#[inline]
pub fn lane_sum<T: Float>(r: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let mut it = r.chunks_exact(8);
    for c in &mut it {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let mut s = T::zero();
    for &v in it.remainder() {
        s += v;
    }
    let [a0, a1, a2, a3, a4, a5, a6, a7] = acc;
    s + (((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)))
}

/// A zeroed vector of `n` elements, the fill split over the rayon pool when it is large (a
/// serial fill of a whole-batch activation is a serial section of its layer).
pub fn par_zeros<T: Float>(n: usize) -> Vec<T> {
    const PAR_MIN: usize = 1 << 16;
    if n < PAR_MIN || rayon::current_num_threads() < 2 {
        return vec![T::zero(); n];
    }
    let mut v = Vec::new();
    (0..n)
        .into_par_iter()
        .with_min_len(PAR_MIN / 4)
        .map(|_| T::zero())
        .collect_into_vec(&mut v);
    v
}

/// One scratch value per chunk, each built by `make` on a pool thread, so the zero fills
/// of large workspaces run in parallel instead of serially before the parallel loop.
pub fn par_scratch<S: Send>(chunks: usize, make: impl Fn() -> S + Sync) -> Vec<S> {
    (0..chunks).into_par_iter().map(|_| make()).collect()
}

/// Split `0..n` into at most one contiguous range per rayon thread.
pub fn chunk_ranges(n: usize) -> Vec<Range<usize>> {
    let t = rayon::current_num_threads().max(1).min(n.max(1));
    let base = n / t;
    let extra = n % t;
    let mut out = Vec::with_capacity(t);
    let mut start = 0;
    for i in 0..t {
        let len = base + usize::from(i < extra);
        out.push(start..start + len);
        start += len;
    }
    out
}

/// Run `f(items, out_chunk, scratch)` over contiguous chunks of `n` items in parallel, where
/// item `i` owns `out[i * per_item..(i + 1) * per_item]` and each chunk gets one scratch
/// value. Returns the per-chunk results in order.
pub fn par_item_chunks<T, S, R, F>(
    out: &mut [T],
    per_item: usize,
    n: usize,
    scratch: &mut [S],
    f: F,
) -> Vec<R>
where
    T: Send,
    S: Send,
    R: Send,
    F: Fn(Range<usize>, &mut [T], &mut S) -> R + Sync,
{
    let ranges = chunk_ranges(n);
    assert!(
        scratch.len() >= ranges.len(),
        "par_item_chunks: one scratch per chunk"
    );
    assert_eq!(out.len(), n * per_item, "par_item_chunks: output length");
    let mut parts: Vec<(Range<usize>, &mut [T])> = Vec::with_capacity(ranges.len());
    let mut rest = out;
    for r in ranges {
        let (head, tail) = rest.split_at_mut(r.len() * per_item);
        parts.push((r, head));
        rest = tail;
    }
    parts
        .into_par_iter()
        .zip(scratch.par_iter_mut())
        .map(|((r, o), s)| f(r, o, s))
        .collect()
}

/// A convolution backward's parallel loop: `par_item_chunks` over an optional per-image
/// output `dx` (`per_img` elements each; nothing is written when it is None), where each
/// chunk returns its (dW, db) partials; the partials are summed in chunk order.
pub fn par_grad_chunks<T, S, F>(
    dx: Option<&mut [T]>,
    per_img: usize,
    n: usize,
    scratch: &mut [S],
    f: F,
) -> (Vec<T>, Vec<T>)
where
    T: Float,
    S: Send,
    F: Fn(Range<usize>, &mut [T], &mut S) -> (Vec<T>, Vec<T>) + Sync,
{
    let mut dummy = Vec::new();
    let (buf, per) = match dx {
        Some(d) => (d, per_img),
        None => (&mut dummy[..], 0),
    };
    let parts = par_item_chunks(buf, per, n, scratch, f);
    let (dws, dbs): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    (reduce_partials(dws), reduce_partials(dbs))
}

/// Sum per-chunk partial buffers into the first one and return it. Each element is summed
/// in chunk order (the same result however the elements are split over threads); large
/// buffers (a VGG layer's dW is 2.4M elements) are split over the pool.
pub fn reduce_partials<T: Float>(mut parts: Vec<Vec<T>>) -> Vec<T> {
    const SPLIT: usize = 1 << 14;
    let mut acc = parts.remove(0);
    if parts.is_empty() {
        return acc;
    }
    let add = |ci: usize, a: &mut [T]| {
        let o = ci * SPLIT;
        let len = a.len();
        for p in &parts {
            for (a, &b) in a.iter_mut().zip(&p[o..o + len]) {
                *a += b;
            }
        }
    };
    if acc.len() <= SPLIT {
        add(0, &mut acc);
    } else {
        acc.par_chunks_mut(SPLIT)
            .enumerate()
            .for_each(|(ci, a)| add(ci, a));
    }
    acc
}

// optim.cu — fused optimizer updates, in place on a parameter slice and its state, and the
// squared L2 norm that gradient clipping needs. The CPU twins are src/optim/sgd.rs and
// src/optim/adam.rs: the updates below are the same f32 operations in the same order, with
// the same scalars (computed on the host in f64 and rounded to f32 as the CPU engine does),
// so the emulator reproduces the CPU engine up to rounding of contracted FMAs on a GPU.
//
// The updates are multi-tensor kernels (PyTorch's foreach/fused optimizers): one launch
// updates every segment of a table in device memory — a row per segment of a parameter
// (p, g, buf, m, v, vmax: (n) each, the caller's pointers already offset) — whose segments
// share the launch's scalars (one launch per parameter group, not one per segment). Any
// grid and any 1-D block. Every block walks
// the whole table and grid-strides over each segment, so a segment of any size is spread
// over all blocks; the table holds only addresses and sizes, which stay the same from step
// to step, so it is uploaded once and the per-step scalars travel as launch arguments.
#include "common.cuh"
#include "block_reduce.cuh"

using quadra::grid_start;
using quadra::grid_stride;

// One row of sgd_multi_f32's table: the segment p[0, n), g[0, n), buf[0, n) (buf null: no
// momentum, plain SGD).
struct SgdSegment {
    float* p;
    const float* g;
    float* buf;
    long long n;
};

// PyTorch's SGD on every segment of `table` (nseg rows), with one lr, wd, μ, 1 − dampening,
// Nesterov flag and first-step flag (the momentum buffers' first step) for all of them:
//   without momentum (buf null):  p ← p − lr·(g + wd·p)
//   with momentum μ:  d = g + wd·p;  buf = d on the first step, else μ·buf + (1 − dampening)·d;
//                     p ← p − lr·(nesterov ? d + μ·buf : buf)
QUADRA_KERNEL void sgd_multi_f32(const SgdSegment* __restrict__ table, int nseg, float lr, float wd, float mu,
                                 float one_minus_damp, int first, int nesterov) {
    for (int s = 0; s < nseg; ++s) {
        const SgdSegment seg = table[s];
        float* __restrict__ p = seg.p;
        const float* __restrict__ g = seg.g;
        float* __restrict__ buf = seg.buf;
        if (buf == nullptr) {
            for (long long i = grid_start(); i < seg.n; i += grid_stride()) p[i] -= lr * (g[i] + wd * p[i]);
            continue;
        }
        for (long long i = grid_start(); i < seg.n; i += grid_stride()) {
            const float d = g[i] + wd * p[i];
            const float b = first ? d : mu * buf[i] + one_minus_damp * d;
            buf[i] = b;
            const float step = nesterov ? d + mu * b : b;
            p[i] -= lr * step;
        }
    }
}
QUADRA_EXPORT(sgd_multi_f32)

// One row of adam_multi_f32's table: the segment [0, n) of p, g, m, v and vmax (vmax null
// unless the launch's amsgrad ≠ 0).
struct AdamSegment {
    float* p;
    const float* g;
    float* m;
    float* v;
    float* vmax;
    long long n;
};

// PyTorch's Adam / AdamW at step t:
//   AdamW: p ← p·decay (decay = 1 − lr·wd)      Adam: g ← g + wd·p (when wd ≠ 0)
//   m ← m + (1 − β1)·(g − m);  v ← β2·v + (1 − β2)·g²;  AMSGrad: vmax ← max(vmax, v)
//   p ← p − step_size · m / (√v̂ / bc2_sqrt + eps)
// with step_size = lr / (1 − β1ᵗ), bc2_sqrt = √(1 − β2ᵗ), v̂ = vmax (AMSGrad) or v,
// on every segment of `table` (nseg rows), all with the launch's scalars (one step t, one
// group's betas and weight decay); vmax is read and written only when amsgrad ≠ 0.
QUADRA_KERNEL void adam_multi_f32(const AdamSegment* __restrict__ table, int nseg, float step_size, float b1,
                                  float b2, float bc2_sqrt, float eps, float wd, float decay, int decoupled,
                                  int amsgrad) {
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
    for (int s = 0; s < nseg; ++s) {
        const AdamSegment seg = table[s];
        float* __restrict__ p = seg.p;
        const float* __restrict__ g = seg.g;
        float* __restrict__ m = seg.m;
        float* __restrict__ v = seg.v;
        float* __restrict__ vmax = seg.vmax;
        for (long long i = grid_start(); i < seg.n; i += grid_stride()) {
            float gi = g[i];
            float pi = p[i];
            if (decoupled) {
                pi *= decay;
            } else if (wd != 0.0f) {
                gi += wd * pi;
            }
            const float mi = m[i] + (gi - m[i]) * c1;
            const float vi = v[i] * b2 + gi * gi * c2;
            m[i] = mi;
            v[i] = vi;
            float vh = vi;
            if (amsgrad) {
                if (vi > vmax[i]) vmax[i] = vi;
                vh = vmax[i];
            }
            const float denom = sqrtf(vh) / bc2_sqrt + eps;
            p[i] = pi - step_size * (mi / denom);
        }
    }
}
QUADRA_EXPORT(adam_multi_f32)

// partial[blockIdx.x] = Σ x[i]² over the elements this block's threads visit (grid-stride),
// in double. The caller adds the gridDim.x partials in order. Block: a multiple of 32, ≤ 1024.
QUADRA_KERNEL void sumsq_partial_f32(const float* __restrict__ x, long long n, double* __restrict__ partial) {
    double s = 0.0;
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        const double v = static_cast<double>(x[i]);
        s += v * v;
    }
    s = quadra::block_sum(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
QUADRA_EXPORT(sumsq_partial_f32)

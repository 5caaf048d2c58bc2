// optim.cu — fused optimizer updates, in place on a parameter slice and its state, and the
// squared L2 norm that gradient clipping needs. The CPU twins are src/optim/sgd.rs and
// src/optim/adam.rs: the updates below are the same f32 operations in the same order, with
// the same scalars (computed on the host in f64 and rounded to f32 as the CPU engine does),
// so the emulator reproduces the CPU engine up to rounding of contracted FMAs on a GPU.
//
// p, g, buf, m, v, vmax: (n) — one segment of one parameter (the caller offsets the
// pointers); the update kernels are 1-D grid-stride loops (any grid, any 1-D block).
#include "common.cuh"
#include "block_reduce.cuh"

using quadra::grid_start;
using quadra::grid_stride;

// PyTorch's SGD without momentum:  p ← p − lr·(g + wd·p)
QUADRA_KERNEL void sgd_f32(float* __restrict__ p, const float* __restrict__ g, long long n, float lr, float wd) {
    for (long long i = grid_start(); i < n; i += grid_stride()) p[i] -= lr * (g[i] + wd * p[i]);
}
QUADRA_EXPORT(sgd_f32)

// PyTorch's SGD with momentum μ, dampening (passed as 1 − dampening) and Nesterov:
//   d = g + wd·p;  buf = d on the first step, else μ·buf + (1 − dampening)·d;
//   p ← p − lr·(nesterov ? d + μ·buf : buf)
QUADRA_KERNEL void sgd_momentum_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ buf,
                                    long long n, float lr, float wd, float mu, float one_minus_damp, int first,
                                    int nesterov) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        const float d = g[i] + wd * p[i];
        const float b = first ? d : mu * buf[i] + one_minus_damp * d;
        buf[i] = b;
        const float step = nesterov ? d + mu * b : b;
        p[i] -= lr * step;
    }
}
QUADRA_EXPORT(sgd_momentum_f32)

// PyTorch's Adam / AdamW (single-tensor path) at step t:
//   AdamW: p ← p·decay (decay = 1 − lr·wd)      Adam: g ← g + wd·p (when wd ≠ 0)
//   m ← m + (1 − β1)·(g − m);  v ← β2·v + (1 − β2)·g²;  AMSGrad: vmax ← max(vmax, v)
//   p ← p − step_size · m / (√v̂ / bc2_sqrt + eps)
// with step_size = lr / (1 − β1ᵗ), bc2_sqrt = √(1 − β2ᵗ), v̂ = vmax (AMSGrad) or v.
// vmax is read and written only when amsgrad ≠ 0 (it may be null otherwise).
QUADRA_KERNEL void adam_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                            float* __restrict__ v, float* __restrict__ vmax, long long n, float step_size,
                            float b1, float b2, float bc2_sqrt, float eps, float wd, float decay, int decoupled,
                            int amsgrad) {
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
    for (long long i = grid_start(); i < n; i += grid_stride()) {
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
QUADRA_EXPORT(adam_f32)

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

// pool.cu — 2-d pooling with PyTorch's semantics (floor mode, no dilation), as
// src/ops/pool/cpu.rs: max pooling (padding acts as −inf), average pooling
// (count_include_pad = True: every window divides by kh·kw) and global average pooling.
//
// x: (P, H, W) planes (P = N·C) → y: (P, Ho, Wo), Ho = (H + 2·ph − kh)/sh + 1.
// Every kernel is a 1-D grid-stride loop over its outputs (any grid, any 1-D block).
// The backward kernels are gathers — each dx element sums, in a fixed order, the outputs
// whose window covers it — so no atomics are needed and results are deterministic; the
// order (oy, then ox, ascending) is the CPU engine's scatter order, so the sums agree bit
// for bit with it.
#include "common.cuh"

using quadra::grid_start;
using quadra::grid_stride;

namespace quadra_pool {
// The in-bounds range [lo, hi) of input rows (or columns) read by output position o.
__device__ __forceinline__ void window(int o, int stride, int pad, int k, int size, int* lo, int* hi) {
    const int start = o * stride - pad;
    *lo = start > 0 ? start : 0;
    const int end = start + k;
    *hi = end < size ? end : size;
}

// The outputs [lo, hi] (inclusive; empty when lo > hi) whose window covers input i:
// o·stride − pad ≤ i < o·stride − pad + k.
__device__ __forceinline__ void covering(int i, int stride, int pad, int k, int out, int* lo, int* hi) {
    const int t = i + pad;
    *lo = t < k ? 0 : (t - k) / stride + 1;
    const int h = t / stride;
    *hi = h < out - 1 ? h : out - 1;
}
}  // namespace quadra_pool

// y = max over each window, idx = h·W + w of the maximum within its plane (PyTorch's
// `indices`). Padded positions never win; on ties the first maximum in row-major order
// wins; a NaN wins over numbers. x: (P, H, W); y, idx: (P, Ho, Wo).
QUADRA_KERNEL void maxpool2d_forward_f32(const float* __restrict__ x, float* __restrict__ y,
                                         int* __restrict__ idx, int P, int H, int W, int Ho, int Wo, int kh,
                                         int kw, int sh, int sw, int ph, int pw) {
    const long long total = static_cast<long long>(P) * Ho * Wo;
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        const int ox = static_cast<int>(i % Wo), oy = static_cast<int>((i / Wo) % Ho);
        const long long p = i / (static_cast<long long>(Wo) * Ho);
        const float* xp = x + p * H * W;
        int y0, y1, x0, x1;
        quadra_pool::window(oy, sh, ph, kh, H, &y0, &y1);
        quadra_pool::window(ox, sw, pw, kw, W, &x0, &x1);
        // padding ≤ kernel/2 (checked on the host) makes every window non-empty
        int best = y0 * W + x0;
        float m = xp[best];
        for (int iy = y0; iy < y1; ++iy)
            for (int ix = x0; ix < x1; ++ix) {
                const float v = xp[iy * W + ix];
                if (v > m || (v != v && m == m)) {
                    m = v;
                    best = iy * W + ix;
                }
            }
        y[i] = m;
        idx[i] = best;
    }
}
QUADRA_EXPORT(maxpool2d_forward_f32)

// dx[p, iy, ix] = Σ g[p, oy, ox] over the outputs whose saved maximum is (iy, ix); a gather
// over the windows covering (iy, ix). g, idx: (P, Ho, Wo); dx: (P, H, W), overwritten.
QUADRA_KERNEL void maxpool2d_backward_f32(const float* __restrict__ g, const int* __restrict__ idx,
                                          float* __restrict__ dx, int P, int H, int W, int Ho, int Wo, int kh,
                                          int kw, int sh, int sw, int ph, int pw) {
    const long long total = static_cast<long long>(P) * H * W;
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        const int ix = static_cast<int>(i % W), iy = static_cast<int>((i / W) % H);
        const long long p = i / (static_cast<long long>(W) * H);
        const int here = iy * W + ix;
        const long long base = p * Ho * Wo;
        int oy0, oy1, ox0, ox1;
        quadra_pool::covering(iy, sh, ph, kh, Ho, &oy0, &oy1);
        quadra_pool::covering(ix, sw, pw, kw, Wo, &ox0, &ox1);
        float acc = 0.0f;
        for (int oy = oy0; oy <= oy1; ++oy)
            for (int ox = ox0; ox <= ox1; ++ox) {
                const long long o = base + static_cast<long long>(oy) * Wo + ox;
                if (idx[o] == here) acc += g[o];
            }
        dx[i] = acc;
    }
}
QUADRA_EXPORT(maxpool2d_backward_f32)

// y = (Σ of the window's real elements, row-major, in f32) · inv, inv = 1/(kh·kw).
// x: (P, H, W); y: (P, Ho, Wo)
QUADRA_KERNEL void avgpool2d_forward_f32(const float* __restrict__ x, float* __restrict__ y, int P, int H, int W,
                                         int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw,
                                         float inv) {
    const long long total = static_cast<long long>(P) * Ho * Wo;
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        const int ox = static_cast<int>(i % Wo), oy = static_cast<int>((i / Wo) % Ho);
        const long long p = i / (static_cast<long long>(Wo) * Ho);
        const float* xp = x + p * H * W;
        int y0, y1, x0, x1;
        quadra_pool::window(oy, sh, ph, kh, H, &y0, &y1);
        quadra_pool::window(ox, sw, pw, kw, W, &x0, &x1);
        float s = 0.0f;
        for (int iy = y0; iy < y1; ++iy)
            for (int ix = x0; ix < x1; ++ix) s += xp[iy * W + ix];
        y[i] = s * inv;
    }
}
QUADRA_EXPORT(avgpool2d_forward_f32)

// dx[p, iy, ix] = Σ g[p, oy, ox]·inv over the windows covering (iy, ix) (padding never
// receives gradient). g: (P, Ho, Wo); dx: (P, H, W), overwritten.
QUADRA_KERNEL void avgpool2d_backward_f32(const float* __restrict__ g, float* __restrict__ dx, int P, int H, int W,
                                          int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw,
                                          float inv) {
    const long long total = static_cast<long long>(P) * H * W;
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        const int ix = static_cast<int>(i % W), iy = static_cast<int>((i / W) % H);
        const long long p = i / (static_cast<long long>(W) * H);
        const long long base = p * Ho * Wo;
        int oy0, oy1, ox0, ox1;
        quadra_pool::covering(iy, sh, ph, kh, Ho, &oy0, &oy1);
        quadra_pool::covering(ix, sw, pw, kw, Wo, &ox0, &ox1);
        float acc = 0.0f;
        for (int oy = oy0; oy <= oy1; ++oy)
            for (int ox = ox0; ox <= ox1; ++ox) acc += g[base + static_cast<long long>(oy) * Wo + ox] * inv;
        dx[i] = acc;
    }
}
QUADRA_EXPORT(avgpool2d_backward_f32)

// y[p] = (Σ of plane p, in double, in order) · inv, inv = 1/L. x: (P, L); y: (P)
QUADRA_KERNEL void global_avg_forward_f32(const float* __restrict__ x, float* __restrict__ y, int P, int L,
                                          float inv) {
    for (long long p = grid_start(); p < P; p += grid_stride()) {
        const float* xp = x + p * L;
        double s = 0.0;
        for (int l = 0; l < L; ++l) s += xp[l];
        y[p] = static_cast<float>(s) * inv;
    }
}
QUADRA_EXPORT(global_avg_forward_f32)

// dx[p, l] = g[p]·inv. g: (P); dx: (P, L)
QUADRA_KERNEL void global_avg_backward_f32(const float* __restrict__ g, float* __restrict__ dx, int P, int L,
                                           float inv) {
    const long long total = static_cast<long long>(P) * L;
    for (long long i = grid_start(); i < total; i += grid_stride()) dx[i] = g[i / L] * inv;
}
QUADRA_EXPORT(global_avg_backward_f32)

// elementwise.cu — elementwise arithmetic on flat f32 buffers: what gradient accumulation,
// residual sums and optimizer bookkeeping need. 1-D grid-stride loops: any grid, any 1-D
// block (block = 256, grid = ceil(n / 256) is typical).
#include "common.cuh"

using quadra::grid_start;
using quadra::grid_stride;

// y[i] = a[i] + b[i]        a, b, y: (n); y may alias a or b
QUADRA_KERNEL void add_f32(const float* a, const float* b, float* y, long long n) {
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = a[i] + b[i];
}
QUADRA_EXPORT(add_f32)

// y[i] += alpha · x[i]      x, y: (n)
QUADRA_KERNEL void axpy_f32(float alpha, const float* __restrict__ x, float* __restrict__ y, long long n) {
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] += alpha * x[i];
}
QUADRA_EXPORT(axpy_f32)

// y[i] = alpha · x[i]       x, y: (n); y may alias x
QUADRA_KERNEL void scale_f32(float alpha, const float* x, float* y, long long n) {
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = alpha * x[i];
}
QUADRA_EXPORT(scale_f32)

// y[i] = value              y: (n)
QUADRA_KERNEL void fill_f32(float value, float* __restrict__ y, long long n) {
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = value;
}
QUADRA_EXPORT(fill_f32)

// y[e] += Σ_b x[b·n + e] for e < n, the B partials added in order b = 0, 1, …
// x: (B, n), y: (n). What a batched GEMM's per-item results need to become one sum.
QUADRA_KERNEL void add_batch_sum_f32(const float* __restrict__ x, float* __restrict__ y, long long B, long long n) {
    for (long long e = grid_start(); e < n; e += grid_stride()) {
        float acc = y[e];
        for (long long b = 0; b < B; ++b) acc += x[b * n + e];
        y[e] = acc;
    }
}
QUADRA_EXPORT(add_batch_sum_f32)

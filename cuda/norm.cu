// norm.cu — batch normalisation (PyTorch's BatchNorm1d/2d) over (N, C, L) tensors:
// L = H·W for 2-d, 1 for a 1-d (N, C) input, L for a 1-d (N, C, L) input.
//
// Training forward: bn_stats_f32 (cuda/reduce.cu) → mean, biased var, rstd (C); then
// bn_update_running_f32 and bn_normalize_f32. Eval forward: bn_rstd_f32 of the running
// variance, then bn_normalize_f32 with the running mean. Backward: bn_grad_sums_f32 (per
// channel Σg, Σg·x̂ — these are dβ and dγ) and bn_backward_input_f32.
//
// The elementwise kernels are 1-D grid-stride loops (any grid, any 1-D block); the
// reduction is one block per channel (grid-stride over channels), block a multiple of 32,
// ≤ 1024, f64 accumulation in a fixed order (deterministic). The f32 arithmetic of
// normalize and backward_input follows src/ops/norm/cpu.rs term by term.
#include "common.cuh"
#include "block_reduce.cuh"

using quadra::grid_start;
using quadra::grid_stride;

// rstd[c] = 1/√(var[c] + eps), computed in double      var, rstd: (C)
QUADRA_KERNEL void bn_rstd_f32(const float* __restrict__ var, float* __restrict__ rstd, int C, float eps) {
    for (long long c = grid_start(); c < C; c += grid_stride())
        rstd[c] = static_cast<float>(1.0 / sqrt(static_cast<double>(var[c]) + static_cast<double>(eps)));
}
QUADRA_EXPORT(bn_rstd_f32)

// New running statistics from the old ones and the batch's (PyTorch's momentum convention,
// unbiased variance over `count` values per channel): rm_new = (1 − m)·rm + m·mean,
// rv_new = (1 − m)·rv + m·var·count/(count − 1) (count > 1), in double, as the CPU engine
// (ops::norm). The old buffers are only read (a state dict taken earlier may share them).
// rm, rv, mean, var, rm_new, rv_new: (C). BatchNorm's channels and quadralib-bn's 3C.
QUADRA_KERNEL void bn_update_running_f32(const float* __restrict__ rm, const float* __restrict__ rv,
                                         const float* __restrict__ mean, const float* __restrict__ var,
                                         float* __restrict__ rm_new, float* __restrict__ rv_new, int C,
                                         long long count, float momentum) {
    const double m = momentum;
    const double u = count > 1 ? static_cast<double>(count) / static_cast<double>(count - 1) : 1.0;
    for (long long c = grid_start(); c < C; c += grid_stride()) {
        rm_new[c] = static_cast<float>((1.0 - m) * rm[c] + m * mean[c]);
        rv_new[c] = static_cast<float>((1.0 - m) * rv[c] + m * var[c] * u);
    }
}
QUADRA_EXPORT(bn_update_running_f32)

// y = γ·(x − mean)·rstd + β per channel, as a = γ·rstd, b = β − mean·a, y = x·a + b.
// x, y: (N, C, L); mean, rstd, gamma, beta: (C)
QUADRA_KERNEL void bn_normalize_f32(const float* __restrict__ x, const float* __restrict__ mean,
                                    const float* __restrict__ rstd, const float* __restrict__ gamma,
                                    const float* __restrict__ beta, float* __restrict__ y, int N, int C, int L) {
    const long long total = static_cast<long long>(N) * C * L;
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        const long long c = (i / L) % C;
        const float a = gamma[c] * rstd[c];
        const float b = beta[c] - mean[c] * a;
        y[i] = x[i] * a + b;
    }
}
QUADRA_EXPORT(bn_normalize_f32)

// Per channel: sum_g[c] = Σ_{n,l} g, sum_gx[c] = Σ_{n,l} g·x̂ with x̂ = (x − mean)·rstd.
// x, g: (N, C, L); mean, rstd, sum_g, sum_gx: (C). One block per channel.
QUADRA_KERNEL void bn_grad_sums_f32(const float* __restrict__ x, const float* __restrict__ g,
                                    const float* __restrict__ mean, const float* __restrict__ rstd,
                                    float* __restrict__ sum_g, float* __restrict__ sum_gx, int N, int C, int L) {
    const long long M = static_cast<long long>(N) * L;
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        const double mu = mean[c], rs = rstd[c];
        double sg = 0.0, sgx = 0.0;
        for (long long i = threadIdx.x; i < M; i += blockDim.x) {
            const long long n = i / L, l = i % L;
            const long long k = (n * C + c) * L + l;
            const double gv = g[k];
            sg += gv;
            sgx += gv * ((x[k] - mu) * rs);
        }
        sg = quadra::block_sum(sg);
        sgx = quadra::block_sum(sgx);
        if (threadIdx.x == 0) {
            sum_g[c] = static_cast<float>(sg);
            sum_gx[c] = static_cast<float>(sgx);
        }
    }
}
QUADRA_EXPORT(bn_grad_sums_f32)

// Training-mode input gradient: dx = γ·rstd·(g − Σg/M − x̂·Σg·x̂/M), M = N·L.
// x, g, dx: (N, C, L); mean, rstd, gamma, sum_g, sum_gx: (C)
QUADRA_KERNEL void bn_backward_input_f32(const float* __restrict__ x, const float* __restrict__ g,
                                         const float* __restrict__ mean, const float* __restrict__ rstd,
                                         const float* __restrict__ gamma, const float* __restrict__ sum_g,
                                         const float* __restrict__ sum_gx, float* __restrict__ dx, int N, int C,
                                         int L) {
    const long long total = static_cast<long long>(N) * C * L;
    const float m = static_cast<float>(static_cast<long long>(N) * L);
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        const long long c = (i / L) % C;
        const float k = gamma[c] * rstd[c];
        const float mg = sum_g[c] / m;
        const float mgx = sum_gx[c] / m;
        const float xh = (x[i] - mean[c]) * rstd[c];
        dx[i] = k * (g[i] - mg - xh * mgx);
    }
}
QUADRA_EXPORT(bn_backward_input_f32)

// quadratic.cu — fused epilogues of the quadratic neurons and their backward.
//
// The branches of a quadratic layer are one stacked GEMM / convolution whose output holds
// nb branch planes per sample: z (N, nb·C, L), branch k of channel c at
//     z[((n·nb + k)·C + c)·L + l]          (k = 0: a, 1: b, 2: c)
// The epilogue turns them into the layer output y (N, C, L); the backward turns the output
// gradient gy (N, C, L) into the stacked branch gradient gz (N, nb·C, L).
//
// Elementwise kernels use a 1-D grid-stride loop over the N·C·L outputs: any grid and any
// 1-D block work (block = (256,1,1), grid = ceil(N·C·L / 256) is typical).
#include "common.cuh"
#include "block_reduce.cuh"

namespace quadra {

// Offset of branch k's plane for output element i = (n·C + c)·L + l.
__device__ __forceinline__ long long branch_at(long long i, long long CL, int nb, int k) {
    const long long n = i / CL;
    return (n * nb + k) * CL + (i - n * CL);
}

}  // namespace quadra

using quadra::branch_at;
using quadra::grid_start;
using quadra::grid_stride;

// ---- quadralib: y = a ⊙ b + c      z: (N, 3C, L) → y: (N, C, L) ----
QUADRA_KERNEL void quadralib_fwd_f32(const float* __restrict__ z, float* __restrict__ y, int N, int C, int L) {
    const long long CL = static_cast<long long>(C) * L, total = N * CL;
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        const float a = z[branch_at(i, CL, 3, 0)], b = z[branch_at(i, CL, 3, 1)], c = z[branch_at(i, CL, 3, 2)];
        y[i] = a * b + c;
    }
}
QUADRA_EXPORT(quadralib_fwd_f32)

// gy: (N, C, L) → gz: (N, 3C, L):  ga = gy·b, gb = gy·a, gc = gy
QUADRA_KERNEL void quadralib_bwd_f32(const float* __restrict__ z, const float* __restrict__ gy,
                                     float* __restrict__ gz, int N, int C, int L) {
    const long long CL = static_cast<long long>(C) * L, total = N * CL;
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        const long long ia = branch_at(i, CL, 3, 0), ib = branch_at(i, CL, 3, 1), ic = branch_at(i, CL, 3, 2);
        const float g = gy[i];
        gz[ia] = g * z[ib];
        gz[ib] = g * z[ia];
        gz[ic] = g;
    }
}
QUADRA_EXPORT(quadralib_bwd_f32)

// ---- t4: y = a ⊙ b      z: (N, 2C, L) → y: (N, C, L) ----
QUADRA_KERNEL void t4_fwd_f32(const float* __restrict__ z, float* __restrict__ y, int N, int C, int L) {
    const long long CL = static_cast<long long>(C) * L, total = N * CL;
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        y[i] = z[branch_at(i, CL, 2, 0)] * z[branch_at(i, CL, 2, 1)];
    }
}
QUADRA_EXPORT(t4_fwd_f32)

// gy: (N, C, L) → gz: (N, 2C, L):  ga = gy·b, gb = gy·a
QUADRA_KERNEL void t4_bwd_f32(const float* __restrict__ z, const float* __restrict__ gy, float* __restrict__ gz,
                              int N, int C, int L) {
    const long long CL = static_cast<long long>(C) * L, total = N * CL;
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        const long long ia = branch_at(i, CL, 2, 0), ib = branch_at(i, CL, 2, 1);
        const float g = gy[i];
        gz[ia] = g * z[ib];
        gz[ib] = g * z[ia];
    }
}
QUADRA_EXPORT(t4_bwd_f32)

// ---- t3: y = a²      z: (N, C, L) → y: (N, C, L) ----
QUADRA_KERNEL void t3_fwd_f32(const float* __restrict__ z, float* __restrict__ y, int N, int C, int L) {
    const long long total = static_cast<long long>(N) * C * L;
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        const float a = z[i];
        y[i] = a * a;
    }
}
QUADRA_EXPORT(t3_fwd_f32)

// gy: (N, C, L) → gz: (N, C, L):  ga = 2·a·gy
QUADRA_KERNEL void t3_bwd_f32(const float* __restrict__ z, const float* __restrict__ gy, float* __restrict__ gz,
                              int N, int C, int L) {
    const long long total = static_cast<long long>(N) * C * L;
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        gz[i] = 2.0f * z[i] * gy[i];
    }
}
QUADRA_EXPORT(t3_bwd_f32)

// ---- quadralib-bn: y = u_a ⊙ u_b + u_c,  u_k = γ_k·(z_k − μ_k)·rstd_k + β_k ----
// Per-branch-channel parameters mean, rstd, gamma, beta: (3C), entry k·C + c.

__device__ __forceinline__ float bn_affine(float z, int kc, const float* mean, const float* rstd, const float* gamma,
                                           const float* beta) {
    return gamma[kc] * ((z - mean[kc]) * rstd[kc]) + beta[kc];
}

// z: (N, 3C, L) → y: (N, C, L)
QUADRA_KERNEL void quadralib_bn_fwd_f32(const float* __restrict__ z, const float* __restrict__ mean,
                                        const float* __restrict__ rstd, const float* __restrict__ gamma,
                                        const float* __restrict__ beta, float* __restrict__ y, int N, int C, int L) {
    const long long CL = static_cast<long long>(C) * L, total = N * CL;
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        const int c = static_cast<int>((i % CL) / L);
        const float ua = bn_affine(z[branch_at(i, CL, 3, 0)], c, mean, rstd, gamma, beta);
        const float ub = bn_affine(z[branch_at(i, CL, 3, 1)], C + c, mean, rstd, gamma, beta);
        const float uc = bn_affine(z[branch_at(i, CL, 3, 2)], 2 * C + c, mean, rstd, gamma, beta);
        y[i] = ua * ub + uc;
    }
}
QUADRA_EXPORT(quadralib_bn_fwd_f32)

// Backward, step 1 (reduction): per branch-channel kc = k·C + c, over the M = N·L positions,
//     dbeta[kc] = Σ du_k,   dgamma[kc] = Σ du_k·ẑ_k,   ẑ_k = (z_k − μ_k)·rstd_k,
// with du_a = gy·u_b, du_b = gy·u_a, du_c = gy (recomputed from z; nothing stored).
// These are the γ/β gradients and the sums step 2 needs.
// Launch: grid = (3C), block = (B,1,1) with B a multiple of 32 (≤ 1024).
// z: (N, 3C, L), gy: (N, C, L) → dgamma, dbeta: (3C)
QUADRA_KERNEL void quadralib_bn_bwd_reduce_f32(const float* __restrict__ z, const float* __restrict__ gy,
                                               const float* __restrict__ mean, const float* __restrict__ rstd,
                                               const float* __restrict__ gamma, const float* __restrict__ beta,
                                               float* __restrict__ dgamma, float* __restrict__ dbeta, int N, int C,
                                               int L) {
    const long long CL = static_cast<long long>(C) * L;
    const long long M = static_cast<long long>(N) * L;
    for (int kc = blockIdx.x; kc < 3 * C; kc += gridDim.x) {
        const int k = kc / C, c = kc % C;
        double sg = 0.0, sgx = 0.0;
        for (long long j = threadIdx.x; j < M; j += blockDim.x) {
            const long long n = j / L, l = j % L;
            const long long i = (n * C + c) * L + l;  // output element
            const float g = gy[i];
            float du;
            if (k == 2) {
                du = g;
            } else {
                const int other = 1 - k;
                du = g * bn_affine(z[branch_at(i, CL, 3, other)], other * C + c, mean, rstd, gamma, beta);
            }
            const float zh = (z[branch_at(i, CL, 3, k)] - mean[kc]) * rstd[kc];
            sg += du;
            sgx += static_cast<double>(du) * zh;
        }
        sg = quadra::block_sum(sg);
        sgx = quadra::block_sum(sgx);
        if (threadIdx.x == 0) {
            dbeta[kc] = static_cast<float>(sg);
            dgamma[kc] = static_cast<float>(sgx);
        }
    }
}
QUADRA_EXPORT(quadralib_bn_bwd_reduce_f32)

// Backward, step 2 (elementwise): the stacked branch gradient gz (N, 3C, L),
//     training (batch statistics):  gz_k = γ_k·rstd_k·(du_k − dbeta_k/M − ẑ_k·dgamma_k/M)
//     eval (running statistics):    gz_k = γ_k·rstd_k·du_k
// with dgamma, dbeta from step 1 and M = N·L.
QUADRA_KERNEL void quadralib_bn_bwd_f32(const float* __restrict__ z, const float* __restrict__ gy,
                                        const float* __restrict__ mean, const float* __restrict__ rstd,
                                        const float* __restrict__ gamma, const float* __restrict__ beta,
                                        const float* __restrict__ dgamma, const float* __restrict__ dbeta,
                                        float* __restrict__ gz, int N, int C, int L, int training) {
    const long long CL = static_cast<long long>(C) * L, total = N * CL;
    const float inv_m = 1.0f / static_cast<float>(static_cast<long long>(N) * L);
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        const int c = static_cast<int>((i % CL) / L);
        const long long idx[3] = {branch_at(i, CL, 3, 0), branch_at(i, CL, 3, 1), branch_at(i, CL, 3, 2)};
        const float g = gy[i];
        const float ua = bn_affine(z[idx[0]], c, mean, rstd, gamma, beta);
        const float ub = bn_affine(z[idx[1]], C + c, mean, rstd, gamma, beta);
        const float du[3] = {g * ub, g * ua, g};
        for (int k = 0; k < 3; ++k) {
            const int kc = k * C + c;
            const float scale = gamma[kc] * rstd[kc];
            if (training) {
                const float zh = (z[idx[k]] - mean[kc]) * rstd[kc];
                gz[idx[k]] = scale * (du[k] - dbeta[kc] * inv_m - zh * dgamma[kc] * inv_m);
            } else {
                gz[idx[k]] = scale * du[k];
            }
        }
    }
}
QUADRA_EXPORT(quadralib_bn_bwd_f32)

// ---------------------------------------------------------------------------------------
// What the layers (src/nn/quadratic/gpu.rs) add to the epilogues above: the lifted inputs
// of t1 / t2 / fan, the t1 and fan epilogues, quadralib with only a‖b kept, quadralib-bn
// with A‖B kept (stored mode), running statistics, and a channel slice. The definitions
// are the CPU engine's (src/ops/quadratic/cpu.rs); biases are added by the first-order maps
// (bias_add_f32) before an epilogue runs, as on the CPU.
// ---------------------------------------------------------------------------------------

// ---- t1: y = q + z,  q = u ⊗ u mapped by W_a (+ nothing), z = W_b·u (+ b) ----
// q, z, y: (N, C, L)
QUADRA_KERNEL void t1_fwd_f32(const float* __restrict__ q, const float* __restrict__ z, float* __restrict__ y, int N,
                              int C, int L) {
    const long long total = static_cast<long long>(N) * C * L;
    for (long long i = grid_start(); i < total; i += grid_stride()) y[i] = q[i] + z[i];
}
QUADRA_EXPORT(t1_fwd_f32)

// ---- fan: y = r ⊙ g + q,  z: (N, 2C, L) [r, g] (biases b_r, b_g in), q: (N, C, L) = W_b(x ⊙ x) + c ----
// Backward: gz = t4_bwd_f32 on (r, g); the gradient of q is gy itself.
QUADRA_KERNEL void fan_fwd_f32(const float* __restrict__ z, const float* __restrict__ q, float* __restrict__ y, int N,
                               int C, int L) {
    const long long CL = static_cast<long long>(C) * L, total = N * CL;
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        y[i] = z[branch_at(i, CL, 2, 0)] * z[branch_at(i, CL, 2, 1)] + q[i];
    }
}
QUADRA_EXPORT(fan_fwd_f32)

// ---- quadralib backward from a‖b only (what stored mode keeps; recompute recomputes just
// those two planes): ab: (N, 2C, L), gy: (N, C, L) → gz: (N, 3C, L)
//     ga = gy·b, gb = gy·a, gc = gy
QUADRA_KERNEL void quadralib_bwd_ab_f32(const float* __restrict__ ab, const float* __restrict__ gy,
                                        float* __restrict__ gz, int N, int C, int L) {
    const long long CL = static_cast<long long>(C) * L, total = N * CL;
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        const float a = ab[branch_at(i, CL, 2, 0)], b = ab[branch_at(i, CL, 2, 1)], g = gy[i];
        gz[branch_at(i, CL, 3, 0)] = g * b;
        gz[branch_at(i, CL, 3, 1)] = g * a;
        gz[branch_at(i, CL, 3, 2)] = g;
    }
}
QUADRA_EXPORT(quadralib_bwd_ab_f32)

// ---- t2 / fan lift: y = x ⊙ x      x, y: (n) ----
QUADRA_KERNEL void quad_square_f32(const float* __restrict__ x, float* __restrict__ y, long long n) {
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = x[i] * x[i];
}
QUADRA_EXPORT(quad_square_f32)

// Its adjoint: dx = [dx +] 2·x ⊙ dxx      x, dxx, dx: (n); accumulate: keep dx's values
QUADRA_KERNEL void quad_square_bwd_f32(const float* __restrict__ x, const float* __restrict__ dxx,
                                       float* __restrict__ dx, long long n, int accumulate) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        const float d = 2.0f * x[i] * dxx[i];
        dx[i] = accumulate ? dx[i] + d : d;
    }
}
QUADRA_EXPORT(quad_square_bwd_f32)

// ---- t1 lift: the outer products of every input vector u (an im2col patch column, or a
// linear layer's input row with L = 1): u: (N, K, L) → o: (N, K², L), row i·K + j = u_i ⊙ u_j
QUADRA_KERNEL void quad_outer_f32(const float* __restrict__ u, float* __restrict__ o, int N, int K, int L) {
    const long long KK = static_cast<long long>(K) * K, total = N * KK * L;
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        const long long l = i % L, r = (i / L) % KK, n = i / (KK * L);
        const long long a = r / K, b = r % K;
        o[i] = u[(n * K + a) * L + l] * u[(n * K + b) * L + l];
    }
}
QUADRA_EXPORT(quad_outer_f32)

// Its adjoint at u: du_i = Σ_j (do_ij + do_ji)·u_j      do: (N, K², L), u, du: (N, K, L)
QUADRA_KERNEL void quad_outer_bwd_f32(const float* __restrict__ dout, const float* __restrict__ u,
                                      float* __restrict__ du, int N, int K, int L) {
    const long long KK = static_cast<long long>(K) * K, total = static_cast<long long>(N) * K * L;
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        const long long l = i % L, a = (i / L) % K, n = i / (static_cast<long long>(K) * L);
        float s = 0.0f;
        for (long long b = 0; b < K; ++b) {
            s += (dout[(n * KK + a * K + b) * L + l] + dout[(n * KK + b * K + a) * L + l]) * u[(n * K + b) * L + l];
        }
        du[i] = s;
    }
}
QUADRA_EXPORT(quad_outer_bwd_f32)

// ---- channel slice: dst (N, Md, L) = src (N, Ms, L) channels [c0, c0 + Md) ----
// (stored quadralib keeps a‖b of z; recompute takes the first rows of the stacked weight)
QUADRA_KERNEL void quad_narrow_f32(const float* __restrict__ src, float* __restrict__ dst, int N, int Ms, int L,
                                   int c0, int Md) {
    const long long total = static_cast<long long>(N) * Md * L;
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        const long long l = i % L, c = (i / L) % Md, n = i / (static_cast<long long>(Md) * L);
        dst[i] = src[(n * Ms + c0 + c) * L + l];
    }
}
QUADRA_EXPORT(quad_narrow_f32)

// ---- quadralib-bn, stored mode: the forward also writes A‖B; the backward reads them ----
// Same formulas as quadralib_bn_fwd_f32 / _bwd_reduce_f32 / _bwd_f32 above (bn_affine), so
// stored and recompute modes agree bit for bit.

// z: (N, 3C, L) → y: (N, C, L), ab: (N, 2C, L) [A = u_a, B = u_b]
QUADRA_KERNEL void quadralib_bn_fwd_ab_f32(const float* __restrict__ z, const float* __restrict__ mean,
                                           const float* __restrict__ rstd, const float* __restrict__ gamma,
                                           const float* __restrict__ beta, float* __restrict__ y,
                                           float* __restrict__ ab, int N, int C, int L) {
    const long long CL = static_cast<long long>(C) * L, total = N * CL;
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        const int c = static_cast<int>((i % CL) / L);
        const float ua = bn_affine(z[branch_at(i, CL, 3, 0)], c, mean, rstd, gamma, beta);
        const float ub = bn_affine(z[branch_at(i, CL, 3, 1)], C + c, mean, rstd, gamma, beta);
        const float uc = bn_affine(z[branch_at(i, CL, 3, 2)], 2 * C + c, mean, rstd, gamma, beta);
        ab[branch_at(i, CL, 2, 0)] = ua;
        ab[branch_at(i, CL, 2, 1)] = ub;
        y[i] = ua * ub + uc;
    }
}
QUADRA_EXPORT(quadralib_bn_fwd_ab_f32)

// Step 1 with A‖B kept: dbeta[kc] = Σ du_k, dgamma[kc] = Σ du_k·ẑ_k (du_a = gy·B, du_b = gy·A,
// du_c = gy). Launch: grid = (3C), block a multiple of 32 (≤ 1024).
QUADRA_KERNEL void quadralib_bn_bwd_reduce_ab_f32(const float* __restrict__ z, const float* __restrict__ ab,
                                                  const float* __restrict__ gy, const float* __restrict__ mean,
                                                  const float* __restrict__ rstd, float* __restrict__ dgamma,
                                                  float* __restrict__ dbeta, int N, int C, int L) {
    const long long CL = static_cast<long long>(C) * L;
    const long long M = static_cast<long long>(N) * L;
    for (int kc = blockIdx.x; kc < 3 * C; kc += gridDim.x) {
        const int k = kc / C, c = kc % C;
        double sg = 0.0, sgx = 0.0;
        for (long long j = threadIdx.x; j < M; j += blockDim.x) {
            const long long n = j / L, l = j % L;
            const long long i = (n * C + c) * L + l;
            const float g = gy[i];
            const float du = k == 2 ? g : g * ab[branch_at(i, CL, 2, 1 - k)];
            const float zh = (z[branch_at(i, CL, 3, k)] - mean[kc]) * rstd[kc];
            sg += du;
            sgx += static_cast<double>(du) * zh;
        }
        sg = quadra::block_sum(sg);
        sgx = quadra::block_sum(sgx);
        if (threadIdx.x == 0) {
            dbeta[kc] = static_cast<float>(sg);
            dgamma[kc] = static_cast<float>(sgx);
        }
    }
}
QUADRA_EXPORT(quadralib_bn_bwd_reduce_ab_f32)

// Step 2 with A‖B kept (training statistics): gz_k = γ_k·rstd_k·(du_k − dbeta_k/M − ẑ_k·dgamma_k/M)
QUADRA_KERNEL void quadralib_bn_bwd_ab_f32(const float* __restrict__ z, const float* __restrict__ ab,
                                           const float* __restrict__ gy, const float* __restrict__ mean,
                                           const float* __restrict__ rstd, const float* __restrict__ gamma,
                                           const float* __restrict__ dgamma, const float* __restrict__ dbeta,
                                           float* __restrict__ gz, int N, int C, int L) {
    const long long CL = static_cast<long long>(C) * L, total = N * CL;
    const float inv_m = 1.0f / static_cast<float>(static_cast<long long>(N) * L);
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        const int c = static_cast<int>((i % CL) / L);
        const long long idx[3] = {branch_at(i, CL, 3, 0), branch_at(i, CL, 3, 1), branch_at(i, CL, 3, 2)};
        const float g = gy[i];
        const float du[3] = {g * ab[branch_at(i, CL, 2, 1)], g * ab[branch_at(i, CL, 2, 0)], g};
        for (int k = 0; k < 3; ++k) {
            const int kc = k * C + c;
            const float scale = gamma[kc] * rstd[kc];
            const float zh = (z[idx[k]] - mean[kc]) * rstd[kc];
            gz[idx[k]] = scale * (du[k] - dbeta[kc] * inv_m - zh * dgamma[kc] * inv_m);
        }
    }
}
QUADRA_EXPORT(quadralib_bn_bwd_ab_f32)

// (running statistics and eval-mode rstd of the 3C stacked channels: norm.cu's
// bn_update_running_f32 and bn_rstd_f32)

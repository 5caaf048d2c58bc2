// reduce.cu — per-channel reductions over (N, C, L) tensors (what batch-norm statistics
// need). One block per channel (grid-stride over channels when gridDim.x < C); the block's
// threads stride over the N·L values of the channel and combine with warp shuffles and
// shared memory (quadra::block_sum). Accumulation is in double, in a fixed order.
// Launch: block = (B, 1, 1) with B a multiple of 32, ≤ 1024; no dynamic shared memory.
#include "common.cuh"
#include "block_reduce.cuh"

// x: (N, C, L) → sum[c] = Σ_{n,l} x[n,c,l], sumsq[c] = Σ_{n,l} x[n,c,l]²   (sum, sumsq: C)
QUADRA_KERNEL void channel_sum_sumsq_f32(const float* __restrict__ x, float* __restrict__ sum,
                                         float* __restrict__ sumsq, int N, int C, int L) {
    const long long M = static_cast<long long>(N) * L;
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        double s = 0.0, q = 0.0;
        for (long long i = threadIdx.x; i < M; i += blockDim.x) {
            const long long n = i / L, l = i % L;
            const double v = x[(n * C + c) * L + l];
            s += v;
            q += v * v;
        }
        s = quadra::block_sum(s);
        q = quadra::block_sum(q);
        if (threadIdx.x == 0) {
            sum[c] = static_cast<float>(s);
            sumsq[c] = static_cast<float>(q);
        }
    }
}
QUADRA_EXPORT(channel_sum_sumsq_f32)

// x: (N, C, L) → batch statistics per channel over the M = N·L values (PyTorch's training
// BatchNorm): mean[c], biased var[c] = Σ(x − mean)²/M, rstd[c] = 1/√(var[c] + eps).
// Two passes over the channel (mean first, then the centred squares): no cancellation.
QUADRA_KERNEL void bn_stats_f32(const float* __restrict__ x, float* __restrict__ mean, float* __restrict__ var,
                                float* __restrict__ rstd, int N, int C, int L, float eps) {
    const long long M = static_cast<long long>(N) * L;
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        double s = 0.0;
        for (long long i = threadIdx.x; i < M; i += blockDim.x) {
            const long long n = i / L, l = i % L;
            s += x[(n * C + c) * L + l];
        }
        const double mu = quadra::block_sum(s) / static_cast<double>(M);
        double q = 0.0;
        for (long long i = threadIdx.x; i < M; i += blockDim.x) {
            const long long n = i / L, l = i % L;
            const double d = x[(n * C + c) * L + l] - mu;
            q += d * d;
        }
        const double v = quadra::block_sum(q) / static_cast<double>(M);
        if (threadIdx.x == 0) {
            mean[c] = static_cast<float>(mu);
            var[c] = static_cast<float>(v);
            rstd[c] = static_cast<float>(1.0 / sqrt(v + static_cast<double>(eps)));
        }
    }
}
QUADRA_EXPORT(bn_stats_f32)

// loss.cu — softmax cross-entropy with label smoothing (PyTorch's
// nn.CrossEntropyLoss(label_smoothing=eps), reduction "mean"): the per-row losses and the
// gradient of the mean loss with respect to the logits, in one pass. The CPU twin is
// src/ops/loss/cpu.rs (same formulas, same f64 arithmetic).
//
// logits: (N, K) row-major; targets: (N) int class indices, already checked to be in
// [0, K) by the caller. Per row i with lse = max + log Σ_k exp(z_k − max) (no exp overflows):
//   row_loss[i]   = (1 − eps)(lse − z_y) + eps · (lse − mean_k z_k)
//   grad[i, k]    = (exp(z_k − lse) − (1 − eps)·[k = y] − eps/K) / N
//   row_correct[i] = 1 if the row's predicted class is y, else 0, the prediction chosen as
//                    the CPU's accuracy_count chooses it: index 0 when z_0 is NaN, else the
//                    first index of the NaN-ignoring maximum (first on ties)
// The caller sums row_loss (f64) in row order and divides by N, and counts row_correct.
//
// Launch: one block per row (grid-stride over rows when gridDim.x < N); block = (B, 1, 1)
// with B a multiple of 32, ≤ 1024 (the threads stride over the K classes); no dynamic
// shared memory. Sums are in double, in a fixed order (quadra::block_sum).
#include "common.cuh"
#include "block_reduce.cuh"

// Max over the block (NaN-ignoring, as fmaxf); every thread gets the result. Same contract
// as quadra::block_sum: blockDim.x a multiple of 32, every thread calls it.
__device__ __forceinline__ float xent_block_max(float v) {
    __shared__ float partial[32];
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, offset));
    const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    float m = partial[0];
    for (unsigned w = 1; w < nwarps; ++w) m = fmaxf(m, partial[w]);
    __syncthreads();  // partial[] may be reused by the next call
    return m;
}

QUADRA_KERNEL void softmax_xent_f32(const float* __restrict__ logits, const int* __restrict__ targets,
                                    float* __restrict__ grad, double* __restrict__ row_loss,
                                    int* __restrict__ row_correct, int N, int K, float eps) {
    __shared__ int first_max;  // smallest k with z[k] == max, per row
    const double e = static_cast<double>(eps);
    const double inv_n = 1.0 / static_cast<double>(N);
    const double smooth = e / static_cast<double>(K);
    for (int row = blockIdx.x; row < N; row += gridDim.x) {
        const float* z = logits + static_cast<long long>(row) * K;
        float* g = grad + static_cast<long long>(row) * K;
        float m = -INFINITY;
        for (int k = threadIdx.x; k < K; k += blockDim.x) m = fmaxf(m, z[k]);
        if (threadIdx.x == 0) first_max = K;
        m = xent_block_max(m);  // its barriers publish first_max = K to the block
        for (int k = threadIdx.x; k < K; k += blockDim.x) {
            if (z[k] == m) atomicMin(&first_max, k);
        }
        __syncthreads();
        const double mx = static_cast<double>(m);
        double s = 0.0, sz = 0.0;
        for (int k = threadIdx.x; k < K; k += blockDim.x) {
            s += exp(static_cast<double>(z[k]) - mx);
            sz += static_cast<double>(z[k]);
        }
        s = quadra::block_sum(s);
        sz = quadra::block_sum(sz);
        const double lse = mx + log(s);
        const int y = targets[row];
        if (threadIdx.x == 0) {
            row_loss[row] = (1.0 - e) * (lse - static_cast<double>(z[y])) + e * (lse - sz / static_cast<double>(K));
            // all-NaN rows have m = NaN and first_max = K: z_0 is NaN then, so 0 is chosen
            const int pred = (isnan(z[0]) || first_max >= K) ? 0 : first_max;
            row_correct[row] = pred == y ? 1 : 0;
        }
        for (int k = threadIdx.x; k < K; k += blockDim.x) {
            const double p = exp(static_cast<double>(z[k]) - lse);
            const double t = (k == y ? 1.0 - e : 0.0) + smooth;
            g[k] = static_cast<float>((p - t) * inv_n);
        }
    }
}
QUADRA_EXPORT(softmax_xent_f32)

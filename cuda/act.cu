// act.cu — elementwise activations: ReLU and dropout. Flat over the elements of a tensor of
// any shape; 1-D grid-stride loops (any grid, any 1-D block).
#include "common.cuh"

using quadra::grid_start;
using quadra::grid_stride;

// y = max(x, 0); NaN propagates (as PyTorch's relu and src/ops/act/cpu.rs).
// x, y: (n); y may alias x (in place).
QUADRA_KERNEL void relu_forward_f32(const float* x, float* y, long long n) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        const float v = x[i];
        y[i] = v < 0.0f ? 0.0f : v;
    }
}
QUADRA_EXPORT(relu_forward_f32)

// dx = g where y > 0, else 0 (PyTorch's threshold_backward reads the output y).
// g, y, dx: (n); dx may alias g.
QUADRA_KERNEL void relu_backward_f32(const float* g, const float* __restrict__ y, float* dx, long long n) {
    for (long long i = grid_start(); i < n; i += grid_stride()) dx[i] = y[i] > 0.0f ? g[i] : 0.0f;
}
QUADRA_EXPORT(relu_backward_f32)

namespace quadra_act {
// SplitMix64's output function (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
__device__ __forceinline__ unsigned long long splitmix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
}  // namespace quadra_act

// Inverted dropout with a counter-based mask: element i of draw `stream` under key `seed`
// is kept iff the high 32 bits of splitmix64(key + (i + 1)·φ) are ≥ `threshold`, where
// key = splitmix64(seed ^ splitmix64(stream)) and φ = 0x9e3779b97f4a7c15 — SplitMix64's
// sequence for that key. A kept element is multiplied by `scale` = 1/(1 − p); threshold =
// round(p·2³²) on the host, so P(keep) = 1 − threshold/2³². The mask is a pure function of
// (seed, stream, i): the backward recomputes it instead of storing it, and the same call
// gives the same mask on any grid, on the emulator and on the GPU.
// x, y: (n); y may alias x. Backward is the same kernel applied to the output gradient.
QUADRA_KERNEL void dropout_f32(const float* x, float* y, long long n, long long seed, long long stream,
                               long long threshold, float scale) {
    const unsigned long long key = quadra_act::splitmix64(static_cast<unsigned long long>(seed) ^
                                                          quadra_act::splitmix64(static_cast<unsigned long long>(stream)));
    const unsigned long long t = static_cast<unsigned long long>(threshold);
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        const unsigned long long bits =
            quadra_act::splitmix64(key + (static_cast<unsigned long long>(i) + 1ULL) * 0x9e3779b97f4a7c15ULL);
        y[i] = (bits >> 32) >= t ? x[i] * scale : 0.0f;
    }
}
QUADRA_EXPORT(dropout_f32)

// stats.cu — statistics of a tensor where it lives, for the analysis tools: counts, moments,
// range, histogram and the share of extreme values, without copying the tensor to the host.
//
// Three launches, each with a grid of G blocks of B threads (B a multiple of 32, ≤ 1024);
// every block writes its partial results to its own slot of a (G, ·) f64 array and the host
// adds the G partials in block order, so results do not depend on timing. Only finite
// values count (x − x == 0 is false for NaN and ±inf).
//   1. stats_range_f32:     partial[g] = (finite count, non-finite count, Σx, min, max)
//   2. stats_centered_f32:  partial[g] = Σ(x − mean)²
//   3. stats_histogram_f32: partial[g] = (bins counts..., extreme count); bins equal-width
//      over [lo, hi], the last bin holding hi, bin = min(⌊(x − lo)/(hi − lo)·bins⌋, bins − 1)
//      computed in double exactly as the CPU does; a block counts into shared memory
//      (dynamic, bins ints) with atomics, then writes its counts.
#include "common.cuh"
#include "block_reduce.cuh"

namespace quadra {

__device__ __forceinline__ bool finite_value(double v) { return v - v == 0.0; }

// Block-wide min / max (every thread gets the result); same calling rules as block_sum.
template <bool IsMax>
__device__ __forceinline__ double block_extreme(double v) {
    __shared__ double partial[32];
    for (int offset = 16; offset > 0; offset >>= 1) {
        const double o = __shfl_down_sync(0xffffffffu, v, offset);
        v = IsMax ? (o > v ? o : v) : (o < v ? o : v);
    }
    const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    double r = partial[0];
    for (unsigned w = 1; w < nwarps; ++w) r = IsMax ? (partial[w] > r ? partial[w] : r) : (partial[w] < r ? partial[w] : r);
    __syncthreads();
    return r;
}

}  // namespace quadra

// x: (n) → partial: (gridDim.x, 5) = (count, non-finite, sum, min, max); min/max are
// +inf/−inf for a block without finite values.
QUADRA_KERNEL void stats_range_f32(const float* __restrict__ x, long long n, double* __restrict__ partial) {
    double count = 0.0, bad = 0.0, sum = 0.0, lo = INFINITY, hi = -INFINITY;
    for (long long i = quadra::grid_start(); i < n; i += quadra::grid_stride()) {
        const double v = x[i];
        if (!quadra::finite_value(v)) {
            bad += 1.0;
            continue;
        }
        count += 1.0;
        sum += v;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    count = quadra::block_sum(count);
    bad = quadra::block_sum(bad);
    sum = quadra::block_sum(sum);
    lo = quadra::block_extreme<false>(lo);
    hi = quadra::block_extreme<true>(hi);
    if (threadIdx.x == 0) {
        double* p = partial + 5LL * blockIdx.x;
        p[0] = count;
        p[1] = bad;
        p[2] = sum;
        p[3] = lo;
        p[4] = hi;
    }
}
QUADRA_EXPORT(stats_range_f32)

// x: (n) → partial: (gridDim.x) = Σ (x − mean)² over the finite values
QUADRA_KERNEL void stats_centered_f32(const float* __restrict__ x, long long n, double mean,
                                      double* __restrict__ partial) {
    double ss = 0.0;
    for (long long i = quadra::grid_start(); i < n; i += quadra::grid_stride()) {
        const double v = x[i];
        if (quadra::finite_value(v)) ss += (v - mean) * (v - mean);
    }
    ss = quadra::block_sum(ss);
    if (threadIdx.x == 0) partial[blockIdx.x] = ss;
}
QUADRA_EXPORT(stats_centered_f32)

// x: (n) → partial: (gridDim.x, bins + 1) = histogram counts, then the count of values with
// |x − mean| > threshold. Dynamic shared memory: bins ints.
QUADRA_KERNEL void stats_histogram_f32(const float* __restrict__ x, long long n, double lo, double hi, int bins,
                                       double mean, double threshold, double* __restrict__ partial) {
    QUADRA_EXTERN_SHARED(int, counts);
    for (int b = threadIdx.x; b < bins; b += blockDim.x) counts[b] = 0;
    __syncthreads();
    const double width = hi - lo;
    double extreme = 0.0;
    for (long long i = quadra::grid_start(); i < n; i += quadra::grid_stride()) {
        const double v = x[i];
        if (!quadra::finite_value(v)) continue;
        int b = 0;
        if (width > 0.0) {
            const double t = (v - lo) / width * static_cast<double>(bins);
            b = t >= static_cast<double>(bins - 1) ? bins - 1 : static_cast<int>(t);
        }
        atomicAdd(&counts[b], 1);
        if (fabs(v - mean) > threshold) extreme += 1.0;
    }
    extreme = quadra::block_sum(extreme);
    __syncthreads();
    double* p = partial + static_cast<long long>(bins + 1) * blockIdx.x;
    for (int b = threadIdx.x; b < bins; b += blockDim.x) p[b] = counts[b];
    if (threadIdx.x == 0) p[bins] = extreme;
}
QUADRA_EXPORT(stats_histogram_f32)

// block_reduce.cuh — warp and block sums with shuffles and static shared memory.
#pragma once
#include "common.cuh"

namespace quadra {

// Tree sum over the 32 lanes of a full warp with __shfl_down_sync; lane 0 gets the total.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    return v;
}

// Sum over the block; every thread gets the total. blockDim.x must be a multiple of 32
// (≤ 1024) and blockDim.y = blockDim.z = 1; every thread of the block must call it. The
// per-warp partials are added in warp order, so the result does not depend on timing.
template <typename T>
__device__ __forceinline__ T block_sum(T v) {
    __shared__ T partial[32];
    const unsigned lane = threadIdx.x % 32;
    const unsigned warp = threadIdx.x / 32;
    const unsigned nwarps = blockDim.x / 32;
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    T total = 0;
    for (unsigned w = 0; w < nwarps; ++w) total += partial[w];
    __syncthreads();  // partial[] may be reused by the next call
    return total;
}

}  // namespace quadra

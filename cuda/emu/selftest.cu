// selftest.cu — kernels that exercise the emulator itself (tests/ops/emu_kernels.rs drives them
// through quadra::device::emu::selftest). Built into the emulator library only, not into
// the fatbin: two of them are wrong on purpose (a divergent barrier, an out-of-bounds read).
#include "../common.cuh"

// No parameters, does nothing: for launch-configuration checks.
QUADRA_KERNEL void emu_test_noop() {}
QUADRA_EXPORT(emu_test_noop)

// Reverses each block's chunk of x (blockDim.x elements, the last one shorter) through
// dynamic shared memory (blockDim.x floats) and __syncthreads; counts[block] = the number of
// positive elements of the chunk (__syncthreads_count).
QUADRA_KERNEL void emu_test_block_reverse_f32(const float* x, float* y, int* counts, int n) {
    QUADRA_EXTERN_SHARED(float, tile);
    const int base = blockIdx.x * blockDim.x;
    const int i = base + threadIdx.x;
    const int len = min(static_cast<int>(blockDim.x), n - base);
    if (i < n) tile[threadIdx.x] = x[i];
    const int positive = __syncthreads_count(i < n && x[i] > 0.0f);
    if (static_cast<int>(threadIdx.x) < len) y[i] = tile[len - 1 - threadIdx.x];
    if (threadIdx.x == 0) counts[blockIdx.x] = positive;
}
QUADRA_EXPORT(emu_test_block_reverse_f32)

// Warp shuffles and votes; blockDim.x a multiple of 32, elements ≥ n read as 0. Per element:
//   bcast   = lane 3's value                   (__shfl_sync)
//   seg     = value of lane 2 of its 16-lane segment (__shfl_sync, width 16)
//   down    = value after the shfl_down tree   (lane 0 holds the warp total)
//   xor_sum = warp total                       (__shfl_xor_sync butterfly)
//   scan    = inclusive prefix sum in the warp (__shfl_up_sync)
//   ballot  = __ballot_sync(v > 0)
//   votes   = __any_sync(v < 0) | __all_sync(v >= 0) << 1
QUADRA_KERNEL void emu_test_warp_ops_i32(const int* x, int* bcast, int* seg, int* down, int* xor_sum, int* scan,
                                         unsigned* ballot, int* votes, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned full = 0xffffffffu;
    const int lane = threadIdx.x % 32;
    const int v = i < n ? x[i] : 0;
    const int b = __shfl_sync(full, v, 3);
    const int s = __shfl_sync(full, v, 2, 16);
    int d = v;
    for (int o = 16; o > 0; o >>= 1) d += __shfl_down_sync(full, d, o);
    int t = v;
    for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(full, t, o);
    int p = v;
    for (int o = 1; o < 32; o <<= 1) {
        const int up = __shfl_up_sync(full, p, o);
        if (lane >= o) p += up;
    }
    const unsigned bal = __ballot_sync(full, v > 0);
    const int any = __any_sync(full, v < 0);
    const int all = __all_sync(full, v >= 0);
    if (i < n) {
        bcast[i] = b;
        seg[i] = s;
        down[i] = d;
        xor_sum[i] = t;
        scan[i] = p;
        ballot[i] = bal;
        votes[i] = any | (all << 1);
    }
}
QUADRA_EXPORT(emu_test_warp_ops_i32)

// Atomics over x[0..n): out_f[0] = Σ x (atomicAdd float), out_i = {Σ x, max x, min x,
// max x via an atomicCAS loop}, hist[x & 15] += 1 (atomicAdd unsigned).
QUADRA_KERNEL void emu_test_atomics_i32(const int* x, float* out_f, int* out_i, unsigned* hist, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const int v = x[i];
    atomicAdd(out_f, static_cast<float>(v));
    atomicAdd(&out_i[0], v);
    atomicMax(&out_i[1], v);
    atomicMin(&out_i[2], v);
    int old = out_i[3];
    while (old < v) {
        const int prev = atomicCAS(&out_i[3], old, v);
        if (prev == old) break;
        old = prev;
    }
    atomicAdd(&hist[v & 15], 1u);
}
QUADRA_EXPORT(emu_test_atomics_i32)

// half / bfloat16 round trips: h = bits of __float2half(x), b = bits of __float2bfloat16(x),
// back = __half2float(__float2half(x)).
QUADRA_KERNEL void emu_test_half_f32(const float* x, unsigned short* h, unsigned short* b, float* back, int n) {
    for (long long i = quadra::grid_start(); i < n; i += quadra::grid_stride()) {
        const __half hv = __float2half(x[i]);
        h[i] = __half_as_ushort(hv);
        b[i] = __bfloat16_as_ushort(__float2bfloat16(x[i]));
        back[i] = __half2float(hv);
    }
}
QUADRA_EXPORT(emu_test_half_f32)

// WRONG ON PURPOSE: odd threads return early, even threads wait at __syncthreads for them.
QUADRA_KERNEL void emu_test_divergent_barrier(int* out) {
    if (threadIdx.x % 2 == 1) return;
    __syncthreads();
    out[threadIdx.x] = 1;
}
QUADRA_EXPORT(emu_test_divergent_barrier)

// WRONG ON PURPOSE: lanes 0-15 exit, lanes 16-31 shuffle with a full-warp mask.
QUADRA_KERNEL void emu_test_divergent_shuffle(int* out) {
    if (threadIdx.x % 32 < 16) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);
}
QUADRA_EXPORT(emu_test_divergent_shuffle)

// Calls __trap() in thread `thread` of block `block`.
QUADRA_KERNEL void emu_test_trap(int block, int thread) {
    if (static_cast<int>(blockIdx.x) == block && static_cast<int>(threadIdx.x) == thread) __trap();
    __syncthreads();
}
QUADRA_EXPORT(emu_test_trap)

// WRONG ON PURPOSE: y[i] = x[i + 1] reads x[n] in the last thread (for the ASan check).
QUADRA_KERNEL void emu_test_oob_read_f32(const float* x, float* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i + 1];
}
QUADRA_EXPORT(emu_test_oob_read_f32)

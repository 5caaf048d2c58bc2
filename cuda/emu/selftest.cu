// selftest.cu — kernels that exercise the emulator itself (tests/ops/emu_kernels.rs drives them
// through quadra::device::emu::selftest, tests/ops/emu_racecheck.rs the racecheck ones).
// Built into the emulator library only, not into the fatbin. Several are wrong on purpose:
// a divergent barrier, an out-of-bounds read (for ASan), and the racecheck plants at the end
// (missing barriers, overlapping global writes, an order-dependent float atomic).
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

// ---- racecheck plants (tests/ops/emu_racecheck.rs) -------------------------------------

namespace emu_selftest {
// quadra::block_sum (cuda/block_reduce.cuh) WITHOUT its final __syncthreads(): called twice
// in a row, a warp's lane 0 may write partial[warp] for the second sum while slower threads
// still read partial[] for the first. WRONG ON PURPOSE.
__device__ __forceinline__ float racy_block_sum(float v) {
    __shared__ float partial[32];
    const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (unsigned w = 0; w < nwarps; ++w) total += partial[w];
    // the __syncthreads() that must stand here is missing
    return total;
}
}  // namespace emu_selftest

// WRONG ON PURPOSE (the race the emulator hides): per block, sums[2b] = Σ x and sums[2b + 1]
// = Σ x² over the block's chunk, through emu_selftest::racy_block_sum twice. blockDim.x a
// multiple of 32. Every schedule of the emulator gives the right sums (each thread reads the
// partials in the sweep right after the barrier, long before a warp's shuffles let its lane 0
// write again); on a GPU a fast warp can overwrite them. Racecheck must report the
// write-after-read on the static __shared__ array.
QUADRA_KERNEL void emu_test_missing_barrier_f32(const float* x, float* sums, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const float v = i < n ? x[i] : 0.0f;
    const float s = emu_selftest::racy_block_sum(v);
    const float q = emu_selftest::racy_block_sum(v * v);
    if (threadIdx.x == 0) {
        sums[2 * blockIdx.x] = s;
        sums[2 * blockIdx.x + 1] = q;
    }
}
QUADRA_EXPORT(emu_test_missing_barrier_f32)

// Each block reverses its chunk of x through dynamic shared memory (blockDim.x floats), as
// emu_test_block_reverse_f32 but with the __syncthreads() between the write and the read
// only when `sync` ≠ 0. WRONG ON PURPOSE with sync = 0: a read-after-write race.
QUADRA_KERNEL void emu_test_reverse_f32(const float* x, float* y, int n, int sync) {
    QUADRA_EXTERN_SHARED(float, tile);
    const int base = blockIdx.x * blockDim.x;
    const int i = base + threadIdx.x;
    const int len = min(static_cast<int>(blockDim.x), n - base);
    if (i < n) tile[threadIdx.x] = x[i];
    if (sync) __syncthreads();
    if (static_cast<int>(threadIdx.x) < len) y[i] = tile[len - 1 - threadIdx.x];
}
QUADRA_EXPORT(emu_test_reverse_f32)

// y[t] = x[t + 1 within its warp, cyclically] through dynamic shared memory (blockDim.x
// ints), ordered by __syncwarp() when `sync` ≠ 0 (correct: the lanes of one warp exchange
// through shared memory); without it (sync = 0) WRONG ON PURPOSE. blockDim.x a multiple of
// 32; elements ≥ n read as 0.
QUADRA_KERNEL void emu_test_warp_shared_i32(const int* x, int* y, int n, int sync) {
    QUADRA_EXTERN_SHARED(int, buf);
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int lane = threadIdx.x % 32;
    buf[threadIdx.x] = i < n ? x[i] : 0;
    if (sync) __syncwarp();
    const int v = buf[threadIdx.x - lane + (lane + 1) % 32];
    if (i < n) y[i] = v;
}
QUADRA_EXPORT(emu_test_warp_shared_i32)

// WRONG ON PURPOSE: thread i writes y[i / 2] = i, so two threads write each element (non-
// atomic overlapping global writes; the last writer wins, which depends on the order).
// y: (⌈threads/2⌉) for the launch's gridDim.x·blockDim.x threads, n = that count.
QUADRA_KERNEL void emu_test_overlapping_writes_f32(float* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i / 2] = static_cast<float>(i);
}
QUADRA_EXPORT(emu_test_overlapping_writes_f32)

// out[0] += x[i] with atomicAdd (float) for i < n: race-free, but the rounded sum depends on
// the order of the additions — on a GPU as under the emulator's schedules.
QUADRA_KERNEL void emu_test_atomic_order_f32(const float* x, float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) atomicAdd(out, x[i]);
}
QUADRA_EXPORT(emu_test_atomic_order_f32)

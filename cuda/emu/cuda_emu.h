// cuda_emu.h — the CUDA execution model on the CPU, for the kernels in cuda/*.cu.
//
// Included by cuda/common.cuh when the translation unit is NOT compiled by nvcc. The
// kernels are compiled as plain C++17 by the host compiler; cuda/emu/runtime.cpp runs each
// launch deterministically: blocks one after another on the calling OS thread, one
// ucontext fiber per GPU thread inside a block, a fiber switch at every barrier. See
// cuda/emu/README.md for what is modelled and what is not.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <type_traits>
#include <utility>
#include <math.h>

// ---------------------------------------------------------------------------------------
// Qualifiers and attributes
// ---------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __grid_constant__
// Static shared memory: one copy per OS thread; the blocks of a launch run one at a time
// on that thread, and every fiber (GPU thread) of the block sees the same storage.
#define __shared__ static thread_local

// Dynamic shared memory. Under nvcc this is `extern __shared__ T name[]`; here the name is
// a pointer to the launch's dynamic shared buffer (exactly shared_bytes long, so
// AddressSanitizer sees overruns).
#define QUADRA_EXTERN_SHARED(T, name) T* const name = reinterpret_cast<T*>(::quadra_emu::dynamic_shared())

// The racecheck copy. build.rs compiles every kernel file twice: as is (the launches of the
// default mode run this code, uninstrumented) and, with QUADRA_EMU_RACECHECK_COPY defined
// and -fsanitize=thread, inside an anonymous namespace (the copy that racecheck and
// schedule comparison run; cuda/emu/README.md). Everything below that has a body and is
// not a runtime service lives in QUADRA_EMU_VARIANT_BEGIN/END: an inline namespace whose
// name differs between the two copies, so that the linker never merges an instrumented
// out-of-line function (an `inline` one the optimiser did not inline) with the plain one.
#if defined(QUADRA_EMU_RACECHECK_COPY)
#define QUADRA_EMU_VARIANT_BEGIN inline namespace racecheck_copy {
#else
#define QUADRA_EMU_VARIANT_BEGIN inline namespace plain {
#endif
#define QUADRA_EMU_VARIANT_END }

// ---------------------------------------------------------------------------------------
// Vector types and the index variables
// ---------------------------------------------------------------------------------------
struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};
QUADRA_EMU_VARIANT_BEGIN
struct int2 { int x, y; };
struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
QUADRA_EMU_VARIANT_END

namespace quadra_emu {

// Per-OS-thread view of the running block; the runtime updates thread_idx on every fiber
// switch (fibers of a block share the OS thread, so the value read is the current fiber's).
struct LaunchView {
    uint3 thread_idx;
    uint3 block_idx;
    dim3 block_dim;
    dim3 grid_dim;
};
extern thread_local LaunchView view;

// Runtime services (cuda/emu/runtime.cpp).
void syncthreads();
int syncthreads_count(int pred);
void syncwarp(unsigned mask);
// Write-barrier-read exchange inside a warp: every lane of `mask` publishes `v`; returns
// the value published by `src_lane`, or `v` itself when src_lane < 0 or the lane is not
// part of the exchange (reading a non-participating lane is undefined on a GPU).
std::uint64_t warp_exchange(unsigned mask, std::uint64_t v, int src_lane);
unsigned warp_ballot(unsigned mask, int pred);
unsigned active_mask();
unsigned lane_id();
void* dynamic_shared();
[[noreturn]] void trap(const char* why);

}  // namespace quadra_emu

#define threadIdx (::quadra_emu::view.thread_idx)
#define blockIdx (::quadra_emu::view.block_idx)
#define blockDim (::quadra_emu::view.block_dim)
#define gridDim (::quadra_emu::view.grid_dim)
static constexpr int warpSize = 32;

// ---------------------------------------------------------------------------------------
// Synchronisation, warp shuffles and votes
// ---------------------------------------------------------------------------------------
QUADRA_EMU_VARIANT_BEGIN
inline void __syncthreads() { ::quadra_emu::syncthreads(); }
inline int __syncthreads_count(int pred) { return ::quadra_emu::syncthreads_count(pred); }
inline int __syncthreads_and(int pred) {
    unsigned n = blockDim.x * blockDim.y * blockDim.z;
    return ::quadra_emu::syncthreads_count(pred) == static_cast<int>(n);
}
inline int __syncthreads_or(int pred) { return ::quadra_emu::syncthreads_count(pred) != 0; }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::quadra_emu::syncwarp(mask); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
inline void __trap() { ::quadra_emu::trap("__trap() called"); }
inline unsigned __activemask() { return ::quadra_emu::active_mask(); }
QUADRA_EMU_VARIANT_END

namespace quadra_emu {
QUADRA_EMU_VARIANT_BEGIN
template <typename T>
inline T shfl_impl(unsigned mask, T var, int src) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                  "warp shuffles move trivially copyable values of at most 8 bytes");
    std::uint64_t bits = 0;
    std::memcpy(&bits, &var, sizeof(T));
    std::uint64_t got = warp_exchange(mask, bits, src);
    T out;
    std::memcpy(&out, &got, sizeof(T));
    return out;
}
QUADRA_EMU_VARIANT_END
}  // namespace quadra_emu

QUADRA_EMU_VARIANT_BEGIN

template <typename T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
    int lane = static_cast<int>(::quadra_emu::lane_id());
    int base = lane & ~(width - 1);
    return ::quadra_emu::shfl_impl(mask, var, base + (src_lane & (width - 1)));
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    int lane = static_cast<int>(::quadra_emu::lane_id());
    int base = lane & ~(width - 1);
    int src = lane - static_cast<int>(delta);
    return ::quadra_emu::shfl_impl(mask, var, src < base ? -1 : src);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    int lane = static_cast<int>(::quadra_emu::lane_id());
    int base = lane & ~(width - 1);
    int src = lane + static_cast<int>(delta);
    return ::quadra_emu::shfl_impl(mask, var, src >= base + width ? -1 : src);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
    int lane = static_cast<int>(::quadra_emu::lane_id());
    int base = lane & ~(width - 1);
    int src = lane ^ lane_mask;
    return ::quadra_emu::shfl_impl(mask, var, src >= base + width ? -1 : src);
}
inline unsigned __ballot_sync(unsigned mask, int pred) { return ::quadra_emu::warp_ballot(mask, pred); }
inline int __any_sync(unsigned mask, int pred) { return ::quadra_emu::warp_ballot(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) {
    unsigned live = mask & ::quadra_emu::active_mask();
    return (::quadra_emu::warp_ballot(mask, pred) & live) == live;
}

// ---------------------------------------------------------------------------------------
// Atomics. A launch runs on one OS thread and fibers switch only at barriers, so these are
// atomic with respect to the GPU threads; the __atomic builtins also keep them atomic with
// respect to other OS threads touching the same memory.
// ---------------------------------------------------------------------------------------
#define QUADRA_EMU_INT_ATOMICS(T)                                                              \
    inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }     \
    inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }     \
    inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }     \
    inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }       \
    inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); }     \
    inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }   \
    inline T atomicCAS(T* p, T cmp, T v) {                                                    \
        __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);   \
        return cmp;                                                                           \
    }                                                                                         \
    inline T atomicMax(T* p, T v) {                                                           \
        T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                         \
        while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED,    \
                                                       __ATOMIC_RELAXED)) {                   \
        }                                                                                     \
        return old;                                                                           \
    }                                                                                         \
    inline T atomicMin(T* p, T v) {                                                           \
        T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                         \
        while (v < old && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED,    \
                                                       __ATOMIC_RELAXED)) {                   \
        }                                                                                     \
        return old;                                                                           \
    }
QUADRA_EMU_INT_ATOMICS(int)
QUADRA_EMU_INT_ATOMICS(unsigned int)
QUADRA_EMU_INT_ATOMICS(long long)
QUADRA_EMU_INT_ATOMICS(unsigned long long)
#undef QUADRA_EMU_INT_ATOMICS

inline unsigned atomicInc(unsigned* p, unsigned limit) {
    unsigned old = __atomic_load_n(p, __ATOMIC_RELAXED);
    unsigned next;
    do {
        next = old >= limit ? 0u : old + 1u;
    } while (!__atomic_compare_exchange_n(p, &old, next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return old;
}
QUADRA_EMU_VARIANT_END

namespace quadra_emu {
QUADRA_EMU_VARIANT_BEGIN
template <typename F, typename U, typename Op>
inline F float_atomic(F* p, F v, Op op) {
    static_assert(sizeof(F) == sizeof(U), "bit width");
    U* q = reinterpret_cast<U*>(p);
    U old_bits = __atomic_load_n(q, __ATOMIC_RELAXED);
    for (;;) {
        F old;
        std::memcpy(&old, &old_bits, sizeof(F));
        F next = op(old, v);
        U next_bits;
        std::memcpy(&next_bits, &next, sizeof(F));
        if (__atomic_compare_exchange_n(q, &old_bits, next_bits, true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
            return old;
        }
    }
}
QUADRA_EMU_VARIANT_END
}  // namespace quadra_emu
QUADRA_EMU_VARIANT_BEGIN
inline float atomicAdd(float* p, float v) {
    return ::quadra_emu::float_atomic<float, std::uint32_t>(p, v, [](float a, float b) { return a + b; });
}
inline double atomicAdd(double* p, double v) {
    return ::quadra_emu::float_atomic<double, std::uint64_t>(p, v, [](double a, double b) { return a + b; });
}
inline float atomicExch(float* p, float v) {
    return ::quadra_emu::float_atomic<float, std::uint32_t>(p, v, [](float, float b) { return b; });
}

// ---------------------------------------------------------------------------------------
// Math: the host libm versions (correctly rounded or close); the GPU's fast intrinsics
// (__expf, __fdividef, ...) are less accurate, so compare GPU and emulator with a tolerance.
// ---------------------------------------------------------------------------------------
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __powf(float a, float b) { return powf(a, b); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : (x == x ? x : 0.0f)); }
inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline int __float_as_int(float f) { int v; std::memcpy(&v, &f, 4); return v; }
inline float __uint_as_float(unsigned v) { float f; std::memcpy(&f, &v, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned v; std::memcpy(&v, &f, 4); return v; }
inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
inline long long __double_as_longlong(double d) { long long v; std::memcpy(&v, &d, 8); return v; }
inline int __float2int_rn(float x) { return static_cast<int>(nearbyintf(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline int __float2int_rd(float x) { return static_cast<int>(floorf(x)); }
inline int __float2int_ru(float x) { return static_cast<int>(ceilf(x)); }
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
inline int __clz(int v) { return v == 0 ? 32 : __builtin_clz(static_cast<unsigned>(v)); }
inline int __clzll(long long v) { return v == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(v)); }
inline int __ffs(int v) { return __builtin_ffs(v); }
inline int __ffsll(long long v) { return __builtin_ffsll(v); }
inline unsigned __brev(unsigned v) {
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((v >> i) & 1u) << (31 - i);
    return r;
}
inline int __mul24(int a, int b) { return a * b; }
inline unsigned __umulhi(unsigned a, unsigned b) {
    return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}
template <typename T>
inline T __ldg(const T* p) { return *p; }

// CUDA's global min/max overloads.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
QUADRA_EMU_VARIANT_END

// ---------------------------------------------------------------------------------------
// Half and bfloat16: storage types with round-to-nearest-even conversions; arithmetic goes
// through float (one rounding for + − × ÷, as float carries enough extra bits).
// ---------------------------------------------------------------------------------------
namespace quadra_emu {
QUADRA_EMU_VARIANT_BEGIN
inline std::uint16_t f32_to_f16_bits(float f) {
    std::uint32_t x;
    std::memcpy(&x, &f, 4);
    std::uint32_t sign = (x >> 16) & 0x8000u;
    std::uint32_t exp = (x >> 23) & 0xffu;
    std::uint32_t man = x & 0x7fffffu;
    if (exp == 0xffu) {  // inf / nan (keep nan quiet and non-zero)
        return static_cast<std::uint16_t>(sign | 0x7c00u | (man ? (0x200u | (man >> 13)) : 0u));
    }
    int e = static_cast<int>(exp) - 127 + 15;
    if (e >= 0x1f) return static_cast<std::uint16_t>(sign | 0x7c00u);  // overflow → inf
    if (e <= 0) {  // subnormal half (or zero)
        if (e < -10) return static_cast<std::uint16_t>(sign);
        man |= 0x800000u;
        int shift = 14 - e;
        std::uint32_t half_man = man >> shift;
        std::uint32_t rem = man & ((1u << shift) - 1u);
        std::uint32_t halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (half_man & 1u))) ++half_man;
        return static_cast<std::uint16_t>(sign | half_man);
    }
    std::uint32_t half_man = man >> 13;
    std::uint32_t rem = man & 0x1fffu;
    std::uint32_t out = sign | (static_cast<std::uint32_t>(e) << 10) | half_man;
    if (rem > 0x1000u || (rem == 0x1000u && (half_man & 1u))) ++out;  // may carry into exp: ok
    return static_cast<std::uint16_t>(out);
}
inline float f16_bits_to_f32(std::uint16_t h) {
    std::uint32_t sign = (static_cast<std::uint32_t>(h) & 0x8000u) << 16;
    std::uint32_t exp = (h >> 10) & 0x1fu;
    std::uint32_t man = h & 0x3ffu;
    std::uint32_t x;
    if (exp == 0x1fu) {
        x = sign | 0x7f800000u | (man << 13);
    } else if (exp == 0) {
        if (man == 0) {
            x = sign;
        } else {  // normalise the subnormal
            int e = -1;
            do {
                ++e;
                man <<= 1;
            } while ((man & 0x400u) == 0);
            x = sign | (static_cast<std::uint32_t>(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else {
        x = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    std::memcpy(&f, &x, 4);
    return f;
}
inline std::uint16_t f32_to_bf16_bits(float f) {
    std::uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);  // quiet nan
    std::uint32_t lsb = (x >> 16) & 1u;
    x += 0x7fffu + lsb;
    return static_cast<std::uint16_t>(x >> 16);
}
inline float bf16_bits_to_f32(std::uint16_t b) {
    std::uint32_t x = static_cast<std::uint32_t>(b) << 16;
    float f;
    std::memcpy(&f, &x, 4);
    return f;
}
QUADRA_EMU_VARIANT_END
}  // namespace quadra_emu

QUADRA_EMU_VARIANT_BEGIN
struct __half {
    std::uint16_t __x;
    __half() = default;
    __half(float f) : __x(::quadra_emu::f32_to_f16_bits(f)) {}
    __half(double d) : __x(::quadra_emu::f32_to_f16_bits(static_cast<float>(d))) {}
    operator float() const { return ::quadra_emu::f16_bits_to_f32(__x); }
};
struct __nv_bfloat16 {
    std::uint16_t __x;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) : __x(::quadra_emu::f32_to_bf16_bits(f)) {}
    __nv_bfloat16(double d) : __x(::quadra_emu::f32_to_bf16_bits(static_cast<float>(d))) {}
    operator float() const { return ::quadra_emu::bf16_bits_to_f32(__x); }
};
typedef __half half;
typedef __nv_bfloat16 nv_bfloat16;
struct __half2 { __half x, y; };
struct __nv_bfloat162 { __nv_bfloat16 x, y; };

inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline float __half2float(__half h) { return static_cast<float>(h); }
inline __half __ushort_as_half(unsigned short v) { __half h; h.__x = v; return h; }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __hadd(__half a, __half b) { return __half(float(a) + float(b)); }
inline __half __hsub(__half a, __half b) { return __half(float(a) - float(b)); }
inline __half __hmul(__half a, __half b) { return __half(float(a) * float(b)); }
inline __half __hdiv(__half a, __half b) { return __half(float(a) / float(b)); }
inline __half __hneg(__half a) { a.__x ^= 0x8000u; return a; }
inline __half __hfma(__half a, __half b, __half c) { return __half(fmaf(float(a), float(b), float(c))); }
inline bool __hlt(__half a, __half b) { return float(a) < float(b); }
inline bool __hgt(__half a, __half b) { return float(a) > float(b); }
inline bool __heq(__half a, __half b) { return float(a) == float(b); }
inline __half2 __floats2half2_rn(float a, float b) { return __half2{__half(a), __half(b)}; }
inline float2 __half22float2(__half2 h) { return float2{float(h.x), float(h.y)}; }

inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return static_cast<float>(b); }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short v) { __nv_bfloat16 b; b.__x = v; return b; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
inline __nv_bfloat16 __hadd(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat16(float(a) + float(b)); }
inline __nv_bfloat16 __hmul(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat16(float(a) * float(b)); }
QUADRA_EMU_VARIANT_END

// ---------------------------------------------------------------------------------------
// The launch registry. QUADRA_EXPORT(kernel) (after a kernel's definition) defines
// `quadra_emu_entry_<kernel>()`, returning the kernel's name, parameter count and a
// type-safe thunk that unpacks a cuLaunchKernel-style `void** kernelParams` array (one
// pointer per parameter, pointing at the value). build.rs scans cuda/*.cu for the macro and
// generates the table the runtime searches (no static constructors, nothing dropped by the
// linker). In the racecheck copy it defines `quadra_emu_rc_entry_<kernel>()` instead, for
// the copy's own table.
// ---------------------------------------------------------------------------------------
namespace quadra_emu {
struct KernelEntry {
    const char* name;
    unsigned arity;
    void (*invoke)(void** args);
    // Bit i set: parameter i (i < 64) is a pointer (racecheck names a global address as
    // "parameter i + offset").
    unsigned long long pointer_params;
};

template <typename F>
struct KernelSig;
template <typename... A>
struct KernelSig<void (*)(A...)> {
    static constexpr unsigned arity = sizeof...(A);
    template <std::size_t... I>
    static constexpr unsigned long long pointer_mask(std::index_sequence<I...>) {
        return (0ull | ... |
                ((I < 64 && std::is_pointer<std::remove_cv_t<std::remove_reference_t<A>>>::value ? 1ull : 0ull)
                 << (I < 64 ? I : 0)));
    }
    static constexpr unsigned long long pointers = pointer_mask(std::index_sequence_for<A...>{});
    template <void (*K)(A...), std::size_t... I>
    static void call(void** args, std::index_sequence<I...>) {
        K(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
    }
    template <void (*K)(A...)>
    static void invoke(void** args) {
        call<K>(args, std::index_sequence_for<A...>{});
    }
};
}  // namespace quadra_emu

#define QUADRA_EMU_ENTRY_BODY(kernel)                                                          \
    using Sig = ::quadra_emu::KernelSig<decltype(&kernel)>;                                   \
    static const ::quadra_emu::KernelEntry entry{#kernel, Sig::arity,                         \
                                                 &Sig::template invoke<&kernel>, Sig::pointers}; \
    return &entry;

#if defined(QUADRA_EMU_RACECHECK_COPY)
// The copy's kernels are inside the anonymous namespace build.rs wraps around the file; the
// entry function must be extern "C", so the macro leaves the namespace and reopens it.
// QUADRA_EXPORT therefore has to stand at file scope, as everywhere in cuda/*.cu.
#define QUADRA_EXPORT(kernel)                                                                  \
    }                                                                                         \
    extern "C" const ::quadra_emu::KernelEntry* quadra_emu_rc_entry_##kernel() {              \
        QUADRA_EMU_ENTRY_BODY(kernel)                                                         \
    }                                                                                         \
    namespace {
#else
#define QUADRA_EXPORT(kernel)                                                                  \
    extern "C" const ::quadra_emu::KernelEntry* quadra_emu_entry_##kernel() {                 \
        QUADRA_EMU_ENTRY_BODY(kernel)                                                         \
    }
#endif

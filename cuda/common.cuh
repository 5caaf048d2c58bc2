// common.cuh — included first by every cuda/*.cu.
//
// Under nvcc (__CUDACC__) it brings in the CUDA headers; otherwise the kernels are being
// compiled by the host C++ compiler for the CPU emulator and it brings in cuda/emu/.
//
// Two macros are portable between the two:
//   QUADRA_EXPORT(kernel)            after a kernel's definition: registers it with the
//                                    emulator (nothing under nvcc). No trailing semicolon.
//   QUADRA_EXTERN_SHARED(T, name);   dynamic shared memory: `extern __shared__ T name[]`
//                                    under nvcc, a T* to the launch's buffer in the emulator.
#pragma once

#ifdef __CUDACC__
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#define QUADRA_EXPORT(kernel)
#define QUADRA_EXTERN_SHARED(T, name) extern __shared__ T name[]
#else
#include "emu/cuda_emu.h"
#endif

#if defined(QUADRA_EMU_RACECHECK_COPY)
// The emulator's racecheck copy of a kernel file (cuda/emu/README.md): compiled inside an
// anonymous namespace, so its kernels have internal linkage and do not clash with the
// extern "C" kernels of the plain copy; the copy's QUADRA_EXPORT registers them.
#define QUADRA_KERNEL __global__
#else
#define QUADRA_KERNEL extern "C" __global__
#endif

namespace quadra {
// 1-D grid-stride loop bounds: for (i = grid_start(); i < n; i += grid_stride())
__device__ __forceinline__ long long grid_start() {
    return static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long grid_stride() {
    return static_cast<long long>(gridDim.x) * blockDim.x;
}
}  // namespace quadra

// standin.h — what the stand-in libcublas.so needs from the stand-in libcuda.so (both built
// by cuda/standin/build.sh into target/cuda-standin/). Not a CUDA header: the
// driver API itself is declared in driver.cpp with the ABI of cuda.h.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {

typedef unsigned long long quadra_standin_devptr;

// 0 (CUDA_SUCCESS) when the calling thread has a current context without a sticky error;
// otherwise the CUresult a driver call would return (INVALID_CONTEXT, or the sticky error).
int quadra_standin_check_ctx(void);

// 0 when [p, p + bytes) lies inside ONE live cuMemAlloc allocation; otherwise
// CUDA_ERROR_INVALID_VALUE (1), with a message naming the nearest allocation written to
// `why` (at most `why_len` bytes, NUL-terminated) when why is not null.
int quadra_standin_check_range(quadra_standin_devptr p, size_t bytes, char* why, size_t why_len);

// Queues `run(data)` on `stream` (a CUstream of the current context, 0 for the legacy
// default stream), in stream order with the launches and copies; `drop(data)` is called
// after it ran or when it is discarded (a sticky error). `what` names it in the trace
// (e.g. "cublasSgemmStridedBatched"). Returns a CUresult.
int quadra_standin_enqueue(void* stream, void (*run)(void*), void (*drop)(void*), void* data, const char* what);

// The trace (see README.md) as one JSON object; returns the length it needs (excluding the
// NUL). `buf` may be null to ask for the length.
size_t quadra_standin_trace_json(char* buf, size_t len);
// Zeroes the counters of the trace.
void quadra_standin_trace_reset(void);
}

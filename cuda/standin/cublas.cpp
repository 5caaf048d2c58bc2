// cublas.cpp — a stand-in libcublas.so: handles, streams, math mode and column-major
// cublasSgemm / cublasSgemmStridedBatched on the CPU, queued on the handle's stream of the
// stand-in driver (libcuda.so, which this library links against). See README.md.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <set>
#include <vector>

#include "standin.h"

#define API extern "C" __attribute__((visibility("default")))

typedef int cublasStatus_t;
enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 };

namespace {

struct Handle {
    void* stream = nullptr;
    int math_mode = 0;
    int pointer_mode = 0;  // 0: host (alpha/beta read at the call)
};

std::mutex g_mu;
std::set<Handle*>& handles() {
    static std::set<Handle*>* h = new std::set<Handle*>;
    return *h;
}

bool live(Handle* h) {
    std::lock_guard<std::mutex> g(g_mu);
    return handles().count(h) > 0;
}

void complain(const char* what) { std::fprintf(stderr, "quadra-standin (cublas): %s\n", what); }

struct Gemm {
    int ta, tb, m, n, k;
    float alpha, beta;
    const float *a, *b;
    float* c;
    int lda, ldb, ldc;
    long long sa, sb, sc;
    int batch;
};

// Column-major: C (m×n) = alpha·op(A)·op(B) + beta·C; with beta = 0, C is not read (as
// cuBLAS: NaN in C does not propagate). op(A) and op(B) are packed once per batch item so
// the inner loop runs over contiguous memory; sums run over k in order, in f32 with fmaf.
void run_gemm(void* p) {
    const Gemm& g = *static_cast<Gemm*>(p);
    std::vector<float> pa(static_cast<size_t>(g.m) * g.k), pb(static_cast<size_t>(g.k) * g.n),
        acc(static_cast<size_t>(g.m));
    for (int bi = 0; bi < g.batch; ++bi) {
        const float* a = g.a + bi * g.sa;
        const float* b = g.b + bi * g.sb;
        float* c = g.c + bi * g.sc;
        // pa[p·m + i] = op(A)[i][p]; pb[j·k + p] = op(B)[p][j]
        for (int p2 = 0; p2 < g.k; ++p2)
            for (int i = 0; i < g.m; ++i)
                pa[static_cast<size_t>(p2) * g.m + i] = g.ta ? a[p2 + static_cast<size_t>(i) * g.lda]
                                                             : a[i + static_cast<size_t>(p2) * g.lda];
        for (int j = 0; j < g.n; ++j)
            for (int p2 = 0; p2 < g.k; ++p2)
                pb[static_cast<size_t>(j) * g.k + p2] = g.tb ? b[j + static_cast<size_t>(p2) * g.ldb]
                                                             : b[p2 + static_cast<size_t>(j) * g.ldb];
        for (int j = 0; j < g.n; ++j) {
            std::fill(acc.begin(), acc.end(), 0.0f);
            for (int p2 = 0; p2 < g.k; ++p2) {
                float bv = pb[static_cast<size_t>(j) * g.k + p2];
                const float* col = &pa[static_cast<size_t>(p2) * g.m];
                for (int i = 0; i < g.m; ++i) acc[i] = __builtin_fmaf(col[i], bv, acc[i]);
            }
            float* cc = c + static_cast<size_t>(j) * g.ldc;
            for (int i = 0; i < g.m; ++i)
                cc[i] = g.beta == 0.0f ? g.alpha * acc[i] : g.alpha * acc[i] + g.beta * cc[i];
        }
    }
}

void drop_gemm(void* p) { delete static_cast<Gemm*>(p); }

// The bytes [first, last] a strided-batched column-major operand touches, as a range.
bool check_operand(const char* name, const void* ptr, int rows, int cols, int ld, long long stride, int batch,
                   bool write) {
    if (rows == 0 || cols == 0) return true;
    unsigned long long span = (static_cast<unsigned long long>(cols - 1) * ld + rows) * sizeof(float);
    unsigned long long last = static_cast<unsigned long long>(batch - 1) * static_cast<unsigned long long>(stride) *
                              sizeof(float);
    char why[512];
    if (quadra_standin_check_range(reinterpret_cast<quadra_standin_devptr>(ptr), span + last, why, sizeof why)) {
        char msg[768];
        std::snprintf(msg, sizeof msg, "cublasSgemmStridedBatched: operand %s (%s, %d×%d, ld %d, stride %lld, batch %d): %s",
                      name, write ? "written" : "read", rows, cols, ld, stride, batch, why);
        complain(msg);
        return false;
    }
    return true;
}

cublasStatus_t gemm(Handle* h, int ta, int tb, int m, int n, int k, const float* alpha, const float* A, int lda,
                    long long sa, const float* B, int ldb, long long sb, const float* beta, float* C, int ldc,
                    long long sc, int batch) {
    if (!live(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (quadra_standin_check_ctx() != 0) {
        complain("cuBLAS call on a thread without the context current (or the context has a sticky error)");
        return CUBLAS_STATUS_EXECUTION_FAILED;
    }
    if (ta == CUBLAS_OP_C) ta = CUBLAS_OP_T;
    if (tb == CUBLAS_OP_C) tb = CUBLAS_OP_T;
    int rows_a = ta ? k : m, rows_b = tb ? n : k;
    if ((ta != 0 && ta != 1) || (tb != 0 && tb != 1) || m < 0 || n < 0 || k < 0 || batch < 0 ||
        lda < (rows_a > 1 ? rows_a : 1) || ldb < (rows_b > 1 ? rows_b : 1) || ldc < (m > 1 ? m : 1)) {
        complain("cublasSgemm: invalid dimensions or leading dimensions (CUBLAS_STATUS_INVALID_VALUE)");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
    if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
    if (h->pointer_mode != 0) {
        complain("cublasSgemm: device pointer mode is not modelled (CUBLAS_STATUS_NOT_SUPPORTED)");
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    bool reads = k > 0 && *alpha != 0.0f;
    if ((reads && !check_operand("A", A, rows_a, ta ? m : k, lda, sa, batch, false)) ||
        (reads && !check_operand("B", B, rows_b, tb ? k : n, ldb, sb, batch, false)) ||
        !check_operand("C", C, m, n, ldc, sc, batch, true))
        return CUBLAS_STATUS_INVALID_VALUE;
    Gemm* g = new Gemm{ta, tb, m, n, k, *alpha, *beta, A, B, C, lda, ldb, ldc, sa, sb, sc, batch};
    if (!reads) g->k = 0;
    int rc = quadra_standin_enqueue(h->stream, run_gemm, drop_gemm, g, "cublasSgemmStridedBatched");
    if (rc != 0) {
        delete g;
        return CUBLAS_STATUS_EXECUTION_FAILED;
    }
    return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

API cublasStatus_t cublasCreate_v2(Handle** out) {
    if (!out) return CUBLAS_STATUS_INVALID_VALUE;
    if (quadra_standin_check_ctx() != 0) {
        complain("cublasCreate on a thread without a current context (CUBLAS_STATUS_NOT_INITIALIZED)");
        return CUBLAS_STATUS_NOT_INITIALIZED;
    }
    Handle* h = new Handle;
    std::lock_guard<std::mutex> g(g_mu);
    handles().insert(h);
    *out = h;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasDestroy_v2(Handle* h) {
    std::lock_guard<std::mutex> g(g_mu);
    if (!handles().erase(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasSetStream_v2(Handle* h, void* stream) {
    if (!live(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasGetStream_v2(Handle* h, void** stream) {
    if (!live(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!stream) return CUBLAS_STATUS_INVALID_VALUE;
    *stream = h->stream;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasSetMathMode(Handle* h, int mode) {
    if (!live(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    // 0 DEFAULT, 1 TENSOR_OP (deprecated), 2 PEDANTIC, 3 TF32_TENSOR_OP; the flag 16
    // (DISALLOW_REDUCED_PRECISION_REDUCTION) may be or-ed in. The stand-in always computes in
    // full f32 (TF32 rounding is not modelled).
    int base = mode & ~16;
    if (base < 0 || base > 3) return CUBLAS_STATUS_INVALID_VALUE;
    h->math_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasGetMathMode(Handle* h, int* mode) {
    if (!live(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!mode) return CUBLAS_STATUS_INVALID_VALUE;
    *mode = h->math_mode;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasSetPointerMode_v2(Handle* h, int mode) {
    if (!live(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (mode != 0 && mode != 1) return CUBLAS_STATUS_INVALID_VALUE;
    h->pointer_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasSgemmStridedBatched(Handle* h, int ta, int tb, int m, int n, int k, const float* alpha,
                                             const float* A, int lda, long long sa, const float* B, int ldb,
                                             long long sb, const float* beta, float* C, int ldc, long long sc,
                                             int batch) {
    return gemm(h, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
}

API cublasStatus_t cublasSgemm_v2(Handle* h, int ta, int tb, int m, int n, int k, const float* alpha, const float* A,
                                  int lda, const float* B, int ldb, const float* beta, float* C, int ldc) {
    return gemm(h, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

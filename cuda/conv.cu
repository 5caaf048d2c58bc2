// conv.cu — the data movement of convolution as im2col + GEMM (the GEMMs go to cuBLAS),
// and the bias terms of convolution and linear layers.
//
// Geometry (PyTorch's Conv2d): x (N, C_in, H, W), output (N, M, Ho, Wo), L = Ho·Wo,
// kernel kh×kw, stride (sh, sw), padding (ph, pw), dilation (dh, dw). The column matrix of
// one image is cols (C_in·kh·kw, L): row (c·kh + ky)·kw + kx, column oy·Wo + ox holds
// x[c, oy·sh + ky·dh − ph, ox·sw + kx·dw − pw] (0 in the padding). A batch of images is
// stored image after image: cols (N, C_in·kh·kw, L).
//
// All kernels are 1-D grid-stride loops over their outputs (any grid, any 1-D block),
// except the bias gradient, a per-channel block reduction (block a multiple of 32, ≤ 1024).
#include "common.cuh"
#include "block_reduce.cuh"

using quadra::grid_start;
using quadra::grid_stride;

// x (N, C, H, W) → cols (N, C·kh·kw, Ho·Wo)
QUADRA_KERNEL void im2col_f32(const float* __restrict__ x, float* __restrict__ cols, int N, int C, int H, int W,
                              int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw) {
    const long long L = static_cast<long long>(Ho) * Wo;
    const long long K = static_cast<long long>(C) * kh * kw;
    const long long total = N * K * L;
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        const long long l = i % L, row = (i / L) % K, n = i / (K * L);
        const int kx = static_cast<int>(row % kw), ky = static_cast<int>((row / kw) % kh);
        const long long c = row / (static_cast<long long>(kw) * kh);
        const int ox = static_cast<int>(l % Wo), oy = static_cast<int>(l / Wo);
        const int iy = oy * sh + ky * dh - ph, ix = ox * sw + kx * dw - pw;
        cols[i] = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? x[((n * C + c) * H + iy) * W + ix] : 0.0f;
    }
}
QUADRA_EXPORT(im2col_f32)

// The adjoint of im2col, as a gather (each dx element sums the column entries that read
// it, in a fixed order; no atomics): dcols (N, C·kh·kw, Ho·Wo) → dx (N, C, H, W), overwritten.
QUADRA_KERNEL void col2im_f32(const float* __restrict__ dcols, float* __restrict__ dx, int N, int C, int H, int W,
                              int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw) {
    const long long L = static_cast<long long>(Ho) * Wo;
    const long long K = static_cast<long long>(C) * kh * kw;
    const long long total = static_cast<long long>(N) * C * H * W;
    for (long long i = grid_start(); i < total; i += grid_stride()) {
        const int ix = static_cast<int>(i % W), iy = static_cast<int>((i / W) % H);
        const long long c = (i / (static_cast<long long>(W) * H)) % C, n = i / (static_cast<long long>(W) * H * C);
        float acc = 0.0f;
        for (int ky = 0; ky < kh; ++ky) {
            const int ty = iy + ph - ky * dh;
            if (ty < 0 || ty % sh != 0) continue;
            const int oy = ty / sh;
            if (oy >= Ho) continue;
            for (int kx = 0; kx < kw; ++kx) {
                const int tx = ix + pw - kx * dw;
                if (tx < 0 || tx % sw != 0) continue;
                const int ox = tx / sw;
                if (ox >= Wo) continue;
                const long long row = (c * kh + ky) * kw + kx;
                acc += dcols[(n * K + row) * L + static_cast<long long>(oy) * Wo + ox];
            }
        }
        dx[i] = acc;
    }
}
QUADRA_EXPORT(col2im_f32)

// y[n, m, l] += bias[m]      y: (N, M, L), bias: (M)
QUADRA_KERNEL void bias_add_f32(float* __restrict__ y, const float* __restrict__ bias, int N, int M, int L) {
    const long long total = static_cast<long long>(N) * M * L;
    for (long long i = grid_start(); i < total; i += grid_stride()) y[i] += bias[(i / L) % M];
}
QUADRA_EXPORT(bias_add_f32)

// db[m] += Σ_{n,l} dy[n, m, l]      dy: (N, M, L), db: (M). One block per channel
// (grid-stride over channels), f64 accumulation in a fixed order.
QUADRA_KERNEL void bias_grad_f32(const float* __restrict__ dy, float* __restrict__ db, int N, int M, int L) {
    const long long P = static_cast<long long>(N) * L;
    for (int m = blockIdx.x; m < M; m += gridDim.x) {
        double s = 0.0;
        for (long long i = threadIdx.x; i < P; i += blockDim.x) {
            const long long n = i / L, l = i % L;
            s += dy[(n * M + m) * L + l];
        }
        s = quadra::block_sum(s);
        if (threadIdx.x == 0) db[m] += static_cast<float>(s);
    }
}
QUADRA_EXPORT(bias_grad_f32)

//! Linear layers on the CUDA backend: one cuBLAS GEMM per direction (row-major, the weight
//! read transposed) and the bias kernels of cuda/conv.cu (`ops::conv::cuda`, L = 1).

use crate::device::alloc::Category;
use crate::device::Gemm;
use crate::ops::conv::cuda::{add_bias, bias_grad};
use crate::ops::conv::ConvGrads;
use crate::ops::launch::{check_all, expect_numel, gemm, gpu_f32, output};
use crate::tensor::Tensor;
use crate::Result;

/// Linear forward: x (N, I), weight (nb·O, I), bias (nb·O) → (N, nb·O) = x·Wᵀ + b.
pub fn linear_forward(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    category: Category,
) -> Result<Tensor> {
    let op = "linear_forward";
    gpu_f32(op, "x", x)?;
    check_all(op, x.device(), &[("weight", w)])?;
    let (n, i) = x.dims2(op)?;
    crate::ensure_shape!(
        w.rank() == 2 && w.shape()[1] == i,
        op,
        "weight has shape {:?}, expected (M, {i}) for an input of {i} features",
        w.shape()
    );
    let m = w.shape()[0];
    let mut y = output(&[n, m], x.device(), category)?;
    if n * m == 0 {
        return Ok(y);
    }
    if i == 0 {
        crate::ops::elementwise::cuda::fill(&mut y, 0.0)?;
    } else {
        let gm = Gemm {
            ldb: i,
            trans_b: true,
            ..Gemm::dense(n, m, i, x.dev_ptr()?, w.dev_ptr()?, y.dev_ptr()?)
        };
        gemm(op, &gm, x, w, &mut y)?;
    }
    if let Some(b) = bias {
        add_bias(&mut y, b, n, m, 1)?;
    }
    Ok(y)
}

/// Linear backward: from x (N, I), weight (M, I) and dout (N, M): dx (N, I) when asked,
/// dW (M, I) = doutᵀ·x and db (M) = Σ_n dout.
pub fn linear_backward(x: &Tensor, w: &Tensor, dout: &Tensor, want_dx: bool) -> Result<ConvGrads> {
    let op = "linear_backward";
    gpu_f32(op, "x", x)?;
    check_all(op, x.device(), &[("weight", w), ("output gradient", dout)])?;
    let (n, i) = x.dims2(op)?;
    let m = w.shape().first().copied().unwrap_or(0);
    expect_numel(op, "weight", w, m * i, "M, I")?;
    expect_numel(op, "output gradient", dout, n * m, "N, M")?;
    let dev = x.device();
    let mut dw = Tensor::full_in(0.0, w.shape(), crate::DType::F32, dev, Category::Workspace)?;
    if n > 0 && m * i > 0 {
        let gm = Gemm {
            m,
            n: i,
            k: n,
            a: dout.dev_ptr()?,
            lda: m,
            trans_a: true,
            stride_a: 0,
            b: x.dev_ptr()?,
            ldb: i,
            trans_b: false,
            stride_b: 0,
            c: dw.dev_ptr()?,
            ldc: i,
            stride_c: 0,
            batch: 1,
            accumulate: false,
        };
        gemm(op, &gm, dout, x, &mut dw)?;
    }
    let dx = if want_dx {
        let mut dx = Tensor::full_in(0.0, x.shape(), crate::DType::F32, dev, Category::Workspace)?;
        if n * i > 0 && m > 0 {
            let gm = Gemm::dense(n, i, m, dout.dev_ptr()?, w.dev_ptr()?, dx.dev_ptr()?);
            gemm(op, &gm, dout, w, &mut dx)?;
        }
        Some(dx)
    } else {
        None
    };
    let db = bias_grad(dout, n, m, 1)?;
    Ok(ConvGrads { dx, dw, db })
}

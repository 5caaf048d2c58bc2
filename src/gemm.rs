//! Safe matrix multiply over the `gemm` crate: the one place the CPU engine multiplies
//! matrices (the CPU ops, and the emulator's stand-in for cuBLAS). Operands are row-major
//! slices, optionally read transposed.
//!
//! A leaf below both `ops` and `device` (it depends only on `dtype`); `crate::ops::gemm`
//! is the same module.

use crate::dtype::Float;

/// A row-major matrix operand of logical shape (rows, cols), read transposed when `t` is
/// set (then `data` holds the (cols, rows) matrix row-major). `ld` is the row stride of the
/// stored matrix (its number of columns when dense).
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub ld: usize,
    pub t: bool,
}

impl<'a, T> MatRef<'a, T> {
    /// A dense row-major matrix with `cols` columns.
    pub fn new(data: &'a [T], cols: usize) -> Self {
        MatRef {
            data,
            ld: cols,
            t: false,
        }
    }
    /// The transpose of a dense row-major matrix that has `cols` columns.
    pub fn trans(data: &'a [T], cols: usize) -> Self {
        MatRef {
            data,
            ld: cols,
            t: true,
        }
    }
    /// (row stride, column stride) of the logical matrix.
    fn strides(&self) -> (isize, isize) {
        if self.t {
            (1, self.ld as isize)
        } else {
            (self.ld as isize, 1)
        }
    }
    /// Smallest slice length that holds a logical (rows, cols) matrix.
    fn extent(&self, rows: usize, cols: usize) -> usize {
        if rows == 0 || cols == 0 {
            return 0;
        }
        let (rs, cs) = self.strides();
        (rows - 1) * rs as usize + (cols - 1) * cs as usize + 1
    }
}

/// `dst (m×n, row stride dst_ld) = [dst +] a (m×k) · b (k×n)`.
///
/// `accumulate` adds into `dst` instead of overwriting it. `threads` > 1 lets the gemm
/// crate split the product over the current rayon pool; use 1 inside code that is
/// already parallel.
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    dst_ld: usize,
    accumulate: bool,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * dst_ld..i * dst_ld + n].fill(T::zero());
            }
        }
        return;
    }
    // Bounds are checked here so that the unsafe call below only reads and writes inside
    // the slices it was given; a failure is a bug in the caller, not bad user input.
    assert!(
        dst_ld >= n && dst.len() >= (m - 1) * dst_ld + n,
        "matmul: dst too small"
    );
    assert!(a.data.len() >= a.extent(m, k), "matmul: lhs too small");
    assert!(b.data.len() >= b.extent(k, n), "matmul: rhs too small");
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    let par = if threads > 1 {
        ::gemm::Parallelism::Rayon(threads)
    } else {
        ::gemm::Parallelism::None
    };
    // SAFETY: the asserts above prove every index the product touches, (i, j) with
    // i < m, j < n in dst and the corresponding rows/columns of a and b, lies inside the
    // slices; `dst` is borrowed mutably and cannot alias `a` or `b`.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_ld as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f64], at: bool, b: &[f64], bt: bool) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    let av = if at { a[p * m + i] } else { a[i * k + p] };
                    let bv = if bt { b[j * k + p] } else { b[p * n + j] };
                    c[i * n + j] += av * bv;
                }
            }
        }
        c
    }

    #[test]
    fn matches_naive_in_every_transpose_combination() {
        let (m, n, k) = (7, 5, 9);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.71).cos()).collect();
        for at in [false, true] {
            for bt in [false, true] {
                let am = if at {
                    MatRef::trans(&a, m)
                } else {
                    MatRef::new(&a, k)
                };
                let bm = if bt {
                    MatRef::trans(&b, k)
                } else {
                    MatRef::new(&b, n)
                };
                let mut c = vec![1.0; m * n];
                matmul(m, n, k, &mut c, n, true, am, bm, 1);
                let want = naive(m, n, k, &a, at, &b, bt);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - 1.0 - y).abs() < 1e-12, "at={at} bt={bt}");
                }
            }
        }
    }
}

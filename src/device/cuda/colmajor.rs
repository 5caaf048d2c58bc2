//! The row-major → column-major mapping of a GEMM for cuBLAS (`cublasSgemmStridedBatched`),
//! unit-tested against a reference column-major GEMM without a GPU.

use std::ffi::c_int;

use crate::device::{DevPtr, Gemm};
use crate::{Error, Result};

/// The arguments of one column-major `cublasSgemmStridedBatched` call (alpha = 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct ColMajor {
    pub(super) trans_a: bool,
    pub(super) trans_b: bool,
    pub(super) m: c_int,
    pub(super) n: c_int,
    pub(super) k: c_int,
    pub(super) a: DevPtr,
    pub(super) lda: c_int,
    pub(super) stride_a: i64,
    pub(super) b: DevPtr,
    pub(super) ldb: c_int,
    pub(super) stride_b: i64,
    pub(super) beta: f32,
    pub(super) c: DevPtr,
    pub(super) ldc: c_int,
    pub(super) stride_c: i64,
    pub(super) batch: c_int,
}

impl ColMajor {
    /// The cuBLAS call computing the row-major `g`; `None` when there is nothing to do.
    ///
    /// Row-major C (m×n) = op(A)·op(B)  ⇔  column-major Cᵀ (n×m) = op(B)ᵀ·op(A)ᵀ. A row-major
    /// matrix read column-major with the same leading dimension is its transpose, so the
    /// row-major B (k×n, or n×k when trans_b) is cuBLAS's first operand with op = trans_b,
    /// the row-major A its second with op = trans_a, and m and n swap.
    pub(super) fn of(g: &Gemm) -> Result<Option<ColMajor>> {
        if g.m == 0 || g.n == 0 || g.batch == 0 {
            return Ok(None);
        }
        // cuBLAS checks ld >= rows of each stored column-major operand; with k = 0 a caller
        // may pass 0 for an operand that is never read.
        let (mut ldb, mut lda) = (g.ldb, g.lda);
        if g.k == 0 {
            ldb = ldb.max(if g.trans_b { g.k } else { g.n }.max(1));
            lda = lda.max(if g.trans_a { g.m } else { g.k }.max(1));
        }
        Ok(Some(ColMajor {
            trans_a: g.trans_b,
            trans_b: g.trans_a,
            m: to_i32(g.n, "n")?,
            n: to_i32(g.m, "m")?,
            k: to_i32(g.k, "k")?,
            a: g.b,
            lda: to_i32(ldb, "ldb")?,
            stride_a: to_i64(g.stride_b, "stride_b")?,
            b: g.a,
            ldb: to_i32(lda, "lda")?,
            stride_b: to_i64(g.stride_a, "stride_a")?,
            beta: if g.accumulate { 1.0 } else { 0.0 },
            c: g.c,
            ldc: to_i32(g.ldc, "ldc")?,
            stride_c: to_i64(g.stride_c, "stride_c")?,
            batch: to_i32(g.batch, "batch")?,
        }))
    }
}

fn to_i32(v: usize, what: &str) -> Result<c_int> {
    c_int::try_from(v).map_err(|_| {
        Error::invalid(
            "gemm",
            format!("{what} = {v} exceeds cuBLAS's 32-bit limit; split the product"),
        )
    })
}

fn to_i64(v: usize, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::invalid("gemm", format!("{what} = {v} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BLAS's column-major sgemm, strided-batched, over host slices (offsets in elements).
    fn colmajor_ref(cm: &ColMajor, a: &[f32], b: &[f32], c: &mut [f32]) {
        let (m, n, k) = (cm.m as usize, cm.n as usize, cm.k as usize);
        for bi in 0..cm.batch as usize {
            let (oa, ob, oc) = (
                bi * cm.stride_a as usize,
                bi * cm.stride_b as usize,
                bi * cm.stride_c as usize,
            );
            for j in 0..n {
                for i in 0..m {
                    let mut s = 0.0f64;
                    for p in 0..k {
                        // op(A)[i][p], op(B)[p][j]; column-major X[r][c] = x[r + c·ld]
                        let av = if cm.trans_a {
                            a[oa + p + i * cm.lda as usize]
                        } else {
                            a[oa + i + p * cm.lda as usize]
                        };
                        let bv = if cm.trans_b {
                            b[ob + j + p * cm.ldb as usize]
                        } else {
                            b[ob + p + j * cm.ldb as usize]
                        };
                        s += av as f64 * bv as f64;
                    }
                    let o = &mut c[oc + i + j * cm.ldc as usize];
                    *o = (s + cm.beta as f64 * *o as f64) as f32;
                }
            }
        }
    }

    /// The mapping to cuBLAS, checked without a GPU: the column-major call it makes,
    /// evaluated by a reference BLAS, equals the row-major product on the CPU.
    #[test]
    fn row_major_gemm_maps_to_column_major_cublas() {
        use crate::gemm::{matmul, MatRef};
        let vals = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 7919 + seed * 104729) % 2003) as f32 / 1001.5) - 1.0)
                .collect()
        };
        let mut cases = 0;
        for &(m, n, k) in &[(3, 5, 4), (8, 1, 7), (1, 6, 2), (5, 4, 0)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                for (batch, pad, acc) in [(1, 0, false), (3, 2, true)] {
                    let (ra, ca) = if ta { (k, m) } else { (m, k) };
                    let (rb, cb) = if tb { (n, k) } else { (k, n) };
                    let g = Gemm {
                        m,
                        n,
                        k,
                        a: 0,
                        lda: ca + pad,
                        trans_a: ta,
                        stride_a: ra * (ca + pad) + pad,
                        b: 0,
                        ldb: cb + pad,
                        trans_b: tb,
                        stride_b: rb * (cb + pad) + 3,
                        c: 0,
                        ldc: n + pad,
                        stride_c: m * (n + pad) + 1,
                        batch,
                        accumulate: acc,
                    };
                    let (ea, eb, ec) = g.extents();
                    let a = vals(ea.max(1), 1);
                    let b = vals(eb.max(1), 2);
                    let c0 = vals(ec.max(1), 3);
                    let mut want = c0.clone();
                    for i in 0..batch {
                        matmul(
                            m,
                            n,
                            k,
                            &mut want[i * g.stride_c..],
                            g.ldc,
                            acc,
                            MatRef {
                                data: &a[(i * g.stride_a).min(a.len())..],
                                ld: g.lda,
                                t: ta,
                            },
                            MatRef {
                                data: &b[(i * g.stride_b).min(b.len())..],
                                ld: g.ldb,
                                t: tb,
                            },
                            1,
                        );
                    }
                    let cm = ColMajor::of(&g).unwrap().unwrap();
                    // cuBLAS's first operand is the row-major B, its second the row-major A
                    let mut got = c0.clone();
                    colmajor_ref(&cm, &b, &a, &mut got);
                    for (i, (x, y)) in got.iter().zip(&want).enumerate() {
                        assert!((x - y).abs() < 1e-5, "{g:?} → {cm:?}: C[{i}] {x} vs {y}");
                    }
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 32);
        // nothing to do: no call
        for (m, n, batch) in [(0, 3, 1), (3, 0, 1), (3, 3, 0)] {
            let g = Gemm {
                m,
                n,
                k: 2,
                a: 0,
                lda: 2,
                trans_a: false,
                stride_a: 0,
                b: 0,
                ldb: 3,
                trans_b: false,
                stride_b: 0,
                c: 0,
                ldc: 3,
                stride_c: 0,
                batch,
                accumulate: false,
            };
            assert_eq!(ColMajor::of(&g).unwrap(), None);
        }
    }

    /// A size past cuBLAS's 32-bit `int` is refused with its name, never truncated.
    #[test]
    fn sizes_past_32_bits_are_refused() {
        let big = 1usize << 31;
        let g = Gemm {
            m: 1,
            n: big,
            k: 1,
            a: 0,
            lda: 1,
            trans_a: false,
            stride_a: 0,
            b: 0,
            ldb: big,
            trans_b: false,
            stride_b: 0,
            c: 0,
            ldc: big,
            stride_c: 0,
            batch: 1,
            accumulate: false,
        };
        let e = ColMajor::of(&g).unwrap_err();
        assert!(
            matches!(&e, Error::Invalid { what, msg } if what == "gemm"
                && msg.contains("n = 2147483648") && msg.contains("32-bit")),
            "{e:?}"
        );
    }
}

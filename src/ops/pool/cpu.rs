//! 2-d pooling with PyTorch's semantics (floor mode, no dilation): max pooling (padding acts
//! as −inf), average pooling (count_include_pad = True) and global average pooling.
//!
//! x: (N, C, H, W) → y: (N, C, Ho, Wo), Ho = (H + 2·ph − kh)/sh + 1 (floor), likewise Wo.
//! Every (n, c) plane is independent: work is parallel over the N·C planes.

use rayon::prelude::*;

use super::PoolGeom;
use crate::tensor::Float;

/// The in-bounds range [lo, hi) of input rows (or columns) read by output position `o`.
#[inline]
fn window(o: usize, stride: usize, pad: usize, k: usize, size: usize) -> (usize, usize) {
    let start = (o * stride) as isize - pad as isize;
    let lo = start.max(0) as usize;
    let hi = ((start + k as isize).max(0) as usize).min(size);
    (lo, hi)
}

/// Max pooling: y (N·C planes of Ho·Wo) and idx, the flat position h·W + w of each maximum
/// within its input plane (as PyTorch's `indices`). Padded positions never win, which is
/// padding with −inf; on ties the first maximum in row-major order wins, and a NaN wins
/// over numbers (as in PyTorch).
pub fn maxpool2d_forward<T: Float>(
    g: &PoolGeom,
    x: &[T],
    (h, w): (usize, usize),
    (ho, wo): (usize, usize),
    y: &mut [T],
    idx: &mut [u32],
) {
    let (sh, sw) = g.stride;
    let (ph, pw) = g.padding;
    y.par_chunks_mut(ho * wo)
        .zip(idx.par_chunks_mut(ho * wo))
        .zip(x.par_chunks(h * w))
        .for_each(|((yp, ip), xp)| {
            for oy in 0..ho {
                let (y0, y1) = window(oy, sh, ph, g.kh, h);
                for ox in 0..wo {
                    let (x0, x1) = window(ox, sw, pw, g.kw, w);
                    // the validated padding bound makes every window non-empty
                    let mut best = y0 * w + x0;
                    let mut m = xp[best];
                    for iy in y0..y1 {
                        for ix in x0..x1 {
                            let v = xp[iy * w + ix];
                            if v > m || (v.is_nan() && !m.is_nan()) {
                                m = v;
                                best = iy * w + ix;
                            }
                        }
                    }
                    yp[oy * wo + ox] = m;
                    ip[oy * wo + ox] = best as u32;
                }
            }
        });
}

/// dx (N·C planes of H·W) = scatter-add of g (N·C planes of Ho·Wo) at the saved maxima;
/// overwrites dx.
pub fn maxpool2d_backward<T: Float>(
    g: &[T],
    idx: &[u32],
    (h, w): (usize, usize),
    (ho, wo): (usize, usize),
    dx: &mut [T],
) {
    dx.par_chunks_mut(h * w)
        .zip(g.par_chunks(ho * wo).zip(idx.par_chunks(ho * wo)))
        .for_each(|(dp, (gp, ip))| {
            dp.fill(T::zero());
            for (&gv, &i) in gp.iter().zip(ip) {
                dp[i as usize] += gv;
            }
        });
}

/// Average pooling with count_include_pad = True: every window divides by kh·kw (in floor
/// mode no window reaches past the padding, so this is PyTorch's divisor too).
pub fn avgpool2d_forward<T: Float>(
    g: &PoolGeom,
    x: &[T],
    (h, w): (usize, usize),
    (ho, wo): (usize, usize),
    y: &mut [T],
) {
    let (sh, sw) = g.stride;
    let (ph, pw) = g.padding;
    let inv = T::of(1.0 / (g.kh * g.kw) as f64);
    y.par_chunks_mut(ho * wo)
        .zip(x.par_chunks(h * w))
        .for_each(|(yp, xp)| {
            for oy in 0..ho {
                let (y0, y1) = window(oy, sh, ph, g.kh, h);
                for ox in 0..wo {
                    let (x0, x1) = window(ox, sw, pw, g.kw, w);
                    let mut s = T::zero();
                    for iy in y0..y1 {
                        for &v in &xp[iy * w + x0..iy * w + x1] {
                            s += v;
                        }
                    }
                    yp[oy * wo + ox] = s * inv;
                }
            }
        });
}

/// dx (N·C planes of H·W): each output's gradient spread as g/(kh·kw) over the real
/// positions of its window; overwrites dx.
pub fn avgpool2d_backward<T: Float>(
    g: &PoolGeom,
    gy: &[T],
    (h, w): (usize, usize),
    (ho, wo): (usize, usize),
    dx: &mut [T],
) {
    let (sh, sw) = g.stride;
    let (ph, pw) = g.padding;
    let inv = T::of(1.0 / (g.kh * g.kw) as f64);
    dx.par_chunks_mut(h * w)
        .zip(gy.par_chunks(ho * wo))
        .for_each(|(dp, gp)| {
            dp.fill(T::zero());
            for oy in 0..ho {
                let (y0, y1) = window(oy, sh, ph, g.kh, h);
                for ox in 0..wo {
                    let (x0, x1) = window(ox, sw, pw, g.kw, w);
                    let v = gp[oy * wo + ox] * inv;
                    for iy in y0..y1 {
                        for d in &mut dp[iy * w + x0..iy * w + x1] {
                            *d += v;
                        }
                    }
                }
            }
        });
}

/// y (N·C) = mean of each plane of x (N·C planes of `l` = H·W elements).
pub fn global_avg_forward<T: Float>(x: &[T], l: usize, y: &mut [T]) {
    let inv = T::of(1.0 / l as f64);
    y.par_iter_mut()
        .zip(x.par_chunks(l))
        .for_each(|(o, p)| *o = p.iter().copied().sum::<T>() * inv);
}

/// dx (N·C planes of `l`) = `g[plane]` / l broadcast over the plane.
pub fn global_avg_backward<T: Float>(g: &[T], l: usize, dx: &mut [T]) {
    let inv = T::of(1.0 / l as f64);
    dx.par_chunks_mut(l)
        .zip(g.par_iter())
        .for_each(|(d, &gv)| d.fill(gv * inv));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maxpool_and_avgpool_by_hand() {
        // x (1, 1, 3, 3) = [[1, 2, 3], [4, 5, 6], [7, 8, 9]], k2 s1 p1 → (4, 4)
        let x: Vec<f64> = (1..=9).map(f64::from).collect();
        let g = PoolGeom::square(2, 1, 1);
        let (ho, wo) = g.out_hw(3, 3, "t").unwrap();
        assert_eq!((ho, wo), (4, 4));
        let mut y = vec![0.0; 16];
        let mut idx = vec![0u32; 16];
        maxpool2d_forward(&g, &x, (3, 3), (4, 4), &mut y, &mut idx);
        assert_eq!(
            y,
            vec![1., 2., 3., 3., 4., 5., 6., 6., 7., 8., 9., 9., 7., 8., 9., 9.]
        );
        let mut dx = vec![0.0; 9];
        maxpool2d_backward(&[1.0; 16], &idx, (3, 3), (4, 4), &mut dx);
        assert_eq!(dx, vec![1., 1., 2., 1., 1., 2., 2., 2., 4.]);
        // count_include_pad: the corner window holds only x[0,0] = 1 but divides by 4
        avgpool2d_forward(&g, &x, (3, 3), (4, 4), &mut y);
        assert_eq!(y[0], 0.25);
        assert_eq!(y[5], (1. + 2. + 4. + 5.) / 4.);
        assert_eq!(y[15], 9.0 / 4.0);
    }

    #[test]
    fn geometry_is_validated() {
        assert!(PoolGeom::square(3, 2, 2).validate("p").is_err());
        assert!(PoolGeom::square(0, 1, 0).validate("p").is_err());
        assert!(PoolGeom::square(2, 0, 0).validate("p").is_err());
        assert!(PoolGeom::square(3, 2, 1).validate("p").is_ok());
        let e = PoolGeom::square(5, 1, 1).out_hw(2, 2, "p").unwrap_err();
        assert!(e.to_string().contains("larger than the padded input 4x4"));
    }
}

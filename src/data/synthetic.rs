//! A synthetic image-classification set: each class has a fixed random prototype image,
//! and a sample is `prototype·contrast + noise`, shifted by up to one pixel. Learnable in a
//! few epochs by a small CNN, hard enough that an untrained one is at chance level.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::device::alloc::Category;
use crate::tensor::{DType, Tensor};
use crate::{ensure_valid, Device, Error, Result};

pub struct Synthetic {
    /// Per-sample shape (C, H, W).
    pub shape: [usize; 3],
    pub classes: usize,
    prototypes: Vec<Vec<f32>>,
    pub noise: f32,
}

impl Synthetic {
    pub fn new(shape: [usize; 3], classes: usize, noise: f32, seed: u64) -> Result<Synthetic> {
        ensure_valid!(
            classes >= 2,
            "synthetic dataset",
            "needs at least 2 classes, got {classes}"
        );
        ensure_valid!(
            shape.iter().all(|&d| d > 0),
            "synthetic dataset",
            "shape {shape:?} has a zero dimension"
        );
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let [c, h, w] = shape;
        // smooth prototypes: a sum of a few random sinusoids per class
        let prototypes = (0..classes)
            .map(|_| {
                let waves: Vec<(f32, f32, f32, f32)> = (0..3)
                    .map(|_| {
                        (
                            rng.random_range(0.2..1.2),
                            rng.random_range(0.2..1.2),
                            rng.random_range(0.0..std::f32::consts::TAU),
                            rng.random_range(-1.0..1.0),
                        )
                    })
                    .collect();
                let mut img = vec![0f32; c * h * w];
                for ch in 0..c {
                    for y in 0..h {
                        for x in 0..w {
                            img[(ch * h + y) * w + x] = waves
                                .iter()
                                .map(|&(fy, fx, ph, a)| {
                                    a * (fy * y as f32 + fx * x as f32 + ph + ch as f32).sin()
                                })
                                .sum();
                        }
                    }
                }
                img
            })
            .collect();
        Ok(Synthetic {
            shape,
            classes,
            prototypes,
            noise,
        })
    }

    /// `n` samples drawn with `seed`: images (n, C, H, W) charged to `Category::Data`, labels.
    pub fn batch(&self, n: usize, seed: u64) -> Result<(Tensor, Vec<usize>)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let [c, h, w] = self.shape;
        let numel = n
            .checked_mul(c * h * w)
            .ok_or_else(|| Error::invalid("synthetic batch", format!("{n} samples overflow")))?;
        Device::Cpu.check_alloc(numel as u64 * 4, &|| {
            format!("the synthetic set's {n} samples of shape [{c}, {h}, {w}] as f32")
        })?;
        let mut xs = Vec::with_capacity(numel);
        let mut ys = Vec::with_capacity(n);
        for _ in 0..n {
            let y = rng.random_range(0..self.classes);
            let (dy, dx) = (
                rng.random_range(-1i64..=1) as isize,
                rng.random_range(-1i64..=1) as isize,
            );
            let contrast: f32 = rng.random_range(0.6..1.4);
            let p = &self.prototypes[y];
            for ch in 0..c {
                for yy in 0..h as isize {
                    for xx in 0..w as isize {
                        let (sy, sx) = (
                            (yy + dy).clamp(0, h as isize - 1) as usize,
                            (xx + dx).clamp(0, w as isize - 1) as usize,
                        );
                        let z: f32 = StandardNormal.sample(&mut rng);
                        xs.push(p[(ch * h + sy) * w + sx] * contrast + self.noise * z);
                    }
                }
            }
            ys.push(y);
        }
        let t = Tensor::from_vec_in(xs, &[n, c, h, w], Device::Cpu, Category::Data)?;
        Ok((t, ys))
    }

    /// The same batch in another dtype (f64 for gradient checks).
    pub fn batch_as(&self, n: usize, seed: u64, dtype: DType) -> Result<(Tensor, Vec<usize>)> {
        let (x, y) = self.batch(n, seed)?;
        Ok((x.to_dtype(dtype)?, y))
    }
}

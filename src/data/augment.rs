//! Per-sample image augmentation, deterministic from a random generator.
//!
//! The training pipeline of the reference (QuadraLib's `data_augmentation`), in its order:
//! `RandomCrop(size, padding=4)` (zero padding), `RandomHorizontalFlip()`, `ToTensor()`,
//! `Normalize(mean, std)`, then `Cutout(n_holes=1, length)` (DeVries & Taylor, 2017: zero
//! one square, clipped at the border, whose centre is uniform over the image; applied
//! after normalization, as the reference does).
//!
//! Images are one sample's C·H·W values, (C, H, W) row-major.

use rand::RngCore;

use super::below;
use crate::{Error, Result};

/// CIFAR-10 per-channel mean and std, as the reference normalizes.
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
pub const CIFAR10_STD: [f32; 3] = [0.2023, 0.1994, 0.2010];
/// CIFAR-100 per-channel mean and std, as the reference normalizes.
pub const CIFAR100_MEAN: [f32; 3] = [0.5071, 0.4867, 0.4408];
pub const CIFAR100_STD: [f32; 3] = [0.2675, 0.2565, 0.2761];
/// Fashion-MNIST mean and std of the training pixels (the reference has no Fashion-MNIST
/// pipeline; these are the training set's statistics, checked by `tests/data/data_real.rs`).
pub const FASHION_MNIST_MEAN: [f32; 1] = [0.2860];
pub const FASHION_MNIST_STD: [f32; 1] = [0.3530];
/// MNIST mean and std of the training pixels (the usual PyTorch example constants).
pub const MNIST_MEAN: [f32; 1] = [0.1307];
pub const MNIST_STD: [f32; 1] = [0.3081];

/// Per-channel `(x - mean[c]) / std[c]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    pub fn new(mean: &[f32], std: &[f32]) -> Result<Normalize> {
        if mean.len() != std.len() || mean.is_empty() {
            return Err(Error::invalid(
                "normalize",
                format!(
                    "{} means and {} stds: need one of each per channel",
                    mean.len(),
                    std.len()
                ),
            ));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::invalid(
                "normalize",
                format!("std {s} must be positive and finite"),
            ));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(Error::invalid(
                "normalize",
                format!("mean {m} is not finite"),
            ));
        }
        Ok(Normalize {
            mean: mean.to_vec(),
            std: std.to_vec(),
        })
    }

    /// The per-channel mean and (population) standard deviation of a dataset's images,
    /// accumulated in f64 in sample order (deterministic); a channel with no spread gets
    /// std 1 (so normalizing only centres it).
    pub fn of_dataset(d: &super::Dataset) -> Result<Normalize> {
        let [c, h, w] = d.shape();
        let plane = h * w;
        let (mut sum, mut sq) = (vec![0f64; c], vec![0f64; c]);
        let all = d.images().as_slice::<f32>()?;
        for img in all.chunks_exact(c * plane) {
            for (ch, p) in img.chunks_exact(plane).enumerate() {
                for &v in p {
                    sum[ch] += v as f64;
                    sq[ch] += v as f64 * v as f64;
                }
            }
        }
        let n = (d.len() * plane).max(1) as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
        let std: Vec<f32> = (0..c)
            .map(|ch| {
                let m = sum[ch] / n;
                let var = (sq[ch] / n - m * m).max(0.0);
                let s = var.sqrt() as f32;
                if s > 1e-6 {
                    s
                } else {
                    1.0
                }
            })
            .collect();
        Normalize::new(&mean, &std)
    }

    /// The constants for a dataset name (`cifar10`, `cifar100`, `cifar100-coarse`,
    /// `fashion-mnist`, `mnist`); `None` for others (e.g. `synthetic`).
    pub fn for_dataset(name: &str) -> Option<Normalize> {
        let (m, s): (&[f32], &[f32]) = match name {
            "cifar10" => (&CIFAR10_MEAN, &CIFAR10_STD),
            "cifar100" | "cifar100-coarse" => (&CIFAR100_MEAN, &CIFAR100_STD),
            "fashion-mnist" => (&FASHION_MNIST_MEAN, &FASHION_MNIST_STD),
            "mnist" => (&MNIST_MEAN, &MNIST_STD),
            _ => return None,
        };
        Some(Normalize {
            mean: m.to_vec(),
            std: s.to_vec(),
        })
    }
}

/// What to do to each sample. The default does nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Augment {
    /// Random crop back to (H, W) after zero padding by this many pixels on every side.
    pub crop_padding: Option<usize>,
    /// Flip left–right with probability 1/2.
    pub hflip: bool,
    pub normalize: Option<Normalize>,
    /// Cutout: zero one square of this side (after normalization).
    pub cutout: Option<usize>,
}

impl Augment {
    /// No augmentation.
    pub fn none() -> Augment {
        Augment::default()
    }

    /// The reference's training pipeline for a dataset: 32×32 colour sets (CIFAR) get
    /// crop (padding 4) + flip + normalize; the 28×28 grey ones get normalize only; unknown
    /// names (synthetic) nothing. Cutout is off (set `cutout` to enable it; the paper uses
    /// 16 for CIFAR-10, 8 for CIFAR-100).
    pub fn train_preset(dataset: &str) -> Augment {
        let normalize = Normalize::for_dataset(dataset);
        let colour = dataset.starts_with("cifar");
        Augment {
            crop_padding: colour.then_some(4),
            hflip: colour,
            normalize,
            cutout: None,
        }
    }

    /// The reference's evaluation pipeline: normalize only.
    pub fn eval_preset(dataset: &str) -> Augment {
        Augment {
            normalize: Normalize::for_dataset(dataset),
            ..Augment::default()
        }
    }

    pub fn is_identity(&self) -> bool {
        *self == Augment::default()
    }

    /// Whether this augmentation fits samples of `shape` (C, H, W).
    pub fn check(&self, shape: [usize; 3]) -> Result<()> {
        if let Some(n) = &self.normalize {
            let n = Normalize::new(&n.mean, &n.std)?;
            if n.mean.len() != shape[0] && n.mean.len() != 1 {
                return Err(Error::invalid(
                    "normalize",
                    format!(
                        "{} channel constants for {} channels",
                        n.mean.len(),
                        shape[0]
                    ),
                ));
            }
        }
        if self.cutout == Some(0) {
            return Err(Error::invalid("cutout", "hole side must be at least 1"));
        }
        Ok(())
    }

    /// Augment one sample in place; `scratch` is reused between calls (crop needs a copy).
    /// Random draws, in order: crop top, crop left, flip, cutout centre y, x.
    pub fn apply(
        &self,
        img: &mut [f32],
        shape: [usize; 3],
        rng: &mut impl RngCore,
        scratch: &mut Vec<f32>,
    ) -> Result<()> {
        check_len(img, shape)?;
        if let Some(p) = self.crop_padding {
            random_crop(img, shape, p, rng, scratch)?;
        }
        if self.hflip && coin(rng) {
            hflip(img, shape)?;
        }
        if let Some(n) = &self.normalize {
            normalize(img, shape, &n.mean, &n.std)?;
        }
        if let Some(len) = self.cutout {
            cutout(img, shape, len, rng)?;
        }
        Ok(())
    }
}

fn check_len(img: &[f32], shape: [usize; 3]) -> Result<()> {
    let n: usize = shape.iter().product();
    if img.len() != n {
        return Err(Error::shape(
            "augment",
            format!("image has {} values, shape {shape:?} needs {n}", img.len()),
        ));
    }
    Ok(())
}

fn coin(rng: &mut impl RngCore) -> bool {
    rng.next_u64() >> 63 == 1
}

/// Mirror every row (left ↔ right).
pub fn hflip(img: &mut [f32], shape: [usize; 3]) -> Result<()> {
    check_len(img, shape)?;
    let w = shape[2];
    for row in img.chunks_exact_mut(w) {
        row.reverse();
    }
    Ok(())
}

/// `out[c, y, x] = padded[c, y + top, x + left]`, where `padded` is `src` with `padding`
/// zero pixels on each side: torchvision's `RandomCrop((H, W), padding)` at offset
/// (top, left), each in `0..=2·padding`. `out` gets the same shape as `src`.
pub fn crop_padded(
    src: &[f32],
    shape: [usize; 3],
    padding: usize,
    top: usize,
    left: usize,
    out: &mut [f32],
) -> Result<()> {
    check_len(src, shape)?;
    check_len(out, shape)?;
    if top > 2 * padding || left > 2 * padding {
        return Err(Error::invalid(
            "crop",
            format!(
                "offset ({top}, {left}) outside 0..={} for padding {padding}",
                2 * padding
            ),
        ));
    }
    let [c, h, w] = shape;
    for ch in 0..c {
        for y in 0..h {
            let dst = &mut out[(ch * h + y) * w..(ch * h + y + 1) * w];
            // source row = y + top - padding
            let sy = (y + top).checked_sub(padding).filter(|&sy| sy < h);
            match sy {
                None => dst.fill(0.0),
                Some(sy) => {
                    let srow = &src[(ch * h + sy) * w..(ch * h + sy + 1) * w];
                    for (x, d) in dst.iter_mut().enumerate() {
                        *d = (x + left)
                            .checked_sub(padding)
                            .and_then(|sx| srow.get(sx))
                            .copied()
                            .unwrap_or(0.0);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Random crop with zero padding, in place; returns the offset (top, left) drawn.
pub fn random_crop(
    img: &mut [f32],
    shape: [usize; 3],
    padding: usize,
    rng: &mut impl RngCore,
    scratch: &mut Vec<f32>,
) -> Result<(usize, usize)> {
    check_len(img, shape)?;
    let top = below(rng, 2 * padding + 1);
    let left = below(rng, 2 * padding + 1);
    if padding == 0 {
        return Ok((0, 0));
    }
    scratch.clear();
    scratch.extend_from_slice(img);
    crop_padded(scratch, shape, padding, top, left, img)?;
    Ok((top, left))
}

/// Per-channel `(x - mean[c]) / std[c]`; one constant applies to every channel.
pub fn normalize(img: &mut [f32], shape: [usize; 3], mean: &[f32], std: &[f32]) -> Result<()> {
    check_len(img, shape)?;
    let [c, h, w] = shape;
    if mean.len() != std.len() || (mean.len() != c && mean.len() != 1) {
        return Err(Error::invalid(
            "normalize",
            format!(
                "{} means and {} stds for {c} channels",
                mean.len(),
                std.len()
            ),
        ));
    }
    for (ch, plane) in img.chunks_exact_mut(h * w).enumerate() {
        let k = if mean.len() == 1 { 0 } else { ch };
        let (m, inv) = (mean[k], 1.0 / std[k]);
        for v in plane {
            *v = (*v - m) * inv;
        }
    }
    Ok(())
}

/// Cutout: zero the square of side `length` centred at a uniform pixel (y, x), clipped to
/// the image, in every channel. Returns the zeroed rows and columns as
/// `(y0..y1, x0..x1)` = (`y - length/2`..`y + length/2`, same for x), clipped, like
/// DeVries & Taylor's reference code (an odd `length` gives a `length - 1` square).
pub fn cutout(
    img: &mut [f32],
    shape: [usize; 3],
    length: usize,
    rng: &mut impl RngCore,
) -> Result<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    check_len(img, shape)?;
    let [_, h, w] = shape;
    let cy = below(rng, h);
    let cx = below(rng, w);
    let half = length / 2;
    let ys = cy.saturating_sub(half)..(cy + half).min(h);
    let xs = cx.saturating_sub(half)..(cx + half).min(w);
    for plane in img.chunks_exact_mut(h * w) {
        for y in ys.clone() {
            plane[y * w + xs.start..y * w + xs.end].fill(0.0);
        }
    }
    Ok((ys, xs))
}

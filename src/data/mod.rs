//! Datasets for training and evaluation.
//!
//! - [`Dataset`]: an in-memory image-classification set: images f32 (N, C, H, W) scaled to
//!   [0, 1] (the synthetic set is the exception: prototype + noise, not bounded), labels
//!   `usize` below the class count, a name. Loaded from files with [`idx`] (MNIST,
//!   Fashion-MNIST) and [`cifar`] (CIFAR-10/100 binary versions), or made by
//!   [`synthetic`].
//! - [`augment`]: random crop with zero padding, horizontal flip, per-channel normalize,
//!   cutout; deterministic from a seed.
//! - [`loader`]: batches built on background threads, shuffled deterministically from
//!   (seed, epoch), resumable mid-epoch.
//!
//! Every file problem is an `Error::File { path, msg }` naming the file and what is wrong;
//! no input makes a parser panic.

pub mod augment;
pub mod cifar;
pub mod decode;
pub mod folder;
pub mod idx;
pub mod loader;
pub mod preprocess;
pub mod synthetic;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::device::alloc::Category;
use crate::tensor::Tensor;
use crate::{Device, Error, Result};

pub use augment::{Augment, Normalize};
pub use loader::{EpochIter, Loader, LoaderConfig};
pub use preprocess::Preprocess;

/// Environment variable naming a data root. Loaders look in `$QUADRA_DATA_DIR/<dataset>`
/// and in `$QUADRA_DATA_DIR` itself before the system locations.
pub const DATA_DIR_ENV: &str = "QUADRA_DATA_DIR";

pub(crate) fn file_err(path: impl AsRef<Path>, msg: impl Into<String>) -> Error {
    Error::File {
        path: path.as_ref().display().to_string(),
        msg: msg.into(),
    }
}

/// An in-memory image-classification dataset.
///
/// images: (N, C, H, W) f32, charged to `Category::Data`, shared between clones;
/// labels: (N), each `< classes`.
#[derive(Clone, Debug)]
pub struct Dataset {
    name: String,
    source: String,
    shape: [usize; 3],
    classes: usize,
    images: Tensor,
    labels: Arc<[usize]>,
    /// Class names by label, when the dataset has them (empty otherwise).
    class_names: Arc<[String]>,
}

/// The train and test parts of a dataset.
#[derive(Clone, Debug)]
pub struct TrainTest {
    pub train: Dataset,
    pub test: Dataset,
}

impl TrainTest {
    /// Both parts with these class names.
    pub fn with_class_names(self, names: &[impl AsRef<str>]) -> Result<TrainTest> {
        Ok(TrainTest {
            train: self.train.with_class_names(names)?,
            test: self.test.with_class_names(names)?,
        })
    }
}

impl Dataset {
    /// A dataset from f32 images (N·C·H·W values, sample-major) and labels. `source` names
    /// where the data came from (a file path); a label out of range is an `Error::File`
    /// naming `source`, the index and the label.
    pub fn from_f32(
        name: &str,
        source: &str,
        shape: [usize; 3],
        classes: usize,
        images: Vec<f32>,
        labels: Vec<usize>,
    ) -> Result<Dataset> {
        let per = Self::check_parts(source, shape, classes, images.len(), &labels)?;
        debug_assert_eq!(per * labels.len(), images.len());
        let [c, h, w] = shape;
        let t = Tensor::from_vec_in(
            images,
            &[labels.len(), c, h, w],
            Device::Cpu,
            Category::Data,
        )?;
        Ok(Dataset {
            name: name.to_string(),
            source: source.to_string(),
            shape,
            classes,
            images: t,
            labels: labels.into(),
            class_names: Arc::new([]),
        })
    }

    /// A dataset from 8-bit pixels (N·C·H·W bytes), scaled to [0, 1] by 1/255 like
    /// torchvision's `ToTensor`.
    pub fn from_u8(
        name: &str,
        source: &str,
        shape: [usize; 3],
        classes: usize,
        pixels: &[u8],
        labels: Vec<usize>,
    ) -> Result<Dataset> {
        Self::check_parts(source, shape, classes, pixels.len(), &labels)?;
        Device::Cpu.check_alloc(pixels.len() as u64 * 4, &|| {
            format!("{source}: {} images as f32", labels.len())
        })?;
        let images = pixels.iter().map(|&p| p as f32 / 255.0).collect();
        Self::from_f32(name, source, shape, classes, images, labels)
    }

    fn check_parts(
        source: &str,
        shape: [usize; 3],
        classes: usize,
        values: usize,
        labels: &[usize],
    ) -> Result<usize> {
        if shape.contains(&0) {
            return Err(file_err(
                source,
                format!("sample shape {shape:?} has a zero dimension"),
            ));
        }
        if classes == 0 {
            return Err(file_err(source, "class count is 0"));
        }
        let per: usize = shape.iter().product();
        if labels.len().checked_mul(per) != Some(values) {
            return Err(file_err(
                source,
                format!(
                    "{} labels but {values} image values ({} per {shape:?} sample)",
                    labels.len(),
                    per
                ),
            ));
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
            return Err(file_err(
                source,
                format!(
                    "label {l} at index {i} is out of range for {classes} classes (0..{classes})"
                ),
            ));
        }
        Ok(per)
    }

    /// The synthetic smoke-test set ([`synthetic::Synthetic`]: 1×28×28, 10 classes, noise
    /// 0.8) as a train and a test part drawn with seeds derived from `seed`.
    pub fn synthetic(n_train: usize, n_test: usize, seed: u64) -> Result<TrainTest> {
        let gen = synthetic::Synthetic::new([1, 28, 28], 10, 0.8, seed)?;
        let part = |n: usize, salt: u64| -> Result<Dataset> {
            let (x, y) = gen.batch(n, derive_seed(seed, salt, 0))?;
            Dataset::from_tensor("synthetic", "synthetic", 10, x, y)
        };
        Ok(TrainTest {
            train: part(n_train, 1)?,
            test: part(n_test, 2)?,
        })
    }

    /// A dataset around an existing (N, C, H, W) f32 tensor (charged to `Category::Data`).
    pub fn from_tensor(
        name: &str,
        source: &str,
        classes: usize,
        images: Tensor,
        labels: Vec<usize>,
    ) -> Result<Dataset> {
        let (n, c, h, w) = images.dims4("dataset images")?;
        let shape = [c, h, w];
        if n != labels.len() {
            return Err(file_err(
                source,
                format!("{n} images but {} labels", labels.len()),
            ));
        }
        Self::check_parts(source, shape, classes, images.numel(), &labels)?;
        images.as_slice::<f32>()?;
        if images.category() != Category::Data {
            images.retag(Category::Data);
        }
        Ok(Dataset {
            name: name.to_string(),
            source: source.to_string(),
            shape,
            classes,
            images,
            labels: labels.into(),
            class_names: Arc::new([]),
        })
    }

    /// Fashion-MNIST (gzip or plain IDX). Looks in `dir` (and `dir/fashion-mnist`) when
    /// given; otherwise in `$QUADRA_DATA_DIR/fashion-mnist`, `$QUADRA_DATA_DIR`, then
    /// `/usr/share/datasets/fashion-mnist` (Debian package `dataset-fashion-mnist`).
    pub fn fashion_mnist(dir: Option<&Path>) -> Result<TrainTest> {
        idx::load_mnist_format(
            "fashion-mnist",
            &search_dirs(
                dir,
                &["fashion-mnist", "fashion_mnist"],
                idx::FASHION_MNIST_DEBIAN_DIR,
            ),
            "Fashion-MNIST is packaged in Debian: `apt-get install dataset-fashion-mnist` puts \
             it in /usr/share/datasets/fashion-mnist",
        )
    }

    /// MNIST (gzip or plain IDX, the same file names as Fashion-MNIST). Looks in `dir` (and
    /// `dir/mnist`) when given, otherwise in `$QUADRA_DATA_DIR/mnist`, `$QUADRA_DATA_DIR`,
    /// `/usr/share/datasets/mnist`.
    pub fn mnist(dir: Option<&Path>) -> Result<TrainTest> {
        idx::load_mnist_format(
            "mnist",
            &search_dirs(dir, &["mnist"], "/usr/share/datasets/mnist"),
            "MNIST has no Debian package: put the four IDX files there and pass the folder \
             (or set QUADRA_DATA_DIR)",
        )
    }

    /// CIFAR-10, binary version (`data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin`).
    /// Looks in `dir` (and `dir/cifar-10-batches-bin`) when given, otherwise under
    /// `$QUADRA_DATA_DIR`.
    pub fn cifar10(dir: Option<&Path>) -> Result<TrainTest> {
        cifar::load_dir(
            cifar::CifarKind::Cifar10,
            &search_dirs(dir, &["cifar-10-batches-bin", "cifar10", "cifar-10"], ""),
        )
    }

    /// CIFAR-100, binary version (`train.bin`, `test.bin`), with its 100 fine labels
    /// (`Cifar100Labels::Fine`) or 20 coarse ones. Looks in `dir` (and
    /// `dir/cifar-100-binary`) when given, otherwise under `$QUADRA_DATA_DIR`.
    pub fn cifar100(dir: Option<&Path>, labels: cifar::Cifar100Labels) -> Result<TrainTest> {
        cifar::load_dir(
            cifar::CifarKind::Cifar100(labels),
            &search_dirs(dir, &["cifar-100-binary", "cifar100", "cifar-100"], ""),
        )
    }

    /// A dataset by its command-line name: `fashion-mnist`, `mnist`, `cifar10`, `cifar100`
    /// (fine labels), `cifar100-coarse`, or `synthetic` (10000 train, 2000 test, seed 0).
    pub fn by_name(name: &str, dir: Option<&Path>) -> Result<TrainTest> {
        use preprocess::{CIFAR10_CLASSES, FASHION_MNIST_CLASSES, MNIST_CLASSES};
        match name.to_ascii_lowercase().replace('_', "-").as_str() {
            "fashion-mnist" | "fashionmnist" | "fmnist" => {
                Self::fashion_mnist(dir)?.with_class_names(&FASHION_MNIST_CLASSES)
            }
            "mnist" => Self::mnist(dir)?.with_class_names(&MNIST_CLASSES),
            "cifar10" | "cifar-10" => Self::cifar10(dir)?.with_class_names(&CIFAR10_CLASSES),
            "cifar100" | "cifar-100" => Self::cifar100(dir, cifar::Cifar100Labels::Fine),
            "cifar100-coarse" | "cifar-100-coarse" => {
                Self::cifar100(dir, cifar::Cifar100Labels::Coarse)
            }
            "synthetic" => Self::synthetic(10_000, 2_000, 0),
            other => Err(Error::invalid(
                "dataset",
                format!(
                    "unknown dataset `{other}` (expected fashion-mnist, mnist, cifar10, \
                     cifar100, cifar100-coarse or synthetic)"
                ),
            )),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    /// Class names by label; empty when the dataset has none.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }
    /// The dataset with these class names (one per class).
    pub fn with_class_names(mut self, names: &[impl AsRef<str>]) -> Result<Dataset> {
        if names.len() != self.classes {
            return Err(file_err(
                &self.source,
                format!("{} class names for {} classes", names.len(), self.classes),
            ));
        }
        self.class_names = names.iter().map(|n| n.as_ref().to_string()).collect();
        Ok(self)
    }
    /// Where the data came from (a file path, or a description).
    pub fn source(&self) -> &str {
        &self.source
    }
    /// Per-sample shape (C, H, W).
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }
    pub fn classes(&self) -> usize {
        self.classes
    }
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// All images, (N, C, H, W) f32.
    pub fn images(&self) -> &Tensor {
        &self.images
    }
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }
    /// Values per sample (C·H·W).
    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Sample `i`: its C·H·W values and its label; `None` past the end.
    pub fn sample(&self, i: usize) -> Option<(&[f32], usize)> {
        let per = self.sample_len();
        let all = self.images.as_slice::<f32>().ok()?;
        let img = all.get(i.checked_mul(per)?..i.checked_add(1)?.checked_mul(per)?)?;
        Some((img, *self.labels.get(i)?))
    }

    /// The samples at `indices` (in that order, repeats allowed), copied.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        let per = self.sample_len();
        let all = self.images.as_slice::<f32>()?;
        let mut xs = Vec::with_capacity(indices.len() * per);
        let mut ys = Vec::with_capacity(indices.len());
        for (k, &i) in indices.iter().enumerate() {
            if i >= self.len() {
                return Err(Error::invalid(
                    "dataset subset",
                    format!(
                        "index {i} (position {k}) is out of range for `{}` with {} samples",
                        self.name,
                        self.len()
                    ),
                ));
            }
            xs.extend_from_slice(&all[i * per..(i + 1) * per]);
            ys.push(self.labels[i]);
        }
        let mut d = Self::from_f32(&self.name, &self.source, self.shape, self.classes, xs, ys)?;
        d.class_names = self.class_names.clone();
        Ok(d)
    }

    /// The first `n_first` samples and the rest (e.g. train / validation), copied.
    pub fn split(&self, n_first: usize) -> Result<(Dataset, Dataset)> {
        self.check_split(n_first)?;
        let first: Vec<usize> = (0..n_first).collect();
        let rest: Vec<usize> = (n_first..self.len()).collect();
        Ok((self.subset(&first)?, self.subset(&rest)?))
    }

    /// Like [`Dataset::split`], after a deterministic shuffle from `seed`.
    pub fn random_split(&self, n_first: usize, seed: u64) -> Result<(Dataset, Dataset)> {
        self.check_split(n_first)?;
        let perm = permutation(self.len(), &mut rng_for(seed, u64::MAX, 0x0053_504c_4954));
        Ok((
            self.subset(&perm[..n_first])?,
            self.subset(&perm[n_first..])?,
        ))
    }

    fn check_split(&self, n_first: usize) -> Result<()> {
        if n_first > self.len() {
            return Err(Error::invalid(
                "dataset split",
                format!(
                    "cannot take {n_first} samples from `{}` with {}",
                    self.name,
                    self.len()
                ),
            ));
        }
        Ok(())
    }

    /// The first `min(n, len)` samples (quick runs).
    pub fn take(&self, n: usize) -> Result<Dataset> {
        Ok(self.split(n.min(self.len()))?.0)
    }
}

/// The folders to look in: `dir` and `dir/<sub>` when given; otherwise
/// `$QUADRA_DATA_DIR/<sub>`, `$QUADRA_DATA_DIR`, then `system` (when not empty).
fn search_dirs(dir: Option<&Path>, subs: &[&str], system: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut root = |d: &Path| {
        for s in subs {
            out.push(d.join(s));
        }
        out.push(d.to_path_buf());
    };
    match dir {
        Some(d) => root(d),
        None => {
            if let Some(d) = std::env::var_os(DATA_DIR_ENV).filter(|d| !d.is_empty()) {
                root(Path::new(&d));
            }
            if !system.is_empty() {
                out.push(PathBuf::from(system));
            }
        }
    }
    out
}

pub(crate) fn display_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return format!("(no folder: pass one or set {DATA_DIR_ENV})");
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Mix (seed, a, b) into one 64-bit seed (splitmix64 finalizer on each step).
pub(crate) fn derive_seed(seed: u64, a: u64, b: u64) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    mix(mix(mix(seed) ^ a) ^ b)
}

/// A ChaCha8 generator keyed by (seed, a, b): independent streams for every triple, the
/// same stream on every run and machine (no dependence on thread scheduling).
pub fn rng_for(seed: u64, a: u64, b: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&a.to_le_bytes());
    key[16..24].copy_from_slice(&b.to_le_bytes());
    key[24..].copy_from_slice(&derive_seed(seed, a, b).to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// A uniform integer in `0..n` (`n > 0`) from 64 random bits (multiply-shift; the bias is
/// below 2⁻⁴⁰ for any n we use). Defined here rather than by `rand`'s range sampling so
/// the streams stay the same across `rand` versions.
pub(crate) fn below(rng: &mut impl RngCore, n: usize) -> usize {
    ((rng.next_u64() as u128 * n as u128) >> 64) as usize
}

/// A uniformly random permutation of `0..n` (Fisher–Yates).
pub(crate) fn permutation(n: usize, rng: &mut impl RngCore) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = below(rng, i + 1);
        p.swap(i, j);
    }
    p
}

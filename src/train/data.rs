//! A run's device, model spec and data: the training loader (shuffle and augmentation
//! keyed by (seed, epoch)) and the test loader, and evaluation over them.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};

use crate::checkpoint::Checkpoint;
use crate::data::synthetic::Synthetic;
use crate::data::{Augment, Dataset, Loader, LoaderConfig, Normalize, Preprocess, TrainTest};
use crate::model::Model;
use crate::nn::spec::ModelSpec;
use crate::Tensor;

use super::config::{AugmentKind, DatasetKind, TrainConfig};

/// A dataset: shuffled, augmented training batches and the test set in eval mode.
pub struct Data {
    pub train: Loader,
    pub test: Loader,
    /// Where the samples came from (files, or "synthetic").
    pub source: String,
    /// What a raw sample needs to become a model input (the test loader's normalization)
    /// and the class names: what the trainer stores in the model's spec.
    pub preprocess: Preprocess,
}

/// The datasets of `cfg` for `spec`: the synthetic set (seeded by `cfg.seed`) or the
/// dataset's files, checked against the model's input shape and class count.
pub fn build_data(cfg: &TrainConfig, spec: &ModelSpec) -> Result<Data> {
    let name = cfg.dataset.name();
    // the input shape is known before reading the files: fail fast on a model/dataset mismatch
    let known: Option<[usize; 3]> = match cfg.dataset {
        DatasetKind::Synthetic | DatasetKind::Folder(_) => None,
        DatasetKind::FashionMnist | DatasetKind::Mnist => Some([1, 28, 28]),
        DatasetKind::Cifar10 | DatasetKind::Cifar100 => Some([3, 32, 32]),
    };
    if let Some(shape) = known {
        check_shape(spec, name, shape)?;
    }
    let tt = match cfg.dataset {
        DatasetKind::Synthetic => {
            let shape: [usize; 3] = spec.input.as_slice().try_into().map_err(|_| {
                anyhow!(
                    "model `{}` takes input {:?}; the synthetic dataset makes (C, H, W) images",
                    spec.name,
                    spec.input
                )
            })?;
            let synth = Synthetic::new(shape, spec.num_classes, 0.8, cfg.seed)?;
            let (x, y) = synth.batch(cfg.train_samples, train_seed(cfg.seed))?;
            let (tx, ty) = synth.batch(cfg.test_samples, test_seed(cfg.seed))?;
            TrainTest {
                train: Dataset::from_tensor("synthetic", "synthetic", spec.num_classes, x, y)?,
                test: Dataset::from_tensor("synthetic", "synthetic", spec.num_classes, tx, ty)?,
            }
        }
        DatasetKind::Folder(_) => load_folder(cfg)?,
        _ => Dataset::by_name(name, cfg.data_dir.as_deref())
            .with_context(|| format!("--dataset {name}"))?,
    };
    loaders(cfg, spec, tt)
}

/// The images of `--dataset folder:PATH`, split into train and test
/// ([`crate::data::folder`]; a folder without `train/` is split by `cfg.seed`).
fn load_folder(cfg: &TrainConfig) -> Result<TrainTest> {
    let DatasetKind::Folder(path) = &cfg.dataset else {
        bail!("load_folder: --dataset {} is not a folder", cfg.dataset);
    };
    crate::data::folder::load(path, cfg.seed).with_context(|| format!("--dataset {}", cfg.dataset))
}

/// The datasets a run must read before its model exists: a folder's, whose subfolders give
/// the class count (set in `cfg.num_classes`). `None` for the built-in sets, whose class
/// counts are known.
pub fn data_before_model(cfg: &mut TrainConfig) -> Result<Option<TrainTest>> {
    if !matches!(cfg.dataset, DatasetKind::Folder(_)) {
        return Ok(None);
    }
    let tt = load_folder(cfg)?;
    cfg.num_classes = tt.train.classes();
    Ok(Some(tt))
}

/// Loaders over given datasets, with `cfg`'s batch size, seed, workers and augmentation
/// (the presets of `cfg.dataset`).
pub fn loaders(cfg: &TrainConfig, spec: &ModelSpec, tt: TrainTest) -> Result<Data> {
    let name = cfg.dataset.name();
    check_shape(spec, name, tt.train.shape())?;
    if tt.train.classes() != spec.num_classes {
        bail!(
            "model `{}` has {} classes, dataset `{name}` {}",
            spec.name,
            spec.num_classes,
            tt.train.classes()
        );
    }
    let source = tt.train.source().to_string();
    let mut augment = match cfg.augmentation {
        AugmentKind::Default => Augment::train_preset(name),
        AugmentKind::None => Augment::eval_preset(name),
    };
    let mut eval_augment = Augment::eval_preset(name);
    if let DatasetKind::Folder(_) = cfg.dataset {
        // a user's images: normalized with their own training split's per-channel mean and
        // std (deterministic, so a resumed run computes the same), nothing else by default
        let n = Normalize::of_dataset(&tt.train)?;
        augment.normalize = Some(n.clone());
        eval_augment.normalize = Some(n);
    }
    augment.cutout = cfg.cutout;
    // what a raw input needs to become this run's model input: the eval pipeline's
    // normalization (stored in the model's spec by the trainer)
    let preprocess = Preprocess {
        normalize: eval_augment.normalize.clone(),
        classes: tt.train.class_names().to_vec(),
    };
    let train = Loader::new(
        tt.train,
        LoaderConfig {
            batch_size: cfg.batch_size,
            shuffle: true,
            drop_last: false,
            seed: cfg.seed,
            workers: cfg.workers,
            prefetch: 2,
            augment,
        },
    )?;
    let test = Loader::new(
        tt.test,
        LoaderConfig {
            batch_size: 256,
            shuffle: false,
            drop_last: false,
            seed: cfg.seed,
            workers: cfg.workers.min(1),
            prefetch: 2,
            augment: eval_augment,
        },
    )?;
    Ok(Data {
        train,
        test,
        source,
        preprocess,
    })
}

/// The model `train` builds: a zoo name, or the path of a spec JSON file (what
/// `convert -o FILE.json` writes), whose class count must match the dataset's.
pub fn model_spec(model: &str, classes: usize) -> Result<ModelSpec> {
    if !model.ends_with(".json") {
        return Ok(crate::models::get(model, None, classes)?);
    }
    let text = std::fs::read_to_string(model)
        .with_context(|| format!("{model}: cannot read the model spec"))?;
    let spec = ModelSpec::from_json(&text).with_context(|| model.to_string())?;
    spec.check().with_context(|| model.to_string())?;
    if spec.num_classes != classes {
        bail!(
            "{model}: the spec has {} classes, the dataset has {classes}",
            spec.num_classes
        );
    }
    Ok(spec)
}

fn check_shape(spec: &ModelSpec, name: &str, shape: [usize; 3]) -> Result<()> {
    if spec.input[..] != shape[..] {
        bail!(
            "model `{}` takes {:?} inputs but dataset `{name}` has {:?} images: pick a model \
             for {}×{}×{} inputs (28×28 grey: qcnn, cnn, mlp; 32×32 colour: qresnet14, \
             resnet20, qvgg7, vgg11, …)",
            spec.name,
            spec.input,
            shape,
            shape[0],
            shape[1],
            shape[2]
        );
    }
    Ok(())
}

fn train_seed(seed: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x7EA1_7EA1
}

fn test_seed(seed: u64) -> u64 {
    seed ^ 0x7E57_7E57_7E57_7E57
}

/// Mean loss and accuracy of `x` (N, …) with labels `y` (N), in eval mode, `batch`
/// samples at a time. `x` is raw (the model's stored normalization is applied, as
/// `Model::evaluate` does), or with `normalized` given to the first layer as it is.
pub fn evaluate_tensors(
    model: &Model,
    x: &Tensor,
    y: &[usize],
    batch: usize,
    normalized: bool,
) -> Result<(f64, f64)> {
    let n = y.len();
    let per: usize = x.shape()[1..].iter().product();
    let xs = x.to_f64_vec();
    let (mut loss, mut correct) = (0.0, 0usize);
    let mut i = 0;
    while i < n {
        let b = batch.min(n - i);
        let mut shape = x.shape().to_vec();
        shape[0] = b;
        let xb = Tensor::from_f64(&xs[i * per..(i + b) * per], &shape, x.dtype())?;
        let out = if normalized {
            model.evaluate_normalized(&xb, &y[i..i + b])?
        } else {
            model.evaluate(&xb, &y[i..i + b])?
        };
        loss += out.loss * b as f64;
        correct += out.correct;
        i += b;
    }
    Ok((loss / n as f64, correct as f64 / n as f64))
}

/// Mean loss and accuracy over a loader's epoch 0 (in order), in eval mode.
pub fn evaluate(model: &Model, data: &Loader) -> Result<(f64, f64)> {
    let (mut loss, mut correct, mut n) = (0.0, 0usize, 0usize);
    for b in data.epoch(0)? {
        let (x, y) = b?;
        let out = model.evaluate_normalized(&x, &y)?;
        loss += out.loss * y.len() as f64;
        correct += out.correct;
        n += y.len();
    }
    Ok((loss / n as f64, correct as f64 / n as f64))
}

/// The data a checkpoint is examined on: `dataset` (and `data_dir`) when given, else its
/// training config's, else the synthetic default; a synthetic set gets at least
/// `test_samples` test and `train_samples` training samples (and no more training samples
/// than needed).
pub fn checkpoint_data(
    ck: &Checkpoint,
    model: &Model,
    dataset: Option<DatasetKind>,
    data_dir: Option<&PathBuf>,
    test_samples: usize,
    train_samples: usize,
) -> Result<(TrainConfig, Data)> {
    let mut cfg: TrainConfig = match &ck.config {
        Some(c) => serde_json::from_value(c.clone()).unwrap_or_default(),
        None => TrainConfig::default(),
    };
    if let Some(d) = dataset {
        cfg.dataset = d;
    }
    if let Some(d) = data_dir {
        cfg.data_dir = Some(d.clone());
    }
    cfg.num_classes = cfg.dataset.classes().unwrap_or(model.spec.num_classes);
    cfg.test_samples = cfg.test_samples.max(test_samples);
    cfg.train_samples = train_samples.max(2);
    let d = build_data(&cfg, &model.spec)?;
    Ok((cfg, d))
}

/// `n` samples of a loader's dataset with its preprocessing: the first n, or with `shuffle`
/// n drawn at random (seeded). Returns the inputs (n, C, H, W) and labels (n).
pub fn samples_of(l: &Loader, n: usize, shuffle: bool, seed: u64) -> Result<(Tensor, Vec<usize>)> {
    let n = n.min(l.dataset().len()).max(1);
    let ds = if shuffle {
        l.dataset().clone()
    } else {
        l.dataset().take(n)?
    };
    let loader = Loader::new(
        ds,
        LoaderConfig {
            batch_size: n,
            shuffle,
            drop_last: false,
            seed,
            workers: 0,
            prefetch: 1,
            augment: l.config().augment.clone(),
        },
    )?;
    Ok(loader.batch(0, 0)?)
}

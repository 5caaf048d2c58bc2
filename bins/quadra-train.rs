//! quadra-train: train, evaluate, predict with, inspect and convert QDNN checkpoints.
//!
//!     quadra-train train --model qcnn --dataset fashion-mnist --epochs 2 --out runs/a
//!     quadra-train train --config configs/qresnet14-cifar10.toml --data-dir DIR --out runs/b
//!     quadra-train train --resume runs/a --epochs 6 --out runs/a
//!     quadra-train eval --checkpoint runs/a/best.safetensors
//!     quadra-train predict --checkpoint CKPT --input x.safetensors --output y.safetensors
//!     quadra-train import --from torch --model qresnet14 weights.safetensors -o ck.safetensors
//!     quadra-train export --to torch CKPT -o weights.safetensors
//!     quadra-train info CKPT
//!     quadra-train memory --model qcnn --batch 4 --steps 1 --budget-mib 2.5 --out mem
//!     quadra-train analyze --model qcnn --batch 8 --out an
//!     quadra-train cost --model qresnet14 --json
//!     quadra-train convert --model cnn --neuron quadralib-bn -o x.json
//!     quadra-train convert --checkpoint CKPT --neuron quadralib-bn --select "conv*" -o q.safetensors
//!     quadra-train importance --checkpoint q.safetensors --samples 256
//!
//! Every subcommand takes `--json` for a machine-readable summary on stdout. Errors go to
//! stderr with the file and tensor they concern, and the exit status is non-zero; no output
//! file is written (all writes are atomic).
//!
//! `train` resolves a `TrainConfig` (serde, unknown fields rejected; stored in every
//! checkpoint) from: the flags, over the `--config` TOML file, over the resumed checkpoint's
//! config, over the defaults. Data come from `quadra::data` through a `Loader` (shuffle and
//! augmentation keyed by (seed, epoch)), so a run resumes from any checkpoint — epoch or
//! mid-epoch (`--save-every`) — with the optimizer state, the lr schedule position and the
//! epoch's running sums restored, and continues bit-identically on the CPU.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use quadra::checkpoint::{self, Checkpoint, OptimState};
use quadra::data::synthetic::Synthetic;
use quadra::data::{Augment, Dataset, Loader, LoaderConfig, TrainTest};
use quadra::model::Model;
use quadra::nn::quadratic::NeuronType;
use quadra::nn::spec::{quadratic_layers, BuildOptions, ModelSpec};
use quadra::nn::BackpropMode;
use quadra::optim::{
    clip_grad_norm, AdamConfig, BaseOptimizer, Constant, CosineAnnealing, Every, LrScheduler,
    Optimizer, QuadraticConfig, QuadraticOptimizer, Schedule, StepDecay, Warmup,
};
use quadra::{DType, Device, Tensor};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Train, evaluate, serve-predict, inspect and convert QDNN checkpoints"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Train a zoo model on a dataset (flags and/or a TOML config), with a checkpoint per
    /// epoch (and every --save-every steps), the best one, metrics and a chart; resumes
    /// exactly.
    Train(Box<TrainArgs>),
    /// Loss and accuracy of a checkpoint (on --input or the synthetic test set).
    Eval(EvalArgs),
    /// Eval-mode logits of tensor `input` (N, C, H, W) of a safetensors file.
    Predict(PredictArgs),
    /// Convert a PyTorch state dict (safetensors) into a checkpoint.
    Import(ImportArgs),
    /// Write a checkpoint's weights as a PyTorch state dict (safetensors).
    Export(ExportArgs),
    /// Describe a checkpoint: model, parameters, training position.
    Info(InfoArgs),
    /// Memory profile of training steps (stored vs recompute back-propagation), budget
    /// plans verified by measurement, charts and an HTML report.
    Memory(MemoryArgs),
    /// Distributions of a model's layer outputs, weights and gradients, with a histogram grid.
    Analyze(AnalyzeArgs),
    /// Parameters and multiply-accumulates of a model, per layer.
    Cost(CostArgs),
    /// Convert a model's layers to quadratic neurons: a spec (JSON) or, with --checkpoint,
    /// a checkpoint with function-preserving weights.
    Convert(ConvertArgs),
    /// Rank a checkpoint's quadratic layers by importance on the test split.
    Importance(ImportanceArgs),
    /// Reduce a QDNN checkpoint to a parameter or MAC budget along its importance ranking:
    /// the reduced spec (JSON, for `train --model`) and optionally its weights.
    Reduce(ReduceArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Backprop {
    Stored,
    Recompute,
}

impl From<Backprop> for BackpropMode {
    fn from(b: Backprop) -> Self {
        match b {
            Backprop::Stored => BackpropMode::Stored,
            Backprop::Recompute => BackpropMode::Recompute,
        }
    }
}

/// `train` options. Every one is optional: a value comes from the flag, else from the
/// `--config` file, else (with `--resume`) from the checkpoint's config, else the default.
#[derive(Args, Debug)]
struct TrainArgs {
    /// TOML config (keys as in configs/*.toml: architecture, dataset, epochs, lr, final_lr,
    /// batch_size, …); flags given on the command line override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Zoo model (default qcnn), or a model spec JSON file such as `convert -o` writes.
    #[arg(long)]
    model: Option<String>,
    /// Dataset (default synthetic).
    #[arg(long, value_enum)]
    dataset: Option<DatasetKind>,
    /// Where the dataset's files are (default: $QUADRA_DATA_DIR, then the system places).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Training augmentation: the dataset's preset (CIFAR: crop + flip + normalize; MNIST
    /// sets: normalize) or none (default: default).
    #[arg(long, value_enum)]
    augment: Option<AugmentKind>,
    /// Cutout square side in pixels (0: off, the default).
    #[arg(long)]
    cutout: Option<usize>,
    /// Train until this many epochs are complete (counting those of --resume; default 3).
    #[arg(long)]
    epochs: Option<usize>,
    /// Default 64.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Default sgd.
    #[arg(long, value_enum)]
    optimizer: Option<OptimKind>,
    /// Base learning rate (default 0.05 for sgd, 0.001 for adam/adamw).
    #[arg(long)]
    lr: Option<f64>,
    /// Learning rate the cosine schedule anneals to over the run (default 0).
    #[arg(long)]
    final_lr: Option<f64>,
    /// LR schedule, stepped per epoch (default cosine).
    #[arg(long, value_enum)]
    schedule: Option<ScheduleKind>,
    /// Linear warm-up epochs (from 0.1·lr) before the schedule (default 0).
    #[arg(long)]
    warmup_epochs: Option<usize>,
    /// Step schedule: epochs between decays (default: a third of the run).
    #[arg(long)]
    step_size: Option<usize>,
    /// Step schedule: decay factor (default 0.1).
    #[arg(long)]
    gamma: Option<f64>,
    /// SGD momentum (default 0.9).
    #[arg(long)]
    momentum: Option<f64>,
    /// Default 5e-4 (0.01 for adamw).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Nesterov momentum (SGD).
    #[arg(long)]
    nesterov: bool,
    /// Clip gradients to this global L2 norm (default: no clipping).
    #[arg(long)]
    clip_grad_norm: Option<f64>,
    /// Quadratic optimizer: lr multiplier of the second-order weights (default 0.1).
    #[arg(long)]
    quad_lr_scale: Option<f64>,
    /// Quadratic optimizer: ReLinear init scale of a fresh run (default 0).
    #[arg(long)]
    relinear: Option<f64>,
    /// Quadratic optimizer: keep the initial weights (no ReLinear).
    #[arg(long)]
    no_relinear: bool,
    /// Plain optimizer for quadratic models too (no second-order group, no ReLinear).
    #[arg(long)]
    no_quadratic_optimizer: bool,
    /// Back-propagation of quadratic layers (default stored).
    #[arg(long, value_enum)]
    backprop: Option<Backprop>,
    /// auto, cpu, cuda[:N] or emu (the CUDA backend's code path run by the kernel emulator
    /// on the CPU); default auto: a usable CUDA GPU, else the CPU.
    #[arg(long)]
    device: Option<String>,
    /// Seed of the weights, the shuffling and the augmentation (default 0).
    #[arg(long)]
    seed: Option<u64>,
    /// Synthetic dataset: training samples (default 3840).
    #[arg(long)]
    train_samples: Option<usize>,
    /// Synthetic dataset: test samples (default 1000).
    #[arg(long)]
    test_samples: Option<usize>,
    /// Data-loading threads (default 2).
    #[arg(long)]
    workers: Option<usize>,
    /// Also write a checkpoint every this many optimizer steps (mid-epoch; 0: off).
    #[arg(long)]
    save_every: Option<usize>,
    /// Output directory: epoch-NNNN.safetensors, step-NNNNNNNN.safetensors,
    /// last.safetensors, best.safetensors, metrics.jsonl, steps.jsonl, chart.svg.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Start over in an --out that already holds a run (its logs are restarted).
    #[arg(long)]
    force: bool,
    /// Continue from a checkpoint written by `train` (its config is the base of this run's).
    #[arg(long, conflicts_with = "init")]
    resume: Option<PathBuf>,
    /// Start a fresh run (epoch 0, new optimizer, no ReLinear) from this checkpoint's model
    /// and weights, e.g. one written by `convert --checkpoint`: fine-tuning. The model is
    /// the checkpoint's (do not pass --model).
    #[arg(long, conflicts_with = "model")]
    init: Option<PathBuf>,
    /// JSON lines on stdout (one per epoch, then a summary).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct EvalArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// A safetensors file with `input` (N, C, H, W) and `labels` (N); default: the test
    /// set of the checkpoint's run config.
    #[arg(long, conflicts_with_all = ["dataset", "data_dir"])]
    input: Option<PathBuf>,
    /// Evaluate on this dataset's test split (needed for a checkpoint without a training
    /// config, e.g. a converted or imported one).
    #[arg(long, value_enum)]
    dataset: Option<DatasetKind>,
    /// Where the dataset's files are.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// auto, cpu, cuda[:N] or emu: where the model runs (default auto).
    #[arg(long, default_value = "auto")]
    device: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct PredictArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// safetensors file with tensor `input` (N, C, H, W).
    #[arg(long)]
    input: PathBuf,
    /// safetensors file to write with tensor `logits` (N, classes).
    #[arg(long)]
    output: PathBuf,
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// auto, cpu, cuda[:N] or emu: where the model runs (default auto).
    #[arg(long, default_value = "auto")]
    device: String,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Framework {
    Torch,
}

#[derive(Args, Debug)]
struct ImportArgs {
    #[arg(long, value_enum)]
    from: Framework,
    /// Zoo model whose PyTorch state dict the file holds.
    #[arg(long)]
    model: String,
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Neuron of the quadratic layers (default quadralib-bn, the reference's).
    #[arg(long)]
    neuron: Option<String>,
    /// f32 or f64.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// The PyTorch state dict (safetensors).
    input: PathBuf,
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ExportArgs {
    #[arg(long, value_enum)]
    to: Framework,
    checkpoint: PathBuf,
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct InfoArgs {
    checkpoint: PathBuf,
    #[arg(long)]
    json: bool,
}

/// A model: a zoo name or a spec file (JSON, as `convert` writes).
#[derive(Args, Debug)]
struct SpecSource {
    /// Zoo model (qcnn, cnn, qresnet14, resnet20, …).
    #[arg(long, conflicts_with = "spec", required_unless_present = "spec")]
    model: Option<String>,
    /// Model spec file (JSON).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Classes of a zoo model.
    #[arg(long, default_value_t = 10)]
    classes: usize,
}

impl SpecSource {
    fn load(&self) -> Result<ModelSpec> {
        match (&self.model, &self.spec) {
            (_, Some(p)) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("--spec {}", p.display()))?;
                Ok(ModelSpec::from_json(&text)
                    .with_context(|| format!("--spec {}", p.display()))?)
            }
            (Some(m), None) => Ok(quadra::models::get(m, None, self.classes)
                .with_context(|| format!("--model {m}"))?),
            (None, None) => bail!("pass --model NAME or --spec FILE.json"),
        }
    }
}

#[derive(Args, Debug)]
struct MemoryArgs {
    #[command(flatten)]
    source: SpecSource,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Threads of the profiled steps (0: all cores).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Timed steps per configuration.
    #[arg(long, default_value_t = 2)]
    steps: usize,
    /// Where the steps run: cpu, emu (the CUDA backend on the kernel emulator), cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// A memory budget in bytes to plan for and verify (repeatable).
    #[arg(long)]
    memory_budget: Vec<u64>,
    /// A memory budget in MiB to plan for and verify (repeatable).
    #[arg(long)]
    budget_mib: Vec<f64>,
    /// Output directory: timeline.{png,svg}, layers.{png,svg}, report.json, report.html.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct AnalyzeArgs {
    #[command(flatten)]
    source: SpecSource,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Histogram bins.
    #[arg(long, default_value_t = 64)]
    bins: usize,
    /// Where the model runs and the statistics are computed: cpu, emu, cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Output directory: activations.{png,svg}, analysis.json.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct CostArgs {
    #[command(flatten)]
    source: SpecSource,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ConvertArgs {
    /// The model to convert (without --checkpoint).
    #[arg(long, conflicts_with_all = ["spec", "checkpoint"])]
    model: Option<String>,
    #[arg(long, conflicts_with = "checkpoint")]
    spec: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Convert this checkpoint's model and weights; -o is then a checkpoint.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Neuron type of the converted layers (quadralib-bn, t1, …).
    #[arg(long)]
    neuron: String,
    /// Layers to convert: `all`, a path, an index, a glob (repeatable; default all).
    #[arg(long)]
    select: Vec<String>,
    /// Layers to leave alone (same forms as --select; repeatable).
    #[arg(long)]
    exclude: Vec<String>,
    /// Seed of the fresh second-order weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// With --checkpoint: calibrate the BatchNorm statistics the conversion cannot know
    /// (quadralib-bn BN_a, BN_b; BN_c without a following BatchNorm) on this many training
    /// samples (0: off). The outputs do not change; eval and train mode agree from the
    /// first fine-tuning step.
    #[arg(long, default_value_t = 0)]
    calibrate: usize,
    /// With --checkpoint: compare the converted model with the original on this many test
    /// samples (max |logit difference|, both accuracies; an exact conversion that differs
    /// is an error). 0: off.
    #[arg(long, default_value_t = 0)]
    check: usize,
    /// Dataset for --calibrate / --check (default: the checkpoint's training config's).
    #[arg(long, value_enum, requires = "checkpoint")]
    dataset: Option<DatasetKind>,
    /// Where the dataset's files are.
    #[arg(long, requires = "checkpoint")]
    data_dir: Option<PathBuf>,
    /// Output: the converted spec (JSON), or with --checkpoint the converted checkpoint.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ImportanceArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// Dataset of the test split (default: the checkpoint's training config's, else synthetic).
    #[arg(long, value_enum)]
    dataset: Option<DatasetKind>,
    /// Where the dataset's files are.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Test samples used (default 1000).
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ReduceArgs {
    /// The trained QDNN checkpoint.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Parameter budget: a count, or a percentage of the model's (`70%`).
    #[arg(
        long,
        conflicts_with = "budget_macs",
        required_unless_present = "budget_macs"
    )]
    budget_params: Option<String>,
    /// MAC (multiply-accumulate per sample) budget: a count or a percentage (`50%`).
    #[arg(long)]
    budget_macs: Option<String>,
    /// The ranking: a file of `importance --json` output; default: ranked here on the test
    /// split (--dataset, --samples).
    #[arg(long, conflicts_with_all = ["dataset", "data_dir", "samples"])]
    importance: Option<PathBuf>,
    /// Dataset of the test split (default: the checkpoint's training config's, else synthetic).
    #[arg(long, value_enum)]
    dataset: Option<DatasetKind>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Test samples of the ranking (default 1000).
    #[arg(long)]
    samples: Option<usize>,
    /// The reduced model spec (JSON): `train --model FILE` trains it.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Also write the reduced model with the QDNN's weights as a checkpoint (`train --init`
    /// fine-tunes it).
    #[arg(long)]
    save_checkpoint: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

// ---- the training configuration ------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum DatasetKind {
    Synthetic,
    FashionMnist,
    Mnist,
    Cifar10,
    Cifar100,
}

impl DatasetKind {
    fn name(self) -> &'static str {
        match self {
            DatasetKind::Synthetic => "synthetic",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
        }
    }
    fn classes(self) -> usize {
        if self == DatasetKind::Cifar100 {
            100
        } else {
            10
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum AugmentKind {
    None,
    Default,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum OptimKind {
    Sgd,
    Adam,
    Adamw,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ScheduleKind {
    Cosine,
    Step,
    Constant,
}

/// Everything a training run is, as stored in its checkpoints' `config` metadata. The keys
/// are those of the TOML config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainConfig {
    model: String,
    num_classes: usize,
    dataset: DatasetKind,
    data_dir: Option<PathBuf>,
    augmentation: AugmentKind,
    cutout: Option<usize>,
    /// Synthetic dataset only.
    train_samples: usize,
    test_samples: usize,
    workers: usize,
    epochs: usize,
    batch_size: usize,
    backprop: BackpropMode,
    device: String,
    seed: u64,
    optimizer: OptimKind,
    lr: f64,
    final_lr: f64,
    schedule: ScheduleKind,
    warmup_epochs: usize,
    step_size: Option<usize>,
    gamma: f64,
    momentum: f64,
    weight_decay: f64,
    nesterov: bool,
    clip_grad_norm: Option<f64>,
    quadratic_optimizer: bool,
    quad_lr_scale: f64,
    relinear: Option<f64>,
    save_every: Option<usize>,
    /// The checkpoint a `--init` run started from (its model is the checkpoint's).
    #[serde(default)]
    init: Option<PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: "qcnn".into(),
            num_classes: 10,
            dataset: DatasetKind::Synthetic,
            data_dir: None,
            augmentation: AugmentKind::Default,
            cutout: None,
            train_samples: 3840,
            test_samples: 1000,
            workers: 2,
            epochs: 3,
            batch_size: 64,
            backprop: BackpropMode::Stored,
            device: "auto".into(),
            seed: 0,
            optimizer: OptimKind::Sgd,
            lr: 0.05,
            final_lr: 0.0,
            schedule: ScheduleKind::Cosine,
            warmup_epochs: 0,
            step_size: None,
            gamma: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            nesterov: false,
            clip_grad_norm: None,
            quadratic_optimizer: true,
            quad_lr_scale: 0.1,
            relinear: Some(0.0),
            save_every: None,
            init: None,
        }
    }
}

/// Values given by flags or a config file (None: not given). Keys are the TOML keys.
macro_rules! settings {
    ($($key:ident : $ty:ty),* $(,)?) => {
        #[derive(Clone, Debug, Default)]
        struct Settings {
            $($key: Option<$ty>,)*
        }
        impl Settings {
            const KEYS: &'static [&'static str] = &[$(stringify!($key)),*];
            /// Sets `key` from a TOML value; Ok(false) for an unknown key.
            fn set_toml(&mut self, key: &str, v: toml::Value) -> std::result::Result<bool, String> {
                match key {
                    $(stringify!($key) => {
                        self.$key = Some(v.try_into::<$ty>().map_err(|e| e.to_string().trim().to_string())?);
                        Ok(true)
                    })*
                    _ => Ok(false),
                }
            }
            /// `self`'s values, then `other`'s where `self` has none.
            fn or(self, other: Settings) -> Settings {
                Settings { $($key: self.$key.or(other.$key),)* }
            }
            fn given(&self, key: &str) -> bool {
                match key {
                    $(stringify!($key) => self.$key.is_some(),)*
                    _ => false,
                }
            }
        }
    };
}

settings! {
    model: String,
    dataset: DatasetKind,
    data_dir: PathBuf,
    augmentation: AugmentKind,
    cutout: usize,
    train_samples: usize,
    test_samples: usize,
    workers: usize,
    epochs: usize,
    batch_size: usize,
    backprop: BackpropMode,
    device: String,
    seed: u64,
    optimizer: OptimKind,
    lr: f64,
    final_lr: f64,
    schedule: ScheduleKind,
    warmup_epochs: usize,
    step_size: usize,
    gamma: f64,
    momentum: f64,
    weight_decay: f64,
    nesterov: bool,
    clip_grad_norm: f64,
    quadratic_optimizer: bool,
    quad_lr_scale: f64,
    relinear: f64,
    no_relinear: bool,
    save_every: usize,
    out: PathBuf,
}

/// Other spellings accepted in config files (QuadraLib's config.yaml names).
fn canonical_key(k: &str) -> &str {
    match k {
        "architecture" | "arch" => "model",
        "augment" => "augmentation",
        "learning_rate" => "lr",
        "final_learning_rate" | "min_lr" => "final_lr",
        "num_epochs" => "epochs",
        "clip_grad" => "clip_grad_norm",
        _ => k,
    }
}

impl Settings {
    fn from_args(a: &TrainArgs) -> Settings {
        Settings {
            model: a.model.clone(),
            dataset: a.dataset,
            data_dir: a.data_dir.clone(),
            augmentation: a.augment,
            cutout: a.cutout,
            train_samples: a.train_samples,
            test_samples: a.test_samples,
            workers: a.workers,
            epochs: a.epochs,
            batch_size: a.batch_size,
            backprop: a.backprop.map(Into::into),
            device: a.device.clone(),
            seed: a.seed,
            optimizer: a.optimizer,
            lr: a.lr,
            final_lr: a.final_lr,
            schedule: a.schedule,
            warmup_epochs: a.warmup_epochs,
            step_size: a.step_size,
            gamma: a.gamma,
            momentum: a.momentum,
            weight_decay: a.weight_decay,
            nesterov: a.nesterov.then_some(true),
            clip_grad_norm: a.clip_grad_norm,
            quadratic_optimizer: a.no_quadratic_optimizer.then_some(false),
            quad_lr_scale: a.quad_lr_scale,
            relinear: a.relinear,
            no_relinear: a.no_relinear.then_some(true),
            save_every: a.save_every,
            out: a.out.clone(),
        }
    }

    /// A TOML config file: flat `key = value` lines; unknown keys and ill-typed values are
    /// errors naming the file and the key.
    fn from_file(path: &Path) -> Result<Settings> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the config file", path.display()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| anyhow!("{}: invalid TOML: {e}", path.display()))?;
        let mut s = Settings::default();
        for (k, v) in table {
            let key = canonical_key(&k);
            // `augmentation = true/false`, `relinear = false` as in YAML configs
            let (key, v) = match (key, v) {
                ("augmentation", toml::Value::Boolean(b)) => (
                    key,
                    toml::Value::String(if b { "default" } else { "none" }.into()),
                ),
                ("relinear", toml::Value::Boolean(false)) => {
                    ("no_relinear", toml::Value::Boolean(true))
                }
                ("no_relinear", _) => bail!("{}: unknown key `{k}`", path.display()),
                kv => kv,
            };
            match s.set_toml(key, v) {
                Ok(true) => {}
                Ok(false) => bail!(
                    "{}: unknown key `{k}` (known keys: {})",
                    path.display(),
                    Settings::KEYS
                        .iter()
                        .filter(|k| **k != "no_relinear")
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Err(e) => bail!("{}: key `{k}`: {e}", path.display()),
            }
        }
        Ok(s)
    }
}

/// Where each setting came from, for error messages.
struct Origins<'a> {
    flags: &'a Settings,
    file: Option<(&'a Path, &'a Settings)>,
}

impl Origins<'_> {
    /// `--batch-size` or "`batch_size` in FILE".
    fn of(&self, key: &str) -> String {
        if !self.flags.given(key) {
            if let Some((p, f)) = self.file {
                if f.given(key) {
                    return format!("`{key}` in {}", p.display());
                }
            }
        }
        format!("--{}", key.replace('_', "-"))
    }
}

impl TrainConfig {
    /// `base` with the values of `s` (flags merged over the file).
    fn with(mut self, s: &Settings, fresh_base: bool) -> TrainConfig {
        macro_rules! take {
            ($($k:ident),*) => { $( if let Some(v) = s.$k.clone() { self.$k = v; } )* };
        }
        take!(
            model,
            dataset,
            augmentation,
            train_samples,
            test_samples,
            workers,
            epochs,
            batch_size,
            backprop,
            device,
            seed,
            optimizer,
            lr,
            final_lr,
            schedule,
            warmup_epochs,
            gamma,
            momentum,
            weight_decay,
            nesterov,
            quadratic_optimizer,
            quad_lr_scale
        );
        if let Some(d) = &s.data_dir {
            self.data_dir = Some(d.clone());
        }
        if let Some(c) = s.cutout {
            self.cutout = (c > 0).then_some(c);
        }
        if let Some(n) = s.step_size {
            self.step_size = Some(n);
        }
        if let Some(c) = s.clip_grad_norm {
            self.clip_grad_norm = (c > 0.0).then_some(c);
        }
        if let Some(r) = s.relinear {
            self.relinear = Some(r);
        }
        if s.no_relinear == Some(true) {
            self.relinear = None;
        }
        if let Some(n) = s.save_every {
            self.save_every = (n > 0).then_some(n);
        }
        if fresh_base && s.optimizer.is_some_and(|o| o != OptimKind::Sgd) {
            if s.lr.is_none() {
                self.lr = 1e-3;
            }
            if s.weight_decay.is_none() && s.optimizer == Some(OptimKind::Adamw) {
                self.weight_decay = 0.01;
            }
        }
        self.num_classes = self.dataset.classes();
        self
    }

    fn validate(&self, o: &Origins) -> Result<()> {
        if self.epochs == 0 {
            bail!("{} must be at least 1", o.of("epochs"));
        }
        if self.batch_size == 0 {
            bail!("{} must be at least 1", o.of("batch_size"));
        }
        if self.dataset == DatasetKind::Synthetic
            && (self.train_samples == 0 || self.test_samples == 0)
        {
            bail!(
                "{} and {} must be at least 1",
                o.of("train_samples"),
                o.of("test_samples")
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("{} {}: must be positive", o.of("lr"), self.lr);
        }
        if !(self.final_lr.is_finite() && self.final_lr >= 0.0) {
            bail!("{} {}: must be ≥ 0", o.of("final_lr"), self.final_lr);
        }
        if self.schedule == ScheduleKind::Cosine && self.final_lr > self.lr {
            bail!(
                "{} {} is above {} {}: the cosine schedule anneals down to the final lr",
                o.of("final_lr"),
                self.final_lr,
                o.of("lr"),
                self.lr
            );
        }
        if self.warmup_epochs >= self.epochs && self.warmup_epochs > 0 {
            bail!(
                "{} {} leaves no epoch of the {} for the schedule",
                o.of("warmup_epochs"),
                self.warmup_epochs,
                self.epochs
            );
        }
        if self.step_size == Some(0) {
            bail!("{} must be at least 1", o.of("step_size"));
        }
        if !(self.gamma.is_finite() && self.gamma > 0.0) {
            bail!("{} {}: must be positive", o.of("gamma"), self.gamma);
        }
        if !(self.quad_lr_scale.is_finite() && self.quad_lr_scale > 0.0) {
            bail!(
                "{} {}: must be positive",
                o.of("quad_lr_scale"),
                self.quad_lr_scale
            );
        }
        if let Some(r) = self.relinear {
            if !(0.0..=1.0).contains(&r) {
                bail!("{} {r}: must be in [0, 1]", o.of("relinear"));
            }
        }
        if let Some(c) = self.clip_grad_norm {
            if !c.is_finite() {
                bail!("{} {c}: must be finite", o.of("clip_grad_norm"));
            }
        }
        resolve_device(&self.device).map_err(|e| anyhow!("{}: {e:#}", o.of("device")))?;
        Ok(())
    }

    /// The schedule of the base lr, per epoch (QuadraLib steps its scheduler per epoch).
    fn scheduler(&self) -> Result<LrScheduler> {
        let left = self.epochs - self.warmup_epochs;
        let inner: Box<dyn Schedule> = match self.schedule {
            ScheduleKind::Cosine => {
                Box::new(CosineAnnealing::new(self.lr, self.final_lr, left.max(1))?)
            }
            ScheduleKind::Step => Box::new(StepDecay::new(
                self.lr,
                self.step_size.unwrap_or((self.epochs / 3).max(1)),
                self.gamma,
            )?),
            ScheduleKind::Constant => Box::new(Constant::new(self.lr)?),
        };
        let sched: Box<dyn Schedule> = if self.warmup_epochs > 0 {
            Box::new(Warmup::new(inner, self.warmup_epochs, 0.1)?)
        } else {
            inner
        };
        Ok(LrScheduler::new(sched, Every::Epoch))
    }
}

/// The device to run on: the CPU engine, the emulator, or a CUDA GPU when its runtime can
/// be used (checked here, so a missing driver or GPU is a clear error before any work).
fn resolve_device(s: &str) -> Result<Device> {
    if s == "auto" {
        // a usable GPU (driver, device and kernels all present), else the CPU
        return Ok(Device::auto());
    }
    let d: Device = s.parse()?;
    if let Device::Cuda(_) = d {
        if let Err(e) = quadra::device::gpu::runtime(d) {
            bail!("`{s}`: {d} is not available ({e}); use --device cpu, emu or auto");
        }
    }
    Ok(d)
}

/// Moves a model to `device` (a no-op for the CPU); the error names the device.
fn model_to_device(model: &mut Model, device: Device) -> Result<()> {
    if device != Device::Cpu {
        model
            .to_device(device)
            .with_context(|| format!("moving model `{}` to {device}", model.spec.name))?;
    }
    Ok(())
}

/// A dataset: shuffled, augmented training batches and the test set in eval mode.
struct Data {
    train: Loader,
    test: Loader,
    source: String,
}

fn build_data(cfg: &TrainConfig, spec: &ModelSpec) -> Result<Data> {
    let name = cfg.dataset.name();
    // the input shape is known before reading the files: fail fast on a model/dataset mismatch
    let known: Option<[usize; 3]> = match cfg.dataset {
        DatasetKind::Synthetic => None,
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
        _ => Dataset::by_name(name, cfg.data_dir.as_deref())
            .with_context(|| format!("--dataset {name}"))?,
    };
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
    augment.cutout = cfg.cutout;
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
            augment: Augment::eval_preset(name),
        },
    )?;
    Ok(Data {
        train,
        test,
        source,
    })
}

/// The model `train` builds: a zoo name, or the path of a spec JSON file (what
/// `convert -o FILE.json` writes), whose class count must match the dataset's.
fn model_spec(model: &str, classes: usize) -> Result<ModelSpec> {
    if !model.ends_with(".json") {
        return Ok(quadra::models::get(model, None, classes)?);
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

/// The optimizer wrapped with gradient clipping.
struct Clipped {
    inner: Box<dyn Optimizer>,
    max_norm: f64,
}

impl Optimizer for Clipped {
    fn step(&mut self, net: &mut dyn quadra::nn::Module) -> quadra::Result<()> {
        clip_grad_norm(net, self.max_norm)?;
        self.inner.step(net)
    }
    fn lr(&self) -> f64 {
        self.inner.lr()
    }
    fn set_lr(&mut self, lr: f64) {
        self.inner.set_lr(lr)
    }
    fn state(&self) -> quadra::Result<quadra::optim::OptimState> {
        self.inner.state()
    }
    fn load_state(&mut self, s: &quadra::optim::OptimState) -> quadra::Result<()> {
        self.inner.load_state(s)
    }
}

/// The run's optimizer: the quadratic optimizer (second-order group; ReLinear on a fresh
/// run) for models with quadratic layers unless turned off, the plain one otherwise.
fn build_optimizer(
    cfg: &TrainConfig,
    model: &mut Model,
    resume: Option<&OptimState>,
) -> Result<(Box<dyn Optimizer>, Option<String>)> {
    let base = match cfg.optimizer {
        OptimKind::Sgd => BaseOptimizer::Sgd {
            lr: cfg.lr,
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
            nesterov: cfg.nesterov,
        },
        OptimKind::Adam => BaseOptimizer::Adam(AdamConfig {
            weight_decay: cfg.weight_decay,
            ..AdamConfig::adam(cfg.lr)
        }),
        OptimKind::Adamw => BaseOptimizer::Adam(AdamConfig {
            weight_decay: cfg.weight_decay,
            ..AdamConfig::adamw(cfg.lr)
        }),
    };
    let qcfg = if cfg.quadratic_optimizer {
        QuadraticConfig {
            quad_lr_scale: cfg.quad_lr_scale,
            quad_weight_decay: None,
            // a resumed or --init run continues from trained weights: never re-initialise them
            relinear: if resume.is_some() || cfg.init.is_some() {
                None
            } else {
                cfg.relinear
            },
        }
    } else {
        QuadraticConfig::off()
    };
    let quad = QuadraticOptimizer::for_model(&mut model.net, base, qcfg)?;
    let note = match (cfg.quadratic_optimizer, quad.groups().is_empty()) {
        (_, true) => None,
        (false, false) => Some("plain optimizer (--no-quadratic-optimizer)".to_string()),
        (true, false) => Some(format!(
            "quadratic optimizer: second-order lr ×{}{}",
            cfg.quad_lr_scale,
            match quad.relinear_report() {
                Some(r) => format!(
                    ", ReLinear({}) on {} layers",
                    cfg.relinear.unwrap_or(0.0),
                    r.applied()
                ),
                None => String::new(),
            }
        )),
    };
    let mut opt: Box<dyn Optimizer> = Box::new(quad);
    if let Some(s) = resume {
        let want = match cfg.optimizer {
            OptimKind::Sgd => "sgd",
            OptimKind::Adam => "adam",
            OptimKind::Adamw => "adamw",
        };
        if s.kind != want {
            bail!(
                "the checkpoint's optimizer is `{}`, this run uses {want}",
                s.kind
            );
        }
        // momentum buffers / moments and step counts: the resumed run continues exactly
        opt.load_state(&s.to_optim()?)?;
    }
    if let Some(m) = cfg.clip_grad_norm {
        opt = Box::new(Clipped {
            inner: opt,
            max_norm: m,
        });
    }
    Ok((opt, note))
}

fn evaluate_tensors(model: &Model, x: &Tensor, y: &[usize], batch: usize) -> Result<(f64, f64)> {
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
        let out = model.evaluate(&xb, &y[i..i + b])?;
        loss += out.loss * b as f64;
        correct += out.correct;
        i += b;
    }
    Ok((loss / n as f64, correct as f64 / n as f64))
}

/// Mean loss and accuracy over a loader's epoch 0 (in order), in eval mode.
fn evaluate(model: &Model, data: &Loader) -> Result<(f64, f64)> {
    let (mut loss, mut correct, mut n) = (0.0, 0usize, 0usize);
    for b in data.epoch(0)? {
        let (x, y) = b?;
        let out = model.evaluate(&x, &y)?;
        loss += out.loss * y.len() as f64;
        correct += out.correct;
        n += y.len();
    }
    Ok((loss / n as f64, correct as f64 / n as f64))
}

/// Appends one line with a single write (a killed process leaves whole lines).
fn append_line(path: &Path, line: &str, sync: bool) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("{}: cannot open", path.display()))?;
    f.write_all(format!("{line}\n").as_bytes())
        .with_context(|| format!("{}: cannot write", path.display()))?;
    if sync {
        f.sync_all()
            .with_context(|| format!("{}: cannot sync", path.display()))?;
    }
    Ok(())
}

/// Keeps the JSON lines of `path` for which `keep` holds (drops torn lines), atomically.
fn filter_lines(path: &Path, keep: &dyn Fn(&Value) -> bool) -> Result<Vec<Value>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    let kept: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| keep(v))
        .collect();
    let mut out = String::new();
    for v in &kept {
        out.push_str(&v.to_string());
        out.push('\n');
    }
    checkpoint::write_atomic(path, out.as_bytes())?;
    Ok(kept)
}

fn bits(x: f64) -> String {
    format!("{:016x}", x.to_bits())
}

fn unbits(v: &Value) -> Option<f64> {
    u64::from_str_radix(v.as_str()?, 16)
        .ok()
        .map(f64::from_bits)
}

/// Where a checkpoint stands: `epoch` complete epochs plus `batch` batches of the next one,
/// with that epoch's running sums (exact, as bit patterns).
#[derive(Clone, Copy, Debug, Default)]
struct Position {
    epoch: usize,
    batch: usize,
    step: u64,
    loss_sum: f64,
    correct: usize,
    seen: usize,
    best: f64,
}

impl Position {
    fn to_json(self) -> Value {
        json!({
            "scheme": "Loader(seed): shuffle (seed, epoch), augmentation (seed, epoch, sample)",
            "epoch": self.epoch,
            "next_batch": self.batch,
            "loss_sum_bits": bits(self.loss_sum),
            "correct": self.correct,
            "seen": self.seen,
            "best_test_acc_bits": bits(self.best),
        })
    }
    fn from_checkpoint(ck: &Checkpoint) -> Position {
        let r = ck.rng.clone().unwrap_or(Value::Null);
        let best = unbits(&r["best_test_acc_bits"])
            .or_else(|| {
                ck.metrics
                    .as_ref()
                    .and_then(|m| m["best_test_acc"].as_f64())
            })
            .unwrap_or(-1.0);
        Position {
            epoch: ck.epoch as usize,
            batch: r["next_batch"].as_u64().unwrap_or(0) as usize,
            step: ck.step,
            loss_sum: unbits(&r["loss_sum_bits"]).unwrap_or(0.0),
            correct: r["correct"].as_u64().unwrap_or(0) as usize,
            seen: r["seen"].as_u64().unwrap_or(0) as usize,
            best,
        }
    }
}

/// The checkpoint of `dir` (epoch-*, step-*, last) that stands furthest (most steps; an
/// epoch checkpoint over a mid-epoch one of the same step).
fn latest_checkpoint(dir: &Path) -> Result<PathBuf> {
    let mut best: Option<(u64, bool, PathBuf)> = None;
    let rd = std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?;
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let ok =
            (name.starts_with("epoch-") || name.starts_with("step-") || name == "last.safetensors")
                && name.ends_with(".safetensors");
        if !ok {
            continue;
        }
        let Ok(ck) = Checkpoint::load(e.path()) else {
            continue;
        };
        let key = (ck.step, name.starts_with("epoch-"));
        if best.as_ref().is_none_or(|b| key > (b.0, b.1)) {
            best = Some((key.0, key.1, e.path()));
        }
    }
    best.map(|b| b.2)
        .ok_or_else(|| anyhow!("--resume {}: no checkpoint in this folder", dir.display()))
}

/// The checkpoint's training config, if it has one this version understands.
fn checkpoint_config(ck: &Checkpoint) -> Option<TrainConfig> {
    serde_json::from_value(ck.config.clone()?).ok()
}

fn train(a: &TrainArgs) -> Result<()> {
    let flags = Settings::from_args(a);
    let file = a
        .config
        .as_ref()
        .map(|p| Settings::from_file(p))
        .transpose()?;
    let s = match &file {
        Some(f) => flags.clone().or(f.clone()),
        None => flags.clone(),
    };
    let origins = Origins {
        flags: &flags,
        file: a.config.as_deref().zip(file.as_ref()),
    };
    let out_dir = s
        .out
        .clone()
        .ok_or_else(|| anyhow!("--out DIR is required (or `out` in the config file)"))?;

    // the base: the checkpoint's config when resuming, else the defaults
    let resumed = match &a.resume {
        Some(p) => {
            let p = if p.is_dir() {
                latest_checkpoint(p)?
            } else {
                p.clone()
            };
            let (ck, model) = Checkpoint::load_model(&p)?;
            Some((p, ck, model))
        }
        None => None,
    };
    let base = resumed
        .as_ref()
        .and_then(|(_, ck, _)| checkpoint_config(ck));
    let fresh_base = base.is_none();
    let mut cfg = base.clone().unwrap_or_default().with(&s, fresh_base);
    // --init: the model (and its weights) are the checkpoint's
    let init = match &a.init {
        Some(p) => {
            let (_, model) =
                Checkpoint::load_model(p).with_context(|| format!("--init {}", p.display()))?;
            cfg.model = model.spec.name.clone();
            cfg.init = Some(p.clone());
            Some((p.clone(), model))
        }
        None => None,
    };
    cfg.validate(&origins)?;
    let cfg_json = serde_json::to_value(&cfg)?;

    let (mut model, pos, resume_optim) = match resumed {
        Some((p, ck, mut model)) => {
            // a run started with --init takes its model from the checkpoint, not the zoo
            let expected = match &cfg.init {
                Some(_) => ck.spec.clone(),
                None => model_spec(&cfg.model, cfg.num_classes)
                    .map_err(|e| anyhow!("{}: {e:#}", origins.of("model")))?,
            };
            if ck.spec.name != expected.name {
                bail!(
                    "{}: the checkpoint holds model `{}`, {} is `{}`",
                    p.display(),
                    ck.spec.name,
                    origins.of("model"),
                    cfg.model
                );
            }
            if let Some(b) = &base {
                if b.dataset != cfg.dataset {
                    bail!(
                        "{}: the checkpoint was trained on {}, {} is {}",
                        p.display(),
                        b.dataset.name(),
                        origins.of("dataset"),
                        cfg.dataset.name()
                    );
                }
            }
            if ck.spec.num_classes != cfg.num_classes {
                bail!(
                    "{}: the checkpoint's model has {} classes, dataset {} has {}",
                    p.display(),
                    ck.spec.num_classes,
                    cfg.dataset.name(),
                    cfg.num_classes
                );
            }
            let pos = Position::from_checkpoint(&ck);
            if pos.batch > 0 {
                if let Some(b) = &base {
                    if b.batch_size != cfg.batch_size || b.seed != cfg.seed {
                        bail!(
                            "{}: a mid-epoch checkpoint resumes only with its batch size ({}) and seed ({})",
                            p.display(),
                            b.batch_size,
                            b.seed
                        );
                    }
                }
            }
            model.set_backprop(cfg.backprop, Default::default())?;
            (model, pos, ck.optim)
        }
        None if init.is_some() => {
            let Some((p, mut model)) = init else {
                unreachable!()
            };
            if model.spec.num_classes != cfg.num_classes {
                bail!(
                    "--init {}: the checkpoint's model has {} classes, dataset {} has {}",
                    p.display(),
                    model.spec.num_classes,
                    cfg.dataset.name(),
                    cfg.num_classes
                );
            }
            model.set_backprop(cfg.backprop, Default::default())?;
            (
                model,
                Position {
                    best: -1.0,
                    ..Default::default()
                },
                None,
            )
        }
        None => {
            let mut spec = model_spec(&cfg.model, cfg.num_classes)
                .map_err(|e| anyhow!("{}: {e:#}", origins.of("model")))?;
            spec.backprop = cfg.backprop;
            let model = Model::build(
                &spec,
                BuildOptions {
                    dtype: DType::F32,
                    seed: cfg.seed,
                },
            )?;
            (
                model,
                Position {
                    best: -1.0,
                    ..Default::default()
                },
                None,
            )
        }
    };
    let data = build_data(&cfg, &model.spec)?;
    let steps = data.train.batches_per_epoch();
    if pos.batch > steps {
        bail!(
            "the checkpoint stands at batch {} of an epoch of {steps}",
            pos.batch
        );
    }
    let (mut opt, opt_note) = build_optimizer(&cfg, &mut model, resume_optim.as_ref())?;
    let sched = cfg.scheduler()?;
    // after build_optimizer: ReLinear initialises the weights on the CPU; the optimizer
    // state (fresh or resumed) follows the parameters to the device at the first step
    let device = resolve_device(&cfg.device)?;
    model_to_device(&mut model, device)?;

    // outputs: refuse to clobber another run; on resume, cut the logs back to the checkpoint
    let metrics_path = out_dir.join("metrics.jsonl");
    let steps_path = out_dir.join("steps.jsonl");
    if a.resume.is_none() && !a.force && (metrics_path.exists() || steps_path.exists()) {
        bail!(
            "--out {}: the directory already holds a run (metrics.jsonl); continue it with \
             --resume {}, start over with --force, or pick another --out",
            out_dir.display(),
            out_dir.display()
        );
    }
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("{}: cannot create the output directory", out_dir.display()))?;
    let mut history: Vec<Value> = if a.resume.is_some() {
        filter_lines(&steps_path, &|v| {
            v["step"].as_u64().is_some_and(|s| s <= pos.step)
        })?;
        filter_lines(&metrics_path, &|v| {
            v["epoch"].as_u64().is_some_and(|e| e as usize <= pos.epoch)
        })?
    } else {
        for p in [&metrics_path, &steps_path] {
            if p.exists() {
                std::fs::remove_file(p)
                    .with_context(|| format!("{}: cannot remove", p.display()))?;
            }
        }
        Vec::new()
    };

    let tty = std::io::stderr().is_terminal();
    let params = model.num_params();
    if !a.json {
        println!(
            "model {} ({} parameters), dataset {} ({} train / {} test, {}), {} epochs × {} steps of {}, {:?} lr {} → {} ({:?}), backprop {}, device {}{}{}",
            cfg.model,
            params,
            cfg.dataset.name(),
            data.train.dataset().len(),
            data.test.dataset().len(),
            data.source,
            cfg.epochs,
            steps,
            cfg.batch_size,
            cfg.optimizer,
            cfg.lr,
            cfg.final_lr,
            cfg.schedule,
            cfg.backprop,
            device,
            match &opt_note {
                Some(n) => format!(", {n}"),
                None => String::new(),
            },
            match &a.resume {
                Some(p) => format!(
                    ", resumed from {} at epoch {} batch {}",
                    p.display(),
                    pos.epoch,
                    pos.batch
                ),
                None => String::new(),
            }
        );
    }
    let best_path = out_dir.join("best.safetensors");
    let last_path = out_dir.join("last.safetensors");
    let mut best = pos.best;
    let mut step = pos.step;
    let mut last_metrics = Value::Null;
    let save = |model: &Model,
                opt: &dyn Optimizer,
                p: Position,
                metrics: &Value,
                paths: &[&Path]|
     -> Result<()> {
        let mut ck = Checkpoint::from_model(model)?;
        ck.epoch = p.epoch as u64;
        ck.step = p.step;
        ck.seed = Some(cfg.seed);
        ck.rng = Some(p.to_json());
        ck.config = Some(cfg_json.clone());
        ck.metrics = Some(metrics.clone());
        ck.optim = Some(OptimState::from_optim(opt.state()?));
        let bytes = ck.to_bytes()?;
        for path in paths {
            checkpoint::write_atomic(path, &bytes)?;
        }
        Ok(())
    };
    for epoch in pos.epoch..cfg.epochs {
        let t0 = Instant::now();
        let start = if epoch == pos.epoch { pos.batch } else { 0 };
        let (mut loss_sum, mut correct, mut seen) = if epoch == pos.epoch {
            (pos.loss_sum, pos.correct, pos.seen)
        } else {
            (0.0, 0, 0)
        };
        let lr = sched.apply(opt.as_mut(), epoch, 0);
        let bar = if tty && !a.json {
            let b = indicatif::ProgressBar::new(steps as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})",
                )?
                .progress_chars("=> "),
            );
            b.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
            b.set_position(start as u64);
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut batches = data.train.epoch_from(epoch as u64, start)?;
        let mut new_seen = 0usize;
        for b in start..steps {
            let (x, y) = batches
                .next()
                .ok_or_else(|| anyhow!("the data loader ended early at batch {b}"))??;
            let out = model.train_step(&x, &y, opt.as_mut())?;
            if !out.loss.is_finite() {
                bail!(
                    "epoch {}, step {}: the loss is {} (lower --lr?)",
                    epoch + 1,
                    b + 1,
                    out.loss
                );
            }
            loss_sum += out.loss * y.len() as f64;
            correct += out.correct;
            seen += y.len();
            new_seen += y.len();
            step += 1;
            append_line(
                &steps_path,
                &json!({ "epoch": epoch + 1, "batch": b, "step": step, "lr": lr,
                         "loss": out.loss, "loss_bits": bits(out.loss) })
                .to_string(),
                false,
            )?;
            bar.inc(1);
            bar.set_message(format!("loss {:.4}", loss_sum / seen as f64));
            if !tty && !a.json && steps >= 20 && (b + 1) % (steps / 10) == 0 && b + 1 < steps {
                println!(
                    "epoch {}/{}: {}/{steps} steps, loss {:.4}, {:.0} images/s",
                    epoch + 1,
                    cfg.epochs,
                    b + 1,
                    loss_sum / seen as f64,
                    new_seen as f64 / t0.elapsed().as_secs_f64()
                );
            }
            if let Some(every) = cfg.save_every {
                if step % every as u64 == 0 && b + 1 < steps {
                    let p = Position {
                        epoch,
                        batch: b + 1,
                        step,
                        loss_sum,
                        correct,
                        seen,
                        best,
                    };
                    let m = json!({ "event": "step", "epoch": epoch + 1, "batch": b + 1, "step": step });
                    let path = out_dir.join(format!("step-{step:08}.safetensors"));
                    save(&model, opt.as_ref(), p, &m, &[&path, &last_path])?;
                    if !tty && !a.json {
                        println!(
                            "step {step}: loss {:.4} → {}",
                            loss_sum / seen as f64,
                            path.display()
                        );
                    }
                }
            }
        }
        drop(batches);
        bar.finish_and_clear();
        let (test_loss, test_acc) = evaluate(&model, &data.test)?;
        let secs = t0.elapsed().as_secs_f64();
        let is_best = test_acc > best;
        if is_best {
            best = test_acc;
        }
        let ck_path = out_dir.join(format!("epoch-{:04}.safetensors", epoch + 1));
        let metrics = json!({
            "event": "epoch",
            "epoch": epoch + 1,
            "step": step,
            "lr": lr,
            "train_loss": loss_sum / seen as f64,
            "train_acc": correct as f64 / seen as f64,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "best_test_acc": best,
            "seconds": secs,
            "images_per_s": new_seen as f64 / secs,
            "checkpoint": ck_path.display().to_string(),
        });
        append_line(&metrics_path, &metrics.to_string(), true)?;
        let p = Position {
            epoch: epoch + 1,
            batch: 0,
            step,
            loss_sum: 0.0,
            correct: 0,
            seen: 0,
            best,
        };
        let mut paths: Vec<&Path> = vec![&ck_path, &last_path];
        if is_best {
            paths.push(&best_path);
        }
        save(&model, opt.as_ref(), p, &metrics, &paths)?;
        history.push(metrics.clone());
        let chart = out_dir.join("chart.svg");
        let title = format!("{} on {}", cfg.model, cfg.dataset.name());
        if let Err(e) = quadra_chart::write_chart(&chart, &title, &history) {
            eprintln!("warning: {}: chart not written: {e:#}", chart.display());
        }
        if a.json {
            println!("{metrics}");
        } else {
            println!(
                "epoch {}/{}: train loss {:.4}, train acc {:.1}%, test loss {:.4}, test acc {:.1}%{}, lr {:.4}, {:.1} s → {}",
                epoch + 1,
                cfg.epochs,
                loss_sum / seen as f64,
                100.0 * correct as f64 / seen as f64,
                test_loss,
                100.0 * test_acc,
                if is_best { " (best)" } else { "" },
                lr,
                secs,
                ck_path.display()
            );
        }
        last_metrics = metrics;
    }
    let summary = json!({
        "event": "done",
        "epochs": cfg.epochs,
        "start_epoch": pos.epoch,
        "start_batch": pos.batch,
        "start_step": pos.step,
        "step": step,
        "params": params,
        "best_test_acc": best,
        "best": if best >= 0.0 { Value::String(best_path.display().to_string()) } else { Value::Null },
        "last": last_metrics,
        "metrics": metrics_path.display().to_string(),
    });
    if a.json {
        println!("{summary}");
    } else if pos.epoch >= cfg.epochs {
        println!(
            "nothing to do: the checkpoint has {} epochs, --epochs is {}",
            pos.epoch, cfg.epochs
        );
    } else {
        println!(
            "best test accuracy {:.2}% → {}",
            100.0 * best,
            best_path.display()
        );
    }
    Ok(())
}

// ---- the chart -------------------------------------------------------------------------

/// chart.svg: loss and accuracy per epoch, train and test (plotters, SVG backend).
mod quadra_chart {
    use std::path::Path;

    use anyhow::{anyhow, Result};
    use plotters::prelude::*;
    use serde_json::Value;

    type Series = Vec<(f64, f64)>;

    fn series(history: &[Value], key: &str, scale: f64) -> Series {
        history
            .iter()
            .filter_map(|m| Some((m["epoch"].as_f64()?, scale * m[key].as_f64()?)))
            .collect()
    }

    fn panel<DB: DrawingBackend>(
        area: &DrawingArea<DB, plotters::coord::Shift>,
        caption: &str,
        y_label: &str,
        lines: &[(&str, Series, RGBColor)],
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let pts = lines.iter().flat_map(|l| l.1.iter());
        let x_max = pts.clone().map(|p| p.0).fold(1.0, f64::max);
        let (lo, hi) = pts.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let pad = ((hi - lo) * 0.1).max(1e-3);
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max + 0.5, (lo - pad).max(0.0)..hi + pad)
            .map_err(|e| anyhow!("{e:?}"))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_label)
            .draw()
            .map_err(|e| anyhow!("{e:?}"))?;
        for (name, s, colour) in lines {
            let c = *colour;
            chart
                .draw_series(LineSeries::new(s.clone(), c.stroke_width(2)))
                .map_err(|e| anyhow!("{e:?}"))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
            chart
                .draw_series(s.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(|e| anyhow!("{e:?}"))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e:?}"))?;
        Ok(())
    }

    /// Renders the per-epoch metrics (`metrics.jsonl` lines) and writes the SVG atomically.
    pub fn write_chart(path: &Path, title: &str, history: &[Value]) -> Result<()> {
        // text is drawn through ab_glyph with the bundled font: register it first
        quadra::profile::chart::ensure_font();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (1000, 420)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
            let root = root
                .titled(title, ("sans-serif", 22))
                .map_err(|e| anyhow!("{e:?}"))?;
            let (left, right) = root.split_horizontally(500);
            let (train_c, test_c) = (RGBColor(31, 119, 180), RGBColor(214, 39, 40));
            panel(
                &left,
                "loss",
                "cross-entropy loss",
                &[
                    ("train", series(history, "train_loss", 1.0), train_c),
                    ("test", series(history, "test_loss", 1.0), test_c),
                ],
            )?;
            panel(
                &right,
                "accuracy",
                "accuracy (%)",
                &[
                    ("train", series(history, "train_acc", 100.0), train_c),
                    ("test", series(history, "test_acc", 100.0), test_c),
                ],
            )?;
            root.present().map_err(|e| anyhow!("{e:?}"))?;
        }
        quadra::checkpoint::write_atomic(path, svg.as_bytes())?;
        Ok(())
    }
}

// ---- eval, predict -------------------------------------------------------------------

/// Labels (N) of a safetensors file: any integer dtype, or integral floats.
fn read_labels(path: &Path, name: &str) -> Result<Vec<usize>> {
    use safetensors::tensor::{Dtype, SafeTensors};
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("{}: invalid safetensors file: {e}", path.display()))?;
    let v = st
        .tensor(name)
        .map_err(|_| anyhow!("{}: no tensor `{name}`", path.display()))?;
    let d = v.data();
    let vals: Vec<f64> = match v.dtype() {
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::I32 => d
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::U8 => d.iter().map(|&b| b as f64).collect(),
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        other => bail!(
            "{}: tensor `{name}` has dtype {other:?}; expected integer labels",
            path.display()
        ),
    };
    vals.iter()
        .enumerate()
        .map(|(i, &x)| {
            if x >= 0.0 && x.fract() == 0.0 {
                Ok(x as usize)
            } else {
                Err(anyhow!(
                    "{}: tensor `{name}`[{i}] = {x} is not a class index",
                    path.display()
                ))
            }
        })
        .collect()
}

/// Tensor `input` of a safetensors file, checked against the model's input.
fn read_input(path: &Path, model: &Model) -> Result<Tensor> {
    let (mut t, _) = checkpoint::read_tensors_filtered(path, &|k| k == "input")?;
    let Some((_, x)) = t.pop() else {
        let names: Vec<String> = checkpoint::list_tensors(path)?.into_keys().collect();
        bail!(
            "{}: no tensor `input` (the file has: {})",
            path.display(),
            if names.is_empty() {
                "no tensors".to_string()
            } else {
                names.join(", ")
            }
        );
    };
    model
        .check_input(&x)
        .map_err(|e| anyhow!("{}: tensor `input`: {e}", path.display()))?;
    let dtype = checkpoint::state_dict(model)
        .first()
        .map_or(DType::F32, |(_, t)| t.dtype());
    Ok(x.to_dtype(dtype)?)
}

fn predict_batched(model: &Model, x: &Tensor, batch: usize) -> Result<Tensor> {
    let n = x.shape()[0];
    let per: usize = x.shape()[1..].iter().product();
    let xs = x.to_f64_vec();
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let b = batch.max(1).min(n - i);
        let mut shape = x.shape().to_vec();
        shape[0] = b;
        let xb = Tensor::from_f64(&xs[i * per..(i + b) * per], &shape, x.dtype())?;
        out.extend(model.predict(&xb)?.to_f64_vec());
        i += b;
    }
    Ok(Tensor::from_f64(
        &out,
        &[n, model.spec.num_classes],
        x.dtype(),
    )?)
}

/// The data a checkpoint is examined on: `dataset` (and `data_dir`) when given, else its
/// training config's, else the synthetic default; a synthetic set gets at least
/// `test_samples` test and `train_samples` training samples (and no more training samples
/// than needed).
fn checkpoint_data(
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
    cfg.num_classes = cfg.dataset.classes();
    cfg.test_samples = cfg.test_samples.max(test_samples);
    cfg.train_samples = train_samples.max(2);
    let d = build_data(&cfg, &model.spec)?;
    Ok((cfg, d))
}

/// `n` samples of a loader's dataset with its preprocessing: the first n, or with `shuffle`
/// n drawn at random (seeded).
fn samples_of(l: &Loader, n: usize, shuffle: bool, seed: u64) -> Result<(Tensor, Vec<usize>)> {
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

fn eval(a: &EvalArgs) -> Result<()> {
    let device = resolve_device(&a.device).context("--device")?;
    let (ck, mut model) = Checkpoint::load_model(&a.checkpoint)?;
    model_to_device(&mut model, device)?;
    let (loss, acc, n, source) = match &a.input {
        Some(p) => {
            let x = read_input(p, &model)?;
            let y = read_labels(p, "labels")?;
            if y.len() != x.shape()[0] {
                bail!(
                    "{}: tensor `labels` has {} entries, `input` {} samples",
                    p.display(),
                    y.len(),
                    x.shape()[0]
                );
            }
            if let Some(bad) = y.iter().find(|&&c| c >= model.spec.num_classes) {
                bail!(
                    "{}: tensor `labels` holds class {bad}, the model has {}",
                    p.display(),
                    model.spec.num_classes
                );
            }
            let (loss, acc) = evaluate_tensors(&model, &x, &y, a.batch_size.max(1))?;
            (loss, acc, y.len(), p.display().to_string())
        }
        None => {
            let cfg: TrainConfig = match (&ck.config, a.dataset) {
                (_, Some(_)) => {
                    checkpoint_data(&ck, &model, a.dataset, a.data_dir.as_ref(), 0, 2)?.0
                }
                (Some(c), None) => serde_json::from_value(c.clone()).with_context(|| {
                    format!("{}: metadata `config` is not a training config of this version", a.checkpoint.display())
                })?,
                (None, None) => bail!(
                    "{}: the checkpoint has no training config (converted or imported?): pass --dataset NAME or --input DATA.safetensors",
                    a.checkpoint.display()
                ),
            };
            let mut cfg = cfg;
            if a.data_dir.is_some() {
                cfg.data_dir = a.data_dir.clone();
            }
            let d = build_data(&cfg, &model.spec)?;
            let (loss, acc) = evaluate(&model, &d.test)?;
            (
                loss,
                acc,
                d.test.dataset().len(),
                format!("{} test set", cfg.dataset.name()),
            )
        }
    };
    let out = json!({ "checkpoint": a.checkpoint.display().to_string(), "data": source,
                      "device": device.to_string(), "samples": n, "loss": loss, "accuracy": acc });
    if a.json {
        println!("{out}");
    } else {
        println!(
            "{} on {source}: {} samples, loss {loss:.4}, accuracy {:.2}%",
            a.checkpoint.display(),
            n,
            100.0 * acc
        );
    }
    Ok(())
}

fn predict(a: &PredictArgs) -> Result<()> {
    let device = resolve_device(&a.device).context("--device")?;
    let (_, mut model) = Checkpoint::load_model(&a.checkpoint)?;
    model_to_device(&mut model, device)?;
    let x = read_input(&a.input, &model)?;
    let logits = predict_batched(&model, &x, a.batch_size)?;
    let arg = quadra::serve::argmax(&logits)?;
    let mut meta = HashMap::new();
    meta.insert("model".to_string(), model.spec.name.clone());
    meta.insert("checkpoint".to_string(), a.checkpoint.display().to_string());
    checkpoint::write_tensors(
        &a.output,
        &[("logits".to_string(), logits.clone())],
        Some(meta),
    )?;
    let n = x.shape()[0];
    if a.json {
        println!(
            "{}",
            json!({ "output": a.output.display().to_string(), "samples": n,
                    "classes": model.spec.num_classes, "argmax": arg })
        );
    } else {
        println!(
            "{n} samples → {} (tensor `logits` {:?}); argmax {:?}",
            a.output.display(),
            logits.shape(),
            arg
        );
    }
    Ok(())
}

// ---- import, export, info ------------------------------------------------------------

fn import(a: &ImportArgs) -> Result<()> {
    let Framework::Torch = a.from;
    let neuron: Option<NeuronType> = a
        .neuron
        .as_deref()
        .map(|n| serde_json::from_value(Value::String(n.into())))
        .transpose()
        .context("--neuron")?;
    let dtype = match a.dtype.as_str() {
        "f32" => DType::F32,
        "f64" => DType::F64,
        d => bail!("--dtype {d}: expected f32 or f64"),
    };
    let spec = quadra::models::get(&a.model, neuron, a.classes)?;
    let mut model = checkpoint::import_torch(&a.input, &spec, dtype)?;
    let mut ck = Checkpoint::from_model(&model)?;
    ck.config =
        Some(json!({ "imported_from": a.input.display().to_string(), "framework": "torch" }));
    ck.save(&a.output)?;
    let out = json!({ "model": spec.name, "tensors": ck.state.len(), "params": model.num_params(),
                      "dtype": dtype.to_string(), "output": a.output.display().to_string() });
    if a.json {
        println!("{out}");
    } else {
        println!(
            "imported {} ({} tensors, {} parameters) → {}",
            spec.name,
            ck.state.len(),
            out["params"],
            a.output.display()
        );
    }
    Ok(())
}

fn export(a: &ExportArgs) -> Result<()> {
    let Framework::Torch = a.to;
    let (ck, model) = Checkpoint::load_model(&a.checkpoint)?;
    checkpoint::export_torch(&model, &a.output)?;
    if a.json {
        println!(
            "{}",
            json!({ "model": ck.spec.name, "tensors": ck.state.len(), "output": a.output.display().to_string() })
        );
    } else {
        println!(
            "exported {} ({} tensors) → {}",
            ck.spec.name,
            ck.state.len(),
            a.output.display()
        );
    }
    Ok(())
}

fn info(a: &InfoArgs) -> Result<()> {
    let (ck, mut model) = Checkpoint::load_model(&a.checkpoint)?;
    let bytes = std::fs::metadata(&a.checkpoint)
        .map(|m| m.len())
        .unwrap_or(0);
    let mut quad = Vec::new();
    quadratic_layers(&ck.spec.layers, "", &mut quad);
    let state_elems: usize = ck.state.iter().map(|(_, t)| t.numel()).sum();
    let out = json!({
        "file": a.checkpoint.display().to_string(),
        "bytes": bytes,
        "format": checkpoint::FORMAT,
        "model": ck.spec.name,
        "input": ck.spec.input,
        "num_classes": ck.spec.num_classes,
        "dtype": ck.dtype.to_string(),
        "params": model.num_params(),
        "state_tensors": ck.state.len(),
        "state_elements": state_elems,
        "top_level_layers": ck.spec.layers.len(),
        "quadratic_layers": quad.len(),
        "backprop": ck.spec.backprop.to_string(),
        "epoch": ck.epoch,
        "step": ck.step,
        "seed": ck.seed,
        "optimizer": ck.optim.as_ref().map(|o| o.kind.clone()),
        "optimizer_tensors": ck.optim.as_ref().map_or(0, |o| o.tensors.len()),
        "config": ck.config,
        "metrics": ck.metrics,
    });
    if a.json {
        println!("{out}");
    } else {
        println!(
            "{} ({bytes} bytes, {})",
            a.checkpoint.display(),
            checkpoint::FORMAT
        );
        println!(
            "  model      {}: input {:?}, {} classes, {}",
            ck.spec.name, ck.spec.input, ck.spec.num_classes, ck.dtype
        );
        println!(
            "  params     {} ({} state tensors, {} elements)",
            out["params"],
            ck.state.len(),
            state_elems
        );
        println!(
            "  quadratic  {} layers, backprop {}",
            quad.len(),
            ck.spec.backprop
        );
        println!("  position   epoch {}, step {}", ck.epoch, ck.step);
        if let Some(o) = &ck.optim {
            println!(
                "  optimizer  {} ({} state tensors) {}",
                o.kind,
                o.tensors.len(),
                o.scalars
            );
        }
        if let Some(m) = &ck.metrics {
            println!("  metrics    {m}");
        }
    }
    Ok(())
}

// ---- memory, analyze, cost, convert, importance ------------------------------------

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("--out {}: creating it", dir.display()))
}

fn paths(files: &[PathBuf]) -> Vec<String> {
    files.iter().map(|f| f.display().to_string()).collect()
}

fn memory(a: &MemoryArgs) -> Result<()> {
    use quadra::profile::{self, chart, html, mib, BudgetPlan, ProfileOptions};
    let spec = a.source.load()?;
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let device: Device = a.device.parse().map_err(|e| anyhow!("--device: {e}"))?;
    create_dir(&a.out)?;
    let opts = ProfileOptions {
        batch: a.batch,
        steps: a.steps.max(1),
        threads: a.threads,
        device,
        ..ProfileOptions::default()
    };
    // a batch that cannot fit is refused before anything of its size is allocated
    let fit = profile::check_fits(&spec, &opts).context("--batch")?;
    if !a.json {
        println!(
            "batch {}: predicted peak {:.1} MiB (stored mode; {:.1} MiB fixed + {:.3} MiB per sample), {:.1} MiB available on {device}",
            a.batch,
            mib(fit.predicted_peak),
            mib(fit.fixed),
            mib(fit.per_sample),
            mib(fit.available.min(u64::MAX / 2)),
        );
    }
    let mut cmp = profile::compare_modes_with(&spec, &opts)?;
    if !a.json {
        print!("{}", profile::render_table(&cmp));
    }
    let mut budgets: Vec<u64> = a.memory_budget.clone();
    for &m in &a.budget_mib {
        if !(m.is_finite() && m > 0.0) {
            bail!("--budget-mib {m}: expected a positive number of MiB");
        }
        budgets.push((m * 1024.0 * 1024.0) as u64);
    }
    let mut plans: Vec<BudgetPlan> = Vec::new();
    let middle = budgets.len().div_ceil(2);
    let mut planned = None;
    for (k, &budget) in budgets.iter().enumerate() {
        let (plan, prof) = profile::plan_and_verify(&spec, &cmp, budget, &opts)
            .with_context(|| format!("budget {budget} bytes ({:.2} MiB)", mib(budget)))?;
        if !a.json {
            println!(
                "budget {:>8.2} MiB: recompute {:>2} layers ({:.3} GFLOP), predicted {:.2} MiB, measured {:.2} MiB, fits {}, step {:.3} s",
                mib(budget),
                plan.recomputed_layers,
                plan.recompute_flops as f64 / 1e9,
                mib(plan.predicted_peak),
                mib(prof.peak_total),
                plan.fits_measured.unwrap_or(false),
                prof.step_time_s,
            );
        }
        if k + 1 == middle {
            let mut p = prof;
            p.label = "planned".into();
            planned = Some(p);
        }
        plans.push(plan);
    }
    if let Some(p) = planned {
        cmp.profiles.push(p);
        cmp = profile::ModeComparison::from_profiles(cmp.profiles, cmp.steps)?;
    }
    let mut files = chart::write_timeline_chart(&cmp, &a.out.join("timeline"))?;
    files.extend(chart::write_layer_chart(
        &cmp,
        &a.out.join("layers"),
        false,
    )?);
    let report = a.out.join("report.html");
    html::write_report(
        &report,
        &html::ReportInputs {
            comparison: &cmp,
            plans: &plans,
            analysis: None,
            feature_maps: None,
        },
    )?;
    files.push(report);
    let dump = a.out.join("report.json");
    profile::write_atomic(
        &dump,
        serde_json::to_string(&json!({ "comparison": cmp, "plans": plans }))?.as_bytes(),
    )?;
    files.push(dump);
    let peaks: serde_json::Map<String, Value> = cmp
        .profiles
        .iter()
        .map(|p| (p.label.clone(), json!(p.peak_total)))
        .collect();
    if a.json {
        println!(
            "{}",
            json!({ "model": spec.name, "batch": a.batch, "peak_bytes": peaks,
                    "plans": plans, "files": paths(&files) })
        );
    } else {
        for f in &files {
            println!("wrote {}", f.display());
        }
    }
    Ok(())
}

fn analyze(a: &AnalyzeArgs) -> Result<()> {
    use quadra::analysis::{self, StatKind};
    let spec = a.source.load()?;
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let device = resolve_device(&a.device).context("--device")?;
    create_dir(&a.out)?;
    let report = {
        let (mut model, data) = analysis::train_briefly(&spec, 0, a.batch, 1)?;
        model.to_device(device)?;
        let (x, y) = data.batch(a.batch, 1001)?;
        analysis::analyze(&mut model, &x, &y, a.bins.max(1))?
    };
    let acts: Vec<_> = report
        .of_kind(StatKind::Activation)
        .filter(|e| !e.describe.starts_with("ReLU"))
        .collect();
    let mut files = analysis::plot::write_histogram_grid(
        &format!("{}: layer outputs (batch {})", report.model, report.batch),
        &acts,
        4,
        &a.out.join("activations"),
    )?;
    let dump = a.out.join("analysis.json");
    quadra::profile::write_atomic(&dump, serde_json::to_string(&report)?.as_bytes())?;
    files.push(dump);
    if a.json {
        println!(
            "{}",
            json!({ "model": report.model, "batch": report.batch, "loss": report.loss,
                    "entries": report.entries.len(), "files": paths(&files) })
        );
    } else {
        println!(
            "{}: batch {}, loss {:.4}, {} distributions ({} layer outputs plotted)",
            report.model,
            report.batch,
            report.loss,
            report.entries.len(),
            acts.len()
        );
        for f in &files {
            println!("wrote {}", f.display());
        }
    }
    Ok(())
}

fn cost(a: &CostArgs) -> Result<()> {
    let spec = a.source.load()?;
    let report = quadra::convert::cost(&spec)?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn convert(a: &ConvertArgs) -> Result<()> {
    use quadra::convert::{self, ConvertOptions, Selector};
    let neuron: NeuronType = a
        .neuron
        .parse()
        .with_context(|| format!("--neuron {}", a.neuron))?;
    let mut opts = ConvertOptions::new(neuron);
    opts.seed = a.seed;
    for s in &a.select {
        opts.select
            .push(Selector::parse(s).with_context(|| format!("--select {s}"))?);
    }
    for s in &a.exclude {
        opts.exclude
            .push(Selector::parse(s).with_context(|| format!("--exclude {s}"))?);
    }
    if a.checkpoint.is_none()
        && (a.calibrate > 0 || a.check > 0 || a.dataset.is_some() || a.data_dir.is_some())
    {
        bail!("--calibrate, --check, --dataset and --data-dir need --checkpoint (they work on trained weights)");
    }
    let mut extra = json!({});
    let mut notes = Vec::new();
    let (name, layers, params, macs) = if let Some(ck_path) = &a.checkpoint {
        let (ck, model) = Checkpoint::load_model(ck_path)?;
        let (mut q, report) = convert::convert_model(&model, &opts)
            .with_context(|| format!("converting {}", ck_path.display()))?;
        if a.calibrate > 0 || a.check > 0 {
            let (cfg, d) = checkpoint_data(
                &ck,
                &model,
                a.dataset,
                a.data_dir.as_ref(),
                a.check,
                a.calibrate,
            )
            .with_context(|| format!("{}: data for --calibrate/--check", ck_path.display()))?;
            if a.calibrate > 0 {
                let (x, _) = samples_of(&d.train, a.calibrate, true, cfg.seed ^ 0xca11)?;
                let r = convert::calibrate(&mut q, &report.layers, &x, 256)
                    .with_context(|| format!("calibrating {}", ck_path.display()))?;
                notes.push(format!(
                    "calibrated {} BatchNorms on {} training samples of {} (largest |σ_running/σ_data − 1| before: {:.3})",
                    r.bns.len(),
                    r.samples,
                    cfg.dataset.name(),
                    r.bns.iter().fold(0.0f64, |m, b| m.max(b.max_std_ratio_error))
                ));
                extra["calibration"] = serde_json::to_value(&r)?;
            }
            if a.check > 0 {
                let (x, y) = samples_of(&d.test, a.check, false, 0)?;
                let (diff, scale) = convert::max_output_diff(&model, &q, &x)?;
                let acc0 = convert::accuracy(&model, &x, &y)?;
                let acc1 = convert::accuracy(&q, &x, &y)?;
                notes.push(format!(
                    "check on {} test samples of {}: max |converted − original| logit {diff:.3e} (max |logit| {scale:.2}); accuracy {:.2}% (original {:.2}%)",
                    y.len(),
                    cfg.dataset.name(),
                    100.0 * acc1,
                    100.0 * acc0
                ));
                extra["check"] = json!({ "samples": y.len(), "dataset": cfg.dataset.name(),
                    "max_abs_diff": diff, "max_abs_logit": scale,
                    "accuracy_original": acc0, "accuracy_converted": acc1 });
                if report.function_preserving && diff > 1e-4 * (1.0 + scale) {
                    bail!(
                        "{}: the converted model does not reproduce the original: max |logit difference| {diff:.3e} (max |logit| {scale:.2})",
                        ck_path.display()
                    );
                }
            }
        }
        Checkpoint::from_model(&q)?.save(&a.output)?;
        (
            report.model,
            report.layers,
            (report.params_before, report.params_after),
            (report.macs_before, report.macs_after),
        )
    } else {
        let source = SpecSource {
            model: a.model.clone(),
            spec: a.spec.clone(),
            classes: a.classes,
        };
        let spec = source.load()?;
        let conv = convert::convert_spec(&spec, &opts)?;
        let (before, after) = (convert::cost(&spec)?, convert::cost(&conv.spec)?);
        quadra::profile::write_atomic(&a.output, conv.spec.to_json().as_bytes())?;
        (
            spec.name.clone(),
            conv.layers,
            (before.total_params, after.total_params),
            (before.total_macs, after.total_macs),
        )
    };
    let mut out = json!({ "model": name, "neuron": neuron, "output": a.output.display().to_string(),
                      "layers": layers.iter().map(|l| l.path.clone()).collect::<Vec<_>>(),
                      "params_before": params.0, "params_after": params.1,
                      "macs_before": macs.0, "macs_after": macs.1 });
    if let (Some(o), Value::Object(e)) = (out.as_object_mut(), extra) {
        o.extend(e);
    }
    if a.json {
        println!("{out}");
    } else {
        println!(
            "converted {name}: {} layers to {neuron} {:?}; params {} → {}, MACs {} → {}; wrote {}",
            layers.len(),
            layers.iter().map(|l| l.path.as_str()).collect::<Vec<_>>(),
            params.0,
            params.1,
            macs.0,
            macs.1,
            a.output.display()
        );
        for n in &notes {
            println!("{n}");
        }
    }
    Ok(())
}

/// The importance ranking of a checkpoint's quadratic layers on `samples` test samples of
/// its dataset (see `checkpoint_data`); also the samples used and the dataset's name.
fn rank_layers(
    ck_path: &Path,
    dataset: Option<DatasetKind>,
    data_dir: Option<&PathBuf>,
    samples: usize,
) -> Result<(quadra::convert::ImportanceReport, usize, String)> {
    let (ck, model) = Checkpoint::load_model(ck_path)?;
    if samples == 0 {
        bail!("--samples must be at least 1");
    }
    let (cfg, d) = checkpoint_data(&ck, &model, dataset, data_dir, samples, 64)?;
    let (x, y) = samples_of(&d.test, samples, false, cfg.seed)?;
    let report = quadra::convert::layer_importance(&model, &x, &y)
        .with_context(|| format!("{}", ck_path.display()))?;
    Ok((report, y.len(), cfg.dataset.name().to_string()))
}

fn importance(a: &ImportanceArgs) -> Result<()> {
    let (report, n, data) = rank_layers(&a.checkpoint, a.dataset, a.data_dir.as_ref(), a.samples)?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{} on {n} test samples of {data}:", a.checkpoint.display());
        print!("{}", report.table());
    }
    Ok(())
}

/// A budget flag: a count, or `P%` of `of`.
fn parse_budget(flag: &str, v: &str, of: u64) -> Result<u64> {
    let v = v.trim();
    let n = match v.strip_suffix('%') {
        Some(p) => {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| anyhow!("{flag} {v}: not a percentage"))?;
            if !(p > 0.0 && p <= 100.0) {
                bail!("{flag} {v}: the percentage must be in (0, 100]");
            }
            (of as f64 * p / 100.0).floor() as u64
        }
        None => v
            .parse()
            .map_err(|_| anyhow!("{flag} {v}: expected a count (20000) or a percentage (70%)"))?,
    };
    if n == 0 {
        bail!("{flag} {v}: the budget must be positive");
    }
    Ok(n)
}

fn reduce(a: &ReduceArgs) -> Result<()> {
    use quadra::convert::{self, Budget, ImportanceReport};
    let (_, model) = Checkpoint::load_model(&a.checkpoint)?;
    let full = convert::cost(&model.spec)?;
    let budget = match (&a.budget_params, &a.budget_macs) {
        (Some(p), None) => Budget::Params(parse_budget("--budget-params", p, full.total_params)?),
        (None, Some(m)) => Budget::Macs(parse_budget("--budget-macs", m, full.total_macs)?),
        _ => bail!("pass one of --budget-params, --budget-macs"),
    };
    let ranking: ImportanceReport = match &a.importance {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("--importance {}", p.display()))?;
            let r: ImportanceReport = serde_json::from_str(text.trim()).with_context(|| {
                format!(
                    "--importance {}: not the output of `quadra-train importance --json`",
                    p.display()
                )
            })?;
            if r.model != model.spec.name || r.total_params != full.total_params {
                bail!(
                    "--importance {}: it ranks model `{}` ({} parameters), the checkpoint holds `{}` ({} parameters)",
                    p.display(),
                    r.model,
                    r.total_params,
                    model.spec.name,
                    full.total_params
                );
            }
            r
        }
        None => {
            rank_layers(
                &a.checkpoint,
                a.dataset,
                a.data_dir.as_ref(),
                a.samples.unwrap_or(1000),
            )?
            .0
        }
    };
    let red = convert::reduce(
        &model.spec,
        &convert::state_dict_of(&model),
        &ranking,
        budget,
    )
    .with_context(|| format!("{}", a.checkpoint.display()))?;
    quadra::profile::write_atomic(&a.output, red.spec.to_json().as_bytes())?;
    if let Some(p) = &a.save_checkpoint {
        let m = convert::model_from_state_dict(&red.spec, &red.state_dict, model_dtype(&model), 0)?;
        Checkpoint::from_model(&m)?.save(p)?;
    }
    if a.json {
        let mut v = serde_json::to_value(&red.report)?;
        v["output"] = json!(a.output.display().to_string());
        if let Some(p) = &a.save_checkpoint {
            v["checkpoint"] = json!(p.display().to_string());
        }
        println!("{v}");
    } else {
        print!("{}", red.report.table());
        println!(
            "wrote {}{}",
            a.output.display(),
            a.save_checkpoint
                .as_ref()
                .map(|p| format!(", {}", p.display()))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn model_dtype(m: &Model) -> DType {
    quadra::convert::state_dict_of(m)
        .first()
        .map_or(DType::F32, |(_, t)| t.dtype())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match &cli.cmd {
        Cmd::Train(a) => train(a),
        Cmd::Eval(a) => eval(a),
        Cmd::Predict(a) => predict(a),
        Cmd::Import(a) => import(a),
        Cmd::Export(a) => export(a),
        Cmd::Info(a) => info(a),
        Cmd::Memory(a) => memory(a),
        Cmd::Analyze(a) => analyze(a),
        Cmd::Cost(a) => cost(a),
        Cmd::Convert(a) => convert(a),
        Cmd::Importance(a) => importance(a),
        Cmd::Reduce(a) => reduce(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

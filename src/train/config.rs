//! The training configuration: [`TrainConfig`] (everything a run is, stored in every
//! checkpoint, keys of the TOML config file) and [`TrainOverrides`] (the values a user gave:
//! command-line flags or config-file keys, each `None` when not given), both generated from
//! one field list by `train_config!` below.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::nn::BackpropMode;
use crate::optim::{Constant, CosineAnnealing, Every, LrScheduler, Schedule, StepDecay, Warmup};

use super::device::resolve_device;

/// A training set: a built-in one by name, or a folder of images (`folder:PATH`, one
/// subfolder per class, as torchvision's `ImageFolder`). One spelling everywhere: flags,
/// config files and the config stored in checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DatasetKind {
    Synthetic,
    FashionMnist,
    Mnist,
    Cifar10,
    Cifar100,
    /// `folder:PATH`: `PATH/train/<class>/…` and `PATH/val/<class>/…` (or `test/`), or
    /// `PATH/<class>/…` split by the run's seed (`quadra::data::folder`).
    Folder(PathBuf),
}

impl DatasetKind {
    /// The spellings `--dataset` takes, for help and error texts.
    pub const NAMES: &'static str =
        "synthetic, fashion-mnist, mnist, cifar10, cifar100, folder:PATH";

    /// The name `quadra::data::Dataset::by_name` and the augmentation presets know
    /// (`folder` for a folder).
    pub fn name(&self) -> &'static str {
        match self {
            DatasetKind::Synthetic => "synthetic",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::Folder(_) => "folder",
        }
    }

    /// The class count of a built-in set; `None` for a folder (its subfolders say).
    pub fn classes(&self) -> Option<usize> {
        match self {
            DatasetKind::Cifar100 => Some(100),
            DatasetKind::Folder(_) => None,
            _ => Some(10),
        }
    }
}

impl std::str::FromStr for DatasetKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Some(p) = s.strip_prefix("folder:") {
            if p.is_empty() {
                return Err("`folder:` needs a path: folder:PATH".into());
            }
            return Ok(DatasetKind::Folder(PathBuf::from(p)));
        }
        Ok(match s {
            "synthetic" => DatasetKind::Synthetic,
            "fashion-mnist" => DatasetKind::FashionMnist,
            "mnist" => DatasetKind::Mnist,
            "cifar10" => DatasetKind::Cifar10,
            "cifar100" => DatasetKind::Cifar100,
            "folder" => return Err("`folder` needs a path: folder:PATH".into()),
            other => {
                return Err(format!(
                    "unknown dataset `{other}` (expected one of {})",
                    Self::NAMES
                ))
            }
        })
    }
}

impl TryFrom<String> for DatasetKind {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<DatasetKind> for String {
    fn from(d: DatasetKind) -> String {
        d.to_string()
    }
}

impl std::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatasetKind::Folder(p) => write!(f, "folder:{}", p.display()),
            d => f.write_str(d.name()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum AugmentKind {
    None,
    Default,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum OptimKind {
    Sgd,
    Adam,
    Adamw,
}

impl OptimKind {
    /// The `kind` of the optimizer state this optimizer stores in a checkpoint.
    pub fn state_kind(self) -> &'static str {
        match self {
            OptimKind::Sgd => "sgd",
            OptimKind::Adam => "adam",
            OptimKind::Adamw => "adamw",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    Cosine,
    Step,
    Constant,
}

/// `--backprop stored|recompute` (the mode's serde and `FromStr` names).
#[cfg(feature = "cli")]
impl clap::ValueEnum for BackpropMode {
    fn value_variants<'a>() -> &'a [Self] {
        &[BackpropMode::Stored, BackpropMode::Recompute]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            BackpropMode::Stored => "stored",
            BackpropMode::Recompute => "recompute",
        }))
    }
}

/// How a given value lands in the config field.
mod merge {
    /// The value replaces the field.
    pub fn set<T: Clone>(field: &mut T, given: &Option<T>) {
        if let Some(v) = given {
            *field = v.clone();
        }
    }
    /// An optional field gets the value.
    pub fn some<T: Clone>(field: &mut Option<T>, given: &Option<T>) {
        if let Some(v) = given {
            *field = Some(v.clone());
        }
    }
    /// An optional field gets the value, and 0 turns it off (a negative value is kept, for
    /// `validate` to refuse: it must not turn the option off silently).
    pub fn nonzero<T: Clone + PartialOrd + Default>(field: &mut Option<T>, given: &Option<T>) {
        if let Some(v) = given {
            *field = (*v != T::default()).then(|| v.clone());
        }
    }
}

/// The one list of training settings. Each `fields` entry is a TOML key, in the order the
/// config-file error lists them:
///
/// ```text
/// /// help text (also the field's doc)
/// #[arg(clap attributes of the flag, display_order = position in `train --help`)]
/// key: GivenType => ConfigType = default, merge;
/// ```
///
/// `TrainConfig` gets `key: ConfigType`, `TrainOverrides` (a clap `Args`) gets
/// `key: Option<GivenType>`, merged with `merge::$merge`. `given_only` keys exist only as
/// overrides, `config_only` fields only in the config.
macro_rules! train_config {
    (
        fields {
            $(
                $(#[doc = $doc:literal])*
                #[arg($($arg:tt)*)]
                $key:ident: $given:ty => $cfg:ty = $default:expr, $merge:ident;
            )*
        }
        given_only {
            $(
                $(#[doc = $gdoc:literal])*
                #[arg($($garg:tt)*)]
                $gkey:ident: $gty:ty;
            )*
        }
        config_only {
            $(
                $(#[doc = $cdoc:literal])*
                $(#[serde($($serde:tt)*)])?
                $ckey:ident: $cty:ty = $cdefault:expr;
            )*
        }
    ) => {
        /// Everything a training run is, as stored in its checkpoints' `config` metadata.
        /// The keys are those of the TOML config file.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct TrainConfig {
            $( $(#[doc = $doc])* pub $key: $cfg, )*
            $( $(#[doc = $cdoc])* $(#[serde($($serde)*)])? pub $ckey: $cty, )*
        }

        impl Default for TrainConfig {
            fn default() -> Self {
                TrainConfig {
                    $( $key: $default, )*
                    $( $ckey: $cdefault, )*
                }
            }
        }

        /// Values given by flags or a config file (None: not given). Keys are the TOML
        /// keys. Every one is optional: a value comes from the flag, else from the
        /// `--config` file, else (with `--resume`) from the checkpoint's config, else the
        /// default.
        #[derive(Clone, Debug, Default)]
        #[cfg_attr(feature = "cli", derive(clap::Args))]
        pub struct TrainOverrides {
            $( $(#[doc = $doc])* #[cfg_attr(feature = "cli", arg($($arg)*))]
               pub $key: Option<$given>, )*
            $( $(#[doc = $gdoc])* #[cfg_attr(feature = "cli", arg($($garg)*))]
               pub $gkey: Option<$gty>, )*
        }

        impl TrainOverrides {
            /// The keys, in the order the config-file error lists them.
            pub const KEYS: &'static [&'static str] =
                &[$(stringify!($key),)* $(stringify!($gkey),)*];

            /// Sets `key` from a TOML value; Ok(false) for an unknown key.
            fn set_toml(&mut self, key: &str, v: toml::Value) -> std::result::Result<bool, String> {
                let err = |e: toml::de::Error| e.to_string().trim().to_string();
                match key {
                    $( stringify!($key) => self.$key = Some(v.try_into::<$given>().map_err(err)?), )*
                    $( stringify!($gkey) => self.$gkey = Some(v.try_into::<$gty>().map_err(err)?), )*
                    _ => return Ok(false),
                }
                Ok(true)
            }

            /// `self`'s values, then `other`'s where `self` has none.
            pub fn or(self, other: TrainOverrides) -> TrainOverrides {
                TrainOverrides {
                    $( $key: self.$key.or(other.$key), )*
                    $( $gkey: self.$gkey.or(other.$gkey), )*
                }
            }

            /// Whether `key` has a value.
            pub fn given(&self, key: &str) -> bool {
                match key {
                    $( stringify!($key) => self.$key.is_some(), )*
                    $( stringify!($gkey) => self.$gkey.is_some(), )*
                    _ => false,
                }
            }

            /// The `fields` values into `cfg`.
            fn merge_fields(&self, cfg: &mut TrainConfig) {
                $( merge::$merge(&mut cfg.$key, &self.$key); )*
            }
        }
    };
}

// The flags without a value (`--nesterov`, `--no-relinear`, `--no-quadratic-optimizer`)
// take `num_args = 0` and a `default_missing_value` instead of `ArgAction::SetTrue`: that
// gives `None` when absent (SetTrue always gives a value), so the config file's key stands.
train_config! {
    fields {
        /// Zoo model (default qcnn), or a model spec JSON file such as `convert -o` writes.
        #[arg(long, display_order = 1)]
        model: String => String = "qcnn".into(), set;
        /// Dataset: synthetic (the default), fashion-mnist, mnist, cifar10, cifar100, or
        /// folder:PATH (a folder of PNG/JPEG images, one subfolder per class).
        #[arg(long, value_name = "DATASET", display_order = 2)]
        dataset: DatasetKind => DatasetKind = DatasetKind::Synthetic, set;
        /// Where the dataset's files are (default: $QUADRA_DATA_DIR, then the system places).
        #[arg(long, display_order = 3)]
        data_dir: PathBuf => Option<PathBuf> = None, some;
        /// Training augmentation: the dataset's preset (CIFAR: crop + flip + normalize; MNIST
        /// sets: normalize) or none (default: default).
        #[arg(long = "augment", value_name = "AUGMENT", value_enum, display_order = 4)]
        augmentation: AugmentKind => AugmentKind = AugmentKind::Default, set;
        /// Cutout square side in pixels (0: off, the default).
        #[arg(long, display_order = 5)]
        cutout: usize => Option<usize> = None, nonzero;
        /// Synthetic dataset: training samples (default 3840).
        #[arg(long, display_order = 26)]
        train_samples: usize => usize = 3840, set;
        /// Synthetic dataset: test samples (default 1000).
        #[arg(long, display_order = 27)]
        test_samples: usize => usize = 1000, set;
        /// Data-loading threads (default 2).
        #[arg(long, display_order = 28)]
        workers: usize => usize = 2, set;
        /// Train until this many epochs are complete (counting those of --resume; default 3).
        #[arg(long, display_order = 6)]
        epochs: usize => usize = 3, set;
        /// Default 64.
        #[arg(long, display_order = 7)]
        batch_size: usize => usize = 64, set;
        /// Back-propagation of quadratic layers (default stored).
        #[arg(long, value_enum, display_order = 23)]
        backprop: BackpropMode => BackpropMode = BackpropMode::Stored, set;
        /// auto, cpu, cuda, cuda:N or emu (the CUDA backend's code path run by the kernel emulator
        /// on the CPU); default auto: a usable CUDA GPU, else the CPU.
        #[arg(long, display_order = 24)]
        device: String => String = "auto".into(), set;
        /// Seed of the weights, the shuffling and the augmentation (default 0).
        #[arg(long, display_order = 25)]
        seed: u64 => u64 = 0, set;
        /// Default sgd.
        #[arg(long, value_enum, display_order = 8)]
        optimizer: OptimKind => OptimKind = OptimKind::Sgd, set;
        /// Base learning rate (default 0.05 for sgd, 0.001 for adam/adamw).
        #[arg(long, display_order = 9)]
        lr: f64 => f64 = 0.05, set;
        /// Learning rate the cosine schedule anneals to over the run (default 0).
        #[arg(long, display_order = 10)]
        final_lr: f64 => f64 = 0.0, set;
        /// LR schedule, stepped per epoch (default cosine).
        #[arg(long, value_enum, display_order = 11)]
        schedule: ScheduleKind => ScheduleKind = ScheduleKind::Cosine, set;
        /// Linear warm-up epochs (from 0.1·lr) before the schedule (default 0).
        #[arg(long, display_order = 12)]
        warmup_epochs: usize => usize = 0, set;
        /// Step schedule: epochs between decays (default: a third of the run).
        #[arg(long, display_order = 13)]
        step_size: usize => Option<usize> = None, some;
        /// Step schedule: decay factor (default 0.1).
        #[arg(long, display_order = 14)]
        gamma: f64 => f64 = 0.1, set;
        /// SGD momentum (default 0.9).
        #[arg(long, display_order = 15)]
        momentum: f64 => f64 = 0.9, set;
        /// Default 5e-4 (0.01 for adamw).
        #[arg(long, display_order = 16)]
        weight_decay: f64 => f64 = 5e-4, set;
        /// Nesterov momentum (SGD).
        #[arg(long, num_args = 0, default_missing_value = "true", display_order = 17)]
        nesterov: bool => bool = false, set;
        /// Clip gradients to this global L2 norm (default: no clipping).
        #[arg(long, display_order = 18)]
        clip_grad_norm: f64 => Option<f64> = None, nonzero;
        /// Plain optimizer for quadratic models too (no second-order group, no ReLinear).
        #[arg(
            long = "no-quadratic-optimizer",
            num_args = 0,
            default_missing_value = "false",
            display_order = 22
        )]
        quadratic_optimizer: bool => bool = true, set;
        /// Quadratic optimizer: lr multiplier of the second-order weights (default 0.1).
        #[arg(long, display_order = 19)]
        quad_lr_scale: f64 => f64 = 0.1, set;
        /// Quadratic optimizer: ReLinear init scale of a fresh run (default 0).
        #[arg(long, display_order = 20)]
        relinear: f64 => Option<f64> = Some(0.0), some;
        /// Also write a checkpoint every this many optimizer steps (mid-epoch; 0: off).
        #[arg(long, display_order = 29)]
        save_every: usize => Option<usize> = None, nonzero;
    }
    given_only {
        /// Output directory: epoch-NNNN.safetensors, step-NNNNNNNN.safetensors,
        /// last.safetensors, best.safetensors, metrics.jsonl, steps.jsonl, chart.{svg,png}
        /// (`--out` is the earlier spelling; config key `out`).
        #[arg(short = 'o', long = "output", alias = "out", value_name = "DIR", display_order = 30)]
        out: PathBuf;
        /// Quadratic optimizer: keep the initial weights (no ReLinear).
        #[arg(long, num_args = 0, default_missing_value = "true", display_order = 21)]
        no_relinear: bool;
    }
    config_only {
        /// Classes of the model: the dataset's.
        num_classes: usize = 10;
        /// The checkpoint a `--init` run started from (its model is the checkpoint's).
        #[serde(default)]
        init: Option<PathBuf> = None;
    }
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
        "output" => "out",
        _ => k,
    }
}

impl TrainOverrides {
    /// A TOML config file: flat `key = value` lines; unknown keys and ill-typed values are
    /// errors naming the file and the key.
    pub fn from_file(path: &Path) -> Result<TrainOverrides> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the config file", path.display()))?;
        Self::from_toml_str(&text, path)
    }

    /// [`TrainOverrides::from_file`] of a config file's text (`path` names it in errors).
    pub fn from_toml_str(text: &str, path: &Path) -> Result<TrainOverrides> {
        let table: toml::Table = text
            .parse()
            .map_err(|e| anyhow!("{}: invalid TOML: {e}", path.display()))?;
        let mut s = TrainOverrides::default();
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
                    TrainOverrides::KEYS
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

/// Where each setting came from, for error messages: the flags, the config file's values,
/// and the resumed checkpoint whose stored config is the base of the rest. The default
/// (no file, no resume) names every key as its flag.
#[derive(Clone, Debug, Default)]
pub struct Origins {
    pub flags: TrainOverrides,
    pub file: Option<(PathBuf, TrainOverrides)>,
    pub resumed: Option<PathBuf>,
}

impl Origins {
    /// `--batch-size`, "`batch_size` in FILE" or "`batch_size` in the stored config of CKPT".
    pub fn of(&self, key: &str) -> String {
        if !self.flags.given(key) {
            if let Some((p, f)) = &self.file {
                if f.given(key) {
                    return format!("`{key}` in {}", p.display());
                }
            }
            if let Some(p) = &self.resumed {
                return format!("`{key}` in the stored config of {}", p.display());
            }
        }
        format!("--{}", key.replace('_', "-"))
    }
}

impl TrainConfig {
    /// `self` with the given values (flags merged over the file). `fresh_base`: `self` is
    /// the defaults (not a resumed run's config), so a non-SGD optimizer brings its own
    /// default lr and weight decay.
    pub fn with(mut self, s: &TrainOverrides, fresh_base: bool) -> TrainConfig {
        s.merge_fields(&mut self);
        if s.no_relinear == Some(true) {
            self.relinear = None;
        }
        if fresh_base && s.optimizer.is_some_and(|o| o != OptimKind::Sgd) {
            if s.lr.is_none() {
                self.lr = 1e-3;
            }
            if s.weight_decay.is_none() && s.optimizer == Some(OptimKind::Adamw) {
                self.weight_decay = 0.01;
            }
        }
        if let Some(c) = self.dataset.classes() {
            self.num_classes = c;
        }
        self
    }

    /// Checks the values; errors name the flag or config-file key (see [`Origins`]).
    pub fn validate(&self, o: &Origins) -> Result<()> {
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
            if !(c.is_finite() && c > 0.0) {
                bail!(
                    "{} {c}: must be a positive, finite norm (0 or absent: no clipping)",
                    o.of("clip_grad_norm")
                );
            }
        }
        // torch.optim.SGD rejects momentum < 0; momentum ≥ 1 makes the buffer grow without
        // bound, so it is refused too
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            bail!("{} {}: must be in [0, 1)", o.of("momentum"), self.momentum);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!(
                "{} {}: must be finite and ≥ 0",
                o.of("weight_decay"),
                self.weight_decay
            );
        }
        resolve_device(&self.device).map_err(|e| anyhow!("{}: {e:#}", o.of("device")))?;
        Ok(())
    }

    /// The schedule of the base lr, per epoch (QuadraLib steps its scheduler per epoch).
    pub fn scheduler(&self) -> Result<LrScheduler> {
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

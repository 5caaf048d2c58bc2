//! Training runs: the configuration, the loop, checkpoints and logs behind
//! `quadra-train train`, for Rust callers too.
//!
//! A [`TrainConfig`] is everything a run is (the keys of the TOML config files in
//! `configs/`, stored in every checkpoint); [`TrainOverrides`] are values a user gave
//! (flags, config-file keys) merged over a base config. A [`Trainer`] sets a run up —
//! fresh, from a checkpoint's weights (`init`), or resumed exactly from any epoch or
//! mid-epoch checkpoint — and [`Trainer::run`] trains it, writing
//! `epoch-NNNN.safetensors`, `step-NNNNNNNN.safetensors` (every `save_every` steps),
//! `last.safetensors`, `best.safetensors`, `metrics.jsonl`, `steps.jsonl` and `chart.{svg,png}`
//! to its output directory, and telling a [`Progress`] observer about each step and epoch.
//!
//! ```no_run
//! use quadra::train::{TrainConfig, Trainer};
//!
//! # fn main() -> anyhow::Result<()> {
//! let cfg = TrainConfig {
//!     model: "qcnn".into(),
//!     epochs: 2,
//!     train_samples: 640,
//!     device: "cpu".into(),
//!     ..TrainConfig::default()
//! };
//! // `()`: no progress output; implement `Progress` for a progress bar or logging
//! let summary = Trainer::new(cfg, "runs/example")?.run(&mut ())?;
//! println!("best test accuracy {:.3} → {}", summary.best_test_acc, summary.best.display());
//! # Ok(())
//! # }
//! ```
//!
//! Errors are `anyhow` errors worded for the command line: they name the flag (or the
//! config-file key) and the files concerned.

mod config;
mod data;
mod device;
mod metrics;
mod optim;
mod resume;
mod run;

pub use config::{
    AugmentKind, DatasetKind, OptimKind, Origins, ScheduleKind, TrainConfig, TrainOverrides,
};
pub use data::{
    build_data, checkpoint_data, evaluate, evaluate_tensors, loaders, model_spec, samples_of, Data,
};
pub use device::{model_to_device, resolve_device};
pub use metrics::write_chart;
pub use optim::build_optimizer;
pub use resume::{checkpoint_config, latest_checkpoint, Position};
pub use run::{EpochReport, Progress, RunInfo, StepInfo, Summary, TrainSetup, Trainer};

//! The training run: setting it up (fresh, `--init` or resumed) and the loop over epochs
//! and steps, with checkpoints, logs and a [`Progress`] observer.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::checkpoint::{self, Checkpoint, OptimState};
use crate::data::TrainTest;
use crate::model::Model;
use crate::nn::spec::{BuildOptions, ModelSpec};
use crate::optim::{LrScheduler, Optimizer};
use crate::profile::{ensure_fits, ProfileOptions};
use crate::{DType, Device};

use super::config::{Origins, TrainConfig, TrainOverrides};
use super::data::{build_data, data_before_model, evaluate, loaders, model_spec, Data};
use super::device::{model_to_device, resolve_device};
use super::metrics::{append_line, filter_lines, write_chart};
use super::optim::build_optimizer;
use super::resume::{bits, checkpoint_config, is_resumable, latest_checkpoint, Position};

/// What `quadra-train train` gathers from its command line: the flags, the `--config`
/// file, `--resume`, `--init`, `--force`.
#[derive(Clone, Debug, Default)]
pub struct TrainSetup {
    /// The flags (they override the config file's keys).
    pub flags: TrainOverrides,
    /// A TOML config file (keys as in configs/*.toml).
    pub config_file: Option<PathBuf>,
    /// Continue from this checkpoint, or a run folder's furthest one; its config is the base.
    pub resume: Option<PathBuf>,
    /// Start a fresh run from this checkpoint's model and weights (fine-tuning).
    pub init: Option<PathBuf>,
    /// Start over in an output directory that already holds a run.
    pub force: bool,
}

/// The run, as set up: told to the [`Progress`] before the first step.
pub struct RunInfo<'a> {
    pub config: &'a TrainConfig,
    pub params: usize,
    pub train_samples: usize,
    pub test_samples: usize,
    /// Where the samples came from (files, or "synthetic").
    pub source: &'a str,
    pub steps_per_epoch: usize,
    pub device: Device,
    /// The optimizer's parameter groups and ReLinear, for a model with quadratic layers.
    pub optimizer_note: Option<&'a str>,
    /// The `--resume` path the run continues from.
    pub resumed_from: Option<&'a Path>,
    pub start: Position,
}

/// One optimizer step done.
pub struct StepInfo {
    /// The epoch (0-based) and the batch of it (0-based) just trained.
    pub epoch: usize,
    pub batch: usize,
    pub epochs: usize,
    pub steps_per_epoch: usize,
    /// Optimizer steps of the run so far.
    pub step: u64,
    pub lr: f64,
    /// This batch's mean loss, and the epoch's so far.
    pub loss: f64,
    pub mean_loss: f64,
    /// Training throughput of this process in the epoch so far.
    pub images_per_s: f64,
}

/// One epoch done: its metrics (the `metrics.jsonl` line is `json`).
pub struct EpochReport {
    /// 0-based.
    pub epoch: usize,
    pub epochs: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_loss: f64,
    pub test_acc: f64,
    pub is_best: bool,
    pub seconds: f64,
    pub checkpoint: PathBuf,
    pub json: Value,
}

/// The finished run.
pub struct Summary {
    /// The summary line of `train --json`.
    pub json: Value,
    pub epochs: usize,
    /// Where the run started (a resumed run: the checkpoint's position).
    pub start: Position,
    pub step: u64,
    /// The best test accuracy (-1: no epoch ran) and its checkpoint.
    pub best_test_acc: f64,
    pub best: PathBuf,
    /// The trained model.
    pub model: Model,
}

/// Observes a run; every method has a default that does nothing (`warning` prints to
/// stderr), and `()` is the observer that only warns.
pub trait Progress {
    /// The run is set up and its outputs prepared; no step has run.
    fn start(&mut self, _run: &RunInfo) {}
    /// Epoch `epoch` (0-based) begins at batch `start_batch` (non-zero when resumed
    /// mid-epoch).
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _steps: usize, _start_batch: usize) {}
    fn step(&mut self, _s: &StepInfo) {}
    /// A mid-epoch checkpoint (`save_every`) was written after step `s`.
    fn saved(&mut self, _s: &StepInfo, _path: &Path) {}
    /// The epoch's batches are done; its evaluation on the test set begins.
    fn evaluating(&mut self, _epoch: usize) {}
    /// The epoch is evaluated, logged and checkpointed.
    fn epoch_end(&mut self, _e: &EpochReport) {}
    fn warning(&mut self, msg: &str) {
        eprintln!("warning: {msg}");
    }
}

impl Progress for () {}

/// A training run, set up and ready to [`run`](Trainer::run).
pub struct Trainer {
    cfg: TrainConfig,
    model: Model,
    data: Data,
    opt: Box<dyn Optimizer>,
    opt_note: Option<String>,
    sched: LrScheduler,
    device: Device,
    pos: Position,
    out_dir: PathBuf,
    resume: Option<PathBuf>,
    force: bool,
}

/// `--init`: the model and weights of a checkpoint.
fn load_init(p: &Path) -> Result<Model> {
    let (_, model) =
        Checkpoint::load_model(p).with_context(|| format!("--init {}", p.display()))?;
    Ok(model)
}

/// A fresh run's model: `--init`'s or the caller's (checked against the dataset's
/// classes), or built from the zoo name / spec file with the run's seed.
fn fresh_model(cfg: &TrainConfig, init: Option<Model>, origins: &Origins) -> Result<Model> {
    let mut model = match init {
        Some(model) => {
            if model.spec.num_classes != cfg.num_classes {
                let what = match &cfg.init {
                    Some(p) => format!("--init {}: the checkpoint's model", p.display()),
                    None => "the model".to_string(),
                };
                bail!(
                    "{what} has {} classes, dataset {} has {}",
                    model.spec.num_classes,
                    cfg.dataset,
                    cfg.num_classes
                );
            }
            model
        }
        None => {
            let mut spec = model_spec(&cfg.model, cfg.num_classes)
                .map_err(|e| anyhow!("{}: {e:#}", origins.of("model")))?;
            spec.backprop = cfg.backprop;
            return Ok(Model::build(
                &spec,
                BuildOptions {
                    dtype: DType::F32,
                    seed: cfg.seed,
                },
            )?);
        }
    };
    model.set_backprop(cfg.backprop, Default::default())?;
    Ok(model)
}

impl Trainer {
    /// A fresh run of `cfg` writing to `out` (which must not hold a run yet). With
    /// `cfg.init`, the model and weights are that checkpoint's. `num_classes` is set from
    /// the dataset.
    pub fn new(cfg: TrainConfig, out: impl Into<PathBuf>) -> Result<Trainer> {
        Self::fresh(cfg, out.into(), None, None)
    }

    /// A fresh run of `cfg` on the caller's datasets (instead of `cfg.dataset`'s; the
    /// augmentation presets are still `cfg.dataset`'s).
    pub fn with_data(
        cfg: TrainConfig,
        out: impl Into<PathBuf>,
        data: TrainTest,
    ) -> Result<Trainer> {
        Self::fresh(cfg, out.into(), Some(data), None)
    }

    /// A fresh run of `cfg` that trains the caller's `model` (its weights are kept: no
    /// ReLinear), on the caller's datasets or `cfg.dataset`'s.
    pub fn with_model(
        mut cfg: TrainConfig,
        out: impl Into<PathBuf>,
        model: Model,
        data: Option<TrainTest>,
    ) -> Result<Trainer> {
        cfg.relinear = None;
        Self::fresh(cfg, out.into(), data, Some(model))
    }

    /// Starts over in an output directory that already holds a run (its logs are
    /// restarted), as `--force` does.
    pub fn force(mut self) -> Trainer {
        self.force = true;
        self
    }

    fn fresh(
        mut cfg: TrainConfig,
        out_dir: PathBuf,
        data: Option<TrainTest>,
        model: Option<Model>,
    ) -> Result<Trainer> {
        let origins = Origins::default();
        if let Some(c) = cfg.dataset.classes() {
            cfg.num_classes = c;
        }
        let init = match (&cfg.init, model) {
            (_, Some(model)) => {
                cfg.model = model.spec.name.clone();
                Some(model)
            }
            (Some(p), None) => {
                let model = load_init(p)?;
                cfg.model = model.spec.name.clone();
                Some(model)
            }
            (None, None) => None,
        };
        let data = match data {
            Some(d) => Some(d),
            None => data_before_model(&mut cfg)?,
        };
        if let Some(d) = &data {
            cfg.num_classes = d.train.classes();
        }
        cfg.validate(&origins)?;
        let model = fresh_model(&cfg, init, &origins)?;
        let data = match data {
            Some(tt) => loaders(&cfg, &model.spec, tt)?,
            None => build_data(&cfg, &model.spec)?,
        };
        Self::assemble(
            cfg,
            model,
            data,
            Position::default(),
            None,
            out_dir,
            None,
            false,
        )
    }

    /// The run `quadra-train train` sets up: the config resolved from the flags, over the
    /// config file, over the resumed checkpoint's config, over the defaults; a resumed run
    /// continues from the checkpoint's position, optimizer state and running sums.
    pub fn from_setup(s: &TrainSetup) -> Result<Trainer> {
        let file = s
            .config_file
            .as_ref()
            .map(|p| TrainOverrides::from_file(p))
            .transpose()?;
        let given = match &file {
            Some(f) => s.flags.clone().or(f.clone()),
            None => s.flags.clone(),
        };
        let mut origins = Origins {
            flags: s.flags.clone(),
            file: s.config_file.clone().zip(file),
            resumed: None,
        };
        let out_dir = given
            .out
            .clone()
            .ok_or_else(|| anyhow!("--output DIR is required (or `out` in the config file)"))?;

        // the base: the checkpoint's config when resuming, else the defaults
        let resumed = match &s.resume {
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
        let base = match &resumed {
            Some((p, ck, _)) => {
                origins.resumed = Some(p.clone());
                Some(checkpoint_config(ck, p)?)
            }
            None => None,
        };
        let fresh_base = base.is_none();
        let mut cfg = base.clone().unwrap_or_default().with(&given, fresh_base);
        // --init: the model (and its weights) are the checkpoint's
        let init = match &s.init {
            Some(p) => {
                let model = load_init(p)?;
                cfg.model = model.spec.name.clone();
                cfg.init = Some(p.clone());
                Some(model)
            }
            None => None,
        };
        cfg.validate(&origins)?;

        let Some((p, ck, mut model)) = resumed else {
            let first = data_before_model(&mut cfg)?;
            let model = fresh_model(&cfg, init, &origins)?;
            let data = match first {
                Some(tt) => loaders(&cfg, &model.spec, tt)?,
                None => build_data(&cfg, &model.spec)?,
            };
            let pos = Position::default();
            return Self::assemble(cfg, model, data, pos, None, out_dir, None, s.force);
        };
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
                    b.dataset,
                    origins.of("dataset"),
                    cfg.dataset
                );
            }
        }
        if ck.spec.num_classes != cfg.num_classes {
            bail!(
                "{}: the checkpoint's model has {} classes, dataset {} has {}",
                p.display(),
                ck.spec.num_classes,
                cfg.dataset,
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
        let data = build_data(&cfg, &model.spec)?;
        let resume = s.resume.clone();
        Self::assemble(cfg, model, data, pos, ck.optim, out_dir, resume, s.force)
    }

    /// The optimizer, schedule and device of a run whose model and data are ready.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        cfg: TrainConfig,
        mut model: Model,
        data: Data,
        pos: Position,
        resume_optim: Option<OptimState>,
        out_dir: PathBuf,
        resume: Option<PathBuf>,
        force: bool,
    ) -> Result<Trainer> {
        let steps = data.train.batches_per_epoch();
        if pos.batch > steps {
            bail!(
                "the checkpoint stands at batch {} of an epoch of {steps}",
                pos.batch
            );
        }
        // the model answers raw inputs as this run's evaluation saw them: its checkpoints
        // carry the normalization and class names (`Model::predict`, `info`)
        let pre = data.preprocess.clone();
        pre.check(&model.spec.name, &model.spec.input, model.spec.num_classes)?;
        model.spec.preprocess = Some(pre);
        let (opt, opt_note) = build_optimizer(&cfg, &mut model, resume_optim.as_ref())?;
        let sched = cfg.scheduler()?;
        // after build_optimizer: ReLinear initialises the weights on the CPU; the optimizer
        // state (fresh or resumed) follows the parameters to the device at the first step
        let device = resolve_device(&cfg.device)?;
        model_to_device(&mut model, device)?;
        check_step_fits(&cfg, &model.spec, device)?;
        Ok(Trainer {
            cfg,
            model,
            data,
            opt,
            opt_note,
            sched,
            device,
            pos,
            out_dir,
            resume,
            force,
        })
    }

    /// The resolved configuration (what the checkpoints store).
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Where the run starts.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// Trains until `config().epochs` epochs are complete, writing to the output
    /// directory: `epoch-NNNN.safetensors` per epoch, `step-NNNNNNNN.safetensors` every
    /// `save_every` steps, `last.safetensors`, `best.safetensors`, `metrics.jsonl`,
    /// `steps.jsonl` and `chart.svg` and `chart.png`.
    pub fn run(self, progress: &mut dyn Progress) -> Result<Summary> {
        let Trainer {
            cfg,
            mut model,
            data,
            mut opt,
            opt_note,
            sched,
            device,
            pos,
            out_dir,
            resume,
            force,
        } = self;
        let cfg_json = serde_json::to_value(&cfg)?;

        // outputs: refuse to clobber another run; on resume, cut the logs back to the checkpoint
        let metrics_path = out_dir.join("metrics.jsonl");
        let steps_path = out_dir.join("steps.jsonl");
        let previous = if resume.is_none() {
            run_files(&out_dir)?
        } else {
            Vec::new()
        };
        // `--init DIR/best.safetensors --out DIR --force` would delete its own source (and
        // keeping it would leave a checkpoint of the old run to resume): refused
        if let Some(init) = cfg.init.as_ref().and_then(|p| p.canonicalize().ok()) {
            if force
                && previous
                    .iter()
                    .any(|p| p.canonicalize().ok().as_ref() == Some(&init))
            {
                bail!(
                    "--init {}: the checkpoint is a file of the run in --output {}, which --force \
                     deletes; copy it out of that folder first",
                    init.display(),
                    out_dir.display()
                );
            }
        }
        if !force && !previous.is_empty() {
            bail!(
                "--output {}: the directory already holds a run ({}); continue it with \
                 --resume {}, start over with --force (which deletes that run's checkpoints \
                 and logs), or pick another --output",
                out_dir.display(),
                file_names(&previous),
                out_dir.display()
            );
        }
        std::fs::create_dir_all(&out_dir).with_context(|| {
            format!("{}: cannot create the output directory", out_dir.display())
        })?;
        let mut history: Vec<Value> = if resume.is_some() {
            filter_lines(&steps_path, &|v| {
                v["step"].as_u64().is_some_and(|s| s <= pos.step)
            })?;
            filter_lines(&metrics_path, &|v| {
                v["epoch"].as_u64().is_some_and(|e| e as usize <= pos.epoch)
            })?
        } else {
            // --force: nothing of the previous run may be resumed or mixed into this one's
            // logs later (its epoch-*/step-* checkpoints would outrank this run's on
            // `--resume DIR`); only files of a run's naming are touched
            for p in &previous {
                std::fs::remove_file(p)
                    .with_context(|| format!("{}: cannot remove", p.display()))?;
            }
            Vec::new()
        };

        let steps = data.train.batches_per_epoch();
        let params = model.num_params();
        progress.start(&RunInfo {
            config: &cfg,
            params,
            train_samples: data.train.dataset().len(),
            test_samples: data.test.dataset().len(),
            source: &data.source,
            steps_per_epoch: steps,
            device,
            optimizer_note: opt_note.as_deref(),
            resumed_from: resume.as_deref(),
            start: pos,
        });
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
            progress.epoch_start(epoch, cfg.epochs, steps, start);
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
                let info = StepInfo {
                    epoch,
                    batch: b,
                    epochs: cfg.epochs,
                    steps_per_epoch: steps,
                    step,
                    lr,
                    loss: out.loss,
                    mean_loss: loss_sum / seen as f64,
                    images_per_s: new_seen as f64 / t0.elapsed().as_secs_f64(),
                };
                progress.step(&info);
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
                        progress.saved(&info, &path);
                    }
                }
            }
            drop(batches);
            progress.evaluating(epoch);
            let (test_loss, test_acc) = evaluate(&model, &data.test)?;
            let secs = t0.elapsed().as_secs_f64();
            let is_best = test_acc > best;
            if is_best {
                best = test_acc;
            }
            let ck_path = out_dir.join(format!("epoch-{:04}.safetensors", epoch + 1));
            let (train_loss, train_acc) = (loss_sum / seen as f64, correct as f64 / seen as f64);
            let metrics = json!({
                "event": "epoch",
                "epoch": epoch + 1,
                "step": step,
                "lr": lr,
                "train_loss": train_loss,
                "train_acc": train_acc,
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
            let title = format!("{} on {}", cfg.model, cfg.dataset);
            if let Err(e) = write_chart(&chart, &title, &history) {
                progress.warning(&format!("{}: chart not written: {e:#}", chart.display()));
            }
            progress.epoch_end(&EpochReport {
                epoch,
                epochs: cfg.epochs,
                lr,
                train_loss,
                train_acc,
                test_loss,
                test_acc,
                is_best,
                seconds: secs,
                checkpoint: ck_path.clone(),
                json: metrics.clone(),
            });
            last_metrics = metrics;
        }
        let json = json!({
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
        Ok(Summary {
            json,
            epochs: cfg.epochs,
            start: pos,
            step,
            best_test_acc: best,
            best: best_path,
            model,
        })
    }
}

/// The files of a training run in `dir` (what [`Trainer::run`] writes): checkpoints
/// `epoch-*`, `step-*`, `last`, `best` (`.safetensors`), `metrics.jsonl`, `steps.jsonl`,
/// `chart.svg`, `chart.png`. Sorted; empty when `dir` does not exist.
fn run_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow!("{}: cannot list: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.with_context(|| format!("{}: cannot list", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let checkpoint = is_resumable(&name) || name == "best.safetensors";
        let log = matches!(
            name.as_str(),
            "metrics.jsonl" | "steps.jsonl" | "chart.svg" | "chart.png"
        );
        if (checkpoint || log) && e.file_type().is_ok_and(|t| t.is_file()) {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// `a, b, c` (the first four names, then a count).
fn file_names(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths
        .iter()
        .take(4)
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    match paths.len() {
        n if n > 4 => format!("{} and {} more", names.join(", "), n - 4),
        _ => names.join(", "),
    }
}

/// Error when a training step at the run's batch size cannot fit `device`
/// ([`ensure_fits`]: free when a rough bound says it fits), before the first step instead
/// of an allocation abort or an OOM kill mid-epoch.
fn check_step_fits(cfg: &TrainConfig, spec: &ModelSpec, device: Device) -> Result<()> {
    let opts = ProfileOptions {
        batch: cfg.batch_size,
        device,
        seed: cfg.seed,
        ..Default::default()
    };
    ensure_fits(spec, &opts).with_context(|| format!("--batch-size {}", cfg.batch_size))
}

//! `quadra-train train`: the flags of a run, over `quadra::train::Trainer`, with the
//! progress bar on a terminal, progress lines otherwise, or JSON lines (`--json`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use quadra::train::{
    EpochReport, Progress, RunInfo, StepInfo, TrainOverrides, TrainSetup, Trainer,
};

/// `train` options. Every one is optional: a value comes from the flag, else from the
/// `--config` file, else (with `--resume`) from the checkpoint's config, else the default.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// TOML config (keys as in configs/*.toml: architecture, dataset, epochs, lr, final_lr,
    /// batch_size, …); flags given on the command line override it.
    #[arg(long)]
    config: Option<PathBuf>,
    // the settings of the run (`train --help` lists them in their `display_order`)
    #[command(flatten)]
    settings: TrainOverrides,
    /// Start over in an --output that already holds a run (its logs are restarted).
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

/// What `train` prints: with `--json` one line per epoch (then the summary); else the run's
/// header, a progress bar per epoch on a terminal (progress lines when stderr is not
/// one), mid-epoch checkpoints and a line per epoch.
struct CliProgress {
    json: bool,
    tty: bool,
    bar: ProgressBar,
}

impl Progress for CliProgress {
    fn start(&mut self, r: &RunInfo) {
        if self.json {
            return;
        }
        let cfg = r.config;
        println!(
            "model {} ({} parameters), dataset {} ({} train / {} test, {}), {} epochs × {} steps of {}, {:?} lr {} → {} ({:?}), backprop {}, device {}{}{}",
            cfg.model,
            r.params,
            cfg.dataset,
            r.train_samples,
            r.test_samples,
            r.source,
            cfg.epochs,
            r.steps_per_epoch,
            cfg.batch_size,
            cfg.optimizer,
            cfg.lr,
            cfg.final_lr,
            cfg.schedule,
            cfg.backprop,
            r.device,
            match r.optimizer_note {
                Some(n) => format!(", {n}"),
                None => String::new(),
            },
            match r.resumed_from {
                Some(p) => format!(
                    ", resumed from {} at epoch {} batch {}",
                    p.display(),
                    r.start.epoch,
                    r.start.batch
                ),
                None => String::new(),
            }
        );
    }

    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize, start_batch: usize) {
        self.bar = if self.tty && !self.json {
            let b = ProgressBar::new(steps as u64);
            b.set_style(
                ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
                    .expect("a valid progress template")
                    .progress_chars("=> "),
            );
            b.set_prefix(format!("{}/{}", epoch + 1, epochs));
            b.set_position(start_batch as u64);
            b
        } else {
            ProgressBar::hidden()
        };
    }

    fn step(&mut self, s: &StepInfo) {
        self.bar.inc(1);
        self.bar.set_message(format!("loss {:.4}", s.mean_loss));
        let (b, steps) = (s.batch, s.steps_per_epoch);
        if !self.tty && !self.json && steps >= 20 && (b + 1) % (steps / 10) == 0 && b + 1 < steps {
            println!(
                "epoch {}/{}: {}/{steps} steps, loss {:.4}, {:.0} images/s",
                s.epoch + 1,
                s.epochs,
                b + 1,
                s.mean_loss,
                s.images_per_s
            );
        }
    }

    fn saved(&mut self, s: &StepInfo, path: &Path) {
        if !self.tty && !self.json {
            println!(
                "step {}: loss {:.4} → {}",
                s.step,
                s.mean_loss,
                path.display()
            );
        }
    }

    fn evaluating(&mut self, _epoch: usize) {
        self.bar.finish_and_clear();
    }

    fn epoch_end(&mut self, e: &EpochReport) {
        if self.json {
            println!("{}", e.json);
        } else {
            println!(
                "epoch {}/{}: train loss {:.4}, train acc {:.1}%, test loss {:.4}, test acc {:.1}%{}, lr {:.4}, {:.1} s → {}",
                e.epoch + 1,
                e.epochs,
                e.train_loss,
                100.0 * e.train_acc,
                e.test_loss,
                100.0 * e.test_acc,
                if e.is_best { " (best)" } else { "" },
                e.lr,
                e.seconds,
                e.checkpoint.display()
            );
        }
    }
}

pub fn run(a: &TrainArgs) -> Result<()> {
    let trainer = Trainer::from_setup(&TrainSetup {
        flags: a.settings.clone(),
        config_file: a.config.clone(),
        resume: a.resume.clone(),
        init: a.init.clone(),
        force: a.force,
    })?;
    let mut progress = CliProgress {
        json: a.json,
        tty: std::io::stderr().is_terminal(),
        bar: ProgressBar::hidden(),
    };
    let s = trainer.run(&mut progress)?;
    if a.json {
        println!("{}", s.json);
    } else if s.start.epoch >= s.epochs {
        println!(
            "nothing to do: the checkpoint has {} epochs, --epochs is {}",
            s.start.epoch, s.epochs
        );
    } else {
        println!(
            "best test accuracy {:.2}% → {}",
            100.0 * s.best_test_acc,
            s.best.display()
        );
    }
    Ok(())
}

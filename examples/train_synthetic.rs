//! First run: train a small quadratic CNN (quadralib-bn neurons) on a synthetic 10-class
//! image set, on the CPU, with the library trainer (`quadra::train`), and report test
//! accuracy and the memory kept for backward.
//!
//!     cargo run --release --example train_synthetic [-- --backprop recompute --epochs 3]
//!
//! Checkpoints, `metrics.jsonl` and `chart.svg` go to target/example-runs/train_synthetic.

use anyhow::{bail, Context, Result};
use quadra::device::alloc::cpu_tracker;
use quadra::nn::BackpropMode;
use quadra::train::{
    EpochReport, OptimKind, Progress, RunInfo, ScheduleKind, TrainConfig, Trainer,
};
use quadra::Category;

/// Prints a line per epoch with the peak of the bytes saved for backward during it.
struct Report {
    /// Bytes saved for backward when the epoch began (model state kept across steps).
    base: u64,
    /// The epoch's peak above `base`, read before the evaluation.
    saved_peak: u64,
}

impl Progress for Report {
    fn start(&mut self, r: &RunInfo) {
        println!(
            "model qcnn (quadralib-bn), {} parameters, backprop {}",
            r.params, r.config.backprop
        );
    }
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _steps: usize, _start: usize) {
        self.base = cpu_tracker().current(Category::SavedForBackward);
        cpu_tracker().reset_peak();
    }
    fn evaluating(&mut self, _epoch: usize) {
        let peak = cpu_tracker().snapshot().peak(Category::SavedForBackward);
        self.saved_peak = peak.saturating_sub(self.base);
    }
    fn epoch_end(&mut self, e: &EpochReport) {
        println!(
            "epoch {}: train loss {:.4}, train acc {:.1}%, test loss {:.4}, test acc {:.1}%, saved for backward {:.2} MiB, {:.1} s",
            e.epoch + 1,
            e.train_loss,
            100.0 * e.train_acc,
            e.test_loss,
            100.0 * e.test_acc,
            self.saved_peak as f64 / 1048576.0,
            e.seconds
        );
    }
}

fn main() -> Result<()> {
    let mut backprop = BackpropMode::Stored;
    let mut epochs = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--backprop" => backprop = args.next().context("--backprop needs a value")?.parse()?,
            "--epochs" => {
                epochs = args
                    .next()
                    .context("--epochs needs a value")?
                    .parse()
                    .context("--epochs must be a number")?
            }
            other => bail!(
                "unknown argument `{other}` (expected --backprop stored|recompute, --epochs N)"
            ),
        }
    }
    // 60 steps of 64 per epoch on the synthetic set, plain SGD at a constant lr
    let cfg = TrainConfig {
        model: "qcnn".into(),
        epochs,
        batch_size: 64,
        train_samples: 60 * 64,
        test_samples: 1000,
        backprop,
        device: "cpu".into(),
        seed: 1,
        optimizer: OptimKind::Sgd,
        lr: 0.05,
        schedule: ScheduleKind::Constant,
        quadratic_optimizer: false,
        ..TrainConfig::default()
    };
    let trainer = Trainer::new(cfg, "target/example-runs/train_synthetic")?.force();
    let summary = trainer.run(&mut Report {
        base: 0,
        saved_peak: 0,
    })?;
    println!(
        "best test accuracy {:.1}% → {}",
        100.0 * summary.best_test_acc,
        summary.best.display()
    );
    Ok(())
}

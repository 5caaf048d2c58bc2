//! Does the quadratic optimizer help? Trains the `qcnn` zoo model (quadralib-bn neurons) on
//! the synthetic 10-class set with the same seeds (weights, batches, test set) in four
//! configurations with the library trainer (`quadra::train`) and prints loss and accuracy
//! per epoch:
//!
//! - `baseline`: plain SGD, default init;
//! - `relinear`: ReLinear init (scale 0), one lr for all parameters;
//! - `quad-lr`:  default init, second-order weights at `quad_lr_scale`·lr;
//! - `both`:     ReLinear init and the second-order group (the `QuadraticConfig` default).
//!
//!     cargo run --release --example quadratic_optimizer [-- --epochs 4 --steps 40 --lr 0.05
//!   --quad-lr-scale 0.1 --relinear-scale 0 --noise 0.8 --adam]
//!
//! Each configuration's run goes to target/example-runs/quadratic_optimizer/NAME.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use quadra::data::synthetic::Synthetic;
use quadra::data::{Dataset, TrainTest};
use quadra::train::{EpochReport, OptimKind, Progress, ScheduleKind, TrainConfig, Trainer};

/// A line per epoch, with the time since the configuration's start.
struct Lines {
    name: &'static str,
    t0: Instant,
}

impl Progress for Lines {
    fn epoch_end(&mut self, e: &EpochReport) {
        println!(
            "{:>8} epoch {}: train loss {:.4} acc {:.1}% | test loss {:.4} acc {:.1}% ({:.0} s)",
            self.name,
            e.epoch + 1,
            e.train_loss,
            100.0 * e.train_acc,
            e.test_loss,
            100.0 * e.test_acc,
            self.t0.elapsed().as_secs_f64()
        );
    }
}

fn main() -> Result<()> {
    let (mut epochs, mut steps, mut lr, mut qscale, mut rscale, mut noise) =
        (4usize, 40usize, 0.05f64, 0.1f64, 0.0f64, 0.8f32);
    let mut adam = false;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |n: &str| args.next().with_context(|| format!("{n} needs a value"));
        match a.as_str() {
            "--epochs" => epochs = val("--epochs")?.parse()?,
            "--steps" => steps = val("--steps")?.parse()?,
            "--lr" => lr = val("--lr")?.parse()?,
            "--quad-lr-scale" => qscale = val("--quad-lr-scale")?.parse()?,
            "--relinear-scale" => rscale = val("--relinear-scale")?.parse()?,
            "--noise" => noise = val("--noise")?.parse()?,
            "--only" => only = Some(val("--only")?),
            "--adam" => adam = true,
            other => bail!("unknown argument `{other}`"),
        }
    }
    let batch = 64;
    // the same samples for every configuration: `steps` batches of 64 (N, 1, 28, 28),
    // shuffled per epoch by the trainer's seed, and 1000 test samples
    let data = Synthetic::new([1, 28, 28], 10, noise, 42)?;
    let (x, y) = data.batch(steps * batch, 0)?;
    let (test_x, test_y) = data.batch(1000, 999_999)?;
    let tt = TrainTest {
        train: Dataset::from_tensor("synthetic", "synthetic", 10, x, y)?,
        test: Dataset::from_tensor("synthetic", "synthetic", 10, test_x, test_y)?,
    };
    let base = TrainConfig {
        model: "qcnn".into(),
        epochs,
        batch_size: batch,
        device: "cpu".into(),
        seed: 1,
        optimizer: if adam {
            OptimKind::Adamw
        } else {
            OptimKind::Sgd
        },
        lr,
        weight_decay: if adam { 0.01 } else { 5e-4 },
        schedule: ScheduleKind::Constant,
        ..TrainConfig::default()
    };
    // (name, quadratic optimizer on, second-order lr scale, ReLinear scale)
    let configs = [
        ("baseline", false, 1.0, None),
        ("relinear", true, 1.0, Some(rscale)),
        ("quad-lr", true, qscale, None),
        ("both", true, qscale, Some(rscale)),
    ];
    println!(
        "qcnn (quadralib-bn) on synthetic (noise {noise}), batch {batch}, {steps} steps/epoch, {epochs} epochs, {:?} lr {lr}, quad_lr_scale {qscale}, relinear scale {rscale}",
        base.optimizer
    );
    for (name, quadratic_optimizer, quad_lr_scale, relinear) in configs {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let cfg = TrainConfig {
            quadratic_optimizer,
            quad_lr_scale,
            relinear,
            ..base.clone()
        };
        let out = format!("target/example-runs/quadratic_optimizer/{name}");
        let trainer = Trainer::with_data(cfg, out, tt.clone())?.force();
        trainer.run(&mut Lines {
            name,
            t0: Instant::now(),
        })?;
    }
    Ok(())
}

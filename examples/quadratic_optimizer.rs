//! Does the quadratic optimizer help? Trains the `qcnn` zoo model (quadralib-bn neurons) on
//! the synthetic 10-class set with the same seeds (weights, batches, test set) in four
//! configurations and prints loss and accuracy per epoch:
//!
//! - `baseline`: plain SGD, default init;
//! - `relinear`: ReLinear init (scale 0), one lr for all parameters;
//! - `quad-lr`:  default init, second-order weights at `quad_lr_scale`·lr;
//! - `both`:     ReLinear init and the second-order group (the `QuadraticConfig` default).
//!
//!     cargo run --release --example quadratic_optimizer [-- --epochs 4 --steps 40 --lr 0.05
//!   --quad-lr-scale 0.1 --relinear-scale 0 --noise 0.8 --adam]

use std::time::Instant;

use anyhow::{bail, Context, Result};
use quadra::data::synthetic::Synthetic;
use quadra::model::Model;
use quadra::nn::spec::BuildOptions;
use quadra::optim::{AdamConfig, BaseOptimizer, QuadraticConfig, QuadraticOptimizer};

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
    let data = Synthetic::new([1, 28, 28], 10, noise, 42)?;
    let (test_x, test_y) = data.batch(1000, 999_999)?;
    let base = if adam {
        BaseOptimizer::Adam(AdamConfig::adamw(lr))
    } else {
        BaseOptimizer::Sgd {
            lr,
            momentum: 0.9,
            weight_decay: 5e-4,
            nesterov: false,
        }
    };
    let configs = [
        ("baseline", QuadraticConfig::off()),
        (
            "relinear",
            QuadraticConfig {
                relinear: Some(rscale),
                ..QuadraticConfig::off()
            },
        ),
        (
            "quad-lr",
            QuadraticConfig {
                quad_lr_scale: qscale,
                ..QuadraticConfig::off()
            },
        ),
        (
            "both",
            QuadraticConfig {
                quad_lr_scale: qscale,
                quad_weight_decay: None,
                relinear: Some(rscale),
            },
        ),
    ];
    println!(
        "qcnn (quadralib-bn) on synthetic (noise {noise}), batch 64, {steps} steps/epoch, {epochs} epochs, {base:?}, quad_lr_scale {qscale}, relinear scale {rscale}"
    );
    let batch = 64;
    for (name, cfg) in configs {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let spec = quadra::models::get("qcnn", None, 10)?;
        let mut model = Model::build(
            &spec,
            BuildOptions {
                seed: 1,
                ..Default::default()
            },
        )?;
        let mut opt = QuadraticOptimizer::for_model(&mut model.net, base, cfg)?;
        let t0 = Instant::now();
        for epoch in 0..epochs {
            let (mut loss, mut correct) = (0.0, 0);
            for s in 0..steps {
                let (x, y) = data.batch(batch, (epoch * steps + s) as u64)?;
                let out = model.train_step(&x, &y, &mut opt)?;
                loss += out.loss;
                correct += out.correct;
            }
            let test = model.evaluate(&test_x, &test_y)?;
            println!(
                "{name:>8} epoch {}: train loss {:.4} acc {:.1}% | test loss {:.4} acc {:.1}% ({:.0} s)",
                epoch + 1,
                loss / steps as f64,
                100.0 * correct as f64 / (steps * batch) as f64,
                test.loss,
                100.0 * test.correct as f64 / test_y.len() as f64,
                t0.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

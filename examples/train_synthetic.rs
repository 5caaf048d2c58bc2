//! First run: train a small quadratic CNN (quadralib-bn neurons) on a synthetic 10-class
//! image set, on the CPU, and report test accuracy and the memory kept for backward.
//!
//!     cargo run --release --example train_synthetic [-- --backprop recompute --epochs 3]

use std::time::Instant;

use anyhow::{bail, Context, Result};
use quadra::data::synthetic::Synthetic;
use quadra::device::alloc::cpu_tracker;
use quadra::model::Model;
use quadra::nn::spec::BuildOptions;
use quadra::nn::BackpropMode;
use quadra::optim::Sgd;
use quadra::Category;

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
    let data = Synthetic::new([1, 28, 28], 10, 0.8, 42)?;
    let (test_x, test_y) = data.batch(1000, 999_999)?;
    let mut spec = quadra::models::get("qcnn", None, 10)?;
    spec.backprop = backprop;
    let mut model = Model::build(
        &spec,
        BuildOptions {
            seed: 1,
            ..Default::default()
        },
    )?;
    let mut opt = Sgd::new(0.05, 0.9, 5e-4, false)?;
    println!(
        "model qcnn (quadralib-bn), {} parameters, backprop {backprop}",
        model.num_params()
    );
    let (batch, steps) = (64, 60);
    for epoch in 0..epochs {
        let t0 = Instant::now();
        let (mut loss, mut correct, mut saved_peak) = (0.0, 0, 0u64);
        for s in 0..steps {
            let (x, y) = data.batch(batch, (epoch * steps + s) as u64)?;
            let base = cpu_tracker().current(Category::SavedForBackward);
            cpu_tracker().reset_peak();
            let out = model.train_step(&x, &y, &mut opt)?;
            saved_peak =
                saved_peak.max(cpu_tracker().snapshot().peak(Category::SavedForBackward) - base);
            loss += out.loss;
            correct += out.correct;
        }
        let test = model.evaluate(&test_x, &test_y)?;
        println!(
            "epoch {}: train loss {:.4}, train acc {:.1}%, test loss {:.4}, test acc {:.1}%, saved for backward {:.2} MiB, {:.1} s",
            epoch + 1,
            loss / steps as f64,
            100.0 * correct as f64 / (steps * batch) as f64,
            test.loss,
            100.0 * test.correct as f64 / test_y.len() as f64,
            saved_peak as f64 / 1048576.0,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

//! The auto-builder end to end, on the CPU: train the first-order `cnn` a little on
//! synthetic data, convert it to a QDNN (quadralib-bn neurons) with function-preserving
//! weights, check that both compute the same outputs, calibrate the BatchNorm statistics the
//! conversion could not know on training inputs, fine-tune, rank the quadratic layers by
//! importance, and reduce the model to a MAC budget.
//!
//!     cargo run --release --example convert_demo [-- --neuron quadralib-bn --json]

use anyhow::{bail, Context, Result};
use quadra::convert::{
    self, convert_model, cost, layer_importance, reduce, state_dict_of, Budget, ConvertOptions,
};
use quadra::data::synthetic::Synthetic;
use quadra::data::{Dataset, TrainTest};
use quadra::model::Model;
use quadra::nn::quadratic::NeuronType;
use quadra::nn::spec::BuildOptions;
use quadra::train::{ScheduleKind, TrainConfig, Trainer};

/// Trains `model` for `steps` batches of 64 synthetic samples (drawn with seed `first`),
/// one epoch of plain SGD at a constant `lr`, with the library trainer (its run goes to
/// target/example-runs/convert_demo/NAME); returns the model and the epoch's train loss.
fn train(
    model: Model,
    data: &Synthetic,
    steps: usize,
    first: u64,
    lr: f64,
    name: &str,
) -> Result<(Model, f64)> {
    let (x, y) = data.batch(64 * steps, first)?;
    let (tx, ty) = data.batch(500, 999_999)?;
    let tt = TrainTest {
        train: Dataset::from_tensor("synthetic", "synthetic", 10, x, y)?,
        test: Dataset::from_tensor("synthetic", "synthetic", 10, tx, ty)?,
    };
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 64,
        device: "cpu".into(),
        lr,
        schedule: ScheduleKind::Constant,
        quadratic_optimizer: false,
        ..TrainConfig::default()
    };
    let out = format!("target/example-runs/convert_demo/{name}");
    let s = Trainer::with_model(cfg, out, model, Some(tt))?
        .force()
        .run(&mut ())?;
    let loss = s.json["last"]["train_loss"].as_f64().unwrap_or(f64::NAN);
    Ok((s.model, loss))
}

fn main() -> Result<()> {
    let mut neuron = NeuronType::QuadraLibBn;
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--neuron" => neuron = args.next().context("--neuron needs a value")?.parse()?,
            "--json" => json = true,
            other => bail!("unknown argument `{other}` (expected --neuron NAME, --json)"),
        }
    }
    let data = Synthetic::new([1, 28, 28], 10, 0.8, 42)?;
    let (val_x, val_y) = data.batch(500, 999_999)?;

    // 1. a trained first-order model
    let spec = quadra::models::get("cnn", None, 10)?;
    let cnn = Model::build(
        &spec,
        BuildOptions {
            seed: 1,
            ..Default::default()
        },
    )?;
    let (cnn, loss) = train(cnn, &data, 80, 0, 0.05, "cnn")?;
    let acc0 = convert::accuracy(&cnn, &val_x, &val_y)?;
    println!("== 1. first-order cnn: {} parameters, trained 80 steps, train loss {loss:.4}, val acc {:.1}%", cnn.num_params(), 100.0 * acc0);

    {
        // a control for step 3: the first-order model fine-tuned the same way
        let c2 = convert::copy_model(&cnn)?;
        let (c2, _) = train(c2, &data, 20, 10_000, 0.02, "control")?;
        println!(
            "   control: the first-order cnn fine-tuned like the QDNN in step 3: val acc {:.1}%",
            100.0 * convert::accuracy(&c2, &val_x, &val_y)?
        );
    }
    // 2. convert the convs, keeping the function
    let mut opts = ConvertOptions::new(neuron);
    opts.seed = 7;
    // the convs, as the zoo's QDNNs (a classifier without a following BatchNorm is exact
    // in eval mode only: quadralib-bn's BN_c normalises its logits in train mode)
    opts.select = vec![convert::Selector::Pattern("conv*".into())];
    let (mut q, report) = convert_model(&cnn, &opts)?;
    let (diff, scale) = convert::max_output_diff(&cnn, &q, &val_x)?;
    let acc1 = convert::accuracy(&q, &val_x, &val_y)?;
    println!(
        "== 2. converted to {neuron}: layers {:?}; params {} → {}, MACs {} → {}",
        report
            .layers
            .iter()
            .map(|l| l.path.as_str())
            .collect::<Vec<_>>(),
        report.params_before,
        report.params_after,
        report.macs_before,
        report.macs_after
    );
    println!(
        "   eval outputs: max |converted − original| = {diff:.3e} (max |logit| {scale:.2}); val acc {:.1}% (original {:.1}%)",
        100.0 * acc1,
        100.0 * acc0
    );
    if diff > 1e-4 * (1.0 + scale) {
        bail!("the converted model does not reproduce the original (max diff {diff})");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    print!("{}", cost(&q.spec)?.table());

    // calibration: BN_a, BN_b statistics from training inputs (the output does not change)
    let (cx, _) = data.batch(1024, 50_000)?;
    let cal = convert::calibrate(&mut q, &report.layers, &cx, 256)?;
    let (diff, _) = convert::max_output_diff(&cnn, &q, &val_x)?;
    println!(
        "   calibrated {} BatchNorms on {} training samples (largest σ_running/σ_data − 1 before: {:.2}); max |converted − original| = {diff:.3e}",
        cal.bns.len(),
        cal.samples,
        cal.bns.iter().fold(0.0f64, |m, b| m.max(b.max_std_ratio_error))
    );
    if diff > 1e-4 * (1.0 + scale) {
        bail!("calibration changed the converted model's outputs (max diff {diff})");
    }

    // 3. fine-tune the QDNN
    let (q, loss) = train(q, &data, 20, 10_000, 0.02, "qdnn")?;
    let acc2 = convert::accuracy(&q, &val_x, &val_y)?;
    println!(
        "== 3. fine-tuned 20 steps: train loss {loss:.4}, val acc {:.1}%",
        100.0 * acc2
    );

    // 4. layer importance
    let imp = layer_importance(&q, &val_x, &val_y)?;
    println!("== 4. layer importance");
    print!("{}", imp.table());
    if json {
        println!("{}", serde_json::to_string_pretty(&imp)?);
    }

    // 5. depth reduction to 70% of the QDNN's MACs
    let budget = Budget::Macs(imp.total_macs * 7 / 10);
    let red = reduce(&q.spec, &state_dict_of(&q), &imp, budget)?;
    let reduced =
        convert::model_from_state_dict(&red.spec, &red.state_dict, quadra::DType::F32, 0)?;
    let acc3 = convert::accuracy(&reduced, &val_x, &val_y)?;
    println!("== 5. reduction");
    print!("{}", red.report.table());
    println!(
        "   reduced model: {} parameters (predicted {}), val acc {:.1}% (QDNN {:.1}%)",
        reduced.num_params(),
        red.report.params_after,
        100.0 * acc3,
        100.0 * acc2
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&red.report)?);
    }
    let e = reduce(&q.spec, &state_dict_of(&q), &imp, Budget::Params(1000)).unwrap_err();
    println!("   an impossible budget: {e}");
    Ok(())
}

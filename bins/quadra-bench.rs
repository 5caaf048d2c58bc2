//! Training-step benchmark: images/s and memory kept for backward of a zoo model, in each
//! back-propagation mode, measured the way ../shared/bench/torch_ref.py measures PyTorch
//! (same model, batch, SGD settings, thread count), printed as one JSON line per mode.
//! `--mode infer` times eval-mode forward passes instead, as `torch_ref.py infer` does:
//! images/s at `--batch` and the batch-1 latency (median and p90), one JSON line.
//!
//! ```text
//!     quadra-bench --model qresnet14 --batch 64 --steps 5 --threads 2 --backprop both
//!     quadra-bench --mode infer --model resnet32 --batch 64 --threads 2
//!     quadra-bench --device cuda --model qresnet14 --batch 256   (the CUDA backend; `emu`
//!                                       runs the same code on the kernel emulator)
//!     quadra-bench --device emu --model qresnet10 --batch 2 --steps 1 --launches
//!                                       (+ kernel launches per layer of one step, on stderr)
//!     LD_LIBRARY_PATH=target/cuda-standin quadra-bench --device cuda --batch 32 --steps 1
//!                                       (on the CUDA driver stand-in: "driver_per_step"
//!                                       counts the last step's launches, copies, waits)
//! ```

use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use quadra::device::standin;
use quadra::model::Model;
use quadra::nn::spec::BuildOptions;
use quadra::nn::BackpropMode;
use quadra::ops::counters;
use quadra::optim::Sgd;
use quadra::{Category, DType, Device, ModelSpec, Tensor};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Modes {
    Stored,
    Recompute,
    Both,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// Full training steps: forward, loss, backward, SGD.
    Train,
    /// Eval-mode forward passes: images/s at --batch, then the batch-1 latency.
    Infer,
}

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Time training steps (forward, loss, backward, SGD) or eval-mode inference of a zoo model"
)]
struct Args {
    /// What to time: training steps (one JSON line per back-propagation mode) or
    /// inference (one JSON line: images/s at --batch, batch-1 latency median and p90).
    #[arg(long, value_enum, default_value_t = Mode::Train)]
    mode: Mode,
    /// Zoo model (see `quadra::models::MODELS`).
    #[arg(long, default_value = "qresnet14")]
    model: String,
    /// Images per step (per forward pass in --mode infer).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Timed steps (forward passes in --mode infer; the batch-1 latency takes at least 20).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Worker threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Back-propagation mode(s) timed in --mode train.
    #[arg(long, value_enum, default_value_t = Modes::Both)]
    backprop: Modes,
    /// cpu, cuda, cuda:N or emu (the CUDA backend's code on the kernel emulator: slow, for
    /// checking, not timing).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Also print the kernel launches (and GEMMs) of the last timed step per layer and
    /// phase, on stderr (GPU-path devices; the JSON gets "launches_per_step").
    #[arg(long)]
    launches: bool,
}

fn run(args: &Args, device: Device, mode: BackpropMode) -> Result<serde_json::Value> {
    let (spec, mut model, params) = build_model(args, Some(mode), device)?;
    let mut opt = Sgd::new(0.1, 0.9, 5e-4, false)?;
    let x = random_batch(&spec, args.batch, 1, device)?;
    let y: Vec<usize> = (0..args.batch)
        .map(|i| (i * 7 + 3) % spec.num_classes)
        .collect();

    // bytes kept for backward by one forward pass (each storage once; parameters apart)
    let tracker = device.tracker()?;
    let before = tracker.current(Category::SavedForBackward);
    let _ = model.net_forward_for_accounting(&x)?;
    let saved = tracker.current(Category::SavedForBackward) - before;
    model.net_clear();

    for _ in 0..args.warmup {
        model.train_step(&x, &y, &mut opt)?;
    }
    let rt = quadra::device::runtime(device).ok();
    if let Some(rt) = rt {
        rt.synchronize()?;
        rt.pool().reset_peak();
    }
    tracker.reset_peak();
    let t0 = Instant::now();
    // the driver stand-in's counters, when cuda:N is it, cover the last step only (looked
    // up once, outside the timed steps' loop bodies)
    let on_standin = standin::active();
    let mut loss = 0.0;
    for i in 0..args.steps {
        counters::reset_launch_counts();
        if on_standin && i + 1 == args.steps {
            standin::reset();
        }
        // the loss is read back every step, which waits for the step's kernels
        loss = model.train_step(&x, &y, &mut opt)?.loss;
    }
    let launches = counters::launch_counts();
    let driver = if on_standin {
        driver_counters()?
    } else {
        serde_json::Value::Null
    };
    if let Some(rt) = rt {
        rt.synchronize()?;
    }
    let dt = t0.elapsed().as_secs_f64();
    let snap = tracker.snapshot();
    let reserved = rt.map(|rt| rt.pool().stats().peak_reserved);
    let out = serde_json::json!({
        "engine": format!("quadra-{}", env!("CARGO_PKG_VERSION")),
        "model": args.model,
        "device": device.to_string(),
        "backprop": mode.to_string(),
        "batch": args.batch,
        "threads": rayon::current_num_threads(),
        "params": params,
        "images_per_s": (args.batch * args.steps) as f64 / dt,
        "step_ms": 1000.0 * dt / args.steps as f64,
        "loss": loss,
        "saved_for_backward_mib": saved as f64 / 1048576.0,
        "peak_tracked_mib": snap.peak_total as f64 / 1048576.0,
        // what the caching pool held from the device at its peak (GPU-path devices)
        "peak_reserved_mib": reserved.map(|b| b as f64 / 1048576.0),
        // kernel launches + GEMMs of the last step (0 on the CPU engine)
        "launches_per_step": counters::total(&launches),
        // what the CUDA driver stand-in saw in the last step (null on anything else)
        "driver_per_step": driver,
    });
    if args.launches {
        eprintln!(
            "launches of one {mode} step of {} on {device}, per layer:",
            args.model
        );
        eprint!("{}", counters::per_layer_table(&launches));
        eprintln!("  total {}", out["launches_per_step"]);
    }
    Ok(out)
}

/// The benchmarked zoo model (10 classes), built with seed 0 in f32 (in back-propagation
/// `mode` where given, else the spec's own) and moved to `device`, with its parameter count.
fn build_model(
    args: &Args,
    mode: Option<BackpropMode>,
    device: Device,
) -> Result<(ModelSpec, Model, usize)> {
    let mut spec = quadra::models::get(&args.model, None, 10)?;
    if let Some(mode) = mode {
        spec.backprop = mode;
    }
    let mut model = Model::build(
        &spec,
        BuildOptions {
            dtype: DType::F32,
            seed: 0,
        },
    )?;
    let params = model.num_params();
    model.to_device(device)?;
    Ok((spec, model, params))
}

/// A standard-normal input batch, (batch, *spec.input), tracked as data, on `device`.
fn random_batch(spec: &ModelSpec, batch: usize, seed: u64, device: Device) -> Result<Tensor> {
    let mut shape = vec![batch];
    shape.extend(&spec.input);
    let x = Tensor::randn(&shape, DType::F32, 1.0, seed)?;
    x.retag(Category::Data);
    Ok(x.to_device(device)?)
}

/// Eval-mode forward passes of a freshly built model on one random batch: throughput at
/// `--batch`, then the latency of single images (each pass waited for), as
/// `torch_ref.py infer` measures them.
fn run_infer(args: &Args, device: Device) -> Result<serde_json::Value> {
    let (spec, model, params) = build_model(args, None, device)?;
    let x = random_batch(&spec, args.batch, 1, device)?;
    let x1 = random_batch(&spec, 1, 2, device)?;
    let rt = quadra::device::runtime(device).ok();
    let sync = || -> Result<()> {
        if let Some(rt) = rt {
            rt.synchronize()?;
        }
        Ok(())
    };
    for _ in 0..args.warmup {
        model.predict_normalized(&x)?;
        model.predict_normalized(&x1)?;
    }
    sync()?;
    let t0 = Instant::now();
    let mut logits = None;
    for _ in 0..args.steps {
        logits = Some(model.predict_normalized(&x)?);
    }
    sync()?;
    let dt = t0.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    for _ in 0..args.steps.max(20) {
        let t1 = Instant::now();
        model.predict_normalized(&x1)?;
        sync()?;
        lat.push(t1.elapsed().as_secs_f64());
    }
    lat.sort_by(f64::total_cmp);
    let norm = match logits {
        Some(l) => l
            .to_device(Device::Cpu)?
            .to_f64_vec()
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt(),
        None => 0.0,
    };
    Ok(serde_json::json!({
        "engine": format!("quadra-{}", env!("CARGO_PKG_VERSION")),
        "model": args.model,
        "device": device.to_string(),
        "mode": "infer",
        "batch": args.batch,
        "threads": rayon::current_num_threads(),
        "params": params,
        "images_per_s": (args.batch * args.steps) as f64 / dt,
        "batch1_latency_ms_median": 1000.0 * lat[lat.len() / 2],
        "batch1_latency_ms_p90": 1000.0 * lat[lat.len() * 9 / 10],
        "logits_norm": norm,
    }))
}

/// The stand-in's counters of the driver calls since its last reset (launches, GEMMs,
/// copies and bytes each way, memsets, host waits, allocations), when cuda:N runs on the
/// CUDA stand-in (cuda/standin); `null` on a real driver, the emulator and the CPU.
fn driver_counters() -> Result<serde_json::Value> {
    let Some(t) = standin::trace()? else {
        return Ok(serde_json::Value::Null);
    };
    const KEYS: [&str; 13] = [
        "launches",
        "gemms",
        "htod_copies",
        "htod_bytes",
        "dtoh_copies",
        "dtoh_bytes",
        "dtod_copies",
        "dtod_bytes",
        "memsets",
        "host_waits",
        "syncs",
        "allocs",
        "frees",
    ];
    let mut out = serde_json::Map::new();
    for k in KEYS {
        out.insert(k.into(), standin::count(&t, k).into());
    }
    Ok(out.into())
}

fn main() -> Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.batch > 0 && args.steps > 0,
        "--batch and --steps must be positive"
    );
    if args.threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(args.threads)
            .build_global()
            .context("setting up the thread pool")?;
    }
    let device: Device = args.device.parse()?;
    if device.is_gpu() {
        // a missing driver, GPU or fatbin is reported here, before any work
        let rt = quadra::device::runtime(device)?;
        eprintln!("quadra-bench on {}", rt.describe());
    }
    let modes: &[BackpropMode] = match args.backprop {
        Modes::Stored => &[BackpropMode::Stored],
        Modes::Recompute => &[BackpropMode::Recompute],
        Modes::Both => &[BackpropMode::Stored, BackpropMode::Recompute],
    };
    if let Mode::Infer = args.mode {
        println!("{}", run_infer(&args, device)?);
        return Ok(());
    }
    for &m in modes {
        println!("{}", run(&args, device, m)?);
    }
    Ok(())
}

//! quadra-train: train, evaluate, predict with, inspect and convert QDNN checkpoints.
//!
//!     quadra-train train --model qcnn --dataset fashion-mnist --epochs 2 --output runs/a
//!     quadra-train train --config configs/qresnet14-cifar10.toml --data-dir DIR --output runs/b
//!     quadra-train train --resume runs/a --epochs 6 --output runs/a
//!     quadra-train eval --checkpoint runs/a/best.safetensors
//!     quadra-train predict --checkpoint CKPT shirt.png t10k-images-idx3-ubyte.gz --top-k 3
//!     quadra-train serve --checkpoint CKPT --addr 127.0.0.1:8080 --token-file token.txt
//!     quadra-train import --model qresnet14 weights.safetensors -o ck.safetensors
//!     quadra-train export --checkpoint CKPT -o weights.safetensors
//!     quadra-train export --to onnx --checkpoint CKPT -o model.onnx
//!     quadra-train info --checkpoint CKPT
//!     quadra-train memory --model qcnn --batch 4 --steps 1 --budget-mib 2.5 --output mem
//!     quadra-train analyze --model qcnn --batch 8 --output an
//!     quadra-train cost --model qresnet14 --json
//!     quadra-train convert --model cnn --neuron quadralib-bn -o x.json
//!     quadra-train convert --checkpoint CKPT --neuron quadralib-bn --select "conv*" -o q.safetensors
//!     quadra-train importance --checkpoint q.safetensors --samples 256
//!
//! Every subcommand takes `--json` for a machine-readable summary on stdout. Errors go to
//! stderr with the file and tensor they concern, and the exit status is non-zero; no output
//! file is written (all writes are atomic).
//!
//! `train` resolves a `quadra::train::TrainConfig` (serde, unknown fields rejected; stored in
//! every checkpoint) from: the flags, over the `--config` TOML file, over the resumed checkpoint's
//! config, over the defaults. Data come from `quadra::data` through a `Loader` (shuffle and
//! augmentation keyed by (seed, epoch)), so a run resumes from any checkpoint — epoch or
//! mid-epoch (`--save-every`) — with the optimizer state, the lr schedule position and the
//! epoch's running sums restored, and continues bit-identically on the CPU.

mod analyze;
mod common;
mod convert;
mod cost;
mod eval;
mod export;
mod import;
mod importance;
mod info;
mod memory;
mod predict;
mod reduce;
mod serve;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Train, evaluate, serve-predict, inspect and convert QDNN checkpoints"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Train a zoo model on a dataset (flags and/or a TOML config), with a checkpoint per
    /// epoch (and every --save-every steps), the best one, metrics and a chart; resumes
    /// exactly.
    Train(Box<train::TrainArgs>),
    /// Loss and accuracy of a checkpoint (on --input or the synthetic test set).
    Eval(eval::EvalArgs),
    /// The top-k classes of raw inputs (images, IDX, CIFAR or safetensors files), printed;
    /// the logits optionally written (--output).
    Predict(predict::PredictArgs),
    /// Serve a checkpoint's predictions over HTTP (POST /predict, GET /health, GET /metrics)
    /// with dynamic batching, until SIGINT/SIGTERM.
    Serve(serve::ServeArgs),
    /// Convert a PyTorch state dict (safetensors) into a checkpoint.
    Import(import::ImportArgs),
    /// Write a checkpoint's model as a PyTorch state dict (safetensors, --to torch) or as an
    /// ONNX graph (--to onnx: eval mode, raw inputs).
    Export(export::ExportArgs),
    /// Describe a checkpoint: model, parameters, training position.
    Info(info::InfoArgs),
    /// Memory profile of training steps (stored vs recompute back-propagation), budget
    /// plans verified by measurement, charts and an HTML report.
    Memory(memory::MemoryArgs),
    /// Distributions of a model's layer outputs, weights and gradients, with a histogram grid.
    Analyze(analyze::AnalyzeArgs),
    /// Parameters and multiply-accumulates of a model, per layer.
    Cost(cost::CostArgs),
    /// Convert a model's layers to quadratic neurons: a spec (JSON) or, with --checkpoint,
    /// a checkpoint with function-preserving weights.
    Convert(convert::ConvertArgs),
    /// Rank a checkpoint's quadratic layers by importance on the test split.
    Importance(importance::ImportanceArgs),
    /// Reduce a QDNN checkpoint to a parameter or MAC budget along its importance ranking:
    /// the reduced spec (JSON, for `train --model`) and optionally its weights.
    Reduce(reduce::ReduceArgs),
}

/// Restores the default action of SIGPIPE (terminate quietly), as C tools have it: Rust
/// programs start with it ignored, so `quadra-train info CK | head -2` would make every
/// later `println!` fail with EPIPE and panic.
#[cfg(unix)]
fn default_sigpipe() {
    // SAFETY: called first in main, before any thread exists; SIG_DFL is a valid action
    // for SIGPIPE and no Rust code depends on it being ignored (writes to a closed pipe
    // end the process, as `head` expects).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn default_sigpipe() {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // not for the server: a client closing its socket must never end the process (its
    // sockets' writes report EPIPE as an error to the connection instead)
    if !matches!(cli.cmd, Cmd::Serve(_)) {
        default_sigpipe();
    }
    let r = match &cli.cmd {
        Cmd::Train(a) => train::run(a),
        Cmd::Eval(a) => eval::run(a),
        Cmd::Predict(a) => predict::run(a),
        Cmd::Serve(a) => serve::run(a),
        Cmd::Import(a) => import::run(a),
        Cmd::Export(a) => export::run(a),
        Cmd::Info(a) => info::run(a),
        Cmd::Memory(a) => memory::run(a),
        Cmd::Analyze(a) => analyze::run(a),
        Cmd::Cost(a) => cost::run(a),
        Cmd::Convert(a) => convert::run(a),
        Cmd::Importance(a) => importance::run(a),
        Cmd::Reduce(a) => reduce::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// The CLI convention, checked on clap's own description of every subcommand: every
    /// visible flag and argument has help text; a file or folder written is `-o/--output`;
    /// a checkpoint read is `--checkpoint`.
    #[test]
    fn every_subcommand_follows_the_convention() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        let mut missing = Vec::new();
        for sub in cli.get_subcommands() {
            let name = sub.get_name();
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                let id = arg.get_id().as_str();
                if id != "help" && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{name} {id}"));
                }
                let long = arg.get_long();
                assert_ne!(long, Some("out"), "{name}: `--out` is spelled `--output`");
                if long == Some("output") {
                    assert_eq!(arg.get_short(), Some('o'), "{name} --output has -o");
                }
            }
            let reads_checkpoint = sub
                .get_arguments()
                .any(|a| a.get_value_names().is_some_and(|v| v[0] == "CKPT"));
            if reads_checkpoint {
                assert!(
                    sub.get_arguments()
                        .any(|a| a.get_long() == Some("checkpoint") && !a.is_hide_set()),
                    "{name} reads a checkpoint: --checkpoint"
                );
            }
        }
        assert!(missing.is_empty(), "flags without help: {missing:?}");
    }
}

//! Exact resume: a `quadra-train train` run killed (SIGKILL) after a mid-epoch checkpoint
//! and resumed from its last checkpoint logs the same per-step and per-epoch losses, bit for
//! bit, and ends with the same weights as the uninterrupted run (CPU).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use quadra::checkpoint::Checkpoint;
use serde_json::Value;

use crate::support::{bin, tempdir};

fn lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn run_ok(args: &[&str]) {
    let o = bin().args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn has_step_checkpoint(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with("step-"))
    })
}

/// (step, loss bits) of steps.jsonl.
fn step_losses(dir: &Path) -> Vec<(u64, String)> {
    lines(&dir.join("steps.jsonl"))
        .iter()
        .map(|v| {
            (
                v["step"].as_u64().unwrap(),
                v["loss_bits"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Per-epoch metrics that must not depend on timing, as exact f64 bit patterns.
fn epoch_metrics(dir: &Path) -> Vec<Vec<u64>> {
    lines(&dir.join("metrics.jsonl"))
        .iter()
        .map(|v| {
            let mut r = vec![v["epoch"].as_u64().unwrap(), v["step"].as_u64().unwrap()];
            for k in ["train_loss", "train_acc", "test_loss", "test_acc", "lr"] {
                r.push(v[k].as_f64().unwrap().to_bits());
            }
            r
        })
        .collect()
}

fn weights(p: &Path) -> Vec<(String, Vec<u64>)> {
    let ck = Checkpoint::load(p).unwrap();
    ck.state
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.to_f64_vec().iter().map(|x| x.to_bits()).collect(),
            )
        })
        .collect()
}

fn kill_and_resume(tag: &str, extra: &[&str]) {
    let dir = tempdir(&format!("resume-{tag}"));
    let (full, killed) = (dir.join("full"), dir.join("killed"));
    let mut common = vec![
        "train",
        "--model",
        "qcnn",
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--train-samples",
        "400",
        "--test-samples",
        "64",
        "--seed",
        "7",
        "--save-every",
        "4",
    ];
    common.extend(extra);

    // uninterrupted
    let mut args = common.clone();
    args.extend(["--out", full.to_str().unwrap()]);
    run_ok(&args);

    // killed once a mid-epoch checkpoint exists
    let mut args = common.clone();
    args.extend(["--out", killed.to_str().unwrap()]);
    let mut child = bin()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !has_step_checkpoint(&killed) {
        assert!(Instant::now() < deadline, "no mid-epoch checkpoint in time");
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().ok(); // SIGKILL
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the killed run did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    let total = lines(&full.join("metrics.jsonl")).last().unwrap()["step"]
        .as_u64()
        .unwrap();
    assert!(
        !killed.join("epoch-0003.safetensors").exists(),
        "the run was not interrupted (of {total} steps)"
    );

    // resume from the folder (its furthest checkpoint; the config comes from it)
    let o = bin()
        .args([
            "train",
            "--resume",
            killed.to_str().unwrap(),
            "--out",
            killed.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let done: Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    assert!(done["start_step"].as_u64().unwrap() < total, "{done}");
    assert_eq!(step_losses(&full), step_losses(&killed), "per-step losses");
    assert_eq!(
        epoch_metrics(&full),
        epoch_metrics(&killed),
        "per-epoch metrics"
    );
    for f in ["epoch-0003.safetensors", "best.safetensors"] {
        assert_eq!(
            weights(&full.join(f)),
            weights(&killed.join(f)),
            "weights of {f}"
        );
    }
    let (a, b) = (
        Checkpoint::load(full.join("epoch-0003.safetensors")).unwrap(),
        Checkpoint::load(killed.join("epoch-0003.safetensors")).unwrap(),
    );
    let (oa, ob) = (a.optim.unwrap(), b.optim.unwrap());
    assert_eq!(oa.kind, ob.kind);
    assert_eq!(oa.tensors.len(), ob.tensors.len());
    for ((na, ta), (nb, tb)) in oa.tensors.iter().zip(&ob.tensors) {
        assert_eq!(na, nb);
        assert_eq!(ta.to_f64_vec(), tb.to_f64_vec(), "optimizer state {na}");
    }
    assert!(killed.join("chart.svg").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn killed_sgd_run_resumes_bit_identically() {
    kill_and_resume("sgd", &["--nesterov", "--clip-grad-norm", "5"]);
}

#[test]
fn killed_adamw_run_resumes_bit_identically() {
    kill_and_resume(
        "adamw",
        &[
            "--optimizer",
            "adamw",
            "--warmup-epochs",
            "1",
            "--schedule",
            "step",
            "--step-size",
            "1",
        ],
    );
}

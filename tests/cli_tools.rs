//! End-to-end tests of the `quadra-train` tool subcommands: memory, analyze, cost, convert
//! and importance, on tiny inputs (each runs in well under a second in release).

use std::path::PathBuf;
use std::process::{Command, Output};

use quadra::checkpoint::Checkpoint;
use quadra::nn::spec::ModelSpec;
use serde_json::Value;

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("quadra-cli-tools-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quadra-train"))
        .args(args)
        .output()
        .unwrap()
}

fn ok_json(args: &[&str]) -> Value {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8(o.stdout).unwrap();
    serde_json::from_str(out.lines().last().expect("no output")).unwrap()
}

#[test]
fn memory_writes_charts_report_and_plans() {
    let d = tempdir("memory");
    let out = d.join("mem");
    let v = ok_json(&[
        "memory",
        "--model",
        "qcnn",
        "--batch",
        "4",
        "--steps",
        "1",
        "--threads",
        "1",
        "--budget-mib",
        "2.5",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    let peaks = &v["peak_bytes"];
    assert!(peaks["stored"].as_u64().unwrap() > peaks["recompute"].as_u64().unwrap());
    assert!(peaks["planned"].as_u64().is_some());
    assert_eq!(v["plans"].as_array().unwrap().len(), 1);
    for f in [
        "timeline.png",
        "timeline.svg",
        "layers.svg",
        "report.html",
        "report.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // a budget below the recompute peak is an error naming the budget
    let o = run(&[
        "memory",
        "--model",
        "qcnn",
        "--batch",
        "4",
        "--steps",
        "1",
        "--memory-budget",
        "1000",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("budget 1000 bytes"));
}

#[test]
fn analyze_writes_histograms() {
    let d = tempdir("analyze");
    let v = ok_json(&[
        "analyze",
        "--model",
        "qcnn",
        "--batch",
        "4",
        "--out",
        d.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(v["model"], "qcnn");
    assert!(v["entries"].as_u64().unwrap() > 0);
    assert!(d.join("activations.svg").is_file());
    assert!(d.join("analysis.json").is_file());
}

#[test]
fn cost_of_qresnet14() {
    let v = ok_json(&["cost", "--model", "qresnet14", "--json"]);
    assert_eq!(v["total_params"], 520282);
    let o = run(&["cost", "--model", "nosuchnet"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nosuchnet"));
    let o = run(&["cost", "--spec", "/nonexistent/s.json"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/s.json"));
}

#[test]
fn convert_spec_and_bad_selection() {
    let d = tempdir("convert");
    let x = d.join("x.json");
    let v = ok_json(&[
        "convert",
        "--model",
        "cnn",
        "--neuron",
        "quadralib-bn",
        "-o",
        x.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(v["layers"].as_array().unwrap().len(), 3);
    let spec = ModelSpec::from_json(&std::fs::read_to_string(&x).unwrap()).unwrap();
    assert_eq!(spec.name, "cnn");
    // the written spec is a valid --spec input, with the converted cost
    let c = ok_json(&["cost", "--spec", x.to_str().unwrap(), "--json"]);
    assert_eq!(c["total_params"], v["params_after"]);
    // and `train` builds and trains it (the spec file given as --model)
    let run_dir = d.join("run");
    let o = run(&[
        "train",
        "--model",
        x.to_str().unwrap(),
        "--epochs",
        "1",
        "--train-samples",
        "64",
        "--test-samples",
        "32",
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "train --model x.json: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let ck = Checkpoint::load(run_dir.join("last.safetensors")).unwrap();
    assert_eq!(ck.spec, spec);
    // a spec whose class count does not match the dataset is refused, naming the file
    let mut wrong = spec.clone();
    wrong.layers.pop();
    let w = d.join("wrong.json");
    std::fs::write(&w, wrong.to_json()).unwrap();
    let o = run(&[
        "train",
        "--model",
        w.to_str().unwrap(),
        "--epochs",
        "1",
        "--out",
        d.join("r2").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("wrong.json"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let y = d.join("y.json");
    let o = run(&[
        "convert",
        "--model",
        "cnn",
        "--neuron",
        "quadralib-bn",
        "--select",
        "nosuch",
        "-o",
        y.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nosuch"));
    assert!(!y.exists());
}

#[test]
fn convert_checkpoint_then_importance() {
    let d = tempdir("importance");
    let run_dir = d.join("run");
    let o = run(&[
        "train",
        "--model",
        "cnn",
        "--epochs",
        "1",
        "--train-samples",
        "64",
        "--test-samples",
        "32",
        "--out",
        run_dir.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let q = d.join("q.safetensors");
    let v = ok_json(&[
        "convert",
        "--checkpoint",
        run_dir.join("last.safetensors").to_str().unwrap(),
        "--neuron",
        "quadralib-bn",
        "--select",
        "conv*",
        "-o",
        q.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(v["layers"], serde_json::json!(["conv1", "conv2"]));
    let (_, mut model) = Checkpoint::load_model(&q).unwrap();
    assert_eq!(
        model.num_params() as u64,
        v["params_after"].as_u64().unwrap()
    );

    let r = ok_json(&[
        "importance",
        "--checkpoint",
        q.to_str().unwrap(),
        "--samples",
        "32",
        "--json",
    ]);
    assert_eq!(r["samples"], 32);
    assert_eq!(r["layers"].as_array().unwrap().len(), 2);
}

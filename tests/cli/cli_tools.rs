//! End-to-end tests of the `quadra-train` tool subcommands: memory, analyze, cost, convert
//! and importance, on tiny inputs (each runs in well under a second in release).

use quadra::checkpoint::Checkpoint;
use quadra::nn::spec::ModelSpec;

use crate::support::{argv, bin, ok_json_last, run, s, tempdir};

/// `CUDA_VISIBLE_DEVICES=` (empty) hides every GPU from the driver (and from the stand-in of
/// cuda/standin/), so `--device auto` is the CPU: the emu pass of scripts/gpu-tests.sh's
/// run.sh relies on it to run, on a GPU machine, as CI runs.
#[test]
fn hidden_gpu_makes_auto_the_cpu() {
    let d = tempdir("cli-tools-hidden-gpu");
    let out = d.join("mem");
    let o = bin()
        .env("CUDA_VISIBLE_DEVICES", "")
        .args(argv(
            "memory --model qcnn --batch 2 --steps 1 --threads 1 --device auto --out {}",
            &[s(&out)],
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "memory --device auto failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout
            .lines()
            .next()
            .unwrap_or("")
            .ends_with("available on cpu"),
        "with the GPU hidden, auto should be the CPU: {stdout}"
    );
}

#[test]
fn memory_writes_charts_report_and_plans() {
    let d = tempdir("cli-tools-memory");
    let out = d.join("mem");
    let v = ok_json_last(&argv(
        "memory --model qcnn --batch 4 --steps 1 --threads 1
            --budget-mib 2.5 --out {} --json",
        &[out.to_str().unwrap()],
    ));
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
    let o = run(&argv(
        "memory --model qcnn --batch 4 --steps 1 --memory-budget 1000
            --out {}",
        &[out.to_str().unwrap()],
    ));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("budget 1000 bytes"));
}

#[test]
fn analyze_writes_histograms() {
    let d = tempdir("cli-tools-analyze");
    let v = ok_json_last(&argv(
        "analyze --model qcnn --batch 4 --out {} --json",
        &[d.to_str().unwrap()],
    ));
    assert_eq!(v["model"], "qcnn");
    assert!(v["entries"].as_u64().unwrap() > 0);
    assert!(d.join("activations.svg").is_file());
    assert!(d.join("analysis.json").is_file());

    // feature maps of a CNN beside its quadratic twin; a layer without a map is named
    let m = d.join("maps");
    let v = ok_json_last(&argv(
        "analyze --model cnn --batch 2 --feature-maps relu1 --beside qcnn -o {} --json",
        &[s(&m)],
    ));
    assert!(v["files"].to_string().contains("maps.png"), "{v}");
    assert!(std::fs::metadata(m.join("maps.png")).unwrap().len() > 2000);
    let svg = std::fs::read_to_string(m.join("maps.svg")).unwrap();
    assert!(
        svg.contains("qcnn: relu1") && svg.contains("cnn: relu1"),
        "both maps"
    );
    crate::support::fails(
        &argv("analyze --model cnn --feature-maps fc -o {}", &[s(&m)]),
        &["--feature-maps", "`fc`", "relu1"],
    );
}

/// `analyze --checkpoint`: the trained weights on samples of the checkpoint's dataset — its
/// weight distributions are the checkpoint's, not a fresh model's.
#[test]
fn analyze_a_checkpoint_on_its_dataset() {
    let d = tempdir("cli-tools-analyze-ck");
    let run_dir = d.join("run");
    ok_json_last(&argv(
        "train --model cnn --epochs 1 --train-samples 64 --test-samples 32 --device cpu -o {} --json",
        &[s(&run_dir)],
    ));
    let ck = run_dir.join("last.safetensors");
    let out = d.join("an");
    let v = ok_json_last(&argv(
        "analyze --checkpoint {} --batch 8 --device cpu -o {} --json",
        &[s(&ck), s(&out)],
    ));
    assert_eq!(v["model"], "cnn");
    assert_eq!(v["batch"], 8);
    assert!(v["data"].as_str().unwrap().contains("synthetic"), "{v}");
    assert!(out.join("activations.png").is_file());
    // a weight's statistics in the report are those of the checkpoint's tensor
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("analysis.json")).unwrap()).unwrap();
    let ck = Checkpoint::load(&ck).unwrap();
    let (name, w) = ck
        .state
        .iter()
        .find(|(k, _)| k.ends_with("weight"))
        .unwrap();
    let v = w.to_f64_vec();
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let entries = report["entries"].as_array().unwrap();
    let e = entries
        .iter()
        .find(|e| e["kind"] == "weight" && e["name"] == name.as_str())
        .unwrap_or_else(|| panic!("no weight entry `{name}`"));
    let m = e["stats"]["mean"].as_f64().unwrap();
    assert!(
        (m - mean).abs() <= 1e-6,
        "`{name}`: mean {m} in the report, {mean} in the checkpoint"
    );
}

#[test]
fn cost_of_qresnet14() {
    let v = ok_json_last(&["cost", "--model", "qresnet14", "--json"]);
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
    let d = tempdir("cli-tools-convert");
    let x = d.join("x.json");
    let v = ok_json_last(&argv(
        "convert --model cnn --neuron quadralib-bn -o {} --json",
        &[x.to_str().unwrap()],
    ));
    assert_eq!(v["layers"].as_array().unwrap().len(), 3);
    let spec = ModelSpec::from_json(&std::fs::read_to_string(&x).unwrap()).unwrap();
    assert_eq!(spec.name, "cnn");
    // the written spec is a valid --spec input, with the converted cost
    let c = ok_json_last(&["cost", "--spec", x.to_str().unwrap(), "--json"]);
    assert_eq!(c["total_params"], v["params_after"]);
    // and `train` builds and trains it (the spec file given as --model)
    let run_dir = d.join("run");
    let o = run(&argv(
        "train --model {} --epochs 1 --train-samples 64
            --test-samples 32 --out {}",
        &[x.to_str().unwrap(), run_dir.to_str().unwrap()],
    ));
    assert!(
        o.status.success(),
        "train --model x.json: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut ck = Checkpoint::load(run_dir.join("last.safetensors")).unwrap();
    // training added what inputs get: nothing for the synthetic set (no normalization, no
    // class names); the rest is the spec file's
    assert_eq!(ck.spec.preprocess.take(), Some(Default::default()));
    assert_eq!(ck.spec, spec);
    // a spec whose class count does not match the dataset is refused, naming the file
    let mut wrong = spec.clone();
    wrong.layers.pop();
    let w = d.join("wrong.json");
    std::fs::write(&w, wrong.to_json()).unwrap();
    let o = run(&argv(
        "train --model {} --epochs 1 --out {}",
        &[w.to_str().unwrap(), d.join("r2").to_str().unwrap()],
    ));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("wrong.json"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let y = d.join("y.json");
    let o = run(&argv(
        "convert --model cnn --neuron quadralib-bn --select nosuch
            -o {}",
        &[y.to_str().unwrap()],
    ));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nosuch"));
    assert!(!y.exists());
}

#[test]
fn convert_checkpoint_then_importance() {
    let d = tempdir("cli-tools-importance");
    let run_dir = d.join("run");
    let o = run(&argv(
        "train --model cnn --epochs 1 --train-samples 64
            --test-samples 32 --out {} --json",
        &[run_dir.to_str().unwrap()],
    ));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let q = d.join("q.safetensors");
    let v = ok_json_last(&argv(
        "convert --checkpoint {} --neuron quadralib-bn --select conv*
            -o {} --json",
        &[
            run_dir.join("last.safetensors").to_str().unwrap(),
            q.to_str().unwrap(),
        ],
    ));
    assert_eq!(v["layers"], serde_json::json!(["conv1", "conv2"]));
    let (_, model) = Checkpoint::load_model(&q).unwrap();
    assert_eq!(
        model.num_params() as u64,
        v["params_after"].as_u64().unwrap()
    );

    let r = ok_json_last(&argv(
        "importance --checkpoint {} --samples 32 --json",
        &[q.to_str().unwrap()],
    ));
    assert_eq!(r["samples"], 32);
    assert_eq!(r["layers"].as_array().unwrap().len(), 2);
}

/// The auto-builder flow through the tool: train a first-order cnn, convert its checkpoint
/// with BatchNorm calibration and a check against the original, evaluate the converted
/// checkpoint, fine-tune it (`train --init`), rank, reduce to a budget (`reduce`) and train
/// the reduced spec; and the errors on the way.
#[test]
fn convert_calibrate_check_eval_init_reduce() {
    let d = tempdir("cli-tools-flow");
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    let o = run(&argv(
        "train --model cnn --epochs 1 --train-samples 128
            --test-samples 64 --out {} --json",
        &[&p("run")],
    ));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ck = p("run/last.safetensors");
    let v = ok_json_last(&argv(
        "convert --checkpoint {} --neuron quadralib-bn --select conv*
            --calibrate 64 --check 64 -o {} --json",
        &[&ck, &p("q.safetensors")],
    ));
    assert_eq!(v["calibration"]["samples"], 64);
    assert_eq!(v["calibration"]["bns"].as_array().unwrap().len(), 4);
    assert_eq!(v["check"]["samples"], 64);
    let diff = v["check"]["max_abs_diff"].as_f64().unwrap();
    assert!(diff < 1e-4, "{diff}");
    assert_eq!(
        v["check"]["accuracy_original"],
        v["check"]["accuracy_converted"]
    );

    // eval: the converted checkpoint has no training config → --dataset
    let o = run(&["eval", "--checkpoint", &p("q.safetensors")]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("--dataset"), "{e}");
    let orig = ok_json_last(&["eval", "--checkpoint", &ck, "--json"]);
    let conv = ok_json_last(&argv(
        "eval --checkpoint {} --dataset synthetic --json",
        &[&p("q.safetensors")],
    ));
    assert_eq!(conv["samples"], 1000, "the default synthetic test set");
    assert!(orig["samples"] == 64);

    // fine-tuning from the converted weights; --init and --model exclude each other
    let o = run(&argv(
        "train --init {} --model cnn --out {}",
        &[&p("q.safetensors"), &p("x")],
    ));
    assert!(!o.status.success());
    let o = run(&argv(
        "train --init {} --epochs 1 --train-samples 64
            --test-samples 32 --out {} --json",
        &[&p("q.safetensors"), &p("ft")],
    ));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, ft) = Checkpoint::load_model(d.join("ft/last.safetensors")).unwrap();
    let (_, q) = Checkpoint::load_model(d.join("q.safetensors")).unwrap();
    assert_eq!(ft.spec, q.spec);
    assert_eq!(ft.num_params(), q.num_params());
    // the run resumes (its model is the checkpoint's, not a zoo model)
    let o = run(&argv(
        "train --resume {} --epochs 2 --out {}",
        &[&p("ft/last.safetensors"), &p("ft")],
    ));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // reduce: ranked here, or from `importance --json`
    let ftck = p("ft/last.safetensors");
    let imp = run(&argv(
        "importance --checkpoint {} --samples 32 --json",
        &[&ftck],
    ));
    assert!(imp.status.success());
    std::fs::write(d.join("imp.json"), &imp.stdout).unwrap();
    let r = ok_json_last(&argv(
        "reduce --checkpoint {} --importance {} --budget-macs 50%
            -o {} --save-checkpoint {} --json",
        &[
            &ftck,
            &p("imp.json"),
            &p("reduced.json"),
            &p("reduced.safetensors"),
        ],
    ));
    let (before, after) = (
        r["macs_before"].as_u64().unwrap(),
        r["macs_after"].as_u64().unwrap(),
    );
    assert!(after <= before / 2, "{r}");
    let spec =
        ModelSpec::from_json(&std::fs::read_to_string(d.join("reduced.json")).unwrap()).unwrap();
    let cost = ok_json_last(&["cost", "--spec", &p("reduced.json"), "--json"]);
    assert_eq!(cost["total_macs"].as_u64().unwrap(), after);
    let (_, red) = Checkpoint::load_model(d.join("reduced.safetensors")).unwrap();
    assert_eq!(red.spec, spec);
    let r2 = ok_json_last(&argv(
        "reduce --checkpoint {} --samples 32 --budget-params 25000
            -o {} --json",
        &[&ftck, &p("reduced2.json")],
    ));
    assert!(r2["params_after"].as_u64().unwrap() <= 25000);
    let o = run(&argv(
        "train --model {} --epochs 1 --train-samples 64
            --test-samples 32 --out {}",
        &[&p("reduced.json"), &p("rt")],
    ));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // errors
    let (imp_path, out) = (p("imp.json"), p("e.json"));
    for (args, want) in [
        (vec!["--budget-params", "100"], "cannot be reduced"),
        (vec!["--budget-params", "abc"], "expected a count"),
        (vec!["--budget-macs", "0%"], "percentage must be in"),
    ] {
        let mut a = vec!["reduce", "--checkpoint", &ftck, "--importance", &imp_path];
        a.extend(args);
        a.extend(["-o", &out]);
        let o = run(&a);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.contains(want), "{a:?}: {e}");
    }
    let o = run(&argv(
        "reduce --checkpoint {} --importance {} --budget-params 100
            -o {}",
        &[&ck, &p("imp.json"), &p("e.json")],
    ));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("it ranks model"), "{e}");
    let o = run(&argv(
        "convert --model cnn --neuron quadralib-bn --calibrate 8
            -o {}",
        &[&p("s.json")],
    ));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("need --checkpoint"),
        "{e}"
    );
}

/// One CLI convention (bins/quadra-train/main.rs checks it on clap's description): files
/// and folders written are `-o/--output`, checkpoints read `--checkpoint`; the earlier
/// spellings (`--out`, a positional CKPT) still work, hidden from the help; `export` and
/// `import` default to torch; `memory` and `analyze` print without an output folder.
#[test]
fn one_convention_with_the_earlier_spellings_kept() {
    let d = tempdir("cli-convention");
    let run_dir = d.join("run");
    ok_json_last(&argv(
        "train --model mlp --epochs 1 --train-samples 32 --test-samples 16 --device cpu -o {} --json",
        &[s(&run_dir)],
    ));
    let ck = run_dir.join("last.safetensors");
    let by_flag = ok_json_last(&argv("info --checkpoint {} --json", &[s(&ck)]));
    let by_position = ok_json_last(&argv("info {} --json", &[s(&ck)]));
    assert_eq!(by_flag, by_position);
    let o = run(&argv("info --checkpoint {} {}", &[s(&ck), s(&ck)]));
    assert!(!o.status.success(), "both spellings at once are refused");
    let help = String::from_utf8(run(&["info", "--help"]).stdout).unwrap();
    assert!(help.contains("--checkpoint <CKPT>"), "{help}");

    let w = d.join("w.safetensors");
    let e = ok_json_last(&argv(
        "export --checkpoint {} -o {} --json",
        &[s(&ck), s(&w)],
    ));
    assert_eq!(e["output"], s(&w));
    let back = d.join("back.safetensors");
    ok_json_last(&argv(
        "import --model mlp {} -o {} --json",
        &[s(&w), s(&back)],
    ));
    assert!(back.exists());

    // memory and analyze without an output folder: the summary, no files
    let m = ok_json_last(&argv(
        "memory --model qcnn --batch 2 --steps 1 --threads 1 --device cpu --json",
        &[],
    ));
    assert_eq!(m["files"], serde_json::json!([]));
    assert!(m["peak_bytes"]["stored"].as_u64().unwrap() > 0, "{m}");
    let a = ok_json_last(&argv(
        "analyze --model qcnn --batch 2 --device cpu --json",
        &[],
    ));
    assert_eq!(a["files"], serde_json::json!([]));
    assert!(a["entries"].as_u64().unwrap() > 0);
}

//! `quadra-train train` options: TOML config files (keys, overrides, errors naming the file
//! and the key), datasets/optimizers/schedules, and bad inputs that must fail clearly
//! without writing or overwriting anything.

use std::collections::BTreeMap;
use std::path::Path;

use quadra::checkpoint::Checkpoint;

use crate::support::{argv, fails, ok_json, run, s, tempdir};

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

const SMALL: &[&str] = &[
    "--batch-size",
    "32",
    "--train-samples",
    "96",
    "--test-samples",
    "32",
];

#[test]
fn config_file_sets_and_flags_override() {
    let dir = tempdir("cfg-ok");
    let cfg = dir.join("run.toml");
    std::fs::write(
        &cfg,
        r#"
# QuadraLib-style keys
architecture = "mlp"
dataset = "synthetic"
augmentation = false
epochs = 1
batch_size = 32
optimizer = "adamw"
lr = 0.002
final_lr = 0.0001
weight_decay = 0.02
train_samples = 96
test_samples = 32
seed = 5
backprop = "recompute"
"#,
    )
    .unwrap();
    let out = dir.join("run");
    // the flag --epochs 2 overrides the file's epochs = 1
    let v = ok_json(&argv(
        "train --config {} --epochs 2 --out {} --json",
        &[s(&cfg), s(&out)],
    ));
    assert_eq!(v.len(), 3, "{v:?}");
    assert_eq!(v[1]["epoch"], 2);
    let ck = Checkpoint::load(out.join("epoch-0002.safetensors")).unwrap();
    let c = ck.config.unwrap();
    assert_eq!(c["model"], "mlp");
    assert_eq!(c["epochs"], 2);
    assert_eq!(c["optimizer"], "adamw");
    assert_eq!(c["lr"], 0.002);
    assert_eq!(c["final_lr"], 0.0001);
    assert_eq!(c["weight_decay"], 0.02);
    assert_eq!(c["augmentation"], "none");
    assert_eq!(c["seed"], 5);
    assert_eq!(c["backprop"], "recompute");
    assert_eq!(ck.optim.unwrap().kind, "adamw");
    // cosine per epoch: epoch 1 at lr, epoch 2 halfway to final_lr
    assert_eq!(v[0]["lr"], 0.002);
    assert!(
        (v[1]["lr"].as_f64().unwrap() - 0.00105).abs() < 1e-12,
        "{v:?}"
    );
    for f in [
        "metrics.jsonl",
        "steps.jsonl",
        "chart.svg",
        "chart.png",
        "best.safetensors",
        "last.safetensors",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    let svg = std::fs::read_to_string(out.join("chart.svg")).unwrap();
    for t in ["epoch", "loss", "accuracy", "train", "test"] {
        assert!(svg.contains(t), "chart lacks `{t}`");
    }
    assert_eq!(
        std::fs::read_to_string(out.join("steps.jsonl"))
            .unwrap()
            .lines()
            .count(),
        6
    );
    // every example config parses (their data may be missing here: only parse errors matter)
    let mut configs: Vec<_> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
    configs.sort();
    assert!(configs.len() >= 3, "{configs:?}");
    for p in configs {
        let f = p.display();
        let o = run(&argv(
            "train --config {} --dataset synthetic --epochs 1
                --train-samples 8 --test-samples 8 --batch-size 8 --out {}
                --force",
            &[s(&p), s(&dir.join("ex"))],
        ));
        assert!(
            o.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // a first-order model with the quadratic optimizer on gets the plain optimizer; SGD
    // step and constant schedules, nesterov, clipping, warm-up
    let var = dir.join("var");
    for extra in [
        &[
            "--model",
            "mlp",
            "--schedule",
            "step",
            "--step-size",
            "1",
            "--nesterov",
        ][..],
        &[
            "--model",
            "mlp",
            "--schedule",
            "constant",
            "--clip-grad-norm",
            "1",
            "--optimizer",
            "adam",
        ][..],
        &[
            "--model",
            "qcnn",
            "--warmup-epochs",
            "1",
            "--no-quadratic-optimizer",
        ][..],
    ] {
        let mut args = vec!["train", "--epochs", "2", "--json", "--force"];
        args.extend(SMALL);
        args.extend(["--out", s(&var)]);
        args.extend(extra);
        let v = ok_json(&args);
        assert!(
            v[1]["train_loss"].as_f64().unwrap().is_finite(),
            "{extra:?}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_options_fail_clearly_and_write_nothing() {
    let dir = tempdir("cfg-bad");
    let out = dir.join("never");
    let o = s(&out).to_string();
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["train", "--out", &o]
            .iter()
            .map(|x| x.to_string())
            .collect();
        if !extra.contains(&"--model") {
            v.extend(["--model".to_string(), "mlp".to_string()]);
        }
        v.extend(SMALL.iter().map(|x| x.to_string()));
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let check = |extra: &[&str], needles: &[&str]| {
        let args = base(extra);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(&a, needles);
        assert!(!out.exists(), "{extra:?} created the output folder");
    };
    check(&["--dataset", "imagenet"], &["--dataset", "imagenet"]);
    check(&["--optimizer", "lbfgs"], &["--optimizer", "lbfgs"]);
    check(&["--schedule", "cyclic"], &["--schedule", "cyclic"]);
    check(
        &["--lr", "0.1", "--final-lr", "0.5"],
        &["--final-lr", "--lr", "cosine"],
    );
    check(&["--batch-size", "0"], &["--batch-size"]);
    check(&["--epochs", "0"], &["--epochs"]);
    check(&["--lr=-1"], &["--lr"]);
    // (a CUDA device that can be used would train: only the unusable ones are checked)
    if quadra::device::runtime(quadra::Device::Cuda(0)).is_err() {
        check(
            &["--device", "cuda"],
            &["--device", "cuda:0 is not available"],
        );
    }
    if quadra::device::runtime(quadra::Device::Cuda(1)).is_err() {
        check(
            &["--device", "cuda:1"],
            &["--device", "cuda:1 is not available"],
        );
    }
    check(&["--device", "tpu"], &["--device", "tpu"]);
    check(&["--model", "qresnet99"], &["qresnet99", "qresnet14"]);
    // the model's input must match the dataset (checked before the files are read)
    check(
        &["--model", "qresnet14", "--dataset", "fashion-mnist"],
        &["qresnet14", "fashion-mnist", "[3, 32, 32]", "[1, 28, 28]"],
    );
    check(
        &["--model", "qcnn", "--dataset", "cifar10"],
        &["qcnn", "cifar10"],
    );
    check(&["--relinear", "2"], &["--relinear"]);
    check(
        &["--warmup-epochs", "3", "--epochs", "3"],
        &["--warmup-epochs"],
    );

    // config files: unknown key, wrong type, bad value, a value failing validation
    let bad = |name: &str, text: &str, needles: &[&str]| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        let mut n = vec![name];
        n.extend(needles);
        fails(&["train", "--config", s(&p), "--out", &o], &n);
        assert!(!out.exists(), "{name} created the output folder");
    };
    bad(
        "unknown.toml",
        "epochs = 2\nlearning_rat = 0.1\n",
        &["`learning_rat`"],
    );
    bad("type.toml", "epochs = \"ten\"\n", &["`epochs`"]);
    bad("neg.toml", "batch_size = -3\n", &["`batch_size`"]);
    bad(
        "dataset.toml",
        "dataset = \"imagenet\"\n",
        &["`dataset`", "imagenet"],
    );
    bad(
        "opt.toml",
        "optimizer = \"rmsprop\"\n",
        &["`optimizer`", "rmsprop"],
    );
    bad("zero.toml", "batch_size = 0\n", &["`batch_size`"]);
    bad(
        "final.toml",
        "lr = 0.1\nfinal_lr = 0.2\n",
        &["`final_lr`", "`lr`"],
    );
    bad("syntax.toml", "epochs = = 2\n", &["invalid TOML"]);
    bad("nested.toml", "[optimizer]\nlr = 0.1\n", &["`optimizer`"]);
    fails(
        &argv(
            "train --config {} --out {}",
            &[s(&dir.join("missing.toml")), &o],
        ),
        &["missing.toml"],
    );
    assert!(!out.exists());

    // a run, then: a fresh run into its folder, resumes of another model / dataset
    let run_dir = dir.join("run");
    let mut args = argv(
        "train --model mlp --epochs 1 --out {} --json",
        &[s(&run_dir)],
    );
    args.extend(SMALL);
    ok_json(&args);
    let before = snapshot(&run_dir);
    let ck = run_dir.join("epoch-0001.safetensors");
    let mut args = argv("train --model mlp --epochs 2 --out {}", &[s(&run_dir)]);
    args.extend(SMALL);
    fails(&args, &["already holds a run", "--resume", "--force"]);
    let resume = |extra: &[&str], needles: &[&str]| {
        let mut a = argv(
            "train --resume {} --epochs 2 --out {}",
            &[s(&ck), s(&run_dir)],
        );
        a.extend(extra);
        fails(&a, needles);
    };
    resume(
        &["--model", "cnn"],
        &["epoch-0001.safetensors", "mlp", "cnn", "--model"],
    );
    resume(
        &["--dataset", "fashion-mnist"],
        &[
            "epoch-0001.safetensors",
            "synthetic",
            "fashion-mnist",
            "--dataset",
        ],
    );
    resume(&["--optimizer", "adam"], &["sgd", "adam"]);
    resume(&["--batch-size", "0"], &["--batch-size"]);
    fails(
        &argv(
            "train --resume {} --out {}",
            &[s(&dir.join("nope.safetensors")), s(&run_dir)],
        ),
        &["nope.safetensors"],
    );
    assert_eq!(
        before,
        snapshot(&run_dir),
        "a failed command changed the run's files"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

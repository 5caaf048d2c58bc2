//! What a careless user or an attacker can feed `quadra-train` is refused cleanly: inputs
//! that would need more memory than exists (run under an address-space limit, so an
//! allocation abort fails the test instead of the machine), checkpoints holding NaN or
//! negative variances, out-of-range hyper-parameters, and stored configs that do not
//! parse; `--force` leaves nothing of the previous run to resume, and a resume keeps the
//! earlier log lines byte for byte.

use std::path::Path;
use std::process::Output;

use quadra::checkpoint::{tensors_to_bytes, write_atomic, Checkpoint};
use quadra::model::Model;
use serde_json::json;

use crate::support::{argv, fails, ok_json, s, tempdir};

/// The address-space limit of the memory-bomb runs: far below what the bombs ask for, and
/// well above what the program itself needs to start and refuse them.
const AS_LIMIT: u64 = 3 << 30;

/// `quadra-train ARGS` under `prlimit --as=LIMIT`.
fn run_limited(limit: u64, args: &[&str]) -> Output {
    std::process::Command::new("prlimit")
        .arg(format!("--as={limit}"))
        .arg(env!("CARGO_BIN_EXE_quadra-train"))
        .args(args)
        .output()
        .expect("prlimit (util-linux) runs")
}

/// A limited run that must fail with an error containing every needle — an exit code,
/// not a signal (an allocation abort is SIGABRT), and no panic.
fn fails_limited(args: &[&str], needles: &[&str]) -> String {
    fails_under(AS_LIMIT, args, needles)
}

fn fails_under(limit: u64, args: &[&str], needles: &[&str]) -> String {
    let o = run_limited(limit, args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{args:?} must exit 1 (not abort): {:?}\n{err}",
        o.status
    );
    for n in needles {
        assert!(err.contains(n), "{args:?}: message lacks `{n}`: {err}");
    }
    assert!(
        !err.contains("panicked") && !err.contains("memory allocation"),
        "{err}"
    );
    err
}

#[test]
fn memory_bombs_are_refused_before_allocating() {
    let dir = tempdir("cli-bombs");
    // sample counts whose images need 1.2 TB
    fails_limited(
        &argv(
            "train --model mlp --train-samples 400000000 --out {}",
            &[s(&dir.join("a"))],
        ),
        &["out of memory", "synthetic", "400000000 samples"],
    );
    // a spec (inside a checkpoint's metadata) whose layers each fit but whose total needs
    // ~1 TB: every command that builds the model refuses it from the spec
    let layers: Vec<_> = (0..4000)
        .map(|_| json!({"type": "linear", "in_features": 8192, "out_features": 8192}))
        .chain([json!({"type": "linear", "in_features": 8192, "out_features": 10})])
        .collect();
    let spec = json!({"name": "huge", "input": [8192], "num_classes": 10, "layers": layers});
    let mut meta = std::collections::HashMap::new();
    for (k, v) in [
        ("format", quadra::checkpoint::FORMAT.to_string()),
        ("spec", spec.to_string()),
        ("dtype", "f32".into()),
        ("epoch", "0".into()),
        ("step", "0".into()),
    ] {
        meta.insert(k.to_string(), v);
    }
    let ck = dir.join("huge.safetensors");
    write_atomic(&ck, &tensors_to_bytes(&[], Some(meta)).unwrap()).unwrap();
    fails_limited(
        &["info", s(&ck)],
        &["huge.safetensors", "model `huge`", "GiB"],
    );
    fails_limited(
        &argv("eval --checkpoint {}", &[s(&ck)]),
        &["huge.safetensors", "out of memory"],
    );
    // a 20 MB spec of 300k tiny layers (the program needs ~600 MB to hold them) under a
    // 512 MiB limit: refused from the spec's size, layers counted
    let layers: Vec<_> = (0..300_000)
        .map(|_| json!({"type": "linear", "in_features": 8, "out_features": 8}))
        .chain([json!({"type": "linear", "in_features": 8, "out_features": 10})])
        .collect();
    let deep = json!({"name": "deep", "input": [8], "num_classes": 10, "layers": layers});
    let deep_file = dir.join("deep.json");
    std::fs::write(&deep_file, deep.to_string()).unwrap();
    fails_under(
        1 << 29,
        &argv(
            "train --model {} --out {}",
            &[s(&deep_file), s(&dir.join("d"))],
        ),
        &["model `deep`", "300001 layers", "out of memory"],
    );
    // the huge spec as a spec file
    let spec_file = dir.join("huge.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    fails_limited(
        &argv(
            "train --model {} --out {}",
            &[s(&spec_file), s(&dir.join("b"))],
        ),
        &["model `huge`", "out of memory"],
    );
    // a batch whose activations cannot fit: refused by the fit check before the first step
    fails_limited(
        &argv(
            "train --model cnn --batch-size 3000000 --train-samples 64 --test-samples 16 --out {}",
            &[s(&dir.join("c"))],
        ),
        &["--batch-size 3000000", "out of memory"],
    );
    for run in ["a", "b", "c"] {
        assert!(!dir.join(run).join("metrics.jsonl").exists());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_gzip_member_whose_f32_images_cannot_fit_is_refused() {
    // IDX images of 0 bytes compress ~1000:1; 392 MB of them (under the 2 GiB cap on
    // decompressed data) are 1.57 GB as f32, which with the bytes cannot fit under a
    // 1.5 GiB address-space limit: refused while decompressing, not aborted decoding
    use std::io::Write;
    let dir = tempdir("cli-gzip-bomb");
    let n: u32 = 500_000;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut header = vec![0, 0, 8, 3];
    for d in [n, 28, 28] {
        header.extend(d.to_be_bytes());
    }
    gz.write_all(&header).unwrap();
    let zeros = vec![0u8; 1 << 20];
    let mut left = n as usize * 784;
    while left > 0 {
        let k = left.min(zeros.len());
        gz.write_all(&zeros[..k]).unwrap();
        left -= k;
    }
    std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gz.finish().unwrap()).unwrap();
    // the other three files, small and valid
    let labels = |n: u32| {
        [
            vec![0, 0, 8, 1],
            n.to_be_bytes().to_vec(),
            vec![0; n as usize],
        ]
        .concat()
    };
    std::fs::write(dir.join("train-labels-idx1-ubyte"), labels(n)).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), labels(2)).unwrap();
    let mut test = vec![0, 0, 8, 3];
    for d in [2u32, 28, 28] {
        test.extend(d.to_be_bytes());
    }
    test.extend(vec![0u8; 2 * 784]);
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), test).unwrap();
    let e = fails_under(
        3 << 29,
        &argv(
            "train --dataset fashion-mnist --data-dir {} --model qcnn --out {}",
            &[s(&dir), s(&dir.join("run"))],
        ),
        &["train-images-idx3-ubyte.gz", "refusing to read it"],
    );
    assert!(e.contains("f32") || e.contains("out of memory"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A small training run's arguments (mlp, synthetic data, 2 steps an epoch), then `extra`.
fn mlp_run(out: &Path, epochs: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = argv(
        "train --model mlp --batch-size 32 --train-samples 64 --test-samples 32 --seed 1 \
         --json --epochs {} --out {}",
        &[epochs, s(out)],
    )
    .into_iter()
    .map(String::from)
    .collect();
    v.extend(extra.iter().map(|a| a.to_string()));
    v
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn force_leaves_nothing_of_the_previous_run() {
    let dir = tempdir("cli-force");
    let out = dir.join("run");
    ok_json(&strs(&mlp_run(&out, "3", &[])));
    assert!(out.join("epoch-0003.safetensors").exists());
    // without --force: refused, naming what is there
    fails(
        &strs(&mlp_run(&out, "1", &[])),
        &["already holds a run", "--force"],
    );
    // --force with a shorter run: the old epoch-0002/0003 are gone, so `--resume DIR`
    // continues the new run, not the old one
    ok_json(&strs(&mlp_run(&out, "1", &["--force"])));
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("epoch-"))
        .collect();
    names.sort();
    assert_eq!(names, ["epoch-0001.safetensors"]);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 1, "{metrics}");
    let v = ok_json(&strs(&mlp_run(&out, "2", &["--resume", s(&out)])));
    assert_eq!(v.last().unwrap()["start_epoch"], 1, "{v:?}");
    // --force would delete an --init checkpoint of the run it clears: refused, kept
    let init = out.join("epoch-0002.safetensors");
    fails(
        &argv(
            "train --epochs 1 --train-samples 64 --test-samples 32 --force --init {} --out {}",
            &[s(&init), s(&out)],
        ),
        &["--init", "epoch-0002.safetensors", "copy it out"],
    );
    assert!(init.exists());
    // a file of another name in the folder is not touched by --force
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    ok_json(&strs(&mlp_run(&out, "1", &["--force"])));
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn resume_keeps_earlier_log_lines_byte_for_byte() {
    let dir = tempdir("cli-resume-bytes");
    let out = dir.join("run");
    ok_json(&strs(&mlp_run(&out, "1", &[])));
    let metrics = std::fs::read(out.join("metrics.jsonl")).unwrap();
    let steps = std::fs::read(out.join("steps.jsonl")).unwrap();
    ok_json(&strs(&mlp_run(&out, "2", &["--resume", s(&out)])));
    let metrics2 = std::fs::read(out.join("metrics.jsonl")).unwrap();
    let steps2 = std::fs::read(out.join("steps.jsonl")).unwrap();
    assert!(metrics2.starts_with(&metrics) && metrics2.len() > metrics.len());
    assert!(steps2.starts_with(&steps) && steps2.len() > steps.len());
    // a damaged checkpoint in the folder is an error naming it, not skipped (it may be
    // the furthest)
    let good = std::fs::read(out.join("last.safetensors")).unwrap();
    std::fs::write(out.join("last.safetensors"), &good[..good.len() / 2]).unwrap();
    fails(
        &strs(&mlp_run(&out, "3", &["--resume", s(&out)])),
        &["last.safetensors", "truncated", "move that file aside"],
    );
    std::fs::write(out.join("last.safetensors"), &good).unwrap();
    // a damaged line in the middle of a log is an error, and the log is left as it was
    let mut bad = metrics2.clone();
    bad.splice(0..1, *b"#");
    std::fs::write(out.join("metrics.jsonl"), &bad).unwrap();
    fails(
        &strs(&mlp_run(&out, "3", &["--resume", s(&out)])),
        &["metrics.jsonl", "line 1 is not JSON"],
    );
    assert_eq!(std::fs::read(out.join("metrics.jsonl")).unwrap(), bad);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn stored_configs_and_hyper_parameters_are_checked() {
    let dir = tempdir("cli-config-checks");
    let out = dir.join("run");
    ok_json(&strs(&mlp_run(&out, "1", &[])));
    let e1 = out.join("epoch-0001.safetensors");
    // a stored config that does not parse: an error, not a run on defaults
    let mut ck = Checkpoint::load(&e1).unwrap();
    ck.config.as_mut().unwrap()["lr"] = json!("fast");
    let broken = dir.join("broken.safetensors");
    ck.save(&broken).unwrap();
    fails(
        &argv(
            "train --epochs 2 --out {} --resume {}",
            &[s(&out), s(&broken)],
        ),
        &[
            "broken.safetensors",
            "stored training config does not parse",
            "--init",
        ],
    );
    // a stored value out of range is named as the checkpoint's
    let mut ck = Checkpoint::load(&e1).unwrap();
    ck.config.as_mut().unwrap()["momentum"] = json!(-3.0);
    let bad = dir.join("bad-momentum.safetensors");
    ck.save(&bad).unwrap();
    fails(
        &argv("train --epochs 2 --out {} --resume {}", &[s(&out), s(&bad)]),
        &[
            "`momentum` in the stored config of",
            "bad-momentum.safetensors",
        ],
    );
    // a checkpoint without a training config (Model::save) cannot be resumed
    let plain = dir.join("plain.safetensors");
    Model::load(&e1).unwrap().save(&plain).unwrap();
    fails(
        &argv(
            "train --epochs 2 --out {} --resume {}",
            &[s(&out), s(&plain)],
        ),
        &["plain.safetensors", "no stored training config", "--init"],
    );
    // hyper-parameters out of range
    for (flag, value, needle) in [
        ("--clip-grad-norm", "-1", "positive"),
        ("--momentum", "1.5", "[0, 1)"),
        ("--weight-decay", "-0.1", "≥ 0"),
    ] {
        let arg = format!("{flag}={value}");
        fails(
            &strs(&mlp_run(&dir.join("hp"), "1", &[&arg])),
            &[flag, needle],
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn predict_refuses_a_checkpoint_with_nan_weights() {
    let dir = tempdir("cli-nan-ck");
    let spec = quadra::models::get("mlp", None, 10).unwrap();
    let model = Model::build(&spec, Default::default()).unwrap();
    let mut ck = Checkpoint::from_model(&model).unwrap();
    let (name, t) = &mut ck.state[0];
    let name = name.clone();
    let mut v = t.to_vec::<f32>().unwrap();
    v[7] = f32::NAN;
    *t = quadra::Tensor::from_vec(v, t.shape()).unwrap();
    let p = dir.join("nan.safetensors");
    ck.save(&p).unwrap();
    let x = dir.join("x.safetensors");
    quadra::checkpoint::write_tensors(
        &x,
        &[(
            "input".into(),
            quadra::Tensor::zeros(&[2, 1, 28, 28], quadra::DType::F32).unwrap(),
        )],
        None,
    )
    .unwrap();
    let y = dir.join("y.safetensors");
    fails(
        &argv(
            "predict --checkpoint {} --input {} --output {}",
            &[s(&p), s(&x), s(&y)],
        ),
        &["nan.safetensors", &name, "non-finite"],
    );
    assert!(!y.exists());
    std::fs::remove_dir_all(dir).unwrap();
}

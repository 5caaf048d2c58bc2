//! Checkpoints: round trip (weights, optimizer state, metadata), atomic writes, and
//! validation of damaged or mismatched files with errors naming the file and tensor.

use std::collections::HashMap;
use std::path::Path;

use quadra::checkpoint::{
    read_tensors, tensors_to_bytes, write_atomic, Checkpoint, OptimState, FORMAT,
};
use quadra::model::Model;
use quadra::nn::spec::BuildOptions;
use quadra::{models, DType, Tensor};
use serde_json::json;

use crate::support::tempdir;

fn model(seed: u64) -> Model {
    let spec = models::get("qcnn", None, 10).unwrap();
    Model::build(
        &spec,
        BuildOptions {
            seed,
            ..Default::default()
        },
    )
    .unwrap()
}

fn sample_checkpoint() -> Checkpoint {
    let m = model(3);
    let mut ck = Checkpoint::from_model(&m).unwrap();
    ck.epoch = 2;
    ck.step = 120;
    ck.seed = Some(7);
    ck.rng = Some(json!({"next_batch": 120}));
    ck.config = Some(json!({"model": "qcnn", "lr": 0.05}));
    ck.metrics = Some(json!({"test_acc": 0.5}));
    ck.optim = Some(OptimState {
        kind: "sgd".into(),
        scalars: json!({"lr": 0.05, "momentum": 0.9}),
        tensors: vec![(
            "momentum_buffer.fc.weight".into(),
            Tensor::randn(&[10, 1568], DType::F32, 1.0, 5).unwrap(),
        )],
    });
    ck
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_keeps_everything() {
    let dir = tempdir("ck-fmt-rt");
    let p = dir.join("ck.safetensors");
    let ck = sample_checkpoint();
    ck.save(&p).unwrap();
    assert_eq!(
        files_in(&dir),
        ["ck.safetensors"],
        "no temporary file is left"
    );
    let (back, m) = Checkpoint::load_model(&p).unwrap();
    assert_eq!(back.spec, ck.spec);
    assert_eq!((back.epoch, back.step, back.seed), (2, 120, Some(7)));
    assert_eq!(back.rng, ck.rng);
    assert_eq!(back.config, ck.config);
    assert_eq!(back.metrics, ck.metrics);
    let (o, o2) = (back.optim.unwrap(), ck.optim.unwrap());
    assert_eq!(o.kind, "sgd");
    assert_eq!(o.scalars, o2.scalars);
    assert_eq!(o.tensors[0].0, o2.tensors[0].0);
    assert_eq!(
        o.tensors[0].1.to_vec::<f32>().unwrap(),
        o2.tensors[0].1.to_vec::<f32>().unwrap()
    );
    for ((k, a), (k2, b)) in back.state.iter().zip(&ck.state) {
        assert_eq!(k, k2);
        assert_eq!(
            a.to_vec::<f32>().unwrap(),
            b.to_vec::<f32>().unwrap(),
            "{k}"
        );
    }
    // the file is self-describing: metadata keys and tensor names
    let (tensors, meta) = read_tensors(&p).unwrap();
    let meta = meta.unwrap();
    for k in [
        "format",
        "spec",
        "dtype",
        "epoch",
        "step",
        "seed",
        "rng",
        "config",
        "metrics",
        "optim.kind",
        "optim.state",
    ] {
        assert!(meta.contains_key(k), "metadata key {k}");
    }
    assert_eq!(meta["format"], FORMAT);
    assert!(tensors
        .iter()
        .any(|(k, _)| k == "optim.momentum_buffer.fc.weight"));
    assert!(tensors.iter().any(|(k, _)| k == "conv1.bn1.running_mean"));
    // same predictions
    let x = Tensor::randn(&[2, 1, 28, 28], DType::F32, 1.0, 1).unwrap();
    let orig = model(3);
    assert_eq!(
        orig.predict(&x).unwrap().to_vec::<f32>().unwrap(),
        m.predict(&x).unwrap().to_vec::<f32>().unwrap()
    );
    // f64 checkpoints too
    let spec = models::get("mlp", None, 10).unwrap();
    let m64 = Model::build(
        &spec,
        BuildOptions {
            dtype: DType::F64,
            seed: 1,
        },
    )
    .unwrap();
    let p64 = dir.join("m64.safetensors");
    m64.save(&p64).unwrap();
    let back = Checkpoint::load(&p64).unwrap();
    assert_eq!(back.dtype, DType::F64);
    std::fs::remove_dir_all(dir).unwrap();
}

fn load_err(bytes: &[u8], dir: &Path, name: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    let e = Checkpoint::load(&p)
        .err()
        .unwrap_or_else(|| panic!("{name}: expected an error"))
        .to_string();
    assert!(e.contains(name), "error does not name the file: {e}");
    e
}

/// A checkpoint with its tensors replaced by `edit` and its metadata by `meta_edit`.
fn crafted(
    edit: impl FnOnce(&mut Vec<(String, Tensor)>),
    meta_edit: impl FnOnce(&mut HashMap<String, String>),
) -> Vec<u8> {
    let ck = sample_checkpoint();
    let mut meta = ck.metadata();
    let mut t = ck.state.clone();
    edit(&mut t);
    meta_edit(&mut meta);
    tensors_to_bytes(&t, Some(meta)).unwrap()
}

#[test]
fn damaged_and_mismatched_files_are_clear_errors() {
    let dir = tempdir("ck-fmt-bad");
    let good = sample_checkpoint().to_bytes().unwrap();

    let e = load_err(&good[..good.len() - 100], &dir, "truncated.safetensors");
    assert!(e.contains("truncated"), "{e}");
    let e = load_err(&good[..5], &dir, "tiny.safetensors");
    assert!(e.contains("truncated"), "{e}");

    // tampered header: a dtype changed so the offsets no longer fit, then broken JSON
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let head = String::from_utf8(good[8..8 + n].to_vec()).unwrap();
    let mut bad = good.clone();
    let at = head.find("\"F32\"").unwrap() + 8;
    bad[at + 2] = b'6';
    bad[at + 3] = b'4';
    let e = load_err(&bad, &dir, "dtype-tampered.safetensors");
    assert!(e.contains("header"), "{e}");
    let mut bad = good.clone();
    bad[8] = b'[';
    let e = load_err(&bad, &dir, "json-tampered.safetensors");
    assert!(e.contains("header"), "{e}");

    let e = load_err(
        &crafted(|t| t.retain(|(k, _)| k != "conv2.bn3.running_var"), |_| {}),
        &dir,
        "missing.safetensors",
    );
    assert!(
        e.contains("missing") && e.contains("conv2.bn3.running_var"),
        "{e}"
    );

    let e = load_err(
        &crafted(
            |t| {
                t.push((
                    "conv3.weight".into(),
                    Tensor::zeros(&[1], DType::F32).unwrap(),
                ))
            },
            |_| {},
        ),
        &dir,
        "extra.safetensors",
    );
    assert!(
        e.contains("unexpected") && e.contains("conv3.weight"),
        "{e}"
    );

    let e = load_err(
        &crafted(
            |t| {
                for (k, v) in t.iter_mut() {
                    if k == "fc.bias" {
                        *v = Tensor::zeros(&[11], DType::F32).unwrap();
                    }
                }
            },
            |_| {},
        ),
        &dir,
        "shape.safetensors",
    );
    assert!(e.contains("fc.bias") && e.contains("[11]"), "{e}");

    let e = load_err(
        &crafted(
            |t| {
                for (k, v) in t.iter_mut() {
                    if k == "fc.bias" {
                        *v = v.to_dtype(DType::F64).unwrap();
                    }
                }
            },
            |_| {},
        ),
        &dir,
        "dtype.safetensors",
    );
    assert!(e.contains("fc.bias") && e.contains("f64"), "{e}");

    let e = load_err(
        &crafted(
            |_| {},
            |m| {
                let mut v: serde_json::Value = serde_json::from_str(&m["spec"]).unwrap();
                v["num_classes"] = 7.into();
                m.insert("spec".into(), v.to_string());
            },
        ),
        &dir,
        "spec.safetensors",
    );
    assert!(e.contains("spec") && e.contains("num_classes"), "{e}");

    let e = load_err(
        &crafted(
            |_| {},
            |m| {
                m.remove("epoch");
            },
        ),
        &dir,
        "noepoch.safetensors",
    );
    assert!(e.contains("epoch"), "{e}");
    let e = load_err(
        &crafted(
            |_| {},
            |m| {
                m.insert("format".into(), "other/9".into());
            },
        ),
        &dir,
        "format.safetensors",
    );
    assert!(e.contains("other/9"), "{e}");
    let e = load_err(
        &crafted(
            |_| {},
            |m| {
                m.insert("config".into(), "{oops".into());
            },
        ),
        &dir,
        "config.safetensors",
    );
    assert!(e.contains("config"), "{e}");

    let e = Checkpoint::load(dir.join("absent.safetensors"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("absent.safetensors"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn failed_writes_leave_the_target_untouched() {
    let dir = tempdir("ck-fmt-atomic");
    let p = dir.join("ck.safetensors");
    std::fs::write(&p, b"old content").unwrap();
    // a checkpoint that cannot be serialised (a tensor not of the checkpoint's dtype)
    let mut ck = sample_checkpoint();
    ck.state[0].1 = ck.state[0].1.to_dtype(DType::F64).unwrap();
    let e = ck.save(&p).err().unwrap().to_string();
    assert!(
        e.contains("ck.safetensors") && e.contains(&ck.state[0].0),
        "{e}"
    );
    assert_eq!(std::fs::read(&p).unwrap(), b"old content");
    // a directory that does not exist
    let e = write_atomic(dir.join("nope/ck.safetensors"), b"x")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("nope/ck.safetensors"), "{e}");
    // a successful write replaces the content and leaves no temporary file
    write_atomic(&p, b"new").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"new");
    assert_eq!(files_in(&dir), ["ck.safetensors"]);
    std::fs::remove_dir_all(dir).unwrap();
}

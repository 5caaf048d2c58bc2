//! End-to-end tests of the `quadra-train` binary: import of the PyTorch golden file,
//! predict round trip, info, a tiny training run that writes checkpoints and resumes, and
//! bad inputs (non-zero exit, a message naming the file/tensor, no output file).

use quadra::checkpoint::{read_tensors, write_tensors, Checkpoint};
use quadra::model::Model;
use quadra::{DType, Tensor};

use crate::support::{argv, fails, fixture, ok_json, run, s, tempdir};

#[test]
fn import_predict_info_export() {
    let dir = tempdir("cli-ipi");
    let ck = dir.join("qresnet14.safetensors");
    let w = fixture("torch_qresnet14_weights.safetensors");
    let v = ok_json(&argv(
        "import --from torch --model qresnet14 {} -o {} --json",
        &[s(&w), s(&ck)],
    ));
    assert_eq!(v[0]["model"], "qresnet14");
    assert_eq!(v[0]["params"], 520_282);

    // predict on the golden input: the logits match PyTorch's
    let io = fixture("torch_qresnet14_io.safetensors");
    let out = dir.join("logits.safetensors");
    let v = ok_json(&argv(
        "predict --checkpoint {} --input {} --output {}
            --batch-size 3 --json",
        &[s(&ck), s(&io), s(&out)],
    ));
    // one object per sample, each with its arg-max class
    assert_eq!(v.len(), 8);
    assert!(v
        .iter()
        .all(|o| o["argmax"].as_u64().is_some_and(|k| k < 10)));
    let (got, _) = read_tensors(&out).unwrap();
    let (want, _) = read_tensors(&io).unwrap();
    let want = &want.iter().find(|(k, _)| k == "logits").unwrap().1;
    assert_eq!(got[0].0, "logits");
    let d = got[0].1.max_abs_diff(want).unwrap();
    assert!(d < 1e-4, "CLI predict vs PyTorch: {d}");

    let v = ok_json(&["info", s(&ck), "--json"]);
    assert_eq!(v[0]["model"], "qresnet14");
    assert_eq!(v[0]["params"], 520_282);
    assert_eq!(v[0]["quadratic_layers"], 12);
    assert_eq!(v[0]["epoch"], 0);
    let o = run(&["info", s(&ck)]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("520282"));

    // export back: same tensors as the PyTorch file
    let back = dir.join("back.safetensors");
    ok_json(&["export", "--to", "torch", s(&ck), "-o", s(&back), "--json"]);
    let (a, _) = read_tensors(&back).unwrap();
    let (b, _) = read_tensors(&w).unwrap();
    assert_eq!(a.len(), b.len());
    for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert_eq!(ta.to_vec::<f32>().unwrap(), tb.to_vec::<f32>().unwrap());
    }

    // export as ONNX: the same bytes as the library's exporter writes (whose graphs
    // tests/models/onnx_export.rs checks, and runs in onnxruntime)
    let onnx = dir.join("qresnet14.onnx");
    let v = ok_json(&argv(
        "export --to onnx --checkpoint {} -o {} --json",
        &[s(&ck), s(&onnx)],
    ));
    assert_eq!(v[0]["format"], "onnx");
    assert_eq!(v[0]["opset"], quadra::onnx::OPSET);
    assert_eq!(v[0]["normalized_in_graph"], false);
    let want = quadra::onnx::to_bytes(&Model::load(&ck).unwrap()).unwrap();
    assert!(
        std::fs::read(&onnx).unwrap() == want,
        "CLI and library ONNX differ"
    );
    // ONNX is written, never read: import refuses it
    fails(
        &argv(
            "import --from onnx --model qresnet14 {} -o {}",
            &[s(&onnx), s(&dir.join("x.safetensors"))],
        ),
        &["onnx"],
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn train_one_epoch_then_resume() {
    let dir = tempdir("cli-train");
    let out = dir.join("run");
    let common = [
        "--model",
        "mlp",
        "--batch-size",
        "32",
        "--train-samples",
        "128",
        "--test-samples",
        "64",
        "--lr",
        "0.05",
        "--seed",
        "3",
    ];
    let mut args = vec!["train", "--epochs", "1", "--out", s(&out), "--json"];
    args.extend(common);
    let v = ok_json(&args);
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(
        (
            v[0]["event"].as_str(),
            v[0]["epoch"].as_u64(),
            v[0]["step"].as_u64()
        ),
        (Some("epoch"), Some(1), Some(4))
    );
    assert_eq!(v[1]["event"], "done");
    let e1 = out.join("epoch-0001.safetensors");
    assert!(e1.exists() && out.join("best.safetensors").exists());
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 1);
    let ck = Checkpoint::load(&e1).unwrap();
    assert_eq!((ck.epoch, ck.step, ck.seed), (1, 4, Some(3)));
    assert_eq!(ck.config.as_ref().unwrap()["model"], "mlp");
    assert_eq!(ck.optim.as_ref().unwrap().kind, "sgd");

    // resume to 2 epochs
    let mut args = argv(
        "train --epochs 2 --out {} --resume {} --json",
        &[s(&out), s(&e1)],
    );
    args.extend(common);
    let v = ok_json(&args);
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(
        (v[0]["epoch"].as_u64(), v[0]["step"].as_u64()),
        (Some(2), Some(8))
    );
    assert_eq!(v[1]["start_epoch"], 1);
    let ck2 = Checkpoint::load(out.join("epoch-0002.safetensors")).unwrap();
    assert_eq!((ck2.epoch, ck2.step), (2, 8));
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        2
    );

    // eval of the checkpoint on its synthetic test set equals the epoch's test metrics
    let e = ok_json(&argv(
        "eval --checkpoint {} --json",
        &[s(&out.join("epoch-0002.safetensors"))],
    ));
    let acc = e[0]["accuracy"].as_f64().unwrap();
    assert!(
        (acc - v[0]["test_acc"].as_f64().unwrap()).abs() < 1e-12,
        "{e:?} vs {v:?}"
    );

    // plain (non-terminal) output: human lines
    let o = run(&argv(
        "train --model mlp --epochs 1 --batch-size 64
            --train-samples 64 --test-samples 16 --out {}",
        &[s(&dir.join("plain"))],
    ));
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("epoch 1/1: train loss"), "{text}");

    // resume with another model, a CUDA device, an unknown model
    let mut args = argv("train --epochs 2 --out {} --resume {}", &[s(&out), s(&e1)]);
    args.extend(["--model", "cnn"]);
    fails(&args, &["epoch-0001.safetensors", "mlp", "cnn"]);
    // a CUDA device that cannot be used is a clear error before anything is written
    if quadra::device::runtime(quadra::Device::Cuda(0)).is_err() {
        fails(
            &["train", "--device", "cuda", "--out", s(&dir.join("cuda"))],
            &["--device", "cuda:0 is not available"],
        );
        assert!(!dir.join("cuda").exists());
    }
    fails(
        &argv(
            "train --model qresnet99 --out {}",
            &[s(&dir.join("unknown"))],
        ),
        &["qresnet99", "qresnet14"],
    );
    assert!(!dir.join("unknown").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_inputs_fail_clearly_and_write_nothing() {
    let dir = tempdir("cli-bad");
    let spec = quadra::models::get("mlp", None, 10).unwrap();
    let model = Model::build(&spec, Default::default()).unwrap();
    let ck = dir.join("mlp.safetensors");
    model.save(&ck).unwrap();
    let out = dir.join("y.safetensors");
    let good_in = dir.join("x.safetensors");
    write_tensors(
        &good_in,
        &[(
            "input".into(),
            Tensor::zeros(&[2, 1, 28, 28], DType::F32).unwrap(),
        )],
        None,
    )
    .unwrap();
    ok_json(&argv(
        "predict --checkpoint {} --input {} --output {} --json",
        &[s(&ck), s(&good_in), s(&out)],
    ));
    assert!(out.exists());
    std::fs::remove_file(&out).unwrap();

    // missing checkpoint / input file
    fails(
        &argv(
            "predict --checkpoint {} --input {} --output {}",
            &[s(&dir.join("nope.safetensors")), s(&good_in), s(&out)],
        ),
        &["nope.safetensors"],
    );
    fails(
        &argv(
            "predict --checkpoint {} --input {} --output {}",
            &[s(&ck), s(&dir.join("nox.safetensors")), s(&out)],
        ),
        &["nox.safetensors"],
    );
    fails(
        &["info", s(&dir.join("nope.safetensors"))],
        &["nope.safetensors"],
    );
    // truncated checkpoint
    let bytes = std::fs::read(&ck).unwrap();
    let trunc = dir.join("trunc.safetensors");
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    fails(
        &argv(
            "predict --checkpoint {} --input {} --output {}",
            &[s(&trunc), s(&good_in), s(&out)],
        ),
        &["trunc.safetensors", "truncated"],
    );
    fails(&["info", s(&trunc)], &["trunc.safetensors", "truncated"]);
    // wrong tensor name, wrong shape
    let wrong_name = dir.join("wrong-name.safetensors");
    write_tensors(
        &wrong_name,
        &[(
            "images".into(),
            Tensor::zeros(&[2, 1, 28, 28], DType::F32).unwrap(),
        )],
        None,
    )
    .unwrap();
    fails(
        &argv(
            "predict --checkpoint {} --input {} --output {}",
            &[s(&ck), s(&wrong_name), s(&out)],
        ),
        &["wrong-name.safetensors", "`input`", "images"],
    );
    let wrong_shape = dir.join("wrong-shape.safetensors");
    write_tensors(
        &wrong_shape,
        &[(
            "input".into(),
            Tensor::zeros(&[2, 3, 28, 28], DType::F32).unwrap(),
        )],
        None,
    )
    .unwrap();
    fails(
        &argv(
            "predict --checkpoint {} --input {} --output {}",
            &[s(&ck), s(&wrong_shape), s(&out)],
        ),
        &["wrong-shape.safetensors", "`input`", "[2, 3, 28, 28]"],
    );
    assert!(!out.exists(), "no output after failures");

    // import: unknown model, wrong model for the weights, missing file
    let w = fixture("torch_qresnet14_weights.safetensors");
    let imp = dir.join("imp.safetensors");
    fails(
        &argv(
            "import --from torch --model resnet7 {} -o {}",
            &[s(&w), s(&imp)],
        ),
        &["resnet7"],
    );
    fails(
        &argv(
            "import --from torch --model resnet20 {} -o {}",
            &[s(&w), s(&imp)],
        ),
        &[
            "torch_qresnet14_weights.safetensors",
            "missing",
            "layer1.0.conv1.weight",
        ],
    );
    fails(
        &argv(
            "import --from torch --model qresnet14 {} -o {}",
            &[s(&dir.join("none.safetensors")), s(&imp)],
        ),
        &["none.safetensors"],
    );
    assert!(!imp.exists());
    // a plain state dict is not a checkpoint
    fails(&["info", s(&w)], &["not a quadra checkpoint"]);
    // leftovers: no temporary files
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

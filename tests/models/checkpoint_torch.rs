//! PyTorch interop, against golden files written by PyTorch:
//!
//!     python ../shared/bench/torch_ref.py export --model qresnet14 --seed 0 --out DIR
//!
//! (torch 2.x, CPU) copied to tests/fixtures/torch_qresnet14_{weights,io}.safetensors:
//! `weights` is the seeded reference module's state dict (floating-point entries, so no
//! `num_batches_tracked`), `io` a fixed input batch (8, 3, 32, 32) and its eval-mode logits.
//! qvgg7's export is 49 MB, too large to commit; only qresnet14's fixtures are here.

use std::collections::HashMap;

use quadra::checkpoint::{self, export_torch, import_torch, read_tensors, write_tensors, Widen};
use quadra::model::Model;
use quadra::nn::spec::ModelSpec;
use quadra::{models, DType, Tensor};

use crate::support::{fixture, tempdir};

fn io() -> (Tensor, Tensor) {
    let (io, _) = read_tensors(fixture("torch_qresnet14_io.safetensors")).unwrap();
    let m: HashMap<String, Tensor> = io.into_iter().collect();
    (m["input"].clone(), m["logits"].clone())
}

fn weights() -> Vec<(String, Tensor)> {
    read_tensors(fixture("torch_qresnet14_weights.safetensors"))
        .unwrap()
        .0
}

/// Largest |a − b| relative to max(1, |b|∞).
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.to_f64_vec().iter().fold(1f64, |m, v| m.max(v.abs()));
    a.max_abs_diff(b).unwrap() / scale
}

// f32 tolerance, relative to max(1, |logits|∞): measured against PyTorch 2.4e-7 absolute
// (1.8e-7 relative) in f32 and 1.9e-7 in f64 (PyTorch's own f32 rounding); 1e-5 leaves
// room for other GEMM blockings and thread counts.
const TOL: f64 = 1e-5;

/// qresnet14 with PyTorch's weights (the fixture), in `dtype`.
fn torch_qresnet14(spec: &ModelSpec, dtype: DType) -> Model {
    import_torch(
        fixture("torch_qresnet14_weights.safetensors"),
        spec,
        dtype,
        Widen::Refuse,
    )
    .unwrap()
}

#[test]
fn qresnet14_logits_match_pytorch() {
    let spec = models::get("qresnet14", None, 10).unwrap();
    let model = torch_qresnet14(&spec, DType::F32);
    let (x, want) = io();
    let got = model.predict(&x).unwrap();
    let e = rel_err(&got, &want);
    eprintln!(
        "qresnet14 f32 vs PyTorch: max abs diff {:.3e}, relative {e:.3e}",
        got.max_abs_diff(&want).unwrap()
    );
    assert!(
        e < TOL,
        "logits differ from PyTorch's by {e:.3e} (relative), tolerance {TOL}"
    );
    assert_eq!(
        quadra::serve::argmax(&got).unwrap(),
        quadra::serve::argmax(&want).unwrap()
    );

    // in f64 the difference is PyTorch's own f32 rounding
    let model64 = torch_qresnet14(&spec, DType::F64);
    let got64 = model64.predict(&x.to_dtype(DType::F64).unwrap()).unwrap();
    let e64 = rel_err(&got64, &want);
    eprintln!("qresnet14 f64 vs PyTorch f32: relative {e64:.3e}");
    assert!(e64 < TOL);
}

#[test]
fn export_round_trips_bit_for_bit_and_through_a_checkpoint() {
    let spec = models::get("qresnet14", None, 10).unwrap();
    let model = torch_qresnet14(&spec, DType::F32);
    let dir = tempdir("ck-torch-export");
    let out = dir.join("exported.safetensors");
    export_torch(&model, &out).unwrap();
    let a: HashMap<String, Tensor> = weights().into_iter().collect();
    let (b, _) = read_tensors(&out).unwrap();
    assert_eq!(a.len(), b.len());
    for (k, t) in &b {
        assert_eq!(
            a[k].to_vec::<f32>().unwrap(),
            t.to_vec::<f32>().unwrap(),
            "{k}"
        );
    }
    // checkpoint → Model::load → same logits, bit for bit
    let ck = dir.join("ck.safetensors");
    model.save(&ck).unwrap();
    let back = Model::load(&ck).unwrap();
    let (x, _) = io();
    assert_eq!(
        model.predict(&x).unwrap().to_vec::<f32>().unwrap(),
        back.predict(&x).unwrap().to_vec::<f32>().unwrap()
    );
    std::fs::remove_dir_all(dir).unwrap();
}

fn import_err(entries: &[(String, Tensor)], tag: &str) -> String {
    let dir = tempdir(&format!("ck-torch-{tag}"));
    let p = dir.join("w.safetensors");
    write_tensors(&p, entries, None).unwrap();
    let spec = models::get("qresnet14", None, 10).unwrap();
    let e = import_torch(&p, &spec, DType::F32, Widen::Refuse)
        .err()
        .expect("import should fail")
        .to_string();
    std::fs::remove_dir_all(dir).unwrap();
    assert!(e.contains("w.safetensors"), "{e}");
    e
}

#[test]
fn import_errors_name_the_entries() {
    let w = weights();
    // missing
    let e = import_err(
        &w.iter()
            .filter(|(k, _)| k != "layer2.0.conv1.bn2.running_var")
            .cloned()
            .collect::<Vec<_>>(),
        "missing",
    );
    assert!(
        e.contains("missing") && e.contains("layer2.0.conv1.bn2.running_var"),
        "{e}"
    );
    // extra
    let mut x = w.clone();
    x.push((
        "layer9.fc.weight".into(),
        Tensor::zeros(&[2, 2], DType::F32).unwrap(),
    ));
    let e = import_err(&x, "extra");
    assert!(
        e.contains("unexpected") && e.contains("layer9.fc.weight"),
        "{e}"
    );
    // misshapen
    let x: Vec<_> = w
        .iter()
        .map(|(k, t)| {
            if k == "linear.weight" {
                (k.clone(), Tensor::zeros(&[10, 32], DType::F32).unwrap())
            } else {
                (k.clone(), t.clone())
            }
        })
        .collect();
    let e = import_err(&x, "shape");
    assert!(
        e.contains("linear.weight") && e.contains("[10, 32]") && e.contains("[10, 64]"),
        "{e}"
    );
    // num_batches_tracked (an integer tensor in real PyTorch dicts) is ignored; a
    // DataParallel `module.` prefix is stripped
    let dir = tempdir("ck-torch-nbt");
    let p = dir.join("w.safetensors");
    let mut bytes_entries: Vec<(String, Tensor)> = w
        .iter()
        .map(|(k, t)| (format!("module.{k}"), t.clone()))
        .collect();
    bytes_entries.push((
        "module.bn1.num_batches_tracked".into(),
        Tensor::zeros(&[], DType::F64).unwrap(),
    ));
    write_tensors(&p, &bytes_entries, None).unwrap();
    let spec = models::get("qresnet14", None, 10).unwrap();
    import_torch(&p, &spec, DType::F32, Widen::Refuse).unwrap();
    // a plain state dict is not a checkpoint
    let e = checkpoint::Checkpoint::load(&p).err().unwrap().to_string();
    assert!(
        e.contains("not a quadra checkpoint") && e.contains("w.safetensors"),
        "{e}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// scripts/torch-fixtures.py's `formula_value`: element `i` of the weight `name` (shape
/// `shape`), from a hash of (name, i), in integer arithmetic and one correctly rounded sqrt,
/// so that PyTorch's side and ours draw the same f32 values.
fn formula_value(name: &str, shape: &[usize], i: u64) -> f64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01B3);
    }
    let mut x = (h ^ i).wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let u = (x >> 40) as f64 / (1u64 << 24) as f64;
    let parts: Vec<&str> = name.split('.').collect();
    let last = *parts.last().unwrap();
    let n = parts.len();
    if last == "weight" && shape.len() >= 2 {
        let fan_in: usize = shape[1..].iter().product();
        (2.0 * u - 1.0) / (fan_in as f64).sqrt()
    } else if last == "weight"
        && n >= 3
        && parts[n - 3].starts_with("conv")
        && matches!(parts[n - 2], "bn1" | "bn2")
    {
        0.25 + 0.25 * u // a quadratic conv's product branches: small, for conditioning
    } else if last == "weight" {
        0.5 + u
    } else if last == "bias" {
        (2.0 * u - 1.0) * 0.2
    } else {
        panic!("no formula for {name}")
    }
}

/// The reference's QMobileNet (cfg B; quadratic stem, depthwise and pointwise convs) against
/// PyTorch: weights by `formula_value`, batch-norm running statistics and the logits from
/// tests/fixtures/torch_qmobilenet_io.safetensors (scripts/torch-fixtures.py), through the
/// PyTorch import path, so the state-dict names are checked too.
#[test]
fn qmobilenet_logits_match_pytorch() {
    let (io, _) = read_tensors(fixture("torch_qmobilenet_io.safetensors")).unwrap();
    let io: HashMap<String, Tensor> = io.into_iter().collect();
    let spec = models::get("qmobilenet", None, 10).unwrap();
    let net = spec
        .build(quadra::nn::spec::BuildOptions::default())
        .unwrap();
    let mut sd = Vec::new();
    quadra::nn::Module::state_dict(&net, &mut sd);
    let entries: Vec<(String, Tensor)> = sd
        .iter()
        .map(|(k, t)| {
            let t = if k.ends_with("running_mean") || k.ends_with("running_var") {
                io.get(k)
                    .unwrap_or_else(|| panic!("{k} not in the fixture"))
                    .clone()
            } else {
                let v: Vec<f64> = (0..t.numel() as u64)
                    .map(|i| formula_value(k, t.shape(), i) as f32 as f64)
                    .collect();
                Tensor::from_f64(&v, t.shape(), DType::F32).unwrap()
            };
            (k.clone(), t)
        })
        .collect();
    let dir = tempdir("qmobilenet-torch");
    let path = dir.join("weights.safetensors");
    write_tensors(&path, &entries, None).unwrap();
    let (x, want) = (&io["input"], &io["logits"]);
    for dtype in [DType::F32, DType::F64] {
        let model = import_torch(&path, &spec, dtype, Widen::Refuse).unwrap();
        let got = model.predict(&x.to_dtype(dtype).unwrap()).unwrap();
        let abs = got.max_abs_diff(want).unwrap();
        eprintln!(
            "qmobilenet {dtype:?} vs PyTorch: max abs diff {abs:.3e}, relative {:.3e}",
            rel_err(&got, want)
        );
        // the bound: eval logits within 1e-4
        assert!(
            abs < 1e-4,
            "{dtype:?}: logits differ from PyTorch's by {abs:.3e}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

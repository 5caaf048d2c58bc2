//! Loaded numbers are checked: non-finite weights, statistics or optimizer state and
//! negative running variances are errors naming the file and tensor (a model built from
//! them answers every input with NaN or argmax 0), and F16/BF16 tensors are read only when
//! the caller asks for them to be widened — in a checkpoint never, since its dtype is
//! declared.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use quadra::checkpoint::{
    import_torch, read_tensors, write_tensors, Checkpoint, OptimState, Widen,
};
use quadra::model::Model;
use quadra::nn::spec::BuildOptions;
use quadra::{models, DType, Tensor};
use safetensors::tensor::{Dtype, View};

use crate::support::{fixture, tempdir};

fn qcnn() -> Model {
    let spec = models::get("qcnn", None, 10).unwrap();
    Model::build(&spec, BuildOptions::default()).unwrap()
}

/// The checkpoint of `model` with entry `key`'s flat element `at` set to `value`.
fn tampered(model: &Model, key: &str, at: usize, value: f32) -> Checkpoint {
    let mut ck = Checkpoint::from_model(model).unwrap();
    let (_, t) = ck
        .state
        .iter_mut()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no `{key}` in the state dict"));
    let mut v = t.to_vec::<f32>().unwrap();
    v[at] = value;
    *t = Tensor::from_vec(v, t.shape()).unwrap();
    ck
}

fn load_err(ck: &Checkpoint, dir: &Path, tag: &str) -> String {
    let p = dir.join(format!("{tag}.safetensors"));
    ck.save(&p).unwrap();
    let e = Checkpoint::load(&p)
        .err()
        .unwrap_or_else(|| panic!("{tag}: the checkpoint should be refused"))
        .to_string();
    assert!(e.contains(&format!("{tag}.safetensors")), "{e}");
    e
}

#[test]
fn non_finite_values_and_negative_variances_are_refused_naming_the_tensor() {
    let dir = tempdir("ck-values");
    let m = qcnn();
    let sd = Checkpoint::from_model(&m).unwrap().state;
    let weight = sd
        .iter()
        .find(|(k, _)| k.ends_with("weight"))
        .unwrap()
        .0
        .clone();
    let var = sd
        .iter()
        .find(|(k, _)| k.ends_with("running_var"))
        .expect("qcnn (quadralib-bn) has batch-norm statistics")
        .0
        .clone();
    for (tag, key, value, needle) in [
        ("nan", &weight, f32::NAN, "non-finite"),
        ("inf", &weight, f32::INFINITY, "non-finite"),
        ("neginf", &var, f32::NEG_INFINITY, "non-finite"),
        ("negvar", &var, -0.5, "negative variance"),
    ] {
        let e = load_err(&tampered(&m, key, 3, value), &dir, tag);
        assert!(
            e.contains(key.as_str()) && e.contains(needle) && e.contains("index 3"),
            "{tag}: {e}"
        );
    }
    // a negative value is fine where it is not a variance
    let p = dir.join("neg-weight.safetensors");
    tampered(&m, &weight, 3, -0.5).save(&p).unwrap();
    Checkpoint::load(&p).unwrap();
    // optimizer state too: a NaN momentum buffer would poison the next step
    let mut ck = Checkpoint::from_model(&m).unwrap();
    let (name, shape) = (weight.clone(), sd[0].1.shape().to_vec());
    let mut v = vec![0f32; shape.iter().product()];
    v[0] = f32::NAN;
    ck.optim = Some(OptimState {
        kind: "sgd".into(),
        scalars: serde_json::json!({"lr": 0.1}),
        tensors: vec![(
            format!("momentum_buffer.{name}"),
            Tensor::from_vec(v, &shape).unwrap(),
        )],
    });
    let e = load_err(&ck, &dir, "optim-nan");
    assert!(
        e.contains("optim.momentum_buffer") && e.contains("non-finite"),
        "{e}"
    );
    // and a PyTorch import
    let p = dir.join("torch-nan.safetensors");
    let ck = tampered(&m, &weight, 0, f32::NAN);
    write_tensors(&p, &ck.state, None).unwrap();
    let e = import_torch(&p, &m.spec, DType::F32, Widen::Refuse)
        .err()
        .expect("a NaN weight must be refused")
        .to_string();
    assert!(
        e.contains(weight.as_str()) && e.contains("non-finite"),
        "{e}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A safetensors view of raw bytes in any dtype (the library writes F32/F64 only).
struct Raw(Dtype, Vec<usize>, Vec<u8>);

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.0
    }
    fn shape(&self) -> &[usize] {
        &self.1
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.2)
    }
    fn data_len(&self) -> usize {
        self.2.len()
    }
}

fn bf16_bytes(t: &Tensor) -> Vec<u8> {
    t.to_vec::<f32>()
        .unwrap()
        .iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect()
}

#[test]
fn half_tensors_are_widened_only_when_asked() {
    let dir = tempdir("ck-half");
    // the PyTorch reference weights, saved as BF16 (what `model.bfloat16()` would write)
    let (w, _) = read_tensors(fixture("torch_qresnet14_weights.safetensors")).unwrap();
    let raws: Vec<(String, Raw)> = w
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                Raw(Dtype::BF16, t.shape().to_vec(), bf16_bytes(t)),
            )
        })
        .collect();
    let p = dir.join("bf16.safetensors");
    let bytes = safetensors::serialize(raws.iter().map(|(k, r)| (k.as_str(), r)), None).unwrap();
    std::fs::write(&p, bytes).unwrap();
    let spec = models::get("qresnet14", None, 10).unwrap();
    let e = import_torch(&p, &spec, DType::F32, Widen::Refuse)
        .err()
        .expect("BF16 must not be widened unasked")
        .to_string();
    assert!(
        e.contains("BF16") && e.contains("--widen-half") && e.contains("bf16.safetensors"),
        "{e}"
    );
    // asked: every value is the BF16 value, exactly
    let m = import_torch(&p, &spec, DType::F32, Widen::Half).unwrap();
    let got: HashMap<String, Tensor> = Checkpoint::from_model(&m)
        .unwrap()
        .state
        .into_iter()
        .collect();
    for (k, t) in &w {
        let want: Vec<f32> = t
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|&x| half::bf16::from_f32(x).to_f32())
            .collect();
        assert_eq!(got[k].to_vec::<f32>().unwrap(), want, "{k}");
    }
    // a checkpoint declares its dtype: an F16 tensor in an f32 checkpoint is refused even
    // though it could be widened
    let ck = Checkpoint::from_model(&qcnn()).unwrap();
    let meta = ck.metadata();
    let raws: Vec<(String, Raw)> = ck
        .state
        .iter()
        .enumerate()
        .map(|(i, (k, t))| {
            let v = t.to_vec::<f32>().unwrap();
            let r = if i == 0 {
                let b = v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes());
                Raw(Dtype::F16, t.shape().to_vec(), b.collect())
            } else {
                let b = v.iter().flat_map(|x| x.to_le_bytes());
                Raw(Dtype::F32, t.shape().to_vec(), b.collect())
            };
            (k.clone(), r)
        })
        .collect();
    let p = dir.join("f16-in-f32.safetensors");
    let bytes =
        safetensors::serialize(raws.iter().map(|(k, r)| (k.as_str(), r)), Some(meta)).unwrap();
    std::fs::write(&p, bytes).unwrap();
    let e = Checkpoint::load(&p)
        .expect_err("F16 in an f32 checkpoint")
        .to_string();
    assert!(e.contains(&ck.state[0].0) && e.contains("F16"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

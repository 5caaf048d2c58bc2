//! `Model::predict` from many threads at once equals sequential prediction.

use std::sync::Arc;

use quadra::model::Model;
use quadra::nn::spec::BuildOptions;
use quadra::{models, DType, Tensor};

use crate::support::tempdir;

#[test]
fn concurrent_predicts_equal_sequential() {
    let spec = models::get("qcnn", None, 10).unwrap();
    let model = Model::build(
        &spec,
        BuildOptions {
            seed: 11,
            ..Default::default()
        },
    )
    .unwrap();
    let dir = tempdir("serve-predict");
    let p = dir.join("qcnn.safetensors");
    model.save(&p).unwrap();
    let model = Arc::new(Model::load(&p).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();

    let inputs: Vec<Tensor> = (0..8)
        .map(|i| Tensor::randn(&[1 + i % 3, 1, 28, 28], DType::F32, 1.0, 100 + i as u64).unwrap())
        .collect();
    let sequential: Vec<Vec<f32>> = inputs
        .iter()
        .map(|x| model.predict(x).unwrap().to_vec::<f32>().unwrap())
        .collect();
    let handles: Vec<_> = inputs
        .iter()
        .cloned()
        .map(|x| {
            let m = model.clone();
            std::thread::spawn(move || {
                (0..4)
                    .map(|_| m.predict(&x).unwrap().to_vec::<f32>().unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for (h, want) in handles.into_iter().zip(&sequential) {
        for got in h.join().unwrap() {
            assert_eq!(&got, want);
        }
    }
    // a batch of all inputs equals its pieces (batched predict)
    let all: Vec<f32> = inputs
        .iter()
        .flat_map(|x| x.to_vec::<f32>().unwrap())
        .collect();
    let n: usize = inputs.iter().map(|x| x.shape()[0]).sum();
    let batched = model
        .predict(&Tensor::from_vec(all, &[n, 1, 28, 28]).unwrap())
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let pieces: Vec<f32> = sequential.concat();
    let diff = batched
        .iter()
        .zip(&pieces)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        diff < 1e-5,
        "batched vs per-request predictions differ by {diff}"
    );
    // bad input is an error, not a panic
    let e = model
        .predict(&Tensor::zeros(&[2, 3, 28, 28], DType::F32).unwrap())
        .err()
        .unwrap();
    assert!(e.to_string().contains("[2, 3, 28, 28]"), "{e}");
}

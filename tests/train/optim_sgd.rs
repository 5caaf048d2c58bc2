//! SGD against PyTorch: the expected values were printed by
//!   p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
//!   opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=N)
//!   for step in range(3): p.grad = torch.tensor([0.5, -1.0 + step]); opt.step()

use std::collections::HashMap;

use quadra::nn::conv::Conv2d;
use quadra::nn::Module;
use quadra::ops::conv::ConvGeom;
use quadra::optim::{Optimizer, Sgd};
use quadra::{Category, DType, Tensor};

fn run(nesterov: bool) -> Vec<f64> {
    // a 1x1 conv with 2 input channels and 1 output: its weight is a 2-vector
    let mut m = Conv2d::new("c", ConvGeom::square(2, 1, 1, 1, 0), false, DType::F64, 0).unwrap();
    let mut sd = HashMap::new();
    sd.insert(
        "c.weight".to_string(),
        Tensor::from_vec(vec![1.0f64, -2.0], &[1, 2, 1, 1]).unwrap(),
    );
    m.load_state_dict(&mut sd).unwrap();
    let mut opt = Sgd::new(0.1, 0.9, 0.01, nesterov).unwrap();
    for step in 0..3 {
        m.visit_params(&mut |_, p| {
            let g = Tensor::from_vec_in(
                vec![0.5f64, -1.0 + step as f64],
                &[1, 2, 1, 1],
                quadra::Device::Cpu,
                Category::Gradient,
            )
            .unwrap();
            p.grad = Some(g);
        });
        opt.step(&mut m).unwrap();
    }
    let mut out = Vec::new();
    m.visit_params(&mut |_, p| out = p.value.to_f64_vec());
    out
}

#[test]
fn sgd_matches_pytorch() {
    let plain = run(false);
    let want = [0.714134749, -1.8181694979999998];
    for (a, b) in plain.iter().zip(want) {
        assert!((a - b).abs() < 1e-12, "momentum: {plain:?} vs {want:?}");
    }
    let nest = run(true);
    let want = [0.590209958191, -1.831058916382];
    for (a, b) in nest.iter().zip(want) {
        assert!((a - b).abs() < 1e-12, "nesterov: {nest:?} vs {want:?}");
    }
}

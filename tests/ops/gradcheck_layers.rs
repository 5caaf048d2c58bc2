//! f64 finite-difference gradient checks of the first-order layers (Linear, BatchNorm,
//! ReLU, pooling, Flatten, Dropout, the loss) and of a small conv/bn/relu stack with a
//! residual block; numeric checks against hand-computed values; bad-input errors.
//! Odd shapes everywhere.

use std::collections::HashMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use quadra::device::alloc::cpu_tracker;
use quadra::nn::act::{Dropout, Flatten, ReLU};
use quadra::nn::container::{Residual, Sequential};
use quadra::nn::conv::Conv2d;
use quadra::nn::gradcheck::GradCheck;
use quadra::nn::linear::Linear;
use quadra::nn::loss::{accuracy_count, SoftmaxCrossEntropy};
use quadra::nn::norm::BatchNorm;
use quadra::nn::pool::{AvgPool2d, GlobalAvgPool, MaxPool2d};
use quadra::nn::{Module, Param, ParamKind};
use quadra::ops::conv::ConvGeom;
use quadra::{Category, DType, Tensor};

use crate::support::randn_f64;

/// A tensor whose values are a shuffled 0.1·(0..n) − offset: all distinct and at least 0.1
/// apart, so max pooling has no ties and a 1e-6 step never changes an argmax.
fn distinct(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f64> = (0..n).map(|i| 0.1 * i as f64 - 0.05 * n as f64).collect();
    v.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    Tensor::from_f64(&v, shape, DType::F64).unwrap()
}

fn check(m: &mut dyn Module, x: &Tensor, what: &str) -> quadra::nn::gradcheck::GradReport {
    GradCheck::default()
        .run(m, x)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Give a batch norm non-trivial γ, β so their gradient paths are exercised.
fn randomize_affine(bn: &mut BatchNorm, seed: u64) {
    let c = bn.num_features;
    bn.weight = Param::new(
        Tensor::rand_uniform(&[c], DType::F64, 0.5, 1.5, seed).unwrap(),
        ParamKind::NormScale,
    );
    bn.bias = Param::new(randn_f64(&[c], seed + 1), ParamKind::NormShift);
}

fn err_of<T>(r: quadra::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

// ---- gradient checks ----------------------------------------------------------------------

#[test]
fn linear_gradients_match_finite_differences() {
    for (i, &(n, fin, fout, bias)) in [(3, 5, 4, true), (2, 7, 3, false), (1, 1, 5, true)]
        .iter()
        .enumerate()
    {
        let mut m = Linear::new("fc", fin, fout, bias, DType::F64, 20 + i as u64).unwrap();
        let rep = check(&mut m, &randn_f64(&[n, fin], 30 + i as u64), "linear");
        let want = if bias { 3 } else { 2 };
        assert_eq!(rep.tensors.len(), want, "{:?}", rep.tensors);
        assert!(rep.tensors.contains(&"fc.weight".to_string()));
    }
}

#[test]
fn batchnorm2d_gradients_match_finite_differences() {
    for (i, shape) in [[3, 2, 3, 5], [2, 3, 1, 3], [1, 1, 3, 3]]
        .iter()
        .enumerate()
    {
        let mut bn = BatchNorm::new_2d("bn", shape[1], 1e-5, 0.1, DType::F64).unwrap();
        randomize_affine(&mut bn, 40 + i as u64);
        let rep = check(&mut bn, &randn_f64(shape, 50 + i as u64), "bn2d");
        assert_eq!(rep.tensors, ["input", "bn.weight", "bn.bias"]);
    }
}

#[test]
fn batchnorm1d_gradients_match_finite_differences() {
    // (N, C), (N, C, L), and (1, C, L): one sample is enough when L > 1
    let shapes: [&[usize]; 3] = [&[5, 3], &[2, 3, 4], &[1, 3, 5]];
    for (i, shape) in shapes.iter().enumerate() {
        let mut bn = BatchNorm::new_1d("bn1d", 3, 1e-5, 0.1, DType::F64).unwrap();
        randomize_affine(&mut bn, 60 + i as u64);
        check(&mut bn, &randn_f64(shape, 70 + i as u64), "bn1d");
    }
}

#[test]
fn relu_gradients_match_finite_differences() {
    let mut m = ReLU::new("relu");
    // distinct values 0.1 apart, offset by 0.05 so none is within a step of the kink
    let x = distinct(&[2, 3, 5], 1);
    let x = Tensor::from_f64(
        &x.to_f64_vec().iter().map(|v| v + 0.05).collect::<Vec<_>>(),
        x.shape(),
        DType::F64,
    )
    .unwrap();
    let rep = check(&mut m, &x, "relu");
    assert_eq!(rep.checked, 30);
}

#[test]
fn maxpool2d_gradients_match_finite_differences() {
    // (kernel, stride, padding, input shape): stride ≠ kernel, padding, odd sizes
    let cases = [
        (3, 2, 1, [2, 3, 7, 6]),
        (2, 3, 0, [1, 2, 5, 7]),
        (3, 1, 1, [2, 2, 5, 5]),
        (2, 1, 1, [1, 3, 3, 5]),
        (5, 2, 2, [1, 1, 5, 9]),
    ];
    for (i, (k, s, p, shape)) in cases.into_iter().enumerate() {
        let mut m = MaxPool2d::new("pool", k, s, p).unwrap();
        check(
            &mut m,
            &distinct(&shape, i as u64),
            &format!("maxpool case {i}"),
        );
    }
}

#[test]
fn avgpool2d_gradients_match_finite_differences() {
    let cases = [
        (3, 2, 1, [2, 3, 7, 5]),
        (2, 1, 1, [1, 2, 3, 5]),
        (3, 3, 0, [2, 1, 7, 8]),
        (4, 3, 2, [1, 2, 5, 6]),
    ];
    for (i, (k, s, p, shape)) in cases.into_iter().enumerate() {
        let mut m = AvgPool2d::new("avg", k, s, p).unwrap();
        check(
            &mut m,
            &randn_f64(&shape, 80 + i as u64),
            &format!("avgpool case {i}"),
        );
    }
}

#[test]
fn global_avg_pool_and_flatten_gradients_match_finite_differences() {
    let mut g = GlobalAvgPool::new("gap");
    let x = randn_f64(&[3, 4, 3, 5], 90);
    assert_eq!(g.infer(&x).unwrap().shape(), [3, 4]);
    check(&mut g, &x, "global avg pool");

    let mut f = Flatten::new("flat");
    let x = randn_f64(&[2, 3, 3, 5], 91);
    let y = f.forward(&x).unwrap();
    assert_eq!(y.shape(), [2, 45]);
    assert!(y.same_storage(&x), "Flatten shares the input's storage");
    f.clear_saved();
    check(&mut f, &x, "flatten");
}

#[test]
fn dropout_gradient_is_mask_times_scale() {
    let p = 0.3;
    let mut d = Dropout::new("drop", p, 1234).unwrap();
    let x = randn_f64(&[4, 5, 7, 3], 100);
    let y = d.forward(&x).unwrap();
    let mask = d.mask().expect("mask kept").to_vec();
    let scale = 1.0 / (1.0 - p);
    assert_eq!(d.scale(), scale);
    let (xv, yv) = (x.to_f64_vec(), y.to_f64_vec());
    for i in 0..xv.len() {
        assert_eq!(yv[i], xv[i] * f64::from(mask[i]) * scale, "y[{i}]");
    }
    let g = randn_f64(x.shape(), 101);
    let dx = d.backward(&g).unwrap();
    assert_eq!(dx.shape(), x.shape());
    for (i, (&gv, &dv)) in g.to_f64_vec().iter().zip(&dx.to_f64_vec()).enumerate() {
        assert_eq!(dv, gv * f64::from(mask[i]) * scale, "dx[{i}]");
    }
    assert!(d.mask().is_none(), "backward releases the mask");
    let kept = mask.iter().filter(|&&m| m == 1).count() as f64 / mask.len() as f64;
    assert!((kept - 0.7).abs() < 0.08, "kept fraction {kept}");

    // reproducible from the seed; the next call draws a fresh mask
    let mut d2 = Dropout::new("drop", p, 1234).unwrap();
    d2.forward(&x).unwrap();
    assert_eq!(d2.mask().unwrap(), &mask[..]);
    d2.forward(&x).unwrap();
    assert_ne!(d2.mask().unwrap(), &mask[..]);
    // infer is the identity; p = 0 is the identity in training too
    assert!(d.infer(&x).unwrap().same_storage(&x));
    let mut d0 = Dropout::new("drop0", 0.0, 1).unwrap();
    assert_eq!(d0.forward(&x).unwrap().to_f64_vec(), xv);
    assert_eq!(d0.backward(&g).unwrap().to_f64_vec(), g.to_f64_vec());
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    let (n, k) = (5, 7);
    let targets = [3, 0, 6, 6, 2];
    for eps in [0.0, 0.2] {
        let loss = SoftmaxCrossEntropy::new(eps).unwrap();
        let z = Tensor::randn(&[n, k], DType::F64, 3.0, 110).unwrap();
        let (_, g) = loss.forward(&z, &targets).unwrap();
        let (zv, gv) = (z.to_f64_vec(), g.to_f64_vec());
        let h = 1e-6;
        for i in 0..n * k {
            let mut zp = zv.clone();
            zp[i] += h;
            let lp = loss
                .forward(
                    &Tensor::from_f64(&zp, &[n, k], DType::F64).unwrap(),
                    &targets,
                )
                .unwrap()
                .0;
            zp[i] -= 2.0 * h;
            let lm = loss
                .forward(
                    &Tensor::from_f64(&zp, &[n, k], DType::F64).unwrap(),
                    &targets,
                )
                .unwrap()
                .0;
            let num = (lp - lm) / (2.0 * h);
            assert!(
                (num - gv[i]).abs() < 1e-8 + 1e-6 * num.abs(),
                "eps {eps}, logit {i}: analytic {} numeric {num}",
                gv[i]
            );
        }
        // each row of dL/dz sums to 0 (softmax and the smoothed target both sum to 1)
        for r in 0..n {
            let s: f64 = gv[r * k..(r + 1) * k].iter().sum();
            assert!(s.abs() < 1e-15, "row {r} sums to {s}");
        }
    }
}

#[test]
fn conv_bn_relu_residual_stack_gradients_match_finite_differences() {
    let dt = DType::F64;
    let conv = |path: &str, ci, co, k, s, p, seed| -> Box<dyn Module> {
        Box::new(Conv2d::new(path, ConvGeom::square(ci, co, k, s, p), false, dt, seed).unwrap())
    };
    let bn = |path: &str, c, seed| -> Box<dyn Module> {
        let mut b = BatchNorm::new_2d(path, c, 1e-5, 0.1, dt).unwrap();
        randomize_affine(&mut b, seed);
        Box::new(b)
    };
    let block1 = Residual::new(
        "layer1",
        Sequential::new(
            "layer1",
            vec![
                conv("layer1.conv1", 3, 3, 3, 1, 1, 2),
                bn("layer1.bn1", 3, 3),
                Box::new(ReLU::new("layer1.relu")),
                conv("layer1.conv2", 3, 3, 3, 1, 1, 4),
                bn("layer1.bn2", 3, 5),
            ],
        ),
        None,
        true,
    );
    let block2 = Residual::new(
        "layer2",
        Sequential::new(
            "layer2",
            vec![
                conv("layer2.conv1", 3, 5, 3, 2, 1, 6),
                bn("layer2.bn1", 5, 7),
            ],
        ),
        Some(Sequential::new(
            "layer2.shortcut",
            vec![
                conv("layer2.shortcut.0", 3, 5, 1, 2, 0, 8),
                bn("layer2.shortcut.1", 5, 9),
            ],
        )),
        true,
    );
    let mut net = Sequential::new(
        "",
        vec![
            conv("conv1", 2, 3, 3, 1, 1, 1),
            bn("bn1", 3, 10),
            Box::new(ReLU::new("relu")),
            Box::new(block1),
            Box::new(MaxPool2d::new("pool", 3, 2, 1).unwrap()),
            Box::new(block2),
            Box::new(GlobalAvgPool::new("gap")),
            Box::new(Linear::new("fc", 5, 3, true, dt, 11).unwrap()),
        ],
    );
    let x = randn_f64(&[2, 2, 9, 7], 12);
    assert_eq!(net.infer(&x).unwrap().shape(), [2, 3]);
    let rep = check(&mut net, &x, "stack");
    // input + conv1, bn1 (2), layer1 (2 convs, 2 bns × 2), layer2 (2 convs, 2 bns × 2), fc (2)
    assert_eq!(
        rep.tensors.len(),
        1 + 1 + 2 + 6 + 6 + 2,
        "{:?}",
        rep.tensors
    );
}

// ---- numbers computed by hand -------------------------------------------------------------

#[test]
fn batchnorm_running_statistics_by_hand() {
    // PyTorch: bn = nn.BatchNorm1d(2).double(); bn(x) with
    // x = [[1, 10], [2, 20], [3, 30], [4, 60]]. By hand:
    //   channel 0: mean 2.5, biased var 1.25, unbiased var 5/3
    //   channel 1: mean 30,  biased var 350,  unbiased var 1400/3
    //   running_mean = 0.9·0 + 0.1·mean = [0.25, 3.0]
    //   running_var  = 0.9·1 + 0.1·unbiased = [1.0666667, 47.5666667]
    //   y[:, 0] = (x − 2.5)/√(1.25 + 1e-5) = (x − 2.5)·0.894423613312618
    let mut bn = BatchNorm::new_1d("bn", 2, 1e-5, 0.1, DType::F64).unwrap();
    let x = Tensor::from_f64(
        &[1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 60.0],
        &[4, 2],
        DType::F64,
    )
    .unwrap();
    let y = bn.forward(&x).unwrap().to_f64_vec();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    let rm = bn.running_mean.to_f64_vec();
    let rv = bn.running_var.to_f64_vec();
    assert!(close(rm[0], 0.25) && close(rm[1], 3.0), "{rm:?}");
    assert!(close(rv[0], 0.9 + 0.1 * 5.0 / 3.0), "{rv:?}");
    assert!(close(rv[1], 0.9 + 0.1 * 1400.0 / 3.0), "{rv:?}");
    for (i, xv) in [1.0, 2.0, 3.0, 4.0].iter().enumerate() {
        assert!(close(y[2 * i], (xv - 2.5) * 0.894423613312618), "y[{i},0]");
    }
    // a second step: running = 0.9·running + 0.1·batch again
    bn.clear_saved();
    bn.forward(&x).unwrap();
    let rm2 = bn.running_mean.to_f64_vec();
    assert!(close(rm2[0], 0.9 * 0.25 + 0.25), "{rm2:?}");

    // infer uses the running statistics and mutates nothing
    let before = bn.running_var.to_f64_vec();
    let yi = bn.infer(&x).unwrap().to_f64_vec();
    let (m0, v0) = (rm2[0], bn.running_var.to_f64_vec()[0]);
    assert!(close(yi[0], (1.0 - m0) / (v0 + 1e-5).sqrt()));
    assert_eq!(bn.running_var.to_f64_vec(), before);
    // a single sample is fine in eval mode
    let one = Tensor::from_f64(&[1.0, 2.0], &[1, 2], DType::F64).unwrap();
    assert_eq!(bn.infer(&one).unwrap().shape(), [1, 2]);
}

#[test]
fn batchnorm_state_dict_uses_pytorch_names() {
    let mut bn = BatchNorm::new_2d("layer1.0.bn1", 3, 1e-5, 0.1, DType::F32).unwrap();
    let mut sd = Vec::new();
    bn.state_dict(&mut sd);
    let names: Vec<&str> = sd.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "layer1.0.bn1.weight",
            "layer1.0.bn1.bias",
            "layer1.0.bn1.running_mean",
            "layer1.0.bn1.running_var"
        ]
    );
    assert_eq!(sd[3].1.to_f64_vec(), [1.0; 3]);
    // a PyTorch state dict (f64 here, with num_batches_tracked) loads and is consumed
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for (leaf, v) in [
        ("weight", [1.0, 2.0, 3.0]),
        ("bias", [0.1, 0.2, 0.3]),
        ("running_mean", [0.5, -0.5, 0.0]),
        ("running_var", [4.0, 1.0, 0.25]),
    ] {
        map.insert(
            format!("layer1.0.bn1.{leaf}"),
            Tensor::from_f64(&v, &[3], DType::F64).unwrap(),
        );
    }
    map.insert(
        "layer1.0.bn1.num_batches_tracked".into(),
        Tensor::from_f64(&[7.0], &[], DType::F64).unwrap(),
    );
    bn.load_state_dict(&mut map).unwrap();
    assert!(map.is_empty(), "left over: {:?}", map.keys());
    assert_eq!(bn.running_var.dtype(), DType::F32);
    assert_eq!(bn.running_var.category(), Category::Parameter);
    // eval: y = γ (x − m)/√(v + eps) + β; at x = 1 for channel 0: 1·0.5/√(4 + 1e-5) + 0.1
    let x = Tensor::full_in(
        1.0,
        &[1, 3, 1, 1],
        DType::F32,
        quadra::Device::Cpu,
        Category::Data,
    )
    .unwrap();
    let y = bn.infer(&x).unwrap().to_f64_vec();
    assert!(
        (y[0] - (0.5 / (4.0f64 + 1e-5).sqrt() + 0.1)).abs() < 1e-6,
        "{y:?}"
    );
    // a missing entry names itself
    let mut empty = HashMap::new();
    assert!(err_of(bn.load_state_dict(&mut empty)).contains("layer1.0.bn1.weight"));
}

#[test]
fn cross_entropy_known_values() {
    // logits [[1, 2, 3], [1, 1, 1]], targets [0, 2].
    // Row 0: lse = log(e + e² + e³) = 3.40760596444438, so −log p = [2.4076…, 1.4076…, 0.4076…],
    //   ε = 0:   2.40760596444438
    //   ε = 0.1: 0.9·2.40760596444438 + 0.1·1.40760596444438 = lse − (0.9·1 + 0.1·2)
    //            = 2.30760596444438
    // Row 1: uniform, −log p_k = ln 3 = 1.0986122886681098 whatever ε.
    // Means: ε = 0: 1.7531091265562448, ε = 0.1: 1.703109126556245
    // (PyTorch: F.cross_entropy(z, t, label_smoothing=0.1) → 1.7031, in float64 the same.)
    // dL/dz[0] = (p − 0.9·onehot(0) − 0.1/3)/2 with p = softmax(1,2,3)
    //          = [-0.42165138008147646, 0.10569756886073219, 0.31595381122074434]
    let z = Tensor::from_f64(&[1.0, 2.0, 3.0, 1.0, 1.0, 1.0], &[2, 3], DType::F64).unwrap();
    let (l0, _) = SoftmaxCrossEntropy::new(0.0)
        .unwrap()
        .forward(&z, &[0, 2])
        .unwrap();
    assert!((l0 - 1.7531091265562448).abs() < 1e-14, "{l0}");
    let (l1, g) = SoftmaxCrossEntropy::new(0.1)
        .unwrap()
        .forward(&z, &[0, 2])
        .unwrap();
    assert!((l1 - 1.703109126556245).abs() < 1e-14, "{l1}");
    let want = [
        -0.42165138008147646,
        0.10569756886073219,
        0.31595381122074434,
    ];
    for (a, b) in g.to_f64_vec().iter().zip(want) {
        assert!((a - b).abs() < 1e-15, "{a} vs {b}");
    }
    // f32 logits give f32 gradients and the same loss to f32 precision
    let z32 = z.to_dtype(DType::F32).unwrap();
    let (l32, g32) = SoftmaxCrossEntropy::new(0.1)
        .unwrap()
        .forward(&z32, &[0, 2])
        .unwrap();
    assert_eq!(g32.dtype(), DType::F32);
    assert!((l32 - l1).abs() < 1e-6);
    // row 0's argmax is class 2, row 1 ties (first = class 0)
    assert_eq!(accuracy_count(&z, &[2, 0]).unwrap(), 2);
    assert_eq!(accuracy_count(&z, &[0, 2]).unwrap(), 0);
}

#[test]
fn linear_forward_by_hand() {
    // W = [[1, 2], [3, 4], [5, 6]] (out 3, in 2), b = [0.5, 0, −1], x = [[1, −1]]:
    // y = x Wᵀ + b = [1 − 2 + 0.5, 3 − 4, 5 − 6 − 1] = [−0.5, −1, −2]
    let mut m = Linear::new("fc", 2, 3, true, DType::F64, 0).unwrap();
    let mut map = HashMap::new();
    map.insert(
        "fc.weight".to_string(),
        Tensor::from_f64(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2], DType::F64).unwrap(),
    );
    map.insert(
        "fc.bias".to_string(),
        Tensor::from_f64(&[0.5, 0.0, -1.0], &[3], DType::F64).unwrap(),
    );
    m.load_state_dict(&mut map).unwrap();
    let x = Tensor::from_f64(&[1.0, -1.0], &[1, 2], DType::F64).unwrap();
    assert_eq!(m.infer(&x).unwrap().to_f64_vec(), [-0.5, -1.0, -2.0]);
}

// ---- what each layer keeps ----------------------------------------------------------------

/// Bytes charged to (layer, saved-for-backward) right now.
fn saved_bytes(layer: &str) -> u64 {
    cpu_tracker()
        .snapshot()
        .per_layer
        .iter()
        .filter(|(l, c, _)| l == layer && *c == Category::SavedForBackward)
        .map(|(_, _, b)| b)
        .sum()
}

#[test]
fn saved_for_backward_is_accounted_and_released() {
    let x = Tensor::from_vec(vec![0.5f32; 2 * 3 * 5 * 5], &[2, 3, 5, 5]).unwrap();
    // max pool keeps u32 indices of the (2, 3, 3, 3) output, not its input
    let mut mp = MaxPool2d::new("acct.pool", 3, 2, 1).unwrap();
    let y = mp.forward(&x).unwrap();
    assert_eq!(y.shape(), [2, 3, 3, 3]);
    assert_eq!(saved_bytes("acct.pool"), 2 * 3 * 3 * 3 * 4);
    assert_eq!(x.category(), Category::Workspace, "input not kept");
    mp.backward(&y).unwrap();
    assert_eq!(saved_bytes("acct.pool"), 0);
    // dropout keeps a byte mask
    let mut d = Dropout::new("acct.drop", 0.5, 3).unwrap();
    d.forward(&x).unwrap();
    assert_eq!(saved_bytes("acct.drop"), 150);
    d.clear_saved();
    assert_eq!(saved_bytes("acct.drop"), 0);
    // batch norm keeps x plus mean and rstd (C each)
    let mut bn = BatchNorm::new_2d("acct.bn", 3, 1e-5, 0.1, DType::F32).unwrap();
    let xb = x.copy_in(Category::Workspace).unwrap();
    let yb = bn.forward(&xb).unwrap();
    assert_eq!(saved_bytes("acct.bn"), 150 * 4 + 2 * 3 * 4);
    drop(xb);
    bn.backward(&yb).unwrap();
    assert_eq!(saved_bytes("acct.bn"), 0);
    // ReLU keeps its output; avg/global pooling and flatten keep nothing
    let mut r = ReLU::new("acct.relu");
    let yr = r.forward(&x).unwrap();
    assert_eq!(yr.category(), Category::SavedForBackward);
    assert_eq!(saved_bytes("acct.relu"), 150 * 4);
    let mut ap = AvgPool2d::new("acct.avg", 3, 2, 1).unwrap();
    ap.forward(&x).unwrap();
    let mut gp = GlobalAvgPool::new("acct.gap");
    gp.forward(&x).unwrap();
    assert_eq!(saved_bytes("acct.avg") + saved_bytes("acct.gap"), 0);
}

// ---- bad input ----------------------------------------------------------------------------

#[test]
fn layers_reject_bad_input_with_clear_errors() {
    let dt = DType::F32;
    let z = |s: &[usize]| Tensor::zeros(s, dt).unwrap();

    // Linear
    let mut fc = Linear::new("head.fc", 6, 3, true, dt, 0).unwrap();
    let e = err_of(fc.forward(&z(&[2, 3, 2])));
    assert!(e.contains("head.fc") && e.contains("2-d"), "{e}");
    let e = err_of(fc.forward(&z(&[2, 5])));
    assert!(e.contains("head.fc") && e.contains("5 features"), "{e}");
    let e = err_of(fc.infer(&z(&[0, 6])));
    assert!(e.contains("empty"), "{e}");
    let e = err_of(fc.infer(&Tensor::zeros(&[2, 6], DType::F64).unwrap()));
    assert!(e.contains("head.fc") && e.contains("f64"), "{e}");
    let e = err_of(fc.backward(&z(&[2, 3])));
    assert!(e.contains("without a training forward"), "{e}");
    fc.forward(&z(&[2, 6])).unwrap();
    let e = err_of(fc.backward(&z(&[2, 4])));
    assert!(
        e.contains("head.fc") && e.contains("output gradient"),
        "{e}"
    );
    assert!(err_of(Linear::new("fc0", 0, 3, true, dt, 0)).contains("fc0"));

    // BatchNorm
    let mut bn = BatchNorm::new_2d("bn1", 4, 1e-5, 0.1, dt).unwrap();
    let e = err_of(bn.forward(&z(&[2, 4, 3])));
    assert!(e.contains("bn1") && e.contains("(N, C, H, W)"), "{e}");
    let e = err_of(bn.forward(&z(&[2, 3, 3, 3])));
    assert!(e.contains("bn1") && e.contains("3 channels"), "{e}");
    let e = err_of(bn.forward(&z(&[0, 4, 3, 3])));
    assert!(e.contains("empty"), "{e}");
    let e = err_of(bn.forward(&z(&[1, 4, 1, 1])));
    assert!(e.contains("more than 1 value per channel"), "{e}");
    let mut bn1 = BatchNorm::new_1d("bn1d", 4, 1e-5, 0.1, dt).unwrap();
    let e = err_of(bn1.forward(&z(&[1, 4])));
    assert!(
        e.contains("bn1d") && e.contains("more than 1 value per channel"),
        "{e}"
    );
    let e = err_of(bn1.forward(&z(&[2, 4, 1, 1])));
    assert!(e.contains("(N, C) or 3-d"), "{e}");
    assert!(err_of(BatchNorm::new_2d("bnm", 4, 1e-5, 1.5, dt)).contains("momentum"));
    assert!(err_of(BatchNorm::new_2d("bnc", 0, 1e-5, 0.1, dt)).contains("bnc"));
    assert!(err_of(BatchNorm::new_1d("bne", 2, -1.0, 0.1, dt)).contains("eps"));

    // pooling
    let mut mp = MaxPool2d::new("pool1", 5, 1, 1).unwrap();
    let e = err_of(mp.forward(&z(&[1, 2, 2, 3])));
    assert!(
        e.contains("pool1") && e.contains("larger than the padded input 4x5"),
        "{e}"
    );
    let e = err_of(mp.forward(&z(&[2, 8, 8])));
    assert!(e.contains("pool1") && e.contains("4-d"), "{e}");
    let e = err_of(mp.infer(&z(&[0, 2, 8, 8])));
    assert!(e.contains("empty batch"), "{e}");
    assert!(err_of(MaxPool2d::new("p2", 3, 2, 2)).contains("at most half"));
    assert!(err_of(MaxPool2d::new("p3", 2, 0, 0)).contains("stride"));
    assert!(err_of(MaxPool2d::new("p4", 0, 1, 0)).contains("kernel"));
    let ap = AvgPool2d::new("avg1", 3, 3, 0).unwrap();
    let e = err_of(ap.infer(&z(&[1, 1, 2, 9])));
    assert!(
        e.contains("avg1") && e.contains("larger than the padded input"),
        "{e}"
    );
    assert!(err_of(AvgPool2d::new("avg2", 2, 1, 2)).contains("avg2"));
    let gap = GlobalAvgPool::new("gap1");
    let e = err_of(gap.infer(&z(&[2, 3])));
    assert!(e.contains("gap1") && e.contains("4-d"), "{e}");
    let e = err_of(
        MaxPool2d::new("p5", 2, 2, 0)
            .unwrap()
            .backward(&z(&[1, 1, 1, 1])),
    );
    assert!(
        e.contains("p5") && e.contains("without a training forward"),
        "{e}"
    );

    // Flatten, ReLU
    let e = err_of(Flatten::new("flat1").forward(&z(&[5])));
    assert!(e.contains("flat1") && e.contains("rank"), "{e}");
    let mut r = ReLU::new("relu1");
    r.forward(&z(&[2, 3])).unwrap();
    let e = err_of(r.backward(&z(&[3, 2])));
    assert!(e.contains("relu1") && e.contains("output gradient"), "{e}");

    // Dropout
    for p in [1.5, 1.0, -0.1, f64::NAN] {
        let e = err_of(Dropout::new("drop1", p, 0));
        assert!(e.contains("drop1") && e.contains("[0, 1)"), "{e}");
    }

    // loss
    let ce = SoftmaxCrossEntropy::new(0.1).unwrap();
    let logits = z(&[3, 5]);
    let e = err_of(ce.forward(&logits, &[0, 4, 5]));
    assert!(
        e.contains("targets[2] = 5") && e.contains("5 classes"),
        "{e}"
    );
    let e = err_of(ce.forward(&logits, &[0, 1]));
    assert!(e.contains("2 targets for a batch of 3"), "{e}");
    let e = err_of(ce.forward(&z(&[3, 5, 1]), &[0, 1, 2]));
    assert!(e.contains("logits") && e.contains("2-d"), "{e}");
    let e = err_of(ce.forward(&z(&[0, 5]), &[]));
    assert!(e.contains("empty"), "{e}");
    assert!(err_of(SoftmaxCrossEntropy::new(1.0)).contains("label_smoothing"));
    let e = err_of(accuracy_count(&logits, &[9, 0, 0]));
    assert!(e.contains("targets[0] = 9"), "{e}");
}

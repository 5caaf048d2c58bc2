//! Quadratic layers: f64 finite-difference gradient checks of every neuron (conv and linear,
//! stored and recompute), stored ≡ recompute, inference against a hand-written unfused
//! composition (naive loops, independent of im2col), state-dict names and round trip, and
//! bad input.

use std::collections::HashMap;

use quadra::nn::gradcheck::GradCheck;
use quadra::nn::quadratic::{NeuronType, QuadConv2d, QuadLinear};
use quadra::nn::{BackpropMode, Module, ParamKind};
use quadra::ops::conv::ConvGeom;
use quadra::{Category, DType, Tensor};

use crate::support::geom;

const MODES: [BackpropMode; 2] = [BackpropMode::Stored, BackpropMode::Recompute];

/// (geometry, input (n, h, w), bias): stride, padding, dilation, groups, odd sizes.
fn conv_cases(neuron: NeuronType) -> Vec<(ConvGeom, (usize, usize, usize), bool)> {
    let mut v = vec![
        (
            geom(3, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
            (2, 5, 6),
            true,
        ),
        (
            geom(2, 3, (3, 2), (1, 2), (2, 1), (2, 2), 1),
            (3, 6, 7),
            false,
        ),
    ];
    if neuron != NeuronType::T1 {
        v.push((
            geom(4, 6, (3, 2), (2, 1), (0, 1), (1, 1), 2),
            (3, 7, 6),
            true,
        ));
        v.push((
            geom(6, 6, (1, 1), (2, 2), (0, 0), (1, 1), 3),
            (1, 5, 5),
            false,
        ));
        // depthwise (groups = channels), as qmobilenet's quadratic depthwise convs
        v.push((
            geom(3, 3, (3, 3), (2, 2), (1, 1), (1, 1), 3),
            (2, 5, 6),
            false,
        ));
    }
    v
}

/// (n, in, out, bias)
const LINEAR_CASES: [(usize, usize, usize, bool); 2] = [(3, 5, 4, true), (5, 3, 2, false)];

/// Give BN scale/shift non-trivial values so their gradient paths are exercised.
fn randomize_bn(m: &mut dyn Module, seed: u64) {
    m.visit_params(&mut |name, p| {
        let dt = p.value.dtype();
        if name.ends_with("bn.weight") {
            p.value = Tensor::rand_uniform(p.value.shape(), dt, 0.5, 1.5, seed).unwrap();
            p.value.retag(Category::Parameter);
        } else if name.ends_with("bn.bias") {
            p.value = Tensor::rand_uniform(p.value.shape(), dt, -0.5, 0.5, seed + 1).unwrap();
            p.value.retag(Category::Parameter);
        }
    });
}

#[test]
fn conv_gradients_match_finite_differences() {
    for neuron in NeuronType::ALL {
        for (ci, (g, (n, h, w), bias)) in conv_cases(neuron).into_iter().enumerate() {
            for mode in MODES {
                let what = format!("{neuron} conv case {ci} {mode}");
                let mut m = QuadConv2d::new("q", neuron, g, bias, mode, DType::F64, 11 + ci as u64)
                    .unwrap();
                randomize_bn(&mut m, 5);
                let x = Tensor::randn(&[n, g.c_in, h, w], DType::F64, 1.0, 3 + ci as u64).unwrap();
                let rep = GradCheck::default()
                    .run(&mut m, &x)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(rep.checked > 40, "{what}: checked only {}", rep.checked);
                let n_params = 1
                    + neuron.branches().min(1)
                    + usize::from(neuron.lift() != quadra::ops::quadratic::Lift::None);
                assert!(
                    rep.tensors.len() >= n_params,
                    "{what}: tensors {:?}",
                    rep.tensors
                );
            }
        }
    }
}

#[test]
fn linear_gradients_match_finite_differences() {
    for neuron in NeuronType::ALL {
        for (ci, (n, fi, fo, bias)) in LINEAR_CASES.into_iter().enumerate() {
            for mode in MODES {
                let what = format!("{neuron} linear case {ci} {mode}");
                let mut m =
                    QuadLinear::new("q", neuron, fi, fo, bias, mode, DType::F64, 21 + ci as u64)
                        .unwrap();
                randomize_bn(&mut m, 6);
                let x = Tensor::randn(&[n, fi], DType::F64, 1.0, 9 + ci as u64).unwrap();
                let rep = GradCheck::default()
                    .run(&mut m, &x)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(rep.checked > 10, "{what}: checked only {}", rep.checked);
            }
        }
    }
}

/// Forward + backward with a fixed output gradient: (y, dx, [(param name, grad)]).
#[allow(clippy::type_complexity)]
fn run_once(
    m: &mut dyn Module,
    x: &Tensor,
    seed: u64,
) -> (Vec<f64>, Vec<f64>, Vec<(String, Vec<f64>)>) {
    m.visit_params(&mut |_, p| p.zero_grad());
    let y = m.forward(x).unwrap();
    let g = Tensor::randn(y.shape(), y.dtype(), 1.0, seed).unwrap();
    let dx = m.backward(&g).unwrap();
    let mut grads = Vec::new();
    m.visit_params(&mut |n, p| grads.push((n.to_string(), p.grad.as_ref().unwrap().to_f64_vec())));
    (y.to_f64_vec(), dx.to_f64_vec(), grads)
}

fn assert_close(a: &[f64], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let tol = 1e-12 * x.abs().max(y.abs()).max(1e-300);
        assert!((x - y).abs() <= tol, "{what}[{i}]: {x:e} vs {y:e}");
    }
}

#[test]
fn stored_and_recompute_agree_exactly() {
    for neuron in NeuronType::ALL {
        let g = if neuron == NeuronType::T1 {
            geom(3, 5, (3, 3), (2, 1), (1, 1), (1, 1), 1)
        } else {
            geom(4, 6, (3, 3), (2, 1), (1, 1), (1, 2), 2)
        };
        let x = Tensor::randn(&[5, g.c_in, 9, 8], DType::F64, 1.0, 77).unwrap();
        let xl = Tensor::randn(&[7, 6], DType::F64, 1.0, 78).unwrap();
        let mut res = Vec::new();
        for mode in MODES {
            let mut c = QuadConv2d::new("c", neuron, g, true, mode, DType::F64, 3).unwrap();
            let mut l = QuadLinear::new("l", neuron, 6, 5, true, mode, DType::F64, 4).unwrap();
            randomize_bn(&mut c, 8);
            randomize_bn(&mut l, 9);
            res.push((run_once(&mut c, &x, 1), run_once(&mut l, &xl, 2)));
        }
        for (kind, a, b) in [
            ("conv", &res[0].0, &res[1].0),
            ("linear", &res[0].1, &res[1].1),
        ] {
            let what = format!("{neuron} {kind}");
            assert_close(&a.0, &b.0, &format!("{what} output"));
            assert_close(&a.1, &b.1, &format!("{what} dx"));
            assert_eq!(a.2.len(), b.2.len());
            for ((na, ga), (nb, gb)) in a.2.iter().zip(&b.2) {
                assert_eq!(na, nb);
                assert_close(ga, gb, &format!("{what} grad {na}"));
            }
            // and the gradients are not trivially zero
            assert!(a.1.iter().any(|v| v.abs() > 1e-6), "{what}: dx is zero");
        }
    }
}

// ---------------------------------------------------------------------------------------
// the unfused reference: naive loops over the state-dict entries

struct Sd(HashMap<String, Tensor>);

impl Sd {
    fn get(&self, k: &str) -> Vec<f64> {
        self.0
            .get(k)
            .unwrap_or_else(|| panic!("missing {k}; have {:?}", self.0.keys()))
            .to_f64_vec()
    }
    fn opt(&self, k: &str) -> Option<Vec<f64>> {
        self.0.get(k).map(|t| t.to_f64_vec())
    }
}

/// The patch of image i at output (oy, ox), in (c, ky, kx) order, zero in the padding.
fn patch(
    x: &[f64],
    (c_in, h, w): (usize, usize, usize),
    g: &ConvGeom,
    i: usize,
    oy: usize,
    ox: usize,
) -> Vec<f64> {
    let mut u = Vec::new();
    for c in 0..c_in {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let iy = (oy * g.stride.0 + ky * g.dilation.0) as isize - g.padding.0 as isize;
                let ix = (ox * g.stride.1 + kx * g.dilation.1) as isize - g.padding.1 as isize;
                u.push(
                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                        x[((i * c_in + c) * h + iy as usize) * w + ix as usize]
                    } else {
                        0.0
                    },
                );
            }
        }
    }
    u
}

/// A plain conv (groups honoured) or linear map, out (N, C, L).
struct Ref {
    x: Vec<f64>,
    n: usize,
    /// conv: (geom, h, w, ho, wo); None for linear
    conv: Option<(ConvGeom, usize, usize, usize, usize)>,
    c_in: usize,
    c_out: usize,
}

impl Ref {
    fn l(&self) -> usize {
        self.conv.map_or(1, |(_, _, _, ho, wo)| ho * wo)
    }
    /// The input vectors per (image, position): patches or rows.
    fn vec_at(&self, x: &[f64], i: usize, pos: usize) -> Vec<f64> {
        match self.conv {
            Some((g, h, w, _, wo)) => patch(x, (self.c_in, h, w), &g, i, pos / wo, pos % wo),
            None => x[i * self.c_in..(i + 1) * self.c_in].to_vec(),
        }
    }
    fn map(&self, x: &[f64], wt: &[f64], b: Option<Vec<f64>>) -> Vec<f64> {
        let (l, c) = (self.l(), self.c_out);
        let (groups, kk) = match self.conv {
            Some((g, ..)) => (g.groups, g.kh * g.kw),
            None => (1, 1),
        };
        let cig = self.c_in / groups;
        let kg = cig * kk;
        let mut out = vec![0.0; self.n * c * l];
        for i in 0..self.n {
            for pos in 0..l {
                let u = self.vec_at(x, i, pos);
                for o in 0..c {
                    let gi = o / (c / groups);
                    let mut s = b.as_ref().map_or(0.0, |b| b[o]);
                    for j in 0..kg {
                        s += wt[o * kg + j] * u[gi * kg + j];
                    }
                    out[(i * c + o) * l + pos] = s;
                }
            }
        }
        out
    }
    fn bilinear(&self, wq: &[f64]) -> Vec<f64> {
        let (l, c) = (self.l(), self.c_out);
        let mut out = vec![0.0; self.n * c * l];
        for i in 0..self.n {
            for pos in 0..l {
                let u = self.vec_at(&self.x, i, pos);
                let k = u.len();
                for o in 0..c {
                    let mut s = 0.0;
                    for a in 0..k {
                        for b in 0..k {
                            s += u[a] * wq[(o * k + a) * k + b] * u[b];
                        }
                    }
                    out[(i * c + o) * l + pos] = s;
                }
            }
        }
        out
    }
}

fn reference(neuron: NeuronType, sd: &Sd, path: &str, p: &str, r: &Ref) -> Vec<f64> {
    let key = |s: &str| format!("{path}.{s}");
    let lin = |name: &str| {
        r.map(
            &r.x,
            &sd.get(&key(&format!("{name}.weight"))),
            sd.opt(&key(&format!("{name}.bias"))),
        )
    };
    let xx: Vec<f64> = r.x.iter().map(|v| v * v).collect();
    let on_sq = |name: &str| {
        r.map(
            &xx,
            &sd.get(&key(&format!("{name}.weight"))),
            sd.opt(&key(&format!("{name}.bias"))),
        )
    };
    let zip2 = |a: Vec<f64>, b: Vec<f64>, f: &dyn Fn(f64, f64) -> f64| -> Vec<f64> {
        a.iter().zip(&b).map(|(x, y)| f(*x, *y)).collect()
    };
    match neuron {
        NeuronType::T1 => zip2(r.bilinear(&sd.get(&key("quad.weight"))), lin(p), &|a, b| {
            a + b
        }),
        NeuronType::T2 => on_sq(p),
        NeuronType::T3 => lin(p).iter().map(|a| a * a).collect(),
        NeuronType::T4 => zip2(lin(&format!("{p}1")), lin(&format!("{p}2")), &|a, b| a * b),
        NeuronType::QuadraLib => {
            let ab = zip2(lin(&format!("{p}1")), lin(&format!("{p}2")), &|a, b| a * b);
            zip2(ab, lin(&format!("{p}3")), &|a, b| a + b)
        }
        NeuronType::Fan => {
            let rg = zip2(lin(&format!("{p}_r")), lin(&format!("{p}_g")), &|a, b| {
                a * b
            });
            zip2(rg, on_sq(&format!("{p}_b")), &|a, b| a + b)
        }
        NeuronType::QuadraLibBn => {
            let (c, l) = (r.c_out, r.l());
            let bn = |k: usize| -> Vec<f64> {
                let z = lin(&format!("{p}{k}"));
                let g = sd.get(&key(&format!("bn{k}.weight")));
                let b = sd.get(&key(&format!("bn{k}.bias")));
                let rm = sd.get(&key(&format!("bn{k}.running_mean")));
                let rv = sd.get(&key(&format!("bn{k}.running_var")));
                z.iter()
                    .enumerate()
                    .map(|(e, v)| {
                        let o = (e / l) % c;
                        (v - rm[o]) / (rv[o] + 1e-5).sqrt() * g[o] + b[o]
                    })
                    .collect()
            };
            let ab = zip2(bn(1), bn(2), &|a, b| a * b);
            zip2(ab, bn(3), &|a, b| a + b)
        }
    }
}

fn sd_of(m: &dyn Module) -> Sd {
    let mut v = Vec::new();
    m.state_dict(&mut v);
    Sd(v.into_iter().collect())
}

#[test]
fn infer_equals_unfused_composition() {
    for neuron in NeuronType::ALL {
        for bias in [true, false] {
            // conv
            let g = if neuron == NeuronType::T1 {
                geom(2, 3, (3, 2), (2, 1), (1, 0), (1, 2), 1)
            } else {
                geom(4, 6, (3, 2), (2, 1), (1, 0), (1, 2), 2)
            };
            let (n, h, w) = (3, 7, 8);
            let mut m = QuadConv2d::new(
                "blk.q",
                neuron,
                g,
                bias,
                BackpropMode::Stored,
                DType::F64,
                5,
            )
            .unwrap();
            randomize_bn(&mut m, 12);
            let x = Tensor::randn(&[n, g.c_in, h, w], DType::F64, 1.0, 31).unwrap();
            // move the running statistics away from (0, 1)
            for s in 0..2 {
                let xt = Tensor::randn(&[4, g.c_in, h, w], DType::F64, 1.5, 40 + s).unwrap();
                m.forward(&xt).unwrap();
                m.clear_saved();
            }
            let y = m.infer(&x).unwrap();
            let (ho, wo) = (y.shape()[2], y.shape()[3]);
            let r = Ref {
                x: x.to_f64_vec(),
                n,
                conv: Some((g, h, w, ho, wo)),
                c_in: g.c_in,
                c_out: g.c_out,
            };
            let want = reference(neuron, &sd_of(&m), "blk.q", "conv", &r);
            let got = y.to_f64_vec();
            assert_eq!(got.len(), want.len());
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-10 * (1.0 + b.abs()),
                    "{neuron} conv bias={bias} [{i}]: {a} vs {b}"
                );
            }
            // linear
            let (fi, fo) = (5, 4);
            let mut m = QuadLinear::new(
                "head",
                neuron,
                fi,
                fo,
                bias,
                BackpropMode::Recompute,
                DType::F64,
                6,
            )
            .unwrap();
            randomize_bn(&mut m, 13);
            for s in 0..2 {
                let xt = Tensor::randn(&[6, fi], DType::F64, 1.5, 50 + s).unwrap();
                m.forward(&xt).unwrap();
                m.clear_saved();
            }
            let x = Tensor::randn(&[n, fi], DType::F64, 1.0, 32).unwrap();
            let y = m.infer(&x).unwrap();
            assert_eq!(y.shape(), [n, fo]);
            let r = Ref {
                x: x.to_f64_vec(),
                n,
                conv: None,
                c_in: fi,
                c_out: fo,
            };
            let want = reference(neuron, &sd_of(&m), "head", "linear", &r);
            for (i, (a, b)) in y.to_f64_vec().iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-10 * (1.0 + b.abs()),
                    "{neuron} linear bias={bias} [{i}]: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn bn_training_forward_uses_batch_statistics_and_updates_running() {
    // y from a training forward equals the composition with batch statistics, and the
    // running statistics follow PyTorch's update (momentum 0.1, unbiased variance)
    let g = geom(3, 2, (3, 3), (1, 1), (1, 1), (1, 1), 1);
    let mut m = QuadConv2d::new(
        "q",
        NeuronType::QuadraLibBn,
        g,
        true,
        BackpropMode::Recompute,
        DType::F64,
        2,
    )
    .unwrap();
    randomize_bn(&mut m, 3);
    let (n, h, w) = (3, 5, 4);
    let x = Tensor::randn(&[n, 3, h, w], DType::F64, 1.0, 1).unwrap();
    let sd0 = sd_of(&m);
    let y = m.forward(&x).unwrap().to_f64_vec();
    m.clear_saved();
    let r = Ref {
        x: x.to_f64_vec(),
        n,
        conv: Some((g, h, w, h, w)),
        c_in: 3,
        c_out: 2,
    };
    let l = h * w;
    let mut out = vec![1.0; n * 2 * l];
    let mut add = vec![0.0; n * 2 * l];
    for k in 1..=3 {
        let z = r.map(
            &r.x,
            &sd0.get(&format!("q.conv{k}.weight")),
            sd0.opt(&format!("q.conv{k}.bias")),
        );
        let ga = sd0.get(&format!("q.bn{k}.weight"));
        let be = sd0.get(&format!("q.bn{k}.bias"));
        let sd1 = sd_of(&m);
        let rm = sd1.get(&format!("q.bn{k}.running_mean"));
        let rv = sd1.get(&format!("q.bn{k}.running_var"));
        for o in 0..2 {
            let vals: Vec<f64> = (0..n)
                .flat_map(|i| z[(i * 2 + o) * l..(i * 2 + o + 1) * l].to_vec())
                .collect();
            let cnt = vals.len() as f64;
            let mean = vals.iter().sum::<f64>() / cnt;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / cnt;
            assert!((rm[o] - 0.1 * mean).abs() < 1e-12, "running mean");
            assert!(
                (rv[o] - (0.9 + 0.1 * var * cnt / (cnt - 1.0))).abs() < 1e-12,
                "running var"
            );
            for i in 0..n {
                for p in 0..l {
                    let e = (i * 2 + o) * l + p;
                    let v = (z[e] - mean) / (var + 1e-5).sqrt() * ga[o] + be[o];
                    if k < 3 {
                        out[e] *= v;
                    } else {
                        add[e] = v;
                    }
                }
            }
        }
    }
    for (i, (a, b)) in y
        .iter()
        .zip(out.iter().zip(&add).map(|(p, q)| p + q))
        .enumerate()
    {
        assert!((a - b).abs() < 1e-10 * (1.0 + b.abs()), "[{i}] {a} vs {b}");
    }
}

#[test]
fn quadralib_bn_state_dict_has_reference_names() {
    let g = geom(16, 32, (3, 3), (2, 2), (1, 1), (1, 1), 1);
    let m = QuadConv2d::new(
        "layer1.0.conv1",
        NeuronType::QuadraLibBn,
        g,
        true,
        BackpropMode::Stored,
        DType::F32,
        1,
    )
    .unwrap();
    let mut v = Vec::new();
    m.state_dict(&mut v);
    let mut want = Vec::new();
    for k in 1..=3 {
        want.push((format!("layer1.0.conv1.conv{k}.weight"), vec![32, 16, 3, 3]));
        want.push((format!("layer1.0.conv1.conv{k}.bias"), vec![32]));
    }
    for k in 1..=3 {
        for leaf in ["weight", "bias", "running_mean", "running_var"] {
            want.push((format!("layer1.0.conv1.bn{k}.{leaf}"), vec![32]));
        }
    }
    let got: Vec<(String, Vec<usize>)> = v
        .iter()
        .map(|(k, t)| (k.clone(), t.shape().to_vec()))
        .collect();
    assert_eq!(got, want);
    // bn init: gamma 1, beta 0, running mean 0, var 1
    let sd = Sd(v.into_iter().collect());
    assert!(sd
        .get("layer1.0.conv1.bn2.weight")
        .iter()
        .all(|&v| v == 1.0));
    assert!(sd.get("layer1.0.conv1.bn2.bias").iter().all(|&v| v == 0.0));
    assert!(sd
        .get("layer1.0.conv1.bn3.running_var")
        .iter()
        .all(|&v| v == 1.0));
    // each branch initialised like its own conv: U(±1/√fan_in), and the branches differ
    let b = 1.0 / ((16 * 9) as f64).sqrt();
    let w1 = sd.get("layer1.0.conv1.conv1.weight");
    let w2 = sd.get("layer1.0.conv1.conv2.weight");
    assert!(w1.iter().chain(&w2).all(|v| v.abs() <= b));
    assert!(w1.iter().map(|v| v.abs()).fold(0.0, f64::max) > 0.9 * b);
    assert_ne!(w1, w2);

    // linear
    let m = QuadLinear::new(
        "fc",
        NeuronType::QuadraLibBn,
        8,
        3,
        false,
        BackpropMode::Stored,
        DType::F32,
        1,
    )
    .unwrap();
    let mut v = Vec::new();
    m.state_dict(&mut v);
    let keys: Vec<&str> = v.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "fc.linear1.weight",
            "fc.linear2.weight",
            "fc.linear3.weight",
            "fc.bn1.weight",
            "fc.bn1.bias",
            "fc.bn1.running_mean",
            "fc.bn1.running_var",
            "fc.bn2.weight",
            "fc.bn2.bias",
            "fc.bn2.running_mean",
            "fc.bn2.running_var",
            "fc.bn3.weight",
            "fc.bn3.bias",
            "fc.bn3.running_mean",
            "fc.bn3.running_var",
        ]
    );
    assert_eq!(v[0].1.shape(), [3, 8]);
}

#[test]
fn state_dict_names_of_other_neurons() {
    let g = geom(2, 3, (3, 3), (1, 1), (1, 1), (1, 1), 1);
    let names = |neuron| {
        let m = QuadConv2d::new("q", neuron, g, true, BackpropMode::Stored, DType::F32, 1).unwrap();
        let mut v = Vec::new();
        m.state_dict(&mut v);
        v.into_iter()
            .map(|(k, t)| format!("{k}{:?}", t.shape()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(NeuronType::T1),
        [
            "q.conv.weight[3, 2, 3, 3]",
            "q.conv.bias[3]",
            "q.quad.weight[3, 18, 18]"
        ]
    );
    assert_eq!(
        names(NeuronType::T2),
        ["q.conv.weight[3, 2, 3, 3]", "q.conv.bias[3]"]
    );
    assert_eq!(
        names(NeuronType::T3),
        ["q.conv.weight[3, 2, 3, 3]", "q.conv.bias[3]"]
    );
    assert_eq!(names(NeuronType::T4).len(), 4);
    assert_eq!(
        names(NeuronType::QuadraLib)[4],
        "q.conv3.weight[3, 2, 3, 3]"
    );
    assert_eq!(
        names(NeuronType::Fan),
        [
            "q.conv_r.weight[3, 2, 3, 3]",
            "q.conv_r.bias[3]",
            "q.conv_g.weight[3, 2, 3, 3]",
            "q.conv_g.bias[3]",
            "q.conv_b.weight[3, 2, 3, 3]",
            "q.conv_b.bias[3]"
        ]
    );
}

#[test]
fn param_segments_mark_second_order_slices() {
    let g = geom(2, 3, (3, 3), (1, 1), (1, 1), (1, 1), 1);
    let mut m = QuadConv2d::new(
        "q",
        NeuronType::QuadraLibBn,
        g,
        true,
        BackpropMode::Stored,
        DType::F32,
        1,
    )
    .unwrap();
    let mut seen = Vec::new();
    m.visit_params(&mut |n, p| {
        let ks: Vec<(usize, ParamKind)> =
            p.segments.iter().map(|s| (s.range.len(), s.kind)).collect();
        assert_eq!(p.segments.last().unwrap().range.end, p.value.numel(), "{n}");
        seen.push((n.to_string(), ks));
    });
    let per = 3 * 2 * 9;
    assert_eq!(
        seen,
        [
            (
                "q.stacked.weight".to_string(),
                vec![
                    (per, ParamKind::QuadWeight),
                    (per, ParamKind::QuadWeight),
                    (per, ParamKind::Weight)
                ]
            ),
            (
                "q.stacked.bias".to_string(),
                vec![
                    (3, ParamKind::QuadBias),
                    (3, ParamKind::QuadBias),
                    (3, ParamKind::Bias)
                ]
            ),
            ("q.bn.weight".to_string(), vec![(9, ParamKind::NormScale)]),
            ("q.bn.bias".to_string(), vec![(9, ParamKind::NormShift)]),
        ]
    );
}

#[test]
fn state_dict_round_trips() {
    for neuron in NeuronType::ALL {
        let g = geom(3, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1);
        let mut a =
            QuadConv2d::new("q", neuron, g, true, BackpropMode::Stored, DType::F64, 1).unwrap();
        randomize_bn(&mut a, 4);
        let x = Tensor::randn(&[2, 3, 5, 5], DType::F64, 1.0, 2).unwrap();
        a.forward(&x).unwrap();
        a.clear_saved();
        let mut b = QuadConv2d::new(
            "q",
            neuron,
            g,
            true,
            BackpropMode::Recompute,
            DType::F64,
            99,
        )
        .unwrap();
        assert!(
            a.infer(&x)
                .unwrap()
                .max_abs_diff(&b.infer(&x).unwrap())
                .unwrap()
                > 1e-6
        );
        let mut v = Vec::new();
        a.state_dict(&mut v);
        let mut map: HashMap<String, Tensor> = v.into_iter().collect();
        if neuron == NeuronType::QuadraLibBn {
            // PyTorch's counter is accepted and ignored
            map.insert(
                "q.bn1.num_batches_tracked".into(),
                Tensor::zeros(&[], DType::F64).unwrap(),
            );
        }
        b.load_state_dict(&mut map).unwrap();
        assert!(map.is_empty(), "{neuron}: left over {:?}", map.keys());
        assert_eq!(
            a.infer(&x)
                .unwrap()
                .max_abs_diff(&b.infer(&x).unwrap())
                .unwrap(),
            0.0,
            "{neuron}"
        );
        // f32 model from an f64 dict
        let mut v = Vec::new();
        a.state_dict(&mut v);
        let mut map: HashMap<String, Tensor> = v.into_iter().collect();
        let mut c =
            QuadConv2d::new("q", neuron, g, true, BackpropMode::Stored, DType::F32, 7).unwrap();
        c.load_state_dict(&mut map).unwrap();
        let d = c.infer(&x.to_dtype(DType::F32).unwrap()).unwrap();
        assert!(
            d.max_abs_diff(&a.infer(&x).unwrap().to_dtype(DType::F32).unwrap())
                .unwrap()
                < 1e-3
        );
    }
    // linear
    let a = QuadLinear::new(
        "fc",
        NeuronType::Fan,
        4,
        3,
        true,
        BackpropMode::Stored,
        DType::F64,
        1,
    )
    .unwrap();
    let mut b = QuadLinear::new(
        "fc",
        NeuronType::Fan,
        4,
        3,
        true,
        BackpropMode::Stored,
        DType::F64,
        2,
    )
    .unwrap();
    let mut v = Vec::new();
    a.state_dict(&mut v);
    let mut map: HashMap<String, Tensor> = v.into_iter().collect();
    b.load_state_dict(&mut map).unwrap();
    let x = Tensor::randn(&[3, 4], DType::F64, 1.0, 2).unwrap();
    assert_eq!(
        a.infer(&x)
            .unwrap()
            .max_abs_diff(&b.infer(&x).unwrap())
            .unwrap(),
        0.0
    );
}

#[test]
fn load_state_dict_reports_missing_and_misshapen_entries() {
    let g = geom(3, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1);
    let a = QuadConv2d::new(
        "q",
        NeuronType::QuadraLibBn,
        g,
        true,
        BackpropMode::Stored,
        DType::F32,
        1,
    )
    .unwrap();
    let mut b = QuadConv2d::new(
        "q",
        NeuronType::QuadraLibBn,
        g,
        true,
        BackpropMode::Stored,
        DType::F32,
        2,
    )
    .unwrap();
    let before = sd_of(&b).get("q.conv1.weight");
    let mut v = Vec::new();
    a.state_dict(&mut v);
    let mut map: HashMap<String, Tensor> = v.into_iter().collect();
    map.remove("q.bn2.running_var");
    let e = b.load_state_dict(&mut map).unwrap_err().to_string();
    assert!(e.contains("q.bn2.running_var"), "{e}");
    assert_eq!(
        sd_of(&b).get("q.conv1.weight"),
        before,
        "a failed load changed the layer"
    );
    let mut v = Vec::new();
    a.state_dict(&mut v);
    let mut map: HashMap<String, Tensor> = v.into_iter().collect();
    map.insert(
        "q.conv2.weight".into(),
        Tensor::zeros(&[4, 3, 3, 1], DType::F32).unwrap(),
    );
    let e = b.load_state_dict(&mut map).unwrap_err().to_string();
    assert!(
        e.contains("q.conv2.weight") && e.contains("[4, 3, 3, 1]"),
        "{e}"
    );
}

#[test]
fn neuron_names_parse_print_and_serialize() {
    let names = ["t1", "t2", "t3", "t4", "quadralib", "quadralib-bn", "fan"];
    for (n, s) in NeuronType::ALL.iter().zip(names) {
        assert_eq!(n.to_string(), s);
        assert_eq!(s.parse::<NeuronType>().unwrap(), *n);
        assert_eq!(serde_json::to_string(n).unwrap(), format!("\"{s}\""));
        assert_eq!(
            serde_json::from_str::<NeuronType>(&format!("\"{s}\"")).unwrap(),
            *n
        );
    }
    let e = "quadralib_bn".parse::<NeuronType>().unwrap_err();
    assert!(matches!(e, quadra::Error::Invalid { .. }));
    let msg = e.to_string();
    assert!(msg.contains("quadralib_bn"), "{msg}");
    for s in names {
        assert!(msg.contains(s), "{msg} should list {s}");
    }
}

#[test]
fn bad_input_is_an_error() {
    let g = geom(3, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1);
    for neuron in NeuronType::ALL {
        for mode in MODES {
            let mut m = QuadConv2d::new("q", neuron, g, true, mode, DType::F32, 0).unwrap();
            let wrong_c = Tensor::zeros(&[2, 2, 6, 6], DType::F32).unwrap();
            let e = m.forward(&wrong_c).unwrap_err().to_string();
            assert!(e.contains("2 channels") && e.contains("expects 3"), "{e}");
            assert!(m.infer(&wrong_c).is_err());
            let empty = Tensor::zeros(&[0, 3, 6, 6], DType::F32).unwrap();
            let e = m.forward(&empty).unwrap_err().to_string();
            assert!(e.contains("empty"), "{e}");
            let small = Tensor::zeros(&[1, 3, 1, 1], DType::F32).unwrap();
            assert!(
                m.forward(&small).is_ok(),
                "padding 1 makes a 1x1 input valid"
            );
            m.clear_saved();
            let flat = Tensor::zeros(&[2, 3], DType::F32).unwrap();
            assert!(m.forward(&flat).unwrap_err().to_string().contains("4-d"));
            let f64x = Tensor::zeros(&[1, 3, 4, 4], DType::F64).unwrap();
            assert!(m.forward(&f64x).is_err(), "dtype mismatch");
            // backward without forward, and with a wrong gradient shape
            let e = m
                .backward(&Tensor::zeros(&[1, 4, 4, 4], DType::F32).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains("without a training forward"), "{e}");
            m.forward(&Tensor::zeros(&[1, 3, 4, 4], DType::F32).unwrap())
                .unwrap();
            let e = m
                .backward(&Tensor::zeros(&[1, 4, 4, 5], DType::F32).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains("output gradient"), "{e}");

            let mut l = QuadLinear::new("fc", neuron, 5, 2, true, mode, DType::F32, 0).unwrap();
            let e = l
                .forward(&Tensor::zeros(&[3, 4], DType::F32).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains("4 features") && e.contains("expects 5"), "{e}");
            let e = l
                .infer(&Tensor::zeros(&[0, 5], DType::F32).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains("empty"), "{e}");
        }
    }
    let e = QuadConv2d::new(
        "q",
        NeuronType::T1,
        ConvGeom {
            groups: 2,
            ..geom(4, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1)
        },
        false,
        BackpropMode::Stored,
        DType::F32,
        0,
    )
    .err()
    .expect("t1 with groups > 1 must be rejected")
    .to_string();
    assert!(e.contains("t1") && e.contains("groups = 1"), "{e}");
    // other neurons accept groups; bad geometry still fails
    assert!(QuadConv2d::new(
        "q",
        NeuronType::Fan,
        ConvGeom {
            groups: 2,
            ..geom(4, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1)
        },
        false,
        BackpropMode::Stored,
        DType::F32,
        0
    )
    .is_ok());
    assert!(QuadConv2d::new(
        "q",
        NeuronType::T4,
        ConvGeom {
            groups: 3,
            ..geom(4, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1)
        },
        false,
        BackpropMode::Stored,
        DType::F32,
        0
    )
    .is_err());
    assert!(QuadLinear::new(
        "fc",
        NeuronType::T3,
        0,
        2,
        true,
        BackpropMode::Stored,
        DType::F32,
        0
    )
    .is_err());
}

#[test]
fn set_backprop_follows_the_plan() {
    let g = geom(2, 2, (3, 3), (1, 1), (1, 1), (1, 1), 1);
    let mut a = QuadConv2d::new(
        "layer1.0.conv1",
        NeuronType::QuadraLibBn,
        g,
        true,
        BackpropMode::Stored,
        DType::F32,
        0,
    )
    .unwrap();
    let mut b = QuadLinear::new(
        "fc",
        NeuronType::Fan,
        3,
        2,
        true,
        BackpropMode::Stored,
        DType::F32,
        0,
    )
    .unwrap();
    let plan = |p: &str| {
        if p.starts_with("layer1") {
            BackpropMode::Recompute
        } else {
            BackpropMode::Stored
        }
    };
    a.set_backprop(&plan);
    b.set_backprop(&plan);
    assert_eq!(a.mode(), BackpropMode::Recompute);
    assert_eq!(b.mode(), BackpropMode::Stored);
    assert_eq!(a.neuron(), NeuronType::QuadraLibBn);
    assert!(a.describe().contains("quadralib-bn") && a.describe().contains("recompute"));
}

#[test]
fn f32_matches_f64() {
    // the f32 path (the training dtype) agrees with f64 for every neuron, forward and backward
    for neuron in NeuronType::ALL {
        let g = geom(4, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1);
        let mut a =
            QuadConv2d::new("q", neuron, g, true, BackpropMode::Recompute, DType::F64, 3).unwrap();
        let mut b =
            QuadConv2d::new("q", neuron, g, true, BackpropMode::Stored, DType::F32, 3).unwrap();
        let x = Tensor::randn(&[3, 4, 6, 6], DType::F64, 1.0, 5).unwrap();
        let (ya, dxa, ga) = run_once(&mut a, &x, 1);
        let (yb, dxb, gb) = run_once(&mut b, &x.to_dtype(DType::F32).unwrap(), 1);
        let close = |p: &[f64], q: &[f64], what: &str| {
            let scale = p.iter().map(|v| v.abs()).fold(0.0, f64::max).max(1e-3);
            for (u, v) in p.iter().zip(q) {
                assert!((u - v).abs() < 2e-4 * scale, "{neuron} {what}: {u} vs {v}");
            }
        };
        close(&ya, &yb, "y");
        close(&dxa, &dxb, "dx");
        for ((n, p), (_, q)) in ga.iter().zip(&gb) {
            if neuron == NeuronType::QuadraLibBn && n.ends_with("stacked.bias") {
                // a bias before training-mode BN has an exactly-zero gradient: only noise
                assert!(
                    p.iter().chain(q).all(|v| v.abs() < 1e-4),
                    "{n}: {p:?} {q:?}"
                );
                continue;
            }
            close(p, q, n);
        }
    }
}

#[test]
fn image_blocks_equal_the_per_image_layers() {
    // Small images go B at a time through each GEMM in a (M, B·L) block layout and are
    // gathered/scattered at the unit's edges. In a 1-thread pool the whole batch is one
    // chunk, so a batch of 6 makes blocks of 6 (and a pass with padding, stride and groups
    // on 5×4 images keeps L small): the batch's y and dx must equal the layer run on each
    // image alone, and its weight gradients the sum of the per-image ones. quadralib-bn's
    // training couples images through the batch statistics, so it is checked in inference
    // here and by the finite-difference check below on a blocked batch.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let (n, h, w) = (6, 5, 4);
        for neuron in NeuronType::ALL {
            let g = if neuron == NeuronType::T1 {
                geom(2, 3, (3, 3), (1, 1), (1, 1), (1, 1), 1)
            } else {
                geom(4, 6, (3, 2), (2, 1), (1, 1), (1, 1), 2)
            };
            let x = Tensor::randn(&[n, g.c_in, h, w], DType::F64, 1.0, 91).unwrap();
            let xv = x.to_f64_vec();
            let per = g.c_in * h * w;
            let img = |i: usize| {
                Tensor::from_f64(&xv[i * per..(i + 1) * per], &[1, g.c_in, h, w], DType::F64)
                    .unwrap()
            };
            for mode in MODES {
                let what = format!("{neuron} {mode}");
                let mut m = QuadConv2d::new("q", neuron, g, true, mode, DType::F64, 7).unwrap();
                randomize_bn(&mut m, 3);
                if neuron == NeuronType::QuadraLibBn {
                    m.forward(&x).unwrap();
                    m.clear_saved();
                    let y = m.infer(&x).unwrap().to_f64_vec();
                    let each: Vec<f64> = (0..n)
                        .flat_map(|i| m.infer(&img(i)).unwrap().to_f64_vec())
                        .collect();
                    assert_close(&y, &each, &format!("{what} infer"));
                    let first3 =
                        Tensor::from_f64(&xv[..3 * per], &[3, g.c_in, h, w], DType::F64).unwrap();
                    let rep = GradCheck::default()
                        .run(&mut m, &first3)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert!(rep.checked > 40, "{what}: checked only {}", rep.checked);
                    continue;
                }
                let gy = {
                    let y = m.forward(&x).unwrap();
                    m.clear_saved();
                    Tensor::randn(y.shape(), DType::F64, 1.0, 92).unwrap()
                };
                let gv = gy.to_f64_vec();
                let gper = gv.len() / n;
                m.visit_params(&mut |_, p| p.zero_grad());
                let y = m.forward(&x).unwrap().to_f64_vec();
                let dx = m.backward(&gy).unwrap().to_f64_vec();
                let mut grads = Vec::new();
                m.visit_params(&mut |_, p| grads.push(p.grad.as_ref().unwrap().to_f64_vec()));
                let (mut y1, mut dx1) = (Vec::new(), Vec::new());
                let mut sums: Vec<Vec<f64>> = grads.iter().map(|v| vec![0.0; v.len()]).collect();
                for i in 0..n {
                    m.visit_params(&mut |_, p| p.zero_grad());
                    let yi = m.forward(&img(i)).unwrap();
                    let gi =
                        Tensor::from_f64(&gv[i * gper..(i + 1) * gper], yi.shape(), DType::F64)
                            .unwrap();
                    y1.extend(yi.to_f64_vec());
                    dx1.extend(m.backward(&gi).unwrap().to_f64_vec());
                    let mut k = 0;
                    m.visit_params(&mut |_, p| {
                        for (s, v) in sums[k]
                            .iter_mut()
                            .zip(p.grad.as_ref().unwrap().to_f64_vec())
                        {
                            *s += v;
                        }
                        k += 1;
                    });
                }
                assert_close_abs(&y, &y1, &format!("{what} y"));
                assert_close_abs(&dx, &dx1, &format!("{what} dx"));
                for (k, (a, b)) in grads.iter().zip(&sums).enumerate() {
                    assert_close_abs(a, b, &format!("{what} grad {k}"));
                }
            }
        }
    });
}

/// Equal up to f64 summation order: 1e-12 of the largest magnitude.
fn assert_close_abs(a: &[f64], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = a.iter().map(|v| v.abs()).fold(1e-300, f64::max);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-12 * scale,
            "{what}[{i}]: {x:e} vs {y:e}"
        );
    }
}

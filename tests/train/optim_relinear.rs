//! ReLinear init: after `relinear_init(layer, 0.0)` a quadratic layer's output equals its
//! first-order part, computed independently by a plain Conv2d / Linear (+ BatchNorm for
//! quadralib-bn) loaded with that branch's weights, on random input, in f32.
//! Possible for t1, t4 (with bias), quadralib, quadralib-bn, fan (with bias); t2 and t3 have
//! no first-order term and are reported as skipped and left unchanged.

use std::collections::HashMap;

use quadra::nn::container::Sequential;
use quadra::nn::conv::Conv2d;
use quadra::nn::linear::Linear;
use quadra::nn::norm::BatchNorm;
use quadra::nn::quadratic::{NeuronType, QuadConv2d, QuadLinear};
use quadra::nn::{BackpropMode, Module};
use quadra::ops::conv::ConvGeom;
use quadra::optim::{relinear_init, ReLinearAction};
use quadra::{DType, Tensor};

/// The branch whose first-order map the neuron reduces to, and the BN index (quadralib-bn).
fn linear_branch(n: NeuronType, dense: bool) -> (String, Option<&'static str>) {
    let p = if dense { "linear" } else { "conv" };
    match n {
        NeuronType::T1 => (p.to_string(), None),
        NeuronType::T4 => (format!("{p}1"), None),
        NeuronType::QuadraLib => (format!("{p}3"), None),
        NeuronType::QuadraLibBn => (format!("{p}3"), Some("bn3")),
        NeuronType::Fan => (format!("{p}_r"), None),
        _ => unreachable!(),
    }
}

fn reference(layer: &dyn Module, n: NeuronType, dense: bool, geom: ConvGeom) -> Sequential {
    let mut sd = Vec::new();
    layer.state_dict(&mut sd);
    let sd: HashMap<String, Tensor> = sd.into_iter().collect();
    let (branch, bn) = linear_branch(n, dense);
    let mut map = HashMap::new();
    for leaf in ["weight", "bias"] {
        map.insert(
            format!("ref.{leaf}"),
            sd[&format!("q.{branch}.{leaf}")].clone(),
        );
    }
    let mut layers: Vec<Box<dyn Module>> = Vec::new();
    let mut lin: Box<dyn Module> = if dense {
        Box::new(Linear::new("ref", geom.c_in, geom.c_out, true, DType::F32, 0).unwrap())
    } else {
        Box::new(Conv2d::new("ref", geom, true, DType::F32, 0).unwrap())
    };
    lin.load_state_dict(&mut map).unwrap();
    layers.push(lin);
    if let Some(b) = bn {
        let mut bmap = HashMap::new();
        for leaf in ["weight", "bias", "running_mean", "running_var"] {
            bmap.insert(
                format!("refbn.{leaf}"),
                sd[&format!("q.{b}.{leaf}")].clone(),
            );
        }
        let mut norm = if dense {
            BatchNorm::new_1d("refbn", geom.c_out, 1e-5, 0.1, DType::F32).unwrap()
        } else {
            BatchNorm::new_2d("refbn", geom.c_out, 1e-5, 0.1, DType::F32).unwrap()
        };
        norm.load_state_dict(&mut bmap).unwrap();
        layers.push(Box::new(norm));
    }
    Sequential::new("", layers)
}

fn assert_close(a: &Tensor, b: &Tensor, what: &str) {
    let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * scale, "{what}: {x} vs {y}");
    }
}

fn layer(n: NeuronType, dense: bool, bias: bool, geom: ConvGeom) -> Box<dyn Module> {
    if dense {
        Box::new(
            QuadLinear::new(
                "q",
                n,
                geom.c_in,
                geom.c_out,
                bias,
                BackpropMode::Stored,
                DType::F32,
                5,
            )
            .unwrap(),
        )
    } else {
        Box::new(QuadConv2d::new("q", n, geom, bias, BackpropMode::Stored, DType::F32, 5).unwrap())
    }
}

#[test]
fn relinear_output_equals_first_order_part() {
    for dense in [false, true] {
        let geom = if dense {
            quadra::ops::quadratic::dense_geom(6, 4)
        } else {
            ConvGeom::square(3, 4, 3, 1, 1)
        };
        let x = if dense {
            Tensor::randn(&[8, 6], DType::F32, 1.0, 11).unwrap()
        } else {
            Tensor::randn(&[2, 3, 5, 5], DType::F32, 1.0, 11).unwrap()
        };
        for n in [
            NeuronType::T1,
            NeuronType::T4,
            NeuronType::QuadraLib,
            NeuronType::QuadraLibBn,
            NeuronType::Fan,
        ] {
            let what = format!("{n} {}", if dense { "linear" } else { "conv" });
            let mut q = layer(n, dense, true, geom);
            // before: not first-order
            let mut r0 = reference(q.as_ref(), n, dense, geom);
            let before = (q.infer(&x).unwrap(), r0.infer(&x).unwrap());
            assert!(
                before.0.max_abs_diff(&before.1).unwrap() > 1e-3,
                "{what}: already linear?"
            );
            let rep = relinear_init(q.as_mut(), 0.0).unwrap();
            assert_eq!(rep.layers.len(), 1);
            assert_eq!(rep.layers[0].2, ReLinearAction::Applied, "{what}");
            let mut r = reference(q.as_ref(), n, dense, geom);
            assert_close(
                &q.infer(&x).unwrap(),
                &r.infer(&x).unwrap(),
                &format!("{what} infer"),
            );
            assert_close(
                &q.forward(&x).unwrap(),
                &r.forward(&x).unwrap(),
                &format!("{what} train forward"),
            );
            q.clear_saved();
            // a small scale: close to, not equal to, the first-order part
            let mut q2 = layer(n, dense, true, geom);
            relinear_init(q2.as_mut(), 0.05).unwrap();
            let r2 = reference(q2.as_ref(), n, dense, geom);
            let (y, l) = (q2.infer(&x).unwrap(), r2.infer(&x).unwrap());
            let d = y.max_abs_diff(&l).unwrap();
            assert!(d > 0.0 && d < 0.5, "{what}: scale 0.05 differs by {d}");
            let _ = &mut r0;
        }
    }
}

#[test]
fn relinear_skips_what_cannot_be_linear() {
    let geom = ConvGeom::square(3, 4, 3, 1, 1);
    for (n, bias) in [
        (NeuronType::T2, true),
        (NeuronType::T3, true),
        (NeuronType::T4, false),
        (NeuronType::Fan, false),
    ] {
        let mut q = layer(n, false, bias, geom);
        let mut before = Vec::new();
        q.state_dict(&mut before);
        let rep = relinear_init(q.as_mut(), 0.0).unwrap();
        assert!(
            matches!(rep.layers[0].2, ReLinearAction::Skipped(_)),
            "{n} bias={bias}"
        );
        let mut after = Vec::new();
        q.state_dict(&mut after);
        for ((ka, a), (kb, b)) in before.iter().zip(&after) {
            assert_eq!(ka, kb);
            assert_eq!(a.to_f64_vec(), b.to_f64_vec(), "{n}: {ka} changed");
        }
    }
    let mut q = layer(NeuronType::QuadraLib, false, true, geom);
    assert!(relinear_init(q.as_mut(), -0.1).is_err());
    assert!(relinear_init(q.as_mut(), f64::NAN).is_err());
}

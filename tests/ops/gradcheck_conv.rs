//! f64 finite-difference gradient checks of Conv2d over stride, padding, dilation, groups
//! and odd sizes.

use quadra::nn::conv::Conv2d;
use quadra::nn::gradcheck::GradCheck;
use quadra::ops::conv::ConvGeom;
use quadra::{DType, Tensor};

use crate::support::geom;

#[test]
fn conv2d_gradients_match_finite_differences() {
    let cases = [
        (
            geom(3, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
            (2, 5, 7),
            true,
        ),
        (
            geom(4, 6, (3, 2), (2, 1), (0, 1), (1, 1), 2),
            (3, 7, 6),
            true,
        ),
        (
            geom(2, 3, (3, 3), (1, 2), (2, 1), (2, 2), 1),
            (2, 6, 9),
            false,
        ),
        (
            geom(6, 6, (1, 1), (2, 2), (0, 0), (1, 1), 3),
            (1, 5, 5),
            true,
        ),
    ];
    for (i, (g, (n, h, w), bias)) in cases.into_iter().enumerate() {
        let mut m = Conv2d::new("conv", g, bias, DType::F64, 11 + i as u64).unwrap();
        let x = Tensor::randn(&[n, g.c_in, h, w], DType::F64, 1.0, 3 + i as u64).unwrap();
        let rep = GradCheck::default()
            .run(&mut m, &x)
            .unwrap_or_else(|e| panic!("case {i}: {e}"));
        assert!(rep.checked > 40, "case {i} checked only {}", rep.checked);
    }
}

#[test]
fn conv2d_rejects_bad_input() {
    let m = Conv2d::new("c", ConvGeom::square(3, 4, 5, 1, 0), false, DType::F32, 0).unwrap();
    use quadra::nn::Module;
    let small = Tensor::zeros(&[1, 3, 4, 4], DType::F32).unwrap();
    let e = m.infer(&small).unwrap_err().to_string();
    assert!(e.contains("larger than the padded input"), "{e}");
    let wrong_c = Tensor::zeros(&[1, 2, 8, 8], DType::F32).unwrap();
    assert!(m
        .infer(&wrong_c)
        .unwrap_err()
        .to_string()
        .contains("channels"));
    let empty = Tensor::zeros(&[0, 3, 8, 8], DType::F32).unwrap();
    assert!(m.infer(&empty).is_err());
    assert!(Conv2d::new(
        "c",
        ConvGeom {
            groups: 2,
            ..ConvGeom::square(3, 4, 3, 1, 1)
        },
        false,
        DType::F32,
        0
    )
    .is_err());
}

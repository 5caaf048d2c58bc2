//! Conv2d and Linear on `Device::Emu` (im2col/col2im/bias kernels of cuda/conv.cu, GEMMs
//! through the runtime) against the CPU engine: forward, backward, parameter gradients.

use crate::support::{check_layer, geom, F32_TOL};
use quadra::device::alloc::Category;
use quadra::nn::conv::Conv2d;
use quadra::nn::linear::Linear;
use quadra::nn::Module;
use quadra::ops::conv::ConvGeom;
use quadra::{DType, Device, Tensor};

/// A Conv2d builder; `g` is (c_in, c_out, kh, kw, stride, padding, dilation, groups)
/// with one stride/padding/dilation per axis.
fn conv(g: ConvGeom, bias: bool) -> impl Fn() -> Box<dyn Module> {
    move || Box::new(Conv2d::new("conv", g, bias, DType::F32, 7).unwrap()) as Box<dyn Module>
}

#[test]
fn conv2d_matches_cpu_over_geometries() {
    // geometry, bias, input (N, C, H, W)
    let cases = [
        (
            geom(3, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
            true,
            [2, 3, 7, 5],
        ),
        (
            geom(4, 6, (3, 2), (2, 1), (0, 1), (1, 2), 2),
            false,
            [3, 4, 9, 8],
        ),
        (
            geom(2, 5, (1, 1), (1, 1), (0, 0), (1, 1), 1),
            true,
            [1, 2, 4, 4],
        ),
        (
            geom(6, 6, (3, 3), (2, 2), (1, 1), (1, 1), 6),
            true,
            [2, 6, 5, 7],
        ),
        (
            geom(3, 2, (5, 5), (3, 2), (2, 2), (1, 1), 1),
            false,
            [2, 3, 6, 9],
        ),
    ];
    for (i, &(g, b, x)) in cases.iter().enumerate() {
        check_layer(&conv(g, b), &x, 100 + i as u64, F32_TOL, F32_TOL);
    }
}

#[test]
fn linear_matches_cpu() {
    for (i, &(fi, fo, n, bias)) in [(5, 3, 4, true), (17, 9, 1, false), (1, 2, 3, true)]
        .iter()
        .enumerate()
    {
        let build = move || {
            Box::new(Linear::new("fc", fi, fo, bias, DType::F32, 11).unwrap()) as Box<dyn Module>
        };
        check_layer(&build, &[n, fi], 200 + i as u64, F32_TOL, F32_TOL);
    }
}

#[test]
fn gradients_accumulate_over_two_backwards() {
    let build = conv(geom(2, 3, (3, 3), (1, 1), (1, 1), (1, 1), 1), true);
    let mut cpu = build();
    let mut emu = build();
    quadra::nn::module_to_device(emu.as_mut(), Device::Emu).unwrap();
    for seed in [1, 2] {
        let x = crate::support::randn(&[2, 2, 5, 5], seed);
        let y = cpu.forward(&x).unwrap();
        let g = crate::support::randn(y.shape(), seed + 10);
        cpu.backward(&g).unwrap();
        emu.forward(&x.to_device(Device::Emu).unwrap()).unwrap();
        emu.backward(&g.to_device(Device::Emu).unwrap()).unwrap();
    }
    for ((n, a), (_, b)) in crate::support::grads(cpu.as_mut())
        .iter()
        .zip(&crate::support::grads(emu.as_mut()))
    {
        crate::support::assert_close(b, a, F32_TOL, F32_TOL, n);
    }
}

#[test]
fn wrong_device_and_dtype_are_errors() {
    let build = conv(geom(2, 3, (3, 3), (1, 1), (1, 1), (1, 1), 1), true);
    let mut emu = build();
    quadra::nn::module_to_device(emu.as_mut(), Device::Emu).unwrap();
    // A CPU input to a layer whose weights live on the emulator.
    let x = crate::support::randn(&[1, 2, 4, 4], 3);
    let err = emu.forward(&x).unwrap_err().to_string();
    assert!(err.contains("cpu") || err.contains("lives on"), "{err}");
    // f64 on the CUDA backend is refused by name.
    let x64 = Tensor::full_in(1.0, &[1, 2, 4, 4], DType::F64, Device::Emu, Category::Data).unwrap();
    let err = emu.infer(&x64).unwrap_err().to_string();
    assert!(err.contains("f64") || err.contains("dtype"), "{err}");
}

//! Shared by the emulator parity tests (`mod common;`): run one layer on the CPU engine and
//! on `Device::Emu` (the CUDA backend's code path, kernels executed by the emulator) from
//! the same weights and compare forward output, input gradient and parameter gradients.
//!
//! With `QUADRA_TEST_CUDA=1` every check also runs on `cuda:0` (the same code path on a real
//! GPU); with that variable set and no usable GPU the tests FAIL, so a run that asked for
//! the GPU never passes without one.
#![allow(dead_code)]

use quadra::nn::{module_to_device, Module};
use quadra::ops::conv::ConvGeom;
use quadra::{DType, Device, Tensor};

/// Relative-to-scale f32 tolerance: |a − b| ≤ atol + rtol·|b| elementwise.
pub fn assert_close(got: &Tensor, want: &Tensor, rtol: f64, atol: f64, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes differ");
    let g = got.to_f64_vec();
    let w = want.to_f64_vec();
    assert_eq!(g.len(), w.len(), "{what}: element counts differ");
    let mut worst = (0.0f64, 0usize);
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(a.is_finite(), "{what}[{i}] = {a} is not finite (want {b})");
        let excess = (a - b).abs() - (atol + rtol * b.abs());
        if excess > worst.0 {
            worst = (excess, i);
        }
    }
    let i = worst.1;
    assert!(
        worst.0 <= 0.0,
        "{what}: element {i} is {} on the device, {} on cpu",
        g[i],
        w[i]
    );
}

/// Samples N(0, 1)·scale, reproducible.
pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, DType::F32, 1.0, seed).unwrap()
}

/// The parameter gradients of `m`, by name.
pub fn grads(m: &mut dyn Module) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    m.visit_params(&mut |name, p| {
        if let Some(g) = &p.grad {
            out.push((name.to_string(), g.to_device(Device::Cpu).unwrap()));
        }
    });
    out
}

/// Whether this run must also test the real GPU (`QUADRA_TEST_CUDA=1`).
pub fn gpu_requested() -> bool {
    std::env::var("QUADRA_TEST_CUDA").is_ok_and(|v| v.trim() == "1")
}

/// The CUDA-backend devices to check: the emulator, plus cuda:0 when asked for (which must
/// then be usable: a panic otherwise).
pub fn devices() -> Vec<Device> {
    let mut v = vec![Device::Emu];
    if gpu_requested() {
        if let Err(e) = quadra::device::gpu::runtime(Device::Cuda(0)) {
            panic!("QUADRA_TEST_CUDA=1 but cuda:0 cannot be used: {e}");
        }
        v.push(Device::Cuda(0));
    }
    v
}

/// `check_layer_on` for every device of `devices()`; returns the CPU output.
pub fn check_layer(
    build: &dyn Fn() -> Box<dyn Module>,
    x_shape: &[usize],
    seed: u64,
    rtol: f64,
    atol: f64,
) -> Tensor {
    let mut y = None;
    for d in devices() {
        y = Some(check_layer_on(d, build, x_shape, seed, rtol, atol));
    }
    y.expect("at least the emulator")
}

/// Builds the layer twice with `build` (same seed ⇒ same weights), moves one copy to
/// `device`, runs a training forward and backward with the same input and output gradient
/// on both, and an eval-mode `infer`, and compares everything. Returns the CPU output.
pub fn check_layer_on(
    device: Device,
    build: &dyn Fn() -> Box<dyn Module>,
    x_shape: &[usize],
    seed: u64,
    rtol: f64,
    atol: f64,
) -> Tensor {
    let mut cpu = build();
    let mut emu = build();
    module_to_device(emu.as_mut(), device).unwrap();
    let x = randn(x_shape, seed);
    let xe = x.to_device(device).unwrap();
    let name = cpu.path().to_string();

    let y = cpu.forward(&x).unwrap();
    let ye = emu.forward(&xe).unwrap();
    assert_eq!(ye.device(), device, "{name}: output left the device");
    assert_close(
        &ye.to_device(Device::Cpu).unwrap(),
        &y,
        rtol,
        atol,
        &format!("{name} forward on {device}"),
    );

    let g = randn(y.shape(), seed ^ 0x9e37);
    let dx = cpu.backward(&g).unwrap();
    let dxe = emu.backward(&g.to_device(device).unwrap()).unwrap();
    assert_close(
        &dxe.to_device(Device::Cpu).unwrap(),
        &dx,
        rtol,
        atol,
        &format!("{name} dx"),
    );
    let (gc, ge) = (grads(cpu.as_mut()), grads(emu.as_mut()));
    assert_eq!(gc.len(), ge.len(), "{name}: gradient counts differ");
    for ((nc, a), (ne, b)) in gc.iter().zip(&ge) {
        assert_eq!(nc, ne);
        assert_close(b, a, rtol, atol, &format!("{name} grad {nc}"));
    }

    let yi = cpu.infer(&x).unwrap();
    let yie = emu.infer(&xe).unwrap();
    assert_close(
        &yie.to_device(Device::Cpu).unwrap(),
        &yi,
        rtol,
        atol,
        &format!("{name} infer"),
    );
    y
}

/// A conv geometry with one (h, w) pair per kernel/stride/padding/dilation.
#[allow(clippy::too_many_arguments)]
pub fn geom(
    c_in: usize,
    c_out: usize,
    k: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> ConvGeom {
    ConvGeom {
        c_in,
        c_out,
        kh: k.0,
        kw: k.1,
        stride,
        padding,
        dilation,
        groups,
    }
}

//! QuadConv2d and QuadLinear on `Device::Emu` (the CUDA backend's code path: the stacked
//! maps of kernels::conv, the epilogues and lifts of cuda/quadratic.cu, bn_stats_f32)
//! against the CPU engine, for every neuron type and both back-propagation modes: forward,
//! input and parameter gradients, eval-mode inference; stored vs recompute on Emu; and the
//! saved-for-backward bytes, which must equal the CPU engine's.
//!
//! The trackers are process-global and the tests of one binary run in parallel threads, so
//! every test here holds `support::serial()`, as every test of tests/device does (the
//! accounting tests read the counters).

use crate::support::{assert_close, check_layer, geom, grads, randn, serial, F32_TOL};
use quadra::device::alloc::{cpu_tracker, emu_tracker};
use quadra::nn::quadratic::{NeuronType, QuadConv2d, QuadLinear};
use quadra::nn::{module_to_device, BackpropMode, Module};
use quadra::ops::conv::ConvGeom;
use quadra::{Category, DType, Device, Tensor};

const MODES: [BackpropMode; 2] = [BackpropMode::Stored, BackpropMode::Recompute];

fn conv(
    neuron: NeuronType,
    g: ConvGeom,
    bias: bool,
    mode: BackpropMode,
) -> impl Fn() -> Box<dyn Module> {
    move || {
        Box::new(QuadConv2d::new("q.conv", neuron, g, bias, mode, DType::F32, 5).unwrap())
            as Box<dyn Module>
    }
}

fn linear(
    neuron: NeuronType,
    fi: usize,
    fo: usize,
    bias: bool,
    mode: BackpropMode,
) -> impl Fn() -> Box<dyn Module> {
    move || {
        Box::new(QuadLinear::new("q.fc", neuron, fi, fo, bias, mode, DType::F32, 9).unwrap())
            as Box<dyn Module>
    }
}

/// Conv cases (geometry, bias, input (N, C, H, W)): 5×7 maps, padding, stride 2, an
/// asymmetric kernel, dilation, groups (not for t1, whose bilinear form spans the whole
/// patch), N = 1 and N = 3.
fn conv_cases(neuron: NeuronType) -> Vec<(ConvGeom, bool, [usize; 4])> {
    let grouped = if neuron == NeuronType::T1 { 1 } else { 2 };
    vec![
        (
            geom(2, 3, (3, 3), (1, 1), (1, 1), (1, 1), 1),
            true,
            [3, 2, 5, 7],
        ),
        (
            geom(4, 4, (3, 2), (2, 1), (1, 0), (1, 2), grouped),
            false,
            [1, 4, 7, 5],
        ),
        (
            geom(2, 4, (2, 2), (2, 2), (1, 1), (1, 1), grouped),
            true,
            [3, 2, 5, 7],
        ),
        // depthwise (groups = channels) as qmobilenet's, 3×3 stride 2
        (
            geom(
                3,
                3,
                (3, 3),
                (2, 2),
                (1, 1),
                (1, 1),
                if grouped == 1 { 1 } else { 3 },
            ),
            false,
            [2, 3, 5, 7],
        ),
    ]
}

#[test]
fn conv_matches_cpu_for_every_neuron_and_mode() {
    let _g = serial();
    for neuron in NeuronType::ALL {
        for mode in MODES {
            for (i, (g, bias, x)) in conv_cases(neuron).into_iter().enumerate() {
                eprintln!("conv {neuron} {mode} case {i}");
                // quadralib-bn's pre-BN bias gradient is Σ dz over a channel, zero in exact
                // arithmetic (BN removes the batch mean): both engines return round-off of
                // Σ|dz| (~1e-5 here), so that case gets an absolute 5e-5.
                let atol = if neuron == NeuronType::QuadraLibBn && bias {
                    5e-5
                } else {
                    F32_TOL
                };
                check_layer(
                    &conv(neuron, g, bias, mode),
                    &x,
                    300 + i as u64,
                    F32_TOL,
                    atol,
                );
            }
        }
    }
}

#[test]
fn linear_matches_cpu_for_every_neuron_and_mode() {
    let _g = serial();
    // (in, out, N, bias)
    let cases = [(5, 3, 3, true), (7, 4, 1, false), (1, 2, 3, true)];
    for neuron in NeuronType::ALL {
        for mode in MODES {
            for (i, &(fi, fo, n, bias)) in cases.iter().enumerate() {
                eprintln!("linear {neuron} {mode} case {i}");
                check_layer(
                    &linear(neuron, fi, fo, bias, mode),
                    &[n, fi],
                    400 + i as u64,
                    F32_TOL,
                    F32_TOL,
                );
            }
        }
    }
}

/// One training forward + backward on Emu; (output, dx, parameter gradients).
fn run_emu(m: &mut dyn Module, x: &Tensor, seed: u64) -> (Tensor, Tensor, Vec<(String, Tensor)>) {
    let xe = x.to_device(Device::Emu).unwrap();
    let y = m.forward(&xe).unwrap();
    let g = randn(y.shape(), seed).to_device(Device::Emu).unwrap();
    let dx = m.backward(&g).unwrap();
    (
        y.to_device(Device::Cpu).unwrap(),
        dx.to_device(Device::Cpu).unwrap(),
        grads(m),
    )
}

#[test]
fn stored_and_recompute_agree_on_emu() {
    let _g = serial();
    let g = geom(3, 2, (3, 3), (2, 1), (1, 1), (1, 1), 1);
    for neuron in NeuronType::ALL {
        for dense in [false, true] {
            let mut out = Vec::new();
            for mode in MODES {
                let mut m = if dense {
                    linear(neuron, 6, 3, true, mode)()
                } else {
                    conv(neuron, g, true, mode)()
                };
                module_to_device(m.as_mut(), Device::Emu).unwrap();
                let x = if dense {
                    randn(&[3, 6], 21)
                } else {
                    randn(&[3, 3, 5, 7], 21)
                };
                out.push(run_emu(m.as_mut(), &x, 22));
            }
            let what = format!("{neuron} {}", if dense { "linear" } else { "conv" });
            let (s, r) = (&out[0], &out[1]);
            // Same kernels on the same values: expected bit-identical.
            assert_close(&r.0, &s.0, 0.0, 0.0, &format!("{what} forward"));
            assert_close(&r.1, &s.1, 0.0, 0.0, &format!("{what} dx"));
            assert_eq!(r.2.len(), s.2.len(), "{what}");
            for ((n, a), (_, b)) in s.2.iter().zip(&r.2) {
                assert_close(b, a, 0.0, 0.0, &format!("{what} grad {n}"));
            }
        }
    }
}

/// The stacked running statistics of a quadralib-bn layer, on the CPU.
fn running(m: &mut dyn Module) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    m.visit_buffers(&mut |name, t| {
        out.push((name.to_string(), t.to_device(Device::Cpu).unwrap()));
    });
    out
}

#[test]
fn quadralib_bn_eval_after_training_forwards() {
    let _g = serial();
    let g = geom(3, 4, (3, 3), (1, 2), (1, 1), (1, 1), 1);
    for mode in MODES {
        for dense in [false, true] {
            let build: Box<dyn Fn() -> Box<dyn Module>> = if dense {
                Box::new(linear(NeuronType::QuadraLibBn, 5, 3, true, mode))
            } else {
                Box::new(conv(NeuronType::QuadraLibBn, g, true, mode))
            };
            let (mut cpu, mut emu) = (build(), build());
            module_to_device(emu.as_mut(), Device::Emu).unwrap();
            for (name, t) in running(emu.as_mut()) {
                assert_eq!(t.numel(), 3 * if dense { 3 } else { 4 }, "{name}");
            }
            emu.visit_buffers(&mut |name, t| assert_eq!(t.device(), Device::Emu, "{name}"));
            let shape: Vec<usize> = if dense { vec![4, 5] } else { vec![2, 3, 5, 7] };
            // three training steps (the last without backward), shifted inputs so the
            // running statistics move away from their initial values
            for step in 0..3u64 {
                let x = randn(&shape, 50 + step);
                let x = Tensor::from_f64(
                    &x.to_f64_vec()
                        .iter()
                        .map(|v| 1.5 * v + 0.3 * step as f64)
                        .collect::<Vec<_>>(),
                    &shape,
                    DType::F32,
                )
                .unwrap();
                let y = cpu.forward(&x).unwrap();
                let ye = emu.forward(&x.to_device(Device::Emu).unwrap()).unwrap();
                assert_close(
                    &ye.to_device(Device::Cpu).unwrap(),
                    &y,
                    F32_TOL,
                    F32_TOL,
                    "bn fwd",
                );
                if step < 2 {
                    let gy = randn(y.shape(), 60 + step);
                    cpu.backward(&gy).unwrap();
                    emu.backward(&gy.to_device(Device::Emu).unwrap()).unwrap();
                } else {
                    cpu.clear_saved();
                    emu.clear_saved();
                }
            }
            for ((n, a), (_, b)) in running(cpu.as_mut()).iter().zip(&running(emu.as_mut())) {
                assert_close(b, a, 1e-5, 1e-6, &format!("{mode} {n}"));
                assert_ne!(a.to_f64_vec(), vec![0.0; a.numel()], "{n} never moved");
            }
            emu.visit_buffers(&mut |name, t| assert_eq!(t.device(), Device::Emu, "{name}"));
            // eval mode: running statistics, nothing kept
            let x = randn(&shape, 70);
            let start = emu_tracker().current(Category::SavedForBackward);
            let yi = cpu.infer(&x).unwrap();
            let yie = emu.infer(&x.to_device(Device::Emu).unwrap()).unwrap();
            assert_eq!(emu_tracker().current(Category::SavedForBackward), start);
            assert_close(
                &yie.to_device(Device::Cpu).unwrap(),
                &yi,
                F32_TOL,
                F32_TOL,
                "bn eval",
            );
            // the accumulated gradients of both steps agree too (γ, β included)
            let (gc, ge) = (grads(cpu.as_mut()), grads(emu.as_mut()));
            assert!(gc.iter().any(|(n, _)| n.ends_with("bn.weight")));
            for ((n, a), (_, b)) in gc.iter().zip(&ge) {
                assert_close(b, a, F32_TOL, F32_TOL, &format!("{mode} two-step grad {n}"));
            }
            // the state dict of the device model reads back the moved statistics
            let mut sd = Vec::new();
            emu.state_dict(&mut sd);
            assert!(sd.iter().any(|(k, _)| k.ends_with("bn2.running_var")));
        }
    }
}

/// Saved-for-backward bytes of one training forward on `device`, measured on its tracker;
/// backward must give all of them back.
fn saved_bytes(m: &mut dyn Module, x: &Tensor, device: Device) -> u64 {
    let tracker = if device == Device::Emu {
        emu_tracker()
    } else {
        cpu_tracker()
    };
    let x = x.to_device(device).unwrap();
    let start = tracker.current(Category::SavedForBackward);
    let y = m.forward(&x).unwrap();
    let kept = tracker.current(Category::SavedForBackward) - start;
    drop(x);
    let g = randn(y.shape(), 3).to_device(device).unwrap();
    drop(y);
    drop(m.backward(&g).unwrap());
    assert_eq!(
        tracker.current(Category::SavedForBackward),
        start,
        "{}: backward must release everything on {device}",
        m.path()
    );
    kept
}

#[test]
fn saved_bytes_match_the_cpu_engine() {
    let _g = serial();
    let g = geom(3, 4, (3, 3), (2, 2), (1, 1), (1, 1), 1);
    for neuron in NeuronType::ALL {
        for dense in [false, true] {
            let mut figures = Vec::new();
            for mode in MODES {
                let build: Box<dyn Fn() -> Box<dyn Module>> = if dense {
                    Box::new(linear(neuron, 7, 3, true, mode))
                } else {
                    Box::new(conv(neuron, g, true, mode))
                };
                let x = if dense {
                    randn(&[6, 7], 1)
                } else {
                    randn(&[3, 3, 9, 7], 1)
                };
                let mut cpu = build();
                let mut emu = build();
                module_to_device(emu.as_mut(), Device::Emu).unwrap();
                let c = saved_bytes(cpu.as_mut(), &x, Device::Cpu);
                let e = saved_bytes(emu.as_mut(), &x, Device::Emu);
                let what = format!("{neuron} {} {mode}", if dense { "linear" } else { "conv" });
                assert_eq!(e, c, "{what}: emu kept {e} bytes, cpu {c}");
                figures.push(e);
                eprintln!("saved-for-backward {what}: cpu {c} B, emu {e} B");
            }
            assert!(
                figures[1] < figures[0],
                "{neuron}: recompute {} >= stored {}",
                figures[1],
                figures[0]
            );
        }
    }
}

#[test]
fn f64_and_cpu_inputs_are_refused_on_emu() {
    let _g = serial();
    let g = geom(2, 3, (3, 3), (1, 1), (1, 1), (1, 1), 1);
    let mut m = conv(NeuronType::QuadraLib, g, true, BackpropMode::Stored)();
    module_to_device(m.as_mut(), Device::Emu).unwrap();
    let err = m.forward(&randn(&[1, 2, 4, 4], 1)).unwrap_err().to_string();
    assert!(err.contains("cpu") || err.contains("lives on"), "{err}");
    let x64 = Tensor::full_in(1.0, &[1, 2, 4, 4], DType::F64, Device::Emu, Category::Data).unwrap();
    let err = m.infer(&x64).unwrap_err().to_string();
    assert!(err.contains("f64"), "{err}");
}

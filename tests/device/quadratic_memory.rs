//! Saved-for-backward accounting of the quadratic conv layers: the bytes one training forward
//! keeps equal the hand count of each neuron's saved set in each mode, recompute keeps less
//! than stored, and backward gives every byte back.
//!
//! The tracker is process-global and the tests of one binary run in parallel threads, so
//! every test here holds `support::serial()`, as every test of tests/device does.

use quadra::device::alloc::cpu_tracker;
use quadra::nn::quadratic::{NeuronType, QuadConv2d, QuadLinear};
use quadra::nn::{BackpropMode, Module};
use quadra::ops::conv::ConvGeom;
use quadra::{Category, DType, Tensor};

use crate::support::serial;

fn saved_now() -> u64 {
    cpu_tracker().current(Category::SavedForBackward)
}

/// Elements each neuron keeps, by hand (see the table in `nn::quadratic`):
/// x: input; planes (N, C, L); xx like x; lift (N, K², L); stats (3C).
fn hand_count(
    neuron: NeuronType,
    mode: BackpropMode,
    x: usize,
    plane: usize,
    lift: usize,
    c: usize,
) -> usize {
    use NeuronType::*;
    let stats = 2 * 3 * c; // mean and rstd over the 3C stacked channels
    match (mode, neuron) {
        (BackpropMode::Recompute, QuadraLibBn) => x + stats,
        (BackpropMode::Recompute, _) => x,
        (BackpropMode::Stored, T1) => x + lift,
        (BackpropMode::Stored, T2) => x + x,
        (BackpropMode::Stored, T3) => x + plane,
        (BackpropMode::Stored, T4 | QuadraLib) => x + 2 * plane,
        (BackpropMode::Stored, QuadraLibBn) => x + 3 * plane + 2 * plane + stats,
        (BackpropMode::Stored, Fan) => x + 2 * plane + x,
    }
}

#[test]
fn conv_saved_bytes_match_the_hand_count() {
    let _g = serial();
    let (n, c_in, h, w, c) = (3, 4, 9, 7, 5);
    let g = ConvGeom::square(c_in, c, 3, 2, 1);
    let (ho, wo) = ((h + 2 - 3) / 2 + 1, (w + 2 - 3) / 2 + 1);
    let (xe, plane, k) = (n * c_in * h * w, n * c * ho * wo, c_in * 9);
    let lift = n * k * k * ho * wo;
    for dtype in [DType::F32, DType::F64] {
        for neuron in NeuronType::ALL {
            let mut bytes = Vec::new();
            for mode in [BackpropMode::Stored, BackpropMode::Recompute] {
                let what = format!("{neuron} {mode} {dtype}");
                let mut m = QuadConv2d::new("mem.q", neuron, g, true, mode, dtype, 1).unwrap();
                let start = saved_now();
                let x = Tensor::randn(&[n, c_in, h, w], dtype, 1.0, 2).unwrap();
                let y = m.forward(&x).unwrap();
                let kept = saved_now() - start;
                let want = hand_count(neuron, mode, xe, plane, lift, c) * dtype.size();
                assert_eq!(
                    kept as usize, want,
                    "{what}: kept {kept} bytes, hand count {want}"
                );
                bytes.push(kept);
                // the caller lets go of x and y, as a network does; the layer still holds x
                drop(x);
                let g = Tensor::randn(y.shape(), dtype, 1.0, 3).unwrap();
                drop(y);
                assert_eq!(saved_now() - start, kept, "{what}: x must stay kept");
                let dx = m.backward(&g).unwrap();
                drop(dx);
                assert_eq!(
                    saved_now(),
                    start,
                    "{what}: backward must release everything"
                );
            }
            assert!(
                bytes[1] < bytes[0],
                "{neuron}: recompute {} >= stored {}",
                bytes[1],
                bytes[0]
            );
        }
    }
}

#[test]
fn linear_saved_bytes_match_the_hand_count() {
    let _g = serial();
    let (n, fi, fo) = (6, 7, 3);
    for neuron in NeuronType::ALL {
        for mode in [BackpropMode::Stored, BackpropMode::Recompute] {
            let mut m =
                QuadLinear::new("mem.fc", neuron, fi, fo, false, mode, DType::F32, 1).unwrap();
            let start = saved_now();
            let x = Tensor::randn(&[n, fi], DType::F32, 1.0, 2).unwrap();
            let y = m.forward(&x).unwrap();
            let kept = (saved_now() - start) as usize;
            let want = hand_count(neuron, mode, n * fi, n * fo, n * fi * fi, fo) * 4;
            assert_eq!(kept, want, "{neuron} {mode}");
            drop(x);
            let g = Tensor::randn(y.shape(), DType::F32, 1.0, 3).unwrap();
            drop(y);
            drop(m.backward(&g).unwrap());
            assert_eq!(saved_now(), start, "{neuron} {mode}");
        }
    }
}

#[test]
fn infer_and_clear_saved_keep_nothing() {
    let _g = serial();
    let g = ConvGeom::square(3, 4, 3, 1, 1);
    for neuron in NeuronType::ALL {
        let mut m = QuadConv2d::new(
            "mem.i",
            neuron,
            g,
            true,
            BackpropMode::Stored,
            DType::F32,
            1,
        )
        .unwrap();
        let start = saved_now();
        let x = Tensor::randn(&[2, 3, 6, 6], DType::F32, 1.0, 2).unwrap();
        let y = m.infer(&x).unwrap();
        assert_eq!(saved_now(), start, "{neuron}: infer kept something");
        assert_eq!(y.category(), Category::Workspace);
        m.forward(&x).unwrap();
        drop(x);
        assert!(saved_now() > start);
        m.clear_saved();
        assert_eq!(saved_now(), start, "{neuron}: clear_saved leaked");
    }
}

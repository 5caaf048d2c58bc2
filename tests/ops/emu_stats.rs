//! Tensor statistics computed on the device (cuda/stats.cu on the emulator, and on cuda:0
//! with `QUADRA_TEST_CUDA=1`) against the CPU engine's: identical counts, range and
//! histogram; moments to f64 rounding. Hand values on every device, the CPU included.

use quadra::analysis::tensor_stats;
use quadra::{Category, DType, Device, Tensor};

use crate::support::{all_devices, devices};

fn sample(n: usize, seed: u64) -> Vec<f32> {
    let t = Tensor::randn(&[n], DType::F32, 1.0, seed).unwrap();
    let mut v = t.to_vec::<f32>().unwrap();
    // the second-order term's heavy tail: a few large values, and some non-finite ones
    for (i, x) in v.iter_mut().enumerate() {
        if i % 97 == 5 {
            *x *= 40.0;
        }
        if i % 331 == 7 {
            *x = f32::NAN;
        }
        if i % 503 == 11 {
            *x = f32::INFINITY;
        }
    }
    v
}

#[test]
fn device_statistics_equal_the_cpu_ones() {
    for (n, bins, seed) in [(5_000, 64, 1), (777, 7, 2), (1, 3, 3), (40_000, 256, 4)] {
        let v = sample(n, seed);
        let cpu = Tensor::from_vec_in(v.clone(), &[n], Device::Cpu, Category::Data).unwrap();
        let a = tensor_stats(&cpu, bins).unwrap();
        for d in devices() {
            let dev = cpu.to_device(d).unwrap();
            let b = tensor_stats(&dev, bins).unwrap();
            let what = format!("n={n} on {d}");
            assert_eq!(a.count, b.count, "{what}");
            assert_eq!(a.non_finite, b.non_finite, "{what}");
            assert_eq!((a.min, a.max), (b.min, b.max), "{what}");
            assert_eq!(a.histogram, b.histogram, "{what}");
            assert!(
                (a.mean - b.mean).abs() <= 1e-12 * a.mean.abs().max(1.0),
                "{what}: {} vs {}",
                a.mean,
                b.mean
            );
            assert!(
                (a.std - b.std).abs() <= 1e-12 * a.std.max(1.0),
                "{what}: {} vs {}",
                a.std,
                b.std
            );
            // the extreme threshold is mean ± 3·std: summation order may move a value lying
            // exactly on it, so allow one value of difference
            assert!(
                (a.extreme_share - b.extreme_share).abs() * a.count as f64 <= 1.0 + 1e-9,
                "{what}"
            );
        }
        if n > 100 {
            assert!(a.extreme_share > 0.0);
        }
    }
}

#[test]
fn constant_empty_and_non_finite_tensors() {
    for d in all_devices() {
        let on = |v: Vec<f32>| {
            let n = v.len();
            Tensor::from_vec_in(v, &[n], d, Category::Data).unwrap()
        };
        let s = tensor_stats(&on(vec![2.5; 300]), 10).unwrap();
        assert_eq!(
            (s.count, s.mean, s.std, s.min, s.max),
            (300, 2.5, 0.0, 2.5, 2.5),
            "{d}"
        );
        assert_eq!(s.histogram.counts[0], 300, "{d}");
        let s = tensor_stats(&on(vec![f32::NAN; 40]), 4).unwrap();
        assert_eq!((s.count, s.non_finite), (0, 40), "{d}");
        let s = tensor_stats(&on(Vec::new()), 4).unwrap();
        assert_eq!(s.count, 0, "{d}");
    }
    // f64 tensors are refused on the CUDA backend with a message naming the dtype
    for d in devices() {
        let t = Tensor::full_in(1.0, &[4], DType::F64, d, Category::Data).unwrap();
        let err = tensor_stats(&t, 4).unwrap_err().to_string();
        assert!(err.contains("f64"), "{d}: {err}");
    }
}

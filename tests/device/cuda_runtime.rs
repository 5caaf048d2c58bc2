//! The CUDA runtime (src/device/cuda.rs) and the `Runtime` contract every GPU-path device
//! keeps.
//!
//! - Everywhere: a CUDA device this machine cannot run reports `Error::Unavailable` saying
//!   what is missing (on a machine without the driver: libcuda), `Device::auto()` falls back
//!   to the CPU, and nothing panics.
//! - The runtime checks below (copies, a kernel launch, strided-batched GEMM in every
//!   transpose combination, mem_info, pool reuse, out-of-memory) run on `Device::Emu`
//!   always, and ALSO on `cuda:0` when `QUADRA_TEST_CUDA=1`. With that variable set and no
//!   usable GPU the tests FAIL — a run that asked for the GPU never passes without one.
//!   Without it, one line on stderr says the GPU was not tested.
//! - The tests share the devices' pools and trackers and the TF32 switch with every other
//!   test of the process: each holds `support::serial()`, as every test of tests/device does.

use std::io::Write as _;
use std::sync::Once;

use quadra::device::cuda;
use quadra::device::emu::LaunchConfig;
use quadra::device::{self, block_size, Gemm, GpuBuf, KArg, Runtime};
use quadra::{Category, DType, Device, Error, Tensor};

use crate::support::{self, gpu_requested, serial};

/// The devices the runtime checks run on: `support::devices()` (the emulator, and cuda:0
/// when asked for, which must then work); without the GPU, one note on stderr says so.
fn devices() -> Vec<Device> {
    let v = support::devices();
    if !gpu_requested() {
        static NOTE: Once = Once::new();
        NOTE.call_once(|| {
            // straight to stderr: the test harness captures println!/eprintln!
            let _ = writeln!(
                std::io::stderr(),
                "cuda_runtime: NOT run on a GPU (emulator only); set QUADRA_TEST_CUDA=1 on a \
                 machine with one"
            );
        });
    }
    v
}

fn rt(d: Device) -> &'static dyn Runtime {
    device::runtime(d).unwrap_or_else(|e| panic!("{d}: {e}"))
}

fn libcuda_present() -> bool {
    // SAFETY: only tries to dlopen the driver's candidate names; calls nothing in it.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

// ---------------------------------------------------------------------------------------
// No GPU: clear errors, no panic
// ---------------------------------------------------------------------------------------

#[test]
fn unusable_cuda_is_reported_not_panicked() {
    let _g = serial();
    match device::runtime(Device::Cuda(0)) {
        Ok(r) => {
            // a usable GPU: auto picks it
            assert_eq!(Device::auto(), Device::Cuda(0));
            assert_eq!(r.device(), Device::Cuda(0));
            assert!(cuda::available(0));
            assert_eq!(cuda::unavailable_reason(0), None);
        }
        Err(e) => {
            assert!(
                !gpu_requested(),
                "QUADRA_TEST_CUDA=1 but cuda:0 cannot be used: {e}"
            );
            let msg = e.to_string();
            assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
            assert!(msg.contains("cuda:0"), "{msg}");
            if !libcuda_present() {
                assert!(
                    msg.contains("libcuda"),
                    "the message must name libcuda: {msg}"
                );
            }
            assert_eq!(Device::auto(), Device::Cpu);
            assert_eq!("auto".parse::<Device>().unwrap(), Device::Cpu);
            // asking again gives the same answer
            let again = device::runtime(Device::Cuda(0))
                .err()
                .map(|e| e.to_string());
            assert_eq!(again.as_deref(), Some(msg.as_str()));
            assert_eq!(cuda::unavailable_reason(0).as_deref(), Some(msg.as_str()));
            assert!(!cuda::available(0));

            // everything that needs the device says the same, without panicking
            let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap();
            let e = t.to_device(Device::Cuda(0)).unwrap_err();
            assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
            assert_eq!(e.to_string(), msg);
            let e = Tensor::zeros_in(&[4], DType::F32, Category::Data)
                .and_then(|t| t.to_device(Device::Cuda(0)))
                .unwrap_err();
            assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
            let e = GpuBuf::new(Device::Cuda(0), 64, Category::Workspace).unwrap_err();
            assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
            let e = Device::Cuda(0).tracker().unwrap_err();
            assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
        }
    }
}

#[test]
fn a_missing_ordinal_is_unavailable() {
    let _g = serial();
    let e = device::runtime(Device::Cuda(4096))
        .err()
        .expect("no machine has 4097 GPUs");
    let msg = e.to_string();
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    assert!(msg.contains("cuda:4096"), "{msg}");
    if libcuda_present() {
        assert!(
            msg.contains("no CUDA device with ordinal 4096") || msg.contains("cuInit"),
            "{msg}"
        );
    } else {
        assert!(msg.contains("libcuda"), "{msg}");
    }
}

#[test]
fn auto_is_cuda_exactly_when_requested_gpu_works() {
    let _g = serial();
    if gpu_requested() {
        assert_eq!(Device::auto(), Device::Cuda(0));
        let r = rt(Device::Cuda(0));
        let d = r.describe();
        assert!(d.contains("cuda:0") && d.contains("sm_"), "{d}");
        eprintln!("cuda:0 is {d}");
    } else if !libcuda_present() {
        assert_eq!(Device::auto(), Device::Cpu);
    }
}

// ---------------------------------------------------------------------------------------
// The runtime contract, on every device
// ---------------------------------------------------------------------------------------

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn upload(d: Device, v: &[f32]) -> GpuBuf {
    GpuBuf::from_host(d, &f32_bytes(v), Category::Workspace).unwrap()
}

fn download(b: &GpuBuf) -> Vec<f32> {
    let mut out = vec![0u8; b.len_bytes()];
    b.runtime().synchronize().unwrap();
    b.read(&mut out).unwrap();
    bytes_f32(&out)
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn copies_round_trip() {
    let _g = serial();
    for d in devices() {
        let v = values(10_000, 1);
        let a = upload(d, &v);
        assert_eq!(a.device(), d);
        assert_eq!(download(&a), v, "{d}: host→device→host");
        let b = a.duplicate(Category::Workspace).unwrap();
        assert_eq!(download(&b), v, "{d}: device→device");
        let z = GpuBuf::zeroed(d, 4 * 777, Category::Workspace).unwrap();
        assert!(download(&z).iter().all(|&x| x == 0.0), "{d}: zeroed");

        // tensors: cpu → device → cpu
        let t = Tensor::from_vec(values(24, 2), &[2, 3, 4]).unwrap();
        let g = t.to_device(d).unwrap();
        assert_eq!(g.device(), d);
        assert_eq!(g.shape(), &[2, 3, 4]);
        let back = g.to_device(Device::Cpu).unwrap();
        assert_eq!(
            back.to_vec::<f32>().unwrap(),
            t.to_vec::<f32>().unwrap(),
            "{d}"
        );
        let t64 = Tensor::from_vec(vec![1.5f64, -2.25, 1e-300], &[3]).unwrap();
        let back = t64.to_device(d).unwrap().to_device(Device::Cpu).unwrap();
        assert_eq!(
            back.to_vec::<f64>().unwrap(),
            vec![1.5, -2.25, 1e-300],
            "{d}"
        );
    }
}

#[test]
fn t3_forward_kernel_matches_the_cpu() {
    let _g = serial();
    for d in devices() {
        // z: (N, C, L) = (3, 5, 1000): 15,000 elements, a grid-stride loop over 59 blocks
        let (n, c, l) = (3usize, 5usize, 1000usize);
        let z = values(n * c * l, 3);
        let zb = upload(d, &z);
        let y = GpuBuf::new(d, 4 * z.len(), Category::Workspace).unwrap();
        let args = [
            KArg::Ptr(zb.ptr()),
            KArg::Ptr(y.ptr()),
            KArg::I32(n as i32),
            KArg::I32(c as i32),
            KArg::I32(l as i32),
        ];
        // SAFETY: t3_fwd_f32(const float* z, float* y, int N, int C, int L) reads and writes
        // N·C·L floats; both buffers hold exactly that many.
        unsafe {
            rt(d)
                .launch("t3_fwd_f32", LaunchConfig::elementwise(z.len()), &args)
                .unwrap()
        };
        let got = download(&y);
        for (i, (&g, &a)) in got.iter().zip(&z).enumerate() {
            assert_eq!(g, a * a, "{d}: y[{i}]");
        }

        // the wrong number of arguments is refused before anything runs
        // SAFETY: refused by the arity check (the kernel takes 5 parameters).
        let e =
            unsafe { rt(d).launch("t3_fwd_f32", LaunchConfig::elementwise(z.len()), &args[..4]) }
                .unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{d}: {e:?}");
        // SAFETY: an unknown kernel is refused by name.
        let e = unsafe { rt(d).launch("no_such_kernel_f32", LaunchConfig::new(1, 1, 0), &[]) }
            .unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{d}: {e:?}");
    }
}

/// Reference: row-major C_b (+)= op(A_b)·op(B_b), in f64.
fn gemm_ref(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    for bi in 0..g.batch {
        for i in 0..g.m {
            for j in 0..g.n {
                let mut s = 0.0f64;
                for p in 0..g.k {
                    let av = if g.trans_a {
                        a[bi * g.stride_a + p * g.lda + i]
                    } else {
                        a[bi * g.stride_a + i * g.lda + p]
                    };
                    let bv = if g.trans_b {
                        b[bi * g.stride_b + j * g.ldb + p]
                    } else {
                        b[bi * g.stride_b + p * g.ldb + j]
                    };
                    s += av as f64 * bv as f64;
                }
                let o = &mut c[bi * g.stride_c + i * g.ldc + j];
                *o = if g.accumulate {
                    *o + s as f32
                } else {
                    s as f32
                };
            }
        }
    }
}

/// Runs `g` (with pointer fields ignored) on `d` over host data, returns C.
fn gemm_on(d: Device, g: &Gemm, a: &[f32], b: &[f32], c0: &[f32]) -> Vec<f32> {
    let (ab, bb, cb) = (upload(d, a), upload(d, b), upload(d, c0));
    let mut g = *g;
    g.a = ab.ptr();
    g.b = bb.ptr();
    g.c = cb.ptr();
    let (ea, eb, ec) = g.extents();
    assert!(ea <= a.len() && eb <= b.len() && ec <= c0.len());
    // SAFETY: the extents lie inside the three buffers just checked; C is its own buffer.
    unsafe { rt(d).sgemm(&g).unwrap() };
    download(&cb)
}

#[allow(clippy::too_many_arguments)]
fn gemm_case(
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    batch: usize,
    pad: usize,
    accumulate: bool,
) -> Gemm {
    let (ra, ca) = if trans_a { (k, m) } else { (m, k) };
    let (rb, cb) = if trans_b { (n, k) } else { (k, n) };
    let (lda, ldb, ldc) = (ca + pad, cb + pad, n + pad);
    Gemm {
        m,
        n,
        k,
        a: 0,
        lda,
        trans_a,
        stride_a: ra * lda + pad,
        b: 0,
        ldb,
        trans_b,
        stride_b: rb * ldb + 2 * pad,
        c: 0,
        ldc,
        stride_c: m * ldc + 3 * pad,
        batch,
        accumulate,
    }
}

#[test]
fn sgemm_matches_the_cpu_for_transposes_batches_and_accumulation() {
    let _g = serial();
    let devs = devices();
    let mut cases = Vec::new();
    for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
        cases.push(gemm_case(7, 5, 3, ta, tb, 1, 0, false));
        cases.push(gemm_case(33, 17, 65, ta, tb, 3, 2, false));
        cases.push(gemm_case(16, 40, 9, ta, tb, 2, 1, true));
    }
    cases.push(gemm_case(64, 48, 128, false, true, 4, 0, true));
    // k = 0: C = 0 (or unchanged when accumulating), A and B never read
    cases.push(gemm_case(4, 6, 0, false, false, 2, 0, false));
    cases.push(gemm_case(4, 6, 0, true, true, 2, 0, true));
    for (ci, g) in cases.iter().enumerate() {
        let (ea, eb, ec) = g.extents();
        let a = values(ea.max(1), 10 + ci as u64);
        let b = values(eb.max(1), 100 + ci as u64);
        let c0 = values(ec.max(1), 1000 + ci as u64);
        let mut want = c0.clone();
        gemm_ref(g, &a, &b, &mut want);
        for &d in &devs {
            let got = gemm_on(d, g, &a, &b, &c0);
            for (i, (&x, &y)) in got.iter().zip(&want).enumerate() {
                let tol = 1e-5 * (1.0 + g.k as f32) * (1.0 + y.abs());
                assert!(
                    (x - y).abs() <= tol,
                    "{d}: case {ci} {g:?}: C[{i}] = {x}, want {y}"
                );
            }
        }
    }
}

#[test]
fn mem_info_sees_allocations() {
    let _g = serial();
    for d in devices() {
        let r = rt(d);
        let (free0, total) = r.mem_info().unwrap();
        assert!(total > 0 && free0 <= total, "{d}: {free0} free of {total}");
        // fresh device memory (not from the pool): the device's free count drops
        let bytes = 64 << 20;
        let p = r.malloc(bytes).unwrap();
        let (free1, _) = r.mem_info().unwrap();
        // SAFETY: p came from malloc(bytes) just above and is not used again.
        unsafe { r.free(p, bytes) };
        assert!(
            free0.saturating_sub(free1) >= (bytes as u64) * 9 / 10,
            "{d}: free {free0} → {free1} after allocating {bytes} bytes"
        );
        let (free2, _) = r.mem_info().unwrap();
        assert!(free2 > free1, "{d}: free {free1} → {free2} after freeing");
    }
}

#[test]
fn the_pool_reuses_freed_blocks() {
    let _g = serial();
    for d in devices() {
        let r = rt(d);
        let bytes = (3 << 20) + 1234; // an odd size no other test asks for
        let first = GpuBuf::new(d, bytes, Category::Workspace).unwrap();
        let p = first.ptr();
        let reserved = r.pool().stats().reserved;
        let tracked = r.tracker().total();
        drop(first);
        assert!(r.pool().stats().cached >= block_size(bytes) as u64, "{d}");
        assert_eq!(r.tracker().total(), tracked - bytes as u64, "{d}: tracker");
        let second = GpuBuf::new(d, bytes, Category::Workspace).unwrap();
        assert_eq!(second.ptr(), p, "{d}: the freed block is handed out again");
        assert_eq!(
            r.pool().stats().reserved,
            reserved,
            "{d}: no new device memory"
        );
        drop(second);
        r.pool().empty_cache(r);
        assert_eq!(r.pool().stats().cached, 0, "{d}");
    }
}

#[test]
fn an_absurd_allocation_is_out_of_memory() {
    let _g = serial();
    for d in devices() {
        // 1 PiB
        let e = GpuBuf::new(d, 1 << 50, Category::Workspace).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::OutOfMemory { .. }), "{d}: {e:?}");
        assert!(msg.contains(&d.to_string()), "{d}: {msg}");
        // the device is still usable afterwards
        let v = values(100, 7);
        assert_eq!(download(&upload(d, &v)), v, "{d}");
    }
}

#[test]
fn tf32_is_opt_in_and_close() {
    let _g = serial();
    if !gpu_requested() {
        devices(); // prints the note
        return;
    }
    let d = Device::Cuda(0);
    let g = gemm_case(128, 96, 512, false, false, 2, 0, false);
    let (ea, eb, ec) = g.extents();
    let (a, b, c0) = (values(ea, 1), values(eb, 2), vec![0.0; ec]);
    let mut want = c0.clone();
    gemm_ref(&g, &a, &b, &mut want);
    let err = |got: &[f32]| {
        got.iter()
            .zip(&want)
            .map(|(x, y)| (x - y).abs() as f64)
            .fold(0.0, f64::max)
    };
    assert!(!cuda::tf32() || std::env::var("QUADRA_TF32").is_ok());
    cuda::set_tf32(false);
    let exact = err(&gemm_on(d, &g, &a, &b, &c0));
    cuda::set_tf32(true);
    let tf32 = err(&gemm_on(d, &g, &a, &b, &c0));
    cuda::set_tf32(false);
    eprintln!("max |error| over k=512: f32 {exact:e}, tf32 {tf32:e}");
    assert!(exact < 1e-4, "f32 math: {exact}");
    assert!(tf32 < 0.1, "tf32 math: {tf32}");
}

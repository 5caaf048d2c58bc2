//! The kernels of `cuda/*.cu` run by the CPU emulator, each against a plain Rust
//! computation on odd shapes; and the emulator itself: shared memory and barriers, warp
//! shuffles and votes, atomics, half/bf16, launch errors, barrier divergence.

use quadra::device::emu::{self, selftest, BnParams, Dim3, Epilogue, LaunchConfig};
use quadra::ops::norm;
use quadra::Error;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn randn(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

fn close(got: &[f32], want: &[f64], rtol: f64, atol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{what}[{i}]: got {g}, want {w} (|err| = {err:e})"
        );
    }
}

/// Offset of branch k, channel c, position l of sample n in stacked planes (N, nb·C, L).
fn at(nb: usize, c_n: usize, l_n: usize, n: usize, k: usize, c: usize, l: usize) -> usize {
    ((n * nb + k) * c_n + c) * l_n + l
}

const SHAPES: [(usize, usize, usize); 3] = [(3, 5, 7), (2, 3, 333), (1, 1, 1)];

#[test]
fn registry_holds_every_kernel_of_cuda_dir() {
    let names = emu::kernel_names();
    for k in emu::KERNELS {
        assert!(names.iter().any(|n| n == k), "{k} not registered");
    }
    assert!(names.iter().any(|n| n == "emu_test_noop"));
    assert_eq!(emu::kernel_arity("quadralib_fwd_f32"), Some(5));
    assert_eq!(emu::kernel_arity("quadralib_bn_bwd_f32"), Some(13));
    assert_eq!(emu::kernel_arity("emu_test_noop"), Some(0));
    assert_eq!(emu::kernel_arity("no_such_kernel"), None);
}

/// (kind, sm) of each image in a fatbin: kind 1 = PTX, 2 = ELF (SASS).
fn fatbin_images(fb: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let u16_at = |o: usize| u16::from_le_bytes([fb[o], fb[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(fb[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(fb[o..o + 8].try_into().unwrap());
    assert_eq!(u32_at(0), 0xBA55_ED50, "fatbin magic");
    let header = u16_at(6) as usize;
    let end = header + u64_at(8) as usize;
    let mut off = header;
    let mut images = Vec::new();
    while off < end {
        let kind = u16_at(off);
        let hsize = u32_at(off + 4) as usize;
        let psize = u64_at(off + 8) as usize;
        let sm = u32_at(off + 28);
        images.push((kind, sm, &fb[off + hsize..off + hsize + psize]));
        off += hsize + psize;
    }
    images
}

#[test]
fn fatbin_holds_sass_for_each_arch_and_ptx() {
    let Some(fb) = emu::fatbin() else {
        eprintln!("no fatbin in this build (nvcc not found): nothing to check");
        return;
    };
    assert_eq!(fb.as_ptr() as usize % 16, 0, "fatbin alignment");
    let archs: Vec<u32> = option_env!("CUDA_ARCHS")
        .unwrap_or("80,90")
        .split(',')
        .filter_map(|a| a.trim().trim_start_matches("sm_").parse().ok())
        .collect();
    let images = fatbin_images(fb);
    for &a in &archs {
        let elf = images
            .iter()
            .find(|(k, sm, _)| *k == 2 && *sm == a)
            .unwrap_or_else(|| panic!("no SASS for sm_{a}"));
        assert_eq!(&elf.2[..4], b"\x7fELF");
        for name in emu::KERNELS {
            assert!(
                elf.2.windows(name.len()).any(|w| w == name.as_bytes()),
                "sm_{a} image lacks {name}"
            );
        }
    }
    let last = *archs.last().unwrap();
    assert!(
        images.iter().any(|(k, sm, _)| *k == 1 && *sm == last),
        "no PTX for compute_{last}"
    );
}

fn epilogue_reference(kind: Epilogue, z: &[f32], (n, c, l): (usize, usize, usize)) -> Vec<f64> {
    let nb = kind.branches();
    let mut y = Vec::with_capacity(n * c * l);
    for i in 0..n {
        for ch in 0..c {
            for j in 0..l {
                let b = |k| z[at(nb, c, l, i, k, ch, j)] as f64;
                y.push(match kind {
                    Epilogue::Quadralib => b(0) * b(1) + b(2),
                    Epilogue::T4 => b(0) * b(1),
                    Epilogue::T3 => b(0) * b(0),
                });
            }
        }
    }
    y
}

fn epilogue_grad_reference(
    kind: Epilogue,
    z: &[f32],
    gy: &[f32],
    (n, c, l): (usize, usize, usize),
) -> Vec<f64> {
    let nb = kind.branches();
    let mut gz = vec![0.0; z.len()];
    for i in 0..n {
        for ch in 0..c {
            for j in 0..l {
                let g = gy[(i * c + ch) * l + j] as f64;
                let idx = |k| at(nb, c, l, i, k, ch, j);
                match kind {
                    Epilogue::Quadralib | Epilogue::T4 => {
                        gz[idx(0)] = g * z[idx(1)] as f64;
                        gz[idx(1)] = g * z[idx(0)] as f64;
                        if kind == Epilogue::Quadralib {
                            gz[idx(2)] = g;
                        }
                    }
                    Epilogue::T3 => gz[idx(0)] = 2.0 * z[idx(0)] as f64 * g,
                }
            }
        }
    }
    gz
}

#[test]
fn epilogues_forward_and_backward_match_cpu() {
    for kind in [Epilogue::Quadralib, Epilogue::T4, Epilogue::T3] {
        for (s, &dims) in SHAPES.iter().enumerate() {
            let (n, c, l) = dims;
            let nb = kind.branches();
            let z = randn(n * nb * c * l, 10 + s as u64);
            let gy = randn(n * c * l, 20 + s as u64);
            let mut y = vec![f32::NAN; n * c * l];
            emu::epilogue_forward_f32(kind, &z, dims, &mut y).unwrap();
            close(
                &y,
                &epilogue_reference(kind, &z, dims),
                1e-6,
                1e-6,
                &format!("{kind:?} fwd {dims:?}"),
            );
            let mut gz = vec![f32::NAN; z.len()];
            emu::epilogue_backward_f32(kind, &z, &gy, dims, &mut gz).unwrap();
            close(
                &gz,
                &epilogue_grad_reference(kind, &z, &gy, dims),
                1e-6,
                1e-6,
                &format!("{kind:?} bwd {dims:?}"),
            );
        }
    }
}

#[test]
fn epilogue_rejects_wrong_lengths() {
    let z = vec![0f32; 3 * 2 * 5];
    let mut y = vec![0f32; 2 * 5];
    // quadralib needs 3 planes per sample: (1, 3·2, 5) = 30 — ok; claim N = 2 instead.
    let e = emu::epilogue_forward_f32(Epilogue::Quadralib, &z, (2, 2, 5), &mut y).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let mut short = vec![0f32; 9];
    let e = emu::epilogue_forward_f32(Epilogue::Quadralib, &z, (1, 2, 5), &mut short).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = emu::epilogue_forward_f32(Epilogue::T3, &z, (usize::MAX, 2, 5), &mut y).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    // Empty tensors are fine and launch nothing.
    emu::epilogue_forward_f32(Epilogue::T4, &[], (0, 3, 4), &mut []).unwrap();
}

/// Batch statistics of each of the 3C branch-channels of stacked z (N, 3C, L), in f64 via
/// the CPU engine (z viewed as (N, 3C, L) is exactly BatchNorm over 3C channels).
fn branch_stats(z: &[f32], (n, c, l): (usize, usize, usize)) -> (Vec<f32>, Vec<f32>) {
    let z64: Vec<f64> = z.iter().map(|&v| v as f64).collect();
    let (mean, var) = norm::batch_stats(&z64, n, 3 * c, l);
    let rstd = norm::rstd(&var, 1e-5);
    (
        mean.iter().map(|&v| v as f32).collect(),
        rstd.iter().map(|&v| v as f32).collect(),
    )
}

#[test]
fn quadralib_bn_forward_and_backward_match_cpu() {
    for (s, &dims) in [(3usize, 4usize, 9usize), (2, 3, 77)].iter().enumerate() {
        let (n, c, l) = dims;
        let z: Vec<f32> = randn(n * 3 * c * l, 30 + s as u64)
            .iter()
            .map(|v| v * 3.0 + 0.5)
            .collect();
        let gy = randn(n * c * l, 40 + s as u64);
        let (mean, rstd) = branch_stats(&z, dims);
        let gamma: Vec<f32> = randn(3 * c, 50).iter().map(|v| 1.0 + 0.25 * v).collect();
        let beta = randn(3 * c, 51);
        let p = BnParams {
            mean: &mean,
            rstd: &rstd,
            gamma: &gamma,
            beta: &beta,
        };
        // u_k = γ(z − μ)·rstd + β per branch plane, in f64.
        let u = |i: usize, k: usize, ch: usize, j: usize| -> f64 {
            let kc = k * c + ch;
            gamma[kc] as f64
                * ((z[at(3, c, l, i, k, ch, j)] as f64 - mean[kc] as f64) * rstd[kc] as f64)
                + beta[kc] as f64
        };
        let mut want_y = Vec::new();
        for i in 0..n {
            for ch in 0..c {
                for j in 0..l {
                    want_y.push(u(i, 0, ch, j) * u(i, 1, ch, j) + u(i, 2, ch, j));
                }
            }
        }
        let mut y = vec![f32::NAN; n * c * l];
        emu::quadralib_bn_forward_f32(&z, dims, &p, &mut y).unwrap();
        close(&y, &want_y, 1e-5, 1e-5, "quadralib-bn fwd");

        // Reference backward: du_k per branch, then the CPU BatchNorm backward per branch.
        let mut du = vec![vec![0f64; n * c * l]; 3];
        for i in 0..n {
            for ch in 0..c {
                for j in 0..l {
                    let o = (i * c + ch) * l + j;
                    let g = gy[o] as f64;
                    du[0][o] = g * u(i, 1, ch, j);
                    du[1][o] = g * u(i, 0, ch, j);
                    du[2][o] = g;
                }
            }
        }
        for training in [true, false] {
            for block in [32u32, 128] {
                let mut gz = vec![f32::NAN; z.len()];
                let mut dgamma = vec![f32::NAN; 3 * c];
                let mut dbeta = vec![f32::NAN; 3 * c];
                emu::quadralib_bn_backward_f32(
                    &z,
                    &gy,
                    dims,
                    &p,
                    training,
                    block,
                    &mut gz,
                    &mut dgamma,
                    &mut dbeta,
                )
                .unwrap();
                let mut want_gz = vec![0f64; z.len()];
                let mut want_dgamma = vec![0f64; 3 * c];
                let mut want_dbeta = vec![0f64; 3 * c];
                for k in 0..3 {
                    // Branch k's plane as its own (N, C, L) tensor.
                    let mut zk = vec![0f64; n * c * l];
                    for i in 0..n {
                        for ch in 0..c {
                            for j in 0..l {
                                zk[(i * c + ch) * l + j] = z[at(3, c, l, i, k, ch, j)] as f64;
                            }
                        }
                    }
                    let mk: Vec<f64> = mean[k * c..(k + 1) * c].iter().map(|&v| v as f64).collect();
                    let rk: Vec<f64> = rstd[k * c..(k + 1) * c].iter().map(|&v| v as f64).collect();
                    let gk: Vec<f64> = gamma[k * c..(k + 1) * c]
                        .iter()
                        .map(|&v| v as f64)
                        .collect();
                    let (sg, sgx) = norm::grad_sums(&zk, &du[k], (n, c, l), &mk, &rk);
                    let mut dz = vec![0f64; n * c * l];
                    if training {
                        norm::backward_input(
                            &zk,
                            &du[k],
                            (n, c, l),
                            &mk,
                            &rk,
                            &gk,
                            &sg,
                            &sgx,
                            &mut dz,
                        );
                    } else {
                        norm::backward_input_eval(&du[k], (c, l), &rk, &gk, &mut dz);
                    }
                    for i in 0..n {
                        for ch in 0..c {
                            for j in 0..l {
                                want_gz[at(3, c, l, i, k, ch, j)] = dz[(i * c + ch) * l + j];
                            }
                        }
                    }
                    want_dgamma[k * c..(k + 1) * c].copy_from_slice(&sgx);
                    want_dbeta[k * c..(k + 1) * c].copy_from_slice(&sg);
                }
                let what = format!("quadralib-bn bwd training={training} block={block} {dims:?}");
                close(&gz, &want_gz, 1e-4, 1e-4, &format!("{what} gz"));
                close(&dgamma, &want_dgamma, 1e-4, 1e-4, &format!("{what} dgamma"));
                close(&dbeta, &want_dbeta, 1e-4, 1e-4, &format!("{what} dbeta"));
            }
        }
    }
}

#[test]
fn channel_reduction_on_several_block_sizes() {
    let dims = (3usize, 5usize, 77usize); // N·L = 231 values per channel: no block size divides it
    let (n, c, l) = dims;
    let x: Vec<f32> = randn(n * c * l, 60)
        .iter()
        .map(|v| v * 4.0 + 10.0)
        .collect();
    let mut want_s = vec![0f64; c];
    let mut want_q = vec![0f64; c];
    for i in 0..n {
        for ch in 0..c {
            for j in 0..l {
                let v = x[(i * c + ch) * l + j] as f64;
                want_s[ch] += v;
                want_q[ch] += v * v;
            }
        }
    }
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let (want_mean, want_var) = norm::batch_stats(&x64, n, c, l);
    let want_rstd = norm::rstd(&want_var, 1e-5);
    for block in [32u32, 128, 256, 1024] {
        let mut s = vec![f32::NAN; c];
        let mut q = vec![f32::NAN; c];
        emu::channel_sum_sumsq_f32(&x, dims, block, &mut s, &mut q).unwrap();
        close(&s, &want_s, 1e-6, 1e-4, &format!("sum block={block}"));
        close(&q, &want_q, 1e-6, 1e-3, &format!("sumsq block={block}"));
        // Deterministic: the same bits on a second run.
        let mut s2 = vec![0f32; c];
        let mut q2 = vec![0f32; c];
        emu::channel_sum_sumsq_f32(&x, dims, block, &mut s2, &mut q2).unwrap();
        assert_eq!(
            s.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            s2.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(q, q2);

        let (mut mean, mut var, mut rstd) = (vec![0f32; c], vec![0f32; c], vec![0f32; c]);
        emu::bn_stats_f32(&x, dims, 1e-5, block, &mut mean, &mut var, &mut rstd).unwrap();
        close(
            &mean,
            &want_mean,
            1e-6,
            1e-6,
            &format!("mean block={block}"),
        );
        close(&var, &want_var, 1e-5, 1e-6, &format!("var block={block}"));
        close(
            &rstd,
            &want_rstd,
            1e-5,
            1e-6,
            &format!("rstd block={block}"),
        );
    }
    // Block sizes the reduction cannot use are refused before launching.
    for bad in [0u32, 16, 100, 2048] {
        let (mut s, mut q) = (vec![0f32; c], vec![0f32; c]);
        let e = emu::channel_sum_sumsq_f32(&x, dims, bad, &mut s, &mut q).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{e}");
    }
}

#[test]
fn launches_from_several_threads_at_once() {
    let dims = (2usize, 3usize, 50usize);
    let x = randn(dims.0 * dims.1 * dims.2, 61);
    let mut want = vec![0f32; dims.1];
    let mut q = vec![0f32; dims.1];
    emu::channel_sum_sumsq_f32(&x, dims, 64, &mut want, &mut q).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..5 {
                    let (mut got, mut q) = (vec![0f32; dims.1], vec![0f32; dims.1]);
                    emu::channel_sum_sumsq_f32(&x, dims, 64, &mut got, &mut q).unwrap();
                    assert_eq!(got, want);
                }
            });
        }
    });
}

#[test]
fn dynamic_shared_memory_and_syncthreads() {
    let n = 1000;
    let x = randn(n, 70);
    for block in [96u32, 128, 1000, 1024] {
        let (y, counts) = selftest::block_reverse_f32(&x, block).unwrap();
        let b = block as usize;
        for (blk, chunk) in x.chunks(b).enumerate() {
            let rev: Vec<f32> = chunk.iter().rev().copied().collect();
            assert_eq!(
                &y[blk * b..blk * b + chunk.len()],
                &rev[..],
                "block={block} chunk {blk}"
            );
            let pos = chunk.iter().filter(|&&v| v > 0.0).count() as i32;
            assert_eq!(
                counts[blk], pos,
                "__syncthreads_count block={block} chunk {blk}"
            );
        }
    }
}

/// The warp-shuffle and vote results for one warp of 32 lanes (values past n are 0).
fn warp_reference(v: &[i32; 32]) -> [[i64; 32]; 7] {
    let mut out = [[0i64; 32]; 7];
    let mut d = *v;
    let mut o = 16;
    while o > 0 {
        let prev = d;
        for lane in 0..32 {
            // __shfl_down_sync: a source past the warp returns the caller's own value.
            let src = if lane + o < 32 {
                prev[lane + o]
            } else {
                prev[lane]
            };
            d[lane] = prev[lane].wrapping_add(src);
        }
        o /= 2;
    }
    let total: i32 = v.iter().sum();
    let mut scan = [0i32; 32];
    let mut acc = 0;
    for lane in 0..32 {
        acc += v[lane];
        scan[lane] = acc;
    }
    let ballot = (0..32).fold(0u32, |b, l| b | (((v[l] > 0) as u32) << l));
    let any = v.iter().any(|&x| x < 0) as i32;
    let all = v.iter().all(|&x| x >= 0) as i32;
    for lane in 0..32 {
        out[0][lane] = v[3] as i64;
        out[1][lane] = v[(lane & !15) + 2] as i64;
        out[2][lane] = d[lane] as i64;
        out[3][lane] = total as i64;
        out[4][lane] = scan[lane] as i64;
        out[5][lane] = ballot as i64;
        out[6][lane] = (any | (all << 1)) as i64;
    }
    out
}

#[test]
fn warp_shuffles_and_votes() {
    let mut rng = ChaCha8Rng::seed_from_u64(80);
    for (n, block) in [(200usize, 64u32), (200, 96), (45, 32), (1000, 1024)] {
        let mut x: Vec<i32> = (0..n).map(|_| rng.random_range(-5..=20)).collect();
        // One warp of all non-negative values, so __all_sync is true somewhere.
        for v in x.iter_mut().take(32) {
            *v = v.abs();
        }
        let got = selftest::warp_ops_i32(&x, block).unwrap();
        let fields: [Vec<i64>; 7] = [
            got.bcast.iter().map(|&v| v as i64).collect(),
            got.seg.iter().map(|&v| v as i64).collect(),
            got.down.iter().map(|&v| v as i64).collect(),
            got.xor_sum.iter().map(|&v| v as i64).collect(),
            got.scan.iter().map(|&v| v as i64).collect(),
            got.ballot.iter().map(|&v| v as i64).collect(),
            got.votes.iter().map(|&v| v as i64).collect(),
        ];
        let names = ["bcast", "seg", "down", "xor", "scan", "ballot", "votes"];
        for w in 0..n.div_ceil(32) {
            let mut lanes = [0i32; 32];
            for (l, slot) in lanes.iter_mut().enumerate() {
                *slot = x.get(w * 32 + l).copied().unwrap_or(0);
            }
            let want = warp_reference(&lanes);
            for (f, name) in names.iter().enumerate() {
                for (l, &expected) in want[f].iter().enumerate() {
                    let i = w * 32 + l;
                    if i < n {
                        assert_eq!(
                            fields[f][i], expected,
                            "{name} warp {w} lane {l} (n={n}, block={block})"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn atomics_int_and_float() {
    let mut rng = ChaCha8Rng::seed_from_u64(90);
    let x: Vec<i32> = (0..3001).map(|_| rng.random_range(-1000..=1000)).collect();
    let a = selftest::atomics_i32(&x, 128).unwrap();
    assert_eq!(a.isum, x.iter().sum::<i32>());
    assert_eq!(a.fsum, x.iter().sum::<i32>() as f32); // small integers: exact in f32
    assert_eq!(a.imax, *x.iter().max().unwrap());
    assert_eq!(a.imin, *x.iter().min().unwrap());
    assert_eq!(a.cas_max, a.imax);
    let mut hist = [0u32; 16];
    for &v in &x {
        hist[(v & 15) as usize] += 1;
    }
    assert_eq!(a.hist, hist);
}

#[test]
fn half_and_bfloat16_conversions_match_the_half_crate() {
    let mut x = vec![
        0.0f32,
        -0.0,
        1.0,
        -1.5,
        65504.0,
        65519.99,
        65520.0,
        1e6,
        -1e6,
        6.1e-5,
        5.96e-8,
        2.98e-8,
        2.99e-8,
        1e-10,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MIN_POSITIVE,
        3.4e38,
    ];
    // Ties: halfway between two halfs (10 mantissa bits) or two bf16s (7 bits), both ways.
    for (bits, m) in [(11, 1.0f32), (11, 3.0), (8, 1.0), (8, 3.0)] {
        x.push(1.0 + m * 2f32.powi(-bits));
        x.push(-(1.0 + m * 2f32.powi(-bits)));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(100);
    for _ in 0..2000 {
        let bits: u32 = rng.random();
        let f = f32::from_bits(bits);
        if !f.is_nan() {
            x.push(f);
        }
        x.push(rng.random_range(-70000.0f32..70000.0));
        x.push(rng.random_range(-1e-4f32..1e-4));
    }
    let (h, b, back) = selftest::half_f32(&x).unwrap();
    for (i, &v) in x.iter().enumerate() {
        let hw = half::f16::from_f32(v);
        let bw = half::bf16::from_f32(v);
        assert_eq!(h[i], hw.to_bits(), "f16 bits of {v:e}");
        assert_eq!(b[i], bw.to_bits(), "bf16 bits of {v:e}");
        assert_eq!(
            back[i].to_bits(),
            hw.to_f32().to_bits(),
            "f16 round trip of {v:e}"
        );
    }
    let (h, b, back) = selftest::half_f32(&[f32::NAN]).unwrap();
    assert!(
        half::f16::from_bits(h[0]).is_nan()
            && half::bf16::from_bits(b[0]).is_nan()
            && back[0].is_nan()
    );
}

#[test]
fn unknown_kernel_and_wrong_parameter_count_are_errors() {
    let cfg = LaunchConfig::new(1, 32, 0);
    let e = emu::launch_no_args("no_such_kernel", cfg).unwrap_err();
    assert!(
        matches!(e, Error::Invalid { .. }) && e.to_string().contains("unknown kernel"),
        "{e}"
    );
    let e = emu::launch_no_args("t3_fwd_f32", cfg).unwrap_err();
    assert!(e.to_string().contains("takes 5 parameter(s)"), "{e}");
    emu::launch_no_args("emu_test_noop", cfg).unwrap();
}

#[test]
fn bad_launch_configurations_are_errors() {
    let bad = [
        LaunchConfig::new(1, 2048, 0),
        LaunchConfig::new(1, Dim3::new(32, 32, 2), 0),
        LaunchConfig::new(1, Dim3::new(1, 1, 65), 0),
        LaunchConfig::new(1, 0, 0),
        LaunchConfig::new(0, 32, 0),
        LaunchConfig::new(Dim3::new(1, 70000, 1), 32, 0),
        LaunchConfig::new(1, 32, 64 * 1024),
    ];
    for cfg in bad {
        let e = emu::launch_no_args("emu_test_noop", cfg).unwrap_err();
        assert!(
            matches!(&e, Error::Invalid { what, .. } if what == "launch configuration"),
            "{cfg:?}: {e}"
        );
    }
    emu::launch_no_args(
        "emu_test_noop",
        LaunchConfig::new(Dim3::new(2, 2, 2), Dim3::new(8, 8, 16), 48 * 1024),
    )
    .unwrap();
}

#[test]
fn barrier_divergence_is_an_error_not_a_hang() {
    for block in [2u32, 64, 1024] {
        let e = selftest::divergent_barrier(block).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::State(_)), "{msg}");
        assert!(msg.contains("barrier divergence"), "{msg}");
        assert!(
            msg.contains(&format!("{} thread(s) of the block have exited", block / 2)),
            "{msg}"
        );
    }
    let e = selftest::divergent_shuffle(64).unwrap_err();
    assert!(e.to_string().contains("deadlock"), "{e}");
    let e = selftest::trap(3, 64, 2, 17).unwrap_err();
    assert!(
        e.to_string()
            .contains("thread (17,0,0) of block (2,0,0): __trap()"),
        "{e}"
    );
    // The emulator recovers: the fibers abandoned mid-kernel are reset for the next launch.
    let x = randn(300, 110);
    let (y, _) = selftest::block_reverse_f32(&x, 64).unwrap();
    assert_eq!(y[0], x[63]);
    let e = selftest::divergent_barrier(64).unwrap_err();
    assert!(e.to_string().contains("barrier divergence"));
}

/// Run by scripts/emu-asan.sh only (QUADRA_EMU_ASAN_PLANTED=1, ASan build): the planted
/// out-of-bounds read must be reported by AddressSanitizer, which aborts the process.
#[test]
fn planted_out_of_bounds_read() {
    if std::env::var("QUADRA_EMU_ASAN_PLANTED").as_deref() != Ok("1") {
        if !emu::asan_enabled() {
            let e = selftest::planted_oob_read(100);
            assert!(matches!(e, Err(Error::Unavailable(_))), "{e:?}");
        }
        return;
    }
    assert!(
        emu::asan_enabled(),
        "QUADRA_EMU_ASAN_PLANTED=1 needs an ASan build"
    );
    let y = selftest::planted_oob_read(100);
    panic!("AddressSanitizer did not stop the planted out-of-bounds read: {y:?}");
}

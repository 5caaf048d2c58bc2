//! The emulator's racecheck and schedule fuzzing (cuda/emu/README.md, "Racecheck and
//! schedules"): the planted races of cuda/emu/selftest.cu are reported with the kernel, the
//! shared offset or global parameter, both threads and the access kinds; correct kernels
//! (including a `__syncwarp`-ordered exchange) are not; and the kernel drivers give the same
//! bytes under every schedule. scripts/emu-racecheck.sh runs the whole emulator suite so.

use quadra::device::emu::{self, selftest, BnParams, Epilogue};
use quadra::Error;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn randn(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

/// Sets this thread's racecheck and schedule for the launches in its scope, whatever the
/// environment says (scripts/emu-racecheck.sh sets both), and puts the environment's back
/// when dropped, also on a panic.
struct Checks;

impl Checks {
    fn new(racecheck: bool, schedule: &str) -> Checks {
        emu::set_racecheck(Some(racecheck));
        emu::set_schedule(Some(schedule)).expect("a valid schedule");
        Checks
    }
}

impl Drop for Checks {
    fn drop(&mut self) {
        emu::set_racecheck(None);
        emu::set_schedule(None).expect("back to the environment's schedule");
    }
}

/// The message of an error that must be an emulator failure (Error::State).
fn state_message<T: std::fmt::Debug>(r: quadra::Result<T>, what: &str) -> String {
    match r {
        Err(e @ Error::State(_)) => {
            let msg = e.to_string();
            // printed for the record (cargo test -- --nocapture shows the messages verbatim)
            eprintln!("{what}: {msg}");
            msg
        }
        other => panic!("{what}: expected an emulator error, got {other:?}"),
    }
}

/// `state_message`, which must contain every one of `parts`.
fn expect_state_error<T: std::fmt::Debug>(r: quadra::Result<T>, what: &str, parts: &[&str]) {
    assert_contains(&state_message(r, what), parts);
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "`{p}` missing from: {msg}");
    }
}

const SCHEDULES: [&str; 4] = ["default", "reverse", "random:1", "random:2"];

#[test]
fn racecheck_is_built_into_this_emulator() {
    assert_eq!(emu::racecheck_available(), !emu::asan_enabled());
}

/// The race the emulator hides: two block sums through one static shared array without the
/// barrier between them. Every schedule gives the right sums; racecheck reports it.
#[test]
fn missing_barrier_in_a_block_sum_is_reported() {
    if !emu::racecheck_available() {
        return;
    }
    let x: Vec<f32> = randn(200, 1).iter().map(|v| v.round()).collect(); // exact sums
    let block = 64u32;
    for s in SCHEDULES {
        let _c = Checks::new(false, s);
        let sums = selftest::missing_barrier_f32(&x, block).unwrap();
        for (b, chunk) in x.chunks(block as usize).enumerate() {
            let want_s: f32 = chunk.iter().sum();
            let want_q: f32 = chunk.iter().map(|v| v * v).sum();
            assert_eq!(
                (sums[2 * b], sums[2 * b + 1]),
                (want_s, want_q),
                "block {b} under {s}"
            );
        }
    }
    for s in SCHEDULES {
        let _c = Checks::new(true, s);
        let msg = state_message(
            selftest::missing_barrier_f32(&x, block),
            &format!("missing barrier under {s}"),
        );
        // lane 0 of the warp whose shuffles finish first writes partial[warp] for the
        // second sum while the first sum's readers are in the same barrier interval
        assert_contains(
            &msg,
            &[
                "kernel `emu_test_missing_barrier_f32`",
                "racecheck: shared-memory write-after-read hazard in block (0,0,0)",
                "writes 4 byte(s) at static __shared__ `emu_selftest::racy_block_sum(float)::partial` offset",
                "no __syncthreads() between them",
            ],
        );
        if s == "default" {
            assert_contains(
                &msg,
                &["thread (0,0,0) writes 4 byte(s) at static __shared__ `emu_selftest::racy_block_sum(float)::partial` offset 0, which thread (53,0,0) read before"],
            );
        }
    }
}

#[test]
fn missing_barrier_between_a_shared_write_and_read_is_reported() {
    if !emu::racecheck_available() {
        return;
    }
    let x = randn(300, 2);
    let _c = Checks::new(true, "default");
    let y = selftest::reverse_f32(&x, 128, true).unwrap();
    for (b, chunk) in x.chunks(128).enumerate() {
        let rev: Vec<f32> = chunk.iter().rev().copied().collect();
        assert_eq!(&y[b * 128..b * 128 + chunk.len()], &rev[..]);
    }
    let msg = state_message(selftest::reverse_f32(&x, 128, false), "unsynced reverse");
    // thread t writes tile[t], then reads tile[127 − t]: in thread order thread 63 reads
    // tile[64] before thread 64 writes it
    assert_contains(
        &msg,
        &[
            "kernel `emu_test_reverse_f32`",
            "shared-memory write-after-read hazard in block (0,0,0)",
            "thread (64,0,0) writes 4 byte(s) at dynamic shared offset 256",
            "which thread (63,0,0) read before",
        ],
    );
    drop(_c);
    // in reverse order, thread 64 reads tile[63] before thread 63 writes it
    let _c = Checks::new(true, "reverse");
    let msg = state_message(
        selftest::reverse_f32(&x, 128, false),
        "unsynced reverse, reversed",
    );
    assert_contains(
        &msg,
        &[
            "under schedule `reverse`",
            "shared-memory write-after-read hazard in block (0,0,0)",
            "thread (63,0,0) writes 4 byte(s) at dynamic shared offset 252",
            "which thread (64,0,0) read before",
        ],
    );
}

#[test]
fn syncwarp_orders_shared_memory_within_a_warp() {
    if !emu::racecheck_available() {
        return;
    }
    let x: Vec<i32> = (0..150).map(|i| i * 3 - 7).collect();
    let block = 64u32;
    for s in SCHEDULES {
        let _c = Checks::new(true, s);
        let y = selftest::warp_shared_i32(&x, block, true).unwrap();
        for (i, &got) in y.iter().enumerate() {
            let lane = i % 32;
            let src = i - lane + (lane + 1) % 32;
            assert_eq!(got, x.get(src).copied().unwrap_or(0), "y[{i}] under {s}");
        }
        let msg = state_message(
            selftest::warp_shared_i32(&x, block, false),
            &format!("no __syncwarp under {s}"),
        );
        assert_contains(
            &msg,
            &[
                "kernel `emu_test_warp_shared_i32`",
                "shared-memory",
                "hazard in block (0,0,0)",
                "dynamic shared offset",
            ],
        );
        if s == "reverse" {
            // lane 31 of warp 1 (thread 63) runs first and writes buf[63]; thread 62 then
            // reads it: the read-after-write kind
            assert_contains(
                &msg,
                &["shared-memory read-after-write hazard in block (0,0,0): thread (62,0,0) \
                   reads 4 byte(s) at dynamic shared offset 252, which thread (63,0,0) wrote before"],
            );
        }
    }
}

#[test]
fn overlapping_global_writes_are_reported() {
    if !emu::racecheck_available() {
        return;
    }
    let _c = Checks::new(true, "default");
    expect_state_error(
        selftest::overlapping_writes_f32(100, 32),
        "overlapping writes",
        &[
            "kernel `emu_test_overlapping_writes_f32`",
            "racecheck: global-memory write-write hazard",
            "thread (1,0,0) of block (0,0,0) writes 4 byte(s) at parameter 0 `y` + 0 bytes",
            "which thread (0,0,0) of block (0,0,0) already wrote in this launch",
        ],
    );
    drop(_c);
    // Without racecheck, the schedules disagree on who wrote last.
    let _c = Checks::new(false, "default");
    let y = selftest::overlapping_writes_f32(100, 32).unwrap();
    assert_eq!(
        y[0], 1.0,
        "the default order: the higher thread writes last"
    );
    drop(_c);
    let _c = Checks::new(false, "reverse");
    assert_eq!(selftest::overlapping_writes_f32(100, 32).unwrap()[0], 0.0);
    drop(_c);
    let _c = Checks::new(false, "default,reverse");
    expect_state_error(
        selftest::overlapping_writes_f32(100, 32),
        "overlapping writes, schedules compared",
        &[
            "kernel `emu_test_overlapping_writes_f32`",
            "schedule-dependent result: the byte at parameter 0 `y` + 2 bytes is 0x80 under \
             `default` and 0x00 under `reverse`",
        ],
    );
}

/// Float atomics are no race, but their rounding depends on the order: not a racecheck
/// report, a schedule comparison failure.
#[test]
fn order_dependent_float_atomics_fail_the_schedule_comparison() {
    if !emu::racecheck_available() {
        return;
    }
    // 1e8 first, then 31 ones: each one is lost to rounding (the ulp at 1e8 is 8) in thread
    // order; in reverse order the ones add up to 31 first
    let mut x = vec![1.0f32; 32];
    x[0] = 1e8;
    let sums: Vec<f32> = ["default", "reverse"]
        .iter()
        .map(|s| {
            let _c = Checks::new(true, s);
            selftest::atomic_order_f32(&x, 32).unwrap()
        })
        .collect();
    assert_eq!(sums, [100_000_000.0, 100_000_032.0]);
    let _c = Checks::new(true, "default,random:3,reverse");
    let msg = state_message(selftest::atomic_order_f32(&x, 32), "float atomics");
    assert_contains(
        &msg,
        &[
            "kernel `emu_test_atomic_order_f32`",
            "schedule-dependent result",
            "parameter 1 `out`",
        ],
    );
}

#[test]
fn bad_schedules_are_refused() {
    for (spec, part) in [
        ("sideways", "`sideways` is not a schedule"),
        ("random:", "`random:` is not a schedule"),
        ("random:x1", "`random:x1` is not a schedule"),
        ("default,,reverse", "an empty entry"),
    ] {
        let e = emu::set_schedule(Some(spec)).unwrap_err();
        assert!(
            matches!(&e, Error::Invalid { .. }) && e.to_string().contains(part),
            "{spec}: {e}"
        );
    }
    emu::set_schedule(None).unwrap();
}

/// Every kernel driver of the emulator's kernel tests, under each schedule: the same bytes
/// as under the default order (compared here, in Rust), with racecheck on; and once more
/// with the runtime comparing all the schedules itself on every launch.
#[test]
fn kernel_drivers_give_the_same_bytes_under_every_schedule() {
    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }
    let racecheck = emu::racecheck_available();
    let dims = (2usize, 3usize, 77usize);
    let (n, c, l) = dims;
    let z = randn(n * 3 * c * l, 3);
    let gy = randn(n * c * l, 4);
    let mean = randn(3 * c, 5);
    let rstd: Vec<f32> = randn(3 * c, 6).iter().map(|v| 1.0 + v.abs()).collect();
    let gamma = randn(3 * c, 7);
    let beta = randn(3 * c, 8);
    let p = BnParams {
        mean: &mean,
        rstd: &rstd,
        gamma: &gamma,
        beta: &beta,
    };
    let xi: Vec<i32> = (0..500).map(|i| (i * 37 % 101) - 50).collect();
    let run = || -> Vec<Vec<u32>> {
        let mut out = Vec::new();
        for kind in [Epilogue::Quadralib, Epilogue::T4, Epilogue::T3] {
            let nb = kind.branches();
            let zk = &z[..n * nb * c * l];
            let mut y = vec![0f32; n * c * l];
            emu::epilogue_forward_f32(kind, zk, dims, &mut y).unwrap();
            let mut gz = vec![0f32; zk.len()];
            emu::epilogue_backward_f32(kind, zk, &gy, dims, &mut gz).unwrap();
            out.push(bits(&y));
            out.push(bits(&gz));
        }
        let mut y = vec![0f32; n * c * l];
        emu::quadralib_bn_forward_f32(&z, dims, &p, &mut y).unwrap();
        out.push(bits(&y));
        for training in [true, false] {
            let mut gz = vec![0f32; z.len()];
            let (mut dg, mut db) = (vec![0f32; 3 * c], vec![0f32; 3 * c]);
            emu::quadralib_bn_backward_f32(
                &z, &gy, dims, &p, training, 64, &mut gz, &mut dg, &mut db,
            )
            .unwrap();
            out.extend([bits(&gz), bits(&dg), bits(&db)]);
        }
        for block in [32u32, 96, 256] {
            let (mut s, mut q) = (vec![0f32; 3 * c], vec![0f32; 3 * c]);
            emu::channel_sum_sumsq_f32(&z, (n, 3 * c, l), block, &mut s, &mut q).unwrap();
            let (mut m, mut v, mut r) = (vec![0f32; 3 * c], vec![0f32; 3 * c], vec![0f32; 3 * c]);
            emu::bn_stats_f32(&z, (n, 3 * c, l), 1e-5, block, &mut m, &mut v, &mut r).unwrap();
            out.extend([bits(&s), bits(&q), bits(&m), bits(&v), bits(&r)]);
        }
        let (y, counts) = selftest::block_reverse_f32(&z[..700], 96).unwrap();
        out.push(bits(&y));
        out.push(counts.iter().map(|&v| v as u32).collect());
        let w = selftest::warp_ops_i32(&xi, 64).unwrap();
        for f in [&w.bcast, &w.seg, &w.down, &w.xor_sum, &w.scan, &w.votes] {
            out.push(f.iter().map(|&v| v as u32).collect());
        }
        out.push(w.ballot.clone());
        let a = selftest::atomics_i32(&xi, 128).unwrap();
        out.push(vec![
            a.fsum.to_bits(),
            a.isum as u32,
            a.imax as u32,
            a.imin as u32,
            a.cas_max as u32,
        ]);
        out.push(a.hist.to_vec());
        let (h, b, back) = selftest::half_f32(&z[..300]).unwrap();
        out.push(h.iter().map(|&v| v as u32).collect());
        out.push(b.iter().map(|&v| v as u32).collect());
        out.push(bits(&back));
        out
    };
    let reference = {
        let _c = Checks::new(racecheck, "default");
        run()
    };
    for s in &SCHEDULES[1..] {
        let _c = Checks::new(racecheck, s);
        let got = run();
        assert_eq!(got.len(), reference.len());
        for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
            assert_eq!(
                g, r,
                "output {i} under schedule {s} differs from the default order"
            );
        }
    }
    if racecheck {
        let _c = Checks::new(true, &SCHEDULES.join(","));
        assert_eq!(run(), reference, "all schedules compared per launch");
    }
}

/// `fill_f32`, the one kernel no other emulator test launches (ops::elementwise::cuda::fill
/// has no caller in the crate yet): every element set, under every schedule, racecheck on.
#[test]
fn fill_sets_every_element_under_every_schedule() {
    use quadra::ops::elementwise::cuda::fill;
    use quadra::{Category, Device, Tensor};
    let racecheck = emu::racecheck_available();
    for s in SCHEDULES {
        let _c = Checks::new(racecheck, s);
        for n in [1usize, 1000, 70_000] {
            let host: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let mut t = Tensor::from_vec_in(host, &[n], Device::Cpu, Category::Data)
                .unwrap()
                .to_device(Device::Emu)
                .unwrap();
            fill(&mut t, -2.5).unwrap();
            let v = t.to_vec::<f32>().unwrap();
            assert!(v.iter().all(|&x| x == -2.5), "n={n} under {s}");
        }
    }
}

//! The memory profiler on the CUDA backend's code path (`Device::Emu`): the profile equals
//! the emulated device's tracker, what is saved for backward equals the CPU engine's byte
//! for byte, the device check (pool vs the device's own report) adds up, and a batch that
//! cannot fit the device is refused with an error that names the sizes. The tracker and the
//! emulated capacity are process-global: every test holds `support::serial()` (tests/device).

use quadra::device::alloc::emu_tracker;
use quadra::device::emu;
use quadra::nn::spec::ModelSpec;
use quadra::nn::BackpropMode;
use quadra::profile::{self, ProfileOptions};
use quadra::{DType, Device, Error};

use crate::support::{serial, TINY_Q3};

fn opts(device: Device) -> ProfileOptions {
    ProfileOptions {
        batch: 4,
        steps: 1,
        warmup: 1,
        threads: 1,
        seed: 2,
        dtype: DType::F32,
        device,
    }
}

#[test]
fn emulator_profile_equals_its_counters_and_the_cpu_accounting() {
    let _g = serial();
    for mode in [BackpropMode::Stored, BackpropMode::Recompute] {
        let mut s = ModelSpec::from_json(TINY_Q3).unwrap();
        s.backprop = mode;
        let p = profile::profile_training(&s, &mode.to_string(), &opts(Device::Emu)).unwrap();
        assert_eq!(p.device, "emu");
        let snap = emu_tracker().snapshot();
        assert_eq!(
            p.peak_total, snap.peak_total,
            "{mode}: peak vs the emu tracker"
        );
        assert_eq!(p.timeline_peak_total, p.peak_total, "{mode}: replayed peak");
        assert_eq!(
            p.saved_total(),
            p.saved_at_forward_end,
            "{mode}: per-layer sum"
        );

        // the same step on the CPU engine keeps the same tensors for backward, and holds the
        // same parameters, gradients and optimizer state
        let c = profile::profile_training(&s, &mode.to_string(), &opts(Device::Cpu)).unwrap();
        assert_eq!(
            p.saved_at_forward_end, c.saved_at_forward_end,
            "{mode}: saved bytes"
        );
        for q in ["q1", "q2", "q3", "bn1", "fc"] {
            let (a, b) = (p.layer(q).unwrap(), c.layer(q).unwrap());
            assert_eq!(
                (
                    a.saved_for_backward,
                    a.parameters,
                    a.gradients,
                    a.optimizer_state
                ),
                (
                    b.saved_for_backward,
                    b.parameters,
                    b.gradients,
                    b.optimizer_state
                ),
                "{mode}: layer {q}"
            );
        }
        // the device check: every byte the emulated device handed out is a pool block
        let d = p.device_check.clone().expect("device check on emu");
        assert!(d.pool_reserved >= d.tracked, "{d:?}");
        assert_eq!(d.unaccounted, 0, "{d:?}");
        println!(
            "{mode}: emu peak {} B, saved {} B (cpu {} B), pool reserved {} B, tracked {} B",
            p.peak_total,
            p.saved_at_forward_end,
            c.saved_at_forward_end,
            d.pool_reserved,
            d.tracked
        );
    }
}

#[test]
fn a_batch_that_cannot_fit_the_device_is_refused() {
    let _g = serial();
    let s = ModelSpec::from_json(TINY_Q3).unwrap();
    let before = emu::emu_capacity();
    emu::set_emu_capacity(4 << 20); // a 4 MiB device
    let o = ProfileOptions {
        batch: 4096,
        ..opts(Device::Emu)
    };
    let fit = profile::check_fits(&s, &o);
    // and if one tries anyway, the allocation that does not fit fails with the layer named
    let run = profile::profile_training(&s, "stored", &o);
    emu::set_emu_capacity(before);
    let err = fit.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::OutOfMemory { .. }), "{msg}");
    for want in [
        "out of memory on emu",
        "batch 4096",
        "largest batch that fits",
    ] {
        assert!(msg.contains(want), "`{want}` missing: {msg}");
    }
    let msg = run.unwrap_err().to_string();
    assert!(
        msg.contains("out of memory on emu") && msg.contains("MiB"),
        "{msg}"
    );
    assert!(msg.contains("layer `") || msg.contains("no layer"), "{msg}");
}

//! CIFAR-10 and CIFAR-100 binary batches: record framing and label ranges.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use quadra::data::cifar::{self, Cifar100Labels, CifarKind};

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.bin");
    for kind in [
        CifarKind::Cifar10,
        CifarKind::Cifar100(Cifar100Labels::Fine),
        CifarKind::Cifar100(Cifar100Labels::Coarse),
    ] {
        if let Ok(r) = cifar::parse(kind, data, path) {
            assert_eq!(r.len() * kind.record_size(), data.len());
        }
    }
});

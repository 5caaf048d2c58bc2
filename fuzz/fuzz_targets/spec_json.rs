//! A model spec's JSON: parse, type check, size; small models are also built (a spec that
//! fits is allowed to allocate — the target bounds it so that the fuzzer stays fast).
#![no_main]

use libfuzzer_sys::fuzz_target;
use quadra::nn::spec::{BuildOptions, ModelSpec};
use quadra::DType;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = ModelSpec::from_json(text) else {
        return;
    };
    if spec.check().is_err() {
        return;
    }
    let Ok(size) = spec.size() else {
        return;
    };
    if size.build_bytes(DType::F32) < 64 << 20 {
        let _ = spec.build(BuildOptions::default());
    }
});

//! A checkpoint file's bytes through the whole loader: safetensors framing, metadata, the
//! spec (type check and size check), tensors against the spec, value checks. Any input
//! must give Ok or an error — never a panic, an abort or an allocation past the limit.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = quadra::checkpoint::load_bytes(Path::new("fuzz.safetensors"), data);
});

//! A prediction request's body as the server decodes it: raw f32 little-endian samples and
//! JSON arrays, for a (1, 4, 4) input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quadra::serve;

fuzz_target!(|data: &[u8]| {
    let sample = [1usize, 4, 4];
    let _ = serve::input_from_f32_le(data, &sample);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = serve::input_from_json(&v, &sample);
    }
});

//! A prediction request's body as the server decodes it, for a (1, 4, 4) input: raw f32
//! little-endian samples, the streaming JSON decoder the server uses (straight into f32,
//! shape checked as it goes, at most 64 samples), and the `serde_json::Value` decoder of
//! the library API. The two JSON decoders must agree on the values of what both accept.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quadra::serve;

fuzz_target!(|data: &[u8]| {
    let sample = [1usize, 4, 4];
    let _ = serve::input_from_f32_le(data, &sample);
    let streamed = serve::input_from_json_bytes(data, &sample, 64);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let via_value = serve::input_from_json(&v, &sample);
        if let (Ok(a), Ok(b)) = (&streamed, &via_value) {
            assert_eq!(a.shape(), b.shape());
            // decimal → f32 directly, or through f64: at most one f32 rounding step apart
            for (x, y) in a
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .zip(b.to_vec::<f32>().unwrap())
            {
                assert!(
                    (x - y).abs() <= f32::EPSILON * x.abs().max(f32::MIN_POSITIVE),
                    "{x} vs {y}"
                );
            }
        }
    }
});

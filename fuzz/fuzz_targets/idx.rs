//! IDX image and label files (MNIST, Fashion-MNIST), gzip or raw: decompression under
//! its caps, header and length checks.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use quadra::data::idx;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz-idx");
    let Ok(bytes) = idx::decompress(data, path) else {
        return;
    };
    if let Ok(images) = idx::parse_images(&bytes, path) {
        assert_eq!(
            images.pixels.len(),
            images.count * images.rows * images.cols
        );
    }
    let _ = idx::parse_labels(&bytes, path);
});

//! A training config file: TOML keys into the overrides, merged over the defaults, then the
//! range checks every run applies.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use quadra::train::{Origins, TrainConfig, TrainOverrides};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    let Ok(o) = TrainOverrides::from_toml_str(text, path) else {
        return;
    };
    let cfg = TrainConfig::default().with(&o, true);
    let origins = Origins {
        flags: TrainOverrides::default(),
        file: Some((path.to_path_buf(), o)),
        resumed: None,
    };
    let _ = cfg.validate(&origins);
});

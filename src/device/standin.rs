//! The CUDA stand-in's trace (cuda/standin/README.md, "The trace"), read from inside the
//! process that uses cuda:0 (the budget tests, `quadra-bench`): `libcuda.so.1` of
//! `target/cuda-standin/` exports `quadra_standin_trace_json` and
//! `quadra_standin_trace_reset`. cudarc has already loaded the library when cuda:0 is
//! in use, so it is looked up with `RTLD_NOLOAD` (never loaded a second time); a real
//! driver has no such symbols, and then there is no trace (`None`).

use libloading::os::unix::{Library, RTLD_NOW};
use serde_json::Value;

use crate::{Error, Result};

/// glibc's RTLD_NOLOAD: return the library only if it is already loaded.
const RTLD_NOLOAD: i32 = 0x4;

type TraceJson = unsafe extern "C" fn(*mut std::ffi::c_char, usize) -> usize;
type TraceReset = unsafe extern "C" fn();

/// The loaded driver library, if it is the stand-in (has the trace symbols).
fn loaded_standin() -> Option<Library> {
    for name in ["libcuda.so.1", "libcuda.so"] {
        // SAFETY: NOLOAD only returns a library this process already loaded (cudarc's
        // copy of the driver); nothing is initialised or run by the call.
        if let Ok(lib) = unsafe { Library::open(Some(name), RTLD_NOW | RTLD_NOLOAD) } {
            // SAFETY: only checks that the symbol exists; the signature is the one
            // driver.cpp exports.
            if unsafe { lib.get::<TraceJson>(b"quadra_standin_trace_json") }.is_ok() {
                return Some(lib);
            }
        }
    }
    None
}

/// Whether cuda:0 runs on the stand-in in this process (after cuda:0 was initialised).
pub fn active() -> bool {
    loaded_standin().is_some()
}

/// The trace as one JSON object; `Ok(None)` when the driver is not the stand-in.
pub fn trace() -> Result<Option<Value>> {
    let Some(lib) = loaded_standin() else {
        return Ok(None);
    };
    // SAFETY: the symbol is `size_t quadra_standin_trace_json(char* buf, size_t len)`:
    // it writes at most `len` bytes (NUL included) into `buf` and returns the JSON's length.
    let json = unsafe {
        let Ok(f) = lib.get::<TraceJson>(b"quadra_standin_trace_json") else {
            return Ok(None);
        };
        let need = f(std::ptr::null_mut(), 0);
        let mut buf = vec![0u8; need + 1];
        f(buf.as_mut_ptr().cast(), buf.len());
        buf.truncate(need);
        buf
    };
    let text = String::from_utf8_lossy(&json);
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::state(format!("the CUDA stand-in's trace `{text}`: {e}")))
}

/// Zeroes the trace's counters; false when the driver is not the stand-in.
pub fn reset() -> bool {
    let Some(lib) = loaded_standin() else {
        return false;
    };
    // SAFETY: `void quadra_standin_trace_reset(void)`, thread-safe in driver.cpp.
    unsafe {
        match lib.get::<TraceReset>(b"quadra_standin_trace_reset") {
            Ok(f) => f(),
            Err(_) => return false,
        }
    }
    true
}

/// A counter of the trace (`launches`, `htod_bytes`, …), 0 when absent.
pub fn count(t: &Value, key: &str) -> u64 {
    t.get(key).and_then(Value::as_u64).unwrap_or(0)
}

//! The C interface of the kernel emulator (`cuda/emu/quadra_emu.h`): a launch takes its
//! parameters like `cuLaunchKernel`'s `kernelParams`; a registry answers kernel names and
//! parameter counts. Every call into the C side of the crate's emulator is in this file.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

use crate::device::Dim3;
use crate::device::LaunchConfig;
use crate::{Error, Result};

extern "C" {
    pub fn quadra_emu_launch(
        name: *const c_char,
        grid: Dim3,
        block: Dim3,
        shared_bytes: c_uint,
        args: *mut *mut c_void,
        nargs: c_uint,
    ) -> c_int;
    pub fn quadra_emu_last_error() -> *const c_char;
    pub fn quadra_emu_kernel_count() -> c_uint;
    pub fn quadra_emu_kernel_name(i: c_uint) -> *const c_char;
    pub fn quadra_emu_kernel_arity(name: *const c_char) -> c_int;
    pub fn quadra_emu_asan_enabled() -> c_int;
    pub fn quadra_emu_racecheck_available() -> c_int;
    pub fn quadra_emu_set_racecheck(mode: c_int) -> c_int;
    pub fn quadra_emu_set_schedule(spec: *const c_char) -> c_int;
}

// Error codes of cuda/emu/quadra_emu.h.
const OK: c_int = 0;
const ERR_UNKNOWN_KERNEL: c_int = 1;
const ERR_CONFIG: c_int = 2;
const ERR_ARGS: c_int = 3;
const ERR_DEADLOCK: c_int = 4;
const ERR_TRAP: c_int = 5;
const ERR_RESOURCES: c_int = 6;
const ERR_RACE: c_int = 7;
const ERR_SCHEDULE: c_int = 8;

/// Names of every kernel the emulator can run (`cuda/*.cu` and its self-test kernels).
pub fn kernel_names() -> Vec<String> {
    // SAFETY: kernel_count/kernel_name only read the static registry table; a non-null name
    // points at a NUL-terminated string literal that lives for the whole program.
    unsafe {
        (0..quadra_emu_kernel_count())
            .filter_map(|i| {
                let p = quadra_emu_kernel_name(i);
                (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
            })
            .collect()
    }
}

/// The number of parameters of a registered kernel, `None` when there is no such kernel.
pub fn kernel_arity(name: &str) -> Option<usize> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call; the
    // function only compares it with the registry's names.
    let a = unsafe { quadra_emu_kernel_arity(c.as_ptr()) };
    usize::try_from(a).ok()
}

/// Whether the emulator library was built with AddressSanitizer (`QUADRA_EMU_SANITIZE=address`).
pub fn asan_enabled() -> bool {
    // SAFETY: returns a compile-time constant; no memory is touched.
    unsafe { quadra_emu_asan_enabled() != 0 }
}

/// Whether the emulator library has the racecheck copies of the kernels (not in an ASan
/// build): racecheck and schedule comparison need them.
pub fn racecheck_available() -> bool {
    // SAFETY: reads the static registry tables only.
    unsafe { quadra_emu_racecheck_available() != 0 }
}

/// Racecheck for the launches of the calling thread: `Some(on)` overrides
/// `QUADRA_EMU_RACECHECK`, `None` goes back to it (cuda/emu/README.md).
pub fn set_racecheck(on: Option<bool>) {
    let mode = match on {
        Some(true) => 1,
        Some(false) => 0,
        None => -1,
    };
    // SAFETY: sets a thread-local integer; -1, 0 and 1 are all accepted.
    let rc = unsafe { quadra_emu_set_racecheck(mode) };
    debug_assert_eq!(rc, OK);
}

/// The fiber schedule(s) of the calling thread's launches: `"default"`, `"reverse"`,
/// `"random:SEED"`, or several separated by commas — each launch then runs under each, on
/// the same inputs, and fails when its written bytes differ from the first schedule's.
/// `Some` overrides `QUADRA_EMU_SCHEDULE`, `None` goes back to it.
pub fn set_schedule(spec: Option<&str>) -> Result<()> {
    let c = spec
        .map(|s| {
            CString::new(s).map_err(|_| {
                Error::invalid("emulator schedule", format!("{s:?} contains a NUL byte"))
            })
        })
        .transpose()?;
    // SAFETY: `c` (or null) is a valid NUL-terminated string for the duration of the call;
    // the runtime parses and copies it.
    let rc =
        unsafe { quadra_emu_set_schedule(c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())) };
    if rc == OK {
        Ok(())
    } else {
        Err(Error::invalid("emulator schedule", last_error()))
    }
}

fn last_error() -> String {
    // SAFETY: the runtime returns a pointer to this thread's NUL-terminated message buffer,
    // valid until the next launch on this thread; it is copied out at once.
    unsafe {
        let p = quadra_emu_last_error();
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

/// Runs `name` with a ready `kernelParams` array (one pointer per parameter, pointing at
/// its value), as the GPU runtime's `launch` does for `Device::Emu`.
///
/// # Safety
/// The values must match the kernel's signature and every device pointer
/// among them must be valid for every access the kernel makes under `cfg`.
pub(crate) unsafe fn launch_params(
    name: &str,
    cfg: LaunchConfig,
    params: &mut [*mut c_void],
) -> Result<()> {
    let cname = CString::new(name)
        .map_err(|_| Error::invalid("kernel", format!("`{name}`: name contains a NUL byte")))?;
    let pp = if params.is_empty() {
        std::ptr::null_mut()
    } else {
        params.as_mut_ptr()
    };
    // SAFETY: guaranteed by this function's contract; the runtime keeps no pointer past
    // the call.
    let rc = unsafe {
        quadra_emu_launch(
            cname.as_ptr(),
            cfg.grid,
            cfg.block,
            cfg.shared_bytes,
            pp,
            params.len() as c_uint,
        )
    };
    check(rc)
}

fn check(rc: c_int) -> Result<()> {
    match rc {
        OK => Ok(()),
        ERR_UNKNOWN_KERNEL => Err(Error::invalid("kernel", last_error())),
        ERR_CONFIG => Err(Error::invalid("launch configuration", last_error())),
        ERR_ARGS => Err(Error::invalid("kernel arguments", last_error())),
        ERR_DEADLOCK | ERR_TRAP | ERR_RACE | ERR_SCHEDULE => {
            Err(Error::State(format!("emulator: {}", last_error())))
        }
        ERR_RESOURCES => Err(Error::Unavailable(format!("emulator: {}", last_error()))),
        other => Err(Error::State(format!(
            "emulator: unknown status {other}: {}",
            last_error()
        ))),
    }
}

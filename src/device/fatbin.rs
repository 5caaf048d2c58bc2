//! What the build produced for the CUDA path: the fatbin nvcc compiled from `cuda/*.cu`
//! (when build.rs found nvcc) and the names of the kernels it holds ([`KERNELS`], from the
//! sources' `QUADRA_EXPORT` lines). Used by the CUDA runtime (module load, name checks);
//! a leaf of the device layer.

include!(concat!(env!("OUT_DIR"), "/kernel_names.rs"));

#[cfg(quadra_fatbin)]
#[repr(C, align(16))]
struct Aligned<T: ?Sized>(T);

#[cfg(quadra_fatbin)]
static FATBIN: &Aligned<[u8]> = &Aligned(*include_bytes!(env!("QUADRA_FATBIN")));

/// The fatbin nvcc built from `cuda/*.cu` (SASS for each arch of `CUDA_ARCHS` plus PTX),
/// 16-byte aligned, for `cuModuleLoadData`; `None` when this build had no nvcc.
pub fn fatbin() -> Option<&'static [u8]> {
    #[cfg(quadra_fatbin)]
    {
        Some(&FATBIN.0)
    }
    #[cfg(not(quadra_fatbin))]
    {
        None
    }
}

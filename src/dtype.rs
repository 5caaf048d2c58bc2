//! Element types: [`DType`] (the runtime tag a tensor carries), [`Float`] (the Rust types
//! the CPU engine computes in, f32 and f64) and [`with_dtype!`](crate::with_dtype) (run
//! generic code for a runtime `DType`).
//!
//! A leaf: this module uses nothing of the crate, so every other module (tensor, device,
//! the CPU GEMM, ops) can depend on it without an import circle.

use std::fmt;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit IEEE float (`"f32"` in spec and config files), 4 bytes per element.
    F32,
    /// 64-bit IEEE float (`"f64"`), 8 bytes per element.
    F64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
        })
    }
}

/// The element types the CPU engine computes in: f32 and f64, nothing else (code that
/// views their bytes relies on it: plain data, no padding, every bit pattern valid).
pub trait Float:
    num_traits::Float
    + num_traits::NumAssign
    + Copy
    + Default
    + Send
    + Sync
    + fmt::Debug
    + fmt::Display
    + std::iter::Sum
    + 'static
{
    /// The runtime tag of this type.
    const DTYPE: DType;
    /// `v` converted to this type (rounded to nearest for f32).
    fn of(v: f64) -> Self;
    /// The value widened to f64 (exact).
    fn f64(self) -> f64;
}

impl Float for f32 {
    const DTYPE: DType = DType::F32;
    #[inline(always)]
    fn of(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self as f64
    }
}

impl Float for f64 {
    const DTYPE: DType = DType::F64;
    #[inline(always)]
    fn of(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self
    }
}

/// Run `$body` with `$T` bound to the Rust element type of `$dtype`.
#[macro_export]
macro_rules! with_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::F64 => {
                type $T = f64;
                $body
            }
        }
    };
}

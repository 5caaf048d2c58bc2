//! The library's error type. Every public fallible function returns `Result<T>`; bad input
//! is reported with the tensor, layer, file or option it concerns, never by a panic.

use thiserror::Error;

#[derive(Error)]
pub enum Error {
    /// A tensor has the wrong shape for the operation (names the tensor and what was expected).
    #[error("shape error in {op}: {msg}")]
    Shape { op: String, msg: String },
    /// A tensor has the wrong dtype or device for the operation.
    #[error("dtype/device error in {op}: {msg}")]
    DType { op: String, msg: String },
    /// A hyper-parameter, option or spec field is invalid.
    #[error("invalid {what}: {msg}")]
    Invalid { what: String, msg: String },
    /// A model spec could not be parsed or does not type-check.
    #[error("model spec: {0}")]
    Spec(String),
    /// An operation was called in the wrong order (e.g. backward before forward).
    #[error("{0}")]
    State(String),
    /// A requested device or feature is not available on this machine.
    #[error("device unavailable: {0}")]
    Unavailable(String),
    /// A device allocation did not fit: names the device, the request and what is in use.
    #[error("out of memory on {device}: {msg}")]
    OutOfMemory { device: String, msg: String },
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// The message, as `Display` writes it (and the variant's name): what `fn main() ->
/// quadra::Result<()>`, `unwrap` and `expect` print, so a program's user reads
/// "`/data/x.safetensors`: truncated …", not the enum's fields.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Error::Shape { .. } => "Shape",
            Error::DType { .. } => "DType",
            Error::Invalid { .. } => "Invalid",
            Error::Spec(_) => "Spec",
            Error::State(_) => "State",
            Error::Unavailable(_) => "Unavailable",
            Error::OutOfMemory { .. } => "OutOfMemory",
            Error::File { .. } => "File",
            Error::Io { .. } => "Io",
        };
        write!(f, "{self} [quadra::Error::{kind}]")
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn shape(op: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Shape {
            op: op.into(),
            msg: msg.into(),
        }
    }
    pub fn dtype(op: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::DType {
            op: op.into(),
            msg: msg.into(),
        }
    }
    pub fn invalid(what: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            msg: msg.into(),
        }
    }
    /// The error for a layer's `backward` called without a matching training forward.
    pub fn no_forward(path: &str) -> Self {
        Error::state(format!(
            "layer `{path}`: backward called without a training forward"
        ))
    }

    pub fn state(msg: impl Into<String>) -> Self {
        Error::State(msg.into())
    }
}

/// Return an `Error::Shape` from the enclosing function unless `cond` holds.
#[macro_export]
macro_rules! ensure_shape {
    ($cond:expr, $op:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Error::shape($op, format!($($fmt)+)));
        }
    };
}

/// Return an `Error::Invalid` from the enclosing function unless `cond` holds.
#[macro_export]
macro_rules! ensure_valid {
    ($cond:expr, $what:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Error::invalid($what, format!($($fmt)+)));
        }
    };
}

//! The library's error type. Every public fallible function returns `Result<T>`; bad input
//! is reported with the tensor, layer, file or option it concerns, never by a panic.

use thiserror::Error;

/// Everything that can go wrong in the library; the `Display` message names what failed
/// (the operation, layer, option, device or file) and why.
#[derive(Error)]
pub enum Error {
    /// A tensor has the wrong shape for the operation (names the tensor and what was expected).
    #[error("shape error in {op}: {msg}")]
    Shape {
        /// The operation or layer that refused the tensor.
        op: String,
        /// What was expected and what was given.
        msg: String,
    },
    /// A tensor has the wrong dtype or device for the operation.
    #[error("dtype/device error in {op}: {msg}")]
    DType {
        /// The operation that refused the tensor.
        op: String,
        /// The dtype or device expected and the one given.
        msg: String,
    },
    /// A hyper-parameter, option or spec field is invalid.
    #[error("invalid {what}: {msg}")]
    Invalid {
        /// The value that is invalid and where it was given (`"optimizer state"`).
        what: String,
        /// Why, with the value given.
        msg: String,
    },
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
    OutOfMemory {
        /// The device that ran out (`"cuda:0"`, `"cpu"`).
        device: String,
        /// The request's size and the memory already in use.
        msg: String,
    },
    /// A file exists but its content is wrong: truncated, another format, a missing or
    /// inconsistent field.
    #[error("{path}: {msg}")]
    File {
        /// The file's path, as given.
        path: String,
        /// What is wrong with it.
        msg: String,
    },
    /// An operating-system I/O call failed (open, read, write, bind, …).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, and on which path or address (`"writing /tmp/x.json"`).
        context: String,
        /// The operating system's error.
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

/// `std::result::Result` with the library's [`Error`](enum@Error) as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Shape`]: `op` (the operation or layer) refused a tensor's shape, `msg` why.
    pub fn shape(op: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Shape {
            op: op.into(),
            msg: msg.into(),
        }
    }
    /// An [`Error::DType`]: `op` refused a tensor's dtype or device, `msg` why.
    pub fn dtype(op: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::DType {
            op: op.into(),
            msg: msg.into(),
        }
    }
    /// An [`Error::Invalid`]: `what` (the value and where) is invalid, `msg` why.
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

    /// An [`Error::State`] with message `msg`: an operation called in the wrong order.
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

//! The one error type of every Ember layer.

use std::fmt;
use std::sync::Arc;

/// What went wrong, always naming the op and the offending values. New kinds may be added, so
/// matches need a wildcard arm.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// Shapes that do not fit the op, e.g. `matmul: shapes [2, 3] and [4, 5] are not compatible`.
    Shape {
        /// The op that refused its input.
        op: String,
        /// What was wrong, with the shapes.
        msg: String,
    },
    /// A dtype the op does not take, or two that do not match.
    DType {
        /// The op that refused its input.
        op: String,
        /// What was wrong, with the dtypes.
        msg: String,
    },
    /// Tensors on different devices, or a device with no backend.
    Device {
        /// The op that refused its input.
        op: String,
        /// What was wrong, with the devices.
        msg: String,
    },
    /// An argument out of range (dim, index, size, stride, groups ...).
    InvalidArgument {
        /// The op that refused its input.
        op: String,
        /// What was wrong, with the values.
        msg: String,
    },
    /// A feature that Ember does not support yet.
    Unsupported {
        /// The op or feature.
        op: String,
        /// What exactly is missing.
        msg: String,
    },
    /// A file that is corrupt, truncated or of another format.
    Format {
        /// The file or format.
        what: String,
        /// Why it was rejected.
        msg: String,
    },
    /// An I/O error with the path it happened on; the underlying `std::io::Error` is its
    /// [`std::error::Error::source`].
    Io {
        /// The path.
        path: String,
        /// The OS message.
        msg: String,
        /// The underlying error.
        source: IoSource,
    },
    /// An error raised by a backend (a kernel launch, an allocation ...).
    Backend {
        /// The op that failed.
        op: String,
        /// The backend's message.
        msg: String,
    },
    /// Memory for a result could not be had: more bytes than the address space holds, or than the
    /// allocator would give.
    OutOfMemory {
        /// The op that asked for the memory.
        op: String,
        /// How many bytes it asked for (`usize::MAX` when the count itself overflowed).
        bytes: usize,
    },
    /// Misuse of autograd (backward through a freed graph, a saved tensor modified in place ...).
    Autograd {
        /// What went wrong.
        msg: String,
    },
}

impl Error {
    /// A shape error for `op`.
    pub fn shape(op: &str, msg: impl Into<String>) -> Self {
        Error::Shape { op: op.into(), msg: msg.into() }
    }
    /// A dtype error for `op`.
    pub fn dtype(op: &str, msg: impl Into<String>) -> Self {
        Error::DType { op: op.into(), msg: msg.into() }
    }
    /// A device error for `op`.
    pub fn device(op: &str, msg: impl Into<String>) -> Self {
        Error::Device { op: op.into(), msg: msg.into() }
    }
    /// An invalid-argument error for `op`.
    pub fn invalid(op: &str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument { op: op.into(), msg: msg.into() }
    }
    /// A not-supported-yet error for `op`.
    pub fn unsupported(op: &str, msg: impl Into<String>) -> Self {
        Error::Unsupported { op: op.into(), msg: msg.into() }
    }
    /// A corrupt-file error.
    pub fn format(what: &str, msg: impl Into<String>) -> Self {
        Error::Format { what: what.into(), msg: msg.into() }
    }
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<std::path::Path>, e: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().display().to_string(), msg: e.to_string(), source: IoSource(Arc::new(e)) }
    }
    /// A backend failure in `op`.
    pub fn backend(op: &str, msg: impl Into<String>) -> Self {
        Error::Backend { op: op.into(), msg: msg.into() }
    }
    /// An allocation of `bytes` bytes for `op` that failed.
    pub fn out_of_memory(op: &str, bytes: usize) -> Self {
        Error::OutOfMemory { op: op.into(), bytes }
    }
    /// An autograd misuse.
    pub fn autograd(msg: impl Into<String>) -> Self {
        Error::Autograd { msg: msg.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape { op, msg }
            | Error::DType { op, msg }
            | Error::Device { op, msg }
            | Error::InvalidArgument { op, msg }
            | Error::Backend { op, msg } => write!(f, "{op}: {msg}"),
            Error::Unsupported { op, msg } => write!(f, "{op}: not supported yet: {msg}"),
            Error::Format { what, msg } => write!(f, "{what}: invalid file: {msg}"),
            Error::Io { path, msg, .. } => write!(f, "{path}: {msg}"),
            Error::OutOfMemory { op, bytes: usize::MAX } => {
                write!(f, "{op}: out of memory: the size in bytes overflows the address space")
            }
            Error::OutOfMemory { op, bytes } => write!(f, "{op}: out of memory: cannot allocate {bytes} bytes"),
            Error::Autograd { msg } => write!(f, "autograd: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(&*source.0),
            _ => None,
        }
    }
}

/// The `std::io::Error` behind an [`Error::Io`], shared so that `Error` stays `Clone`; two are
/// equal when their kinds and messages are.
#[derive(Clone, Debug)]
pub struct IoSource(pub Arc<std::io::Error>);

impl IoSource {
    /// The kind of the underlying error.
    pub fn kind(&self) -> std::io::ErrorKind {
        self.0.kind()
    }
}

impl PartialEq for IoSource {
    fn eq(&self, other: &Self) -> bool {
        self.0.kind() == other.0.kind() && self.0.to_string() == other.0.to_string()
    }
}

/// `Result` with Ember's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

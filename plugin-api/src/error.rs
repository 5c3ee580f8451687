//! The error type plugin code returns and receives.

use std::fmt;

use daz_plugin_abi::{self as abi, AbiError};

/// Why something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An ordinary failure.
    Error,
    /// The plugin panicked (the SDK caught it).
    Panic,
    /// The configuration was refused.
    Config,
    /// The state handed over by a previous version was refused.
    State,
    /// A host service refused the call.
    Host,
    /// The host does not offer the service: it predates the plugin-api patch that added
    /// it. Upgrade the host, or use an older service that gives the same answer.
    Unsupported,
}

impl ErrorKind {
    pub(crate) fn to_abi(self) -> u8 {
        match self {
            ErrorKind::Error => abi::ERROR_KIND_ERROR,
            ErrorKind::Panic => abi::ERROR_KIND_PANIC,
            ErrorKind::Config => abi::ERROR_KIND_CONFIG,
            ErrorKind::State => abi::ERROR_KIND_STATE,
            ErrorKind::Host => abi::ERROR_KIND_HOST,
            ErrorKind::Unsupported => abi::ERROR_KIND_UNSUPPORTED,
        }
    }

    /// Decodes an ABI error kind; unknown values read as [`ErrorKind::Error`].
    pub fn from_abi(kind: u8) -> Self {
        match kind {
            abi::ERROR_KIND_PANIC => ErrorKind::Panic,
            abi::ERROR_KIND_CONFIG => ErrorKind::Config,
            abi::ERROR_KIND_STATE => ErrorKind::State,
            abi::ERROR_KIND_HOST => ErrorKind::Host,
            abi::ERROR_KIND_UNSUPPORTED => ErrorKind::Unsupported,
            _ => ErrorKind::Error,
        }
    }
}

/// An error from plugin code or from a host service.
///
/// Any `std::error::Error` converts into it with `?`; build one from text with
/// [`Error::msg`] or [`crate::bail!`].
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// An ordinary error with a message.
    pub fn msg(message: impl Into<String>) -> Self {
        Self::with_kind(ErrorKind::Error, message)
    }

    /// A refused configuration.
    pub fn config(message: impl Into<String>) -> Self {
        Self::with_kind(ErrorKind::Config, message)
    }

    /// A refused previous state.
    pub fn state(message: impl Into<String>) -> Self {
        Self::with_kind(ErrorKind::State, message)
    }

    /// An error of a given kind.
    pub fn with_kind(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with what was being done.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    pub(crate) fn into_abi(self) -> AbiError {
        AbiError::new(self.kind.to_abi(), self.message)
    }

    /// Copies an ABI error into an owned one.
    pub(crate) fn from_abi(err: &AbiError) -> Self {
        Self::with_kind(ErrorKind::from_abi(err.kind), err.message.as_str())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(err: E) -> Self {
        Self::msg(err.to_string())
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Returns early with an [`Error`] built from a format string.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err($crate::Error::msg(::std::format!($($arg)*)))
    };
}

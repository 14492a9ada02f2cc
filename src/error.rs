//! Error kinds shared by every layer.
//!
//! Each layer has its own `thiserror` enum with context (lease key, shard id); all of them can
//! say what the caller should do about the failure through [`ErrorKind`]: every `kind()` of the
//! library returns one, and nothing else. [`Cause`] is what made a call to a service fail.

/// What a caller should do about a failed operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The service asked us to slow down (throughput exceeded, request limit). Retry after backoff.
    Throttled,
    /// A transient failure (timeout, connection reset, 5xx). Retry after backoff.
    Retryable,
    /// Retrying will not help (missing table or stream, access denied, invalid request).
    Fatal,
}

impl ErrorKind {
    /// True when a retry after backoff may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Throttled | ErrorKind::Retryable)
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::Throttled => "throttled",
            ErrorKind::Retryable => "retryable",
            ErrorKind::Fatal => "fatal",
        })
    }
}

/// Why a call to a service (or to an in-memory stand-in for one) failed: the cause under a
/// layer's error ([`crate::lease::LeaseStoreError`], [`crate::retrieval::RetrievalError`]).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Cause {
    /// No answer within the request timeout (the request may still have been carried out).
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The AWS service, or the SDK on the way to it, failed.
    #[error(transparent)]
    Aws(#[from] crate::aws::AwsError),
    /// The service answered with something this library cannot use.
    #[error("unusable answer: {0}")]
    BadAnswer(String),
    /// The call is not implemented by this backend.
    #[error("{0}")]
    Unsupported(String),
    /// An in-memory stand-in refused the call: a fault injected by a test or the simulation,
    /// or what the real service would answer (an expired iterator, a missing shard).
    #[error("{message}")]
    Simulated {
        /// Whether a retry may help.
        kind: ErrorKind,
        /// What the stand-in answered.
        message: String,
    },
}

impl Cause {
    /// A refusal by an in-memory stand-in (see [`Cause::Simulated`]).
    pub fn simulated(kind: ErrorKind, message: impl Into<String>) -> Self {
        Cause::Simulated {
            kind,
            message: message.into(),
        }
    }

    /// Whether a retry may help: a timeout is retryable, an AWS error as classified by
    /// [`crate::aws`], a simulated one as it says.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Cause::Timeout(_) => ErrorKind::Retryable,
            Cause::Aws(e) => e.kind(),
            Cause::BadAnswer(_) | Cause::Unsupported(_) => ErrorKind::Fatal,
            Cause::Simulated { kind, .. } => *kind,
        }
    }
}

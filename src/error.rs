//! Error kinds shared by every layer.
//!
//! Each layer has its own `thiserror` enum with context (lease key, shard id); all of them can
//! say what the caller should do about the failure through [`ErrorKind`].

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

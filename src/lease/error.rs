//! The lease store's error type.

use crate::error::ErrorKind;

/// A lease store operation failed (a lost condition is not an error: see [`super::WriteOutcome`]).
#[derive(Debug, thiserror::Error)]
#[error("lease table {table}: {operation}{} failed ({kind}): {message}", key_suffix(.lease_key))]
pub struct LeaseStoreError {
    /// Whether a retry may help.
    pub kind: ErrorKind,
    /// The operation, e.g. `renew_lease`.
    pub operation: &'static str,
    /// The table name.
    pub table: String,
    /// The lease concerned, if one.
    pub lease_key: Option<String>,
    /// What went wrong.
    pub message: String,
    /// The underlying error.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

fn key_suffix(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!(" of {k}")).unwrap_or_default()
}

impl LeaseStoreError {
    /// An error without an underlying source.
    pub fn new(
        kind: ErrorKind,
        operation: &'static str,
        table: impl Into<String>,
        lease_key: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        LeaseStoreError {
            kind,
            operation,
            table: table.into(),
            lease_key: lease_key.map(str::to_string),
            message: message.into(),
            source: None,
        }
    }

    /// Whether a retry may help.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

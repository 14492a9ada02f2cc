//! The lease store's error type.

use super::dynamodb::ItemError;
use crate::aws::AwsError;
use crate::error::{Cause, ErrorKind};
use std::fmt;
use std::time::Duration;

/// The operations of [`super::LeaseStore`]: what failed in a [`LeaseStoreError`], and what a
/// fault injector of the `testing` feature is asked about. Displayed as the method name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaseOp {
    /// `create_table_if_not_exists`
    CreateTable,
    /// `create_lease_if_not_exists`
    Create,
    /// `list_leases`
    List,
    /// `get_lease`
    Get,
    /// `renew_lease`
    Renew,
    /// `take_lease`
    Take,
    /// `evict_lease`
    Evict,
    /// `update_lease`
    Update,
    /// `update_child_shard_ids`
    UpdateChildren,
    /// `delete_lease`
    Delete,
    /// `assign_lease`
    Assign,
    /// `start_handoff`
    StartHandoff,
    /// `lease_keys_owned_by`
    ListOwned,
    /// `create_owner_index_if_not_exists`
    CreateIndex,
}

impl LeaseOp {
    /// Every operation, in trait order.
    pub const ALL: [LeaseOp; 14] = [
        LeaseOp::CreateTable,
        LeaseOp::Create,
        LeaseOp::List,
        LeaseOp::Get,
        LeaseOp::Renew,
        LeaseOp::Take,
        LeaseOp::Evict,
        LeaseOp::Update,
        LeaseOp::UpdateChildren,
        LeaseOp::Delete,
        LeaseOp::Assign,
        LeaseOp::StartHandoff,
        LeaseOp::ListOwned,
        LeaseOp::CreateIndex,
    ];

    /// The position in [`LeaseOp::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The [`super::LeaseStore`] method, e.g. `renew_lease`.
    pub const fn method_name(self) -> &'static str {
        match self {
            LeaseOp::CreateTable => "create_table_if_not_exists",
            LeaseOp::Create => "create_lease_if_not_exists",
            LeaseOp::List => "list_leases",
            LeaseOp::Get => "get_lease",
            LeaseOp::Renew => "renew_lease",
            LeaseOp::Take => "take_lease",
            LeaseOp::Evict => "evict_lease",
            LeaseOp::Update => "update_lease",
            LeaseOp::UpdateChildren => "update_child_shard_ids",
            LeaseOp::Delete => "delete_lease",
            LeaseOp::Assign => "assign_lease",
            LeaseOp::StartHandoff => "start_handoff",
            LeaseOp::ListOwned => "lease_keys_owned_by",
            LeaseOp::CreateIndex => "create_owner_index_if_not_exists",
        }
    }
}

impl fmt::Display for LeaseOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method_name())
    }
}

/// A lease store operation failed (a lost condition is not an error: see [`super::WriteOutcome`]).
#[derive(Debug, thiserror::Error)]
#[error("lease table {table}: {operation}{} failed ({}): {cause}", key_suffix(.lease_key), .cause.kind())]
pub struct LeaseStoreError {
    /// The operation.
    pub operation: LeaseOp,
    /// The table name.
    pub table: String,
    /// The lease concerned, if one.
    pub lease_key: Option<String>,
    /// What went wrong.
    #[source]
    pub cause: LeaseStoreCause,
}

/// What made a lease store operation fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseStoreCause {
    /// The call failed (timeout, AWS error, simulated failure).
    #[error(transparent)]
    Call(#[from] Cause),
    /// The lease table does not exist.
    #[error("the lease table does not exist ({0})")]
    TableNotFound(#[source] AwsError),
    /// The table was created but did not become `ACTIVE` in time.
    #[error("table not ACTIVE after {waited:?} (status {status})")]
    TableNotActive {
        /// How long we waited.
        waited: Duration,
        /// The last status seen.
        status: String,
    },
    /// An item of the table is not a readable lease.
    #[error(transparent)]
    BadItem(Box<ItemError>),
}

impl From<ItemError> for LeaseStoreCause {
    fn from(e: ItemError) -> Self {
        LeaseStoreCause::BadItem(Box::new(e))
    }
}

impl LeaseStoreCause {
    /// Whether a retry may help.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LeaseStoreCause::Call(c) => c.kind(),
            LeaseStoreCause::TableNotFound(e) => e.kind(),
            LeaseStoreCause::TableNotActive { .. } | LeaseStoreCause::BadItem(_) => {
                ErrorKind::Fatal
            }
        }
    }
}

fn key_suffix(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!(" of {k}")).unwrap_or_default()
}

impl LeaseStoreError {
    /// `operation` on `table` (of `lease_key`, if one) failed because of `cause`.
    pub fn new(
        operation: LeaseOp,
        table: impl Into<String>,
        lease_key: Option<&str>,
        cause: impl Into<LeaseStoreCause>,
    ) -> Self {
        LeaseStoreError {
            operation,
            table: table.into(),
            lease_key: lease_key.map(str::to_string),
            cause: cause.into(),
        }
    }

    /// A failure of an in-memory lease table (see [`Cause::Simulated`]).
    pub fn simulated(
        kind: ErrorKind,
        operation: LeaseOp,
        table: impl Into<String>,
        lease_key: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(operation, table, lease_key, Cause::simulated(kind, message))
    }

    /// Whether a retry may help.
    pub fn kind(&self) -> ErrorKind {
        self.cause.kind()
    }
}

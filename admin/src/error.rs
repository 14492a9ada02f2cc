//! What can go wrong, each message saying what to do about it.

use kinesis_client::aws::AwsError;
use kinesis_client::lease::{LeaseStoreCause, LeaseStoreError};

/// A failed `kcl-admin` command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// Bad command line.
    #[error("{0} (kcl-admin --help lists the commands and options)")]
    Usage(String),
    /// The lease table does not exist.
    #[error(
        "there is no lease table {table:?} (the table is named after the application: check \
         --table, --region and --dynamodb-endpoint / --endpoint-url)"
    )]
    NoTable {
        /// The table asked for.
        table: String,
    },
    /// A lease table call failed.
    #[error("lease table {table:?}: {source} (check the credentials, region and endpoint; a retry may help)")]
    Table {
        /// The table.
        table: String,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A Kinesis call failed.
    #[error("stream {stream:?}: {source} (check the stream name (--stream), region and --kinesis-endpoint)")]
    Stream {
        /// The stream.
        stream: String,
        /// What failed.
        #[source]
        source: AwsError,
    },
    /// No lease matches a shard argument.
    #[error("no lease for {0:?} in the table (`kcl-admin leases` lists the lease keys)")]
    NoLease(String),
    /// A bare shard id matches leases of several streams.
    #[error("{shard:?} matches leases of several streams: {keys:?}; give the full lease key or --stream")]
    Ambiguous {
        /// The argument.
        shard: String,
        /// The matching lease keys.
        keys: Vec<String>,
    },
    /// A change was refused because it would skip records (or is otherwise unsafe).
    #[error("refused, nothing was changed:\n{0}\nadd --yes to do it anyway")]
    Refused(String),
    /// Workers kept changing a lease faster than the reset could write it.
    #[error(
        "lease {key}: gave up after {attempts} attempts, the lease changed under every one \
         (workers write it constantly); run the command again"
    )]
    GaveUp {
        /// The lease.
        key: String,
        /// How many conditional writes failed.
        attempts: u32,
    },
    /// The record at a time could not be found within the read budget, or the stream
    /// answered with something that is not a sequence number.
    #[error("shard {shard}: {why}")]
    Position {
        /// The shard.
        shard: String,
        /// What went wrong, and what to do.
        why: String,
    },
    /// A file could not be read or written.
    #[error("a file could not be read or written: {0}")]
    Io(#[from] std::io::Error),
    /// Some leases could not be changed: the report (printed, then exit code 1).
    #[error("{0}")]
    PartlyFailed(String),
    /// The import file is not an export of `kcl-admin`.
    #[error("the import file is not a kcl-admin export: {0}")]
    BadImport(String),
}

impl AdminError {
    /// A lease store failure, telling a missing table apart.
    pub fn store(e: LeaseStoreError) -> Self {
        match e.cause {
            LeaseStoreCause::TableNotFound(_) => AdminError::NoTable { table: e.table },
            _ => AdminError::Table {
                table: e.table.clone(),
                source: Box::new(e),
            },
        }
    }

    /// A failed DynamoDB call of this tool's own.
    pub fn dynamodb(table: &str, e: AwsError) -> Self {
        if e.is_resource_not_found() {
            AdminError::NoTable {
                table: table.to_string(),
            }
        } else {
            AdminError::Table {
                table: table.to_string(),
                source: Box::new(e),
            }
        }
    }

    /// The process exit code: 2 for usage errors, 3 for a refusal, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            AdminError::Usage(_) => 2,
            AdminError::Refused(_) => 3,
            _ => 1,
        }
    }
}

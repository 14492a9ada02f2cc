//! Reading records from a stream.
//!
//! [`StreamClient`] is the small object-safe surface the library needs from Kinesis
//! (ListShards, GetShardIterator, GetRecords); [`KinesisStreamClient`] implements it on the AWS
//! SDK; implement it for another source. The `testing` feature has an in-memory stream with
//! fault injection. Inside the crate, a fetcher turns it into a bounded prefetch of batches
//! per shard, de-aggregating KPL aggregates ([`deaggregation`]) on the way.

pub mod deaggregation;
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod fetcher;
mod kinesis;
#[cfg(any(test, feature = "testing"))]
pub(crate) mod memory;

pub use kinesis::{KinesisStreamClient, StreamRef, DEFAULT_REQUEST_TIMEOUT};
#[cfg(test)]
pub(crate) use memory::InMemoryStream;

use crate::error::{Cause, ErrorKind};
use crate::lease::HashKeyRange;
use crate::record::Record;
use async_trait::async_trait;
use std::fmt;
use std::time::{Duration, SystemTime};

/// How far the local clock may run ahead of the stream service's (see [`StreamClient::now`]).
pub const CLOCK_SKEW_MARGIN: Duration = Duration::from_secs(2);

/// A shard as listed by ListShards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The shard id, e.g. `shardId-000000000003`.
    pub shard_id: String,
    /// The shard it was split from, or the first of the two it was merged from.
    pub parent_shard_id: Option<String>,
    /// The second shard of a merge.
    pub adjacent_parent_shard_id: Option<String>,
    /// The hash keys it covers.
    pub hash_key_range: HashKeyRange,
    /// The first sequence number of the shard.
    pub starting_sequence_number: String,
    /// The last sequence number, once the shard is closed.
    pub ending_sequence_number: Option<String>,
}

impl Shard {
    /// The parent shard ids (0, 1 or 2).
    pub fn parents(&self) -> Vec<String> {
        self.parent_shard_id
            .iter()
            .chain(self.adjacent_parent_shard_id.iter())
            .cloned()
            .collect()
    }

    /// True when the shard is closed (split or merged; no new records arrive).
    pub fn is_closed(&self) -> bool {
        self.ending_sequence_number.is_some()
    }
}

/// A child shard, as reported by GetRecords at the end of a closed shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildShard {
    /// The child's id.
    pub shard_id: String,
    /// Its parents (one for a split, two for a merge).
    pub parent_shards: Vec<String>,
    /// Its hash keys.
    pub hash_key_range: HashKeyRange,
}

/// Where a shard iterator starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IteratorPosition {
    /// The oldest retained record.
    TrimHorizon,
    /// After the newest record.
    Latest,
    /// The first record at or after the timestamp.
    AtTimestamp(SystemTime),
    /// At this sequence number (the record is included).
    AtSequenceNumber(String),
    /// After this sequence number.
    AfterSequenceNumber(String),
}

/// One GetRecords response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordBatch {
    /// The records, in sequence order.
    pub records: Vec<Record>,
    /// The iterator for the next call; `None` when the shard is closed and fully read.
    pub next_iterator: Option<String>,
    /// How far behind the tip of the shard this response is.
    pub millis_behind_latest: Option<i64>,
    /// The child shards, in the last response of a closed shard.
    pub child_shards: Vec<ChildShard>,
}

/// The [`StreamClient`] calls: what failed in a [`RetrievalError`], and what a
/// stream fault injector of the `testing` feature is asked about. Displayed as the method name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamOp {
    /// `list_shards`
    ListShards,
    /// `get_shard_iterator`
    GetShardIterator,
    /// `get_records`
    GetRecords,
}

impl fmt::Display for StreamOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamOp::ListShards => "list_shards",
            StreamOp::GetShardIterator => "get_shard_iterator",
            StreamOp::GetRecords => "get_records",
        })
    }
}

/// What a failed stream call means for the reader (the fetcher acts on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetrievalFailure {
    /// The shard iterator expired (or is otherwise no longer valid): get a new one.
    ExpiredIterator,
    /// Throughput exceeded: back off.
    Throttled,
    /// Transient: retry.
    Retryable,
    /// The stream or shard does not exist (any more).
    ResourceNotFound,
    /// Retrying will not help.
    Fatal,
}

impl RetrievalFailure {
    /// Whether a retry may help (an expired iterator is retryable: with a new iterator).
    pub fn kind(self) -> ErrorKind {
        match self {
            RetrievalFailure::Throttled => ErrorKind::Throttled,
            RetrievalFailure::ExpiredIterator | RetrievalFailure::Retryable => ErrorKind::Retryable,
            RetrievalFailure::ResourceNotFound | RetrievalFailure::Fatal => ErrorKind::Fatal,
        }
    }
}

/// A failed stream call, with context.
#[derive(Debug, Clone, thiserror::Error)]
#[error("stream {stream}: {operation}{} failed ({failure:?}): {cause}", shard.as_ref().map(|s| format!(" on {s}")).unwrap_or_default())]
pub struct RetrievalError {
    /// What the failure means for the reader.
    pub failure: RetrievalFailure,
    /// The call.
    pub operation: StreamOp,
    /// The stream.
    pub stream: String,
    /// The shard, if one.
    pub shard: Option<String>,
    /// What happened.
    #[source]
    pub cause: Cause,
}

impl RetrievalError {
    /// `operation` on `stream` (and `shard`, if one) failed because of `cause`.
    pub fn new(
        failure: RetrievalFailure,
        operation: StreamOp,
        stream: impl Into<String>,
        shard: Option<&str>,
        cause: Cause,
    ) -> Self {
        RetrievalError {
            failure,
            operation,
            stream: stream.into(),
            shard: shard.map(str::to_string),
            cause,
        }
    }

    /// Whether a retry may help (an expired iterator is retryable: with a new iterator).
    pub fn kind(&self) -> ErrorKind {
        self.failure.kind()
    }
}

/// The Kinesis calls a consumer needs (object-safe: used as `Arc<dyn StreamClient>`).
#[async_trait]
pub trait StreamClient: Send + Sync + fmt::Debug {
    /// A name for logs (the stream name).
    fn stream_name(&self) -> &str;

    /// The current time on the stream's clock (the clock of arrival timestamps and
    /// `AT_TIMESTAMP` positions), never later than the real one: a fetcher that started at
    /// `LATEST` and must replace its iterator before it fetched a record resumes at
    /// `AT_TIMESTAMP` of this time, taken just before its first iterator was requested (never
    /// at `LATEST` again). Default: the local clock minus [`CLOCK_SKEW_MARGIN`] (so a local
    /// clock running ahead of the service's skips nothing; records that arrived within the
    /// margin before the start are delivered too).
    fn now(&self) -> SystemTime {
        SystemTime::now()
            .checked_sub(CLOCK_SKEW_MARGIN)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Every shard of the stream, open and closed (within retention).
    async fn list_shards(&self) -> Result<Vec<Shard>, RetrievalError>;

    /// An iterator at `position`; `Ok(None)` when the shard no longer exists.
    async fn get_shard_iterator(
        &self,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<Option<String>, RetrievalError>;

    /// Up to `limit` records from `iterator` (`shard_id` is for errors and logs).
    async fn get_records(
        &self,
        shard_id: &str,
        iterator: &str,
        limit: u32,
    ) -> Result<RecordBatch, RetrievalError>;
}

//! Reading records from a stream.
//!
//! [`StreamClient`] is the small object-safe surface the library needs from Kinesis
//! (ListShards, GetShardIterator, GetRecords; for enhanced fan-out DescribeStreamConsumer,
//! RegisterStreamConsumer and SubscribeToShard); [`KinesisStreamClient`] implements it on the
//! AWS SDK; implement it for another source. The `testing` feature has an in-memory stream with
//! fault injection. Inside the crate, one record source per shard turns it into a bounded
//! prefetch of batches: the polling fetcher (GetRecords) or the fan-out source
//! (SubscribeToShard), behind the same interface (`source`), so the shard consumer does not
//! know which one runs; both de-aggregate KPL aggregates ([`deaggregation`]) on the way.

pub mod deaggregation;
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod fanout;
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod fetcher;
mod kinesis;
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod source;

#[cfg(test)]
pub(crate) use crate::testing::InMemoryStream;
pub use fanout::ConsumerRegistrationError;
pub use kinesis::{KinesisStreamClient, StreamRef, DEFAULT_REQUEST_TIMEOUT};

use crate::error::{Cause, ErrorKind};
use crate::lease::HashKeyRange;
use crate::record::Record;
use async_trait::async_trait;
use futures::stream::BoxStream;
use std::fmt;
use std::time::{Duration, SystemTime};

/// How far the local clock may run ahead of the stream service's (see [`StreamClient::now`]).
pub const CLOCK_SKEW_MARGIN: Duration = Duration::from_secs(2);

/// A shard as listed by ListShards.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// An open shard without parents (set the other fields as needed).
    pub fn new(
        shard_id: impl Into<String>,
        hash_key_range: HashKeyRange,
        starting_sequence_number: impl Into<String>,
    ) -> Self {
        Shard {
            shard_id: shard_id.into(),
            parent_shard_id: None,
            adjacent_parent_shard_id: None,
            hash_key_range,
            starting_sequence_number: starting_sequence_number.into(),
            ending_sequence_number: None,
        }
    }

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
#[non_exhaustive]
pub struct ChildShard {
    /// The child's id.
    pub shard_id: String,
    /// Its parents (one for a split, two for a merge).
    pub parent_shards: Vec<String>,
    /// Its hash keys.
    pub hash_key_range: HashKeyRange,
}

impl ChildShard {
    /// A child shard of `parent_shards`.
    pub fn new(
        shard_id: impl Into<String>,
        parent_shards: Vec<String>,
        hash_key_range: HashKeyRange,
    ) -> Self {
        ChildShard {
            shard_id: shard_id.into(),
            parent_shards,
            hash_key_range,
        }
    }
}

/// Where a shard iterator starts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
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

/// An enhanced fan-out consumer of a stream, as DescribeStreamConsumer and
/// RegisterStreamConsumer report it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamConsumer {
    /// The consumer's name (unique per stream).
    pub consumer_name: String,
    /// Its ARN (what SubscribeToShard needs).
    pub consumer_arn: String,
    /// Whether it can be subscribed with yet.
    pub status: ConsumerStatus,
}

impl StreamConsumer {
    /// A consumer as DescribeStreamConsumer reports it.
    pub fn new(
        consumer_name: impl Into<String>,
        consumer_arn: impl Into<String>,
        status: ConsumerStatus,
    ) -> Self {
        StreamConsumer {
            consumer_name: consumer_name.into(),
            consumer_arn: consumer_arn.into(),
            status,
        }
    }
}

/// The status of a [`StreamConsumer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsumerStatus {
    /// Registered, not usable yet (Kinesis takes a few seconds).
    Creating,
    /// Usable.
    Active,
    /// Being deregistered.
    Deleting,
}

impl fmt::Display for ConsumerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConsumerStatus::Creating => "CREATING",
            ConsumerStatus::Active => "ACTIVE",
            ConsumerStatus::Deleting => "DELETING",
        })
    }
}

/// Which stream consumer: by name (on the client's stream) or by ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsumerRef {
    /// The consumer's name on the stream.
    Name(String),
    /// The consumer's ARN.
    Arn(String),
}

impl fmt::Display for ConsumerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsumerRef::Name(n) => f.write_str(n),
            ConsumerRef::Arn(a) => f.write_str(a),
        }
    }
}

/// One event of a SubscribeToShard subscription (enhanced fan-out).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SubscribeToShardEvent {
    /// The records, in sequence order (often none: the service also sends empty events).
    pub records: Vec<Record>,
    /// Where reading continues: a later subscription `AFTER_SEQUENCE_NUMBER` of it repeats
    /// nothing and skips nothing. `None` (or empty, as the AWS SDK decodes a null) when the
    /// shard is closed and every record was sent: this is its last event.
    pub continuation_sequence_number: Option<String>,
    /// How far behind the tip of the shard this event is.
    pub millis_behind_latest: Option<i64>,
    /// The child shards, in the last event of a closed shard.
    pub child_shards: Vec<ChildShard>,
}

/// The events of one subscription, in order. The stream ends (`None`) when the service
/// completes the subscription (Kinesis does after 5 minutes) or after the shard's last event;
/// an `Err` ends it too (nothing follows it).
pub type SubscribeToShardEvents = BoxStream<'static, Result<SubscribeToShardEvent, RetrievalError>>;

/// The [`StreamClient`] calls: what failed in a [`RetrievalError`], and what a
/// stream fault injector of the `testing` feature is asked about. Displayed as the method name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamOp {
    /// `list_shards`
    ListShards,
    /// `get_shard_iterator`
    GetShardIterator,
    /// `get_records`
    GetRecords,
    /// `describe_stream_consumer`
    DescribeStreamConsumer,
    /// `register_stream_consumer`
    RegisterStreamConsumer,
    /// `subscribe_to_shard` (also: the failure of a subscription's event stream)
    SubscribeToShard,
    /// An event about to be sent on a subscription (not a call: what a stream fault injector
    /// of the `testing` feature is asked before each event; errors name `SubscribeToShard`)
    SubscribeToShardEvent,
}

impl fmt::Display for StreamOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamOp::ListShards => "list_shards",
            StreamOp::GetShardIterator => "get_shard_iterator",
            StreamOp::GetRecords => "get_records",
            StreamOp::DescribeStreamConsumer => "describe_stream_consumer",
            StreamOp::RegisterStreamConsumer => "register_stream_consumer",
            StreamOp::SubscribeToShard => "subscribe_to_shard",
            StreamOp::SubscribeToShardEvent => "subscribe_to_shard_event",
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
    /// The stream or shard does not exist (any more); for fan-out calls also: the consumer.
    ResourceNotFound,
    /// The resource is busy: a previous subscription to the shard is still open, or the
    /// consumer being registered exists already. Retry after a pause.
    ResourceInUse,
    /// Retrying will not help.
    Fatal,
}

impl RetrievalFailure {
    /// Whether a retry may help (an expired iterator is retryable: with a new iterator).
    pub fn kind(self) -> ErrorKind {
        match self {
            RetrievalFailure::Throttled => ErrorKind::Throttled,
            RetrievalFailure::ExpiredIterator
            | RetrievalFailure::Retryable
            | RetrievalFailure::ResourceInUse => ErrorKind::Retryable,
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

    /// `operation` is not implemented by this [`StreamClient`] (the default of the fan-out
    /// calls, for clients that only poll).
    pub fn unsupported(
        operation: StreamOp,
        stream: impl Into<String>,
        shard: Option<&str>,
    ) -> Self {
        RetrievalError::new(
            RetrievalFailure::Fatal,
            operation,
            stream,
            shard,
            Cause::Unsupported(format!(
                "this StreamClient does not implement {operation} (enhanced fan-out); use polling retrieval"
            )),
        )
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

    /// The stream's ARN, `arn:<partition>:kinesis:<region>:<account>:stream/<name>`, against
    /// which a configured consumer ARN is checked (a consumer of a stream of the same name in
    /// another account or region reads another stream); `Ok(None)` when this client cannot
    /// tell (the default: the check is skipped).
    async fn stream_arn(&self) -> Result<Option<String>, RetrievalError> {
        Ok(None)
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

    /// Enhanced fan-out: the stream consumer `consumer` (DescribeStreamConsumer); `Ok(None)`
    /// when there is none. The default fails with [`RetrievalError::unsupported`].
    async fn describe_stream_consumer(
        &self,
        consumer: &ConsumerRef,
    ) -> Result<Option<StreamConsumer>, RetrievalError> {
        let _ = consumer;
        Err(RetrievalError::unsupported(
            StreamOp::DescribeStreamConsumer,
            self.stream_name(),
            None,
        ))
    }

    /// Enhanced fan-out: register a consumer named `consumer_name` on the stream
    /// (RegisterStreamConsumer; it starts `CREATING`). Fails with
    /// [`RetrievalFailure::ResourceInUse`] when one of that name exists already. The default
    /// fails with [`RetrievalError::unsupported`].
    async fn register_stream_consumer(
        &self,
        consumer_name: &str,
    ) -> Result<StreamConsumer, RetrievalError> {
        let _ = consumer_name;
        Err(RetrievalError::unsupported(
            StreamOp::RegisterStreamConsumer,
            self.stream_name(),
            None,
        ))
    }

    /// Enhanced fan-out: subscribe the consumer `consumer_arn` to `shard_id` from `position`
    /// (SubscribeToShard). The events arrive as the service pushes them; dropping the stream
    /// ends the subscription. The default fails with [`RetrievalError::unsupported`].
    async fn subscribe_to_shard(
        &self,
        consumer_arn: &str,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<SubscribeToShardEvents, RetrievalError> {
        let _ = (consumer_arn, position);
        Err(RetrievalError::unsupported(
            StreamOp::SubscribeToShard,
            self.stream_name(),
            Some(shard_id),
        ))
    }
}

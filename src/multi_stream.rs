//! Multi-stream applications: one application, one fleet and one lease table over a set of
//! streams that may change while it runs (the Java KCL's `MultiStreamTracker`).
//!
//! The application describes its streams with a [`MultiStreamTracker`] (or a fixed list,
//! [`FixedStreams`]) and builds its configuration with
//! [`Config::multi_stream_builder`](crate::Config::multi_stream_builder). Every worker re-reads
//! the tracker every [`stream_tracker_interval`](crate::Config::stream_tracker_interval)
//! (60 s, as Java). Then:
//!
//! * **A stream that joins the set** gets leases for its shards at once (at its own
//!   [`StreamConfig::initial_position`]); any worker takes them, and the balancer counts the
//!   leases of all streams together.
//! * **A stream that leaves the set** is no longer processed: each worker shuts down its
//!   processors of that stream (reason [`Shutdown::Requested`](crate::Shutdown::Requested),
//!   so they can checkpoint), releases those leases, and takes none of them again. Leases of
//!   streams the application does not track are never processed (unlike the Java KCL, whose
//!   workers process them as "orphans", its issue 1112). What becomes of the leases is the
//!   tracker's [`FormerStreamsLeasesDeletionStrategy`].
//! * **A stream deleted and re-created under its name** is a new stream: its creation epoch
//!   differs, and with it its [`StreamIdentifier`] and its lease keys.
//!
//! Leases use the Java KCL's multi-stream format: the key
//! `account:streamName:creationEpoch:shardId` and the attributes `streamName` (the serialized
//! identifier) and `shardId`, so a Java multi-stream application and this library read each
//! other's lease tables. A single-stream application's table (bare shard ids) is left alone by
//! a multi-stream worker, and the other way round.

use crate::config::InitialPosition;
use crate::retrieval::StreamRef;
use crate::stream::StreamIdentifier;
use std::time::Duration;

/// One stream of a multi-stream application (the Java KCL's `StreamConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamConfig {
    /// The stream: account, name and creation epoch
    /// ([`StreamIdentifier::multi`] or [`StreamIdentifier::from_arn`]).
    pub stream: StreamIdentifier,
    /// Where its new shards' leases start.
    pub initial_position: InitialPosition,
    /// The stream's ARN, sent with every Kinesis call: needed for a stream of another account.
    /// `None`: the stream is called by name, in the account of the worker's credentials.
    pub stream_arn: Option<String>,
    /// Enhanced fan-out: the stream consumer to read through. `None`: the worker's consumer
    /// name (the application name by default), registered on this stream if it is not.
    pub consumer_arn: Option<String>,
}

impl StreamConfig {
    /// A stream read from `initial_position`, called by name, with the worker's fan-out
    /// consumer name.
    pub fn new(stream: StreamIdentifier, initial_position: InitialPosition) -> Self {
        StreamConfig {
            stream,
            initial_position,
            stream_arn: None,
            consumer_arn: None,
        }
    }

    /// The same, called by `arn` (see [`StreamConfig::stream_arn`]).
    pub fn with_stream_arn(mut self, arn: impl Into<String>) -> Self {
        self.stream_arn = Some(arn.into());
        self
    }

    /// How Kinesis calls name the stream: by its ARN when one is set, else by name.
    pub fn stream_ref(&self) -> StreamRef {
        match &self.stream_arn {
            Some(arn) => StreamRef::Arn(arn.clone()),
            None => StreamRef::Name(self.stream.name().to_string()),
        }
    }

    /// The same, read through the fan-out consumer `arn` (see [`StreamConfig::consumer_arn`]).
    pub fn with_consumer_arn(mut self, arn: impl Into<String>) -> Self {
        self.consumer_arn = Some(arn.into());
        self
    }
}

/// What becomes of the leases of a stream that left the set (the Java KCL's
/// `FormerStreamsLeasesDeletionStrategy`, same names). It cannot change while the application
/// runs: it is read once, at start.
///
/// Deleting a stream's leases deletes its checkpoints: if the stream joins the set again, it
/// starts over at its initial position. Whatever the strategy, the leases of a stream that
/// left the set are not processed; they keep their checkpoints until deleted. A deletion is
/// unconditional (as the Java KCL's): every worker must have stopped tracking the stream by
/// then, so choose a wait longer than a rolling deployment of a changed stream set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormerStreamsLeasesDeletionStrategy {
    /// Keep them (Java's `NoLeaseDeletionStrategy`): a stream that joins the set again goes on
    /// from its checkpoints. Delete them by hand when the stream is gone for good.
    NoLeaseDeletion,
    /// Delete the leases of every stream that stays out of the set for `wait` (Java's
    /// `AutoDetectionAndDeferredDeletionStrategy`), or at once when Kinesis says the stream no
    /// longer exists. A stream that joins the set again before then keeps them. Make `wait`
    /// longer than the time every worker needs to see the change (the
    /// [`stream_tracker_interval`](crate::Config::stream_tracker_interval) at least), so that
    /// a worker that still tracks the stream does not see its leases deleted.
    AutoDetectionAndDeferredDeletion {
        /// How long a stream stays out of the set before its leases are deleted.
        wait: Duration,
    },
    /// Delete the leases of the streams
    /// [`MultiStreamTracker::streams_for_lease_cleanup`] names, once they have been out of
    /// the set for `wait` (Java's `ProvidedStreamsDeferredDeletionStrategy`), or at once when
    /// Kinesis says the stream no longer exists. The leases of other streams that left the set
    /// are kept.
    ProvidedStreamsDeferredDeletion {
        /// How long a listed stream stays out of the set before its leases are deleted.
        wait: Duration,
    },
}

/// A failure of the application's [`MultiStreamTracker`]: the worker keeps the streams it
/// had and asks again at the next interval.
pub type TrackerError = crate::processor::BoxError;

/// The streams a multi-stream application consumes (the Java KCL's `MultiStreamTracker`).
///
/// Every worker calls [`stream_config_list`](MultiStreamTracker::stream_config_list) at start
/// and every [`stream_tracker_interval`](crate::Config::stream_tracker_interval); its answer
/// may change between calls (streams added and removed at run time). All the workers of an
/// application must give the same answer, in time: a stream only some workers track has its
/// leases processed by those only.
#[async_trait::async_trait]
pub trait MultiStreamTracker: Send + Sync + 'static {
    /// The streams to consume now. An error keeps the previous set (it is logged).
    async fn stream_config_list(&self) -> Result<Vec<StreamConfig>, TrackerError>;

    /// What becomes of the leases of streams that leave the set (read once, at start).
    fn former_streams_leases_deletion_strategy(&self) -> FormerStreamsLeasesDeletionStrategy;

    /// With [`FormerStreamsLeasesDeletionStrategy::ProvidedStreamsDeferredDeletion`]: the
    /// streams whose leases may be deleted (those still in the set are not). Read at each
    /// interval; the default names none.
    async fn streams_for_lease_cleanup(&self) -> Result<Vec<StreamIdentifier>, TrackerError> {
        Ok(Vec::new())
    }
}

/// A fixed set of streams: the simplest [`MultiStreamTracker`].
///
/// ```
/// use kinesis_client::multi_stream::{FixedStreams, StreamConfig};
/// use kinesis_client::{InitialPosition, StreamIdentifier};
///
/// let orders = StreamIdentifier::multi("123456789012", "orders", 1_600_000_000).unwrap();
/// let refunds = StreamIdentifier::multi("123456789012", "refunds", 1_600_000_100).unwrap();
/// let tracker = FixedStreams::new([
///     StreamConfig::new(orders, InitialPosition::TrimHorizon),
///     StreamConfig::new(refunds, InitialPosition::Latest),
/// ]);
/// ```
#[derive(Debug, Clone)]
pub struct FixedStreams {
    streams: Vec<StreamConfig>,
    strategy: FormerStreamsLeasesDeletionStrategy,
}

impl FixedStreams {
    /// These streams, with [`FormerStreamsLeasesDeletionStrategy::NoLeaseDeletion`] (a fixed
    /// set has no former streams, except those of an earlier run of the application).
    pub fn new(streams: impl IntoIterator<Item = StreamConfig>) -> Self {
        FixedStreams {
            streams: streams.into_iter().collect(),
            strategy: FormerStreamsLeasesDeletionStrategy::NoLeaseDeletion,
        }
    }

    /// The same, deleting the leases of an earlier run's streams by `strategy`.
    pub fn with_deletion_strategy(mut self, strategy: FormerStreamsLeasesDeletionStrategy) -> Self {
        self.strategy = strategy;
        self
    }
}

#[async_trait::async_trait]
impl MultiStreamTracker for FixedStreams {
    async fn stream_config_list(&self) -> Result<Vec<StreamConfig>, TrackerError> {
        Ok(self.streams.clone())
    }

    fn former_streams_leases_deletion_strategy(&self) -> FormerStreamsLeasesDeletionStrategy {
        self.strategy
    }
}

//! The record processor API: what an application implements.
//!
//! One [`RecordProcessor`] runs per shard this worker holds. Calls for one shard never overlap
//! and follow this order: [`initialize`](RecordProcessor::initialize) once, then
//! [`process_records`](RecordProcessor::process_records) for each batch in sequence order,
//! then [`shutdown`](RecordProcessor::shutdown) once with the reason.
//!
//! Returning `Err` from `process_records` makes the scheduler deliver **the same batch again**
//! after a backoff that grows with each failure: records are never skipped without the
//! processor's consent. A processor that wants to skip a batch checkpoints past it and returns
//! `Ok`, or, with a [`RetryPolicy`], answers [`RecordProcessor::retries_exhausted`] with
//! [`RetryDecision::Skip`] once the policy is exhausted. A panic is
//! contained to its shard: the shard restarts with a new processor from its last checkpoint,
//! and so does returning [`RestartShard`] (which [`ProcessorError`] carries as
//! [`OnError::RestartShard`], whatever wraps it).

use crate::checkpoint::Checkpoint;
use crate::checkpointer::Checkpointer;
use crate::record::Records;
use crate::stream::StreamIdentifier;
use async_trait::async_trait;
use std::sync::Arc;

mod error;
mod from_fn;
mod retry;
pub use error::{BoxError, OnError, ProcessorError, RestartShard};
pub use from_fn::{from_fn, FnProcessor};
pub use retry::{ProcessorPanicked, RetriesExhausted, RetryDecision, RetryPolicy, SharedError};

/// What [`RecordProcessor::initialize`] is told.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InitializationInput {
    /// The stream of the shard: its name, and in a multi-stream application its account and
    /// creation epoch too.
    pub stream: StreamIdentifier,
    /// The shard this processor handles.
    pub shard_id: String,
    /// Where processing resumes: the last checkpoint, or the initial position for a new lease.
    pub checkpoint: Checkpoint,
    /// A prepared (two-phase) checkpoint left by an earlier owner, if any.
    pub pending_checkpoint: Option<Checkpoint>,
    /// The application state stored with the prepared checkpoint.
    pub pending_checkpoint_state: Option<Vec<u8>>,
}

impl InitializationInput {
    /// The input of a processor for `shard_id` resuming at `checkpoint`, with no prepared
    /// checkpoint, on a stream named [`TEST_STREAM`] (for unit tests of a processor; the
    /// library makes these itself). [`with_stream`](Self::with_stream) names another stream.
    pub fn new(shard_id: impl Into<String>, checkpoint: Checkpoint) -> Self {
        InitializationInput {
            stream: StreamIdentifier::single(TEST_STREAM),
            shard_id: shard_id.into(),
            checkpoint,
            pending_checkpoint: None,
            pending_checkpoint_state: None,
        }
    }

    /// The same input on `stream`.
    pub fn with_stream(mut self, stream: StreamIdentifier) -> Self {
        self.stream = stream;
        self
    }
}

/// The stream of the inputs made by [`InitializationInput::new`] and
/// [`ProcessRecordsInput::new`] (for unit tests of a processor).
pub const TEST_STREAM: &str = "test-stream";

/// The shard of the inputs made by [`ProcessRecordsInput::new`].
pub const TEST_SHARD_ID: &str = "shardId-000000000000";

/// One batch of records.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessRecordsInput {
    /// The stream the records come from: its name, and in a multi-stream application its
    /// account and creation epoch too.
    pub stream: StreamIdentifier,
    /// The shard the records come from.
    pub shard_id: Arc<str>,
    /// The records, in sequence order (may be empty when empty batches are delivered). Shared
    /// with the consumer, which keeps them to deliver again if this batch fails: reading them
    /// copies nothing ([`Records::into_vec`] for an owned `Vec`).
    pub records: Records,
    /// How far behind the tip of the shard the batch is, in milliseconds.
    pub millis_behind_latest: Option<i64>,
    /// 1 on the first delivery of these records, then 2, 3, … on each redelivery after the
    /// processor failed them (or a restart of the processor on them). After partial progress
    /// ([`ProcessorError::done_through`]) the records not done are redelivered as attempt 2.
    pub attempt: u32,
    /// Some records of this batch were de-aggregated from KPL aggregates (those with
    /// [`Record::aggregated`](crate::Record::aggregated)): the user records of one aggregate share its sequence number
    /// and differ by sub-sequence number, so a checkpoint at one of them must name both
    /// ([`Checkpointer::checkpoint_record`] does; [`Checkpointer::checkpoint`] covers the
    /// whole batch).
    pub deaggregated: bool,
}

impl ProcessRecordsInput {
    /// The first delivery of `records` (for unit tests of a processor; the library makes
    /// these itself): attempt 1, lag unknown, nothing de-aggregated, from shard
    /// [`TEST_SHARD_ID`] of a stream named [`TEST_STREAM`] ([`with_shard`](Self::with_shard)
    /// names others).
    pub fn new(records: impl Into<Records>) -> Self {
        ProcessRecordsInput {
            stream: StreamIdentifier::single(TEST_STREAM),
            shard_id: TEST_SHARD_ID.into(),
            records: records.into(),
            millis_behind_latest: None,
            attempt: 1,
            deaggregated: false,
        }
    }

    /// The same input from `shard_id` of `stream`.
    pub fn with_shard(mut self, stream: StreamIdentifier, shard_id: impl Into<Arc<str>>) -> Self {
        self.stream = stream;
        self.shard_id = shard_id.into();
        self
    }
}

/// Why a processor is being shut down.
#[derive(Debug)]
#[non_exhaustive]
pub enum Shutdown<'a> {
    /// Every record of the shard was delivered. The processor **must** call
    /// [`Checkpointer::checkpoint`] (which records `SHARD_END`): the shard's children start
    /// only after that. Without it, shard end is retried after the task backoff.
    ShardEnded {
        /// Checkpoints the end of the shard.
        checkpointer: &'a mut Checkpointer,
    },
    /// The lease went to another worker (or expired). No checkpoint is possible: the other
    /// worker resumes from the last checkpoint, so records after it are delivered again there.
    LeaseLost,
    /// The worker still holds the lease and is about to let it go: it is shutting down
    /// gracefully, the lease's stream left a multi-stream application, or (KCL 3.x fleets) the
    /// fleet's leader is handing the lease to another worker. Checkpoint now: the next owner
    /// resumes exactly there, and in a hand-off starts only after this returns (or after the
    /// hand-off timeout, [`FleetConfig::graceful_lease_handoff_timeout`](crate::fleet::FleetConfig::graceful_lease_handoff_timeout)).
    Requested {
        /// Checkpoints while the lease is still held.
        checkpointer: &'a mut Checkpointer,
    },
}

impl Shutdown<'_> {
    /// A short name: `shard_ended`, `lease_lost` or `requested`.
    pub fn name(&self) -> &'static str {
        match self {
            Shutdown::ShardEnded { .. } => "shard_ended",
            Shutdown::LeaseLost => "lease_lost",
            Shutdown::Requested { .. } => "requested",
        }
    }
}

/// Processes the records of one shard.
///
/// Only [`process_records`](Self::process_records) must be written:
///
/// ```
/// use kinesis_client::{Checkpointer, ProcessRecordsInput, ProcessorError, RecordProcessor};
///
/// struct Printer;
///
/// #[kinesis_client::async_trait]
/// impl RecordProcessor for Printer {
///     async fn process_records(&mut self, input: ProcessRecordsInput, cp: &mut Checkpointer) -> Result<(), ProcessorError> {
///         for r in &input.records {
///             println!("{}", String::from_utf8_lossy(&r.data));
///         }
///         Ok(cp.checkpoint().await?)
///     }
/// }
/// ```
///
/// (Or without a type: [`from_fn`].) The default [`initialize`](Self::initialize) does
/// nothing, and the default [`shutdown`](Self::shutdown) checkpoints everything delivered on
/// [`Shutdown::ShardEnded`] and [`Shutdown::Requested`], which is right for a processor that
/// finishes each batch inside `process_records`. A processor that buffers records past
/// `process_records` (writes them later, in bulk) overrides `shutdown` to flush first: see
/// the `batching_sink` example.
#[async_trait]
pub trait RecordProcessor: Send + 'static {
    /// Called once before any records. An `Err` is retried after the task backoff.
    /// Default: nothing.
    async fn initialize(&mut self, input: InitializationInput) -> Result<(), ProcessorError> {
        let _ = input;
        Ok(())
    }

    /// Process one batch; checkpoint through `checkpointer` whenever suits the application.
    /// An `Err` redelivers the same batch after a backoff (see [`ProcessorError`] for a
    /// restart instead).
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError>;

    /// The [`RetryPolicy`] ([`Config::retry_policy`](crate::Config::retry_policy)) is
    /// exhausted for `failure.records`: skip them ([`RetryDecision::Skip`], after e.g. writing
    /// them to a dead-letter queue; they then count as processed) or keep redelivering them
    /// ([`RetryDecision::KeepRetrying`]; not asked again for them). Called at most once for
    /// the same records, before the redelivery that would exceed the policy.
    /// Default: keep retrying (records are never skipped without the processor's consent).
    async fn retries_exhausted(&mut self, failure: RetriesExhausted) -> RetryDecision {
        retry::keep_retrying(&failure)
    }

    /// Called once at the end, with the reason. Default: on [`Shutdown::ShardEnded`] and
    /// [`Shutdown::Requested`], [`Checkpointer::checkpoint`] (everything delivered; `SHARD_END`
    /// at shard end); nothing on [`Shutdown::LeaseLost`].
    async fn shutdown(&mut self, reason: Shutdown<'_>) -> Result<(), ProcessorError> {
        match reason {
            Shutdown::ShardEnded { checkpointer } | Shutdown::Requested { checkpointer } => {
                checkpointer.checkpoint().await?;
            }
            Shutdown::LeaseLost => {}
        }
        Ok(())
    }
}

/// Makes one processor per shard.
pub trait RecordProcessorFactory: Send + Sync + 'static {
    /// The processor type.
    type Processor: RecordProcessor;

    /// A new processor for `shard_id`.
    fn create(&self, shard_id: &str) -> Self::Processor;
}

impl<F, P> RecordProcessorFactory for F
where
    F: Fn(&str) -> P + Send + Sync + 'static,
    P: RecordProcessor,
{
    type Processor = P;

    fn create(&self, shard_id: &str) -> P {
        self(shard_id)
    }
}

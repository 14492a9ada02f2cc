//! The record processor API: what an application implements.
//!
//! One [`RecordProcessor`] runs per shard this worker holds. Calls for one shard never overlap
//! and follow this order: [`initialize`](RecordProcessor::initialize) once, then
//! [`process_records`](RecordProcessor::process_records) for each batch in sequence order,
//! then [`shutdown`](RecordProcessor::shutdown) once with the reason.
//!
//! Returning `Err` from `process_records` makes the scheduler deliver **the same batch again**
//! after the task backoff: records are never skipped without the processor's consent. A
//! processor that wants to skip a batch checkpoints past it and returns `Ok`. A panic is
//! contained to its shard: the shard restarts with a new processor from its last checkpoint,
//! and so does returning [`RestartShard`].

use crate::checkpoint::Checkpoint;
use crate::checkpointer::Checkpointer;
use crate::record::Records;
use async_trait::async_trait;

/// The error type processors return: any error (it is logged, and the call is retried).
pub type ProcessorError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Return this error (boxed) from any processor call to abandon the processor and restart
/// the shard with a new one from its last checkpoint, after the task backoff.
///
/// Use it when the processor's own state is broken (e.g. the MultiLangDaemon's child process
/// died): records delivered since the last checkpoint are delivered again, to the new processor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("restart the shard from its last checkpoint: {0}")]
pub struct RestartShard(pub String);

/// What [`RecordProcessor::initialize`] is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitializationInput {
    /// The shard this processor handles.
    pub shard_id: String,
    /// Where processing resumes: the last checkpoint, or the initial position for a new lease.
    pub checkpoint: Checkpoint,
    /// A prepared (two-phase) checkpoint left by an earlier owner, if any.
    pub pending_checkpoint: Option<Checkpoint>,
    /// The application state stored with the prepared checkpoint.
    pub pending_checkpoint_state: Option<Vec<u8>>,
}

/// One batch of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRecordsInput {
    /// The records, in sequence order (may be empty when empty batches are delivered). Shared
    /// with the consumer, which keeps them to deliver again if this batch fails: reading them
    /// copies nothing ([`Records::into_vec`] for an owned `Vec`).
    pub records: Records,
    /// How far behind the tip of the shard the batch is, in milliseconds.
    pub millis_behind_latest: Option<i64>,
    /// Some records of this batch were de-aggregated from KPL aggregates (those with
    /// [`Record::aggregated`](crate::Record::aggregated)): the user records of one aggregate share its sequence number
    /// and differ by sub-sequence number, so a checkpoint at one of them must name both
    /// ([`Checkpointer::checkpoint_record`] does; [`Checkpointer::checkpoint`] covers the
    /// whole batch).
    pub deaggregated: bool,
}

/// Why a processor is being shut down.
#[derive(Debug)]
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
    /// The worker is shutting down gracefully and still holds the lease: checkpoint now, and
    /// the next owner resumes exactly there.
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
#[async_trait]
pub trait RecordProcessor: Send + 'static {
    /// Called once before any records. An `Err` is retried after the task backoff.
    async fn initialize(&mut self, input: InitializationInput) -> Result<(), ProcessorError>;

    /// Process one batch; checkpoint through `checkpointer` whenever suits the application.
    /// An `Err` redelivers the same batch after the task backoff.
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError>;

    /// Called once at the end, with the reason.
    async fn shutdown(&mut self, reason: Shutdown<'_>) -> Result<(), ProcessorError>;
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

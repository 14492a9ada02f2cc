//! [`Checkpointer`]: how a processor records its progress.

use crate::checkpoint::{Checkpoint, ExtendedSequenceNumber, InvalidSequenceNumber};
use crate::coordinator::{LeaseCoordinator, LeaseUpdateError};
use crate::lease::LeaseStoreError;
use uuid::Uuid;

/// Why a checkpoint was not recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The lease is no longer held (lost, taken, expired locally, or released): the shard's
    /// next owner resumes from the last successful checkpoint.
    #[error("cannot checkpoint shard {shard_id}: {reason}")]
    LeaseLost {
        /// The shard.
        shard_id: String,
        /// Why.
        reason: String,
    },
    /// The position is below the last checkpoint or beyond what was delivered.
    #[error("cannot checkpoint shard {shard_id} at {requested}: must be between the last checkpoint {last} and the last delivered record {largest}")]
    OutOfRange {
        /// The shard.
        shard_id: String,
        /// The requested position.
        requested: Checkpoint,
        /// The last checkpoint.
        last: Checkpoint,
        /// The last record delivered.
        largest: Checkpoint,
    },
    /// The sequence number is not a decimal number.
    #[error(transparent)]
    InvalidSequenceNumber(#[from] InvalidSequenceNumber),
    /// The lease table failed (throttling was already retried a bounded number of times).
    #[error("checkpoint of shard {shard_id} failed: {source}")]
    Store {
        /// The shard.
        shard_id: String,
        /// The store error.
        #[source]
        source: LeaseStoreError,
    },
}

impl CheckpointError {
    /// The Java KCL exception this corresponds to (the MultiLangDaemon protocol sends it).
    pub fn java_exception_name(&self) -> &'static str {
        match self {
            CheckpointError::LeaseLost { .. } => "ShutdownException",
            CheckpointError::OutOfRange { .. } | CheckpointError::InvalidSequenceNumber(_) => {
                "IllegalArgumentException"
            }
            CheckpointError::Store { source, .. }
                if source.kind() == crate::error::ErrorKind::Throttled =>
            {
                "ThrottlingException"
            }
            CheckpointError::Store { .. } => "KinesisClientLibDependencyException",
        }
    }
}

/// Records a shard's progress in the lease table, for one tenure of its lease.
///
/// Accepts positions between the last checkpoint and the last record delivered. At shard end
/// (in [`crate::Shutdown::ShardEnded`]) checkpointing the last record, or calling
/// [`Checkpointer::checkpoint`], records `SHARD_END`.
#[derive(Debug)]
pub struct Checkpointer {
    shard_id: String,
    coordinator: LeaseCoordinator,
    token: Uuid,
    last: Checkpoint,
    largest: Checkpoint,
    at_shard_end: bool,
}

impl Checkpointer {
    /// A checkpointer for the tenure `token` of `shard_id`, starting from `checkpoint`.
    pub(crate) fn new(
        shard_id: String,
        coordinator: LeaseCoordinator,
        token: Uuid,
        checkpoint: Checkpoint,
    ) -> Self {
        Checkpointer {
            shard_id,
            coordinator,
            token,
            largest: checkpoint.clone(),
            last: checkpoint,
            at_shard_end: false,
        }
    }

    /// The shard.
    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// The last checkpoint recorded (or the one processing started from).
    pub fn last_checkpoint(&self) -> &Checkpoint {
        &self.last
    }

    /// The position of the last record delivered.
    pub fn largest_permitted(&self) -> &Checkpoint {
        &self.largest
    }

    pub(crate) fn delivered(&mut self, through: Checkpoint) {
        if through > self.largest {
            self.largest = through;
        }
    }

    /// The last batch was not accepted (the processor failed it and gets it again): only
    /// `accepted` (or the processor's own later checkpoint) may be checkpointed until then, so
    /// that a checkpoint in `Shutdown::Requested` cannot cover records never processed.
    pub(crate) fn undeliver(&mut self, accepted: Checkpoint) {
        self.largest = accepted.max(self.last.clone());
    }

    pub(crate) fn set_shard_end(&mut self) {
        self.at_shard_end = true;
    }

    /// Checkpoint everything delivered so far (`SHARD_END` at shard end).
    pub async fn checkpoint(&mut self) -> Result<(), CheckpointError> {
        let target = if self.at_shard_end {
            Checkpoint::ShardEnd
        } else {
            self.largest.clone()
        };
        self.write(target).await
    }

    /// Checkpoint through the record at `sequence_number` / `sub_sequence_number`.
    pub async fn checkpoint_at(
        &mut self,
        sequence_number: &str,
        sub_sequence_number: u64,
    ) -> Result<(), CheckpointError> {
        let esn = ExtendedSequenceNumber::new(sequence_number, sub_sequence_number)?;
        self.write(Checkpoint::Sequence(esn)).await
    }

    /// Checkpoint through `record`.
    pub async fn checkpoint_record(
        &mut self,
        record: &crate::Record,
    ) -> Result<(), CheckpointError> {
        self.checkpoint_at(&record.sequence_number, record.sub_sequence_number)
            .await
    }

    async fn write(&mut self, mut target: Checkpoint) -> Result<(), CheckpointError> {
        let out_of_range = target < self.last
            || (target > self.largest && !(target.is_shard_end() && self.at_shard_end));
        if out_of_range {
            return Err(CheckpointError::OutOfRange {
                shard_id: self.shard_id.clone(),
                requested: target,
                last: self.last.clone(),
                largest: self.largest.clone(),
            });
        }
        if self.at_shard_end && target == self.largest {
            target = Checkpoint::ShardEnd;
        }
        if target == self.last {
            return Ok(());
        }
        let result = self
            .coordinator
            .update_lease(&self.shard_id, self.token, |lease| {
                lease.checkpoint = target.clone();
                lease.pending_checkpoint = None;
                lease.pending_checkpoint_state = None;
                lease.owner_switches_since_checkpoint = 0;
            })
            .await;
        match result {
            Ok(_) => {
                tracing::debug!(shard_id = %self.shard_id, checkpoint = %target, "checkpointed");
                self.last = target;
                Ok(())
            }
            Err(LeaseUpdateError::LeaseLost { reason, .. }) => Err(CheckpointError::LeaseLost {
                shard_id: self.shard_id.clone(),
                reason,
            }),
            Err(LeaseUpdateError::Store(source)) => Err(CheckpointError::Store {
                shard_id: self.shard_id.clone(),
                source,
            }),
        }
    }
}

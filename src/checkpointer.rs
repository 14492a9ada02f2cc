//! [`Checkpointer`]: how a processor records its progress.

use crate::checkpoint::{Checkpoint, ExtendedSequenceNumber, InvalidSequenceNumber};
use crate::coordinator::{LeaseCoordinator, LeaseUpdateError, LossReason};
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
        reason: LossReason,
    },
    /// The position is below the last checkpoint or beyond what was delivered.
    #[error("cannot checkpoint shard {shard_id} at {requested}: must be between the last checkpoint {last} and the last delivered record {largest}")]
    OutOfRange {
        /// The shard.
        shard_id: String,
        /// The requested position.
        requested: Checkpoint,
        /// The last checkpoint (or a higher one attempted that may have been stored).
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
    /// Whether a retry may help: a lost lease or a bad position never heals; a store error
    /// is as its [`LeaseStoreError::kind`] says.
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            CheckpointError::Store { source, .. } => source.kind(),
            _ => crate::error::ErrorKind::Fatal,
        }
    }
}

/// Records a shard's progress in the lease table, for one tenure of its lease.
///
/// Accepts positions between the last checkpoint and the last record delivered. A write that
/// failed still raises the lower bound (it may have been stored: e.g. a timeout after the write
/// applied), so a checkpoint never moves backwards. At shard end
/// (in [`crate::Shutdown::ShardEnded`]) checkpointing the last record, or calling
/// [`Checkpointer::checkpoint`], records `SHARD_END`.
#[derive(Debug)]
pub struct Checkpointer {
    shard_id: String,
    coordinator: LeaseCoordinator,
    token: Uuid,
    last: Checkpoint,
    /// The highest checkpoint ever attempted in this tenure (at least `last`): a failed write
    /// may still have been stored (a timeout after it applied), so nothing below it is allowed.
    floor: Checkpoint,
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
            floor: checkpoint.clone(),
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
        self.largest = accepted.max(self.floor.clone());
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
        // The lower bound is what may be stored (the highest value ever attempted), not what
        // was last confirmed: a write that failed after it applied must not be overwritten
        // with a lower value.
        let out_of_range = target < self.floor
            || (target > self.largest && !(target.is_shard_end() && self.at_shard_end));
        if out_of_range {
            return Err(CheckpointError::OutOfRange {
                shard_id: self.shard_id.clone(),
                requested: target,
                last: self.floor.clone(),
                largest: self.largest.clone(),
            });
        }
        if self.at_shard_end && target == self.largest {
            target = Checkpoint::ShardEnd;
        }
        if target == self.last {
            return Ok(());
        }
        if target > self.floor {
            self.floor = target.clone();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::CoordinatorConfig;
    use crate::lease::{Fault, InMemoryLeaseStore, LeaseOp};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    const KEY: &str = "shardId-000000000000";

    fn seq(s: &str) -> Checkpoint {
        Checkpoint::sequence(s, 0).unwrap()
    }

    /// A write whose first attempt applied but whose response (and every retry) failed may be
    /// stored: a later, lower checkpoint must be refused, not written over it.
    #[tokio::test(start_paused = true)]
    async fn a_failed_checkpoint_that_may_have_landed_still_bounds_the_next_one() {
        let store = InMemoryLeaseStore::new();
        store.with_table(|t| {
            let l = crate::lease::Lease::new(KEY, Checkpoint::TrimHorizon);
            t.insert(l.key.clone(), l);
        });
        let coordinator = LeaseCoordinator::new(
            Arc::new(store.clone()),
            CoordinatorConfig::new("a", Duration::from_secs(10)),
        );
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (c, s) = (coordinator.clone(), stop.clone());
            async move { c.run(s).await }
        });
        while !coordinator.held_keys().contains(KEY) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let tenure = coordinator.held()[KEY].clone();
        let mut cp = Checkpointer::new(
            KEY.into(),
            coordinator.clone(),
            tenure.token,
            Checkpoint::TrimHorizon,
        );
        cp.delivered(seq("300"));
        cp.checkpoint_at("100", 0).await.unwrap();

        // The write of 200 applies, then its response is lost, and every retry times out.
        let updates = Arc::new(AtomicU32::new(0));
        store.set_fault_injector(Some(Arc::new({
            let updates = updates.clone();
            move |op: LeaseOp, _: Option<&str>| {
                (op == LeaseOp::Update).then(|| match updates.fetch_add(1, Ordering::SeqCst) {
                    0 => Fault::TimeoutAfterApply,
                    _ => Fault::Timeout,
                })
            }
        })));
        let err = cp.checkpoint_at("200", 0).await.unwrap_err();
        assert!(matches!(err, CheckpointError::Store { .. }), "{err}");
        store.set_fault_injector(None);
        assert_eq!(
            store.snapshot()[KEY].checkpoint,
            seq("200"),
            "the first attempt landed"
        );

        let err = cp.checkpoint_at("150", 0).await.unwrap_err();
        assert!(matches!(err, CheckpointError::OutOfRange { .. }), "{err}");
        assert_eq!(
            store.snapshot()[KEY].checkpoint,
            seq("200"),
            "never moves backwards"
        );
        stop.cancel();
        task.await.unwrap();
    }
}

//! [`Checkpointer`]: how a processor records its progress.

use crate::checkpoint::{Checkpoint, ExtendedSequenceNumber, InvalidSequenceNumber};
use crate::coordinator::{LeaseCoordinator, LeaseUpdateError, LossReason};
use crate::lease::LeaseStoreError;
use crate::sync::Mutex;
use std::sync::Arc;
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
///
/// **A handle you can keep.** Cloning a checkpointer is cheap, and the clone is `'static`: move
/// it into a spawned task (a sink that acknowledges records later) and checkpoint from there.
/// Every clone shares the same bounds and writes one at a time, so the guarantees hold
/// whichever clone writes: never backwards, never beyond what was delivered, and refused
/// ([`CheckpointError::LeaseLost`]) once this tenure of the lease has ended, whether the
/// lease was lost, released at shutdown, or taken again later by this worker.
///
/// **Prepared (two-phase) checkpoints**, as the Java KCL's `prepareCheckpoint`:
/// [`prepare_checkpoint`](Self::prepare_checkpoint) stores a position (and optional
/// application state) in the lease's `pendingCheckpoint` attributes without moving the
/// checkpoint; [`PreparedCheckpoint::checkpoint`] commits it. A worker that takes the shard
/// over before the commit finds both in
/// [`InitializationInput::pending_checkpoint`](crate::InitializationInput::pending_checkpoint)
/// and `pending_checkpoint_state`, and resumes from the committed checkpoint. Any checkpoint
/// clears the prepared one.
#[derive(Debug, Clone)]
pub struct Checkpointer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    shard_id: String,
    coordinator: LeaseCoordinator,
    token: Uuid,
    bounds: Mutex<Bounds>,
    /// Held for the whole of a write: one write at a time per tenure, so a lower checkpoint
    /// checked against the bounds cannot land after a higher one.
    writing: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct Bounds {
    last: Checkpoint,
    /// The highest checkpoint ever attempted in this tenure (at least `last`): a failed write
    /// may still have been stored (a timeout after it applied), so nothing below it is allowed.
    floor: Checkpoint,
    largest: Checkpoint,
    at_shard_end: bool,
    /// A prepared checkpoint may be in the lease (left by an earlier owner, or written in this
    /// tenure): a checkpoint at `last` still writes, to clear it.
    pending: bool,
}

impl Bounds {
    /// `target` as it would be written (`SHARD_END` for the last record at shard end), if it
    /// is in range.
    fn check(&self, shard_id: &str, target: Checkpoint) -> Result<Checkpoint, CheckpointError> {
        // The lower bound is what may be stored (the highest value ever attempted), not what
        // was last confirmed: a write that failed after it applied must not be overwritten
        // with a lower value.
        let out_of_range = target < self.floor
            || (target > self.largest && !(target.is_shard_end() && self.at_shard_end));
        if out_of_range {
            return Err(CheckpointError::OutOfRange {
                shard_id: shard_id.to_string(),
                requested: target,
                last: self.floor.clone(),
                largest: self.largest.clone(),
            });
        }
        Ok(if self.at_shard_end && target == self.largest {
            Checkpoint::ShardEnd
        } else {
            target
        })
    }

    /// Everything delivered so far (`SHARD_END` at shard end).
    fn everything(&self) -> Checkpoint {
        if self.at_shard_end {
            Checkpoint::ShardEnd
        } else {
            self.largest.clone()
        }
    }
}

impl Checkpointer {
    /// A checkpointer for the tenure `token` of `shard_id`, starting from `checkpoint`;
    /// `pending` when the lease holds a prepared checkpoint.
    pub(crate) fn new(
        shard_id: String,
        coordinator: LeaseCoordinator,
        token: Uuid,
        checkpoint: Checkpoint,
        pending: bool,
    ) -> Self {
        Checkpointer {
            shared: Arc::new(Shared {
                shard_id,
                coordinator,
                token,
                bounds: Mutex::new(Bounds {
                    largest: checkpoint.clone(),
                    floor: checkpoint.clone(),
                    last: checkpoint,
                    at_shard_end: false,
                    pending,
                }),
                writing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The shard.
    pub fn shard_id(&self) -> &str {
        &self.shared.shard_id
    }

    /// The last checkpoint recorded (or the one processing started from).
    pub fn last_checkpoint(&self) -> Checkpoint {
        self.shared.bounds.lock().last.clone()
    }

    /// The position of the last record delivered.
    pub fn largest_permitted(&self) -> Checkpoint {
        self.shared.bounds.lock().largest.clone()
    }

    pub(crate) fn delivered(&self, through: Checkpoint) {
        let mut b = self.shared.bounds.lock();
        if through > b.largest {
            b.largest = through;
        }
    }

    /// The last batch was not accepted (the processor failed it and gets it again): only
    /// `accepted` (or the processor's own later checkpoint) may be checkpointed until then, so
    /// that a checkpoint in `Shutdown::Requested` cannot cover records never processed.
    pub(crate) fn undeliver(&self, accepted: Checkpoint) {
        let mut b = self.shared.bounds.lock();
        b.largest = accepted.max(b.floor.clone());
    }

    pub(crate) fn set_shard_end(&self) {
        self.shared.bounds.lock().at_shard_end = true;
    }

    /// Checkpoint everything delivered so far (`SHARD_END` at shard end).
    pub async fn checkpoint(&self) -> Result<(), CheckpointError> {
        let target = self.shared.bounds.lock().everything();
        self.write(target).await
    }

    /// Checkpoint through the record at `sequence_number` / `sub_sequence_number`.
    pub async fn checkpoint_at(
        &self,
        sequence_number: &str,
        sub_sequence_number: u64,
    ) -> Result<(), CheckpointError> {
        let esn = ExtendedSequenceNumber::new(sequence_number, sub_sequence_number)?;
        self.write(Checkpoint::Sequence(esn)).await
    }

    /// Checkpoint through `record`.
    pub async fn checkpoint_record(&self, record: &crate::Record) -> Result<(), CheckpointError> {
        self.write(record.checkpoint()).await
    }

    /// Prepare a checkpoint at everything delivered so far (`SHARD_END` at shard end), with
    /// optional application `state`: stored in the lease's `pendingCheckpoint`,
    /// `pendingCheckpointSubSequenceNumber` and `pendingCheckpointState` attributes (as the
    /// Java KCL's `prepareCheckpoint`), while the checkpoint itself stays where it is until
    /// [`PreparedCheckpoint::checkpoint`]. The same bounds as a checkpoint apply. Preparing
    /// the last checkpoint writes nothing (as Java).
    pub async fn prepare_checkpoint(
        &self,
        state: Option<Vec<u8>>,
    ) -> Result<PreparedCheckpoint, CheckpointError> {
        let target = self.shared.bounds.lock().everything();
        self.prepare(target, state).await
    }

    /// Prepare a checkpoint through the record at `sequence_number` /
    /// `sub_sequence_number` (see [`prepare_checkpoint`](Self::prepare_checkpoint)).
    pub async fn prepare_checkpoint_at(
        &self,
        sequence_number: &str,
        sub_sequence_number: u64,
        state: Option<Vec<u8>>,
    ) -> Result<PreparedCheckpoint, CheckpointError> {
        let esn = ExtendedSequenceNumber::new(sequence_number, sub_sequence_number)?;
        self.prepare(Checkpoint::Sequence(esn), state).await
    }

    /// Prepare a checkpoint through `record` (see [`prepare_checkpoint`](Self::prepare_checkpoint)).
    pub async fn prepare_checkpoint_record(
        &self,
        record: &crate::Record,
        state: Option<Vec<u8>>,
    ) -> Result<PreparedCheckpoint, CheckpointError> {
        self.prepare(record.checkpoint(), state).await
    }

    async fn prepare(
        &self,
        target: Checkpoint,
        state: Option<Vec<u8>>,
    ) -> Result<PreparedCheckpoint, CheckpointError> {
        let shared = &self.shared;
        let _writing = shared.writing.lock().await;
        let target = {
            let b = shared.bounds.lock();
            let target = b.check(&shared.shard_id, target)?;
            if target == b.last {
                return Ok(PreparedCheckpoint {
                    checkpointer: self.clone(),
                    pending: target,
                });
            }
            target
        };
        // The prepared value is not a checkpoint: the floor stays (a failed prepare moves
        // nothing), and the checkpoint written is the one the lease holds.
        shared.bounds.lock().pending = true;
        let result = shared
            .coordinator
            .update_lease(&shared.shard_id, shared.token, |lease| {
                lease.pending_checkpoint = Some(target.clone());
                lease.pending_checkpoint_state = state.clone();
            })
            .await;
        self.outcome(result, &target)?;
        tracing::debug!(shard_id = %shared.shard_id, pending = %target, "prepared a checkpoint");
        Ok(PreparedCheckpoint {
            checkpointer: self.clone(),
            pending: target,
        })
    }

    async fn write(&self, target: Checkpoint) -> Result<(), CheckpointError> {
        let shared = &self.shared;
        let _writing = shared.writing.lock().await;
        let target = {
            let mut b = shared.bounds.lock();
            let target = b.check(&shared.shard_id, target)?;
            if target == b.last && !b.pending {
                return Ok(());
            }
            if target > b.floor {
                b.floor = target.clone();
            }
            target
        };
        let result = shared
            .coordinator
            .update_lease(&shared.shard_id, shared.token, |lease| {
                lease.checkpoint = target.clone();
                lease.pending_checkpoint = None;
                lease.pending_checkpoint_state = None;
                lease.owner_switches_since_checkpoint = 0;
            })
            .await;
        self.outcome(result, &target)?;
        tracing::debug!(shard_id = %shared.shard_id, checkpoint = %target, "checkpointed");
        let mut b = shared.bounds.lock();
        b.last = target;
        b.pending = false;
        Ok(())
    }

    fn outcome(
        &self,
        result: Result<crate::lease::Lease, LeaseUpdateError>,
        target: &Checkpoint,
    ) -> Result<(), CheckpointError> {
        let shard_id = || self.shared.shard_id.clone();
        match result {
            Ok(_) => Ok(()),
            Err(LeaseUpdateError::LeaseLost { reason, .. }) => {
                tracing::debug!(shard_id = %self.shared.shard_id, position = %target, %reason, "checkpoint refused: the lease tenure ended");
                Err(CheckpointError::LeaseLost {
                    shard_id: shard_id(),
                    reason,
                })
            }
            Err(LeaseUpdateError::Store(source)) => Err(CheckpointError::Store {
                shard_id: shard_id(),
                source,
            }),
        }
    }
}

/// A checkpoint stored as prepared (pending), not yet committed: see
/// [`Checkpointer::prepare_checkpoint`]. It is `'static` and cheap to clone, like the
/// checkpointer it came from.
#[derive(Debug, Clone)]
#[must_use = "a prepared checkpoint is not a checkpoint until `checkpoint()` commits it"]
pub struct PreparedCheckpoint {
    checkpointer: Checkpointer,
    pending: Checkpoint,
}

impl PreparedCheckpoint {
    /// The prepared position.
    pub fn pending_checkpoint(&self) -> &Checkpoint {
        &self.pending
    }

    /// Commit it: a checkpoint at the prepared position (which clears the prepared one), with
    /// a checkpoint's rules, checked now (it fails if a later checkpoint was made meanwhile,
    /// or the lease was lost).
    pub async fn checkpoint(&self) -> Result<(), CheckpointError> {
        self.checkpointer.write(self.pending.clone()).await
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
        let cp = Checkpointer::new(
            KEY.into(),
            coordinator.clone(),
            tenure.token,
            Checkpoint::TrimHorizon,
            false,
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

    /// Delivers batches and keeps nothing: the tests checkpoint through clones.
    struct Quiet;

    #[async_trait::async_trait]
    impl crate::RecordProcessor for Quiet {
        async fn process_records(
            &mut self,
            _: crate::ProcessRecordsInput,
            _: &mut Checkpointer,
        ) -> Result<(), crate::ProcessorError> {
            Ok(())
        }
    }

    /// A clone moved into a task outlives the `process_records` call that gave it and
    /// checkpoints with the same bounds: up to what was delivered, never backwards, and not
    /// at all once the tenure ended.
    #[tokio::test(start_paused = true)]
    async fn a_clone_moved_into_a_task_checkpoints_with_the_same_bounds() {
        use crate::testing::TestShard;
        let mut shard = TestShard::new(KEY).await;
        let batch = shard.records(["a", "b", "c"]);
        let (a, b, c) = (batch[0].clone(), batch[1].clone(), batch[2].clone());
        shard.process(&mut Quiet, batch).await.unwrap();

        let handle = shard.checkpointer().clone();
        let acknowledged = tokio::spawn({
            let (handle, b) = (handle.clone(), b.clone());
            async move {
                tokio::time::sleep(Duration::from_secs(1)).await; // the sink acknowledges later
                handle.checkpoint_record(&b).await
            }
        });
        acknowledged.await.unwrap().unwrap();
        assert_eq!(shard.stored_checkpoint(), b.checkpoint());
        assert_eq!(
            shard.checkpointer().last_checkpoint(),
            b.checkpoint(),
            "clones share state"
        );

        let err = handle.checkpoint_record(&a).await.unwrap_err();
        assert!(matches!(err, CheckpointError::OutOfRange { .. }), "{err}");
        let later = shard.records(["d"]);
        let err = handle.checkpoint_record(&later[0]).await.unwrap_err();
        assert!(
            matches!(err, CheckpointError::OutOfRange { .. }),
            "not delivered: {err}"
        );
        assert_eq!(shard.stored_checkpoint(), b.checkpoint(), "never backwards");

        shard.lose_lease();
        let err = handle.checkpoint_record(&c).await.unwrap_err();
        assert!(matches!(err, CheckpointError::LeaseLost { .. }), "{err}");
        assert_eq!(shard.stored_checkpoint(), b.checkpoint());
    }

    /// Clones checkpointing at once, each write slow: one write at a time, and the stored
    /// checkpoint only ever rises.
    #[tokio::test(start_paused = true)]
    async fn concurrent_checkpoints_from_clones_never_move_backwards() {
        use crate::testing::TestShard;
        let mut shard = TestShard::new(KEY).await;
        let batch = shard.records(["a", "b", "c", "d", "e"]);
        shard.process(&mut Quiet, batch.clone()).await.unwrap();
        shard
            .store()
            .set_fault_injector(Some(Arc::new(|op: LeaseOp, _: Option<&str>| {
                (op == LeaseOp::Update).then_some(Fault::Delay(Duration::from_millis(300)))
            })));
        let seen = Arc::new(crate::sync::Mutex::new(Vec::new()));
        let watcher = tokio::spawn({
            let (store, seen) = (shard.store().clone(), seen.clone());
            async move {
                for _ in 0..40 {
                    seen.lock().push(store.snapshot()[KEY].checkpoint.clone());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        let tasks: Vec<_> = [3usize, 1, 4, 0, 2]
            .into_iter()
            .map(|i| {
                let (handle, record) = (shard.checkpointer().clone(), batch[i].clone());
                tokio::spawn(async move { (i, handle.checkpoint_record(&record).await) })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        watcher.await.unwrap();
        let seen = seen.lock().clone();
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1]),
            "the stored checkpoint fell: {seen:?}"
        );
        assert_eq!(shard.stored_checkpoint(), batch[4].checkpoint());
        for (i, r) in results {
            match r {
                Ok(()) => {}
                Err(CheckpointError::OutOfRange { .. }) => assert!(i < 4, "{i}"),
                Err(e) => panic!("{i}: {e}"),
            }
        }
    }

    /// Prepared checkpoints as the Java KCL stores them: the pending attributes change, the
    /// checkpoint does not, until the commit; a commit or any checkpoint clears them.
    #[tokio::test(start_paused = true)]
    async fn a_prepared_checkpoint_is_pending_until_committed() {
        use crate::testing::TestShard;
        let mut shard = TestShard::new(KEY).await;
        let batch = shard.records(["a", "b", "c"]);
        shard.process(&mut Quiet, batch.clone()).await.unwrap();
        let cp = shard.checkpointer().clone();

        let prepared = cp
            .prepare_checkpoint_record(&batch[1], Some(b"offset=2".to_vec()))
            .await
            .unwrap();
        assert_eq!(prepared.pending_checkpoint(), &batch[1].checkpoint());
        let lease = shard.lease();
        assert_eq!(
            lease.checkpoint,
            Checkpoint::TrimHorizon,
            "not moved by a prepare"
        );
        assert_eq!(lease.pending_checkpoint, Some(batch[1].checkpoint()));
        assert_eq!(
            lease.pending_checkpoint_state.as_deref(),
            Some(&b"offset=2"[..])
        );
        assert_eq!(cp.last_checkpoint(), Checkpoint::TrimHorizon);

        prepared.checkpoint().await.unwrap();
        let lease = shard.lease();
        assert_eq!(lease.checkpoint, batch[1].checkpoint());
        assert_eq!(
            (lease.pending_checkpoint, lease.pending_checkpoint_state),
            (None, None)
        );

        // Out of range: below the checkpoint, beyond what was delivered, or after a commit
        // moved past it.
        let err = cp
            .prepare_checkpoint_record(&batch[0], None)
            .await
            .unwrap_err();
        assert!(matches!(err, CheckpointError::OutOfRange { .. }), "{err}");
        let stale = cp.prepare_checkpoint(None).await.unwrap();
        assert_eq!(stale.pending_checkpoint(), &batch[2].checkpoint());
        assert_eq!(
            shard.lease().pending_checkpoint,
            Some(batch[2].checkpoint())
        );
        // A plain checkpoint clears a prepared one too.
        cp.checkpoint_record(&batch[2]).await.unwrap();
        assert_eq!(shard.lease().pending_checkpoint, None);
        // Preparing the last checkpoint writes nothing (as Java), and committing it is a no-op.
        let counter = shard.lease().counter;
        let same = cp.prepare_checkpoint(None).await.unwrap();
        same.checkpoint().await.unwrap();
        assert_eq!(shard.lease().counter, counter);

        let more = shard.records(["d"]);
        shard.process(&mut Quiet, more.clone()).await.unwrap();
        shard.lose_lease();
        let err = cp
            .prepare_checkpoint_record(&more[0], None)
            .await
            .unwrap_err();
        assert!(matches!(err, CheckpointError::LeaseLost { .. }), "{err}");
        assert_eq!(shard.lease().pending_checkpoint, None);
    }

    /// A new owner is shown what the previous one prepared, and resumes from the committed
    /// checkpoint; its first checkpoint clears the prepared one.
    #[tokio::test(start_paused = true)]
    async fn the_next_owner_sees_the_prepared_checkpoint_and_its_state() {
        use crate::testing::TestShard;
        use crate::InitializationInput;
        struct Seen(Option<InitializationInput>);
        #[async_trait::async_trait]
        impl crate::RecordProcessor for Seen {
            async fn initialize(
                &mut self,
                input: InitializationInput,
            ) -> Result<(), crate::ProcessorError> {
                self.0 = Some(input);
                Ok(())
            }
            async fn process_records(
                &mut self,
                _: crate::ProcessRecordsInput,
                cp: &mut Checkpointer,
            ) -> Result<(), crate::ProcessorError> {
                Ok(cp.checkpoint().await?)
            }
        }
        let mut lease = crate::lease::Lease::new(KEY, seq("100"));
        lease.pending_checkpoint = Some(seq("200"));
        lease.pending_checkpoint_state = Some(b"state".to_vec());
        let mut shard = TestShard::with_lease(lease).await;
        let mut p = Seen(None);
        shard.initialize(&mut p).await.unwrap();
        let input = p.0.clone().unwrap();
        assert_eq!(input.checkpoint, seq("100"));
        assert_eq!(input.pending_checkpoint, Some(seq("200")));
        assert_eq!(
            input.pending_checkpoint_state.as_deref(),
            Some(&b"state"[..])
        );
        // A checkpoint at the resumed position still clears what the old owner prepared.
        shard.checkpointer().checkpoint().await.unwrap();
        assert_eq!(shard.lease().pending_checkpoint, None);
        assert_eq!(shard.lease().checkpoint, seq("100"));
    }

    #[test]
    fn a_checkpointer_is_a_static_send_sync_handle() {
        fn handle<T: Clone + Send + Sync + 'static>() {}
        handle::<Checkpointer>();
        handle::<PreparedCheckpoint>();
    }
}

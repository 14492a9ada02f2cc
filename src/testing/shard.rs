//! [`TestShard`]: unit-testing a record processor with a real checkpointer.

use crate::checkpoint::Checkpoint;
use crate::checkpointer::Checkpointer;
use crate::coordinator::{CoordinatorConfig, LeaseCoordinator};
use crate::lease::Lease;
use crate::processor::TEST_STREAM;
use crate::processor::{
    InitializationInput, ProcessRecordsInput, ProcessorError, RecordProcessor, Shutdown,
};
use crate::record::{Bytes, Record};
use crate::stream::StreamIdentifier;
use crate::testing::lease_store::InMemoryLeaseStore;
use crate::testing::stream::FIRST_SEQUENCE_NUMBER;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::{CancellationToken, DropGuard};

/// One shard whose lease a test worker holds on an in-memory lease table, driving a
/// [`RecordProcessor`] the way the scheduler does.
///
/// Batches go to the processor with a real [`Checkpointer`]: it accepts positions from the
/// last checkpoint up to the last record delivered, writes them to the lease table (read
/// them back with [`stored_checkpoint`](Self::stored_checkpoint)), and fails with
/// [`CheckpointError::LeaseLost`](crate::CheckpointError::LeaseLost) once the lease is gone
/// ([`lose_lease`](Self::lose_lease)). The lease is renewed in the background (needs a tokio
/// runtime; paused time works) until the `TestShard` is dropped.
///
/// See the [module docs](super#testing-your-processor) for an example.
#[derive(Debug)]
pub struct TestShard {
    shard_id: String,
    store: InMemoryLeaseStore,
    checkpointer: Checkpointer,
    next_sequence: u128,
    _renewals: DropGuard,
}

impl TestShard {
    /// The worker id holding the lease.
    pub const WORKER_ID: &'static str = "test-worker";

    /// How long the lease survives without renewals (renewed every third of it).
    pub const FAILOVER_TIME: Duration = Duration::from_secs(10);

    /// A new shard, processed from `TRIM_HORIZON`.
    pub async fn new(shard_id: &str) -> TestShard {
        Self::starting_at(shard_id, Checkpoint::TrimHorizon).await
    }

    /// A shard whose lease already has `checkpoint` (as after an earlier owner).
    pub async fn starting_at(shard_id: &str, checkpoint: Checkpoint) -> TestShard {
        Self::with_lease(Lease::new(shard_id, checkpoint)).await
    }

    /// A shard with this lease (e.g. with a pending checkpoint); its owner is replaced.
    pub async fn with_lease(mut lease: Lease) -> TestShard {
        lease.owner = None;
        let shard_id = lease.key.clone();
        let store = InMemoryLeaseStore::new();
        store.with_table(|t| t.insert(shard_id.clone(), lease));
        let coordinator = LeaseCoordinator::new(
            Arc::new(store.clone()),
            CoordinatorConfig::new(Self::WORKER_ID, Self::FAILOVER_TIME),
        );
        coordinator
            .take_round()
            .await
            .expect("the in-memory table has no faults");
        let tenure = coordinator.held()[&shard_id].clone();
        let stop = CancellationToken::new();
        tokio::spawn({
            let (coordinator, stop) = (coordinator.clone(), stop.clone());
            async move { coordinator.run(stop).await }
        });
        let checkpointer = Checkpointer::new(
            shard_id.clone(),
            coordinator,
            tenure.token,
            tenure.lease.checkpoint.clone(),
            tenure.lease.pending_checkpoint.is_some(),
        );
        TestShard {
            shard_id,
            store,
            checkpointer,
            next_sequence: FIRST_SEQUENCE_NUMBER,
            _renewals: stop.drop_guard(),
        }
    }

    /// The shard id.
    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// Records with the next sequence numbers of this shard, one per payload.
    pub fn records<I, D>(&mut self, payloads: I) -> Vec<Record>
    where
        I: IntoIterator<Item = D>,
        D: AsRef<[u8]>,
    {
        payloads
            .into_iter()
            .map(|data| {
                self.next_sequence += 1;
                Record::new(
                    Bytes::copy_from_slice(data.as_ref()),
                    "test",
                    self.next_sequence,
                )
            })
            .collect()
    }

    /// The user records of one KPL aggregate, one per payload, as the library delivers them:
    /// they share the next sequence number and have sub-sequence numbers 0, 1, 2, … and
    /// `aggregated` set.
    pub fn aggregated_records<I, D>(&mut self, payloads: I) -> Vec<Record>
    where
        I: IntoIterator<Item = D>,
        D: AsRef<[u8]>,
    {
        self.next_sequence += 1;
        let sequence = crate::SequenceNumber::from(self.next_sequence);
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, data)| Record {
                sub_sequence_number: i as u64,
                aggregated: true,
                ..Record::new(
                    Bytes::copy_from_slice(data.as_ref()),
                    "test",
                    sequence.clone(),
                )
            })
            .collect()
    }

    /// Call `initialize` as the scheduler does (with the lease's checkpoint).
    pub async fn initialize<P: RecordProcessor>(
        &self,
        processor: &mut P,
    ) -> Result<(), ProcessorError> {
        let lease = self.lease();
        processor
            .initialize(InitializationInput {
                stream: StreamIdentifier::single(TEST_STREAM),
                shard_id: self.shard_id.clone(),
                checkpoint: lease.checkpoint,
                pending_checkpoint: lease.pending_checkpoint,
                pending_checkpoint_state: lease.pending_checkpoint_state,
            })
            .await
    }

    /// Deliver `records` as one batch (the checkpointer then accepts positions up to the
    /// last of them). If the processor fails the batch, only what it had accepted before
    /// may be checkpointed, as in the scheduler (which would deliver the batch again).
    pub async fn process<P: RecordProcessor>(
        &mut self,
        processor: &mut P,
        records: Vec<Record>,
    ) -> Result<(), ProcessorError> {
        let accepted = self.checkpointer.largest_permitted().clone();
        if let Some(last) = records.last() {
            self.checkpointer.delivered(last.checkpoint());
        }
        let input = ProcessRecordsInput {
            stream: StreamIdentifier::single(TEST_STREAM),
            shard_id: self.shard_id.as_str().into(),
            deaggregated: records.iter().any(|r| r.aggregated),
            records: records.into(),
            millis_behind_latest: Some(0),
            attempt: 1,
        };
        let result = processor
            .process_records(input, &mut self.checkpointer)
            .await;
        if result.is_err() {
            self.checkpointer.undeliver(accepted);
        }
        result
    }

    /// Every record was delivered: `shutdown(Shutdown::ShardEnded)`, where the processor
    /// must checkpoint (`SHARD_END`).
    pub async fn end_shard<P: RecordProcessor>(
        &mut self,
        processor: &mut P,
    ) -> Result<(), ProcessorError> {
        self.checkpointer.set_shard_end();
        let checkpointer = &mut self.checkpointer;
        processor
            .shutdown(Shutdown::ShardEnded { checkpointer })
            .await
    }

    /// A graceful shutdown: `shutdown(Shutdown::Requested)` while the lease is held.
    pub async fn request_shutdown<P: RecordProcessor>(
        &mut self,
        processor: &mut P,
    ) -> Result<(), ProcessorError> {
        let checkpointer = &mut self.checkpointer;
        processor
            .shutdown(Shutdown::Requested { checkpointer })
            .await
    }

    /// Another worker takes the lease: checkpoints fail from now on with
    /// [`CheckpointError::LeaseLost`](crate::CheckpointError::LeaseLost). Call
    /// `shutdown(Shutdown::LeaseLost)` yourself if the test needs it.
    pub fn lose_lease(&self) {
        self.store.with_table(|t| {
            let lease = t.get_mut(&self.shard_id).expect("the lease exists");
            *lease = lease.taken_by("another-worker");
        });
    }

    /// The checkpointer the processor is given (e.g. to call it directly).
    pub fn checkpointer(&mut self) -> &mut Checkpointer {
        &mut self.checkpointer
    }

    /// The checkpoint stored in the lease table now.
    pub fn stored_checkpoint(&self) -> Checkpoint {
        self.lease().checkpoint
    }

    /// The lease as stored in the table now.
    pub fn lease(&self) -> Lease {
        self.store.snapshot()[&self.shard_id].clone()
    }

    /// The lease table.
    pub fn store(&self) -> &InMemoryLeaseStore {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CheckpointError;
    use async_trait::async_trait;

    /// Checkpoints every record; fails batches containing "bad".
    struct Strict;

    #[async_trait]
    impl RecordProcessor for Strict {
        async fn initialize(&mut self, _: InitializationInput) -> Result<(), ProcessorError> {
            Ok(())
        }
        async fn process_records(
            &mut self,
            input: ProcessRecordsInput,
            cp: &mut Checkpointer,
        ) -> Result<(), ProcessorError> {
            for r in &input.records {
                if r.data == b"bad"[..] {
                    return Err("bad record".into());
                }
                cp.checkpoint_record(r).await?;
            }
            Ok(())
        }
        async fn shutdown(&mut self, _: Shutdown<'_>) -> Result<(), ProcessorError> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn checkpoints_land_in_the_table_until_the_lease_is_lost() {
        let mut shard = TestShard::new("shardId-000000000001").await;
        let mut p = Strict;
        shard.initialize(&mut p).await.unwrap();
        let batch = shard.records(["a", "b"]);
        let b = batch[1].checkpoint();
        shard.process(&mut p, batch).await.unwrap();
        assert_eq!(shard.stored_checkpoint(), b);

        // An hour of renewals later, the lease is still held.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let batch = shard.records(["ok", "bad"]);
        let ok = batch[0].checkpoint();
        assert!(shard.process(&mut p, batch).await.is_err());
        assert_eq!(shard.stored_checkpoint(), ok);
        // Nothing past what the processor accepted may be checkpointed after a failed batch.
        let err = shard
            .checkpointer()
            .checkpoint_at("99999999999999999999999", 0)
            .await;
        assert!(
            matches!(err, Err(CheckpointError::OutOfRange { .. })),
            "{err:?}"
        );

        // A checkpoint inside an aggregate names the user record.
        let users = shard.aggregated_records(["u0", "u1", "bad", "u3"]);
        let u1 = users[1].checkpoint();
        assert!(shard.process(&mut p, users).await.is_err());
        assert_eq!(shard.stored_checkpoint(), u1);
        assert_eq!(shard.lease().checkpoint.stored_sub_sequence_number(), 1);

        shard.lose_lease();
        let batch = shard.records(["c"]);
        let err = shard.process(&mut p, batch).await.unwrap_err();
        assert!(err.to_string().contains("cannot checkpoint"), "{err}");
        assert_eq!(shard.stored_checkpoint(), u1);
    }
}

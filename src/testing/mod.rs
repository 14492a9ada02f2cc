//! The testing kit (feature `testing`): in-memory backends, fault injection, the lease-store
//! contract suite, an observing lease-store layer, and a way to unit-test a record processor.
//!
//! **Not semver-stable**: this module serves tests, the simulation and the benchmarks, and
//! changes with them. Nothing here is in a default build.
//!
//! | what | for |
//! |---|---|
//! | [`TestShard`] | unit-testing your [`RecordProcessor`](crate::RecordProcessor) with a real [`Checkpointer`](crate::Checkpointer) |
//! | [`InMemoryFleetStore`] | a KCL 3.x fleet's lock, migration item and metrics rows, shared by the workers of one [`InMemoryLeaseStore`] |
//! | [`InMemoryLeaseStore`], [`InMemoryStream`] | deterministic tests on paused tokio time, with fault injection (the stream also has enhanced fan-out: consumers and subscriptions) |
//! | [`kpl_aggregate`], [`UserRecordSpec`], [`InMemoryStream::put_aggregate`] | KPL aggregates (the format `deaggregation` reads) for tests |
//! | [`ObservedLeaseStore`], [`LeaseStoreHooks`] | one layer over any `LeaseStore`: count, audit, stall or fail calls |
//! | [`FaultHooks`], [`CallCounter`] | ready-made hooks |
//! | [`lease_store_contract`], [`fleet_store_contract`] | the checks every `LeaseStore` / `FleetStore` must pass (run them on your own backend) |
//! | [`TestCoordinator`], [`sync_shards`], [`seed_thread_jitter`], [`lease_to_dynamodb_item`] | internals the simulation, benchmarks and integration tests drive directly |
//!
//! # Testing your processor
//!
//! [`TestShard`] holds the lease of one shard on an in-memory lease table, delivers batches
//! to your processor the way the scheduler does (the checkpointer accepts positions up to the
//! last record delivered), and reads back what was checkpointed:
//!
//! ```
//! use kinesis_client::testing::TestShard;
//! use kinesis_client::{Checkpoint, Checkpointer, ProcessRecordsInput, ProcessorError, RecordProcessor};
//!
//! /// Checkpoints after every second batch (and, by the default `shutdown`, at shard end).
//! #[derive(Default)]
//! struct EveryOther { batches: usize }
//!
//! #[async_trait::async_trait]
//! impl RecordProcessor for EveryOther {
//!     async fn process_records(&mut self, _: ProcessRecordsInput, cp: &mut Checkpointer) -> Result<(), ProcessorError> {
//!         self.batches += 1;
//!         if self.batches % 2 == 0 { cp.checkpoint().await?; }
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut shard = TestShard::new("shardId-000000000000").await;
//! let mut processor = EveryOther::default();
//! shard.initialize(&mut processor).await.unwrap();
//!
//! let first = shard.records(["a", "b"]);
//! shard.process(&mut processor, first).await.unwrap();
//! assert_eq!(shard.stored_checkpoint(), Checkpoint::TrimHorizon); // not yet
//!
//! let second = shard.records(["c"]);
//! let last = second[0].checkpoint();
//! shard.process(&mut processor, second).await.unwrap();
//! assert_eq!(shard.stored_checkpoint(), last);
//!
//! shard.end_shard(&mut processor).await.unwrap();
//! assert_eq!(shard.stored_checkpoint(), Checkpoint::ShardEnd);
//! # }
//! ```

pub(crate) mod contract;
mod coordinator;
pub(crate) mod fleet_contract;
mod fleet_store;
pub(crate) mod kpl;
pub(crate) mod lease_store;
pub(crate) mod observe;
mod shard;
pub(crate) mod stream;

pub use coordinator::TestCoordinator;
pub use fleet_store::InMemoryFleetStore;
pub use kpl::{aggregate as kpl_aggregate, UserRecordSpec};
pub use lease_store::{Fault, FaultInjector, InMemoryLeaseStore, LeaseOp};
pub use observe::{
    Args, Call, CallCounter, FaultHooks, LeaseStoreHooks, ObservedLeaseStore, Outcome, Reply,
};
pub use shard::TestShard;
pub use stream::{
    hash_key, InMemoryStream, StreamFault, StreamFaultInjector, StreamOp, BASE_EPOCH,
    DEFAULT_CONSUMER_ACTIVATION_DELAY, DEFAULT_READ_LIMIT, FIRST_SEQUENCE_NUMBER, ITERATOR_TTL,
    MAX_EVENT_BYTES, MAX_GET_RECORDS_LIMIT, MIN_TIME_BETWEEN_SUBSCRIBES, SUBSCRIPTION_HEARTBEAT,
    SUBSCRIPTION_LIFETIME, SUBSCRIPTION_TAKEOVER_AFTER,
};

use crate::config::InitialPosition;
use crate::lease::{Lease, LeaseStore};
use crate::retrieval::StreamClient;
use crate::ShardSyncError;

/// Run every check of the lease-store contract against `store`, panicking with a message that
/// names what diverged. Lease keys are prefixed with `prefix`, so several runs can share a
/// table. Both built-in stores pass it; run it against your own [`LeaseStore`].
pub async fn lease_store_contract(store: &dyn LeaseStore, prefix: &str) {
    crate::testing::contract::run(store, prefix).await
}

/// Run every check of the fleet-store contract against `store` (a fleet without items yet),
/// panicking with a message that names what diverged. Both built-in fleet stores pass it.
pub async fn fleet_store_contract(store: &dyn crate::fleet::FleetStore) {
    crate::testing::fleet_contract::run(store).await
}

/// Make the jitter of every retry backoff on this thread come from a generator seeded with
/// `seed` (deterministic simulation on a current-thread runtime); `None` goes back to OS
/// entropy. Only builds with this feature have the seeded generator.
pub fn seed_thread_jitter(seed: Option<u64>) {
    crate::backoff::seed_thread_jitter(seed)
}

/// One shard sync as the scheduler runs it: list leases and shards, create the missing leases
/// (new leases start at `position`). Returns how many were created.
pub async fn sync_shards(
    stream: &dyn StreamClient,
    store: &dyn LeaseStore,
    position: InitialPosition,
) -> Result<usize, ShardSyncError> {
    crate::resharding::sync_shards(stream, store, position).await
}

/// The DynamoDB item [`DynamoDbLeaseStore`](crate::lease::DynamoDbLeaseStore) writes for
/// `lease` (in the Java KCL's format), e.g. to measure item sizes.
pub fn lease_to_dynamodb_item(
    lease: &Lease,
) -> std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
    crate::lease::dynamodb::lease_to_item(lease)
}

//! Leases: which worker processes which shard, and how far it got.
//!
//! A [`Lease`] is one item of the lease table, in the Java KCL's format (see [`DynamoDbLeaseStore`]
//! for the attribute names). Every change goes through a [`LeaseStore`] with a conditional write:
//! a write whose condition no longer holds returns [`WriteOutcome::Conflict`] (a value, not an
//! error), because losing a race for a lease is a normal event. Errors are reserved for
//! failures of the store itself, and say whether a retry may help ([`LeaseStoreError::kind`]).
//!
//! [`DynamoDbLeaseStore`] is the production store. Implement [`LeaseStore`] for another
//! backend; the `testing` feature has an in-memory store with fault injection and the contract
//! suite every store must pass (`kinesis_client::testing::lease_store_contract`), which both stores run.

pub(crate) mod dynamodb;
mod error;

#[cfg(test)]
pub(crate) use crate::testing::{Fault, InMemoryLeaseStore};
pub use dynamodb::{attr, DynamoDbLeaseStore};
pub use error::{LeaseOp, LeaseStoreCause, LeaseStoreError};

use crate::checkpoint::Checkpoint;
use crate::stream::StreamIdentifier;
use async_trait::async_trait;
use std::fmt;

/// The inclusive range of 128-bit hash keys a shard covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HashKeyRange {
    /// First hash key of the range.
    pub start: u128,
    /// Last hash key of the range (inclusive).
    pub end: u128,
}

/// One lease: a shard, its owner, its optimistic-lock counter and its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The `leaseKey`: the shard id (single-stream mode).
    pub key: String,
    /// The worker holding the lease; `None` when nobody does.
    pub owner: Option<String>,
    /// `leaseCounter`: incremented by every renew, take, evict and checkpoint.
    pub counter: u64,
    /// How far processing got.
    pub checkpoint: Checkpoint,
    /// A prepared (two-phase) checkpoint, if any.
    pub pending_checkpoint: Option<Checkpoint>,
    /// Application state stored with the prepared checkpoint.
    pub pending_checkpoint_state: Option<Vec<u8>>,
    /// Owner changes since the last checkpoint.
    pub owner_switches_since_checkpoint: u64,
    /// Parent shards (0, 1 or 2), sorted.
    pub parent_shard_ids: Vec<String>,
    /// Child shards, known once the shard ended; sorted.
    pub child_shard_ids: Vec<String>,
    /// The shard's hash key range, when known.
    pub hash_key_range: Option<HashKeyRange>,
    /// In a multi-stream application: the lease's stream and shard (the Java KCL's
    /// `streamName` and `shardId` attributes; the key is then
    /// `<account>:<stream>:<creation epoch>:<shard id>`). `None` in a single-stream one, whose
    /// key is the shard id.
    pub multi_stream: Option<StreamShard>,
    /// KCL 3.x: during a graceful hand-off, the worker handing the lease over (the Java KCL's
    /// `checkpointOwner`; [`owner`](Self::owner) then names the worker it goes to). The
    /// outgoing worker keeps processing and renewing until its processor has checkpointed,
    /// then clears it. `None` outside a hand-off.
    pub checkpoint_owner: Option<String>,
    /// KCL 3.x: the lease's throughput as its owner last measured it (`throughputKBps`,
    /// written with each renewal; the leader balances by it).
    pub throughput: Option<Throughput>,
}

/// A lease's throughput in KB/s, as the Java KCL 3.x stores it (`throughputKBps`): finite and
/// not negative.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Throughput(f64);

// Sound: the constructor refuses NaN.
impl Eq for Throughput {}

impl Throughput {
    /// `kbps` KB/s; `None` when it is negative, infinite or NaN.
    pub fn from_kbps(kbps: f64) -> Option<Self> {
        (kbps.is_finite() && kbps >= 0.0).then_some(Throughput(kbps))
    }

    /// The value in KB/s.
    pub fn kbps(self) -> f64 {
        self.0
    }
}

/// The stream and the shard of a multi-stream lease (the Java KCL's `MultiStreamLease`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamShard {
    /// The stream (multi-stream form, `account:name:creationEpoch`).
    pub stream: StreamIdentifier,
    /// The shard id, bare (`shardId-000000000005`).
    pub shard_id: String,
}

impl Lease {
    /// A new, unowned lease for `key` starting at `checkpoint`.
    pub fn new(key: impl Into<String>, checkpoint: Checkpoint) -> Self {
        Lease {
            key: key.into(),
            owner: None,
            counter: 0,
            checkpoint,
            pending_checkpoint: None,
            pending_checkpoint_state: None,
            owner_switches_since_checkpoint: 0,
            parent_shard_ids: Vec::new(),
            child_shard_ids: Vec::new(),
            hash_key_range: None,
            multi_stream: None,
            checkpoint_owner: None,
            throughput: None,
        }
    }

    /// A new, unowned lease of a multi-stream application for `shard_id` of `stream`,
    /// starting at `checkpoint`: its key is `stream.lease_key(shard_id)`, as the Java KCL's.
    pub fn for_stream(
        stream: StreamIdentifier,
        shard_id: impl Into<String>,
        checkpoint: Checkpoint,
    ) -> Self {
        let shard_id = shard_id.into();
        let mut lease = Lease::new(stream.lease_key(&shard_id), checkpoint);
        if stream.is_multi_stream() {
            lease.multi_stream = Some(StreamShard { stream, shard_id });
        }
        lease
    }

    /// The lease's shard id: the key in a single-stream application, the `shardId` attribute
    /// in a multi-stream one.
    pub fn shard_id(&self) -> &str {
        self.multi_stream
            .as_ref()
            .map_or(self.key.as_str(), |m| m.shard_id.as_str())
    }

    /// Set the parent shard ids (kept sorted and de-duplicated).
    pub fn with_parents<I, S>(mut self, parents: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.parent_shard_ids = sorted(parents);
        self
    }

    /// Set the hash key range.
    pub fn with_hash_key_range(mut self, range: HashKeyRange) -> Self {
        self.hash_key_range = Some(range);
        self
    }

    /// The worker processing the lease: during a graceful hand-off the outgoing worker
    /// ([`checkpoint_owner`](Self::checkpoint_owner)), otherwise the [`owner`](Self::owner)
    /// (the Java KCL's `actualOwner`).
    pub fn actual_owner(&self) -> Option<&str> {
        self.checkpoint_owner.as_deref().or(self.owner.as_deref())
    }

    /// True when `worker` is the [actual owner](Self::actual_owner): it processes the lease,
    /// including while it hands the lease over to another worker.
    pub fn is_owned_by(&self, worker: &str) -> bool {
        self.actual_owner() == Some(worker)
    }

    /// True while a graceful hand-off of the lease is under way (KCL 3.x).
    pub fn is_in_handoff(&self) -> bool {
        self.checkpoint_owner.is_some()
    }

    /// The lease as it is after a successful renew.
    pub fn renewed(&self) -> Lease {
        Lease {
            counter: self.counter + 1,
            ..self.clone()
        }
    }

    /// The lease as it is after `owner` took it (a take ends any hand-off).
    pub fn taken_by(&self, owner: &str) -> Lease {
        let switched = self.owner.as_deref().is_some_and(|o| o != owner);
        Lease {
            counter: self.counter + 1,
            owner: Some(owner.to_string()),
            owner_switches_since_checkpoint: self.owner_switches_since_checkpoint
                + u64::from(switched),
            checkpoint_owner: None,
            ..self.clone()
        }
    }

    /// The lease as it is after a KCL 3.x leader assigned it to `owner`, or its outgoing
    /// owner completed a hand-off to `owner`: the counter grows, any hand-off ends, and
    /// `ownerSwitchesSinceCheckpoint` grows as the Java KCL's `assignLease` makes it (when the
    /// owner changes from another worker, or the lease comes back to its hand-off's outgoing
    /// owner).
    pub fn assigned_to(&self, owner: &str) -> Lease {
        let switched = self.owner.as_deref().is_some_and(|o| o != owner)
            || self.checkpoint_owner.as_deref() == Some(owner);
        Lease {
            counter: self.counter + 1,
            owner: Some(owner.to_string()),
            owner_switches_since_checkpoint: self.owner_switches_since_checkpoint
                + u64::from(switched),
            checkpoint_owner: None,
            ..self.clone()
        }
    }

    /// The lease as it is after a graceful hand-off of it to `to` began (a KCL 3.x leader's, a
    /// leaderless steal, or a leaving worker's): the current owner becomes the
    /// `checkpointOwner`; the counter does not change.
    pub fn handing_off_to(&self, to: &str) -> Lease {
        Lease {
            checkpoint_owner: self.owner.clone(),
            owner: Some(to.to_string()),
            ..self.clone()
        }
    }

    /// The lease as it is after its owner released it.
    pub fn evicted(&self) -> Lease {
        Lease {
            counter: self.counter + 1,
            owner: None,
            ..self.clone()
        }
    }
}

/// Sort and de-duplicate shard ids.
pub(crate) fn sorted<I, S>(ids: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut v: Vec<String> = ids.into_iter().map(Into::into).collect();
    v.sort();
    v.dedup();
    v
}

/// The result of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
#[allow(clippy::large_enum_variant)] // a short-lived return value; boxing would only add an allocation per write
#[non_exhaustive]
pub enum WriteOutcome {
    /// The write happened; this is the lease as it now stands.
    Applied(Lease),
    /// The condition did not hold (someone else changed or deleted the lease).
    Conflict,
}

impl WriteOutcome {
    /// The written lease, if the write happened.
    pub fn applied(self) -> Option<Lease> {
        match self {
            WriteOutcome::Applied(l) => Some(l),
            WriteOutcome::Conflict => None,
        }
    }
}

/// Storage of leases with conditional writes (object-safe: used as `Arc<dyn LeaseStore>`).
///
/// Conditions are those of the Java KCL, so Java and Rust workers can share a table: a renew,
/// take, evict or checkpoint is conditioned on `leaseCounter` being what this worker last
/// saw (and on the owner, where it matters) and increments it; creation is conditioned on
/// the key not existing.
#[async_trait]
pub trait LeaseStore: Send + Sync + fmt::Debug {
    /// Create the lease table if it does not exist and wait until it is usable.
    async fn create_table_if_not_exists(&self) -> Result<(), LeaseStoreError>;

    /// Create `lease` unless a lease with its key exists. Returns false when it existed.
    async fn create_lease_if_not_exists(&self, lease: &Lease) -> Result<bool, LeaseStoreError>;

    /// Every lease in the table (a full, paginated scan). It may read eventually
    /// consistently (DynamoDB's default): a lease written a moment ago may show as it was.
    async fn list_leases(&self) -> Result<Vec<Lease>, LeaseStoreError>;

    /// Every lease in the table as it is now (a strongly consistent scan, at twice the read
    /// cost in DynamoDB): for the rare decision that must not act on an out-of-date listing
    /// (re-creating the lease of a closed shard). The default is [`list_leases`](Self::list_leases),
    /// right for a store whose listing is consistent.
    async fn list_leases_consistent(&self) -> Result<Vec<Lease>, LeaseStoreError> {
        self.list_leases().await
    }

    /// One lease, read consistently.
    async fn get_lease(&self, key: &str) -> Result<Option<Lease>, LeaseStoreError>;

    /// Increment the counter, if it is still `lease.counter` and, unless `lease` itself is
    /// in a hand-off, no graceful hand-off has begun (no `checkpointOwner`: the Java KCL 3.x
    /// condition, which is how an owner learns that the leader is moving its lease). Writes
    /// `lease.throughput` when it is set.
    async fn renew_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError>;

    /// Set the owner to `owner` and increment the counter, if it is still `lease.counter`.
    /// `ownerSwitchesSinceCheckpoint` grows by one when the owner changes from another worker.
    async fn take_lease(&self, lease: &Lease, owner: &str)
        -> Result<WriteOutcome, LeaseStoreError>;

    /// Remove the owner and increment the counter, if owner and counter are still those of `lease`.
    async fn evict_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError>;

    /// Write the checkpoint fields of `lease` (checkpoint, pending checkpoint and state,
    /// owner switches, child shard ids when non-empty, hash range when known, throughput when
    /// set) and increment
    /// the counter, if it is still `lease.counter` and, as for [`renew_lease`](Self::renew_lease),
    /// no hand-off has begun that `lease` does not know of (the Java KCL conditions a checkpoint
    /// on the counter only; this library's owners renew a lease only when no checkpoint wrote it
    /// lately, so a checkpoint is where they learn of a hand-off).
    async fn update_lease(&self, lease: &Lease) -> Result<WriteOutcome, LeaseStoreError>;

    /// Record the child shards of a lease, if it exists (the counter does not change).
    async fn update_child_shard_ids(
        &self,
        key: &str,
        child_shard_ids: &[String],
    ) -> Result<WriteOutcome, LeaseStoreError>;

    /// Delete a lease (unconditionally, as the Java KCL does; deleting a missing lease is fine).
    async fn delete_lease(&self, key: &str) -> Result<(), LeaseStoreError>;

    /// KCL 3.x `assignLease`: make `owner` the owner, end any hand-off and increment the
    /// counter, if the owner and the hand-off's outgoing owner are still those of `lease`
    /// (the counter is not a condition: a leader overrides a live owner, which learns it at
    /// its next write). Used by a leader, and by an outgoing owner completing a hand-off.
    async fn assign_lease(
        &self,
        lease: &Lease,
        owner: &str,
    ) -> Result<WriteOutcome, LeaseStoreError>;

    /// KCL 3.x graceful hand-off (started by a leader, a leaderless worker stealing, or a
    /// worker leaving): `to` becomes the owner and the current owner the `checkpointOwner`, the
    /// counter unchanged, if the owner is still that of `lease` and no hand-off is under way.
    async fn start_handoff(&self, lease: &Lease, to: &str)
        -> Result<WriteOutcome, LeaseStoreError>;

    /// The keys of the leases whose `leaseOwner` is `owner` (KCL 3.x discovery; in DynamoDB a
    /// query of the `LeaseOwnerToLeaseKeyIndex` index, which lags writes slightly). The default
    /// filters [`list_leases`](Self::list_leases).
    async fn lease_keys_owned_by(&self, owner: &str) -> Result<Vec<String>, LeaseStoreError> {
        Ok(self
            .list_leases()
            .await?
            .into_iter()
            .filter(|l| l.owner.as_deref() == Some(owner))
            .map(|l| l.key)
            .collect())
    }

    /// The store of this lease table's KCL 3.x fleet items (the leader's lock, the
    /// `Migration3.0` item, the workers' metrics rows), in the tables `config` names for the
    /// application `application`. `None` (the default) when this backend has none: the worker
    /// then runs the leaderless protocol only.
    fn fleet_store(
        &self,
        application: &str,
        config: &crate::fleet::FleetConfig,
    ) -> Option<std::sync::Arc<dyn crate::fleet::FleetStore>> {
        let _ = (application, config);
        None
    }

    /// Create the index [`lease_keys_owned_by`](Self::lease_keys_owned_by) needs, if missing,
    /// and say whether it is usable yet (KCL 3.x). The default has nothing to create.
    async fn create_owner_index_if_not_exists(&self) -> Result<bool, LeaseStoreError> {
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn in_memory_store_passes_the_contract() {
        crate::testing::contract::run(&super::InMemoryLeaseStore::new(), "").await;
    }
}

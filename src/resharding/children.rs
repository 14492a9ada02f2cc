//! The leases of a finished shard's children, created by the consumer that reached its end.

use crate::checkpoint::Checkpoint;
use crate::lease::{Lease, LeaseStore, LeaseStoreError, WriteOutcome};
use crate::retrieval::{ChildShard, IteratorPosition, RetrievalError, StreamClient};
use crate::stream::StreamIdentifier;

/// Why the leases of a finished shard's children were not (all) created; the consumer tries
/// again after the task backoff.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChildLeaseError {
    /// The lease table failed.
    #[error(transparent)]
    Store(#[from] LeaseStoreError),
    /// Asking the stream whether a merge parent still exists failed.
    #[error(transparent)]
    Stream(#[from] RetrievalError),
    /// The other parent of a merge child has no lease yet: the child must wait for it.
    #[error("merge parent {parent} of {child} has no lease yet")]
    MergeParentWithoutLease {
        /// The parent without a lease.
        parent: String,
        /// The merge child.
        child: String,
    },
    /// This worker's tenure of the finished shard's lease ended.
    #[error("the lease of {lease_key} was lost")]
    LeaseLost {
        /// The finished shard's lease.
        lease_key: String,
    },
    /// The finished shard's lease was deleted.
    #[error("the lease of {lease_key} no longer exists")]
    LeaseGone {
        /// The finished shard's lease.
        lease_key: String,
    },
}

/// Leases for the children a closed shard of `stream` reported at its end (always at
/// `TRIM_HORIZON`; keyed as `stream` keys its leases).
pub fn child_leases(stream: &StreamIdentifier, children: &[ChildShard]) -> Vec<Lease> {
    children
        .iter()
        .map(|c| {
            Lease::for_stream(stream.clone(), c.shard_id.clone(), Checkpoint::TrimHorizon)
                .with_parents(c.parent_shards.iter().cloned())
                .with_hash_key_range(c.hash_key_range)
        })
        .collect()
}

/// Create the leases of a finished shard's children (skipping existing ones) and record the
/// children on the parent lease `key` (a lease of `stream_id`, whose keys the children's and
/// the other parents' leases have too).
///
/// Nothing is created unless `holds()` (this tenure of `key` still holds: not lost, and not
/// expired on the local clock, see `LeaseCoordinator::holds`), asked right before each
/// create: a consumer whose worker stalled (a missing child lease may then mean "created,
/// processed, finished and cleaned up meanwhile", not "never created") would otherwise bring a
/// finished child back to life, to be processed all over again. While the tenure holds, `key`
/// is not at `SHARD_END`, so its children cannot have finished.
pub async fn create_child_leases(
    store: &dyn LeaseStore,
    stream: &dyn StreamClient,
    stream_id: &StreamIdentifier,
    key: &str,
    children: &[ChildShard],
    holds: &(dyn Fn() -> bool + Sync),
) -> Result<(), ChildLeaseError> {
    for child in child_leases(stream_id, children) {
        if store.get_lease(&child.key).await?.is_some() {
            continue;
        }
        // A merge child needs both parents' leases (or neither): if the other parent has no
        // lease yet, creating the child now could let it start before that parent is done.
        // Unless that parent is gone from the stream: it aged past retention with all its
        // records, so nothing of it is left to process (its lease, if it had one, was deleted
        // for that reason). The Java KCL waits here forever.
        for other in child
            .parent_shard_ids
            .iter()
            .filter(|p| stream_id.lease_key(p) != key)
        {
            if store
                .get_lease(&stream_id.lease_key(other))
                .await?
                .is_some()
            {
                continue;
            }
            let gone = stream
                .get_shard_iterator(other, &IteratorPosition::TrimHorizon)
                .await?
                .is_none();
            if !gone {
                return Err(ChildLeaseError::MergeParentWithoutLease {
                    parent: other.clone(),
                    child: child.key.clone(),
                });
            }
            tracing::info!(parent = %other, child = %child.key, "merge parent is gone from the stream (aged past retention): creating the child without waiting for it");
        }
        if !holds() {
            return Err(ChildLeaseError::LeaseLost {
                lease_key: key.to_string(),
            });
        }
        if store.create_lease_if_not_exists(&child).await? {
            tracing::info!(child = %child.key, parents = ?child.parent_shard_ids, "created child shard lease");
        }
    }
    if !children.is_empty() {
        let ids: Vec<String> = children.iter().map(|c| c.shard_id.clone()).collect();
        if store.update_child_shard_ids(key, &ids).await? == WriteOutcome::Conflict {
            return Err(ChildLeaseError::LeaseGone {
                lease_key: key.to_string(),
            });
        }
    }
    Ok(())
}

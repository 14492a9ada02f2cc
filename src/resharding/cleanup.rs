//! Clean-up of leases this worker holds whose shard needs no more processing.
//!
//! One pass lists the stream once, reads back the held leases that may go (finished, or no
//! longer listed), and deletes:
//!
//! * **a finished lease** (`SHARD_END`) once every child has a lease that started (its
//!   checkpoint moved off the initial position) — or whose absence is explained: the child
//!   shard is gone from the stream, or a descendant of it has a lease (it was processed and
//!   cleaned up) — and every parent lease is gone or finished. Children not recorded on the
//!   lease (`childShardIds` is empty when a Java KCL older than 2.3 wrote `SHARD_END`, or when
//!   the shard ended by other means) are looked up in the listing, as the Java KCL 2.3+ does,
//!   and recorded.
//! * **an orphaned lease**, whatever its checkpoint, whose shard is no longer listed: the shard
//!   aged past retention and was trimmed away with all its records, so nothing is left to
//!   process. This is safe because the listing is taken after the lease was read: the shard
//!   existed when its lease was created, so a shard missing from a later listing is gone.
//!
//! Nothing is deleted from an empty listing (a stream always has an open shard).
//!
//! Unlike the Java KCL, a parent lease that stays finished without being deleted (its holder
//! does not clean up) does not block the clean-up of its descendants forever, and a shard that
//! ended without recorded children is not kept (and renewed, and counted by the balancer)
//! until it ages out.

use crate::coordinator::LeaseCoordinator;
use crate::lease::{Lease, LeaseStoreError};
use crate::retrieval::{RetrievalError, Shard, StreamClient};
use crate::stream::StreamIdentifier;
use std::collections::{BTreeMap, BTreeSet};

/// Why a clean-up pass stopped early (the next pass tries again).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CleanupError {
    /// The lease table failed.
    #[error(transparent)]
    Store(#[from] LeaseStoreError),
    /// Listing the stream failed.
    #[error(transparent)]
    Stream(#[from] RetrievalError),
}

/// Why a held lease is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Keep(String),
    Finished,
    Trimmed,
}

/// One clean-up pass over the leases of `stream_id` this worker holds (`stream` reads that
/// stream). Returns the deleted keys.
///
/// Which held leases may go is judged first from this worker's own view of them (it writes
/// their checkpoints, so it knows which are finished) and the listing; only those are read
/// back from the table. An idle worker's pass is one listing and no lease-table request, not
/// one read per held lease per pass (which cost one extra request per lease per minute).
pub(crate) async fn cleanup_pass(
    coordinator: &LeaseCoordinator,
    stream: &dyn StreamClient,
    stream_id: &StreamIdentifier,
) -> Result<Vec<String>, CleanupError> {
    let store = coordinator.store();
    let me = coordinator.worker_id().to_string();
    let lease_stream = stream_id.is_multi_stream().then_some(stream_id);
    // Held before the listing is taken (see the module docs).
    let mut held: Vec<Lease> = Vec::new();
    for key in coordinator.held_keys() {
        if let Some(lease) = coordinator.current(&key).await {
            if lease.multi_stream.as_ref().map(|m| &m.stream) == lease_stream {
                held.push(lease);
            }
        }
    }
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let shards = stream.list_shards().await?;
    if shards.is_empty() {
        return Ok(Vec::new());
    }
    let listing = Listing::new(&shards);
    let mut leased: Option<BTreeSet<String>> = None;
    let mut deleted = Vec::new();
    for local in held {
        let key = local.key.clone();
        let shard_id = local.shard_id().to_string();
        let listed = listing.has(&shard_id);
        if listed && !local.checkpoint.is_shard_end() {
            continue;
        }
        let mut lease = match store.get_lease(&key).await? {
            None if local.checkpoint.is_shard_end() => {
                coordinator.forget(&key);
                continue;
            }
            Some(stored) if stored.is_owned_by(&me) => stored,
            None | Some(_) => continue,
        };
        let verdict = if !listed {
            Verdict::Trimmed
        } else if !lease.checkpoint.is_shard_end() {
            continue;
        } else {
            if lease.child_shard_ids.is_empty() {
                let children = listing.children(&shard_id);
                if !children.is_empty() {
                    if let Err(e) = store.update_child_shard_ids(&key, &children).await {
                        tracing::debug!(lease_key = %key, error = %e, "could not record child shards");
                    }
                    lease.child_shard_ids = children;
                }
            }
            finished_verdict(coordinator, stream_id, &lease, &listing, &mut leased).await?
        };
        match verdict {
            Verdict::Keep(why) => {
                tracing::debug!(lease_key = %key, %why, "finished lease kept for now");
            }
            Verdict::Finished | Verdict::Trimmed => {
                coordinator.forget(&key);
                store.delete_lease(&key).await?;
                if verdict == Verdict::Finished {
                    tracing::info!(lease_key = %key, children = ?lease.child_shard_ids, "deleted finished lease: its children have started");
                } else {
                    tracing::info!(lease_key = %key, checkpoint = %lease.checkpoint, "deleted lease of a shard no longer in the stream (aged past retention)");
                }
                deleted.push(key);
            }
        }
    }
    Ok(deleted)
}

async fn finished_verdict(
    coordinator: &LeaseCoordinator,
    stream_id: &StreamIdentifier,
    lease: &Lease,
    listing: &Listing<'_>,
    leased: &mut Option<BTreeSet<String>>,
) -> Result<Verdict, CleanupError> {
    let store = coordinator.store();
    if lease.child_shard_ids.is_empty() {
        return Ok(Verdict::Keep("the stream lists no children".into()));
    }
    for child in &lease.child_shard_ids {
        match store.get_lease(&stream_id.lease_key(child)).await? {
            Some(c) if !c.checkpoint.is_initial_position() => {}
            Some(_) => return Ok(Verdict::Keep(format!("child {child} has not started"))),
            None if !listing.has(child) => {}
            None => {
                if leased.is_none() {
                    // Shard ids of this stream's leases.
                    let lease_stream = stream_id.is_multi_stream().then_some(stream_id);
                    let ids = store
                        .list_leases()
                        .await?
                        .into_iter()
                        .filter(|l| l.multi_stream.as_ref().map(|m| &m.stream) == lease_stream)
                        .map(|l| l.shard_id().to_string());
                    *leased = Some(ids.collect());
                }
                let table = leased.as_ref().expect("just listed");
                if !listing.descendants(child).iter().any(|d| table.contains(d)) {
                    return Ok(Verdict::Keep(format!("child {child} has no lease yet")));
                }
            }
        }
    }
    for parent in &lease.parent_shard_ids {
        match store.get_lease(&stream_id.lease_key(parent)).await? {
            Some(p) if !p.checkpoint.is_shard_end() => {
                return Ok(Verdict::Keep(format!("parent {parent} is not finished")));
            }
            _ => {}
        }
    }
    Ok(Verdict::Finished)
}

/// The stream's shards by id, with their children.
struct Listing<'a> {
    by_id: BTreeMap<&'a str, &'a Shard>,
    children: BTreeMap<String, Vec<String>>,
}

impl<'a> Listing<'a> {
    fn new(shards: &'a [Shard]) -> Self {
        let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in shards {
            for p in s.parents() {
                children.entry(p).or_default().push(s.shard_id.clone());
            }
        }
        for c in children.values_mut() {
            c.sort();
        }
        Listing {
            by_id: shards.iter().map(|s| (s.shard_id.as_str(), s)).collect(),
            children,
        }
    }

    fn has(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Listed shards whose parent or adjacent parent is `id`.
    fn children(&self, id: &str) -> Vec<String> {
        self.children.get(id).cloned().unwrap_or_default()
    }

    /// Every listed descendant of `id`.
    fn descendants(&self, id: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo = self.children(id);
        while let Some(c) = todo.pop() {
            if out.insert(c.clone()) {
                todo.extend(self.children(&c));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::coordinator::CoordinatorConfig;
    use crate::lease::{InMemoryLeaseStore, Lease};
    use crate::retrieval::InMemoryStream;
    use std::sync::Arc;
    use std::time::Duration;

    const S0: &str = "shardId-000000000000";
    const S1: &str = "shardId-000000000001";
    const S2: &str = "shardId-000000000002";
    const S3: &str = "shardId-000000000003";

    fn seq(n: u64) -> Checkpoint {
        Checkpoint::sequence(n.to_string(), 0).unwrap()
    }

    fn lease(key: &str, cp: Checkpoint, parents: &[&str], children: &[&str]) -> Lease {
        let mut l = Lease::new(key, cp).with_parents(parents.iter().copied());
        l.child_shard_ids = children.iter().map(|c| c.to_string()).collect();
        l
    }

    /// A coordinator over `leases` that took every unowned one.
    async fn holding(leases: Vec<Lease>) -> (InMemoryLeaseStore, LeaseCoordinator) {
        let store = InMemoryLeaseStore::new();
        store.with_table(|t| {
            for l in leases {
                t.insert(l.key.clone(), l);
            }
        });
        let mut cfg = CoordinatorConfig::new("me", Duration::from_secs(10));
        cfg.rng_seed = Some(1);
        let c = LeaseCoordinator::new(Arc::new(store.clone()), cfg);
        c.take_round().await.unwrap();
        (store, c)
    }

    async fn clean(c: &LeaseCoordinator, stream: &InMemoryStream) {
        cleanup_pass(c, stream, &StreamIdentifier::single("s"))
            .await
            .unwrap();
    }

    fn keys(store: &InMemoryLeaseStore) -> Vec<String> {
        store.snapshot().into_keys().collect()
    }

    /// Shard 0 split into 1 and 2; its `SHARD_END` was written by a Java KCL older than 2.3,
    /// which did not record the children.
    #[tokio::test(start_paused = true)]
    async fn a_finished_lease_without_recorded_children_is_deleted_once_they_started() {
        let stream = InMemoryStream::new("s", 1);
        stream.split(S0, 1 << 127).unwrap();
        let (store, c) = holding(vec![
            lease(S0, Checkpoint::ShardEnd, &[], &[]),
            lease(S1, seq(5), &[S0], &[]),
            lease(S2, Checkpoint::TrimHorizon, &[S0], &[]),
        ])
        .await;
        clean(&c, &stream).await;
        assert!(store.snapshot().contains_key(S0), "S2 has not started yet");
        store.with_table(|t| t.get_mut(S2).unwrap().checkpoint = seq(9));
        clean(&c, &stream).await;
        assert_eq!(keys(&store), vec![S1.to_string(), S2.to_string()]);
        assert!(!c.held_keys().contains(S0));
    }

    /// Shard 0 split long ago and aged past retention: the listing no longer has it.
    #[tokio::test(start_paused = true)]
    async fn leases_of_shards_trimmed_from_the_stream_are_deleted() {
        let stream = InMemoryStream::new("s", 2);
        let (_a, _b) = stream.split(S0, 1 << 126).unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        stream.trim_records_older_than(Duration::from_secs(30));
        assert!(stream.shards().iter().all(|s| s.shard_id != S0));
        let (store, c) = holding(vec![
            // Finished, children never recorded; the shard aged out of the stream.
            lease(S0, Checkpoint::ShardEnd, &[], &[]),
            // Open shard 1: kept, whatever its checkpoint.
            lease(S1, Checkpoint::TrimHorizon, &[], &[]),
        ])
        .await;
        clean(&c, &stream).await;
        assert_eq!(keys(&store), vec![S1.to_string()]);
    }

    /// The parent's lease is finished but stays (its holder, an old Java KCL, never deletes
    /// it): the child's finished lease must not be kept forever because of it.
    #[tokio::test(start_paused = true)]
    async fn a_finished_parent_that_stays_does_not_block_its_children_forever() {
        let stream = InMemoryStream::new("s", 1);
        let (a, _b) = stream.split(S0, 1 << 127).unwrap();
        let (c1, c2) = stream.split(&a, 1 << 126).unwrap();
        let mut parent = lease(S0, Checkpoint::ShardEnd, &[], &[]);
        parent.owner = Some("old-java".into());
        parent.counter = 7;
        let (store, c) = holding(vec![
            parent,
            lease(&a, Checkpoint::ShardEnd, &[S0], &[&c1, &c2]),
            lease(S2, seq(3), &[S0], &[]),
            lease(&c1, seq(1), &[&a], &[]),
            lease(&c2, seq(1), &[&a], &[]),
        ])
        .await;
        assert!(!c.held_keys().contains(S0));
        clean(&c, &stream).await;
        assert!(!store.snapshot().contains_key(&a), "{:?}", keys(&store));
        assert!(store.snapshot().contains_key(S0));
    }

    /// Nothing with records left to process is deleted: open shards, finished shards whose
    /// children have not started, and a parent whose child lease is missing without any sign
    /// that the child was processed.
    #[tokio::test(start_paused = true)]
    async fn leases_with_work_left_are_kept() {
        let stream = InMemoryStream::new("s", 2);
        stream.split(S0, 1 << 126).unwrap();
        let before = vec![
            lease(S0, Checkpoint::ShardEnd, &[], &[]),
            lease(S1, seq(4), &[], &[]),
            lease(S2, Checkpoint::TrimHorizon, &[S0], &[]),
        ];
        let (store, c) = holding(before).await;
        clean(&c, &stream).await;
        assert_eq!(keys(&store), vec![S0, S1, S2]);
        // S3 (the other child) has no lease and no leased descendant: S0 stays.
        store.with_table(|t| {
            t.get_mut(S2).unwrap().checkpoint = seq(8);
        });
        clean(&c, &stream).await;
        assert!(store.snapshot().contains_key(S0));
        assert!(!store.snapshot().contains_key(S3));
    }

    /// A pass over leases with work left (listed, not finished) reads nothing from the lease
    /// table: it once read every held lease back, one request per lease per pass (one per
    /// lease per minute at the default interval, on top of the renewals).
    #[tokio::test(start_paused = true)]
    async fn a_pass_over_unfinished_leases_makes_no_lease_table_request() {
        use crate::testing::{CallCounter, ObservedLeaseStore};
        let stream = InMemoryStream::new("s", 3);
        let (inner, _) = holding(vec![]).await;
        for key in [S0, S1, S2] {
            inner.with_table(|t| {
                t.insert(key.into(), lease(key, seq(4), &[], &[]));
            });
        }
        let store = Arc::new(ObservedLeaseStore::new(
            Arc::new(inner.clone()),
            CallCounter::default(),
        ));
        let mut cfg = CoordinatorConfig::new("me", Duration::from_secs(10));
        cfg.rng_seed = Some(1);
        let c = LeaseCoordinator::new(store.clone(), cfg);
        c.take_round().await.unwrap();
        assert_eq!(c.held_keys().len(), 3);
        let before = store.hooks().counts();
        clean(&c, &stream).await;
        assert_eq!(
            store.hooks().counts(),
            before,
            "a clean-up pass made lease-table calls"
        );
        assert_eq!(keys(&inner), vec![S0, S1, S2]);
    }
}

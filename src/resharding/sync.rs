//! Shard discovery: create leases for shards that have none.
//!
//! * **Empty lease table**: a lease for every shard the initial position covers (all shards
//!   for `TRIM_HORIZON`/`AT_TIMESTAMP`, open shards only for `LATEST`), at the initial position.
//!   Children of closed shards wait for their parents.
//! * **Non-empty table**: for each open shard without a lease, walk its ancestry. An open shard
//!   that descends from a leased shard gets no lease (its parent's worker creates it at shard
//!   end); the ancestors it needs do (at `TRIM_HORIZON`, or the initial position for the
//!   unrelated half of a merge). An open shard with no leased ancestry starts at the initial
//!   position. With `TRIM_HORIZON`/`AT_TIMESTAMP` whole unleased ancestries are leased from
//!   their roots.
//!
//! Leases are created oldest first (by starting sequence number), each with
//! `create_lease_if_not_exists`, so concurrent syncs by several workers are harmless; in waves
//! of up to [`SYNC_CREATE_CONCURRENCY`] concurrent writes, a parent's wave before its
//! children's. The work is linear in the number of shards (one child index per sync).

use crate::checkpoint::Checkpoint;
use crate::config::InitialPosition;
use crate::lease::{Lease, LeaseStore, LeaseStoreError, StreamShard};
use crate::retrieval::{RetrievalError, Shard, StreamClient};
use crate::stream::StreamIdentifier;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

/// A shard sync failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardSyncError {
    /// Listing shards failed.
    #[error(transparent)]
    Stream(#[from] RetrievalError),
    /// The lease table failed.
    #[error(transparent)]
    Store(#[from] LeaseStoreError),
}

/// The checkpoint a new lease gets for an initial position.
pub fn initial_checkpoint(position: InitialPosition) -> Checkpoint {
    match position {
        InitialPosition::TrimHorizon => Checkpoint::TrimHorizon,
        InitialPosition::Latest => Checkpoint::Latest,
        InitialPosition::AtTimestamp(_) => Checkpoint::AtTimestamp,
    }
}

fn new_lease(shard: &Shard, checkpoint: Checkpoint) -> Lease {
    Lease::new(shard.shard_id.clone(), checkpoint)
        .with_parents(shard.parents())
        .with_hash_key_range(shard.hash_key_range)
}

/// Which leases to create, given every shard, the keys that have leases, and the position.
pub fn leases_to_create(
    shards: &[Shard],
    existing: &BTreeSet<String>,
    position: InitialPosition,
) -> Vec<Lease> {
    let by_id: BTreeMap<&str, &Shard> = shards.iter().map(|s| (s.shard_id.as_str(), s)).collect();
    let mut out: BTreeMap<String, Lease> = BTreeMap::new();
    if existing.is_empty() {
        for s in shards {
            if position == InitialPosition::Latest && s.is_closed() {
                continue;
            }
            out.insert(
                s.shard_id.clone(),
                new_lease(s, initial_checkpoint(position)),
            );
        }
    } else {
        let mut walk = Walk {
            by_id: &by_id,
            existing,
            position,
            descendant: BTreeMap::new(),
            should_create: BTreeSet::new(),
            new: &mut out,
        };
        for s in shards
            .iter()
            .filter(|s| !s.is_closed() && !existing.contains(&s.shard_id))
        {
            let inconsistent = s
                .parents()
                .iter()
                .any(|p| by_id.get(p.as_str()).is_some_and(|ps| !ps.is_closed()));
            if inconsistent {
                tracing::warn!(shard_id = %s.shard_id, "open shard with an open parent; skipping it until the stream is consistent");
                continue;
            }
            if !walk.is_descendant(&s.shard_id) {
                walk.new.insert(
                    s.shard_id.clone(),
                    new_lease(s, initial_checkpoint(position)),
                );
            }
        }
    }
    let mut leases: Vec<Lease> = out.into_values().collect();
    let start = |l: &Lease| {
        by_id
            .get(l.key.as_str())
            .map(|s| s.starting_sequence_number.clone())
            .unwrap_or_default()
    };
    leases.sort_by(|a, b| {
        let (sa, sb) = (start(a), start(b));
        (sa.len(), sa, &a.key).cmp(&(sb.len(), sb, &b.key))
    });
    leases
}

struct Walk<'a> {
    by_id: &'a BTreeMap<&'a str, &'a Shard>,
    existing: &'a BTreeSet<String>,
    position: InitialPosition,
    descendant: BTreeMap<String, bool>,
    should_create: BTreeSet<String>,
    new: &'a mut BTreeMap<String, Lease>,
}

impl Walk<'_> {
    /// The Java KCL's `checkIfDescendantAndAddNewLeasesForAncestors`.
    fn is_descendant(&mut self, shard_id: &str) -> bool {
        if let Some(&known) = self.descendant.get(shard_id) {
            return known;
        }
        let Some(&shard) = self.by_id.get(shard_id) else {
            return false;
        };
        let mut result = false;
        if self.existing.contains(shard_id) {
            result = true;
        } else {
            let parents: Vec<String> = shard
                .parents()
                .into_iter()
                .filter(|p| self.by_id.contains_key(p.as_str()))
                .collect();
            let mut descendant_parents = BTreeSet::new();
            for p in &parents {
                if self.is_descendant(p) || self.should_create.contains(p) {
                    result = true;
                    descendant_parents.insert(p.clone());
                }
            }
            if result {
                for p in &parents {
                    if self.existing.contains(p) {
                        continue;
                    }
                    let create = self.new.contains_key(p)
                        || self.should_create.contains(p)
                        || !descendant_parents.contains(p);
                    if !create {
                        continue;
                    }
                    let checkpoint = if descendant_parents.contains(p)
                        && !matches!(self.position, InitialPosition::AtTimestamp(_))
                    {
                        Checkpoint::TrimHorizon
                    } else {
                        initial_checkpoint(self.position)
                    };
                    let parent = self.by_id[p.as_str()];
                    self.new.insert(p.clone(), new_lease(parent, checkpoint));
                }
            } else if matches!(
                self.position,
                InitialPosition::TrimHorizon | InitialPosition::AtTimestamp(_)
            ) {
                self.should_create.insert(shard_id.to_string());
            }
        }
        self.descendant.insert(shard_id.to_string(), result);
        result
    }
}

/// List leases and shards, and create the missing leases. Returns how many were created.
/// Equivalent to [`sync_shards_within`] with no bound on the age of what was listed.
pub async fn sync_shards(
    stream: &dyn StreamClient,
    store: &dyn LeaseStore,
    position: InitialPosition,
) -> Result<usize, ShardSyncError> {
    sync_shards_within(stream, store, position, Duration::MAX).await
}

/// How many times [`sync_shards_within`] lists again after its listing went stale.
const SYNC_REFRESHES: usize = 3;

/// List leases and shards, and create the missing leases, never from a listing older than
/// `max_age` (the worker's failover time, in the scheduler): past it, list again (a few times;
/// the next periodic sync goes on). Returns how many leases were created.
///
/// A lease may be deleted (its shard finished, its children started) right after a listing
/// said it was missing, so a sync must not act on an old listing: a worker that stalls during
/// its sync would otherwise re-create leases of shards that were created, processed and
/// cleaned up meanwhile, and those shards would be processed all over again. Hence:
///
/// * Leases are listed first. The other way round, a stall between the two calls shows shards
///   as they were before it (a shard since closed, finished and cleaned up looks open and
///   unleased: the sync leases its finished ancestors at `TRIM_HORIZON`). With leases first, a
///   stale lease list only has leases deleted since (counted as existing: nothing created) and
///   lacks leases created since (children of shards it lists: descendants, not created).
/// * A lease for a closed shard is created only if, listed again (consistently), none of its
///   descendants has a lease (they would, had it been processed), its descendants taken from
///   the shards listed again after that lease listing: a stalled listing may hold only leases
///   of shards newer than the first shard listing (a child that merged or split since, its
///   parents finished and cleaned up meanwhile).
/// * Creation stops once the listing is older than `max_age`.
pub async fn sync_shards_within(
    stream: &dyn StreamClient,
    store: &dyn LeaseStore,
    position: InitialPosition,
    max_age: Duration,
) -> Result<usize, ShardSyncError> {
    sync_stream_shards_within(stream, None, store, position, max_age).await
}

/// [`sync_shards_within`] for one stream of the table: `multi_stream` names it in a
/// multi-stream application (only its leases count, by shard id, and the leases created are
/// its own: keys `<stream>:<shard id>`, the `streamName`/`shardId` attributes); `None` is a
/// single-stream table, whose keys are the shard ids.
pub async fn sync_stream_shards_within(
    stream: &dyn StreamClient,
    multi_stream: Option<&StreamIdentifier>,
    store: &dyn LeaseStore,
    position: InitialPosition,
    max_age: Duration,
) -> Result<usize, ShardSyncError> {
    let mut created = 0;
    for _ in 0..SYNC_REFRESHES {
        let listed = Instant::now();
        let leases = of_stream(store.list_leases().await?, multi_stream);
        let existing: BTreeSet<String> = leases.iter().map(|l| l.shard_id().to_string()).collect();
        let finished: BTreeSet<&str> = leases
            .iter()
            .filter(|l| l.checkpoint.is_shard_end())
            .map(|l| l.shard_id())
            .collect();
        let shards = stream.list_shards().await?;
        let mut to_create = leases_to_create(&shards, &existing, position);
        to_create.extend(stranded_children(&shards, &existing, &finished));
        let closed: BTreeSet<&str> = shards
            .iter()
            .filter(|s| s.is_closed())
            .map(|s| s.shard_id.as_str())
            .collect();
        if to_create.iter().any(|l| closed.contains(l.key.as_str())) {
            let now = leased(store, multi_stream).await?;
            // Descendants from the shards listed after `now` too: `now` may be much newer than
            // `shards` (the call stalled), and the only leased descendants may be shards that
            // `shards` lacks (a merge or split since, whose parents finished and were cleaned
            // up meanwhile). Shards closed since count as closed.
            let shards_now = stream.list_shards().await?;
            let closed: BTreeSet<&str> = closed
                .into_iter()
                .chain(
                    shards_now
                        .iter()
                        .filter(|s| s.is_closed())
                        .map(|s| s.shard_id.as_str()),
                )
                .collect();
            let children = ChildIndex::new(shards.iter().chain(&shards_now));
            to_create.retain(|l| {
                if !closed.contains(l.key.as_str()) {
                    return true;
                }
                // Leased since the first listing: it needs no lease, and one created later,
                // after it finished and was cleaned up, would bring it back.
                if now.contains(&l.key) {
                    return false;
                }
                let done = children.leased_descendant(&l.key, &now).inspect(|d| {
                    tracing::info!(lease_key = %l.key, descendant = %d, "not creating a lease for a closed shard whose descendant has one: it was processed already");
                });
                done.is_none()
            });
        }
        let to_create = to_create
            .into_iter()
            .map(|l| in_stream(l, multi_stream))
            .collect();
        let (n, stale) = create_in_waves(store, to_create, listed, max_age).await?;
        created += n;
        if !stale {
            break;
        }
        tracing::info!(age = ?listed.elapsed(), "shard sync listing went stale; listing again");
    }
    Ok(created)
}

/// Leases for shards that nothing else will create: each has no lease, and every parent
/// still listed has a lease at `SHARD_END` (at least one does). Such a child's lease should
/// have come from its parent's shard end, which creates the children before it records
/// `SHARD_END`; a Java KCL older than 2.3 did it the other way round (checkpoint, then a shard
/// sync), so a worker that died in between left a finished parent and no child, which the
/// Java KCL 2.3+ never repairs (the child's records are never processed, and the parent is
/// never cleaned up). Created at `TRIM_HORIZON`, as at shard end. A closed one among them is
/// created only if none of its descendants has a lease (see [`sync_shards_within`]): had it
/// been processed and cleaned up, they would.
fn stranded_children(
    shards: &[Shard],
    existing: &BTreeSet<String>,
    finished: &BTreeSet<&str>,
) -> Vec<Lease> {
    let listed: BTreeSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
    shards
        .iter()
        .filter(|s| !existing.contains(&s.shard_id))
        .filter(|s| {
            let parents: Vec<String> = s
                .parents()
                .into_iter()
                .filter(|p| listed.contains(p.as_str()))
                .collect();
            !parents.is_empty() && parents.iter().all(|p| finished.contains(p.as_str()))
        })
        .map(|s| {
            tracing::info!(shard_id = %s.shard_id, parents = ?s.parents(), "creating the lease of a child shard whose parents finished without creating it (a Java KCL before 2.3 left them so)");
            new_lease(s, Checkpoint::TrimHorizon)
        })
        .collect()
}

/// The keys of the leases as they are now: a consistent listing. An eventually consistent one
/// may lack the descendants of a closed shard (created a moment ago) and the shard's own
/// lease too (deleted a moment ago, once they started): the shard would be leased again and
/// processed all over again.
async fn leased(
    store: &dyn LeaseStore,
    multi_stream: Option<&StreamIdentifier>,
) -> Result<BTreeSet<String>, LeaseStoreError> {
    Ok(
        of_stream(store.list_leases_consistent().await?, multi_stream)
            .iter()
            .map(|l| l.shard_id().to_string())
            .collect(),
    )
}

/// The leases of one stream: those of `multi_stream`, or with `None` those of no named
/// stream (a single-stream table's).
fn of_stream(leases: Vec<Lease>, multi_stream: Option<&StreamIdentifier>) -> Vec<Lease> {
    leases
        .into_iter()
        .filter(|l| l.multi_stream.as_ref().map(|m| &m.stream) == multi_stream)
        .collect()
}

/// `lease` (keyed by its shard id) as a lease of `multi_stream`, when it names one.
fn in_stream(lease: Lease, multi_stream: Option<&StreamIdentifier>) -> Lease {
    match multi_stream {
        None => lease,
        Some(id) => {
            let shard_id = lease.key.clone();
            Lease {
                key: id.lease_key(&shard_id),
                multi_stream: Some(StreamShard {
                    stream: id.clone(),
                    shard_id,
                }),
                ..lease
            }
        }
    }
}

/// How many `create_lease_if_not_exists` calls a sync has in flight at once. Creating the
/// leases of a new 10,000-shard application one after the other would take 10,000 round trips
/// before the first record; in waves of this many, about 1 %.
pub const SYNC_CREATE_CONCURRENCY: usize = 64;

/// Creates `leases` (sorted oldest first), a parent always before its children: wave `k` holds
/// the leases with `k` ancestors among `leases`, and starts when wave `k − 1` is written (a
/// child lease seen without its parent's would count the parent as finished). Within a wave,
/// chunks of [`SYNC_CREATE_CONCURRENCY`] calls run at once. Stops once the listing is older than
/// `max_age`. Returns (leases created, whether it stopped because the listing went stale).
async fn create_in_waves(
    store: &dyn LeaseStore,
    leases: Vec<Lease>,
    listed: Instant,
    max_age: Duration,
) -> Result<(usize, bool), ShardSyncError> {
    let mut depth: BTreeMap<String, usize> = BTreeMap::new();
    let mut waves: Vec<Vec<Lease>> = Vec::new();
    // Oldest first: a lease's parents among `leases` come before it.
    for lease in leases {
        let d = lease
            .parent_shard_ids
            .iter()
            .filter_map(|p| depth.get(p))
            .map(|d| d + 1)
            .max()
            .unwrap_or(0);
        // Parents are bare shard ids, in a multi-stream table too.
        depth.insert(lease.shard_id().to_string(), d);
        if waves.len() <= d {
            waves.resize_with(d + 1, Vec::new);
        }
        waves[d].push(lease);
    }
    let mut created = 0;
    for wave in waves {
        if listed.elapsed() > max_age {
            return Ok((created, true));
        }
        for chunk in wave.chunks(SYNC_CREATE_CONCURRENCY) {
            if listed.elapsed() > max_age {
                return Ok((created, true));
            }
            let outcomes = futures::future::join_all(
                chunk.iter().map(|l| store.create_lease_if_not_exists(l)),
            )
            .await;
            for (lease, outcome) in chunk.iter().zip(outcomes) {
                if outcome? {
                    tracing::info!(lease_key = %lease.key, checkpoint = %lease.checkpoint, parents = ?lease.parent_shard_ids, "created lease for shard");
                    created += 1;
                }
            }
        }
    }
    Ok((created, false))
}

/// The children of every shard of a listing, indexed once per sync (a lookup per closed shard
/// would make the sync quadratic in the number of shards).
struct ChildIndex<'a> {
    children: BTreeMap<&'a str, BTreeSet<&'a str>>,
}

impl<'a> ChildIndex<'a> {
    /// The index of `shards` (a shard listed twice counts once).
    fn new(shards: impl IntoIterator<Item = &'a Shard>) -> Self {
        let mut children: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for s in shards {
            for p in s
                .parent_shard_id
                .iter()
                .chain(s.adjacent_parent_shard_id.iter())
            {
                children
                    .entry(p.as_str())
                    .or_default()
                    .insert(s.shard_id.as_str());
            }
        }
        ChildIndex { children }
    }

    /// A descendant of `shard_id` that has a lease in `leased`, if any.
    fn leased_descendant(&self, shard_id: &str, leased: &BTreeSet<String>) -> Option<&'a str> {
        let mut todo: Vec<&str> = vec![shard_id];
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        while let Some(id) = todo.pop() {
            for &child in self.children.get(id).into_iter().flatten() {
                if leased.contains(child) {
                    return Some(child);
                }
                if seen.insert(child) {
                    todo.push(child);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::HashKeyRange;
    use crate::resharding::children::child_leases;
    use crate::retrieval::ChildShard;

    fn shard(i: u32, parents: &[u32], closed: bool) -> Shard {
        Shard {
            shard_id: format!("s{i}"),
            parent_shard_id: parents.first().map(|p| format!("s{p}")),
            adjacent_parent_shard_id: parents.get(1).map(|p| format!("s{p}")),
            hash_key_range: HashKeyRange { start: 0, end: 1 },
            starting_sequence_number: (100 * (i + 1)).to_string(),
            ending_sequence_number: closed.then(|| (100 * (i + 1) + 50).to_string()),
        }
    }

    /// A stream that has resharded (the example of the Java KCL's shard sync documentation):
    /// shards 0..5; 6 = 0+1, 7 = 2+3, 8 = 6+7 are merges, 9 and 10 split from 5.
    fn example() -> Vec<Shard> {
        vec![
            shard(0, &[], true),
            shard(1, &[], true),
            shard(2, &[], true),
            shard(3, &[], true),
            shard(4, &[], false),
            shard(5, &[], true),
            shard(6, &[0, 1], true),
            shard(7, &[2, 3], true),
            shard(8, &[6, 7], false),
            shard(9, &[5], false),
            shard(10, &[5], false),
        ]
    }

    fn keys(leases: &[Lease]) -> Vec<(String, Checkpoint)> {
        leases
            .iter()
            .map(|l| (l.key.clone(), l.checkpoint.clone()))
            .collect()
    }

    fn existing(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reference_example_latest_creates_the_unrelated_merge_parent() {
        let got = leases_to_create(
            &example(),
            &existing(&["s4", "s5", "s7"]),
            InitialPosition::Latest,
        );
        assert_eq!(keys(&got), vec![("s6".into(), Checkpoint::Latest)]);
        assert_eq!(got[0].parent_shard_ids, vec!["s0", "s1"]);
    }

    #[test]
    fn reference_example_trim_horizon_creates_the_roots() {
        let got = leases_to_create(
            &example(),
            &existing(&["s4", "s5", "s7"]),
            InitialPosition::TrimHorizon,
        );
        assert_eq!(
            keys(&got),
            vec![
                ("s0".into(), Checkpoint::TrimHorizon),
                ("s1".into(), Checkpoint::TrimHorizon)
            ]
        );
        let ts = InitialPosition::AtTimestamp(std::time::SystemTime::UNIX_EPOCH);
        let got = leases_to_create(&example(), &existing(&["s4", "s5", "s7"]), ts);
        assert_eq!(
            keys(&got),
            vec![
                ("s0".into(), Checkpoint::AtTimestamp),
                ("s1".into(), Checkpoint::AtTimestamp)
            ]
        );
    }

    #[test]
    fn empty_table_leases_every_shard_or_only_open_ones_for_latest() {
        let all = leases_to_create(&example(), &BTreeSet::new(), InitialPosition::TrimHorizon);
        assert_eq!(all.len(), 11);
        assert_eq!(all[0].key, "s0", "oldest first");
        assert_eq!(
            all.iter().find(|l| l.key == "s8").unwrap().parent_shard_ids,
            vec!["s6", "s7"]
        );
        let latest = leases_to_create(&example(), &BTreeSet::new(), InitialPosition::Latest);
        assert_eq!(
            latest.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(),
            vec!["s4", "s8", "s9", "s10"]
        );
    }

    #[test]
    fn a_new_open_shard_without_ancestry_starts_at_the_initial_position() {
        let mut shards = example();
        shards.push(shard(11, &[], false));
        let all: Vec<String> = shards
            .iter()
            .map(|s| s.shard_id.clone())
            .filter(|s| s != "s11")
            .collect();
        let existing: BTreeSet<String> = all.into_iter().collect();
        let got = leases_to_create(&shards, &existing, InitialPosition::Latest);
        assert_eq!(keys(&got), vec![("s11".into(), Checkpoint::Latest)]);
    }

    #[test]
    fn children_of_a_leased_parent_get_no_lease_from_sync() {
        let shards = vec![
            shard(0, &[], true),
            shard(1, &[0], false),
            shard(2, &[0], false),
        ];
        assert!(leases_to_create(&shards, &existing(&["s0"]), InitialPosition::Latest).is_empty());
    }

    /// A stream whose `list_shards` lets the world move on (`meanwhile`) before it answers
    /// with what it listed: the worker stalled during its sync.
    struct StallingStream {
        stream: crate::retrieval::InMemoryStream,
        meanwhile: Box<dyn Fn(&crate::retrieval::InMemoryStream) + Send + Sync>,
    }

    impl std::fmt::Debug for StallingStream {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("StallingStream")
        }
    }

    #[async_trait::async_trait]
    impl StreamClient for StallingStream {
        fn stream_name(&self) -> &str {
            "stalling"
        }

        async fn list_shards(&self) -> Result<Vec<Shard>, RetrievalError> {
            let listed = self.stream.list_shards().await?;
            (self.meanwhile)(&self.stream);
            Ok(listed)
        }

        async fn get_shard_iterator(
            &self,
            _: &str,
            _: &crate::retrieval::IteratorPosition,
        ) -> Result<Option<String>, RetrievalError> {
            unreachable!()
        }

        async fn get_records(
            &self,
            _: &str,
            _: &str,
            _: u32,
        ) -> Result<crate::retrieval::RecordBatch, RetrievalError> {
            unreachable!()
        }
    }

    const S0: &str = "shardId-000000000000";

    /// Leases of the children of `S0` after a split, as its consumer creates them.
    fn insert_children(store: &crate::lease::InMemoryLeaseStore, children: [&str; 2]) {
        store.with_table(|t| {
            for child in children {
                let l = Lease::new(child, Checkpoint::TrimHorizon).with_parents([S0]);
                t.insert(child.to_string(), l);
            }
        });
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_during_sync_does_not_resurrect_a_finished_shard() {
        // Simulation seed 46476 (before the lease table was read first): a worker paused
        // during its sync re-created the leases of long-finished shards at TRIM_HORIZON.
        let store = crate::lease::InMemoryLeaseStore::new();
        let s = store.clone();
        let stream = StallingStream {
            stream: crate::retrieval::InMemoryStream::new("s", 1),
            // Meanwhile S0 is split, processed to its end, its children leased, its lease deleted.
            meanwhile: Box::new(move |stream| {
                let (a, b) = stream.split(S0, 1 << 64).unwrap();
                insert_children(&s, [&a, &b]);
                s.with_table(|t| t.remove(S0));
            }),
        };
        let root = Lease::new(S0, Checkpoint::ShardEnd);
        store.with_table(|t| t.insert(root.key.clone(), root.clone()));
        let created = sync_shards(&stream, &store, InitialPosition::TrimHorizon)
            .await
            .unwrap();
        assert_eq!(created, 0);
        assert!(!store.snapshot().contains_key(S0));
    }

    /// A multi-stream sync counts only its stream's leases (by shard id: another stream's
    /// leases for the same shard ids do not make its own exist), creates its leases keyed
    /// `<stream>:<shard id>` with the stream attributes, parents before children, and leaves
    /// the other streams' leases alone.
    #[tokio::test(start_paused = true)]
    async fn a_multi_stream_sync_creates_its_streams_leases_only() {
        let ours = StreamIdentifier::multi("123456789012", "s", 1_700_000_000_000).unwrap();
        let theirs = StreamIdentifier::multi("123456789012", "s", 1_600_000_000_000).unwrap();
        let store = crate::lease::InMemoryLeaseStore::new();
        let stream = crate::retrieval::InMemoryStream::new("s", 1);
        let (a, b) = stream.split(S0, 1 << 64).unwrap();
        let others: Vec<Lease> = [S0, a.as_str(), b.as_str()]
            .into_iter()
            .map(|shard| Lease::for_stream(theirs.clone(), shard, Checkpoint::TrimHorizon))
            .chain([Lease::new(S0, Checkpoint::TrimHorizon)])
            .collect();
        store.with_table(|t| {
            for l in &others {
                t.insert(l.key.clone(), l.clone());
            }
        });
        // Records when each create starts and ends (the parent's is slow): a child's create
        // must not start before its parent's ended.
        struct Creates(crate::sync::Mutex<Vec<String>>);
        #[async_trait::async_trait]
        impl crate::testing::observe::LeaseStoreHooks for Creates {
            async fn before(
                &self,
                call: &crate::testing::observe::Call<'_>,
            ) -> Option<crate::testing::observe::Outcome> {
                if let crate::testing::observe::Args::Create(l) = call.args {
                    self.0.lock().push(format!("start {}", l.shard_id()));
                    if l.shard_id() == S0 {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                None
            }
            async fn after(
                &self,
                call: &crate::testing::observe::Call<'_>,
                _: &mut crate::testing::observe::Outcome,
            ) {
                if let crate::testing::observe::Args::Create(l) = call.args {
                    self.0.lock().push(format!("end {}", l.shard_id()));
                }
            }
        }
        let observed = crate::testing::observe::ObservedLeaseStore::new(
            std::sync::Arc::new(store.clone()),
            Creates(Default::default()),
        );
        let created = sync_stream_shards_within(
            &stream,
            Some(&ours),
            &observed,
            InitialPosition::TrimHorizon,
            Duration::MAX,
        )
        .await
        .unwrap();
        assert_eq!(created, 3, "{:?}", store.snapshot().keys());
        let order = observed.hooks().0.lock().clone();
        let at = |e: String| order.iter().position(|x| *x == e).unwrap();
        assert!(
            at(format!("end {S0}")) < at(format!("start {a}")),
            "a child's lease created before its parent's: {order:?}"
        );
        let table = store.snapshot();
        for l in &others {
            assert_eq!(&table[&l.key], l, "another stream's lease is untouched");
        }
        for shard in [S0, a.as_str(), b.as_str()] {
            let l = &table[&ours.lease_key(shard)];
            assert_eq!(l.shard_id(), shard);
            assert_eq!(l.multi_stream.as_ref().map(|m| &m.stream), Some(&ours));
        }
        assert_eq!(
            table[&ours.lease_key(&a)].parent_shard_ids,
            vec![S0.to_string()]
        );
        // Its own leases, found by shard id, are not created again.
        let again = sync_stream_shards_within(
            &stream,
            Some(&ours),
            &store,
            InitialPosition::TrimHorizon,
            Duration::MAX,
        )
        .await
        .unwrap();
        assert_eq!(again, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_lease_list_does_not_resurrect_a_finished_shard() {
        // Simulation seed 33446: a worker stalled in its first sync, after reading an empty
        // table; meanwhile the others leased, processed and cleaned up a closed shard.
        let store = crate::lease::InMemoryLeaseStore::new();
        let s = store.clone();
        let inner = crate::retrieval::InMemoryStream::new("s", 1);
        let (a, b) = inner.split(S0, 1 << 64).unwrap();
        let stream = StallingStream {
            stream: inner,
            meanwhile: Box::new(move |_| insert_children(&s, [&a, &b])),
        };
        let created = sync_shards(&stream, &store, InitialPosition::TrimHorizon)
            .await
            .unwrap();
        assert_eq!(
            created, 0,
            "the children existed; the closed parent was processed"
        );
        assert!(!store.snapshot().contains_key(S0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_descendant_check_sees_descendants_newer_than_the_shard_listing() {
        // Simulation seed 4101965: S0 split into a and b, a into c and d; a Java KCL 2.2 left
        // S0 at SHARD_END without children leases; a was leased as S0's stranded child,
        // processed and cleaned up, c and d have leases. A sync (leases listed, then shards)
        // finds a stranded again, closed: its consistent lease listing (the check for leased
        // descendants) stalls while c and d merge into e, finish and are cleaned up, and S0 is
        // cleaned up too. The listing then holds e's lease, but e is not among the shards
        // listed before the stall: the check found no leased descendant of a, and a was
        // leased and processed all over again.
        use crate::lease::InMemoryLeaseStore;
        use crate::retrieval::InMemoryStream;
        use crate::testing::observe::{Args, Call, LeaseStoreHooks, ObservedLeaseStore, Outcome};
        use std::sync::atomic::{AtomicBool, Ordering};

        struct Meanwhile {
            store: InMemoryLeaseStore,
            stream: InMemoryStream,
            merging: [String; 2],
            done: AtomicBool,
        }
        #[async_trait::async_trait]
        impl LeaseStoreHooks for Meanwhile {
            async fn before(&self, call: &Call<'_>) -> Option<Outcome> {
                if matches!(call.args, Args::ListConsistent)
                    && !self.done.swap(true, Ordering::SeqCst)
                {
                    let [c, d] = &self.merging;
                    let e = self.stream.merge(c, d).unwrap();
                    let child = Lease::new(e.as_str(), Checkpoint::TrimHorizon)
                        .with_parents([c.as_str(), d.as_str()]);
                    self.store.with_table(|t| {
                        t.insert(e.clone(), child);
                        for gone in [c.as_str(), d.as_str(), S0] {
                            t.remove(gone);
                        }
                    });
                }
                None
            }
        }

        let store = InMemoryLeaseStore::new();
        let stream = InMemoryStream::new("s", 1);
        let (a, b) = stream.split(S0, 1 << 64).unwrap();
        let (c, d) = stream.split(&a, 1 << 32).unwrap();
        store.with_table(|t| {
            t.insert(S0.to_string(), Lease::new(S0, Checkpoint::ShardEnd));
            t.insert(
                b.clone(),
                Lease::new(b.as_str(), Checkpoint::TrimHorizon).with_parents([S0]),
            );
            for child in [&c, &d] {
                let l = Lease::new(child.as_str(), Checkpoint::TrimHorizon).with_parents([&a]);
                t.insert(child.clone(), l);
            }
        });
        let observed = ObservedLeaseStore::new(
            std::sync::Arc::new(store.clone()),
            Meanwhile {
                store: store.clone(),
                stream: stream.clone(),
                merging: [c, d],
                done: AtomicBool::new(false),
            },
        );
        let created = sync_shards(&stream, &observed, InitialPosition::Latest)
            .await
            .unwrap();
        assert!(
            observed.hooks().done.load(Ordering::SeqCst),
            "the check ran"
        );
        assert_eq!(created, 0, "{:?}", store.snapshot().keys());
        assert!(
            !store.snapshot().contains_key(&a),
            "a was processed: not again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn children_of_a_parent_finished_without_creating_them_get_leases() {
        // Simulation (prehistory): a Java KCL before 2.3 checkpointed SHARD_END and died before
        // creating the children; nothing created them, so their records were never processed.
        let store = crate::lease::InMemoryLeaseStore::new();
        let stream = crate::retrieval::InMemoryStream::new("s", 1);
        let (a, b) = stream.split(S0, 1 << 64).unwrap();
        let parent = Lease::new(S0, Checkpoint::ShardEnd);
        store.with_table(|t| t.insert(parent.key.clone(), parent.clone()));
        let created = sync_shards(&stream, &store, InitialPosition::Latest)
            .await
            .unwrap();
        assert_eq!(created, 2);
        let table = store.snapshot();
        for child in [&a, &b] {
            let l = &table[child.as_str()];
            assert_eq!(l.checkpoint, Checkpoint::TrimHorizon);
            assert_eq!(l.parent_shard_ids, vec![S0.to_string()]);
        }
        // Deeper: S0 (finished) split into a and b, a since split into c and d. a is closed
        // and stranded (and b); c and d come from a's shard end.
        let store = crate::lease::InMemoryLeaseStore::new();
        let stream = crate::retrieval::InMemoryStream::new("s", 1);
        let (a, b) = stream.split(S0, 1 << 64).unwrap();
        let (c, d) = stream.split(&a, 1 << 32).unwrap();
        store.with_table(|t| t.insert(parent.key.clone(), parent.clone()));
        sync_shards(&stream, &store, InitialPosition::Latest)
            .await
            .unwrap();
        let table = store.snapshot();
        let keys: Vec<&String> = table.keys().collect();
        assert_eq!(keys, [&S0.to_string(), &a, &b]);
        // But not when a was processed and cleaned up already (its child has a lease).
        let store = crate::lease::InMemoryLeaseStore::new();
        store.with_table(|t| {
            t.insert(parent.key.clone(), parent.clone());
            t.insert(c.clone(), Lease::new(c.as_str(), Checkpoint::TrimHorizon));
        });
        sync_shards(&stream, &store, InitialPosition::Latest)
            .await
            .unwrap();
        let table = store.snapshot();
        assert!(!table.contains_key(&a), "a was processed: not again");
        assert!(table.contains_key(&b) && !table.contains_key(&d));
        // A parent still being processed creates its children itself at its end.
        let store = crate::lease::InMemoryLeaseStore::new();
        let parent = Lease::new(S0, Checkpoint::TrimHorizon);
        store.with_table(|t| t.insert(parent.key.clone(), parent.clone()));
        let created = sync_shards(&stream, &store, InitialPosition::Latest)
            .await
            .unwrap();
        assert_eq!(created, 0);
    }

    #[test]
    fn child_leases_start_at_trim_horizon_with_their_parents() {
        let c = ChildShard {
            shard_id: "s9".into(),
            parent_shards: vec!["s7".into(), "s6".into()],
            hash_key_range: HashKeyRange { start: 5, end: 9 },
        };
        let l = &child_leases(&crate::StreamIdentifier::single("s"), &[c])[0];
        assert_eq!(
            (l.checkpoint.clone(), l.parent_shard_ids.clone()),
            (Checkpoint::TrimHorizon, vec!["s6".into(), "s7".into()])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn leases_are_created_concurrently_parents_before_children() {
        use crate::lease::{Fault, InMemoryLeaseStore, LeaseOp};
        use crate::retrieval::InMemoryStream;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;

        // 20 root shards, 5 of them split: 5 closed parents, 25 open shards, all in one chunk.
        let stream = InMemoryStream::new("s", 20);
        for shard in stream.shards().iter().take(5) {
            let r = shard.hash_key_range;
            stream
                .split(&shard.shard_id, r.start + (r.end - r.start) / 2)
                .unwrap();
        }
        let parents: BTreeSet<String> = stream
            .shards()
            .iter()
            .filter(|s| s.is_closed())
            .map(|s| s.shard_id.clone())
            .collect();
        let store = InMemoryLeaseStore::new();
        let orphans = Arc::new(AtomicUsize::new(0));
        let injector = {
            let (store, orphans, stream) = (store.clone(), orphans.clone(), stream.clone());
            move |op: LeaseOp, key: Option<&str>| {
                if op != LeaseOp::Create {
                    return None;
                }
                let key = key.unwrap();
                let shard = stream
                    .shards()
                    .into_iter()
                    .find(|s| s.shard_id == key)
                    .unwrap();
                let table = store.snapshot();
                if shard.parents().iter().any(|p| !table.contains_key(p)) {
                    orphans.fetch_add(1, Ordering::SeqCst);
                }
                // Every write takes 10 ms, a parent's 100 ms.
                Some(Fault::Delay(Duration::from_millis(
                    if parents.contains(key) { 100 } else { 10 },
                )))
            }
        };
        store.set_fault_injector(Some(Arc::new(injector)));
        let start = Instant::now();
        let created = sync_shards(&stream, &store, InitialPosition::TrimHorizon)
            .await
            .unwrap();
        assert_eq!(created, 30);
        assert_eq!(
            orphans.load(Ordering::SeqCst),
            0,
            "a child lease was written before its parent's"
        );
        // Two waves: 100 ms + 10 ms. Sequential writes would take 5 × 100 ms + 25 × 10 ms.
        let took = start.elapsed();
        assert!(took <= Duration::from_millis(200), "took {took:?}");
    }
}

//! The world's streams: one for a single-stream run; for a multi-stream run
//! ([`Mode::MultiStream`](crate::scenario::Mode::MultiStream)) a set the application tracks,
//! which the timeline changes (streams created and joining, leaving, coming back, deleted and
//! re-created under their names), and the tracker the workers read it from.
//!
//! The ledger names shards by lease key (the shard id of a single-stream run,
//! `account:name:epoch:shardId` of a multi-stream one), so every check applies per stream.
//! Records of a stream out of the set are required all the same: the drain brings every
//! stream that still exists back into the set, and its leases (kept: the world's deletion
//! strategy deletes only the leases of streams that no longer exist) go on from their
//! checkpoints. Records of a deleted stream are excused.

use super::World;
use kinesis_client::multi_stream::{
    FormerStreamsLeasesDeletionStrategy, MultiStreamTracker, StreamConfig, TrackerError,
};
use kinesis_client::testing::InMemoryStream;
use kinesis_client::{InitialPosition, StreamIdentifier};
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The account of the simulated streams.
const ACCOUNT: &str = "123456789012";

/// One stream of the world.
pub(super) struct Slot {
    /// How leases name it (single-stream: the name alone).
    pub(super) id: StreamIdentifier,
    /// The stream.
    pub(super) stream: InMemoryStream,
    /// In the application's set.
    pub(super) tracked: bool,
    /// Deleted (its records are excused).
    pub(super) deleted: bool,
}

impl Slot {
    /// The ledger's (and the lease table's) name of `shard`.
    pub(super) fn key(&self, shard: &str) -> String {
        self.id.lease_key(shard)
    }
}

/// The streams the application tracks, as the workers read them.
#[derive(Clone, Default)]
pub(super) struct SimTracker {
    streams: Arc<Mutex<Vec<StreamConfig>>>,
    position: Arc<Mutex<Option<InitialPosition>>>,
}

#[async_trait::async_trait]
impl MultiStreamTracker for SimTracker {
    async fn stream_config_list(&self) -> Result<Vec<StreamConfig>, TrackerError> {
        Ok(self.streams.lock().unwrap().clone())
    }

    fn former_streams_leases_deletion_strategy(&self) -> FormerStreamsLeasesDeletionStrategy {
        // Longer than any run: only the leases of deleted streams are deleted (at once).
        FormerStreamsLeasesDeletionStrategy::AutoDetectionAndDeferredDeletion {
            wait: Duration::from_secs(100 * 24 * 3600),
        }
    }
}

/// The in-memory streams by serialized identifier, for the workers' stream clients (a stream
/// no longer there reads as deleted).
pub(super) type StreamsById = Arc<Mutex<BTreeMap<String, InMemoryStream>>>;

impl World {
    /// The tracker and the position of every stream of a multi-stream run.
    pub(super) fn tracker(&self) -> Option<&SimTracker> {
        self.tracker.as_ref()
    }

    /// Create a stream named `name` (creation epoch `epoch`) with `shards` shards, record its
    /// shards in the ledger, and add it to the world (not yet to the set).
    pub(super) fn create_stream(&mut self, name: &str, epoch: u64, shards: usize) -> usize {
        let id = StreamIdentifier::multi(ACCOUNT, name, epoch).expect("a valid identifier");
        let stream = InMemoryStream::new(name, shards);
        stream.set_fault_injector(Some(self.stream_faults.clone()));
        {
            let mut l = self.ledger.lock().unwrap();
            for s in stream.shards() {
                l.add_shard(&id.lease_key(&s.shard_id), &[]);
            }
        }
        self.streams_by_id
            .lock()
            .unwrap()
            .insert(id.to_string(), stream.clone());
        self.say(None, format!("stream {id} created with {shards} shards"));
        self.slots.push(Slot {
            id,
            stream,
            tracked: false,
            deleted: false,
        });
        self.slots.len() - 1
    }

    /// Tell the workers' tracker the set of the moment.
    pub(super) fn publish_set(&self) {
        let Some(tracker) = &self.tracker else {
            return;
        };
        let position = tracker
            .position
            .lock()
            .unwrap()
            .unwrap_or(InitialPosition::TrimHorizon);
        *tracker.streams.lock().unwrap() = self
            .slots
            .iter()
            .filter(|s| s.tracked && !s.deleted)
            .map(|s| StreamConfig::new(s.id.clone(), position))
            .collect();
    }

    /// Set the initial position of every stream (the scenario's start).
    pub(super) fn set_stream_position(&self, position: InitialPosition) {
        if let Some(t) = &self.tracker {
            *t.position.lock().unwrap() = Some(position);
        }
    }

    fn pick_slot(&mut self, pick: impl Fn(&Slot) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.slots.len())
            .filter(|&i| pick(&self.slots[i]))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.rng.random_range(0..candidates.len())])
    }

    /// A new stream joins the set.
    pub(super) fn add_stream(&mut self) {
        let Some(plan) = self.sc.multi_stream else {
            return;
        };
        self.next_stream += 1;
        let name = format!("s{}", self.next_stream - 1);
        let i = self.create_stream(&name, 1, plan.shards_per_stream);
        self.slots[i].tracked = true;
        self.say(None, format!("stream {} joins the set", self.slots[i].id));
        self.ledger.lock().unwrap().stats.stream_changes += 1;
        self.publish_set();
    }

    /// A stream of the set leaves it.
    pub(super) fn remove_stream(&mut self) {
        match self.pick_slot(|s| s.tracked && !s.deleted) {
            Some(i) => {
                self.slots[i].tracked = false;
                let id = self.slots[i].id.to_string();
                self.ledger.lock().unwrap().stream_left(&id);
                self.say(None, format!("stream {id} leaves the set"));
                self.ledger.lock().unwrap().stats.stream_changes += 1;
                self.publish_set();
            }
            None => self.say(None, "remove stream: none in the set".into()),
        }
    }

    /// A stream that left the set joins it again.
    pub(super) fn readd_stream(&mut self) {
        match self.pick_slot(|s| !s.tracked && !s.deleted) {
            Some(i) => {
                self.slots[i].tracked = true;
                let id = self.slots[i].id.to_string();
                self.ledger.lock().unwrap().stream_back(&id);
                self.say(None, format!("stream {id} joins the set again"));
                self.ledger.lock().unwrap().stats.stream_changes += 1;
                self.publish_set();
            }
            None => self.say(None, "re-add stream: none out of the set".into()),
        }
    }

    /// A stream of the set is deleted and re-created under its name.
    pub(super) fn recreate_stream(&mut self) {
        let Some(plan) = self.sc.multi_stream else {
            return;
        };
        let Some(i) = self.pick_slot(|s| s.tracked && !s.deleted) else {
            self.say(None, "re-create stream: none in the set".into());
            return;
        };
        let old = self.slots[i].id.clone();
        self.slots[i].deleted = true;
        self.slots[i].stream.delete();
        self.streams_by_id.lock().unwrap().remove(&old.to_string());
        {
            let mut l = self.ledger.lock().unwrap();
            let keys: Vec<String> = self.slots[i]
                .stream
                .shards()
                .iter()
                .map(|s| old.lease_key(&s.shard_id))
                .collect();
            l.excuse(&keys);
            l.stream_left(&old.to_string());
        }
        let epoch = old.creation_epoch().unwrap_or(1) + 1;
        let j = self.create_stream(old.name(), epoch, plan.shards_per_stream);
        self.slots[j].tracked = true;
        self.ledger.lock().unwrap().stats.stream_changes += 1;
        self.say(
            None,
            format!(
                "stream {old} deleted and re-created as {}",
                self.slots[j].id
            ),
        );
        self.publish_set();
    }

    /// The drain: every stream that exists is in the set.
    pub(super) fn track_every_stream(&mut self) {
        if self.tracker.is_none() {
            return;
        }
        for s in &mut self.slots {
            if !s.deleted {
                s.tracked = true;
                self.ledger.lock().unwrap().stream_back(&s.id.to_string());
            }
        }
        self.publish_set();
    }

    /// Streams records may be put to, open shards split, merged or trimmed: every stream that
    /// exists (in the set or not).
    pub(super) fn live_slots(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| !self.slots[i].deleted)
            .collect()
    }

    /// A stream for the next change: the only one of a single-stream run (no draw), else one
    /// that exists, at random.
    pub(super) fn some_slot(&mut self) -> usize {
        if self.tracker.is_none() {
            return 0;
        }
        let live = self.live_slots();
        live[self.rng.random_range(0..live.len())]
    }
}

//! A multi-stream worker's tracker rounds: read the application's
//! [`MultiStreamTracker`](crate::multi_stream::MultiStreamTracker), start consuming the
//! streams that joined the set (their leases created at once), stop consuming those that left
//! it, and delete the leases of former streams as the application's
//! [`FormerStreamsLeasesDeletionStrategy`] says.

use super::streams::{ActiveStream, StreamClients, StreamSet};
use crate::config::{Config, InitialPosition};
use crate::coordinator::LeaseCoordinator;
use crate::lease::Lease;
use crate::multi_stream::{
    FormerStreamsLeasesDeletionStrategy, MultiStreamTracker, StreamConfig, TrackerError,
};
use crate::resharding::sync::sync_stream_shards_within;
use crate::retrieval::RetrievalFailure;
use crate::stream::StreamIdentifier;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::time::Instant;

/// The tracker rounds' state (one per worker).
pub(crate) struct Tracker {
    tracker: Arc<dyn MultiStreamTracker>,
    strategy: FormerStreamsLeasesDeletionStrategy,
    clients: Arc<dyn StreamClients>,
    config: Arc<Config>,
    coordinator: LeaseCoordinator,
    streams: StreamSet,
    /// Former streams whose leases are due for deletion, with when they were first seen out
    /// of the set.
    pending: BTreeMap<StreamIdentifier, Instant>,
    /// How the streams that left the set were called (their ARN: another account's stream is
    /// not found by name), to ask Kinesis whether they still exist.
    former: BTreeMap<StreamIdentifier, StreamConfig>,
    /// Streams the tracker gave that are not multi-stream identifiers, reported once.
    reported_invalid: BTreeSet<String>,
}

impl Tracker {
    /// The rounds of `tracker` for the worker of `coordinator`, consuming `streams`.
    pub(crate) fn new(
        tracker: Arc<dyn MultiStreamTracker>,
        clients: Arc<dyn StreamClients>,
        config: Arc<Config>,
        coordinator: LeaseCoordinator,
        streams: StreamSet,
    ) -> Self {
        Tracker {
            strategy: tracker.former_streams_leases_deletion_strategy(),
            tracker,
            clients,
            config,
            coordinator,
            streams,
            pending: BTreeMap::new(),
            former: BTreeMap::new(),
            reported_invalid: BTreeSet::new(),
        }
    }

    /// One round. Fails only when the application's tracker does (the set is left as it was).
    pub(crate) async fn round(&mut self) -> Result<(), TrackerError> {
        let listed = caught(self.tracker.stream_config_list()).await?;
        let mut wanted: BTreeMap<String, StreamConfig> = BTreeMap::new();
        for c in listed {
            if !c.stream.is_multi_stream() {
                if self.reported_invalid.insert(c.stream.to_string()) {
                    tracing::error!(stream = %c.stream, "the stream tracker gave a stream without account and creation epoch (StreamIdentifier::single): a multi-stream application names each stream by StreamIdentifier::multi or ::from_arn; ignoring it");
                }
                continue;
            }
            wanted.insert(c.stream.to_string(), c);
        }
        // The set first, then the coordinator: a lease is never taken for a stream the
        // worker does not consume yet (it would release it at once), and a stream that left
        // is no longer taken before its consumers stop.
        let mut joined = Vec::new();
        for (key, c) in &wanted {
            match self.streams.get(key) {
                Some(s) if s.config.as_ref() == Some(c) => {}
                Some(_) => {
                    tracing::info!(stream = %key, "stream configuration changed: new consumers use it");
                    let client = self.clients.client(c);
                    self.streams
                        .insert(ActiveStream::multi(&self.config, c, client));
                }
                None => {
                    self.former.remove(&c.stream);
                    let client = self.clients.client(c);
                    self.streams
                        .insert(ActiveStream::multi(&self.config, c, client));
                    tracing::info!(stream = %key, position = ?c.initial_position, "stream joined the set");
                    joined.push(key.clone());
                }
            }
        }
        self.coordinator
            .track_streams(wanted.keys().cloned().collect());
        for gone in self
            .streams
            .keys()
            .difference(&wanted.keys().cloned().collect())
        {
            if let Some(config) = self.streams.remove(gone).and_then(|s| s.config.clone()) {
                self.former.insert(config.stream.clone(), config);
            }
            tracing::info!(stream = %gone, strategy = ?self.strategy, "stream left the set: its processors shut down and its leases are released, and none is taken again");
        }
        // The new streams' leases, at once (not at the next periodic sync).
        for key in joined {
            if let Some(stream) = self.streams.get(&key) {
                self.sync(&stream).await;
            }
        }
        self.former_streams(&wanted).await;
        Ok(())
    }

    /// Create the leases of `stream`'s shards (a failure is retried by the periodic sync).
    async fn sync(&self, stream: &ActiveStream) {
        let result = sync_stream_shards_within(
            stream.client.as_ref(),
            stream.lease_stream(),
            self.coordinator.store().as_ref(),
            stream.initial_position,
            self.config.failover_time,
        )
        .await;
        match result {
            Ok(n) => tracing::info!(stream = %stream.id, created = n, "shard sync done"),
            Err(e) => {
                tracing::warn!(stream = %stream.id, error = %e, "shard sync of a new stream failed; the periodic shard sync tries again")
            }
        }
    }

    /// Queue the leases of former streams for deletion and delete those due.
    async fn former_streams(&mut self, wanted: &BTreeMap<String, StreamConfig>) {
        let wait = match self.strategy {
            FormerStreamsLeasesDeletionStrategy::NoLeaseDeletion => return,
            FormerStreamsLeasesDeletionStrategy::AutoDetectionAndDeferredDeletion { wait }
            | FormerStreamsLeasesDeletionStrategy::ProvidedStreamsDeferredDeletion { wait } => wait,
        };
        let leases = match self.coordinator.store().list_leases().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the lease table for former streams; trying again next round");
                return;
            }
        };
        let mut by_stream: BTreeMap<StreamIdentifier, Vec<Lease>> = BTreeMap::new();
        for l in leases {
            if let Some(m) = &l.multi_stream {
                by_stream.entry(m.stream.clone()).or_default().push(l);
            }
        }
        let candidates: Vec<StreamIdentifier> = match self.strategy {
            FormerStreamsLeasesDeletionStrategy::ProvidedStreamsDeferredDeletion { .. } => {
                match caught(self.tracker.streams_for_lease_cleanup()).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "the stream tracker could not name the streams whose leases to delete; trying again next round");
                        return;
                    }
                }
            }
            _ => by_stream.keys().cloned().collect(),
        };
        let now = Instant::now();
        for id in candidates {
            if wanted.contains_key(&id.to_string()) {
                continue;
            }
            if let std::collections::btree_map::Entry::Vacant(e) = self.pending.entry(id) {
                tracing::info!(stream = %e.key(), ?wait, "leases of a former stream will be deleted after the wait");
                e.insert(now);
            }
        }
        let own_accounts: BTreeSet<&str> = wanted
            .values()
            .filter(|c| c.stream_arn.is_none())
            .filter_map(|c| c.stream.account_id())
            .collect();
        let pending: Vec<(StreamIdentifier, Instant)> =
            self.pending.iter().map(|(k, v)| (k.clone(), *v)).collect();
        for (id, since) in pending {
            if wanted.contains_key(&id.to_string()) {
                tracing::info!(stream = %id, "former stream is back in the set: its leases are kept");
                self.pending.remove(&id);
                self.former.remove(&id);
                continue;
            }
            let Some(leases) = by_stream.get(&id) else {
                self.pending.remove(&id);
                continue;
            };
            let due = now.duration_since(since) >= wait;
            if !due && !self.is_gone(&id, &own_accounts).await {
                continue;
            }
            if self.delete(&id, leases).await {
                self.pending.remove(&id);
                self.former.remove(&id);
            }
        }
    }

    /// Whether Kinesis says the stream does not exist.
    /// A stream this worker consumed is called as it was; one known from the lease table
    /// alone, by name, only if it is of an account whose streams the tracker names without ARN
    /// (the worker's own: a call by name would not find another account's stream, whose
    /// leases wait for the deletion's wait instead).
    async fn is_gone(&self, id: &StreamIdentifier, own_accounts: &BTreeSet<&str>) -> bool {
        let config = match self.former.get(id) {
            Some(c) => c.clone(),
            None if id.account_id().is_some_and(|a| own_accounts.contains(a)) => {
                StreamConfig::new(id.clone(), InitialPosition::Latest)
            }
            None => return false,
        };
        match self.clients.client(&config).list_shards().await {
            Err(e) if e.failure == RetrievalFailure::ResourceNotFound => {
                tracing::info!(stream = %id, "former stream no longer exists: deleting its leases now");
                true
            }
            Err(e) => {
                tracing::debug!(stream = %id, error = %e, "cannot tell whether a former stream still exists");
                false
            }
            Ok(_) => false,
        }
    }

    /// Delete the leases of a former stream; true when all are gone.
    async fn delete(&self, id: &StreamIdentifier, leases: &[Lease]) -> bool {
        let store = self.coordinator.store();
        for l in leases {
            self.coordinator.forget(&l.key);
            if let Err(e) = store.delete_lease(&l.key).await {
                tracing::warn!(stream = %id, lease_key = %l.key, error = %e, "deleting a former stream's lease failed; trying again next round");
                return false;
            }
        }
        tracing::info!(stream = %id, deleted = leases.len(), "deleted the leases of a former stream");
        true
    }
}

/// The application's tracker call `call`; a panic in it is an error of this round (the
/// worker goes on with the streams of the moment).
async fn caught<T>(
    call: impl std::future::Future<Output = Result<T, TrackerError>>,
) -> Result<T, TrackerError> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(call)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err("the stream tracker panicked".into()))
}

/// Run `tracker`'s rounds every `interval` until `stop` is cancelled.
pub(crate) async fn every_interval(
    mut tracker: Tracker,
    interval: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        // A round waits on the application's tracker and on the services: a shutdown must not
        // wait for it. A panic (in the application's tracker or stream clients) ends the round
        // only.
        let round = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            r = caught(tracker.round()) => r,
        };
        if let Err(e) = round {
            tracing::warn!(error = %e, "the stream tracker round failed; keeping the streams of the moment");
        }
    }
}

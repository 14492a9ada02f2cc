//! Leader election through the lock item, in the protocol of the DynamoDB lock client the Java
//! KCL 3.x uses, so that Java and Rust workers elect one leader together.
//!
//! * No lock item: the first worker to write one (conditional on its absence) leads.
//! * The leader heartbeats: it replaces the item's `recordVersionNumber` with a fresh value,
//!   conditional on the version and the owner it holds. It leads only until `leaseDuration`
//!   after the start of its last successful heartbeat.
//! * A follower takes the lock only after it has seen one version unchanged, on its own clock,
//!   for longer than the `leaseDuration` written in the item (conditional on that version).
//! * A leader that stops deletes the item (conditional on version and owner).

use super::store::{new_version, FleetStore, FleetStoreError, LockItem};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// This worker's view of the lock.
#[derive(Debug)]
pub(crate) struct LeaderLock {
    store: Arc<dyn FleetStore>,
    worker_id: String,
    /// The `leaseDuration` this worker writes when it leads.
    lease_duration: Duration,
    /// How often the leader heartbeats.
    heartbeat: Duration,
    /// The lock as held, and when its last successful write started.
    held: Option<(LockItem, Instant)>,
    /// Another worker's lock as last read, and when this worker first saw its version.
    watched: Option<(LockItem, Instant)>,
    /// The longest time seen between two version changes of the watched lock (its holder's
    /// heartbeat period, as seen from here: 30 s for a Java leader).
    cadence: Duration,
}

impl LeaderLock {
    pub(crate) fn new(
        store: Arc<dyn FleetStore>,
        worker_id: &str,
        lease_duration: Duration,
        heartbeat: Duration,
    ) -> Self {
        LeaderLock {
            store,
            worker_id: worker_id.to_string(),
            lease_duration,
            heartbeat,
            held: None,
            watched: None,
            cadence: Duration::ZERO,
        }
    }

    /// Whether this worker leads now (without a call).
    pub(crate) fn is_leader(&self) -> bool {
        self.held
            .as_ref()
            .is_some_and(|(l, at)| at.elapsed() < l.lease_duration)
    }

    /// Whether the lock of another worker looks abandoned: this worker has seen its version
    /// unchanged for more than two of its holder's heartbeat periods (as seen from here; a
    /// Java leader heartbeats every 30 s, this library's every `failover_time / 3`), or there is
    /// no lock at all. Not yet enough to take it.
    pub(crate) fn holder_looks_gone(&self) -> bool {
        match (&self.held, &self.watched) {
            (Some(_), _) => false,
            (None, Some((item, at))) => {
                let period = self.cadence.max(self.heartbeat);
                at.elapsed() > (period * 2).min(item.lease_duration)
            }
            (None, None) => true,
        }
    }

    /// The current holder as last seen, if any.
    pub(crate) fn holder(&self) -> Option<&str> {
        match (&self.held, &self.watched) {
            (Some((l, _)), _) | (None, Some((l, _))) => Some(&l.owner),
            _ => None,
        }
    }

    /// Heartbeat if leading and due, or try to become leader when the lock is free or stale.
    /// Returns whether this worker leads.
    pub(crate) async fn check(&mut self) -> Result<bool, FleetStoreError> {
        if let Some((item, last)) = self.held.clone() {
            if last.elapsed() < self.heartbeat {
                return Ok(self.is_leader());
            }
            let version = new_version();
            let started = Instant::now();
            match self.store.heartbeat_lock(&item, &version).await {
                Ok(true) => {
                    let mut item = item;
                    item.record_version = version;
                    self.held = Some((item, started));
                    return Ok(true);
                }
                Ok(false) => {
                    tracing::warn!(worker_id = %self.worker_id, "leader lock lost: another worker holds it now");
                    self.held = None;
                    return Ok(false);
                }
                Err(e) => {
                    if !self.is_leader() {
                        tracing::warn!(worker_id = %self.worker_id, error = %e, "leader lock expired: its heartbeats failed for the whole lease duration");
                        self.held = None;
                    }
                    return Err(e);
                }
            }
        }
        let current = self.store.lock().await?;
        let now = Instant::now();
        let stale = match current {
            None => {
                self.watched = None;
                None
            }
            Some(item) if item.owner == self.worker_id => {
                // Left by an earlier process with this worker id: it is ours to take over.
                Some(item.record_version)
            }
            Some(item) => {
                let first_seen = match &self.watched {
                    Some((w, at)) if w.record_version == item.record_version => *at,
                    Some((w, at)) if w.owner == item.owner => {
                        // A heartbeat of the same holder: how long its versions last.
                        self.cadence = self.cadence.max(now.saturating_duration_since(*at));
                        now
                    }
                    _ => {
                        self.cadence = Duration::ZERO;
                        now
                    }
                };
                let expired = now.saturating_duration_since(first_seen) > item.lease_duration;
                let version = item.record_version.clone();
                self.watched = Some((item, first_seen));
                if !expired {
                    return Ok(false);
                }
                tracing::info!(worker_id = %self.worker_id, previous = ?self.holder(), "leader lock not heartbeaten for its lease duration: taking it");
                Some(version)
            }
        };
        let item = LockItem::new(&self.worker_id, self.lease_duration);
        let started = Instant::now();
        if self.store.acquire_lock(&item, stale.as_deref()).await? {
            tracing::info!(worker_id = %self.worker_id, "this worker is now the fleet's leader");
            self.held = Some((item, started));
            self.watched = None;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Stop leading: delete the lock item (others take over at once).
    pub(crate) async fn release(&mut self) {
        if let Some((item, _)) = self.held.take() {
            match self.store.release_lock(&item).await {
                Ok(true) => tracing::info!(worker_id = %self.worker_id, "leader lock released"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(worker_id = %self.worker_id, error = %e, "could not release the leader lock; others take it when it expires")
                }
            }
        }
    }
}

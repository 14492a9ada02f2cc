//! The worker's part in a fleet: choose and follow the protocol, write its metrics row, and in
//! a 3.x fleet take part in leader election and, as leader, assign leases.

use super::assignment::{plan_assignments, AssignmentInput, Move};
use super::config::FleetConfig;
use super::leader::LeaderLock;
use super::store::{now_ms, FleetStore, FleetStoreError, MigrationState, WorkerMetricStats};
use super::{ClientVersion, ClientVersionConfig};
use crate::coordinator::{LeaseCoordinator, Protocol};
use crate::lease::{Lease, LeaseStoreError, WriteOutcome};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Mutex, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the fleet task needs to know.
#[derive(Debug, Clone)]
pub(crate) struct FleetSettings {
    pub(crate) worker_id: String,
    pub(crate) failover_time: Duration,
    pub(crate) max_leases_for_worker: usize,
    pub(crate) config: FleetConfig,
}

impl FleetSettings {
    fn assignment_interval(&self) -> Duration {
        self.config
            .lease_assignment_interval
            .unwrap_or(self.failover_time / 3)
    }

    fn heartbeat(&self) -> Duration {
        self.failover_time / 3
    }

    fn lock_duration(&self) -> Duration {
        self.config
            .leader_lock_duration
            .unwrap_or(self.failover_time * 2)
            .max(self.heartbeat() * 2)
    }

    /// A metrics row older than this belongs to a gone worker (the Java leader's rule).
    fn metrics_max_age(&self) -> Duration {
        self.config.worker_metrics_reporter_interval * 2
    }
}

/// Failed fleet start-up: reading or writing the fleet's items, or the lease owner index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// A fleet item could not be read or written.
    #[error(transparent)]
    Store(#[from] FleetStoreError),
    /// The lease table's owner index could not be created or read.
    #[error(transparent)]
    LeaseTable(#[from] LeaseStoreError),
}

impl FleetError {
    /// Whether a retry may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            FleetError::Store(e) => e.kind().is_retryable(),
            FleetError::LeaseTable(e) => e.kind().is_retryable(),
        }
    }
}

/// A lease as the leader last saw it.
#[derive(Debug)]
struct Seen {
    counter: u64,
    /// When the leader first saw this counter value.
    since: Instant,
    /// When the leader first saw the current hand-off (outgoing owner, new owner).
    handoff: Option<(Option<String>, Option<String>, Instant)>,
}

/// The leader's bookkeeping and lock.
#[derive(Debug)]
struct Leadership {
    lock: LeaderLock,
    seen: BTreeMap<String, Seen>,
    /// When `seen` was last updated.
    observed_at: Option<Instant>,
    /// Workers presumed gone (a lease of theirs expired), with the `lut` of their metrics row
    /// then: they are given nothing until they write it again.
    suspects: BTreeMap<String, u64>,
    leading: bool,
}

/// This worker's membership in its fleet.
#[derive(Debug)]
pub(crate) struct Fleet {
    store: Arc<dyn FleetStore>,
    settings: FleetSettings,
    coordinator: LeaseCoordinator,
    version: watch::Sender<Option<ClientVersion>>,
    leadership: Mutex<Leadership>,
    left: CancellationToken,
    /// Wakes the assignment loop (this worker just became leader).
    assign_now: Notify,
}

impl Fleet {
    pub(crate) fn new(
        store: Arc<dyn FleetStore>,
        settings: FleetSettings,
        coordinator: LeaseCoordinator,
    ) -> Self {
        let lock = LeaderLock::new(
            store.clone(),
            &settings.worker_id,
            settings.lock_duration(),
            settings.heartbeat(),
        );
        Fleet {
            store,
            settings,
            coordinator,
            version: watch::Sender::new(None),
            leadership: Mutex::new(Leadership {
                lock,
                seen: BTreeMap::new(),
                observed_at: None,
                suspects: BTreeMap::new(),
                leading: false,
            }),
            left: CancellationToken::new(),
            assign_now: Notify::new(),
        }
    }

    /// The fleet's client version as last read (`None`: no `Migration3.0` item).
    pub(crate) fn client_version(&self) -> Option<ClientVersion> {
        self.version.borrow().clone()
    }

    /// At start-up, before any lease is taken: read the fleet's client version (creating it as
    /// the configuration says), and set the coordinator's protocol.
    pub(crate) async fn start(&self) -> Result<(), FleetError> {
        let me = &self.settings.worker_id;
        let config = self.settings.config.client_version_config;
        let mut state = self.store.migration_state().await?;
        if state.is_none() {
            if let Some(cv) = config.creates() {
                self.store.prepare_for_3x().await?;
                let new = MigrationState::new(cv.clone(), me);
                if self.store.create_migration_state(&new).await? {
                    tracing::info!(worker_id = %me, client_version = %cv, "fleet created in this protocol");
                }
                state = self.store.migration_state().await?;
            }
        }
        if let Some(s) = &state {
            if s.client_version == ClientVersion::V3xWithRollback
                && config == ClientVersionConfig::V3x
            {
                let next = s.moved_to(ClientVersion::V3x, me);
                if self
                    .store
                    .update_migration_state(&s.client_version, &next)
                    .await?
                {
                    tracing::info!(worker_id = %me, "fleet moved from CLIENT_VERSION_3X_WITH_ROLLBACK to CLIENT_VERSION_3X (rollback no longer possible)");
                }
                state = self.store.migration_state().await?;
            }
        }
        let version = state.map(|s| s.client_version);
        self.apply(version, true).await?;
        Ok(())
    }

    /// Follow `version`: the coordinator's protocol, the owner index, the metrics row.
    async fn apply(
        &self,
        version: Option<ClientVersion>,
        starting: bool,
    ) -> Result<(), FleetError> {
        let old = self.client_version();
        if !starting && old == version {
            return Ok(());
        }
        let three = version.as_ref().is_some_and(ClientVersion::is_3x);
        if three {
            self.wait_for_owner_index().await?;
        }
        if version.as_ref().is_some_and(ClientVersion::reports_metrics) {
            self.report_metrics().await;
        }
        match &version {
            Some(ClientVersion::Other(v)) => {
                tracing::warn!(client_version = %v, "unknown fleet client version: keeping the leaderless protocol")
            }
            Some(v) => {
                tracing::info!(worker_id = %self.settings.worker_id, client_version = %v, "following the fleet's protocol")
            }
            None => {}
        }
        self.coordinator.set_protocol(if three {
            Protocol::Assigned
        } else {
            Protocol::Leaderless
        });
        // A fleet item that is not 3.x: its Java workers run the 2.x taker (count balancing).
        self.coordinator
            .set_peers_balance_by_count(!three && version.is_some());
        if !three {
            let mut l = self.leadership.lock().await;
            l.lock.release().await;
            l.leading = false;
        }
        self.version.send_replace(version);
        Ok(())
    }

    /// Create the lease table's owner index if missing, and wait until it is usable (a new 3.x
    /// worker does; discovery queries it).
    async fn wait_for_owner_index(&self) -> Result<(), FleetError> {
        let store = self.coordinator.store();
        let mut logged = false;
        loop {
            if store.create_owner_index_if_not_exists().await? {
                return Ok(());
            }
            if !logged {
                tracing::info!("waiting for the lease table's owner index to become active");
                logged = true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Write this worker's metrics row (failures are logged: the next period writes again).
    /// Not while this worker cannot read the lease table: a fresh row tells the leader that
    /// this worker is alive and can take leases, and those it assigned would not be adopted
    /// (they would wait for expiry, one failover time each, and be assigned again).
    async fn report_metrics(&self) {
        if self.coordinator.health_state().lease_table_failing() {
            tracing::warn!(worker_id = %self.settings.worker_id, "not writing this worker's metrics row: it cannot read the lease table (its discovery fails), and a leader would assign it leases it cannot adopt");
            return;
        }
        let row = WorkerMetricStats::throughput_only(&self.settings.worker_id);
        if let Err(e) = self.store.put_worker_metrics(&row).await {
            tracing::warn!(worker_id = %self.settings.worker_id, error = %e, "writing this worker's metrics row failed; without a fresh row a KCL 3.x leader assigns it no lease");
        }
    }

    /// Begin leaving the fleet (graceful shutdown starts): stop leading, and delete this
    /// worker's metrics row, so that no leader gives it a lease while its processors finish
    /// (it would never adopt it).
    pub(crate) async fn begin_leaving(&self) {
        self.leave_quietly().await;
    }

    /// Who should get this worker's `held` leases as it leaves a 3.x fleet: live workers (a
    /// fresh metrics row), the least loaded first, one name per lease; empty outside a 3.x
    /// fleet or when there is none (the leases are then released with no owner, for the
    /// leader to assign).
    pub(crate) async fn receivers_for(&self, held: usize) -> Vec<String> {
        self.receivers(held).await
    }

    async fn receivers(&self, held: usize) -> Vec<String> {
        let three = self
            .client_version()
            .as_ref()
            .is_some_and(ClientVersion::is_3x);
        if !three || held == 0 {
            return Vec::new();
        }
        let (Ok(rows), Ok(leases)) = (
            self.store.worker_metrics().await,
            self.coordinator.store().list_leases().await,
        ) else {
            return Vec::new();
        };
        let now_s = now_ms() / 1000;
        let suspects = self.leadership.lock().await.suspects.clone();
        let mut load: BTreeMap<String, usize> = rows
            .iter()
            .filter(|r| {
                r.worker_id != self.settings.worker_id
                    && r.is_fresh(now_s, self.settings.metrics_max_age())
                    && r.is_valid()
                    && !suspects.contains_key(&r.worker_id)
            })
            .map(|r| (r.worker_id.clone(), 0))
            .collect();
        if load.is_empty() {
            return Vec::new();
        }
        for l in leases.iter().filter(|l| !l.checkpoint.is_shard_end()) {
            if let Some(n) = l.owner.as_deref().and_then(|o| load.get_mut(o)) {
                *n += 1;
            }
        }
        (0..held)
            .map(|_| {
                let w = load
                    .iter()
                    .min_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)))
                    .map(|(w, _)| w.clone())
                    .expect("not empty");
                *load.get_mut(&w).expect("from the map") += 1;
                w
            })
            .collect()
    }

    async fn leave_quietly(&self) {
        if self.left.is_cancelled() {
            return;
        }
        self.left.cancel();
        let mut l = self.leadership.lock().await;
        l.lock.release().await;
        l.leading = false;
        drop(l);
        if self
            .client_version()
            .as_ref()
            .is_some_and(ClientVersion::reports_metrics)
        {
            let rows = self.store.worker_metrics().await.unwrap_or_default();
            if let Some(mine) = rows.iter().find(|r| r.worker_id == self.settings.worker_id) {
                if let Err(e) = self
                    .store
                    .delete_worker_metrics(&mine.worker_id, mine.last_update_s)
                    .await
                {
                    tracing::debug!(error = %e, "could not delete this worker's metrics row");
                }
            }
        }
    }

    /// Follow the fleet until `stop`: re-read its version and write metrics; in a 3.x fleet,
    /// keep or seek the leader lock and, leading, assign leases. The lock has its own loop, so
    /// that a long assignment round never delays a heartbeat.
    pub(crate) async fn run(&self, stop: CancellationToken) {
        tokio::join!(
            self.follow_loop(&stop),
            self.lock_loop(&stop),
            self.assignment_loop(&stop)
        );
        let mut l = self.leadership.lock().await;
        l.lock.release().await;
        l.leading = false;
    }

    /// Whether this worker takes part in leader election now.
    fn in_3x(&self) -> bool {
        self.client_version()
            .as_ref()
            .is_some_and(ClientVersion::is_3x)
            && !self.left.is_cancelled()
    }

    /// Re-read the fleet's version every `check_interval`; write the metrics row every
    /// reporting period.
    async fn follow_loop(&self, stop: &CancellationToken) {
        let s = &self.settings;
        let mut next_check = Instant::now() + s.config.check_interval;
        let mut next_metrics = Instant::now() + s.config.worker_metrics_reporter_interval;
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(next_check.min(next_metrics)) => {}
            }
            let now = Instant::now();
            if now >= next_check {
                match self.store.migration_state().await {
                    Ok(state) => {
                        if let Err(e) = self.apply(state.map(|s| s.client_version), false).await {
                            tracing::warn!(error = %e, "following the fleet's protocol change failed; will retry");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the fleet's client version failed; will retry")
                    }
                }
                next_check = Instant::now() + s.config.check_interval;
            }
            if now >= next_metrics {
                if self
                    .client_version()
                    .as_ref()
                    .is_some_and(ClientVersion::reports_metrics)
                    && !self.left.is_cancelled()
                {
                    self.report_metrics().await;
                }
                next_metrics = Instant::now() + s.config.worker_metrics_reporter_interval;
            }
        }
    }

    /// Keep the leader lock (heartbeats) or watch it, every heartbeat period, in a 3.x fleet.
    async fn lock_loop(&self, stop: &CancellationToken) {
        let mut versions = self.version.subscribe();
        loop {
            if self.in_3x() && self.check_leadership().await {
                self.assign_now.notify_one();
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = versions.changed() => {}
                _ = tokio::time::sleep(self.settings.heartbeat()) => {}
            }
        }
    }

    /// Leading, assign leases every assignment interval (and at once on becoming leader);
    /// following a leader that looks gone (its lock unchanged for two heartbeats), observe the
    /// leases already, so that on taking over this worker knows which expired.
    async fn assignment_loop(&self, stop: &CancellationToken) {
        loop {
            if self.in_3x() {
                let (leading, suspect) = {
                    let l = self.leadership.lock().await;
                    (l.leading, l.lock.holder_looks_gone())
                };
                let round = if leading {
                    self.assignment_round().await
                } else if suspect {
                    self.observe_leases().await
                } else {
                    Ok(())
                };
                if let Err(e) = round {
                    tracing::warn!(error = %e, "lease assignment failed; will retry");
                }
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = self.assign_now.notified() => {}
                _ = tokio::time::sleep(self.settings.assignment_interval()) => {}
            }
        }
    }

    /// Check (or keep) the leader lock; true when this worker just became leader.
    async fn check_leadership(&self) -> bool {
        let mut l = self.leadership.lock().await;
        let leading = match l.lock.check().await {
            Ok(leading) => leading,
            Err(e) => {
                tracing::warn!(error = %e, "checking the leader lock failed; will retry");
                l.lock.is_leader()
            }
        };
        let became = leading && !l.leading;
        if became {
            // Observations of the leases made while the old leader looked gone carry over;
            // older ones (or none) start afresh: every owned lease counts as renewed now.
            let fresh = l
                .observed_at
                .is_some_and(|at| at.elapsed() <= self.settings.assignment_interval() * 2);
            if !fresh {
                l.seen.clear();
            }
        }
        if !leading && l.leading {
            tracing::info!(worker_id = %self.settings.worker_id, "no longer the fleet's leader");
        }
        l.leading = leading;
        became
    }

    /// A follower's look at the leases while the leader looks gone: update the expiry
    /// bookkeeping only.
    async fn observe_leases(&self) -> Result<(), FleetError> {
        let leases = self.coordinator.store().list_leases().await?;
        let mut l = self.leadership.lock().await;
        self.expired(&mut l.seen, &leases);
        l.observed_at = Some(Instant::now());
        Ok(())
    }

    /// One assignment round of the leader.
    async fn assignment_round(&self) -> Result<(), FleetError> {
        let s = &self.settings;
        // The leases this application processes: of its mode (single- or multi-stream) and,
        // multi-stream, of its tracked streams (others, given to a worker, would never be
        // adopted and would bounce between workers).
        let leases = self
            .coordinator
            .of_this_mode(self.coordinator.store().list_leases().await?);
        let rows = self.store.worker_metrics().await?;
        let now_s = now_ms() / 1000;
        let mut live: BTreeSet<String> = rows
            .iter()
            .filter(|r| r.is_fresh(now_s, s.metrics_max_age()) && r.is_valid())
            .map(|r| r.worker_id.clone())
            .collect();
        if !self.left.is_cancelled() {
            live.insert(s.worker_id.clone());
        }
        let lut: BTreeMap<&str, u64> = rows
            .iter()
            .map(|r| (r.worker_id.as_str(), r.last_update_s))
            .collect();
        let expired = {
            let mut l = self.leadership.lock().await;
            // The flag is refreshed once per heartbeat; the lock itself says whether it is
            // still held (its duration since the last successful heartbeat).
            if !l.leading || !l.lock.is_leader() || self.left.is_cancelled() {
                return Ok(());
            }
            l.observed_at = Some(Instant::now());
            let expired = self.expired(&mut l.seen, &leases);
            // A worker one of whose leases expired is presumed gone until it writes its
            // metrics row again: a row stays fresh for twice the reporting period after its
            // worker stopped (the Java KCL does not delete it), and a gone worker given
            // leases lets them expire again, one failover time each. (The Java leader may
            // assign to such a worker.) The leases of a hand-off count for both its workers.
            for lease in leases.iter().filter(|l| expired.contains(&l.key)) {
                for w in [lease.checkpoint_owner.as_deref(), lease.owner.as_deref()]
                    .into_iter()
                    .flatten()
                    .filter(|w| *w != s.worker_id)
                {
                    let mark = lut.get(w).copied().unwrap_or(0);
                    if l.suspects.insert(w.to_string(), mark).is_none() {
                        tracing::info!(leader = %s.worker_id, worker = %w, lease_key = %lease.key, "a lease of this worker expired: presumed gone until it writes its metrics row again");
                    }
                }
            }
            l.suspects
                .retain(|w, mark| lut.get(w.as_str()).is_some_and(|now| now <= mark));
            live.retain(|w| !l.suspects.contains_key(w));
            expired
        };
        let plan = plan_assignments(&AssignmentInput {
            leases: &leases,
            expired: &expired,
            workers: &live,
            max_leases_for_worker: s.max_leases_for_worker,
            graceful_handoff: s.config.graceful_lease_handoff_enabled,
        });
        let store = self.coordinator.store();
        let mut mine = Vec::new();
        for a in plan {
            // The lock may be lost while the round writes (a slow store, a long plan): a
            // worker no longer leader writes no more (the new leader plans afresh).
            if !self.still_leading().await {
                tracing::info!(leader = %s.worker_id, "lost the leader lock during an assignment round: stopping it");
                break;
            }
            let written = match a.how {
                Move::Assign => store.assign_lease(&a.lease, &a.to).await,
                Move::HandOff => store.start_handoff(&a.lease, &a.to).await,
            };
            match written {
                Ok(WriteOutcome::Applied(lease)) => {
                    tracing::info!(leader = %s.worker_id, lease_key = %lease.key, from = ?a.lease.actual_owner(), to = %a.to, how = ?a.how, "lease assigned");
                    if a.how == Move::Assign && a.to == s.worker_id {
                        mine.push(lease);
                    }
                }
                Ok(WriteOutcome::Conflict) => {
                    tracing::debug!(lease_key = %a.lease.key, "lease changed before its assignment")
                }
                Err(e) => {
                    tracing::warn!(lease_key = %a.lease.key, error = %e, "assigning a lease failed")
                }
            }
        }
        if !mine.is_empty() {
            self.coordinator.adopt_all_assigned(mine).await;
        }
        let stale = Duration::from_secs(24 * 3600);
        for r in rows.iter().filter(|r| !r.is_fresh(now_s, stale)) {
            let _ = self
                .store
                .delete_worker_metrics(&r.worker_id, r.last_update_s)
                .await;
        }
        Ok(())
    }

    /// Whether this worker still holds the leader lock (as of its last heartbeat, within the
    /// lock's duration) and is not leaving.
    async fn still_leading(&self) -> bool {
        let l = self.leadership.lock().await;
        l.leading && l.lock.is_leader() && !self.left.is_cancelled()
    }

    /// Update the leader's view of `leases` and return the keys whose owner is gone (counter
    /// unchanged for the failover time, on this worker's clock) or whose hand-off is past its
    /// deadline (the hand-off timeout plus the failover time).
    fn expired(&self, seen: &mut BTreeMap<String, Seen>, leases: &[Lease]) -> BTreeSet<String> {
        let now = Instant::now();
        let f = self.settings.failover_time;
        let deadline = self.settings.config.graceful_lease_handoff_timeout + f;
        let mut fresh = BTreeMap::new();
        let mut expired = BTreeSet::new();
        for lease in leases {
            let prev = seen.remove(&lease.key);
            let since = match &prev {
                Some(p) if p.counter == lease.counter => p.since,
                _ => now,
            };
            let handoff = lease.is_in_handoff().then(|| {
                let pair = (lease.checkpoint_owner.clone(), lease.owner.clone());
                match prev.as_ref().and_then(|p| p.handoff.clone()) {
                    Some((a, b, at)) if (a.clone(), b.clone()) == pair => (a, b, at),
                    _ => (pair.0, pair.1, now),
                }
            });
            if lease.actual_owner().is_some()
                && (now.saturating_duration_since(since) > f
                    || handoff
                        .as_ref()
                        .is_some_and(|h| now.saturating_duration_since(h.2) > deadline))
            {
                expired.insert(lease.key.clone());
            }
            fresh.insert(
                lease.key.clone(),
                Seen {
                    counter: lease.counter,
                    since,
                    handoff,
                },
            );
        }
        *seen = fresh;
        expired
    }
}

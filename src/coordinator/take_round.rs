//! The take round: scan the lease table, decide with [`choose_leases_to_take`] what to take,
//! and take it in chunks.

use super::taker::{
    choose_leases_to_take_with_stats, ObservedLease, TakeDecision, TakeReason, TakerConfig,
};
use super::LeaseCoordinator;
use crate::lease::{Lease, LeaseStoreError, WriteOutcome};
use crate::telemetry::TakeStats;
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The most leases one take round writes at once. A round takes more in chunks of this size,
/// scanning the table again between chunks (so that workers starting together on a new
/// application see each other's first takes and stop at their share), and hands each chunk to
/// the consumers as soon as it is written.
pub const TAKE_CHUNK: usize = 64;

/// How often a leaderless worker looks at a lease being handed to it (a steal under way): a
/// read of that lease only, for the few seconds its owner takes to checkpoint, so that the
/// shard waits at most this long after the checkpoint.
pub const HANDOFF_POLL: Duration = Duration::from_millis(250);

/// When the hand-off `lease` is in was first seen: carried over from `prev` (the same lease
/// at the previous scan) while it is the same hand-off, `seen_at` for a new one.
fn handoff_since(prev: Option<&ObservedLease>, lease: &Lease, seen_at: Instant) -> Option<Instant> {
    if !lease.is_in_handoff() {
        return None;
    }
    let same = |p: &&ObservedLease| {
        p.lease.checkpoint_owner == lease.checkpoint_owner && p.lease.owner == lease.owner
    };
    Some(
        prev.filter(same)
            .and_then(|p| p.handoff_since)
            .unwrap_or(seen_at),
    )
}

/// What one take round did.
#[derive(Debug, Clone, Default)]
pub struct TakeReport {
    /// Leases in the table.
    pub total_leases: usize,
    /// Keys taken in this round, with why.
    pub taken: Vec<(String, TakeReason)>,
    /// Keys the taker chose but lost the race for.
    pub missed: Vec<String>,
    /// Keys whose graceful hand-off to this worker this round started (a steal: the lease
    /// is this worker's once its owner has checkpointed and passed it on).
    pub handoffs: Vec<String>,
    /// When the taker should look again to catch the next expiry promptly.
    pub next_expiry_check: Option<Instant>,
}

impl LeaseCoordinator {
    /// Take rounds every `take_interval` (and at the next expiry) until `shutdown` is
    /// cancelled; after [`LeaseCoordinator::stop_taking`] the rounds stop taking.
    pub(super) async fn run_taker(&self, shutdown: &CancellationToken) {
        let mut protocol = self.inner.protocol.subscribe();
        // The leaderless protocol's next take round; between rounds, a lease being handed to
        // this worker is looked at every `HANDOFF_POLL` (at most `discovery_interval`).
        let mut next_round = Instant::now();
        loop {
            let assigned = *protocol.borrow_and_update() == super::Protocol::Assigned;
            let wake = if !assigned && Instant::now() < next_round {
                self.poll_incoming_handoffs().await;
                next_round
            } else if assigned {
                if self.inner.taking.load(Ordering::SeqCst) {
                    if let Err(e) = self.discovery_round().await {
                        tracing::warn!(worker_id = %self.worker_id(), error = %e, "looking for assigned leases failed; will retry");
                        self.note_error(None, format!("looking for assigned leases failed: {e}"));
                    }
                }
                Instant::now() + self.inner.config.discovery_interval
            } else if self.inner.taking.load(Ordering::SeqCst) {
                let expiry = match self.take_round().await {
                    Ok(report) => report.next_expiry_check,
                    Err(e) => {
                        tracing::warn!(worker_id = %self.worker_id(), error = %e, "lease scan failed; will retry");
                        self.note_error(None, format!("lease table scan failed: {e}"));
                        None
                    }
                };
                let regular = Instant::now() + self.jittered(self.inner.config.take_interval);
                next_round = expiry.map_or(regular, |e| e.min(regular));
                next_round
            } else {
                Instant::now() + self.inner.config.take_interval
            };
            let wake = if !assigned && !self.incoming_handoffs().is_empty() {
                let poll = HANDOFF_POLL.min(self.inner.config.discovery_interval);
                wake.min(Instant::now() + poll)
            } else {
                wake
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = protocol.changed() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn jittered(&self, d: Duration) -> Duration {
        let f: f64 = self.inner.rng.lock().random_range(0.9..=1.0);
        d.mul_f64(f)
    }

    /// Stop taking new leases (graceful shutdown has begun). Renewal goes on.
    pub fn stop_taking(&self) {
        self.inner.taking.store(false, Ordering::SeqCst);
    }

    /// Scan the table, update observations, take what the taker decides.
    pub async fn take_round(&self) -> Result<TakeReport, LeaseStoreError> {
        let started = Instant::now();
        let result = self.take_chunks().await;
        let (taken, missed) = result
            .as_ref()
            .map_or((0, 0), |r| (r.taken.len(), r.missed.len()));
        self.inner
            .metrics
            .take_round(result.is_ok(), started.elapsed(), taken, missed);
        result
    }

    async fn take_chunks(&self) -> Result<TakeReport, LeaseStoreError> {
        let mut report = TakeReport::default();
        loop {
            let (decisions, total_leases, next_expiry_check) = self.scan_and_decide().await?;
            report.total_leases = total_leases;
            report.next_expiry_check = next_expiry_check;
            let more = decisions.len() > TAKE_CHUNK;
            let chunk: Vec<TakeDecision> = decisions.into_iter().take(TAKE_CHUNK).collect();
            let taken_before = report.taken.len();
            self.take_chunk(chunk, &mut report).await;
            if report.taken.len() > taken_before {
                // Consumers start on what is taken so far, not after the whole round.
                self.publish();
            }
            // A new application's first worker sees every lease unowned and, alone in the
            // table, a target of all of them: taking chunk by chunk and scanning again in
            // between lets it see the other workers' first takes and stop at its share.
            if !more
                || report.taken.len() == taken_before
                || !self.inner.taking.load(Ordering::SeqCst)
            {
                return Ok(report);
            }
        }
    }

    /// The leases this worker may take: those of its mode (single- or multi-stream, see
    /// [`CoordinatorConfig::multi_stream`](super::CoordinatorConfig::multi_stream)), and of a
    /// multi-stream worker's tracked streams only. Leases of the other mode are reported once,
    /// as a warning.
    pub(crate) fn of_this_mode(&self, leases: Vec<Lease>) -> Vec<Lease> {
        let multi = self.inner.config.multi_stream;
        let (ours, foreign): (Vec<Lease>, Vec<Lease>) = leases
            .into_iter()
            .partition(|l| l.multi_stream.is_some() == multi);
        if !foreign.is_empty() && !self.inner.foreign_reported.swap(true, Ordering::Relaxed) {
            let example = &foreign[0].key;
            if multi {
                tracing::warn!(count = foreign.len(), %example, "the lease table holds leases of a single-stream application (no streamName attribute); this multi-stream worker leaves them alone (one lease table serves one application)");
            } else {
                tracing::warn!(count = foreign.len(), %example, "the lease table holds leases of a multi-stream application (a streamName attribute); this single-stream worker leaves them alone (one lease table serves one application)");
            }
        }
        match (multi, self.tracked_streams()) {
            (true, Some(tracked)) => ours
                .into_iter()
                .filter(|l| {
                    l.multi_stream
                        .as_ref()
                        .is_some_and(|m| tracked.contains(&m.stream.to_string()))
                })
                .collect(),
            _ => ours,
        }
    }

    /// Scan the table, update what this worker observed, and decide what to take:
    /// (decisions, leases in the table, when the next lease would expire).
    async fn scan_and_decide(
        &self,
    ) -> Result<(Vec<TakeDecision>, usize, Option<Instant>), LeaseStoreError> {
        let scan_started = Instant::now();
        let leases = self.inner.store.list_leases().await;
        self.inner
            .metrics
            .list_leases(leases.is_ok(), scan_started.elapsed());
        self.inner.health.scan(leases.is_ok());
        let leases = self.of_this_mode(leases?);
        let seen_at = Instant::now();
        *self.inner.scanned_at.lock() = Some(seen_at);
        let failover = self.inner.config.failover_time;
        let observed: Vec<ObservedLease> = {
            let mut obs = self.inner.observed.lock();
            let mut fresh = BTreeMap::new();
            for lease in leases {
                let prev = obs.remove(&lease.key);
                let last_change = match &prev {
                    Some(prev) if prev.lease.counter == lease.counter => prev.last_change,
                    _ => seen_at,
                };
                let handoff_since = handoff_since(prev.as_ref(), &lease, seen_at);
                // A lease seen for the first time has had its owner for as long as anyone
                // knows: not "just moved" (past the balancing cooldown).
                let owner_since = match &prev {
                    Some(prev) if prev.lease.owner == lease.owner => prev.owner_since,
                    Some(_) => seen_at,
                    None => seen_at
                        .checked_sub(failover * super::balance::COOLDOWN_FAILOVERS)
                        .unwrap_or(seen_at),
                };
                fresh.insert(
                    lease.key.clone(),
                    ObservedLease {
                        lease,
                        last_change,
                        handoff_since,
                        owner_since,
                    },
                );
            }
            *obs = fresh;
            obs.values().cloned().collect()
        };
        let held = self.held_keys();
        let me = self.worker_id();
        let config = TakerConfig {
            failover_time: failover,
            max_leases_for_worker: self.inner.config.max_leases_for_worker,
            max_leases_to_steal_at_one_time: self.inner.config.max_leases_to_steal_at_one_time,
            handoff_timeout: self
                .inner
                .config
                .graceful_steals
                .then_some(self.inner.config.handoff_timeout),
            balance_by_load: self.balances_by_load(),
            lagging: self.lagging(),
        };
        let mut stats = TakeStats::default();
        let decisions = {
            let mut rng = self.inner.rng.lock();
            choose_leases_to_take_with_stats(
                me, &observed, &held, seen_at, &config, &mut *rng, &mut stats,
            )
        };
        stats.to_take = decisions.len();
        self.inner.metrics.take_decision(&stats);
        // Others' leases, and those being handed to this worker (their outgoing owner may die).
        let next_expiry_check = observed
            .iter()
            .filter(|o| {
                o.lease
                    .owner
                    .as_deref()
                    .is_some_and(|w| w != me || o.lease.is_in_handoff())
                    && !o.is_expired(seen_at, failover)
            })
            .map(|o| o.last_change + failover + Duration::from_millis(1))
            .min();
        Ok((decisions, observed.len(), next_expiry_check))
    }

    /// Take `chunk` with concurrent conditional writes; adopt what lands.
    async fn take_chunk(&self, chunk: Vec<TakeDecision>, report: &mut TakeReport) {
        if !self.inner.taking.load(Ordering::SeqCst) {
            return;
        }
        let me = self.worker_id();
        let failover = self.inner.config.failover_time;
        let started = Instant::now();
        let graceful = self.inner.config.graceful_steals;
        let outcomes = futures::future::join_all(chunk.iter().map(|d| async move {
            let started = Instant::now();
            if graceful && d.reason == TakeReason::Steal {
                return (true, self.inner.store.start_handoff(&d.lease, me).await);
            }
            let outcome = self.inner.store.take_lease(&d.lease, me).await;
            let landed = matches!(outcome, Ok(WriteOutcome::Applied(_)));
            self.inner.metrics.take_lease(landed, started.elapsed());
            (false, outcome)
        }))
        .await;
        for (decision, (handoff, outcome)) in chunk.into_iter().zip(outcomes) {
            let key = decision.lease.key.clone();
            if handoff {
                self.handoff_requested(decision, outcome, report);
                continue;
            }
            match outcome {
                Ok(WriteOutcome::Applied(_)) if started.elapsed() >= failover => {
                    // The write may have applied as soon as it was sent: for the other
                    // workers the lease may have expired meanwhile, and been taken. Not
                    // adopted; the table still names this worker, so a later round takes it
                    // again (at once, if nobody else did), with a write of its own.
                    tracing::warn!(worker_id = %me, lease_key = %key, answered_after = ?started.elapsed(),
                        "lease taken, but the answer came after the failover time; not processing it on this take");
                    report.missed.push(key);
                }
                Ok(WriteOutcome::Applied(lease)) => {
                    tracing::info!(worker_id = %me, lease_key = %key, reason = ?decision.reason,
                        previous_owner = ?decision.lease.owner, "lease taken");
                    self.adopt(lease, started);
                    report.taken.push((key, decision.reason));
                }
                Ok(WriteOutcome::Conflict) => report.missed.push(key),
                Err(e) => {
                    tracing::warn!(worker_id = %me, lease_key = %key, error = %e, "taking lease failed");
                    report.missed.push(key);
                }
            }
        }
    }

    /// The outcome of starting a graceful hand-off of `decision`'s lease to this worker (a
    /// steal): on success, the lease is watched until its owner passes it on.
    fn handoff_requested(
        &self,
        decision: TakeDecision,
        outcome: Result<WriteOutcome, LeaseStoreError>,
        report: &mut TakeReport,
    ) {
        let me = self.worker_id();
        let key = decision.lease.key.clone();
        match outcome {
            Ok(WriteOutcome::Applied(lease)) => {
                tracing::info!(worker_id = %me, lease_key = %key, from = ?decision.lease.owner,
                    "balancing: asked the lease's owner to hand it over (its processor checkpoints, then it passes the lease on)");
                let now = Instant::now();
                let mut observed = self.inner.observed.lock();
                // The write returns the lease as stored: if its owner renewed it since the
                // scan, its counter is newer than the one observed, and expiry counts from now.
                let last_change = observed
                    .get(&key)
                    .filter(|o| o.lease.counter == lease.counter)
                    .map_or(now, |o| o.last_change);
                let owner_since = observed
                    .get(&key)
                    .filter(|o| o.lease.owner == lease.owner)
                    .map_or(now, |o| o.owner_since);
                observed.insert(
                    key.clone(),
                    ObservedLease {
                        lease,
                        last_change,
                        handoff_since: Some(now),
                        owner_since,
                    },
                );
                report.handoffs.push(key);
            }
            Ok(WriteOutcome::Conflict) => report.missed.push(key),
            Err(e) => {
                tracing::warn!(worker_id = %me, lease_key = %key, error = %e, "starting a hand-off failed");
                report.missed.push(key);
            }
        }
    }

    /// The leases being handed to this worker (steals under way), as last seen.
    pub(crate) fn incoming_handoffs(&self) -> Vec<Lease> {
        let me = self.worker_id();
        let held = self.held_keys();
        self.inner
            .observed
            .lock()
            .values()
            .filter(|o| {
                o.lease.owner.as_deref() == Some(me)
                    && o.lease.is_in_handoff()
                    && !held.contains(&o.lease.key)
            })
            .map(|o| o.lease.clone())
            .collect()
    }

    /// Look again at the leases being handed to this worker: adopt each one its owner has
    /// passed on (a renewal), forget those that went elsewhere. Returns how many it adopted.
    pub async fn poll_incoming_handoffs(&self) -> usize {
        let incoming = self.incoming_handoffs();
        if incoming.is_empty() {
            return 0;
        }
        let me = self.worker_id().to_string();
        let read =
            futures::future::join_all(incoming.iter().map(|l| self.inner.store.get_lease(&l.key)))
                .await;
        let mut done = Vec::new();
        for (before, now) in incoming.into_iter().zip(read) {
            match now {
                Ok(Some(cur)) if cur.is_in_handoff() && cur.owner == before.owner => {
                    // Still under way: the outgoing owner's renewals are its sign of life (if
                    // it dies, the lease is taken when it expires, timed from the last one).
                    let mut observed = self.inner.observed.lock();
                    if let Some(o) = observed.get_mut(&cur.key) {
                        if o.lease.counter != cur.counter {
                            o.last_change = Instant::now();
                            o.lease = cur;
                        }
                    }
                }
                Ok(Some(cur)) => {
                    {
                        let mut observed = self.inner.observed.lock();
                        if let Some(o) = observed.get_mut(&cur.key) {
                            if o.lease.counter != cur.counter {
                                o.last_change = Instant::now();
                            }
                            o.handoff_since = None;
                            o.lease = cur.clone();
                        }
                    }
                    if cur.owner.as_deref() == Some(me.as_str()) {
                        done.push(cur);
                    }
                }
                Ok(None) => {
                    self.inner.observed.lock().remove(&before.key);
                }
                Err(e) => {
                    tracing::debug!(worker_id = %me, lease_key = %before.key, error = %e, "reading a lease being handed over failed; will retry");
                }
            }
        }
        self.adopt_all_assigned(done).await
    }
}

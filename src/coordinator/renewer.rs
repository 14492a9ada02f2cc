//! The renewer: every held lease on its own renewal schedule.
//!
//! A lease is due `renew_interval` after its last successful write (renewal, take or
//! checkpoint) or its last renewal attempt, whichever is later. Each renewal runs on its own,
//! under the lease's lock (shared with checkpoint writes), and retries throttling and timeouts
//! with the coordinator's [`RetryPolicy`] for renewals.
//!
//! A renewal's outcome counts toward the worker's health (a failed renewal makes it unready)
//! only while the tenure it renews holds the lease: attempts that hang until their timeouts
//! (a lease-table outage) can outlive the lease, which the expiry watchdog drops meanwhile and
//! another worker may take; the renewal's late failure then concerns no lease of this worker,
//! and recorded, it kept the worker unready until it held that lease again (perhaps never).
//! Nor does a renewal retry once its tenure ended. The Java KCL has no readiness report, but
//! it does act on such late results: a renewal that lands after the lease expired locally
//! sets the lease's `lastCounterIncrementNanos`, and the same tenure counts as held again
//! (its consumer may already have been shut down for the loss).

use super::{LeaseCoordinator, LeaseTenure, SlotState};
use crate::backoff::RetryPolicy;
use crate::lease::WriteOutcome;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The most renewal writes one worker has in flight at once (the Java KCL's default
/// `maxLeaseRenewalThreads`). A renewal holds a permit only while it writes (not while it waits
/// for its lease's lock), so up to this many leases can hang on slow calls before renewals of
/// the others wait for a permit.
pub const MAX_CONCURRENT_RENEWALS: usize = 20;

/// How far the renewer's pacing clock may lag behind the wall clock (see `run_renewer`): at
/// most this much of paced starts is made up at once after a quiet spell.
const PACING_SLACK: Duration = Duration::from_millis(2);

impl LeaseCoordinator {
    /// Renew held leases, each when it is due, until `shutdown` is cancelled.
    pub(super) async fn run_renewer(&self, shutdown: &CancellationToken) {
        // Each lease is renewed on its own schedule: it is due `renew_interval` after its
        // last successful write (renewal, take or checkpoint) or its last renewal attempt,
        // whichever is later. A renewal runs on its own, so one that waits for its lease's
        // lock (a checkpoint retrying slow writes) or hangs on a slow call delays only its
        // own lease. Starts are paced (all held leases fit in a quarter interval), so a
        // batch of leases taken together does not renew in the same instant, and at most
        // `MAX_CONCURRENT_RENEWALS` writes are in flight.
        //
        // The schedule is a queue ordered by due time, rebuilt from the held leases only when
        // they change (a take, a loss: the coordinator publishes) and once per interval; each
        // start and each finished renewal touches one entry. So a start costs O(log n), not a
        // pass over every held lease (which, once per start, made a worker holding thousands
        // of leases spend most of a core on its schedule).
        let interval = self.inner.config.renew_interval;
        let permits = tokio::sync::Semaphore::new(MAX_CONCURRENT_RENEWALS);
        let mut schedule = Schedule::default();
        let mut changes = self.inner.tx.subscribe();
        let mut rebuild_at = Instant::now();
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut next_start = Instant::now();
        loop {
            let now = Instant::now();
            if changes.has_changed().unwrap_or(false) || now >= rebuild_at {
                changes.mark_unchanged();
                schedule.rebuild(self.renewals_due(&schedule.attempted));
                rebuild_at = now + interval;
            }
            let pace = (interval / 4) / u32::try_from(schedule.len().max(1)).unwrap_or(u32::MAX);
            // Starts follow a pacing clock, `pace` apart, not the wall clock: timers fire on
            // millisecond ticks, and starting one renewal per wake-up would cap a worker at
            // 1,000 renewals a second (10,000 leases at F = 10 s need 3,000). Each wake-up
            // starts every renewal whose paced start has come. The clock never lags more than
            // `PACING_SLACK` behind, so a quiet spell does not bank a burst of starts.
            next_start = next_start.max(now.checked_sub(PACING_SLACK).unwrap_or(now));
            let mut wake = rebuild_at;
            while let Some((at, key)) = schedule.first() {
                let start = at.max(next_start);
                if start > now {
                    wake = wake.min(start);
                    break;
                }
                schedule.remove(at, &key);
                // Its due time may have moved since it was queued (a checkpoint wrote it).
                match self.renewal_due(&key, &schedule.attempted) {
                    None => {
                        schedule.attempted.remove(&key);
                        continue;
                    }
                    Some(due) if due > at => {
                        schedule.insert(due, key);
                        continue;
                    }
                    Some(_) => {}
                }
                let Some((tenure, state)) = self.slot(&key) else {
                    continue;
                };
                next_start = start + pace;
                schedule.attempted.insert(key.clone(), now);
                schedule.running.insert(key.clone());
                let permits = &permits;
                in_flight.push(async move {
                    self.renew_one(&key, &tenure, &state, permits, true).await;
                    key
                });
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                Some(key) = futures::StreamExt::next(&mut in_flight) => {
                    schedule.running.remove(&key);
                    match self.renewal_due(&key, &schedule.attempted) {
                        Some(due) => schedule.insert(due, key),
                        None => {
                            schedule.attempted.remove(&key);
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Renew every held lease once, concurrently (at most [`MAX_CONCURRENT_RENEWALS`] writes
    /// in flight).
    pub async fn renew_all(&self) {
        let slots = self.slots();
        let permits = tokio::sync::Semaphore::new(MAX_CONCURRENT_RENEWALS);
        let permits = &permits;
        futures::future::join_all(slots.into_iter().map(|(key, tenure, state)| async move {
            self.renew_one(&key, &tenure, &state, permits, false).await;
        }))
        .await;
    }

    /// When the held lease `key` is next due for renewal (see `renewals_due`); `None`
    /// when it is no longer held.
    fn renewal_due(&self, key: &str, attempted: &BTreeMap<String, Instant>) -> Option<Instant> {
        let interval = self.inner.config.renew_interval;
        let last = self.inner.held.lock().get(key)?.last_write.get();
        let last = attempted.get(key).map_or(last, |a| last.max(*a));
        Some(last + interval)
    }

    /// When each held lease is next due for renewal: `renew_interval` after its last successful
    /// write or its last renewal attempt (in `attempted`), whichever is later.
    fn renewals_due(&self, attempted: &BTreeMap<String, Instant>) -> Vec<(String, Instant)> {
        let interval = self.inner.config.renew_interval;
        self.inner
            .held
            .lock()
            .iter()
            .map(|(k, s)| {
                let last = s.last_write.get();
                let last = attempted.get(k).map_or(last, |a| last.max(*a));
                (k.clone(), last + interval)
            })
            .collect()
    }

    async fn renew_one(
        &self,
        key: &str,
        tenure: &LeaseTenure,
        state: &tokio::sync::Mutex<SlotState>,
        permits: &tokio::sync::Semaphore,
        only_if_due: bool,
    ) {
        let mut st = state.lock().await;
        if tenure.lost.is_cancelled() {
            return;
        }
        // Taken only once the lock is ours: a renewal waiting behind a checkpoint holds no
        // permit. The semaphore is never closed.
        let _permit = permits.acquire().await.ok();
        if tenure.lost.is_cancelled() {
            return;
        }
        // A checkpoint that held the lock meanwhile proved ownership just as well.
        if only_if_due && st.last_write.get() + self.inner.config.renew_interval > Instant::now() {
            return;
        }
        let since = st.last_write.elapsed();
        if since > self.inner.config.failover_time {
            self.lose_expired(key, tenure.token, since);
            return;
        }
        let mut retry = self.renewal_retry().start();
        let first = Instant::now();
        // Metrics and health: the write landed or found the lease changed (the table answered),
        // or it failed for good.
        let done = |ok: bool| {
            self.inner.metrics.renewal(ok, first.elapsed());
            self.renewal_ended(key, tenure.token, ok);
        };
        // Renewals come every renew interval, a little early at times: most of one will do.
        let measured = st.throughput(
            self.processed_bytes(key),
            first,
            self.inner.config.renew_interval * 3 / 4,
        );
        if let Some((t, _)) = measured {
            st.lease.throughput = Some(t);
        }
        loop {
            let started = Instant::now();
            match self.inner.store.renew_lease(&st.lease).await {
                Ok(WriteOutcome::Applied(lease)) => {
                    st.confirmed(lease, started);
                    if let Some((_, mark)) = measured {
                        st.measured = Some(mark);
                    }
                    done(true);
                    return;
                }
                Ok(WriteOutcome::Conflict) => {
                    let cur = self.reread(key).await;
                    let me = self.worker_id();
                    if let Some(cur) = cur.as_ref().filter(|cur| {
                        // A hand-off of this lease began (a KCL 3.x leader's, or a leaderless
                        // steal): keep renewing it
                        // (without the hand-off condition) while the processor checkpoints.
                        !st.lease.is_in_handoff()
                            && cur.checkpoint_owner.as_deref() == Some(me)
                            && cur.owner.as_deref() != Some(me)
                            && (cur.counter == st.lease.counter || st.explains(cur, me))
                    }) {
                        st.lease = cur.clone();
                        self.handoff_started(key, tenure, cur.owner.as_deref().unwrap_or_default());
                        continue;
                    }
                    done(true);
                    match cur.clone().filter(|cur| st.may_be_our_write(cur, me)) {
                        Some(cur) => {
                            tracing::debug!(
                                lease_key = key,
                                "renew conflict was our own retried write"
                            );
                            let knew = st.lease.is_in_handoff();
                            st.confirmed(cur.clone(), started);
                            self.noticed_handoff(key, tenure, knew, &cur);
                        }
                        None => {
                            // Renewed on schedule (within half an interval more): no other
                            // worker can have seen it unchanged for a failover time (a take
                            // of an expired lease is no sign).
                            let live =
                                st.last_write.elapsed() <= self.inner.config.renew_interval * 3 / 2;
                            self.noticed_plain_steal(key, &st.lease, cur.as_ref(), live);
                            self.lose(
                                key,
                                tenure.token,
                                "renewal found the lease changed by another worker",
                            )
                        }
                    }
                    return;
                }
                Err(e) if e.kind().is_retryable() && retry.may_retry() => {
                    st.failed_write(&e);
                    tracing::debug!(lease_key = key, error = %e, "renewal failed; retrying");
                    tokio::time::sleep(retry.next_delay().unwrap_or_default()).await;
                    // The attempts outlived the tenure (the watchdog dropped the lease): a
                    // further attempt could only land on a lease this worker no longer holds,
                    // and make other workers wait another failover time for it.
                    if tenure.lost.is_cancelled() {
                        self.inner.metrics.renewal(false, first.elapsed());
                        return;
                    }
                }
                Err(e) => {
                    st.failed_write(&e);
                    done(false);
                    tracing::warn!(worker_id = %self.worker_id(), lease_key = key, error = %e, "lease renewal failed");
                    self.note_error(Some(key), format!("lease renewal failed: {e}"));
                    return;
                }
            }
        }
    }

    /// Retries of one renewal: three attempts, 50 ms apart and doubling up to a quarter of the
    /// renew interval, so that all of them fit well within one interval.
    fn renewal_retry(&self) -> RetryPolicy {
        RetryPolicy::new(
            3,
            Duration::from_millis(50),
            self.inner.config.renew_interval / 4,
        )
    }
}

/// The renewer's queue: held leases by due time (those being renewed are not in it), and when
/// each was last attempted.
#[derive(Debug, Default)]
struct Schedule {
    queue: BTreeSet<(Instant, String)>,
    due_of: BTreeMap<String, Instant>,
    attempted: BTreeMap<String, Instant>,
    running: BTreeSet<String>,
}

impl Schedule {
    /// Replace the queue with `due` (every held lease), keeping running renewals out.
    fn rebuild(&mut self, due: Vec<(String, Instant)>) {
        self.queue.clear();
        self.due_of.clear();
        let held: BTreeSet<&String> = due.iter().map(|(k, _)| k).collect();
        self.attempted.retain(|k, _| held.contains(k));
        for (key, at) in due {
            if !self.running.contains(&key) {
                self.insert(at, key);
            }
        }
    }

    fn len(&self) -> usize {
        self.queue.len() + self.running.len()
    }

    fn first(&self) -> Option<(Instant, String)> {
        self.queue.first().cloned()
    }

    fn insert(&mut self, at: Instant, key: String) {
        if let Some(old) = self.due_of.insert(key.clone(), at) {
            self.queue.remove(&(old, key.clone()));
        }
        self.queue.insert((at, key));
    }

    fn remove(&mut self, at: Instant, key: &str) {
        self.queue.remove(&(at, key.to_string()));
        self.due_of.remove(key);
    }
}
